//! The session actor: one per Telegram user, a virtual actor in the Orleans sense.
//!
//! Nobody creates sessions explicitly: the [`crate::router`] activates one on a user's first
//! event and passivates it after the `session` policy's idle timeout without events. Its state is
//! loaded from storage on activation and every change is written through, so passivation (or a
//! crash) loses nothing.
//!
//! Events are handled strictly one at a time in arrival order: they wait in a bounded queue
//! while the previous one is being answered. The work for one event runs as a future that
//! *owns* the session state; if it panics the panic is caught, counted and logged, the user is
//! told, and the state is thrown away and reloaded from storage before the next event. Other
//! sessions on the same arbiter never notice.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;

use crate::event::{Command, Inbound, InboundKind, Sender};
use crate::metrics::Metrics;
use crate::persona::PersonaCatalog;
use crate::ports::{
    Appended, Button, ChatId, CompletionRequest, DialogId, HistoryEntry, Keyboard, LanguageModel,
    LlmError, MessageStatus, Messenger, NewMessage, Role, SessionStore, StoredSession, TokenUsage,
    UserId, UserProfile,
};
use crate::prompt::{PersonaPrompt, PromptBuilder};
use crate::resilience::backoff::BackoffState;
use crate::supervision::{ActorKind, OverflowPolicy, Supervisor};
use crate::texts::{TELEGRAM_MESSAGE_LIMIT, Texts, split_message};

/// Prefix of the callback data of persona buttons.
pub const PERSONA_BUTTON_PREFIX: &str = "p:";
/// Callback data of the button that asks the LLM again for an unanswered message.
pub const RETRY_BUTTON: &str = "retry";
/// Until the dialogs issue brings three slots, every dialog lives in slot 1.
const DEFAULT_SLOT: u8 = 1;

/// How sessions behave; from the `[session]` configuration section. Idle timeout, mailbox
/// capacity and restart policy come from the supervisor's `session` policy (reloadable).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Messages of history kept in memory (and loaded on activation) per dialog.
    pub history_limit: usize,
    /// How often "typing…" is re-sent while the LLM works (Telegram shows it for ~5 s).
    pub typing_interval: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            history_limit: 200,
            typing_interval: Duration::from_secs(4),
        }
    }
}

/// What every session needs: the ports, the personas, settings and metrics.
pub struct SessionDeps {
    pub messenger: Arc<dyn Messenger>,
    pub llm: Arc<dyn LanguageModel>,
    pub store: Arc<dyn SessionStore>,
    pub personas: Arc<PersonaCatalog>,
    pub prompts: PromptBuilder,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub settings: SessionSettings,
    /// Events accepted by sessions and not finished yet (for draining at shutdown).
    pub in_flight: AtomicUsize,
}

/// The session's in-memory state. It is owned by the work in progress while an event is
/// handled, and by the actor in between.
#[derive(Debug, Default)]
struct SessionState {
    profile: Option<UserProfile>,
    dialog: Option<ActiveDialog>,
}

#[derive(Debug)]
struct ActiveDialog {
    id: DialogId,
    slot: u8,
    /// The persona's part of every prompt, built once for this dialog.
    prompt: PersonaPrompt,
    /// Oldest first; at most `history_limit` entries.
    history: VecDeque<HistoryEntry>,
}

impl SessionState {
    fn from_stored(stored: Option<StoredSession>, deps: &SessionDeps) -> SessionState {
        let Some(stored) = stored else {
            return SessionState::default();
        };
        let user_name = &stored.profile.first_name;
        let dialog = stored.active_dialog.and_then(|dialog| {
            // A dialog whose persona file was removed cannot go on; the user picks anew.
            let persona = deps.personas.get(&dialog.persona_id)?;
            Some(ActiveDialog {
                id: dialog.dialog_id,
                slot: dialog.slot,
                prompt: deps.prompts.persona_prompt(&persona, user_name),
                history: dialog.history.into(),
            })
        });
        SessionState {
            profile: Some(stored.profile),
            dialog,
        }
    }
}

