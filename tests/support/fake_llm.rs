//! A fake OpenAI-compatible chat completions server for integration tests.
//!
//! It is a real HTTP server (actix-web, bound to `127.0.0.1:0`) serving
//! `POST /chat/completions` and `POST /v1/chat/completions`. It records every
//! request and answers according to a script of [`LlmBehaviour`]s, by default
//! with an echo of the last user message.

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
}

#[derive(Debug)]
struct State {
    inner: Mutex<Inner>,
    released: tokio::sync::Notify,
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
            }),
            released: tokio::sync::Notify::new(),
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

/// A stream that sends `pieces` one every `delay`, then finishes or just ends.
fn paced_stream(
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
    let body = futures::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first {
                tokio::time::sleep(delay).await;
            }
            Some((
                Ok::<_, actix_web::Error>(web::Bytes::from(event)),
                (events, false),
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
            paced_stream(&request, id, pieces, delay, true)
        }
        Some(LlmBehaviour::StreamThenBreak { pieces, delay }) => {
            paced_stream(&request, id, pieces, delay, false)
        }
    }
}
