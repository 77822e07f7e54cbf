//! The HTTP chat API, `/v1/chat/*`: other programs (another bot, a support desk) talk to a
//! user's dialog through the user's own session, so the API and Telegram share the
//! history, the entitlements and the daily limits. Callers send `X-API-KEY` (keys in
//! `[api.keys]`, compared in constant time, counted by name). The OpenAPI document at
//! `/openapi.json` is generated from the types below.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, Modify, ToSchema};
use vitte_actors::domain::event::{ApiCall, ApiOutcome, Inbound, InboundKind, Sender};
use vitte_actors::session::SLOT_COUNT;

use super::state::HttpState;

/// The header the key comes in.
pub const API_KEY_HEADER: &str = "X-API-KEY";
/// Messages `GET /v1/chat/history` gives at most.
const MAX_HISTORY: i64 = 200;
/// When the LLM is unavailable, when to try again.
const LLM_RETRY_AFTER_SECONDS: u64 = 30;
/// When a user's session is busy with too many messages, when to try again.
const BUSY_RETRY_AFTER_SECONDS: u64 = 5;

/// A message to the persona of the user's dialog.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    /// The Telegram user whose dialog it goes to.
    #[schema(minimum = 1)]
    pub telegram_id: i64,
    /// What the user says.
    pub message: String,
    /// The dialog slot (1-3); the user's active one when absent.
    #[schema(minimum = 1, maximum = 3)]
    pub slot: Option<u8>,
}

/// The persona's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendReply {
    pub telegram_id: i64,
    /// The whole answer (its messages joined by a blank line).
    pub reply: String,
    /// The answer as the messages Telegram would show (a long one is split).
    pub messages: Vec<String>,
}

/// Why a call was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
    /// The request field at fault, for 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Today's limit is reached (429, with `Retry-After`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitReached {
    pub error: String,
    /// Replies a day on the user's plan.
    pub limit: u32,
    /// Replies written today.
    pub used: u32,
    /// When the next day starts for the limits (Unix milliseconds).
    pub resets_at_ms: i64,
}

/// A dialog's recent messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub telegram_id: i64,
    pub slot: u8,
    pub persona_id: String,
    /// Oldest first.
    pub messages: Vec<HistoryEntry>,
}

/// One message of a dialog.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// `complete`, `partial`, `pending`, `unanswered`, …
    pub status: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// `GET /v1/chat/history/{telegram_id}`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The dialog slot (1-3); the user's active one when absent.
    pub slot: Option<u8>,
    /// Messages, the latest (1-200, default 50).
    pub limit: Option<i64>,
}

/// The OpenAPI document of the chat API.
#[derive(OpenApi)]
#[openapi(
    info(title = "vitte chat API", description = "Talk to a user's dialog as Telegram does."),
    paths(send, history),
    components(schemas(SendRequest, SendReply, ApiError, LimitReached, History, HistoryEntry)),
    modifiers(&ApiKeyAuth),
    security(("api_key" = []))
)]
pub struct ChatApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(API_KEY_HEADER))),
        );
    }
}

/// `GET /openapi.json`.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ChatApiDoc::openapi())
}

/// The name of the key the request carries, if it is one of ours. Every key is compared
/// (in constant time), whichever matches.
fn caller(request: &HttpRequest, state: &HttpState) -> Option<String> {
    let given = request
        .headers()
        .get(API_KEY_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    let mut found = None;
    for (name, key) in state.api.keys.iter() {
        let expected = key.expose_secret().as_bytes();
        let matches = !expected.is_empty() && bool::from(given.ct_eq(expected));
        if matches {
            found = Some(name.clone());
        }
    }
    found
}

/// The calling key's name, or the 401 to answer (counted under `unknown`).
fn authorized(request: &HttpRequest, state: &HttpState) -> Result<String, HttpResponse> {
    caller(request, state).ok_or_else(|| {
        let response = refusal(
            StatusCode::UNAUTHORIZED,
            "X-API-KEY missing or unknown",
            None,
        );
        counted(state, "unknown", response)
    })
}

fn refusal(status: StatusCode, error: &str, field: Option<&str>) -> HttpResponse {
    HttpResponse::build(status).json(ApiError {
        error: error.to_owned(),
        field: field.map(str::to_owned),
    })
}

fn invalid(field: &str, error: &str) -> HttpResponse {
    refusal(StatusCode::UNPROCESSABLE_ENTITY, error, Some(field))
}

/// Counts the call under its key's name and status.
fn counted(state: &HttpState, key: &str, response: HttpResponse) -> HttpResponse {
    state
        .metrics
        .api_requests_total
        .with_label_values(&[key, response.status().as_str()])
        .inc();
    response
}

/// Reads and checks a send request, naming the field at fault.
fn read_send(body: &[u8], max_message_chars: usize) -> Result<SendRequest, HttpResponse> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("the body is not JSON: {error}"),
            None,
        )
    })?;
    if !value.is_object() {
        return Err(refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object",
            None,
        ));
    }
    let telegram_id = value["telegram_id"]
        .as_i64()
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid("telegram_id", "a positive integer is required"))?;
    let message = value["message"]
        .as_str()
        .filter(|message| !message.trim().is_empty())
        .ok_or_else(|| invalid("message", "a non-empty string is required"))?;
    if message.chars().count() > max_message_chars {
        return Err(invalid(
            "message",
            &format!("longer than {max_message_chars} characters"),
        ));
    }
    let slot = match &value["slot"] {
        Value::Null => None,
        slot => Some(
            slot.as_u64()
                .and_then(|slot| u8::try_from(slot).ok())
                .filter(|slot| (1..=SLOT_COUNT).contains(slot))
                .ok_or_else(|| invalid("slot", "must be 1, 2 or 3"))?,
        ),
    };
    Ok(SendRequest {
        telegram_id,
        message: message.to_owned(),
        slot,
    })
}

