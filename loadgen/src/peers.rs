//! The two outside parties vitte talks to, played by one HTTP server: the Telegram Bot API
//! (`POST /bot<token>/<method>`) and an OpenAI-compatible LLM (`POST /chat/completions`,
//! and `POST /embeddings` for long-term memory). They answer as the real services do and
//! report every reply to the [`Tracker`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::tracker::{Tracker, parse_tag};

/// How the fake LLM behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlmBehaviour {
    /// Chunks a streamed answer has (a non-streamed answer waits for all of them).
    pub chunks: u32,
    pub chunk_delay: Duration,
    /// Share of requests answered with HTTP 500 (0.0..=1.0).
    pub failure_rate: f64,
    /// Wait before a streamed answer's first chunk (a slow first token).
    pub first_token_delay: Duration,
    /// Share of streamed answers cut off midway (the connection breaks after half).
    pub cut_rate: f64,
}

impl LlmBehaviour {
    /// Answers in `chunks` pieces, `chunk_delay` apart, never failing.
    pub fn steady(chunks: u32, chunk_delay: Duration) -> LlmBehaviour {
        LlmBehaviour {
            chunks,
            chunk_delay,
            failure_rate: 0.0,
            first_token_delay: Duration::ZERO,
            cut_rate: 0.0,
        }
    }
}

/// What a fault scenario switches while the load runs.
#[derive(Debug, Default)]
pub struct Switches {
    /// The LLM answers every request with 503 (an outage).
    pub llm_down: AtomicBool,
}

struct PeerState {
    tracker: Arc<Tracker>,
    llm: LlmBehaviour,
    switches: Arc<Switches>,
    next_message_id: AtomicI64,
    /// A hash of each bot message's text as the chat shows it, so an edit to the same text
    /// is refused as Telegram does ("message is not modified").
    shown: Mutex<HashMap<i64, u64>>,
}

/// The running fake server.
pub struct Peers {
    pub address: std::net::SocketAddr,
    pub switches: Arc<Switches>,
    handle: ServerHandle,
}

