//! The session router: users are sharded over N arbiters (single-threaded event loops) by
//! user id; each shard activates session actors on demand and forgets them when they go idle.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;

use crate::domain::entitlement::Entitlement;
use crate::domain::event::Inbound;
use crate::memory::{MemoryListener, MemoryNews};
use crate::payments::EntitlementListener;
use crate::ports::UserId;
use crate::session::actor::SessionActor;
use crate::session::messages::{
    Activate, Deliver, EntitlementChanged, MemoryChanged, NotifyEntitlement, NotifyMemory,
    Passivate, RouteEvent, SessionIdle,
};
use crate::session::state::SessionDeps;

/// Routes events to sessions; cheap to clone and share between HTTP workers.
#[derive(Clone)]
pub struct SessionRouter {
    shards: Arc<[Addr<SessionShard>]>,
    arbiters: Arc<[ArbiterHandle]>,
    deps: Arc<SessionDeps>,
}

impl SessionRouter {
    /// Starts `shard_count` arbiters (at least one), each running one shard. Must be called
    /// inside a running actix system.
    pub fn start(shard_count: usize, deps: SessionDeps) -> SessionRouter {
        let deps = Arc::new(deps);
        let shard_count = shard_count.max(1);
        let mut shards = Vec::with_capacity(shard_count);
        let mut arbiters = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            let arbiter = Arbiter::new().handle();
            let shard_deps = deps.clone();
            shards.push(SessionShard::start_in_arbiter(&arbiter, move |_| {
                SessionShard {
                    deps: shard_deps,
                    sessions: HashMap::new(),
                }
            }));
            arbiters.push(arbiter);
        }
        SessionRouter {
            shards: shards.into(),
            arbiters: arbiters.into(),
            deps,
        }
    }

    /// Hands an event to its user's shard. Events of one user always take the same path, so
    /// their order is kept.
    pub fn route(&self, event: Inbound) {
        // Counted from here, so a shutdown drain also waits for events still in mailboxes.
        self.deps.in_flight.fetch_add(1, Ordering::SeqCst);
        let index = shard_index(event.sender.user_id, self.shards.len());
        self.shards[index].do_send(RouteEvent(event));
    }

    /// Activates `user_id`'s session (if it is not active), which finishes the replies a
    /// crash left unfinished as it loads.
    pub fn activate(&self, user_id: UserId) {
        let index = shard_index(user_id, self.shards.len());
        self.shards[index].do_send(Activate(user_id));
    }

    /// Events accepted by sessions and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.deps.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until every accepted event is finished, or `timeout` passes. Returns whether all
    /// finished. Call it after ingress has stopped.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops the shard arbiters (and with them every session).
    pub fn stop(&self) {
        for arbiter in self.arbiters.iter() {
            arbiter.stop();
        }
    }
}

impl MemoryListener for SessionRouter {
    /// Passes the news to the user's session if it is live.
    fn memory_changed(&self, user_id: UserId, news: MemoryNews) {
        let index = shard_index(user_id, self.shards.len());
        self.shards[index].do_send(NotifyMemory { user_id, news });
    }
}

impl EntitlementListener for SessionRouter {
    /// Passes the change to the user's session if it is live.
    fn changed(&self, user_id: UserId, entitlement: Entitlement) {
        let index = shard_index(user_id, self.shards.len());
        self.shards[index].do_send(NotifyEntitlement {
            user_id,
            entitlement,
        });
    }
}

fn shard_index(user_id: UserId, shards: usize) -> usize {
    // Spread consecutive ids evenly; `rem_euclid` keeps negative ids (test users) in range.
    (user_id.rem_euclid(shards as i64)) as usize
}

/// One shard: the sessions living on one arbiter.
pub struct SessionShard {
    deps: Arc<SessionDeps>,
    sessions: HashMap<UserId, ShardEntry>,
}

struct ShardEntry {
    session: Addr<SessionActor>,
    /// Events routed to this session; compared with what it received before passivating.
    routed: u64,
}

impl Actor for SessionShard {
    type Context = Context<Self>;
}

impl Handler<RouteEvent> for SessionShard {
    type Result = ();

    /// Finds or activates the user's session and delivers the event. A session whose actor
    /// has died is replaced by a fresh activation, which reloads from storage.
    fn handle(&mut self, RouteEvent(event): RouteEvent, ctx: &mut Self::Context) {
        let entry = self.session(event.sender.user_id, ctx);
        entry.routed += 1;
        entry.session.do_send(Deliver(event));
    }
}

impl SessionShard {
    /// The user's session, activated if it is not alive (a session whose actor has died is
    /// replaced by a fresh activation, which reloads from storage).
    fn session(&mut self, user_id: UserId, ctx: &mut Context<Self>) -> &mut ShardEntry {
        let start = |deps: &Arc<SessionDeps>| ShardEntry {
            session: SessionActor::new(user_id, deps.clone(), ctx.address().recipient()).start(),
            routed: 0,
        };
        let entry = self
            .sessions
            .entry(user_id)
            .or_insert_with(|| start(&self.deps));
        if !entry.session.connected() {
            *entry = start(&self.deps);
        }
        entry
    }
}

impl Handler<Activate> for SessionShard {
    type Result = ();

    /// Activates the user's session if it is not active; it loads (and recovers) at once.
    fn handle(&mut self, Activate(user_id): Activate, ctx: &mut Self::Context) {
        self.session(user_id, ctx);
    }
}

impl Handler<NotifyEntitlement> for SessionShard {
    type Result = ();

    /// Passes a changed entitlement to the user's live session; a passive one loads it from
    /// storage when it next activates.
    fn handle(&mut self, notice: NotifyEntitlement, _ctx: &mut Self::Context) {
        if let Some(entry) = self.sessions.get(&notice.user_id) {
            if entry.session.connected() {
                entry
                    .session
                    .do_send(EntitlementChanged(notice.entitlement));
            }
        }
    }
}

impl Handler<NotifyMemory> for SessionShard {
    type Result = ();

    /// Passes memory news to the user's live session; a passive one loads memories and
    /// summaries from storage when it next needs them.
    fn handle(&mut self, notice: NotifyMemory, _ctx: &mut Self::Context) {
        if let Some(entry) = self.sessions.get(&notice.user_id) {
            if entry.session.connected() {
                entry.session.do_send(MemoryChanged(notice.news));
            }
        }
    }
}

impl Handler<SessionIdle> for SessionShard {
    type Result = ();

    /// Passivates an idle session unless an event is already on its way to it.
    fn handle(&mut self, idle: SessionIdle, _ctx: &mut Self::Context) {
        let Some(entry) = self.sessions.get(&idle.user_id) else {
            return;
        };
        if entry.routed == idle.events_received {
            if let Some(entry) = self.sessions.remove(&idle.user_id) {
                entry.session.do_send(Passivate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard_index;

    #[test]
    fn shard_index_is_in_range_for_any_id() {
        for id in [-7_i64, 0, 1, 5, i64::MAX, i64::MIN] {
            assert!(shard_index(id, 3) < 3);
        }
        assert_eq!(shard_index(4, 2), 0);
        assert_eq!(shard_index(5, 2), 1);
    }
}
