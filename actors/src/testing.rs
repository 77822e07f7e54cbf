//! In-memory implementations of the ports, for unit tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::event::{Inbound, InboundKind, Sender};
use crate::ports::*;

use crate::domain::catalogue::{Catalogue, TEST_CATALOGUE};
use crate::domain::entitlement::Limits;
use crate::domain::memory::MemorySettings;
use crate::domain::persona::{Persona, PersonaCatalog};
use crate::domain::prompt::{PromptBuilder, TokenBudget, TokenCounter};
use crate::domain::safety::SafetyPolicy;
use crate::memory::testing::{MemoryLedger, WordEmbedder};
use crate::memory::{KeeperDeps, MemoryDeps, MemoryKeeper};
use crate::metrics::Metrics;
use crate::payments::testing::{MemoryPaymentStore, RecordingPaymentsApi};
use crate::payments::{Commerce, DeskDeps, DeskHandle, PayloadSigner, PaymentDesk};
use crate::resilience::backoff::BackoffSettings;
use crate::session::{SessionDeps, SessionRouter, SessionSettings};
use crate::supervision::{ActorKind, KindPolicy, Supervisor};
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

/// A session router on the in-memory ports, with a manual clock: the sessions' test bench.
pub struct SessionHarness {
    pub router: SessionRouter,
    pub payments: Arc<MemoryPaymentStore>,
    pub payments_api: Arc<RecordingPaymentsApi>,
    pub desk: DeskHandle,
    limits: Limits,
    pub messenger: Arc<RecordingMessenger>,
    pub llm: Arc<EchoLlm>,
    pub store: Arc<MemoryStore>,
    pub metrics: Metrics,
    pub clock: Arc<ManualClock>,
    /// Long-term memory's store (memory is off unless the harness was made
    /// [`SessionHarness::with_memory`]).
    pub memories: Arc<MemoryLedger>,
    settings: SessionSettings,
    policy: KindPolicy,
}

/// `policy` with a short restart backoff.
fn supervised_policy(policy: &KindPolicy) -> KindPolicy {
    KindPolicy {
        backoff: BackoffSettings {
            min_ms: 10,
            max_ms: 50,
            jitter: 0.0,
            reset_after_ms: 1_000,
        },
        ..policy.clone()
    }
}

/// Test personas: each with one story, `first`, whose opening greets the user.
const TEST_PERSONAS: [(&str, &str, &str); 4] = [
    ("mira", "Mira", "Keeps a lighthouse."),
    ("arlo", "Arlo", "Runs a night train."),
    ("nova", "Nova", "Maps the stars."),
    ("kai", "Kai", "Carves boats."),
];

impl SessionHarness {
    /// Sessions with `settings`, answered by `llm`, supervised by `policy` (with a short
    /// restart backoff).
    pub fn new(settings: SessionSettings, llm: EchoLlm, policy: KindPolicy) -> SessionHarness {
        let clock = ManualClock::starting_at(1_700_000_000_000);
        let ports = (
            Arc::new(RecordingMessenger::default()),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        );
        SessionHarness::start(settings, Arc::new(llm), policy, Limits::default(), ports)
    }

    /// The standard harness with `limits` (a small free tier, say).
    pub fn with_limits(limits: Limits) -> SessionHarness {
        let clock = ManualClock::starting_at(1_700_000_000_000);
        let ports = (
            Arc::new(RecordingMessenger::default()),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        );
        let llm = Arc::new(EchoLlm::default());
        SessionHarness::start(
            SessionSettings::default(),
            llm,
            KindPolicy::default(),
            limits,
            ports,
        )
    }

    /// The standard harness with long-term memory on.
    pub fn with_memory() -> SessionHarness {
        let clock = ManualClock::starting_at(1_700_000_000_000);
        let ports = (
            Arc::new(RecordingMessenger::default()),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        );
        SessionHarness::start_with(
            SessionSettings::default(),
            Arc::new(EchoLlm::default()),
            KindPolicy::default(),
            Limits::default(),
            ports,
            MemorySettings::default(),
        )
    }

    fn start(
        settings: SessionSettings,
        llm: Arc<EchoLlm>,
        policy: KindPolicy,
        limits: Limits,
        ports: (Arc<RecordingMessenger>, Arc<MemoryStore>, Arc<ManualClock>),
    ) -> SessionHarness {
        let memory_off = MemorySettings {
            enabled: false,
            ..MemorySettings::default()
        };
        SessionHarness::start_with(settings, llm, policy, limits, ports, memory_off)
    }

