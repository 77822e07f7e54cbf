//! The gateway's unit tests, on scripted providers and tokio's paused clock.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::ports::{ChatMessage, Purpose, Role};
use crate::supervision::KindPolicy;

/// A provider that answers from a script (then "ok"), counting calls.
#[derive(Default)]
struct Scripted {
    calls: AtomicUsize,
    script: Mutex<VecDeque<Result<&'static str, LlmError>>>,
    panics: bool,
}

impl Scripted {
    fn with(script: Vec<Result<&'static str, LlmError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Mutex::new(script.into()),
            ..Scripted::default()
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LanguageModel for Scripted {
    async fn complete(&self, _request: CompletionRequest) -> Result<Completion, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(!self.panics, "provider bug");
        let next = lock(&self.script).pop_front().unwrap_or(Ok("ok"));
        next.map(|text| Completion {
            text: text.to_owned(),
            prompt_tokens: Some(1),
            completion_tokens: Some(1),
            provider: String::new(),
        })
    }
}

fn status(code: u16, retry_after: Option<Duration>) -> LlmError {
    LlmError::Status {
        status: code,
        message: "fake".into(),
        retry_after,
    }
}

fn tuning_with(retry_attempts: u32) -> ProviderTuning {
    ProviderTuning {
        breaker: BreakerSettings {
            window_size: 4,
            minimum_calls: 4,
            failure_rate_threshold: 0.5,
            open_ms: 1_000,
            max_open_ms: 8_000,
            half_open_probes: 1,
            ..BreakerSettings::default()
        },
        rate_limit: RateLimit {
            per_minute: 6_000,
            burst: 100,
        },
        retry: RetrySettings {
            max_attempts: retry_attempts,
            backoff: BackoffSettings {
                min_ms: 100,
                max_ms: 5_000,
                jitter: 0.0,
                reset_after_ms: 60_000,
            },
        },
    }
}

fn build(
    providers: Vec<(&str, Arc<Scripted>)>,
    user_limit: RateLimit,
    max_wait: Duration,
) -> (LlmGateway, Metrics) {
    let clients = providers
        .into_iter()
        .map(|(name, client)| (name, client as Arc<dyn LanguageModel>))
        .collect();
    build_with(clients, user_limit, max_wait)
}

/// A gateway over `providers` (each with [`tuning_with`]`(3)`), and its metrics.
fn build_with(
    providers: Vec<(&str, Arc<dyn LanguageModel>)>,
    user_limit: RateLimit,
    max_wait: Duration,
) -> (LlmGateway, Metrics) {
    let metrics = Metrics::new().expect("metrics");
    let specs: Vec<ProviderSpec> = providers
        .into_iter()
        .map(|(name, client)| ProviderSpec {
            name: name.to_owned(),
            model: "m".into(),
            client,
            tuning: tuning_with(3),
        })
        .collect();
    let supervisor = Arc::new(Supervisor::new(
        HashMap::from([(ActorKind::Llm, KindPolicy::default())]),
        metrics.clone(),
    ));
    let tuning = GatewayTuning {
        user_rate_limit: user_limit,
        max_queue_wait: max_wait,
        cache_enabled: true,
        cache_ttl: Duration::from_secs(3600),
        providers: HashMap::new(),
        background_rate_limit: RateLimit::default(),
    };
    let gateway = LlmGateway::new(
        specs,
        tuning,
        Arc::new(MemoryRateLimiter::default()),
        Arc::new(MemoryCache::new(100)),
        supervisor,
    );
    (gateway, metrics)
}

fn generous() -> RateLimit {
    RateLimit {
        per_minute: 6_000,
        burst: 100,
    }
}

fn request(user: i64) -> CompletionRequest {
    CompletionRequest::companion(
        vec![ChatMessage {
            role: Role::User,
            content: "hello".into(),
        }],
        user,
    )
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_and_bad_requests_are_not() {
    let provider = Scripted::with(vec![Err(status(408, None)), Err(LlmError::Timeout)]);
    let (gateway, metrics) = build(vec![("p", provider.clone())], generous(), Duration::ZERO);
    let answer = gateway
        .complete(request(1))
        .await
        .expect("third attempt answers");
    assert_eq!(answer.text, "ok");
    assert_eq!(answer.provider, "p");
    assert_eq!(provider.calls(), 3);
    assert_eq!(
        metrics
            .ai_requests_total
            .with_label_values(&["p", "m", "timeout"])
            .get(),
        1
    );

    let provider = Scripted::with(vec![Err(status(400, None))]);
    let (gateway, _) = build(vec![("p", provider.clone())], generous(), Duration::ZERO);
    let error = gateway.complete(request(1)).await.expect_err("no retry");
    assert!(matches!(error, LlmError::Status { status: 400, .. }));
    assert_eq!(provider.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let provider = Scripted::with(vec![Err(status(429, Some(Duration::from_secs(3))))]);
    let (gateway, _) = build(vec![("p", provider.clone())], generous(), Duration::ZERO);
    let started = Instant::now();
    gateway
        .complete(request(1))
        .await
        .expect("answers after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(provider.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_rejects_at_once_and_a_probe_closes_it() {
    let failures = (0..4).map(|_| Err(status(500, None))).collect();
    let provider = Scripted::with(failures);
    let (gateway, metrics) = build(vec![("p", provider.clone())], generous(), Duration::ZERO);
    gateway.reconfigure(GatewayTuning {
        providers: HashMap::from([("p".to_owned(), tuning_with(1))]),
        ..(*gateway.tuning()).clone()
    });
    for _ in 0..4 {
        gateway.complete(request(1)).await.expect_err("fails");
    }
    assert_eq!(metrics.llm_breaker_state.with_label_values(&["p"]).get(), 2);
    let error = gateway.complete(request(1)).await.expect_err("open");
    assert!(matches!(error, LlmError::CircuitOpen { .. }), "{error}");
    assert_eq!(provider.calls(), 4, "nothing sent while open");

    tokio::time::advance(Duration::from_millis(1_001)).await;
    gateway
        .complete(request(1))
        .await
        .expect("the probe succeeds");
    assert_eq!(metrics.llm_breaker_state.with_label_values(&["p"]).get(), 0);
    assert_eq!(gateway.report()[0].breaker, "closed");
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_falls_back() {
    let primary = Scripted::with((0..10).map(|_| Err(status(502, None))).collect());
    let fallback = Scripted::with(vec![Ok("from the fallback")]);
    let (gateway, _) = build(
        vec![("primary", primary.clone()), ("fallback", fallback.clone())],
        generous(),
        Duration::ZERO,
    );
    let answer = gateway
        .complete(request(1))
        .await
        .expect("the fallback answers");
    assert_eq!(answer.text, "from the fallback");
    assert_eq!(answer.provider, "fallback");
    assert_eq!(primary.calls(), 3, "the primary's retries came first");
}

/// A streaming provider: passes `piece` on (if any), then fails with 502, or hangs.
struct Streaming {
    calls: AtomicUsize,
    piece: Option<&'static str>,
    hang: bool,
}

#[async_trait]
impl LanguageModel for Streaming {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let (Some(sink), Some(piece)) = (&request.stream, self.piece) {
            sink.push(piece);
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(status(502, None))
    }
}

fn streaming(piece: Option<&'static str>, hang: bool) -> Arc<Streaming> {
    Arc::new(Streaming {
        calls: AtomicUsize::new(0),
        piece,
        hang,
    })
}

fn build_streaming(providers: Vec<(&str, Arc<Streaming>)>) -> LlmGateway {
    let clients = providers
        .into_iter()
        .map(|(name, client)| (name, client as Arc<dyn LanguageModel>))
        .collect();
    build_with(clients, generous(), Duration::ZERO).0
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_reached_the_user_is_neither_retried_nor_sent_elsewhere() {
    let primary = streaming(Some("Once upon"), false);
    let fallback = streaming(None, false);
    let gateway = build_streaming(vec![
        ("primary", primary.clone()),
        ("fallback", fallback.clone()),
    ]);
    let (sink, mut pieces) = TextSink::channel();
    let error = gateway
        .complete(CompletionRequest {
            stream: Some(sink),
            ..request(1)
        })
        .await
        .expect_err("the stream broke");
    assert!(
        matches!(error, LlmError::Status { status: 502, .. }),
        "{error}"
    );
    assert_eq!(primary.calls.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(
        fallback.calls.load(Ordering::SeqCst),
        0,
        "not sent elsewhere"
    );
    assert_eq!(pieces.try_recv().ok().as_deref(), Some("Once upon"));

    // Before any text went out, the usual retries and fallback apply.
    let silent = streaming(None, false);
    let fallback = streaming(None, false);
    let gateway = build_streaming(vec![
        ("primary", silent.clone()),
        ("fallback", fallback.clone()),
    ]);
    let (sink, _pieces) = TextSink::channel();
    let _ = gateway
        .complete(CompletionRequest {
            stream: Some(sink),
            ..request(1)
        })
        .await;
    assert_eq!(silent.calls.load(Ordering::SeqCst), 3);
    assert_eq!(fallback.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn streams_stopped_by_their_users_do_not_open_the_breaker() {
    let provider = streaming(None, true);
    let gateway = build_streaming(vec![("p", provider.clone())]);
    // More cancelled calls than the breaker's minimum: /stop before the first token.
    for _ in 0..6 {
        let (sink, _pieces) = TextSink::channel();
        let call = gateway.complete(CompletionRequest {
            stream: Some(sink),
            ..request(1)
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(1), call)
                .await
                .is_err()
        );
    }
    assert_eq!(gateway.report()[0].breaker, "closed");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn deterministic_requests_are_cached_and_companion_replies_never() {
    let provider = Scripted::with(vec![]);
    let (gateway, metrics) = build(vec![("p", provider.clone())], generous(), Duration::ZERO);
    let summary = CompletionRequest {
        temperature: Some(0.0),
        purpose: Purpose::Summary,
        ..request(1)
    };
    gateway.complete(summary.clone()).await.expect("answer");
    let cached = gateway
        .complete(CompletionRequest {
            user_id: Some(2),
            ..summary
        })
        .await
        .expect("answer");
    assert_eq!(provider.calls(), 1, "the second came from the cache");
    assert_eq!(cached.provider, "p");
    assert_eq!(metrics.llm_cache_hits_total.get(), 1);

    gateway.complete(request(1)).await.expect("answer");
    gateway.complete(request(1)).await.expect("answer");
    assert_eq!(provider.calls(), 3, "companion replies are never cached");
}

#[tokio::test(start_paused = true)]
async fn a_user_over_the_limit_waits_or_is_refused() {
    let provider = Scripted::with(vec![]);
    let one_per_second = RateLimit {
        per_minute: 60,
        burst: 1,
    };
    let (gateway, metrics) = build(
        vec![("p", provider.clone())],
        one_per_second.clone(),
        Duration::ZERO,
    );
    gateway.complete(request(7)).await.expect("first");
    let error = gateway.complete(request(7)).await.expect_err("refused");
    assert!(matches!(error, LlmError::RateLimited { .. }), "{error}");
    gateway
        .complete(request(8))
        .await
        .expect("another user is not limited");
    assert!(metrics.llm_rate_limited_total.get() >= 1);

    let (patient, _) = build(
        vec![("p", provider.clone())],
        one_per_second,
        Duration::from_secs(5),
    );
    patient.complete(request(7)).await.expect("first");
    let started = Instant::now();
    patient.complete(request(7)).await.expect("waits its turn");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_client_is_a_restart_not_a_crash() {
    let provider = Arc::new(Scripted {
        panics: true,
        ..Scripted::default()
    });
    let (gateway, metrics) = build(vec![("p", provider.clone())], generous(), Duration::ZERO);
    let error = gateway.complete(request(1)).await.expect_err("crashed");
    assert!(matches!(error, LlmError::Crashed(_)), "{error}");
    assert_eq!(
        metrics
            .actor_restarts_total
            .with_label_values(&["llm"])
            .get(),
        1
    );
    let error = gateway.complete(request(1)).await.expect_err("paused");
    assert!(matches!(error, LlmError::CircuitOpen { .. }), "{error}");
    assert_eq!(provider.calls(), 1, "the paused provider is not called");
}

#[tokio::test(start_paused = true)]
async fn an_open_primary_is_skipped_for_the_fallback() {
    let primary = Scripted::with((0..4).map(|_| Err(status(500, None))).collect());
    let fallback = Scripted::with(vec![]);
    let (gateway, _) = build(
        vec![("primary", primary.clone()), ("fallback", fallback.clone())],
        generous(),
        Duration::ZERO,
    );
    gateway.reconfigure(GatewayTuning {
        providers: HashMap::from([
            ("primary".to_owned(), tuning_with(1)),
            ("fallback".to_owned(), tuning_with(1)),
        ]),
        ..(*gateway.tuning()).clone()
    });
    for _ in 0..4 {
        let answer = gateway
            .complete(request(1))
            .await
            .expect("the fallback answers");
        assert_eq!(answer.provider, "fallback");
    }
    assert_eq!(primary.calls(), 4);
    let answer = gateway.complete(request(1)).await.expect("answer");
    assert_eq!(answer.provider, "fallback");
    assert_eq!(primary.calls(), 4, "the open primary is not called");
}

#[tokio::test(start_paused = true)]
async fn the_provider_limit_applies_and_a_limited_primary_falls_back() {
    let primary = Scripted::with(vec![]);
    let (gateway, _) = build(
        vec![("primary", primary.clone())],
        generous(),
        Duration::ZERO,
    );
    let one_per_second = ProviderTuning {
        rate_limit: RateLimit {
            per_minute: 60,
            burst: 1,
        },
        ..tuning_with(1)
    };
    let tuning = GatewayTuning {
        providers: HashMap::from([("primary".to_owned(), one_per_second.clone())]),
        ..(*gateway.tuning()).clone()
    };
    gateway.reconfigure(tuning.clone());
    gateway.complete(request(1)).await.expect("first");
    let error = gateway
        .complete(request(2))
        .await
        .expect_err("the provider is limited");
    assert!(matches!(error, LlmError::RateLimited { .. }), "{error}");

    let fallback = Scripted::with(vec![]);
    let (gateway, _) = build(
        vec![("primary", primary.clone()), ("fallback", fallback.clone())],
        generous(),
        Duration::ZERO,
    );
    gateway.reconfigure(tuning);
    gateway.complete(request(1)).await.expect("first");
    let answer = gateway
        .complete(request(2))
        .await
        .expect("the fallback serves");
    assert_eq!(answer.provider, "fallback");
}

#[tokio::test(start_paused = true)]
async fn background_work_has_its_own_bucket_and_never_takes_a_replys_token() {
    let primary = Scripted::with(vec![]);
    let (gateway, _) = build(vec![("p", primary.clone())], generous(), Duration::ZERO);
    let one_at_a_time = RateLimit {
        per_minute: 60,
        burst: 1,
    };
    gateway.reconfigure(GatewayTuning {
        providers: HashMap::from([(
            "p".to_owned(),
            ProviderTuning {
                rate_limit: one_at_a_time.clone(),
                ..tuning_with(1)
            },
        )]),
        background_rate_limit: one_at_a_time,
        // Replies may wait for a token; background work never does (it would hold a
        // reply's place in the queue).
        max_queue_wait: Duration::from_secs(10),
        ..(*gateway.tuning()).clone()
    });
    let background = || {
        CompletionRequest::derived(
            vec![ChatMessage {
                role: Role::User,
                content: "facts, please".into(),
            }],
            Purpose::Memory,
        )
    };
    gateway.complete(background()).await.expect("background");
    let error = gateway
        .complete(background())
        .await
        .expect_err("the background bucket is empty, and it does not wait");
    assert!(matches!(error, LlmError::RateLimited { .. }), "{error}");
    // The replies' bucket is untouched: a reply goes at once.
    gateway.complete(request(1)).await.expect("a reply");
    assert_eq!(primary.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let provider = Scripted::with(vec![]);
    let one_per_second = RateLimit {
        per_minute: 60,
        burst: 1,
    };
    let metrics = Metrics::new().expect("metrics");
    let supervisor = Arc::new(Supervisor::new(
        HashMap::from([(
            ActorKind::Llm,
            KindPolicy {
                mailbox_capacity: 1,
                ..KindPolicy::default()
            },
        )]),
        metrics.clone(),
    ));
    let gateway = LlmGateway::new(
        vec![ProviderSpec {
            name: "p".into(),
            model: "m".into(),
            client: provider.clone(),
            tuning: tuning_with(1),
        }],
        GatewayTuning {
            user_rate_limit: one_per_second,
            max_queue_wait: Duration::from_secs(10),
            cache_enabled: false,
            cache_ttl: Duration::ZERO,
            providers: HashMap::new(),
            background_rate_limit: RateLimit::default(),
        },
        Arc::new(MemoryRateLimiter::default()),
        Arc::new(MemoryCache::new(10)),
        supervisor,
    );
    gateway.complete(request(9)).await.expect("first");
    let (waiting, refused) = tokio::join!(gateway.complete(request(9)), async {
        tokio::task::yield_now().await;
        gateway.complete(request(9)).await
    });
    assert!(waiting.is_ok(), "the first waiter gets its turn");
    assert!(
        matches!(refused, Err(LlmError::RateLimited { .. })),
        "the queue held one"
    );
    assert_eq!(
        metrics.llm_requests_waiting.get(),
        0,
        "the queue is empty again"
    );
}
