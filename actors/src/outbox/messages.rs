//! What the outbox is sent.

use actix::Message;
use tokio::sync::oneshot;

use super::{OutboxSettings, Priority};
use crate::ports::{ChatId, DeliveryError, Keyboard, Render};

/// One Bot API call, as the outbox carries it.
#[derive(Debug, Clone)]
pub enum Request {
    Send {
        text: String,
        keyboard: Option<Keyboard>,
    },
    Edit {
        message_id: i64,
        text: String,
        keyboard: Option<Keyboard>,
        render: Render,
    },
    /// A message draft of a reply being written (private chats only).
    Draft {
        draft_id: i64,
        text: String,
    },
    Delete {
        message_id: i64,
    },
    Acknowledge {
        callback_id: String,
    },
}

impl Request {
    /// The Bot API method, for logs.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Send { .. } => "sendMessage",
            Request::Edit { .. } => "editMessageText",
            Request::Draft { .. } => "sendMessageDraft",
            Request::Delete { .. } => "deleteMessage",
            Request::Acknowledge { .. } => "answerCallbackQuery",
        }
    }

    /// A draft of a reply still being written (an edit or a message draft): it never
    /// waits in a queue.
    pub fn is_draft(&self) -> bool {
        matches!(
            self,
            Request::Edit {
                render: Render::Draft,
                ..
            } | Request::Draft { .. }
        )
    }
}

/// What a delivered call gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The id of the message sent.
    Message(i64),
    Done,
}

/// A call asking for its turn. The outbox answers `Ok(())` when the call may go (the caller
/// then makes it and reports with [`Release`]), or why it may not.
pub struct Call {
    pub chat: Option<ChatId>,
    pub priority: Priority,
    pub request: Request,
    /// Asked again after a 429: it goes ahead of its queue.
    pub retry: bool,
    pub answer: oneshot::Sender<Result<(), DeliveryError>>,
}

/// Queue a call (answered through its `answer`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit(pub Call);

/// What became of a call the outbox let go.
#[derive(Debug, Clone)]
pub enum Released {
    /// Telegram took it (or it failed in a way the outbox has nothing to do about).
    Done,
    /// 429: the chat (or everything) waits this long.
    Throttled(std::time::Duration),
    /// 403: the user blocked the bot or deleted their account.
    Blocked,
    /// Telegram refused it (a 400): logged with the method, never retried.
    Refused {
        method: &'static str,
        reason: String,
    },
}

/// A call the outbox let go is over. Answers whether to ask again (after a 429, within the
/// attempts and the longest wait allowed).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Release {
    pub chat: Option<ChatId>,
    pub outcome: Released,
    /// 429s this call got so far, this one included.
    pub attempts: u32,
    pub draft: bool,
}

/// The outbox's state as the simulation driver sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulse {
    /// Calls waiting in the queues.
    pub queued: usize,
    /// Calls sent and not answered yet.
    pub in_flight: usize,
    /// When the next waiting call may go (`None`: nothing waits for time).
    pub next_ready_at: Option<i64>,
}

/// Runs `hook` with the outbox's [`Pulse`] once no call is in flight and none may go now: a
/// test or the benchmark moves a manual clock there, so every call is recorded at the moment
/// the outbox sent it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AtRest {
    pub hook: Box<dyn FnOnce(&Pulse) + Send>,
    pub done: oneshot::Sender<()>,
}

/// New limits (a live reload).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub OutboxSettings);