impl Peers {
    /// Starts the server on a free local port with `workers` threads.
    pub fn start(
        tracker: Arc<Tracker>,
        llm: LlmBehaviour,
        workers: usize,
    ) -> std::io::Result<Peers> {
        let switches = Arc::new(Switches::default());
        let state = web::Data::new(PeerState {
            tracker,
            llm,
            switches: switches.clone(),
            next_message_id: AtomicI64::new(1),
            shown: Mutex::new(HashMap::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/chat/completions", web::post().to(chat_completion))
                .route("/embeddings", web::post().to(embeddings))
                .route("/{bot}/{method}", web::post().to(bot_api))
        })
        .workers(workers.max(1))
        // Like a typical web server (and unlike actix's 5 s default), so the generator does
        // not close idle connections just as vitte reuses them.
        .keep_alive(Duration::from_secs(75))
        // A starved peer must not answer 408 for a request it was too slow to read.
        .client_request_timeout(Duration::from_secs(60))
        .backlog(8192)
        .max_connections(200_000)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(Peers {
            address,
            switches,
            handle,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Splits `text` into `chunks` pieces on character boundaries (the last takes the rest).
pub fn split_chunks(text: &str, chunks: u32) -> Vec<String> {
    let characters: Vec<char> = text.chars().collect();
    let count = (chunks.max(1) as usize).min(characters.len().max(1));
    let size = characters.len().div_ceil(count);
    characters
        .chunks(size.max(1))
        .map(|piece| piece.iter().collect())
        .collect()
}

/// A streamed answer (Server-Sent Events, as OpenAI sends them): `chunks` deltas, one every
/// `chunk_delay`, then a final chunk and `[DONE]`.
fn stream_answer(
    state: Arc<PeerState>,
    user: Option<usize>,
    text: String,
    behaviour: LlmBehaviour,
) -> HttpResponse {
    let pieces = split_chunks(&text, behaviour.chunks);
    // A cut answer breaks off (the connection fails) after half its pieces.
    let cut_after = (behaviour.cut_rate > 0.0 && fastrand::f64() < behaviour.cut_rate)
        .then_some(pieces.len() / 2);
    let events = futures::stream::unfold((0_usize, pieces), move |(index, pieces)| {
        let state = state.clone();
        async move {
            if index > pieces.len() {
                return None;
            }
            if cut_after == Some(index) {
                state.tracker.llm_failures.fetch_add(1, Ordering::Relaxed);
                let broken = actix_web::error::ErrorInternalServerError("stream cut");
                return Some((Err(broken), (usize::MAX - 1, pieces)));
            }
            let event = if index < pieces.len() {
                if index == 0 && !behaviour.first_token_delay.is_zero() {
                    actix_rt::time::sleep(behaviour.first_token_delay).await;
                }
                if !behaviour.chunk_delay.is_zero() {
                    actix_rt::time::sleep(behaviour.chunk_delay).await;
                }
                if index == 0 {
                    if let Some(user) = user {
                        state.tracker.llm_first_chunk(user);
                    }
                }
                let chunk = json!({
                    "id": "chatcmpl-load", "object": "chat.completion.chunk",
                    "choices": [{ "index": 0, "delta": { "content": pieces[index] }, "finish_reason": null }],
                });
                format!("data: {chunk}\n\n")
            } else {
                let last = json!({
                    "id": "chatcmpl-load", "object": "chat.completion.chunk",
                    "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }],
                });
                format!("data: {last}\n\ndata: [DONE]\n\n")
            };
            Some((
                Ok::<_, actix_web::Error>(web::Bytes::from(event)),
                (index + 1, pieces),
            ))
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events)
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// What vitte appends to a reply whose stream broke off (its English text).
pub const CUT_OFF_NOTE: &str = "(the reply was cut off";

/// The LLM's whole answer to a message tagged `tag`.
pub fn full_answer(tag: &str) -> String {
    format!("{tag} Of course. The lighthouse lamp turns slowly while I think about it.")
}

fn ok(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "result": result }))
}

fn message(state: &PeerState, chat_id: i64, text: &str, id: Option<i64>) -> Value {
    let message_id = id.unwrap_or_else(|| state.next_message_id.fetch_add(1, Ordering::Relaxed));
    json!({
        "message_id": message_id,
        "date": 0,
        "chat": { "id": chat_id, "type": "private", "first_name": "Load" },
        "from": { "id": 777, "is_bot": true, "first_name": "Vitte", "username": "vitte_load_bot" },
        "text": text,
    })
}

/// The Bot API: what vitte sends to users arrives here.
async fn bot_api(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<PeerState>,
) -> HttpResponse {
    let method = request
        .match_info()
        .get("method")
        .unwrap_or("")
        .to_ascii_lowercase();
    // setWebhook arrives as multipart and needs no reading; everything else is JSON.
    let payload: Value = if method == "setwebhook" {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    match method.as_str() {
        "sendmessage" | "editmessagetext" => {
            let chat_id = payload["chat_id"].as_i64().unwrap_or(0);
            let text = payload["text"].as_str().unwrap_or("");
            let edited = method == "editmessagetext";
            let id = payload["message_id"].as_i64().filter(|_| edited);
            // What the chat shows: the text, how it is rendered, and its buttons.
            let looks = text_hash(&format!(
                "{text}\u{0}{}\u{0}{}",
                payload["parse_mode"], payload["reply_markup"]
            ));
            if let Some(id) = id {
                let mut shown = state
                    .shown
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if shown.get(&id) == Some(&looks) {
                    // Telegram refuses an edit that changes nothing (text, rendering and
                    // buttons alike); the user sees nothing.
                    return HttpResponse::BadRequest().json(json!({
                        "ok": false, "error_code": 400,
                        "description": "Bad Request: message is not modified: specified new \
                                        message content and reply markup are exactly the same \
                                        as a current content and reply markup of the message",
                    }));
                }
                shown.insert(id, looks);
            }
            // A streamed reply grows by edits; it is complete when it is the whole answer in
            // its final form. vitte edits drafts in plain text and the final text with
            // Markdown, so a draft that happens to hold the whole answer is not a second reply.
            let whole = text
                .split_whitespace()
                .next()
                .is_some_and(|tag| text.trim_end() == full_answer(tag));
            // A reply the stream broke off ends with vitte's note: final all the same.
            let cut = text.contains(CUT_OFF_NOTE);
            let draft = edited && payload.get("parse_mode").is_none();
            let complete = (whole || cut) && !draft;
            state.tracker.call_seen(text, false, cut);
            state.tracker.text_seen(chat_id, text, complete);
            let sent = message(&state, chat_id, text, id);
            if !edited {
                if let Some(new_id) = sent["message_id"].as_i64() {
                    state
                        .shown
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(new_id, looks);
                }
            }
            ok(sent)
        }
        // A reply being written, as a message draft (Bot API 9.5): checked as Telegram does,
        // never a reply's final form (the final text comes as a message).
        "sendmessagedraft" => {
            let chat_id = payload["chat_id"].as_i64().unwrap_or(0);
            let draft_id = payload["draft_id"].as_i64().unwrap_or(0);
            let text = payload["text"].as_str().unwrap_or("");
            let refusal = if chat_id <= 0 {
                Some("Bad Request: drafts can be sent only to private chats")
            } else if draft_id == 0 {
                Some("Bad Request: draft_id must be non-zero")
            } else if text.encode_utf16().count() > 4096 {
                Some("Bad Request: text is too long")
            } else {
                None
            };
            if let Some(description) = refusal {
                return HttpResponse::BadRequest().json(json!({
                    "ok": false, "error_code": 400, "description": description,
                }));
            }
            state.tracker.call_seen(text, true, false);
            if !text.is_empty() {
                state.tracker.text_seen(chat_id, text, false);
            }
            ok(json!(true))
        }
        "getme" => ok(json!({
            "id": 777, "is_bot": true, "first_name": "Vitte", "username": "vitte_load_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "sendchataction"
        | "answercallbackquery"
        | "setwebhook"
        | "deletewebhook"
        | "deletemessage"
        | "setmycommands" => ok(json!(true)),
        _ => HttpResponse::NotFound().json(json!({
            "ok": false, "error_code": 404, "description": "Not Found: method not found"
        })),
    }
}

/// Dimensions of the fake embeddings unless a request asks for others (text-embedding-3-small's).
pub const EMBEDDING_DIMENSIONS: usize = 1536;

/// The first words of the memory keeper's extraction requests.
const EXTRACTION_MARKER: &str = "You maintain the long-term memory of a companion.";

/// The fake embedding of `text`: its words counted into hashed buckets.
pub fn embedding_of(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0.0_f32; dimensions];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        let bucket = text_hash(word) % dimensions as u64;
        vector[bucket as usize] += 1.0;
    }
    vector
}

/// The embeddings endpoint: one vector per input, as OpenAI answers.
async fn embeddings(body: web::Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(
            json!({ "error": { "message": "invalid JSON", "type": "invalid_request_error" } }),
        );
    };
    let inputs: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return HttpResponse::BadRequest().json(json!({
                "error": { "message": "input must be text", "type": "invalid_request_error" }
            }));
        }
    };
    let dimensions = request["dimensions"]
        .as_u64()
        .map_or(EMBEDDING_DIMENSIONS, |asked| asked as usize);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({ "object": "embedding", "index": index, "embedding": embedding_of(text, dimensions) }))
        .collect();
    HttpResponse::Ok().json(json!({ "object": "list", "data": data, "model": request["model"] }))
}

/// The LLM: answers after `chunks × chunk_delay`, echoing the request's tag.
async fn chat_completion(body: web::Bytes, state: web::Data<PeerState>) -> HttpResponse {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            return HttpResponse::BadRequest().json(
                json!({ "error": { "message": "invalid JSON", "type": "invalid_request_error" } }),
            );
        }
    };
    if request["messages"][0]["content"]
        .as_str()
        .is_some_and(|system| system.starts_with(EXTRACTION_MARKER))
    {
        // The memory keeper's background work: nothing durable in load messages.
        return HttpResponse::Ok().json(json!({
            "id": "chatcmpl-memory",
            "object": "chat.completion",
            "created": 0,
            "model": request["model"].as_str().unwrap_or("fake"),
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "{\"facts\": []}" }, "finish_reason": "stop" }],
        }));
    }
    let last_user = request["messages"]
        .as_array()
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|message| message["role"] == "user")
                .and_then(|message| message["content"].as_str())
        })
        .unwrap_or("");
    let tagged = parse_tag(last_user);
    if let Some((user, _)) = tagged {
        state.tracker.llm_started(user);
    }
    let behaviour = state.llm;
    if state.switches.llm_down.load(Ordering::Relaxed) {
        state.tracker.llm_failures.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "error": { "message": "down for the test", "type": "server_error" } }));
    }
    if behaviour.failure_rate > 0.0 && fastrand::f64() < behaviour.failure_rate {
        state.tracker.llm_failures.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::InternalServerError()
            .json(json!({ "error": { "message": "injected failure", "type": "server_error" } }));
    }
    let tag = last_user.split_whitespace().next().unwrap_or("").to_owned();
    let text = full_answer(&tag);
    if request["stream"].as_bool() == Some(true) {
        return stream_answer(
            state.into_inner(),
            tagged.map(|(user, _)| user),
            text,
            behaviour,
        );
    }
    let total = behaviour.chunk_delay * behaviour.chunks;
    if !total.is_zero() {
        actix_rt::time::sleep(total).await;
    }
    if let Some((user, _)) = tagged {
        state.tracker.llm_first_chunk(user);
    }
    HttpResponse::Ok().json(json!({
        "id": "chatcmpl-load",
        "object": "chat.completion",
        "created": 0,
        "model": request["model"].as_str().unwrap_or("fake"),
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_streaming_request_gets_its_chunks_as_server_sent_events() {
        let tracker = Arc::new(Tracker::new(4, 100));
        let behaviour = LlmBehaviour::steady(5, Duration::from_millis(10));
        let peers = Peers::start(tracker.clone(), behaviour, 1).expect("peers start");
        let body = reqwest::Client::new()
            .post(format!("{}/chat/completions", peers.url()))
            .json(&json!({
                "model": "m",
                "stream": true,
                "messages": [{ "role": "user", "content": "t3.1 hello" }],
            }))
            .send()
            .await
            .expect("answer")
            .text()
            .await
            .expect("body");
        let deltas: Vec<String> = body
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .filter_map(|chunk| {
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(deltas.len(), 5);
        assert_eq!(deltas.concat(), full_answer("t3.1"));
        assert!(body.trim_end().ends_with("data: [DONE]"));
        assert_eq!(tracker.llm_requests.load(Ordering::SeqCst), 1);
        peers.stop().await;
    }

    #[test]
    fn an_answer_splits_into_the_asked_number_of_chunks() {
        let pieces = split_chunks("t1.2 Of course, captain.", 4);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), "t1.2 Of course, captain.");
        assert_eq!(split_chunks("hi", 20).concat(), "hi");
        assert_eq!(split_chunks("hi", 20).len(), 2);
    }
}
