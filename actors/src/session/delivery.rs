//! Sending to the user and storing what was said: the session's two ways out, with
//! failures counted and logged (never silently dropped).

use crate::domain::texts::{TELEGRAM_MESSAGE_LIMIT, split_message};
use crate::metrics::ErrorKind;
use crate::ports::UserId;
use crate::ports::{
    Appended, ChatId, DeliveryError, HistoryEntry, Keyboard, MessageStatus, NewMessage, Role,
    TokenUsage,
};
use crate::scheduler::planning::milestone_job;
use crate::session::state::{Dialog, SessionDeps};

/// Sends one message (≤ 4096 characters), counting and logging failures. Returns the
/// Telegram message id when it was delivered.
pub(crate) async fn send(
    deps: &SessionDeps,
    chat: ChatId,
    text: &str,
    keyboard: Option<&Keyboard>,
) -> Option<i64> {
    try_send(deps, chat, text, keyboard).await.ok()
}

/// [`send`], telling why a message was not delivered (a user who blocked the bot is not
/// worth an LLM call).
pub(crate) async fn try_send(
    deps: &SessionDeps,
    chat: ChatId,
    text: &str,
    keyboard: Option<&Keyboard>,
) -> Result<i64, DeliveryError> {
    let sent = deps.messenger.send_text(chat, text, keyboard).await;
    match &sent {
        Ok(_) => {
            deps.metrics
                .telegram_messages_total
                .with_label_values(&["out"])
                .inc();
        }
        Err(error) => {
            tracing::warn!(%error, "could not deliver a message");
            deps.metrics.count_error(ErrorKind::Telegram);
        }
    }
    sent
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
    /// The update a user message came with (marked handled in the same call).
    pub(crate) update_id: Option<i64>,
    /// For a user message: the Telegram message showing its reply.
    pub(crate) reply_message_id: Option<i64>,
    /// For a persona message: the user message it answers (marked answered with it).
    pub(crate) answers: Option<i64>,
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
            reply_message_id: None,
            answers: None,
            replaces: None,
            token_count: None,
        }
    }
}

/// What storing a message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Stored, with this storage id.
    Stored(i64),
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
        update_id: extras.update_id,
        reply_message_id: extras.reply_message_id,
        answers: extras.answers,
    };
    let message_id = match deps.store.append_message(dialog.id, &message).await {
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
        return Recorded::Stored(message_id);
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
    Recorded::Stored(message_id)
}

/// Marks an event's update handled in storage, so it is not replayed after a restart.
pub(crate) async fn finish_update(deps: &SessionDeps, update_id: Option<i64>) {
    let Some(update_id) = update_id else {
        return;
    };
    if let Err(error) = deps.store.finish_update(update_id).await {
        // It is replayed after a restart, where a stored message is recognised.
        tracing::warn!(%error, update_id, "could not mark an update handled");
        deps.metrics.count_error(ErrorKind::Storage);
    }
}

/// A round number of persona messages in this dialog is celebrated (a scheduled message,
/// once per dialog and number).
pub(crate) fn celebrate_milestone(deps: &SessionDeps, user_id: UserId, dialog: &Dialog) {
    let notifications = &deps.notifications;
    let count = dialog.persona_messages;
    if notifications.settings.milestones.contains(&count) {
        notifications.notifier.notify(milestone_job(
            user_id,
            dialog.id,
            &dialog.persona.id,
            count,
            deps.clock.now_millis(),
        ));
    }
}
