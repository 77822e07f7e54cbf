//! Logging: human-readable or JSON lines, filtered by `log.level` (or `RUST_LOG`). Users
//! appear as a keyed hash of their id (see `vitte_actors::domain::privacy`), never the id or
//! what they wrote.

use std::sync::Arc;

use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Keys the users' references in logs for this deployment: derived from the secret that
/// signs invoice payloads (`payments.payload_secret`, or the bot token), in a domain of
/// its own.
pub fn set_log_key(settings: &Settings) {
    let key = [b"vitte log references:".as_slice(), &settings.payload_key()].concat();
    vitte_actors::domain::privacy::set_log_key(&key);
}

/// Installs the global subscriber; logs go to stderr. Later calls do nothing.
pub fn init(format: LogFormat, level: &str) {
    install(format, level, false);
}

fn install(format: LogFormat, level: &str, sentry: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Json => lines.json().boxed(),
        LogFormat::Pretty => lines.boxed(),
    };
    // Errors become Sentry events, lower levels their breadcrumbs.
    let reports = sentry.then(sentry::integrations::tracing::layer);
    // `try_init` fails only when a subscriber is installed already, which is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(reports)
        .try_init();
}

/// Logging for `vitte serve`: [`init`], plus error reports to Sentry when `log.sentry_dsn`
/// is set. Keep the returned guard for the life of the process (it flushes the reports on
/// drop).
pub fn init_serving(settings: &Settings) -> anyhow::Result<Option<sentry::ClientInitGuard>> {
    let dsn = settings.log.sentry_dsn.expose_secret();
    if dsn.is_empty() {
        init(settings.log.format, &settings.log.level);
        return Ok(None);
    }
    let dsn: sentry::types::Dsn = dsn
        .parse()
        .map_err(|error| anyhow::anyhow!("log.sentry_dsn is not a Sentry DSN: {error}"))?;
    let secrets = Arc::new(secrets_of(settings));
    let options = sentry::ClientOptions {
        dsn: Some(dsn),
        release: Some(env!("CARGO_PKG_VERSION").into()),
        environment: std::env::var("VITTE_ENV").ok().map(Into::into),
        send_default_pii: false,
        before_send: Some(Arc::new(move |event| Some(scrub(event, &secrets)))),
        before_breadcrumb: Some(Arc::new(|mut breadcrumb| {
            // Breadcrumbs carry log lines and their fields; nothing but the line is kept.
            breadcrumb.data.clear();
            Some(breadcrumb)
        })),
        ..sentry::ClientOptions::default()
    };
    let guard = sentry::init(options);
    install(settings.log.format, &settings.log.level, true);
    Ok(Some(guard))
}

/// The configured secrets, which must never leave in a report (empty ones left out).
fn secrets_of(settings: &Settings) -> Vec<String> {
    let mut secrets = vec![
        settings.telegram.token.expose_secret().to_owned(),
        settings.telegram.webhook_secret.expose_secret().to_owned(),
        settings.llm.api_key.expose_secret().to_owned(),
        settings.admin.token.expose_secret().to_owned(),
        settings.payments.payload_secret.expose_secret().to_owned(),
        settings.database.url.expose_secret().to_owned(),
    ];
    if let Ok(url) = url::Url::parse(settings.database.url.expose_secret()) {
        secrets.extend(url.password().map(str::to_owned));
    }
    secrets.extend(
        settings
            .api
            .keys
            .values()
            .map(|key| key.expose_secret().to_owned()),
    );
    secrets.retain(|secret| secret.len() >= 4);
    secrets
}

/// An error report as it may leave: no request, no user beyond the log reference in the
/// span, and every configured secret replaced wherever it appears.
fn scrub(
    mut event: sentry::protocol::Event<'static>,
    secrets: &[String],
) -> sentry::protocol::Event<'static> {
    event.request = None;
    event.user = None;
    let clean = |text: &mut String| {
        for secret in secrets {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), "[redacted]");
            }
        }
    };
    if let Some(message) = event.message.as_mut() {
        clean(message);
    }
    if let Some(entry) = event.logentry.as_mut() {
        clean(&mut entry.message);
    }
    for exception in event.exception.values.iter_mut() {
        if let Some(value) = exception.value.as_mut() {
            clean(value);
        }
    }
    for breadcrumb in event.breadcrumbs.values.iter_mut() {
        if let Some(message) = breadcrumb.message.as_mut() {
            clean(message);
        }
    }
    for value in event.extra.values_mut() {
        if let serde_json::Value::String(text) = value {
            clean(text);
        }
    }
    event
}
