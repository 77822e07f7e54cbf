//! A fake OpenAI-compatible chat completions server for integration tests.
//!
//! It is a real HTTP server (actix-web, bound to `127.0.0.1:0`) serving
//! `POST /chat/completions` and `POST /v1/chat/completions`. It records every
//! request and answers according to a script of [`LlmBehaviour`]s, by default
//! with an echo of the last user message.
//!
//! Long-term memory's background requests (fact extraction and story summaries, told apart
//! by the first words of their system message) are recorded separately and answered from
//! their own scripts, so they never take a scripted reply meant for a user. The server also
//! serves `POST /embeddings` (and `/v1/embeddings`) as OpenAI does: one vector per input,
//! deterministic, texts sharing words pointing the same way (hashed bags of words); it can
//! be made to fail or to hold its answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How the fake answers one request.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub enum LlmBehaviour {
    /// Answer with this text.
    Reply(String),
    /// Answer with this HTTP status and body (e.g. 500, 503, 429), with an
    /// optional Retry-After header value in seconds.
    Fail {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Never answer within the client's timeout: sleep this long, then answer
    /// with an echo reply.
    Hang(Duration),
    /// Stream these pieces as server-sent events, one every `delay`, then finish
    /// (`finish_reason: "stop"` and `[DONE]`). Only for requests with `stream: true`.
    Stream {
        pieces: Vec<String>,
        delay: Duration,
    },
    /// Stream these pieces, one every `delay`, then end the response without
    /// finishing it, as a connection that breaks midway.
    StreamThenBreak {
        pieces: Vec<String>,
        delay: Duration,
    },
}

#[derive(Debug)]
struct Inner {
    requests: Vec<Value>,
    script: VecDeque<LlmBehaviour>,
    /// `None` = echo.
    default: Option<LlmBehaviour>,
    latency: Duration,
    down: bool,
    /// Requests wait (after the latency) until [`FakeLlm::release`].
    held: bool,
    next_id: u64,
    /// Memory extractions and summaries, recorded apart from replies.
    background: Vec<Value>,
    /// Answers to extraction requests, one per request; then `facts_default`.
    facts_script: VecDeque<String>,
    facts_default: String,
    /// The answer to summary requests.
    summary_reply: String,
    embedding_requests: Vec<Value>,
    embeddings_down: bool,
    /// Embedding requests wait until [`FakeLlm::release_embeddings`].
    embeddings_held: bool,
    /// Streams the client closed before their end: how many pieces each had sent.
    abandoned_streams: Vec<usize>,
}

/// The first words of an extraction request's system message.
const EXTRACTION_MARKER: &str = "You maintain the long-term memory of a companion.";
/// The first words of a summary request's system message.
const SUMMARY_MARKER: &str = "You keep the running summary of a long story.";
/// Dimensions of the fake's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 64;

