//! Supervision: policy and bookkeeping per kind of component, and the [`Guard`] every
//! supervised component runs its work under.
//!
//! actix restarts nothing on a panic (the actor just disappears, and its senders get
//! `MailboxError::Closed`), so supervision is ours. Each component runs its work through a
//! [`Guard`] (see [`guard`] for the template a new actor follows), which catches a panic,
//! counts it, and says how long to rest before restarting from storage. Each kind has a
//! [`KindPolicy`] that operators tune and reload without a restart. When a kind restarts more
//! often than its restart intensity allows, it is *escalated*: it reports unhealthy, the
//! readiness check fails, and Kubernetes can act.

pub mod guard;
pub mod kinds;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

pub use guard::{Crash, Guard};
pub use kinds::{ActorKind, Shape};

use crate::metrics::Metrics;
use crate::resilience::backoff::BackoffSettings;
use crate::resilience::intensity::{IntensitySettings, RestartIntensity};
use crate::sync::{lock, read, write};

/// What happens to a message that arrives when a mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// The new message is refused (the user is told to send it again).
    Reject,
    /// The oldest waiting message is refused (the user is told) to make room for the new one.
    DropOldest,
}

/// How one kind of actor is supervised.
#[derive(Debug, Clone, PartialEq)]
pub struct KindPolicy {
    /// More restarts than this within the window escalates the kind to unhealthy.
    pub intensity: IntensitySettings,
    /// Delay before a restarted actor runs again, growing with consecutive restarts.
    pub backoff: BackoffSettings,
    /// Messages that may wait in one actor's mailbox.
    pub mailbox_capacity: usize,
    pub overflow: OverflowPolicy,
    /// An actor without messages for this long stops (its state is persisted).
    pub idle_timeout: Duration,
    /// On shutdown, how long to wait for work in progress.
    pub shutdown_timeout: Duration,
}

