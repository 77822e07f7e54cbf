//! The store, the daily limit and locked modes as a user meets them, on the in-memory ports
//! and a manual clock (the harness starts at 2023-11-14 22:13:20 UTC, 01:13:20 in Moscow).

use std::time::Duration;

use crate::domain::entitlement::Limits;
use crate::domain::notification::NotificationKind;
use crate::payments::messages::{PaymentReceived, PaymentUpdate};
use crate::payments::testing::PaymentCall;
use crate::payments::{InvoicePayload, PayloadSigner};
use crate::ports::Clock;
use crate::scheduler::testing::Asked;
use crate::session::buttons::ButtonData;
use crate::sync::lock;
use crate::testing::*;

const USER: i64 = 42;

fn small_free_tier(messages: u32) -> SessionHarness {
    SessionHarness::with_limits(Limits {
        free_daily_messages: messages,
        paid_daily_messages: 100,
        ..Limits::default()
    })
}

fn llm_calls(h: &SessionHarness) -> usize {
    lock(&h.llm.requests).len()
}

#[actix_rt::test]
async fn the_free_limit_is_told_kindly_keeps_the_message_and_starts_over_at_local_midnight() {
    let h = small_free_tier(2);
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "one")).await;
    h.handle(text(USER, "two")).await;
    assert_eq!(llm_calls(&h), 2);

    h.handle(text(USER, "three")).await;
    assert_eq!(llm_calls(&h), 2, "no LLM call past the limit");
    let notice = h.last_text(USER);
    assert!(
        notice.starts_with("That was all 2 free messages for today; your message is kept."),
        "{notice}"
    );
    // Moscow's next midnight: 2023-11-16 00:00 MSK.
    assert!(notice.contains("2023-11-16 00:00"), "{notice}");
    assert_eq!(h.last_buttons(USER), ["$", "retry"]);
    assert!(
        h.store
            .messages()
            .contains(&("three".to_owned(), "unanswered")),
        "the message that hit the limit is kept"
    );
    assert_eq!(
        h.metrics
            .entitlement_denials_total
            .with_label_values(&["free_limit"])
            .get(),
        1
    );
    // "Continue" costs a call too, and is refused the same way.
    h.handle(press(USER, "more")).await;
    assert_eq!(llm_calls(&h), 2);

    // The count is in storage too: a session passivated by the idle timeout (the clock
    // jumps below) loads it back.
    assert_eq!(h.store.replies_since(USER, 0), 2);
    // One second before local midnight: still over; at midnight the count starts over.
    let midnight = 1_700_082_000_000;
    h.clock.set(midnight - 1_000);
    h.handle(text(USER, "still me")).await;
    assert_eq!(llm_calls(&h), 2);
    h.clock.set(midnight);
    h.handle(text(USER, "a new day")).await;
    assert_eq!(llm_calls(&h), 3);
    assert!(h.last_text(USER).contains("a new day"), "answered");
    h.router.stop();
}

#[actix_rt::test]
async fn a_payment_lifts_the_limit_of_a_live_session_and_retry_answers_the_kept_message() {
    let h = small_free_tier(1);
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "one")).await;
    h.handle(text(USER, "two")).await;
    assert_eq!(llm_calls(&h), 1);

    let payload = PayloadSigner::new(b"test").sign(&InvoicePayload {
        product_id: "week".into(),
        user_id: USER,
        stars: 150,
    });
    h.desk.deliver(PaymentUpdate::Received(PaymentReceived {
        update_id: None,
        user_id: USER,
        chat_id: USER,
        language_code: None,
        charge_id: "c1".into(),
        currency: "XTR".into(),
        total_amount: 150,
        payload,
        is_recurring: false,
        is_first_recurring: false,
        subscription_expiration_date: None,
    }));
    // The thanks is scheduled as a notice (the scheduler sends it).
    eventually("the thanks", || {
        h.notifier.asked().iter().any(|asked| {
            matches!(asked, Asked::Notify(job)
                if job.kind == NotificationKind::PaymentSucceeded
                    && job.payload.contains("Thank you! A week is yours until"))
        })
    })
    .await;
    assert_eq!(h.payments.payment_count(), 1);
    // The session learns of it without a database read: /status shows the plan.
    let mut shown = String::new();
    for _ in 0..100 {
        h.handle(command(USER, "/status")).await;
        shown = h.last_text(USER);
        if shown.contains("paid until") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        shown.contains("A week, paid until 2023-11-22 01:13"),
        "{shown}"
    );
    assert!(shown.contains("Today: 1 of 100 messages"), "{shown}");

    h.handle(press(USER, "retry")).await;
    assert_eq!(llm_calls(&h), 2, "the kept message is answered");
    assert!(h.last_text(USER).contains("two"));
    h.router.stop();
}

