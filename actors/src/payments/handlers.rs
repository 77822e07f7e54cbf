//! What the payment desk does with each message. Each function runs inside the desk's
//! guard, one at a time; it stores before it answers or tells anyone, so a crash between
//! the two is repaired by the update's replay (the stored outcome is found, never applied
//! twice).

use crate::domain::catalogue::{Grant, Product};
use crate::domain::entitlement::{Entitlement, format_local};
use crate::domain::notification::NotificationKind;
use crate::domain::shop_texts::ShopTexts;
use crate::domain::texts::{Lang, fill};
use crate::metrics::ErrorKind;
use crate::payments::DeskDeps;
use crate::payments::messages::{
    PaymentReceived, PaymentRefunded, PreCheckout, RefundError, RenewalError, SetBlocked,
    SetRenewal, SubscriptionChanged, SubscriptionState,
};
use crate::payments::notices::{tell_paid, tell_refunded};
use crate::payments::{InvoicePayload, STARS};
use crate::ports::clock::millis;
use crate::ports::events::record_event;
use crate::ports::payments::{
    AuditLine, EntitlementChange, NewPayment, PaymentCallError, PaymentKind, PaymentRecorded,
    RefundRecorded, Source,
};
use crate::ports::{EventKind, LoggedEvent, Severity, UserId};
use crate::scheduler::planning::{NoticePayload, notice_job};

/// The only currency of Telegram Stars.
pub const XTR: &str = "XTR";

fn shop(language_code: Option<&str>) -> &'static ShopTexts {
    Lang::from_telegram(language_code).texts().shop
}

/// Puts a payment's audit line in the event log too (what operators look back on).
async fn log_payment(deps: &DeskDeps, audit: &AuditLine) {
    let event = LoggedEvent {
        at: deps.clock.now_millis(),
        severity: Severity::Info,
        kind: EventKind::Payment,
        user_id: Some(audit.user_id),
        detail: format!(
            "{} ({}): {}",
            audit.event,
            audit.source.as_str(),
            audit.detail
        ),
    };
    record_event(deps.events.as_ref(), event).await;
}

fn line(
    user_id: UserId,
    charge_id: Option<&str>,
    event: &str,
    source: Source,
    detail: String,
    update_id: Option<i64>,
) -> AuditLine {
    AuditLine {
        user_id,
        charge_id: charge_id.map(str::to_owned),
        event: event.to_owned(),
        source,
        detail,
        update_id,
    }
}

/// Why a pre-checkout is refused: the audit's detail, and what the user reads.
struct Refusal {
    detail: String,
    text: &'static str,
}

/// Answers a pre-checkout query: yes only for a payload vitte signed, for this user, for a
/// product on sale at the price it names, in Stars, to a user not blocked. The answer is
/// stored (with its reason) before Telegram hears it.
pub async fn pre_checkout(deps: &DeskDeps, query: &PreCheckout) {
    let texts = shop(query.language_code.as_deref());
    let refusal = check_checkout(deps, query, texts).await.err();
    let (event, detail) = match &refusal {
        None => (
            "pre_checkout_accepted",
            format!("{} XTR", query.total_amount),
        ),
        Some(refusal) => ("pre_checkout_refused", refusal.detail.clone()),
    };
    let audit = line(
        query.user_id,
        None,
        event,
        Source::Telegram,
        detail,
        query.update_id,
    );
    let mut answer = refusal.as_ref().map(|refusal| refusal.text);
    if let Err(error) = deps
        .commerce
        .store
        .record_checkout(&query.query_id, &query.payload, answer, &audit)
        .await
    {
        // Unrecorded, no yes: the user tries again in a minute.
        tracing::error!(%error, "could not record a pre-checkout; refused it");
        deps.metrics.count_error(ErrorKind::Storage);
        answer = Some(texts.refuse_unavailable);
    }
    deps.metrics.count_payment(
        STARS,
        if answer.is_none() {
            "pre_checkout_accepted"
        } else {
            "pre_checkout_refused"
        },
    );
    if let Err(error) = deps
        .commerce
        .api
        .answer_pre_checkout(&query.query_id, answer)
        .await
    {
        // Telegram cancels the payment after its 10 s: nothing was taken.
        tracing::warn!(%error, "could not answer a pre-checkout query");
        deps.metrics.count_error(ErrorKind::Telegram);
    }
}

