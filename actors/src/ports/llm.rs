//! The way to a language model: an OpenAI-compatible chat endpoint, reached through the
//! LLM gateway.

use async_trait::async_trait;

use super::UserId;

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of an LLM request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What a completion is for; decides what may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A persona's reply in a conversation: personal, never cached.
    #[default]
    Companion,
    /// A summary or other derived text (story summaries, reports): cacheable when
    /// deterministic.
    Summary,
    /// Facts about the user for long-term memory: personal, never cached.
    Memory,
}

impl Purpose {
    /// Work no user waits for (memory extraction, summaries).
    pub fn is_background(self) -> bool {
        matches!(self, Purpose::Summary | Purpose::Memory)
    }
}

/// Where a streamed completion's text goes as it arrives (`stream: true`). It remembers
/// whether any text went out, because from then on the request must not be retried or sent
/// to another provider: the user has seen the beginning of this answer.
#[derive(Debug, Clone)]
pub struct TextSink {
    sender: tokio::sync::mpsc::UnboundedSender<String>,
    started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TextSink {
    /// A sink and the receiving end of its text pieces.
    pub fn channel() -> (TextSink, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let sink = TextSink {
            sender,
            started: std::sync::Arc::default(),
        };
        (sink, receiver)
    }

    /// Passes on a piece of the answer (empty pieces are skipped).
    pub fn push(&self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // The receiver is gone only when the caller stopped listening (e.g. /stop).
        let _ = self.sender.send(piece.to_owned());
    }

    /// Whether any text has been passed on.
    pub fn has_started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A request for one completion; the model and default sampling belong to the provider.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    /// Overrides the provider's temperature; `Some(0.0)` makes a request deterministic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    pub purpose: Purpose,
    /// The user it is for, for per-user rate limits; not part of the cache key.
    #[serde(skip)]
    pub user_id: Option<UserId>,
    /// When set, the answer is streamed (`stream: true`) and its text goes here as it
    /// arrives; the completion still carries the whole text at the end.
    #[serde(skip)]
    pub stream: Option<TextSink>,
}

impl CompletionRequest {
    /// A companion reply for `user_id`.
    pub fn companion(messages: Vec<ChatMessage>, user_id: UserId) -> CompletionRequest {
        CompletionRequest {
            messages,
            temperature: None,
            purpose: Purpose::Companion,
            user_id: Some(user_id),
            stream: None,
        }
    }

    /// A deterministic request (temperature 0) for `purpose`, not streamed (a summary's is
    /// cacheable). It is background work, so it takes nothing from the user's own rate
    /// limit.
    pub fn derived(messages: Vec<ChatMessage>, purpose: Purpose) -> Self {
        CompletionRequest {
            messages,
            temperature: Some(0.0),
            purpose,
            user_id: None,
            stream: None,
        }
    }

    /// The text of the newest user message (empty without one).
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map_or("", |message| message.content.as_str())
    }

    /// Whether an answer may be cached and served again: only deterministic summaries, never
    /// streamed. Never a companion's reply (it must not reach another user) nor facts about
    /// a user (personal: /forget_me must not leave them in a cache).
    pub fn is_cacheable(&self) -> bool {
        self.purpose == Purpose::Summary && self.temperature == Some(0.0) && self.stream.is_none()
    }

    /// Whether text of the answer has already been streamed to the caller: then it must not
    /// be asked again (retry or fallback), or the user would see two different beginnings.
    pub fn has_streamed(&self) -> bool {
        self.stream.as_ref().is_some_and(TextSink::has_started)
    }
}

/// What the LLM answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// The provider that served it (set by the gateway; empty from a bare client).
    #[serde(default)]
    pub provider: String,
}

/// Why a completion failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM did not answer in time")]
    Timeout,
    #[error("could not reach the LLM: {0}")]
    Unreachable(String),
    #[error("the LLM answered with HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("the LLM's answer could not be read: {0}")]
    Malformed(String),
    /// Every provider's circuit breaker is open; nothing was sent.
    #[error("the LLM is unavailable; next attempt in {retry_in:?}")]
    CircuitOpen { retry_in: std::time::Duration },
    /// A rate limit refused the request; nothing was sent.
    #[error("too many requests; retry in {retry_in:?}")]
    RateLimited { retry_in: std::time::Duration },
    /// The LLM client panicked (caught by the gateway).
    #[error("the LLM client failed: {0}")]
    Crashed(String),
    /// A streamed answer broke off after some of its text had been passed on.
    #[error("the LLM's answer broke off: {0}")]
    Interrupted(String),
}

impl LlmError {
    /// Errors worth retrying: timeouts, connection failures, 5xx, 429, and 408 (the server
    /// gave up reading the request, which HTTP says may be repeated).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Timeout | LlmError::Unreachable(_) => true,
            LlmError::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            _ => false,
        }
    }

    /// Whether the error says the provider is unhealthy (counts against its breaker): not
    /// answering, failing, refusing our credentials, or answering nonsense. A request the
    /// provider rightly rejects (400, 404, 413, 422) says nothing about its health.
    pub fn counts_against_provider(&self) -> bool {
        match self {
            LlmError::Timeout
            | LlmError::Unreachable(_)
            | LlmError::Malformed(_)
            | LlmError::Crashed(_)
            | LlmError::Interrupted(_) => true,
            LlmError::Status { status, .. } => matches!(status, 401 | 403 | 429) || *status >= 500,
            LlmError::CircuitOpen { .. } | LlmError::RateLimited { .. } => false,
        }
    }

    /// The provider's own wait, if it named one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An OpenAI-compatible chat model.
#[async_trait]
pub trait LanguageModel: Send + Sync + 'static {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError>;
}
