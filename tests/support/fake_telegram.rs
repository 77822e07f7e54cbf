//! A fake Telegram Bot API server for integration tests.
//!
//! It is a real HTTP server (actix-web, bound to `127.0.0.1:0`) that answers
//! `POST /bot{token}/{method}` the way `api.telegram.org` does, records every
//! call, and serves queued updates to `getUpdates` long polling.
//!
//! It keeps each chat as a user sees it: the bot's messages with their current
//! text and buttons after every `editMessageText`, and the history of edits (with
//! their times, for the throttling of streamed replies). Like Telegram it refuses
//! an edit that changes nothing ("message is not modified") and can be told to
//! answer edits with 429 and `retry_after`.
//!
//! Message drafts (`sendMessageDraft`, Bot API 9.5 and 10.3) are checked as Telegram does
//! (private chats only, a non-zero `draft_id`, text of at most 4096 characters, booleans
//! where booleans go), recorded with their times, and shown as the chat's current draft
//! until the bot sends a message into the chat, which replaces it. The fake can also play
//! a server without the method (404, as for any method it does not know), and answer drafts
//! with 429.
//!
//! For the outbox's tests it records each call's time (on a clock the test may share with
//! the app, so a broadcast runs in controlled time), and answers a chat's next calls as
//! Telegram does under flood control (429 with `parameters.retry_after`), for a user who
//! blocked the bot or deleted their account (403), or with a 400 refusal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Id of the fake bot user returned by `getMe`.
#[allow(dead_code)]
pub const BOT_ID: i64 = 777_000_111;
/// Username of the fake bot user returned by `getMe`.
#[allow(dead_code)]
pub const BOT_USERNAME: &str = "vitte_test_bot";

/// Longest a `getUpdates` call waits, whatever `timeout` it asks for.
const MAX_POLL_WAIT: Duration = Duration::from_secs(5);
/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Telegram's limit on the text of a message, in UTF-16 code units.
const MAX_TEXT_UTF16: usize = 4096;

/// Methods the fake knows, in their canonical (lowerCamelCase) spelling.
const KNOWN_METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "setMyCommands",
    "sendMessage",
    "sendMessageDraft",
    "editMessageText",
    "sendChatAction",
    "answerCallbackQuery",
    "deleteMessage",
    "sendInvoice",
    "createInvoiceLink",
    "answerPreCheckoutQuery",
    "refundStarPayment",
    "editUserStarSubscription",
];

/// One call the bot made to the fake server.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// Canonical lowerCamelCase method name, e.g. `"sendMessage"`.
    pub method: String,
    /// The JSON body of the call (`{}` when the body was empty).
    pub body: Value,
    /// When it arrived, in Unix milliseconds of the fake's clock (see
    /// [`FakeTelegram::use_clock`]).
    pub at: i64,
}

/// The placeholders a streamed reply starts as: not (yet) a text the user reads.
pub const PLACEHOLDERS: [&str; 2] = ["… typing", "… печатает"];

/// One accepted edit of a message.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Edit {
    pub message_id: i64,
    pub text: String,
    pub markdown: bool,
    pub at: std::time::Instant,
}

/// One accepted `sendMessageDraft` call.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Draft {
    pub draft_id: i64,
    pub text: String,
    pub can_stop: bool,
    pub keep_on_stop: bool,
    pub at: std::time::Instant,
}

/// A bot message as the chat shows it now.
#[derive(Debug, Clone)]
struct ChatMessage {
    chat_id: i64,
    message_id: i64,
    text: String,
    markup: Option<Value>,
    parse_mode: Option<String>,
}

#[derive(Debug)]
struct Inner {
    calls: Vec<RecordedCall>,
    /// The bot's messages, in the order they were sent, as they read now.
    messages: Vec<ChatMessage>,
    edits: Vec<(i64, Edit)>,
    /// Edits still to be answered with 429 and this `retry_after` (seconds).
    throttled_edits: usize,
    /// Edits still to be refused with "message can't be edited".
    refused_edits: usize,
    /// Chats whose user blocked the bot (or deleted their account): every call to them
    /// gets 403 with this description.
    blocked_chats: std::collections::HashMap<i64, &'static str>,
    /// Answers for a chat's next calls, before anything else: (HTTP status, description,
    /// retry_after seconds).
    scripted: std::collections::HashMap<i64, VecDeque<(u16, String, Option<u64>)>>,
    /// Where call times come from; the system's clock when `None`.
    clock: Option<SharedClock>,
    throttle_seconds: u64,
    /// Pending updates, ordered by `update_id`.
    updates: VecDeque<Value>,
    reject_bad_markdown: bool,
    webhook: Option<(String, Option<String>)>,
    next_message_id: i64,
    /// Pre-checkout queries sent to the bot, with the answer once given.
    pre_checkouts: std::collections::HashMap<String, Option<Value>>,
    /// Stars charges Telegram made: who paid, and whether refunded / a subscription
    /// (canceled by the bot or not).
    charges: std::collections::HashMap<String, FakeCharge>,
    /// The invoices the bot made (`sendInvoice` and `createInvoiceLink` bodies).
    invoices: Vec<Value>,
    /// Accepted `sendMessage` / `editMessageText` calls: (time, chat, method).
    delivered: Vec<(i64, i64, String)>,
    /// Accepted drafts, per chat, in order.
    drafts: Vec<(i64, Draft)>,
    /// The draft each chat shows now (until a message from the bot replaces it).
    visible_drafts: std::collections::HashMap<i64, Draft>,
    /// Plays a Bot API server without `sendMessageDraft`.
    drafts_unknown: bool,
    /// Drafts still to be answered with 429 and `throttle_seconds`.
    throttled_drafts: usize,
    /// Chats whose `sendMessage` calls wait until released (a message on its way).
    held_sends: std::collections::HashSet<i64>,
}