async fn check_checkout(
    deps: &DeskDeps,
    query: &PreCheckout,
    texts: &'static ShopTexts,
) -> Result<(), Refusal> {
    let invalid = |detail: String| Refusal {
        detail,
        text: texts.refuse_invalid,
    };
    let payload = deps
        .commerce
        .signer
        .verify(&query.payload)
        .map_err(|error| invalid(error.to_string()))?;
    if payload.user_id != query.user_id {
        return Err(invalid(format!(
            "the invoice was made for user {}",
            payload.user_id
        )));
    }
    let Some(product) = deps.commerce.catalogue.get(&payload.product_id) else {
        return Err(invalid(format!("unknown product {:?}", payload.product_id)));
    };
    if query.currency != XTR {
        return Err(invalid(format!("currency {:?}, not XTR", query.currency)));
    }
    if !product.on_sale {
        return Err(Refusal {
            detail: format!("{} is off sale", product.id),
            text: texts.refuse_off_sale,
        });
    }
    if payload.stars != product.stars || query.total_amount != i64::from(product.stars) {
        return Err(Refusal {
            detail: format!(
                "price changed: the invoice says {} (asked {}), the catalogue {}",
                payload.stars, query.total_amount, product.stars
            ),
            text: texts.refuse_price,
        });
    }
    match deps.commerce.store.is_blocked(query.user_id).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(Refusal {
            detail: "the user is blocked from purchases".to_owned(),
            text: texts.refuse_blocked,
        }),
        Err(error) => Err(Refusal {
            detail: format!("storage failed: {error}"),
            text: texts.refuse_unavailable,
        }),
    }
}

/// What a payment pays for, if it is one of vitte's.
fn match_payment<'a>(
    deps: &'a DeskDeps,
    payment: &PaymentReceived,
) -> Result<(InvoicePayload, &'a Product), String> {
    let payload = deps
        .commerce
        .signer
        .verify(&payment.payload)
        .map_err(|error| error.to_string())?;
    if payload.user_id != payment.user_id {
        return Err(format!("the invoice was made for user {}", payload.user_id));
    }
    let product = deps
        .commerce
        .catalogue
        .get(&payload.product_id)
        .ok_or_else(|| format!("unknown product {:?}", payload.product_id))?;
    if payment.currency != XTR || payment.total_amount != i64::from(payload.stars) {
        return Err(format!(
            "paid {} {} for an invoice of {} XTR",
            payment.total_amount, payment.currency, payload.stars
        ));
    }
    Ok((payload, product))
}