/// Where a session is in its life; exactly one piece of work runs at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No state in memory: it must be loaded before the next event (at activation, after a
    /// failed load).
    Unloaded,
    /// Waiting out the restart backoff after a panic; then [`Phase::Unloaded`].
    Restarting,
    /// Loading the state from storage.
    Loading,
    /// Handling an event; the work owns the state.
    Handling,
    /// State in memory, nothing running.
    Ready,
}

/// One user's session.
pub struct SessionActor {
    user_id: UserId,
    deps: Arc<SessionDeps>,
    shard: Recipient<SessionIdle>,
    phase: Phase,
    /// Present in [`Phase::Ready`] only.
    state: Option<SessionState>,
    queue: VecDeque<Inbound>,
    events_received: u64,
    idle_timer: Option<SpawnHandle>,
    restarts: BackoffState,
}

/// An event for this session, routed by its shard.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Inbound);

/// Tells the session to stop: it has been idle and its shard has forgotten it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Passivate;

/// Sent by a session to its shard when it has been idle for the idle timeout.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionIdle {
    pub user_id: UserId,
    /// How many events the session had received; the shard passivates it only if it has
    /// routed no more than that (no event is on its way).
    pub events_received: u64,
}

impl SessionActor {
    pub fn new(user_id: UserId, deps: Arc<SessionDeps>, shard: Recipient<SessionIdle>) -> Self {
        SessionActor {
            user_id,
            deps,
            shard,
            phase: Phase::Unloaded,
            state: None,
            queue: VecDeque::new(),
            events_received: 0,
            idle_timer: None,
            restarts: BackoffState::new(),
        }
    }

    fn set_mailbox_depth(&self, change: i64) {
        self.deps
            .metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Session.as_str()])
            .add(change);
    }

    fn pop_event(&mut self) -> Option<Inbound> {
        let event = self.queue.pop_front()?;
        self.set_mailbox_depth(-1);
        Some(event)
    }

    /// Starts the next piece of work if none is running: the load from storage first, then
    /// queued events in order; with nothing to do, arms the idle timer.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Loading | Phase::Handling | Phase::Restarting => {}
            Phase::Unloaded => self.start_load(ctx),
            Phase::Ready => match self.pop_event() {
                Some(event) => self.start_event(event, ctx),
                None => self.arm_idle_timer(ctx),
            },
        }
    }

    fn arm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.idle_timer.take() {
            ctx.cancel_future(timer);
        }
        let idle_timeout = self.deps.supervisor.policy(ActorKind::Session).idle_timeout;
        self.idle_timer = Some(ctx.run_later(idle_timeout, |session, _ctx| {
            session.idle_timer = None;
            session.shard.do_send(SessionIdle {
                user_id: session.user_id,
                events_received: session.events_received,
            });
        }));
    }

    fn start_load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        let deps = self.deps.clone();
        let user_id = self.user_id;
        let load = async move {
            deps.store
                .load_session(user_id, deps.settings.history_limit)
                .await
                .map(|stored| SessionState::from_stored(stored, &deps))
        };
        ctx.spawn(load.into_actor(self).map(|loaded, session, ctx| match loaded {
            Ok(state) => {
                session.state = Some(state);
                session.phase = Phase::Ready;
                session.pump(ctx);
            }
            Err(error) => {
                // Without its state the session cannot answer: tell everyone waiting, and
                // load again on the next event (or passivate if none comes).
                tracing::error!(user_id = session.user_id, %error, "could not load session");
                session.deps.metrics.count_error("storage");
                session.phase = Phase::Unloaded;
                while let Some(event) = session.pop_event() {
                    refuse(&session.deps, &event, texts_for(&event.sender).storage_failed);
                }
                session.arm_idle_timer(ctx);
            }
        }));
    }

    fn start_event(&mut self, event: Inbound, ctx: &mut Context<Self>) {
        self.phase = Phase::Handling;
        if let Some(timer) = self.idle_timer.take() {
            ctx.cancel_future(timer);
        }
        let deps = self.deps.clone();
        let mut state = self.state.take().unwrap_or_default();
        let sender = event.sender.clone();
        let work = async move {
            let outcome = AssertUnwindSafe(handle_event(&deps, &mut state, event))
                .catch_unwind()
                .await;
            outcome.map(|()| state)
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, session, ctx| {
            session.deps.in_flight.fetch_sub(1, Ordering::SeqCst);
            match outcome {
                Ok(state) => {
                    session.state = Some(state);
                    session.phase = Phase::Ready;
                }
                Err(panic) => session.recover_from_panic(&sender, panic.as_ref(), ctx),
            }
            session.pump(ctx);
        }));
    }

    /// A panic in the work for one event: count and log it, apologise, and restart the
    /// session from storage (its in-memory state may be half-updated) after the `session`
    /// kind's backoff. Too many restarts escalate the kind (see [`Supervisor`]).
    fn recover_from_panic(
        &mut self,
        sender: &Sender,
        panic: &(dyn std::any::Any + Send),
        ctx: &mut Context<Self>,
    ) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        tracing::error!(user_id = self.user_id, panic = %message, "session panicked; restarting it from storage");
        self.deps.metrics.session_panics_total.inc();
        self.deps.metrics.count_error("panic");
        self.deps.supervisor.record_restart(ActorKind::Session);
        self.state = None;
        self.phase = Phase::Restarting;
        spawn_notice(&self.deps, sender.chat_id, texts_for(sender).internal_error);
        let policy = self.deps.supervisor.policy(ActorKind::Session);
        let delay =
            self.restarts
                .next_delay(&policy.backoff, std::time::Instant::now(), fastrand::f64());
        ctx.run_later(delay, |session, ctx| {
            session.phase = Phase::Unloaded;
            session.pump(ctx);
        });
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps.metrics.sessions_active.inc();
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Session.as_str()])
            .inc();
        self.pump(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.deps.metrics.sessions_active.dec();
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Session.as_str()])
            .dec();
        self.set_mailbox_depth(-(self.queue.len() as i64));
    }
}

