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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::conversation::handle_event;
use crate::event::{Command, Inbound, InboundKind, Sender};
use crate::metrics::Metrics;
use crate::persona::{Persona, PersonaCatalog, Story};
use crate::ports::{
    ChatId, DialogId, DialogModes, HistoryEntry, LanguageModel, Messenger, SessionStore,
    StoredDialog, StoredSession, UserId, UserPreferences, UserProfile,
};
use crate::prompt::{FixedPrompt, PromptBuilder, PromptContext};
use crate::resilience::backoff::BackoffState;
use crate::safety::SafetyPolicy;
use crate::supervision::{ActorKind, OverflowPolicy, Supervisor};
use crate::texts::{Lang, Texts};

/// Dialog slots per user.
pub const SLOT_COUNT: u8 = 3;

/// How sessions behave; from the `[session]` and `[streaming]` configuration sections. Idle
/// timeout, mailbox capacity and restart policy come from the supervisor's `session` policy
/// (reloadable).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Messages of history kept in memory (and loaded on activation) per dialog.
    pub history_limit: usize,
    /// At most one edit of a reply being streamed per this interval (per chat: a session
    /// streams one reply at a time).
    pub edit_interval: Duration,
    /// A draft is edited only when at least this many new characters arrived.
    pub min_edit_chars: usize,
    /// Every n-th persona message of a dialog carries a "Continue" button.
    pub continue_every: u32,
    /// A dialog resumed after this long opens with a greeting that recalls the story.
    pub welcome_back_after: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            history_limit: 200,
            edit_interval: Duration::from_secs(1),
            min_edit_chars: 20,
            continue_every: 7,
            welcome_back_after: Duration::from_secs(6 * 3600),
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
    pub safety: Arc<SafetyPolicy>,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub settings: SessionSettings,
    /// Events accepted by sessions and not finished yet (for draining at shutdown).
    pub in_flight: AtomicUsize,
}

/// The session's in-memory state. It is owned by the work in progress while an event is
/// handled, and by the actor in between.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) profile: Option<UserProfile>,
    pub(crate) preferences: UserPreferences,
    /// Slot n lives at index n - 1.
    pub(crate) slots: [Option<Dialog>; SLOT_COUNT as usize],
    pub(crate) active_slot: Option<u8>,
}

/// One slot's dialog: a persona playing a story.
#[derive(Debug)]
pub(crate) struct Dialog {
    pub(crate) id: DialogId,
    pub(crate) slot: u8,
    pub(crate) persona: Arc<Persona>,
    pub(crate) story: Story,
    pub(crate) modes: DialogModes,
    /// The fixed part of every prompt, built once (and again when the modes change).
    pub(crate) prompt: FixedPrompt,
    /// Oldest first; at most `history_limit` entries.
    pub(crate) history: VecDeque<HistoryEntry>,
    /// Unix milliseconds of the last message.
    pub(crate) last_active_at: i64,
    pub(crate) persona_messages: u32,
}

impl Dialog {
    /// Puts the reply being regenerated back as the dialog's last word (its replacement
    /// did not take its place).
    pub(crate) fn restore(&mut self, previous: HistoryEntry) {
        self.history.push_back(previous);
        self.persona_messages += 1;
    }

    /// Builds a dialog's in-memory state; `None` when its persona (file removed) is gone.
    pub(crate) fn new(deps: &SessionDeps, stored: StoredDialog, user_name: &str) -> Option<Dialog> {
        let persona = deps.personas.get(&stored.persona_id)?;
        // A story removed from the file (or a dialog from before stories) plays the first.
        let story = stored
            .story_id
            .as_deref()
            .and_then(|id| persona.story(id))
            .or_else(|| persona.stories.first())?
            .clone();
        let mut dialog = Dialog {
            id: stored.dialog_id,
            slot: stored.slot,
            prompt: FixedPrompt {
                system: String::new(),
                post: String::new(),
                tokens: 0,
            },
            persona,
            story,
            modes: stored.modes,
            history: stored.history.into(),
            last_active_at: stored.last_active_at,
            persona_messages: stored.persona_messages,
        };
        dialog.rebuild_prompt(&deps.prompts, user_name);
        Some(dialog)
    }

