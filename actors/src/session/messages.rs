//! The messages of the session actors and their shards, at the top of the session's layer:
//! who sends what to whom.
//!
//! - ingress → [`SessionRouter::route`](super::router::SessionRouter::route) →
//!   [`RouteEvent`] → the user's shard;
//! - startup recovery → [`SessionRouter::activate`](super::router::SessionRouter::activate)
//!   → [`Activate`] → the user's shard, which activates the session;
//! - shard → [`Deliver`] → the user's session (activated first if need be);
//! - session → [`SessionIdle`] → its shard, after the idle timeout;
//! - shard → [`Passivate`] → the session, when no event is on its way to it;
//! - payment desk → [`NotifyEntitlement`] → the user's shard → [`EntitlementChanged`] → the
//!   session, if it is live (a passive one loads it on activation);
//! - memory keeper → [`NotifyMemory`] → the user's shard → [`MemoryChanged`] → the session,
//!   if it is live.

use actix::prelude::*;

use crate::domain::entitlement::Entitlement;
use crate::domain::event::Inbound;
use crate::memory::MemoryNews;
use crate::ports::UserId;

/// An event to deliver to its user's session, activating the session if needed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RouteEvent(pub Inbound);

/// Activates a user's session without an event: after a restart, for users whose replies a
/// crash left unfinished (the session finishes them as it loads).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Activate(pub UserId);

/// An event for this session, routed by its shard.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Inbound);

/// Tells the session to stop: it has been idle and its shard has forgotten it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Passivate;

/// Sent by a session to its shard when it has been idle for the idle timeout.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionIdle {
    pub user_id: UserId,
    /// How many events the session had received; the shard passivates it only if it has
    /// routed no more than that (no event is on its way).
    pub events_received: u64,
}

/// A user's entitlement changed (a payment, a refund, a renewal switch): for their shard,
/// which passes it to the session if it is live.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct NotifyEntitlement {
    pub user_id: UserId,
    pub entitlement: Entitlement,
}

/// The session's user has a new entitlement.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct EntitlementChanged(pub Entitlement);

/// A user's memory changed: for their shard, which passes it to the session if it is live.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct NotifyMemory {
    pub user_id: UserId,
    pub news: MemoryNews,
}

/// The session's user's memory changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MemoryChanged(pub MemoryNews);