impl Handler<Deliver> for SessionActor {
    type Result = ();

    /// Queues the event behind the one in progress. When the mailbox is full, the overflow
    /// policy refuses either this event or the oldest waiting one, with a notice to the user
    /// (who is asked to resend it; nothing disappears silently).
    fn handle(&mut self, Deliver(event): Deliver, ctx: &mut Self::Context) {
        self.events_received += 1;
        let policy = self.deps.supervisor.policy(ActorKind::Session);
        // One event in progress plus `mailbox_capacity` waiting behind it.
        let accepted = self.queue.len() + usize::from(self.phase == Phase::Handling);
        if accepted > policy.mailbox_capacity {
            self.deps.metrics.count_error("queue_full");
            match (policy.overflow, self.queue.is_empty()) {
                (OverflowPolicy::DropOldest, false) => {
                    if let Some(oldest) = self.pop_event() {
                        refuse(
                            &self.deps,
                            &oldest,
                            texts_for(&oldest.sender).dropped_for_newer,
                        );
                    }
                }
                _ => {
                    refuse(&self.deps, &event, texts_for(&event.sender).queue_full);
                    return;
                }
            }
        }
        self.queue.push_back(event);
        self.set_mailbox_depth(1);
        self.pump(ctx);
    }
}

impl Handler<Passivate> for SessionActor {
    type Result = ();

    /// Stops the session; its state is already in storage.
    fn handle(&mut self, _msg: Passivate, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Answers an event that will not be handled with `notice`, acknowledging its button, and
/// counts it as finished.
fn refuse(deps: &Arc<SessionDeps>, event: &Inbound, notice: &'static str) {
    if let InboundKind::Button { callback_id, .. } = &event.kind {
        spawn_acknowledge(deps, callback_id.clone());
    }
    spawn_notice(deps, event.sender.chat_id, notice);
    deps.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn texts_for(sender: &Sender) -> &'static Texts {
    Texts::for_language(sender.language_code.as_deref())
}

/// Sends a short notice without waiting for it (used outside the ordered work).
fn spawn_notice(deps: &Arc<SessionDeps>, chat: ChatId, text: &'static str) {
    let deps = deps.clone();
    actix::spawn(async move {
        send(&deps, chat, text, None).await;
    });
}

fn spawn_acknowledge(deps: &Arc<SessionDeps>, callback_id: String) {
    let deps = deps.clone();
    actix::spawn(async move {
        if let Err(error) = deps.messenger.acknowledge_button(&callback_id).await {
            tracing::debug!(%error, "could not acknowledge a button");
        }
    });
}

/// Sends one message (≤ 4096 characters), counting and logging failures. Returns the
/// Telegram message id when it was delivered.
async fn send(
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
            deps.metrics.count_error("telegram");
            None
        }
    }
}

