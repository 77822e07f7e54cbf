//! The HTTP chat API (`/v1/chat/*`): another program talks to a user's dialog through the
//! same session as Telegram (shared history and limits), with clear refusals; the OpenAPI
//! document matches the routes.

use secrecy::SecretString;
use serde_json::{Value, json};
use vitte_actors::ports::Clock as _;
use vitte_actors::resilience::breaker::BreakerSettings;

use crate::on_both_backends;
use crate::support::*;

const API_KEY: &str = "test-api-key-0123456789";

on_both_backends!(a_message_through_the_api_is_answered_in_the_users_own_dialog);

fn with_api_key(settings: &mut vitte::config::Settings) {
    settings
        .api
        .keys
        .insert("wb_assist".into(), SecretString::from(API_KEY));
}

async fn spawn_with_api(backend: Backend) -> TestApp {
    TestApp::spawn_adjusted(backend, with_api_key).await
}

/// POSTs `body` to `/v1/chat/send` with `key`; the status, `Retry-After` and JSON body.
async fn send(app: &TestApp, key: Option<&str>, body: &str) -> (u16, Option<String>, Value) {
    let mut request = app
        .http
        .post(format!("{}/v1/chat/send", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("X-API-KEY", key);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn history(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}/v1/chat/history/{path}", app.address))
        .header("X-API-KEY", API_KEY)
        .send()
        .await
        .expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn a_message_through_the_api_is_answered_in_the_users_own_dialog(backend: Backend) {
    let app = spawn_with_api(backend).await;
    let user = 32001;
    app.start_dialog(user, "mira").await;
    let telegram_before = app.telegram.sent_texts(user);

    let body = json!({"telegram_id": user, "message": "hello from the desk"}).to_string();
    let (status, _, reply) = send(&app, Some(API_KEY), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["reply"], "echo: hello from the desk");
    assert_eq!(reply["messages"], json!(["echo: hello from the desk"]));
    assert_eq!(
        app.telegram.sent_texts(user),
        telegram_before,
        "the reply went to the caller, not to Telegram"
    );
    // The persona spoke as to the user, under their Telegram name.
    let request = app.llm.requests().pop().expect("an LLM request");
    assert!(
        request.to_string().contains(&format!("User{user}")),
        "{request}"
    );

    // One history: the API's exchange is in the dialog Telegram continues.
    let (status, dialog) = history(&app, &format!("{user}?limit=2")).await;
    assert_eq!(status, 200, "{dialog}");
    assert_eq!(dialog["persona_id"], "mira");
    let messages = dialog["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(
        (&messages[0]["role"], &messages[0]["content"]),
        (&json!("user"), &json!("hello from the desk"))
    );
    assert_eq!(messages[1]["content"], "echo: hello from the desk");
    app.user_says(user, "and from Telegram").await;
    app.wait_for_last_text(user, "echo: and from Telegram")
        .await;
    let texts = request_texts(&app.llm.requests().pop().expect("a request"));
    assert!(
        texts.iter().any(|(_, text)| text == "hello from the desk"),
        "the next prompt carries it: {texts:?}"
    );
    // The send and the history call, counted under the key's name.
    assert_eq!(
        app.metric("api_requests_total{key=\"wb_assist\",status=\"200\"}")
            .await,
        2.0
    );
    app.stop().await;
}

#[actix_rt::test]
async fn bad_keys_bodies_and_missing_dialogs_are_refused_clearly() {
    let app = TestApp::spawn_adjusted(Backend::Sqlite, |settings| {
        with_api_key(settings);
        settings.api.max_body_bytes = 1024;
    })
    .await;
    let user = 32101;
    let body = json!({"telegram_id": user, "message": "hi"}).to_string();
    assert_eq!(send(&app, None, &body).await.0, 401);
    assert_eq!(
        send(&app, Some("test-api-key-0123456788"), &body).await.0,
        401
    );
    for (bad, field) in [
        (r#"{"message": "hi"}"#, Some("telegram_id")),
        (r#"{"telegram_id": 32101, "message": ""}"#, Some("message")),
        (
            r#"{"telegram_id": 32101, "message": "hi", "slot": 7}"#,
            Some("slot"),
        ),
        ("{not json", None),
    ] {
        let (status, _, refusal) = send(&app, Some(API_KEY), bad).await;
        assert_eq!(status, 422, "{bad}: {refusal}");
        assert_eq!(refusal["field"].as_str(), field, "{bad}: {refusal}");
        assert!(refusal["error"].is_string());
    }
    let huge = json!({"telegram_id": user, "message": "x".repeat(2000)}).to_string();
    assert_eq!(send(&app, Some(API_KEY), &huge).await.0, 413);
    // A user who never started a dialog, and an empty slot of one who did.
    let (status, _, refusal) = send(&app, Some(API_KEY), &body).await;
    assert_eq!(status, 409, "{refusal}");
    assert!(
        app.telegram.sent_texts(user).is_empty(),
        "nothing to Telegram"
    );
    app.start_dialog(user, "kai").await;
    let in_slot_two = json!({"telegram_id": user, "message": "hi", "slot": 2}).to_string();
    let (status, _, refusal) = send(&app, Some(API_KEY), &in_slot_two).await;
    assert_eq!((status, refusal["field"].as_str()), (409, Some("slot")));
    assert_eq!(history(&app, "32102").await.0, 404);
    let (status, refusal) = history(&app, &format!("{user}?limit=500")).await;
    assert_eq!((status, refusal["field"].as_str()), (422, Some("limit")));
    assert_eq!(history(&app, "abc").await.0, 422);
    assert_eq!(
        app.metric("api_requests_total{key=\"unknown\",status=\"401\"}")
            .await,
        2.0
    );
    app.stop().await;
}

#[actix_rt::test]
async fn the_api_shares_the_daily_limit_and_says_when_it_resets() {
    let app = TestApp::spawn_adjusted(Backend::Sqlite, |settings| {
        with_api_key(settings);
        settings.limits.free_daily_messages = 2;
    })
    .await;
    let user = 32201;
    app.start_dialog(user, "arlo").await;
    app.user_says(user, "one").await;
    app.wait_for_last_text(user, "echo: one").await;
    let body = json!({"telegram_id": user, "message": "two"}).to_string();
    assert_eq!(send(&app, Some(API_KEY), &body).await.0, 200);
    let body = json!({"telegram_id": user, "message": "three"}).to_string();
    let (status, retry_after, refusal) = send(&app, Some(API_KEY), &body).await;
    assert_eq!(status, 429, "{refusal}");
    assert_eq!(
        (refusal["limit"].as_u64(), refusal["used"].as_u64()),
        (Some(2), Some(2))
    );
    let reset_in = refusal["resets_at_ms"].as_i64().expect("a reset time") - app.clock.now_millis();
    assert!((1..=25 * 3_600_000).contains(&reset_in), "{refusal}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=25 * 3600).contains(&retry_after));
    app.stop().await;
}

#[actix_rt::test]
async fn an_unavailable_llm_is_a_503_and_a_failed_one_a_502() {
    let app = TestApp::spawn_adjusted(Backend::Sqlite, |settings| {
        with_api_key(settings);
        settings.llm.breaker = BreakerSettings {
            window_size: 2,
            minimum_calls: 2,
            failure_rate_threshold: 0.5,
            open_ms: 60_000,
            max_open_ms: 60_000,
            half_open_probes: 1,
            ..BreakerSettings::default()
        };
        settings.llm.retry.max_attempts = 1;
    })
    .await;
    let user = 32301;
    app.start_dialog(user, "mira").await;
    app.llm.set_down(true);
    let body = json!({"telegram_id": user, "message": "are you there?"}).to_string();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, retry_after, _) = send(&app, Some(API_KEY), &body).await;
        statuses.push((status, retry_after));
    }
    assert_eq!(statuses[0], (502, None), "{statuses:?}");
    assert_eq!(statuses[2], (503, Some("30".to_owned())), "{statuses:?}");
    app.stop().await;
}

#[actix_rt::test]
async fn the_openapi_document_matches_the_routes() {
    let app = spawn_with_api(Backend::Sqlite).await;
    let document: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("served")
        .json()
        .await
        .expect("JSON");
    let paths = document["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 2, "{document}");
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let url = format!("{}{}", app.address, path.replace("{telegram_id}", "1"));
            let request = match method.as_str() {
                "post" => app.http.post(url).body("{}"),
                "get" => app.http.get(url),
                other => panic!("an unexpected method {other}"),
            };
            let status = request.send().await.expect("answered").status().as_u16();
            assert_eq!(
                status, 401,
                "{method} {path} is routed (and asks for the key)"
            );
        }
    }
    // What the document says the send body holds is what the route reads.
    let schema = &document["components"]["schemas"]["SendRequest"]["properties"];
    let mut fields: Vec<&String> = schema.as_object().expect("properties").keys().collect();
    fields.sort();
    assert_eq!(fields, ["message", "slot", "telegram_id"]);
    app.stop().await;
}
