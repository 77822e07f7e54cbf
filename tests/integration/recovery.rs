//! Nothing accepted is lost: updates are acknowledged only once stored, a reply a crash cut
//! short is finished (or visibly failed) after the restart, and readiness tells the truth
//! about storage.

use std::time::Duration;

use crate::on_both_backends;
use crate::support::*;

/// Waits until the user's newest stored message is `text` with `status`.
async fn stored_last(app: &TestApp, user: i64, text: &str, status: &str) {
    app.stored_when(user, &format!("{text:?} stored as {status}"), |stored| {
        stored
            .last()
            .is_some_and(|(_, content, stored_status)| content == text && stored_status == status)
    })
    .await;
}

on_both_backends!(
    a_reply_a_crash_cut_short_is_finished_in_its_placeholder,
    a_message_accepted_before_a_crash_is_answered_after_it,
);

async fn a_reply_a_crash_cut_short_is_finished_in_its_placeholder(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40101;
    app.start_dialog(user, "mira").await;
    app.llm.hold();
    app.user_says(user, "where is the lighthouse key?").await;
    stored_last(&app, user, "where is the lighthouse key?", "pending").await;
    let placeholders = app.telegram.calls_to("sendMessage").len();

    let app = app.crash_and_restart().await;
    app.llm.release();
    let texts = app
        .wait_for_last_text(user, "echo: where is the lighthouse key?")
        .await;
    assert_eq!(texts.len(), 2, "the opening and one reply: {texts:?}");
    assert_eq!(
        app.telegram.calls_to("sendMessage").len(),
        placeholders,
        "written into the frozen placeholder, no new message"
    );
    app.stored_when(user, "the reply stored, the message answered", |stored| {
        stored[1..]
            == [
                (
                    "user".to_owned(),
                    "where is the lighthouse key?".to_owned(),
                    "complete".to_owned(),
                ),
                (
                    "assistant".to_owned(),
                    "echo: where is the lighthouse key?".to_owned(),
                    "complete".to_owned(),
                ),
            ]
    })
    .await;
    assert_eq!(
        app.metric("vitte_recovered_replies_total{outcome=\"rewritten\"}")
            .await,
        1.0
    );
    app.stop().await;
}

async fn a_message_accepted_before_a_crash_is_answered_after_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 40201;
    app.start_dialog(user, "arlo").await;
    app.llm.hold();
    app.user_says(user, "first").await;
    stored_last(&app, user, "first", "pending").await;
    // Accepted (Telegram was told) while "first" is answered: it waits in the session.
    app.user_says(user, "second").await;

    let app = app.crash_and_restart().await;
    app.llm.release();
    let texts = app.wait_for_last_text(user, "echo: second").await;
    assert_eq!(
        texts[1..],
        ["echo: first", "echo: second"],
        "both answered, in order, once"
    );
    assert_eq!(app.metric("vitte_replayed_updates_total").await, 1.0);
    app.stop().await;
}

#[actix_rt::test]
async fn a_reply_cut_short_long_ago_is_failed_visibly_with_retry() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = 40301;
    app.start_dialog(user, "nova").await;
    app.llm.hold();
    app.user_says(user, "tell me about the comet").await;
    stored_last(&app, user, "tell me about the comet", "pending").await;
    // The restart comes an hour later.
    app.clock.advance(Duration::from_secs(3600));
    let app = app.crash_and_restart().await;
    app.llm.release();
    let texts = wait_until("the interrupted notice", || {
        let texts = app.telegram.sent_texts(user);
        texts
            .last()
            .is_some_and(|text| text.starts_with("Sorry, my reply to this was interrupted"))
            .then_some(texts)
    })
    .await;
    assert_eq!(texts.len(), 2, "in the placeholder's place: {texts:?}");
    let notice = app.telegram.sent_messages(user).pop().expect("the notice");
    assert_eq!(button_data(&notice), ["retry"]);
    stored_last(&app, user, "tell me about the comet", "unanswered").await;
    assert!(
        app.llm.requests().len() <= 1,
        "not asked again after the restart"
    );

    app.user_presses(user, "retry").await;
    app.wait_for_last_text(user, "echo: tell me about the comet")
        .await;
    app.stop().await;
}

