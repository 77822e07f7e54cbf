//! The inbox: Telegram updates stored before Telegram is told they arrived, and what a
//! restart finds unfinished (updates not yet handled, replies not yet written).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use vitte_actors::ports::{MessageStatus, UserId};

use super::schema::{dialogs, inbox, messages};
use super::{Database, Pool, SqliteConn, StorageError};
use diesel_async::AsyncPgConnection;

/// What storing an update came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now: hand it to its session.
    New,
    /// Stored before: Telegram delivered it again, and it was (or is being) handled.
    Duplicate,
}

/// An accepted update not yet handled when the process stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnhandledUpdate {
    pub update_id: i64,
    /// When it was accepted (Unix milliseconds).
    pub received_at: i64,
    /// The update's JSON as Telegram sent it.
    pub payload: String,
}

impl Database {
    /// Stores an update (its raw JSON) before Telegram is told it arrived; a redelivery of
    /// one stored before is recognised by its id.
    pub async fn accept_update(
        &self,
        update_id: i64,
        user_id: Option<UserId>,
        payload: &str,
    ) -> Result<Accepted, StorageError> {
        let now = self.now();
        let payload = payload.to_owned();
        with_connection!(self, |conn| {
            let inserted = diesel::insert_into(inbox::table)
                .values((
                    inbox::update_id.eq(update_id),
                    inbox::received_at.eq(now),
                    inbox::user_id.eq(user_id),
                    inbox::payload.eq(Some(payload)),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            Ok(if inserted == 1 {
                Accepted::New
            } else {
                Accepted::Duplicate
            })
        })
    }

    /// Updates accepted but not handled, oldest first (what a crash left waiting).
    pub async fn unhandled_updates(&self) -> Result<Vec<UnhandledUpdate>, StorageError> {
        with_connection!(self, |conn| {
            let rows = inbox::table
                .filter(inbox::payload.is_not_null())
                .order(inbox::update_id.asc())
                .select((inbox::update_id, inbox::received_at, inbox::payload))
                .load::<(i64, i64, Option<String>)>(conn)
                .await?;
            Ok(rows
                .into_iter()
                .filter_map(|(update_id, received_at, payload)| {
                    Some(UnhandledUpdate {
                        update_id,
                        received_at,
                        payload: payload?,
                    })
                })
                .collect())
        })
    }

    /// Users with a message whose reply was still being written when the process stopped.
    pub async fn users_with_unfinished_replies(&self) -> Result<Vec<UserId>, StorageError> {
        with_connection!(self, |conn| {
            let users = messages::table
                .inner_join(dialogs::table)
                .filter(messages::status.eq_any([
                    MessageStatus::Pending.as_str(),
                    MessageStatus::Delivering.as_str(),
                ]))
                .select(dialogs::user_id)
                .distinct()
                .load::<i64>(conn)
                .await?;
            Ok(users)
        })
    }

    /// Forgets handled updates accepted more than `older_than` ago; returns how many.
    /// Telegram redelivers an update for about a day at most, so older ids guard against
    /// nothing. Unhandled ones stay until they are handled.
    pub async fn prune_inbox(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = self.now() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        with_connection!(self, |conn| {
            let pruned = diesel::delete(inbox::table)
                .filter(inbox::received_at.le(cutoff))
                .filter(inbox::payload.is_null())
                .execute(conn)
                .await?;
            Ok(pruned)
        })
    }
}