/// A `successful_payment`: recorded once per charge (a duplicate changes nothing), and what
/// it pays for granted in the same transaction. A payment for nothing vitte sells is kept as
/// `unmatched` for an operator to refund. Returns the new entitlement, if it changed.
pub async fn payment_received(deps: &DeskDeps, payment: &PaymentReceived) -> Option<Entitlement> {
    let now = deps.clock.now_millis();
    let renewal = payment.is_recurring && !payment.is_first_recurring;
    let store = &deps.commerce.store;
    let (record, change, audit): (NewPayment, EntitlementChange, AuditLine) = match match_payment(
        deps, payment,
    ) {
        Ok((payload, product)) => {
            let mut detail = format!("{} for {} XTR", product.id, payload.stars);
            // A renewal has no pre-checkout; a first payment should have had one. The Stars
            // are taken either way: the user gets what they paid for.
            if !renewal
                && !store
                    .checkout_accepted(payment.user_id, &payment.payload)
                    .await
                    .unwrap_or(true)
            {
                detail.push_str("; no matching pre-checkout was recorded (granted anyway)");
            }
            let expires_at = payment.subscription_expiration_date.map(|at| at * 1000);
            let (kind, days, change): (PaymentKind, u32, EntitlementChange) =
                match product.grant.clone() {
                    Grant::Plan {
                        subscription: true,
                        days,
                    } => {
                        let product_id = product.id.clone();
                        let charge = (!renewal).then(|| payment.charge_id.clone());
                        let kind = if renewal {
                            PaymentKind::Renewal
                        } else {
                            PaymentKind::Subscription
                        };
                        (
                            kind,
                            days,
                            Box::new(move |entitlement: Entitlement| {
                                entitlement.extend_subscription(
                                    &product_id,
                                    charge.as_deref(),
                                    expires_at,
                                    now,
                                )
                            }),
                        )
                    }
                    Grant::Plan { days, .. } => {
                        let product_id = product.id.clone();
                        (
                            PaymentKind::OneOff,
                            days,
                            Box::new(move |entitlement: Entitlement| {
                                entitlement.extend_plan(&product_id, days, now)
                            }),
                        )
                    }
                    Grant::Unlock(feature) => (
                        PaymentKind::OneOff,
                        0,
                        Box::new(move |entitlement: Entitlement| entitlement.unlock(feature)),
                    ),
                };
            let record = NewPayment {
                charge_id: payment.charge_id.clone(),
                user_id: payment.user_id,
                product_id: product.id.clone(),
                stars: payload.stars,
                kind,
                days_granted: days,
                status: "paid",
            };
            let event = if renewal { "renewed" } else { "paid" };
            let audit = line(
                payment.user_id,
                Some(&payment.charge_id),
                event,
                Source::Telegram,
                detail,
                payment.update_id,
            );
            (record, change, audit)
        }
        Err(reason) => {
            tracing::warn!(
                user_id = payment.user_id,
                charge_id = payment.charge_id,
                reason,
                "a payment for nothing vitte sells: kept as unmatched, for an operator to refund"
            );
            let record = NewPayment {
                charge_id: payment.charge_id.clone(),
                user_id: payment.user_id,
                product_id: String::new(),
                stars: u32::try_from(payment.total_amount).unwrap_or(0),
                kind: PaymentKind::OneOff,
                days_granted: 0,
                status: "unmatched",
            };
            let audit = line(
                payment.user_id,
                Some(&payment.charge_id),
                "payment_unmatched",
                Source::Telegram,
                reason,
                payment.update_id,
            );
            (record, Box::new(|entitlement| entitlement), audit)
        }
    };
    let status = record.status;
    match store.record_payment(&record, change, &audit).await {
        Ok(PaymentRecorded::New(entitlement)) => {
            deps.metrics
                .count_payment(STARS, if renewal { "renewed" } else { status });
            log_payment(deps, &audit).await;
            if status == "paid" {
                tell_paid(deps, payment, &record.product_id, &entitlement, renewal);
                Some(entitlement)
            } else {
                None
            }
        }
        Ok(PaymentRecorded::Duplicate) => {
            tracing::info!(
                charge_id = payment.charge_id,
                "a payment recorded before arrived again; nothing changed"
            );
            deps.metrics.count_payment(STARS, "duplicate");
            let again = line(
                payment.user_id,
                Some(&payment.charge_id),
                "payment_repeated",
                Source::Telegram,
                "recorded before (or refunded before it came): nothing granted".to_owned(),
                None,
            );
            if let Err(error) = store.audit(&again).await {
                tracing::warn!(%error, "could not record a repeated payment");
            }
            None
        }
        Err(error) => {
            // The update stays unhandled in the inbox: the next start records it.
            tracing::error!(%error, charge_id = payment.charge_id, "could not record a payment; it is replayed on the next start");
            deps.metrics.count_error(ErrorKind::Storage);
            None
        }
    }
}

