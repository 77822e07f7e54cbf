//! In-memory payment ports for unit tests: a ledger in a mutex (with the same
//! once-per-charge and once-per-refund rules as the SQL one) and a Bot API that records
//! its calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::entitlement::Entitlement;
use crate::ports::payments::*;
use crate::ports::{ChatId, Clock, StoreError, UserId};
use crate::sync::lock;

#[derive(Default)]
struct Ledger {
    entitlements: HashMap<UserId, Entitlement>,
    plan_states: HashMap<UserId, &'static str>,
    blocked: HashSet<UserId>,
    checkouts: Vec<(String, UserId, String, bool)>,
    payments: BTreeMap<String, StoredPayment>,
    audit: Vec<(UserId, StoredAudit)>,
    handled_updates: HashSet<i64>,
}

/// Counts a user's persona replies since a moment (where the replies are stored).
type ReplyCounter = Box<dyn Fn(UserId, i64) -> u32 + Send + Sync>;

/// The payment ledger in memory.
pub struct MemoryPaymentStore {
    ledger: Mutex<Ledger>,
    clock: Arc<dyn Clock>,
    replies: ReplyCounter,
}

impl MemoryPaymentStore {
    /// A ledger for users who wrote nothing (the desk's own tests).
    pub fn new(clock: Arc<dyn Clock>) -> MemoryPaymentStore {
        MemoryPaymentStore::counting_replies(clock, Box::new(|_, _| 0))
    }

    /// A ledger whose `replies_since` asks `replies` (the sessions' storage).
    pub fn counting_replies(clock: Arc<dyn Clock>, replies: ReplyCounter) -> MemoryPaymentStore {
        MemoryPaymentStore {
            ledger: Mutex::default(),
            clock,
            replies,
        }
    }

    /// The events of a user's audit, oldest first.
    pub fn events(&self, user_id: UserId) -> Vec<String> {
        lock(&self.ledger)
            .audit
            .iter()
            .filter(|(user, _)| *user == user_id)
            .map(|(_, line)| line.event.clone())
            .collect()
    }

    pub fn is_handled(&self, update_id: i64) -> bool {
        lock(&self.ledger).handled_updates.contains(&update_id)
    }

    pub fn payment_count(&self) -> usize {
        lock(&self.ledger).payments.len()
    }

    fn write_audit(&self, ledger: &mut Ledger, audit: &AuditLine) {
        ledger.audit.push((
            audit.user_id,
            StoredAudit {
                at: self.clock.now_millis(),
                charge_id: audit.charge_id.clone(),
                event: audit.event.clone(),
                source: audit.source.as_str().to_owned(),
                detail: audit.detail.clone(),
            },
        ));
        if let Some(update_id) = audit.update_id {
            ledger.handled_updates.insert(update_id);
        }
    }

    fn change(ledger: &mut Ledger, user_id: UserId, change: EntitlementChange) -> Entitlement {
        let current = ledger.entitlements.remove(&user_id).unwrap_or_default();
        let changed = change(current);
        ledger.entitlements.insert(user_id, changed.clone());
        changed
    }
}

