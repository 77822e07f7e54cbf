//! Paying users, through the fake Bot API as Telegram does it: Stars invoices, pre-checkout,
//! payments once per charge, subscriptions in controlled time, refunds, and the daily limit.

use std::time::Duration;

use serde_json::Value;

use crate::on_both_backends;
use crate::support::fake_telegram::successful_payment_update;
use crate::support::payments::Bill;
use crate::support::{Backend, TestApp, TestOptions, button_data, button_labels, wait_until};

const DAY: Duration = Duration::from_secs(86_400);

on_both_backends!(
    each_product_kind_is_bought_with_stars,
    the_same_payment_delivered_twice_at_once_is_granted_once,
    forged_foreign_and_repriced_invoices_are_refused_and_unmatched_payments_kept,
    a_subscription_renews_cancels_fails_and_expires_in_controlled_time,
    refunds_by_operator_and_by_update_take_the_grant_back_once,
    the_daily_limit_is_reached_and_starts_over_at_the_zones_midnight,
    a_locked_feature_offers_its_purchase,
    payment_updates_arrive_by_polling_too,
);

/// The newest message to `user`.
fn newest(app: &TestApp, user: i64) -> Value {
    app.telegram.sent_messages(user).pop().expect("a message")
}

async fn status_text(app: &TestApp, user: i64) -> String {
    let before = app.telegram.sent_texts(user).len();
    app.user_says(user, "/status").await;
    app.wait_for_texts(user, before + 1).await;
    app.telegram.sent_texts(user).pop().unwrap_or_default()
}