/// Sends a reply of any length, split into Telegram-sized parts; the keyboard goes on the
/// last part. Returns the id of the last part delivered.
async fn send_long(
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

/// The persona gallery as an inline keyboard, one persona per row.
fn persona_keyboard(personas: &PersonaCatalog) -> Keyboard {
    Keyboard {
        rows: personas
            .all()
            .iter()
            .map(|persona| {
                vec![Button {
                    label: format!("{} — {}", persona.name, persona.tagline),
                    data: format!("{PERSONA_BUTTON_PREFIX}{}", persona.id),
                }]
            })
            .collect(),
    }
}

/// Handles one event with exclusive access to the session's state.
async fn handle_event(deps: &SessionDeps, state: &mut SessionState, event: Inbound) {
    // A text for an open dialog claims its update in the same transaction that stores it;
    // every other event claims it here, before anything happens.
    let claimed_with_message = matches!(event.kind, InboundKind::Text(_)) && state.dialog.is_some();
    if let Some(update_id) = event.update_id.filter(|_| !claimed_with_message) {
        match deps.store.claim_update(update_id).await {
            Ok(true) => {}
            Ok(false) => {
                // Telegram redelivered an update we handled already: answer it only once.
                deps.metrics.duplicate_updates_total.inc();
                tracing::debug!(update_id, "duplicate update ignored");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "could not record an update");
                deps.metrics.count_error("storage");
                send(
                    deps,
                    event.sender.chat_id,
                    texts_for(&event.sender).storage_failed,
                    None,
                )
                .await;
                return;
            }
        }
    }
    remember_sender(deps, state, &event.sender).await;
    let sender = &event.sender;
    let texts = texts_for(sender);
    match event.kind {
        InboundKind::Command(Command::Start) => {
            let keyboard = persona_keyboard(&deps.personas);
            send(deps, sender.chat_id, texts.choose_persona, Some(&keyboard)).await;
        }
        InboundKind::Command(Command::Help | Command::Unknown(_)) => {
            send(deps, sender.chat_id, texts.help, None).await;
        }
        InboundKind::Button { callback_id, data } => {
            if let Err(error) = deps.messenger.acknowledge_button(&callback_id).await {
                tracing::debug!(%error, "could not acknowledge a button");
            }
            if let Some(persona_id) = data.strip_prefix(PERSONA_BUTTON_PREFIX) {
                choose_persona(deps, state, sender, persona_id).await;
            } else if data == RETRY_BUTTON {
                retry_last(deps, state, sender).await;
            }
        }
        InboundKind::Text(text) => answer_text(deps, state, sender, text, event.update_id).await,
        InboundKind::Unsupported => {
            send(deps, sender.chat_id, texts.text_only, None).await;
        }
    }
}

/// Stores the user's profile when it is new or Telegram reports a change.
async fn remember_sender(deps: &SessionDeps, state: &mut SessionState, sender: &Sender) {
    let profile = UserProfile {
        user_id: sender.user_id,
        chat_id: sender.chat_id,
        first_name: sender.first_name.clone(),
        language_code: sender.language_code.clone(),
    };
    if state.profile.as_ref() == Some(&profile) {
        return;
    }
    match deps.store.save_profile(&profile).await {
        Ok(()) => state.profile = Some(profile),
        Err(error) => {
            tracing::warn!(%error, "could not save a user profile");
            deps.metrics.count_error("storage");
        }
    }
}