/// The clock call times are read from (shared with the app under test).
#[derive(Clone)]
struct SharedClock(Arc<dyn vitte_actors::ports::Clock>);

impl std::fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedClock")
    }
}

/// A Stars charge as the fake Telegram knows it.
#[derive(Debug, Clone, Default)]
pub struct FakeCharge {
    pub user_id: i64,
    pub refunded: bool,
    pub subscription: bool,
    pub canceled: bool,
}

#[derive(Debug)]
struct State {
    inner: Mutex<Inner>,
    new_update: Notify,
    /// `sendMessage` calls to the chats in `Inner::held_sends` wait for this.
    sends_released: Notify,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the data usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_millis(&self) -> i64 {
        let clock = self.lock().clock.clone();
        match clock {
            Some(SharedClock(clock)) => clock.now_millis(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }
}

/// A running fake Telegram Bot API server.
#[allow(dead_code)]
pub struct FakeTelegram {
    state: Arc<State>,
    handle: ServerHandle,
    port: u16,
}

#[allow(dead_code)]
impl FakeTelegram {
    /// Starts the server on a free port of 127.0.0.1. Must be called inside a
    /// running actix system (e.g. in an `#[actix_rt::test]`).
    pub async fn start() -> FakeTelegram {
        FakeTelegram::start_on(0).await
    }

    /// Starts on a given local port (0 picks a free one).
    pub async fn start_on(port: u16) -> FakeTelegram {
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                calls: Vec::new(),
                messages: Vec::new(),
                edits: Vec::new(),
                throttled_edits: 0,
                refused_edits: 0,
                blocked_chats: std::collections::HashMap::new(),
                scripted: std::collections::HashMap::new(),
                clock: None,
                throttle_seconds: 1,
                updates: VecDeque::new(),
                reject_bad_markdown: true,
                webhook: None,
                next_message_id: 1,
                pre_checkouts: std::collections::HashMap::new(),
                charges: std::collections::HashMap::new(),
                invoices: Vec::new(),
                delivered: Vec::new(),
                drafts: Vec::new(),
                visible_drafts: std::collections::HashMap::new(),
                drafts_unknown: false,
                throttled_drafts: 0,
                held_sends: std::collections::HashSet::new(),
            }),
            new_update: Notify::new(),
            sends_released: Notify::new(),
        });

        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .expect("fake telegram: bind a local port");
        let port = listener
            .local_addr()
            .expect("fake telegram: local address of the listener")
            .port();

        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .route("/{bot}/{method}", web::post().to(handle_call))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("fake telegram: listen")
        .run();
        let handle = server.handle();
        actix_rt::spawn(async move {
            let _ = server.await;
        });

        FakeTelegram {
            state,
            handle,
            port,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every call received, in order of arrival (rejected ones included).
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state.lock().calls.clone()
    }

    /// The calls to `method` (compared case-insensitively), in order.
    pub fn calls_to(&self, method: &str) -> Vec<RecordedCall> {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|call| call.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    /// The texts of the bot's messages in `chat_id` as they read now (after edits), in the
    /// order they were sent; a message still showing a placeholder is left out.
    pub fn sent_texts(&self, chat_id: i64) -> Vec<String> {
        self.sent_messages(chat_id)
            .iter()
            .map(|message| {
                message
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// The bot's messages in `chat_id` as they are now: `message_id`, `text`,
    /// `reply_markup` (absent without buttons) and `parse_mode`; placeholders left out.
    pub fn sent_messages(&self, chat_id: i64) -> Vec<Value> {
        self.state
            .lock()
            .messages
            .iter()
            .filter(|message| {
                message.chat_id == chat_id && !PLACEHOLDERS.contains(&message.text.as_str())
            })
            .map(|message| {
                let mut value = json!({
                    "message_id": message.message_id,
                    "text": message.text,
                    "parse_mode": message.parse_mode,
                });
                if let Some(markup) = &message.markup {
                    value["reply_markup"] = markup.clone();
                }
                value
            })
            .collect()
    }

    /// Every accepted edit of a message in `chat_id`, in order.
    pub fn edits(&self, chat_id: i64) -> Vec<Edit> {
        self.state
            .lock()
            .edits
            .iter()
            .filter(|(chat, _)| *chat == chat_id)
            .map(|(_, edit)| edit.clone())
            .collect()
    }

    /// Refuses the next `count` edits with 400 "message can't be edited" (as for a message
    /// the user deleted).
    pub fn refuse_edits(&self, count: usize) {
        self.state.lock().refused_edits = count;
    }

    /// The user of `chat_id` blocks the bot: from now on every call to that chat is answered
    /// 403 "Forbidden: bot was blocked by the user", as Telegram does.
    pub fn block_chat(&self, chat_id: i64) {
        self.state
            .lock()
            .blocked_chats
            .insert(chat_id, "Forbidden: bot was blocked by the user");
    }

    /// The user of `chat_id` deleted their account: 403 "Forbidden: user is deactivated".
    pub fn deactivate_chat(&self, chat_id: i64) {
        self.state
            .lock()
            .blocked_chats
            .insert(chat_id, "Forbidden: user is deactivated");
    }

    /// The user unblocked the bot.
    pub fn unblock_chat(&self, chat_id: i64) {
        self.state.lock().blocked_chats.remove(&chat_id);
    }

    /// The next `count` calls to `chat_id` are answered 429 Too Many Requests with
    /// `parameters.retry_after` = `retry_after_seconds`, as Telegram's flood control does.
    pub fn flood_chat(&self, chat_id: i64, count: usize, retry_after_seconds: u64) {
        let mut inner = self.state.lock();
        let script = inner.scripted.entry(chat_id).or_default();
        for _ in 0..count {
            script.push_back((
                429,
                format!("Too Many Requests: retry after {retry_after_seconds}"),
                Some(retry_after_seconds),
            ));
        }
    }

    /// The next call to `chat_id` is refused with 400 and `description`.
    pub fn refuse_chat(&self, chat_id: i64, description: &str) {
        self.state
            .lock()
            .scripted
            .entry(chat_id)
            .or_default()
            .push_back((400, description.to_owned(), None));
    }

    /// Call times come from `clock` from now on (the app's manual clock: then a test reads
    /// the send schedule in the app's time).
    pub fn use_clock(&self, clock: Arc<dyn vitte_actors::ports::Clock>) {
        self.state.lock().clock = Some(SharedClock(clock));
    }

    /// The bot's successful message calls (`sendMessage`, `editMessageText`) and their
    /// times, as (time, chat, method), in order of arrival; refused ones are in [`calls`].
    ///
    /// [`calls`]: FakeTelegram::calls
    pub fn message_times(&self) -> Vec<(i64, i64, String)> {
        self.state.lock().delivered.clone()
    }

    /// Every accepted message draft in `chat_id`, in order.
    pub fn drafts(&self, chat_id: i64) -> Vec<Draft> {
        self.state
            .lock()
            .drafts
            .iter()
            .filter(|(chat, _)| *chat == chat_id)
            .map(|(_, draft)| draft.clone())
            .collect()
    }

    /// The draft `chat_id` shows now, if any (a message from the bot replaces it).
    pub fn visible_draft(&self, chat_id: i64) -> Option<Draft> {
        self.state.lock().visible_drafts.get(&chat_id).cloned()
    }

    /// Plays a self-hosted or older Bot API server: `sendMessageDraft` is answered 404
    /// "Not Found", as any method the server does not know.
    pub fn forget_drafts(&self) {
        self.state.lock().drafts_unknown = true;
    }

    /// From now on `sendMessage` calls to `chat_id` wait (and are applied) only once
    /// [`FakeTelegram::release_sends`] is called: a message caught on its way.
    pub fn hold_sends(&self, chat_id: i64) {
        self.state.lock().held_sends.insert(chat_id);
    }

    /// Lets held `sendMessage` calls go on (applied even if their caller is gone).
    pub fn release_sends(&self) {
        self.state.lock().held_sends.clear();
        self.state.sends_released.notify_waiters();
    }

    /// Answers the next `count` drafts with 429 Too Many Requests and `retry_after`.
    pub fn throttle_drafts(&self, count: usize, retry_after_seconds: u64) {
        let mut inner = self.state.lock();
        inner.throttled_drafts = count;
        inner.throttle_seconds = retry_after_seconds;
    }

    /// Answers the next `count` edits with 429 Too Many Requests and `retry_after`.
    pub fn throttle_edits(&self, count: usize, retry_after_seconds: u64) {
        let mut inner = self.state.lock();
        inner.throttled_edits = count;
        inner.throttle_seconds = retry_after_seconds;
    }

    /// Queues an update for `getUpdates`. `update` must carry `"update_id"`.
    pub fn push_update(&self, update: Value) {
        assert!(
            update.get("update_id").and_then(Value::as_i64).is_some(),
            "fake telegram: an update must carry a numeric \"update_id\": {update}"
        );
        {
            let mut inner = self.state.lock();
            inner.updates.push_back(update);
            inner.updates.make_contiguous().sort_by_key(update_id);
        }
        self.state.new_update.notify_waiters();
    }

    /// Whether `sendMessage`/`editMessageText` in Markdown/MarkdownV2 with an
    /// odd number of `*`, `_` or `` ` `` is rejected (default: true).
    pub fn set_reject_bad_markdown(&self, on: bool) {
        self.state.lock().reject_bad_markdown = on;
    }

    /// The webhook URL set by `setWebhook` and its secret token, if any.
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.state.lock().webhook.clone()
    }

    /// Telegram is about to send the bot the pre-checkout query `query_id` (only known
    /// queries can be answered, once).
    pub fn open_pre_checkout(&self, query_id: &str) {
        self.state
            .lock()
            .pre_checkouts
            .insert(query_id.to_owned(), None);
    }

    /// The bot's answer to a pre-checkout query, once given.
    pub fn pre_checkout_answer(&self, query_id: &str) -> Option<Value> {
        self.state
            .lock()
            .pre_checkouts
            .get(query_id)
            .cloned()
            .flatten()
    }

    /// Telegram charged `user_id` (before it tells the bot with `successful_payment`).
    pub fn charge(&self, charge_id: &str, user_id: i64, subscription: bool) {
        self.state.lock().charges.insert(
            charge_id.to_owned(),
            FakeCharge {
                user_id,
                subscription,
                ..FakeCharge::default()
            },
        );
    }

    /// A charge as Telegram knows it now.
    pub fn charge_state(&self, charge_id: &str) -> Option<FakeCharge> {
        self.state.lock().charges.get(charge_id).cloned()
    }

    /// The invoices the bot made, oldest first.
    pub fn invoices(&self) -> Vec<Value> {
        self.state.lock().invoices.clone()
    }

    /// Stops the server (without waiting for open requests).
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        // Sending the stop command is synchronous; the returned future only
        // waits for completion, so it need not be polled.
        std::mem::drop(self.handle.stop(false));
    }
}

/// A private-chat text message update, as the Bot API sends it. A text
/// starting with `/` gets a `bot_command` entity for its first word.
#[allow(dead_code)]
pub fn text_update(
    update_id: i64,
    user_id: i64,
    first_name: &str,
    language_code: &str,
    text: &str,
) -> Value {
    let mut message = json!({
        "message_id": update_id + 100_000,
        "date": unix_now(),
        "chat": { "id": user_id, "type": "private", "first_name": first_name },
        "from": user_json(user_id, first_name, language_code),
        "text": text,
    });
    if text.starts_with('/') {
        let command = text.split_whitespace().next().unwrap_or(text);
        message["entities"] = json!([{
            "type": "bot_command",
            "offset": 0,
            "length": command.encode_utf16().count(),
        }]);
    }
    json!({ "update_id": update_id, "message": message })
}

/// A `stopped_message_generation` update (Bot API 10.3): the user of private chat
/// `user_id` pressed the stop button of draft `draft_id`.
#[allow(dead_code)]
pub fn stopped_generation_update(update_id: i64, user_id: i64, draft_id: i64) -> Value {
    json!({
        "update_id": update_id,
        "stopped_message_generation": {
            "chat": { "id": user_id, "type": "private", "first_name": format!("User{user_id}") },
            "from": user_json(user_id, &format!("User{user_id}"), "en"),
            "draft_id": draft_id,
        }
    })
}

/// A callback query update (an inline button pressed under a bot message in
/// the private chat with `user_id`), as the Bot API sends it.
#[allow(dead_code)]
pub fn callback_update(
    update_id: i64,
    user_id: i64,
    first_name: &str,
    language_code: &str,
    data: &str,
) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": format!("cb{update_id}"),
            "from": user_json(user_id, first_name, language_code),
            "chat_instance": format!("ci{user_id}"),
            "data": data,
            "message": {
                "message_id": 1,
                // A non-zero date: teloxide treats date 0 as an inaccessible message.
                "date": unix_now(),
                "chat": { "id": user_id, "type": "private", "first_name": first_name },
                "from": bot_user_short(),
                "text": "…",
            },
        },
    })
}

