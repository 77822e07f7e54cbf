//! Faults: panics in a session, LLM outages, bad webhook calls.

use std::sync::Arc;
use std::time::Duration;

use crate::on_both_backends;
use crate::support::*;

on_both_backends!(
    a_panic_in_one_session_leaves_the_others_alone_and_the_user_is_answered,
    llm_down_gives_an_apology_and_keeps_the_message,
);

async fn a_panic_in_one_session_leaves_the_others_alone_and_the_user_is_answered(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        TestOptions {
            wrap_llm: Some(Box::new(|inner| {
                Arc::new(PanicOnTrigger {
                    inner,
                    trigger: "PANIC",
                })
            })),
            // One shard: every session shares the arbiter of the one that panics.
            adjust: Some(Box::new(|settings| settings.session.shards = 1)),
            ..TestOptions::default()
        },
    )
    .await;
    app.start_dialog(7001, "mira").await;
    app.start_dialog(7002, "arlo").await;
    app.llm.set_latency(Duration::from_millis(200));
    app.user_says(7002, "are you there?").await;
    app.user_says(7001, "PANIC now").await;
    let texts = app.wait_for_texts(7001, 2).await;
    assert!(
        texts[1].starts_with("Sorry, something went wrong"),
        "{}",
        texts[1]
    );
    assert_eq!(app.wait_for_texts(7002, 2).await[1], "echo: are you there?");

    app.user_says(7001, "back again").await;
    assert_eq!(app.wait_for_texts(7001, 3).await[2], "echo: back again");
    app.user_says(7002, "still fine?").await;
    assert_eq!(app.wait_for_texts(7002, 3).await[2], "echo: still fine?");
    assert_eq!(app.metric("vitte_session_panics_total").await, 1.0);
    // The restarted session reloaded its history from storage.
    let user_7001 = app
        .llm
        .requests()
        .into_iter()
        .rev()
        .find(|request| {
            request_texts(request)
                .iter()
                .any(|(_, text)| text == "back again")
        })
        .expect("the request after the panic");
    assert!(
        request_texts(&user_7001)
            .iter()
            .any(|(_, text)| text == "PANIC now"),
        "history reloaded after the restart"
    );
    app.stop().await;
}

async fn llm_down_gives_an_apology_and_keeps_the_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(8001, "nova").await;
    app.llm.set_down(true);
    app.user_says(8001, "please remember the blue key").await;
    let texts = app.wait_for_texts(8001, 2).await;
    assert!(
        texts[1].starts_with("Sorry, I could not come up with an answer"),
        "{}",
        texts[1]
    );
    let stored = app.dialog_messages(8001).await;
    assert!(
        stored.iter().any(|(role, text, status)| role == "user"
            && text == "please remember the blue key"
            && status == "unanswered"),
        "the message is stored and marked unanswered: {stored:?}"
    );
    // Retried on 503 before giving up: three attempts.
    assert_eq!(app.metric(&ai_requests("error")).await, 3.0);

    app.llm.set_down(false);
    app.user_says(8001, "are you back?").await;
    assert_eq!(app.wait_for_texts(8001, 3).await[2], "echo: are you back?");
    let last = app.llm.requests().pop().expect("requests");
    assert!(
        request_texts(&last)
            .iter()
            .any(|(_, text)| text == "please remember the blue key"),
        "the unanswered message is still part of the conversation"
    );
    app.stop().await;
}

#[actix_rt::test]
async fn an_llm_timeout_is_retried() {
    let app = TestApp::spawn_adjusted(Backend::Sqlite, |settings| {
        settings.llm.request_timeout = Duration::from_millis(500)
    })
    .await;
    app.start_dialog(8101, "mira").await;
    app.llm.script([LlmBehaviour::Hang(Duration::from_secs(3))]);
    app.user_says(8101, "hello?").await;
    let texts = app.wait_for_texts(8101, 2).await;
    assert_eq!(texts[1], "echo: hello?", "the second attempt answered");
    assert_eq!(app.llm.requests().len(), 2);
    assert_eq!(app.metric(&ai_requests("timeout")).await, 1.0);
    assert_eq!(app.metric(&ai_requests("ok")).await, 1.0);
    app.stop().await;
}

#[actix_rt::test]
async fn the_webhook_refuses_wrong_secrets_and_malformed_bodies() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = format!("{}/telegram/webhook", app.address);
    let update = text_update(1, 9001, "Eve", "en", "/start");

    let no_secret = app
        .http
        .post(&url)
        .json(&update)
        .send()
        .await
        .expect("answer");
    assert_eq!(no_secret.status(), 401);
    let wrong = app
        .http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", "guess")
        .json(&update)
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);

    for body in ["{not json", "{\"hello\": 1}", ""] {
        let response = app
            .http
            .post(&url)
            .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "body {body:?}");
        let error: serde_json::Value = response.json().await.expect("a JSON error");
        assert!(error["error"].as_str().is_some());
    }
    assert_eq!(
        status_for_declared_body(&app.address, 2 * 1024 * 1024).await,
        413
    );

    // None of that reached a user, and the server still works.
    assert!(app.telegram.sent_texts(9001).is_empty());
    assert_eq!(app.post_update(&update).await, 200);
    app.wait_for_texts(9001, 1).await;
    app.stop().await;
}

/// Declares a body of `length` bytes to the webhook without sending it and returns the HTTP
/// status the server answers with: an oversized body is refused from its header alone.
async fn status_for_declared_body(address: &str, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST /telegram/webhook HTTP/1.1\r\nHost: {host}\r\n\
         X-Telegram-Bot-Api-Secret-Token: {WEBHOOK_SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let mut answer = vec![0_u8; 256];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut answer))
        .await
        .expect("an answer before the body is sent")
        .expect("read");
    let status_line = String::from_utf8_lossy(&answer[..read]).into_owned();
    drop(stream);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"))
}

#[actix_rt::test]
async fn a_reply_is_resent_when_telegram_was_briefly_unreachable() {
    use vitte_actors::ports::Messenger;
    // A port with nothing listening yet: connections are refused until Telegram "comes back".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let api_url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let client = vitte::telegram::bot_api::BotApiClient::new(
        teloxide::Bot::new("123:TEST").set_api_url(api_url),
    );
    let comes_back = actix_rt::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        FakeTelegram::start_on(port).await
    });
    let sent = client.send_text(31337, "still delivered", None).await;
    let telegram = comes_back.await.expect("the fake started");
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(telegram.sent_texts(31337), ["still delivered"]);
    telegram.stop().await;
}
