//! Telegram: turning updates into session events (ingress, by long polling or webhook) and
//! calling the Bot API (the [`bot_api::BotApiClient`], which implements the `Messenger` port).

pub mod bot_api;
pub mod drafts;
pub mod payments;
pub mod polling;
pub mod raw;
pub mod update;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vitte_actors::metrics::Metrics;
use vitte_actors::ports::Clock;

use crate::storage::{Accepted, Database, StorageError};
pub use update::IncomingUpdate;
use vitte_actors::payments::DeskHandle;
use vitte_actors::resilience::backoff::BackoffSettings;
use vitte_actors::session::SessionRouter;

/// The update kinds vitte asks Telegram for (`allowed_updates` of `getUpdates` and
/// `setWebhook`).
pub const ALLOWED_UPDATES: &[&str] = &[
    "message",
    "callback_query",
    "pre_checkout_query",
    // Bot API 10.2: a Stars subscription canceled, resumed or failed to renew.
    "subscription",
    // Bot API 10.3: the user pressed the stop button of a reply's message draft.
    drafts::STOPPED_UPDATE,
];

/// Pauses between failed attempts to reach Telegram for updates (`getUpdates`,
/// `setWebhook`): from half a second, doubling up to a minute.
pub const RETRY: BackoffSettings = BackoffSettings {
    min_ms: 500,
    max_ms: 60_000,
    jitter: 0.2,
    reset_after_ms: 60_000,
};

/// After a failed call to Telegram for updates (attempt number `attempt` in a row): logs and
/// counts it, then waits out [`RETRY`]'s backoff. Returns false if shutdown came first.
pub(crate) async fn pause_after_failure(
    call: &str,
    error: &dyn std::fmt::Display,
    attempt: u32,
    metrics: &Metrics,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let backoff = RETRY.delay(attempt, fastrand::f64());
    tracing::warn!(error = %error, "{call} failed; retrying in {backoff:?}");
    metrics.count_error(vitte_actors::metrics::ErrorKind::Telegram);
    tokio::select! {
        _ = shutdown.changed() => false,
        () = tokio::time::sleep(backoff) => true,
    }
}

/// Registers the command menu Telegram shows next to the input field: in English by default
/// and in Russian for Russian-speaking users. Best effort: a failure is logged, the bot works
/// without the menu.
pub async fn register_commands(bot: teloxide::Bot) {
    use teloxide::payloads::SetMyCommandsSetters;
    use teloxide::prelude::Requester;
    use vitte_actors::domain::texts::Lang;
    for (lang, language_code) in [(Lang::En, None), (Lang::Ru, Some("ru"))] {
        let commands =
            lang.texts().commands.iter().map(|(command, description)| {
                teloxide::types::BotCommand::new(*command, *description)
            });
        let mut request = bot.set_my_commands(commands);
        if let Some(code) = language_code {
            request = request.language_code(code);
        }
        if let Err(error) = request.await {
            tracing::warn!(%error, "could not register the command menu");
        }
    }
}

/// Where updates from either ingress (polling or webhook) go. An update is stored first (the
/// inbox: its raw JSON until it is handled), then handed to its user's session; only then is
/// Telegram told it arrived (the webhook's 200, the next `getUpdates` offset), so a crash
/// loses nothing accepted. A redelivered update is recognised by its id and not handed on.
/// One ingress hands a user's updates on in the order it receives them (polling takes them
/// one at a time; Telegram's webhook sends a chat's updates one after another).
#[derive(Clone)]
pub struct UpdateSink {
    pub router: SessionRouter,
    /// Where payment updates go.
    pub desk: DeskHandle,
    pub metrics: Metrics,
    pub database: Database,
    pub clock: Arc<dyn Clock>,
    /// Set while the ingress runs (polling loop receiving, or webhook registered).
    pub ingress_ready: Arc<AtomicBool>,
}

impl UpdateSink {
    /// Stores `update` and hands it to its session. Returns once it is durable: only then
    /// may Telegram be told it arrived. An error means it was not stored, and Telegram must
    /// deliver it again.
    pub async fn accept(&self, update: &IncomingUpdate) -> Result<(), StorageError> {
        if let Some(payment) = update.payment() {
            let user_id = Some(payment.user_id());
            match self
                .database
                .accept_update(update.update_id, user_id, &update.json)
                .await?
            {
                Accepted::New => self.desk.deliver(payment.clone()),
                Accepted::Duplicate => {
                    tracing::debug!(
                        update_id = update.update_id,
                        "redelivered payment update ignored"
                    );
                    self.metrics.duplicate_updates_total.inc();
                }
            }
            return Ok(());
        }
        // Not one vitte handles (a group message, an edit): nothing to store or hand on.
        let Some(inbound) = update.to_inbound(self.clock.now_millis()) else {
            return Ok(());
        };
        let user_id = Some(inbound.sender.user_id);
        match self
            .database
            .accept_update(update.update_id, user_id, &update.json)
            .await?
        {
            Accepted::New => {
                self.metrics
                    .telegram_messages_total
                    .with_label_values(&["in"])
                    .inc();
                self.router.route(inbound);
            }
            Accepted::Duplicate => {
                tracing::debug!(update_id = update.update_id, "redelivered update ignored");
                self.metrics.duplicate_updates_total.inc();
            }
        }
        Ok(())
    }

    /// Hands an update accepted before a restart (at `received_at`) to its session again.
    pub fn replay(&self, update: &IncomingUpdate, received_at: i64) {
        if let Some(payment) = update.payment() {
            self.metrics.replayed_updates_total.inc();
            self.desk.deliver(payment.clone());
            return;
        }
        if let Some(mut inbound) = update.to_inbound(received_at) {
            inbound.replayed = true;
            self.metrics.replayed_updates_total.inc();
            self.router.route(inbound);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ingress_ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ingress_ready.store(ready, Ordering::SeqCst);
    }
}
