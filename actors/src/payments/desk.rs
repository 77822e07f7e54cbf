//! The payment desk actor: one per process, on its own arbiter, handling one message at a
//! time (actix's `AtomicResponse`: the next message waits until the current one has been
//! stored and answered). Its durable state is in storage; in memory it keeps only who to
//! tell about changes, so a restart after a panic is simply going on after the backoff.
//!
//! It follows the supervision template ([`crate::supervision::guard`]): every message's work
//! runs in its [`Guard`]; on a crash whoever waits is answered (`Crashed`), the update stays
//! unhandled in the inbox (replayed on the next start: a payment is never dropped), and the
//! desk rests for the backoff before its next message. It reports `vitte_actors_live` and
//! `vitte_actor_mailbox_depth` for the `payments` kind; past `mailbox_capacity` it refuses
//! new pre-checkout queries (nothing is charged; the user tries again), never payments or
//! refunds.

use std::sync::Arc;

use actix::prelude::*;

use crate::domain::entitlement::Entitlement;
use crate::metrics::ErrorKind;
use crate::payments::messages::{
    Listen, PaymentReceived, PaymentRefunded, PaymentUpdate, PreCheckout, RefundByOperator,
    RefundError, RenewalError, SetBlocked, SetRenewal, SubscriptionChanged, Sweep,
};
use crate::payments::{DeskDeps, EntitlementListener, STARS, handlers};
use crate::ports::UserId;
use crate::supervision::{ActorKind, Guard};

/// The payment desk.
pub struct PaymentDesk {
    deps: Arc<DeskDeps>,
    guard: Arc<Guard>,
    listener: Option<Arc<dyn EntitlementListener>>,
}

impl PaymentDesk {
    /// Starts the desk on an arbiter of its own; returns the handle everyone talks to it by.
    pub fn launch(deps: DeskDeps) -> DeskHandle {
        let deps = Arc::new(deps);
        let arbiter = Arbiter::new().handle();
        let desk_deps = deps.clone();
        let address = PaymentDesk::start_in_arbiter(&arbiter, move |_| PaymentDesk {
            guard: Arc::new(Guard::new(
                ActorKind::Payments,
                desk_deps.supervisor.clone(),
            )),
            deps: desk_deps,
            listener: None,
        });
        DeskHandle { address, deps }
    }

    fn depth(&self, change: i64) {
        self.deps
            .metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Payments.as_str()])
            .add(change);
    }

    fn schedule_sweep(&self, ctx: &mut Context<Self>) {
        let wait = self.deps.clock.sleep(self.deps.sweep_every);
        ctx.spawn(wait.into_actor(self).map(|(), desk, ctx| {
            ctx.notify(Sweep);
            desk.schedule_sweep(ctx);
        }));
    }

    /// Runs `work` in the guard, one message at a time; tells the listener about a changed
    /// entitlement; after a panic, rests for the backoff and answers `crashed`.
    fn supervised<T, W, F>(&mut self, work: W, crashed: T) -> AtomicResponse<Self, T>
    where
        T: 'static,
        W: FnOnce(Arc<DeskDeps>) -> F,
        F: std::future::Future<Output = (T, Option<(UserId, Entitlement)>)> + 'static,
    {
        self.depth(-1);
        let guard = self.guard.clone();
        let listener = self.listener.clone();
        let future = work(self.deps.clone());
        AtomicResponse::new(Box::pin(
            async move {
                match guard.run(future).await {
                    Ok((answer, changed)) => {
                        if let (Some(listener), Some((user_id, entitlement))) = (listener, changed)
                        {
                            listener.changed(user_id, entitlement);
                        }
                        answer
                    }
                    Err(crash) => {
                        tokio::time::sleep(crash.restart_in).await;
                        crashed
                    }
                }
            }
            .into_actor(self),
        ))
    }
}

impl Actor for PaymentDesk {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Payments.as_str()])
            .inc();
        ctx.notify(Sweep);
        self.schedule_sweep(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.deps
            .metrics
            .actors_live
            .with_label_values(&[ActorKind::Payments.as_str()])
            .dec();
    }
}

