//! The LLM gateway driven through faults by the fake LLM, Redis cut mid-run, live reloads,
//! and supervision escalation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use vitte::config::FallbackProvider;
use vitte_actors::gateway::{
    GatewayTuning, LlmGateway, MemoryCache, MemoryRateLimiter, ProviderSpec,
};
use vitte_actors::metrics::Metrics;
use vitte_actors::ports::{
    ChatMessage, CompletionRequest, LanguageModel, Purpose, RateLimiter, ResponseCache, Role,
};
use vitte_actors::resilience::breaker::BreakerSettings;
use vitte_actors::resilience::intensity::IntensitySettings;
use vitte_actors::resilience::limiter::RateLimit;
use vitte_actors::supervision::{ActorKind, Supervisor};

use crate::on_both_backends;
use crate::support::tcp_proxy::TcpProxy;
use crate::support::*;

const UNAVAILABLE: &str = "The AI is unavailable right now.";

/// A small breaker (opens after 4 failed calls out of 4) and no retries.
fn quick_breaker(settings: &mut vitte::config::Settings) {
    settings.llm.breaker = BreakerSettings {
        window_size: 4,
        minimum_calls: 4,
        failure_rate_threshold: 0.5,
        open_ms: 300,
        max_open_ms: 1_000,
        half_open_probes: 1,
        ..BreakerSettings::default()
    };
    settings.llm.retry.max_attempts = 1;
}

fn retry_button_of(message: &serde_json::Value) -> Option<String> {
    message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .map(str::to_owned)
}

async fn breaker_state(app: &TestApp) -> String {
    let actors: serde_json::Value = app.actors().await;
    actors["providers"][0]["breaker"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

on_both_backends!(the_breaker_opens_answers_at_once_and_a_probe_closes_it);

async fn the_breaker_opens_answers_at_once_and_a_probe_closes_it(backend: Backend) {
    let app = TestApp::spawn_adjusted(backend, quick_breaker).await;
    app.start_dialog(11001, "mira").await;
    app.llm.set_down(true);
    for index in 1..=4 {
        app.user_says(11001, &format!("attempt {index}")).await;
        app.wait_for_texts(11001, 1 + index).await;
    }
    assert_eq!(
        app.metric("llm_breaker_state{provider=\"primary\"}").await,
        2.0
    );
    let calls_while_closed = app.llm.requests().len();

    app.user_says(11001, "are you there?").await;
    let texts = app.wait_for_texts(11001, 6).await;
    assert!(texts[5].starts_with(UNAVAILABLE), "{}", texts[5]);
    assert_eq!(
        app.llm.requests().len(),
        calls_while_closed,
        "nothing sent while open"
    );
    let notice = app.telegram.sent_messages(11001).pop().expect("the notice");
    assert_eq!(retry_button_of(&notice).as_deref(), Some("retry"));
    let stored = app.dialog_messages(11001).await;
    assert!(
        stored
            .iter()
            .any(|(_, text, status)| text == "are you there?" && status == "unanswered")
    );

    app.llm.set_down(false);
    wait_until_async("the breaker to half-open", || async {
        breaker_state(&app).await == "half_open"
    })
    .await;
    app.user_presses(11001, "retry").await;
    let texts = app.wait_for_texts(11001, 7).await;
    assert_eq!(
        texts[6], "echo: are you there?",
        "the probe answered the saved message"
    );
    // The text shows while it streams; the probe's outcome is recorded when the stream ends,
    // just before the reply is stored.
    app.stored_when(11001, "the probe's reply stored", |stored| {
        stored
            .last()
            .is_some_and(|(role, text, _)| role == "assistant" && text == "echo: are you there?")
    })
    .await;
    assert_eq!(breaker_state(&app).await, "closed");
    assert_eq!(
        app.metric("llm_breaker_state{provider=\"primary\"}").await,
        0.0
    );
    app.stop().await;
}

#[actix_rt::test]
async fn retry_after_of_a_429_is_honoured() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.start_dialog(11101, "arlo").await;
    app.llm.script([LlmBehaviour::Fail {
        status: 429,
        body: "slow down".into(),
        retry_after: Some(1),
    }]);
    let sent = Instant::now();
    app.user_says(11101, "a clue?").await;
    let texts = app.wait_for_texts(11101, 2).await;
    assert_eq!(texts[1], "echo: a clue?");
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "waited as asked: {:?}",
        sent.elapsed()
    );
    assert_eq!(app.llm.requests().len(), 2);
    app.stop().await;
}

