//! The outbox actor (one per process, on its own arbiter) and its handle.
//!
//! The outbox decides *when* each call goes; the caller makes the call itself, on its own
//! thread, once the outbox lets it ([`Submit`] answered), and reports how it went
//! ([`Release`]). So Telegram's HTTP traffic is spread over the arbiters that asked for it,
//! while the limits, the priorities, the queues and what 429 and 403 mean are kept in one
//! place, one message at a time.
//!
//! It follows the supervision template ([`crate::supervision::guard`]): each call to the
//! transport runs in the outbox's [`Guard`]; a panic there fails that call (its caller is
//! told), is counted against the `outbox` kind's restart intensity, and the outbox goes on
//! with its queues, which the panic never touched.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use super::messages::{AtRest, Call, Reconfigure, Release, Released, Request, Sent, Submit};
use super::pacer::{Pacer, Weight};
use super::{BlockedListener, OutboxSettings, Priority, Pulse};
use crate::metrics::Metrics;
use crate::ports::clock::{UnixMillis, millis};
use crate::ports::{ChatId, Clock, DeliveryError, Keyboard, Messenger, Render};
use crate::supervision::{ActorKind, Guard, Supervisor};

/// How many waiting calls of one priority are looked at per pass for one whose chat may
/// go (the rest wait for the next pass).
const SCAN_LIMIT: usize = 512;
/// How often chats whose limits hold nothing back are forgotten.
const FORGET_EVERY_MS: i64 = 10_000;
/// The least wait a refused draft is told (never "wait 0 ms").
const LEAST_DRAFT_WAIT_MS: i64 = 50;

/// What the outbox needs.
pub struct OutboxDeps {
    /// The Bot API client: what callers call once the outbox lets them.
    pub transport: Arc<dyn Messenger>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    /// Told when a user blocked the bot.
    pub blocked: Arc<dyn BlockedListener>,
    pub settings: OutboxSettings,
}

fn weight_of(request: &Request) -> Weight {
    match request {
        Request::Send { .. } => Weight::Message,
        Request::Edit {
            render: Render::Draft,
            ..
        }
        | Request::Draft { .. } => Weight::Draft,
        Request::Edit { .. } => Weight::Message,
        Request::Delete { .. } | Request::Acknowledge { .. } => Weight::Free,
    }
}

/// A call waiting for its turn.
struct Waiting {
    chat: Option<ChatId>,
    weight: Weight,
    answer: oneshot::Sender<Result<(), DeliveryError>>,
}

/// The outbox; see the module documentation of [`crate::outbox`].
pub struct Outbox {
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    blocked: Arc<dyn BlockedListener>,
    pacer: Pacer,
    queues: [VecDeque<Waiting>; 4],
    /// Chats with a call in flight (one at a time per chat, so their order holds).
    busy: HashSet<ChatId>,
    in_flight: usize,
    /// The moment a wake-up is set for.
    wake_at: Option<UnixMillis>,
    last_forget: UnixMillis,
    at_rest: Vec<AtRest>,
    pulse: watch::Sender<Pulse>,
    /// `outbox_queue_depth{priority}` by priority, and the kind's mailbox depth: looked up
    /// once, set on every change.
    depth_gauges: [prometheus::IntGauge; 4],
    mailbox_gauge: prometheus::IntGauge,
}

/// How the rest of vitte reaches the outbox.
#[derive(Clone)]
pub struct OutboxHandle {
    address: Addr<Outbox>,
    pulse: watch::Receiver<Pulse>,
    transport: Arc<dyn Messenger>,
    guard: Arc<Guard>,
}

