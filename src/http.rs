//! The HTTP server's routes: health checks for Kubernetes, Prometheus metrics and the
//! Telegram webhook.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;
use teloxide::types::Update;
use vitte_actors::metrics::Metrics;

use std::sync::Arc;

use vitte_actors::gateway::LlmGateway;
use vitte_actors::supervision::{ActorKind, Supervisor};

use crate::redis_backend::RedisBackend;
use crate::startup::{ReloadError, Reloader};
use crate::storage::Database;
use crate::telegram::UpdateSink;

/// The header Telegram echoes the webhook's secret token in.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// Longest a health check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest update body accepted (Telegram's are a few KiB).
pub const MAX_UPDATE_BYTES: usize = 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub database: Database,
    pub metrics: Metrics,
    pub sink: UpdateSink,
    /// Empty when the webhook is not in use: then every webhook call is refused.
    pub webhook_secret: SecretString,
    pub telegram_mode: &'static str,
    /// Bearer token of /admin/*; empty refuses every admin call.
    pub admin_token: SecretString,
    pub supervisor: Arc<Supervisor>,
    pub gateway: Arc<LlmGateway>,
    pub redis: Option<RedisBackend>,
    pub reloader: Arc<Reloader>,
}

/// The actor kinds running in this process (shown by /admin/actors).
const RUNNING_KINDS: [ActorKind; 2] = [ActorKind::Session, ActorKind::Llm];

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .service(
            web::resource("/telegram/webhook")
                .app_data(web::PayloadConfig::new(MAX_UPDATE_BYTES))
                .route(web::post().to(telegram_webhook)),
        )
        .route("/admin/actors", web::get().to(admin_actors))
        .route("/admin/supervision/reload", web::post().to(admin_reload));
}

/// The process is alive (it answers HTTP).
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "alive" }))
}

struct ComponentCheck {
    name: &'static str,
    up: bool,
    /// Whether readiness depends on it (Redis does not: the bot degrades without it).
    required: bool,
    latency: Duration,
    detail: Option<String>,
}

async fn check_components(state: &HttpState) -> Vec<ComponentCheck> {
    let started = Instant::now();
    let ping = tokio::time::timeout(CHECK_TIMEOUT, state.database.ping()).await;
    let (database_up, database_detail) = match ping {
        Ok(Ok(())) => (true, None),
        Ok(Err(error)) => (false, Some(error.to_string())),
        Err(_) => (false, Some("no answer within 2 s".to_owned())),
    };
    let database_latency = started.elapsed();
    let migrated = state.database.is_migrated();
    let telegram_up = state.sink.is_ready();
    let escalated: Vec<&str> = state
        .supervisor
        .escalated_kinds()
        .into_iter()
        .map(ActorKind::as_str)
        .collect();
    let mut checks = vec![
        ComponentCheck {
            name: "database",
            up: database_up,
            required: true,
            latency: database_latency,
            detail: database_detail,
        },
        ComponentCheck {
            name: "migrations",
            up: migrated,
            required: true,
            latency: Duration::ZERO,
            detail: (!migrated).then(|| "not applied".to_owned()),
        },
        ComponentCheck {
            name: "telegram",
            up: telegram_up,
            required: true,
            latency: Duration::ZERO,
            detail: Some(format!(
                "{} ingress {}",
                state.telegram_mode,
                if telegram_up {
                    "running"
                } else {
                    "not running"
                }
            )),
        },
        ComponentCheck {
            name: "supervision",
            up: escalated.is_empty(),
            required: true,
            latency: Duration::ZERO,
            detail: (!escalated.is_empty())
                .then(|| format!("restart intensity exceeded: {}", escalated.join(", "))),
        },
    ];
    if let Some(redis) = &state.redis {
        checks.push(ComponentCheck {
            name: "redis",
            up: !redis.is_degraded(),
            required: false,
            latency: Duration::ZERO,
            detail: redis
                .is_degraded()
                .then(|| "unreachable: in-process fallbacks serve".to_owned()),
        });
    }
    checks
}

fn status_of(checks: &[ComponentCheck]) -> StatusCode {
    if checks.iter().all(|check| check.up || !check.required) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Ready for traffic: storage reachable, migrations applied, Telegram ingress running.
async fn ready(state: web::Data<HttpState>) -> HttpResponse {
    let checks = check_components(&state).await;
    let failing: Vec<&str> = checks
        .iter()
        .filter(|check| !check.up && check.required)
        .map(|check| check.name)
        .collect();
    HttpResponse::build(status_of(&checks)).json(json!({
        "status": if failing.is_empty() { "ready" } else { "not ready" },
        "failing": failing,
    }))
}

/// Every component's status and how long its check took.
async fn health(state: web::Data<HttpState>) -> HttpResponse {
    let checks = check_components(&state).await;
    let components: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|check| {
            (
                check.name.to_owned(),
                json!({
                    "status": if check.up { "up" } else { "down" },
                    "latency_ms": check.latency.as_secs_f64() * 1000.0,
                    "detail": check.detail,
                }),
            )
        })
        .collect();
    let status = status_of(&checks);
    HttpResponse::build(status).json(json!({
        "status": if status == StatusCode::OK { "up" } else { "degraded" },
        "components": components,
    }))
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&state.metrics.registry().gather()) {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(error) => {
            tracing::error!(%error, "could not encode metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

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

/// Per actor kind: live count, restarts, mailbox depth, health; and each provider's breaker.
async fn admin_actors(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if !is_operator(&request, &state.admin_token) {
        return error_body(StatusCode::UNAUTHORIZED, "admin token required");
    }
    HttpResponse::Ok().json(json!({
        "kinds": state.supervisor.report(&RUNNING_KINDS),
        "providers": state.gateway.report(),
    }))
}

/// Re-reads the configuration and applies supervision and LLM settings without a restart.
async fn admin_reload(request: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
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

fn secret_matches(request: &HttpRequest, expected: &SecretString) -> bool {
    let expected = expected.expose_secret().as_bytes();
    let Some(given) = request.headers().get(SECRET_HEADER) else {
        return false;
    };
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected))
}

fn error_body(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// Telegram's webhook: the secret header must match (401 otherwise), the body must be an
/// update (400 otherwise). 200 means the update was handed to its user's session.
async fn telegram_webhook(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<HttpState>,
) -> HttpResponse {
    if !secret_matches(&request, &state.webhook_secret) {
        state.metrics.count_error("webhook_auth");
        return error_body(StatusCode::UNAUTHORIZED, "missing or wrong secret token");
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(error) => {
            state.metrics.count_error("webhook_body");
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
