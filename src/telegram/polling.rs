//! Long polling: `getUpdates` in a loop (as raw JSON, see [`super::raw`]), each update stored
//! and handed to the [`UpdateSink`]; an update is confirmed to Telegram (by the next call's
//! offset) only once it is stored.

use std::time::Duration;

use serde_json::json;
use teloxide::Bot;
use teloxide::prelude::Requester;
use tokio::sync::watch;

use super::raw::{RawBotApi, RawError};
use super::{ALLOWED_UPDATES, IncomingUpdate, UpdateSink, pause_after_failure};

/// How much longer than the long-poll wait the HTTP client waits for Telegram's answer.
pub const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(15);

/// Polls until `shutdown` turns true.
///
/// `bot`'s HTTP client must wait longer than `timeout` (see [`CLIENT_TIMEOUT_MARGIN`]), or
/// every quiet long poll would end in a client timeout.
pub async fn run(
    bot: Bot,
    sink: UpdateSink,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // getUpdates does not work while a webhook is set.
    if let Err(error) = bot.delete_webhook().await {
        tracing::warn!(%error, "could not delete the webhook before polling");
    }
    let api = RawBotApi::new(&bot);
    let timeout_secs = timeout.as_secs();
    let mut offset: i64 = 0;
    let mut failures = 0;
    tracing::info!("long polling started");
    loop {
        let body = json!({
            "offset": offset,
            "timeout": timeout_secs,
            "allowed_updates": ALLOWED_UPDATES,
        });
        let result = tokio::select! {
            _ = shutdown.changed() => break,
            result = api.call("getUpdates", &body) => result,
        };
        let failure = match result {
            Ok(updates) => {
                // Ready once Telegram has answered: a bad token never makes us ready.
                sink.set_ready(true);
                match accept_batch(&sink, updates, &mut offset).await {
                    Ok(()) => None,
                    Err(error) => Some(error.to_string()),
                }
            }
            Err(error) => Some(error.to_string()),
        };
        match failure {
            None => failures = 0,
            Some(error) => {
                failures += 1;
                let metrics = &sink.metrics;
                if !pause_after_failure("getUpdates", &error, failures, metrics, &mut shutdown)
                    .await
                {
                    break;
                }
            }
        }
    }
    sink.set_ready(false);
    tracing::info!("long polling stopped");
}

/// Stores and hands on a batch in order, moving `offset` past each update once it is
/// stored. Stops at the first that cannot be stored: it and those after it are asked for
/// again (Telegram keeps them until the offset passes them).
async fn accept_batch(
    sink: &UpdateSink,
    updates: serde_json::Value,
    offset: &mut i64,
) -> Result<(), RawError> {
    let serde_json::Value::Array(updates) = updates else {
        return Err(RawError::Network {
            method: "getUpdates",
            reason: "the result is not a list of updates".into(),
        });
    };
    for value in updates {
        let update = match IncomingUpdate::from_value(value) {
            Ok(update) => update,
            Err(error) => {
                // Without an id it cannot be confirmed or asked for again: skip it.
                tracing::warn!(%error, "getUpdates returned something that is not an update");
                continue;
            }
        };
        if let Err(error) = sink.accept(&update).await {
            return Err(RawError::Network {
                method: "getUpdates",
                reason: format!("an update could not be stored (it is asked for again): {error}"),
            });
        }
        *offset = update.update_id.saturating_add(1);
    }
    Ok(())
}
