//! The LLM gateway: every LLM call goes through it, so one failing provider never takes the
//! bot down.
//!
//! For each request: the user's rate limit; then each provider in order (primary first, then
//! fallbacks) with its circuit breaker, its global rate limit, the response cache
//! (deterministic requests only) and retries with exponential backoff and jitter that honour
//! `Retry-After`. Limited requests wait in a bounded queue (the `llm` kind's mailbox) up to a
//! deadline, else they are refused with [`LlmError::RateLimited`]; when every breaker is open
//! the caller gets [`LlmError::CircuitOpen`] at once. A panic inside a provider's client is
//! caught, counted as an `llm` restart, and pauses that provider for the kind's backoff.
//!
//! Streamed requests (`CompletionRequest::stream`) are retried and sent to fallbacks only
//! while none of their text has been passed on: once the user has seen the beginning of an
//! answer, an error ends the request. A streamed call cancelled after its text began (the
//! user pressed /stop) does not count against the provider.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::ports::{
    Completion, CompletionRequest, LanguageModel, LlmError, RateLimiter, ResponseCache, TextSink,
};
use crate::resilience::backoff::{BackoffSettings, BackoffState};
use crate::resilience::breaker::{BreakerSettings, BreakerState, CircuitBreaker, Permit};
use crate::resilience::limiter::{RateLimit, TokenBucket};
use crate::supervision::{ActorKind, Supervisor};

/// Retries of one provider.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts per provider, the first included.
    pub max_attempts: u32,
    pub backoff: BackoffSettings,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            backoff: BackoffSettings {
                min_ms: 500,
                max_ms: 10_000,
                jitter: 0.2,
                reset_after_ms: 60_000,
            },
        }
    }
}

impl RetrySettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        self.backoff.validate()
    }
}

/// What operators tune per provider (reloadable).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderTuning {
    pub breaker: BreakerSettings,
    pub rate_limit: RateLimit,
    pub retry: RetrySettings,
}

/// One provider as the gateway is built with it.
pub struct ProviderSpec {
    pub name: String,
    pub model: String,
    pub client: Arc<dyn LanguageModel>,
    pub tuning: ProviderTuning,
}

/// Settings that apply to every request (reloadable).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayTuning {
    pub user_rate_limit: RateLimit,
    /// Longest a rate-limited request waits for its turn before it is refused.
    pub max_queue_wait: Duration,
    pub cache_enabled: bool,
    pub cache_ttl: Duration,
    /// Per provider, by name.
    pub providers: HashMap<String, ProviderTuning>,
}

struct Provider {
    name: String,
    model: String,
    client: Arc<dyn LanguageModel>,
    breaker: Mutex<CircuitBreaker>,
    tuning: RwLock<ProviderTuning>,
    /// After a crash the provider rests for the `llm` kind's backoff.
    paused_until: Mutex<Option<Instant>>,
    crashes: Mutex<BackoffState>,
}

/// A provider's state, for operators.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProviderReport {
    pub name: String,
    pub model: String,
    pub breaker: &'static str,
    pub consecutive_openings: u32,
    pub failure_rate_threshold: f64,
    pub minimum_calls: usize,
    pub rate_limit_per_minute: u32,
}

/// The gateway; cheap to share (`Arc`), safe to call from any arbiter.
pub struct LlmGateway {
    providers: Vec<Provider>,
    tuning: RwLock<Arc<GatewayTuning>>,
    limiter: Arc<dyn RateLimiter>,
    cache: Arc<dyn ResponseCache>,
    supervisor: Arc<Supervisor>,
    waiting: AtomicI64,
}

/// A place in the rate-limit queue, given up when dropped (also if the caller is cancelled).
struct QueueSlot<'a>(&'a LlmGateway);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.set_queue_gauge();
    }
}

/// A breaker permit in use: if the call is cancelled before its outcome is recorded, it is
/// recorded as a failure, so a half-open probe can never be left outstanding.
struct CallInProgress<'a> {
    gateway: &'a LlmGateway,
    provider: &'a Provider,
    permit: Option<Permit>,
    started: Instant,
    /// The request's stream, if any: a cancelled call that was streaming was healthy.
    sink: Option<&'a TextSink>,
}

impl CallInProgress<'_> {
    fn finish(mut self, healthy: bool) {
        if let Some(permit) = self.permit.take() {
            self.gateway
                .record_outcome(self.provider, permit, healthy, self.started.elapsed());
        }
    }
}

