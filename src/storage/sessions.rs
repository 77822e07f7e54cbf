//! The sessions' durable state: the `SessionStore` port over both backends.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use vitte_actors::ports::{
    Appended, DialogId, DialogModes, HistoryEntry, MessageStatus, NewDialog, NewMessage,
    PendingDelivery, PendingReply, Role, SessionStore, StoreError, StoredDialog, StoredSession,
    UserId, UserPreferences, UserProfile,
};

use super::schema::{dialog_summaries, dialogs, inbox, messages, token_usage, users};
use vitte_actors::ports::memory::StoredSummary;

/// An open dialog's row as a session loads it.
type DialogRow = (i64, i32, String, Option<String>, i64, bool, bool, i32, i64);
use super::{Database, Pool, SqliteConn, StorageError};
use diesel_async::AsyncPgConnection;

/// The statements of [`SessionStore::append_message`], as an async block over `$conn`
/// (expanded once per backend, inside or outside a transaction).
macro_rules! append_statements {
    ($conn:ident, $dialog_id:ident, $message:ident, $now:ident) => {
        async {
            let conn = &mut *$conn;
            let (dialog_id, message, now) = (&$dialog_id, &$message, $now);
            let dialog_id = *dialog_id;
            // A message of an update that has one stored already is not stored again
            // (`messages.update_id` is unique).
            let inserted = diesel::insert_into(messages::table)
                .values((
                    messages::dialog_id.eq(dialog_id),
                    messages::role.eq(message.role.as_str()),
                    messages::content.eq(&message.content),
                    messages::token_count
                        .eq(i32::try_from(message.token_count).unwrap_or(i32::MAX)),
                    messages::status.eq(message.status.as_str()),
                    messages::telegram_message_id.eq(message.telegram_message_id),
                    messages::telegram_part_ids.eq(part_ids_text(&message.earlier_parts)),
                    messages::created_at.eq(now),
                    messages::provider.eq(&message.provider),
                    messages::update_id.eq(message.update_id),
                    messages::reply_message_id.eq(message.reply_message_id),
                ))
                .on_conflict_do_nothing()
                .returning(messages::id)
                .get_result::<i64>(conn)
                .await
                .optional()?;
            let Some(message_id) = inserted else {
                return Ok(Appended::Duplicate);
            };
            // Should the process stop before this, recovery finds the reply after the
            // pending message and marks it answered.
            if let Some(answered) = message.answers {
                diesel::update(messages::table.find(answered))
                    .set(messages::status.eq(MessageStatus::Complete.as_str()))
                    .execute(conn)
                    .await?;
            }
            if let Some(update_id) = message.update_id {
                // Its message is stored: the update is handled, never replayed.
                diesel::update(inbox::table.find(update_id))
                    .set(inbox::payload.eq(None::<String>))
                    .execute(conn)
                    .await?;
            }
            let persona_message = i32::from(
                message.role == Role::Assistant
                    && MessageStatus::in_dialog(message.status.as_str()),
            );
            // "Regenerate": the earlier reply stays stored, out of the dialog.
            let mut replaced = 0;
            if let Some(old) = message.replaces {
                let marked = diesel::update(messages::table.find(old))
                    .filter(messages::dialog_id.eq(dialog_id))
                    .filter(messages::status.ne(MessageStatus::Replaced.as_str()))
                    .set(messages::status.eq(MessageStatus::Replaced.as_str()))
                    .execute(conn)
                    .await?;
                replaced = i32::try_from(marked).unwrap_or(0);
            }
            diesel::update(dialogs::table.find(dialog_id))
                .set((
                    dialogs::last_active_at.eq(now),
                    dialogs::persona_messages
                        .eq(dialogs::persona_messages + persona_message - replaced),
                ))
                .execute(conn)
                .await?;
            if let Some(usage) = message.usage {
                // Tokens of the call, added to the user's row for the slot and today.
                let (prompt, completion) = (
                    i64::from(usage.prompt_tokens),
                    i64::from(usage.completion_tokens),
                );
                diesel::insert_into(token_usage::table)
                    .values((
                        token_usage::user_id.eq(usage.user_id),
                        token_usage::slot.eq(i32::from(usage.slot)),
                        token_usage::day.eq(now / 86_400_000),
                        token_usage::prompt_tokens.eq(prompt),
                        token_usage::completion_tokens.eq(completion),
                        token_usage::requests.eq(1_i64),
                    ))
                    .on_conflict((token_usage::user_id, token_usage::slot, token_usage::day))
                    .do_update()
                    .set((
                        token_usage::prompt_tokens.eq(token_usage::prompt_tokens + prompt),
                        token_usage::completion_tokens
                            .eq(token_usage::completion_tokens + completion),
                        token_usage::requests.eq(token_usage::requests + 1_i64),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok::<_, StorageError>(Appended::Stored { message_id })
        }
    };
}

/// Part ids as stored: comma-separated, `None` for a one-message reply.
fn part_ids_text(ids: &[i64]) -> Option<String> {
    (!ids.is_empty()).then(|| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

fn parse_part_ids(text: Option<&str>) -> Vec<i64> {
    text.map(|text| {
        text.split(',')
            .filter_map(|id| id.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// A message as a session's history loads it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = messages)]
struct HistoryRow {
    id: i64,
    role: String,
    content: String,
    token_count: i32,
    telegram_message_id: Option<i64>,
    telegram_part_ids: Option<String>,
    status: String,
    reply_message_id: Option<i64>,
    created_at: i64,
}

impl Database {
    async fn load(
        &self,
        user_id: UserId,
        history_limit: usize,
    ) -> Result<Option<StoredSession>, StorageError> {
        let limit = i64::try_from(history_limit).unwrap_or(i64::MAX);
        let hidden = MessageStatus::OUT_OF_DIALOG.map(MessageStatus::as_str);
        with_connection!(self, |conn| {
            let user = users::table
                .find(user_id)
                .select((
                    users::chat_id,
                    users::first_name,
                    users::language_code,
                    users::active_slot,
                    users::language,
                    users::adult_confirmed_at,
                ))
                .first::<(
                    i64,
                    String,
                    Option<String>,
                    Option<i32>,
                    Option<String>,
                    Option<i64>,
                )>(conn)
                .await
                .optional()?;
            let Some((chat_id, first_name, language_code, active_slot, language, adult)) = user
            else {
                return Ok(None);
            };
            let open = dialogs::table
                .filter(dialogs::user_id.eq(user_id))
                .filter(dialogs::closed_at.is_null())
                .order(dialogs::slot.asc())
                .select((
                    dialogs::id,
                    dialogs::slot,
                    dialogs::persona_id,
                    dialogs::story_id,
                    dialogs::last_active_at,
                    dialogs::intense_mode,
                    dialogs::fantasy_scenes,
                    dialogs::persona_messages,
                    dialogs::extracted_through,
                ))
                .load::<DialogRow>(conn)
                .await?;
            let mut stored_dialogs = Vec::with_capacity(open.len());
            for (
                dialog_id,
                slot,
                persona_id,
                story_id,
                last_active_at,
                intense,
                fantasy,
                count,
                extracted_through,
            ) in open
            {
                let summary = dialog_summaries::table
                    .find(dialog_id)
                    .select((
                        dialog_summaries::through_message_id,
                        dialog_summaries::text,
                        dialog_summaries::token_count,
                    ))
                    .first::<(i64, String, i32)>(conn)
                    .await
                    .optional()?
                    .map(|(through_message_id, text, tokens)| StoredSummary {
                        dialog_id,
                        through_message_id,
                        text,
                        token_count: u32::try_from(tokens).unwrap_or(0),
                    });
                let mut rows = messages::table
                    .filter(messages::dialog_id.eq(dialog_id))
                    .filter(messages::status.ne_all(hidden))
                    .order(messages::id.desc())
                    .limit(limit)
                    .select(HistoryRow::as_select())
                    .load::<HistoryRow>(conn)
                    .await?;
                rows.reverse();
                // Unfinished replies are the newest messages, so within the history loaded.
                let pending = rows
                    .iter()
                    .filter(|row| row.status == MessageStatus::Pending.as_str())
                    .map(|row| PendingReply {
                        message_id: row.id,
                        reply_message_id: row.reply_message_id,
                        created_at: row.created_at,
                    })
                    .collect();
                let undelivered = rows
                    .iter()
                    .filter(|row| row.status == MessageStatus::Delivering.as_str())
                    .map(|row| PendingDelivery {
                        message_id: row.id,
                        telegram_message_id: row.telegram_message_id,
                        content: row.content.clone(),
                    })
                    .collect();
                let history = rows
                    .into_iter()
                    .filter_map(|row| {
                        Some(HistoryEntry {
                            message_id: row.id,
                            telegram_message_id: row.telegram_message_id,
                            earlier_parts: parse_part_ids(row.telegram_part_ids.as_deref()),
                            role: Role::parse(&row.role)?,
                            content: row.content,
                            token_count: u32::try_from(row.token_count).unwrap_or(0),
                        })
                    })
                    .collect();
                let Ok(slot) = u8::try_from(slot) else {
                    continue;
                };
                stored_dialogs.push(StoredDialog {
                    dialog_id,
                    slot,
                    persona_id,
                    story_id,
                    last_active_at,
                    modes: DialogModes {
                        intense_mode: intense,
                        fantasy_scenes: fantasy,
                    },
                    persona_messages: u32::try_from(count).unwrap_or(0),
                    history,
                    pending,
                    undelivered,
                    extracted_through,
                    summary,
                });
            }
            Ok(Some(StoredSession {
                profile: UserProfile {
                    user_id,
                    chat_id,
                    first_name,
                    language_code,
                },
                preferences: UserPreferences {
                    language,
                    adult_confirmed: adult.is_some(),
                },
                active_slot: active_slot.and_then(|slot| u8::try_from(slot).ok()),
                dialogs: stored_dialogs,
            }))
        })
    }
}

#[async_trait]
impl SessionStore for Database {
    async fn load_session(
        &self,
        user_id: UserId,
        history_limit: usize,
    ) -> Result<Option<StoredSession>, StoreError> {
        Ok(self.load(user_id, history_limit).await?)
    }

    async fn save_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        let profile = profile.clone();
        let now = self.now();
        with_connection!(self, |conn| {
            diesel::insert_into(users::table)
                .values((
                    users::id.eq(profile.user_id),
                    users::chat_id.eq(profile.chat_id),
                    users::first_name.eq(&profile.first_name),
                    users::language_code.eq(&profile.language_code),
                    users::created_at.eq(now),
                    users::updated_at.eq(now),
                ))
                .on_conflict(users::id)
                .do_update()
                .set((
                    users::chat_id.eq(profile.chat_id),
                    users::first_name.eq(&profile.first_name),
                    users::language_code.eq(&profile.language_code),
                    users::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn save_preferences(
        &self,
        user_id: UserId,
        preferences: &UserPreferences,
    ) -> Result<(), StoreError> {
        let language = preferences.language.clone();
        let confirmed = preferences.adult_confirmed;
        let now = self.now();
        with_connection!(self, |conn| {
            diesel::update(users::table.find(user_id))
                .set((users::language.eq(language), users::updated_at.eq(now)))
                .execute(conn)
                .await?;
            // The first confirmation's time is kept; a confirmation is never taken back here.
            if confirmed {
                diesel::update(users::table.find(user_id))
                    .filter(users::adult_confirmed_at.is_null())
                    .set(users::adult_confirmed_at.eq(Some(now)))
                    .execute(conn)
                    .await?;
            }
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn activate_slot(&self, user_id: UserId, slot: u8) -> Result<(), StoreError> {
        let slot = i32::from(slot);
        with_connection!(self, |conn| {
            diesel::update(users::table.find(user_id))
                .set(users::active_slot.eq(Some(slot)))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn close_all_dialogs(&self, user_id: UserId) -> Result<(), StoreError> {
        let now = self.now();
        in_transaction!(self, |conn| {
            diesel::update(dialogs::table)
                .filter(dialogs::user_id.eq(user_id))
                .filter(dialogs::closed_at.is_null())
                .set(dialogs::closed_at.eq(now))
                .execute(conn)
                .await?;
            diesel::update(users::table.find(user_id))
                .set(users::active_slot.eq(None::<i32>))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn set_dialog_modes(
        &self,
        dialog_id: DialogId,
        modes: DialogModes,
    ) -> Result<(), StoreError> {
        with_connection!(self, |conn| {
            diesel::update(dialogs::table.find(dialog_id))
                .set((
                    dialogs::intense_mode.eq(modes.intense_mode),
                    dialogs::fantasy_scenes.eq(modes.fantasy_scenes),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn open_dialog(&self, new: &NewDialog) -> Result<DialogId, StoreError> {
        let NewDialog {
            user_id,
            slot,
            modes,
            ..
        } = *new;
        let (persona_id, story_id) = (new.persona_id.clone(), new.story_id.clone());
        let slot = i32::from(slot);
        let now = self.now();
        with_connection!(self, |conn| {
            let dialog_id = conn
                .transaction(async |conn| {
                    diesel::update(dialogs::table)
                        .filter(dialogs::user_id.eq(user_id))
                        .filter(dialogs::slot.eq(slot))
                        .filter(dialogs::closed_at.is_null())
                        .set(dialogs::closed_at.eq(now))
                        .execute(conn)
                        .await?;
                    let dialog_id = diesel::insert_into(dialogs::table)
                        .values((
                            dialogs::user_id.eq(user_id),
                            dialogs::slot.eq(slot),
                            dialogs::persona_id.eq(persona_id),
                            dialogs::story_id.eq(Some(story_id)),
                            dialogs::intense_mode.eq(modes.intense_mode),
                            dialogs::fantasy_scenes.eq(modes.fantasy_scenes),
                            dialogs::created_at.eq(now),
                            dialogs::last_active_at.eq(now),
                        ))
                        .returning(dialogs::id)
                        .get_result::<i64>(conn)
                        .await?;
                    diesel::update(users::table.find(user_id))
                        .set(users::active_slot.eq(Some(slot)))
                        .execute(conn)
                        .await?;
                    Ok::<_, StorageError>(dialog_id)
                })
                .await?;
            Ok(dialog_id)
        })
        .map_err(StoreError::from)
    }

    async fn append_message(
        &self,
        dialog_id: DialogId,
        message: &NewMessage,
    ) -> Result<Appended, StoreError> {
        let message = message.clone();
        let now = self.now();
        // Separate statements, not one transaction: measured with the load generator, a
        // transaction was slower on both backends (PostgreSQL: BEGIN/COMMIT round trips and
        // longer-held connections, 1 150 → 713 messages/s; SQLite: the write lock held across
        // several blocking hops). They are ordered so that a crash between two of them is
        // recovered: the message first (a replayed update then finds it), the update marked
        // handled after.
        with_connection!(self, |conn| {
            if message.replaces.is_some() {
                // "Regenerate": the new reply and the old one's mark land together or not at
                // all (a rare path; the transaction's cost does not matter here).
                conn.transaction(async |conn| {
                    append_statements!(conn, dialog_id, message, now).await
                })
                .await
            } else {
                append_statements!(conn, dialog_id, message, now).await
            }
        })
        .map_err(StoreError::from)
    }

    async fn is_update_stored(&self, update_id: i64) -> Result<bool, StoreError> {
        with_connection!(self, |conn| {
            let stored = messages::table
                .filter(messages::update_id.eq(update_id))
                .select(messages::id)
                .first::<i64>(conn)
                .await
                .optional()?;
            Ok(stored.is_some())
        })
        .map_err(StoreError::from)
    }

    async fn finish_update(&self, update_id: i64) -> Result<(), StoreError> {
        with_connection!(self, |conn| {
            diesel::update(inbox::table.find(update_id))
                .filter(inbox::payload.is_not_null())
                .set(inbox::payload.eq(None::<String>))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn finish_delivery(
        &self,
        message_id: i64,
        status: MessageStatus,
        telegram_message_id: Option<i64>,
        earlier_parts: &[i64],
    ) -> Result<(), StoreError> {
        let parts = part_ids_text(earlier_parts);
        with_connection!(self, |conn| {
            diesel::update(messages::table.find(message_id))
                .set((
                    messages::status.eq(status.as_str()),
                    messages::telegram_message_id.eq(telegram_message_id),
                    messages::telegram_part_ids.eq(parts),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    async fn set_status(&self, message_id: i64, status: MessageStatus) -> Result<(), StoreError> {
        with_connection!(self, |conn| {
            diesel::update(messages::table.find(message_id))
                .set(messages::status.eq(status.as_str()))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(StoreError::from)
    }
}
