//! Operators' endpoints, `/admin/*`, behind the admin bearer token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::state::{HttpState, error_body};
use crate::reload::ReloadError;

/// Whether the request carries `Authorization: Bearer <admin token>` (constant-time).
fn is_operator(request: &HttpRequest, token: &SecretString) -> bool {
    let expected = token.expose_secret().as_bytes();
    let given = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected))
}

/// Per kind: its shape, restarts and health (and for mailbox kinds live actors and mailbox
/// depth); each LLM provider's breaker, and the LLM calls waiting for a rate limit.
pub async fn actors(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    HttpResponse::Ok().json(json!({
        "kinds": state.supervisor.report(),
        "providers": state.gateway.report(),
        "llm_requests_waiting": state.metrics.llm_requests_waiting.get(),
    }))
}

/// Re-reads the configuration and applies supervision and LLM settings without a restart.
pub async fn reload(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    // Reading the files blocks: do it off the HTTP worker's event loop.
    let reloader = state.reloader.clone();
    let Ok(reloaded) = web::block(move || reloader.reload()).await else {
        return error_body(StatusCode::INTERNAL_SERVER_ERROR, "reload could not run");
    };
    match reloaded {
        Ok(report) => HttpResponse::Ok().json(json!({
            "status": "reloaded",
            "needs_restart": report.needs_restart,
        })),
        Err(ReloadError::NoSource) => error_body(
            StatusCode::CONFLICT,
            "this process was not started from configuration files",
        ),
        Err(error) => {
            tracing::warn!(%error, "reload refused; the running settings stay");
            error_body(StatusCode::BAD_REQUEST, &error.to_string())
        }
    }
}
