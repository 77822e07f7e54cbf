//! In-memory implementations of the ports, for unit tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{Inbound, InboundKind, Sender};
use crate::ports::*;

/// Locks a test mutex; a poisoned lock means another assertion already failed.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("test mutex poisoned")
}

/// Records every message sent, per chat.
#[derive(Default)]
pub struct RecordingMessenger {
    pub sent: Mutex<Vec<(ChatId, String, Option<Keyboard>)>>,
    next_id: AtomicI64,
}

impl RecordingMessenger {
    pub fn texts_to(&self, chat: ChatId) -> Vec<String> {
        lock(&self.sent)
            .iter()
            .filter(|(to, _, _)| *to == chat)
            .map(|(_, text, _)| text.clone())
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
        lock(&self.sent).push((chat, text.to_owned(), keyboard.cloned()));
        Ok(self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    async fn show_typing(&self, _chat: ChatId) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn acknowledge_button(&self, _callback_id: &str) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// Answers "reply to: <last user message>" after a delay; panics when the last user message
/// is "PANIC"; records every request. With a gate, each answer waits for a permit.
#[derive(Default)]
pub struct EchoLlm {
    pub requests: Mutex<Vec<CompletionRequest>>,
    pub delay: Duration,
    pub gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

#[async_trait]
impl LanguageModel for EchoLlm {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        lock(&self.requests).push(request.clone());
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        tokio::time::sleep(self.delay).await;
        let last = request
            .messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map(|message| message.content.clone())
            .unwrap_or_default();
        assert!(last != "PANIC", "injected panic");
        Ok(Completion {
            text: format!("reply to: {last}"),
            prompt_tokens: None,
            completion_tokens: None,
            provider: "echo".into(),
        })
    }
}

#[derive(Default)]
struct MemoryData {
    profiles: HashMap<UserId, UserProfile>,
    /// (dialog id, user, slot, persona, open)
    dialogs: Vec<(DialogId, UserId, u8, String, bool)>,
    messages: Vec<(DialogId, NewMessage)>,
    active_slot: HashMap<UserId, u8>,
    claimed_updates: std::collections::HashSet<i64>,
    token_usage: HashMap<(UserId, u8), (u64, u64)>,
}

/// Storage in a mutex.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<MemoryData>,
}

impl MemoryStore {
    pub fn message_count(&self) -> usize {
        lock(&self.data).messages.len()
    }

    /// (prompt, completion) tokens recorded for a user's slot.
    pub fn token_usage(&self, user_id: UserId, slot: u8) -> (u64, u64) {
        lock(&self.data)
            .token_usage
            .get(&(user_id, slot))
            .copied()
            .unwrap_or_default()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load_session(
        &self,
        user_id: UserId,
        history_limit: usize,
    ) -> Result<Option<StoredSession>, StoreError> {
        let data = lock(&self.data);
        let Some(profile) = data.profiles.get(&user_id).cloned() else {
            return Ok(None);
        };
        let active_dialog = data.active_slot.get(&user_id).and_then(|slot| {
            let (dialog_id, _, slot, persona_id, _) = data
                .dialogs
                .iter()
                .find(|(_, user, s, _, open)| *user == user_id && s == slot && *open)?
                .clone();
            let all: Vec<HistoryEntry> = data
                .messages
                .iter()
                .filter(|(dialog, _)| *dialog == dialog_id)
                .map(|(_, message)| HistoryEntry {
                    role: message.role,
                    content: message.content.clone(),
                    token_count: message.token_count,
                })
                .collect();
            let history = all[all.len().saturating_sub(history_limit)..].to_vec();
            Some(StoredDialog {
                dialog_id,
                slot,
                persona_id,
                history,
            })
        });
        Ok(Some(StoredSession {
            profile,
            active_dialog,
        }))
    }

    async fn save_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        lock(&self.data)
            .profiles
            .insert(profile.user_id, profile.clone());
        Ok(())
    }

    async fn open_dialog(
        &self,
        user_id: UserId,
        slot: u8,
        persona_id: &str,
    ) -> Result<DialogId, StoreError> {
        let mut data = lock(&self.data);
        for dialog in data.dialogs.iter_mut() {
            if dialog.1 == user_id && dialog.2 == slot {
                dialog.4 = false;
            }
        }
        let id = data.dialogs.len() as DialogId + 1;
        data.dialogs
            .push((id, user_id, slot, persona_id.to_owned(), true));
        data.active_slot.insert(user_id, slot);
        Ok(id)
    }

    async fn append_message(
        &self,
        dialog_id: DialogId,
        message: &NewMessage,
        update_id: Option<i64>,
    ) -> Result<Appended, StoreError> {
        let mut data = lock(&self.data);
        if let Some(update_id) = update_id {
            if !data.claimed_updates.insert(update_id) {
                return Ok(Appended::Duplicate);
            }
        }
        if let Some(usage) = message.usage {
            let entry = data
                .token_usage
                .entry((usage.user_id, usage.slot))
                .or_default();
            entry.0 += u64::from(usage.prompt_tokens);
            entry.1 += u64::from(usage.completion_tokens);
        }
        data.messages.push((dialog_id, message.clone()));
        Ok(Appended::Stored)
    }

    async fn claim_update(&self, update_id: i64) -> Result<bool, StoreError> {
        Ok(lock(&self.data).claimed_updates.insert(update_id))
    }

    async fn mark_last_user_message_unanswered(
        &self,
        _dialog_id: DialogId,
    ) -> Result<(), StoreError> {
        Ok(())
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
    }
}

pub fn pick(user_id: UserId, persona_id: &str) -> Inbound {
    Inbound {
        update_id: None,
        sender: sender(user_id),
        kind: InboundKind::Button {
            callback_id: format!("cb{user_id}"),
            data: format!("p:{persona_id}"),
        },
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
