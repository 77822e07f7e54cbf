//! The payment desk: Telegram Stars purchases, subscriptions and refunds, each a persisted
//! state machine, and the entitlements they lead to.
//!
//! ```text
//!  ingress ── PreCheckout / PaymentReceived / PaymentRefunded / SubscriptionChanged ──┐
//!  /admin  ── RefundByOperator / SetBlocked ──────────────────────────────────────────┤
//!  session ── SetRenewal (from /status) ──────────────────────────────────────────────┤
//!  its own clock ── Sweep (plans entering grace, expiring) ───────────────────────────┤
//!                                                                                      ▼
//!                                             PaymentDesk (one actor, one message at a time)
//!                                                │ EntitlementListener::changed
//!                                                ▼
//!                                         the user's session (if live), which holds the
//!                                         entitlement and checks it before every LLM call
//! ```
//!
//! A purchase moves `invoice sent` → `pre_checkout_accepted` (or refused, with a reason the
//! user reads) → `paid` (exactly once per `telegram_payment_charge_id`: a unique key, not a
//! check) → possibly `refunded` (once). A plan moves `active` → `grace` → `expired`, computed
//! from stored periods and the injected clock; the sweep records each transition.
//!
//! Files: [`desk`] the actor (it follows the supervision template of
//! [`crate::supervision::guard`]), [`messages`] what it is sent, [`handlers`] what it does,
//! [`payload`] the signed invoice payloads, `notices.rs` what users are told.

pub mod desk;
pub mod handlers;
pub mod messages;
mod notices;
pub mod payload;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::ports::{Clock, Messenger};
use crate::supervision::Supervisor;

use crate::domain::catalogue::Catalogue;
use crate::domain::entitlement::{Entitlement, Limits};
use crate::ports::UserId;
use crate::ports::payments::{PaymentStore, PaymentsApi};
pub use desk::{DeskHandle, PaymentDesk};
pub use payload::{InvoicePayload, PayloadSigner};

/// Told by the desk when a user's entitlement changed (the session router: the user's live
/// session takes it at once; a passive one loads it on activation).
pub trait EntitlementListener: Send + Sync + 'static {
    fn changed(&self, user_id: UserId, entitlement: Entitlement);
}

/// What sessions and the desk share about selling: the catalogue, the limits, the payload
/// signer and the ports.
#[derive(Clone)]
pub struct Commerce {
    pub catalogue: Arc<Catalogue>,
    pub limits: Limits,
    pub signer: PayloadSigner,
    pub api: Arc<dyn PaymentsApi>,
    pub store: Arc<dyn PaymentStore>,
}

pub use crate::metrics::STARS;

/// What the desk needs.
pub struct DeskDeps {
    pub commerce: Commerce,
    /// Refund notices reach users through it.
    pub messenger: Arc<dyn Messenger>,
    /// Thanks, renewals and plan notices are scheduled through it (the scheduler: the
    /// user's switches and quiet hours apply).
    pub notifier: Arc<dyn crate::ports::schedule::Notifier>,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub clock: Arc<dyn Clock>,
    /// How often plans are checked for grace and expiry (on the injected clock).
    pub sweep_every: Duration,
    /// Payments, renewals, refunds and subscription changes are recorded there.
    pub events: Arc<dyn crate::ports::EventLog>,
}
