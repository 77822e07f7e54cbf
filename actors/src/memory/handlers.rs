//! What each of the keeper's jobs does. Each runs inside the keeper's guard, one at a time.

use std::collections::HashSet;
use std::time::Duration;

use crate::domain::memory::{
    Fact, FactsError, content_hash, cosine, extraction_correction, extraction_prompt,
    keyword_overlap, keywords, parse_facts, summary_prompt, transcript, unit,
};
use crate::metrics::{ErrorKind, ExtractionFailure, MemorySaved};
use crate::ports::memory::{MemoryId, NewMemory, StoredMemory, StoredSummary};
use crate::ports::{ChatMessage, Completion, CompletionRequest, LlmError, Purpose, Role, UserId};

use super::KeeperDeps;
use super::messages::{ExtractJob, ForgetError, SummariseJob};

/// Stored facts shown to the model with new messages, at most.
const RELATED_FACTS: usize = 15;

/// Longest the keeper waits for a turn of memory work's rate limit, each time.
const MAX_TURN_WAIT: Duration = Duration::from_secs(60);
/// Turns waited for before a job gives up.
const TURNS: usize = 3;

/// Asks the LLM, waiting for memory work's turn when its rate limit says so: the keeper
/// goes at the pace of its own bucket (its queue fills meanwhile, and drops its oldest job
/// when full) instead of losing the job.
async fn complete_in_turn(
    deps: &KeeperDeps,
    request: CompletionRequest,
) -> Result<Completion, LlmError> {
    for _ in 0..TURNS {
        match deps.llm.complete(request.clone()).await {
            Err(LlmError::RateLimited { retry_in }) => {
                tokio::time::sleep(retry_in.min(MAX_TURN_WAIT)).await;
            }
            answered => return answered,
        }
    }
    deps.llm.complete(request).await
}

fn failed(deps: &KeeperDeps, reason: ExtractionFailure) {
    deps.metrics
        .memory_extraction_failures_total
        .with_label_values(&[reason.as_str()])
        .inc();
}

/// Extracts durable facts from a dialog's new messages and stores them: an exact duplicate
/// (same normal form) is skipped, a near duplicate refreshes the stored memory, a fact the
/// model says contradicts a stored one supersedes it, anything else is added. Malformed
/// answers are asked again once, then skipped (counted), never stored half-read. Returns
/// whether the user's current memories changed.
pub async fn extract(deps: &KeeperDeps, job: &ExtractJob) -> bool {
    let memories = match deps.store.current_memories(job.user_id).await {
        Ok(memories) => memories,
        Err(error) => {
            tracing::warn!(%error, "could not load memories for an extraction");
            deps.metrics.count_error(ErrorKind::Storage);
            failed(deps, ExtractionFailure::Storage);
            return false;
        }
    };
    let in_scope: Vec<&StoredMemory> = memories
        .iter()
        .filter(|memory| {
            memory
                .persona_id
                .as_deref()
                .is_none_or(|persona| persona == job.persona_id)
        })
        .collect();
    let related = related_facts(&in_scope, &job.messages);
    let related_texts: Vec<&str> = related.iter().map(|memory| memory.text.as_str()).collect();
    let conversation = transcript(&job.messages, &job.user_name, &job.persona_name);
    let mut messages = vec![
        ChatMessage {
            role: Role::System,
            content: extraction_prompt(&job.user_name, &related_texts),
        },
        ChatMessage {
            role: Role::User,
            content: conversation,
        },
    ];
    let facts = match ask_for_facts(deps, &messages, related.len()).await {
        Ok(facts) => facts,
        Err(Asked::Malformed { answer, error }) => {
            tracing::info!(%error, "the model's facts were malformed; asking once more");
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: answer,
            });
            messages.push(ChatMessage {
                role: Role::User,
                content: extraction_correction(&error),
            });
            match ask_for_facts(deps, &messages, related.len()).await {
                Ok(facts) => facts,
                Err(Asked::Malformed { error, .. }) => {
                    tracing::warn!(%error, "the model's facts were malformed twice; skipped");
                    failed(deps, ExtractionFailure::Malformed);
                    // The same messages would give the same answer: move on.
                    mark_extracted(deps, job).await;
                    return false;
                }
                Err(Asked::Failed) => return false,
            }
        }
        Err(Asked::Failed) => return false,
    };
    let changed = store_facts(deps, job, &memories, &related, facts).await;
    if changed.is_some() {
        mark_extracted(deps, job).await;
    }
    changed.unwrap_or(false)
}