#[async_trait]
impl PaymentStore for MemoryPaymentStore {
    async fn entitlement(&self, user_id: UserId) -> Result<Entitlement, StoreError> {
        Ok(lock(&self.ledger)
            .entitlements
            .get(&user_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn is_blocked(&self, user_id: UserId) -> Result<bool, StoreError> {
        Ok(lock(&self.ledger).blocked.contains(&user_id))
    }

    async fn set_blocked(&self, blocked: bool, audit: &AuditLine) -> Result<(), StoreError> {
        let mut ledger = lock(&self.ledger);
        if blocked {
            ledger.blocked.insert(audit.user_id);
        } else {
            ledger.blocked.remove(&audit.user_id);
        }
        self.write_audit(&mut ledger, audit);
        Ok(())
    }

    async fn record_checkout(
        &self,
        query_id: &str,
        payload: &str,
        refusal: Option<&str>,
        audit: &AuditLine,
    ) -> Result<(), StoreError> {
        let mut ledger = lock(&self.ledger);
        ledger.checkouts.push((
            query_id.to_owned(),
            audit.user_id,
            payload.to_owned(),
            refusal.is_none(),
        ));
        self.write_audit(&mut ledger, audit);
        Ok(())
    }

    async fn checkout_accepted(&self, user_id: UserId, payload: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.ledger)
            .checkouts
            .iter()
            .any(|(_, user, stored, accepted)| *user == user_id && stored == payload && *accepted))
    }

    async fn record_payment(
        &self,
        payment: &NewPayment,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<PaymentRecorded, StoreError> {
        let mut ledger = lock(&self.ledger);
        if ledger.payments.contains_key(&payment.charge_id) {
            if let Some(update_id) = audit.update_id {
                ledger.handled_updates.insert(update_id);
            }
            return Ok(PaymentRecorded::Duplicate);
        }
        ledger.payments.insert(
            payment.charge_id.clone(),
            StoredPayment {
                charge_id: payment.charge_id.clone(),
                user_id: payment.user_id,
                product_id: payment.product_id.clone(),
                stars: payment.stars,
                kind: payment.kind.as_str().to_owned(),
                days_granted: payment.days_granted,
                status: payment.status.to_owned(),
                created_at: self.clock.now_millis(),
            },
        );
        let entitlement = Self::change(&mut ledger, payment.user_id, change);
        self.write_audit(&mut ledger, audit);
        Ok(PaymentRecorded::New(entitlement))
    }

    async fn record_early_refund(
        &self,
        charge_id: &str,
        audit: &AuditLine,
    ) -> Result<(), StoreError> {
        let mut ledger = lock(&self.ledger);
        let now = self.clock.now_millis();
        ledger
            .payments
            .entry(charge_id.to_owned())
            .or_insert_with(|| StoredPayment {
                charge_id: charge_id.to_owned(),
                user_id: audit.user_id,
                product_id: String::new(),
                stars: 0,
                kind: PaymentKind::OneOff.as_str().to_owned(),
                days_granted: 0,
                status: "refunded".to_owned(),
                created_at: now,
            });
        self.write_audit(&mut ledger, audit);
        Ok(())
    }

    async fn payment(&self, charge_id: &str) -> Result<Option<StoredPayment>, StoreError> {
        Ok(lock(&self.ledger).payments.get(charge_id).cloned())
    }

    async fn record_refund(
        &self,
        charge_id: &str,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<RefundRecorded, StoreError> {
        let mut ledger = lock(&self.ledger);
        let Some(payment) = ledger.payments.get_mut(charge_id) else {
            return Ok(RefundRecorded::Unknown);
        };
        if payment.status == "refunded" {
            return Ok(RefundRecorded::AlreadyRefunded);
        }
        payment.status = "refunded".to_owned();
        let user_id = payment.user_id;
        let entitlement = Self::change(&mut ledger, user_id, change);
        self.write_audit(&mut ledger, audit);
        Ok(RefundRecorded::Refunded(entitlement))
    }

    async fn change_entitlement(
        &self,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<Entitlement, StoreError> {
        let mut ledger = lock(&self.ledger);
        let entitlement = Self::change(&mut ledger, audit.user_id, change);
        self.write_audit(&mut ledger, audit);
        Ok(entitlement)
    }

    async fn audit(&self, audit: &AuditLine) -> Result<(), StoreError> {
        let mut ledger = lock(&self.ledger);
        self.write_audit(&mut ledger, audit);
        Ok(())
    }

    async fn plans_to_advance(
        &self,
        now: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlanTransition>, StoreError> {
        let ledger = lock(&self.ledger);
        let mut due: Vec<PlanTransition> = ledger
            .entitlements
            .iter()
            .filter_map(|(user_id, entitlement)| {
                let plan = entitlement.plan.as_ref()?;
                let state = plan_state_at(plan.paid_until, now, grace_ms);
                let recorded = ledger.plan_states.get(user_id).copied().unwrap_or("active");
                (state != recorded).then(|| PlanTransition {
                    user_id: *user_id,
                    product_id: plan.product_id.clone(),
                    state,
                    paid_until: plan.paid_until,
                    language: None,
                })
            })
            .collect();
        due.sort_by_key(|transition| transition.user_id);
        due.truncate(limit);
        Ok(due)
    }

    async fn set_plan_state(
        &self,
        transition: &PlanTransition,
        audit: &AuditLine,
    ) -> Result<(), StoreError> {
        let mut ledger = lock(&self.ledger);
        ledger
            .plan_states
            .insert(transition.user_id, transition.state);
        self.write_audit(&mut ledger, audit);
        Ok(())
    }

    async fn open_plans(&self, now: i64, grace_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let ledger = lock(&self.ledger);
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for entitlement in ledger.entitlements.values() {
            if let Some(plan) = &entitlement.plan {
                if plan_state_at(plan.paid_until, now, grace_ms) != "expired" {
                    *counts.entry(plan.product_id.clone()).or_default() += 1;
                }
            }
        }
        Ok(counts.into_iter().collect())
    }

    async fn history(
        &self,
        user_id: UserId,
    ) -> Result<(Vec<StoredPayment>, Vec<StoredAudit>), StoreError> {
        let ledger = lock(&self.ledger);
        let payments = ledger
            .payments
            .values()
            .filter(|payment| payment.user_id == user_id)
            .cloned()
            .collect();
        let audit = ledger
            .audit
            .iter()
            .filter(|(user, _)| *user == user_id)
            .map(|(_, line)| line.clone())
            .collect();
        Ok((payments, audit))
    }

    async fn replies_since(&self, user_id: UserId, since: i64) -> Result<u32, StoreError> {
        Ok((self.replies)(user_id, since))
    }
}

/// `active`, `grace` or `expired` for a plan paid until `paid_until`.
pub fn plan_state_at(paid_until: i64, now: i64, grace_ms: i64) -> &'static str {
    if now < paid_until {
        "active"
    } else if now < paid_until.saturating_add(grace_ms) {
        "grace"
    } else {
        "expired"
    }
}

/// One call to the recording Bot API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCall {
    Invoice {
        chat: ChatId,
        invoice: Invoice,
    },
    Link {
        invoice: Invoice,
    },
    PreCheckout {
        query_id: String,
        refusal: Option<String>,
    },
    Refund {
        user_id: UserId,
        charge_id: String,
    },
    EditSubscription {
        user_id: UserId,
        charge_id: String,
        canceled: bool,
    },
}

/// A Bot API that records every payment call and succeeds (unless told to refuse refunds).
#[derive(Default)]
pub struct RecordingPaymentsApi {
    calls: Mutex<Vec<PaymentCall>>,
    refund_answer: Mutex<Option<String>>,
}

impl RecordingPaymentsApi {
    pub fn calls(&self) -> Vec<PaymentCall> {
        lock(&self.calls).clone()
    }

    /// Refunds are refused with `description` from now on.
    pub fn refuse_refunds(&self, description: &str) {
        *lock(&self.refund_answer) = Some(description.to_owned());
    }

    /// The answers given to pre-checkout queries, in order.
    pub fn pre_checkout_answers(&self) -> Vec<Option<String>> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                PaymentCall::PreCheckout { refusal, .. } => Some(refusal),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl PaymentsApi for RecordingPaymentsApi {
    async fn send_invoice(&self, chat: ChatId, invoice: &Invoice) -> Result<(), PaymentCallError> {
        lock(&self.calls).push(PaymentCall::Invoice {
            chat,
            invoice: invoice.clone(),
        });
        Ok(())
    }

    async fn create_invoice_link(&self, invoice: &Invoice) -> Result<String, PaymentCallError> {
        lock(&self.calls).push(PaymentCall::Link {
            invoice: invoice.clone(),
        });
        Ok("https://t.me/$invoice".to_owned())
    }

    async fn answer_pre_checkout(
        &self,
        query_id: &str,
        refusal: Option<&str>,
    ) -> Result<(), PaymentCallError> {
        lock(&self.calls).push(PaymentCall::PreCheckout {
            query_id: query_id.to_owned(),
            refusal: refusal.map(str::to_owned),
        });
        Ok(())
    }

    async fn refund_star_payment(
        &self,
        user_id: UserId,
        charge_id: &str,
    ) -> Result<(), PaymentCallError> {
        lock(&self.calls).push(PaymentCall::Refund {
            user_id,
            charge_id: charge_id.to_owned(),
        });
        match lock(&self.refund_answer).clone() {
            Some(description) => Err(PaymentCallError::Refused(description)),
            None => Ok(()),
        }
    }

    async fn edit_star_subscription(
        &self,
        user_id: UserId,
        charge_id: &str,
        canceled: bool,
    ) -> Result<(), PaymentCallError> {
        lock(&self.calls).push(PaymentCall::EditSubscription {
            user_id,
            charge_id: charge_id.to_owned(),
            canceled,
        });
        Ok(())
    }
}
