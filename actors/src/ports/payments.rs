//! Payments: the Telegram Stars calls (invoices, pre-checkout answers, refunds, subscription
//! changes) and the durable ledger behind the payment desk.
//!
//! Every change of an entitlement is one transaction that also writes its audit line and,
//! when it came with a Telegram update, marks that update handled: a crash leaves either all
//! of it or none, and a replayed update finds its payment recorded.

use async_trait::async_trait;

use super::{ChatId, StoreError, UserId};
use crate::domain::entitlement::Entitlement;

/// An invoice to show: one price in Telegram Stars (`XTR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub title: String,
    pub description: String,
    /// The signed payload (see `payments::payload`).
    pub payload: String,
    pub stars: u32,
    /// For a subscription: renewed every 30 days by Telegram.
    pub subscription: bool,
}

/// Why a payment call to Telegram failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PaymentCallError {
    /// Telegram refused it (its description says why, e.g. `CHARGE_ALREADY_REFUNDED`).
    #[error("Telegram refused: {0}")]
    Refused(String),
    /// No (readable) answer came.
    #[error("Telegram could not be reached: {0}")]
    Unreachable(String),
}

/// The payment methods of the Bot API.
#[async_trait]
pub trait PaymentsApi: Send + Sync + 'static {
    /// Sends a one-off invoice (`sendInvoice`) into `chat`.
    async fn send_invoice(&self, chat: ChatId, invoice: &Invoice) -> Result<(), PaymentCallError>;

    /// A link to pay `invoice` (`createInvoiceLink`; with `subscription_period` for a
    /// subscription).
    async fn create_invoice_link(&self, invoice: &Invoice) -> Result<String, PaymentCallError>;

    /// Answers a pre-checkout query: yes, or no with a reason the user reads.
    async fn answer_pre_checkout(
        &self,
        query_id: &str,
        refusal: Option<&str>,
    ) -> Result<(), PaymentCallError>;

    /// Refunds a payment (`refundStarPayment`).
    async fn refund_star_payment(
        &self,
        user_id: UserId,
        charge_id: &str,
    ) -> Result<(), PaymentCallError>;

    /// Cancels a subscription's renewal, or re-enables one the bot canceled
    /// (`editUserStarSubscription`).
    async fn edit_star_subscription(
        &self,
        user_id: UserId,
        charge_id: &str,
        canceled: bool,
    ) -> Result<(), PaymentCallError>;
}

/// Who caused a change: kept with every change in the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An update from Telegram.
    Telegram,
    /// The user, from a button.
    User,
    /// An operator (`/admin`).
    Operator,
    /// vitte's clock (a plan entering grace or expiring).
    Timer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Telegram => "telegram",
            Source::User => "user",
            Source::Operator => "operator",
            Source::Timer => "timer",
        }
    }
}

/// One line of a user's payment audit, to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLine {
    pub user_id: UserId,
    pub charge_id: Option<String>,
    /// What happened: `pre_checkout_accepted`, `paid`, `duplicate_payment`, `refunded`, …
    pub event: String,
    pub source: Source,
    /// Details for an operator (the reason of a refusal, the new expiry).
    pub detail: String,
    /// The update it came with, marked handled in the same transaction.
    pub update_id: Option<i64>,
}

/// A change of one user's entitlement, computed from what storage holds inside the
/// transaction (so two replicas never compute from the same stale read).
pub type EntitlementChange = Box<dyn FnOnce(Entitlement) -> Entitlement + Send + 'static>;

/// A payment to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// Telegram's `telegram_payment_charge_id`: a payment is recorded once per charge.
    pub charge_id: String,
    pub user_id: UserId,
    pub product_id: String,
    pub stars: u32,
    pub kind: PaymentKind,
    /// Days of plan it added (0 for an unlock or an unmatched payment).
    pub days_granted: u32,
    /// `paid` (it granted something) or `unmatched` (money came for nothing vitte sells:
    /// an operator refunds it).
    pub status: &'static str,
}

/// What a payment was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentKind {
    OneOff,
    /// A subscription's first payment.
    Subscription,
    /// A subscription's renewal.
    Renewal,
}

impl PaymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::OneOff => "one_off",
            PaymentKind::Subscription => "subscription",
            PaymentKind::Renewal => "renewal",
        }
    }
}

/// What recording a payment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRecorded {
    /// Recorded now; the user's entitlement is this.
    New(Entitlement),
    /// This charge was recorded before: nothing changed.
    Duplicate,
}

