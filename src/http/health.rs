//! Probes and metrics: `/health/live`, `/health/ready`, `/health` and `/metrics`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;
use vitte_actors::supervision::ActorKind;

use super::state::HttpState;

/// The process is alive (it answers HTTP).
pub async fn live() -> HttpResponse {
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
    let (written, database_latency) = state.storage_probe.check().await;
    let (database_up, database_detail) = match written {
        Ok(()) => (true, None),
        Err(detail) => (false, Some(detail)),
    };
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
pub async fn ready(state: web::Data<HttpState>) -> HttpResponse {
    let checks = check_components(&state).await;
    state
        .metrics
        .ready
        .set(i64::from(status_of(&checks) == StatusCode::OK));
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
pub async fn health(state: web::Data<HttpState>) -> HttpResponse {
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

/// The Prometheus text format. Readiness and escalated kinds are checked as of this scrape
/// (the storage write probe is rate-limited), so alerts see them between probes too.
pub async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let checks = check_components(&state).await;
    state
        .metrics
        .ready
        .set(i64::from(status_of(&checks) == StatusCode::OK));
    let escalated = state.supervisor.escalated_kinds();
    for kind in ActorKind::ALL {
        state
            .metrics
            .supervision_escalated
            .with_label_values(&[kind.as_str()])
            .set(i64::from(escalated.contains(kind)));
    }
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
