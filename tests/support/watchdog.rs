//! A watchdog per test app: a test that hangs is ended with its name, not left to hang the
//! whole run (`cargo test` has no per-test timeout; nextest's `slow-timeout` is the same
//! guard when nextest runs the tests).

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// Longest an integration test's app may live.
pub const LIMIT: Duration = Duration::from_secs(180);

/// Aborts the process if not dropped within [`LIMIT`].
pub struct Watchdog {
    _disarm: Sender<()>,
}

impl Watchdog {
    pub fn arm() -> Watchdog {
        let test = std::thread::current()
            .name()
            .unwrap_or("an integration test")
            .to_owned();
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            // Dropping the sender (the test ended) wakes this with `Disconnected`.
            if let Err(RecvTimeoutError::Timeout) = disarmed.recv_timeout(LIMIT) {
                eprintln!("{test} is still running after {LIMIT:?}: aborting the test run");
                std::process::abort();
            }
        });
        Watchdog { _disarm: disarm }
    }
}
