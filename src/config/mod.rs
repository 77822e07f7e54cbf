//! Configuration: `config/default.toml`, then the overlay named by `VITTE_ENV` (`local` by
//! default, `production`), then `VITTE__SECTION__KEY` environment variables.
//!
//! Secrets are [`SecretString`]s: `Debug` redacts them, and [`Settings::to_redacted_toml`]
//! prints `[redacted]` in their place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use vitte_actors::domain::catalogue::Catalogue;
use vitte_actors::domain::entitlement::{Limits, parse_zone};
use vitte_actors::domain::memory::{Category, MemorySettings};
use vitte_actors::gateway::RetrySettings;
use vitte_actors::payments::PayloadSigner;
use vitte_actors::resilience::breaker::BreakerSettings;
use vitte_actors::resilience::limiter::RateLimit;
use vitte_actors::session::StreamingMode;

mod notifications;
mod supervision;
mod validate;

pub use notifications::{NotificationsSection, OutboxSection};
pub use supervision::{KindSection, SupervisionSettings};

/// Why the configuration cannot be used; always one line naming the key at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("{0}")]
    Unreadable(String),
}

impl ConfigError {
    fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub telegram: TelegramSettings,
    pub llm: LlmSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub http: HttpSettings,
    pub session: SessionSection,
    pub streaming: StreamingSettings,
    pub safety: SafetySettings,
    pub supervision: SupervisionSettings,
    pub personas: PersonaSettings,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub api: ApiSettings,
    pub payments: PaymentSettings,
    pub limits: LimitSettings,
    pub memory: MemorySection,
    pub outbox: OutboxSection,
    pub notifications: NotificationsSection,
}

/// Long-term memory: extraction, recall and summaries (`[memory]`), and its embeddings
/// provider (`[memory.embeddings]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MemorySection {
    pub enabled: bool,
    pub extract_after_messages: usize,
    /// Categories remembered for the whole user (identity, preference, relationship,
    /// event, other); the rest belong to the persona they were told to.
    pub user_wide: Vec<Category>,
    pub near_duplicate: f32,
    pub top_k: usize,
    pub threshold: f32,
    pub keyword_weight: f32,
    pub prompt_tokens: usize,
    #[serde(with = "humantime_serde")]
    pub recall_deadline: Duration,
    pub summary_chunk: usize,
    /// LLM requests of memory work (extraction, summaries) per provider, apart from the
    /// replies' `llm.rate_limit`.
    pub llm_rate_limit: RateLimit,
    pub embeddings: EmbeddingsSettings,
}

/// The OpenAI-compatible `/embeddings` provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmbeddingsSettings {
    /// Its name in metrics and /admin/llm.
    pub name: String,
    /// Empty: `llm.base_url`.
    pub base_url: String,
    /// Empty: `llm.api_key`.
    #[serde(serialize_with = "redact")]
    pub api_key: SecretString,
    pub model: String,
    /// Asks the provider for vectors this long (`dimensions`, as `text-embedding-3-*`
    /// accept): 512 instead of 1 536 takes a third of the memory per session. Unset: the
    /// model's own length.
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub retry: RetrySettings,
}

/// What vitte sells and how payloads are signed.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PaymentSettings {
    /// The catalogue file (plans and unlocks).
    pub catalogue: PathBuf,
    /// The key invoice payloads are signed with; empty derives one from the bot token.
    #[serde(serialize_with = "redact")]
    pub payload_secret: SecretString,
    /// How often plans are checked for entering grace and expiring.
    #[serde(with = "humantime_serde")]
    pub sweep_every: Duration,
}

/// The daily limits and the plans' grace.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LimitSettings {
    pub free_daily_messages: u32,
    pub paid_daily_messages: u32,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// An IANA time zone: its midnight starts a new day.
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    Polling,
    Webhook,
}

