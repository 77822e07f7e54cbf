//! Small, deterministic building blocks for staying up when the things we depend on do not.
//!
//! Nothing in here reads a clock, sleeps, spawns or does I/O: every function that depends on time
//! takes `now: Instant`, and randomness comes in as `random: f64` in `[0, 1)`. The actors own
//! these values and drive them; tests drive them with simulated time.
//!
//! - [`breaker`]: a circuit breaker over a count-based sliding window (closed → open →
//!   half-open), with exponentially growing open periods;
//! - [`limiter`]: a token bucket for rate limits with bursts;
//! - [`backoff`]: exponential backoff with jitter, forgetting failures after a quiet period;
//! - [`intensity`]: restart intensity, Erlang's "at most MaxR restarts within MaxT".

pub mod backoff;
pub mod breaker;
pub mod intensity;
pub mod limiter;

pub use backoff::{BackoffSettings, BackoffState};
pub use breaker::{BreakerSettings, BreakerState, CircuitBreaker, Permit, Rejected};
pub use intensity::{IntensitySettings, RestartIntensity};
pub use limiter::{RateLimit, TokenBucket};