on_both_backends!(a_failing_primary_falls_back_and_the_reply_records_who_served);

async fn a_failing_primary_falls_back_and_the_reply_records_who_served(backend: Backend) {
    let backup = FakeLlm::start().await;
    let backup_url = backup.base_url();
    let app = TestApp::spawn_adjusted(backend, move |settings| {
        settings.llm.retry.max_attempts = 2;
        settings.llm.retry.backoff.min_ms = 10;
        settings.llm.fallbacks = vec![FallbackProvider {
            name: "backup".into(),
            base_url: backup_url,
            api_key: SecretString::from("sk-backup"),
            model: "backup-model".into(),
            breaker: BreakerSettings::default(),
            rate_limit: RateLimit::default(),
            retry: Default::default(),
        }];
    })
    .await;
    app.start_dialog(11201, "nova").await;
    app.llm.set_down(true);
    app.user_says(11201, "status report").await;
    let texts = app.wait_for_texts(11201, 2).await;
    assert_eq!(texts[1], "echo: status report");
    assert_eq!(
        app.llm.requests().len(),
        2,
        "the primary was tried twice first"
    );
    assert_eq!(backup.requests().len(), 1);
    assert_eq!(backup.requests()[0]["model"], "backup-model");
    // The reply is stored just after it is shown.
    wait_until_async("the reply stored with its provider", || async {
        let messages = app.database.user_messages(11201).await.expect("messages");
        let providers: Vec<Option<String>> = messages
            .into_iter()
            .filter(|message| message.role == "assistant")
            .map(|message| message.provider)
            .collect();
        providers.last() == Some(&Some("backup".to_owned()))
    })
    .await;
    assert_eq!(
        app.metric("ai_requests_total{model=\"backup-model\",provider=\"backup\",status=\"ok\"}")
            .await,
        1.0
    );
    app.stop().await;
    backup.stop().await;
}

on_both_backends!(tokens_are_accounted_per_user_slot_and_day);

async fn tokens_are_accounted_per_user_slot_and_day(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(11301, "mira").await;
    app.user_says(11301, "one").await;
    app.wait_for_texts(11301, 2).await;
    app.user_says(11301, "two").await;
    app.wait_for_texts(11301, 3).await;
    // A reply's usage is stored just after the reply is shown.
    wait_until_async("both replies accounted", || async {
        let usage = app.database.token_usage(11301).await.expect("usage");
        usage.first().is_some_and(|row| row.4 == 2)
    })
    .await;
    let usage = app.database.token_usage(11301).await.expect("usage");
    assert_eq!(usage.len(), 1, "one slot, one day: {usage:?}");
    let (slot, _day, prompt, completion, requests) = usage[0];
    assert_eq!((slot, requests), (1, 2));
    assert!(prompt > 0 && completion > 0, "{usage:?}");
    assert_eq!(
        app.metric("ai_tokens_used_total{type=\"prompt\"}").await as i64,
        prompt
    );
    app.stop().await;
}

#[actix_rt::test]
async fn a_user_over_the_rate_limit_is_told_and_nothing_is_lost() {
    let app = TestApp::spawn_adjusted(Backend::Sqlite, |settings| {
        settings.llm.user_rate_limit = RateLimit {
            per_minute: 1,
            burst: 1,
        };
        settings.llm.max_queue_wait = Duration::ZERO;
    })
    .await;
    app.start_dialog(11401, "arlo").await;
    app.user_says(11401, "first").await;
    app.user_says(11401, "second").await;
    let texts = app.wait_for_texts(11401, 3).await;
    assert_eq!(texts[1], "echo: first");
    assert!(
        texts[2].starts_with("Too many messages at once"),
        "{}",
        texts[2]
    );
    let stored = app.dialog_messages(11401).await;
    assert!(
        stored
            .iter()
            .any(|(_, text, status)| text == "second" && status == "unanswered")
    );
    assert!(app.metric("llm_rate_limited_total").await >= 1.0);
    app.stop().await;
}