fn user_json(user_id: i64, first_name: &str, language_code: &str) -> Value {
    json!({
        "id": user_id,
        "is_bot": false,
        "first_name": first_name,
        "language_code": language_code,
    })
}

fn bot_user_short() -> Value {
    json!({
        "id": BOT_ID,
        "is_bot": true,
        "first_name": "Vitte Test",
        "username": BOT_USERNAME,
    })
}

fn bot_me() -> Value {
    json!({
        "id": BOT_ID,
        "is_bot": true,
        "first_name": "Vitte Test",
        "username": BOT_USERNAME,
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn update_id(update: &Value) -> i64 {
    update.get("update_id").and_then(Value::as_i64).unwrap_or(0)
}

/// The canonical lowerCamelCase spelling of a method name.
fn canonical_method(method: &str) -> String {
    if let Some(known) = KNOWN_METHODS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(method))
    {
        return (*known).to_owned();
    }
    let mut chars = method.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn chat_id_of(body: &Value) -> Option<i64> {
    match body.get("chat_id")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn ok(result: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "result": result }))
}

/// Telegram's flood control answer: 429 with `parameters.retry_after`.
fn too_many_requests(seconds: u64) -> HttpResponse {
    HttpResponse::build(StatusCode::TOO_MANY_REQUESTS).json(json!({
        "ok": false,
        "error_code": 429,
        "description": format!("Too Many Requests: retry after {seconds}"),
        "parameters": { "retry_after": seconds },
    }))
}

fn error(code: u16, description: &str) -> HttpResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(json!({
        "ok": false,
        "error_code": code,
        "description": description,
    }))
}

