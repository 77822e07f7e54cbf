//! The ports: what the actors need from the outside world, as small traits.
//!
//! The binary implements them over Telegram (teloxide), an OpenAI-compatible HTTP API (reqwest)
//! and SQL storage (diesel); unit tests implement them in memory.

use async_trait::async_trait;

/// A Telegram user id (also the key of a session).
pub type UserId = i64;
/// A Telegram chat id.
pub type ChatId = i64;
/// The storage id of a dialog.
pub type DialogId = i64;

/// An inline keyboard: rows of buttons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyboard {
    pub rows: Vec<Vec<Button>>,
}

/// One inline button: the label the user sees and the data the bot gets back when pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    pub data: String,
}

/// Why a message could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The user blocked the bot or deleted the chat; retrying will not help.
    #[error("the user has blocked the bot")]
    Blocked,
    /// Telegram (or the network) failed; the message was not delivered.
    #[error("delivery failed: {0}")]
    Failed(String),
    /// Telegram asks to wait this long (flood control); returned for drafts, which are not
    /// worth waiting for.
    #[error("Telegram asks to wait {retry_after:?}")]
    Throttled { retry_after: std::time::Duration },
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

    /// Removes a message the bot sent (a leftover part of a reply that got shorter).
    async fn delete_message(&self, chat: ChatId, message_id: i64) -> Result<(), DeliveryError>;

    /// Shows "typing…" in the chat for a few seconds.
    async fn show_typing(&self, chat: ChatId) -> Result<(), DeliveryError>;

    /// Acknowledges a pressed inline button (stops its loading spinner).
    async fn acknowledge_button(&self, callback_id: &str) -> Result<(), DeliveryError>;
}

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of an LLM request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What a completion is for; decides what may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A persona's reply in a conversation: personal, never cached.
    #[default]
    Companion,
    /// A summary or other derived text (memory, reports): cacheable when deterministic.
    Summary,
}

/// Where a streamed completion's text goes as it arrives (`stream: true`). It remembers
/// whether any text went out, because from then on the request must not be retried or sent
/// to another provider: the user has seen the beginning of this answer.
#[derive(Debug, Clone)]
pub struct TextSink {
    sender: tokio::sync::mpsc::UnboundedSender<String>,
    started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TextSink {
    /// A sink and the receiving end of its text pieces.
    pub fn channel() -> (TextSink, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let sink = TextSink {
            sender,
            started: std::sync::Arc::default(),
        };
        (sink, receiver)
    }

    /// Passes on a piece of the answer (empty pieces are skipped).
    pub fn push(&self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // The receiver is gone only when the caller stopped listening (e.g. /stop).
        let _ = self.sender.send(piece.to_owned());
    }

    /// Whether any text has been passed on.
    pub fn has_started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A request for one completion; the model and default sampling belong to the provider.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    /// Overrides the provider's temperature; `Some(0.0)` makes a request deterministic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    pub purpose: Purpose,
    /// The user it is for, for per-user rate limits; not part of the cache key.
    #[serde(skip)]
    pub user_id: Option<UserId>,
    /// When set, the answer is streamed (`stream: true`) and its text goes here as it
    /// arrives; the completion still carries the whole text at the end.
    #[serde(skip)]
    pub stream: Option<TextSink>,
}

impl CompletionRequest {
    /// A companion reply for `user_id`.
    pub fn companion(messages: Vec<ChatMessage>, user_id: UserId) -> CompletionRequest {
        CompletionRequest {
            messages,
            temperature: None,
            purpose: Purpose::Companion,
            user_id: Some(user_id),
            stream: None,
        }
    }

    /// Whether an answer may be cached and served again: never a companion's reply (it
    /// must not reach another user), never a streamed one, only deterministic requests.
    pub fn is_cacheable(&self) -> bool {
        self.purpose != Purpose::Companion && self.temperature == Some(0.0) && self.stream.is_none()
    }

    /// Whether text of the answer has already been streamed to the caller: then it must not
    /// be asked again (retry or fallback), or the user would see two different beginnings.
    pub fn has_streamed(&self) -> bool {
        self.stream.as_ref().is_some_and(TextSink::has_started)
    }
}

/// What the LLM answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// The provider that served it (set by the gateway; empty from a bare client).
    #[serde(default)]
    pub provider: String,
}