#[derive(Debug)]
struct State {
    inner: Mutex<Inner>,
    released: tokio::sync::Notify,
    embeddings_released: tokio::sync::Notify,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the data usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake OpenAI-compatible server.
#[allow(dead_code)]
pub struct FakeLlm {
    state: Arc<State>,
    handle: ServerHandle,
    port: u16,
}

#[allow(dead_code)]
impl FakeLlm {
    /// Starts the server on a free port of 127.0.0.1. Must be called inside a
    /// running actix system (e.g. in an `#[actix_rt::test]`).
    pub async fn start() -> FakeLlm {
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                requests: Vec::new(),
                script: VecDeque::new(),
                default: None,
                latency: Duration::ZERO,
                down: false,
                held: false,
                next_id: 1,
                background: Vec::new(),
                facts_script: VecDeque::new(),
                facts_default: r#"{"facts": []}"#.to_owned(),
                summary_reply: "The story so far, in short.".to_owned(),
                embedding_requests: Vec::new(),
                embeddings_down: false,
                embeddings_held: false,
                abandoned_streams: Vec::new(),
            }),
            released: tokio::sync::Notify::new(),
            embeddings_released: tokio::sync::Notify::new(),
        });

        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake llm: bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("fake llm: local address of the listener")
            .port();

        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .route("/chat/completions", web::post().to(chat_completions))
                .route("/v1/chat/completions", web::post().to(chat_completions))
                .route("/embeddings", web::post().to(embeddings))
                .route("/v1/embeddings", web::post().to(embeddings))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("fake llm: listen")
        .run();
        let handle = server.handle();
        actix_rt::spawn(async move {
            let _ = server.await;
        });

        FakeLlm {
            state,
            handle,
            port,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests received so far (the parsed JSON bodies), in order. A body
    /// that was not JSON is recorded as a JSON string of its text.
    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().requests.clone()
    }

    /// Queues behaviours for the next requests, consumed one per request.
    pub fn script(&self, behaviours: impl IntoIterator<Item = LlmBehaviour>) {
        self.state.lock().script.extend(behaviours);
    }

    /// What every request gets when the script is empty; `None` = echo.
    pub fn set_default(&self, behaviour: Option<LlmBehaviour>) {
        self.state.lock().default = behaviour;
    }

    /// Latency added before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    /// Makes every request fail with 503 (without consuming the script)
    /// until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.state.lock().down = down;
    }

    /// Holds every request (answered or not yet received) until [`FakeLlm::release`]: a
    /// reply that is being written for as long as the test needs.
    pub fn hold(&self) {
        self.state.lock().held = true;
    }

    /// Lets held requests go on.
    pub fn release(&self) {
        self.state.lock().held = false;
        self.state.released.notify_waiters();
    }

    /// Memory extractions and summaries received so far (not in [`FakeLlm::requests`]).
    /// Streams whose connection the client closed before the stream's end (a reply
    /// stopped, say): the number of pieces each had sent by then.
    pub fn abandoned_streams(&self) -> Vec<usize> {
        self.state.lock().abandoned_streams.clone()
    }

    pub fn background_requests(&self) -> Vec<Value> {
        self.state.lock().background.clone()
    }

    /// Extraction requests received so far.
    pub fn extraction_requests(&self) -> Vec<Value> {
        self.background_of(EXTRACTION_MARKER)
    }

    /// Summary requests received so far.
    pub fn summary_requests(&self) -> Vec<Value> {
        self.background_of(SUMMARY_MARKER)
    }

    fn background_of(&self, marker: &str) -> Vec<Value> {
        self.state
            .lock()
            .background
            .iter()
            .filter(|request| system_text(request).starts_with(marker))
            .cloned()
            .collect()
    }

    /// Answers for the next extraction requests, one each (then the default).
    pub fn script_facts(&self, answers: impl IntoIterator<Item = String>) {
        self.state.lock().facts_script.extend(answers);
    }

    /// What extraction requests get when their script is empty (`{"facts": []}` at first).
    /// `{speaker}` in an answer becomes the test user speaking in the transcript (`User…`).
    pub fn set_facts_default(&self, answer: &str) {
        self.state.lock().facts_default = answer.to_owned();
    }

    /// What summary requests get.
    pub fn set_summary_reply(&self, answer: &str) {
        self.state.lock().summary_reply = answer.to_owned();
    }

    /// Embedding requests received so far.
    pub fn embedding_requests(&self) -> Vec<Value> {
        self.state.lock().embedding_requests.clone()
    }

    /// Makes every embedding request fail with 503 until `set_embeddings_down(false)`.
    pub fn set_embeddings_down(&self, down: bool) {
        self.state.lock().embeddings_down = down;
    }

    /// Holds every embedding request until [`FakeLlm::release_embeddings`].
    pub fn hold_embeddings(&self) {
        self.state.lock().embeddings_held = true;
    }

    pub fn release_embeddings(&self) {
        self.state.lock().embeddings_held = false;
        self.state.embeddings_released.notify_waiters();
    }

    /// Stops the server (without waiting for open requests).
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        // Sending the stop command is synchronous; the returned future only
        // waits for completion, so it need not be polled.
        std::mem::drop(self.handle.stop(false));
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The text of a message `content`: a string, or the text parts of an array.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn messages(request: &Value) -> &[Value] {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn echo_text(request: &Value) -> String {
    let last_user = messages(request)
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    format!(
        "echo: {}",
        content_text(last_user.and_then(|m| m.get("content")))
    )
}

fn openai_error(status: StatusCode, message: &str, kind: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": { "message": message, "type": kind }
    }))
}