/// Takes back what a payment granted, once: the plan's days (a refunded subscription stops
/// renewing) or the feature. Returns the user and their new entitlement.
async fn take_back(
    deps: &DeskDeps,
    charge_id: &str,
    source: Source,
    update_id: Option<i64>,
    fallback_user: Option<UserId>,
) -> Result<(UserId, Entitlement, String), RefundError> {
    let store = &deps.commerce.store;
    let storage = |error: crate::ports::StoreError| RefundError::Storage(error.to_string());
    let Some(payment) = store.payment(charge_id).await.map_err(storage)? else {
        if let Some(user_id) = fallback_user {
            // Telegram's updates out of order: the payment may still come. It will find
            // its charge refunded and grant nothing.
            let audit = line(
                user_id,
                Some(charge_id),
                "refund_before_payment",
                source,
                "no payment with this charge id yet: recorded as refunded".to_owned(),
                update_id,
            );
            store
                .record_early_refund(charge_id, &audit)
                .await
                .map_err(storage)?;
        }
        return Err(RefundError::UnknownCharge);
    };
    let now = deps.clock.now_millis();
    let grant = deps
        .commerce
        .catalogue
        .get(&payment.product_id)
        .map(|product| product.grant.clone());
    let days = payment.days_granted;
    let charge = charge_id.to_owned();
    let change: EntitlementChange = Box::new(move |entitlement: Entitlement| match grant {
        Some(Grant::Plan { .. }) => entitlement.withdraw_plan(days, &charge, now),
        Some(Grant::Unlock(feature)) => entitlement.lock(feature),
        None => entitlement,
    });
    let audit = line(
        payment.user_id,
        Some(charge_id),
        "refunded",
        source,
        format!("{} XTR for {:?}", payment.stars, payment.product_id),
        update_id,
    );
    match store
        .record_refund(charge_id, change, &audit)
        .await
        .map_err(storage)?
    {
        RefundRecorded::Refunded(entitlement) => {
            deps.metrics.count_payment(STARS, "refunded");
            log_payment(deps, &audit).await;
            Ok((payment.user_id, entitlement, payment.product_id))
        }
        RefundRecorded::AlreadyRefunded => {
            let again = line(
                payment.user_id,
                Some(charge_id),
                "refund_repeated",
                source,
                "refunded before: nothing changed".to_owned(),
                update_id,
            );
            store.audit(&again).await.map_err(storage)?;
            Err(RefundError::AlreadyRefunded)
        }
        RefundRecorded::Unknown => Err(RefundError::UnknownCharge),
    }
}

/// A `refunded_payment` message: what the payment granted is taken back, once.
pub async fn payment_refunded(
    deps: &DeskDeps,
    refund: &PaymentRefunded,
) -> Option<(UserId, Entitlement)> {
    match take_back(
        deps,
        &refund.charge_id,
        Source::Telegram,
        refund.update_id,
        Some(refund.user_id),
    )
    .await
    {
        Ok((user_id, entitlement, product_id)) => {
            let lang = Lang::from_telegram(refund.language_code.as_deref());
            tell_refunded(deps, refund.chat_id, lang, &product_id);
            Some((user_id, entitlement))
        }
        Err(error) => {
            tracing::info!(%error, charge_id = refund.charge_id, "a refund changed nothing");
            None
        }
    }
}

