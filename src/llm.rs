//! The OpenAI-compatible chat client (DeepSeek, OpenAI, OpenRouter, Ollama, vLLM, …):
//! `POST {base_url}/chat/completions` over reqwest, with timeouts and typed errors.
//!
//! A request with a [`TextSink`] is streamed (`"stream": true`): the server answers with
//! server-sent events, one `data: {json}` line per piece (`choices[0].delta.content`), ending
//! with `data: [DONE]`. Each piece goes to the sink as it arrives; a stream that breaks off
//! after some text is [`LlmError::Interrupted`].
//!
//! [`OpenAiEmbeddings`] is the `POST {base_url}/embeddings` client long-term memory uses.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vitte_actors::ports::memory::Embedder;
use vitte_actors::ports::{
    ChatMessage, Completion, CompletionRequest, LanguageModel, LlmError, TextSink,
};

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
    /// The whole answer of a plain request; for a streamed one, the longest silence.
    request_timeout: Duration,
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

/// One server-sent event of a streamed answer.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

impl OpenAiClient {
    pub fn new(endpoint: &ProviderEndpoint) -> Result<OpenAiClient, reqwest::Error> {
        // A streamed answer may take longer than `request_timeout` in all, as long as it
        // keeps coming: the stream is bounded by silence (no byte for that long), a plain
        // answer as a whole (see `complete`).
        let http = reqwest::Client::builder()
            .read_timeout(endpoint.request_timeout)
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
            request_timeout: endpoint.request_timeout,
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
            stream: request.stream.is_some(),
        };
        let mut call = self.http.post(&self.endpoint).json(&body);
        if request.stream.is_none() {
            call = call.timeout(self.request_timeout);
        }
        let response = send_checked(call, &self.api_key).await?;
        if let Some(sink) = &request.stream {
            return read_stream(response, sink).await;
        }
        let parsed: ChatCompletionResponse = response.json().await.map_err(body_error)?;
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

/// Reads a streamed answer, passing each piece of text to `sink`.
async fn read_stream(
    mut response: reqwest::Response,
    sink: &TextSink,
) -> Result<Completion, LlmError> {
    let mut events = SseLines::default();
    let mut completion = Completion {
        text: String::new(),
        prompt_tokens: None,
        completion_tokens: None,
        provider: String::new(),
    };
    let mut finished = false;
    loop {
        let payloads = match response.chunk().await {
            Ok(Some(chunk)) => events.push(&chunk),
            // What is left of a last line without its newline.
            Ok(None) => events.finish(),
            Err(error) if completion.text.is_empty() => return Err(transport_error(error)),
            Err(error) => return Err(LlmError::Interrupted(transport_error(error).to_string())),
        };
        let ended = payloads.is_empty() && events.is_finished();
        for data in payloads {
            if data == "[DONE]" {
                finished = true;
                continue;
            }
            if data.is_empty() {
                continue;
            }
            // Providers add their own events (keep-alives, metadata): skip what is not a
            // chunk rather than lose the answer.
            let event: StreamChunk = match serde_json::from_str(&data) {
                Ok(event) => event,
                Err(error) => {
                    tracing::debug!(%error, "skipping a streamed event that is not a chunk");
                    continue;
                }
            };
            if let Some(error) = event.error {
                let message = error
                    .pointer("/message")
                    .and_then(|message| message.as_str())
                    .unwrap_or("error event")
                    .to_owned();
                return Err(if completion.text.is_empty() {
                    LlmError::Status {
                        status: 502,
                        message,
                        retry_after: None,
                    }
                } else {
                    LlmError::Interrupted(message)
                });
            }
            if let Some(usage) = event.usage {
                completion.prompt_tokens = usage.prompt_tokens;
                completion.completion_tokens = usage.completion_tokens;
            }
            for choice in event.choices.into_iter().take(1) {
                if let Some(piece) = choice.delta.content {
                    sink.push(&piece);
                    completion.text.push_str(&piece);
                }
                if choice.finish_reason.is_some() {
                    finished = true;
                }
            }
        }
        if ended {
            break;
        }
    }
    if !finished {
        let reason = "the stream ended before the answer was complete".to_owned();
        return Err(if completion.text.is_empty() {
            LlmError::Malformed(reason)
        } else {
            LlmError::Interrupted(reason)
        });
    }
    Ok(completion)
}

/// Splits a server-sent event stream into the payloads of its `data:` lines, across chunk
/// boundaries.
#[derive(Default)]
struct SseLines {
    pending: Vec<u8>,
    finished: bool,
}

impl SseLines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut payloads = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(data) = line.strip_prefix("data:") {
                payloads.push(data.trim_start().to_owned());
            }
        }
        payloads
    }

    /// The end of the stream: the payload of a last line that had no newline, if any.
    fn finish(&mut self) -> Vec<String> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.pending.push(b'\n');
        self.push(&[])
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Sends `call` (with `api_key` as bearer token unless empty); an answer other than 2xx
/// becomes [`LlmError::Status`] with the provider's message and `Retry-After`.
async fn send_checked(
    mut call: reqwest::RequestBuilder,
    api_key: &SecretString,
) -> Result<reqwest::Response, LlmError> {
    let key = api_key.expose_secret();
    if !key.is_empty() {
        call = call.bearer_auth(key);
    }
    let response = call.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let text = response.text().await.unwrap_or_default();
    Err(LlmError::Status {
        status: status.as_u16(),
        message: error_message(&text),
        retry_after,
    })
}