impl Handler<PreCheckout> for PaymentDesk {
    type Result = AtomicResponse<Self, ()>;

    /// Checks the query and answers Telegram (see [`handlers::pre_checkout`]).
    fn handle(&mut self, query: PreCheckout, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move {
                handlers::pre_checkout(&deps, &query).await;
                ((), None)
            },
            (),
        )
    }
}

impl Handler<PaymentReceived> for PaymentDesk {
    type Result = AtomicResponse<Self, ()>;

    /// Records the payment once and grants what it pays for (see
    /// [`handlers::payment_received`]).
    fn handle(&mut self, payment: PaymentReceived, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move {
                let changed = handlers::payment_received(&deps, &payment).await;
                (
                    (),
                    changed.map(|entitlement| (payment.user_id, entitlement)),
                )
            },
            (),
        )
    }
}

impl Handler<PaymentRefunded> for PaymentDesk {
    type Result = AtomicResponse<Self, ()>;

    /// Takes back what the refunded payment granted, once (see
    /// [`handlers::payment_refunded`]).
    fn handle(&mut self, refund: PaymentRefunded, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move { ((), handlers::payment_refunded(&deps, &refund).await) },
            (),
        )
    }
}

impl Handler<SubscriptionChanged> for PaymentDesk {
    type Result = AtomicResponse<Self, ()>;

    /// Follows the subscription's renewal state (see [`handlers::subscription_changed`]).
    fn handle(&mut self, change: SubscriptionChanged, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move {
                let changed = handlers::subscription_changed(&deps, &change).await;
                ((), changed.map(|entitlement| (change.user_id, entitlement)))
            },
            (),
        )
    }
}

impl Handler<RefundByOperator> for PaymentDesk {
    type Result = AtomicResponse<Self, Result<Entitlement, RefundError>>;

    /// Refunds through Telegram, then takes the grant back (see
    /// [`handlers::refund_by_operator`]).
    fn handle(&mut self, request: RefundByOperator, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move {
                match handlers::refund_by_operator(&deps, &request.charge_id).await {
                    Ok((user_id, entitlement)) => {
                        (Ok(entitlement.clone()), Some((user_id, entitlement)))
                    }
                    Err(error) => (Err(error), None),
                }
            },
            Err(RefundError::Crashed),
        )
    }
}

impl Handler<SetRenewal> for PaymentDesk {
    type Result = AtomicResponse<Self, Result<Entitlement, RenewalError>>;

    /// Switches the subscription's renewal (see [`handlers::set_renewal`]).
    fn handle(&mut self, request: SetRenewal, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move {
                let outcome = handlers::set_renewal(&deps, &request).await;
                let changed = outcome
                    .as_ref()
                    .ok()
                    .map(|entitlement| (request.user_id, entitlement.clone()));
                (outcome, changed)
            },
            Err(RenewalError::Crashed),
        )
    }
}

impl Handler<SetBlocked> for PaymentDesk {
    type Result = AtomicResponse<Self, Result<(), String>>;

    /// Blocks or unblocks a user's purchases (see [`handlers::set_blocked`]).
    fn handle(&mut self, request: SetBlocked, _ctx: &mut Self::Context) -> Self::Result {
        self.supervised(
            |deps| async move { (handlers::set_blocked(&deps, &request).await, None) },
            Err("the payment desk crashed on it; see the logs".to_owned()),
        )
    }
}

impl Handler<Sweep> for PaymentDesk {
    type Result = AtomicResponse<Self, ()>;

    /// Records plans entering grace or expiring (see [`handlers::sweep`]).
    fn handle(&mut self, _sweep: Sweep, _ctx: &mut Self::Context) -> Self::Result {
        // Sent by the desk to itself: never counted into the mailbox depth.
        self.depth(1);
        self.supervised(
            |deps| async move {
                handlers::sweep(&deps).await;
                ((), None)
            },
            (),
        )
    }
}

impl Handler<Listen> for PaymentDesk {
    type Result = ();

