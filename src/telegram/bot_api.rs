//! The Bot API client: every call vitte makes to Telegram, through teloxide. Markdown with a
//! plain-text fallback, at most [`MAX_CONCURRENT_CALLS`] calls at once. It implements the
//! actors' `Messenger` port and is the outbox's transport: flood control (429) is returned
//! as `DeliveryError::Throttled` for the outbox to wait out, per chat or for everything.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use async_trait::async_trait;
use teloxide::payloads::setters::*;
use teloxide::prelude::Requester;
use teloxide::types::{
    CallbackQueryId, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId, ParseMode,
};
use teloxide::{ApiError, Bot, RequestError};
use vitte_actors::ports::{DeliveryError, Keyboard, Messenger, Render};

use super::raw::RawBotApi;

/// Attempts per message when Telegram cannot be reached.
const MAX_ATTEMPTS: usize = 4;
/// First pause before sending again after a connection failure (grows per attempt).
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Bot API calls in progress at once; more wait their turn. Every streamed reply opens
/// with a send, and a burst of replies must queue here rather than open a socket each
/// (measured: 15 000 replies starting together ran the process out of file descriptors).
/// Telegram accepts about 30 messages a second per bot, so this never slows a real bot.
pub const MAX_CONCURRENT_CALLS: usize = 256;

/// The `Messenger` port over the Telegram Bot API.
#[derive(Clone)]
pub struct BotApiClient {
    bot: Bot,
    /// For the methods teloxide does not know (message drafts).
    raw: RawBotApi,
    calls: Arc<Semaphore>,
}

impl BotApiClient {
    pub fn new(bot: Bot) -> BotApiClient {
        BotApiClient {
            raw: RawBotApi::new(&bot),
            bot,
            calls: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
        }
    }

    /// Waits for a turn to call the Bot API (held for one request, never across a retry's
    /// pause).
    async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so acquiring only fails if it were; then go ahead.
        self.calls.acquire().await.ok()
    }

    async fn send_once(
        &self,
        chat: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        markdown: bool,
    ) -> Result<i64, RequestError> {
        let mut request = self.bot.send_message(ChatId(chat), text);
        if markdown {
            // Legacy Markdown is what LLMs mostly write (*bold*, _italic_, `code`); whatever
            // Telegram cannot parse is re-sent as plain text by the caller.
            #[allow(deprecated)]
            {
                request = request.parse_mode(ParseMode::Markdown);
            }
        }
        if let Some(keyboard) = keyboard {
            request = request.reply_markup(to_markup(keyboard));
        }
        let _turn = self.turn().await;
        let message = request.await?;
        Ok(i64::from(message.id.0))
    }

    async fn edit_once(
        &self,
        chat: i64,
        message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        markdown: bool,
    ) -> Result<(), RequestError> {
        let id = MessageId(i32::try_from(message_id).unwrap_or(i32::MAX));
        let mut request = self.bot.edit_message_text(ChatId(chat), id, text);
        if markdown {
            #[allow(deprecated)]
            {
                request = request.parse_mode(ParseMode::Markdown);
            }
        }
        if let Some(keyboard) = keyboard {
            request = request.reply_markup(to_markup(keyboard));
        }
        let _turn = self.turn().await;
        request.await.map(|_| ())
    }
}

fn to_markup(keyboard: &Keyboard) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(keyboard.rows.iter().map(|row| {
        row.iter()
            .map(|button| {
                // A link button (an invoice link) whose URL does not parse is shown as a
                // button that does nothing rather than dropped from the keyboard.
                match button.url.as_deref().map(reqwest::Url::parse) {
                    Some(Ok(url)) => InlineKeyboardButton::url(button.label.clone(), url),
                    _ => InlineKeyboardButton::callback(button.label.clone(), button.data.clone()),
                }
            })
            .collect::<Vec<_>>()
    }))
}