#[actix_rt::test]
async fn a_locked_mode_offers_its_unlock_and_buying_sends_a_stars_invoice() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    h.handle(command(USER, "/settings")).await;
    let labels = h.last_labels(USER);
    assert_eq!(
        labels,
        ["Intense mode: 🔒", "Fantasy scenes: 🔒", "🔔 Notifications"]
    );

    h.handle(press(USER, "t:intense")).await;
    assert_eq!(
        h.last_text(USER),
        "Intense mode is a purchase: Intense mode for 150 ⭐, for every dialog, for good."
    );
    assert_eq!(h.last_buttons(USER), ["$:intense_mode"]);

    h.handle(press(USER, "$:intense_mode")).await;
    let calls = h.payments_api.calls();
    let Some(PaymentCall::Invoice { chat, invoice }) = calls.last() else {
        panic!("an invoice: {calls:?}");
    };
    assert_eq!(
        (*chat, invoice.stars, invoice.subscription),
        (USER, 150, false)
    );
    let payload = PayloadSigner::new(b"test").verify(&invoice.payload);
    assert_eq!(
        payload,
        Ok(InvoicePayload {
            product_id: "intense_mode".into(),
            user_id: USER,
            stars: 150
        })
    );
    h.router.stop();
}

#[actix_rt::test]
async fn the_store_lists_what_is_on_sale_and_the_subscription_is_a_link() {
    let h = SessionHarness::standard();
    h.handle(command(USER, "/store")).await;
    assert_eq!(
        h.last_buttons(USER),
        [
            "$:week",
            "$:month",
            "$:year",
            "$:intense_mode",
            "$:fantasy_scenes",
            "me"
        ]
    );
    h.handle(press(
        USER,
        &ButtonData::Buy {
            product: "month".into(),
        }
        .encode(),
    ))
    .await;
    let calls = h.payments_api.calls();
    assert!(
        matches!(calls.last(), Some(PaymentCall::Link { invoice }) if invoice.subscription && invoice.stars == 450),
        "{calls:?}"
    );
    let shown = h.messenger.messages_to(USER).pop().expect("a message");
    assert!(
        shown
            .text
            .starts_with("A month: Unlimited messages, renewed monthly. 450 ⭐")
    );
    let button = shown.keyboard.expect("keyboard").rows[0][0].clone();
    assert_eq!(button.url.as_deref(), Some("https://t.me/$invoice"));
    // A product no longer known (an old button) shows the store again.
    h.handle(press(USER, "$:lifetime")).await;
    assert!(h.last_text(USER).starts_with("That is no longer on sale."));
    h.router.stop();
}

#[actix_rt::test]
async fn status_of_a_free_user_shows_the_limit_and_usage() {
    let h = small_free_tier(5);
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "hello")).await;
    h.handle(command(USER, "/status")).await;
    let status = h.last_text(USER);
    assert_eq!(
        status,
        "📊 Your plan\nFree: 5 messages a day.\nNothing unlocked yet.\n\
         Today: 1 of 5 messages (the count starts over at 2023-11-16 00:00)."
    );
    assert_eq!(h.last_buttons(USER), ["$"]);
    assert_eq!(h.clock.now_millis(), 1_700_000_000_000);
    h.router.stop();
}
