//! The session actor: one per Telegram user, a virtual actor in the Orleans sense.
//!
//! Nobody creates sessions explicitly: the [router](super::router) activates one on a user's
//! first event and passivates it after the `session` policy's idle timeout without events (on
//! the injected clock). Its state is loaded from storage on activation and every change is
//! written through, so passivation (or a crash) loses nothing.
//!
//! Events are handled strictly one at a time in arrival order: they wait in a bounded queue
//! while the previous one is being answered. The work for one event runs under the session's
//! [`Guard`] as a future that *owns* the session state; if it panics the guard catches, counts
//! and logs it, the user is told, and the state is thrown away and reloaded from storage
//! after the kind's backoff. Other sessions on the same arbiter never notice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;

use crate::domain::entitlement::{Entitlement, day_start, local_day};
use crate::domain::event::{ApiOutcome, Command, Inbound, InboundKind, Sender};
use crate::domain::privacy::user_ref;
use crate::domain::texts::{Lang, Texts};
use crate::memory::MemoryNews;
use crate::metrics::ErrorKind;
use crate::ports::events::record_event;
use crate::ports::{ChatId, EventKind, LoggedEvent, Severity, UserId};
use crate::session::delivery::{finish_update, send};
use crate::session::handlers::{handle_event, recover_replies};
use crate::session::memory::extract_on_idle;
use crate::session::messages::{
    Deliver, EntitlementChanged, MemoryChanged, Passivate, SessionIdle,
};
use crate::session::state::{Generation, Recovery, SessionDeps, SessionState, Usage};
use crate::supervision::{ActorKind, Crash, Guard, OverflowPolicy};
use tracing::Instrument;

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
    /// What the next recovery does (see [`Recovery`]).
    recovery: Recovery,
    idle_timer: Option<SpawnHandle>,
    /// Runs each event's work under supervision (and remembers this session's crashes).
    guard: Arc<Guard>,
    /// An entitlement the payment desk sent while the work owned the state: applied when
    /// the state comes back.
    pending_entitlement: Option<Entitlement>,
    /// Memory news the keeper sent while the work owned the state: applied when the state
    /// comes back.
    pending_memory: Vec<MemoryNews>,
}

impl SessionActor {
    pub fn new(user_id: UserId, deps: Arc<SessionDeps>, shard: Recipient<SessionIdle>) -> Self {
        SessionActor {
            user_id,
            shard,
            phase: Phase::Unloaded,
            state: None,
            queue: VecDeque::new(),
            generation: None,
            lang: None,
            events_received: 0,
            recovery: Recovery::AfterRestart,
            idle_timer: None,
            guard: Arc::new(Guard::new(ActorKind::Session, deps.supervisor.clone())),
            deps,
            pending_entitlement: None,
            pending_memory: Vec::new(),
        }
    }