/// The stored facts most related to the new messages (by keywords; all when few).
fn related_facts<'a>(
    in_scope: &[&'a StoredMemory],
    messages: &[(Role, String)],
) -> Vec<&'a StoredMemory> {
    if in_scope.len() <= RELATED_FACTS {
        return in_scope.to_vec();
    }
    let said: String = messages
        .iter()
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let said = keywords(&said);
    let mut ranked: Vec<(f32, &StoredMemory)> = in_scope
        .iter()
        .map(|memory| (keyword_overlap(&said, &keywords(&memory.text)), *memory))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .take(RELATED_FACTS)
        .map(|(_, memory)| memory)
        .collect()
}

enum Asked {
    Malformed {
        answer: String,
        error: FactsError,
    },
    /// The LLM failed (counted); nothing to retry here.
    Failed,
}

async fn ask_for_facts(
    deps: &KeeperDeps,
    messages: &[ChatMessage],
    related: usize,
) -> Result<Vec<Fact>, Asked> {
    let request = CompletionRequest::derived(messages.to_vec(), Purpose::Memory);
    match complete_in_turn(deps, request).await {
        Ok(completion) => {
            parse_facts(&completion.text, related).map_err(|error| Asked::Malformed {
                answer: completion.text,
                error,
            })
        }
        Err(error) => {
            tracing::warn!(%error, "memory extraction: the LLM failed");
            failed(deps, ExtractionFailure::Llm);
            Err(Asked::Failed)
        }
    }
}

/// Stores each fact (see [`extract`]); `None` when embeddings or storage failed.
async fn store_facts(
    deps: &KeeperDeps,
    job: &ExtractJob,
    memories: &[StoredMemory],
    related: &[&StoredMemory],
    facts: Vec<Fact>,
) -> Option<bool> {
    // A duplicate is the same fact in the same scope (another persona's own fact is not
    // this persona's).
    let mut seen: HashSet<(Option<String>, String)> = memories
        .iter()
        .map(|memory| (memory.persona_id.clone(), memory.content_hash.clone()))
        .collect();
    let fresh: Vec<(Fact, String)> = facts
        .into_iter()
        .filter_map(|fact| {
            let hash = content_hash(&fact.text);
            let scope = deps.settings.scope_of(fact.category, &job.persona_id);
            if seen.insert((scope, hash.clone())) {
                Some((fact, hash))
            } else {
                count_saved(deps, MemorySaved::Duplicate);
                None
            }
        })
        .collect();
    if fresh.is_empty() {
        return Some(false);
    }
    let texts: Vec<String> = fresh.iter().map(|(fact, _)| fact.text.clone()).collect();
    let vectors = match deps.embedder.embed(&texts).await {
        Ok(vectors) => vectors,
        Err(error) => {
            tracing::warn!(%error, "memory extraction: could not embed the facts");
            failed(deps, ExtractionFailure::Embedding);
            return None;
        }
    };
    let now = deps.clock.now_millis();
    let mut changed = false;
    for ((fact, hash), vector) in fresh.into_iter().zip(vectors) {
        let replaced = fact
            .replaces
            .and_then(|number| number.checked_sub(1))
            .and_then(|index| related.get(index));
        // A correction keeps the corrected fact's reach: a user-wide fact stays user-wide.
        let persona_id = match replaced {
            Some(old) if old.persona_id.is_none() => None,
            _ => deps.settings.scope_of(fact.category, &job.persona_id),
        };
        let memory = NewMemory {
            user_id: job.user_id,
            persona_id: persona_id.clone(),
            dialog_id: Some(job.dialog_id),
            text: fact.text.clone(),
            category: fact.category.as_str().to_owned(),
            importance: fact.importance,
            embedding: unit(vector),
            content_hash: hash,
            at: now,
        };
        let replaced = replaced.map(|old| old.id);
        let near = memories
            .iter()
            .filter(|stored| stored.persona_id == persona_id)
            .map(|stored| (cosine(&stored.embedding, &memory.embedding), stored.id))
            .filter(|(similarity, _)| *similarity >= deps.settings.near_duplicate)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let stored = match (replaced, near) {
            (Some(old), _) => deps
                .store
                .supersede_memory(old, &memory)
                .await
                .map(|_| MemorySaved::Superseded),
            (None, Some((_, id))) => deps
                .store
                .confirm_memory(job.user_id, id, now)
                .await
                .map(|()| MemorySaved::Refreshed),
            (None, None) => deps
                .store
                .add_memory(&memory)
                .await
                .map(|_| MemorySaved::Added),
        };
        match stored {
            Ok(saved) => {
                count_saved(deps, saved);
                changed |= saved != MemorySaved::Refreshed;
            }
            Err(error) => {
                tracing::warn!(%error, "could not store a memory");
                deps.metrics.count_error(ErrorKind::Storage);
                failed(deps, ExtractionFailure::Storage);
                return None;
            }
        }
    }
    Some(changed)
}

