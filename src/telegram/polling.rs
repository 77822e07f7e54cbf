//! Long polling: `getUpdates` in a loop, each update handed to the [`UpdateSink`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use teloxide::Bot;
use teloxide::payloads::setters::*;
use teloxide::prelude::Requester;
use tokio::sync::watch;

use super::UpdateSink;

/// Pause after a failed `getUpdates` before trying again (doubles up to a minute).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Polls until `shutdown` turns true. An update is confirmed to Telegram (by the next
/// offset) only after the sink accepted it, so a storage outage means redelivery, not loss.
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
    let mut backoff = FIRST_BACKOFF;
    tracing::info!("long polling started");
    sink.ingress_ready.store(true, Ordering::SeqCst);
    loop {
        let request = bot.get_updates().offset(offset).timeout(timeout_secs);
        let updates = tokio::select! {
            _ = shutdown.changed() => break,
            result = request => result,
        };
        match updates {
            Ok(updates) => {
                backoff = FIRST_BACKOFF;
                for update in updates {
                    if let Err(error) = sink.accept(&update).await {
                        tracing::error!(%error, "update not accepted; it will be redelivered");
                        sink.metrics.count_error("storage");
                        break;
                    }
                    offset = i32::try_from(update.id.0)
                        .unwrap_or(i32::MAX)
                        .saturating_add(1);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "getUpdates failed; retrying in {backoff:?}");
                sink.metrics.count_error("telegram");
            }
        }
        // Something failed: wait before trying again, longer each time.
        tokio::select! {
            _ = shutdown.changed() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    sink.ingress_ready.store(false, Ordering::SeqCst);
    tracing::info!("long polling stopped");
}
