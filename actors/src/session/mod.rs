//! Sessions: one virtual actor per Telegram user, sharded over arbiters.
//!
//! Imports point one way, from the top of this list to the bottom:
//!
//! - [`router`]: the shards (one actor per arbiter) that activate and passivate sessions;
//! - [`actor`]: the session actor: one event at a time, a bounded queue, /stop at once,
//!   supervision by its guard, passivation when idle;
//! - `handlers`: what one event does (commands, buttons, messages), one file per concern;
//! - `streaming`: writing a persona's reply as it streams from the LLM, as a message draft
//!   or into a placeholder ([`drafts`] decides which);
//! - `memory`: recall before a reply, and the memory keeper's jobs a session asks for;
//! - `turn`, `keyboards`, `delivery`: one event's context, the keyboards, sending and
//!   storing;
//! - [`buttons`]: the button wire protocol ([`buttons::ButtonData`]);
//! - [`messages`]: the messages between shards and sessions;
//! - [`state`]: the session's state and what every session shares.

pub mod actor;
pub mod buttons;
mod delivery;
pub mod drafts;
mod handlers;
mod keyboards;
mod memory;
pub mod messages;
pub mod router;
pub mod state;
mod streaming;
mod turn;

#[cfg(test)]
mod tests;

pub use drafts::{DraftSupport, StreamingMode};
pub use router::SessionRouter;
pub use state::{SLOT_COUNT, SessionDeps, SessionSettings};