impl TelegramMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TelegramMode::Polling => "polling",
            TelegramMode::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TelegramSettings {
    #[serde(serialize_with = "redact")]
    pub token: SecretString,
    pub api_url: String,
    pub mode: TelegramMode,
    pub webhook_url: String,
    #[serde(serialize_with = "redact")]
    pub webhook_secret: SecretString,
    #[serde(with = "humantime_serde")]
    pub polling_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LlmSettings {
    /// The primary provider's name (in metrics, logs and stored replies).
    pub name: String,
    pub base_url: String,
    #[serde(serialize_with = "redact")]
    pub api_key: SecretString,
    pub model: String,
    pub temperature: f32,
    pub max_reply_tokens: u32,
    pub context_tokens: u32,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub retry: RetrySettings,
    pub user_rate_limit: RateLimit,
    pub cache: CacheSettings,
    #[serde(default)]
    pub fallbacks: Vec<FallbackProvider>,
}

/// A fallback provider; sampling settings and timeouts are the primary's.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackProvider {
    pub name: String,
    pub base_url: String,
    #[serde(serialize_with = "redact", default = "empty_secret")]
    pub api_key: SecretString,
    pub model: String,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub retry: RetrySettings,
}

fn empty_secret() -> SecretString {
    SecretString::from("")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CacheSettings {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_entries: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    /// Bearer token for /admin/*; empty disables them (401).
    #[serde(serialize_with = "redact")]
    pub token: SecretString,
}

/// The HTTP chat API (`/v1/chat/*`) for other programs that talk to vitte's personas.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ApiSettings {
    /// The keys callers send as `X-API-KEY`, each under a name (for metrics and logs).
    /// None: every call answers 401.
    #[serde(default, serialize_with = "redact_map")]
    pub keys: std::collections::BTreeMap<String, SecretString>,
    /// Largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// How long `POST /v1/chat/send` waits for the reply (then 504; the reply is still
    /// written and stored).
    #[serde(with = "humantime_serde")]
    pub reply_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "redact_url_password")]
    pub url: SecretString,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RedisSettings {
    #[serde(serialize_with = "redact_url_password")]
    pub url: SecretString,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HttpSettings {
    pub address: String,
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SessionSection {
    pub shards: usize,
    pub history_limit: usize,
    /// A dialog resumed after this long opens with a greeting that recalls the story.
    #[serde(with = "humantime_serde")]
    pub welcome_back_after: Duration,
    /// Every n-th persona message carries a "Continue" button (0: never).
    pub continue_every: u32,
    /// A user message longer than this (in characters) is refused with an explanation.
    pub max_message_chars: usize,
    /// A message still unanswered this long after it arrived (it waited through an overload
    /// or a restart) is failed visibly, with "Retry", instead of answered late.
    #[serde(with = "humantime_serde")]
    pub answer_within: Duration,
}

/// How replies are streamed into Telegram.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StreamingSettings {
    /// Message drafts (`auto`, `draft`) or edits of a placeholder (`edit`).
    pub mode: StreamingMode,
    /// At most one message-draft update of a reply being written per this interval, per
    /// chat.
    #[serde(with = "humantime_serde")]
    pub draft_interval: Duration,
    /// A draft unchanged this long is sent again (Telegram shows one for 30 seconds).
    #[serde(with = "humantime_serde")]
    pub draft_refresh: Duration,
    /// At most one edit of a reply being written per this interval, per chat.
    #[serde(with = "humantime_serde")]
    pub edit_interval: Duration,
    /// A draft is updated only when at least this many new characters arrived.
    pub min_edit_chars: usize,
}

/// Where the safety rules are.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SafetySettings {
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PersonaSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// How long the event log (registrations, payments, errors, operator actions) keeps
    /// an event.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    /// Sentry DSN (secret); empty: no error reporting. Errors (and panics) are reported
    /// with the user's log reference, never message texts or secrets.
    #[serde(default, serialize_with = "redact")]
    pub sentry_dsn: SecretString,
}

/// What the configuration will be used for; each use needs different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `vitte serve` and `vitte check-config`: everything.
    Serve,
    /// `vitte chat`: no Telegram.
    Chat,
    /// `vitte migrate`: the database only.
    Migrate,
}

/// The database backend chosen by the URL's scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A file path (its parent directory is created when missing).
    Sqlite(PathBuf),
    /// The full URL, which may hold a password: `Debug` does not print it.
    Postgres(String),
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseTarget::Postgres(_) => f.write_str("Postgres([redacted])"),
        }
    }
}

/// Where the configuration comes from, kept so it can be read again on a live reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub dir: PathBuf,
    pub environment: String,
}

impl ConfigSource {
    /// `config/` (or `VITTE_CONFIG_DIR`) with the `VITTE_ENV` overlay (default `local`).
    pub fn from_env() -> ConfigSource {
        ConfigSource {
            dir: std::env::var_os("VITTE_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            environment: std::env::var("VITTE_ENV").unwrap_or_else(|_| "local".to_owned()),
        }
    }

    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load_from(&self.dir, &self.environment)
    }
}

