//! Long-term memory's storage: the `MemoryStore` port over both backends. Vectors are
//! stored as compact bytes (little-endian `f32`s) and searched exactly, per user, in the
//! session (see `vitte_actors::domain::memory` for why no vector index is needed).

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use vitte_actors::domain::memory::{vector_from_bytes, vector_to_bytes};
use vitte_actors::ports::memory::{MemoryId, MemoryStore, NewMemory, StoredMemory, StoredSummary};
use vitte_actors::ports::{DialogId, MessageStatus, Role, StoreError, UserId};

/// How long the times of forgotten replies are kept for the daily limit: two days cover any
/// zone's "today".
const COUNTED_FOR_MS: i64 = 2 * 86_400_000;

use super::schema::{
    dialog_summaries, dialogs, forgotten_replies, memories, messages, token_usage, users,
};
use super::{Database, Pool, SqliteConn, StorageError};
use diesel_async::AsyncPgConnection;

/// A memory's row as recall loads it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = memories)]
struct MemoryRow {
    id: i64,
    persona_id: Option<String>,
    text: String,
    category: String,
    importance: i32,
    embedding: Vec<u8>,
    content_hash: String,
    created_at: i64,
    confirmed_at: i64,
}

impl From<MemoryRow> for StoredMemory {
    fn from(row: MemoryRow) -> StoredMemory {
        StoredMemory {
            id: row.id,
            persona_id: row.persona_id,
            text: row.text,
            category: row.category,
            importance: u8::try_from(row.importance).unwrap_or(1),
            embedding: vector_from_bytes(&row.embedding),
            content_hash: row.content_hash,
            created_at: row.created_at,
            confirmed_at: row.confirmed_at,
        }
    }
}

/// Inserts `$memory` and evaluates to its id (an async block over `$conn`).
macro_rules! insert_memory {
    ($conn:ident, $memory:expr) => {{
        let memory: &NewMemory = $memory;
        diesel::insert_into(memories::table)
            .values((
                memories::user_id.eq(memory.user_id),
                memories::persona_id.eq(&memory.persona_id),
                memories::dialog_id.eq(memory.dialog_id),
                memories::text.eq(&memory.text),
                memories::category.eq(&memory.category),
                memories::importance.eq(i32::from(memory.importance)),
                memories::embedding.eq(vector_to_bytes(&memory.embedding)),
                memories::content_hash.eq(&memory.content_hash),
                memories::created_at.eq(memory.at),
                memories::confirmed_at.eq(memory.at),
            ))
            .returning(memories::id)
            .get_result::<i64>($conn)
            .await?
    }};
}

#[async_trait]
impl MemoryStore for Database {
    async fn current_memories(&self, user_id: UserId) -> Result<Vec<StoredMemory>, StoreError> {
        with_connection!(self, |conn| {
            let rows = memories::table
                .filter(memories::user_id.eq(user_id))
                .filter(memories::superseded_by.is_null())
                .filter(memories::invalidated_at.is_null())
                .order(memories::id.asc())
                .select(MemoryRow::as_select())
                .load::<MemoryRow>(conn)
                .await?;
            Ok(rows.into_iter().map(StoredMemory::from).collect())
        })
        .map_err(StoreError::from)
    }

    async fn add_memory(&self, memory: &NewMemory) -> Result<MemoryId, StoreError> {
        let memory = memory.clone();
        with_connection!(self, |conn| Ok(insert_memory!(conn, &memory))).map_err(StoreError::from)
    }

