//! vitte: an actor-based runtime for Telegram AI chat bots.
//!
//! This crate is the edge of the system: configuration, storage, the HTTP server, Telegram and
//! LLM clients, metrics and the start-up wiring. The actors and domain logic live in
//! `vitte-actors`.

pub mod chat;
pub mod cli;
pub mod config;
pub mod http;
pub mod llm;
pub mod redis_backend;
pub mod startup;
pub mod storage;
pub mod telegram;
pub mod telemetry;
