//! Telegram: turning updates into session events (ingress, by long polling or webhook) and
//! calling the Bot API (the [`bot_api::BotApiClient`], which implements the `Messenger` port).

pub mod bot_api;
pub mod polling;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use teloxide::types::{Update, UpdateKind};
use vitte_actors::domain::event::{Inbound, InboundKind, Sender};
use vitte_actors::metrics::Metrics;
use vitte_actors::resilience::backoff::BackoffSettings;
use vitte_actors::session::SessionRouter;

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
    error: &teloxide::RequestError,
    attempt: u32,
    metrics: &Metrics,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let backoff = RETRY.delay(attempt, fastrand::f64());
    tracing::warn!(%error, "{call} failed; retrying in {backoff:?}");
    metrics.count_error(vitte_actors::metrics::ErrorKind::Telegram);
    tokio::select! {
        _ = shutdown.changed() => false,
        () = tokio::time::sleep(backoff) => true,
    }
}

/// Converts an update into a session event; `None` for updates the bot does not handle
/// (group chats, edits, channel posts, messages from bots, …).
pub fn to_inbound(update: &Update) -> Option<Inbound> {
    let update_id = Some(i64::from(update.id.0));
    match &update.kind {
        UpdateKind::Message(message) => {
            let user = message.from.as_ref()?;
            // A companion bot talks in private chats only: in a group every member's message
            // would cost an LLM call and the replies would go to everyone.
            if user.is_bot || !message.chat.is_private() {
                return None;
            }
            let kind = match message.text() {
                Some(text) => InboundKind::from_text(text),
                // Stickers, photos, voice: the user is told the bot reads text only.
                None => InboundKind::Unsupported,
            };
            Some(Inbound {
                update_id,
                sender: Sender {
                    user_id: user.id.0 as i64,
                    chat_id: message.chat.id.0,
                    first_name: user.first_name.clone(),
                    language_code: user.language_code.clone(),
                },
                kind,
            })
        }
        UpdateKind::CallbackQuery(query) => {
            let chat_id = query
                .message
                .as_ref()
                .map_or(query.from.id.0 as i64, |message| message.chat().id.0);
            Some(Inbound {
                update_id,
                sender: Sender {
                    user_id: query.from.id.0 as i64,
                    chat_id,
                    first_name: query.from.first_name.clone(),
                    language_code: query.from.language_code.clone(),
                },
                kind: InboundKind::Button {
                    callback_id: query.id.0.clone(),
                    data: query.data.clone().unwrap_or_default(),
                    message_id: query
                        .message
                        .as_ref()
                        .map(|message| i64::from(message.id().0)),
                },
            })
        }
        _ => None,
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

/// Where updates from either ingress (polling or webhook) go: straight to the user's session,
/// in arrival order. The session itself skips redelivered updates (by update id), inside its
/// one-at-a-time work, so the duplicate check cannot reorder a user's messages.
#[derive(Clone)]
pub struct UpdateSink {
    pub router: SessionRouter,
    pub metrics: Metrics,
    /// Set while the ingress runs (polling loop receiving, or webhook registered).
    pub ingress_ready: Arc<AtomicBool>,
}

impl UpdateSink {
    pub fn accept(&self, update: &Update) {
        let Some(inbound) = to_inbound(update) else {
            return;
        };
        self.metrics
            .telegram_messages_total
            .with_label_values(&["in"])
            .inc();
        self.router.route(inbound);
    }

    pub fn is_ready(&self) -> bool {
        self.ingress_ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ingress_ready.store(ready, Ordering::SeqCst);
    }
}