/// Why a completion failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM did not answer in time")]
    Timeout,
    #[error("could not reach the LLM: {0}")]
    Unreachable(String),
    #[error("the LLM answered with HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("the LLM's answer could not be read: {0}")]
    Malformed(String),
    /// Every provider's circuit breaker is open; nothing was sent.
    #[error("the LLM is unavailable; next attempt in {retry_in:?}")]
    CircuitOpen { retry_in: std::time::Duration },
    /// A rate limit refused the request; nothing was sent.
    #[error("too many requests; retry in {retry_in:?}")]
    RateLimited { retry_in: std::time::Duration },
    /// The LLM client panicked (caught by the gateway).
    #[error("the LLM client failed: {0}")]
    Crashed(String),
    /// A streamed answer broke off after some of its text had been passed on.
    #[error("the LLM's answer broke off: {0}")]
    Interrupted(String),
}

impl LlmError {
    /// Errors worth retrying: timeouts, connection failures, 5xx, 429, and 408 (the server
    /// gave up reading the request, which HTTP says may be repeated).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Timeout | LlmError::Unreachable(_) => true,
            LlmError::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            _ => false,
        }
    }

    /// Whether the error says the provider is unhealthy (counts against its breaker): not
    /// answering, failing, refusing our credentials, or answering nonsense. A request the
    /// provider rightly rejects (400, 404, 413, 422) says nothing about its health.
    pub fn counts_against_provider(&self) -> bool {
        match self {
            LlmError::Timeout
            | LlmError::Unreachable(_)
            | LlmError::Malformed(_)
            | LlmError::Crashed(_)
            | LlmError::Interrupted(_) => true,
            LlmError::Status { status, .. } => matches!(status, 401 | 403 | 429) || *status >= 500,
            LlmError::CircuitOpen { .. } | LlmError::RateLimited { .. } => false,
        }
    }

    /// The provider's own wait, if it named one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An OpenAI-compatible chat model.
#[async_trait]
pub trait LanguageModel: Send + Sync + 'static {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError>;
}

/// A storage failure (the details are logged by the implementation).
#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StoreError(pub String);

/// What we know about a Telegram user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub user_id: UserId,
    pub chat_id: ChatId,
    pub first_name: String,
    pub language_code: Option<String>,
}

/// A stored message of a dialog's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its storage id (0 for entries that were never stored).
    pub message_id: i64,
    /// The Telegram message that shows it (the last part of a long reply).
    pub telegram_message_id: Option<i64>,
    /// The Telegram messages of a long reply's other parts, in order.
    pub earlier_parts: Vec<i64>,
    pub role: Role,
    pub content: String,
    /// Tokens of `content`, counted once when the message was stored.
    pub token_count: u32,
}

/// Whether a stored message was fully delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// A normal message.
    Complete,
    /// A user message the LLM could not answer (kept, so nothing is lost).
    Unanswered,
    /// A reply that Telegram did not accept (kept in the history all the same).
    Undelivered,
    /// A reply cut short (the stream broke or the user pressed /stop): what the user saw.
    Partial,
    /// A reply replaced by "Regenerate": kept, but no longer part of the dialog.
    Replaced,
    /// A reply the output check withheld from the user: kept for review, not in the dialog.
    Withheld,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Unanswered => "unanswered",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Partial => "partial",
            MessageStatus::Replaced => "replaced",
            MessageStatus::Withheld => "withheld",
        }
    }

    /// Statuses of messages kept in storage but out of the dialog the persona sees.
    pub const OUT_OF_DIALOG: [MessageStatus; 2] =
        [MessageStatus::Replaced, MessageStatus::Withheld];

    /// Whether a message with this status belongs to the dialog the persona sees.
    pub fn in_dialog(status: &str) -> bool {
        !MessageStatus::OUT_OF_DIALOG
            .iter()
            .any(|hidden| hidden.as_str() == status)
    }
}

/// A message to append to a dialog.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub token_count: u32,
    pub status: MessageStatus,
    pub telegram_message_id: Option<i64>,
    /// The Telegram messages of a long reply's other parts, in order.
    pub earlier_parts: Vec<i64>,
    /// The LLM provider that wrote an assistant message.
    pub provider: Option<String>,
    /// Tokens the LLM call for this message used, added to the user's account with it.
    pub usage: Option<TokenUsage>,
    /// The persona message this one replaces ("Regenerate"): marked replaced with it.
    pub replaces: Option<i64>,
}

