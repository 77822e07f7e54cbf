//! The payment desk's state machines on the in-memory ports, in controlled time.

use std::sync::Arc;
use std::time::Duration;

use super::handlers::{
    payment_received, payment_refunded, pre_checkout, refund_by_operator, set_renewal,
    subscription_changed, sweep,
};
use super::messages::{
    PaymentReceived, PaymentRefunded, PreCheckout, RefundError, RenewalError, SetRenewal,
    SubscriptionChanged, SubscriptionState,
};
use super::testing::{MemoryPaymentStore, PaymentCall, RecordingPaymentsApi};
use super::{Commerce, DeskDeps, InvoicePayload, PayloadSigner};
use crate::domain::catalogue::{Catalogue, Feature, TEST_CATALOGUE};
use crate::domain::entitlement::{Entitlement, Limits, PlanState};
use crate::domain::notification::NotificationKind;
use crate::metrics::Metrics;
use crate::ports::ManualClock;
use crate::ports::payments::PaymentStore;
use crate::scheduler::planning::NoticePayload;
use crate::scheduler::testing::{Asked, RecordingNotifier};
use crate::supervision::test_supervisor;
use crate::testing::RecordingMessenger;

const DAY: i64 = 86_400_000;
const USER: i64 = 42;

struct Desk {
    deps: DeskDeps,
    store: Arc<MemoryPaymentStore>,
    api: Arc<RecordingPaymentsApi>,
    messenger: Arc<RecordingMessenger>,
    notifier: Arc<RecordingNotifier>,
    clock: Arc<ManualClock>,
    signer: PayloadSigner,
    metrics: Metrics,
}

fn desk_with(catalogue: &str) -> Desk {
    let clock = ManualClock::starting_at(1_800_000_000_000);
    let store = Arc::new(MemoryPaymentStore::new(clock.clone()));
    let api = Arc::new(RecordingPaymentsApi::default());
    let messenger = Arc::new(RecordingMessenger::default());
    let notifier = Arc::new(RecordingNotifier::default());
    let signer = PayloadSigner::new(b"secret");
    let (supervisor, metrics) = test_supervisor(5);
    let deps = DeskDeps {
        commerce: Commerce {
            catalogue: Arc::new(Catalogue::parse("catalogue.toml", catalogue).expect("catalogue")),
            limits: Limits::default(),
            signer: signer.clone(),
            api: api.clone(),
            store: store.clone(),
        },
        messenger: messenger.clone(),
        notifier: notifier.clone(),
        metrics: metrics.clone(),
        supervisor,
        clock: clock.clone(),
        sweep_every: Duration::from_secs(60),
        events: Arc::new(crate::testing::MemoryEvents::default()),
    };
    Desk {
        deps,
        store,
        api,
        messenger,
        notifier,
        clock,
        signer,
        metrics,
    }
}

fn desk() -> Desk {
    desk_with(TEST_CATALOGUE)
}

impl Desk {
    fn payload(&self, product: &str, user_id: i64, stars: u32) -> String {
        self.signer.sign(&InvoicePayload {
            product_id: product.into(),
            user_id,
            stars,
        })
    }

    fn query(&self, id: &str, payload: String, amount: i64) -> PreCheckout {
        PreCheckout {
            update_id: None,
            query_id: id.into(),
            user_id: USER,
            language_code: Some("en".into()),
            currency: "XTR".into(),
            total_amount: amount,
            payload,
        }
    }

    fn paid(&self, charge: &str, product: &str, stars: u32) -> PaymentReceived {
        PaymentReceived {
            update_id: None,
            user_id: USER,
            chat_id: USER,
            language_code: Some("en".into()),
            charge_id: charge.into(),
            currency: "XTR".into(),
            total_amount: i64::from(stars),
            payload: self.payload(product, USER, stars),
            is_recurring: false,
            is_first_recurring: false,
            subscription_expiration_date: None,
        }
    }

    async fn buy(&self, charge: &str, product: &str, stars: u32) -> Option<Entitlement> {
        let payload = self.payload(product, USER, stars);
        pre_checkout(&self.deps, &self.query(charge, payload, i64::from(stars))).await;
        payment_received(&self.deps, &self.paid(charge, product, stars)).await
    }

    async fn entitlement(&self) -> Entitlement {
        self.store.entitlement(USER).await.expect("entitlement")
    }

