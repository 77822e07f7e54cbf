//! Operators' broadcasts and a user's notification jobs: `POST /admin/broadcast`,
//! `GET /admin/broadcasts/{id}`, `GET /admin/users/{user_id}/notifications`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use vitte_actors::domain::texts::TELEGRAM_MESSAGE_LIMIT;
use vitte_actors::ports::schedule::{JobStore, Segment};

use super::admin::is_operator;
use vitte_actors::ports::Severity;

use super::state::{HttpState, error_body};

/// The largest broadcast request body taken.
pub const MAX_BROADCAST_BYTES: usize = 64 * 1024;

/// `POST /admin/broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest {
    text: String,
    #[serde(default)]
    segment: Segment,
    /// Only count the recipients.
    #[serde(default)]
    dry_run: bool,
}

/// Counts a segment (`dry_run`), or stores the broadcast with one delivery per recipient
/// and lets the scheduler send it through the outbox at broadcast priority (201).
pub async fn create(
    request: HttpRequest,
    state: web::Data<HttpState>,
    body: web::Bytes,
) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    let broadcast: BroadcastRequest = match serde_json::from_slice(&body) {
        Ok(broadcast) => broadcast,
        Err(error) => {
            return error_body(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid broadcast: {error}"),
            );
        }
    };
    let text = broadcast.text.trim();
    if text.is_empty() {
        return error_body(StatusCode::UNPROCESSABLE_ENTITY, "text: must not be empty");
    }
    if text.encode_utf16().count() > TELEGRAM_MESSAGE_LIMIT {
        return error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("text: longer than Telegram's {TELEGRAM_MESSAGE_LIMIT} characters"),
        );
    }
    if let Some(plan) = &broadcast.segment.plan {
        let known = plan == "free" || plan == "paid" || state.catalogue.get(plan).is_some();
        if !known {
            return error_body(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("segment.plan: {plan:?} is neither free, paid nor a catalogue plan"),
            );
        }
    }
    let now = state.clock.now_millis();
    if broadcast.dry_run {
        return match state.database.count_segment(&broadcast.segment, now).await {
            Ok(count) => HttpResponse::Ok().json(json!({
                "dry_run": true,
                "recipients": count,
                "segment": broadcast.segment,
            })),
            Err(error) => {
                tracing::warn!(%error, "could not count a broadcast's segment");
                error_body(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable")
            }
        };
    }
    match state
        .database
        .create_broadcast(text, &broadcast.segment, now)
        .await
    {
        Ok(report) => {
            tracing::info!(
                id = report.id,
                recipients = report.total,
                "broadcast created"
            );
            state.scheduler.poke();
            let detail = format!(
                "created broadcast {} to {} recipients",
                report.id, report.total
            );
            super::admin::log_operator(&state, Severity::Info, None, detail).await;
            HttpResponse::Created().json(report)
        }
        Err(error) => {
            tracing::warn!(%error, "could not create a broadcast");
            error_body(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable")
        }
    }
}

/// A broadcast's progress: pending, sent, skipped, failed, unconfirmed.
pub async fn show(
    request: HttpRequest,
    state: web::Data<HttpState>,
    id: web::Path<i64>,
) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    match state.database.broadcast(id.into_inner()).await {
        Ok(Some(report)) => HttpResponse::Ok().json(report),
        Ok(None) => error_body(StatusCode::NOT_FOUND, "no such broadcast"),
        Err(error) => {
            tracing::warn!(%error, "could not read a broadcast");
            error_body(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable")
        }
    }
}

/// A user's notification jobs, newest due first.
pub async fn jobs(
    request: HttpRequest,
    state: web::Data<HttpState>,
    user_id: web::Path<i64>,
) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    match state.database.jobs_of(user_id.into_inner()).await {
        Ok(jobs) => HttpResponse::Ok().json(json!({
            "jobs": jobs.iter().map(|job| json!({
                "id": job.id,
                "kind": job.kind.as_str(),
                "due_at": job.due_at,
                "status": job.status.as_str(),
                "attempts": job.attempts,
                "last_error": job.last_error,
                "key": job.key,
            })).collect::<Vec<_>>(),
        })),
        Err(error) => {
            tracing::warn!(%error, "could not read a user's jobs");
            error_body(StatusCode::SERVICE_UNAVAILABLE, "storage is unavailable")
        }
    }
}