impl Settings {
    /// Loads from [`ConfigSource::from_env`].
    pub fn load() -> Result<Settings, ConfigError> {
        ConfigSource::from_env().load()
    }

    pub fn load_from(dir: &Path, environment: &str) -> Result<Settings, ConfigError> {
        if !matches!(environment, "local" | "production") {
            return Err(ConfigError::invalid(
                "VITTE_ENV",
                format!("unknown environment {environment:?} (use local or production)"),
            ));
        }
        let default = dir.join("default.toml");
        if !default.is_file() {
            return Err(ConfigError::Unreadable(format!(
                "{} not found (run from the project directory or set VITTE_CONFIG_DIR)",
                default.display()
            )));
        }
        config::Config::builder()
            .add_source(config::File::from(default))
            .add_source(config::File::from(dir.join(format!("{environment}.toml"))).required(false))
            .add_source(
                config::Environment::with_prefix("VITTE")
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()
            .and_then(config::Config::try_deserialize::<Settings>)
            .map_err(|error| ConfigError::Unreadable(one_line(&error.to_string())))
    }

    /// The daily limits, with the time zone read.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        let limits = &self.limits;
        let zone = parse_zone(&limits.time_zone).ok_or_else(|| {
            ConfigError::invalid(
                "limits.time_zone",
                format!(
                    "{:?} is not an IANA time zone (such as Europe/Moscow)",
                    limits.time_zone
                ),
            )
        })?;
        for (key, value) in [
            ("limits.free_daily_messages", limits.free_daily_messages),
            ("limits.paid_daily_messages", limits.paid_daily_messages),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if limits.paid_daily_messages < limits.free_daily_messages {
            return Err(ConfigError::invalid(
                "limits.paid_daily_messages",
                "must be at least limits.free_daily_messages",
            ));
        }
        Ok(Limits {
            free_daily_messages: limits.free_daily_messages,
            paid_daily_messages: limits.paid_daily_messages,
            grace: limits.grace,
            zone,
        })
    }

    /// Memory's settings, checked.
    pub fn memory(&self) -> Result<MemorySettings, ConfigError> {
        let section = &self.memory;
        let settings = MemorySettings {
            enabled: section.enabled,
            extract_after_messages: section.extract_after_messages,
            user_wide: section.user_wide.clone(),
            near_duplicate: section.near_duplicate,
            top_k: section.top_k,
            threshold: section.threshold,
            keyword_weight: section.keyword_weight,
            prompt_tokens: section.prompt_tokens,
            recall_deadline: section.recall_deadline,
            summary_chunk: section.summary_chunk,
        };
        settings
            .validate()
            .map_err(|problem| ConfigError::invalid("memory", problem))?;
        Ok(settings)
    }

    /// The embeddings endpoint: `memory.embeddings.base_url`, else the LLM's.
    pub fn embeddings_base_url(&self) -> &str {
        let own = self.memory.embeddings.base_url.trim();
        if own.is_empty() {
            &self.llm.base_url
        } else {
            own
        }
    }

    /// The embeddings key: `memory.embeddings.api_key`, else the LLM's.
    pub fn embeddings_api_key(&self) -> SecretString {
        let own = &self.memory.embeddings.api_key;
        if own.expose_secret().is_empty() {
            self.llm.api_key.clone()
        } else {
            own.clone()
        }
    }

    /// The catalogue file, read and checked.
    pub fn catalogue(&self) -> Result<Catalogue, ConfigError> {
        Catalogue::load(&self.payments.catalogue)
            .map_err(|error| ConfigError::invalid("payments.catalogue", error.to_string()))
    }

    /// The key invoice payloads are signed with: `payments.payload_secret`, or one derived
    /// from the bot token.
    pub fn payload_key(&self) -> Vec<u8> {
        let secret = self.payments.payload_secret.expose_secret();
        if secret.is_empty() {
            PayloadSigner::derive_key(self.telegram.token.expose_secret())
        } else {
            secret.as_bytes().to_vec()
        }
    }

    /// Keys that differ from `running` but only take effect after a restart (compared in
    /// their printed, secret-redacted form).
    pub fn restart_only_differences(&self, running: &Settings) -> Vec<String> {
        let restart_only = |settings: &Settings| -> Vec<(String, String)> {
            let llm = &settings.llm;
            let mut keys = vec![
                ("telegram".to_owned(), to_toml(&settings.telegram)),
                ("database".to_owned(), to_toml(&settings.database)),
                ("redis".to_owned(), to_toml(&settings.redis)),
                ("http".to_owned(), to_toml(&settings.http)),
                ("session".to_owned(), to_toml(&settings.session)),
                ("streaming".to_owned(), to_toml(&settings.streaming)),
                ("safety".to_owned(), to_toml(&settings.safety)),
                ("personas".to_owned(), to_toml(&settings.personas)),
                ("log".to_owned(), to_toml(&settings.log)),
                ("admin".to_owned(), to_toml(&settings.admin)),
                ("api".to_owned(), to_toml(&settings.api)),
                ("notifications".to_owned(), to_toml(&settings.notifications)),
                ("llm.base_url".to_owned(), llm.base_url.clone()),
                ("llm.model".to_owned(), llm.model.clone()),
                ("llm.temperature".to_owned(), llm.temperature.to_string()),
                (
                    "llm.max_reply_tokens".to_owned(),
                    llm.max_reply_tokens.to_string(),
                ),
                (
                    "llm.context_tokens".to_owned(),
                    llm.context_tokens.to_string(),
                ),
                (
                    "llm.request_timeout".to_owned(),
                    format!("{:?}", llm.request_timeout),
                ),
                (
                    "llm.cache.max_entries".to_owned(),
                    llm.cache.max_entries.to_string(),
                ),
            ];
            for (index, fallback) in llm.fallbacks.iter().enumerate() {
                keys.push((
                    format!("llm.fallbacks[{index}]"),
                    format!("{} {}", fallback.base_url, fallback.model),
                ));
            }
            keys
        };
        let before = restart_only(running);
        restart_only(self)
            .into_iter()
            .zip(before)
            .filter(|((_, new), (_, old))| new != old)
            .map(|((key, _), _)| key)
            .collect()
    }

    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let url = self.database.url.expose_secret();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    "database.url",
                    "sqlite:// needs a file path",
                ));
            }
            Ok(DatabaseTarget::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseTarget::Postgres(url.to_owned()))
        } else {
            Err(ConfigError::invalid(
                "database.url",
                "must start with sqlite:// or postgres://",
            ))
        }
    }

    pub fn http_address(&self) -> Result<SocketAddr, ConfigError> {
        self.http.address.parse().map_err(|_| {
            ConfigError::invalid("http.address", "must be host:port, e.g. 0.0.0.0:8080")
        })
    }

    /// The effective configuration as TOML, secrets replaced by `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot print: {error}\n"))
    }
}