fn failure(status: u16, body: &str, retry_after: Option<u64>) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if let Some(secs) = retry_after {
        response.insert_header(("Retry-After", secs));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(value) => response.json(value),
        Err(_) => response.json(json!({
            "error": { "message": body, "type": "server_error" }
        })),
    }
}

fn success(request: &Value, id: u64, text: &str) -> HttpResponse {
    let (id, created, model) = answer_header(request, id);

    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-cache"))
            .body(sse_body(&id, created, &model, text));
    }

    let prompt_chars: usize = messages(request)
        .iter()
        .map(|m| content_text(m.get("content")).chars().count())
        .sum();
    let prompt_tokens = prompt_chars / 4;
    let completion_tokens = text.chars().count() / 4;
    HttpResponse::Ok().json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
}

/// An answer's id, creation time and model (echoing the request's).
fn answer_header(request: &Value, id: u64) -> (String, i64, String) {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake")
        .to_owned();
    (format!("chatcmpl-{id}"), unix_now(), model)
}

/// One server-sent event carrying a piece of the answer.
/// The first piece also names the role, as OpenAI's streams do.
fn sse_piece(id: &str, created: i64, model: &str, piece: &str, first: bool) -> String {
    let delta = if first {
        json!({ "role": "assistant", "content": piece })
    } else {
        json!({ "content": piece })
    };
    let chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": null }],
    });
    format!("data: {chunk}\n\n")
}

/// The events that finish a stream.
fn sse_finish(id: &str, created: i64, model: &str) -> String {
    let last = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }],
    });
    format!("data: {last}\n\ndata: [DONE]\n\n")
}

/// Notes in the server's state, when dropped before its stream ended, that the client closed
/// the connection (actix drops a streaming body whose connection is gone).
struct StreamWatch {
    state: web::Data<State>,
    sent: usize,
    ended: bool,
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.state.lock().abandoned_streams.push(self.sent);
        }
    }
}

/// A stream that sends `pieces` one every `delay`, then finishes or just ends.
fn paced_stream(
    state: &web::Data<State>,
    request: &Value,
    id: u64,
    pieces: Vec<String>,
    delay: Duration,
    finish: bool,
) -> HttpResponse {
    let (id, created, model) = answer_header(request, id);
    let mut events: Vec<String> = pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| sse_piece(&id, created, &model, piece, index == 0))
        .collect();
    if finish {
        events.push(sse_finish(&id, created, &model));
    }
    let watch = StreamWatch {
        state: state.clone(),
        sent: 0,
        ended: events.is_empty(),
    };
    let body = futures::stream::unfold(
        (events.into_iter(), watch),
        move |(mut events, mut watch)| async move {
            // (`ended` was set with the last event, or at the start for no events.)
            let event = events.next()?;
            if watch.sent > 0 {
                tokio::time::sleep(delay).await;
            }
            watch.sent += 1;
            // The last event is out: a client closing now has had the whole stream.
            watch.ended = events.len() == 0;
            Some((
                Ok::<_, actix_web::Error>(web::Bytes::from(event)),
                (events, watch),
            ))
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body)
}

/// The whole Server-Sent Events stream of a reply: the text in about four
/// content chunks, a final chunk with `finish_reason: "stop"`, then `[DONE]`.
fn sse_body(id: &str, created: i64, model: &str, text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let chunk_len = chars.len().div_ceil(4).max(1);
    let mut parts: Vec<String> = chars
        .chunks(chunk_len)
        .map(|chunk| chunk.iter().collect())
        .collect();
    if parts.is_empty() {
        parts.push(String::new());
    }
    let mut out: String = parts
        .iter()
        .enumerate()
        .map(|(index, part)| sse_piece(id, created, model, part, index == 0))
        .collect();
    out.push_str(&sse_finish(id, created, model));
    out
}

