//! Exponential backoff with jitter.
//!
//! The n-th retry in a row waits `min_ms * 2^(n - 1)`, capped at `max_ms`. The delay is then
//! jittered — multiplied by a factor in `[1 - jitter, 1 + jitter]` — so that many things failing
//! together do not all retry at the same instant, and capped at `max_ms` again.
//!
//! [`BackoffState`] counts the consecutive failures of one thing (one actor, one connection) and
//! forgets them after `reset_after_ms` without a failure, so a thing that failed long ago starts
//! again from the shortest delay.
//!
//! Nothing here reads a clock or a random generator: time comes in as `now` and randomness as
//! `random` in `[0, 1)`, which makes it deterministic.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How delays grow between retries. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffSettings {
    /// The delay before the first retry (milliseconds).
    pub min_ms: u64,
    /// The longest delay (milliseconds), jitter included.
    pub max_ms: u64,
    /// How much delays vary (0.0..=1.0): 0.2 means up to 20% shorter or longer.
    pub jitter: f64,
    /// After this long (milliseconds) without a failure, the count of failures starts over.
    pub reset_after_ms: u64,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            min_ms: 200,
            max_ms: 30_000,
            jitter: 0.2,
            reset_after_ms: 60_000,
        }
    }
}

impl BackoffSettings {
    /// Checks that the settings make sense; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_ms < self.min_ms {
            return Err("max_ms must be at least min_ms".to_owned());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("jitter must be between 0 and 1".to_owned());
        }
        Ok(())
    }

    /// Delay before attempt number `attempt` (1 = first retry; 0 counts as 1):
    /// `min_ms * 2^(attempt - 1)`, capped at `max_ms`, then multiplied by a factor in
    /// `[1 - jitter, 1 + jitter]` chosen by `random` in `[0, 1)` (0.5 gives 1.0), and capped
    /// at `max_ms` again.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2u64
            .checked_pow(attempt.saturating_sub(1))
            .unwrap_or(u64::MAX);
        let base = self.min_ms.saturating_mul(factor).min(self.max_ms);

        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let jittered = base as f64 * (1.0 + jitter * (2.0 * random - 1.0));
        // `as` saturates (and is never negative here); the last `min` undoes float rounding
        // near `u64::MAX`.
        let millis = jittered.round().min(self.max_ms as f64) as u64;
        Duration::from_millis(millis.min(self.max_ms))
    }
}

/// Tracks consecutive failures of one thing (e.g. one actor) and forgets them after
/// `reset_after_ms` of quiet.
#[derive(Debug, Clone, Default)]
pub struct BackoffState {
    consecutive: u32,
    last_failure: Option<Instant>,
}

impl BackoffState {
    /// No failures yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failure and returns the delay to wait before the next try.
    ///
    /// If the previous failure was more than `reset_after_ms` ago, the count restarts at 1.
    pub fn next_delay(
        &mut self,
        settings: &BackoffSettings,
        now: Instant,
        random: f64,
    ) -> Duration {
        let quiet = Duration::from_millis(settings.reset_after_ms);
        let forgotten = self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) > quiet);
        if forgotten {
            self.consecutive = 0;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.last_failure = Some(now);
        settings.delay(self.consecutive, random)
    }

    /// Failures in a row so far (as of the last one recorded).
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Forgets all failures, e.g. after a success.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings() -> BackoffSettings {
        BackoffSettings {
            min_ms: 100,
            max_ms: 1_000,
            jitter: 0.0,
            reset_after_ms: 10_000,
        }
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(BackoffSettings::default().validate(), Ok(()));
        let zero = BackoffSettings {
            min_ms: 0,
            ..settings()
        };
        assert_eq!(zero.validate(), Ok(()));
        let inverted = BackoffSettings {
            max_ms: 50,
            ..settings()
        };
        assert_eq!(
            inverted.validate(),
            Err("max_ms must be at least min_ms".to_owned())
        );
        let wild = BackoffSettings {
            jitter: 1.5,
            ..settings()
        };
        assert_eq!(
            wild.validate(),
            Err("jitter must be between 0 and 1".to_owned())
        );
    }

    #[test]
    fn delays_double() {
        let s = settings();
        assert_eq!(s.delay(0, 0.5), ms(100));
        assert_eq!(s.delay(1, 0.5), ms(100));
        assert_eq!(s.delay(2, 0.5), ms(200));
        assert_eq!(s.delay(3, 0.5), ms(400));
        assert_eq!(s.delay(4, 0.5), ms(800));
    }

    #[test]
    fn delays_are_capped() {
        let s = settings();
        assert_eq!(s.delay(5, 0.5), ms(1_000));
        assert_eq!(s.delay(64, 0.5), ms(1_000));
        assert_eq!(s.delay(u32::MAX, 0.5), ms(1_000));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = BackoffSettings {
            min_ms: 500,
            max_ms: 10_000,
            jitter: 0.2,
            ..settings()
        };
        assert_eq!(s.delay(2, 0.0), ms(800));
        assert_eq!(s.delay(2, 0.5), ms(1_000));
        for i in 0..100_u32 {
            let delay = s.delay(2, f64::from(i) / 100.0);
            assert!(delay >= ms(800) && delay <= ms(1_200), "{delay:?}");
        }
        // Jitter never goes past the cap.
        assert_eq!(s.delay(10, 0.99), ms(10_000));
        assert_eq!(s.delay(10, 0.0), ms(8_000));
    }

    #[test]
    fn state_counts_failures_in_a_row() {
        let s = settings();
        let start = Instant::now();
        let mut state = BackoffState::new();
        assert_eq!(state.next_delay(&s, start, 0.5), ms(100));
        assert_eq!(state.next_delay(&s, start + ms(100), 0.5), ms(200));
        assert_eq!(state.next_delay(&s, start + ms(300), 0.5), ms(400));
        assert_eq!(state.consecutive(), 3);

        state.reset();
        assert_eq!(state.consecutive(), 0);
        assert_eq!(state.next_delay(&s, start + ms(700), 0.5), ms(100));
    }

    #[test]
    fn state_forgets_after_quiet() {
        let s = settings();
        let start = Instant::now();
        let mut state = BackoffState::default();
        state.next_delay(&s, start, 0.5);
        state.next_delay(&s, start, 0.5);
        // Exactly `reset_after_ms` later still counts as in a row.
        assert_eq!(state.next_delay(&s, start + ms(10_000), 0.5), ms(400));
        assert_eq!(state.consecutive(), 3);
        // More than that: start over.
        assert_eq!(state.next_delay(&s, start + ms(20_001), 0.5), ms(100));
        assert_eq!(state.consecutive(), 1);
    }
}
