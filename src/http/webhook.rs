//! Telegram's webhook: `POST /telegram/webhook`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::state::{HttpState, error_body};
use crate::telegram::IncomingUpdate;
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
/// update (400 otherwise). 200 means the update is stored and handed to its user's session
/// (or was stored before: a redelivery); 503 means it could not be stored, and Telegram
/// delivers it again.
pub async fn telegram_webhook(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<HttpState>,
) -> HttpResponse {
    if !secret_matches(&request, &state.webhook_secret) {
        state.metrics.count_error(ErrorKind::WebhookAuth);
        return error_body(StatusCode::UNAUTHORIZED, "missing or wrong secret token");
    }
    if !state.sink.is_ready() {
        // Shutting down (or not registered yet): Telegram delivers it again, to whichever
        // replica is ready. The connection closes, so a graceful stop is not held open.
        return HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
            .force_close()
            .json(json!({ "error": "shutting down; deliver it again" }));
    }
    let update = match IncomingUpdate::from_json(&body) {
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
    match state.sink.accept(&update).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "ok": true })),
        // Not stored, so not accepted: Telegram delivers it again.
        Err(error) => {
            tracing::error!(%error, update_id = update.update_id, "an update could not be stored; Telegram will deliver it again");
            state.metrics.count_error(ErrorKind::Storage);
            HttpResponse::ServiceUnavailable()
                .insert_header((actix_web::http::header::RETRY_AFTER, "5"))
                .json(json!({ "error": "the update could not be stored; deliver it again" }))
        }
    }
}
