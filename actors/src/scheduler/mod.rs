//! The scheduler: persistent jobs that tell users something when it is due (plan notices,
//! payment notices, inactivity reminders, weekly and monthly recaps, milestones), and the
//! operators' broadcasts.
//!
//! ```text
//!  sessions ── UserSeen (activation, passivation): plans recaps and the inactivity reminder;
//!           ── Schedule (milestones), ReportNow (/report), ZoneChanged
//!  payment desk ── Schedule (plan and payment notices, due now or later)
//!  /admin/broadcast ── JobStore::create_broadcast ── Poke
//!  its own clock ── Tick (every poll_interval, or when the next job is due)
//!                       ▼
//!                  Scheduler (one actor) ── takes due jobs and deliveries from storage,
//!                       │                   checks the user's settings, quiet hours and
//!                       │                   the misfire window, writes the text (the LLM
//!                       │                   for reminders and recaps)
//!                       ▼
//!                  Outbox (notifications, broadcasts: its two lowest priorities)
//! ```
//!
//! **Delivery guarantees.** A job is unique by its idempotency key (kind, user and period:
//! `weekly_recap:42:2026-W49`), so a restart or a repeated event never schedules it twice.
//! A job is taken (`running`, one more attempt) before it runs and finished after; a process
//! that stops in between leaves it `running`, and the next start runs it again
//! (at-least-once: a job is lost never, and sent twice only if the process died between
//! Telegram's answer and the write that follows it). A broadcast delivery is the other way
//! round: left `sending`, it becomes `unconfirmed` and is never sent again, because a
//! broadcast repeated to thousands is worse than one message missed.
//!
//! **Misfires.** A job found later than its kind's window
//! ([`NotificationKind::misfire_window`](crate::domain::notification::NotificationKind::misfire_window))
//! is skipped and recorded (`notifications_sent_total{status="late"}`); quiet hours postpone
//! a job to their end, which moves its due time, so a postponed job is never "late".
//!
//! Files: [`actor`] the actor and its handle, [`messages`] what it is sent, [`handlers`]
//! what it does with a job, [`planning`] which jobs a user should have.

pub mod actor;
pub mod handlers;
pub mod messages;
pub mod planning;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

pub use actor::{Scheduler, SchedulerHandle};

use crate::domain::notification::QuietHours;
use crate::domain::persona::PersonaCatalog;
use crate::metrics::Metrics;
use crate::outbox::OutboxHandle;
use crate::ports::payments::PaymentStore;
use crate::ports::schedule::JobStore;
use crate::ports::{Clock, LanguageModel};
use crate::supervision::Supervisor;

/// The scheduler's configuration (`[notifications]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerSettings {
    /// How often storage is asked for due jobs when nothing is known to be due sooner.
    pub poll_interval: Duration,
    /// Jobs taken at once.
    pub batch: usize,
    /// Jobs running at once (reminders and recaps wait for the LLM).
    pub concurrency: usize,
    /// Broadcast deliveries taken at once (each is paced by the outbox).
    pub broadcast_batch: usize,
    /// The zone of users who set none.
    pub default_zone: Tz,
    /// The quiet hours of users who set none.
    pub default_quiet: QuietHours,
    /// Days without a message before the persona writes.
    pub inactivity_after: Duration,
    /// Messages with one persona that are celebrated.
    pub milestones: Vec<u32>,
    /// Attempts of a job before it fails.
    pub max_attempts: u32,
    /// Pause before a failed job runs again (times the attempts so far).
    pub retry_delay: Duration,
    /// Recurring recaps stop for a user silent this long (they start again when the user
    /// writes).
    pub recaps_stop_after: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            poll_interval: Duration::from_secs(5),
            batch: 100,
            concurrency: 16,
            broadcast_batch: 60,
            default_zone: chrono_tz::UTC,
            default_quiet: QuietHours { start: 23, end: 8 },
            inactivity_after: Duration::from_secs(7 * 86_400),
            milestones: vec![100, 500, 1_000],
            max_attempts: 3,
            retry_delay: Duration::from_secs(60),
            recaps_stop_after: Duration::from_secs(60 * 86_400),
        }
    }
}

/// What the scheduler needs.
pub struct SchedulerDeps {
    pub store: Arc<dyn JobStore>,
    /// Plans, for "your plan ends in three days".
    pub payments: Arc<dyn PaymentStore>,
    pub outbox: OutboxHandle,
    /// Reminders in character and recaps.
    pub llm: Arc<dyn LanguageModel>,
    pub personas: Arc<PersonaCatalog>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub settings: SchedulerSettings,
}

/// What sessions need of notifications: the scheduler, the settings' storage, the defaults.
pub struct NotificationDeps {
    pub notifier: Arc<dyn crate::ports::schedule::Notifier>,
    pub store: Arc<dyn JobStore>,
    pub settings: SchedulerSettings,
}