async fn handle_call(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (bot, method) = path.into_inner();
    let method = canonical_method(&method);

    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    // teloxide sends some methods (e.g. setWebhook) as multipart/form-data.
    let parsed = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        parse_multipart(content_type, &body)
    } else if body.iter().all(u8::is_ascii_whitespace) {
        Some(json!({}))
    } else {
        serde_json::from_slice(&body).ok()
    };
    let (body, body_ok) = match parsed {
        Some(value) => (value, true),
        None => (
            Value::String(String::from_utf8_lossy(&body).into_owned()),
            false,
        ),
    };

    let at = state.now_millis();
    state.lock().calls.push(RecordedCall {
        method: method.clone(),
        body: body.clone(),
        at,
    });

    if !bot.starts_with("bot") {
        return error(404, "Not Found");
    }
    if !body_ok {
        return error(400, "Bad Request: can't parse request body");
    }
    if let Some(chat) = chat_id_of(&body) {
        let mut inner = state.lock();
        if let Some(description) = inner.blocked_chats.get(&chat) {
            return error(403, description);
        }
        let scripted = inner.scripted.get_mut(&chat).and_then(VecDeque::pop_front);
        if let Some((code, description, retry_after)) = scripted {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            let mut answer = json!({
                "ok": false,
                "error_code": code,
                "description": description,
            });
            if let Some(seconds) = retry_after {
                answer["parameters"] = json!({ "retry_after": seconds });
            }
            return HttpResponse::build(status).json(answer);
        }
    }

    match method.as_str() {
        "getMe" => ok(bot_me()),
        "getUpdates" => get_updates(&state, &body).await,
        "getWebhookInfo" => {
            let inner = state.lock();
            let url = inner
                .webhook
                .as_ref()
                .map(|(url, _)| url.clone())
                .unwrap_or_default();
            ok(json!({
                "url": url,
                "has_custom_certificate": false,
                "pending_update_count": inner.updates.len(),
            }))
        }
        "setWebhook" => {
            let url = body
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let secret = body
                .get("secret_token")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut inner = state.lock();
            if drop_pending(&body) {
                inner.updates.clear();
            }
            // Like Telegram, an empty URL removes the webhook.
            inner.webhook = (!url.is_empty()).then_some((url, secret));
            ok(json!(true))
        }
        "deleteWebhook" => {
            let mut inner = state.lock();
            if drop_pending(&body) {
                inner.updates.clear();
            }
            inner.webhook = None;
            ok(json!(true))
        }
        "sendMessage" | "editMessageText" => {
            if method == "sendMessage" {
                let chat = chat_id_of(&body).unwrap_or(0);
                loop {
                    let released = state.sends_released.notified();
                    if !state.lock().held_sends.contains(&chat) {
                        break;
                    }
                    released.await;
                }
            }
            let response = if method == "sendMessage" {
                send_message(&state, &body)
            } else {
                edit_message_text(&state, &body)
            };
            if response.status().is_success() {
                let chat = chat_id_of(&body).unwrap_or(0);
                state.lock().delivered.push((at, chat, method.clone()));
            }
            response
        }
        "sendMessageDraft" => send_message_draft(&state, &body),
        "deleteMessage" => delete_message(&state, &body),
        "sendChatAction" | "answerCallbackQuery" | "setMyCommands" => ok(json!(true)),
        "sendInvoice" => send_invoice(&state, &body),
        "createInvoiceLink" => create_invoice_link(&state, &body),
        "answerPreCheckoutQuery" => answer_pre_checkout(&state, &body),
        "refundStarPayment" => refund_star_payment(&state, &body),
        "editUserStarSubscription" => edit_star_subscription(&state, &body),
        _ => error(404, "Not Found: method not found"),
    }
}