async fn each_product_kind_is_bought_with_stars(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40101;
    app.user_says(user, "/store").await;
    app.wait_for_texts(user, 1).await;
    assert_eq!(
        button_data(&newest(&app, user)),
        [
            "$:week",
            "$:month",
            "$:year",
            "$:intense_mode",
            "$:fantasy_scenes",
            "me"
        ]
    );

    // A one-off plan: an invoice in the chat (the fake refuses anything but one XTR price
    // and an empty provider token).
    let week = app.invoice_for(user, "week").await;
    assert_eq!((week.stars, week.subscription), (150, false));
    assert_eq!(app.telegram.calls_to("sendInvoice").len(), 1);
    let answer = app.pre_checkout(user, &week.payload, 150).await;
    assert_eq!(answer["ok"], true);
    app.paid(user, &week, "w1", None).await;
    app.wait_for_last_text_starting(user, "Thank you! A week is yours until")
        .await;
    let status = status_text(&app, user).await;
    assert!(status.contains("A week, paid until"), "{status}");
    assert_eq!(
        app.metric("payments_total{provider=\"telegram_stars\",status=\"paid\"}")
            .await,
        1.0
    );

    // An unlock.
    app.user_buys(user, "fantasy_scenes").await;
    let status = status_text(&app, user).await;
    assert!(status.contains("Unlocked: Fantasy scenes."), "{status}");

    // The subscription: a link made with createInvoiceLink and its 30-day period.
    let month = app.invoice_for(user, "month").await;
    assert_eq!((month.stars, month.subscription), (450, true));
    wait_until("the subscription's link", || {
        let message = newest(&app, user);
        message["reply_markup"]["inline_keyboard"][0][0]["url"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    let answer = app.pre_checkout(user, &month.payload, 450).await;
    assert_eq!(answer["ok"], true);
    let expires = app.clock_now_seconds() + 30 * 86_400 + 7 * 86_400;
    app.paid(user, &month, "s1", Some((true, expires))).await;
    app.wait_for_last_text_starting(user, "Thank you! A month is yours until")
        .await;
    let status = status_text(&app, user).await;
    assert!(
        status.contains("Renews by itself every 30 days."),
        "{status}"
    );
    assert_eq!(
        app.payment_events(user).await,
        [
            "pre_checkout_accepted",
            "paid",
            "pre_checkout_accepted",
            "paid",
            "pre_checkout_accepted",
            "paid"
        ]
    );
    assert_eq!(
        app.metric("subscriptions_active{plan=\"month\"}").await,
        0.0,
        "counted by the sweep, which has not run yet"
    );
    app.clock.advance(Duration::from_secs(61));
    crate::support::wait_until_async("the sweep counts the open plan", || async {
        app.metric("subscriptions_active{plan=\"month\"}").await == 1.0
    })
    .await;
    app.stop().await;
}

async fn the_same_payment_delivered_twice_at_once_is_granted_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40201;
    let week = app.invoice_for(user, "week").await;
    app.pre_checkout(user, &week.payload, 150).await;
    app.telegram.charge("dup", user, false);
    // Two deliveries of one charge (under two update ids, as a retrying Telegram and a
    // replay could), at the same moment.
    let first =
        successful_payment_update(app.next_update_id(), user, &week.payload, 150, "dup", None);
    let second =
        successful_payment_update(app.next_update_id(), user, &week.payload, 150, "dup", None);
    let (a, b) = tokio::join!(app.post_update(&first), app.post_update(&second));
    assert_eq!((a.as_u16(), b.as_u16()), (200, 200));
    // And the first update itself again.
    assert_eq!(app.post_update(&first).await.as_u16(), 200);
    app.wait_for_payment_event(user, "paid").await;
    crate::support::wait_until_async("the second delivery found a duplicate", || async {
        app.payment_event_count(user, "payment_repeated").await == 1
    })
    .await;
    assert_eq!(
        app.metric("payments_total{provider=\"telegram_stars\",status=\"duplicate\"}")
            .await,
        1.0
    );
    let payments = app.payments_of(user).await;
    assert_eq!(payments["payments"].as_array().map(Vec::len), Some(1));
    let until = payments["entitlement"]["plan"]["paid_until"]
        .as_i64()
        .expect("a plan");
    assert_eq!(
        until,
        app.clock_now_millis() + 7 * 86_400_000,
        "seven days, once"
    );
    assert_eq!(app.thanks_count(user), 1);
    app.stop().await;
}

async fn forged_foreign_and_repriced_invoices_are_refused_and_unmatched_payments_kept(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let user = 40301;
    let week = app.invoice_for(user, "week").await;
    let mut forged = week.payload.clone();
    forged.replace_range(forged.len() - 4.., "0000");
    let cheaper = week.payload.replace(".150.", ".15.");
    let someone_else = app.invoice_for(40302, "week").await;
    for (payload, stars, reason) in [
        (forged.as_str(), 150, "not valid"),
        (cheaper.as_str(), 15, "not valid"),
        (someone_else.payload.as_str(), 150, "not valid"),
        (week.payload.as_str(), 100, "price has changed"),
    ] {
        let answer = app.pre_checkout(user, payload, stars).await;
        assert_eq!(answer["ok"], false, "{payload}");
        let message = answer["error_message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{payload}: {message}");
    }
    // Money for a payload vitte never signed: kept for an operator, nothing granted.
    let forged_bill = Bill {
        payload: forged,
        stars: 150,
        subscription: false,
    };
    app.paid(user, &forged_bill, "x1", None).await;
    app.wait_for_payment_event(user, "payment_unmatched").await;
    let payments = app.payments_of(user).await;
    assert_eq!(payments["payments"][0]["status"], "unmatched");
    assert_eq!(payments["entitlement"]["plan"], Value::Null);
    let refused = app.payment_event_count(user, "pre_checkout_refused").await;
    assert_eq!(refused, 4);
    app.stop().await;
}

async fn a_subscription_renews_cancels_fails_and_expires_in_controlled_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40401;
    let month = app.invoice_for(user, "month").await;
    app.pre_checkout(user, &month.payload, 450).await;
    let expires = app.clock_now_seconds() + 30 * 86_400;
    app.paid(user, &month, "s1", Some((true, expires))).await;
    app.wait_for_last_text_starting(user, "Thank you! A month is yours until")
        .await;

    // The user cancels renewal from /status (editUserStarSubscription), then resumes it.
    let status = status_text(&app, user).await;
    assert!(status.contains("Renews by itself"), "{status}");
    assert_eq!(button_data(&newest(&app, user)), ["renew:off", "$"]);
    app.user_presses(user, "renew:off").await;
    wait_until("renewal canceled in Telegram", || {
        app.telegram
            .charge_state("s1")
            .filter(|charge| charge.canceled)
    })
    .await;
    // The status shown again after the switch (the one above it said "Renews by itself").
    let status = wait_until("the status shown again", || {
        let texts = app.telegram.sent_texts(user);
        texts
            .last()
            .filter(|text| text.starts_with("📊 Your plan") && !text.contains("Renews by itself"))
            .cloned()
    })
    .await;
    assert!(status.contains("Does not renew."), "{status}");
    app.user_presses(user, "renew:on").await;
    wait_until("renewal resumed", || {
        app.telegram
            .charge_state("s1")
            .filter(|charge| !charge.canceled)
    })
    .await;

    // Thirty days on, Telegram renews it (no pre-checkout for a renewal).
    app.clock.advance(30 * DAY);
    let renewed_until = expires + 30 * 86_400;
    app.paid(user, &month, "s2", Some((false, renewed_until)))
        .await;
    app.wait_for_payment_event(user, "renewed").await;
    let payments = app.payments_of(user).await;
    assert_eq!(
        payments["entitlement"]["plan"]["paid_until"],
        renewed_until * 1000
    );

    // The next renewal fails: grace (3 days) from now, then expired.
    app.clock.advance(30 * DAY);
    app.subscription_is(user, &month, "failed").await;
    app.wait_for_payment_event(user, "subscription_failed")
        .await;
    app.wait_for_last_text_starting(user, "Telegram could not renew your subscription")
        .await;
    app.clock.advance(Duration::from_secs(61));
    app.wait_for_payment_event(user, "plan_grace").await;
    let status = status_text(&app, user).await;
    assert!(
        status.contains("A month has ended; still open until"),
        "{status}"
    );
    app.clock.advance(3 * DAY);
    app.wait_for_payment_event(user, "plan_expired").await;
    app.wait_for_last_text_starting(user, "Your plan is over: back to 30 free messages a day.")
        .await;
    let status = status_text(&app, user).await;
    assert!(status.contains("A month ended on"), "{status}");
    let sources: Vec<String> = app.payments_of(user).await["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            format!(
                "{}/{}",
                event["event"].as_str().unwrap_or(""),
                event["source"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        sources.contains(&"renewal_off/user".to_owned()),
        "{sources:?}"
    );
    assert!(
        sources.contains(&"plan_expired/timer".to_owned()),
        "{sources:?}"
    );
    assert_eq!(app.payment_event_count(user, "plan_expired").await, 1);
    app.stop().await;
}

async fn refunds_by_operator_and_by_update_take_the_grant_back_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40501;
    let charge = app.user_buys(user, "week").await;
    let path = format!("/admin/payments/{charge}/refund");
    let response = app.admin(reqwest::Method::POST, &path).await;
    assert_eq!(response.status(), 200);
    assert!(
        app.telegram
            .charge_state(&charge)
            .is_some_and(|c| c.refunded)
    );
    assert_eq!(
        app.payments_of(user).await["entitlement"]["plan"],
        Value::Null
    );
    assert_eq!(app.admin(reqwest::Method::POST, &path).await.status(), 409);
    let unknown = app
        .admin(reqwest::Method::POST, "/admin/payments/nope/refund")
        .await;
    assert_eq!(unknown.status(), 404);
    let anonymous = reqwest::Client::new()
        .post(format!("{}{path}", app.address))
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), 401);
    // Telegram tells of the same refund: nothing changes twice.
    let week = Bill {
        payload: String::new(),
        stars: 150,
        subscription: false,
    };
    app.refunded(user, &week, &charge).await;
    app.wait_for_payment_event(user, "refund_repeated").await;

    // An unlock refunded by Telegram (the user asked it): the mode locks again.
    let unlock = app.user_buys(user, "intense_mode").await;
    app.refunded(user, &week, &unlock).await;
    app.wait_for_last_text_starting(user, "Your payment for Intense mode was refunded")
        .await;
    app.start_dialog(user, "pavel").await;
    app.user_says(user, "/settings").await;
    let settings = wait_until("the settings", || {
        let message = newest(&app, user);
        (message["text"] == "Settings of dialog 1 (Pavel):").then_some(message)
    })
    .await;
    assert_eq!(
        button_labels(&settings),
        ["Intense mode: 🔒", "Fantasy scenes: 🔒", "🔔 Notifications"]
    );
    let refunded = app.payment_event_count(user, "refunded").await;
    assert_eq!(refunded, 2);
    app.stop().await;
}