impl Outbox {
    /// Starts the outbox on an arbiter of its own.
    pub fn launch(deps: OutboxDeps) -> OutboxHandle {
        let (pulse, pulse_receiver) = watch::channel(Pulse::default());
        let guard = Arc::new(Guard::new(ActorKind::Outbox, deps.supervisor.clone()));
        let arbiter = Arbiter::new().handle();
        let (clock, metrics, blocked) = (deps.clock, deps.metrics, deps.blocked);
        let settings = deps.settings;
        let depth_gauges = Priority::ALL.map(|priority| {
            metrics
                .outbox_queue_depth
                .with_label_values(&[priority.as_str()])
        });
        let mailbox_gauge = metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Outbox.as_str()]);
        let address = Outbox::start_in_arbiter(&arbiter, move |_| Outbox {
            depth_gauges,
            mailbox_gauge,
            clock,
            metrics,
            blocked,
            pacer: Pacer::new(settings),
            queues: Default::default(),
            busy: HashSet::new(),
            in_flight: 0,
            wake_at: None,
            last_forget: 0,
            at_rest: Vec::new(),
            pulse,
        });
        OutboxHandle {
            address,
            pulse: pulse_receiver,
            transport: deps.transport,
            guard,
        }
    }

    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Refreshes `outbox_queue_depth{priority}` and the pulse.
    fn report(&self, next_ready_at: Option<UnixMillis>) {
        for (gauge, queue) in self.depth_gauges.iter().zip(&self.queues) {
            gauge.set(queue.len() as i64);
        }
        self.mailbox_gauge.set(self.queued() as i64);
        let pulse = Pulse {
            queued: self.queued(),
            in_flight: self.in_flight,
            next_ready_at,
        };
        self.pulse.send_if_modified(|current| {
            let changed = *current != pulse;
            *current = pulse;
            changed
        });
    }

    /// Queues a call, shedding a less important one when the queues are full.
    fn submit(&mut self, call: Call, ctx: &mut Context<Self>) {
        let now = self.clock.now_millis();
        let weight = weight_of(&call.request);
        if call.request.is_draft() {
            // A draft goes now or not at all: the caller shows a later one instead.
            let chat_busy = call.chat.is_some_and(|chat| self.busy.contains(&chat));
            let ready = self.pacer.ready_at(call.chat, Weight::Draft, now);
            if chat_busy || ready > now {
                let wait = (ready - now).max(LEAST_DRAFT_WAIT_MS);
                let retry_after = std::time::Duration::from_millis(wait.unsigned_abs());
                let _ = call
                    .answer
                    .send(Err(DeliveryError::Throttled { retry_after }));
                return;
            }
        }
        let capacity = self.pacer.settings().capacity.max(1);
        if self.queued() >= capacity {
            let lower = Priority::ALL
                .iter()
                .rev()
                .copied()
                .filter(|queue| *queue > call.priority)
                .find(|queue| !self.queues[queue.index()].is_empty());
            match lower {
                Some(lower) => {
                    if let Some(shed) = self.queues[lower.index()].pop_back() {
                        let _ = shed.answer.send(Err(DeliveryError::Shed));
                        self.metrics
                            .outbox_shed_total
                            .with_label_values(&[lower.as_str()])
                            .inc();
                    }
                }
                None if call.priority != Priority::Reply => {
                    self.metrics
                        .outbox_shed_total
                        .with_label_values(&[call.priority.as_str()])
                        .inc();
                    let _ = call.answer.send(Err(DeliveryError::Shed));
                    return;
                }
                // A reply is taken even past the capacity.
                None => {}
            }
        }
        let waiting = Waiting {
            chat: call.chat,
            weight,
            answer: call.answer,
        };
        let queue = &mut self.queues[call.priority.index()];
        if call.retry {
            queue.push_front(waiting);
        } else {
            queue.push_back(waiting);
        }
        self.dispatch(ctx);
    }

    /// Lets go every call whose turn has come, and sets a wake-up for the next one. Once
    /// nothing is in flight and nothing may go, the [`AtRest`] hooks run (they may move a
    /// manual clock), and the queues are looked at again.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        loop {
            let next_ready = self.let_ready_go(ctx);
            self.report(next_ready);
            if self.at_rest.is_empty() || self.in_flight > 0 {
                break;
            }
            let pulse = *self.pulse.borrow();
            for at_rest in std::mem::take(&mut self.at_rest) {
                (at_rest.hook)(&pulse);
                let _ = at_rest.done.send(());
            }
        }
    }

    /// Lets the calls that may go now go; returns when the next waiting one may.
    fn let_ready_go(&mut self, ctx: &mut Context<Self>) -> Option<UnixMillis> {
        let now = self.clock.now_millis();
        if now - self.last_forget >= FORGET_EVERY_MS {
            self.pacer.forget_idle(now);
            self.last_forget = now;
        }
        let mut next_ready: Option<UnixMillis> = None;
        for priority in Priority::ALL {
            let mut index = 0;
            let mut scanned = 0;
            while index < self.queues[priority.index()].len() && scanned < SCAN_LIMIT {
                scanned += 1;
                let waiting = &self.queues[priority.index()][index];
                let chat = waiting.chat;
                if chat.is_some_and(|chat| self.busy.contains(&chat)) {
                    index += 1;
                    continue;
                }
                if waiting.answer.is_closed() {
                    // Its caller gave up (a reply cancelled by /stop): nothing to send.
                    self.queues[priority.index()].remove(index);
                    continue;
                }
                let ready = self.pacer.ready_at(chat, waiting.weight, now);
                if ready <= now {
                    if let Some(waiting) = self.queues[priority.index()].remove(index) {
                        self.pacer.record(chat, waiting.weight, now);
                        if waiting.answer.send(Ok(())).is_ok() {
                            if let Some(chat) = chat {
                                self.busy.insert(chat);
                            }
                            self.in_flight += 1;
                        }
                    }
                    continue;
                }
                next_ready = Some(next_ready.map_or(ready, |next| next.min(ready)));
                index += 1;
            }
        }
        if let Some(at) = next_ready {
            if self
                .wake_at
                .is_none_or(|wake_at| at < wake_at || wake_at <= now)
            {
                self.wake_at = Some(at);
                let sleep = self.clock.sleep_until(at);
                ctx.spawn(sleep.into_actor(self).map(move |(), outbox, ctx| {
                    if outbox.wake_at == Some(at) {
                        outbox.wake_at = None;
                    }
                    outbox.dispatch(ctx);
                }));
            }
        }
        next_ready
    }

    /// A call the outbox let go is over: free its chat, and learn from a 429 or a 403.
    /// Returns whether its caller should ask again.
    fn release(&mut self, release: Release, ctx: &mut Context<Self>) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        let chat = release.chat;
        if let Some(chat) = chat {
            self.busy.remove(&chat);
        }
        let mut again = false;
        match release.outcome {
            Released::Done => {}
            Released::Throttled(retry_after) => {
                self.metrics.telegram_retry_after_total.inc();
                let now = self.clock.now_millis();
                let everything =
                    self.pacer
                        .flood_wait(chat, now.saturating_add(millis(retry_after)), now);
                tracing::info!(?retry_after, everything, "Telegram asks to slow down");
                let settings = self.pacer.settings();
                again = !release.draft
                    && release.attempts < settings.max_attempts
                    && retry_after <= settings.max_retry_after;
            }
            Released::Blocked => {
                self.metrics.telegram_blocked_users_total.inc();
                if let Some(chat) = chat {
                    tracing::info!("the user blocked the bot; their waiting calls are dropped");
                    self.blocked.blocked(chat);
                    for queue in &mut self.queues {
                        let (dropped, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(queue)
                            .into_iter()
                            .partition(|waiting| waiting.chat == Some(chat));
                        *queue = kept;
                        for waiting in dropped {
                            let _ = waiting.answer.send(Err(DeliveryError::Blocked));
                        }
                    }
                }
            }
            Released::Refused { method, reason } => {
                tracing::warn!(method, %reason, "Telegram refused a call; it is not retried");
            }
        }
        self.dispatch(ctx);
        again
    }
}