/// Sends a message to the persona of the user's dialog and answers with its reply.
#[utoipa::path(
    post,
    path = "/v1/chat/send",
    request_body = SendRequest,
    responses(
        (status = 200, description = "The persona's reply", body = SendReply),
        (status = 401, description = "X-API-KEY missing or unknown", body = ApiError),
        (status = 409, description = "The user has no dialog (in that slot)", body = ApiError),
        (status = 413, description = "The body is too large"),
        (status = 422, description = "The body is invalid; `field` names what", body = ApiError),
        (status = 429, description = "Today's limit is reached (Retry-After)", body = LimitReached),
        (status = 502, description = "The LLM did not answer (the message is kept)", body = ApiError),
        (status = 503, description = "The LLM is unavailable, the user's session is busy, or vitte is stopping (Retry-After)", body = ApiError),
        (status = 504, description = "No reply within api.reply_timeout (it is still written and stored)", body = ApiError),
    )
)]
pub async fn send(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let key = match authorized(&request, &state) {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    let response = send_as(&body, &state).await;
    counted(&state, &key, response)
}

async fn send_as(body: &[u8], state: &HttpState) -> HttpResponse {
    let asked = match read_send(body, state.api.max_message_chars) {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    if !state.sink.is_ready() {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, "vitte is stopping", None);
    }
    let chat = state.api.chats.open();
    let (call, ended) = ApiCall::new(asked.slot);
    let sender = Sender {
        user_id: asked.telegram_id,
        chat_id: chat,
        // The session speaks to the user under their stored name and language.
        first_name: String::new(),
        language_code: None,
    };
    let mut event = Inbound::new(
        None,
        sender,
        InboundKind::Text(asked.message),
        state.clock.now_millis(),
    );
    event.api = Some(call);
    state.sink.router.route(event);
    let outcome = tokio::time::timeout(state.api.reply_timeout, ended).await;
    let messages = state.api.chats.close(chat);
    match outcome {
        Ok(Ok(ApiOutcome::Answered)) => HttpResponse::Ok().json(SendReply {
            telegram_id: asked.telegram_id,
            reply: messages.join("\n\n"),
            messages,
        }),
        Ok(Ok(ApiOutcome::DailyLimit {
            limit,
            used,
            resets_at,
        })) => {
            let wait_ms = u64::try_from(resets_at - state.clock.now_millis()).unwrap_or(0);
            let wait_seconds = wait_ms.div_ceil(1_000).max(1);
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", wait_seconds.to_string()))
                .json(LimitReached {
                    error: "today's limit of replies is reached".into(),
                    limit,
                    used,
                    resets_at_ms: resets_at,
                })
        }
        Ok(Ok(ApiOutcome::LlmUnavailable)) => unavailable(
            "the language model is unavailable; try again later",
            LLM_RETRY_AFTER_SECONDS,
        ),
        Ok(Ok(ApiOutcome::LlmFailed)) => refusal(
            StatusCode::BAD_GATEWAY,
            "the language model did not answer; the message is kept, try again",
            None,
        ),
        Ok(Ok(ApiOutcome::Busy)) => unavailable(
            "this user's session has too many messages waiting",
            BUSY_RETRY_AFTER_SECONDS,
        ),
        Ok(Ok(ApiOutcome::NoDialog)) => refusal(
            StatusCode::CONFLICT,
            "the user has no dialog there: one is started in Telegram",
            asked.slot.map(|_| "slot"),
        ),
        Ok(Ok(ApiOutcome::Failed) | Err(_)) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "handling the message failed; the user's session restarts",
            None,
        ),
        Err(_) => refusal(
            StatusCode::GATEWAY_TIMEOUT,
            "no reply in time; it is still written and stored",
            None,
        ),
    }
}