/// What recording a refund came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRecorded {
    /// Refunded now: the grant was taken back; the user's entitlement is this.
    Refunded(Entitlement),
    /// Refunded before: nothing changed.
    AlreadyRefunded,
    /// No payment with this charge id.
    Unknown,
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredPayment {
    pub charge_id: String,
    pub user_id: UserId,
    pub product_id: String,
    pub stars: u32,
    pub kind: String,
    pub days_granted: u32,
    /// `paid`, `unmatched` or `refunded`.
    pub status: String,
    pub created_at: i64,
}

/// A line of the audit, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredAudit {
    pub at: i64,
    pub charge_id: Option<String>,
    pub event: String,
    pub source: String,
    pub detail: String,
}

/// A plan whose state changed since the sweep last recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTransition {
    pub user_id: UserId,
    pub product_id: String,
    /// `active`, `grace` or `expired`: the state to record.
    pub state: &'static str,
    /// The plan's paid end (Unix milliseconds).
    pub paid_until: i64,
    /// The user's language (chosen in /language, else Telegram's), for the notice.
    pub language: Option<String>,
}

/// The payment desk's durable state.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// The user's entitlement (the default for a user who bought nothing).
    async fn entitlement(&self, user_id: UserId) -> Result<Entitlement, StoreError>;

    /// Whether an operator blocked the user from buying.
    async fn is_blocked(&self, user_id: UserId) -> Result<bool, StoreError>;

    /// Blocks or unblocks the user's purchases, with its audit line.
    async fn set_blocked(&self, blocked: bool, audit: &AuditLine) -> Result<(), StoreError>;

    /// Records a pre-checkout query and the answer about to be given (`refusal` or yes), with
    /// its audit line, before Telegram is answered.
    async fn record_checkout(
        &self,
        query_id: &str,
        payload: &str,
        refusal: Option<&str>,
        audit: &AuditLine,
    ) -> Result<(), StoreError>;

    /// Whether a pre-checkout of `user_id` with `payload` was accepted.
    async fn checkout_accepted(&self, user_id: UserId, payload: &str) -> Result<bool, StoreError>;

    /// Records `payment` and applies `change` to the user's entitlement, with `audit`, in one
    /// transaction; a charge recorded before changes nothing (`Duplicate`, and only the
    /// update is marked handled).
    async fn record_payment(
        &self,
        payment: &NewPayment,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<PaymentRecorded, StoreError>;

    /// A refund that came before its payment (updates out of order): the charge is recorded
    /// as refunded for nothing, so the payment, when it comes, is a duplicate and grants
    /// nothing. With `audit`, in one transaction.
    async fn record_early_refund(
        &self,
        charge_id: &str,
        audit: &AuditLine,
    ) -> Result<(), StoreError>;

    /// The payment of `charge_id`, if there is one.
    async fn payment(&self, charge_id: &str) -> Result<Option<StoredPayment>, StoreError>;

    /// Marks a paid payment refunded and applies `change` (the grant taken back), with
    /// `audit`, in one transaction. A payment refunded before (or unknown) changes nothing.
    async fn record_refund(
        &self,
        charge_id: &str,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<RefundRecorded, StoreError>;

    /// Applies `change` to the user's entitlement (renewal switched on or off, a failed
    /// renewal), with `audit`, in one transaction; returns the new entitlement.
    async fn change_entitlement(
        &self,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<Entitlement, StoreError>;

    /// Writes an audit line alone (a refusal, a duplicate), marking its update handled.
    async fn audit(&self, audit: &AuditLine) -> Result<(), StoreError>;

    /// Plans whose state at `now` (with `grace_ms` of grace) differs from the state last
    /// recorded: at most `limit`.
    async fn plans_to_advance(
        &self,
        now: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlanTransition>, StoreError>;

    /// Records the state a sweep found, with its audit line.
    async fn set_plan_state(
        &self,
        transition: &PlanTransition,
        audit: &AuditLine,
    ) -> Result<(), StoreError>;

    /// Plans open at `now` (active or in grace), counted by product.
    async fn open_plans(&self, now: i64, grace_ms: i64) -> Result<Vec<(String, i64)>, StoreError>;

    /// The user's payments and audit, oldest first (for operators).
    async fn history(
        &self,
        user_id: UserId,
    ) -> Result<(Vec<StoredPayment>, Vec<StoredAudit>), StoreError>;

    /// Persona replies written for the user since `since` (Unix milliseconds): today's usage.
    async fn replies_since(&self, user_id: UserId, since: i64) -> Result<u32, StoreError>;
}
