//! Embedded migrations, applied over a synchronous connection from a blocking thread.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StorageError;
use crate::config::DatabaseTarget;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Applies the pending migrations; returns how many. Blocks: call from a blocking thread.
pub(super) fn run_pending(target: &DatabaseTarget) -> Result<usize, StorageError> {
    let failed = |error: Box<dyn std::error::Error + Send + Sync>| {
        StorageError::Migration(error.to_string())
    };
    let unreachable = |error: diesel::ConnectionError| StorageError::Connection(error.to_string());
    match target {
        DatabaseTarget::Sqlite(path) => {
            let mut connection =
                SqliteConnection::establish(&path.to_string_lossy()).map_err(unreachable)?;
            connection
                .batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
                .map_err(StorageError::Query)?;
            let applied = connection
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(failed)?;
            Ok(applied.len())
        }
        DatabaseTarget::Postgres(url) => {
            // Outside any runtime, the wrapper drives the async connection on its own one.
            let mut connection: AsyncConnectionWrapper<AsyncPgConnection> =
                Connection::establish(url).map_err(unreachable)?;
            let applied = connection
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map_err(failed)?;
            Ok(applied.len())
        }
    }
}