fn unavailable(error: &str, retry_after_seconds: u64) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", retry_after_seconds.to_string()))
        .json(ApiError {
            error: error.to_owned(),
            field: None,
        })
}

/// The latest messages of the user's dialog.
#[utoipa::path(
    get,
    path = "/v1/chat/history/{telegram_id}",
    params(
        ("telegram_id" = i64, Path, description = "The Telegram user"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The dialog's latest messages", body = History),
        (status = 401, description = "X-API-KEY missing or unknown", body = ApiError),
        (status = 404, description = "No dialog there", body = ApiError),
        (status = 422, description = "A parameter is invalid; `field` names it", body = ApiError),
    )
)]
pub async fn history(
    request: HttpRequest,
    telegram_id: web::Path<String>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let key = match authorized(&request, &state) {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    let response = history_as(&request, &telegram_id, &state).await;
    counted(&state, &key, response)
}

async fn history_as(request: &HttpRequest, telegram_id: &str, state: &HttpState) -> HttpResponse {
    let Some(telegram_id) = telegram_id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return invalid("telegram_id", "a positive integer is required");
    };
    let query = match web::Query::<std::collections::HashMap<String, String>>::from_query(
        request.query_string(),
    ) {
        Ok(query) => query.into_inner(),
        Err(_) => return invalid("query", "not a query string"),
    };
    let slot = match query.get("slot") {
        None => None,
        Some(slot) => match slot.parse::<u8>() {
            Ok(slot) if (1..=SLOT_COUNT).contains(&slot) => Some(slot),
            _ => return invalid("slot", "must be 1, 2 or 3"),
        },
    };
    let limit = match query.get("limit") {
        None => 50,
        Some(limit) => match limit.parse::<i64>() {
            Ok(limit) if (1..=MAX_HISTORY).contains(&limit) => limit,
            _ => return invalid("limit", "must be from 1 to 200"),
        },
    };
    match state
        .database
        .dialog_history(telegram_id, slot, limit)
        .await
    {
        Ok(Some(dialog)) => HttpResponse::Ok().json(History {
            telegram_id,
            slot: dialog.slot,
            persona_id: dialog.persona_id,
            messages: dialog
                .messages
                .into_iter()
                .map(|message| HistoryEntry {
                    role: message.role,
                    content: message.content,
                    status: message.status,
                    created_at_ms: message.created_at,
                })
                .collect(),
        }),
        Ok(None) => refusal(StatusCode::NOT_FOUND, "the user has no dialog there", None),
        Err(error) => {
            tracing::warn!(%error, "could not read a dialog's history");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is unavailable",
                None,
            )
        }
    }
}

/// What the chat API needs.
#[derive(Clone)]
pub struct ChatApiState {
    pub keys: std::sync::Arc<std::collections::BTreeMap<String, secrecy::SecretString>>,
    pub chats: crate::api_chats::ApiChats,
    pub reply_timeout: Duration,
    /// Longer messages are refused (422), as the session would refuse them.
    pub max_message_chars: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_request_names_the_field_at_fault() {
        let field = |body: &str| {
            read_send(body.as_bytes(), 100)
                .err()
                .map(|response| response.status().as_u16())
        };
        assert_eq!(field(r#"{"telegram_id": 5, "message": "hi"}"#), None);
        assert_eq!(
            field(r#"{"telegram_id": 5, "message": "hi", "slot": 2}"#),
            None
        );
        for bad in [
            "not json",
            "[1]",
            r#"{"message": "hi"}"#,
            r#"{"telegram_id": -5, "message": "hi"}"#,
            r#"{"telegram_id": 5, "message": "  "}"#,
            r#"{"telegram_id": 5, "message": "hi", "slot": 4}"#,
            r#"{"telegram_id": 5, "message": "hi", "slot": "one"}"#,
        ] {
            assert_eq!(field(bad), Some(422), "{bad}");
        }
        let long = format!(r#"{{"telegram_id": 5, "message": "{}"}}"#, "x".repeat(101));
        assert_eq!(field(&long), Some(422));
    }

    #[test]
    fn the_openapi_document_describes_both_routes_and_the_key() {
        let document = serde_json::to_value(ChatApiDoc::openapi()).expect("JSON");
        assert!(document["paths"]["/v1/chat/send"]["post"].is_object());
        assert!(document["paths"]["/v1/chat/history/{telegram_id}"]["get"].is_object());
        assert_eq!(
            document["components"]["securitySchemes"]["api_key"]["name"],
            API_KEY_HEADER
        );
        let required = &document["components"]["schemas"]["SendRequest"]["required"];
        assert_eq!(*required, serde_json::json!(["telegram_id", "message"]));
    }
}
