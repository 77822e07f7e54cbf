//! The HTTP server's routes: health checks for Kubernetes, Prometheus metrics, the Telegram
//! webhook and the operators' endpoints. One file per concern; `state.rs` holds what they
//! share.

mod admin;
mod broadcast;
pub mod chat_api;
mod health;
pub mod probe;
pub mod state;
pub mod webhook;

use actix_web::web;

pub use state::HttpState;
pub use webhook::{MAX_UPDATE_BYTES, SECRET_HEADER};

/// The chat API's routes (`/v1/chat/*`, `/openapi.json`), request bodies capped at
/// `max_body_bytes` (413 past it).
pub fn chat_api_routes(max_body_bytes: usize) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |config| {
        config
            .service(
                web::resource("/v1/chat/send")
                    .app_data(web::PayloadConfig::new(max_body_bytes))
                    .route(web::post().to(chat_api::send)),
            )
            .route(
                "/v1/chat/history/{telegram_id}",
                web::get().to(chat_api::history),
            )
            .route("/openapi.json", web::get().to(chat_api::openapi));
    }
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/health", web::get().to(health::health))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::resource("/telegram/webhook")
                .app_data(web::PayloadConfig::new(MAX_UPDATE_BYTES))
                .route(web::post().to(webhook::telegram_webhook)),
        )
        .route("/admin/actors", web::get().to(admin::actors))
        .route("/admin/events", web::get().to(admin::events))
        .route("/admin/supervision/reload", web::post().to(admin::reload))
        .route(
            "/admin/payments/{charge_id}/refund",
            web::post().to(admin::refund),
        )
        .route(
            "/admin/users/{user_id}/payments",
            web::get().to(admin::payments),
        )
        .route("/admin/users/{user_id}/block", web::post().to(admin::block))
        .route(
            "/admin/users/{user_id}/unblock",
            web::post().to(admin::unblock),
        )
        .service(
            web::resource("/admin/broadcast")
                .app_data(web::PayloadConfig::new(broadcast::MAX_BROADCAST_BYTES))
                .route(web::post().to(broadcast::create)),
        )
        .route("/admin/broadcasts/{id}", web::get().to(broadcast::show))
        .route(
            "/admin/users/{user_id}/notifications",
            web::get().to(broadcast::jobs),
        );
}