    /// The state is back (loaded, or returned by finished work): the session is ready, with
    /// any entitlement that arrived meanwhile applied.
    fn settle(&mut self, mut state: SessionState) {
        if let Some(entitlement) = self.pending_entitlement.take() {
            state.apply_entitlement(entitlement);
        }
        for news in self.pending_memory.drain(..) {
            state.apply_memory_news(news);
        }
        self.state = Some(state);
        self.phase = Phase::Ready;
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

    /// /stop does not wait in the queue: it cancels the reply being written at once. With
    /// nothing being handled, the user is told so. (A redelivered /stop never gets here: the
    /// ingress turns redeliveries away.)
    fn stop_generation(&mut self, event: &Inbound) {
        let deps = self.deps.clone();
        let generation = self.generation.clone();
        let texts = self.texts_for(&event.sender);
        let chat = event.sender.chat_id;
        let update_id = event.update_id;
        actix::spawn(async move {
            match generation {
                // An event is being handled: if it writes a reply (now or later), the reply
                // stops; if it never does, the user is told when it is done.
                Some(generation) => {
                    generation.cancel.cancel();
                    // The work may have ended meanwhile.
                    if generation.stop_found_nothing() {
                        send(&deps, chat, texts.nothing_to_stop, None).await;
                    }
                }
                None => {
                    send(&deps, chat, texts.nothing_to_stop, None).await;
                }
            }
            finish_update(&deps, update_id).await;
            deps.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Telegram's stop button on a draft does not wait in the queue either: it stops the
    /// reply that draft shows, at once. A stop for a draft that is finished or unknown (a
    /// late press, a draft of an earlier run) is ignored without a word.
    fn stop_draft(&mut self, event: &Inbound, draft_id: i64) {
        let stopped = self
            .generation
            .as_ref()
            .is_some_and(|generation| generation.stop_draft(draft_id));
        if stopped {
            tracing::info!("the user stopped a reply with Telegram's stop button");
        } else {
            tracing::debug!(draft_id, "a stop for a draft no reply shows: ignored");
        }
        let deps = self.deps.clone();
        let update_id = event.update_id;
        actix::spawn(async move {
            finish_update(&deps, update_id).await;
            deps.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn pop_event(&mut self) -> Option<Inbound> {
        let event = self.queue.pop_front()?;
        self.set_mailbox_depth(-1);
        Some(event)
    }

    /// Starts the next piece of work if none is running: the load from storage first, then
    /// the replies a crash left unfinished, then queued events in order; with nothing to
    /// do, arms the idle timer.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Loading | Phase::Handling | Phase::Restarting => {}
            Phase::Unloaded => self.start_load(ctx),
            Phase::Ready if self.recovery_due() => self.start_recovery(ctx),
            Phase::Ready => match self.pop_event() {
                Some(event) => self.start_event(event, ctx),
                None => self.arm_idle_timer(ctx),
            },
        }
    }

    /// Whether the loaded state has replies to finish, or a crash to apologise for.
    fn recovery_due(&self) -> bool {
        let unfinished = self
            .state
            .as_ref()
            .is_some_and(|state| !state.unfinished.is_empty());
        unfinished || matches!(self.recovery, Recovery::AfterCrash { .. })
    }

    /// Finishes the replies a crash left unfinished (see [`recover_replies`]) before any
    /// queued event; after a panic of this session, apologises instead.
    fn start_recovery(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Handling;
        if let Some(timer) = self.idle_timer.take() {
            ctx.cancel_future(timer);
        }
        let recovery = std::mem::replace(&mut self.recovery, Recovery::AfterRestart);
        let deps = self.deps.clone();
        deps.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state.take().unwrap_or_default();
        let generation = Arc::new(Generation::default());
        self.generation = Some(generation.clone());
        let guard = self.guard.clone();
        let span = tracing::info_span!("session", user = %user_ref(self.user_id));
        let work = async move {
            let outcome = guard
                .run(recover_replies(&deps, &mut state, &generation, recovery))
                .instrument(span)
                .await;
            outcome.map(|()| state)
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, session, ctx| {
            session.deps.in_flight.fetch_sub(1, Ordering::SeqCst);
            session.generation = None;
            match outcome {
                Ok(state) => session.settle(state),
                // Recovery after a crash writes no reply: it cannot crash the same way
                // twice. Whatever it was, the next load gives up on what is unfinished.
                Err(crash) => session.restart_after(&crash, None, ctx),
            }
            session.pump(ctx);
        }));
    }

    fn arm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.idle_timer.take() {
            ctx.cancel_future(timer);
        }
        let idle_timeout = self.deps.supervisor.policy(ActorKind::Session).idle_timeout;
        let idle = self.deps.clock.sleep(idle_timeout).into_actor(self);
        self.idle_timer = Some(ctx.spawn(idle.map(|(), session, _ctx| {
            session.idle_timer = None;
            session.shard.do_send(SessionIdle {
                user_id: session.user_id,
                events_received: session.events_received,
            });
        })));
    }

    fn start_load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        let deps = self.deps.clone();
        let user_id = self.user_id;
        let load = async move {
            let stored = deps
                .store
                .load_session(user_id, deps.settings.history_limit)
                .await?;
            let mut state = SessionState::from_stored(stored, &deps.personas);
            // What the user bought and wrote today: then no message needs a database round
            // trip for its limit.
            let payments = &deps.commerce.store;
            state.apply_entitlement(payments.entitlement(user_id).await?);
            let (now, zone) = (deps.clock.now_millis(), deps.commerce.limits.zone);
            let replies = payments
                .replies_since(user_id, day_start(now, zone))
                .await?;
            state.usage = Usage {
                day: local_day(now, zone),
                replies,
            };
            Ok::<_, crate::ports::StoreError>(state)
        };
        ctx.spawn(load.into_actor(self).map(|loaded, session, ctx| match loaded {
            Ok(state) => {
                session.settle(state);
                session.pump(ctx);
            }
            Err(error) => {
                // Without its state the session cannot answer: tell everyone waiting, and
                // load again on the next event (or passivate if none comes).
                tracing::error!(user = %user_ref(session.user_id), %error, "could not load session");
                session.deps.metrics.count_error(ErrorKind::Storage);
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
        let update_id = event.update_id;
        let api = event.api.clone();
        let generation = Arc::new(Generation::default());
        self.generation = Some(generation.clone());
        let guard = self.guard.clone();
        // Every line logged while handling it names the user by reference, never by id.
        let span = tracing::info_span!("session", user = %user_ref(self.user_id));
        let work = async move {
            let outcome = guard
                .run(handle_event(&deps, &mut state, event, &generation))
                .instrument(span)
                .await;
            if let Some(api) = api {
                api.end(match outcome {
                    Ok(()) => ApiOutcome::Answered,
                    Err(_) => ApiOutcome::Failed,
                });
            }
            outcome.map(|()| state)
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, session, ctx| {
            session.deps.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(generation) = session.generation.take() {
                generation.finish();
                if generation.stop_found_nothing() {
                    let texts = session.texts_for(&sender);
                    spawn_notice(&session.deps, sender.chat_id, texts.nothing_to_stop);
                }
            }
            match outcome {
                Ok(state) => {
                    session.lang = Some(state.lang(&sender));
                    session.settle(state);
                }
                Err(crash) => {
                    // The user is told (by the restarted session): never replayed later.
                    let deps = session.deps.clone();
                    actix::spawn(async move { finish_update(&deps, update_id).await });
                    session.restart_after(&crash, Some(&sender), ctx);
                }
            }
            session.pump(ctx);
        }));
    }

    /// The work for one event (of `sender`) panicked (the guard has logged and counted it):
    /// restart the session from storage (its in-memory state may be half-updated) after the
    /// guard's backoff. The reply it was writing is not tried again (the same panic could
    /// follow): the restarted session shows the apology where that reply was, with "Retry".
    fn restart_after(&mut self, crash: &Crash, sender: Option<&Sender>, ctx: &mut Context<Self>) {
        let event = LoggedEvent {
            at: self.deps.clock.now_millis(),
            severity: Severity::Error,
            kind: EventKind::Error,
            user_id: Some(self.user_id),
            detail: format!(
                "a session crashed and restarts from storage: {}",
                crash.message
            ),
        };
        let deps = self.deps.clone();
        actix::spawn(async move { record_event(deps.events.as_ref(), event).await });
        tracing::warn!(user = %user_ref(self.user_id), restart_in = ?crash.restart_in, "session restarts from storage");
        self.deps.metrics.session_panics_total.inc();
        self.state = None;
        self.phase = Phase::Restarting;
        let lang = sender.map(|sender| self.texts_for(sender).internal_error);
        self.recovery = Recovery::AfterCrash {
            apology_to: sender.map(|sender| sender.chat_id).zip(lang),
        };
        ctx.run_later(crash.restart_in, |session, ctx| {
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
        if let InboundKind::DraftStopped { draft_id } = event.kind {
            self.stop_draft(&event, draft_id);
            return;
        }
        let policy = self.deps.supervisor.policy(ActorKind::Session);
        // One event in progress plus `mailbox_capacity` waiting behind it.
        let accepted = self.queue.len() + usize::from(self.phase == Phase::Handling);
        if accepted > policy.mailbox_capacity {
            self.deps.metrics.count_error(ErrorKind::QueueFull);
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

impl Handler<EntitlementChanged> for SessionActor {
    type Result = ();

    /// Takes the user's new entitlement: at once when the state is here, else when the work
    /// in progress (or the load) gives it back.
    fn handle(
        &mut self,
        EntitlementChanged(entitlement): EntitlementChanged,
        _ctx: &mut Self::Context,
    ) {
        match self.state.as_mut() {
            Some(state) => state.apply_entitlement(entitlement),
            None => self.pending_entitlement = Some(entitlement),
        }
    }
}

impl Handler<MemoryChanged> for SessionActor {
    type Result = ();

    /// Takes memory news: at once when the state is here, else when the work in progress
    /// (or the load) gives it back.
    fn handle(&mut self, MemoryChanged(news): MemoryChanged, _ctx: &mut Self::Context) {
        match self.state.as_mut() {
            Some(state) => state.apply_memory_news(news),
            None => self.pending_memory.push(news),
        }
    }
}

impl Handler<Passivate> for SessionActor {
    type Result = ();

    /// Stops the session; its state is already in storage. Its dialogs have gone idle: what
    /// they said since the last extraction goes to the memory keeper first.
    fn handle(&mut self, _msg: Passivate, ctx: &mut Self::Context) {
        if let Some(state) = self.state.as_mut() {
            extract_on_idle(&self.deps, state, self.user_id);
            // The user was here: active again if they had blocked the bot, with their recaps
            // and the reminder of their silence planned from their last message, now final.
            // (Done once per visit, not on activation: a busy bot activates thousands of
            // sessions a minute, and this is a few writes each.)
            self.deps.notifications.notifier.user_seen(self.user_id);
        }
        ctx.stop();
    }
}

/// Answers an event that will not be handled with `notice`, acknowledging its button, and
/// counts it as finished.
/// (The user is asked to send it again: its update is done with, never replayed.)
fn refuse(deps: &Arc<SessionDeps>, event: &Inbound, notice: &'static str) {
    if let Some(api) = &event.api {
        api.end(ApiOutcome::Busy);
    }
    // Operators see every message vitte did not handle (counted by the caller).
    tracing::warn!(
        update_id = ?event.update_id,
        notice,
        "an event was refused; the user is asked to send it again"
    );
    if let InboundKind::Button { callback_id, .. } = &event.kind {
        spawn_acknowledge(deps, callback_id.clone());
    }
    let (owned, chat, update_id) = (deps.clone(), event.sender.chat_id, event.update_id);
    actix::spawn(async move {
        send(&owned, chat, notice, None).await;
        finish_update(&owned, update_id).await;
    });
    deps.in_flight.fetch_sub(1, Ordering::SeqCst);
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
