//! Operators' endpoints, `/admin/*`, behind the admin bearer token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::state::{HttpState, error_body};
use crate::reload::ReloadError;
use vitte_actors::domain::entitlement::Entitlement;
use vitte_actors::payments::messages::RefundError;
use vitte_actors::ports::events::record_event;
use vitte_actors::ports::payments::PaymentStore;
use vitte_actors::ports::{EventKind, LoggedEvent, Severity};

/// Whether the request carries `Authorization: Bearer <admin token>` (constant-time).
pub(super) fn is_operator(request: &HttpRequest, token: &SecretString) -> bool {
    let expected = token.expose_secret().as_bytes();
    let given = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected))
}

/// Records what an operator did in the event log (best effort).
pub(super) async fn log_operator(
    state: &HttpState,
    severity: Severity,
    user_id: Option<i64>,
    detail: String,
) {
    let event = LoggedEvent {
        at: state.clock.now_millis(),
        severity,
        kind: EventKind::Operator,
        user_id,
        detail,
    };
    record_event(&state.database, event).await;
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
        Ok(report) => {
            let detail = format!(
                "configuration reloaded (restart needed for: {})",
                report.needs_restart.join(", ")
            );
            log_operator(&state, Severity::Info, None, detail).await;
            HttpResponse::Ok().json(json!({
                "status": "reloaded",
                "needs_restart": report.needs_restart,
            }))
        }
        Err(ReloadError::NoSource) => error_body(
            StatusCode::CONFLICT,
            "this process was not started from configuration files",
        ),
        Err(error) => {
            tracing::warn!(%error, "reload refused; the running settings stay");
            let detail = format!("a reload was refused: {error}");
            log_operator(&state, Severity::Warning, None, detail).await;
            error_body(StatusCode::BAD_REQUEST, &error.to_string())
        }
    }
}

/// An entitlement as operators read it.
fn entitlement_json(entitlement: &Entitlement) -> serde_json::Value {
    json!({
        "plan": entitlement.plan.as_ref().map(|plan| json!({
            "product": plan.product_id,
            "paid_until": plan.paid_until,
            "renewing": plan.renewing,
            "subscription_charge": plan.subscription_charge,
        })),
        "unlocked": entitlement
            .unlocked
            .iter()
            .map(|feature| feature.as_str())
            .collect::<Vec<_>>(),
    })
}

/// Refunds a payment: Telegram gives the Stars back (`refundStarPayment`), then what it
/// granted is taken back, once. 404 for an unknown charge, 409 if refunded before, 502 when
/// Telegram refuses.
pub async fn refund(
    request: HttpRequest,
    state: web::Data<HttpState>,
    charge_id: web::Path<String>,
) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    match state.sink.desk.refund(&charge_id).await {
        Ok(entitlement) => {
            let detail = format!("refunded charge {}", charge_id.as_str());
            log_operator(&state, Severity::Info, None, detail).await;
            HttpResponse::Ok().json(json!({
                "status": "refunded",
                "charge_id": charge_id.as_str(),
                "entitlement": entitlement_json(&entitlement),
            }))
        }
        Err(error) => {
            let status = match error {
                RefundError::UnknownCharge => StatusCode::NOT_FOUND,
                RefundError::AlreadyRefunded => StatusCode::CONFLICT,
                RefundError::Telegram(_) => StatusCode::BAD_GATEWAY,
                RefundError::Storage(_) | RefundError::Crashed => StatusCode::SERVICE_UNAVAILABLE,
            };
            error_body(status, &error.to_string())
        }
    }
}

/// A user's payments, their audit (every transition with its time and source) and what
/// they have now.
pub async fn payments(
    request: HttpRequest,
    state: web::Data<HttpState>,
    user_id: web::Path<i64>,
) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    let user_id = user_id.into_inner();
    let history = state.database.history(user_id).await;
    let entitlement = state.database.entitlement(user_id).await;
    match (history, entitlement) {
        (Ok((payments, events)), Ok(entitlement)) => HttpResponse::Ok().json(json!({
            "user_id": user_id,
            "entitlement": entitlement_json(&entitlement),
            "payments": payments,
            "events": events,
        })),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "could not read a user's payments");
            error_body(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable")
        }
    }
}

/// Blocks a user's purchases: their pre-checkout queries are refused from now on.
pub async fn block(
    request: HttpRequest,
    state: web::Data<HttpState>,
    user_id: web::Path<i64>,
) -> HttpResponse {
    set_blocked(request, state, user_id.into_inner(), true).await
}

/// Lets a blocked user buy again.
pub async fn unblock(
    request: HttpRequest,
    state: web::Data<HttpState>,
    user_id: web::Path<i64>,
) -> HttpResponse {
    set_blocked(request, state, user_id.into_inner(), false).await
}

async fn set_blocked(
    request: HttpRequest,
    state: web::Data<HttpState>,
    user_id: i64,
    blocked: bool,
) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    match state.sink.desk.set_blocked(user_id, blocked).await {
        Ok(()) => {
            let detail = if blocked {
                "blocked the user's purchases"
            } else {
                "allowed the user's purchases again"
            };
            log_operator(&state, Severity::Info, Some(user_id), detail.to_owned()).await;
            HttpResponse::Ok().json(json!({ "user_id": user_id, "blocked": blocked }))
        }
        Err(error) => error_body(StatusCode::SERVICE_UNAVAILABLE, &error),
    }
}

/// The event log, newest first: `?severity=info|warning|error&kind=registration|payment|
/// error|operator&limit=` (1-500, default 100).
pub async fn events(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    let Ok(query) =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
    else {
        return error_body(StatusCode::UNPROCESSABLE_ENTITY, "not a query string");
    };
    let severity = query.get("severity").map(String::as_str);
    if severity.is_some_and(|severity| !["info", "warning", "error"].contains(&severity)) {
        return error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            "severity: info, warning or error",
        );
    }
    let kind = query.get("kind").map(String::as_str);
    let kinds = ["registration", "payment", "error", "operator"];
    if kind.is_some_and(|kind| !kinds.contains(&kind)) {
        return error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            "kind: registration, payment, error or operator",
        );
    }
    let limit = match query.get("limit").map(|limit| limit.parse::<i64>()) {
        None => 100,
        Some(Ok(limit)) if (1..=500).contains(&limit) => limit,
        Some(_) => return error_body(StatusCode::UNPROCESSABLE_ENTITY, "limit: 1 to 500"),
    };
    match state.database.events(severity, kind, limit).await {
        Ok(events) => HttpResponse::Ok().json(json!({ "events": events })),
        Err(error) => {
            tracing::warn!(%error, "could not read the event log");
            error_body(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable")
        }
    }
}
