//! What the scheduler is sent.

use actix::Message;

use crate::domain::texts::Lang;
use crate::ports::{ChatId, UserId};

/// Look for due jobs now (new ones were stored: a payment notice, a broadcast).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poke;

/// The user's session started or went idle: plan their recaps and reminder, and mark them
/// active (they wrote, so they have not blocked the bot).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UserSeen(pub UserId);

/// The user changed their time zone: their recaps move.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ZoneChanged(pub UserId);

/// /report: the last seven days' recap, now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportNow {
    pub user_id: UserId,
    pub chat: ChatId,
    pub lang: Lang,
}

/// Store a job (unless its key exists) and run it when due.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Schedule(pub crate::ports::schedule::NewJob);
