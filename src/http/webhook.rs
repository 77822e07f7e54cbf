//! Telegram's webhook: `POST /telegram/webhook`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;
use teloxide::types::Update;

use super::state::{HttpState, error_body};
use vitte_actors::metrics::ErrorKind;

/// The header Telegram echoes the webhook's secret token in.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// Largest update body accepted (Telegram's are a few KiB).
pub const MAX_UPDATE_BYTES: usize = 1024 * 1024;

fn secret_matches(request: &HttpRequest, expected: &SecretString) -> bool {
    let expected = expected.expose_secret().as_bytes();
    let Some(given) = request.headers().get(SECRET_HEADER) else {
        return false;
    };
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected))
}

/// Telegram's webhook: the secret header must match (401 otherwise), the body must be an
/// update (400 otherwise). 200 means the update was handed to its user's session.
pub async fn telegram_webhook(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<HttpState>,
) -> HttpResponse {
    if !secret_matches(&request, &state.webhook_secret) {
        state.metrics.count_error(ErrorKind::WebhookAuth);
        return error_body(StatusCode::UNAUTHORIZED, "missing or wrong secret token");
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(error) => {
            state.metrics.count_error(ErrorKind::WebhookBody);
            tracing::warn!(%error, "malformed webhook body");
            return error_body(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a Telegram update: {error}"),
            );
        }
    };
    state.sink.accept(&update);
    HttpResponse::Ok().json(json!({ "ok": true }))
}
