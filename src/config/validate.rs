//! Checking the settings: every key a use of the configuration needs, and the sections a
//! live reload applies. Every error is one line naming the key at fault.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::{ConfigError, Purpose, Settings, TelegramMode};

impl Settings {
    /// Checks every key `purpose` needs.
    pub fn validate(&self, purpose: Purpose) -> Result<(), ConfigError> {
        self.database_target()?;
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if purpose == Purpose::Migrate {
            return Ok(());
        }
        check_http_url("llm.base_url", &self.llm.base_url)?;
        if self.llm.model.trim().is_empty() {
            return Err(ConfigError::invalid("llm.model", "must be set"));
        }
        if !(0.0..=2.0).contains(&self.llm.temperature) {
            return Err(ConfigError::invalid(
                "llm.temperature",
                "must be between 0 and 2",
            ));
        }
        if self.llm.context_tokens <= self.llm.max_reply_tokens {
            return Err(ConfigError::invalid(
                "llm.context_tokens",
                "must be larger than llm.max_reply_tokens",
            ));
        }
        if self.session.max_message_chars == 0 {
            return Err(ConfigError::invalid(
                "session.max_message_chars",
                "must be at least 1",
            ));
        }
        if self.session.answer_within < Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                "session.answer_within",
                "must be at least 10s",
            ));
        }
        if self.session.history_limit == 0 {
            return Err(ConfigError::invalid(
                "session.history_limit",
                "must be at least 1",
            ));
        }
        if self.streaming.edit_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "streaming.edit_interval",
                "must be at least 100ms (Telegram limits edits per chat)",
            ));
        }
        if !(256..=1024 * 1024).contains(&self.api.max_body_bytes) {
            return Err(ConfigError::invalid(
                "api.max_body_bytes",
                "must be from 256 to 1048576",
            ));
        }
        if self.api.reply_timeout < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "api.reply_timeout",
                "must be at least 1s",
            ));
        }
        for (name, key) in &self.api.keys {
            let well_named = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !well_named {
                return Err(ConfigError::invalid(
                    "api.keys",
                    "names are lowercase letters, digits and _",
                ));
            }
            if key.expose_secret().chars().count() < 16 {
                return Err(ConfigError::invalid(
                    &format!("api.keys.{name}"),
                    "must be at least 16 characters",
                ));
            }
        }
        if self.streaming.draft_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "streaming.draft_interval",
                "must be at least 100ms (drafts count in Telegram's limits per chat)",
            ));
        }
        let refresh = self.streaming.draft_refresh;
        if refresh < Duration::from_secs(1) || refresh >= Duration::from_secs(30) {
            return Err(ConfigError::invalid(
                "streaming.draft_refresh",
                "must be from 1s to under 30s (Telegram shows a draft for 30 seconds)",
            ));
        }
        self.limits()?;
        self.memory()?;
        self.outbox()?;
        self.scheduler()?;
        check_http_url("memory.embeddings.base_url", self.embeddings_base_url())?;
        if self.memory.embeddings.model.trim().is_empty() {
            return Err(ConfigError::invalid(
                "memory.embeddings.model",
                "must be set",
            ));
        }
        // Providers are told apart by name (breakers, rate buckets, metrics, reloads).
        let chat_names = std::iter::once(&self.llm.name)
            .chain(self.llm.fallbacks.iter().map(|fallback| &fallback.name));
        if chat_names
            .into_iter()
            .any(|name| *name == self.memory.embeddings.name)
        {
            return Err(ConfigError::invalid(
                "memory.embeddings.name",
                format!(
                    "{:?} is a chat provider's name already; give the embeddings provider its own",
                    self.memory.embeddings.name
                ),
            ));
        }
        if self.payments.sweep_every < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "payments.sweep_every",
                "must be at least 1s",
            ));
        }
        self.validate_reloadable()?;
        for (index, fallback) in self.llm.fallbacks.iter().enumerate() {
            check_http_url(
                &format!("llm.fallbacks[{index}].base_url"),
                &fallback.base_url,
            )?;
        }
        let redis = self.redis.url.expose_secret();
        if !redis.is_empty() && !redis.starts_with("redis://") && !redis.starts_with("rediss://") {
            return Err(ConfigError::invalid(
                "redis.url",
                "must start with redis:// or rediss://",
            ));
        }
        if purpose == Purpose::Chat {
            return Ok(());
        }
        self.http_address()?;
        if self.telegram.token.expose_secret().trim().is_empty() {
            return Err(ConfigError::invalid(
                "telegram.token",
                "must be set (env VITTE__TELEGRAM__TOKEN)",
            ));
        }
        check_http_url("telegram.api_url", &self.telegram.api_url)?;
        if self.telegram.mode == TelegramMode::Webhook {
            check_http_url("telegram.webhook_url", &self.telegram.webhook_url)?;
            let secret = self.telegram.webhook_secret.expose_secret();
            let valid = (1..=256).contains(&secret.len())
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(ConfigError::invalid(
                    "telegram.webhook_secret",
                    "webhook mode needs 1-256 characters of A-Z, a-z, 0-9, _ and - \
                     (env VITTE__TELEGRAM__WEBHOOK_SECRET)",
                ));
            }
        }
        Ok(())
    }

    /// Checks the sections that a live reload applies (supervision, breakers, limits,
    /// retries, cache).
    pub fn validate_reloadable(&self) -> Result<(), ConfigError> {
        self.supervision.validate()?;
        self.outbox()?;
        let llm = &self.llm;
        let mut providers = vec![("llm".to_owned(), &llm.breaker, &llm.rate_limit, &llm.retry)];
        for (index, fallback) in llm.fallbacks.iter().enumerate() {
            providers.push((
                format!("llm.fallbacks[{index}]"),
                &fallback.breaker,
                &fallback.rate_limit,
                &fallback.retry,
            ));
        }
        let embeddings = &self.memory.embeddings;
        providers.push((
            "memory.embeddings".to_owned(),
            &embeddings.breaker,
            &embeddings.rate_limit,
            &embeddings.retry,
        ));
        for (prefix, breaker, rate_limit, retry) in providers {
            breaker
                .validate()
                .map_err(|problem| ConfigError::invalid(&format!("{prefix}.breaker"), problem))?;
            rate_limit.validate().map_err(|problem| {
                ConfigError::invalid(&format!("{prefix}.rate_limit"), problem)
            })?;
            retry
                .validate()
                .map_err(|problem| ConfigError::invalid(&format!("{prefix}.retry"), problem))?;
        }
        llm.user_rate_limit
            .validate()
            .map_err(|problem| ConfigError::invalid("llm.user_rate_limit", problem))?;
        self.memory
            .llm_rate_limit
            .validate()
            .map_err(|problem| ConfigError::invalid("memory.llm_rate_limit", problem))?;
        if llm.max_queue_wait > Duration::from_secs(600) {
            return Err(ConfigError::invalid(
                "llm.max_queue_wait",
                "must be at most 10m",
            ));
        }
        if llm.cache.ttl > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::invalid(
                "llm.cache.ttl",
                "must be at most 30 days",
            ));
        }
        let mut names = vec![llm.name.as_str()];
        for (index, fallback) in llm.fallbacks.iter().enumerate() {
            if names.contains(&fallback.name.as_str()) || fallback.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &format!("llm.fallbacks[{index}].name"),
                    "must be set and differ from every other provider's name",
                ));
            }
            names.push(&fallback.name);
        }
        if llm.cache.max_entries == 0 {
            return Err(ConfigError::invalid(
                "llm.cache.max_entries",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(ConfigError::invalid(key, "must be an http(s) URL")),
    }
}
