//! The guard: how every supervised component runs its work. This is the template a new
//! actor follows.
//!
//! 1. **Declare the kind** in [`super::kinds`] and give it a `[supervision.<name>]` section in
//!    `config/default.toml` (restart intensity, backoff, mailbox capacity and overflow, idle
//!    and shutdown timeouts). Nothing else names the kind.
//! 2. **Hold one [`Guard`]** per actor (or per independent unit of a service: the LLM
//!    gateway has one per provider). It remembers that unit's crashes in a row, so its
//!    backoff grows while it keeps failing and starts over after `reset_after_ms` of quiet.
//! 3. **Run each message's work through [`Guard::run`].** The work owns whatever state it
//!    changes (the session hands its state to the work and gets it back), so a panic halfway
//!    leaves nothing half-updated behind: on `Err(crash)` the state is dropped.
//! 4. **On a [`Crash`]:** answer whoever waits for this work (a user gets an apology, never
//!    silence), rest for [`Crash::restart_in`], then load the state again from storage and go
//!    on with the mailbox. The guard has already logged the panic, counted it
//!    (`vitte_actor_restarts_total{kind}`, `errors_total{kind="panic"}`) and recorded the
//!    restart against the kind's intensity: past it the kind is escalated and
//!    `/health/ready` fails until old restarts leave the window.
//! 5. **Report** live actors and mailbox depth on `vitte_actors_live{kind}` and
//!    `vitte_actor_mailbox_depth{kind}` (mailbox kinds), and let the mailbox follow the
//!    kind's `mailbox_capacity` and `overflow` (actix's `do_send` ignores capacity, so the
//!    actor counts for itself), and stop when idle for `idle_timeout`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use super::{ActorKind, Supervisor};
use crate::resilience::backoff::BackoffState;
use crate::sync::lock;

/// Runs one component's work under supervision; see the module documentation.
pub struct Guard {
    kind: ActorKind,
    supervisor: Arc<Supervisor>,
    /// This component's crashes in a row, for its backoff.
    crashes: Mutex<BackoffState>,
}

/// A panic caught by a [`Guard`], and what the component does about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Crash {
    pub kind: ActorKind,
    /// The panic's message.
    pub message: String,
    /// How long the component rests before it runs again: the kind's backoff, growing with
    /// crashes in a row.
    pub restart_in: Duration,
    /// Whether this crash took the kind past its restart intensity (it is escalated).
    pub escalated: bool,
}

impl Guard {
    pub fn new(kind: ActorKind, supervisor: Arc<Supervisor>) -> Guard {
        Guard {
            kind,
            supervisor,
            crashes: Mutex::new(BackoffState::new()),
        }
    }

    pub fn kind(&self) -> ActorKind {
        self.kind
    }

    /// Runs `work` to its end, or catches its panic and turns it into a [`Crash`] (logged,
    /// counted and recorded against the kind's restart intensity).
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Crash> {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(output) => Ok(output),
            Err(payload) => Err(self.crashed(panic_message(payload.as_ref()))),
        }
    }

    fn crashed(&self, message: String) -> Crash {
        let kind = self.kind;
        tracing::error!(kind = kind.as_str(), panic = %message, "a supervised component panicked; it restarts after its backoff");
        self.supervisor
            .metrics()
            .count_error(crate::metrics::ErrorKind::Panic);
        let escalated = self.supervisor.record_restart(kind);
        let policy = self.supervisor.policy(kind);
        let restart_in = lock(&self.crashes).next_delay(
            &policy.backoff,
            tokio::time::Instant::now().into_std(),
            fastrand::f64(),
        );
        Crash {
            kind,
            message,
            restart_in,
            escalated,
        }
    }
}

/// The message of a caught panic (its `&str` or `String` payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::test_supervisor as supervisor;

    #[tokio::test(start_paused = true)]
    async fn work_that_ends_passes_its_output_through() {
        let (supervisor, metrics) = supervisor(1);
        let guard = Guard::new(ActorKind::Session, supervisor);
        assert_eq!(guard.run(async { 7 }).await, Ok(7));
        let restarts = metrics.actor_restarts_total.with_label_values(&["session"]);
        assert_eq!(restarts.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_counted_backs_off_and_escalates_past_the_intensity() {
        let (supervisor, metrics) = supervisor(1);
        let guard = Guard::new(ActorKind::Session, supervisor.clone());
        let first = guard
            .run(async { panic!("first") })
            .await
            .expect_err("caught");
        assert_eq!(first.message, "first");
        assert_eq!(first.restart_in, Duration::from_millis(100));
        assert!(!first.escalated);
        assert!(supervisor.escalated_kinds().is_empty());

        let second = guard
            .run(async { panic!("{}", String::from("second")) })
            .await
            .expect_err("caught");
        assert_eq!(second.message, "second");
        assert_eq!(
            second.restart_in,
            Duration::from_millis(200),
            "backoff grows"
        );
        assert!(second.escalated);
        assert_eq!(supervisor.escalated_kinds(), [ActorKind::Session]);
        let restarts = metrics.actor_restarts_total.with_label_values(&["session"]);
        assert_eq!(restarts.get(), 2);
        assert_eq!(metrics.errors_total.with_label_values(&["panic"]).get(), 2);

        // After a quiet period the backoff starts over, and the escalation ends.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(supervisor.escalated_kinds().is_empty());
        let third = guard
            .run(async { panic!("third") })
            .await
            .expect_err("caught");
        assert_eq!(third.restart_in, Duration::from_millis(100));
    }
}