fn drop_pending(body: &Value) -> bool {
    match body.get("drop_pending_updates") {
        Some(Value::Bool(on)) => *on,
        Some(Value::String(on)) => on == "true",
        _ => false,
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The fields of a multipart/form-data body as a JSON object: text values
/// become strings (or JSON, when they are a JSON object or array), file
/// parts become their file name.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Value> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|param| param.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();

    let mut fields = serde_json::Map::new();
    let start = find_bytes(body, delimiter)?;
    let mut rest = &body[start + delimiter.len()..];
    // Each part runs up to the next delimiter; "--" after one closes the body.
    while !rest.starts_with(b"--") {
        let end = find_bytes(rest, delimiter)?;
        let part = &rest[..end];
        rest = &rest[end + delimiter.len()..];

        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let header_end = find_bytes(part, b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..header_end]);
        let content = &part[header_end + 4..];

        let disposition = headers.lines().find(|line| {
            line.to_ascii_lowercase()
                .starts_with("content-disposition:")
        })?;
        let param = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(key))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let name = param("name=")?;
        let value = match param("filename=") {
            Some(filename) => Value::String(filename),
            None => {
                let text = String::from_utf8_lossy(content).into_owned();
                let looks_json = text.starts_with('{') || text.starts_with('[');
                match serde_json::from_str::<Value>(&text) {
                    Ok(parsed) if looks_json => parsed,
                    _ => Value::String(text),
                }
            }
        };
        fields.insert(name, value);
    }
    Some(Value::Object(fields))
}

