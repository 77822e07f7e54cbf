//! vitte's actors and the domain logic they run.
//!
//! Everything here talks to the outside world only through the traits in [`ports`]
//! (Telegram, the LLM, storage, the clock); the binary crate implements them. That keeps this
//! crate testable with in-memory fakes, without a network.
//!
//! # Topology
//!
//! ```text
//!  ingress (Telegram webhook / polling, terminal chat)
//!     │ Inbound                     │ PreCheckout, PaymentReceived, PaymentRefunded,
//!     │                             │ SubscriptionChanged (and /admin: RefundByOperator)
//!     │                             ▼
//!     │                        PaymentDesk (one actor) ── PaymentsApi, PaymentStore ports
//!     │                             │ NotifyEntitlement (via the router)   ▲ SetRenewal
//!     ▼                             ▼                                      │ (/status)
//!  SessionRouter ── RouteEvent ──► SessionShard (one per arbiter, user_id → shard)
//!                                     │ Deliver            ▲ SessionIdle
//!                                     ▼                    │
//!                                  SessionActor (one per user, one event at a time)
//!                                     │ Passivate ◄────────┘ (when nothing is on its way)
//!        ┌────────────────────────────┼──────────────────────────┐
//!        ▼                            ▼                          ▼
//!  LlmGateway (a service:       Messenger port              SessionStore port
//!  breaker, limits, retries,    (Telegram Bot API,          (SQLite / PostgreSQL)
//!  cache, per-provider guard)    the terminal)
//!        │
//!        ▼
//!  LanguageModel port (OpenAI-compatible providers)
//! ```
//!
//! Sessions also queue jobs for the **MemoryKeeper** (one actor: fact extraction, story
//! summaries, forgetting; see [`memory`]), which tells them back through the router when a
//! user's memories or a dialog's summary changed; recall itself runs in the session.
//!
//! Every supervised component (sessions, the payment desk, the memory keeper, the gateway's
//! providers) runs its work through a [`supervision::Guard`]; the [`supervision::Supervisor`]
//! keeps each kind's policy and restart history and tells readiness when a kind is escalated.
//!
//! # Layout
//!
//! Imports point downward in this list: a file uses what is below it, never above.
//!
//! - [`session`]: the session actors, their router and their handlers (one folder per
//!   actor kind: the actor, its messages, its handlers and its tests);
//! - [`gateway`]: the LLM gateway, a supervised service (chat providers and the embeddings
//!   provider);
//! - [`memory`]: the memory keeper, its messages and handlers, and recall;
//! - [`payments`]: the payment desk, its messages and handlers (Telegram Stars purchases,
//!   subscriptions, refunds, the plans' sweep);
//! - [`scheduler`]: persistent jobs (plan and payment notices, reminders, recaps,
//!   milestones) and broadcasts, sent when due through the outbox;
//! - [`outbox`]: every message to Telegram, queued by priority and paced by Telegram's
//!   limits;
//! - [`supervision`]: the kinds, their policies, and the guard every actor runs under;
//! - [`metrics`]: every Prometheus metric;
//! - [`domain`]: what several actors share: events, personas, prompts, safety, texts;
//! - [`resilience`]: breaker, token bucket, backoff, restart intensity (pure, no clock);
//! - [`ports`]: the traits the outside world is reached through;
//! - [`sync`]: locks that survive a panic elsewhere.

pub mod domain;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod gateway;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod payments;
pub mod ports;
pub mod resilience;
pub mod scheduler;
pub mod session;
pub mod supervision;
pub mod sync;

#[cfg(test)]
mod testing;
