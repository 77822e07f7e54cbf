//! Message drafts, which teloxide 0.17 (Bot API 9.1) does not know: the `sendMessageDraft`
//! call (Bot API 9.5; `can_stop` and `keep_on_stop` since 10.3) as plain JSON, and the
//! `stopped_message_generation` update (10.3) read from the raw update. A teloxide upgrade
//! that knows them can replace this file.

use serde_json::{Value, json};
use vitte_actors::domain::event::{InboundKind, Sender};
use vitte_actors::ports::{ChatId, DeliveryError};

use super::raw::{RawBotApi, RawError};

/// The update field of a press on a draft's stop button.
pub const STOPPED_UPDATE: &str = "stopped_message_generation";

/// Streams `text` into the private chat `chat` as draft `draft_id`, with Telegram's stop
/// button. `keep_on_stop` is false: on a stop Telegram removes the draft, and vitte sends
/// what was written (with a note) as a message of its own, as after /stop.
pub async fn send_message_draft(
    api: &RawBotApi,
    chat: ChatId,
    draft_id: i64,
    text: &str,
) -> Result<(), DeliveryError> {
    let body = json!({
        "chat_id": chat,
        "draft_id": draft_id,
        "text": text,
        "can_stop": true,
        "keep_on_stop": false,
    });
    api.call("sendMessageDraft", &body)
        .await
        .map(|_| ())
        .map_err(draft_error)
}

/// What a refused draft means to the reply: a server without the method (Telegram answers
/// an unknown method with 404), flood control, a blocked bot, or a refusal (a draft is
/// never retried: the next one shows more).
fn draft_error(error: RawError) -> DeliveryError {
    match error {
        RawError::Api { code: 404, .. } => DeliveryError::Unsupported("sendMessageDraft"),
        RawError::Api {
            retry_after: Some(retry_after),
            ..
        } => DeliveryError::Throttled { retry_after },
        RawError::Api { code: 403, .. } => DeliveryError::Blocked,
        other => DeliveryError::Failed(other.to_string()),
    }
}

/// A press on a draft's stop button: who pressed it, and on which draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedGeneration {
    pub sender: Sender,
    pub draft_id: i64,
}

impl StoppedGeneration {
    /// The event it is for the user's session.
    pub fn kind(&self) -> InboundKind {
        InboundKind::DraftStopped {
            draft_id: self.draft_id,
        }
    }
}

/// Reads a `stopped_message_generation` update: `{chat, draft_id, from?}`. Drafts exist in
/// private chats only, whose id is the user's; `from` (when present) names the user. `None`
/// for anything else, or one missing its chat or a non-zero draft id.
pub fn stopped_generation(update: &Value) -> Option<StoppedGeneration> {
    let stopped = update.get(STOPPED_UPDATE)?;
    let chat = stopped.get("chat")?;
    let chat_id = chat.get("id")?.as_i64()?;
    let draft_id = stopped.get("draft_id")?.as_i64().filter(|id| *id != 0)?;
    if chat
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("private")
        != "private"
    {
        return None;
    }
    let from = stopped.get("from");
    let user_id = from
        .and_then(|user| user.get("id"))
        .and_then(Value::as_i64)
        .unwrap_or(chat_id);
    let text = |key: &str| {
        from.and_then(|user| user.get(key))
            .or_else(|| chat.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(StoppedGeneration {
        sender: Sender {
            user_id,
            chat_id,
            first_name: text("first_name").unwrap_or_default(),
            language_code: text("language_code"),
        },
        draft_id,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_stop_press_names_the_chat_and_the_draft() {
        let update = json!({
            "update_id": 3,
            "stopped_message_generation": {
                "chat": {"id": 42, "type": "private", "first_name": "Ann"},
                "from": {"id": 42, "is_bot": false, "first_name": "Ann", "language_code": "ru"},
                "draft_id": 1_700_000_000_123_i64,
            }
        });
        let stopped = stopped_generation(&update).expect("a stop");
        assert_eq!(stopped.draft_id, 1_700_000_000_123);
        assert_eq!(stopped.sender.user_id, 42);
        assert_eq!(stopped.sender.chat_id, 42);
        assert_eq!(stopped.sender.language_code.as_deref(), Some("ru"));
        assert_eq!(
            stopped.kind(),
            InboundKind::DraftStopped {
                draft_id: 1_700_000_000_123
            }
        );
    }

    #[test]
    fn a_stop_without_from_is_the_private_chats_user_and_bad_ones_are_ignored() {
        let bare = json!({"update_id": 1, "stopped_message_generation":
            {"chat": {"id": 7, "type": "private", "first_name": "Bo"}, "draft_id": 5}});
        let stopped = stopped_generation(&bare).expect("a stop");
        assert_eq!(
            (stopped.sender.user_id, stopped.sender.first_name.as_str()),
            (7, "Bo")
        );
        for bad in [
            json!({"update_id": 1, "stopped_message_generation": {"chat": {"id": 7}, "draft_id": 0}}),
            json!({"update_id": 1, "stopped_message_generation": {"draft_id": 5}}),
            json!({"update_id": 1, "stopped_message_generation":
                {"chat": {"id": -100, "type": "group"}, "draft_id": 5}}),
            json!({"update_id": 1, "message": {}}),
        ] {
            assert_eq!(stopped_generation(&bad), None, "{bad}");
        }
    }

    #[test]
    fn refusals_say_what_the_reply_should_do() {
        let api = |code, retry_after| RawError::Api {
            method: "sendMessageDraft",
            code,
            description: "x".into(),
            retry_after,
        };
        assert!(matches!(
            draft_error(api(404, None)),
            DeliveryError::Unsupported(_)
        ));
        assert!(matches!(
            draft_error(api(429, Some(Duration::from_secs(3)))),
            DeliveryError::Throttled { retry_after } if retry_after == Duration::from_secs(3)
        ));
        assert!(matches!(
            draft_error(api(403, None)),
            DeliveryError::Blocked
        ));
        assert!(matches!(
            draft_error(api(400, None)),
            DeliveryError::Failed(_)
        ));
    }
}
