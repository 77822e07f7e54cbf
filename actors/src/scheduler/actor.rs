//! The scheduler actor (one per process, on its own arbiter) and its handle.
//!
//! It follows the supervision template ([`crate::supervision::guard`]): each job runs in the
//! scheduler's [`Guard`]; a panic fails that job's attempt (it is postponed like a failure,
//! so it runs again until its attempts are spent), is counted against the `scheduler`
//! kind's restart intensity, and the scheduler rests for the backoff before its next pass.
//! Its state is all in storage: a restart takes up where it stopped.

use std::sync::Arc;

use actix::prelude::*;
use futures::StreamExt;

use super::messages::{Poke, ReportNow, Schedule, UserSeen, ZoneChanged};
use super::{SchedulerDeps, handlers};
use crate::ports::clock::{UnixMillis, millis};
use crate::ports::schedule::{Job, JobOutcome, NewJob, Notifier};
use crate::ports::{ChatId, UserId};
use crate::supervision::{ActorKind, Guard};

/// The scheduler; see the module documentation of [`crate::scheduler`].
pub struct Scheduler {
    deps: Arc<SchedulerDeps>,
    guard: Arc<Guard>,
    /// A pass is running.
    busy: bool,
    /// Another pass was asked for while one ran.
    again: bool,
    /// The wait for the next pass.
    waiting: Option<SpawnHandle>,
}

/// How sessions, the payment desk and the server reach the scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    address: Addr<Scheduler>,
}

/// What one pass found.
struct Pass {
    /// A batch was full: more may be due now.
    more: bool,
    next_due: Option<UnixMillis>,
}

impl Scheduler {
    /// Starts the scheduler on an arbiter of its own. Jobs and deliveries a stopped process
    /// left in flight are recovered first (see [`crate::scheduler`]).
    pub fn launch(deps: SchedulerDeps) -> SchedulerHandle {
        let deps = Arc::new(deps);
        let arbiter = Arbiter::new().handle();
        let address = Scheduler::start_in_arbiter(&arbiter, move |_| Scheduler {
            guard: Arc::new(Guard::new(ActorKind::Scheduler, deps.supervisor.clone())),
            deps,
            busy: false,
            again: false,
            waiting: None,
        });
        SchedulerHandle { address }
    }

    /// Runs a pass now (or right after the one running).
    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        if let Some(waiting) = self.waiting.take() {
            ctx.cancel_future(waiting);
        }
        self.busy = true;
        self.again = false;
        let deps = self.deps.clone();
        let guard = self.guard.clone();
        let work = async move { guard.run(run_pass(&deps, &guard)).await };
        ctx.spawn(work.into_actor(self).map(|outcome, scheduler, ctx| {
            scheduler.busy = false;
            match outcome {
                Ok(pass) if pass.more || scheduler.again => scheduler.pass(ctx),
                Ok(pass) => scheduler.wait(pass.next_due, ctx),
                Err(crash) => {
                    let rest = tokio::time::sleep(crash.restart_in);
                    scheduler.waiting = Some(ctx.spawn(rest.into_actor(scheduler).map(
                        |(), scheduler, ctx| {
                            scheduler.waiting = None;
                            scheduler.pass(ctx);
                        },
                    )));
                }
            }
        }));
    }

    /// Sleeps (on the injected clock) until the next job is due or the poll interval ends.
    fn wait(&mut self, next_due: Option<UnixMillis>, ctx: &mut Context<Self>) {
        let now = self.deps.clock.now_millis();
        let poll = now.saturating_add(millis(self.deps.settings.poll_interval));
        let at = next_due.map_or(poll, |due| due.clamp(now, poll));
        let sleep = self.deps.clock.sleep_until(at);
        self.waiting = Some(ctx.spawn(sleep.into_actor(self).map(|(), scheduler, ctx| {
            scheduler.waiting = None;
            scheduler.pass(ctx);
        })));
    }

    /// Runs `work` beside the passes (it touches no pass state).
    fn beside(&self, work: impl Future<Output = ()> + 'static, ctx: &mut Context<Self>) {
        let guard = self.guard.clone();
        ctx.spawn(
            async move {
                let _ = guard.run(work).await;
            }
            .into_actor(self),
        );
    }
}

/// Runs one job in the guard; a panic postpones it like a failure.
async fn run_guarded(deps: &SchedulerDeps, guard: &Guard, job: &Job) {
    if let Err(crash) = guard.run(handlers::run_job(deps, job)).await {
        let now = deps.clock.now_millis();
        let outcome = JobOutcome::Postponed {
            until: now.saturating_add(millis(deps.settings.retry_delay)),
            reason: format!("crashed: {}", crash.message),
        };
        if let Err(error) = deps.store.finish(job.id, &outcome, now).await {
            tracing::warn!(%error, "could not record a crashed job");
        }
    }
}

