//! The [`PaymentStore`] port: entitlements, payments (once per charge), pre-checkouts and
//! the audit. Every change of an entitlement runs in one transaction that locks the user's
//! row first (an upsert: a row lock on PostgreSQL, the write lock on SQLite), reads it,
//! applies the change, writes it with its audit line, and marks the update it came with
//! handled.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use vitte_actors::domain::catalogue::Feature;
use vitte_actors::domain::entitlement::{Entitlement, PlanPeriod};
use vitte_actors::ports::payments::{
    AuditLine, EntitlementChange, NewPayment, PaymentRecorded, PaymentStore, PlanTransition,
    RefundRecorded, StoredAudit, StoredPayment,
};
use vitte_actors::ports::{MessageStatus, Role, StoreError, UserId};

use super::schema::{
    checkouts, dialogs, entitlements, forgotten_replies, inbox, messages, payment_events, payments,
    users,
};
use super::{Database, Pool, SqliteConn, StorageError};
use diesel_async::AsyncPgConnection;

/// An entitlement row as stored.
type Row = (Option<String>, Option<i64>, bool, Option<String>, String);

/// The columns an [`Entitlement`] is read from, as a [`Row`].
const ENTITLEMENT_COLUMNS: (
    entitlements::plan_product,
    entitlements::paid_until,
    entitlements::renewing,
    entitlements::subscription_charge,
    entitlements::unlocked,
) = (
    entitlements::plan_product,
    entitlements::paid_until,
    entitlements::renewing,
    entitlements::subscription_charge,
    entitlements::unlocked,
);

fn from_row(
    (plan_product, paid_until, renewing, subscription_charge, unlocked): Row,
) -> Entitlement {
    let plan = plan_product
        .zip(paid_until)
        .map(|(product_id, paid_until)| PlanPeriod {
            product_id,
            paid_until,
            renewing,
            subscription_charge,
        });
    Entitlement {
        plan,
        unlocked: unlocked.split(',').filter_map(Feature::parse).collect(),
    }
}

