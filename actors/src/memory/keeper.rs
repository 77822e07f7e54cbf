//! The memory keeper actor: one per process, on its own arbiter, working through its own
//! bounded queue one job at a time.
//!
//! Forgetting does not queue behind other users' work: it runs at once, unless the job in
//! progress is the same user's (then right after it, so nothing that job stores survives).
//!
//! It follows the supervision template ([`crate::supervision::guard`]): each job runs in its
//! [`Guard`]; after a crash the job is dropped (a forget waiting on it is answered
//! `Crashed`), the keeper rests for the backoff and goes on with the queue. Its state is in
//! storage (memories, summaries, each dialog's extraction cursor), so a restart loses at most
//! the jobs queued in memory: their messages are extracted again after the dialog's session
//! reloads its cursor. The queue holds at most the `memory` kind's `mailbox_capacity` jobs;
//! past it the oldest job is dropped and counted (`memory_jobs_dropped_total`), because memory
//! work is never worth holding a reply for. `memory_queue_depth` and
//! `vitte_actor_mailbox_depth{kind="memory"}` show the queue.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::{Extract, ExtractJob, Forget, ForgetError, Listen, Summarise, SummariseJob};
use super::{KeeperDeps, MemoryListener, MemoryNews, handlers};
use crate::ports::UserId;
use crate::ports::memory::MemoryId;
use crate::supervision::{ActorKind, Guard};

/// One piece of queued work.
enum Job {
    Extract(ExtractJob),
    Summarise(SummariseJob),
    Forget {
        user_id: UserId,
        ids: Option<Vec<MemoryId>>,
        done: oneshot::Sender<Result<u64, ForgetError>>,
    },
}

impl Job {
    fn user_id(&self) -> UserId {
        match self {
            Job::Extract(job) => job.user_id,
            Job::Summarise(job) => job.user_id,
            Job::Forget { user_id, .. } => *user_id,
        }
    }
}

/// The memory keeper.
pub struct MemoryKeeper {
    deps: Arc<KeeperDeps>,
    guard: Arc<Guard>,
    queue: VecDeque<Job>,
    busy: bool,
    /// The user whose job is in progress.
    working_for: Option<UserId>,
    listener: Option<Arc<dyn MemoryListener>>,
}

/// How sessions and the server reach the keeper.
#[derive(Clone)]
pub struct KeeperHandle {
    address: Addr<MemoryKeeper>,
}

impl KeeperHandle {
    /// Queues an extraction; never waits.
    pub fn extract(&self, job: ExtractJob) {
        self.address.do_send(Extract(job));
    }

    /// Queues a summary; never waits.
    pub fn summarise(&self, job: SummariseJob) {
        self.address.do_send(Summarise(job));
    }

    /// Forgets memories `ids` of the user (`None`: everything of the user), once the job in
    /// progress is done.
    pub async fn forget(
        &self,
        user_id: UserId,
        ids: Option<Vec<MemoryId>>,
    ) -> Result<u64, ForgetError> {
        self.address
            .send(Forget { user_id, ids })
            .await
            .unwrap_or(Err(ForgetError::Gone))
    }

    /// Tells `listener` about changed memories from now on.
    pub fn listen(&self, listener: Arc<dyn MemoryListener>) {
        self.address.do_send(Listen(listener));
    }
}

impl MemoryKeeper {
    /// Starts the keeper on an arbiter of its own.
    pub fn launch(deps: KeeperDeps) -> KeeperHandle {
        let deps = Arc::new(deps);
        let arbiter = Arbiter::new().handle();
        let address = MemoryKeeper::start_in_arbiter(&arbiter, move |_| MemoryKeeper {
            guard: Arc::new(Guard::new(ActorKind::Memory, deps.supervisor.clone())),
            deps,
            queue: VecDeque::new(),
            busy: false,
            working_for: None,
            listener: None,
        });
        KeeperHandle { address }
    }