    async fn confirm_memory(
        &self,
        user_id: UserId,
        id: MemoryId,
        at: i64,
    ) -> Result<(), StoreError> {
        with_connection!(self, |conn| {
            diesel::update(memories::table)
                .filter(memories::id.eq(id))
                .filter(memories::user_id.eq(user_id))
                .set(memories::confirmed_at.eq(at))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn supersede_memory(
        &self,
        old: MemoryId,
        memory: &NewMemory,
    ) -> Result<MemoryId, StoreError> {
        let memory = memory.clone();
        in_transaction!(self, |conn| {
            let id = insert_memory!(conn, &memory);
            // Only the user's own, current fact: a stale number supersedes nothing.
            diesel::update(memories::table)
                .filter(memories::id.eq(old))
                .filter(memories::user_id.eq(memory.user_id))
                .filter(memories::superseded_by.is_null())
                .set((
                    memories::superseded_by.eq(Some(id)),
                    memories::invalidated_at.eq(Some(memory.at)),
                ))
                .execute(conn)
                .await?;
            Ok(id)
        })
        .map_err(StoreError::from)
    }

    async fn forget_memories(&self, user_id: UserId, ids: &[MemoryId]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        in_transaction!(self, |conn| {
            // The facts and their history: superseded versions go with what replaced them.
            let mut doomed = ids.clone();
            loop {
                let older: Vec<i64> = memories::table
                    .filter(memories::user_id.eq(user_id))
                    .filter(memories::superseded_by.eq_any(&doomed))
                    .filter(memories::id.ne_all(&doomed))
                    .select(memories::id)
                    .load(conn)
                    .await?;
                if older.is_empty() {
                    break;
                }
                doomed.extend(older);
            }
            let deleted = diesel::delete(
                memories::table
                    .filter(memories::user_id.eq(user_id))
                    .filter(memories::id.eq_any(&doomed)),
            )
            .execute(conn)
            .await?;
            let current = deleted.min(ids.len());
            Ok(current as u64)
        })
        .map_err(StoreError::from)
    }

    async fn save_summary(&self, summary: &StoredSummary, at: i64) -> Result<(), StoreError> {
        let summary = summary.clone();
        let tokens = i32::try_from(summary.token_count).unwrap_or(i32::MAX);
        with_connection!(self, |conn| {
            diesel::insert_into(dialog_summaries::table)
                .values((
                    dialog_summaries::dialog_id.eq(summary.dialog_id),
                    dialog_summaries::through_message_id.eq(summary.through_message_id),
                    dialog_summaries::text.eq(&summary.text),
                    dialog_summaries::token_count.eq(tokens),
                    dialog_summaries::updated_at.eq(at),
                ))
                .on_conflict(dialog_summaries::dialog_id)
                .do_update()
                .set((
                    dialog_summaries::through_message_id.eq(summary.through_message_id),
                    dialog_summaries::text.eq(&summary.text),
                    dialog_summaries::token_count.eq(tokens),
                    dialog_summaries::updated_at.eq(at),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn set_extracted_through(
        &self,
        dialog_id: DialogId,
        message_id: i64,
    ) -> Result<(), StoreError> {
        with_connection!(self, |conn| {
            diesel::update(dialogs::table.find(dialog_id))
                .filter(dialogs::extracted_through.lt(message_id))
                .set(dialogs::extracted_through.eq(message_id))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn forget_user(&self, user_id: UserId) -> Result<(), StoreError> {
        let kept_since = self.now() - COUNTED_FOR_MS;
        in_transaction!(self, |conn| {
            let theirs = dialogs::table
                .filter(dialogs::user_id.eq(user_id))
                .select(dialogs::id);
            // The daily limit counts replies from their messages: the recent ones' times stay.
            let recent: Vec<i64> = messages::table
                .filter(messages::dialog_id.eq_any(theirs))
                .filter(messages::created_at.ge(kept_since))
                .filter(messages::role.eq(Role::Assistant.as_str()))
                .filter(messages::provider.is_not_null())
                .filter(messages::status.ne(MessageStatus::Pending.as_str()))
                .select(messages::created_at)
                .load(conn)
                .await?;
            for at in recent {
                diesel::insert_into(forgotten_replies::table)
                    .values((
                        forgotten_replies::user_id.eq(user_id),
                        forgotten_replies::created_at.eq(at),
                    ))
                    .execute(conn)
                    .await?;
            }
            diesel::delete(
                forgotten_replies::table
                    .filter(forgotten_replies::user_id.eq(user_id))
                    .filter(forgotten_replies::created_at.lt(kept_since)),
            )
            .execute(conn)
            .await?;
            diesel::delete(messages::table.filter(messages::dialog_id.eq_any(theirs)))
                .execute(conn)
                .await?;
            diesel::delete(
                dialog_summaries::table.filter(dialog_summaries::dialog_id.eq_any(theirs)),
            )
            .execute(conn)
            .await?;
            diesel::delete(memories::table.filter(memories::user_id.eq(user_id)))
                .execute(conn)
                .await?;
            diesel::delete(token_usage::table.filter(token_usage::user_id.eq(user_id)))
                .execute(conn)
                .await?;
            // The inbox keeps its update ids (so a redelivery is still recognised, until they
            // are pruned): a handled update's payload is gone already, and an unhandled one is
            // still on its way to the session.
            diesel::delete(dialogs::table.filter(dialogs::user_id.eq(user_id)))
                .execute(conn)
                .await?;
            diesel::delete(users::table.find(user_id))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }
}

/// One memory as operators (and tests) see it, history included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRecord {
    pub id: i64,
    pub persona_id: Option<String>,
    pub text: String,
    pub category: String,
    /// Set when a newer fact replaced this one.
    pub superseded_by: Option<i64>,
    pub created_at: i64,
    pub confirmed_at: i64,
}

/// How much of a user's data is stored, per kind (what /forget_me must empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserFootprint {
    pub profile: i64,
    pub dialogs: i64,
    pub messages: i64,
    pub memories: i64,
    pub summaries: i64,
    pub token_usage: i64,
    pub payments: i64,
}

impl Database {
    /// Every memory of a user, superseded ones included, oldest first.
    pub async fn memory_records(&self, user_id: UserId) -> Result<Vec<MemoryRecord>, StorageError> {
        with_connection!(self, |conn| {
            let rows = memories::table
                .filter(memories::user_id.eq(user_id))
                .order(memories::id.asc())
                .select((
                    memories::id,
                    memories::persona_id,
                    memories::text,
                    memories::category,
                    memories::superseded_by,
                    memories::created_at,
                    memories::confirmed_at,
                ))
                .load::<(i64, Option<String>, String, String, Option<i64>, i64, i64)>(conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(id, persona_id, text, category, superseded_by, created_at, confirmed_at)| {
                        MemoryRecord {
                            id,
                            persona_id,
                            text,
                            category,
                            superseded_by,
                            created_at,
                            confirmed_at,
                        }
                    },
                )
                .collect())
        })
    }

    /// The summaries of a user's dialogs: (dialog id, covered through message id, text).
    pub async fn summaries(
        &self,
        user_id: UserId,
    ) -> Result<Vec<(i64, i64, String)>, StorageError> {
        with_connection!(self, |conn| {
            let theirs = dialogs::table
                .filter(dialogs::user_id.eq(user_id))
                .select(dialogs::id);
            let rows = dialog_summaries::table
                .filter(dialog_summaries::dialog_id.eq_any(theirs))
                .order(dialog_summaries::dialog_id.asc())
                .select((
                    dialog_summaries::dialog_id,
                    dialog_summaries::through_message_id,
                    dialog_summaries::text,
                ))
                .load::<(i64, i64, String)>(conn)
                .await?;
            Ok(rows)
        })
    }

    /// What is stored about a user, counted per kind.
    pub async fn footprint(&self, user_id: UserId) -> Result<UserFootprint, StorageError> {
        use super::schema::payments;
        with_connection!(self, |conn| {
            let theirs = dialogs::table
                .filter(dialogs::user_id.eq(user_id))
                .select(dialogs::id);
            Ok(UserFootprint {
                profile: users::table
                    .filter(users::id.eq(user_id))
                    .count()
                    .get_result(conn)
                    .await?,
                dialogs: dialogs::table
                    .filter(dialogs::user_id.eq(user_id))
                    .count()
                    .get_result(conn)
                    .await?,
                messages: messages::table
                    .filter(messages::dialog_id.eq_any(theirs))
                    .count()
                    .get_result(conn)
                    .await?,
                memories: memories::table
                    .filter(memories::user_id.eq(user_id))
                    .count()
                    .get_result(conn)
                    .await?,
                summaries: dialog_summaries::table
                    .filter(dialog_summaries::dialog_id.eq_any(theirs))
                    .count()
                    .get_result(conn)
                    .await?,
                token_usage: token_usage::table
                    .filter(token_usage::user_id.eq(user_id))
                    .count()
                    .get_result(conn)
                    .await?,
                payments: payments::table
                    .filter(payments::user_id.eq(user_id))
                    .count()
                    .get_result(conn)
                    .await?,
            })
        })
    }
}
