//! The runtime's Prometheus metrics. One [`Metrics`] (with its own registry) per running
//! application, so several can live in one process (tests). No label ever carries a user or
//! chat id.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The kinds of `errors_total`.
pub const ERROR_KINDS: [&str; 8] = [
    "llm",
    "storage",
    "telegram",
    "panic",
    "queue_full",
    "rate_limited",
    "webhook_auth",
    "webhook_body",
];

const LATENCY_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0];

/// Every metric the runtime exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Telegram messages, by direction (`in`: from users, `out`: sent by the bot).
    pub telegram_messages_total: IntCounterVec,
    /// Telegram updates ignored because they had been processed already.
    pub duplicate_updates_total: IntCounter,
    /// LLM calls by provider, model and outcome (`ok`, `error`, `timeout`, `rate_limited`).
    pub ai_requests_total: IntCounterVec,
    pub ai_request_duration_seconds: HistogramVec,
    /// Until the whole answer for non-streamed calls; until the first chunk when streamed.
    pub ai_time_to_first_token_seconds: Histogram,
    /// Tokens by type (`prompt`, `completion`).
    pub ai_tokens_used_total: IntCounterVec,
    /// 0 closed, 1 half-open, 2 open.
    pub llm_breaker_state: IntGaugeVec,
    pub llm_cache_hits_total: IntCounter,
    /// Requests refused or delayed by a rate limit.
    pub llm_rate_limited_total: IntCounter,
    /// 1 while Redis is configured but unreachable and in-process fallbacks serve.
    pub redis_fallback_active: IntGauge,
    pub sessions_active: IntGauge,
    pub session_panics_total: IntCounter,
    pub actors_live: IntGaugeVec,
    pub actor_restarts_total: IntCounterVec,
    pub actor_mailbox_depth: IntGaugeVec,
    /// Errors by kind, one of [`ERROR_KINDS`].
    pub errors_total: IntCounterVec,
    /// Safety checks that stepped in, by kind (`refused`, `crisis`, `output_withheld`).
    pub safety_interventions_total: IntCounterVec,
    /// Persona replies by outcome (`complete`, `partial`, `stopped`, `failed`, `withheld`).
    pub replies_total: IntCounterVec,
}

/// The kinds of `vitte_safety_interventions_total`.
pub const SAFETY_KINDS: [&str; 3] = ["refused", "crisis", "output_withheld"];
/// The outcomes of `vitte_replies_total`.
pub const REPLY_OUTCOMES: [&str; 5] = ["complete", "partial", "stopped", "failed", "withheld"];

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let metrics = Metrics {
            telegram_messages_total: counter_vec(
                "telegram_messages_total",
                "Telegram messages handled",
                &["direction"],
            )?,
            duplicate_updates_total: IntCounter::new(
                "telegram_duplicate_updates_total",
                "Telegram updates ignored because they were processed already",
            )?,
            ai_requests_total: counter_vec(
                "ai_requests_total",
                "LLM calls by provider, model and outcome",
                &["provider", "model", "status"],
            )?,
            ai_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new("ai_request_duration_seconds", "LLM call duration")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["provider"],
            )?,
            ai_time_to_first_token_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ai_time_to_first_token_seconds",
                    "Time until the first text of an LLM answer",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            ai_tokens_used_total: counter_vec(
                "ai_tokens_used_total",
                "LLM tokens used, by type",
                &["type"],
            )?,
            llm_breaker_state: gauge_vec(
                "llm_breaker_state",
                "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
                &["provider"],
            )?,
            llm_cache_hits_total: IntCounter::new(
                "llm_cache_hits_total",
                "LLM answers served from the cache",
            )?,
            llm_rate_limited_total: IntCounter::new(
                "llm_rate_limited_total",
                "LLM requests delayed or refused by a rate limit",
            )?,
            redis_fallback_active: IntGauge::new(
                "redis_fallback_active",
                "1 while Redis is unreachable and in-process caches and limits serve",
            )?,
            sessions_active: IntGauge::new(
                "vitte_sessions_active",
                "Session actors currently active in memory",
            )?,
            session_panics_total: IntCounter::new(
                "vitte_session_panics_total",
                "Panics caught while a session handled an event",
            )?,
            actors_live: gauge_vec("vitte_actors_live", "Live actors by kind", &["kind"])?,
            actor_restarts_total: counter_vec(
                "vitte_actor_restarts_total",
                "Actor restarts after a failure, by kind",
                &["kind"],
            )?,
            actor_mailbox_depth: gauge_vec(
                "vitte_actor_mailbox_depth",
                "Messages waiting in mailboxes, by kind",
                &["kind"],
            )?,
            errors_total: counter_vec("errors_total", "Errors by kind", &["kind"])?,
            safety_interventions_total: counter_vec(
                "vitte_safety_interventions_total",
                "Safety checks that stepped in, by kind",
                &["kind"],
            )?,
            replies_total: counter_vec(
                "vitte_replies_total",
                "Persona replies by outcome",
                &["outcome"],
            )?,
            registry: Registry::new(),
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.telegram_messages_total.clone()))?;
        r.register(Box::new(self.duplicate_updates_total.clone()))?;
        r.register(Box::new(self.ai_requests_total.clone()))?;
        r.register(Box::new(self.ai_request_duration_seconds.clone()))?;
        r.register(Box::new(self.ai_time_to_first_token_seconds.clone()))?;
        r.register(Box::new(self.ai_tokens_used_total.clone()))?;
        r.register(Box::new(self.llm_breaker_state.clone()))?;
        r.register(Box::new(self.llm_cache_hits_total.clone()))?;
        r.register(Box::new(self.llm_rate_limited_total.clone()))?;
        r.register(Box::new(self.redis_fallback_active.clone()))?;
        r.register(Box::new(self.sessions_active.clone()))?;
        r.register(Box::new(self.session_panics_total.clone()))?;
        r.register(Box::new(self.actors_live.clone()))?;
        r.register(Box::new(self.actor_restarts_total.clone()))?;
        r.register(Box::new(self.actor_mailbox_depth.clone()))?;
        r.register(Box::new(self.errors_total.clone()))?;
        r.register(Box::new(self.safety_interventions_total.clone()))?;
        r.register(Box::new(self.replies_total.clone()))?;
        for kind in SAFETY_KINDS {
            self.safety_interventions_total.with_label_values(&[kind]);
        }
        for outcome in REPLY_OUTCOMES {
            self.replies_total.with_label_values(&[outcome]);
        }
        // Pre-create the fixed label values so dashboards see zeros rather than gaps.
        for direction in ["in", "out"] {
            self.telegram_messages_total.with_label_values(&[direction]);
        }
        for kind in ["prompt", "completion"] {
            self.ai_tokens_used_total.with_label_values(&[kind]);
        }
        for kind in ERROR_KINDS {
            self.errors_total.with_label_values(&[kind]);
        }
        for kind in crate::supervision::ActorKind::ALL {
            self.actors_live.with_label_values(&[kind.as_str()]);
            self.actor_restarts_total
                .with_label_values(&[kind.as_str()]);
            self.actor_mailbox_depth.with_label_values(&[kind.as_str()]);
        }
        Ok(())
    }

    /// The registry to render at `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn count_error(&self, kind: &str) {
        self.errors_total.with_label_values(&[kind]).inc();
    }
}
