//! Webhook mode: registering the webhook with Telegram (the updates then arrive at
//! `POST /telegram/webhook`, served by [`crate::http`]).

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::watch;

use super::raw::RawBotApi;
use super::{ALLOWED_UPDATES, UpdateSink, pause_after_failure};

/// Registers the webhook with Telegram (with the secret it echoes and the update kinds vitte
/// handles), retrying with backoff until it succeeds (readiness stays false until then) or
/// shutdown.
pub async fn register(
    bot: teloxide::Bot,
    url: String,
    secret: SecretString,
    sink: UpdateSink,
    mut shutdown: watch::Receiver<bool>,
) {
    if reqwest::Url::parse(&url).is_err() {
        tracing::error!("telegram.webhook_url is not a URL");
        return;
    }
    let api = RawBotApi::new(&bot);
    let body = json!({
        "url": url,
        "secret_token": secret.expose_secret(),
        "allowed_updates": ALLOWED_UPDATES,
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.call("setWebhook", &body).await {
            Ok(_) => {
                tracing::info!("webhook registered");
                sink.set_ready(true);
                return;
            }
            Err(error) => {
                let metrics = &sink.metrics;
                if !pause_after_failure("setWebhook", &error, attempt, metrics, &mut shutdown).await
                {
                    return;
                }
            }
        }
    }
}
