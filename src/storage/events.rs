//! The event log table (see `vitte_actors::ports::events`).

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use vitte_actors::ports::{EventLog, LoggedEvent, StoreError};

use super::schema::event_log;
use super::{Database, Pool, SqliteConn, StorageError};
use diesel_async::AsyncPgConnection;

/// One row of the event log, as `GET /admin/events` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub severity: String,
    pub kind: String,
    pub user_id: Option<i64>,
    pub detail: String,
}

impl Database {
    /// The latest `limit` events (of `severity` and `kind` when given), newest first.
    pub async fn events(
        &self,
        severity: Option<&str>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StorageError> {
        let (severity, kind) = (severity.map(str::to_owned), kind.map(str::to_owned));
        with_connection!(self, |conn| {
            let mut query = event_log::table.into_boxed();
            if let Some(severity) = &severity {
                query = query.filter(event_log::severity.eq(severity.clone()));
            }
            if let Some(kind) = &kind {
                query = query.filter(event_log::kind.eq(kind.clone()));
            }
            let rows = query
                .order(event_log::id.desc())
                .limit(limit)
                .select((
                    event_log::id,
                    event_log::at,
                    event_log::severity,
                    event_log::kind,
                    event_log::user_id,
                    event_log::detail,
                ))
                .load::<(i64, i64, String, String, Option<i64>, String)>(conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(id, at, severity, kind, user_id, detail)| EventRow {
                    id,
                    at,
                    severity,
                    kind,
                    user_id,
                    detail,
                })
                .collect())
        })
    }

    /// Forgets events older than `older_than`; returns how many.
    pub async fn prune_events(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = self.now() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        with_connection!(self, |conn| {
            let pruned = diesel::delete(event_log::table)
                .filter(event_log::at.lt(cutoff))
                .execute(conn)
                .await?;
            Ok(pruned)
        })
    }
}

#[async_trait]
impl EventLog for Database {
    async fn record(&self, event: LoggedEvent) -> Result<(), StoreError> {
        let result: Result<(), StorageError> = with_connection!(self, |conn| {
            diesel::insert_into(event_log::table)
                .values((
                    event_log::at.eq(event.at),
                    event_log::severity.eq(event.severity.as_str()),
                    event_log::kind.eq(event.kind.as_str()),
                    event_log::user_id.eq(event.user_id),
                    event_log::detail.eq(&event.detail),
                ))
                .execute(conn)
                .await?;
            Ok(())
        });
        result.map_err(StoreError::from)
    }
}
