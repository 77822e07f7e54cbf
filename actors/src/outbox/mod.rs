//! The outbox: every call to Telegram that shows the user something goes through it, so the
//! bot keeps to Telegram's limits however many replies, notifications and broadcasts are
//! under way.
//!
//! ```text
//!  sessions (replies, edits) ─┐                 ┌─ Pacer: 30/s overall, a short burst then
//!  payment desk, scheduler ───┼─► Outbox ───────┤   1/s per private chat, 20/min per group,
//!  broadcasts ────────────────┘  (one actor,    │   429 pauses (a chat, or everything)
//!                                 4 queues by   └─► the transport (the Bot API client)
//!                                 priority)          │ 403: the user blocked the bot
//!                                                    ▼
//!                                              BlockedListener (marks the user inactive,
//!                                              pauses their jobs)
//! ```
//!
//! Calls wait in four queues, served in order of [`Priority`]: interactive replies, then the
//! drafts of replies being streamed, then notifications, then broadcasts. A chat has at most
//! one call in flight, so a chat's messages keep their order. A draft (an edit of a reply
//! still being written) never queues: if its chat must wait, the caller is told at once how
//! long (`DeliveryError::Throttled`), since a later draft or the final text shows it anyway.
//! The queues hold at most `capacity` calls; past it broadcasts are shed first, then
//! notifications, then drafts; a reply is never shed.
//!
//! Pacing runs on the injected [`Clock`](crate::ports::Clock), so a test (or the benchmark)
//! can run a broadcast to 100 000 chats in controlled time.
//!
//! Files: [`actor`] the actor and its handle (which is also the `Messenger` the rest of vitte
//! uses), [`messages`] what it is sent, [`pacer`] the limits' arithmetic.

pub mod actor;
pub mod messages;
pub mod pacer;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use actor::{Outbox, OutboxDeps, OutboxHandle, OutboxMessenger};
pub use messages::{Pulse, Request, Sent};

use crate::ports::ChatId;

/// Which queue a call waits in; earlier variants go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A reply to what a user just did.
    Reply = 0,
    /// A draft of a reply being streamed.
    Stream = 1,
    /// A scheduled notification (reminders, reports, payment notices).
    Notification = 2,
    /// An operator's broadcast.
    Broadcast = 3,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Reply,
        Priority::Stream,
        Priority::Notification,
        Priority::Broadcast,
    ];

    /// The label of `outbox_queue_depth{priority}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Reply => "reply",
            Priority::Stream => "stream",
            Priority::Notification => "notification",
            Priority::Broadcast => "broadcast",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Telegram's limits as the outbox keeps them (`[outbox]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxSettings {
    /// Messages (and edits, and drafts) a second for the whole bot: Telegram's "about 30".
    pub global_per_second: u32,
    /// A private chat's steady pace: one call per this interval ("about one a second").
    pub private_interval: Duration,
    /// Calls a private chat may get in a row before the pace applies (a reply's placeholder,
    /// its final text and its buttons).
    pub private_burst: u32,
    /// Messages a minute to one group: Telegram's 20.
    pub group_per_minute: u32,
    /// Calls that may wait in the queues (replies are taken beyond it).
    pub capacity: usize,
    /// A 429 asking to wait longer than this fails the call instead of holding it.
    pub max_retry_after: Duration,
    /// Attempts of one call under flood control before it fails.
    pub max_attempts: u32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            global_per_second: 30,
            private_interval: Duration::from_secs(1),
            private_burst: 3,
            group_per_minute: 20,
            capacity: 10_000,
            max_retry_after: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

/// Told when a user blocked the bot (or deleted their account): storage marks them
/// inactive and their scheduled jobs pause until they write again.
pub trait BlockedListener: Send + Sync + 'static {
    fn blocked(&self, chat: ChatId);
}