/// An operator's refund: Telegram gives the Stars back (`refundStarPayment`), then the grant
/// is taken back. A payment Telegram says was refunded already is taken back too.
pub async fn refund_by_operator(
    deps: &DeskDeps,
    charge_id: &str,
) -> Result<(UserId, Entitlement), RefundError> {
    let store = &deps.commerce.store;
    let payment = store
        .payment(charge_id)
        .await
        .map_err(|error| RefundError::Storage(error.to_string()))?
        .ok_or(RefundError::UnknownCharge)?;
    if payment.status == "refunded" {
        return Err(RefundError::AlreadyRefunded);
    }
    match deps
        .commerce
        .api
        .refund_star_payment(payment.user_id, charge_id)
        .await
    {
        Ok(()) => {}
        Err(PaymentCallError::Refused(reason)) if reason.contains("CHARGE_ALREADY_REFUNDED") => {
            tracing::info!(
                charge_id,
                "Telegram had refunded it already; taking the grant back"
            );
        }
        Err(error) => return Err(RefundError::Telegram(error.to_string())),
    }
    let (user_id, entitlement, product_id) =
        take_back(deps, charge_id, Source::Operator, None, None).await?;
    tell_refunded(deps, user_id, Lang::En, &product_id);
    Ok((user_id, entitlement))
}

/// A `subscription` update: canceled or active switches renewal off or on; a failed renewal
/// stops it and starts the grace period now.
pub async fn subscription_changed(
    deps: &DeskDeps,
    change: &SubscriptionChanged,
) -> Option<Entitlement> {
    let store = &deps.commerce.store;
    let signed = deps.commerce.signer.verify(&change.payload);
    let ours = signed
        .as_ref()
        .ok()
        .filter(|payload| payload.user_id == change.user_id)
        .and_then(|payload| deps.commerce.catalogue.get(&payload.product_id))
        .filter(|product| product.is_subscription());
    if ours.is_none() {
        let audit = line(
            change.user_id,
            None,
            "subscription_update_ignored",
            Source::Telegram,
            format!(
                "state {} for a payload that is not a subscription of this user",
                change.state.as_str()
            ),
            change.update_id,
        );
        if let Err(error) = store.audit(&audit).await {
            tracing::warn!(%error, "could not record an ignored subscription update");
        }
        return None;
    }
    let now = deps.clock.now_millis();
    let state = change.state;
    let apply: EntitlementChange = Box::new(move |entitlement: Entitlement| match state {
        SubscriptionState::Canceled => entitlement.with_renewal(false),
        SubscriptionState::Active => entitlement.with_renewal(true),
        SubscriptionState::Failed => entitlement.renewal_failed(now),
    });
    let audit = line(
        change.user_id,
        None,
        &format!("subscription_{}", state.as_str()),
        Source::Telegram,
        String::new(),
        change.update_id,
    );
    match store.change_entitlement(apply, &audit).await {
        Ok(entitlement) => {
            deps.metrics
                .count_payment(STARS, &format!("subscription_{}", state.as_str()));
            log_payment(deps, &audit).await;
            if state == SubscriptionState::Failed {
                let grace = millis(deps.commerce.limits.grace);
                let until = entitlement
                    .plan
                    .as_ref()
                    .map_or(now, |plan| plan.paid_until)
                    .saturating_add(grace);
                let text = fill(
                    shop(change.language_code.as_deref()).renewal_failed_notice,
                    &[("until", &format_local(until, deps.commerce.limits.zone))],
                );
                let event = change
                    .update_id
                    .map_or_else(|| now.to_string(), |id| format!("u{id}"));
                let notice = NoticePayload {
                    text,
                    paid_until: None,
                };
                deps.notifier.notify(notice_job(
                    NotificationKind::PaymentFailed,
                    change.user_id,
                    now,
                    &event,
                    notice,
                ));
            }
            Some(entitlement)
        }
        Err(error) => {
            tracing::error!(%error, "could not record a subscription update; it is replayed on the next start");
            deps.metrics.count_error(ErrorKind::Storage);
            None
        }
    }
}