async fn choose_persona(
    deps: &SessionDeps,
    state: &mut SessionState,
    sender: &Sender,
    persona_id: &str,
) {
    let texts = texts_for(sender);
    let Some(persona) = deps.personas.get(persona_id) else {
        let keyboard = persona_keyboard(&deps.personas);
        send(deps, sender.chat_id, texts.unknown_persona, Some(&keyboard)).await;
        return;
    };
    let dialog_id = match deps
        .store
        .open_dialog(sender.user_id, DEFAULT_SLOT, &persona.id)
        .await
    {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "could not open a dialog");
            deps.metrics.count_error("storage");
            send(deps, sender.chat_id, texts.storage_failed, None).await;
            return;
        }
    };
    let greeting = persona.greeting(&sender.first_name);
    let mut dialog = ActiveDialog {
        id: dialog_id,
        slot: DEFAULT_SLOT,
        prompt: deps.prompts.persona_prompt(&persona, &sender.first_name),
        history: VecDeque::new(),
    };
    let message_id = send_long(deps, sender.chat_id, &greeting, None).await;
    record(
        deps,
        &mut dialog,
        Role::Assistant,
        greeting,
        Extras {
            status: delivery_status(message_id),
            telegram_message_id: message_id,
            ..Extras::default()
        },
    )
    .await;
    state.dialog = Some(dialog);
}

/// A user's text: store it, ask the LLM with the persona prompt and the history, deliver the
/// reply and store it. Any failure ends in a short answer, never silence.
async fn answer_text(
    deps: &SessionDeps,
    state: &mut SessionState,
    sender: &Sender,
    text: String,
    update_id: Option<i64>,
) {
    let texts = texts_for(sender);
    let Some(dialog) = state.dialog.as_mut() else {
        let keyboard = persona_keyboard(&deps.personas);
        send(
            deps,
            sender.chat_id,
            texts.choose_persona_first,
            Some(&keyboard),
        )
        .await;
        return;
    };
    let extras = Extras {
        update_id,
        ..Extras::default()
    };
    match record(deps, dialog, Role::User, text, extras).await {
        Recorded::Stored => {}
        Recorded::Duplicate => {
            deps.metrics.duplicate_updates_total.inc();
            tracing::debug!(?update_id, "duplicate update ignored");
            return;
        }
        Recorded::Failed => {
            send(deps, sender.chat_id, texts.storage_failed, None).await;
            return;
        }
    }
    reply_to_history(deps, dialog, sender).await;
}

/// The "Retry" button: asks the LLM again when the last message is the user's, unanswered.
async fn retry_last(deps: &SessionDeps, state: &mut SessionState, sender: &Sender) {
    let texts = texts_for(sender);
    match state.dialog.as_mut() {
        Some(dialog)
            if dialog
                .history
                .back()
                .is_some_and(|entry| entry.role == Role::User) =>
        {
            reply_to_history(deps, dialog, sender).await;
        }
        _ => {
            send(deps, sender.chat_id, texts.nothing_to_retry, None).await;
        }
    }
}

fn retry_keyboard(texts: &Texts) -> Keyboard {
    Keyboard {
        rows: vec![vec![Button {
            label: texts.retry_button.to_owned(),
            data: RETRY_BUTTON.to_owned(),
        }]],
    }
}

