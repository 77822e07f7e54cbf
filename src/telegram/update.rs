//! An update as Telegram sent it, and the session event vitte makes of it.
//!
//! Updates come in as raw JSON (by webhook or by `getUpdates`), are stored raw (so a restart
//! can hand them over again), and are read here: with teloxide's types for the kinds it
//! knows, and from the JSON itself for those it does not.

use serde_json::Value;
use teloxide::types::{Update, UpdateKind};
use vitte_actors::domain::event::{Inbound, InboundKind, Sender};
use vitte_actors::payments::messages::PaymentUpdate;
use vitte_actors::ports::UserId;

use super::drafts::{StoppedGeneration, stopped_generation};
use super::payments::payment_update;

/// Why a body is not an update.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("no numeric update_id")]
    NoUpdateId,
}

/// One update: its id, its JSON as received, and what teloxide reads in it.
#[derive(Debug, Clone)]
pub struct IncomingUpdate {
    pub update_id: i64,
    /// The JSON as Telegram sent it (stored until handled).
    pub json: String,
    /// `None` when teloxide cannot read it (a kind or field it does not know).
    parsed: Option<Update>,
    /// A payment update (read from the JSON itself: see [`super::payments`]).
    payment: Option<PaymentUpdate>,
    /// A press on a draft's stop button (read from the JSON itself: see [`super::drafts`]).
    stopped: Option<StoppedGeneration>,
}

impl IncomingUpdate {
    /// Reads a webhook body.
    pub fn from_json(json: &[u8]) -> Result<IncomingUpdate, UpdateError> {
        let value: Value = serde_json::from_slice(json)?;
        IncomingUpdate::from_value(value)
    }

    /// Reads one element of `getUpdates`' result (or a stored update).
    pub fn from_value(value: Value) -> Result<IncomingUpdate, UpdateError> {
        let update_id = value["update_id"].as_i64().ok_or(UpdateError::NoUpdateId)?;
        let payment = payment_update(&value);
        let stopped = stopped_generation(&value);
        let json = value.to_string();
        // From the text: teloxide's types read borrowed strings, which a `Value` cannot lend.
        let parsed = serde_json::from_str::<Update>(&json)
            .ok()
            .filter(|update| !matches!(update.kind, UpdateKind::Error(_)));
        Ok(IncomingUpdate {
            update_id,
            json,
            parsed,
            payment,
            stopped,
        })
    }

    /// The user it comes from, if it is one vitte handles.
    pub fn user_id(&self) -> Option<UserId> {
        match &self.payment {
            Some(payment) => Some(payment.user_id()),
            None => self.to_inbound(0).map(|inbound| inbound.sender.user_id),
        }
    }

    /// The payment update it is (for the payment desk), if it is one.
    pub fn payment(&self) -> Option<&PaymentUpdate> {
        self.payment.as_ref()
    }

