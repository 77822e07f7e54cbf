//! The LLM gateway: every LLM call goes through it, so one failing provider never takes the
//! bot down.
//!
//! It is a *service*, not a mailbox actor: callers on any arbiter call it directly and
//! concurrently, and its state is per provider (a breaker, a rate limit, a crash backoff).
//! It is supervised all the same, as the `llm` kind: each provider's client calls run through
//! that provider's [`Guard`], so a panic in a client is caught, counted and rests that
//! provider for the kind's backoff. `/admin/actors` shows it as a service: restarts and
//! health, with no live actors or mailbox; the calls waiting for a rate limit are
//! `llm_requests_waiting`.
//!
//! For each request: the user's rate limit; then each provider in order (primary first, then
//! fallbacks) with its circuit breaker, its global rate limit (background work — memory
//! extraction, summaries — has a bucket of its own, so it never takes a reply's), the response cache
//! (deterministic requests only) and retries with exponential backoff and jitter that honour
//! `Retry-After`. Limited requests wait in a bounded queue (the `llm` kind's mailbox) up to a
//! deadline, else they are refused with [`LlmError::RateLimited`]; when every breaker is open
//! the caller gets [`LlmError::CircuitOpen`] at once. A panic inside a provider's client is
//! caught by the provider's guard, counted as an `llm` restart, and pauses that provider for
//! the kind's backoff.
//!
//! Streamed requests (`CompletionRequest::stream`) are retried and sent to fallbacks only
//! while none of their text has been passed on: once the user has seen the beginning of an
//! answer, an error ends the request. A streamed call cancelled after its text began (the
//! user pressed /stop) does not count against the provider.

mod embeddings;
mod local;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use embeddings::EmbeddingSpec;
pub use local::{MemoryCache, MemoryRateLimiter};

use crate::metrics::Metrics;
use crate::ports::{
    Completion, CompletionRequest, LanguageModel, LlmError, RateLimiter, ResponseCache, TextSink,
};
use crate::resilience::backoff::BackoffSettings;
use crate::resilience::breaker::{BreakerSettings, BreakerState, CircuitBreaker, Permit};
use crate::resilience::limiter::RateLimit;
use crate::supervision::{ActorKind, Guard, Supervisor};
use crate::sync::{lock, read, write};

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
    /// How long to wait before attempt `attempt + 1` after `error`: the backoff, or the
    /// provider's `Retry-After` when longer. `None` when the error is not worth a retry, the
    /// attempts are spent, or the provider asks for a longer pause than the backoff allows.
    pub fn delay_after(&self, attempt: u32, error: &LlmError) -> Option<Duration> {
        if !error.is_retryable() || attempt >= self.max_attempts {
            return None;
        }
        let backoff = self.backoff.delay(attempt, fastrand::f64());
        let delay = error
            .retry_after()
            .map_or(backoff, |asked| asked.max(backoff));
        (delay <= Duration::from_millis(self.backoff.max_ms).max(backoff)).then_some(delay)
    }

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
    /// Background work (memory extraction, summaries) takes its tokens from a bucket of its
    /// own per provider, never from the one replies use: memory work never delays a reply.
    pub background_rate_limit: RateLimit,
}

struct Provider {
    name: String,
    model: String,
    client: Arc<dyn LanguageModel>,
    breaker: Mutex<CircuitBreaker>,
    tuning: RwLock<ProviderTuning>,
    /// After a crash the provider rests for the `llm` kind's backoff.
    paused_until: Mutex<Option<Instant>>,
    /// Runs the client's calls under supervision.
    guard: Guard,
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

impl ProviderReport {
    /// What operators see of one provider now.
    fn of(
        name: &str,
        model: &str,
        breaker: &mut CircuitBreaker,
        tuning: &ProviderTuning,
        now: std::time::Instant,
    ) -> ProviderReport {
        ProviderReport {
            name: name.to_owned(),
            model: model.to_owned(),
            breaker: breaker.state(now).as_str(),
            consecutive_openings: breaker.consecutive_openings(),
            failure_rate_threshold: breaker.settings().failure_rate_threshold,
            minimum_calls: breaker.settings().minimum_calls,
            rate_limit_per_minute: tuning.rate_limit.per_minute,
        }
    }
}

/// The gateway; cheap to share (`Arc`), safe to call from any arbiter.
pub struct LlmGateway {
    providers: Vec<Provider>,
    tuning: RwLock<Arc<GatewayTuning>>,
    limiter: Arc<dyn RateLimiter>,
    cache: Arc<dyn ResponseCache>,
    supervisor: Arc<Supervisor>,
    waiting: AtomicI64,
    /// The `/embeddings` provider of long-term memory, if configured.
    embeddings: Option<embeddings::EmbeddingProvider>,
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

impl LlmGateway {
    pub fn new(
        providers: Vec<ProviderSpec>,
        tuning: GatewayTuning,
        limiter: Arc<dyn RateLimiter>,
        cache: Arc<dyn ResponseCache>,
        supervisor: Arc<Supervisor>,
    ) -> LlmGateway {
        let metrics = supervisor.metrics().clone();
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
                    guard: Guard::new(ActorKind::Llm, supervisor.clone()),
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
            embeddings: None,
        }
    }

