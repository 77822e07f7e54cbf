//! Sending to the user and storing what was said: the session's two ways out, with
//! failures counted and logged (never silently dropped).

use crate::domain::event::Sender;
use crate::domain::texts::{TELEGRAM_MESSAGE_LIMIT, split_message};
use crate::metrics::ErrorKind;
use crate::ports::{
    Appended, ChatId, HistoryEntry, Keyboard, MessageStatus, NewMessage, Role, TokenUsage,
};
use crate::session::state::{Dialog, SessionDeps, SessionState};

/// Sends one message (≤ 4096 characters), counting and logging failures. Returns the
/// Telegram message id when it was delivered.
pub(crate) async fn send(
    deps: &SessionDeps,
    chat: ChatId,
    text: &str,
    keyboard: Option<&Keyboard>,
) -> Option<i64> {
    match deps.messenger.send_text(chat, text, keyboard).await {
        Ok(message_id) => {
            deps.metrics
                .telegram_messages_total
                .with_label_values(&["out"])
                .inc();
            Some(message_id)
        }
        Err(error) => {
            tracing::warn!(%error, "could not deliver a message");
            deps.metrics.count_error(ErrorKind::Telegram);
            None
        }
    }
}

/// Sends a text of any length, split into Telegram-sized parts; the keyboard goes on the
/// last part. Returns the id of the last part delivered.
pub(crate) async fn send_long(
    deps: &SessionDeps,
    chat: ChatId,
    text: &str,
    keyboard: Option<&Keyboard>,
) -> Option<i64> {
    let parts = split_message(text, TELEGRAM_MESSAGE_LIMIT);
    let last = parts.len() - 1;
    let mut delivered = None;
    for (index, part) in parts.iter().enumerate() {
        let keyboard = if index == last { keyboard } else { None };
        delivered = send(deps, chat, part, keyboard).await.or(delivered);
    }
    delivered
}

/// A message is stored as undelivered when Telegram accepted none of its parts.
pub(crate) fn delivery_status(message_id: Option<i64>) -> MessageStatus {
    match message_id {
        Some(_) => MessageStatus::Complete,
        None => MessageStatus::Undelivered,
    }
}

/// What goes with a message into storage, besides its role and text.
pub(crate) struct Extras {
    pub(crate) status: MessageStatus,
    pub(crate) telegram_message_id: Option<i64>,
    /// A long reply's other parts.
    pub(crate) earlier_parts: Vec<i64>,
    pub(crate) provider: Option<String>,
    pub(crate) usage: Option<TokenUsage>,
    /// The update it came with, claimed in the same call.
    pub(crate) update_id: Option<i64>,
    /// The message it replaces ("Regenerate"), marked in the same call.
    pub(crate) replaces: Option<i64>,
    /// Tokens of the content when the caller counted them already.
    pub(crate) token_count: Option<u32>,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            status: MessageStatus::Complete,
            telegram_message_id: None,
            earlier_parts: Vec::new(),
            provider: None,
            usage: None,
            update_id: None,
            replaces: None,
            token_count: None,
        }
    }
}

/// What storing a message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    Stored,
    /// Its update had been handled before; nothing was stored.
    Duplicate,
    Failed,
}

/// Appends a message to the dialog in storage and, unless withheld, in memory (only if
/// stored).
pub(crate) async fn record(
    deps: &SessionDeps,
    dialog: &mut Dialog,
    role: Role,
    content: String,
    extras: Extras,
) -> Recorded {
    // PostgreSQL's text cannot hold NUL characters (SQLite's can); they carry no meaning.
    let (content, token_count) = if content.contains('\0') {
        let content = content.replace('\0', "");
        let tokens = deps.prompts.counter().count(&content);
        (content, tokens)
    } else {
        let tokens = extras
            .token_count
            .unwrap_or_else(|| deps.prompts.counter().count(&content));
        (content, tokens)
    };
    let message = NewMessage {
        role,
        token_count,
        content,
        status: extras.status,
        telegram_message_id: extras.telegram_message_id,
        earlier_parts: extras.earlier_parts,
        provider: extras.provider,
        usage: extras.usage,
        replaces: extras.replaces,
    };
    let message_id = match deps
        .store
        .append_message(dialog.id, &message, extras.update_id)
        .await
    {
        Ok(Appended::Stored { message_id }) => message_id,
        Ok(Appended::Duplicate) => return Recorded::Duplicate,
        Err(error) => {
            tracing::error!(%error, "could not store a message");
            deps.metrics.count_error(ErrorKind::Storage);
            return Recorded::Failed;
        }
    };
    dialog.last_active_at = deps.clock.now_millis();
    if !MessageStatus::in_dialog(message.status.as_str()) {
        return Recorded::Stored;
    }
    if role == Role::Assistant {
        dialog.persona_messages += 1;
    }
    dialog.history.push_back(HistoryEntry {
        message_id,
        telegram_message_id: message.telegram_message_id,
        earlier_parts: message.earlier_parts,
        role: message.role,
        content: message.content,
        token_count: message.token_count,
    });
    while dialog.history.len() > deps.settings.history_limit {
        dialog.history.pop_front();
    }
    Recorded::Stored
}

/// Records that an update is being handled; false for a redelivery (or when storage fails,
/// after telling the user).
pub(crate) async fn claim_update(
    deps: &SessionDeps,
    state: &SessionState,
    sender: &Sender,
    update_id: i64,
) -> bool {
    match deps.store.claim_update(update_id).await {
        Ok(true) => true,
        Ok(false) => {
            // Telegram redelivered an update we handled already: answer it only once.
            deps.metrics.duplicate_updates_total.inc();
            tracing::debug!(update_id, "duplicate update ignored");
            false
        }
        Err(error) => {
            tracing::error!(%error, "could not record an update");
            deps.metrics.count_error(ErrorKind::Storage);
            let texts = state.lang(sender).texts();
            send(deps, sender.chat_id, texts.storage_failed, None).await;
            false
        }
    }
}