/// A JSON answer that did not arrive whole in time, or could not be read.
fn body_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Malformed(error.to_string())
    }
}

fn transport_error(error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        LlmError::Timeout
    } else {
        // reqwest's message names the URL but never the API key (it travels in a header).
        LlmError::Unreachable(crate::error_chain(&error))
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

/// A client for an OpenAI-compatible `POST {base_url}/embeddings` endpoint and model.
pub struct OpenAiEmbeddings {
    http: reqwest::Client,
    endpoint: String,
    api_key: SecretString,
    model: String,
    dimensions: Option<u32>,
}

#[derive(Serialize)]
struct EmbeddingsBody<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

impl OpenAiEmbeddings {
    pub fn new(
        base_url: &str,
        api_key: SecretString,
        model: &str,
        dimensions: Option<u32>,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<OpenAiEmbeddings, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(OpenAiEmbeddings {
            http,
            endpoint: format!("{}/embeddings", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_owned(),
            dimensions,
        })
    }
}

#[async_trait]
impl Embedder for OpenAiEmbeddings {
    /// One vector per text, in order (the answer's `index` decides where each goes).
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let body = EmbeddingsBody {
            model: &self.model,
            input: texts,
            dimensions: self.dimensions,
        };
        let call = self.http.post(&self.endpoint).json(&body);
        let response = send_checked(call, &self.api_key).await?;
        let parsed: EmbeddingsResponse = response.json().await.map_err(body_error)?;
        if parsed.data.len() != texts.len() {
            return Err(LlmError::Malformed(format!(
                "{} embeddings for {} texts",
                parsed.data.len(),
                texts.len()
            )));
        }
        let mut vectors = vec![Vec::new(); texts.len()];
        for (position, item) in parsed.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let Some(slot) = vectors.get_mut(index) else {
                return Err(LlmError::Malformed(format!(
                    "embedding index {index} out of range"
                )));
            };
            *slot = item.embedding;
        }
        if vectors.iter().any(Vec::is_empty) {
            return Err(LlmError::Malformed(
                "an embedding is missing or empty".into(),
            ));
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::{SseLines, error_message, parse_retry_after};
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
    fn sse_payloads_are_read_across_chunk_boundaries() {
        let mut lines = SseLines::default();
        assert!(lines.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            lines.push(b":1}\r\n\n: comment\ndata: [DONE]\n"),
            ["{\"a\":1}", "[DONE]"]
        );
        // A multi-byte character split between chunks survives.
        let text = "data: привет\n".as_bytes();
        assert!(lines.push(&text[..8]).is_empty());
        assert_eq!(lines.push(&text[8..]), ["привет"]);
    }

    #[test]
    fn a_last_line_without_newline_is_read_at_the_end() {
        let mut lines = SseLines::default();
        assert!(lines.push(b"data: [DONE]").is_empty());
        assert_eq!(lines.finish(), ["[DONE]"]);
        assert!(lines.is_finished());
        assert!(lines.finish().is_empty(), "only once");
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
