//! What the HTTP handlers share, and the shape of their errors.

use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use secrecy::SecretString;
use serde_json::json;
use vitte_actors::domain::catalogue::Catalogue;
use vitte_actors::gateway::LlmGateway;
use vitte_actors::metrics::Metrics;
use vitte_actors::ports::Clock;
use vitte_actors::scheduler::SchedulerHandle;
use vitte_actors::supervision::Supervisor;

use super::probe::StorageProbe;
use crate::redis_backend::RedisBackend;
use crate::reload::Reloader;
use crate::storage::Database;
use crate::telegram::UpdateSink;

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
    /// The readiness check's write probe (rate-limited).
    pub storage_probe: Arc<StorageProbe>,
    /// Broadcasts are handed to it.
    pub scheduler: SchedulerHandle,
    /// Plans a broadcast's segment may name.
    pub catalogue: Arc<Catalogue>,
    pub clock: Arc<dyn Clock>,
    /// The HTTP chat API's keys, chats and limits.
    pub api: super::chat_api::ChatApiState,
}

/// A JSON error: `{"error": message}` with `status`.
pub fn error_body(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}
