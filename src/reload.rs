//! Live reload: re-reads the configuration and applies its reloadable parts (supervision,
//! breakers, rate limits, retries, cache, the outbox's limits) to the running components. SIGHUP and
//! `POST /admin/supervision/reload` share it.

use std::collections::HashMap;
use std::sync::Arc;

use vitte_actors::gateway::{GatewayTuning, LlmGateway, ProviderTuning, RetrySettings};
use vitte_actors::outbox::OutboxHandle;
use vitte_actors::resilience::breaker::BreakerSettings;
use vitte_actors::resilience::limiter::RateLimit;
use vitte_actors::supervision::Supervisor;

use crate::config::{ConfigError, ConfigSource, Settings};

/// Why a live reload was refused (the running settings stay).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration source to reload from")]
    NoSource,
    #[error("configuration error: {0}")]
    Invalid(#[from] ConfigError),
    #[error("the reload was interrupted")]
    Interrupted,
}

pub fn provider_tuning(
    breaker: &BreakerSettings,
    rate_limit: &RateLimit,
    retry: &RetrySettings,
) -> ProviderTuning {
    ProviderTuning {
        breaker: breaker.clone(),
        rate_limit: rate_limit.clone(),
        retry: retry.clone(),
    }
}

/// The gateway's reloadable settings, from the configuration.
pub fn gateway_tuning(settings: &Settings) -> GatewayTuning {
    let llm = &settings.llm;
    let mut providers = HashMap::from([(
        llm.name.clone(),
        provider_tuning(&llm.breaker, &llm.rate_limit, &llm.retry),
    )]);
    for fallback in &llm.fallbacks {
        providers.insert(
            fallback.name.clone(),
            provider_tuning(&fallback.breaker, &fallback.rate_limit, &fallback.retry),
        );
    }
    let embeddings = &settings.memory.embeddings;
    providers.insert(
        embeddings.name.clone(),
        provider_tuning(
            &embeddings.breaker,
            &embeddings.rate_limit,
            &embeddings.retry,
        ),
    );
    GatewayTuning {
        background_rate_limit: settings.memory.llm_rate_limit.clone(),
        user_rate_limit: llm.user_rate_limit.clone(),
        max_queue_wait: llm.max_queue_wait,
        cache_enabled: llm.cache.enabled,
        cache_ttl: llm.cache.ttl,
        providers,
    }
}

/// Re-reads the configuration and applies its reloadable parts (supervision, breakers, rate
/// limits, retries, cache) to the running components. Shared by SIGHUP and the admin endpoint.
pub struct Reloader {
    source: Option<ConfigSource>,
    /// The settings the process started with: what a reload cannot change is compared to
    /// them.
    running: Settings,
    supervisor: Arc<Supervisor>,
    gateway: Arc<LlmGateway>,
    outbox: OutboxHandle,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Changed keys that only a restart applies.
    pub needs_restart: Vec<String>,
}

impl Reloader {
    /// A reloader that reads `source` (none: every reload is refused) and applies what it
    /// reads to the running `supervisor`, `gateway` and `outbox` (Telegram's limits).
    pub fn new(
        source: Option<ConfigSource>,
        running: Settings,
        supervisor: Arc<Supervisor>,
        gateway: Arc<LlmGateway>,
        outbox: OutboxHandle,
    ) -> Reloader {
        Reloader {
            source,
            running,
            supervisor,
            gateway,
            outbox,
        }
    }

    /// Applies the new settings, or changes nothing and says why.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let settings = source.load()?;
        settings.validate_reloadable()?;
        let names = |settings: &Settings| -> Vec<String> {
            std::iter::once(settings.llm.name.clone())
                .chain(settings.llm.fallbacks.iter().map(|f| f.name.clone()))
                .collect()
        };
        if names(&settings) != names(&self.running) {
            return Err(ReloadError::Invalid(ConfigError::Invalid {
                key: "llm.fallbacks".into(),
                problem: "adding, removing, renaming or reordering providers needs a restart"
                    .into(),
            }));
        }
        self.supervisor.reconfigure(settings.supervision.policies());
        self.gateway.reconfigure(gateway_tuning(&settings));
        self.outbox.reconfigure(settings.outbox()?);
        let needs_restart = settings.restart_only_differences(&self.running);
        tracing::info!(?needs_restart, "supervision and LLM settings reloaded");
        Ok(ReloadReport { needs_restart })
    }
}
