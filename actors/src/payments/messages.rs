//! What the payment desk is sent, and by whom:
//!
//! - ingress (webhook or polling, and the replay after a restart) → [`PreCheckout`],
//!   [`PaymentReceived`], [`PaymentRefunded`], [`SubscriptionChanged`] (as a
//!   [`PaymentUpdate`]);
//! - operators (`/admin`) → [`RefundByOperator`], [`SetBlocked`];
//! - a session (the renewal button of /status) → [`SetRenewal`];
//! - the desk itself, on its clock → [`Sweep`];
//! - start-up → [`Listen`] (who to tell about changed entitlements).

use std::sync::Arc;

use actix::prelude::*;

use crate::domain::entitlement::Entitlement;
use crate::payments::EntitlementListener;
use crate::ports::{ChatId, UserId};

/// A `pre_checkout_query`: Telegram asks whether to take the user's Stars (answered within
/// its 10 seconds).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct PreCheckout {
    pub update_id: Option<i64>,
    pub query_id: String,
    pub user_id: UserId,
    pub language_code: Option<String>,
    pub currency: String,
    pub total_amount: i64,
    pub payload: String,
}

/// A `successful_payment` message: the Stars were taken (a purchase, or a subscription's
/// first payment or renewal).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct PaymentReceived {
    pub update_id: Option<i64>,
    pub user_id: UserId,
    pub chat_id: ChatId,
    pub language_code: Option<String>,
    pub charge_id: String,
    pub currency: String,
    pub total_amount: i64,
    pub payload: String,
    pub is_recurring: bool,
    pub is_first_recurring: bool,
    /// When the subscription's paid period ends (Unix seconds), for subscriptions.
    pub subscription_expiration_date: Option<i64>,
}

/// A `refunded_payment` message: Telegram gave the Stars back.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct PaymentRefunded {
    pub update_id: Option<i64>,
    pub user_id: UserId,
    pub chat_id: ChatId,
    pub language_code: Option<String>,
    pub charge_id: String,
}

/// What a `subscription` update says about the user's subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    Canceled,
    Active,
    Failed,
}

impl SubscriptionState {
    pub fn parse(text: &str) -> Option<SubscriptionState> {
        match text {
            "canceled" => Some(SubscriptionState::Canceled),
            "active" => Some(SubscriptionState::Active),
            "failed" => Some(SubscriptionState::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Canceled => "canceled",
            SubscriptionState::Active => "active",
            SubscriptionState::Failed => "failed",
        }
    }
}

/// A `subscription` update (Bot API 10.2): the user canceled or resumed their subscription
/// in Telegram, or its renewal failed.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct SubscriptionChanged {
    pub update_id: Option<i64>,
    pub user_id: UserId,
    pub language_code: Option<String>,
    pub payload: String,
    pub state: SubscriptionState,
}

/// A payment update from Telegram, whichever kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentUpdate {
    PreCheckout(PreCheckout),
    Received(PaymentReceived),
    Refunded(PaymentRefunded),
    Subscription(SubscriptionChanged),
}

impl PaymentUpdate {
    /// The user it concerns.
    pub fn user_id(&self) -> UserId {
        match self {
            PaymentUpdate::PreCheckout(query) => query.user_id,
            PaymentUpdate::Received(payment) => payment.user_id,
            PaymentUpdate::Refunded(refund) => refund.user_id,
            PaymentUpdate::Subscription(change) => change.user_id,
        }
    }

    /// The same update, accepted before a restart and handed over again.
    pub fn with_update_id(mut self, update_id: i64) -> PaymentUpdate {
        let id = Some(update_id);
        match &mut self {
            PaymentUpdate::PreCheckout(query) => query.update_id = id,
            PaymentUpdate::Received(payment) => payment.update_id = id,
            PaymentUpdate::Refunded(refund) => refund.update_id = id,
            PaymentUpdate::Subscription(change) => change.update_id = id,
        }
        self
    }
}

/// Why an operator's refund did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    #[error("no payment with this charge id")]
    UnknownCharge,
    #[error("this payment was refunded before")]
    AlreadyRefunded,
    #[error("Telegram refused the refund: {0}")]
    Telegram(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("the payment desk crashed on it; see the logs")]
    Crashed,
}

/// An operator refunds a payment (`POST /admin/payments/{charge_id}/refund`).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "Result<Entitlement, RefundError>")]
pub struct RefundByOperator {
    pub charge_id: String,
}

/// Why the renewal could not be switched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewalError {
    #[error("the user has no subscription")]
    NoSubscription,
    #[error("Telegram refused: {0}")]
    Telegram(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("the payment desk crashed on it; see the logs")]
    Crashed,
}

/// The user cancels or resumes their subscription's renewal (from /status).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "Result<Entitlement, RenewalError>")]
pub struct SetRenewal {
    pub user_id: UserId,
    pub renewing: bool,
}

/// An operator blocks (or unblocks) a user's purchases.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "Result<(), String>")]
pub struct SetBlocked {
    pub user_id: UserId,
    pub blocked: bool,
}

/// Records plans that entered grace or expired since the last sweep (sent by the desk to
/// itself on its clock).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Sweep;

/// Who to tell about changed entitlements (the session router, once it exists).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Listen(pub Arc<dyn EntitlementListener>);