#[actix_rt::test]
#[cfg_attr(skip_postgres_tests, ignore = "DATABASE_URL is not set")]
async fn an_update_that_cannot_be_stored_is_refused_so_telegram_delivers_it_again() {
    let app = TestApp::spawn(Backend::postgres()).await;
    let user = 40401;
    app.start_dialog(user, "kai").await;
    app.set_postgres_read_only(true).await;
    let update = text_update(
        app.next_update_id(),
        user,
        "User40401",
        "en",
        "still there?",
    );
    wait_until_async("the webhook refuses the update", || async {
        app.post_update(&update).await == reqwest::StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // The write probe runs at most every 5 s: readiness fails within that.
    wait_until_async("readiness fails", || async {
        app.get("/health/ready").await.status() == 503
    })
    .await;
    let health: serde_json::Value = app.get("/health").await.json().await.expect("json");
    let detail = health["components"]["database"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("read-only"), "the cause is named: {detail}");

    app.set_postgres_read_only(false).await;
    wait_until_async("ready again", || async {
        app.get("/health/ready").await.status() == 200
    })
    .await;
    // Telegram delivers it again: now it is accepted and answered, once.
    wait_until_async("the webhook accepts the update", || async {
        app.post_update(&update).await == reqwest::StatusCode::OK
    })
    .await;
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    let texts = app.wait_for_last_text(user, "echo: still there?").await;
    assert_eq!(texts.len(), 2, "answered once: {texts:?}");
    app.stop().await;
}

#[actix_rt::test]
#[cfg_attr(skip_postgres_tests, ignore = "DATABASE_URL is not set")]
async fn polling_confirms_an_update_only_once_it_is_stored() {
    let options = TestOptions {
        mode: vitte::config::TelegramMode::Polling,
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(Backend::postgres(), options).await;
    let user = 40501;
    app.set_postgres_read_only(true).await;
    let update_id = app.next_update_id();
    app.telegram
        .push_update(text_update(update_id, user, "User40501", "en", "/help"));
    // Asked for again and again while it cannot be stored: the offset never passes it.
    wait_until("getUpdates asked twice more for the same update", || {
        let offsets: Vec<i64> = app
            .telegram
            .calls_to("getUpdates")
            .iter()
            .filter_map(|call| call.body["offset"].as_i64())
            .collect();
        (offsets
            .iter()
            .filter(|offset| **offset <= update_id)
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    assert!(app.telegram.sent_texts(user).is_empty(), "not handled yet");
    app.set_postgres_read_only(false).await;
    let texts = app.wait_for_texts(user, 1).await;
    assert!(texts[0].starts_with("I am a bot"), "{}", texts[0]);
    app.stop().await;
}

#[actix_rt::test]
async fn readiness_fails_while_the_sqlite_file_is_gone_and_recovers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let data = app.data_dir().to_owned();
    let moved = data.with_extension("moved");
    std::fs::rename(&data, &moved).expect("move the data directory away");
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let health: serde_json::Value = app.get("/health").await.json().await.expect("json");
    let detail = health["components"]["database"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("is gone"), "{detail}");
    std::fs::rename(&moved, &data).expect("move it back");
    wait_until_async("ready again", || async {
        app.get("/health/ready").await.status() == 200
    })
    .await;
    app.stop().await;
}

#[actix_rt::test]
async fn buttons_pressed_in_a_group_are_ignored() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = 40601;
    let mut update = callback_update(app.next_update_id(), user, "User40601", "en", "g");
    update["callback_query"]["message"]["chat"] =
        serde_json::json!({ "id": -100_123, "type": "supergroup", "title": "Club" });
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    app.user_says(user, "/help").await;
    let texts = app.wait_for_texts(user, 1).await;
    assert_eq!(texts.len(), 1, "only /help was answered: {texts:?}");
    assert!(app.telegram.sent_texts(-100_123).is_empty());
    app.stop().await;
}

#[actix_rt::test]
async fn an_overlong_message_is_refused_with_a_reason_and_never_reaches_the_llm() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = 40701;
    app.start_dialog(user, "mira").await;
    app.user_says(user, &"a very long story ".repeat(200)).await;
    let texts = app.wait_for_texts(user, 2).await;
    assert!(
        texts[1].starts_with("That message is too long for me"),
        "{}",
        texts[1]
    );
    assert!(app.llm.requests().is_empty());
    app.stop().await;
}

#[actix_rt::test]
async fn a_user_who_blocked_the_bot_costs_no_llm_call() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let user = 40801;
    app.start_dialog(user, "mira").await;
    app.telegram.block_chat(user);
    app.user_says(user, "hello?").await;
    stored_last(&app, user, "hello?", "unanswered").await;
    assert!(app.llm.requests().is_empty(), "no LLM call was paid for");
    app.stop().await;
}
