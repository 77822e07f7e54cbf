//! The chats of the HTTP chat API: where a session's words go when the event came from
//! `POST /v1/chat/send` rather than Telegram.
//!
//! Each API call gets a chat of its own, with an id no Telegram chat has (below
//! [`FIRST_API_CHAT`]; negative like a group's, so the reply is never streamed as a draft).
//! The session answers the event as any other, through the same actor, history, limits and
//! safety checks; [`ApiChatMessenger`] keeps what it sends, edits and deletes in that chat
//! in memory, and passes everything else on to Telegram (the outbox).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use vitte_actors::ports::{ChatId, DeliveryError, Keyboard, Messenger, Render};
use vitte_actors::sync::lock;

/// API chats count down from here: far below any Telegram chat id (supergroups are about
/// -10^12 to -10^13).
pub const FIRST_API_CHAT: ChatId = -(1 << 60);

/// Whether `chat` is one of the API's.
pub fn is_api_chat(chat: ChatId) -> bool {
    chat <= FIRST_API_CHAT
}

/// What a session said in an API chat, message by message as they read now.
#[derive(Debug, Clone, Default)]
struct Transcript {
    /// (message id, text), in the order sent.
    messages: Vec<(i64, String)>,
}

/// The open API chats, shared by the messenger and the HTTP handlers.
#[derive(Clone, Default)]
pub struct ApiChats {
    open: Arc<Mutex<HashMap<ChatId, Transcript>>>,
    next_chat: Arc<AtomicI64>,
    next_message: Arc<AtomicI64>,
}

impl ApiChats {
    /// Opens a chat for one API call.
    pub fn open(&self) -> ChatId {
        let chat = FIRST_API_CHAT - self.next_chat.fetch_add(1, Ordering::SeqCst);
        lock(&self.open).insert(chat, Transcript::default());
        chat
    }

    /// Closes `chat`; returns the texts of its messages, in order.
    pub fn close(&self, chat: ChatId) -> Vec<String> {
        lock(&self.open)
            .remove(&chat)
            .map(|transcript| {
                transcript
                    .messages
                    .into_iter()
                    .map(|(_, text)| text)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `change` on `chat`'s transcript; a chat already closed (its caller gone) keeps
    /// nothing.
    fn with(&self, chat: ChatId, change: impl FnOnce(&mut Transcript)) {
        if let Some(transcript) = lock(&self.open).get_mut(&chat) {
            change(transcript);
        }
    }
}

/// The sessions' `Messenger`: API chats kept in memory, every other chat on to `telegram`.
pub struct ApiChatMessenger {
    chats: ApiChats,
    telegram: Arc<dyn Messenger>,
}

impl ApiChatMessenger {
    pub fn new(chats: ApiChats, telegram: Arc<dyn Messenger>) -> ApiChatMessenger {
        ApiChatMessenger { chats, telegram }
    }
}

#[async_trait]
impl Messenger for ApiChatMessenger {
    async fn send_text(
        &self,
        chat: ChatId,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        if !is_api_chat(chat) {
            return self.telegram.send_text(chat, text, keyboard).await;
        }
        let id = self.chats.next_message.fetch_add(1, Ordering::SeqCst) + 1;
        self.chats.with(chat, |transcript| {
            transcript.messages.push((id, text.to_owned()))
        });
        Ok(id)
    }

    async fn edit_text(
        &self,
        chat: ChatId,
        message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        render: Render,
    ) -> Result<(), DeliveryError> {
        if !is_api_chat(chat) {
            return self
                .telegram
                .edit_text(chat, message_id, text, keyboard, render)
                .await;
        }
        self.chats.with(chat, |transcript| {
            if let Some((_, shown)) = transcript
                .messages
                .iter_mut()
                .find(|(id, _)| *id == message_id)
            {
                text.clone_into(shown);
            }
        });
        Ok(())
    }

    async fn send_draft(
        &self,
        chat: ChatId,
        draft_id: i64,
        text: &str,
    ) -> Result<(), DeliveryError> {
        if is_api_chat(chat) {
            return Err(DeliveryError::Unsupported("sendMessageDraft"));
        }
        self.telegram.send_draft(chat, draft_id, text).await
    }

    async fn delete_message(&self, chat: ChatId, message_id: i64) -> Result<(), DeliveryError> {
        if !is_api_chat(chat) {
            return self.telegram.delete_message(chat, message_id).await;
        }
        self.chats.with(chat, |transcript| {
            transcript.messages.retain(|(id, _)| *id != message_id);
        });
        Ok(())
    }

    async fn acknowledge_button(&self, callback_id: &str) -> Result<(), DeliveryError> {
        self.telegram.acknowledge_button(callback_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Telegram as far as this test cares: (chat, text) of each message sent.
    #[derive(Default)]
    struct Sent(Mutex<Vec<(ChatId, String)>>);

    #[async_trait]
    impl Messenger for Sent {
        async fn send_text(
            &self,
            chat: ChatId,
            text: &str,
            _keyboard: Option<&Keyboard>,
        ) -> Result<i64, DeliveryError> {
            lock(&self.0).push((chat, text.to_owned()));
            Ok(1)
        }
        async fn edit_text(
            &self,
            _chat: ChatId,
            _message_id: i64,
            _text: &str,
            _keyboard: Option<&Keyboard>,
            _render: Render,
        ) -> Result<(), DeliveryError> {
            Ok(())
        }
        async fn delete_message(&self, _chat: ChatId, _id: i64) -> Result<(), DeliveryError> {
            Ok(())
        }
        async fn acknowledge_button(&self, _callback_id: &str) -> Result<(), DeliveryError> {
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn an_api_chat_keeps_what_was_said_and_telegram_gets_the_rest() {
        let telegram = Arc::new(Sent::default());
        let chats = ApiChats::default();
        let messenger = ApiChatMessenger::new(chats.clone(), telegram.clone());
        let chat = chats.open();
        assert!(is_api_chat(chat) && !is_api_chat(-1_001_234_567_890));
        let placeholder = messenger
            .send_text(chat, "… typing", None)
            .await
            .expect("kept");
        messenger
            .edit_text(chat, placeholder, "The lamp turns.", None, Render::Final)
            .await
            .expect("kept");
        let extra = messenger.send_text(chat, "gone", None).await.expect("kept");
        messenger.delete_message(chat, extra).await.expect("kept");
        messenger
            .send_text(42, "to Telegram", None)
            .await
            .expect("sent");
        assert!(messenger.send_draft(chat, 1, "x").await.is_err());
        assert_eq!(chats.close(chat), ["The lamp turns."]);
        assert_eq!(*lock(&telegram.0), [(42, "to Telegram".to_owned())]);
        assert!(chats.close(chat).is_empty(), "closed once");
        assert_ne!(chats.open(), chat, "every call has a chat of its own");
    }
}