impl Actor for Outbox {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.metrics
            .actors_live
            .with_label_values(&[ActorKind::Outbox.as_str()])
            .inc();
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.metrics
            .actors_live
            .with_label_values(&[ActorKind::Outbox.as_str()])
            .dec();
    }
}

impl Handler<Submit> for Outbox {
    type Result = ();

    /// Queues a call by its priority (see [`Outbox::submit`]).
    fn handle(&mut self, Submit(call): Submit, ctx: &mut Self::Context) {
        self.submit(call, ctx);
    }
}

impl Handler<Release> for Outbox {
    type Result = bool;

    /// Frees the call's chat and learns from its outcome (see [`Outbox::release`]).
    fn handle(&mut self, release: Release, ctx: &mut Self::Context) -> bool {
        self.release(release, ctx)
    }
}

impl Handler<AtRest> for Outbox {
    type Result = ();

    /// Runs the hook at the first moment nothing is in flight.
    fn handle(&mut self, at_rest: AtRest, ctx: &mut Self::Context) {
        self.at_rest.push(at_rest);
        self.dispatch(ctx);
    }
}

impl Handler<Reconfigure> for Outbox {
    type Result = ();

    /// Takes new limits.
    fn handle(&mut self, Reconfigure(settings): Reconfigure, ctx: &mut Self::Context) {
        self.pacer.reconfigure(settings);
        self.dispatch(ctx);
    }
}

