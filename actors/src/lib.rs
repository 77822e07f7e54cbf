//! vitte's actors and the domain logic they run.
//!
//! Everything here talks to the outside world only through the traits in [`ports`]
//! (Telegram, the LLM, storage); the binary crate implements them. That keeps this crate
//! testable with in-memory fakes, without a network.
//!
//! The main pieces:
//! - [`router::SessionRouter`] shards users over N arbiters and activates sessions on demand;
//! - [`session::SessionActor`] handles one user's events strictly one at a time, survives
//!   panics in its own work and passivates when idle;
//! - [`persona`] and [`prompt`] turn a persona and a history into an LLM request.

pub mod conversation;
pub mod event;
pub mod gateway;
pub mod metrics;
pub mod persona;
pub mod ports;
pub mod prompt;
pub mod resilience;
pub mod router;
pub mod safety;
pub mod session;
pub mod streaming;
pub mod supervision;
pub mod texts;

#[cfg(test)]
mod testing;
