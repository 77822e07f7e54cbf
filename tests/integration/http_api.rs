//! Health checks and metrics.

use crate::support::*;

#[actix_rt::test]
async fn health_endpoints_report_components() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let health: serde_json::Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["status"], "up");
    for component in ["database", "migrations", "telegram"] {
        assert_eq!(health["components"][component]["status"], "up", "{health}");
        assert!(health["components"][component]["latency_ms"].is_number());
    }
    // The webhook was registered with its secret.
    let (url, secret) = app.telegram.webhook().expect("setWebhook called");
    assert_eq!(url, "https://bot.example.org/telegram/webhook");
    assert_eq!(secret.as_deref(), Some(WEBHOOK_SECRET));
    app.stop().await;
}

#[actix_rt::test]
async fn readiness_fails_while_telegram_ingress_is_not_running() {
    // A Bot API server that is down: setWebhook keeps failing, so the bot must not be ready.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let mut settings = app.settings.clone();
    app.stop().await;
    settings.telegram.api_url = unreachable;
    settings.database.url = secrecy::SecretString::from(format!(
        "sqlite://{}",
        tempfile::tempdir()
            .expect("dir")
            .keep()
            .join("vitte.db")
            .display()
    ));
    let application = vitte::startup::Application::build(settings)
        .await
        .expect("starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    actix_rt::spawn(application.run_until_stopped());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let ready = first_answer(|| http.get(format!("{address}/health/ready")).send()).await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["failing"], serde_json::json!(["telegram"]));
    let live = http
        .get(format!("{address}/health/live"))
        .send()
        .await
        .expect("answer");
    assert_eq!(live.status(), 200, "alive all the same");
    handle.stop().await;
}

async fn first_answer<F, Fut>(mut call: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = call().await {
            return response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn metrics_are_exported_without_user_ids() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.start_dialog(424242, "mira").await;
    app.user_says(424242, "hello").await;
    app.wait_for_texts(424242, 2).await;
    let text = app.metrics_text().await;
    for name in [
        "telegram_messages_total",
        "ai_requests_total",
        "ai_request_duration_seconds",
        "vitte_sessions_active",
        "vitte_session_panics_total",
        "errors_total",
        "ai_time_to_first_token_seconds",
        "ai_tokens_used_total",
        "llm_breaker_state",
        "llm_cache_hits_total",
        "llm_rate_limited_total",
        "vitte_actor_restarts_total",
        "vitte_actor_mailbox_depth",
        "redis_fallback_active",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert_eq!(app.metric(&ai_requests("ok")).await, 1.0);
    assert_eq!(app.metric("vitte_sessions_active").await, 1.0);
    assert_eq!(
        app.metric("telegram_messages_total{direction=\"in\"}")
            .await,
        2.0
    );
    assert!(!text.contains("424242"), "no user or chat id in metrics");
    app.stop().await;
}

#[actix_rt::test]
async fn idle_sessions_leave_memory_and_come_back_with_their_history() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.start_dialog(9101, "arlo").await;
    app.user_says(9101, "the clue is the clock").await;
    app.wait_for_texts(9101, 2).await;
    // The default idle timeout is 15 minutes, on the app's clock.
    app.stored_when(9101, "the reply stored", |stored| stored.len() == 3)
        .await;
    app.clock
        .advance(std::time::Duration::from_secs(15 * 60 + 1));
    let deadline = std::time::Instant::now() + PATIENCE;
    while app.metric("vitte_sessions_active").await != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never passivated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.user_says(9101, "what was the clue?").await;
    app.wait_for_texts(9101, 3).await;
    let last = app.llm.requests().pop().expect("requests");
    assert!(
        request_texts(&last)
            .iter()
            .any(|(_, text)| text == "the clue is the clock")
    );
    app.stop().await;
}

#[actix_rt::test]
#[cfg_attr(skip_postgres_tests, ignore = "DATABASE_URL is not set")]
async fn readiness_fails_when_the_database_goes_away() {
    // Needs a database that can be taken away mid-run: PostgreSQL, where it is dropped.
    let app = TestApp::spawn(Backend::postgres()).await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    app.drop_postgres_database().await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["failing"], serde_json::json!(["database"]));
    let health: serde_json::Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["components"]["database"]["status"], "down");
    app.stop().await;
}