/// Asks the LLM for the persona's next message after the dialog's history, delivers it and
/// stores it with its token usage.
async fn reply_to_history(deps: &SessionDeps, dialog: &mut ActiveDialog, sender: &Sender) {
    let texts = texts_for(sender);
    let history: Vec<HistoryEntry> = dialog.history.iter().cloned().collect();
    let prompt = deps.prompts.build(&dialog.prompt, &history);
    let prompt_estimate = prompt.estimated_tokens;
    let request = CompletionRequest::companion(prompt.messages, sender.user_id);
    let completion = complete_while_typing(deps, sender.chat_id, request).await;

    match completion {
        Ok(completion) if !completion.text.trim().is_empty() => {
            let reply = completion.text.trim().to_owned();
            let prompt_tokens = completion.prompt_tokens.unwrap_or(prompt_estimate);
            let completion_tokens = completion
                .completion_tokens
                .unwrap_or_else(|| deps.prompts.counter().count(&reply));
            deps.metrics
                .ai_tokens_used_total
                .with_label_values(&["prompt"])
                .inc_by(u64::from(prompt_tokens));
            deps.metrics
                .ai_tokens_used_total
                .with_label_values(&["completion"])
                .inc_by(u64::from(completion_tokens));
            let message_id = send_long(deps, sender.chat_id, &reply, None).await;
            let extras = Extras {
                status: delivery_status(message_id),
                telegram_message_id: message_id,
                provider: Some(completion.provider),
                usage: Some(TokenUsage {
                    user_id: sender.user_id,
                    slot: dialog.slot,
                    prompt_tokens,
                    completion_tokens,
                }),
                update_id: None,
            };
            record(deps, dialog, Role::Assistant, reply, extras).await;
        }
        outcome => {
            let (notice, offer_retry) = match &outcome {
                Err(LlmError::CircuitOpen { .. }) => (texts.llm_unavailable, true),
                Err(LlmError::RateLimited { .. }) => {
                    deps.metrics.count_error("rate_limited");
                    (texts.rate_limited, true)
                }
                _ => (texts.llm_failed, true),
            };
            match &outcome {
                Err(error) => tracing::warn!(%error, "no LLM answer"),
                Ok(_) => tracing::warn!("the LLM answered with empty text"),
            }
            deps.metrics.count_error("llm");
            if let Err(error) = deps
                .store
                .mark_last_user_message_unanswered(dialog.id)
                .await
            {
                tracing::warn!(%error, "could not mark a message unanswered");
            }
            let keyboard = offer_retry.then(|| retry_keyboard(texts));
            send(deps, sender.chat_id, notice, keyboard.as_ref()).await;
        }
    }
}

/// Calls the LLM, showing "typing…" in the chat until it answers.
async fn complete_while_typing(
    deps: &SessionDeps,
    chat: ChatId,
    request: CompletionRequest,
) -> Result<crate::ports::Completion, LlmError> {
    let completion = deps.llm.complete(request);
    tokio::pin!(completion);
    let mut typing = tokio::time::interval(deps.settings.typing_interval);
    loop {
        tokio::select! {
            result = &mut completion => return result,
            _ = typing.tick() => {
                if let Err(error) = deps.messenger.show_typing(chat).await {
                    tracing::debug!(%error, "could not show typing");
                }
            }
        }
    }
}

/// A reply is stored as undelivered when Telegram accepted none of its parts.
fn delivery_status(message_id: Option<i64>) -> MessageStatus {
    match message_id {
        Some(_) => MessageStatus::Complete,
        None => MessageStatus::Undelivered,
    }
}

/// What goes with a message into storage, besides its role and text.
struct Extras {
    status: MessageStatus,
    telegram_message_id: Option<i64>,
    provider: Option<String>,
    usage: Option<TokenUsage>,
    /// The update it came with, claimed in the same transaction.
    update_id: Option<i64>,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            status: MessageStatus::Complete,
            telegram_message_id: None,
            provider: None,
            usage: None,
            update_id: None,
        }
    }
}

/// What storing a message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Stored,
    /// Its update had been handled before; nothing was stored.
    Duplicate,
    Failed,
}

