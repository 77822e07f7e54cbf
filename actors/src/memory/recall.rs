//! Recall, the session's side of memory: for each message the user writes, the top memories
//! in scope by the hybrid score, for the prompt's memory part.
//!
//! The session caches the user's memories with their vectors ([`MemoryIndex`]) while it
//! lives, so after the one embedding call per message recall is CPU only: an exact scan of
//! a few hundred unit vectors. When the keeper changes the user's memories the cache is
//! dropped and read again from storage on the next recall (one read, outside the embedding
//! deadline): news that carried the memories themselves could arrive after a /memory
//! deletion and bring a forgotten fact back into the cache; storage cannot. The embedding call has a deadline; past it, or when it fails,
//! the reply goes without memories and `memory_recall_skipped_total{reason}` counts it.

use std::collections::HashSet;
use std::time::Instant;

use crate::domain::memory::{cosine, hybrid_score, keyword_overlap, keywords, memory_section};
use crate::metrics::{Metrics, RecallSkipped};
use crate::ports::UserId;
use crate::ports::memory::{MemoryId, StoredMemory};

use super::MemoryDeps;

/// One memory as recall needs it.
#[derive(Debug, Clone)]
pub struct IndexedMemory {
    pub id: MemoryId,
    /// `None`: the whole user's.
    pub persona_id: Option<String>,
    pub text: String,
    keywords: HashSet<String>,
    vector: Vec<f32>,
}

/// A user's current memories, cached in their session.
#[derive(Debug, Clone, Default)]
pub struct MemoryIndex {
    entries: Vec<IndexedMemory>,
}

impl MemoryIndex {
    pub fn new(stored: Vec<StoredMemory>) -> MemoryIndex {
        MemoryIndex {
            entries: stored
                .into_iter()
                .map(|memory| IndexedMemory {
                    id: memory.id,
                    persona_id: memory.persona_id,
                    keywords: keywords(&memory.text),
                    text: memory.text,
                    vector: memory.embedding,
                })
                .collect(),
        }
    }

    /// The memories `persona_id` may recall: its own and the user's, oldest first.
    pub fn in_scope<'a>(&'a self, persona_id: &'a str) -> impl Iterator<Item = &'a IndexedMemory> {
        self.entries.iter().filter(move |memory| {
            memory
                .persona_id
                .as_deref()
                .is_none_or(|persona| persona == persona_id)
        })
    }

    /// The best `top_k` memories in scope scoring at least `threshold`, best first.
    pub fn rank<'a>(
        &'a self,
        persona_id: &'a str,
        query_vector: &[f32],
        query_text: &str,
        settings: &crate::domain::memory::MemorySettings,
    ) -> Vec<&'a IndexedMemory> {
        let query_keywords = keywords(query_text);
        let mut scored: Vec<(f32, &IndexedMemory)> = self
            .in_scope(persona_id)
            .map(|memory| {
                let score = hybrid_score(
                    cosine(&memory.vector, query_vector),
                    keyword_overlap(&query_keywords, &memory.keywords),
                    settings.keyword_weight,
                );
                (score, memory)
            })
            .filter(|(score, _)| *score >= settings.threshold)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(settings.top_k)
            .map(|(_, memory)| memory)
            .collect()
    }

    /// Drops forgotten memories from the cache.
    pub fn remove(&mut self, ids: &[MemoryId]) {
        self.entries.retain(|memory| !ids.contains(&memory.id));
    }
}

/// The memory part of the prompt for a reply to `query` by `persona_id`: loads the user's
/// memories into `index` when it is empty, embeds the query within the deadline, ranks.
/// Empty when memory is off, nothing is remembered, or recall was skipped (counted).
pub async fn recall(
    memory: &MemoryDeps,
    metrics: &Metrics,
    index: &mut Option<MemoryIndex>,
    user_id: UserId,
    persona_id: &str,
    query: &str,
    count_tokens: impl Fn(&str) -> u32,
) -> String {
    let settings = &memory.settings;
    if !settings.enabled || query.trim().is_empty() {
        return String::new();
    }
    let skipped = |reason: RecallSkipped| {
        metrics
            .memory_recall_skipped_total
            .with_label_values(&[reason.as_str()])
            .inc();
        String::new()
    };
    if index.is_none() {
        match memory.store.current_memories(user_id).await {
            Ok(stored) => *index = Some(MemoryIndex::new(stored)),
            Err(error) => {
                tracing::warn!(%error, "could not load memories; the reply goes without them");
                return skipped(RecallSkipped::Storage);
            }
        }
    }
    let Some(loaded) = index.as_ref() else {
        return String::new();
    };
    if loaded.in_scope(persona_id).next().is_none() {
        return String::new();
    }
    let started = Instant::now();
    let texts = [query.to_owned()];
    let embedded = tokio::time::timeout(settings.recall_deadline, memory.embedder.embed(&texts));
    let vector = match embedded.await {
        Ok(Ok(mut vectors)) if !vectors.is_empty() => {
            crate::domain::memory::unit(vectors.remove(0))
        }
        Ok(Ok(_)) | Ok(Err(_)) => return skipped(RecallSkipped::EmbeddingFailed),
        Err(_) => return skipped(RecallSkipped::Deadline),
    };
    metrics
        .memory_recall_seconds
        .with_label_values(&["embed"])
        .observe(started.elapsed().as_secs_f64());
    let ranking = Instant::now();
    let best = loaded.rank(persona_id, &vector, query, settings);
    let texts: Vec<&str> = best.iter().map(|memory| memory.text.as_str()).collect();
    let section = memory_section(&texts, settings.prompt_tokens, count_tokens);
    metrics
        .memory_recall_seconds
        .with_label_values(&["rank"])
        .observe(ranking.elapsed().as_secs_f64());
    section
}