fn count_saved(deps: &KeeperDeps, saved: MemorySaved) {
    deps.metrics
        .memory_saved_total
        .with_label_values(&[saved.as_str()])
        .inc();
}

async fn mark_extracted(deps: &KeeperDeps, job: &ExtractJob) {
    let stored = deps
        .store
        .set_extracted_through(job.dialog_id, job.through_message_id)
        .await;
    if let Err(error) = stored {
        tracing::warn!(%error, "could not store how far facts were extracted");
        deps.metrics.count_error(ErrorKind::Storage);
    }
}

/// Folds a dialog's earlier messages into its summary (a deterministic request, so the
/// gateway may serve it from its cache) and stores it.
pub async fn summarise(deps: &KeeperDeps, job: &SummariseJob) -> Option<StoredSummary> {
    let messages = vec![
        ChatMessage {
            role: Role::System,
            content: summary_prompt(job.previous.as_deref()),
        },
        ChatMessage {
            role: Role::User,
            content: transcript(&job.messages, &job.user_name, &job.persona_name),
        },
    ];
    let request = CompletionRequest::derived(messages, Purpose::Summary);
    let text = match complete_in_turn(deps, request).await {
        Ok(completion) => completion.text.trim().to_owned(),
        Err(error) => {
            tracing::warn!(%error, "could not summarise a dialog");
            return None;
        }
    };
    if text.is_empty() {
        return None;
    }
    let summary = StoredSummary {
        dialog_id: job.dialog_id,
        through_message_id: job.through_message_id,
        token_count: deps.counter.count(&text),
        text,
    };
    match deps
        .store
        .save_summary(&summary, deps.clock.now_millis())
        .await
    {
        Ok(()) => Some(summary),
        Err(error) => {
            tracing::warn!(%error, "could not store a summary");
            deps.metrics.count_error(ErrorKind::Storage);
            None
        }
    }
}

/// Forgets memories `ids` of the user, or everything of the user.
pub async fn forget(
    deps: &KeeperDeps,
    user_id: UserId,
    ids: Option<&[MemoryId]>,
) -> Result<u64, ForgetError> {
    let outcome = match ids {
        Some(ids) => deps.store.forget_memories(user_id, ids).await,
        None => deps.store.forget_user(user_id).await.map(|()| 0),
    };
    outcome.map_err(|error| {
        deps.metrics.count_error(ErrorKind::Storage);
        ForgetError::Storage(error.to_string())
    })
}