    /// The notices scheduled for the user now (not the warnings due later), in order.
    fn scheduled(&self) -> Vec<String> {
        self.notifier
            .asked()
            .into_iter()
            .filter_map(|asked| match asked {
                Asked::Notify(job)
                    if job.user_id == USER && job.kind != NotificationKind::SubscriptionEnding =>
                {
                    serde_json::from_str::<NoticePayload>(&job.payload)
                        .ok()
                        .map(|notice| notice.text)
                }
                _ => None,
            })
            .collect()
    }

    /// What the user is told: the notices scheduled, then the messages sent at once
    /// (refunds), once there are `count`.
    async fn notices(&self, count: usize) -> Vec<String> {
        let all = || {
            let mut all = self.scheduled();
            all.extend(self.messenger.texts_to(USER));
            all
        };
        crate::testing::eventually("the user's notices", || all().len() >= count).await;
        all()
    }

    fn now(&self) -> i64 {
        use crate::ports::Clock;
        self.clock.now_millis()
    }

    fn paid_until(entitlement: &Entitlement) -> i64 {
        entitlement.plan.as_ref().expect("a plan").paid_until
    }
}

#[tokio::test]
async fn a_valid_pre_checkout_is_accepted_and_every_bad_one_refused_with_a_reason() {
    let desk = desk();
    let valid = desk.payload("week", USER, 150);
    pre_checkout(&desk.deps, &desk.query("ok", valid.clone(), 150)).await;
    desk.store
        .set_blocked(
            true,
            &crate::ports::payments::AuditLine {
                user_id: 7,
                charge_id: None,
                event: "blocked".into(),
                source: crate::ports::payments::Source::Operator,
                detail: String::new(),
                update_id: None,
            },
        )
        .await
        .expect("blocked");
    let mut forged = valid.clone();
    forged.replace_range(forged.len() - 1.., "0");
    let bad = [
        (desk.query("forged", forged, 150), "not valid"),
        (
            desk.query("foreign", desk.payload("week", 43, 150), 150),
            "not valid",
        ),
        (
            desk.query("unknown", desk.payload("lifetime", USER, 150), 150),
            "not valid",
        ),
        (
            desk.query("cheaper", desk.payload("week", USER, 1), 1),
            "price has changed",
        ),
        (
            PreCheckout {
                currency: "USD".into(),
                ..desk.query("usd", valid.clone(), 150)
            },
            "not valid",
        ),
        (
            PreCheckout {
                user_id: 7,
                ..desk.query("blocked", desk.payload("week", 7, 150), 150)
            },
            "not available for this account",
        ),
    ];
    for (query, _) in &bad {
        pre_checkout(&desk.deps, query).await;
    }
    let answers = desk.api.pre_checkout_answers();
    assert_eq!(answers[0], None, "the valid one is accepted");
    for (answer, (query, reason)) in answers[1..].iter().zip(&bad) {
        let refusal = answer.as_deref().unwrap_or_default();
        assert!(refusal.contains(reason), "{}: {refusal:?}", query.query_id);
    }
    let events = desk.store.events(USER);
    assert_eq!(events[0], "pre_checkout_accepted");
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "pre_checkout_refused")
            .count(),
        5
    );
}

#[tokio::test]
async fn an_off_sale_product_is_refused_at_checkout() {
    let off = TEST_CATALOGUE.replace(
        "stars = 2990\ndays = 365",
        "stars = 2990\ndays = 365\non_sale = false",
    );
    let desk = desk_with(&off);
    let payload = desk.payload("year", USER, 2990);
    pre_checkout(&desk.deps, &desk.query("q", payload, 2990)).await;
    let answer = desk.api.pre_checkout_answers().pop().flatten();
    assert!(answer.is_some_and(|text| text.contains("no longer on sale")));
}

#[tokio::test]
async fn a_payment_is_granted_once_however_often_it_arrives() {
    let desk = desk();
    let now = desk.now();
    let first = desk.buy("c1", "week", 150).await.expect("granted");
    assert_eq!(Desk::paid_until(&first), now + 7 * DAY);
    // The same charge again (a redelivery, a replay): nothing changes.
    assert_eq!(
        payment_received(&desk.deps, &desk.paid("c1", "week", 150)).await,
        None
    );
    assert_eq!(Desk::paid_until(&desk.entitlement().await), now + 7 * DAY);
    assert_eq!(desk.store.payment_count(), 1);
    assert_eq!(
        desk.metrics
            .payments_total
            .with_label_values(&["telegram_stars", "duplicate"])
            .get(),
        1
    );
    // The user is thanked once, with the plan's end.
    let thanks = desk.notices(1).await;
    assert_eq!(thanks.len(), 1, "{thanks:?}");
    assert!(thanks[0].starts_with("Thank you! A week is yours until"));
}