fn delivery_error(error: RequestError) -> DeliveryError {
    match error {
        RequestError::Api(
            ApiError::BotBlocked | ApiError::UserDeactivated | ApiError::ChatNotFound,
        ) => DeliveryError::Blocked,
        // Refused, or never sent (the connection failed first): nothing was applied. (The
        // token is part of request URLs; teloxide removes it from network errors.)
        RequestError::RetryAfter(wait) => DeliveryError::Throttled {
            retry_after: wait.duration(),
        },
        RequestError::Api(_) | RequestError::MigrateToChatId(_) => {
            DeliveryError::Failed(crate::error_chain(&error))
        }
        RequestError::Network(ref network) if network.is_connect() => {
            DeliveryError::Failed(crate::error_chain(&error))
        }
        // Sent, but no (readable) answer came: Telegram may have applied it.
        other => DeliveryError::MaybeDelivered(crate::error_chain(&other)),
    }
}

#[async_trait]
impl Messenger for BotApiClient {
    async fn send_text(
        &self,
        chat: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        let mut markdown = true;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(chat, text, keyboard, markdown).await {
                Ok(id) => return Ok(id),
                Err(RequestError::Api(ApiError::CantParseEntities(_))) if markdown => {
                    tracing::debug!("Telegram rejected the Markdown; sending as plain text");
                    markdown = false;
                }
                // The outbox waits, holding this chat (or every chat) back meanwhile.
                Err(RequestError::RetryAfter(wait)) => {
                    return Err(DeliveryError::Throttled {
                        retry_after: wait.duration(),
                    });
                }
                // The connection failed before the request was sent: it cannot have been
                // delivered, so sending again cannot duplicate it. (A timeout could have
                // been delivered, and is not retried.)
                Err(RequestError::Network(error))
                    if error.is_connect() && attempt < MAX_ATTEMPTS =>
                {
                    tracing::debug!(%error, attempt, "Telegram unreachable; retrying");
                    tokio::time::sleep(CONNECT_RETRY_DELAY * attempt as u32).await;
                }
                Err(error) => return Err(delivery_error(error)),
            }
        }
    }

    /// The final text is retried like a send (connection failures) and tries Markdown
    /// first. A draft is plain text, tried once. Flood control is the outbox's to wait out.
    async fn edit_text(
        &self,
        chat: i64,
        message_id: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        render: Render,
    ) -> Result<(), DeliveryError> {
        let mut markdown = render == Render::Final;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .edit_once(chat, message_id, text, keyboard, markdown)
                .await
            {
                Ok(()) => return Ok(()),
                // Telegram refuses an edit to the same text and buttons: it shows them already.
                Err(RequestError::Api(ApiError::MessageNotModified)) => return Ok(()),
                Err(RequestError::Api(ApiError::CantParseEntities(_))) if markdown => {
                    tracing::debug!("Telegram rejected the Markdown; editing as plain text");
                    markdown = false;
                }
                Err(RequestError::RetryAfter(wait)) => {
                    return Err(DeliveryError::Throttled {
                        retry_after: wait.duration(),
                    });
                }
                // An edit is idempotent: sending it again after any network failure is safe.
                Err(RequestError::Network(error))
                    if attempt < MAX_ATTEMPTS && render == Render::Final =>
                {
                    tracing::debug!(%error, attempt, "Telegram unreachable; retrying an edit");
                    tokio::time::sleep(CONNECT_RETRY_DELAY * attempt as u32).await;
                }
                Err(error) => return Err(delivery_error(error)),
            }
        }
    }

    /// Plain JSON (see [`super::drafts`]), tried once: a lost draft is shown by the next.
    async fn send_draft(&self, chat: i64, draft_id: i64, text: &str) -> Result<(), DeliveryError> {
        let _turn = self.turn().await;
        super::drafts::send_message_draft(&self.raw, chat, draft_id, text).await
    }

    async fn delete_message(&self, chat: i64, message_id: i64) -> Result<(), DeliveryError> {
        let id = MessageId(i32::try_from(message_id).unwrap_or(i32::MAX));
        let _turn = self.turn().await;
        self.bot
            .delete_message(ChatId(chat), id)
            .await
            .map(|_| ())
            .map_err(delivery_error)
    }

    async fn acknowledge_button(&self, callback_id: &str) -> Result<(), DeliveryError> {
        let _turn = self.turn().await;
        self.bot
            .answer_callback_query(CallbackQueryId(callback_id.to_owned()))
            .await
            .map(|_| ())
            .map_err(delivery_error)
    }
}
