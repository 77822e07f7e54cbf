//! Long-term memory: the persona remembers the user.
//!
//! ```text
//!  session ── Extract (after more than N new messages; when the dialog goes idle) ──┐
//!  session ── Summarise (the history outgrew the prompt) ───────────────────────────┤
//!  session ── Forget (/memory's buttons, /forget_me): at once, or after the same user's
//!             job in progress; answered when done ───────────────────────────────────┤
//!                                                                                   ▼
//!                                  MemoryKeeper (one actor, its own bounded queue, one job
//!                                  at a time; LLM and embeddings through the gateway)
//!                                     │ MemoryListener: memories changed, summary saved
//!                                     ▼
//!                              the user's session (if live): drops its cached vectors,
//!                              takes the new summary
//! ```
//!
//! Recall is not the keeper's: the session embeds the user's message (within a deadline)
//! and ranks the memories it caches, so a reply never waits behind extraction work. See
//! [`crate::domain::memory`] for the facts, the scores and why no vector database is used.
//!
//! Files: [`keeper`] the actor (it follows the supervision template of
//! [`crate::supervision::guard`]), [`messages`] what it is sent, [`handlers`] what each job
//! does, [`recall`] the session's side.

pub mod handlers;
pub mod keeper;
pub mod messages;
pub mod recall;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::domain::memory::MemorySettings;
use crate::domain::prompt::TokenCounter;
use crate::metrics::Metrics;
use crate::ports::memory::{Embedder, MemoryStore, StoredSummary};
use crate::ports::{Clock, LanguageModel, UserId};
use crate::supervision::Supervisor;

pub use keeper::{KeeperHandle, MemoryKeeper};

/// What the memory keeper changed for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryNews {
    /// Memories were added or replaced: cached vectors are stale.
    Memories,
    /// A dialog has a new summary.
    Summary(StoredSummary),
}

/// Told by the keeper when a user's memory changed (the session router passes it to the
/// user's live session).
pub trait MemoryListener: Send + Sync + 'static {
    fn memory_changed(&self, user_id: UserId, news: MemoryNews);
}

/// What the keeper needs.
pub struct KeeperDeps {
    /// The LLM gateway (extraction and summaries are their own purposes).
    pub llm: Arc<dyn LanguageModel>,
    /// The gateway's embeddings provider.
    pub embedder: Arc<dyn Embedder>,
    pub store: Arc<dyn MemoryStore>,
    pub settings: MemorySettings,
    pub counter: TokenCounter,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub clock: Arc<dyn Clock>,
}

/// What sessions need of memory: the keeper, the embeddings for recall, the store for
/// loading memories, and the settings.
#[derive(Clone)]
pub struct MemoryDeps {
    pub keeper: KeeperHandle,
    pub embedder: Arc<dyn Embedder>,
    pub store: Arc<dyn MemoryStore>,
    pub settings: MemorySettings,
}