#[tokio::test]
async fn one_off_plans_extend_from_the_later_of_now_and_the_current_end() {
    let desk = desk();
    let start = desk.now();
    desk.buy("c1", "week", 150).await.expect("first");
    desk.clock.advance(Duration::from_secs(2 * 86_400));
    let second = desk.buy("c2", "week", 150).await.expect("second");
    assert_eq!(
        Desk::paid_until(&second),
        start + 14 * DAY,
        "from the end, not now"
    );
    // Long after it ended, a new purchase runs from now.
    desk.clock.advance(Duration::from_secs(30 * 86_400));
    let third = desk.buy("c3", "week", 150).await.expect("third");
    assert_eq!(Desk::paid_until(&third), desk.now() + 7 * DAY);
}

#[tokio::test]
async fn a_subscription_renews_and_keeps_its_first_charge() {
    let desk = desk();
    let expires = (desk.now() + 30 * DAY) / 1000;
    let first = PaymentReceived {
        is_recurring: true,
        is_first_recurring: true,
        subscription_expiration_date: Some(expires),
        ..desk.paid("s1", "month", 450)
    };
    let payload = first.payload.clone();
    pre_checkout(&desk.deps, &desk.query("s1", payload, 450)).await;
    let granted = payment_received(&desk.deps, &first).await.expect("granted");
    let plan = granted.plan.clone().expect("plan");
    assert_eq!(plan.paid_until, expires * 1000);
    assert!(plan.renewing);
    assert_eq!(plan.subscription_charge.as_deref(), Some("s1"));
    // Thirty days on, Telegram renews it: no pre-checkout, a new charge.
    desk.clock.advance(Duration::from_secs(30 * 86_400));
    let renewal = PaymentReceived {
        is_first_recurring: false,
        subscription_expiration_date: Some(expires + 30 * 86_400),
        ..first.clone()
    };
    let renewal = PaymentReceived {
        charge_id: "s2".into(),
        ..renewal
    };
    let renewed = payment_received(&desk.deps, &renewal)
        .await
        .expect("renewed");
    let plan = renewed.plan.expect("plan");
    assert_eq!(plan.paid_until, (expires + 30 * 86_400) * 1000);
    assert_eq!(plan.subscription_charge.as_deref(), Some("s1"));
    assert_eq!(
        desk.store.events(USER).last().map(String::as_str),
        Some("renewed")
    );
}

#[tokio::test]
async fn a_payment_for_nothing_vitte_sells_is_kept_unmatched_and_grants_nothing() {
    let desk = desk();
    let forged = PaymentReceived {
        payload: "p1.year.42.1.00000000000000000000000000000000".into(),
        total_amount: 1,
        ..desk.paid("x1", "year", 1)
    };
    assert_eq!(payment_received(&desk.deps, &forged).await, None);
    assert_eq!(desk.entitlement().await, Entitlement::default());
    let (payments, _) = desk.store.history(USER).await.expect("history");
    assert_eq!(payments[0].status, "unmatched");
    assert_eq!(desk.store.events(USER), ["payment_unmatched"]);
}

