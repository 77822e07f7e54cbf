//! The way out to the user: Telegram in production, the terminal in `vitte chat`.

use async_trait::async_trait;

use super::ChatId;

/// An inline keyboard: rows of buttons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyboard {
    pub rows: Vec<Vec<Button>>,
}

/// One inline button: the label the user sees and the data the bot gets back when pressed,
/// or a link it opens (`url`: then `data` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub data: String,
    pub url: Option<String>,
}

/// Why a message could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The user blocked the bot or deleted the chat; retrying will not help.
    #[error("the user has blocked the bot")]
    Blocked,
    /// Telegram refused the call, or could not be reached: nothing was applied, and doing
    /// it another way (an edit as a new message) shows it once.
    #[error("delivery failed: {0}")]
    Failed(String),
    /// No answer came (a timeout, a connection lost after sending): Telegram may have applied
    /// the call. Doing it again as a new message could show it twice, so it is not.
    #[error("delivery uncertain: {0}")]
    MaybeDelivered(String),
    /// Telegram asks to wait this long (flood control); returned for drafts, which are not
    /// worth waiting for.
    #[error("Telegram asks to wait {retry_after:?}")]
    Throttled { retry_after: std::time::Duration },
    /// The outbox was full and this call was less important than the rest: it was never
    /// sent.
    #[error("the outbox is full")]
    Shed,
    /// The Bot API server does not know the method (a self-hosted or older server without
    /// message drafts): doing it another way is the only way.
    #[error("the Bot API server does not support {0}")]
    Unsupported(&'static str),
}

/// How an edited message is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// A draft of a reply still being written: plain text (half-written Markdown would be
    /// rejected), possibly shown again later.
    Draft,
    /// The finished text: Markdown, falling back to plain text when Telegram rejects it.
    Final,
}

/// Outgoing messages to the user (Telegram in production, the terminal in `vitte chat`).
#[async_trait]
pub trait Messenger: Send + Sync + 'static {
    /// Sends one message of at most 4096 characters, with an optional inline keyboard.
    /// Returns the id of the sent message.
    async fn send_text(
        &self,
        chat: ChatId,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError>;

    /// Replaces the text (and the inline keyboard: none removes it) of a message sent
    /// before. Editing to the text it already has is not an error.
    async fn edit_text(
        &self,
        chat: ChatId,
        message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        render: Render,
    ) -> Result<(), DeliveryError>;

    /// Shows the reply being written in a private chat as a message draft (Bot API 9.5,
    /// `sendMessageDraft`): Telegram animates the changes between calls with the same
    /// non-zero `draft_id`, shows "Thinking…" for an empty text, and (Bot API 10.3) a stop
    /// button whose press comes back as a `stopped_message_generation` update. The draft is
    /// a preview: the finished reply is sent as a message of its own, which replaces it.
    /// A messenger without drafts answers [`DeliveryError::Unsupported`].
    async fn send_draft(
        &self,
        _chat: ChatId,
        _draft_id: i64,
        _text: &str,
    ) -> Result<(), DeliveryError> {
        Err(DeliveryError::Unsupported("sendMessageDraft"))
    }

    /// Removes a message the bot sent (a leftover part of a reply that got shorter).
    async fn delete_message(&self, chat: ChatId, message_id: i64) -> Result<(), DeliveryError>;

    /// Acknowledges a pressed inline button (stops its loading spinner).
    async fn acknowledge_button(&self, callback_id: &str) -> Result<(), DeliveryError>;
}
