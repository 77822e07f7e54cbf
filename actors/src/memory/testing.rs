//! In-memory memory ports for unit tests: a store in a mutex, and an embedder that gives
//! similar texts similar vectors (hashed bags of words), which can be made to fail or hang.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::memory::normalise;
use crate::ports::memory::{
    Embedder, MemoryId, MemoryStore, NewMemory, StoredMemory, StoredSummary,
};
use crate::ports::{DialogId, LlmError, StoreError, UserId};
use crate::sync::lock;

/// One stored memory, with its history fields.
#[derive(Debug, Clone)]
pub struct Row {
    pub user_id: UserId,
    pub memory: StoredMemory,
    pub superseded_by: Option<MemoryId>,
}

#[derive(Debug, Default)]
struct Data {
    rows: Vec<Row>,
    next_id: MemoryId,
    summaries: HashMap<DialogId, StoredSummary>,
    cursors: HashMap<DialogId, i64>,
}

/// Memories in a mutex.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    data: Mutex<Data>,
}

impl MemoryLedger {
    /// Every row of the user, superseded ones included.
    pub fn rows(&self, user_id: UserId) -> Vec<Row> {
        lock(&self.data)
            .rows
            .iter()
            .filter(|row| row.user_id == user_id)
            .cloned()
            .collect()
    }

    pub fn summary(&self, dialog_id: DialogId) -> Option<StoredSummary> {
        lock(&self.data).summaries.get(&dialog_id).cloned()
    }

    pub fn cursor(&self, dialog_id: DialogId) -> Option<i64> {
        lock(&self.data).cursors.get(&dialog_id).copied()
    }
}

#[async_trait]
impl MemoryStore for MemoryLedger {
    async fn current_memories(&self, user_id: UserId) -> Result<Vec<StoredMemory>, StoreError> {
        Ok(self
            .rows(user_id)
            .into_iter()
            .filter(|row| row.superseded_by.is_none())
            .map(|row| row.memory)
            .collect())
    }

    async fn add_memory(&self, memory: &NewMemory) -> Result<MemoryId, StoreError> {
        let mut data = lock(&self.data);
        data.next_id += 1;
        let id = data.next_id;
        data.rows.push(Row {
            user_id: memory.user_id,
            memory: StoredMemory {
                id,
                persona_id: memory.persona_id.clone(),
                text: memory.text.clone(),
                category: memory.category.clone(),
                importance: memory.importance,
                embedding: memory.embedding.clone(),
                content_hash: memory.content_hash.clone(),
                created_at: memory.at,
                confirmed_at: memory.at,
            },
            superseded_by: None,
        });
        Ok(id)
    }

    async fn confirm_memory(
        &self,
        user_id: UserId,
        id: MemoryId,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        let row = data
            .rows
            .iter_mut()
            .find(|row| row.user_id == user_id && row.memory.id == id);
        if let Some(row) = row {
            row.memory.confirmed_at = at;
        }
        Ok(())
    }

    async fn supersede_memory(
        &self,
        old: MemoryId,
        memory: &NewMemory,
    ) -> Result<MemoryId, StoreError> {
        let id = self.add_memory(memory).await?;
        let mut data = lock(&self.data);
        let row = data.rows.iter_mut().find(|row| {
            row.user_id == memory.user_id && row.memory.id == old && row.superseded_by.is_none()
        });
        if let Some(row) = row {
            row.superseded_by = Some(id);
        }
        Ok(id)
    }

    async fn forget_memories(&self, user_id: UserId, ids: &[MemoryId]) -> Result<u64, StoreError> {
        let mut data = lock(&self.data);
        let before = data.rows.len();
        data.rows
            .retain(|row| row.user_id != user_id || !ids.contains(&row.memory.id));
        Ok((before - data.rows.len()) as u64)
    }

    async fn save_summary(&self, summary: &StoredSummary, _at: i64) -> Result<(), StoreError> {
        lock(&self.data)
            .summaries
            .insert(summary.dialog_id, summary.clone());
        Ok(())
    }

    async fn set_extracted_through(
        &self,
        dialog_id: DialogId,
        message_id: i64,
    ) -> Result<(), StoreError> {
        lock(&self.data).cursors.insert(dialog_id, message_id);
        Ok(())
    }

    async fn forget_user(&self, user_id: UserId) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        data.rows.retain(|row| row.user_id != user_id);
        Ok(())
    }
}

/// Dimensions of [`WordEmbedder`]'s vectors.
pub const DIMENSIONS: usize = 64;

/// Embeds a text as the counts of its words hashed into [`DIMENSIONS`] buckets: texts that
/// share words point the same way.
#[derive(Debug, Default)]
pub struct WordEmbedder {
    failing: AtomicBool,
    /// Each call waits this long (ms) first.
    delay_ms: AtomicUsize,
    pub calls: AtomicUsize,
}

impl WordEmbedder {
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }
}

/// The vector [`WordEmbedder`] gives `text`.
pub fn word_vector(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0; DIMENSIONS];
    for word in normalise(text).split(' ').filter(|word| !word.is_empty()) {
        let bucket = word.bytes().fold(5381_u64, |hash, byte| {
            hash.wrapping_mul(33) ^ u64::from(byte)
        });
        vector[(bucket % DIMENSIONS as u64) as usize] += 1.0;
    }
    vector
}

#[async_trait]
impl Embedder for WordEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(LlmError::Status {
                status: 503,
                message: "embeddings down".into(),
                retry_after: None,
            });
        }
        Ok(texts.iter().map(|text| word_vector(text)).collect())
    }
}