impl Default for KindPolicy {
    fn default() -> Self {
        KindPolicy {
            intensity: IntensitySettings::default(),
            backoff: BackoffSettings::default(),
            mailbox_capacity: 5,
            overflow: OverflowPolicy::Reject,
            idle_timeout: Duration::from_secs(15 * 60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Policies for every kind, and what happened to each kind so far.
pub struct Supervisor {
    policies: RwLock<HashMap<ActorKind, Arc<KindPolicy>>>,
    intensity: Mutex<HashMap<ActorKind, RestartIntensity>>,
    metrics: Metrics,
}

/// One kind's figures, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    pub shape: Shape,
    /// Actors alive now (mailbox kinds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<i64>,
    pub restarts: u64,
    /// Restarts within the restart-intensity window.
    pub recent_restarts: usize,
    /// Messages waiting in the kind's mailboxes (mailbox kinds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_depth: Option<i64>,
    pub healthy: bool,
}

impl Supervisor {
    pub fn new(policies: HashMap<ActorKind, KindPolicy>, metrics: Metrics) -> Supervisor {
        let supervisor = Supervisor {
            policies: RwLock::new(HashMap::new()),
            intensity: Mutex::new(HashMap::new()),
            metrics,
        };
        supervisor.reconfigure(policies);
        supervisor
    }

    /// The current policy of `kind` (the default for kinds not configured).
    pub fn policy(&self, kind: ActorKind) -> Arc<KindPolicy> {
        read(&self.policies).get(&kind).cloned().unwrap_or_default()
    }

    /// Replaces the policies (a live reload). Restart history is kept.
    pub fn reconfigure(&self, policies: HashMap<ActorKind, KindPolicy>) {
        let policies = policies
            .into_iter()
            .map(|(kind, policy)| (kind, Arc::new(policy)))
            .collect();
        *write(&self.policies) = policies;
    }

    /// Records a restart of an actor of `kind`. Returns true if the kind now exceeds its
    /// restart intensity (it is escalated: unhealthy until old restarts leave the window).
    pub fn record_restart(&self, kind: ActorKind) -> bool {
        self.metrics
            .actor_restarts_total
            .with_label_values(&[kind.as_str()])
            .inc();
        let policy = self.policy(kind);
        let exceeded = lock(&self.intensity)
            .entry(kind)
            .or_default()
            .record(&policy.intensity, Instant::now().into_std());
        if exceeded {
            tracing::error!(
                kind = kind.as_str(),
                max_restarts = policy.intensity.max_restarts,
                within_ms = policy.intensity.within_ms,
                "restart intensity exceeded: escalating, the component reports unhealthy"
            );
        }
        exceeded
    }

    /// Kinds currently over their restart intensity.
    pub fn escalated_kinds(&self) -> Vec<ActorKind> {
        let now = Instant::now().into_std();
        let mut intensity = lock(&self.intensity);
        ActorKind::ALL
            .iter()
            .copied()
            .filter(|kind| {
                let policy = self.policy(*kind);
                intensity
                    .get_mut(kind)
                    .is_some_and(|history| history.exceeded(&policy.intensity, now))
            })
            .collect()
    }

    /// Figures for every kind. Live actors and mailbox depth are given for mailbox kinds
    /// only: a service has neither (its waiting calls are its own figure).
    pub fn report(&self) -> Vec<KindReport> {
        let escalated = self.escalated_kinds();
        let now = Instant::now().into_std();
        ActorKind::ALL
            .iter()
            .map(|kind| {
                let label = [kind.as_str()];
                let policy = self.policy(*kind);
                let recent_restarts = lock(&self.intensity)
                    .get_mut(kind)
                    .map_or(0, |history| history.recent(&policy.intensity, now));
                let mailbox = kind.shape() == Shape::Mailbox;
                KindReport {
                    kind: kind.as_str(),
                    shape: kind.shape(),
                    live: mailbox.then(|| self.metrics.actors_live.with_label_values(&label).get()),
                    restarts: self
                        .metrics
                        .actor_restarts_total
                        .with_label_values(&label)
                        .get(),
                    recent_restarts,
                    mailbox_depth: mailbox.then(|| {
                        self.metrics
                            .actor_mailbox_depth
                            .with_label_values(&label)
                            .get()
                    }),
                    healthy: !escalated.contains(kind),
                }
            })
            .collect()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// A supervisor of sessions for tests: at most `max_restarts` within a minute, a backoff of
/// 100 ms doubling up to a second, no jitter.
#[cfg(test)]
pub(crate) fn test_supervisor(max_restarts: u32) -> (Arc<Supervisor>, Metrics) {
    let metrics = Metrics::new().expect("metrics");
    let policy = KindPolicy {
        intensity: IntensitySettings {
            max_restarts,
            within_ms: 60_000,
        },
        backoff: BackoffSettings {
            min_ms: 100,
            max_ms: 1_000,
            jitter: 0.0,
            reset_after_ms: 10_000,
        },
        ..KindPolicy::default()
    };
    let supervisor = Supervisor::new(
        HashMap::from([(ActorKind::Session, policy)]),
        metrics.clone(),
    );
    (Arc::new(supervisor), metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeding_the_intensity_escalates_the_kind() {
        let (supervisor, _metrics) = test_supervisor(2);
        assert!(!supervisor.record_restart(ActorKind::Session));
        assert!(!supervisor.record_restart(ActorKind::Session));
        assert!(supervisor.escalated_kinds().is_empty());
        assert!(supervisor.record_restart(ActorKind::Session));
        assert_eq!(supervisor.escalated_kinds(), [ActorKind::Session]);
        let report = supervisor.report();
        assert_eq!(report[0].restarts, 3);
        assert!(!report[0].healthy);
        assert!(report[1].healthy);
    }

    #[test]
    fn reconfigure_changes_the_threshold_live() {
        let supervisor = Supervisor::new(HashMap::new(), Metrics::new().expect("metrics"));
        for _ in 0..3 {
            supervisor.record_restart(ActorKind::Llm);
        }
        assert!(supervisor.escalated_kinds().is_empty(), "default allows 5");
        supervisor.reconfigure(HashMap::from([(
            ActorKind::Llm,
            KindPolicy {
                intensity: IntensitySettings {
                    max_restarts: 1,
                    within_ms: 60_000,
                },
                ..KindPolicy::default()
            },
        )]));
        assert_eq!(supervisor.escalated_kinds(), [ActorKind::Llm]);
    }
}