    /// Builds the fixed prompt again (after the modes changed).
    pub(crate) fn rebuild_prompt(&mut self, prompts: &PromptBuilder, user_name: &str) {
        self.prompt = prompts.fixed_prompt(&PromptContext {
            persona: &self.persona,
            story: &self.story,
            user_name,
            modes: self.modes,
            // The memory issue fills this hook.
            memory: "",
        });
    }
}

impl SessionState {
    fn from_stored(stored: Option<StoredSession>, deps: &SessionDeps) -> SessionState {
        let Some(stored) = stored else {
            return SessionState::default();
        };
        let mut state = SessionState {
            preferences: stored.preferences,
            active_slot: stored.active_slot,
            ..SessionState::default()
        };
        for dialog in stored.dialogs {
            let index = usize::from(dialog.slot).wrapping_sub(1);
            if index >= state.slots.len() {
                continue;
            }
            // A dialog whose persona file was removed cannot go on; the slot shows empty.
            state.slots[index] = Dialog::new(deps, dialog, &stored.profile.first_name);
        }
        state.profile = Some(stored.profile);
        state
    }

    /// The language the bot speaks to this user: the one chosen with /language, else the
    /// one Telegram reports.
    pub(crate) fn lang(&self, sender: &Sender) -> Lang {
        self.preferences
            .language
            .as_deref()
            .and_then(Lang::parse)
            .unwrap_or_else(|| Lang::from_telegram(sender.language_code.as_deref()))
    }

    pub(crate) fn slot(&self, slot: u8) -> Option<&Dialog> {
        self.slots
            .get(usize::from(slot).wrapping_sub(1))
            .and_then(Option::as_ref)
    }

    pub(crate) fn slot_mut(&mut self, slot: u8) -> Option<&mut Dialog> {
        self.slots
            .get_mut(usize::from(slot).wrapping_sub(1))
            .and_then(Option::as_mut)
    }

    /// The dialog messages go to.
    pub(crate) fn active(&mut self) -> Option<&mut Dialog> {
        let slot = self.active_slot?;
        self.slot_mut(slot)
    }

    /// Puts a dialog into its slot (replacing what was there) and makes it active.
    pub(crate) fn install(&mut self, dialog: Dialog) {
        let slot = dialog.slot;
        if let Some(place) = self.slots.get_mut(usize::from(slot).wrapping_sub(1)) {
            *place = Some(dialog);
            self.active_slot = Some(slot);
        }
    }
}

/// The reply being written for the event in progress, shared between the session actor and
/// its work so that /stop can cancel it without waiting in the queue.
#[derive(Debug, Default)]
pub(crate) struct Generation {
    pub(crate) cancel: CancellationToken,
    /// Set once the event started writing a reply (a /stop that came before saw nothing
    /// being written yet; the reply then stops at once).
    pub(crate) wrote_reply: AtomicBool,
    /// Set when the event's work is done.
    finished: AtomicBool,
    /// Set by whoever tells the user that a /stop found nothing to stop (only one does).
    stop_answered: AtomicBool,
}

impl Generation {
    /// Whether the user must be told that /stop found nothing: the work is done, was asked
    /// to stop, wrote no reply, and nobody has told them yet.
    fn stop_found_nothing(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
            && self.cancel.is_cancelled()
            && !self.wrote_reply.load(Ordering::SeqCst)
            && !self.stop_answered.swap(true, Ordering::SeqCst)
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
    /// The work in progress's reply, for /stop.
    generation: Option<Arc<Generation>>,
    /// The user's language as of the last finished event, for notices sent outside the work.
    lang: Option<Lang>,
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
            generation: None,
            lang: None,
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

    /// The user's texts for notices sent outside the work (the work itself knows better).
    fn texts_for(&self, sender: &Sender) -> &'static Texts {
        self.lang
            .unwrap_or_else(|| Lang::from_telegram(sender.language_code.as_deref()))
            .texts()
    }

