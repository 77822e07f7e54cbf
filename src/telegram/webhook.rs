//! Webhook mode: registering the webhook with Telegram (the updates then arrive at
//! `POST /telegram/webhook`, served by [`crate::http`]).

use secrecy::{ExposeSecret, SecretString};
use teloxide::Bot;
use teloxide::payloads::setters::*;
use teloxide::prelude::Requester;
use tokio::sync::watch;

use super::{UpdateSink, pause_after_failure};

/// Registers the webhook with Telegram, retrying with backoff until it succeeds (readiness
/// stays false until then) or shutdown.
pub async fn register(
    bot: Bot,
    url: String,
    secret: SecretString,
    sink: UpdateSink,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(url) = reqwest::Url::parse(&url) else {
        tracing::error!("telegram.webhook_url is not a URL");
        return;
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let request = bot
            .set_webhook(url.clone())
            .secret_token(secret.expose_secret().to_owned());
        match request.await {
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
