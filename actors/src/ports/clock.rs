//! The time of day as a port, so that nothing in the domain reads the system clock.
//!
//! Two kinds of time are used in vitte, and kept apart on purpose:
//! - *wall time* (this port): when a message was written, when a dialog was last active,
//!   when a session has been idle long enough to leave memory, when a plan expires, when a
//!   local midnight is. Tests move it by hand with [`ManualClock`], so a test of "six hours
//!   later" or "after midnight in Tashkent" takes no time at all.
//! - *pacing* (`tokio::time`): the pauses between two edits of a streamed reply, retry
//!   backoff. Unit tests run those on tokio's paused clock. The outbox is the exception: it
//!   paces Telegram calls (and waits out flood control) on this port, so that a broadcast
//!   to thousands can run in controlled time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// Milliseconds since the Unix epoch (UTC), the unit of every stored time.
pub type UnixMillis = i64;

/// `duration` in milliseconds, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Where the time of day comes from.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix milliseconds.
    fn now_millis(&self) -> UnixMillis;

    /// Resolves once the clock reads `at` or later (at once if it already does). Must be
    /// polled inside a tokio runtime.
    fn sleep_until(&self, at: UnixMillis) -> BoxFuture<'static, ()>;

    /// Resolves once `duration` of this clock's time has passed.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.sleep_until(self.now_millis().saturating_add(millis(duration)))
    }
}

/// The system's clock: what production runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    fn read() -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }
}

impl Clock for SystemClock {
    fn now_millis(&self) -> UnixMillis {
        SystemClock::read()
    }

    fn sleep_until(&self, at: UnixMillis) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Sleep again if the system clock was set back meanwhile.
            loop {
                let left = at.saturating_sub(SystemClock::read());
                if left <= 0 {
                    return;
                }
                let left = u64::try_from(left).unwrap_or(u64::MAX);
                tokio::time::sleep(Duration::from_millis(left)).await;
            }
        })
    }
}

/// A clock that moves only when told to: for tests and simulations. Sleepers wake as soon
/// as [`ManualClock::advance`] or [`ManualClock::set`] moves the time past their moment,
/// whichever thread or runtime they sleep on.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<UnixMillis>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn starting_at(start: UnixMillis) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: watch::Sender::new(start),
        })
    }

    /// A clock that reads the system's time now, then moves only when told to.
    pub fn starting_now() -> Arc<ManualClock> {
        ManualClock::starting_at(SystemClock::read())
    }

    /// Moves the time forward by `by`, waking whoever sleeps until then.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|now| *now = now.saturating_add(millis(by)));
    }

    /// Sets the time (forward or back).
    pub fn set(&self, at: UnixMillis) {
        self.now.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> UnixMillis {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: UnixMillis) -> BoxFuture<'static, ()> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: nobody can move it any more, so wake.
            let _ = now.wait_for(|now| *now >= at).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved_past_their_moment() {
        let clock = ManualClock::starting_at(1_000);
        let sleeper = tokio::spawn(clock.sleep(Duration::from_secs(10)));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke a second early");
        clock.advance(Duration::from_secs(1));
        sleeper.await.expect("the sleeper wakes");
        assert_eq!(clock.now_millis(), 11_000);
    }

    #[tokio::test]
    async fn a_moment_already_past_does_not_wait() {
        let clock = ManualClock::starting_at(5_000);
        clock.sleep_until(4_000).await;
        SystemClock.sleep_until(0).await;
    }
}
