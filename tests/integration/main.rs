//! Integration tests: the real application in-process against fake Telegram and LLM servers.

#[path = "../support/mod.rs"]
mod support;

mod chat_api;
mod cli;
mod conversation;
mod dialogs;
mod drafts;
mod drain;
mod events;
mod faults;
mod gateway;
mod http_api;
mod loadgen;
mod memory;
mod notifications;
mod ops;
mod payments;
mod recovery;
mod streaming;