/// One call to the transport.
async fn perform(
    transport: &dyn Messenger,
    chat: ChatId,
    request: &Request,
) -> Result<Sent, DeliveryError> {
    match request {
        Request::Send { text, keyboard } => transport
            .send_text(chat, text, keyboard.as_ref())
            .await
            .map(Sent::Message),
        Request::Edit {
            message_id,
            text,
            keyboard,
            render,
        } => transport
            .edit_text(chat, *message_id, text, keyboard.as_ref(), *render)
            .await
            .map(|()| Sent::Done),
        Request::Draft { draft_id, text } => transport
            .send_draft(chat, *draft_id, text)
            .await
            .map(|()| Sent::Done),
        Request::Delete { message_id } => transport
            .delete_message(chat, *message_id)
            .await
            .map(|()| Sent::Done),
        Request::Acknowledge { callback_id } => transport
            .acknowledge_button(callback_id)
            .await
            .map(|()| Sent::Done),
    }
}

/// Tells the outbox a call it let go is over, even if the caller's future is dropped
/// meanwhile (a reply cancelled by /stop): its chat must not stay busy.
struct InFlight<'a> {
    outbox: &'a OutboxHandle,
    chat: Option<ChatId>,
    released: bool,
}

impl InFlight<'_> {
    async fn release(mut self, outcome: Released, attempts: u32, draft: bool) -> bool {
        self.released = true;
        let release = Release {
            chat: self.chat,
            outcome,
            attempts,
            draft,
        };
        self.outbox.address.send(release).await.unwrap_or(false)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.outbox.address.do_send(Release {
                chat: self.chat,
                outcome: Released::Done,
                attempts: 0,
                draft: false,
            });
        }
    }
}

/// A call waiting for the outbox's answer. Should its caller give up right as the outbox
/// lets it go (the answer sent, not yet read), the chat is released: it must not stay busy.
struct AwaitingTurn<'a> {
    outbox: &'a OutboxHandle,
    chat: Option<ChatId>,
    turn: Option<oneshot::Receiver<Result<(), DeliveryError>>>,
}

impl AwaitingTurn<'_> {
    async fn wait(&mut self) -> Result<(), DeliveryError> {
        let answer = match self.turn.as_mut() {
            Some(turn) => turn.await,
            None => return Err(DeliveryError::Failed("asked twice".into())),
        };
        self.turn = None;
        answer.unwrap_or_else(|_| Err(DeliveryError::Failed("the outbox stopped".into())))
    }
}

impl Drop for AwaitingTurn<'_> {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            if let Ok(Ok(())) = turn.try_recv() {
                self.outbox.address.do_send(Release {
                    chat: self.chat,
                    outcome: Released::Done,
                    attempts: 0,
                    draft: false,
                });
            }
        }
    }
}

