//! The OpenAI-compatible chat client (DeepSeek, OpenAI, OpenRouter, Ollama, vLLM, …):
//! `POST {base_url}/chat/completions` over reqwest, with timeouts and typed errors.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vitte_actors::ports::{ChatMessage, Completion, CompletionRequest, LanguageModel, LlmError};

use crate::config::{FallbackProvider, LlmSettings};

/// Most characters of an error body kept in an error message.
const ERROR_BODY_CHARS: usize = 300;

/// Where and how to reach one provider.
#[derive(Clone)]
pub struct ProviderEndpoint {
    pub base_url: String,
    pub api_key: SecretString,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl ProviderEndpoint {
    pub fn primary(settings: &LlmSettings) -> ProviderEndpoint {
        ProviderEndpoint {
            base_url: settings.base_url.clone(),
            api_key: settings.api_key.clone(),
            model: settings.model.clone(),
            temperature: settings.temperature,
            max_tokens: settings.max_reply_tokens,
            request_timeout: settings.request_timeout,
            connect_timeout: settings.connect_timeout,
        }
    }

    /// A fallback uses the primary's sampling settings and timeouts.
    pub fn fallback(settings: &LlmSettings, fallback: &FallbackProvider) -> ProviderEndpoint {
        ProviderEndpoint {
            base_url: fallback.base_url.clone(),
            api_key: fallback.api_key.clone(),
            model: fallback.model.clone(),
            ..ProviderEndpoint::primary(settings)
        }
    }
}

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
    pub fn new(endpoint: &ProviderEndpoint) -> Result<OpenAiClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(endpoint.request_timeout)
            .connect_timeout(endpoint.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(OpenAiClient {
            http,
            endpoint: format!(
                "{}/chat/completions",
                endpoint.base_url.trim_end_matches('/')
            ),
            api_key: endpoint.api_key.clone(),
            model: endpoint.model.clone(),
            temperature: endpoint.temperature,
            max_tokens: endpoint.max_tokens,
        })
    }
}

#[async_trait]
impl LanguageModel for OpenAiClient {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        let body = ChatCompletionBody {
            model: &self.model,
            messages: &request.messages,
            temperature: request.temperature.unwrap_or(self.temperature),
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
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            let text = response.text().await.unwrap_or_default();
            return Err(LlmError::Status {
                status: status.as_u16(),
                message: error_message(&text),
                retry_after,
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
            provider: String::new(),
        })
    }
}

fn transport_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        // reqwest's message names the URL but never the API key (it travels in a header);
        // the causes say what actually failed (refused, reset, DNS, …).
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            cause = inner.source();
        }
        LlmError::Unreachable(message)
    }
}

/// `Retry-After` in seconds (the form LLM providers use; an HTTP date is ignored).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(3600.0)))
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
    use super::{error_message, parse_retry_after};
    use std::time::Duration;

    #[test]
    fn retry_after_seconds_are_read() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    #[test]
    fn error_message_prefers_the_openai_shape() {
        assert_eq!(
            error_message(r#"{"error":{"message":"model overloaded","type":"server_error"}}"#),
            "model overloaded"
        );
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
    }
}
