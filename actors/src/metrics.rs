//! The runtime's Prometheus metrics. One [`Metrics`] (with its own registry) per running
//! application, so several can live in one process (tests). No label ever carries a user or
//! chat id.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The kinds of `errors_total`.
pub const ERROR_KINDS: [&str; 7] = [
    "llm",
    "storage",
    "telegram",
    "panic",
    "queue_full",
    "webhook_auth",
    "webhook_body",
];

/// Every metric the runtime exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Telegram messages, by direction (`in`: from users, `out`: sent by the bot).
    pub telegram_messages_total: IntCounterVec,
    /// LLM requests by outcome (`ok`, `error`, `timeout`).
    pub ai_requests_total: IntCounterVec,
    pub ai_request_duration_seconds: Histogram,
    pub sessions_active: IntGauge,
    pub session_panics_total: IntCounter,
    /// Errors by kind, one of [`ERROR_KINDS`].
    pub errors_total: IntCounterVec,
    /// Telegram updates dropped because they had been processed already.
    pub duplicate_updates_total: IntCounter,
}

impl Metrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let metrics = Metrics {
            telegram_messages_total: IntCounterVec::new(
                Opts::new("telegram_messages_total", "Telegram messages handled"),
                &["direction"],
            )?,
            ai_requests_total: IntCounterVec::new(
                Opts::new("ai_requests_total", "LLM requests by outcome"),
                &["status"],
            )?,
            ai_request_duration_seconds: Histogram::with_opts(
                HistogramOpts::new("ai_request_duration_seconds", "LLM request duration")
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0]),
            )?,
            sessions_active: IntGauge::new(
                "vitte_sessions_active",
                "Session actors currently active in memory",
            )?,
            session_panics_total: IntCounter::new(
                "vitte_session_panics_total",
                "Panics caught while a session handled an event",
            )?,
            errors_total: IntCounterVec::new(
                Opts::new("errors_total", "Errors by kind"),
                &["kind"],
            )?,
            duplicate_updates_total: IntCounter::new(
                "telegram_duplicate_updates_total",
                "Telegram updates ignored because they were processed already",
            )?,
            registry,
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.telegram_messages_total.clone()))?;
        r.register(Box::new(self.ai_requests_total.clone()))?;
        r.register(Box::new(self.ai_request_duration_seconds.clone()))?;
        r.register(Box::new(self.sessions_active.clone()))?;
        r.register(Box::new(self.session_panics_total.clone()))?;
        r.register(Box::new(self.errors_total.clone()))?;
        r.register(Box::new(self.duplicate_updates_total.clone()))?;
        // Pre-create the common label values so dashboards see zeros rather than gaps.
        for direction in ["in", "out"] {
            self.telegram_messages_total.with_label_values(&[direction]);
        }
        for status in ["ok", "error", "timeout"] {
            self.ai_requests_total.with_label_values(&[status]);
        }
        for kind in ERROR_KINDS {
            self.errors_total.with_label_values(&[kind]);
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
