//! Proactive messages end to end: broadcasts through the admin API, the outbox keeping to
//! Telegram's limits (checked from the fake Bot API's call times, in the app's controlled
//! time), flood control and blocked users, scheduled notices at the user's local time and
//! quiet hours, and a restart in the middle of it all.

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeZone;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vitte_actors::ports::Clock;

use crate::on_both_backends;
use crate::support::{ADMIN_TOKEN, Backend, PATIENCE, TestApp, TestOptions};

on_both_backends!(
    a_broadcast_to_2000_users_keeps_to_telegrams_limits_while_a_user_chats,
    flood_control_is_honoured_and_a_blocked_user_is_skipped_afterwards,
    broadcasts_are_checked_counted_first_and_never_sent_twice_across_a_crash,
    the_weekly_recap_comes_at_nine_local_after_quiet_hours_and_the_persona_writes_after_a_week,
);

async fn spawn_limited(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        TestOptions {
            telegram_limits: true,
            ..TestOptions::default()
        },
    )
    .await
}

impl TestApp {
    async fn broadcast(&self, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/admin/broadcast", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("the broadcast endpoint answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn broadcast_report(&self, id: i64) -> Value {
        self.admin(Method::GET, &format!("/admin/broadcasts/{id}"))
            .await
            .json()
            .await
            .expect("a report")
    }

    /// Successful messages per chat, from the fake's records.
    fn messages_per_chat(&self) -> HashMap<i64, usize> {
        let mut counts = HashMap::new();
        for (_, chat, method) in self.telegram.message_times() {
            if method == "sendMessage" {
                *counts.entry(chat).or_default() += 1;
            }
        }
        counts
    }
}

/// The most entries of `times` (sorted) in any window of `window_ms`.
fn most_in_window(times: &[i64], window_ms: i64) -> usize {
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window_ms {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

async fn a_broadcast_to_2000_users_keeps_to_telegrams_limits_while_a_user_chats(backend: Backend) {
    let app = spawn_limited(backend).await;
    let audience = 1_000_001..=1_002_000;
    app.seed_users(audience.clone()).await;
    let (status, counted) = app
        .broadcast(&json!({ "text": "A new story tonight", "dry_run": true }))
        .await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted["recipients"], 2_000);
    let started = app.clock.now_millis();
    let (status, created) = app
        .broadcast(&json!({ "text": "A new story tonight" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().expect("an id");
    // Meanwhile a user starts a dialog and talks.
    let user = 5;
    app.user_says(user, "/start").await;
    let asked_at = app.clock.now_millis();
    app.drive_outbox_until("the user sees the gallery", || {
        !app.telegram.sent_texts(user).is_empty()
    })
    .await;
    let answered_in = app.clock.now_millis() - asked_at;
    app.drive_outbox_until("every recipient got the broadcast", || {
        app.telegram.message_times().len() >= 2_000 + app.telegram.sent_texts(user).len()
    })
    .await;
    let times: Vec<i64> = app
        .telegram
        .message_times()
        .iter()
        .map(|(at, _, _)| *at)
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "recorded in order"
    );
    assert!(
        most_in_window(&times, 1_000) <= 30,
        "{} in one second",
        most_in_window(&times, 1_000)
    );
    let took = times[times.len() - 1] - started;
    assert!(
        took >= 66_000,
        "2 000 messages at 30 a second take 66 s at least: {took} ms"
    );
    let per_chat = app.messages_per_chat();
    for chat in audience {
        assert_eq!(per_chat.get(&chat), Some(&1), "chat {chat}");
    }
    // The user's answer did not wait behind the broadcast (which took over a minute).
    assert!(answered_in < 5_000, "the user waited {answered_in} ms");
    eventually_report(&app, id, |report| report["status"] == "done").await;
    let report = app.broadcast_report(id).await;
    assert_eq!(report["sent"], 2_000, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    assert!(
        app.metric("notifications_sent_total{kind=\"announcement\",status=\"sent\"}")
            .await
            >= 2_000.0
    );
    app.stop().await;
}

async fn eventually_report(app: &TestApp, id: i64, done: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let report = app.broadcast_report(id).await;
        if done(&report) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broadcast {id}: {report}"
        );
        // The scheduler closes a broadcast on its next pass: let its clock move.
        app.clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn flood_control_is_honoured_and_a_blocked_user_is_skipped_afterwards(backend: Backend) {
    let app = spawn_limited(backend).await;
    app.seed_users(1..=5).await;
    app.telegram.flood_chat(2, 1, 3);
    app.telegram.block_chat(3);
    app.telegram
        .refuse_chat(4, "Bad Request: message text is empty");
    let (status, created) = app.broadcast(&json!({ "text": "first" })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().expect("an id");
    app.drive_outbox_until("users 1, 2 and 5 got it", || {
        let per_chat = app.messages_per_chat();
        [1, 2, 5].iter().all(|chat| per_chat.get(chat) == Some(&1))
    })
    .await;
    // Chat 2 was answered 429 retry_after 3: its message went 3 s after, not before.
    let to_two: Vec<i64> = app
        .telegram
        .calls_to("sendMessage")
        .iter()
        .filter(|call| call.body["chat_id"] == 2)
        .map(|call| call.at)
        .collect();
    assert_eq!(to_two.len(), 2, "one refusal, one delivery");
    assert!(to_two[1] - to_two[0] >= 3_000, "{to_two:?}");
    eventually_report(&app, id, |report| report["status"] == "done").await;
    let report = app.broadcast_report(id).await;
    assert_eq!(
        (&report["sent"], &report["skipped"], &report["failed"]),
        (&json!(3), &json!(1), &json!(1)),
        "{report}"
    );
    // A 400 is not retried; a 403 marks the user inactive.
    let calls_to = |chat: i64| {
        app.telegram
            .calls_to("sendMessage")
            .iter()
            .filter(|call| call.body["chat_id"] == chat)
            .count()
    };
    assert_eq!(calls_to(4), 1);
    assert_eq!(calls_to(3), 1);
    assert_eq!(app.metric("telegram_blocked_users_total").await, 1.0);
    assert_eq!(app.metric("telegram_retry_after_total").await, 1.0);
    // The next broadcast does not even try the user who blocked the bot.
    let (_, counted) = app
        .broadcast(&json!({ "text": "second", "dry_run": true }))
        .await;
    assert_eq!(counted["recipients"], 4, "{counted}");
    let (_, created) = app.broadcast(&json!({ "text": "second" })).await;
    let second = created["id"].as_i64().expect("an id");
    app.drive_outbox_until("the others got the second", || {
        app.telegram.sent_texts(5).len() == 2
    })
    .await;
    eventually_report(&app, second, |report| report["status"] == "done").await;
    assert_eq!(calls_to(3), 1, "never tried again");
    app.stop().await;
}

async fn broadcasts_are_checked_counted_first_and_never_sent_twice_across_a_crash(
    backend: Backend,
) {
    let app = spawn_limited(backend).await;
    // Bad requests are refused with the field at fault.
    let unauthorised = app
        .http
        .post(format!("{}/admin/broadcast", app.address))
        .json(&json!({ "text": "hi" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = app.broadcast(&json!({ "text": "  " })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("text")),
        "{body}"
    );
    let (status, body) = app
        .broadcast(&json!({ "text": "hi", "segment": { "plan": "platinum" } }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("segment.plan"))
    );
    let (status, _) = app.broadcast(&json!({ "text": "x".repeat(5_000) })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.broadcast(&json!({ "txt": "typo" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app.admin(Method::GET, "/admin/broadcasts/999").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Segments: language, plan, recent activity.
    app.seed_users(10..=209).await;
    for (segment, expected) in [
        (json!({}), 200),
        (json!({ "language": "en" }), 200),
        (json!({ "language": "ru" }), 0),
        (json!({ "plan": "free" }), 200),
        (json!({ "plan": "paid" }), 0),
        (json!({ "active_within_days": 7 }), 0),
    ] {
        let (status, counted) = app
            .broadcast(&json!({ "text": "hi", "segment": segment, "dry_run": true }))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(counted["recipients"], expected, "{segment}: {counted}");
    }
    let (_, created) = app.broadcast(&json!({ "text": "once only" })).await;
    let id = created["id"].as_i64().expect("an id");
    app.drive_outbox_until("half of them got it", || {
        app.telegram.message_times().len() >= 100
    })
    .await;
    // The process dies mid-broadcast.
    let app = app.crash_and_restart().await;
    app.drive_outbox_until("the rest got it", || {
        let per_chat = app.messages_per_chat();
        per_chat.values().sum::<usize>() >= 190
    })
    .await;
    eventually_report(&app, id, |report| report["status"] == "done").await;
    let report = app.broadcast_report(id).await;
    let per_chat = app.messages_per_chat();
    assert!(
        per_chat.values().all(|count| *count == 1),
        "nobody got it twice"
    );
    let sent = report["sent"].as_u64().expect("sent");
    let unconfirmed = report["unconfirmed"].as_u64().expect("unconfirmed");
    assert_eq!(sent + unconfirmed, 200, "{report}");
    assert!(
        unconfirmed <= 60,
        "at most one batch was in flight: {report}"
    );
    assert!(per_chat.len() as u64 >= sent, "{report}");
    app.stop().await;
}

async fn the_weekly_recap_comes_at_nine_local_after_quiet_hours_and_the_persona_writes_after_a_week(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let zone = chrono_tz::Asia::Tashkent;
    let local = |text: &str| {
        let time = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("time");
        zone.from_local_datetime(&time)
            .single()
            .expect("one moment")
            .timestamp_millis()
    };
    // Thursday 3 December 2026, 15:00 in Tashkent.
    app.clock.set(local("2026-12-03 15:00"));
    let user = 77;
    app.start_dialog(user, "mira").await;
    let opened = app.telegram.sent_texts(user).len();
    app.user_says(user, "We found the lighthouse key").await;
    app.wait_for_texts(user, opened + 1).await;
    app.user_says(user, "/timezone Asia/Tashkent").await;
    app.wait_for_last_text(user, "Time zone set: Asia/Tashkent.")
        .await;
    // Quiet hours until ten: the 09:00 recap waits for them.
    let quiet = vitte_actors::session::buttons::ButtonData::QuietHours { start: 22, end: 10 };
    app.user_presses(user, &quiet.encode()).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while !app
        .telegram
        .sent_texts(user)
        .iter()
        .any(|text| text.starts_with("🔔 Notifications\nQuiet hours: 22:00–10:00"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "quiet hours never shown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs = || async {
        app.admin(Method::GET, &format!("/admin/users/{user}/notifications"))
            .await
            .json::<Value>()
            .await
            .expect("jobs")
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let weekly = loop {
        let listed = jobs().await;
        let weekly = listed["jobs"].as_array().and_then(|jobs| {
            jobs.iter()
                .find(|job| job["kind"] == "weekly_recap")
                .cloned()
        });
        if let Some(weekly) = weekly {
            break weekly;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recap planned: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(weekly["due_at"], local("2026-12-07 09:00"), "{weekly}");
    let before = app.telegram.sent_texts(user).len();
    app.clock.set(local("2026-12-07 09:00"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.telegram.sent_texts(user).len(),
        before,
        "quiet until ten"
    );
    app.clock.set(local("2026-12-07 10:00"));
    let texts = app.wait_for_texts(user, before + 1).await;
    let recap = texts.last().expect("the recap");
    assert!(recap.starts_with("📖 Your week in stories"), "{recap}");
    // A week after the last message, Mira writes (the fake LLM answers in her place).
    let last_said = local("2026-12-03 15:00");
    app.clock.set(last_said + 7 * 86_400_000 + 3_600_000);
    let texts = app.wait_for_texts(user, before + 2).await;
    assert!(
        texts.last().is_some_and(|text| text.starts_with("Mira: ")),
        "{texts:?}"
    );
    app.wait_for_metric(
        "notifications_sent_total{kind=\"inactivity\",status=\"sent\"}",
        1.0,
    )
    .await;
    app.stop().await;
}