async fn the_daily_limit_is_reached_and_starts_over_at_the_zones_midnight(backend: Backend) {
    let options = TestOptions {
        adjust: Some(Box::new(|settings| {
            settings.limits.free_daily_messages = 2;
            settings.limits.time_zone = "Asia/Tashkent".into();
        })),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    // 2026-12-03 18:30 UTC: 23:30 in Tashkent (UTC+5).
    app.clock.set(1_796_322_600_000);
    let user = 40601;
    app.start_dialog(user, "pavel").await;
    app.user_says(user, "one").await;
    app.wait_for_last_text(user, "echo: one").await;
    // The count is kept in storage: a restart does not start it over.
    let app = app.restart().await;
    app.user_says(user, "two").await;
    app.wait_for_last_text(user, "echo: two").await;
    // Replies only (the memory keeper's background requests are counted apart).
    let calls = app.llm.requests().len();
    app.user_says(user, "three").await;
    app.wait_for_last_text_starting(user, "That was all 2 free messages for today")
        .await;
    let notice = newest(&app, user);
    assert!(
        notice["text"]
            .as_str()
            .unwrap_or_default()
            .contains("2026-12-04 00:00"),
        "{notice}"
    );
    assert_eq!(button_data(&notice), ["$", "retry"]);
    assert_eq!(app.llm.requests().len(), calls, "no LLM call");
    let stored = app.dialog_messages(user).await;
    assert!(
        stored
            .iter()
            .any(|(_, content, status)| content == "three" && status == "unanswered"),
        "the message is kept: {stored:?}"
    );
    assert_eq!(
        app.metric("entitlement_denials_total{reason=\"free_limit\"}")
            .await,
        1.0
    );
    // Midnight in Tashkent: a new day.
    app.clock.set(1_796_324_400_000);
    app.user_says(user, "four").await;
    app.wait_for_last_text(user, "echo: four").await;
    app.stop().await;
}

async fn a_locked_feature_offers_its_purchase(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40701;
    app.start_dialog(user, "pavel").await;
    app.user_presses(user, "t:intense").await;
    app.wait_for_last_text_starting(user, "Intense mode is a purchase: Intense mode for 150 ⭐")
        .await;
    assert_eq!(button_data(&newest(&app, user)), ["$:intense_mode"]);
    app.user_buys(user, "intense_mode").await;
    app.user_says(user, "/settings").await;
    let settings = wait_until("the settings", || {
        let message = newest(&app, user);
        (message["text"] == "Settings of dialog 1 (Pavel):").then_some(message)
    })
    .await;
    assert_eq!(
        button_labels(&settings),
        [
            "Intense mode: off",
            "Fantasy scenes: 🔒",
            "🔔 Notifications"
        ]
    );
    app.stop().await;
}

async fn payment_updates_arrive_by_polling_too(backend: Backend) {
    use crate::support::fake_telegram::{
        callback_update, pre_checkout_update, subscription_update,
    };
    let options = TestOptions {
        mode: vitte::config::TelegramMode::Polling,
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let user = 40801;
    let press = callback_update(app.next_update_id(), user, "User", "en", "$:week");
    app.telegram.push_update(press);
    let invoice = wait_until("an invoice", || app.telegram.invoices().first().cloned()).await;
    let payload = invoice["payload"].as_str().unwrap_or_default().to_owned();
    // getUpdates asks for pre_checkout_query and subscription (the fake, like Telegram,
    // delivers no kind the bot did not ask for).
    app.telegram.open_pre_checkout("pq1");
    let query = pre_checkout_update(app.next_update_id(), "pq1", user, &payload, 150);
    app.telegram.push_update(query);
    let answer = wait_until("the answer", || app.telegram.pre_checkout_answer("pq1")).await;
    assert_eq!(answer["ok"], true, "{answer}");
    app.telegram.charge("pc1", user, false);
    let paid = successful_payment_update(app.next_update_id(), user, &payload, 150, "pc1", None);
    app.telegram.push_update(paid);
    app.wait_for_last_text_starting(user, "Thank you! A week is yours until")
        .await;
    let change = subscription_update(app.next_update_id(), user, &payload, "canceled");
    app.telegram.push_update(change);
    app.wait_for_payment_event(user, "subscription_update_ignored")
        .await;
    app.stop().await;
}