fn unlocked_text(entitlement: &Entitlement) -> String {
    entitlement
        .unlocked
        .iter()
        .map(|feature| feature.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The statements that change one user's entitlement inside a transaction, over `$conn`:
/// lock the row, read it, apply `$change`, write it back (with the plan state `active` when
/// it runs past `$now`), then the audit line and the update marked handled. Evaluates to the
/// new entitlement.
macro_rules! change_statements {
    ($conn:ident, $user_id:expr, $change:expr, $audit:expr, $now:expr) => {{
        let (user_id, now) = ($user_id, $now);
        diesel::insert_into(entitlements::table)
            .values((
                entitlements::user_id.eq(user_id),
                entitlements::updated_at.eq(now),
            ))
            .on_conflict(entitlements::user_id)
            .do_update()
            .set(entitlements::updated_at.eq(now))
            .execute($conn)
            .await?;
        let row: Row = entitlements::table
            .find(user_id)
            .select(ENTITLEMENT_COLUMNS)
            .first($conn)
            .await?;
        let changed: Entitlement = ($change)(from_row(row));
        let plan = changed.plan.as_ref();
        let state = match plan {
            None => Some("none"),
            Some(plan) if plan.paid_until > now => Some("active"),
            // An ended plan's state is the sweep's to record.
            Some(_) => None,
        };
        diesel::update(entitlements::table.find(user_id))
            .set((
                entitlements::plan_product.eq(plan.map(|plan| plan.product_id.clone())),
                entitlements::paid_until.eq(plan.map(|plan| plan.paid_until)),
                entitlements::renewing.eq(plan.is_some_and(|plan| plan.renewing)),
                entitlements::subscription_charge
                    .eq(plan.and_then(|plan| plan.subscription_charge.clone())),
                entitlements::unlocked.eq(unlocked_text(&changed)),
            ))
            .execute($conn)
            .await?;
        if let Some(state) = state {
            diesel::update(entitlements::table.find(user_id))
                .set(entitlements::plan_state.eq(state))
                .execute($conn)
                .await?;
        }
        audit_statements!($conn, $audit, now);
        changed
    }};
}

/// Writes `$audit` and marks its update handled, over `$conn`.
macro_rules! audit_statements {
    ($conn:ident, $audit:expr, $now:expr) => {{
        let audit: &AuditLine = $audit;
        diesel::insert_into(payment_events::table)
            .values((
                payment_events::user_id.eq(audit.user_id),
                payment_events::charge_id.eq(&audit.charge_id),
                payment_events::event.eq(&audit.event),
                payment_events::source.eq(audit.source.as_str()),
                payment_events::detail.eq(&audit.detail),
                payment_events::at.eq($now),
            ))
            .execute($conn)
            .await?;
        if let Some(update_id) = audit.update_id {
            diesel::update(inbox::table.find(update_id))
                .set(inbox::payload.eq(None::<String>))
                .execute($conn)
                .await?;
        }
    }};
}

#[async_trait]
impl PaymentStore for Database {
    async fn entitlement(&self, user_id: UserId) -> Result<Entitlement, StoreError> {
        with_connection!(self, |conn| {
            let row: Option<Row> = entitlements::table
                .find(user_id)
                .select(ENTITLEMENT_COLUMNS)
                .first(conn)
                .await
                .optional()?;
            Ok(row.map(from_row).unwrap_or_default())
        })
        .map_err(StoreError::from)
    }

    async fn is_blocked(&self, user_id: UserId) -> Result<bool, StoreError> {
        with_connection!(self, |conn| {
            let blocked: Option<bool> = entitlements::table
                .find(user_id)
                .select(entitlements::blocked)
                .first(conn)
                .await
                .optional()?;
            Ok(blocked.unwrap_or(false))
        })
        .map_err(StoreError::from)
    }

    async fn set_blocked(&self, blocked: bool, audit: &AuditLine) -> Result<(), StoreError> {
        let now = self.now();
        let audit = audit.clone();
        in_transaction!(self, |conn| {
            diesel::insert_into(entitlements::table)
                .values((
                    entitlements::user_id.eq(audit.user_id),
                    entitlements::blocked.eq(blocked),
                    entitlements::updated_at.eq(now),
                ))
                .on_conflict(entitlements::user_id)
                .do_update()
                .set((
                    entitlements::blocked.eq(blocked),
                    entitlements::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            audit_statements!(conn, &audit, now);
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn record_checkout(
        &self,
        query_id: &str,
        payload: &str,
        refusal: Option<&str>,
        audit: &AuditLine,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let (query_id, payload, refusal, audit) = (
            query_id.to_owned(),
            payload.to_owned(),
            refusal.map(str::to_owned),
            audit.clone(),
        );
        in_transaction!(self, |conn| {
            // A query delivered again keeps its first answer's record.
            diesel::insert_into(checkouts::table)
                .values((
                    checkouts::query_id.eq(&query_id),
                    checkouts::user_id.eq(audit.user_id),
                    checkouts::payload.eq(&payload),
                    checkouts::accepted.eq(refusal.is_none()),
                    checkouts::refusal.eq(&refusal),
                    checkouts::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            audit_statements!(conn, &audit, now);
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn checkout_accepted(&self, user_id: UserId, payload: &str) -> Result<bool, StoreError> {
        let payload = payload.to_owned();
        with_connection!(self, |conn| {
            let accepted: i64 = checkouts::table
                .filter(checkouts::user_id.eq(user_id))
                .filter(checkouts::payload.eq(&payload))
                .filter(checkouts::accepted.eq(true))
                .count()
                .get_result(conn)
                .await?;
            Ok(accepted > 0)
        })
        .map_err(StoreError::from)
    }

    async fn record_payment(
        &self,
        payment: &NewPayment,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<PaymentRecorded, StoreError> {
        let now = self.now();
        let (payment, audit) = (payment.clone(), audit.clone());
        in_transaction!(self, |conn| {
            // The charge's primary key decides: a concurrent delivery of the same charge
            // waits for this one, then inserts nothing.
            let inserted = diesel::insert_into(payments::table)
                .values((
                    payments::charge_id.eq(&payment.charge_id),
                    payments::user_id.eq(payment.user_id),
                    payments::product_id.eq(&payment.product_id),
                    payments::stars.eq(i32::try_from(payment.stars).unwrap_or(i32::MAX)),
                    payments::kind.eq(payment.kind.as_str()),
                    payments::days_granted
                        .eq(i32::try_from(payment.days_granted).unwrap_or(i32::MAX)),
                    payments::status.eq(payment.status),
                    payments::created_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 0 {
                if let Some(update_id) = audit.update_id {
                    diesel::update(inbox::table.find(update_id))
                        .set(inbox::payload.eq(None::<String>))
                        .execute(conn)
                        .await?;
                }
                return Ok(PaymentRecorded::Duplicate);
            }
            let entitlement = change_statements!(conn, payment.user_id, change, &audit, now);
            Ok(PaymentRecorded::New(entitlement))
        })
        .map_err(StoreError::from)
    }

    async fn record_early_refund(
        &self,
        charge_id: &str,
        audit: &AuditLine,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let (charge_id, audit) = (charge_id.to_owned(), audit.clone());
        in_transaction!(self, |conn| {
            diesel::insert_into(payments::table)
                .values((
                    payments::charge_id.eq(&charge_id),
                    payments::user_id.eq(audit.user_id),
                    payments::product_id.eq(""),
                    payments::stars.eq(0),
                    payments::kind.eq("one_off"),
                    payments::days_granted.eq(0),
                    payments::status.eq("refunded"),
                    payments::created_at.eq(now),
                    payments::refunded_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            audit_statements!(conn, &audit, now);
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn payment(&self, charge_id: &str) -> Result<Option<StoredPayment>, StoreError> {
        let charge_id = charge_id.to_owned();
        with_connection!(self, |conn| {
            let row = payments::table
                .find(&charge_id)
                .select(PAYMENT_COLUMNS)
                .first::<PaymentRow>(conn)
                .await
                .optional()?;
            Ok(row.map(stored_payment))
        })
        .map_err(StoreError::from)
    }

    async fn record_refund(
        &self,
        charge_id: &str,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<RefundRecorded, StoreError> {
        let now = self.now();
        let (charge_id, audit) = (charge_id.to_owned(), audit.clone());
        in_transaction!(self, |conn| {
            // Only a payment not refunded yet turns refunded: once, however often the
            // refund arrives.
            let refunded = diesel::update(payments::table.find(&charge_id))
                .filter(payments::status.ne("refunded"))
                .set((
                    payments::status.eq("refunded"),
                    payments::refunded_at.eq(now),
                ))
                .returning(payments::user_id)
                .get_result::<i64>(conn)
                .await
                .optional()?;
            let Some(user_id) = refunded else {
                let known: i64 = payments::table
                    .filter(payments::charge_id.eq(&charge_id))
                    .count()
                    .get_result(conn)
                    .await?;
                return Ok(if known > 0 {
                    RefundRecorded::AlreadyRefunded
                } else {
                    RefundRecorded::Unknown
                });
            };
            let entitlement = change_statements!(conn, user_id, change, &audit, now);
            Ok(RefundRecorded::Refunded(entitlement))
        })
        .map_err(StoreError::from)
    }

    async fn change_entitlement(
        &self,
        change: EntitlementChange,
        audit: &AuditLine,
    ) -> Result<Entitlement, StoreError> {
        let now = self.now();
        let audit = audit.clone();
        in_transaction!(self, |conn| {
            let entitlement = change_statements!(conn, audit.user_id, change, &audit, now);
            Ok(entitlement)
        })
        .map_err(StoreError::from)
    }

    async fn audit(&self, audit: &AuditLine) -> Result<(), StoreError> {
        let now = self.now();
        let audit = audit.clone();
        in_transaction!(self, |conn| {
            audit_statements!(conn, &audit, now);
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn plans_to_advance(
        &self,
        now: i64,
        grace_ms: i64,
        limit: usize,
    ) -> Result<Vec<PlanTransition>, StoreError> {
        let grace_from = now.saturating_sub(grace_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_connection!(self, |conn| {
            let paid_until = entitlements::paid_until.assume_not_null();
            let active = paid_until.gt(now);
            let grace = paid_until.le(now).and(paid_until.gt(grace_from));
            let expired = paid_until.le(grace_from);
            let rows = entitlements::table
                .left_join(users::table.on(users::id.eq(entitlements::user_id)))
                .filter(entitlements::paid_until.is_not_null())
                .filter(entitlements::plan_product.is_not_null())
                .filter(
                    active
                        .and(entitlements::plan_state.ne("active"))
                        .or(grace.and(entitlements::plan_state.ne("grace")))
                        .or(expired.and(entitlements::plan_state.ne("expired"))),
                )
                .order(entitlements::user_id)
                .limit(limit)
                .select((
                    entitlements::user_id,
                    entitlements::plan_product.assume_not_null(),
                    paid_until,
                    users::language.nullable(),
                    users::language_code.nullable(),
                ))
                .load::<(i64, String, i64, Option<String>, Option<String>)>(conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(user_id, product_id, paid_until, language, language_code)| {
                        let state = if paid_until > now {
                            "active"
                        } else if paid_until > grace_from {
                            "grace"
                        } else {
                            "expired"
                        };
                        PlanTransition {
                            user_id,
                            product_id,
                            state,
                            paid_until,
                            language: language.or(language_code),
                        }
                    },
                )
                .collect())
        })
        .map_err(StoreError::from)
    }

    async fn set_plan_state(
        &self,
        transition: &PlanTransition,
        audit: &AuditLine,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let (user_id, state, audit) = (transition.user_id, transition.state, audit.clone());
        in_transaction!(self, |conn| {
            diesel::update(entitlements::table.find(user_id))
                .set(entitlements::plan_state.eq(state))
                .execute(conn)
                .await?;
            audit_statements!(conn, &audit, now);
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn open_plans(&self, now: i64, grace_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let grace_from = now.saturating_sub(grace_ms);
        with_connection!(self, |conn| {
            let rows = entitlements::table
                .filter(entitlements::paid_until.gt(grace_from))
                .filter(entitlements::plan_product.is_not_null())
                .group_by(entitlements::plan_product)
                .select((
                    entitlements::plan_product.assume_not_null(),
                    diesel::dsl::count_star(),
                ))
                .load::<(String, i64)>(conn)
                .await?;
            Ok(rows)
        })
        .map_err(StoreError::from)
    }

    async fn history(
        &self,
        user_id: UserId,
    ) -> Result<(Vec<StoredPayment>, Vec<StoredAudit>), StoreError> {
        with_connection!(self, |conn| {
            let payments = payments::table
                .filter(payments::user_id.eq(user_id))
                .order((payments::created_at.asc(), payments::charge_id.asc()))
                .select(PAYMENT_COLUMNS)
                .load::<PaymentRow>(conn)
                .await?
                .into_iter()
                .map(stored_payment)
                .collect();
            let audit = payment_events::table
                .filter(payment_events::user_id.eq(user_id))
                .order(payment_events::id.asc())
                .select((
                    payment_events::at,
                    payment_events::charge_id,
                    payment_events::event,
                    payment_events::source,
                    payment_events::detail,
                ))
                .load::<(i64, Option<String>, String, String, String)>(conn)
                .await?
                .into_iter()
                .map(|(at, charge_id, event, source, detail)| StoredAudit {
                    at,
                    charge_id,
                    event,
                    source,
                    detail,
                })
                .collect();
            Ok((payments, audit))
        })
        .map_err(StoreError::from)
    }

    async fn replies_since(&self, user_id: UserId, since: i64) -> Result<u32, StoreError> {
        with_connection!(self, |conn| {
            // Every persona reply the LLM wrote (a regenerated one too: it cost a call).
            let replies: i64 = messages::table
                .inner_join(dialogs::table)
                .filter(dialogs::user_id.eq(user_id))
                .filter(messages::created_at.ge(since))
                .filter(messages::role.eq(Role::Assistant.as_str()))
                .filter(messages::provider.is_not_null())
                .filter(messages::status.ne(MessageStatus::Pending.as_str()))
                .count()
                .get_result(conn)
                .await?;
            // And those /forget_me deleted (their times stay, for this count only).
            let forgotten: i64 = forgotten_replies::table
                .filter(forgotten_replies::user_id.eq(user_id))
                .filter(forgotten_replies::created_at.ge(since))
                .count()
                .get_result(conn)
                .await?;
            Ok(u32::try_from(replies + forgotten).unwrap_or(u32::MAX))
        })
        .map_err(StoreError::from)
    }
}

type PaymentRow = (String, i64, String, i32, String, i32, String, i64);

const PAYMENT_COLUMNS: (
    payments::charge_id,
    payments::user_id,
    payments::product_id,
    payments::stars,
    payments::kind,
    payments::days_granted,
    payments::status,
    payments::created_at,
) = (
    payments::charge_id,
    payments::user_id,
    payments::product_id,
    payments::stars,
    payments::kind,
    payments::days_granted,
    payments::status,
    payments::created_at,
);

fn stored_payment(
    (charge_id, user_id, product_id, stars, kind, days_granted, status, created_at): PaymentRow,
) -> StoredPayment {
    StoredPayment {
        charge_id,
        user_id,
        product_id,
        stars: u32::try_from(stars).unwrap_or(0),
        kind,
        days_granted: u32::try_from(days_granted).unwrap_or(0),
        status,
        created_at,
    }
}