/// One LLM call's tokens, for the account of a user's slot (and today, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub user_id: UserId,
    pub slot: u8,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What [`SessionStore::append_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored {
        message_id: i64,
    },
    /// The update it came with had been handled before: nothing was stored.
    Duplicate,
}

/// The per-slot feature flags a user toggles in /settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DialogModes {
    pub intense_mode: bool,
    pub fantasy_scenes: bool,
}

/// A dialog loaded from storage: a persona playing a story in a slot, and its most recent
/// history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDialog {
    pub dialog_id: DialogId,
    pub slot: u8,
    pub persona_id: String,
    /// `None` for dialogs started before stories existed (the persona's first story).
    pub story_id: Option<String>,
    /// Unix milliseconds of the last message.
    pub last_active_at: i64,
    pub modes: DialogModes,
    /// Persona messages so far (for the "Continue" button's cadence).
    pub persona_messages: u32,
    /// Oldest first.
    pub history: Vec<HistoryEntry>,
}

/// What a user chose, as opposed to what Telegram reports about them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPreferences {
    /// Chosen with /language ("ru" or "en"); `None` follows Telegram's language code.
    pub language: Option<String>,
    /// The user confirmed being 18 or older.
    pub adult_confirmed: bool,
}

/// Everything a session needs to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub profile: UserProfile,
    pub preferences: UserPreferences,
    pub active_slot: Option<u8>,
    /// The open dialogs, at most one per slot.
    pub dialogs: Vec<StoredDialog>,
}

/// Durable state of sessions.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Loads a user's profile, preferences and open dialogs, each with at most
    /// `history_limit` recent messages.
    async fn load_session(
        &self,
        user_id: UserId,
        history_limit: usize,
    ) -> Result<Option<StoredSession>, StoreError>;

    /// Creates or updates the user's profile.
    async fn save_profile(&self, profile: &UserProfile) -> Result<(), StoreError>;

    /// Stores what the user chose (language, age confirmation).
    async fn save_preferences(
        &self,
        user_id: UserId,
        preferences: &UserPreferences,
    ) -> Result<(), StoreError>;

    /// Starts a new dialog with `persona_id` playing `story_id` in `slot` with `modes`
    /// (closing the one there, whose messages stay stored) and makes the slot active, in one
    /// transaction.
    async fn open_dialog(
        &self,
        user_id: UserId,
        slot: u8,
        persona_id: &str,
        story_id: &str,
        modes: DialogModes,
    ) -> Result<DialogId, StoreError>;

    /// Makes `slot` the one the user's messages go to.
    async fn activate_slot(&self, user_id: UserId, slot: u8) -> Result<(), StoreError>;

    /// Closes every open dialog of the user (their messages stay stored); no slot is active.
    async fn close_all_dialogs(&self, user_id: UserId) -> Result<(), StoreError>;

    /// Stores a dialog's feature flags.
    async fn set_dialog_modes(
        &self,
        dialog_id: DialogId,
        modes: DialogModes,
    ) -> Result<(), StoreError>;

    /// Appends a message to a dialog with what belongs to it: first the claim of the
    /// Telegram update it came with (if that update was handled before, nothing is stored),
    /// then the message (marking the message it replaces, if any), then its token usage.
    async fn append_message(
        &self,
        dialog_id: DialogId,
        message: &NewMessage,
        update_id: Option<i64>,
    ) -> Result<Appended, StoreError>;

    /// Records that a Telegram update is being handled. Returns false if it was recorded
    /// before: a redelivery, which must not be answered again.
    async fn claim_update(&self, update_id: i64) -> Result<bool, StoreError>;

    /// Marks a user message as unanswered (the LLM failed).
    async fn mark_last_user_message_unanswered(
        &self,
        dialog_id: DialogId,
    ) -> Result<(), StoreError>;
}

/// A shared rate limiter (in-process, or in Redis when several replicas run).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from the bucket `key`, or says how long until one is available.
    async fn acquire(
        &self,
        key: &str,
        limit: &crate::resilience::limiter::RateLimit,
    ) -> Result<(), std::time::Duration>;

    /// Gives back a token taken by `acquire` whose request was never sent.
    async fn release(&self, key: &str, limit: &crate::resilience::limiter::RateLimit);
}

/// A cache of deterministic LLM answers (in-process, or in Redis).
#[async_trait]
pub trait ResponseCache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<Completion>;
    async fn put(&self, key: &str, completion: &Completion, ttl: std::time::Duration);
}