    fn start_with(
        settings: SessionSettings,
        llm: Arc<EchoLlm>,
        policy: KindPolicy,
        limits: Limits,
        (messenger, store, clock): (Arc<RecordingMessenger>, Arc<MemoryStore>, Arc<ManualClock>),
        memory_settings: MemorySettings,
    ) -> SessionHarness {
        let metrics = Metrics::new().expect("metrics");
        let sessions_store = store.clone();
        let payments = Arc::new(MemoryPaymentStore::counting_replies(
            clock.clone(),
            Box::new(move |user, since| sessions_store.replies_since(user, since)),
        ));
        let payments_api = Arc::new(RecordingPaymentsApi::default());
        let supervisor = Arc::new(Supervisor::new(
            HashMap::from([
                (ActorKind::Session, supervised_policy(&policy)),
                (
                    ActorKind::Payments,
                    supervised_policy(&KindPolicy::default()),
                ),
                (ActorKind::Memory, supervised_policy(&KindPolicy::default())),
            ]),
            metrics.clone(),
        ));
        let commerce = Commerce {
            catalogue: Arc::new(
                Catalogue::parse("catalogue.toml", TEST_CATALOGUE).expect("catalogue"),
            ),
            limits: limits.clone(),
            signer: PayloadSigner::new(b"test"),
            api: payments_api.clone(),
            store: payments.clone(),
        };
        let desk = PaymentDesk::launch(DeskDeps {
            commerce: commerce.clone(),
            messenger: messenger.clone(),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
            sweep_every: Duration::from_secs(60),
        });
        let memories = Arc::new(MemoryLedger::default());
        let embedder = Arc::new(WordEmbedder::default());
        let keeper = MemoryKeeper::launch(KeeperDeps {
            llm: llm.clone(),
            embedder: embedder.clone(),
            store: memories.clone(),
            settings: memory_settings.clone(),
            counter: TokenCounter::new(),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
        });
        let safety = Arc::new(
            SafetyPolicy::parse("safety.toml", crate::domain::safety::TEST_POLICY).expect("policy"),
        );
        let personas = TEST_PERSONAS
            .iter()
            .map(|(id, name, description)| {
                let file = format!(
                    "name = \"{name}\"\ndescription = \"{description}\"\nfirst_mes = \"Hi\"\n\
                     [[stories]]\nid = \"first\"\ntitle = \"First\"\npremise = \"A storm.\"\n\
                     opening_message = \"Hi {{{{user}}}}\"\n"
                );
                Persona::parse(std::path::Path::new(&format!("{id}.toml")), &file).expect("persona")
            })
            .collect();
        let deps = SessionDeps {
            messenger: messenger.clone(),
            llm: llm.clone(),
            store: store.clone(),
            personas: Arc::new(PersonaCatalog::new(personas)),
            prompts: PromptBuilder::new(
                TokenCounter::new(),
                TokenBudget {
                    context_tokens: 4000,
                    reply_tokens: 500,
                },
                Arc::new(safety.prompt().clone()),
            ),
            safety,
            metrics: metrics.clone(),
            supervisor,
            settings: settings.clone(),
            clock: clock.clone(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            commerce,
            desk: desk.clone(),
            memory: MemoryDeps {
                keeper: keeper.clone(),
                embedder: embedder.clone(),
                store: memories.clone(),
                settings: memory_settings,
            },
        };
        let router = SessionRouter::start(1, deps);
        desk.listen(Arc::new(router.clone()));
        keeper.listen(Arc::new(router.clone()));
        SessionHarness {
            router,
            payments,
            payments_api,
            desk,
            limits,
            messenger,
            llm,
            store,
            metrics,
            clock,
            memories,
            settings,
            policy,
        }
    }

    /// Stops every session at once (as a crash would: replies in progress end where they
    /// are), then starts anew on the same storage, chat and clock, answered by `llm`.
    pub fn crash_and_restart(self, llm: EchoLlm) -> SessionHarness {
        self.router.stop();
        let ports = (self.messenger, self.store, self.clock);
        SessionHarness::start(
            self.settings,
            Arc::new(llm),
            self.policy,
            self.limits,
            ports,
        )
    }

    /// The default settings and policy, and an LLM that echoes at once.
    pub fn standard() -> SessionHarness {
        SessionHarness::new(
            SessionSettings::default(),
            EchoLlm::default(),
            KindPolicy::default(),
        )
    }

    /// Routes `event` and waits until the session has finished it (and every event before).
    pub async fn handle(&self, event: Inbound) {
        self.router.route(event);
        eventually("the event handled", || self.router.in_flight() == 0).await;
    }

    /// The last message the chat shows.
    pub fn last_text(&self, chat: ChatId) -> String {
        self.messenger.texts_to(chat).pop().unwrap_or_default()
    }

    /// The `callback_data` of the buttons of the chat's last message, row by row.
    pub fn last_buttons(&self, chat: ChatId) -> Vec<String> {
        self.last_keyboard(chat)
            .into_iter()
            .map(|button| button.data)
            .collect()
    }

    /// The labels of the buttons of the chat's last message, row by row.
    pub fn last_labels(&self, chat: ChatId) -> Vec<String> {
        self.last_keyboard(chat)
            .into_iter()
            .map(|button| button.label)
            .collect()
    }

    fn last_keyboard(&self, chat: ChatId) -> Vec<Button> {
        self.messenger
            .messages_to(chat)
            .pop()
            .and_then(|message| message.keyboard)
            .map(|keyboard| keyboard.rows.into_iter().flatten().collect())
            .unwrap_or_default()
    }
}