    /// Remembers who to tell about changed entitlements.
    fn handle(&mut self, Listen(listener): Listen, _ctx: &mut Self::Context) {
        self.depth(-1);
        self.listener = Some(listener);
    }
}

/// How everyone talks to the desk: counts its mailbox, and bounds it for pre-checkouts.
#[derive(Clone)]
pub struct DeskHandle {
    address: Addr<PaymentDesk>,
    deps: Arc<DeskDeps>,
}

impl DeskHandle {
    fn queued(&self) -> i64 {
        self.deps
            .metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Payments.as_str()])
            .get()
    }

    fn enqueue(&self) {
        self.deps
            .metrics
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Payments.as_str()])
            .inc();
    }

    /// Hands a payment update from Telegram to the desk.
    pub fn deliver(&self, update: PaymentUpdate) {
        if let PaymentUpdate::PreCheckout(query) = &update {
            let capacity = self
                .deps
                .supervisor
                .policy(ActorKind::Payments)
                .mailbox_capacity;
            if usize::try_from(self.queued()).unwrap_or(0) >= capacity {
                self.refuse_busy(query.clone());
                return;
            }
        }
        self.enqueue();
        match update {
            PaymentUpdate::PreCheckout(query) => self.address.do_send(query),
            PaymentUpdate::Received(payment) => self.address.do_send(payment),
            PaymentUpdate::Refunded(refund) => self.address.do_send(refund),
            PaymentUpdate::Subscription(change) => self.address.do_send(change),
        }
    }

    /// A pre-checkout the desk has no room for: refused at once (nothing is charged).
    fn refuse_busy(&self, query: PreCheckout) {
        let deps = self.deps.clone();
        deps.metrics.count_error(ErrorKind::QueueFull);
        tracing::warn!(
            "the payment desk is full: a pre-checkout was refused; the user tries again"
        );
        actix::spawn(async move {
            let texts =
                crate::domain::texts::Lang::from_telegram(query.language_code.as_deref()).texts();
            deps.metrics.count_payment(STARS, "pre_checkout_refused");
            let answer = deps
                .commerce
                .api
                .answer_pre_checkout(&query.query_id, Some(texts.shop.refuse_unavailable))
                .await;
            if let Err(error) = answer {
                tracing::warn!(%error, "could not refuse a pre-checkout");
            }
            if let Some(update_id) = query.update_id {
                let audit = crate::ports::payments::AuditLine {
                    user_id: query.user_id,
                    charge_id: None,
                    event: "pre_checkout_refused".to_owned(),
                    source: crate::ports::payments::Source::Telegram,
                    detail: "the payment desk was full".to_owned(),
                    update_id: Some(update_id),
                };
                if let Err(error) = deps.commerce.store.audit(&audit).await {
                    tracing::warn!(%error, "could not record a refused pre-checkout");
                }
            }
        });
    }

    /// An operator's refund.
    pub async fn refund(&self, charge_id: &str) -> Result<Entitlement, RefundError> {
        self.enqueue();
        let request = RefundByOperator {
            charge_id: charge_id.to_owned(),
        };
        self.address
            .send(request)
            .await
            .unwrap_or(Err(RefundError::Crashed))
    }

    /// The user's renewal switch.
    pub async fn set_renewal(
        &self,
        user_id: UserId,
        renewing: bool,
    ) -> Result<Entitlement, RenewalError> {
        self.enqueue();
        self.address
            .send(SetRenewal { user_id, renewing })
            .await
            .unwrap_or(Err(RenewalError::Crashed))
    }

    /// An operator's block or unblock.
    pub async fn set_blocked(&self, user_id: UserId, blocked: bool) -> Result<(), String> {
        self.enqueue();
        self.address
            .send(SetBlocked { user_id, blocked })
            .await
            .unwrap_or_else(|error| Err(error.to_string()))
    }

    /// Who to tell about changed entitlements.
    pub fn listen(&self, listener: Arc<dyn EntitlementListener>) {
        self.enqueue();
        self.address.do_send(Listen(listener));
    }
}