impl Drop for CallInProgress<'_> {
    /// A streamed call is cancelled by its caller (the user pressed /stop): that says nothing
    /// against the provider, so the permit goes back unrecorded (or as a success once text
    /// had come). Any other call dropped unfinished counts as a failure.
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            match self.sink {
                Some(sink) if sink.has_started() => {
                    self.gateway
                        .record_outcome(self.provider, permit, true, self.started.elapsed())
                }
                Some(_) => lock(&self.provider.breaker).release(permit),
                None => self.gateway.record_outcome(
                    self.provider,
                    permit,
                    false,
                    self.started.elapsed(),
                ),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LlmGateway {
    pub fn new(
        providers: Vec<ProviderSpec>,
        tuning: GatewayTuning,
        limiter: Arc<dyn RateLimiter>,
        cache: Arc<dyn ResponseCache>,
        supervisor: Arc<Supervisor>,
    ) -> LlmGateway {
        let metrics = supervisor.metrics().clone();
        metrics
            .actors_live
            .with_label_values(&[ActorKind::Llm.as_str()])
            .set(providers.len() as i64);
        let providers = providers
            .into_iter()
            .map(|spec| {
                metrics
                    .llm_breaker_state
                    .with_label_values(&[&spec.name])
                    .set(0);
                Provider {
                    breaker: Mutex::new(CircuitBreaker::new(spec.tuning.breaker.clone())),
                    tuning: RwLock::new(spec.tuning),
                    name: spec.name,
                    model: spec.model,
                    client: spec.client,
                    paused_until: Mutex::new(None),
                    crashes: Mutex::new(BackoffState::new()),
                }
            })
            .collect();
        LlmGateway {
            providers,
            tuning: RwLock::new(Arc::new(tuning)),
            limiter,
            cache,
            supervisor,
            waiting: AtomicI64::new(0),
        }
    }

    fn metrics(&self) -> &Metrics {
        self.supervisor.metrics()
    }

    fn tuning(&self) -> Arc<GatewayTuning> {
        self.tuning
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies new settings without a restart. Providers are matched by name; a name not
    /// configured keeps its settings (adding or removing providers needs a restart).
    pub fn reconfigure(&self, tuning: GatewayTuning) {
        for provider in &self.providers {
            if let Some(new) = tuning.providers.get(&provider.name) {
                lock(&provider.breaker).reconfigure(new.breaker.clone());
                *provider
                    .tuning
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = new.clone();
            }
        }
        *self.tuning.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tuning);
    }

    /// Each provider's breaker and settings.
    pub fn report(&self) -> Vec<ProviderReport> {
        let now = Instant::now().into_std();
        self.providers
            .iter()
            .map(|provider| {
                let mut breaker = lock(&provider.breaker);
                let state = breaker.state(now);
                self.set_breaker_gauge(provider, state);
                let tuning = provider
                    .tuning
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                ProviderReport {
                    name: provider.name.clone(),
                    model: provider.model.clone(),
                    breaker: state.as_str(),
                    consecutive_openings: breaker.consecutive_openings(),
                    failure_rate_threshold: breaker.settings().failure_rate_threshold,
                    minimum_calls: breaker.settings().minimum_calls,
                    rate_limit_per_minute: tuning.rate_limit.per_minute,
                }
            })
            .collect()
    }

    fn set_breaker_gauge(&self, provider: &Provider, state: BreakerState) {
        self.metrics()
            .llm_breaker_state
            .with_label_values(&[&provider.name])
            .set(state.as_gauge());
    }

    /// Takes a token from bucket `key`, waiting in the bounded queue when it is empty.
    async fn admit(
        &self,
        key: &str,
        limit: &RateLimit,
        tuning: &GatewayTuning,
    ) -> Result<(), LlmError> {
        let now = Instant::now();
        let deadline = now.checked_add(tuning.max_queue_wait).unwrap_or(now);
        let mut counted = false;
        loop {
            let wait = match self.limiter.acquire(key, limit).await {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            if !counted {
                self.metrics().llm_rate_limited_total.inc();
                counted = true;
            }
            let capacity = self.supervisor.policy(ActorKind::Llm).mailbox_capacity as i64;
            let wake_at = Instant::now().checked_add(wait);
            if wake_at.is_none_or(|at| at > deadline) {
                return Err(LlmError::RateLimited { retry_in: wait });
            }
            // Join the queue only while it has room (claimed atomically).
            let joined = self
                .waiting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |waiting| {
                    (waiting < capacity).then_some(waiting + 1)
                })
                .is_ok();
            if !joined {
                return Err(LlmError::RateLimited { retry_in: wait });
            }
            let _in_queue = QueueSlot(self);
            self.set_queue_gauge();
            tokio::time::sleep(wait).await;
        }
    }

    fn set_queue_gauge(&self) {
        self.metrics()
            .actor_mailbox_depth
            .with_label_values(&[ActorKind::Llm.as_str()])
            .set(self.waiting.load(Ordering::SeqCst));
    }

    fn count(&self, provider: &Provider, status: &str) {
        self.metrics()
            .ai_requests_total
            .with_label_values(&[&provider.name, &provider.model, status])
            .inc();
    }

    fn record_outcome(
        &self,
        provider: &Provider,
        permit: Permit,
        healthy: bool,
        elapsed: Duration,
    ) {
        let mut breaker = lock(&provider.breaker);
        let now = Instant::now().into_std();
        breaker.record(permit, healthy, elapsed, now);
        self.set_breaker_gauge(provider, breaker.state(now));
    }

    /// How long until `provider` can be called: `None` if now (breaker not open, not paused).
    fn unavailable_for(&self, provider: &Provider) -> Option<Duration> {
        let now = Instant::now();
        if let Some(until) = *lock(&provider.paused_until) {
            if now < until {
                return Some(until - now);
            }
        }
        let mut breaker = lock(&provider.breaker);
        let state = breaker.state(now.into_std());
        self.set_breaker_gauge(provider, state);
        (state == BreakerState::Open).then(|| match breaker.try_acquire(now.into_std()) {
            Err(rejected) => rejected.retry_in,
            Ok(permit) => {
                breaker.release(permit);
                Duration::ZERO
            }
        })
    }

    /// One provider: cache, then attempts, each with a breaker permit and a rate-limit
    /// token, retried with backoff.
    async fn call_provider(
        &self,
        provider: &Provider,
        request: &CompletionRequest,
        tuning: &GatewayTuning,
    ) -> Result<Completion, LlmError> {
        let cache_key =
            (tuning.cache_enabled && request.is_cacheable()).then(|| cache_key(provider, request));
        if let Some(key) = &cache_key {
            if let Some(mut hit) = self.cache.get(key).await {
                self.metrics().llm_cache_hits_total.inc();
                hit.provider = provider.name.clone();
                return Ok(hit);
            }
        }
        if let Some(retry_in) = self.unavailable_for(provider) {
            return Err(LlmError::CircuitOpen { retry_in });
        }
        let settings = provider
            .tuning
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let limit_key = format!("provider:{}", provider.name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = {
                let mut breaker = lock(&provider.breaker);
                let now = Instant::now().into_std();
                let permit = breaker.try_acquire(now);
                self.set_breaker_gauge(provider, breaker.state(now));
                permit.map_err(|rejected| LlmError::CircuitOpen {
                    retry_in: rejected.retry_in,
                })?
            };
            // Every request sent costs a token of the provider's limit, retries included.
            if let Err(limited) = self.admit(&limit_key, &settings.rate_limit, tuning).await {
                lock(&provider.breaker).release(permit);
                self.count(provider, "rate_limited");
                return Err(limited);
            }
            let call = CallInProgress {
                gateway: self,
                provider,
                permit: Some(permit),
                started: Instant::now(),
                sink: request.stream.as_ref(),
            };
            let outcome = AssertUnwindSafe(provider.client.complete(request.clone()))
                .catch_unwind()
                .await;
            let elapsed = call.started.elapsed();
            self.metrics()
                .ai_request_duration_seconds
                .with_label_values(&[&provider.name])
                .observe(elapsed.as_secs_f64());
            let result = match outcome {
                Ok(result) => result,
                Err(panic) => Err(self.provider_crashed(provider, panic.as_ref())),
            };
            call.finish(
                result
                    .as_ref()
                    .map_or_else(|error| !error.counts_against_provider(), |_| true),
            );
            match result {
                Ok(mut completion) => {
                    self.count(provider, "ok");
                    // A streamed answer's first text is timed where it arrives (the session).
                    if request.stream.is_none() {
                        self.metrics()
                            .ai_time_to_first_token_seconds
                            .observe(elapsed.as_secs_f64());
                    }
                    completion.provider = provider.name.clone();
                    if let Some(key) = &cache_key {
                        self.cache.put(key, &completion, tuning.cache_ttl).await;
                    }
                    return Ok(completion);
                }
                Err(error) => {
                    self.count(
                        provider,
                        if matches!(error, LlmError::Timeout) {
                            "timeout"
                        } else {
                            "error"
                        },
                    );
                    if !error.is_retryable()
                        || attempt >= settings.retry.max_attempts
                        || request.has_streamed()
                    {
                        return Err(error);
                    }
                    let backoff = settings.retry.backoff.delay(attempt, fastrand::f64());
                    let delay = error
                        .retry_after()
                        .map_or(backoff, |asked| asked.max(backoff));
                    if delay > Duration::from_millis(settings.retry.backoff.max_ms).max(backoff) {
                        // The provider asks for a longer pause than we make a user wait.
                        return Err(error);
                    }
                    tracing::debug!(provider = %provider.name, attempt, ?delay, %error, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn provider_crashed(
        &self,
        provider: &Provider,
        panic: &(dyn std::any::Any + Send),
    ) -> LlmError {
        let message = crate::supervision::panic_message(panic);
        tracing::error!(provider = %provider.name, panic = %message, "LLM client panicked");
        self.metrics().count_error("panic");
        self.supervisor.record_restart(ActorKind::Llm);
        let policy = self.supervisor.policy(ActorKind::Llm);
        let pause = lock(&provider.crashes).next_delay(
            &policy.backoff,
            Instant::now().into_std(),
            fastrand::f64(),
        );
        *lock(&provider.paused_until) = Some(Instant::now() + pause);
        LlmError::Crashed(message)
    }
}

/// The cache key: provider, model and the whole request, hashed.
fn cache_key(provider: &Provider, request: &CompletionRequest) -> String {
    let body = serde_json::to_string(request).unwrap_or_default();
    let digest =
        Sha256::digest(format!("{}\n{}\n{body}", provider.name, provider.model).as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("llm:cache:{hex}")
}

#[async_trait]
impl LanguageModel for LlmGateway {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let tuning = self.tuning();
        // While no provider can be called, answer at once and spend none of the user's quota.
        let waits: Vec<Option<Duration>> = self
            .providers
            .iter()
            .map(|provider| self.unavailable_for(provider))
            .collect();
        if !waits.is_empty() && waits.iter().all(Option::is_some) {
            let retry_in = waits.into_iter().flatten().min().unwrap_or_default();
            return Err(LlmError::CircuitOpen { retry_in });
        }
        if let Some(user_id) = request.user_id {
            self.admit(&format!("user:{user_id}"), &tuning.user_rate_limit, &tuning)
                .await?;
        }
        let mut last_error = None;
        let mut all_open = true;
        let mut soonest_retry: Option<Duration> = None;
        for provider in &self.providers {
            match self.call_provider(provider, &request, &tuning).await {
                Ok(completion) => return Ok(completion),
                Err(error) if request.has_streamed() => {
                    // The user has seen part of this answer: another provider's would not
                    // continue it.
                    return Err(error);
                }
                Err(error) => {
                    match &error {
                        LlmError::CircuitOpen { retry_in } => {
                            soonest_retry =
                                Some(soonest_retry.map_or(*retry_in, |s| s.min(*retry_in)));
                        }
                        _ => all_open = false,
                    }
                    tracing::warn!(provider = %provider.name, %error, "provider failed; trying the next");
                    last_error = Some(error);
                }
            }
        }
        if all_open {
            return Err(LlmError::CircuitOpen {
                retry_in: soonest_retry.unwrap_or_default(),
            });
        }
        Err(last_error.unwrap_or(LlmError::Unreachable("no provider configured".into())))
    }
}

/// Token buckets in this process.
#[derive(Default)]
pub struct MemoryRateLimiter {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Buckets kept before idle ones are forgotten (a full bucket carries no information).
const MAX_BUCKETS: usize = 100_000;

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, key: &str, limit: &RateLimit) -> Result<(), Duration> {
        let now = Instant::now().into_std();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // Forget only full buckets: they hold no information.
            buckets.retain(|_, bucket| {
                let capacity = f64::from(bucket.limit().burst);
                bucket.available(now) < capacity
            });
        }
        let bucket = buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::new(limit.clone(), now));
        bucket.reconfigure(limit.clone(), now);
        bucket.try_take(now)
    }

    async fn release(&self, key: &str, _limit: &RateLimit) {
        let now = Instant::now().into_std();
        if let Some(bucket) = lock(&self.buckets).get_mut(key) {
            bucket.give_back(now);
        }
    }
}

/// A bounded in-process cache with expiry.
pub struct MemoryCache {
    entries: Mutex<HashMap<String, (Instant, Completion)>>,
    max_entries: usize,
}

impl MemoryCache {
    pub fn new(max_entries: usize) -> MemoryCache {
        MemoryCache {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }
}

#[async_trait]
impl ResponseCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Completion> {
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some((expires, completion)) if *expires > Instant::now() => Some(completion.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    async fn put(&self, key: &str, completion: &Completion, ttl: Duration) {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= self.max_entries {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.max_entries {
                // Still full of live entries: make room by forgetting an arbitrary one.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        let expires = now.checked_add(ttl).unwrap_or(now);
        entries.insert(key.to_owned(), (expires, completion.clone()));
    }
}

#[cfg(test)]
mod tests {
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
            metrics
                .actor_mailbox_depth
                .with_label_values(&["llm"])
                .get(),
            0
        );
    }
}