/// Appends a message to the dialog in storage and in memory (in memory only if stored).
async fn record(
    deps: &SessionDeps,
    dialog: &mut ActiveDialog,
    role: Role,
    content: String,
    extras: Extras,
) -> Recorded {
    // PostgreSQL's text cannot hold NUL characters (SQLite's can); they carry no meaning.
    let content = if content.contains('\0') {
        content.replace('\0', "")
    } else {
        content
    };
    let message = NewMessage {
        role,
        token_count: deps.prompts.counter().count(&content),
        content,
        status: extras.status,
        telegram_message_id: extras.telegram_message_id,
        provider: extras.provider,
        usage: extras.usage,
    };
    match deps
        .store
        .append_message(dialog.id, &message, extras.update_id)
        .await
    {
        Ok(Appended::Stored) => {}
        Ok(Appended::Duplicate) => return Recorded::Duplicate,
        Err(error) => {
            tracing::error!(%error, "could not store a message");
            deps.metrics.count_error("storage");
            return Recorded::Failed;
        }
    }
    dialog.history.push_back(HistoryEntry {
        role: message.role,
        content: message.content,
        token_count: message.token_count,
    });
    while dialog.history.len() > deps.settings.history_limit {
        dialog.history.pop_front();
    }
    Recorded::Stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::Persona;
    use crate::router::SessionRouter;
    use crate::supervision::KindPolicy;
    use crate::testing::*;

    struct Harness {
        router: SessionRouter,
        messenger: Arc<RecordingMessenger>,
        llm: Arc<EchoLlm>,
        store: Arc<MemoryStore>,
        metrics: Metrics,
    }

    fn harness(settings: SessionSettings, llm_delay: Duration) -> Harness {
        harness_with_llm(
            settings,
            EchoLlm {
                delay: llm_delay,
                ..EchoLlm::default()
            },
        )
    }

    fn harness_with_llm(settings: SessionSettings, llm: EchoLlm) -> Harness {
        harness_with(settings, llm, KindPolicy::default())
    }

    fn harness_with(settings: SessionSettings, llm: EchoLlm, policy: KindPolicy) -> Harness {
        let messenger = Arc::new(RecordingMessenger::default());
        let llm = Arc::new(llm);
        let store = Arc::new(MemoryStore::default());
        let metrics = Metrics::new().expect("metrics");
        let persona = Persona::parse(
            std::path::Path::new("mira.toml"),
            "name = \"Mira\"\ndescription = \"Keeps a lighthouse.\"\nfirst_mes = \"Hi {{user}}\"\n",
        )
        .expect("persona");
        let deps = SessionDeps {
            messenger: messenger.clone(),
            llm: llm.clone(),
            store: store.clone(),
            personas: Arc::new(PersonaCatalog::new(vec![persona])),
            prompts: PromptBuilder::new(
                crate::prompt::TokenCounter::new(),
                crate::prompt::TokenBudget {
                    context_tokens: 4000,
                    reply_tokens: 500,
                },
            ),
            metrics: metrics.clone(),
            supervisor: Arc::new(Supervisor::new(
                std::collections::HashMap::from([(
                    ActorKind::Session,
                    KindPolicy {
                        backoff: crate::resilience::backoff::BackoffSettings {
                            min_ms: 10,
                            max_ms: 50,
                            jitter: 0.0,
                            reset_after_ms: 1_000,
                        },
                        ..policy
                    },
                )]),
                metrics.clone(),
            )),
            settings,
            in_flight: AtomicUsize::new(0),
        };
        Harness {
            router: SessionRouter::start(1, deps),
            messenger,
            llm,
            store,
            metrics,
        }
    }

    #[actix_rt::test]
    async fn messages_of_one_user_are_answered_in_order_with_history() {
        let h = harness(SessionSettings::default(), Duration::from_millis(20));
        h.router.route(pick(1, "mira"));
        for index in 0..5 {
            h.router.route(text(1, &format!("m{index}")));
        }
        eventually("five replies", || h.messenger.texts_to(1).len() == 6).await;
        let texts = h.messenger.texts_to(1);
        assert_eq!(texts[0], "Hi User1");
        let replies: Vec<String> = (0..5).map(|i| format!("reply to: m{i}")).collect();
        assert_eq!(texts[1..], replies[..]);
        let requests = h.llm.requests.lock().expect("lock");
        let last = requests.last().expect("requests");
        assert!(last.messages[0].content.contains("Keeps a lighthouse."));
        assert!(
            last.messages.iter().any(|m| m.content == "reply to: m3"),
            "history carried"
        );
        // The LLM reported no usage: tokens are estimated with tiktoken and stored.
        let (prompt, completion) = h.store.token_usage(1, 1);
        assert!(prompt > 0 && completion > 0, "{prompt} {completion}");
        h.router.stop();
    }

    #[actix_rt::test]
    async fn a_panic_is_answered_and_other_sessions_on_the_arbiter_go_on() {
        let h = harness(SessionSettings::default(), Duration::from_millis(5));
        h.router.route(pick(1, "mira"));
        h.router.route(pick(2, "mira"));
        h.router.route(text(1, "PANIC"));
        h.router.route(text(2, "hello"));
        h.router.route(text(1, "still there?"));
        eventually("user 2 answered", || {
            h.messenger
                .texts_to(2)
                .contains(&"reply to: hello".to_owned())
        })
        .await;
        eventually("user 1 answered after the panic", || {
            h.messenger
                .texts_to(1)
                .contains(&"reply to: still there?".to_owned())
        })
        .await;
        let texts = h.messenger.texts_to(1);
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("Sorry, something went wrong")),
            "{texts:?}"
        );
        assert_eq!(h.metrics.session_panics_total.get(), 1);
        // The session restarted from storage and still knows its history.
        let requests = h.llm.requests.lock().expect("lock");
        let last = requests.last().expect("requests");
        assert!(last.messages.iter().any(|m| m.content == "PANIC"));
        h.router.stop();
    }

    #[actix_rt::test]
    async fn an_idle_session_is_passivated_and_resumes_from_storage() {
        let h = harness_with(
            SessionSettings::default(),
            EchoLlm::default(),
            KindPolicy {
                idle_timeout: Duration::from_millis(100),
                ..KindPolicy::default()
            },
        );
        h.router.route(pick(7, "mira"));
        h.router.route(text(7, "remember the red door"));
        eventually("reply", || h.messenger.texts_to(7).len() == 2).await;
        eventually("passivated", || h.metrics.sessions_active.get() == 0).await;
        h.router.route(text(7, "what did I say?"));
        eventually("second reply", || h.messenger.texts_to(7).len() == 3).await;
        let requests = h.llm.requests.lock().expect("lock");
        let last = requests.last().expect("requests");
        assert!(
            last.messages
                .iter()
                .any(|m| m.content == "remember the red door"),
            "history reloaded from storage"
        );
        assert_eq!(h.store.message_count(), 5);
        h.router.stop();
    }

    #[actix_rt::test]
    async fn a_full_queue_refuses_with_a_notice() {
        // The LLM answers only when the test lets it, so the queue is surely full.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let h = harness_with(
            SessionSettings::default(),
            EchoLlm {
                gate: Some(gate.clone()),
                ..EchoLlm::default()
            },
            KindPolicy {
                mailbox_capacity: 2,
                ..KindPolicy::default()
            },
        );
        h.router.route(pick(3, "mira"));
        eventually("greeting", || h.messenger.texts_to(3).len() == 1).await;
        for index in 0..6 {
            h.router.route(text(3, &format!("q{index}")));
        }
        let count = |prefix: &str| {
            let texts = h.messenger.texts_to(3);
            texts.iter().filter(|t| t.starts_with(prefix)).count()
        };
        // q0 is being answered, q1 and q2 wait, q3..q5 are refused.
        eventually("three notices", || count("I am still answering") == 3).await;
        gate.add_permits(3);
        eventually("all events finished", || h.router.in_flight() == 0).await;
        let replies: Vec<String> = h
            .messenger
            .texts_to(3)
            .into_iter()
            .filter(|t| t.starts_with("reply to"))
            .collect();
        assert_eq!(replies, ["reply to: q0", "reply to: q1", "reply to: q2"]);
        assert_eq!(count("I am still answering"), 3);
        h.router.stop();
    }

    #[actix_rt::test]
    async fn drop_oldest_makes_room_for_the_newest_message() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let h = harness_with(
            SessionSettings::default(),
            EchoLlm {
                gate: Some(gate.clone()),
                ..EchoLlm::default()
            },
            KindPolicy {
                mailbox_capacity: 1,
                overflow: OverflowPolicy::DropOldest,
                ..KindPolicy::default()
            },
        );
        h.router.route(pick(4, "mira"));
        eventually("greeting", || h.messenger.texts_to(4).len() == 1).await;
        for index in 0..3 {
            h.router.route(text(4, &format!("d{index}")));
        }
        // d0 is being answered; d1 waited and was dropped for d2.
        eventually("the drop notice", || {
            h.messenger
                .texts_to(4)
                .iter()
                .any(|t| t.starts_with("Too many messages at once: I skipped"))
        })
        .await;
        gate.add_permits(2);
        eventually("all events finished", || h.router.in_flight() == 0).await;
        let replies: Vec<String> = h
            .messenger
            .texts_to(4)
            .into_iter()
            .filter(|t| t.starts_with("reply to"))
            .collect();
        assert_eq!(replies, ["reply to: d0", "reply to: d2"]);
        h.router.stop();
    }
}