async fn get_updates(state: &State, body: &Value) -> HttpResponse {
    let offset = body.get("offset").and_then(Value::as_i64);
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(100, |limit| limit.clamp(1, 100));
    let limit = usize::try_from(limit).unwrap_or(100);
    let wait = Duration::from_secs(body.get("timeout").and_then(Value::as_u64).unwrap_or(0))
        .min(MAX_POLL_WAIT);
    let deadline = tokio::time::Instant::now() + wait;

    loop {
        // Created before looking at the queue so that a push_update between
        // the check and the wait is not missed.
        let notified = state.new_update.notified();
        let ready: Vec<Value> = {
            let mut inner = state.lock();
            if inner.webhook.is_some() {
                return error(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; \
                     use deleteWebhook to delete the webhook first",
                );
            }
            match offset {
                // A negative offset keeps only the last -offset updates.
                Some(offset) if offset < 0 => {
                    let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
                    let excess = inner.updates.len().saturating_sub(keep);
                    inner.updates.drain(..excess);
                }
                // Updates below the offset are confirmed.
                Some(offset) => inner.updates.retain(|u| update_id(u) >= offset),
                None => {}
            }
            // Like Telegram, updates of kinds not in `allowed_updates` (when given) are not
            // delivered to this bot at all.
            if let Some(allowed) = body.get("allowed_updates").and_then(Value::as_array) {
                inner.updates.retain(|update| {
                    update.as_object().is_some_and(|fields| {
                        fields
                            .keys()
                            .filter(|key| *key != "update_id")
                            .all(|kind| allowed.iter().any(|name| name.as_str() == Some(kind)))
                    })
                });
            }
            inner.updates.iter().take(limit).cloned().collect()
        };
        if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
            return ok(Value::Array(ready));
        }
        // On timeout the next iteration returns whatever is there.
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Telegram's checks on a message text; `Err` is the error response.
fn check_text(state: &State, body: &Value) -> Result<String, HttpResponse> {
    let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
    if text.is_empty() {
        return Err(error(400, "Bad Request: message text is empty"));
    }
    if text.encode_utf16().count() > MAX_TEXT_UTF16 {
        return Err(error(400, "Bad Request: message is too long"));
    }
    let markdown = body
        .get("parse_mode")
        .and_then(Value::as_str)
        .is_some_and(|mode| {
            mode.eq_ignore_ascii_case("Markdown") || mode.eq_ignore_ascii_case("MarkdownV2")
        });
    let reject = state.lock().reject_bad_markdown;
    if reject && markdown {
        let odd = |c: char| text.chars().filter(|&x| x == c).count() % 2 == 1;
        if odd('*') || odd('_') || odd('`') {
            return Err(error(
                400,
                "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0",
            ));
        }
    }
    Ok(text.to_owned())
}

/// A Message JSON from the bot to `chat_id`.
fn bot_message(message_id: i64, chat_id: i64, text: &str, body: &Value) -> Value {
    let mut message = json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": { "id": chat_id, "type": "private", "first_name": "User" },
        "from": bot_user_short(),
        "text": text,
    });
    // A Message only ever carries an inline keyboard; echoing a reply
    // keyboard back would not deserialize in teloxide.
    if let Some(markup) = body
        .get("reply_markup")
        .filter(|markup| markup.get("inline_keyboard").is_some())
    {
        message["reply_markup"] = markup.clone();
    }
    message
}

fn send_message(state: &State, body: &Value) -> HttpResponse {
    let Some(chat_id) = chat_id_of(body) else {
        return error(400, "Bad Request: chat_id is empty");
    };
    let text = match check_text(state, body) {
        Ok(text) => text,
        Err(response) => return response,
    };
    let message_id = {
        let mut inner = state.lock();
        // The bot's message replaces the draft the chat was showing.
        inner.visible_drafts.remove(&chat_id);
        let id = inner.next_message_id;
        inner.next_message_id += 1;
        inner.messages.push(ChatMessage {
            chat_id,
            message_id: id,
            text: text.clone(),
            markup: inline_markup(body),
            parse_mode: parse_mode(body),
        });
        id
    };
    ok(bot_message(message_id, chat_id, &text, body))
}

