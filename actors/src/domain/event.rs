//! What reaches a session: one user's inbound events, independent of Telegram's types.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::ports::{ChatId, UserId};

/// The sender of an event, as Telegram describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub user_id: UserId,
    pub chat_id: ChatId,
    pub first_name: String,
    pub language_code: Option<String>,
}

/// One event for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Telegram's update id (stored with what it brought, and marked handled when done);
    /// `None` for events that do not come from Telegram (the terminal chat).
    pub update_id: Option<i64>,
    pub sender: Sender,
    pub kind: InboundKind,
    /// When vitte accepted it (Unix milliseconds): a message that waited longer than
    /// `session.answer_within` is failed visibly instead of answered late.
    pub accepted_at: Option<i64>,
    /// Accepted before a restart and handed to its session again: it may have been
    /// handled in part (a message stored, its reply not finished).
    pub replayed: bool,
    /// Came through the HTTP chat API (not Telegram): the session reports how it ended.
    pub api: Option<ApiCall>,
}

/// An event from the HTTP chat API. Its sender's chat is one of the API's own (see the
/// chat API in the Telegram edge), so what the session says goes back to the caller, not
/// to Telegram; and the session reports how the event ended.
#[derive(Clone)]
pub struct ApiCall {
    /// The dialog slot to answer in (the active one when `None`).
    pub slot: Option<u8>,
    ended: Arc<Mutex<Option<oneshot::Sender<ApiOutcome>>>>,
}

impl ApiCall {
    /// A call answering in `slot`, and where its outcome arrives.
    pub fn new(slot: Option<u8>) -> (ApiCall, oneshot::Receiver<ApiOutcome>) {
        let (sender, receiver) = oneshot::channel();
        let call = ApiCall {
            slot,
            ended: Arc::new(Mutex::new(Some(sender))),
        };
        (call, receiver)
    }

    /// Reports how the event ended; the first report counts (the session reports the
    /// specific outcomes as it finds them, and `Answered` when the event is done).
    pub fn end(&self, outcome: ApiOutcome) {
        let sender = crate::sync::lock(&self.ended).take();
        if let Some(sender) = sender {
            // The caller may have given up waiting; nothing to do then.
            let _ = sender.send(outcome);
        }
    }
}

impl PartialEq for ApiCall {
    fn eq(&self, other: &ApiCall) -> bool {
        Arc::ptr_eq(&self.ended, &other.ended)
    }
}

impl Eq for ApiCall {}

impl std::fmt::Debug for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCall").field("slot", &self.slot).finish()
    }
}

/// How an API event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOutcome {
    /// Handled: what the session said is what the caller gets.
    Answered,
    /// Today's limit is reached: `limit` replies a day, `used` of them, the next day from
    /// `resets_at` (Unix milliseconds).
    DailyLimit {
        limit: u32,
        used: u32,
        resets_at: i64,
    },
    /// Every LLM provider is unavailable (breakers open).
    LlmUnavailable,
    /// The LLM failed to answer (errors, timeouts, rate limits after the retries).
    LlmFailed,
    /// No dialog to answer in: none started, or none in the slot asked for.
    NoDialog,
    /// The session had too many messages waiting.
    Busy,
    /// Handling it crashed (the session restarts).
    Failed,
}

impl Inbound {
    /// A fresh event from `sender`, accepted now (`accepted_at`).
    pub fn new(
        update_id: Option<i64>,
        sender: Sender,
        kind: InboundKind,
        accepted_at: i64,
    ) -> Inbound {
        Inbound {
            update_id,
            sender,
            kind,
            accepted_at: Some(accepted_at),
            replayed: false,
            api: None,
        }
    }
}

/// What the user did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundKind {
    /// A bot command such as `/start`.
    Command(Command),
    /// A plain text message.
    Text(String),
    /// A pressed inline button, on the message `message_id` (when Telegram says which).
    Button {
        callback_id: String,
        data: String,
        message_id: Option<i64>,
    },
    /// A message the bot cannot read (sticker, photo, voice, …); answered with a notice.
    Unsupported,
    /// The user pressed Telegram's stop button on the message draft `draft_id` (Bot API
    /// 10.3, `stopped_message_generation`): stops that reply, as /stop does.
    DraftStopped { draft_id: i64 },
}

/// The commands the bot understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The persona gallery (a new dialog).
    Start,
    Help,
    /// The main menu.
    Menu,
    /// The three dialog slots.
    Dialogs,
    /// The active slot's modes.
    Settings,
    /// Choose the bot's language.
    Language,
    /// Cancel the reply being written.
    Stop,
    /// Clear all three slots (after confirmation).
    Reset,
    /// The catalogue: plans and unlocks for Telegram Stars.
    Store,
    /// The user's plan, renewal, unlocked features and today's usage.
    Status,
    /// What the active dialog's persona remembers, with buttons to forget.
    Memory,
    /// Delete everything about the user (after confirmation).
    ForgetMe,
    /// A recap of the last seven days, now.
    Report,
    /// Set the time zone of notifications: the zone's name as written after the command.
    TimeZone(String),
    /// A command we do not know; answered with the help text.
    Unknown(String),
}

impl InboundKind {
    /// Classifies a message text: `/start`, `/help@vitte_bot`, … become commands, the rest text.
    pub fn from_text(text: &str) -> InboundKind {
        let trimmed = text.trim();
        let Some(rest) = trimmed.strip_prefix('/') else {
            return InboundKind::Text(text.to_owned());
        };
        let word = rest.split_whitespace().next().unwrap_or("");
        let name = word.split('@').next().unwrap_or("").to_lowercase();
        if name.is_empty() {
            return InboundKind::Text(text.to_owned());
        }
        InboundKind::Command(match name.as_str() {
            "start" => Command::Start,
            "help" => Command::Help,
            "menu" => Command::Menu,
            "dialogs" => Command::Dialogs,
            "settings" => Command::Settings,
            "language" => Command::Language,
            "stop" => Command::Stop,
            "reset" => Command::Reset,
            "store" | "buy" => Command::Store,
            "status" | "plan" => Command::Status,
            "memory" | "memories" => Command::Memory,
            "forget_me" | "forgetme" => Command::ForgetMe,
            "report" => Command::Report,
            "timezone" | "time_zone" | "tz" => {
                let zone = rest.split_whitespace().nth(1).unwrap_or("");
                Command::TimeZone(zone.chars().take(64).collect())
            }
            _ => Command::Unknown(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timezone_takes_the_zone_after_it() {
        assert_eq!(
            InboundKind::from_text("/timezone Europe/Moscow"),
            InboundKind::Command(Command::TimeZone("Europe/Moscow".into()))
        );
        assert_eq!(
            InboundKind::from_text("/timezone"),
            InboundKind::Command(Command::TimeZone(String::new()))
        );
    }

    #[test]
    fn commands_are_recognised_with_and_without_bot_name() {
        assert_eq!(
            InboundKind::from_text("/start"),
            InboundKind::Command(Command::Start)
        );
        assert_eq!(
            InboundKind::from_text("/HELP@vitte_bot now"),
            InboundKind::Command(Command::Help)
        );
        assert_eq!(
            InboundKind::from_text("/dance"),
            InboundKind::Command(Command::Unknown("dance".into()))
        );
    }

    #[test]
    fn plain_text_and_lone_slash_are_text() {
        assert_eq!(
            InboundKind::from_text("hello /start"),
            InboundKind::Text("hello /start".into())
        );
        assert_eq!(InboundKind::from_text("/"), InboundKind::Text("/".into()));
    }
}
