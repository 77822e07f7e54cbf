//! Long polling: `getUpdates` in a loop, each update handed to the [`UpdateSink`].

use std::time::Duration;

use teloxide::Bot;
use teloxide::payloads::setters::*;
use teloxide::prelude::Requester;
use tokio::sync::watch;

use super::{UpdateSink, pause_after_failure};

/// How much longer than the long-poll wait the HTTP client waits for Telegram's answer.
pub const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(15);

/// Polls until `shutdown` turns true. Updates are routed as soon as they arrive (routing
/// cannot fail), and confirmed to Telegram by the next call's offset.
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
    let timeout_secs = u32::try_from(timeout.as_secs()).unwrap_or(25);
    let mut offset: i32 = 0;
    let mut failures = 0;
    tracing::info!("long polling started");
    loop {
        let request = bot.get_updates().offset(offset).timeout(timeout_secs);
        let result = tokio::select! {
            _ = shutdown.changed() => break,
            result = request => result,
        };
        match result {
            Ok(updates) => {
                // Ready once Telegram has answered: a bad token never makes us ready.
                sink.set_ready(true);
                failures = 0;
                for update in updates {
                    sink.accept(&update);
                    offset = i32::try_from(update.id.0)
                        .unwrap_or(i32::MAX)
                        .saturating_add(1);
                }
            }
            Err(error) => {
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