#[actix_rt::test]
async fn a_reload_changes_thresholds_and_an_invalid_one_is_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let minimum_calls =
        |actors: &serde_json::Value| actors["providers"][0]["minimum_calls"].clone();
    let actors: serde_json::Value = app.actors().await;
    assert_eq!(minimum_calls(&actors), 10);

    app.write_local_config(
        "[llm.breaker]\nwindow_size = 2\nminimum_calls = 2\nopen_ms = 60000\nmax_open_ms = 60000\n\
         [llm.retry]\nmax_attempts = 1\n",
    );
    let reloaded = app
        .admin(reqwest::Method::POST, "/admin/supervision/reload")
        .await;
    assert_eq!(reloaded.status(), 200);
    let actors: serde_json::Value = app.actors().await;
    assert_eq!(minimum_calls(&actors), 2);

    // The new thresholds act: two failures open the breaker.
    app.start_dialog(11501, "nova").await;
    app.llm.set_down(true);
    for index in 1..=2 {
        app.user_says(11501, &format!("try {index}")).await;
        app.wait_for_texts(11501, 1 + index).await;
    }
    app.user_says(11501, "third").await;
    let texts = app.wait_for_texts(11501, 4).await;
    assert!(texts[3].starts_with(UNAVAILABLE), "{}", texts[3]);
    assert_eq!(app.llm.requests().len(), 2);

    for broken in [
        "[llm.breaker]\nwindow_size = 1\nminimum_calls = 5\n",
        "[supervision.session]\nmailbox_capacity = 0\n",
        "[outbox]\nglobal_per_second = 0\n",
        "[llm.breaker\nnot toml",
    ] {
        app.write_local_config(broken);
        let refused = app
            .admin(reqwest::Method::POST, "/admin/supervision/reload")
            .await;
        assert_eq!(refused.status(), 400, "{broken}");
        let body: serde_json::Value = refused.json().await.expect("json");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let actors: serde_json::Value = app.actors().await;
    assert_eq!(minimum_calls(&actors), 2, "the running settings stayed");
    app.stop().await;
}

#[actix_rt::test]
async fn admin_endpoints_need_the_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for (method, path) in [
        (reqwest::Method::GET, "/admin/actors"),
        (reqwest::Method::POST, "/admin/supervision/reload"),
    ] {
        let anonymous = app
            .http
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .expect("answer");
        assert_eq!(anonymous.status(), 401);
        let wrong = app
            .http
            .request(method, format!("{}{path}", app.address))
            .bearer_auth("not-the-token")
            .send()
            .await
            .expect("answer");
        assert_eq!(wrong.status(), 401);
    }
    let actors: serde_json::Value = app.actors().await;
    let kinds: Vec<&str> = actors["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|k| k["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "session",
            "llm",
            "payments",
            "memory",
            "outbox",
            "scheduler"
        ]
    );
    assert_eq!(actors["providers"][0]["breaker"], "closed");
    // The embeddings provider is reported with the chat providers.
    let providers: Vec<&str> = actors["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(providers, ["primary", "embeddings"]);
    app.stop().await;
}

#[actix_rt::test]
async fn exceeding_the_restart_intensity_fails_readiness() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        TestOptions {
            wrap_llm: Some(Box::new(|inner| {
                Arc::new(PanicOnTrigger {
                    inner,
                    trigger: "PANIC",
                })
            })),
            adjust: Some(Box::new(|settings| {
                settings
                    .supervision
                    .kind_mut(ActorKind::Session)
                    .restart_intensity = IntensitySettings {
                    max_restarts: 1,
                    within_ms: 60_000,
                };
                settings
                    .supervision
                    .kind_mut(ActorKind::Session)
                    .backoff
                    .min_ms = 10;
            })),
            ..TestOptions::default()
        },
    )
    .await;
    app.start_dialog(11601, "mira").await;
    app.user_says(11601, "PANIC one").await;
    app.wait_for_texts(11601, 2).await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200, "one restart is within the intensity");

    app.user_says(11601, "PANIC two").await;
    app.wait_for_texts(11601, 3).await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["failing"], serde_json::json!(["supervision"]));
    let actors: serde_json::Value = app.actors().await;
    assert_eq!(actors["kinds"][0]["restarts"], 2);
    assert_eq!(actors["kinds"][0]["healthy"], false);
    assert_eq!(
        app.metric("vitte_actor_restarts_total{kind=\"session\"}")
            .await,
        2.0
    );
    app.stop().await;
}

