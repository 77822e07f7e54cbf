//! The event log: what operators look back on (registrations, payments, errors, operator
//! actions), kept in storage with a severity, for `log.event_retention`. Never message texts
//! or secrets. Writing one is best effort: a failure is logged and changes nothing else.

use async_trait::async_trait;

use super::{StoreError, UserId};

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// What kind of event it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A user's first message to the bot.
    Registration,
    /// A payment, renewal, refund or subscription change.
    Payment,
    /// Something failed (a session crashed).
    Error,
    /// An operator did something (a reload, a refund, a block, a broadcast).
    Operator,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registration => "registration",
            EventKind::Payment => "payment",
            EventKind::Error => "error",
            EventKind::Operator => "operator",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Unix milliseconds.
    pub at: i64,
    pub severity: Severity,
    pub kind: EventKind,
    pub user_id: Option<UserId>,
    /// What happened, in a line (no message text, no secret).
    pub detail: String,
}

/// Where events are kept.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    async fn record(&self, event: LoggedEvent) -> Result<(), StoreError>;
}

/// Records `event` in `log`; a failure is logged, never returned.
pub async fn record_event(log: &dyn EventLog, event: LoggedEvent) {
    if let Err(error) = log.record(event).await {
        tracing::warn!(%error, "could not record an event in the event log");
    }
}