/// `sendMessageDraft` as Telegram documents it: `chat_id` of a private chat, a non-zero
/// `draft_id` (calls with the same one animate the change), `text` of at most 4096
/// characters (empty: "Thinking…"), `can_stop` / `keep_on_stop` booleans. Returns True.
fn send_message_draft(state: &State, body: &Value) -> HttpResponse {
    let mut inner = state.lock();
    if inner.drafts_unknown {
        return error(404, "Not Found");
    }
    let Some(chat_id) = chat_id_of(body) else {
        return error(400, "Bad Request: chat_id is empty");
    };
    // Private chats are the users' own ids; groups and channels are negative.
    if chat_id <= 0 {
        return error(400, "Bad Request: drafts can be sent only to private chats");
    }
    let draft_id = match body.get("draft_id") {
        Some(Value::Number(number)) => number.as_i64().unwrap_or(0),
        Some(_) => return error(400, "Bad Request: draft_id must be an Integer"),
        None => return error(400, "Bad Request: draft_id is required"),
    };
    if draft_id == 0 {
        return error(400, "Bad Request: draft_id must be non-zero");
    }
    let text = match body.get("text") {
        Some(Value::String(text)) => text.clone(),
        Some(_) => return error(400, "Bad Request: text must be a String"),
        None => String::new(),
    };
    if text.encode_utf16().count() > MAX_TEXT_UTF16 {
        return error(400, "Bad Request: text is too long");
    }
    let flag = |key: &str| match body.get(key) {
        None => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(error(400, &format!("Bad Request: {key} must be a Boolean"))),
    };
    let (can_stop, keep_on_stop) = match (flag("can_stop"), flag("keep_on_stop")) {
        (Ok(can_stop), Ok(keep_on_stop)) => (can_stop, keep_on_stop),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    if inner.throttled_drafts > 0 {
        inner.throttled_drafts -= 1;
        let seconds = inner.throttle_seconds;
        return too_many_requests(seconds);
    }
    let draft = Draft {
        draft_id,
        text,
        can_stop,
        keep_on_stop,
        at: std::time::Instant::now(),
    };
    inner.visible_drafts.insert(chat_id, draft.clone());
    inner.drafts.push((chat_id, draft));
    ok(json!(true))
}

fn inline_markup(body: &Value) -> Option<Value> {
    body.get("reply_markup")
        .filter(|markup| markup.get("inline_keyboard").is_some())
        .cloned()
}

fn parse_mode(body: &Value) -> Option<String> {
    body.get("parse_mode")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn delete_message(state: &State, body: &Value) -> HttpResponse {
    let (Some(chat_id), Some(message_id)) = (
        chat_id_of(body),
        body.get("message_id").and_then(Value::as_i64),
    ) else {
        return error(400, "Bad Request: message identifier is not specified");
    };
    let mut inner = state.lock();
    let before = inner.messages.len();
    inner
        .messages
        .retain(|message| !(message.chat_id == chat_id && message.message_id == message_id));
    if inner.messages.len() == before {
        return error(400, "Bad Request: message to delete not found");
    }
    ok(json!(true))
}

fn edit_message_text(state: &State, body: &Value) -> HttpResponse {
    let text = match check_text(state, body) {
        Ok(text) => text,
        Err(response) => return response,
    };
    if body.get("inline_message_id").is_some() {
        // Editing an inline message returns True.
        return ok(json!(true));
    }
    let Some(chat_id) = chat_id_of(body) else {
        return error(400, "Bad Request: chat_id is empty");
    };
    let Some(message_id) = body.get("message_id").and_then(Value::as_i64) else {
        return error(400, "Bad Request: message identifier is not specified");
    };
    {
        let mut inner = state.lock();
        if inner.throttled_edits > 0 {
            inner.throttled_edits -= 1;
            let seconds = inner.throttle_seconds;
            return too_many_requests(seconds);
        }
        if inner.refused_edits > 0 {
            inner.refused_edits -= 1;
            return error(400, "Bad Request: message can't be edited");
        }
        let markup = inline_markup(body);
        let Some(shown) = inner
            .messages
            .iter_mut()
            .find(|message| message.chat_id == chat_id && message.message_id == message_id)
        else {
            return error(400, "Bad Request: message to edit not found");
        };
        if shown.text == text && shown.markup == markup {
            return error(
                400,
                "Bad Request: message is not modified: specified new message content and reply \
                 markup are exactly the same as a current content and reply markup of the message",
            );
        }
        shown.text = text.clone();
        shown.markup = markup;
        shown.parse_mode = parse_mode(body);
        let edit = Edit {
            message_id,
            text: text.clone(),
            markdown: shown.parse_mode.is_some(),
            at: std::time::Instant::now(),
        };
        inner.edits.push((chat_id, edit));
    }
    let mut message = bot_message(message_id, chat_id, &text, body);
    message["edit_date"] = json!(unix_now());
    ok(message)
}

/// Telegram's checks on an invoice (`sendInvoice`, `createInvoiceLink`) in Stars: title
/// 1-32 characters, description 1-255, payload 1-128 bytes, currency `XTR` with exactly one
/// price, and an empty (or absent) provider token.
fn check_invoice(body: &Value) -> Result<(), HttpResponse> {
    let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
    let chars = |key: &str| text(key).chars().count();
    if !(1..=32).contains(&chars("title")) {
        return Err(error(400, "Bad Request: INVOICE_TITLE_INVALID"));
    }
    if !(1..=255).contains(&chars("description")) {
        return Err(error(400, "Bad Request: INVOICE_DESCRIPTION_INVALID"));
    }
    if !(1..=128).contains(&text("payload").len()) {
        return Err(error(400, "Bad Request: INVOICE_PAYLOAD_INVALID"));
    }
    if text("currency") != "XTR" {
        return Err(error(400, "Bad Request: CURRENCY_INVALID"));
    }
    if !text("provider_token").is_empty() {
        return Err(error(400, "Bad Request: PAYMENT_PROVIDER_INVALID"));
    }
    let prices = body.get("prices").and_then(Value::as_array);
    let amount = match prices.map(Vec::as_slice) {
        Some([price]) => price.get("amount").and_then(Value::as_i64).unwrap_or(0),
        _ => return Err(error(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")),
    };
    if !(1..=10_000).contains(&amount) {
        return Err(error(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID"));
    }
    Ok(())
}

fn send_invoice(state: &State, body: &Value) -> HttpResponse {
    let Some(chat_id) = chat_id_of(body) else {
        return error(400, "Bad Request: chat_id is empty");
    };
    if body.get("subscription_period").is_some() {
        // Only createInvoiceLink makes subscriptions.
        return error(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID");
    }
    if let Err(response) = check_invoice(body) {
        return response;
    }
    let mut inner = state.lock();
    inner.invoices.push(body.clone());
    let message_id = inner.next_message_id;
    inner.next_message_id += 1;
    let amount = body["prices"][0]["amount"].clone();
    ok(json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": { "id": chat_id, "type": "private", "first_name": "User" },
        "from": bot_user_short(),
        "invoice": {
            "title": body["title"],
            "description": body["description"],
            "start_parameter": "",
            "currency": "XTR",
            "total_amount": amount,
        },
    }))
}

fn create_invoice_link(state: &State, body: &Value) -> HttpResponse {
    if let Err(response) = check_invoice(body) {
        return response;
    }
    if let Some(period) = body.get("subscription_period") {
        // "Currently, it must always be 2592000 (30 days) if specified."
        if period.as_i64() != Some(2_592_000) {
            return error(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID");
        }
    }
    let mut inner = state.lock();
    inner.invoices.push(body.clone());
    ok(json!(format!("https://t.me/$fake{}", inner.invoices.len())))
}

fn answer_pre_checkout(state: &State, body: &Value) -> HttpResponse {
    let query_id = body
        .get("pre_checkout_query_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let accepted = body.get("ok").and_then(Value::as_bool);
    let Some(accepted) = accepted else {
        return error(400, "Bad Request: ok is required");
    };
    if !accepted
        && body
            .get("error_message")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return error(
            400,
            "Bad Request: error_message is required when ok is false",
        );
    }
    let mut inner = state.lock();
    match inner.pre_checkouts.get_mut(&query_id) {
        // An unknown query, or one answered before.
        None | Some(Some(_)) => error(400, "Bad Request: QUERY_ID_INVALID"),
        Some(answer) => {
            *answer = Some(body.clone());
            ok(json!(true))
        }
    }
}

fn refund_star_payment(state: &State, body: &Value) -> HttpResponse {
    let user_id = body.get("user_id").and_then(Value::as_i64);
    let charge_id = body
        .get("telegram_payment_charge_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut inner = state.lock();
    match inner.charges.get_mut(charge_id) {
        Some(charge) if Some(charge.user_id) == user_id => {
            if charge.refunded {
                return error(400, "Bad Request: CHARGE_ALREADY_REFUNDED");
            }
            charge.refunded = true;
            ok(json!(true))
        }
        _ => error(400, "Bad Request: CHARGE_NOT_FOUND"),
    }
}

fn edit_star_subscription(state: &State, body: &Value) -> HttpResponse {
    let user_id = body.get("user_id").and_then(Value::as_i64);
    let charge_id = body
        .get("telegram_payment_charge_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(canceled) = body.get("is_canceled").and_then(Value::as_bool) else {
        return error(400, "Bad Request: is_canceled is required");
    };
    let mut inner = state.lock();
    match inner.charges.get_mut(charge_id) {
        Some(charge) if Some(charge.user_id) == user_id && charge.subscription => {
            charge.canceled = canceled;
            ok(json!(true))
        }
        _ => error(400, "Bad Request: CHARGE_NOT_FOUND"),
    }
}

/// A `pre_checkout_query` update: `user_id` is about to pay `amount` Stars for `payload`.
#[allow(dead_code)]
pub fn pre_checkout_update(
    update_id: i64,
    query_id: &str,
    user_id: i64,
    payload: &str,
    amount: i64,
) -> Value {
    json!({
        "update_id": update_id,
        "pre_checkout_query": {
            "id": query_id,
            "from": user_json(user_id, &format!("User{user_id}"), "en"),
            "currency": "XTR",
            "total_amount": amount,
            "invoice_payload": payload,
        },
    })
}

/// A private message with `successful_payment`; `subscription` is (first payment?, the
/// paid period's end in Unix seconds) for a subscription's payment.
#[allow(dead_code)]
pub fn successful_payment_update(
    update_id: i64,
    user_id: i64,
    payload: &str,
    amount: i64,
    charge_id: &str,
    subscription: Option<(bool, i64)>,
) -> Value {
    let mut payment = json!({
        "currency": "XTR",
        "total_amount": amount,
        "invoice_payload": payload,
        "telegram_payment_charge_id": charge_id,
        "provider_payment_charge_id": "",
    });
    if let Some((first, expires)) = subscription {
        payment["is_recurring"] = json!(true);
        payment["is_first_recurring"] = json!(first);
        payment["subscription_expiration_date"] = json!(expires);
    }
    service_message(update_id, user_id, "successful_payment", payment)
}

/// A service message in the private chat of `user_id` (an English speaker named after the
/// id) carrying `field`.
fn service_message(update_id: i64, user_id: i64, field: &str, value: Value) -> Value {
    let name = format!("User{user_id}");
    let mut message = json!({
        "message_id": update_id + 100_000,
        "date": unix_now(),
        "chat": { "id": user_id, "type": "private", "first_name": name },
        "from": user_json(user_id, &name, "en"),
    });
    message[field] = value;
    json!({ "update_id": update_id, "message": message })
}

/// A private message with `refunded_payment`.
#[allow(dead_code)]
pub fn refunded_payment_update(
    update_id: i64,
    user_id: i64,
    payload: &str,
    amount: i64,
    charge_id: &str,
) -> Value {
    let refund = json!({
        "currency": "XTR",
        "total_amount": amount,
        "invoice_payload": payload,
        "telegram_payment_charge_id": charge_id,
    });
    service_message(update_id, user_id, "refunded_payment", refund)
}

/// A `subscription` update (Bot API 10.2): the user's subscription is `state` (canceled,
/// active or failed).
#[allow(dead_code)]
pub fn subscription_update(update_id: i64, user_id: i64, payload: &str, state: &str) -> Value {
    json!({
        "update_id": update_id,
        "subscription": {
            "user": user_json(user_id, &format!("User{user_id}"), "en"),
            "invoice_payload": payload,
            "state": state,
        },
    })
}