fn to_toml<T: Serialize>(value: &T) -> String {
    toml::to_string(value).unwrap_or_default()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn redact<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    if secret.expose_secret().is_empty() {
        serializer.serialize_str("")
    } else {
        serializer.serialize_str("[redacted]")
    }
}

fn redact_map<S: Serializer>(
    secrets: &std::collections::BTreeMap<String, SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(secrets.len()))?;
    for (name, secret) in secrets {
        let shown = if secret.expose_secret().is_empty() {
            ""
        } else {
            "[redacted]"
        };
        map.serialize_entry(name, shown)?;
    }
    map.end()
}

/// Prints a URL with its password replaced, so operators see which server is used.
fn redact_url_password<S: Serializer>(
    secret: &SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let raw = secret.expose_secret();
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Setting a password fails only for URLs without a host, which have none.
                let _ = url.set_password(Some("redacted"));
            }
            // Query strings may carry credentials too (`?password=…`, `?sslpassword=…`).
            if url.query().is_some() {
                url.set_query(Some("redacted"));
            }
            serializer.serialize_str(url.as_str())
        }
        Err(_) if raw.is_empty() => serializer.serialize_str(""),
        Err(_) => serializer.serialize_str("[redacted: not a URL]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitte_actors::supervision::ActorKind;

    fn defaults() -> Settings {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_from(&dir, "production").expect("default configuration loads")
    }

    fn valid() -> Settings {
        let mut settings = defaults();
        settings.telegram.token = SecretString::from("123:abc");
        settings.telegram.webhook_url = "https://bot.example.org/telegram/webhook".into();
        settings.telegram.webhook_secret = SecretString::from("s3cret");
        settings
    }

    #[test]
    fn defaults_load_and_need_a_token_to_serve() {
        let settings = defaults();
        assert_eq!(
            settings.telegram.mode,
            TelegramMode::Webhook,
            "production overlay"
        );
        assert_eq!(
            settings.supervision.kind(ActorKind::Session).idle_timeout,
            Duration::from_secs(900)
        );
        let error = settings.validate(Purpose::Serve).expect_err("no token");
        assert!(error.to_string().starts_with("telegram.token:"), "{error}");
        assert!(settings.validate(Purpose::Chat).is_ok());
        assert!(valid().validate(Purpose::Serve).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let mut settings = valid();
        settings.database.url = SecretString::from("mysql://x");
        let error = settings.validate(Purpose::Migrate).expect_err("bad url");
        assert!(error.to_string().starts_with("database.url:"), "{error}");

        let mut settings = valid();
        settings.telegram.webhook_secret = SecretString::from("has spaces");
        let error = settings.validate(Purpose::Serve).expect_err("bad secret");
        assert!(error.to_string().starts_with("telegram.webhook_secret:"));
        assert!(
            !error.to_string().contains("has spaces"),
            "secret not echoed"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_printed_config() {
        let mut settings = valid();
        settings.llm.api_key = SecretString::from("sk-very-secret");
        settings.database.url = SecretString::from("postgres://vitte:pa55word@db/vitte");
        let printed = settings.to_redacted_toml();
        let debug = format!("{settings:?}");
        for text in [&printed, &debug] {
            assert!(!text.contains("sk-very-secret"));
            assert!(!text.contains("pa55word"));
            assert!(!text.contains("s3cret"));
            assert!(!text.contains("123:abc"));
        }
        assert!(
            printed.contains("postgres://vitte:%5Bredacted%5D@db/vitte")
                || printed.contains("[redacted]")
        );
    }

    #[test]
    fn memory_settings_out_of_range_are_named() {
        let mut settings = valid();
        settings.memory.threshold = 1.5;
        let error = settings.validate(Purpose::Chat).expect_err("bad threshold");
        assert_eq!(
            error.to_string(),
            "memory: threshold must be between 0 and 1"
        );
        let mut settings = valid();
        settings.memory.embeddings.base_url = "ftp://embeddings".into();
        let error = settings.validate(Purpose::Chat).expect_err("bad url");
        assert!(
            error.to_string().starts_with("memory.embeddings.base_url:"),
            "{error}"
        );
        let mut settings = valid();
        settings.memory.embeddings.name = settings.llm.name.clone();
        let error = settings.validate(Purpose::Chat).expect_err("same name");
        assert!(
            error.to_string().starts_with("memory.embeddings.name:"),
            "{error}"
        );
        // Left empty, the embeddings endpoint is the LLM's.
        let settings = valid();
        assert_eq!(settings.embeddings_base_url(), settings.llm.base_url);
    }

    #[test]
    fn a_supervision_section_for_no_kind_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let default = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
        )
        .expect("default.toml");
        std::fs::write(
            dir.path().join("default.toml"),
            default + "\n[supervision.memroy]\nmailbox_capacity = 3\n",
        )
        .expect("write");
        let settings = Settings::load_from(dir.path(), "local").expect("it parses");
        let error = settings.validate(Purpose::Chat).expect_err("no such kind");
        assert!(
            error
                .to_string()
                .starts_with("supervision.memroy: no such kind"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Whatever the configuration files say: settings, or one line naming the problem.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_mutated_configuration_is_read_or_refused_with_a_reason(
            at in 0usize..8000,
            len in 0usize..20,
            junk in "[\\[\\]{}=\"\\n a-z0-9._-]{0,12}",
        ) {
            let mut text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
            )
            .expect("default.toml");
            let mut start = at % (text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(start..end, &junk);
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("default.toml"), text).expect("write");
            match Settings::load_from(dir.path(), "local") {
                Ok(settings) => {
                    for purpose in [Purpose::Serve, Purpose::Chat, Purpose::Migrate] {
                        if let Err(error) = settings.validate(purpose) {
                            prop_assert_eq!(error.to_string().lines().count(), 1);
                        }
                    }
                }
                Err(error) => prop_assert_eq!(error.to_string().lines().count(), 1),
            }
        }
    }
}
