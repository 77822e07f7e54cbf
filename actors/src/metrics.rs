//! The runtime's Prometheus metrics. One [`Metrics`] (with its own registry) per running
//! application, so several can live in one process (tests). No label ever carries a user or
//! chat id.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::supervision::kinds::{ActorKind, Shape};

/// Declares a set of label values as an enum with their label strings.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

/// The provider label of `payments_total` for Telegram Stars.
pub const STARS: &str = "telegram_stars";

label_values! {
    /// The kinds of `errors_total`.
    ErrorKind {
        Llm = "llm",
        Storage = "storage",
        Telegram = "telegram",
        Panic = "panic",
        QueueFull = "queue_full",
        RateLimited = "rate_limited",
        WebhookAuth = "webhook_auth",
        WebhookBody = "webhook_body",
        /// A user message over the configured length, refused.
        TooLong = "too_long",
    }
}

label_values! {
    /// What became of an extracted fact (`memory_saved_total{outcome}`).
    MemorySaved {
        Added = "added",
        /// A near duplicate: the stored fact's confirmation time moved.
        Refreshed = "refreshed",
        /// It contradicted a stored fact, which it replaced (kept as history).
        Superseded = "superseded",
        /// The same fact (same normal form) was stored already.
        Duplicate = "duplicate",
    }
}

label_values! {
    /// Why a reply went without memories (`memory_recall_skipped_total{reason}`).
    RecallSkipped {
        /// The embedding of the message did not come within the deadline.
        Deadline = "deadline",
        /// The embeddings endpoint failed (or its breaker is open).
        EmbeddingFailed = "embedding_failed",
        /// The memories could not be loaded.
        Storage = "storage",
    }
}

label_values! {
    /// Why an extraction was skipped (`memory_extraction_failures_total{reason}`).
    ExtractionFailure {
        /// The model's answer was not valid facts JSON, twice.
        Malformed = "malformed",
        Llm = "llm",
        Embedding = "embedding",
        Storage = "storage",
    }
}

label_values! {
    /// The kinds of `vitte_safety_interventions_total`.
    SafetyKind {
        Refused = "refused",
        Crisis = "crisis",
        OutputWithheld = "output_withheld",
    }
}

label_values! {
    /// The outcomes of `vitte_replies_total`.
    ReplyOutcome {
        Complete = "complete",
        Partial = "partial",
        Stopped = "stopped",
        Failed = "failed",
        Withheld = "withheld",
        /// Not answered: the message waited longer than `session.answer_within`.
        Late = "late",
    }
}

/// Recall stages take from microseconds (ranking) to the embedding deadline.
const RECALL_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
];
const LATENCY_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0];