impl OutboxHandle {
    /// Sends `request` to `chat` when its turn comes; returns its outcome. A 429 is waited
    /// out (the chat, or everything, paused meanwhile) and the call asked for again, up to
    /// the outbox's attempts; a draft is never asked for again.
    pub async fn call(
        &self,
        chat: Option<ChatId>,
        priority: Priority,
        request: Request,
    ) -> Result<Sent, DeliveryError> {
        let draft = request.is_draft();
        let method = request.method();
        let mut attempts = 0;
        loop {
            let (answer, turn) = oneshot::channel();
            self.address.do_send(Submit(Call {
                chat,
                priority,
                request: request.clone(),
                retry: attempts > 0,
                answer,
            }));
            let mut turn = AwaitingTurn {
                outbox: self,
                chat,
                turn: Some(turn),
            };
            turn.wait().await?;
            let in_flight = InFlight {
                outbox: self,
                chat,
                released: false,
            };
            let outcome = self
                .guard
                .run(perform(
                    self.transport.as_ref(),
                    chat.unwrap_or(0),
                    &request,
                ))
                .await
                .unwrap_or_else(|crash| {
                    Err(DeliveryError::Failed(format!(
                        "the outbox crashed sending it: {}",
                        crash.message
                    )))
                });
            let released = match &outcome {
                Err(DeliveryError::Throttled { retry_after }) => {
                    attempts += 1;
                    Released::Throttled(*retry_after)
                }
                Err(DeliveryError::Blocked) => Released::Blocked,
                Err(DeliveryError::Failed(reason)) => Released::Refused {
                    method,
                    reason: reason.clone(),
                },
                _ => Released::Done,
            };
            let again = in_flight.release(released, attempts, draft).await;
            if !again {
                return outcome;
            }
        }
    }

    /// A `Messenger` whose sends and final edits go at `priority` (drafts always go as
    /// [`Priority::Stream`]).
    pub fn messenger(&self, priority: Priority) -> Arc<dyn Messenger> {
        Arc::new(OutboxMessenger {
            outbox: self.clone(),
            priority,
        })
    }

    /// The outbox's state, as it changes.
    pub fn pulse(&self) -> watch::Receiver<Pulse> {
        self.pulse.clone()
    }

    /// Runs `hook` once nothing is in flight, before anything else goes (see [`AtRest`]).
    pub async fn at_rest(&self, hook: impl FnOnce(&Pulse) + Send + 'static) {
        let (done, ran) = oneshot::channel();
        self.address.do_send(AtRest {
            hook: Box::new(hook),
            done,
        });
        let _ = ran.await;
    }

    /// New limits, from a live reload.
    pub fn reconfigure(&self, settings: OutboxSettings) {
        self.address.do_send(Reconfigure(settings));
    }
}

/// The `Messenger` port through the outbox, at one priority.
pub struct OutboxMessenger {
    outbox: OutboxHandle,
    priority: Priority,
}

#[async_trait]
impl Messenger for OutboxMessenger {
    async fn send_text(
        &self,
        chat: ChatId,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        let request = Request::Send {
            text: text.to_owned(),
            keyboard: keyboard.cloned(),
        };
        match self.outbox.call(Some(chat), self.priority, request).await? {
            Sent::Message(id) => Ok(id),
            Sent::Done => Err(DeliveryError::Failed("no message id came back".into())),
        }
    }

    async fn edit_text(
        &self,
        chat: ChatId,
        message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        render: Render,
    ) -> Result<(), DeliveryError> {
        let priority = match render {
            Render::Draft => Priority::Stream,
            Render::Final => self.priority,
        };
        let request = Request::Edit {
            message_id,
            text: text.to_owned(),
            keyboard: keyboard.cloned(),
            render,
        };
        self.outbox
            .call(Some(chat), priority, request)
            .await
            .map(|_| ())
    }

    /// Drafts go as [`Priority::Stream`], in the chat's budget like the edits of a reply.
    async fn send_draft(
        &self,
        chat: ChatId,
        draft_id: i64,
        text: &str,
    ) -> Result<(), DeliveryError> {
        let request = Request::Draft {
            draft_id,
            text: text.to_owned(),
        };
        self.outbox
            .call(Some(chat), Priority::Stream, request)
            .await
            .map(|_| ())
    }

    async fn delete_message(&self, chat: ChatId, message_id: i64) -> Result<(), DeliveryError> {
        self.outbox
            .call(Some(chat), self.priority, Request::Delete { message_id })
            .await
            .map(|_| ())
    }

    async fn acknowledge_button(&self, callback_id: &str) -> Result<(), DeliveryError> {
        let request = Request::Acknowledge {
            callback_id: callback_id.to_owned(),
        };
        self.outbox
            .call(None, self.priority, request)
            .await
            .map(|_| ())
    }
}
