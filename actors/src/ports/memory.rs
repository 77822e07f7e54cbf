//! Long-term memory's ports: an OpenAI-compatible embeddings endpoint (reached through the
//! gateway, with its own breaker and limits) and the store of memories and summaries.

use async_trait::async_trait;

use super::{DialogId, LlmError, StoreError, UserId};

/// The storage id of a memory.
pub type MemoryId = i64;

/// An OpenAI-compatible `POST /embeddings` endpoint.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// One vector per text, in the order of `texts`.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError>;
}

/// A memory as stored (current ones only are ever loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMemory {
    pub id: MemoryId,
    /// The persona it belongs to; `None` for the whole user.
    pub persona_id: Option<String>,
    pub text: String,
    pub category: String,
    pub importance: u8,
    /// A unit vector.
    pub embedding: Vec<f32>,
    pub content_hash: String,
    pub created_at: i64,
    pub confirmed_at: i64,
}

/// A memory to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub user_id: UserId,
    pub persona_id: Option<String>,
    /// The dialog it was learnt in.
    pub dialog_id: Option<DialogId>,
    pub text: String,
    pub category: String,
    pub importance: u8,
    pub embedding: Vec<f32>,
    pub content_hash: String,
    /// When it was learnt (Unix ms).
    pub at: i64,
}

/// The summary of a dialog's earlier part, standing in for it in prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSummary {
    pub dialog_id: DialogId,
    /// The last message it covers; the prompt's history starts after it.
    pub through_message_id: i64,
    pub text: String,
    pub token_count: u32,
}

/// Where memories and summaries are kept.
#[async_trait]
pub trait MemoryStore: Send + Sync + 'static {
    /// The user's current memories (neither superseded nor forgotten), oldest first.
    async fn current_memories(&self, user_id: UserId) -> Result<Vec<StoredMemory>, StoreError>;

    async fn add_memory(&self, memory: &NewMemory) -> Result<MemoryId, StoreError>;

    /// Records that the user said `id` again (a near duplicate) at `at`.
    async fn confirm_memory(
        &self,
        user_id: UserId,
        id: MemoryId,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Adds `memory` and marks `old` superseded by it at `memory.at`, in one transaction;
    /// the old one stays as history and is never recalled again.
    async fn supersede_memory(
        &self,
        old: MemoryId,
        memory: &NewMemory,
    ) -> Result<MemoryId, StoreError>;

    /// Deletes the user's memories `ids` (and their history); returns how many went.
    async fn forget_memories(&self, user_id: UserId, ids: &[MemoryId]) -> Result<u64, StoreError>;

    /// Stores a dialog's summary (replacing the one before).
    async fn save_summary(&self, summary: &StoredSummary, at: i64) -> Result<(), StoreError>;

    /// Records that facts were extracted from a dialog's messages up to `message_id`.
    async fn set_extracted_through(
        &self,
        dialog_id: DialogId,
        message_id: i64,
    ) -> Result<(), StoreError>;

    /// Deletes everything the user said and everything derived from it: messages, dialogs,
    /// memories, summaries, token counts and the profile. Payment records stay (the law
    /// keeps them), holding no message content; so do the ids of accepted updates (a handled
    /// update keeps no content), until they are pruned.
    async fn forget_user(&self, user_id: UserId) -> Result<(), StoreError>;
}
