//! Storage: diesel + diesel-async over SQLite (embedded default) or PostgreSQL, behind one
//! repository API.
//!
//! Each query is written once: [`with_connection!`] expands it for the backend in use (the
//! pattern Vaultwarden uses with diesel). All database work runs on a small dedicated
//! multi-threaded runtime, never on an actix arbiter: SQLite calls block a thread, and
//! diesel-async's SQLite wrapper needs a multi-threaded runtime when a query is cancelled.
//! Arbiters only await the result.

//!
//! Files: this one holds the pool, the runtime and the queries operators use;
//! `sessions.rs` the `SessionStore` port; `payments.rs` the ledger; `memory.rs` memories and
//! summaries; `schedule.rs` jobs, notification settings and broadcasts (the `JobStore` port);
//! `blocked.rs` users who blocked the bot; `migrations.rs` the embedded migrations;
//! `schema.rs` the tables. Times come from the injected clock, never the system's.

mod migrations;
pub mod schema;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures::FutureExt;
use vitte_actors::ports::{Clock, StoreError, UserId};

use crate::config::DatabaseTarget;
use schema::{dialogs, health_probe, messages, token_usage, users};

type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Connection(String),
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("storage task failed: {0}")]
    Task(String),
}

impl From<StorageError> for StoreError {
    fn from(error: StorageError) -> Self {
        StoreError(error.to_string())
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(DeadPool<SqliteConn>),
    Postgres(DeadPool<AsyncPgConnection>),
}

/// The runtime database work runs on; shut down without blocking when dropped (it may be
/// dropped inside an async context).
struct StorageRuntime(Option<tokio::runtime::Runtime>);

impl Drop for StorageRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The database: a connection pool for the configured backend.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    target: Arc<DatabaseTarget>,
    runtime: Arc<StorageRuntime>,
    migrated: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend is in use, on
/// the storage runtime. `$body` is compiled once per backend and must evaluate to
/// `Result<T, StorageError>`; it may `.await` and use `?`.
macro_rules! with_connection {
    ($db:expr, |$conn:ident| $body:expr) => {{
        let db = &$db;
        match db.pool.clone() {
            Pool::Sqlite(pool) => {
                db.spawn(async move {
                    let mut object = pool
                        .get()
                        .await
                        .map_err(|error| StorageError::Connection(error.to_string()))?;
                    let $conn: &mut SqliteConn = &mut object;
                    $body
                })
                .await
            }
            Pool::Postgres(pool) => {
                db.spawn(async move {
                    let mut object = pool
                        .get()
                        .await
                        .map_err(|error| StorageError::Connection(error.to_string()))?;
                    let $conn: &mut AsyncPgConnection = &mut object;
                    $body
                })
                .await
            }
        }
    }};
}

/// Runs `$body` in one transaction on a pooled connection (see [`with_connection!`]): all of
/// it is stored, or none. `$body` evaluates to `Result<T, StorageError>`; an error (from `?`
/// too) rolls the transaction back.
macro_rules! in_transaction {
    ($db:expr, |$conn:ident| $body:expr) => {
        with_connection!($db, |conn| {
            conn.transaction(async |$conn| {
                let outcome: Result<_, StorageError> = $body;
                outcome
            })
            .await
        })
    };
}

mod events;
pub use events::EventRow;
mod inbox;
pub use inbox::{Accepted, UnhandledUpdate};
mod memory;
pub use memory::{MemoryRecord, UserFootprint};
mod blocked;
mod payments;
mod schedule;
mod sessions;

impl Database {
    /// Opens a pool for `target`. Connections are made lazily; call [`Database::ping`] or
    /// [`Database::migrate`] to find out whether the database is reachable.
    pub fn connect(
        target: &DatabaseTarget,
        max_connections: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Database, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vitte-storage")
            .enable_all()
            .build()
            .map_err(|error| StorageError::Connection(format!("storage runtime: {error}")))?;
        let pool = match target {
            DatabaseTarget::Sqlite(path) => {
                if let Some(parent) = path
                    .parent()
                    .filter(|parent| !parent.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(parent).map_err(|error| {
                        StorageError::Connection(format!(
                            "cannot create {}: {error}",
                            parent.display()
                        ))
                    })?;
                }
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(|url| open_sqlite(url.to_owned()).boxed());
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    path.to_string_lossy(),
                    config,
                );
                Pool::Sqlite(build_pool(manager, max_connections)?)
            }
            DatabaseTarget::Postgres(url) => {
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url.as_str());
                Pool::Postgres(build_pool(manager, max_connections)?)
            }
        };
        Ok(Database {
            pool,
            target: Arc::new(target.clone()),
            runtime: Arc::new(StorageRuntime(Some(runtime))),
            migrated: Arc::new(AtomicBool::new(false)),
            clock,
        })
    }

    /// Now, in Unix milliseconds, on the injected clock.
    fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Runs `work` on the storage runtime and waits for it.
    async fn spawn<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .0
            .as_ref()
            .ok_or_else(|| StorageError::Task("storage runtime stopped".into()))?;
        runtime
            .spawn(work)
            .await
            .map_err(|error| StorageError::Task(error.to_string()))?
    }

    /// Applies pending migrations (embedded in the binary). Returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StorageError> {
        let target = (*self.target).clone();
        let applied = self
            .spawn(async move {
                tokio::task::spawn_blocking(move || migrations::run_pending(&target))
                    .await
                    .map_err(|error| StorageError::Task(error.to_string()))?
            })
            .await?;
        self.migrated.store(true, Ordering::SeqCst);
        Ok(applied)
    }

    /// Whether this process has applied (or verified) the migrations.
    pub fn is_migrated(&self) -> bool {
        AtomicBool::load(&self.migrated, Ordering::SeqCst)
    }

    /// A trivial query, to check the database answers (and, for SQLite, that its file is
    /// still where it was opened: a removed file keeps answering from the void).
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.check_file()?;
        with_connection!(self, |conn| {
            conn.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }

    /// For SQLite: whether the database file is still where it was opened.
    fn check_file(&self) -> Result<(), StorageError> {
        match &*self.target {
            DatabaseTarget::Sqlite(path) if !path.exists() => Err(StorageError::Connection(
                format!("the database file {} is gone", path.display()),
            )),
            _ => Ok(()),
        }
    }

    /// Proves the database accepts writes: one row of `health_probe` written.
    pub async fn write_probe(&self) -> Result<(), StorageError> {
        self.check_file()?;
        let now = self.now();
        with_connection!(self, |conn| {
            diesel::insert_into(health_probe::table)
                .values((health_probe::id.eq(1), health_probe::probed_at.eq(now)))
                .on_conflict(health_probe::id)
                .do_update()
                .set(health_probe::probed_at.eq(now))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// A user's token usage per slot and day: (slot, day, prompt, completion, requests).
    pub async fn token_usage(
        &self,
        user_id: UserId,
    ) -> Result<Vec<(i32, i64, i64, i64, i64)>, StorageError> {
        with_connection!(self, |conn| {
            let rows = token_usage::table
                .filter(token_usage::user_id.eq(user_id))
                .order((token_usage::slot, token_usage::day))
                .select((
                    token_usage::slot,
                    token_usage::day,
                    token_usage::prompt_tokens,
                    token_usage::completion_tokens,
                    token_usage::requests,
                ))
                .load(conn)
                .await?;
            Ok(rows)
        })
    }

    /// Every message of a user, oldest first, with where it is and how it ended: for
    /// operators (and the tests, which read storage as an operator would).
    pub async fn user_messages(&self, user_id: UserId) -> Result<Vec<StoredMessage>, StorageError> {
        with_connection!(self, |conn| {
            let rows = messages::table
                .inner_join(dialogs::table)
                .filter(dialogs::user_id.eq(user_id))
                .order(messages::id.asc())
                .select((
                    dialogs::slot,
                    messages::role,
                    messages::content,
                    messages::status,
                    messages::provider,
                ))
                .load::<(i32, String, String, String, Option<String>)>(conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(slot, role, content, status, provider)| StoredMessage {
                    slot,
                    role,
                    content,
                    status,
                    provider,
                })
                .collect())
        })
    }
}

impl Database {
    /// The chat API's history: the last `limit` messages of the open dialog in `slot` (the
    /// user's active slot when `None`), oldest first; `None` when there is no such dialog.
    /// Withheld replies (never shown) are left out.
    pub async fn dialog_history(
        &self,
        user_id: UserId,
        slot: Option<u8>,
        limit: i64,
    ) -> Result<Option<DialogHistory>, StorageError> {
        with_connection!(self, |conn| {
            let slot = match slot {
                Some(slot) => Some(i32::from(slot)),
                None => users::table
                    .filter(users::id.eq(user_id))
                    .select(users::active_slot)
                    .first::<Option<i32>>(conn)
                    .await
                    .optional()?
                    .flatten(),
            };
            let Some(slot) = slot else {
                return Ok(None);
            };
            let dialog = dialogs::table
                .filter(dialogs::user_id.eq(user_id))
                .filter(dialogs::slot.eq(slot))
                .filter(dialogs::closed_at.is_null())
                .order(dialogs::id.desc())
                .select((dialogs::id, dialogs::persona_id))
                .first::<(i64, String)>(conn)
                .await
                .optional()?;
            let Some((dialog_id, persona_id)) = dialog else {
                return Ok(None);
            };
            let mut rows = messages::table
                .filter(messages::dialog_id.eq(dialog_id))
                .filter(messages::status.ne("withheld"))
                .order(messages::id.desc())
                .limit(limit)
                .select((
                    messages::role,
                    messages::content,
                    messages::status,
                    messages::created_at,
                ))
                .load::<(String, String, String, i64)>(conn)
                .await?;
            rows.reverse();
            Ok(Some(DialogHistory {
                slot: u8::try_from(slot).unwrap_or_default(),
                persona_id,
                messages: rows
                    .into_iter()
                    .map(|(role, content, status, created_at)| HistoryMessage {
                        role,
                        content,
                        status,
                        created_at,
                    })
                    .collect(),
            }))
        })
    }
}

/// A dialog's recent messages, for the chat API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogHistory {
    pub slot: u8,
    pub persona_id: String,
    pub messages: Vec<HistoryMessage>,
}

/// One message of [`DialogHistory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    pub role: String,
    pub content: String,
    pub status: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// One stored message, as [`Database::user_messages`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub slot: i32,
    pub role: String,
    pub content: String,
    pub status: String,
    /// The LLM provider that wrote a persona's reply.
    pub provider: Option<String>,
}

/// A pool whose callers wait at most 10 s for a connection (then get an error, not a hang).
fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    max_connections: usize,
) -> Result<DeadPool<C>, StorageError>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    DeadPool::builder(manager)
        .max_size(max_connections)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|error| StorageError::Connection(error.to_string()))
}

async fn open_sqlite(path: String) -> diesel::ConnectionResult<SqliteConn> {
    let mut connection = SqliteConn::establish(&path).await?;
    // WAL lets readers run beside the writer; busy_timeout makes writers wait for each other
    // instead of failing. Write transactions here begin with a write, so they take the write
    // lock at once and wait on busy_timeout like any other write.
    connection
        .batch_execute(
            // busy_timeout first: switching to WAL takes a lock, and another connection
            // (the payment desk's first sweep at start-up) may hold one for a moment.
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(connection)
}