/// Takes the due jobs and broadcast deliveries and runs them.
async fn run_pass(deps: &SchedulerDeps, guard: &Guard) -> Pass {
    let settings = &deps.settings;
    let now = deps.clock.now_millis();
    let jobs = match deps.store.take_due(now, settings.batch).await {
        Ok(jobs) => jobs,
        Err(error) => {
            tracing::warn!(%error, "the scheduler could not read due jobs");
            Vec::new()
        }
    };
    let lag = jobs
        .iter()
        .map(|job| now.saturating_sub(job.due_at))
        .max()
        .unwrap_or(0)
        .max(0);
    deps.metrics.scheduler_lag_seconds.set(lag as f64 / 1_000.0);
    let jobs_full = jobs.len() >= settings.batch;
    // One user's jobs run one after another, in the order they were due (a failed renewal's
    // notice after the grace it explains); different users' run side by side.
    let mut by_user: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        match by_user
            .iter_mut()
            .find(|group| group[0].user_id == job.user_id)
        {
            Some(group) => group.push(job),
            None => by_user.push(vec![job]),
        }
    }
    futures::stream::iter(by_user)
        .for_each_concurrent(settings.concurrency.max(1), |group| async move {
            for job in group {
                run_guarded(deps, guard, &job).await;
            }
        })
        .await;
    let deliveries = match deps
        .store
        .take_deliveries(now, settings.broadcast_batch)
        .await
    {
        Ok(deliveries) => deliveries,
        Err(error) => {
            tracing::warn!(%error, "the scheduler could not read broadcast deliveries");
            Vec::new()
        }
    };
    let deliveries_full = deliveries.len() >= settings.broadcast_batch;
    let taken = deliveries.len();
    futures::stream::iter(deliveries)
        .for_each_concurrent(settings.broadcast_batch.max(1), |delivery| async move {
            let (status, retry_at) = match guard.run(handlers::deliver(deps, &delivery)).await {
                Ok(outcome) => outcome,
                Err(_) => (crate::ports::schedule::DeliveryStatus::Failed, None),
            };
            if let Err(error) = deps
                .store
                .finish_delivery(delivery.broadcast_id, delivery.user_id, status, retry_at)
                .await
            {
                tracing::warn!(%error, "could not record a broadcast delivery");
            }
        })
        .await;
    if taken > 0 {
        if let Err(error) = deps
            .store
            .close_finished_broadcasts(deps.clock.now_millis())
            .await
        {
            tracing::warn!(%error, "could not close finished broadcasts");
        }
    }
    let next_due = deps.store.next_due().await.unwrap_or(None);
    Pass {
        more: jobs_full || deliveries_full,
        next_due,
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Scheduler.as_str()])
            .inc();
        let deps = self.deps.clone();
        let recover = async move {
            match deps.store.recover_running().await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "jobs interrupted by a stop run again"),
                Err(error) => tracing::warn!(%error, "could not recover interrupted jobs"),
            }
            match deps.store.recover_sending().await {
                Ok(0) => {}
                Ok(count) => tracing::warn!(
                    count,
                    "broadcast messages in flight at a stop are marked unconfirmed, not resent"
                ),
                Err(error) => tracing::warn!(%error, "could not recover broadcast deliveries"),
            }
        };
        ctx.wait(recover.into_actor(self));
        ctx.run_later(std::time::Duration::ZERO, |scheduler, ctx| {
            scheduler.pass(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Scheduler.as_str()])
            .dec();
    }
}

impl Handler<Poke> for Scheduler {
    type Result = ();

    /// Runs a pass now.
    fn handle(&mut self, _poke: Poke, ctx: &mut Self::Context) {
        self.pass(ctx);
    }
}

impl Handler<Schedule> for Scheduler {
    type Result = ();

    /// Stores the job, then runs a pass if it is due.
    fn handle(&mut self, Schedule(job): Schedule, ctx: &mut Self::Context) {
        let deps = self.deps.clone();
        let store = async move {
            if let Err(error) = deps.store.schedule(&job).await {
                tracing::warn!(%error, kind = job.kind.as_str(), "could not schedule a notification");
            }
            job.due_at <= deps.clock.now_millis()
        };
        ctx.spawn(store.into_actor(self).map(|due, scheduler, ctx| {
            if due {
                scheduler.pass(ctx);
            }
        }));
    }
}

impl Handler<UserSeen> for Scheduler {
    type Result = ();

    /// Plans the user's jobs (see [`handlers::user_seen`]).
    fn handle(&mut self, UserSeen(user_id): UserSeen, ctx: &mut Self::Context) {
        let deps = self.deps.clone();
        self.beside(
            async move { handlers::user_seen(&deps, user_id).await },
            ctx,
        );
    }
}

impl Handler<ZoneChanged> for Scheduler {
    type Result = ();

    /// Moves the user's recaps to their new zone (see [`handlers::replan_recaps`]).
    fn handle(&mut self, ZoneChanged(user_id): ZoneChanged, ctx: &mut Self::Context) {
        let deps = self.deps.clone();
        self.beside(
            async move { handlers::replan_recaps(&deps, user_id).await },
            ctx,
        );
    }
}

impl Handler<ReportNow> for Scheduler {
    type Result = ();

    /// Writes and sends /report beside the passes (see [`handlers::report_now`]).
    fn handle(&mut self, report: ReportNow, ctx: &mut Self::Context) {
        let deps = self.deps.clone();
        self.beside(
            async move { handlers::report_now(&deps, report.user_id, report.chat, report.lang).await },
            ctx,
        );
    }
}

impl SchedulerHandle {
    /// Looks for due jobs now (a broadcast was created).
    pub fn poke(&self) {
        self.address.do_send(Poke);
    }
}

impl Notifier for SchedulerHandle {
    fn notify(&self, job: NewJob) {
        self.address.do_send(Schedule(job));
    }

    fn user_seen(&self, user_id: UserId) {
        self.address.do_send(UserSeen(user_id));
    }

    fn zone_changed(&self, user_id: UserId) {
        self.address.do_send(ZoneChanged(user_id));
    }

    fn report_now(&self, user_id: UserId, chat: ChatId, lang: crate::domain::texts::Lang) {
        self.address.do_send(ReportNow {
            user_id,
            chat,
            lang,
        });
    }
}