#[tokio::test]
async fn a_first_payment_without_a_recorded_pre_checkout_is_granted_and_noted() {
    let desk = desk();
    let granted = payment_received(&desk.deps, &desk.paid("c1", "week", 150)).await;
    assert!(
        granted.is_some(),
        "the Stars were taken: the user gets the plan"
    );
    let (_, audit) = desk.store.history(USER).await.expect("history");
    assert!(
        audit[0].detail.contains("no matching pre-checkout"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn an_unlock_is_granted_and_a_refund_takes_it_back_once() {
    let desk = desk();
    let granted = desk.buy("u1", "intense_mode", 150).await.expect("granted");
    assert!(granted.has(Feature::IntenseMode));
    let refund = PaymentRefunded {
        update_id: Some(9),
        user_id: USER,
        chat_id: USER,
        language_code: None,
        charge_id: "u1".into(),
    };
    let (_, after) = payment_refunded(&desk.deps, &refund)
        .await
        .expect("refunded");
    assert!(!after.has(Feature::IntenseMode));
    assert!(desk.store.is_handled(9));
    // Delivered again: nothing changes, and the audit says so.
    assert_eq!(payment_refunded(&desk.deps, &refund).await, None);
    assert_eq!(
        desk.store.events(USER).last().map(String::as_str),
        Some("refund_repeated")
    );
    assert!(
        desk.notices(2)
            .await
            .last()
            .is_some_and(|text| text.contains("refunded"))
    );
}

#[tokio::test]
async fn an_operator_refund_goes_through_telegram_and_takes_the_plan_back() {
    let desk = desk();
    desk.buy("c1", "week", 150).await.expect("first week");
    desk.buy("c2", "week", 150).await.expect("second week");
    let (user, after) = refund_by_operator(&desk.deps, "c2")
        .await
        .expect("refunded");
    assert_eq!(user, USER);
    assert_eq!(
        Desk::paid_until(&after),
        desk.now() + 7 * DAY,
        "one week left"
    );
    assert!(desk.api.calls().contains(&PaymentCall::Refund {
        user_id: USER,
        charge_id: "c2".into()
    }));
    assert_eq!(
        refund_by_operator(&desk.deps, "c2").await,
        Err(RefundError::AlreadyRefunded)
    );
    assert_eq!(
        refund_by_operator(&desk.deps, "nope").await,
        Err(RefundError::UnknownCharge)
    );
    // The last week refunded: no plan is left (and no grace is earned by a refund).
    let (_, none) = refund_by_operator(&desk.deps, "c1")
        .await
        .expect("refunded");
    assert_eq!(none.plan, None);
}

#[tokio::test]
async fn telegram_refusing_a_refund_changes_nothing_unless_it_was_refunded_already() {
    let desk = desk();
    desk.buy("c1", "week", 150).await.expect("bought");
    desk.api.refuse_refunds("Bad Request: CHARGE_NOT_FOUND");
    assert!(matches!(
        refund_by_operator(&desk.deps, "c1").await,
        Err(RefundError::Telegram(_))
    ));
    assert!(desk.entitlement().await.plan.is_some());
    desk.api
        .refuse_refunds("Bad Request: CHARGE_ALREADY_REFUNDED");
    let (_, after) = refund_by_operator(&desk.deps, "c1")
        .await
        .expect("taken back");
    assert_eq!(after.plan, None);
}

async fn subscribe(desk: &Desk) {
    let first = PaymentReceived {
        is_recurring: true,
        is_first_recurring: true,
        ..desk.paid("s1", "month", 450)
    };
    payment_received(&desk.deps, &first)
        .await
        .expect("subscribed");
}

fn change(desk: &Desk, state: SubscriptionState, user_id: i64) -> SubscriptionChanged {
    SubscriptionChanged {
        update_id: None,
        user_id,
        language_code: None,
        payload: desk.payload("month", user_id, 450),
        state,
    }
}

#[tokio::test]
async fn subscription_updates_switch_renewal_and_a_failed_renewal_starts_the_grace() {
    let desk = desk();
    subscribe(&desk).await;
    let canceled = subscription_changed(
        &desk.deps,
        &change(&desk, SubscriptionState::Canceled, USER),
    )
    .await
    .expect("changed");
    assert!(!canceled.plan.as_ref().expect("plan").renewing);
    let active = subscription_changed(&desk.deps, &change(&desk, SubscriptionState::Active, USER))
        .await
        .expect("changed");
    assert!(active.plan.as_ref().expect("plan").renewing);
    let failed = subscription_changed(&desk.deps, &change(&desk, SubscriptionState::Failed, USER))
        .await
        .expect("changed");
    let grace = desk.deps.commerce.limits.grace;
    assert_eq!(
        failed.plan_state(desk.now(), grace),
        PlanState::Grace {
            until: desk.now() + 3 * DAY
        }
    );
    assert!(
        desk.notices(2)
            .await
            .last()
            .is_some_and(|text| text.contains("could not renew"))
    );
    // A subscription payload of someone else changes nothing.
    let mut foreign = change(&desk, SubscriptionState::Active, USER);
    foreign.payload = desk.payload("month", 43, 450);
    assert_eq!(subscription_changed(&desk.deps, &foreign).await, None);
    assert_eq!(
        desk.store.events(USER).last().map(String::as_str),
        Some("subscription_update_ignored")
    );
}

#[tokio::test]
async fn the_user_switches_renewal_through_telegram() {
    let desk = desk();
    let request = SetRenewal {
        user_id: USER,
        renewing: false,
    };
    assert_eq!(
        set_renewal(&desk.deps, &request).await,
        Err(RenewalError::NoSubscription)
    );
    subscribe(&desk).await;
    let after = set_renewal(&desk.deps, &request).await.expect("switched");
    assert!(!after.plan.expect("plan").renewing);
    assert!(desk.api.calls().contains(&PaymentCall::EditSubscription {
        user_id: USER,
        charge_id: "s1".into(),
        canceled: true
    }));
}

#[tokio::test]
async fn the_sweep_records_grace_and_expiry_once_each_and_tells_the_user() {
    let desk = desk();
    desk.buy("c1", "week", 150).await.expect("bought");
    sweep(&desk.deps).await;
    assert_eq!(
        desk.metrics
            .subscriptions_active
            .with_label_values(&["week"])
            .get(),
        1
    );
    desk.clock.advance(Duration::from_secs(7 * 86_400));
    sweep(&desk.deps).await;
    sweep(&desk.deps).await;
    desk.clock.advance(Duration::from_secs(3 * 86_400));
    sweep(&desk.deps).await;
    let timer_events: Vec<String> = desk
        .store
        .events(USER)
        .into_iter()
        .filter(|event| event.starts_with("plan_"))
        .collect();
    assert_eq!(timer_events, ["plan_grace", "plan_expired"]);
    let notices = desk.notices(3).await;
    assert!(
        notices
            .iter()
            .any(|text| text.starts_with("Your plan has ended"))
    );
    assert!(
        notices
            .last()
            .is_some_and(|text| text.starts_with("Your plan is over"))
    );
    assert_eq!(
        desk.metrics
            .subscriptions_active
            .with_label_values(&["week"])
            .get(),
        0
    );
}

#[tokio::test]
async fn a_refund_before_its_payment_leaves_the_payment_granting_nothing() {
    let desk = desk();
    let refund = PaymentRefunded {
        update_id: Some(3),
        user_id: USER,
        chat_id: USER,
        language_code: None,
        charge_id: "late".into(),
    };
    assert_eq!(payment_refunded(&desk.deps, &refund).await, None);
    assert!(desk.store.is_handled(3));
    assert_eq!(
        payment_received(&desk.deps, &desk.paid("late", "week", 150)).await,
        None
    );
    assert_eq!(desk.entitlement().await, Entitlement::default());
    assert_eq!(
        desk.store.events(USER),
        ["refund_before_payment", "payment_repeated"]
    );
}

#[tokio::test]
async fn a_plan_schedules_its_thanks_now_and_its_ending_warning_three_days_before() {
    let desk = desk();
    let bought = desk.buy("c1", "week", 150).await.expect("bought");
    let paid_until = bought.plan.expect("a plan").paid_until;
    let jobs: Vec<_> = desk
        .notifier
        .asked()
        .into_iter()
        .filter_map(|asked| match asked {
            Asked::Notify(job) => Some(job),
            _ => None,
        })
        .collect();
    let kinds: Vec<_> = jobs.iter().map(|job| (job.kind, job.due_at)).collect();
    assert_eq!(
        kinds,
        [
            (NotificationKind::PaymentSucceeded, desk.now()),
            (NotificationKind::SubscriptionEnding, paid_until - 3 * DAY),
        ]
    );
    let warning: NoticePayload = serde_json::from_str(&jobs[1].payload).expect("payload");
    assert_eq!(warning.paid_until, Some(paid_until));
    assert!(
        warning.text.contains("will not renew by itself"),
        "{}",
        warning.text
    );
    // The same payment delivered again schedules nothing new (the keys are the same, too).
    let keys: Vec<_> = jobs.iter().map(|job| job.key.clone()).collect();
    assert_eq!(
        keys,
        [
            "payment_succeeded:42:c1",
            &format!("subscription_ending:42:{paid_until}")
        ]
    );
}
