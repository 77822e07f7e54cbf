//! vitte: an actor-based runtime for Telegram AI chat bots.
//!
//! This crate is the edge of the system: configuration, storage, the HTTP server, Telegram and
//! LLM clients, metrics and the start-up wiring. The actors and domain logic live in
//! `vitte-actors`.

pub mod api_chats;
pub mod chat;
pub mod cli;
pub mod config;
pub mod http;
pub mod llm;
pub mod redis_backend;
pub mod reload;
pub mod simulate;
pub mod startup;
pub mod storage;
pub mod telegram;
pub mod telemetry;

/// An error with its causes, "outer: inner: innermost": HTTP client errors name the request
/// on the outside and what actually failed (refused, reset, DNS, too many open files) inside.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}
