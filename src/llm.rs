//! The OpenAI-compatible chat client (DeepSeek, OpenAI, OpenRouter, Ollama, vLLM, …):
//! `POST {base_url}/chat/completions` over reqwest, with timeouts and typed errors.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vitte_actors::ports::{ChatMessage, Completion, CompletionRequest, LanguageModel, LlmError};

use crate::config::LlmSettings;

/// Most characters of an error body kept in an error message.
const ERROR_BODY_CHARS: usize = 300;

/// A client for one OpenAI-compatible endpoint and model.
#[derive(Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    endpoint: String,
    api_key: SecretString,
    model: String,
    temperature: f32,
    max_tokens: u32,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ChatCompletionBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    stream: bool,
}

#[derive(Deserialize)]
struct ChatCompletionResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AssistantMessage,
}

#[derive(Deserialize)]
struct AssistantMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

impl OpenAiClient {
    pub fn new(settings: &LlmSettings) -> Result<OpenAiClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(OpenAiClient {
            http,
            endpoint: format!(
                "{}/chat/completions",
                settings.base_url.trim_end_matches('/')
            ),
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
            temperature: settings.temperature,
            max_tokens: settings.max_reply_tokens,
        })
    }
}

#[async_trait]
impl LanguageModel for OpenAiClient {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let body = ChatCompletionBody {
            model: &self.model,
            messages: &request.messages,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            stream: false,
        };
        let mut call = self.http.post(&self.endpoint).json(&body);
        let key = self.api_key.expose_secret();
        if !key.is_empty() {
            call = call.bearer_auth(key);
        }
        let response = call.send().await.map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(LlmError::Status {
                status: status.as_u16(),
                message: error_message(&text),
            });
        }
        let parsed: ChatCompletionResponse = response.json().await.map_err(|error| {
            if error.is_timeout() {
                LlmError::Timeout
            } else {
                LlmError::Malformed(error.to_string())
            }
        })?;
        let text = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .ok_or_else(|| LlmError::Malformed("the answer has no message content".into()))?;
        Ok(Completion {
            text,
            prompt_tokens: parsed.usage.as_ref().and_then(|usage| usage.prompt_tokens),
            completion_tokens: parsed.usage.and_then(|usage| usage.completion_tokens),
        })
    }
}

fn transport_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        // reqwest's message names the URL but never the API key (it travels in a header).
        LlmError::Unreachable(error.to_string())
    }
}

/// The `error.message` of an OpenAI error body, or the start of the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .pointer("/error/message")
                .and_then(|message| message.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(ERROR_BODY_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::error_message;

    #[test]
    fn error_message_prefers_the_openai_shape() {
        assert_eq!(
            error_message(r#"{"error":{"message":"model overloaded","type":"server_error"}}"#),
            "model overloaded"
        );
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
    }
}
