//! The sessions' storage in a mutex: the `SessionStore` port for unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::*;
use crate::sync::lock;

/// One stored dialog.
#[derive(Debug, Clone)]
struct MemoryDialog {
    id: DialogId,
    user_id: UserId,
    slot: u8,
    persona_id: String,
    story_id: String,
    open: bool,
    modes: DialogModes,
    last_active_at: i64,
}

#[derive(Default)]
struct MemoryData {
    profiles: HashMap<UserId, UserProfile>,
    preferences: HashMap<UserId, UserPreferences>,
    dialogs: Vec<MemoryDialog>,
    /// (message id, dialog, message (its status kept current), replaced, created at)
    messages: Vec<(i64, DialogId, NewMessage, bool, i64)>,
    active_slot: HashMap<UserId, u8>,
    /// Updates accepted and not yet handled.
    unfinished_updates: std::collections::HashSet<i64>,
    token_usage: HashMap<(UserId, u8), (u64, u64)>,
}

/// Storage in a mutex.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<MemoryData>,
    /// Stamps dialogs' last activity (0 without a clock).
    clock: Option<Arc<dyn Clock>>,
}

impl MemoryStore {
    /// A store whose times come from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore {
            data: Mutex::default(),
            clock: Some(clock),
        }
    }

    fn now(&self) -> i64 {
        self.clock.as_ref().map_or(0, |clock| clock.now_millis())
    }

    /// Persona replies the LLM wrote for `user_id` since `since` (as the SQL store counts
    /// them for the daily limit).
    pub fn replies_since(&self, user_id: UserId, since: i64) -> u32 {
        let data = lock(&self.data);
        let users_dialogs: Vec<DialogId> = data
            .dialogs
            .iter()
            .filter(|dialog| dialog.user_id == user_id)
            .map(|dialog| dialog.id)
            .collect();
        let replies = data
            .messages
            .iter()
            .filter(|(_, dialog, message, _, created_at)| {
                users_dialogs.contains(dialog)
                    && *created_at >= since
                    && message.role == Role::Assistant
                    && message.provider.is_some()
                    && message.status != MessageStatus::Pending
            })
            .count();
        u32::try_from(replies).unwrap_or(u32::MAX)
    }

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

    /// Every stored message's text and status, oldest first.
    pub fn messages(&self) -> Vec<(String, &'static str)> {
        lock(&self.data)
            .messages
            .iter()
            .map(|(_, _, message, replaced, _)| {
                let status = if *replaced {
                    MessageStatus::Replaced
                } else {
                    message.status
                };
                (message.content.clone(), status.as_str())
            })
            .collect()
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
        let dialogs = data
            .dialogs
            .iter()
            .filter(|dialog| dialog.user_id == user_id && dialog.open)
            .map(|dialog| {
                let all: Vec<HistoryEntry> = data
                    .messages
                    .iter()
                    .filter(|(_, id, message, replaced, _)| {
                        *id == dialog.id
                            && !replaced
                            && MessageStatus::in_dialog(message.status.as_str())
                    })
                    .map(|(message_id, _, message, _, _)| HistoryEntry {
                        message_id: *message_id,
                        telegram_message_id: message.telegram_message_id,
                        earlier_parts: message.earlier_parts.clone(),
                        role: message.role,
                        content: message.content.clone(),
                        token_count: message.token_count,
                    })
                    .collect();
                let persona_messages = data
                    .messages
                    .iter()
                    .filter(|(_, id, message, replaced, _)| {
                        *id == dialog.id && !replaced && message.role == Role::Assistant
                    })
                    .count() as u32;
                let pending = data
                    .messages
                    .iter()
                    .filter(|(_, id, message, _, _)| {
                        *id == dialog.id && message.status == MessageStatus::Pending
                    })
                    .map(|(message_id, _, message, _, created_at)| PendingReply {
                        message_id: *message_id,
                        reply_message_id: message.reply_message_id,
                        created_at: *created_at,
                    })
                    .collect();
                let undelivered = data
                    .messages
                    .iter()
                    .filter(|(_, id, message, _, _)| {
                        *id == dialog.id && message.status == MessageStatus::Delivering
                    })
                    .map(|(message_id, _, message, _, _)| PendingDelivery {
                        message_id: *message_id,
                        telegram_message_id: message.telegram_message_id,
                        content: message.content.clone(),
                    })
                    .collect();
                StoredDialog {
                    dialog_id: dialog.id,
                    slot: dialog.slot,
                    persona_id: dialog.persona_id.clone(),
                    story_id: Some(dialog.story_id.clone()),
                    last_active_at: dialog.last_active_at,
                    modes: dialog.modes,
                    persona_messages,
                    history: all[all.len().saturating_sub(history_limit)..].to_vec(),
                    pending,
                    undelivered,
                    extracted_through: 0,
                    summary: None,
                }
            })
            .collect();
        Ok(Some(StoredSession {
            profile,
            preferences: data.preferences.get(&user_id).cloned().unwrap_or_default(),
            active_slot: data.active_slot.get(&user_id).copied(),
            dialogs,
        }))
    }

    async fn save_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        lock(&self.data)
            .profiles
            .insert(profile.user_id, profile.clone());
        Ok(())
    }

    async fn save_preferences(
        &self,
        user_id: UserId,
        preferences: &UserPreferences,
    ) -> Result<(), StoreError> {
        lock(&self.data)
            .preferences
            .insert(user_id, preferences.clone());
        Ok(())
    }

    async fn open_dialog(&self, new: &NewDialog) -> Result<DialogId, StoreError> {
        let NewDialog {
            user_id,
            slot,
            modes,
            ..
        } = *new;
        let now = self.now();
        let mut data = lock(&self.data);
        for dialog in data.dialogs.iter_mut() {
            if dialog.user_id == user_id && dialog.slot == slot {
                dialog.open = false;
            }
        }
        let id = data.dialogs.len() as DialogId + 1;
        data.dialogs.push(MemoryDialog {
            id,
            user_id,
            slot,
            persona_id: new.persona_id.clone(),
            story_id: new.story_id.clone(),
            open: true,
            modes,
            last_active_at: now,
        });
        data.active_slot.insert(user_id, slot);
        Ok(id)
    }

    async fn activate_slot(&self, user_id: UserId, slot: u8) -> Result<(), StoreError> {
        lock(&self.data).active_slot.insert(user_id, slot);
        Ok(())
    }

    async fn close_all_dialogs(&self, user_id: UserId) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        for dialog in data.dialogs.iter_mut() {
            if dialog.user_id == user_id {
                dialog.open = false;
            }
        }
        data.active_slot.remove(&user_id);
        Ok(())
    }

    async fn set_dialog_modes(
        &self,
        dialog_id: DialogId,
        modes: DialogModes,
    ) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        if let Some(dialog) = data
            .dialogs
            .iter_mut()
            .find(|dialog| dialog.id == dialog_id)
        {
            dialog.modes = modes;
        }
        Ok(())
    }

    async fn append_message(
        &self,
        dialog_id: DialogId,
        message: &NewMessage,
    ) -> Result<Appended, StoreError> {
        let now = self.now();
        let mut data = lock(&self.data);
        if let Some(update_id) = message.update_id {
            let stored = data
                .messages
                .iter()
                .any(|stored| stored.2.update_id == Some(update_id));
            if stored {
                return Ok(Appended::Duplicate);
            }
            data.unfinished_updates.remove(&update_id);
        }
        if let Some(answered) = message.answers {
            if let Some(user) = data.messages.iter_mut().find(|m| m.0 == answered) {
                user.2.status = MessageStatus::Complete;
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
        if let Some(replaced) = message.replaces {
            if let Some(old) = data.messages.iter_mut().find(|m| m.0 == replaced) {
                old.3 = true;
            }
        }
        if let Some(dialog) = data.dialogs.iter_mut().find(|d| d.id == dialog_id) {
            dialog.last_active_at = now;
        }
        let message_id = data.messages.len() as i64 + 1;
        data.messages
            .push((message_id, dialog_id, message.clone(), false, now));
        Ok(Appended::Stored { message_id })
    }

    async fn is_update_stored(&self, update_id: i64) -> Result<bool, StoreError> {
        let data = lock(&self.data);
        Ok(data
            .messages
            .iter()
            .any(|stored| stored.2.update_id == Some(update_id)))
    }

    async fn finish_update(&self, update_id: i64) -> Result<(), StoreError> {
        lock(&self.data).unfinished_updates.remove(&update_id);
        Ok(())
    }

    async fn finish_delivery(
        &self,
        message_id: i64,
        status: MessageStatus,
        telegram_message_id: Option<i64>,
        earlier_parts: &[i64],
    ) -> Result<(), StoreError> {
        if let Some(stored) = lock(&self.data)
            .messages
            .iter_mut()
            .find(|m| m.0 == message_id)
        {
            stored.2.status = status;
            stored.2.telegram_message_id = telegram_message_id;
            stored.2.earlier_parts = earlier_parts.to_vec();
        }
        Ok(())
    }

    async fn set_status(&self, message_id: i64, status: MessageStatus) -> Result<(), StoreError> {
        if let Some(stored) = lock(&self.data)
            .messages
            .iter_mut()
            .find(|m| m.0 == message_id)
        {
            stored.2.status = status;
        }
        Ok(())
    }
}