label_values! {
    /// What became of the replies a crash left unfinished
    /// (`vitte_recovered_replies_total{outcome}`).
    Recovered {
        /// Written again after a restart.
        Rewritten = "rewritten",
        /// A stored reply shown again (it may have been shown in full already).
        Reshown = "reshown",
        /// A stored reply that was being sent as a new message: offered with a button
        /// rather than sent again (it may have arrived).
        Offered = "offered",
        /// Failed visibly, with "Retry" (too old, no longer the last message, or after a
        /// panic of the session).
        Failed = "failed",
    }
}

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
    /// LLM requests waiting for a rate limit's turn (the gateway's bounded queue).
    pub llm_requests_waiting: IntGauge,
    /// 1 while Redis is configured but unreachable and in-process fallbacks serve.
    pub redis_fallback_active: IntGauge,
    pub sessions_active: IntGauge,
    pub session_panics_total: IntCounter,
    /// Live actors of mailbox kinds.
    pub actors_live: IntGaugeVec,
    /// Restarts after a panic, of every supervised kind.
    pub actor_restarts_total: IntCounterVec,
    /// Messages waiting in the mailboxes of mailbox kinds.
    pub actor_mailbox_depth: IntGaugeVec,
    /// Errors by kind, one of [`ErrorKind`].
    pub errors_total: IntCounterVec,
    /// Safety checks that stepped in, by kind (`refused`, `crisis`, `output_withheld`).
    pub safety_interventions_total: IntCounterVec,
    /// Persona replies by outcome (`complete`, `partial`, `stopped`, `failed`, `withheld`,
    /// `late`).
    pub replies_total: IntCounterVec,
    /// Replies a crash left unfinished, by what became of them.
    pub recovered_replies_total: IntCounterVec,
    /// Accepted updates handed to their sessions again after a restart.
    pub replayed_updates_total: IntCounter,
    /// Payment events by provider and status (`pre_checkout_accepted`, `paid`, `renewed`,
    /// `duplicate`, `unmatched`, `refunded`, …).
    pub payments_total: IntCounterVec,
    /// Plans open (active or in grace), by catalogue product.
    pub subscriptions_active: IntGaugeVec,
    /// Messages not answered because of a limit, by reason (`free_limit`, `fair_use`).
    pub entitlement_denials_total: IntCounterVec,
    /// Calls of the HTTP chat API, by key name and HTTP status.
    pub api_requests_total: IntCounterVec,
    /// 1 while the readiness check passes (as of the last probe or scrape), else 0.
    pub ready: IntGauge,
    /// 1 for a kind past its restart intensity (escalated: readiness fails), else 0.
    pub supervision_escalated: IntGaugeVec,
    /// Facts the memory keeper extracted, by outcome (`added`, `refreshed`, `superseded`,
    /// `duplicate`).
    pub memory_saved_total: IntCounterVec,
    /// Extractions skipped, by reason (`malformed`, `llm`, `embedding`, `storage`).
    pub memory_extraction_failures_total: IntCounterVec,
    /// Recall's time per message, by stage: `embed` (the message's embedding) and `rank`
    /// (scoring the cached memories, CPU only).
    pub memory_recall_seconds: HistogramVec,
    /// Replies that went without memories, by reason (`deadline`, `embedding_failed`,
    /// `storage`).
    pub memory_recall_skipped_total: IntCounterVec,
    /// Jobs waiting in the memory keeper's queue.
    pub memory_queue_depth: IntGauge,
    /// Memory jobs dropped because the queue was full (oldest first).
    pub memory_jobs_dropped_total: IntCounter,
    /// Calls waiting in the outbox, by priority (`reply`, `stream`, `notification`,
    /// `broadcast`).
    pub outbox_queue_depth: IntGaugeVec,
    /// Calls the full outbox refused, by priority.
    pub outbox_shed_total: IntCounterVec,
    /// 429 answers from Telegram (each pauses a chat, or everything).
    pub telegram_retry_after_total: IntCounter,
    /// 403 answers: the user blocked the bot or deleted their account.
    pub telegram_blocked_users_total: IntCounter,
    /// Notifications by kind and status (`sent`, `skipped`, `late_skipped`, `failed`,
    /// `blocked`, `disabled`).
    pub notifications_sent_total: IntCounterVec,
    /// How late the scheduler runs its most overdue job, in seconds (0 when none is
    /// overdue).
    pub scheduler_lag_seconds: Gauge,
}

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
            llm_requests_waiting: IntGauge::new(
                "llm_requests_waiting",
                "LLM requests waiting in the gateway's queue for a rate limit's turn",
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
            recovered_replies_total: counter_vec(
                "vitte_recovered_replies_total",
                "Replies a crash left unfinished, by what became of them",
                &["outcome"],
            )?,
            replayed_updates_total: IntCounter::new(
                "vitte_replayed_updates_total",
                "Accepted updates handed to their sessions again after a restart",
            )?,
            payments_total: counter_vec(
                "payments_total",
                "Payment events by provider and status",
                &["provider", "status"],
            )?,
            subscriptions_active: gauge_vec(
                "subscriptions_active",
                "Plans open (active or in grace), by product",
                &["plan"],
            )?,
            entitlement_denials_total: counter_vec(
                "entitlement_denials_total",
                "Messages not answered because of a daily limit, by reason",
                &["reason"],
            )?,
            api_requests_total: counter_vec(
                "api_requests_total",
                "Calls of the HTTP chat API, by key name and HTTP status",
                &["key", "status"],
            )?,
            ready: IntGauge::new("vitte_ready", "1 while the readiness check passes")?,
            supervision_escalated: gauge_vec(
                "vitte_supervision_escalated",
                "1 for an actor kind past its restart intensity",
                &["kind"],
            )?,
            memory_saved_total: counter_vec(
                "memory_saved_total",
                "Facts extracted for long-term memory, by outcome",
                &["outcome"],
            )?,
            memory_extraction_failures_total: counter_vec(
                "memory_extraction_failures_total",
                "Memory extractions skipped, by reason",
                &["reason"],
            )?,
            memory_recall_seconds: HistogramVec::new(
                HistogramOpts::new("memory_recall_seconds", "Memory recall time per message")
                    .buckets(RECALL_BUCKETS.to_vec()),
                &["stage"],
            )?,
            memory_recall_skipped_total: counter_vec(
                "memory_recall_skipped_total",
                "Replies written without memories, by reason",
                &["reason"],
            )?,
            memory_queue_depth: IntGauge::new(
                "memory_queue_depth",
                "Jobs waiting in the memory keeper's queue",
            )?,
            memory_jobs_dropped_total: IntCounter::new(
                "memory_jobs_dropped_total",
                "Memory jobs dropped because the keeper's queue was full",
            )?,
            outbox_queue_depth: gauge_vec(
                "outbox_queue_depth",
                "Telegram calls waiting in the outbox, by priority",
                &["priority"],
            )?,
            outbox_shed_total: counter_vec(
                "outbox_shed_total",
                "Telegram calls the full outbox refused, by priority",
                &["priority"],
            )?,
            telegram_retry_after_total: IntCounter::new(
                "telegram_retry_after_total",
                "Telegram answers 429 Too Many Requests (flood control)",
            )?,
            telegram_blocked_users_total: IntCounter::new(
                "telegram_blocked_users_total",
                "Telegram answers 403: the user blocked the bot or is deactivated",
            )?,
            notifications_sent_total: counter_vec(
                "notifications_sent_total",
                "Scheduled notifications by kind and status",
                &["kind", "status"],
            )?,
            scheduler_lag_seconds: Gauge::new(
                "scheduler_lag_seconds",
                "How late the scheduler runs its most overdue job",
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
        r.register(Box::new(self.llm_requests_waiting.clone()))?;
        r.register(Box::new(self.redis_fallback_active.clone()))?;
        r.register(Box::new(self.sessions_active.clone()))?;
        r.register(Box::new(self.session_panics_total.clone()))?;
        r.register(Box::new(self.actors_live.clone()))?;
        r.register(Box::new(self.actor_restarts_total.clone()))?;
        r.register(Box::new(self.actor_mailbox_depth.clone()))?;
        r.register(Box::new(self.errors_total.clone()))?;
        r.register(Box::new(self.safety_interventions_total.clone()))?;
        r.register(Box::new(self.replies_total.clone()))?;
        r.register(Box::new(self.recovered_replies_total.clone()))?;
        r.register(Box::new(self.replayed_updates_total.clone()))?;
        r.register(Box::new(self.payments_total.clone()))?;
        r.register(Box::new(self.subscriptions_active.clone()))?;
        r.register(Box::new(self.entitlement_denials_total.clone()))?;
        r.register(Box::new(self.api_requests_total.clone()))?;
        r.register(Box::new(self.ready.clone()))?;
        r.register(Box::new(self.supervision_escalated.clone()))?;
        r.register(Box::new(self.memory_saved_total.clone()))?;
        r.register(Box::new(self.memory_extraction_failures_total.clone()))?;
        r.register(Box::new(self.memory_recall_seconds.clone()))?;
        r.register(Box::new(self.memory_recall_skipped_total.clone()))?;
        r.register(Box::new(self.memory_queue_depth.clone()))?;
        r.register(Box::new(self.memory_jobs_dropped_total.clone()))?;
        r.register(Box::new(self.outbox_queue_depth.clone()))?;
        r.register(Box::new(self.outbox_shed_total.clone()))?;
        r.register(Box::new(self.telegram_retry_after_total.clone()))?;
        r.register(Box::new(self.telegram_blocked_users_total.clone()))?;
        r.register(Box::new(self.notifications_sent_total.clone()))?;
        r.register(Box::new(self.scheduler_lag_seconds.clone()))?;
        // Every kind of notification shows (at 0) before its first is sent.
        for kind in crate::domain::notification::NotificationKind::ALL {
            self.notifications_sent_total
                .with_label_values(&[kind.as_str(), "sent"]);
        }
        // The outbox's priorities (`outbox::Priority::as_str`).
        for priority in ["reply", "stream", "notification", "broadcast"] {
            self.outbox_queue_depth.with_label_values(&[priority]);
        }
        for saved in MemorySaved::ALL {
            self.memory_saved_total.with_label_values(&[saved.as_str()]);
        }
        for reason in ExtractionFailure::ALL {
            self.memory_extraction_failures_total
                .with_label_values(&[reason.as_str()]);
        }
        for reason in RecallSkipped::ALL {
            self.memory_recall_skipped_total
                .with_label_values(&[reason.as_str()]);
        }
        for stage in ["embed", "rank"] {
            self.memory_recall_seconds.with_label_values(&[stage]);
        }
        for outcome in Recovered::ALL {
            self.recovered_replies_total
                .with_label_values(&[outcome.as_str()]);
        }
        for kind in SafetyKind::ALL {
            self.safety_interventions_total
                .with_label_values(&[kind.as_str()]);
        }
        for outcome in ReplyOutcome::ALL {
            self.replies_total.with_label_values(&[outcome.as_str()]);
        }
        // Pre-create the fixed label values so dashboards see zeros rather than gaps.
        for direction in ["in", "out"] {
            self.telegram_messages_total.with_label_values(&[direction]);
        }
        for kind in ["prompt", "completion"] {
            self.ai_tokens_used_total.with_label_values(&[kind]);
        }
        for kind in ErrorKind::ALL {
            self.errors_total.with_label_values(&[kind.as_str()]);
        }
        for reason in ["free_limit", "fair_use"] {
            self.entitlement_denials_total.with_label_values(&[reason]);
        }
        for status in ["paid", "refunded"] {
            self.payments_total.with_label_values(&[STARS, status]);
        }
        for kind in ActorKind::ALL {
            let label = [kind.as_str()];
            self.actor_restarts_total.with_label_values(&label);
            // A service has no actors and no mailbox: no series pretends otherwise.
            if kind.shape() == Shape::Mailbox {
                self.actors_live.with_label_values(&label);
                self.actor_mailbox_depth.with_label_values(&label);
            }
        }
        Ok(())
    }

    /// The registry to render at `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn count_error(&self, kind: ErrorKind) {
        self.errors_total.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn count_reply(&self, outcome: ReplyOutcome) {
        self.replies_total
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// One payment event of `provider` with `status` (`vitte_payments_total`).
    pub fn count_payment(&self, provider: &str, status: &str) {
        self.payments_total
            .with_label_values(&[provider, status])
            .inc();
    }

    pub fn count_recovered(&self, outcome: Recovered) {
        self.recovered_replies_total
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    pub fn count_safety(&self, kind: SafetyKind) {
        self.safety_interventions_total
            .with_label_values(&[kind.as_str()])
            .inc();
    }
}
