//! Durable state: what a session loads on activation and writes through as it goes.

use async_trait::async_trait;

use super::{ChatId, DialogId, Role, UserId};

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
    /// A user message whose reply is being written: what a crash leaves behind, and what
    /// recovery answers (or visibly fails) after it.
    Pending,
    /// A persona reply stored just before it is shown in full: if the process stops before
    /// it is marked shown, recovery shows this text again (an edit that changes nothing if it
    /// had arrived) instead of writing a different one.
    Delivering,
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
            MessageStatus::Pending => "pending",
            MessageStatus::Delivering => "delivering",
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
    /// The Telegram update a user message came with: a message is stored once per update,
    /// and storing it marks the update handled.
    pub update_id: Option<i64>,
    /// For a user message: the Telegram message that shows (or will show) its reply, so a
    /// reply cut short by a crash is finished there.
    pub reply_message_id: Option<i64>,
    /// For a persona message: the user message it answers, marked answered with it.
    pub answers: Option<i64>,
}

impl NewMessage {
    /// A message with `content`, complete, and nothing else attached.
    pub fn new(role: Role, content: String, token_count: u32) -> NewMessage {
        NewMessage {
            role,
            content,
            token_count,
            status: MessageStatus::Complete,
            telegram_message_id: None,
            earlier_parts: Vec::new(),
            provider: None,
            usage: None,
            replaces: None,
            update_id: None,
            reply_message_id: None,
            answers: None,
        }
    }
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
    /// A message of the same update is stored already: nothing was stored.
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
    /// User messages of this dialog whose reply was still being written when the process
    /// stopped (or its session crashed), oldest first.
    pub pending: Vec<PendingReply>,
    /// Persona replies stored but perhaps not shown in full when the process stopped.
    pub undelivered: Vec<PendingDelivery>,
    /// Facts were extracted from this dialog's messages up to this one (0: none yet).
    pub extracted_through: i64,
    /// The summary standing in for the dialog's earlier part in prompts, if any.
    pub summary: Option<super::memory::StoredSummary>,
}

/// A persona reply stored before it was shown, and never marked shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub message_id: i64,
    /// The Telegram message it was being shown in.
    pub telegram_message_id: Option<i64>,
    pub content: String,
}

/// A user message whose reply was never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReply {
    /// The user message.
    pub message_id: i64,
    /// The Telegram message showing the unfinished reply (a placeholder or a draft), if one
    /// was sent.
    pub reply_message_id: Option<i64>,
    /// When the user message was stored (Unix milliseconds).
    pub created_at: i64,
}

/// A dialog to open: a persona playing a story in one of a user's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDialog {
    pub user_id: UserId,
    pub slot: u8,
    pub persona_id: String,
    pub story_id: String,
    pub modes: DialogModes,
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

    /// Starts `dialog` (closing the one in its slot, whose messages stay stored) and makes its
    /// slot active, in one transaction.
    async fn open_dialog(&self, dialog: &NewDialog) -> Result<DialogId, StoreError>;

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

    /// Appends a message to a dialog with what belongs to it: the message (if a message of
    /// the same update is stored already, nothing is), the update marked handled, the user
    /// message it answers marked answered, the message it replaces marked replaced, and its
    /// token usage.
    async fn append_message(
        &self,
        dialog_id: DialogId,
        message: &NewMessage,
    ) -> Result<Appended, StoreError>;

    /// Whether a message of this Telegram update is stored (a replayed update after a
    /// crash).
    async fn is_update_stored(&self, update_id: i64) -> Result<bool, StoreError>;

    /// Marks an accepted update handled: it is not replayed after a restart.
    async fn finish_update(&self, update_id: i64) -> Result<(), StoreError>;

    /// Marks a persona reply stored as `Delivering` shown: its final `status` and the
    /// Telegram messages it occupies.
    async fn finish_delivery(
        &self,
        message_id: i64,
        status: MessageStatus,
        telegram_message_id: Option<i64>,
        earlier_parts: &[i64],
    ) -> Result<(), StoreError>;

    /// Stores how a user message's reply ended: `Complete` (answered, or stopped by the
    /// user) or `Unanswered` (failed; "Retry" asks again).
    async fn set_status(&self, message_id: i64, status: MessageStatus) -> Result<(), StoreError>;
}
