//! Sending to Telegram through teloxide: Markdown with a plain-text fallback, flood-control
//! waits honoured.

use std::time::Duration;

use async_trait::async_trait;
use teloxide::payloads::setters::*;
use teloxide::prelude::Requester;
use teloxide::types::{
    CallbackQueryId, ChatAction, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, ParseMode,
};
use teloxide::{ApiError, Bot, RequestError};
use vitte_actors::ports::{DeliveryError, Keyboard, Messenger};

/// Longest flood-control wait we accept before giving up on a message.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Attempts per message when Telegram asks us to slow down or cannot be reached.
const MAX_ATTEMPTS: usize = 4;
/// First pause before sending again after a connection failure (grows per attempt).
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(250);

/// The `Messenger` port over the Telegram Bot API.
#[derive(Clone)]
pub struct TelegramOutbox {
    bot: Bot,
}

impl TelegramOutbox {
    pub fn new(bot: Bot) -> TelegramOutbox {
        TelegramOutbox { bot }
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
        let message = request.await?;
        Ok(i64::from(message.id.0))
    }
}

fn to_markup(keyboard: &Keyboard) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(keyboard.rows.iter().map(|row| {
        row.iter()
            .map(|button| InlineKeyboardButton::callback(button.label.clone(), button.data.clone()))
            .collect::<Vec<_>>()
    }))
}

fn delivery_error(error: RequestError) -> DeliveryError {
    match error {
        RequestError::Api(
            ApiError::BotBlocked | ApiError::UserDeactivated | ApiError::ChatNotFound,
        ) => DeliveryError::Blocked,
        // The token is part of request URLs; teloxide removes it from network errors. The
        // causes say what actually failed (reset, closed, refused, …).
        other => {
            let mut message = other.to_string();
            let mut cause = std::error::Error::source(&other);
            while let Some(inner) = cause {
                message.push_str(": ");
                message.push_str(&inner.to_string());
                cause = inner.source();
            }
            DeliveryError::Failed(message)
        }
    }
}

#[async_trait]
impl Messenger for TelegramOutbox {
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
                Err(RequestError::RetryAfter(wait))
                    if attempt < MAX_ATTEMPTS && wait.duration() <= MAX_RETRY_AFTER =>
                {
                    tokio::time::sleep(wait.duration()).await;
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

    async fn show_typing(&self, chat: i64) -> Result<(), DeliveryError> {
        self.bot
            .send_chat_action(ChatId(chat), ChatAction::Typing)
            .await
            .map(|_| ())
            .map_err(delivery_error)
    }

    async fn acknowledge_button(&self, callback_id: &str) -> Result<(), DeliveryError> {
        self.bot
            .answer_callback_query(CallbackQueryId(callback_id.to_owned()))
            .await
            .map(|_| ())
            .map_err(delivery_error)
    }
}
