//! In-memory implementations of the ports, for unit tests: a recording messenger, an echoing
//! LLM and event builders here; the sessions' storage in [`store`]; the sessions' test bench
//! in [`harness`].

mod harness;
mod store;

pub use harness::SessionHarness;
pub use store::MemoryStore;

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::event::{Inbound, InboundKind, Sender};
use crate::ports::*;
use crate::sync::lock;

/// One message as the chat shows it now.
#[derive(Debug, Clone)]
pub struct ShownMessage {
    pub chat: ChatId,
    pub id: i64,
    pub text: String,
    pub keyboard: Option<Keyboard>,
    pub edits: usize,
}

/// Records every message sent, per chat, with the edits applied.
#[derive(Default)]
pub struct RecordingMessenger {
    pub sent: Mutex<Vec<ShownMessage>>,
    next_id: AtomicI64,
    /// Chats whose user has blocked the bot: every call to them fails with `Blocked`.
    pub blocked: Mutex<std::collections::HashSet<ChatId>>,
}

impl RecordingMessenger {
    /// The chat's messages as they read now, oldest first.
    pub fn texts_to(&self, chat: ChatId) -> Vec<String> {
        self.messages_to(chat)
            .into_iter()
            .map(|message| message.text)
            .collect()
    }

    pub fn messages_to(&self, chat: ChatId) -> Vec<ShownMessage> {
        lock(&self.sent)
            .iter()
            .filter(|message| message.chat == chat)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Messenger for RecordingMessenger {
    async fn send_text(
        &self,
        chat: ChatId,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        if lock(&self.blocked).contains(&chat) {
            return Err(DeliveryError::Blocked);
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.sent).push(ShownMessage {
            chat,
            id,
            text: text.to_owned(),
            keyboard: keyboard.cloned(),
            edits: 0,
        });
        Ok(id)
    }

    async fn edit_text(
        &self,
        chat: ChatId,
        message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        _render: Render,
    ) -> Result<(), DeliveryError> {
        let mut sent = lock(&self.sent);
        let message = sent
            .iter_mut()
            .find(|message| message.chat == chat && message.id == message_id)
            .ok_or_else(|| DeliveryError::Failed("message to edit not found".into()))?;
        message.text = text.to_owned();
        message.keyboard = keyboard.cloned();
        message.edits += 1;
        Ok(())
    }

    async fn delete_message(&self, chat: ChatId, message_id: i64) -> Result<(), DeliveryError> {
        lock(&self.sent).retain(|message| !(message.chat == chat && message.id == message_id));
        Ok(())
    }

    async fn acknowledge_button(&self, _callback_id: &str) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// An event log in memory.
#[derive(Default)]
pub struct MemoryEvents {
    pub events: Mutex<Vec<LoggedEvent>>,
}

#[async_trait]
impl EventLog for MemoryEvents {
    async fn record(&self, event: LoggedEvent) -> Result<(), StoreError> {
        lock(&self.events).push(event);
        Ok(())
    }
}

/// Answers "reply to: <last user message>" after a delay (streamed in two pieces when the
/// request asks for a stream); panics when the last user message is "PANIC"; records every
/// request. With a gate, each answer waits for a permit.
/// Memory extractions get `facts` (default: none found) and summaries "summary of: …".
#[derive(Default)]
pub struct EchoLlm {
    pub requests: Mutex<Vec<CompletionRequest>>,
    pub delay: Duration,
    pub gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    pub facts: Mutex<Option<String>>,
}

#[async_trait]
impl LanguageModel for EchoLlm {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        lock(&self.requests).push(request.clone());
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        tokio::time::sleep(self.delay).await;
        let last = request.last_user_text();
        assert!(last != "PANIC", "injected panic");
        let text = match request.purpose {
            Purpose::Memory => lock(&self.facts)
                .clone()
                .unwrap_or_else(|| r#"{"facts": []}"#.into()),
            Purpose::Summary => format!("summary of: {last}"),
            Purpose::Companion => format!("reply to: {last}"),
        };
        if let Some(sink) = &request.stream {
            let (first, second) = text.split_at(text.len() / 2);
            sink.push(first);
            sink.push(second);
        }
        Ok(Completion {
            text,
            prompt_tokens: None,
            completion_tokens: None,
            provider: "echo".into(),
        })
    }
}

pub fn sender(user_id: UserId) -> Sender {
    Sender {
        user_id,
        chat_id: user_id,
        first_name: format!("User{user_id}"),
        language_code: Some("en".into()),
    }
}

pub fn text(user_id: UserId, text: &str) -> Inbound {
    Inbound {
        update_id: None,
        sender: sender(user_id),
        kind: InboundKind::Text(text.to_owned()),
        accepted_at: None,
        replayed: false,
        api: None,
    }
}

/// Presses a button with `data` (on no particular message).
pub fn press(user_id: UserId, data: &str) -> Inbound {
    press_on(user_id, data, None)
}

/// Presses a button with `data` on the message `message_id`.
pub fn press_on(user_id: UserId, data: &str, message_id: Option<i64>) -> Inbound {
    Inbound {
        update_id: None,
        sender: sender(user_id),
        kind: InboundKind::Button {
            callback_id: format!("cb{user_id}"),
            data: data.to_owned(),
            message_id,
        },
        accepted_at: None,
        replayed: false,
        api: None,
    }
}

/// Starts the first story of `persona_id`.
pub fn pick(user_id: UserId, persona_id: &str) -> Inbound {
    press(user_id, &format!("s:{persona_id}:first"))
}

pub fn command(user_id: UserId, text: &str) -> Inbound {
    Inbound {
        update_id: None,
        sender: sender(user_id),
        kind: InboundKind::from_text(text),
        accepted_at: None,
        replayed: false,
        api: None,
    }
}

/// Waits until `condition` holds, failing the test after five seconds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
