//! A token bucket: a sustained rate with room for bursts.
//!
//! The bucket holds at most `burst` tokens and starts full. Each request takes one token;
//! tokens flow back in continuously at `per_minute / 60` per second (fractions included), up to
//! the capacity. So after a quiet spell `burst` requests may go at once, and over time no more
//! than `per_minute` a minute get through. When the bucket is empty, [`TokenBucket::try_take`]
//! says how long until the next token.
//!
//! The bucket reads no clock: time comes in as `now`, which makes it deterministic.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Slack for float rounding, so a token refilled exactly on time is not missed.
const EPSILON: f64 = 1e-9;

/// A rate limit: a sustained rate with room for bursts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per minute, continuously: the sustained rate.
    pub per_minute: u32,
    /// The bucket's capacity: how many requests may go at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_minute: 100,
            burst: 10,
        }
    }
}

impl RateLimit {
    /// Checks that the limit makes sense; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.per_minute < 1 {
            return Err("per_minute must be at least 1".to_owned());
        }
        if self.burst < 1 {
            return Err("burst must be at least 1".to_owned());
        }
        Ok(())
    }

    fn per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst)
    }
}

/// A token bucket enforcing a [`RateLimit`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Tokens available as of `updated`, between 0 and the capacity.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: limit.capacity(),
            limit,
            updated: now,
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Applies a new limit; keeps the current tokens, capped at the new capacity.
    pub fn reconfigure(&mut self, limit: RateLimit, now: Instant) {
        self.refill(now);
        self.limit = limit;
        self.tokens = self.tokens.min(self.limit.capacity());
    }

    /// Tokens available now, fractions included.
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes one token, or says how long until one will be available.
    ///
    /// With an invalid limit (no capacity or no refill) the wait is [`Duration::MAX`].
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens + EPSILON >= 1.0 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Ok(());
        }
        if self.limit.capacity() < 1.0 {
            return Err(Duration::MAX);
        }
        let seconds = (1.0 - self.tokens) / self.limit.per_second();
        Err(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
    }

    /// Adds the tokens earned since the last update. Time never runs backwards here: an
    /// earlier `now` than already seen adds nothing.
    fn refill(&mut self, now: Instant) {
        if now <= self.updated {
            return;
        }
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        let refilled = self.tokens + elapsed * self.limit.per_second();
        self.tokens = refilled.min(self.limit.capacity());
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One token a second, three at once.
    fn limit() -> RateLimit {
        RateLimit {
            per_minute: 60,
            burst: 3,
        }
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(RateLimit::default().validate(), Ok(()));
        let no_rate = RateLimit {
            per_minute: 0,
            burst: 1,
        };
        assert_eq!(
            no_rate.validate(),
            Err("per_minute must be at least 1".to_owned())
        );
        let no_burst = RateLimit {
            per_minute: 1,
            burst: 0,
        };
        assert_eq!(
            no_burst.validate(),
            Err("burst must be at least 1".to_owned())
        );
    }

    #[test]
    fn burst_then_refusal_with_the_right_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(), start);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        assert_eq!(bucket.try_take(start), Err(ms(1_000)));
        // A quarter of a token has come back after 250ms.
        assert_eq!(bucket.try_take(start + ms(250)), Err(ms(750)));
    }

    #[test]
    fn refills_over_time_up_to_capacity() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(), start);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        assert_eq!(bucket.try_take(start + ms(1_000)), Ok(()));
        assert!(bucket.try_take(start + ms(1_000)).is_err());

        let later = start + ms(60_000);
        assert_close(bucket.available(later), 3.0);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn uneven_rates_refill_on_time() {
        // 100 a minute: one token every 600ms.
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_minute: 100,
                burst: 1,
            },
            start,
        );
        assert_eq!(bucket.try_take(start), Ok(()));
        let wait = bucket.try_take(start).expect_err("empty");
        assert!(wait.abs_diff(ms(600)) < ms(1), "{wait:?}");
        assert_eq!(bucket.try_take(start + ms(600)), Ok(()));
    }

    #[test]
    fn reconfigure_keeps_tokens_capped_at_the_new_capacity() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_minute: 60,
                burst: 10,
            },
            start,
        );
        bucket.reconfigure(limit(), start);
        assert_eq!(bucket.limit(), &limit());
        assert_close(bucket.available(start), 3.0);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }

        // A larger bucket does not fill up by itself; a faster rate refills sooner.
        let faster = RateLimit {
            per_minute: 120,
            burst: 5,
        };
        bucket.reconfigure(faster, start);
        assert_eq!(bucket.try_take(start), Err(ms(500)));
        assert_eq!(bucket.try_take(start + ms(500)), Ok(()));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let start = Instant::now();
        let later = start + ms(5_000);
        let mut bucket = TokenBucket::new(limit(), later);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert_eq!(bucket.try_take(start), Err(ms(1_000)));
    }
}