/// `REDIS_URL` and the address it names (the test fails without it: such tests are compiled
/// as ignored when `REDIS_URL` is unset outside CI).
fn redis_address() -> (String, std::net::SocketAddr) {
    let url = required_env("REDIS_URL");
    let parsed = url::Url::parse(&url).expect("REDIS_URL is a URL");
    let host = parsed
        .host_str()
        .expect("REDIS_URL names a host")
        .to_owned();
    let port = parsed.port().unwrap_or(6379);
    let address = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut addresses| addresses.next())
        .expect("REDIS_URL's host resolves");
    (url, address)
}

#[actix_rt::test]
#[cfg_attr(skip_redis_tests, ignore = "REDIS_URL is not set")]
async fn redis_going_away_degrades_and_coming_back_recovers() {
    let (_, redis) = redis_address();
    // Forget this user's bucket from earlier runs.
    let client = redis::Client::open(format!("redis://{redis}")).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("DEL")
        .arg("vitte:rl:user:11701")
        .query_async(&mut connection)
        .await
        .expect("del");
    let proxy = TcpProxy::start(redis).await;
    let proxied = format!("redis://{}", proxy.address());
    let app = TestApp::spawn_adjusted(Backend::Sqlite, move |settings| {
        settings.redis.url = SecretString::from(proxied)
    })
    .await;
    app.start_dialog(11701, "arlo").await;
    app.user_says(11701, "with redis").await;
    assert_eq!(app.wait_for_texts(11701, 2).await[1], "echo: with redis");
    assert_eq!(app.metric("redis_fallback_active").await, 0.0);

    // The limiter really lives in Redis (the connection is made in the background, so
    // wait until a message has gone through it).
    let mut sent = 2;
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg("vitte:rl:user:11701")
            .query_async(&mut connection)
            .await
            .expect("exists");
        if exists {
            break;
        }
        sent += 1;
        app.user_says(11701, &format!("again {sent}")).await;
        app.wait_for_texts(11701, sent).await;
        assert!(sent < 50, "the limiter never used Redis");
    }

    proxy.cut();
    app.user_says(11701, "without redis").await;
    sent += 1;
    assert_eq!(
        app.wait_for_texts(11701, sent).await[sent - 1],
        "echo: without redis"
    );
    assert_eq!(app.metric("redis_fallback_active").await, 1.0);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200, "Redis is optional: still ready");
    let health: serde_json::Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["components"]["redis"]["status"], "down");

    proxy.restore();
    wait_until_async("Redis to be used again", || {
        sent += 1;
        let text = format!("message {sent}");
        let app = &app;
        async move {
            app.user_says(11701, &text).await;
            app.wait_for_texts(11701, sent).await;
            app.metric("redis_fallback_active").await == 0.0
        }
    })
    .await;
    app.stop().await;
}

fn summary_request(text: &str, user: i64) -> CompletionRequest {
    CompletionRequest {
        messages: vec![ChatMessage {
            role: Role::User,
            content: text.to_owned(),
        }],
        temperature: Some(0.0),
        purpose: Purpose::Summary,
        user_id: Some(user),
        stream: None,
    }
}

/// A gateway over the real HTTP client and the fake LLM, with the given cache.
fn gateway_over(
    llm: &FakeLlm,
    cache: Arc<dyn ResponseCache>,
    limiter: Arc<dyn RateLimiter>,
    metrics: &Metrics,
) -> LlmGateway {
    let mut settings = vitte::config::Settings::load_from(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        "local",
    )
    .expect("defaults");
    settings.llm.base_url = llm.base_url();
    let client =
        vitte::llm::OpenAiClient::new(&vitte::llm::ProviderEndpoint::primary(&settings.llm))
            .expect("client");
    LlmGateway::new(
        vec![ProviderSpec {
            name: "primary".into(),
            model: settings.llm.model.clone(),
            client: Arc::new(client),
            tuning: Default::default(),
        }],
        GatewayTuning {
            user_rate_limit: RateLimit::default(),
            max_queue_wait: Duration::ZERO,
            cache_enabled: true,
            cache_ttl: Duration::from_secs(60),
            providers: HashMap::new(),
            background_rate_limit: RateLimit::default(),
        },
        limiter,
        cache,
        Arc::new(Supervisor::new(HashMap::new(), metrics.clone())),
    )
}

