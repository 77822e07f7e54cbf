//! The storage check of readiness: a write, rate-limited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vitte_actors::sync::lock;

use crate::storage::Database;

/// Longest a probe waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Proves storage accepts writes, at most once per [`WRITE_PROBE_EVERY`]: between two
/// probes, checks get the last result (probes come every few seconds from each of
/// Kubernetes, load balancers and operators).
pub struct StorageProbe {
    database: Database,
    last: Mutex<Option<LastProbe>>,
}

/// When the last write probe ran, how long it took, and what it found.
type LastProbe = (tokio::time::Instant, Duration, Result<(), String>);

/// Least time between two write probes.
const WRITE_PROBE_EVERY: Duration = Duration::from_secs(5);

impl StorageProbe {
    pub fn new(database: Database) -> StorageProbe {
        StorageProbe {
            database,
            last: Mutex::new(None),
        }
    }

    /// Whether storage answers now and accepted a write lately (the error names why not),
    /// and how long the check took. A database that went away fails at once (the cheap
    /// read runs every time); one that stopped taking writes fails within
    /// [`WRITE_PROBE_EVERY`].
    pub async fn check(&self) -> (Result<(), String>, Duration) {
        let started = Instant::now();
        match tokio::time::timeout(CHECK_TIMEOUT, self.database.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return (Err(error.to_string()), started.elapsed()),
            Err(_) => return (Err("no answer within 2 s".to_owned()), started.elapsed()),
        }
        let now = tokio::time::Instant::now();
        if let Some((at, took, result)) = lock(&self.last).clone() {
            if now.duration_since(at) < WRITE_PROBE_EVERY {
                return (result, took);
            }
        }
        let probe = tokio::time::timeout(CHECK_TIMEOUT, self.database.write_probe()).await;
        let result = match probe {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("writes fail: {error}")),
            Err(_) => Err("no answer within 2 s".to_owned()),
        };
        let took = started.elapsed();
        *lock(&self.last) = Some((now, took, result.clone()));
        (result, took)
    }
}
