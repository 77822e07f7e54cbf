//! The outbox actor (one per process, on its own arbiter) and its handle.
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

use super::messages::{AtRest, Call, Reconfigure, Request, Sent, Submit};
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
    /// The Bot API client: where calls go when their turn comes.
    pub transport: Arc<dyn Messenger>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    /// Told when a user blocked the bot.
    pub blocked: Arc<dyn BlockedListener>,
    pub settings: OutboxSettings,
}

struct Queued {
    call: Call,
    /// Attempts answered with 429 so far.
    attempts: u32,
}

impl Queued {
    fn weight(&self) -> Weight {
        weight_of(&self.call.request)
    }
}

fn weight_of(request: &Request) -> Weight {
    match request {
        Request::Send { .. } => Weight::Message,
        Request::Edit {
            render: Render::Draft,
            ..
        } => Weight::Draft,
        Request::Edit { .. } => Weight::Message,
        Request::Delete { .. } | Request::Acknowledge { .. } => Weight::Free,
    }
}

/// The outbox; see the module documentation of [`crate::outbox`].
pub struct Outbox {
    transport: Arc<dyn Messenger>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    blocked: Arc<dyn BlockedListener>,
    guard: Arc<Guard>,
    pacer: Pacer,
    queues: [VecDeque<Queued>; 4],
    /// Chats with a call in flight (one at a time per chat, so their order holds).
    busy: HashSet<ChatId>,
    in_flight: usize,
    /// The moment a wake-up is set for.
    wake_at: Option<UnixMillis>,
    last_forget: UnixMillis,
    at_rest: Vec<AtRest>,
    pulse: watch::Sender<Pulse>,
}

/// How the rest of vitte reaches the outbox.
#[derive(Clone)]
pub struct OutboxHandle {
    address: Addr<Outbox>,
    pulse: watch::Receiver<Pulse>,
}

impl Outbox {
    /// Starts the outbox on an arbiter of its own.
    pub fn launch(deps: OutboxDeps) -> OutboxHandle {
        let (pulse, pulse_receiver) = watch::channel(Pulse::default());
        let arbiter = Arbiter::new().handle();
        let address = Outbox::start_in_arbiter(&arbiter, move |_| Outbox {
            guard: Arc::new(Guard::new(ActorKind::Outbox, deps.supervisor.clone())),
            transport: deps.transport,
            clock: deps.clock,
            metrics: deps.metrics,
            blocked: deps.blocked,
            pacer: Pacer::new(deps.settings),
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
        }
    }

    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Refreshes `outbox_queue_depth{priority}` and the pulse.
    fn report(&self, next_ready_at: Option<UnixMillis>) {
        for priority in Priority::ALL {
            self.metrics
                .outbox_queue_depth
                .with_label_values(&[priority.as_str()])
                .set(self.queues[priority.index()].len() as i64);
        }
        self.metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Outbox.as_str()])
            .set(self.queued() as i64);
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
                        let _ = shed.call.answer.send(Err(DeliveryError::Shed));
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
        let index = call.priority.index();
        self.queues[index].push_back(Queued { call, attempts: 0 });
        self.dispatch(ctx);
    }

    /// Sends every call whose turn has come, and sets a wake-up for the next one. Once
    /// nothing is in flight and nothing may go, the [`AtRest`] hooks run (they may move a
    /// manual clock), and the queues are looked at again.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        loop {
            let next_ready = self.send_ready(ctx);
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

    /// Starts the calls that may go now; returns when the next waiting one may.
    fn send_ready(&mut self, ctx: &mut Context<Self>) -> Option<UnixMillis> {
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
                let queued = &self.queues[priority.index()][index];
                let chat = queued.call.chat;
                if chat.is_some_and(|chat| self.busy.contains(&chat)) {
                    index += 1;
                    continue;
                }
                let ready = self.pacer.ready_at(chat, queued.weight(), now);
                if ready <= now {
                    if let Some(queued) = self.queues[priority.index()].remove(index) {
                        self.start(queued, now, ctx);
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

    /// Sends one call; its outcome comes back to [`Outbox::finished`].
    fn start(&mut self, queued: Queued, now: UnixMillis, ctx: &mut Context<Self>) {
        let chat = queued.call.chat;
        self.pacer.record(chat, queued.weight(), now);
        if let Some(chat) = chat {
            self.busy.insert(chat);
        }
        self.in_flight += 1;
        let transport = self.transport.clone();
        let guard = self.guard.clone();
        let request = queued.call.request.clone();
        let work = async move {
            guard
                .run(perform(transport.as_ref(), chat.unwrap_or(0), &request))
                .await
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, outbox, ctx| {
            let outcome = outcome.unwrap_or_else(|crash| {
                Err(DeliveryError::Failed(format!(
                    "the outbox crashed sending it: {}",
                    crash.message
                )))
            });
            outbox.finished(queued, outcome, ctx);
        }));
    }

    /// A call came back: answer its caller, or queue it again after a 429.
    fn finished(
        &mut self,
        mut queued: Queued,
        outcome: Result<Sent, DeliveryError>,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let chat = queued.call.chat;
        if let Some(chat) = chat {
            self.busy.remove(&chat);
        }
        let method = queued.call.request.method();
        match outcome {
            Err(DeliveryError::Throttled { retry_after }) => {
                self.metrics.telegram_retry_after_total.inc();
                let now = self.clock.now_millis();
                let everything =
                    self.pacer
                        .flood_wait(chat, now.saturating_add(millis(retry_after)), now);
                tracing::info!(
                    method,
                    ?retry_after,
                    everything,
                    "Telegram asks to slow down"
                );
                queued.attempts += 1;
                let settings = self.pacer.settings();
                let give_up = queued.call.request.is_draft()
                    || queued.attempts >= settings.max_attempts
                    || retry_after > settings.max_retry_after;
                if give_up {
                    let _ = queued
                        .call
                        .answer
                        .send(Err(DeliveryError::Throttled { retry_after }));
                } else {
                    let index = queued.call.priority.index();
                    self.queues[index].push_front(queued);
                }
            }
            Err(DeliveryError::Blocked) => {
                self.metrics.telegram_blocked_users_total.inc();
                if let Some(chat) = chat {
                    tracing::info!(method, "the user blocked the bot; their calls are dropped");
                    self.blocked.blocked(chat);
                    for queue in &mut self.queues {
                        let (dropped, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(queue)
                            .into_iter()
                            .partition(|waiting| waiting.call.chat == Some(chat));
                        *queue = kept;
                        for waiting in dropped {
                            let _ = waiting.call.answer.send(Err(DeliveryError::Blocked));
                        }
                    }
                }
                let _ = queued.call.answer.send(Err(DeliveryError::Blocked));
            }
            Err(DeliveryError::Failed(reason)) => {
                tracing::warn!(method, %reason, "Telegram refused a call; it is not retried");
                let _ = queued.call.answer.send(Err(DeliveryError::Failed(reason)));
            }
            outcome => {
                let _ = queued.call.answer.send(outcome);
            }
        }
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

impl OutboxHandle {
    /// Sends `request` to `chat` when its turn comes; returns its outcome.
    pub async fn call(
        &self,
        chat: Option<ChatId>,
        priority: Priority,
        request: Request,
    ) -> Result<Sent, DeliveryError> {
        let (answer, outcome) = oneshot::channel();
        self.address.do_send(Submit(Call {
            chat,
            priority,
            request,
            answer,
        }));
        outcome
            .await
            .unwrap_or_else(|_| Err(DeliveryError::Failed("the outbox stopped".into())))
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