    /// /stop does not wait in the queue: it cancels the reply being written at once (after
    /// checking that Telegram is not redelivering an old /stop). With nothing being
    /// handled, the user is told so.
    fn stop_generation(&mut self, event: &Inbound) {
        let deps = self.deps.clone();
        let generation = self.generation.clone();
        let texts = self.texts_for(&event.sender);
        let chat = event.sender.chat_id;
        let update_id = event.update_id;
        actix::spawn(async move {
            let fresh = match update_id {
                // If storage cannot tell, stopping is the safer guess.
                Some(update_id) => deps.store.claim_update(update_id).await.unwrap_or(true),
                None => true,
            };
            match (fresh, generation) {
                (false, _) => deps.metrics.duplicate_updates_total.inc(),
                // An event is being handled: if it writes a reply (now or later), the reply
                // stops; if it never does, the user is told when it is done.
                (true, Some(generation)) => {
                    generation.cancel.cancel();
                    // The work may have ended while the update was being claimed.
                    if generation.stop_found_nothing() {
                        crate::conversation::send(&deps, chat, texts.nothing_to_stop, None).await;
                    }
                }
                (true, None) => {
                    crate::conversation::send(&deps, chat, texts.nothing_to_stop, None).await;
                }
            }
            deps.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
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
                    let texts = session.texts_for(&event.sender);
                    refuse(&session.deps, &event, texts.storage_failed);
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
        let generation = Arc::new(Generation::default());
        self.generation = Some(generation.clone());
        let work = async move {
            let outcome = AssertUnwindSafe(handle_event(&deps, &mut state, event, &generation))
                .catch_unwind()
                .await;
            outcome.map(|()| state)
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, session, ctx| {
            session.deps.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(generation) = session.generation.take() {
                generation.finished.store(true, Ordering::SeqCst);
                if generation.stop_found_nothing() {
                    let texts = session.texts_for(&sender);
                    spawn_notice(&session.deps, sender.chat_id, texts.nothing_to_stop);
                }
            }
            match outcome {
                Ok(state) => {
                    session.lang = Some(state.lang(&sender));
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
        let message = crate::supervision::panic_message(panic);
        tracing::error!(user_id = self.user_id, panic = %message, "session panicked; restarting it from storage");
        self.deps.metrics.session_panics_total.inc();
        self.deps.metrics.count_error("panic");
        self.deps.supervisor.record_restart(ActorKind::Session);
        self.state = None;
        self.phase = Phase::Restarting;
        spawn_notice(
            &self.deps,
            sender.chat_id,
            self.texts_for(sender).internal_error,
        );
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
        if event.kind == InboundKind::Command(Command::Stop) {
            self.stop_generation(&event);
            return;
        }
        let policy = self.deps.supervisor.policy(ActorKind::Session);
        // One event in progress plus `mailbox_capacity` waiting behind it.
        let accepted = self.queue.len() + usize::from(self.phase == Phase::Handling);
        if accepted > policy.mailbox_capacity {
            self.deps.metrics.count_error("queue_full");
            match (policy.overflow, self.queue.is_empty()) {
                (OverflowPolicy::DropOldest, false) => {
                    if let Some(oldest) = self.pop_event() {
                        let texts = self.texts_for(&oldest.sender);
                        refuse(&self.deps, &oldest, texts.dropped_for_newer);
                    }
                }
                _ => {
                    let texts = self.texts_for(&event.sender);
                    refuse(&self.deps, &event, texts.queue_full);
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

/// Sends a short notice without waiting for it (used outside the ordered work).
fn spawn_notice(deps: &Arc<SessionDeps>, chat: ChatId, text: &'static str) {
    let deps = deps.clone();
    actix::spawn(async move {
        crate::conversation::send(&deps, chat, text, None).await;
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

    /// A harness whose LLM answers only as the test adds permits to the returned gate, so
    /// a reply is surely in progress while the test acts.
    fn gated(policy: KindPolicy) -> (Harness, Arc<tokio::sync::Semaphore>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let llm = EchoLlm {
            gate: Some(gate.clone()),
            ..EchoLlm::default()
        };
        (harness_with(SessionSettings::default(), llm, policy), gate)
    }

    fn harness_with(settings: SessionSettings, llm: EchoLlm, policy: KindPolicy) -> Harness {
        let messenger = Arc::new(RecordingMessenger::default());
        let llm = Arc::new(llm);
        let store = Arc::new(MemoryStore::default());
        let metrics = Metrics::new().expect("metrics");
        let safety = Arc::new(
            SafetyPolicy::parse("safety.toml", crate::safety::TEST_POLICY).expect("policy"),
        );
        let persona = Persona::parse(
            std::path::Path::new("mira.toml"),
            "name = \"Mira\"\ndescription = \"Keeps a lighthouse.\"\nfirst_mes = \"Hi\"\n\
             [[stories]]\nid = \"first\"\ntitle = \"First\"\npremise = \"A storm.\"\n\
             opening_message = \"Hi {{user}}\"\n",
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
                Arc::new(safety.prompt().clone()),
            ),
            safety,
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

    /// The persona's replies in a chat, as they read now.
    fn replies(h: &Harness, chat: ChatId) -> Vec<String> {
        h.messenger
            .texts_to(chat)
            .into_iter()
            .filter(|text| text.starts_with("reply to"))
            .collect()
    }

    #[actix_rt::test]
    async fn messages_of_one_user_are_answered_in_order_with_history() {
        let h = harness(SessionSettings::default(), Duration::from_millis(20));
        h.router.route(pick(1, "mira"));
        for index in 0..5 {
            h.router.route(text(1, &format!("m{index}")));
        }
        eventually("five replies", || replies(&h, 1).len() == 5).await;
        let texts = h.messenger.texts_to(1);
        assert_eq!(texts[0], "Dialog 1: Mira — First\n\nHi User1");
        let expected: Vec<String> = (0..5).map(|i| format!("reply to: m{i}")).collect();
        assert_eq!(texts[1..], expected[..]);
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
        eventually("reply", || replies(&h, 7).len() == 1).await;
        eventually("passivated", || h.metrics.sessions_active.get() == 0).await;
        h.router.route(text(7, "what did I say?"));
        eventually("second reply", || replies(&h, 7).len() == 2).await;
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
        let (h, gate) = gated(KindPolicy {
            mailbox_capacity: 2,
            ..KindPolicy::default()
        });
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
        assert_eq!(
            replies(&h, 3),
            ["reply to: q0", "reply to: q1", "reply to: q2"]
        );
        assert_eq!(count("I am still answering"), 3);
        h.router.stop();
    }

    #[actix_rt::test]
    async fn stop_skips_the_queue_and_cancels_only_the_reply_being_written() {
        let (h, gate) = gated(KindPolicy::default());
        h.router.route(pick(5, "mira"));
        eventually("opening", || h.messenger.texts_to(5).len() == 1).await;
        h.router.route(command(5, "/stop"));
        eventually("nothing to stop", || {
            h.messenger.texts_to(5).last().map(String::as_str)
                == Some("Nothing is being written right now.")
        })
        .await;
        h.router.route(text(5, "first"));
        h.router.route(text(5, "second"));
        eventually("the placeholder", || {
            h.messenger.texts_to(5).last().map(String::as_str) == Some("… typing")
        })
        .await;
        // "/stop" overtakes "second", which waits in the queue, and cancels "first".
        h.router.route(command(5, "/stop"));
        eventually("the second reply", || {
            h.messenger.texts_to(5).last().map(String::as_str) == Some("… typing")
                && h.messenger.texts_to(5).contains(&"(stopped)".to_owned())
        })
        .await;
        gate.add_permits(1);
        eventually("second answered", || replies(&h, 5) == ["reply to: second"]).await;
        let stored: Vec<(String, &str)> = h.store.messages().into_iter().skip(1).collect();
        assert_eq!(
            stored,
            [
                ("first".to_owned(), "complete"),
                ("second".to_owned(), "complete"),
                ("reply to: second".to_owned(), "complete"),
            ],
            "nothing stored for the stopped reply"
        );
        h.router.stop();
    }

    #[actix_rt::test]
    async fn drop_oldest_makes_room_for_the_newest_message() {
        let (h, gate) = gated(KindPolicy {
            mailbox_capacity: 1,
            overflow: OverflowPolicy::DropOldest,
            ..KindPolicy::default()
        });
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
        assert_eq!(replies(&h, 4), ["reply to: d0", "reply to: d2"]);
        h.router.stop();
    }
}