/// The user cancels or resumes renewal (from /status): Telegram first
/// (`editUserStarSubscription`), then storage.
pub async fn set_renewal(
    deps: &DeskDeps,
    request: &SetRenewal,
) -> Result<Entitlement, RenewalError> {
    let store = &deps.commerce.store;
    let storage = |error: crate::ports::StoreError| RenewalError::Storage(error.to_string());
    let entitlement = store.entitlement(request.user_id).await.map_err(storage)?;
    let Some(charge) = entitlement
        .plan
        .as_ref()
        .and_then(|plan| plan.subscription_charge.clone())
    else {
        return Err(RenewalError::NoSubscription);
    };
    deps.commerce
        .api
        .edit_star_subscription(request.user_id, &charge, !request.renewing)
        .await
        .map_err(|error| RenewalError::Telegram(error.to_string()))?;
    let renewing = request.renewing;
    let event = if renewing {
        "renewal_on"
    } else {
        "renewal_off"
    };
    let audit = line(
        request.user_id,
        Some(&charge),
        event,
        Source::User,
        String::new(),
        None,
    );
    store
        .change_entitlement(
            Box::new(move |entitlement: Entitlement| entitlement.with_renewal(renewing)),
            &audit,
        )
        .await
        .map_err(storage)
}

/// An operator blocks or unblocks a user's purchases.
pub async fn set_blocked(deps: &DeskDeps, request: &SetBlocked) -> Result<(), String> {
    let event = if request.blocked {
        "blocked"
    } else {
        "unblocked"
    };
    let audit = line(
        request.user_id,
        None,
        event,
        Source::Operator,
        String::new(),
        None,
    );
    deps.commerce
        .store
        .set_blocked(request.blocked, &audit)
        .await
        .map_err(|error| error.to_string())
}

/// How many plan transitions one sweep records at most (the next sweep goes on).
const SWEEP_BATCH: usize = 500;

/// Records plans that entered grace or expired (telling their users), and refreshes
/// `vitte_subscriptions_active{plan}`.
pub async fn sweep(deps: &DeskDeps) {
    let now = deps.clock.now_millis();
    let limits = &deps.commerce.limits;
    let grace = millis(limits.grace);
    let store = &deps.commerce.store;
    let transitions = match store.plans_to_advance(now, grace, SWEEP_BATCH).await {
        Ok(transitions) => transitions,
        Err(error) => {
            tracing::warn!(%error, "the plan sweep could not read plans");
            deps.metrics.count_error(ErrorKind::Storage);
            return;
        }
    };
    for transition in transitions {
        let audit = line(
            transition.user_id,
            None,
            &format!("plan_{}", transition.state),
            Source::Timer,
            transition.product_id.clone(),
            None,
        );
        if let Err(error) = store.set_plan_state(&transition, &audit).await {
            tracing::warn!(%error, "the plan sweep could not record a transition");
            deps.metrics.count_error(ErrorKind::Storage);
            return;
        }
        let texts = shop(transition.language.as_deref());
        let (kind, text) = match transition.state {
            "grace" => (
                NotificationKind::GraceStarted,
                fill(
                    texts.grace_notice,
                    &[(
                        "until",
                        &format_local(transition.paid_until.saturating_add(grace), limits.zone),
                    )],
                ),
            ),
            "expired" => (
                NotificationKind::GraceEnded,
                fill(
                    texts.expired_notice,
                    &[("limit", &limits.free_daily_messages.to_string())],
                ),
            ),
            _ => continue,
        };
        let notice = NoticePayload {
            text,
            paid_until: Some(transition.paid_until),
        };
        deps.notifier.notify(notice_job(
            kind,
            transition.user_id,
            now,
            &transition.paid_until.to_string(),
            notice,
        ));
    }
    match store.open_plans(now, grace).await {
        Ok(counts) => {
            for product in deps.commerce.catalogue.all() {
                if matches!(product.grant, Grant::Plan { .. }) {
                    let open = counts
                        .iter()
                        .find(|(id, _)| *id == product.id)
                        .map_or(0, |(_, count)| *count);
                    deps.metrics
                        .subscriptions_active
                        .with_label_values(&[&product.id])
                        .set(open);
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not count open plans");
        }
    }
}
