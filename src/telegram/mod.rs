//! Telegram: turning updates into session events (ingress, by long polling or webhook) and
//! sending messages (the [`outbox::TelegramOutbox`] implementation of the `Messenger` port).

pub mod outbox;
pub mod polling;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use teloxide::types::{Update, UpdateKind};
use vitte_actors::event::{Inbound, InboundKind, Sender};
use vitte_actors::metrics::Metrics;
use vitte_actors::router::SessionRouter;

use crate::storage::Database;

/// Converts an update into a session event; `None` for updates the bot does not handle
/// (edits, channel posts, messages without a sender, …).
pub fn to_inbound(update: &Update) -> Option<Inbound> {
    match &update.kind {
        UpdateKind::Message(message) => {
            let user = message.from.as_ref()?;
            if user.is_bot {
                return None;
            }
            let kind = match message.text() {
                Some(text) => InboundKind::from_text(text),
                // Stickers, photos, voice: the user is told the bot reads text only.
                None => InboundKind::Unsupported,
            };
            Some(Inbound {
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
                sender: Sender {
                    user_id: query.from.id.0 as i64,
                    chat_id,
                    first_name: query.from.first_name.clone(),
                    language_code: query.from.language_code.clone(),
                },
                kind: InboundKind::Button {
                    callback_id: query.id.0.clone(),
                    data: query.data.clone().unwrap_or_default(),
                },
            })
        }
        _ => None,
    }
}

/// Where updates from either ingress (polling or webhook) go: duplicate check, then the
/// user's session.
#[derive(Clone)]
pub struct UpdateSink {
    pub database: Database,
    pub router: SessionRouter,
    pub metrics: Metrics,
    /// Set once the ingress is running (polling loop started or webhook registered).
    pub ingress_ready: Arc<AtomicBool>,
}

/// Why an update was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The duplicate check could not be made; the update should be redelivered later.
    #[error("could not record the update: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

impl UpdateSink {
    /// Routes an update to its session unless it was handled before (Telegram redelivers
    /// updates after timeouts and restarts; each must be answered once).
    pub async fn accept(&self, update: &Update) -> Result<(), SinkError> {
        let Some(inbound) = to_inbound(update) else {
            return Ok(());
        };
        if !self
            .database
            .mark_update_processed(i64::from(update.id.0))
            .await?
        {
            self.metrics.duplicate_updates_total.inc();
            tracing::debug!(update_id = update.id.0, "duplicate update ignored");
            return Ok(());
        }
        self.metrics
            .telegram_messages_total
            .with_label_values(&["in"])
            .inc();
        self.router.route(inbound);
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ingress_ready.load(Ordering::SeqCst)
    }
}
