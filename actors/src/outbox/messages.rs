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
            Request::Delete { .. } => "deleteMessage",
            Request::Acknowledge { .. } => "answerCallbackQuery",
        }
    }

    /// A draft of a reply still being written: it never waits in a queue.
    pub fn is_draft(&self) -> bool {
        matches!(
            self,
            Request::Edit {
                render: Render::Draft,
                ..
            }
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

/// A call waiting for its turn, and whoever waits for its outcome.
pub struct Call {
    pub chat: Option<ChatId>,
    pub priority: Priority,
    pub request: Request,
    pub answer: oneshot::Sender<Result<Sent, DeliveryError>>,
}

/// Queue a call (answered through its `answer`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit(pub Call);

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
