//! The ports: what the actors need from the outside world, as small traits.
//!
//! The binary implements them over Telegram (teloxide), an OpenAI-compatible HTTP API
//! (reqwest), SQL storage (diesel) and the system clock; unit tests implement them in memory
//! (see `testing`), and [`clock::ManualClock`] lets any test move time by hand.
//!
//! - [`messenger`]: messages to the user, and their keyboards;
//! - [`llm`]: completions, streamed or whole, and their errors;
//! - [`memory`]: embeddings, and the store of long-term memories and summaries;
//! - [`store`]: the durable state of sessions;
//! - [`payments`]: the Bot API's payment methods and the payment ledger;
//! - [`limits`]: rate limits and the response cache of the LLM gateway;
//! - [`clock`]: the time of day, and sleeping until a moment of it.

pub mod clock;
pub mod events;
pub mod limits;
pub mod llm;
pub mod memory;
pub mod messenger;
pub mod payments;
pub mod schedule;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use events::{EventKind, EventLog, LoggedEvent, Severity};
pub use limits::{RateLimiter, ResponseCache};
pub use llm::*;
pub use messenger::*;
pub use store::*;

/// A Telegram user id (also the key of a session).
pub type UserId = i64;
/// A Telegram chat id.
pub type ChatId = i64;
/// The storage id of a dialog.
pub type DialogId = i64;