    fn report_depth(&self) {
        let depth = self.queue.len() as i64;
        self.deps.metrics.memory_queue_depth.set(depth);
        self.deps
            .metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Memory.as_str()])
            .set(depth);
    }

    /// Queues background work; past the capacity the oldest background job goes.
    fn enqueue(&mut self, job: Job, ctx: &mut Context<Self>) {
        let capacity = self
            .deps
            .supervisor
            .policy(ActorKind::Memory)
            .mailbox_capacity
            .max(1);
        while self.queue.len() >= capacity {
            let oldest = self
                .queue
                .iter()
                .position(|queued| !matches!(queued, Job::Forget { .. }));
            let Some(oldest) = oldest else {
                break;
            };
            self.queue.remove(oldest);
            self.deps.metrics.memory_jobs_dropped_total.inc();
            tracing::debug!("the memory queue is full: its oldest job was dropped");
        }
        self.queue.push_back(job);
        self.report_depth();
        self.next(ctx);
    }

    /// Starts the next job unless one is running.
    fn next(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some(job) = self.queue.pop_front() else {
            return;
        };
        self.report_depth();
        self.busy = true;
        self.working_for = Some(job.user_id());
        let deps = self.deps.clone();
        let guard = self.guard.clone();
        let work = async move {
            let (news, forgot) = match job {
                Job::Extract(job) => {
                    let outcome = guard.run(handlers::extract(&deps, &job)).await;
                    let news = outcome.map(|changed| {
                        if changed {
                            Some((job.user_id, MemoryNews::Memories))
                        } else {
                            None
                        }
                    });
                    (news, None)
                }
                Job::Summarise(job) => {
                    let outcome = guard.run(handlers::summarise(&deps, &job)).await;
                    let news = outcome.map(|summary| {
                        summary.map(|summary| (job.user_id, MemoryNews::Summary(summary)))
                    });
                    (news, None)
                }
                Job::Forget { user_id, ids, done } => {
                    let outcome = guard
                        .run(handlers::forget(&deps, user_id, ids.as_deref()))
                        .await;
                    match outcome {
                        Ok(result) => {
                            let _ = done.send(result);
                            (Ok(None), None)
                        }
                        Err(crash) => (Err(crash), Some(done)),
                    }
                }
            };
            match news {
                Ok(news) => news,
                Err(crash) => {
                    if let Some(done) = forgot {
                        let _ = done.send(Err(ForgetError::Crashed));
                    }
                    tokio::time::sleep(crash.restart_in).await;
                    None
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(|news, keeper, ctx| {
            keeper.busy = false;
            keeper.working_for = None;
            if let (Some(listener), Some((user_id, news))) = (&keeper.listener, news) {
                listener.memory_changed(user_id, news);
            }
            keeper.next(ctx);
        }));
    }
}

impl Actor for MemoryKeeper {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Memory.as_str()])
            .inc();
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Memory.as_str()])
            .dec();
    }
}

impl Handler<Extract> for MemoryKeeper {
    type Result = ();

    /// Queues the extraction (see [`handlers::extract`]).
    fn handle(&mut self, Extract(job): Extract, ctx: &mut Self::Context) {
        self.enqueue(Job::Extract(job), ctx);
    }
}

impl Handler<Summarise> for MemoryKeeper {
    type Result = ();

    /// Queues the summary (see [`handlers::summarise`]).
    fn handle(&mut self, Summarise(job): Summarise, ctx: &mut Self::Context) {
        self.enqueue(Job::Summarise(job), ctx);
    }
}

impl Handler<Forget> for MemoryKeeper {
    type Result = ResponseFuture<Result<u64, ForgetError>>;

    /// Forgets at once, beside the job in progress, unless that job is the same user's:
    /// then first in the queue, after it (so nothing that job stores survives). Forgetting
    /// everything also drops the user's queued jobs.
    fn handle(&mut self, forget: Forget, ctx: &mut Self::Context) -> Self::Result {
        if forget.ids.is_none() {
            self.queue.retain(|job| job.user_id() != forget.user_id);
            self.report_depth();
        }
        if self.working_for != Some(forget.user_id) {
            let (deps, guard) = (self.deps.clone(), self.guard.clone());
            return Box::pin(async move {
                let forgetting = handlers::forget(&deps, forget.user_id, forget.ids.as_deref());
                guard
                    .run(forgetting)
                    .await
                    .unwrap_or(Err(ForgetError::Crashed))
            });
        }
        let (done, answer) = oneshot::channel();
        self.queue.push_front(Job::Forget {
            user_id: forget.user_id,
            ids: forget.ids,
            done,
        });
        self.report_depth();
        self.next(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(ForgetError::Crashed)) })
    }
}

impl Handler<Listen> for MemoryKeeper {
    type Result = ();

    /// Sets whom to tell about changed memories.
    fn handle(&mut self, Listen(listener): Listen, _ctx: &mut Self::Context) {
        self.listener = Some(listener);
    }
}