/// A named cache and limiter pair.
type CacheBackend = (&'static str, Arc<dyn ResponseCache>, Arc<dyn RateLimiter>);

#[actix_rt::test]
async fn a_cache_hit_makes_no_llm_call_in_process() {
    let cache: CacheBackend = (
        "in-process",
        Arc::new(MemoryCache::new(100)),
        Arc::new(MemoryRateLimiter::default()),
    );
    cache_hits_make_no_llm_call(cache, Metrics::new().expect("metrics")).await;
}

#[actix_rt::test]
#[cfg_attr(skip_redis_tests, ignore = "REDIS_URL is not set")]
async fn a_cache_hit_makes_no_llm_call_in_redis() {
    let (url, _) = redis_address();
    let metrics = Metrics::new().expect("metrics");
    let redis = Arc::new(
        vitte::redis_backend::RedisBackend::new(&url, 100, metrics.clone()).expect("redis"),
    );
    cache_hits_make_no_llm_call(("redis", redis.clone(), redis), metrics).await;
}

/// A deterministic request is answered from `backend`'s cache the second time (one LLM
/// call), companion replies never are, and Redis (when it is the backend) answered.
async fn cache_hits_make_no_llm_call(backend: CacheBackend, metrics: Metrics) {
    let llm = FakeLlm::start().await;
    let backends = [backend];
    for (name, cache, limiter) in backends {
        let gateway = gateway_over(&llm, cache, limiter, &metrics);
        let before = llm.requests().len();
        // Unique text per run, so an earlier run's Redis entries cannot answer.
        let text = format!("summarise {name} {}", std::process::id());
        let first = gateway
            .complete(summary_request(&text, 1))
            .await
            .expect("answer");
        let second = gateway
            .complete(summary_request(&text, 2))
            .await
            .expect("cached answer");
        assert_eq!(first.text, second.text, "{name}");
        assert_eq!(
            llm.requests().len(),
            before + 1,
            "{name}: the second came from the cache"
        );

        let companion = CompletionRequest::companion(summary_request(&text, 1).messages, 1);
        gateway.complete(companion.clone()).await.expect("answer");
        gateway.complete(companion).await.expect("answer");
        assert_eq!(
            llm.requests().len(),
            before + 3,
            "{name}: companion replies are never cached"
        );
    }
    assert!(metrics.llm_cache_hits_total.get() >= 1);
    assert_eq!(metrics.redis_fallback_active.get(), 0, "Redis answered");
    llm.stop().await;
}

#[actix_rt::test]
async fn sighup_reloads_the_configuration() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.write_local_config("[llm.rate_limit]\nper_minute = 42\nburst = 3\n");
    // nextest runs each test in its own process, so the signal reaches only this app.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_until_async("the reload", || async {
        let actors: serde_json::Value = app.actors().await;
        actors["providers"][0]["rate_limit_per_minute"] == 42
    })
    .await;
    app.stop().await;
}

#[actix_rt::test]
async fn the_gateway_is_reported_as_a_service_not_as_actors() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let actors = app.actors().await;
    let kinds = actors["kinds"].as_array().expect("kinds");
    let session = &kinds[0];
    assert_eq!(session["shape"], "mailbox");
    assert!(session["live"].is_i64() && session["mailbox_depth"].is_i64());
    let llm = &kinds[1];
    assert_eq!(llm["kind"], "llm");
    assert_eq!(llm["shape"], "service");
    assert!(
        llm.get("live").is_none(),
        "a service has no live actors: {llm}"
    );
    assert!(llm.get("mailbox_depth").is_none(), "nor a mailbox: {llm}");
    assert_eq!(actors["llm_requests_waiting"], 0);
    let metrics = app.metrics_text().await;
    assert!(
        !metrics.contains("vitte_actors_live{kind=\"llm\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("vitte_actor_mailbox_depth{kind=\"llm\"}"));
    assert!(metrics.contains("vitte_actor_restarts_total{kind=\"llm\"} 0"));
    app.stop().await;
}