    fn metrics(&self) -> &Metrics {
        self.supervisor.metrics()
    }

    fn tuning(&self) -> Arc<GatewayTuning> {
        read(&self.tuning).clone()
    }

    /// Applies new settings without a restart. Providers are matched by name; a name not
    /// configured keeps its settings (adding or removing providers needs a restart).
    pub fn reconfigure(&self, tuning: GatewayTuning) {
        for provider in &self.providers {
            if let Some(new) = tuning.providers.get(&provider.name) {
                lock(&provider.breaker).reconfigure(new.breaker.clone());
                *write(&provider.tuning) = new.clone();
            }
        }
        if let Some(name) = self.embeddings_name() {
            self.reconfigure_embeddings(tuning.providers.get(name));
        }
        *write(&self.tuning) = Arc::new(tuning);
    }

    /// Each provider's breaker and settings (the embeddings provider last).
    pub fn report(&self) -> Vec<ProviderReport> {
        let now = Instant::now().into_std();
        let mut reports: Vec<ProviderReport> = self
            .providers
            .iter()
            .map(|provider| {
                let mut breaker = lock(&provider.breaker);
                let state = breaker.state(now);
                self.set_breaker_gauge(&provider.name, state);
                let tuning = read(&provider.tuning);
                ProviderReport::of(&provider.name, &provider.model, &mut breaker, &tuning, now)
            })
            .collect();
        reports.extend(self.embeddings_report());
        reports
    }

    /// `llm_breaker_state` of the provider called `name` (a chat or the embeddings one).
    fn set_breaker_gauge(&self, name: &str, state: BreakerState) {
        self.metrics()
            .llm_breaker_state
            .with_label_values(&[name])
            .set(state.as_gauge());
    }

    /// Takes a token from bucket `key`, waiting in the bounded queue when it is empty.
    async fn admit(
        &self,
        key: &str,
        limit: &RateLimit,
        max_wait: Duration,
    ) -> Result<(), LlmError> {
        let now = Instant::now();
        let deadline = now.checked_add(max_wait).unwrap_or(now);
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
            .llm_requests_waiting
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
        self.set_breaker_gauge(&provider.name, breaker.state(now));
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
        self.set_breaker_gauge(&provider.name, state);
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
        let settings = read(&provider.tuning).clone();
        // Background work never waits in the queue either: it would take a reply's place.
        let (limit_key, limit, max_wait) = if request.purpose.is_background() {
            let key = format!("provider:{}:background", provider.name);
            (key, tuning.background_rate_limit.clone(), Duration::ZERO)
        } else {
            let key = format!("provider:{}", provider.name);
            (key, settings.rate_limit.clone(), tuning.max_queue_wait)
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = {
                let mut breaker = lock(&provider.breaker);
                let now = Instant::now().into_std();
                let permit = breaker.try_acquire(now);
                self.set_breaker_gauge(&provider.name, breaker.state(now));
                permit.map_err(|rejected| LlmError::CircuitOpen {
                    retry_in: rejected.retry_in,
                })?
            };
            // Every request sent costs a token of the provider's limit, retries included.
            if let Err(limited) = self.admit(&limit_key, &limit, max_wait).await {
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
            let outcome = provider
                .guard
                .run(provider.client.complete(request.clone()))
                .await;
            let elapsed = call.started.elapsed();
            self.metrics()
                .ai_request_duration_seconds
                .with_label_values(&[&provider.name])
                .observe(elapsed.as_secs_f64());
            let result = match outcome {
                Ok(result) => result,
                Err(crash) => {
                    // The client rests for the kind's backoff; calls meanwhile go elsewhere.
                    *lock(&provider.paused_until) = Some(Instant::now() + crash.restart_in);
                    Err(LlmError::Crashed(crash.message))
                }
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
                    if request.has_streamed() {
                        return Err(error);
                    }
                    // None also when the provider asks for a longer pause than we make a
                    // user wait.
                    let Some(delay) = settings.retry.delay_after(attempt, &error) else {
                        return Err(error);
                    };
                    tracing::debug!(provider = %provider.name, attempt, ?delay, %error, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
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
            let key = format!("user:{user_id}");
            self.admit(&key, &tuning.user_rate_limit, tuning.max_queue_wait)
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

#[cfg(test)]
mod tests;