async fn chat_completions(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(request) => request,
        Err(_) => {
            let raw = String::from_utf8_lossy(&body).into_owned();
            let latency = {
                let mut inner = state.lock();
                inner.requests.push(Value::String(raw));
                inner.latency
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid JSON",
                "invalid_request_error",
            );
        }
    };

    if let Some(answer) = background_answer(&state, &request) {
        let id = state.lock().next_id;
        return success(&request, id, &answer);
    }

    // Record the request and pick its behaviour (None = echo).
    let (behaviour, latency, id) = {
        let mut inner = state.lock();
        inner.requests.push(request.clone());
        let behaviour = if inner.down {
            Some(LlmBehaviour::Fail {
                status: 503,
                body: "the fake LLM is down".to_owned(),
                retry_after: None,
            })
        } else {
            inner.script.pop_front().or_else(|| inner.default.clone())
        };
        let id = inner.next_id;
        inner.next_id += 1;
        (behaviour, inner.latency, id)
    };

    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    loop {
        // Created before the check, so a release in between is not missed.
        let released = state.released.notified();
        if !state.lock().held {
            break;
        }
        released.await;
    }

    match behaviour {
        None => success(&request, id, &echo_text(&request)),
        Some(LlmBehaviour::Reply(text)) => success(&request, id, &text),
        Some(LlmBehaviour::Fail {
            status,
            body,
            retry_after,
        }) => failure(status, &body, retry_after),
        Some(LlmBehaviour::Hang(duration)) => {
            tokio::time::sleep(duration).await;
            success(&request, id, &echo_text(&request))
        }
        Some(LlmBehaviour::Stream { pieces, delay }) => {
            paced_stream(&state, &request, id, pieces, delay, true)
        }
        Some(LlmBehaviour::StreamThenBreak { pieces, delay }) => {
            paced_stream(&state, &request, id, pieces, delay, false)
        }
    }
}

/// The text of a request's first (system) message.
fn system_text(request: &Value) -> String {
    content_text(messages(request).first().and_then(|m| m.get("content")))
}

/// The answer to a memory extraction or summary request, recorded apart; `None` for any
/// other request.
fn background_answer(state: &State, request: &Value) -> Option<String> {
    let system = system_text(request);
    let mut inner = state.lock();
    let answer = if system.starts_with(EXTRACTION_MARKER) {
        let default = inner.facts_default.clone();
        let answer = inner.facts_script.pop_front().unwrap_or(default);
        // `{speaker}`: the test user who speaks in the transcript ("User<id>: …").
        let transcript = content_text(messages(request).get(1).and_then(|m| m.get("content")));
        let speaker = transcript
            .lines()
            .filter_map(|line| line.split(':').next())
            .find(|name| name.starts_with("User"))
            .unwrap_or_default()
            .to_owned();
        answer.replace("{speaker}", &speaker)
    } else if system.starts_with(SUMMARY_MARKER) {
        inner.summary_reply.clone()
    } else {
        return None;
    };
    inner.background.push(request.clone());
    Some(answer)
}

/// The fake's embedding of `text`: its words (lowercase letters and digits) counted into
/// hashed buckets.
pub fn fake_embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0.0_f32; dimensions];
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = word.bytes().fold(5381_u64, |hash, byte| {
            hash.wrapping_mul(33) ^ u64::from(byte)
        });
        vector[(hash % dimensions as u64) as usize] += 1.0;
    }
    vector
}

async fn embeddings(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid JSON",
            "invalid_request_error",
        );
    };
    let down = {
        let mut inner = state.lock();
        inner.embedding_requests.push(request.clone());
        inner.embeddings_down
    };
    loop {
        let released = state.embeddings_released.notified();
        if !state.lock().embeddings_held {
            break;
        }
        released.await;
    }
    if down {
        return failure(503, "the fake embeddings are down", None);
    }
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "input must be a string or an array of strings",
                "invalid_request_error",
            );
        }
    };
    if request.get("model").and_then(Value::as_str).is_none() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "model is required",
            "invalid_request_error",
        );
    }
    // As OpenAI's text-embedding-3 models: `dimensions` shortens the vectors.
    let dimensions = request
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIMENSIONS, |asked| asked as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let embedding = fake_embedding(text, dimensions);
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": request.get("model"),
        "usage": { "prompt_tokens": 0, "total_tokens": 0 },
    }))
}