    /// The session event it is, accepted at `accepted_at`; `None` for updates the bot does
    /// not handle (group chats, edits, channel posts, messages from bots, …).
    pub fn to_inbound(&self, accepted_at: i64) -> Option<Inbound> {
        if self.payment.is_some() {
            // The payment desk's, not a session's.
            return None;
        }
        let update_id = Some(self.update_id);
        if let Some(stopped) = &self.stopped {
            let sender = stopped.sender.clone();
            return Some(Inbound::new(update_id, sender, stopped.kind(), accepted_at));
        }
        let update = self.parsed.as_ref()?;
        match &update.kind {
            UpdateKind::Message(message) => {
                let user = message.from.as_ref()?;
                // A companion bot talks in private chats only: in a group every member's
                // message would cost an LLM call and the replies would go to everyone.
                if user.is_bot || !message.chat.is_private() {
                    return None;
                }
                let kind = match message.text() {
                    Some(text) => InboundKind::from_text(text),
                    // Stickers, photos, voice: the user is told the bot reads text only.
                    None => InboundKind::Unsupported,
                };
                let sender = Sender {
                    user_id: user.id.0 as i64,
                    chat_id: message.chat.id.0,
                    first_name: user.first_name.clone(),
                    language_code: user.language_code.clone(),
                };
                Some(Inbound::new(update_id, sender, kind, accepted_at))
            }
            UpdateKind::CallbackQuery(query) => {
                // Buttons pressed in a group (under a message forwarded there, say) are not
                // for the bot's private conversations; a button on an inaccessible message
                // is answered in the user's private chat.
                let chat_id = match &query.message {
                    Some(message) if !message.chat().is_private() => return None,
                    Some(message) => message.chat().id.0,
                    None => query.from.id.0 as i64,
                };
                let sender = Sender {
                    user_id: query.from.id.0 as i64,
                    chat_id,
                    first_name: query.from.first_name.clone(),
                    language_code: query.from.language_code.clone(),
                };
                let kind = InboundKind::Button {
                    callback_id: query.id.0.clone(),
                    data: query.data.clone().unwrap_or_default(),
                    message_id: query
                        .message
                        .as_ref()
                        .map(|message| i64::from(message.id().0)),
                };
                Some(Inbound::new(update_id, sender, kind, accepted_at))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_text(update_id: i64, text: &str) -> String {
        serde_json::json!({
            "update_id": update_id,
            "message": {
                "message_id": 7,
                "date": 1_700_000_000,
                "chat": {"id": 42, "type": "private", "first_name": "Ann"},
                "from": {"id": 42, "is_bot": false, "first_name": "Ann", "language_code": "ru"},
                "text": text,
            }
        })
        .to_string()
    }

    #[test]
    fn a_private_text_becomes_a_text_event_accepted_when_said() {
        let update = IncomingUpdate::from_json(private_text(5, "hello").as_bytes()).expect("ok");
        assert_eq!(update.update_id, 5);
        let inbound = update.to_inbound(1_000).expect("an event");
        assert_eq!(inbound.kind, InboundKind::Text("hello".into()));
        assert_eq!(inbound.sender.user_id, 42);
        assert_eq!(inbound.sender.language_code.as_deref(), Some("ru"));
        assert_eq!(inbound.accepted_at, Some(1_000));
        assert!(!inbound.replayed);
    }

    #[test]
    fn a_press_on_a_drafts_stop_button_becomes_a_stop_of_that_draft() {
        let json = serde_json::json!({
            "update_id": 8,
            "stopped_message_generation": {
                "chat": {"id": 42, "type": "private", "first_name": "Ann"},
                "draft_id": 99,
            }
        });
        let update = IncomingUpdate::from_value(json).expect("an update");
        assert_eq!(update.user_id(), Some(42));
        let inbound = update.to_inbound(5).expect("an event");
        assert_eq!(inbound.kind, InboundKind::DraftStopped { draft_id: 99 });
        assert_eq!(inbound.update_id, Some(8));
    }

    #[test]
    fn bodies_without_an_update_id_are_refused_and_unknown_kinds_ignored() {
        assert!(IncomingUpdate::from_json(b"not json").is_err());
        assert!(IncomingUpdate::from_json(b"{\"message\": {}}").is_err());
        let unknown = IncomingUpdate::from_json(b"{\"update_id\": 9, \"future_kind\": {}}")
            .expect("an update");
        assert_eq!(unknown.update_id, 9);
        assert!(unknown.to_inbound(0).is_none());
    }
}

#[cfg(test)]
mod fuzz {
    //! Whatever arrives at the webhook (or from getUpdates): an update or a clear refusal,
    //! never a panic.

    use proptest::prelude::*;

    use super::IncomingUpdate;

    const UPDATE: &str = r#"{"update_id":5,"message":{"message_id":7,"date":1700000000,
"chat":{"id":42,"type":"private","first_name":"Ann"},
"from":{"id":42,"is_bot":false,"first_name":"Ann","language_code":"en"},"text":"hello"}}"#;

    const BUTTON: &str = r#"{"update_id":6,"callback_query":{"id":"c1","chat_instance":"x",
"from":{"id":42,"is_bot":false,"first_name":"Ann"},"data":"c:1","message":{"message_id":3,
"date":1700000000,"chat":{"id":42,"type":"private","first_name":"Ann"},"text":"hi"}}}"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_body_is_an_update_or_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(update) = IncomingUpdate::from_json(&body) {
                let _ = update.to_inbound(0);
            }
        }

        #[test]
        fn a_mutated_update_is_read_or_refused(
            which in 0..2usize,
            at in 0usize..400,
            len in 0usize..12,
            junk in "[\\[\\]{}:,\"a-z0-9 .-]{0,10}",
        ) {
            let mut text = [UPDATE, BUTTON][which].to_owned();
            let start = at % (text.len() + 1);
            let end = (start + len).min(text.len());
            text.replace_range(start..end, &junk);
            if let Ok(update) = IncomingUpdate::from_json(text.as_bytes()) {
                let _ = update.user_id();
                let _ = update.to_inbound(1);
            }
        }
    }
}
