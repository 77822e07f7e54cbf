//! Bot API calls as plain JSON, for what teloxide 0.17 (Bot API 9.1) does not know or hides:
//! `getUpdates` returning each update's raw JSON (new update kinds are parsed from it), and
//! `setWebhook` with the update kinds of later Bot API versions. Everything vitte says to
//! Telegram outside teloxide goes through here, so a teloxide upgrade can replace it.

use std::time::Duration;

use serde_json::Value;

/// Why a raw call failed. Never shows the request's URL (it holds the bot token).
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Telegram answered with an error.
    #[error("Telegram refused {method}: {code} {description}")]
    Api {
        method: &'static str,
        code: i64,
        description: String,
        /// Flood control: wait this long before calling again.
        retry_after: Option<Duration>,
    },
    /// The call did not get an answer (connection, timeout, unreadable body).
    #[error("{method} failed: {reason}")]
    Network {
        method: &'static str,
        reason: String,
    },
}

/// The Bot API reached with plain JSON (shares teloxide's HTTP client and base URL).
#[derive(Clone)]
pub struct RawBotApi {
    http: reqwest::Client,
    /// `{api_url}/bot{token}/`: secret, never logged.
    base: String,
}

impl RawBotApi {
    pub fn new(bot: &teloxide::Bot) -> RawBotApi {
        let api_url = bot.api_url();
        let base = format!(
            "{}/bot{}/",
            api_url.as_str().trim_end_matches('/'),
            bot.token()
        );
        RawBotApi {
            http: bot.client().clone(),
            base,
        }
    }

    /// Calls `method` with a JSON body; returns its `result`.
    pub async fn call(&self, method: &'static str, body: &Value) -> Result<Value, RawError> {
        let network = |error: reqwest::Error| RawError::Network {
            method,
            reason: crate::error_chain(&error.without_url()),
        };
        let response = self
            .http
            .post(format!("{}{method}", self.base))
            .json(body)
            .send()
            .await
            .map_err(network)?;
        let answer: Value = response.json().await.map_err(network)?;
        if answer["ok"].as_bool() == Some(true) {
            return Ok(answer["result"].clone());
        }
        Err(RawError::Api {
            method,
            code: answer["error_code"].as_i64().unwrap_or(0),
            description: answer["description"]
                .as_str()
                .unwrap_or("no description")
                .to_owned(),
            retry_after: answer["parameters"]["retry_after"]
                .as_u64()
                .map(Duration::from_secs),
        })
    }
}
