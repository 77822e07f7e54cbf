//! Logging: human-readable or JSON lines, filtered by `log.level` (or `RUST_LOG`). Users
//! appear as a keyed hash of their id (see `vitte_actors::domain::privacy`), never the id or
//! what they wrote.

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
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is installed already, which is fine.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
