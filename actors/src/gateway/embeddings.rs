//! The gateway's embeddings provider: an OpenAI-compatible `/embeddings` endpoint with its own
//! circuit breaker, rate limit, retries and guard, like a chat provider, so a failing
//! embeddings service never takes replies down with it (recall then goes without memories).

use std::sync::{Mutex, RwLock};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{LlmGateway, ProviderReport, ProviderTuning};
use crate::ports::LlmError;
use crate::ports::memory::Embedder;
use crate::resilience::breaker::CircuitBreaker;
use crate::supervision::{ActorKind, Guard};
use crate::sync::{lock, read, write};

/// The embeddings provider as the gateway is built with it.
pub struct EmbeddingSpec {
    pub name: String,
    pub model: String,
    pub client: std::sync::Arc<dyn Embedder>,
    pub tuning: ProviderTuning,
}

pub(super) struct EmbeddingProvider {
    name: String,
    model: String,
    client: std::sync::Arc<dyn Embedder>,
    breaker: Mutex<CircuitBreaker>,
    tuning: RwLock<ProviderTuning>,
    paused_until: Mutex<Option<Instant>>,
    guard: Guard,
}

/// A breaker permit in use by an embedding call.
struct HeldPermit<'a> {
    breaker: &'a Mutex<CircuitBreaker>,
    permit: Option<crate::resilience::breaker::Permit>,
}

impl Drop for HeldPermit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            lock(self.breaker).release(permit);
        }
    }
}

impl LlmGateway {
    /// Adds the embeddings provider long-term memory uses.
    pub fn with_embeddings(mut self, spec: EmbeddingSpec) -> LlmGateway {
        self.metrics()
            .llm_breaker_state
            .with_label_values(&[&spec.name])
            .set(0);
        self.embeddings = Some(EmbeddingProvider {
            breaker: Mutex::new(CircuitBreaker::new(spec.tuning.breaker.clone())),
            tuning: RwLock::new(spec.tuning),
            name: spec.name,
            model: spec.model,
            client: spec.client,
            paused_until: Mutex::new(None),
            guard: Guard::new(ActorKind::Llm, self.supervisor.clone()),
        });
        self
    }

    pub(super) fn reconfigure_embeddings(&self, tuning: Option<&ProviderTuning>) {
        if let (Some(provider), Some(tuning)) = (&self.embeddings, tuning) {
            lock(&provider.breaker).reconfigure(tuning.breaker.clone());
            *write(&provider.tuning) = tuning.clone();
        }
    }

    pub(super) fn embeddings_name(&self) -> Option<&str> {
        self.embeddings
            .as_ref()
            .map(|provider| provider.name.as_str())
    }

    pub(super) fn embeddings_report(&self) -> Option<ProviderReport> {
        let provider = self.embeddings.as_ref()?;
        let now = Instant::now().into_std();
        let mut breaker = lock(&provider.breaker);
        let tuning = read(&provider.tuning);
        Some(ProviderReport::of(
            &provider.name,
            &provider.model,
            &mut breaker,
            &tuning,
            now,
        ))
    }

    fn embeddings_state(&self, provider: &EmbeddingProvider, status: &str) {
        self.metrics()
            .ai_requests_total
            .with_label_values(&[&provider.name, &provider.model, status])
            .inc();
    }

    async fn embed_once(
        &self,
        provider: &EmbeddingProvider,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let permit = {
            let mut breaker = lock(&provider.breaker);
            let now = Instant::now().into_std();
            let permit = breaker.try_acquire(now);
            self.set_breaker_gauge(&provider.name, breaker.state(now));
            permit.map_err(|rejected| LlmError::CircuitOpen {
                retry_in: rejected.retry_in,
            })?
        };
        let limit = read(&provider.tuning).rate_limit.clone();
        if let Err(wait) = self
            .limiter
            .acquire(&format!("provider:{}", provider.name), &limit)
            .await
        {
            lock(&provider.breaker).release(permit);
            self.embeddings_state(provider, "rate_limited");
            return Err(LlmError::RateLimited { retry_in: wait });
        }
        let started = Instant::now();
        // Dropped unfinished (recall's deadline passed): the permit goes back unrecorded, so
        // a half-open probe is never left outstanding.
        let mut held = HeldPermit {
            breaker: &provider.breaker,
            permit: Some(permit),
        };
        let outcome = provider.guard.run(provider.client.embed(texts)).await;
        let Some(permit) = held.permit.take() else {
            return Err(LlmError::Crashed("the breaker permit was lost".into()));
        };
        let elapsed = started.elapsed();
        self.metrics()
            .ai_request_duration_seconds
            .with_label_values(&[&provider.name])
            .observe(elapsed.as_secs_f64());
        let result = match outcome {
            Ok(Ok(vectors)) if vectors.len() == texts.len() => Ok(vectors),
            Ok(Ok(vectors)) => Err(LlmError::Malformed(format!(
                "{} vectors for {} texts",
                vectors.len(),
                texts.len()
            ))),
            Ok(Err(error)) => Err(error),
            Err(crash) => {
                *lock(&provider.paused_until) = Some(Instant::now() + crash.restart_in);
                Err(LlmError::Crashed(crash.message))
            }
        };
        let healthy = result
            .as_ref()
            .map_or_else(|error| !error.counts_against_provider(), |_| true);
        {
            let mut breaker = lock(&provider.breaker);
            let now = Instant::now().into_std();
            breaker.record(permit, healthy, elapsed, now);
            self.set_breaker_gauge(&provider.name, breaker.state(now));
        }
        self.embeddings_state(
            provider,
            match &result {
                Ok(_) => "ok",
                Err(LlmError::Timeout) => "timeout",
                Err(_) => "error",
            },
        );
        result
    }
}

#[async_trait]
impl Embedder for LlmGateway {
    /// Embeds through the embeddings provider: refused at once while its breaker is open or
    /// it rests after a crash; retried with backoff on retryable errors.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let Some(provider) = &self.embeddings else {
            return Err(LlmError::Unreachable(
                "no embeddings provider configured".into(),
            ));
        };
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(until) = *lock(&provider.paused_until) {
            let now = Instant::now();
            if now < until {
                return Err(LlmError::CircuitOpen {
                    retry_in: until - now,
                });
            }
        }
        let retry = read(&provider.tuning).retry.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.embed_once(provider, texts).await {
                Ok(vectors) => return Ok(vectors),
                Err(error) => {
                    let Some(delay) = retry.delay_after(attempt, &error) else {
                        return Err(error);
                    };
                    tracing::debug!(provider = %provider.name, attempt, ?delay, %error, "retrying an embedding");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
