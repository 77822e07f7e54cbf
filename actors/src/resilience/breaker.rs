//! A circuit breaker in the style of resilience4j, over a count-based sliding window.
//!
//! The breaker sits in front of a dependency (the LLM, say) and has three states:
//!
//! - **Closed**: every call is allowed. The outcomes of the last `window_size` calls are kept;
//!   once at least `minimum_calls` are in the window, the breaker opens if the share of failed
//!   calls reaches `failure_rate_threshold` or the share of slow calls (taking at least
//!   `slow_call_ms`) reaches `slow_call_rate_threshold`.
//! - **Open**: every call is refused with the time left to wait. The wait is
//!   `open_ms * 2^(consecutive openings - 1)`, capped at `max_open_ms`, so a dependency that
//!   keeps failing is left alone for longer and longer.
//! - **HalfOpen**: once the wait has passed, up to `half_open_probes` probe calls are let
//!   through. Any failed or slow probe opens the breaker again (with a longer wait); when all
//!   probes have succeeded, the breaker closes with a fresh window and the opening count reset.
//!
//! Each allowed call gets a [`Permit`] that must be handed back to [`CircuitBreaker::record`]
//! with the outcome. A permit remembers the state it was issued in, so a call that finishes
//! after the breaker changed state (a closed-state call ending after the breaker opened, say) is
//! ignored rather than miscounted.
//!
//! The breaker reads no clock: time comes in as `now`, which makes it deterministic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The wait suggested to a caller refused because all half-open probes are taken.
const PROBES_BUSY_RETRY: Duration = Duration::from_millis(100);

/// When a [`CircuitBreaker`] opens and how it recovers. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Share of failed calls in the window (0.0..=1.0) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Share of slow calls in the window (0.0..=1.0) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long (milliseconds) counts as slow.
    pub slow_call_ms: u64,
    /// How many of the latest call outcomes the closed-state window keeps.
    pub window_size: usize,
    /// The fewest outcomes the window must hold before its rates are judged.
    pub minimum_calls: usize,
    /// How long (milliseconds) the breaker stays open after its first opening.
    pub open_ms: u64,
    /// The longest (milliseconds) the breaker stays open, however often it reopened.
    pub max_open_ms: u64,
    /// Probe calls let through while half-open; this many must succeed to close the breaker.
    pub half_open_probes: usize,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_ms: 30_000,
            window_size: 20,
            minimum_calls: 10,
            open_ms: 5_000,
            max_open_ms: 120_000,
            half_open_probes: 2,
        }
    }
}

impl BreakerSettings {
    /// Checks that the settings make sense; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.failure_rate_threshold) {
            return Err("failure_rate_threshold must be between 0 and 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.slow_call_rate_threshold) {
            return Err("slow_call_rate_threshold must be between 0 and 1".to_owned());
        }
        if self.minimum_calls < 1 {
            return Err("minimum_calls must be at least 1".to_owned());
        }
        if self.window_size < self.minimum_calls {
            return Err("window_size must be at least minimum_calls".to_owned());
        }
        if self.open_ms < 1 {
            return Err("open_ms must be at least 1".to_owned());
        }
        if self.max_open_ms < self.open_ms {
            return Err("max_open_ms must be at least open_ms".to_owned());
        }
        if self.half_open_probes < 1 {
            return Err("half_open_probes must be at least 1".to_owned());
        }
        Ok(())
    }

    /// How long the breaker stays open after its `openings`-th consecutive opening:
    /// `open_ms * 2^(openings - 1)`, capped at `max_open_ms`.
    fn open_wait(&self, openings: u32) -> Duration {
        let factor = 2u64
            .checked_pow(openings.saturating_sub(1))
            .unwrap_or(u64::MAX);
        Duration::from_millis(self.open_ms.saturating_mul(factor).min(self.max_open_ms))
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow and their outcomes are counted.
    Closed,
    /// Calls are refused until the open wait ends.
    Open,
    /// A few probe calls are let through to test whether the dependency recovered.
    HalfOpen,
}

impl BreakerState {
    /// The state as a gauge value: closed 0, half-open 1, open 2.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// The state's name for logs and labels: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Proof that a call was allowed; must be given back to [`CircuitBreaker::record`].
#[derive(Debug)]
#[must_use = "give the permit back to CircuitBreaker::record with the call's outcome"]
pub struct Permit {
    /// Issued in the half-open state.
    probe: bool,
    /// The breaker's epoch (number of state changes) when the permit was issued.
    epoch: u64,
}

impl Permit {
    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A call refused by an open (or busy half-open) breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; next attempt in {retry_in:?}")]
pub struct Rejected {
    /// How long to wait before trying again.
    pub retry_in: Duration,
}

/// The state with its bookkeeping.
#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { since: Instant },
    HalfOpen { in_flight: usize, succeeded: usize },
}

/// One call's outcome in the closed-state window.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    failed: bool,
    slow: bool,
}

/// A circuit breaker; see the [module docs](self) for the model.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: State,
    /// The latest outcomes, oldest first; only used while closed.
    window: VecDeque<Outcome>,
    consecutive_openings: u32,
    /// Bumped on every state change, so permits from an earlier state are recognised.
    epoch: u64,
}

impl CircuitBreaker {
    /// A closed breaker with an empty window.
    pub fn new(settings: BreakerSettings) -> Self {
        CircuitBreaker {
            settings,
            state: State::Closed,
            window: VecDeque::new(),
            consecutive_openings: 0,
            epoch: 0,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Applies new settings; keeps the state; trims the window if it shrank.
    ///
    /// An open breaker's wait is recomputed from the new settings, counted from when it opened.
    pub fn reconfigure(&mut self, settings: BreakerSettings) {
        self.settings = settings;
        self.trim_window();
    }

    /// Current state; an Open breaker whose wait has passed becomes HalfOpen here.
    pub fn state(&mut self, now: Instant) -> BreakerState {
        self.refresh(now);
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call.
    ///
    /// Closed: always allowed. Open: refused with the time left until the open wait ends, after
    /// which the breaker turns half-open. HalfOpen: allowed while fewer than `half_open_probes`
    /// probes are out or have succeeded, otherwise refused with a short retry hint.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        self.refresh(now);
        match self.state {
            State::Closed => Ok(Permit {
                probe: false,
                epoch: self.epoch,
            }),
            State::Open { since } => {
                let elapsed = now.saturating_duration_since(since);
                Err(Rejected {
                    retry_in: self.open_wait().saturating_sub(elapsed),
                })
            }
            State::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if in_flight.saturating_add(succeeded) < self.settings.half_open_probes {
                    self.state = State::HalfOpen {
                        in_flight: in_flight + 1,
                        succeeded,
                    };
                    Ok(Permit {
                        probe: true,
                        epoch: self.epoch,
                    })
                } else {
                    Err(Rejected {
                        retry_in: PROBES_BUSY_RETRY,
                    })
                }
            }
        }
    }

    /// Records a call's outcome: `success` false for failures that count (the caller decides),
    /// `duration` to detect slow calls (at least `slow_call_ms` is slow).
    ///
    /// Closed: the outcome joins the window, which may open the breaker. HalfOpen: a failed or
    /// slow probe opens it again (with a longer wait); once `half_open_probes` probes have
    /// succeeded it closes. A permit issued before the latest state change is ignored.
    pub fn record(&mut self, permit: Permit, success: bool, duration: Duration, now: Instant) {
        if permit.epoch != self.epoch {
            return;
        }
        let slow = duration >= Duration::from_millis(self.settings.slow_call_ms);
        match (self.state, permit.probe) {
            (State::Closed, false) => {
                self.window.push_back(Outcome {
                    failed: !success,
                    slow,
                });
                self.trim_window();
                if self.rates_exceeded() {
                    self.trip(now);
                }
            }
            (
                State::HalfOpen {
                    in_flight,
                    succeeded,
                },
                true,
            ) => {
                if !success || slow {
                    self.trip(now);
                    return;
                }
                let succeeded = succeeded + 1;
                if succeeded >= self.settings.half_open_probes {
                    self.close();
                } else {
                    self.state = State::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        succeeded,
                    };
                }
            }
            _ => {}
        }
    }

    /// Hands back a permit whose call was never made (e.g. a rate limit stopped it): a
    /// half-open probe slot is freed, nothing is recorded.
    pub fn release(&mut self, permit: Permit) {
        if permit.epoch != self.epoch || !permit.probe {
            return;
        }
        if let State::HalfOpen {
            in_flight,
            succeeded,
        } = self.state
        {
            self.state = State::HalfOpen {
                in_flight: in_flight.saturating_sub(1),
                succeeded,
            };
        }
    }

    /// Consecutive openings so far (0 when closed after recovery).
    pub fn consecutive_openings(&self) -> u32 {
        self.consecutive_openings
    }

    /// The current open wait, from the number of consecutive openings.
    fn open_wait(&self) -> Duration {
        self.settings.open_wait(self.consecutive_openings)
    }

    /// Turns an open breaker whose wait has passed half-open.
    fn refresh(&mut self, now: Instant) {
        if let State::Open { since } = self.state {
            if now.saturating_duration_since(since) >= self.open_wait() {
                self.set_state(State::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                });
            }
        }
    }

    /// Opens the breaker (again), lengthening the next wait.
    fn trip(&mut self, now: Instant) {
        self.consecutive_openings = self.consecutive_openings.saturating_add(1);
        self.window.clear();
        self.set_state(State::Open { since: now });
    }

    /// Closes the breaker after a recovery.
    fn close(&mut self) {
        self.consecutive_openings = 0;
        self.window.clear();
        self.set_state(State::Closed);
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
        self.epoch = self.epoch.wrapping_add(1);
    }

    fn trim_window(&mut self) {
        while self.window.len() > self.settings.window_size {
            self.window.pop_front();
        }
    }

    /// Whether the window holds enough calls and its failure or slow rate is too high.
    fn rates_exceeded(&self) -> bool {
        let calls = self.window.len();
        if calls == 0 || calls < self.settings.minimum_calls {
            return false;
        }
        let failed = self.window.iter().filter(|o| o.failed).count();
        let slow = self.window.iter().filter(|o| o.slow).count();
        let rate = |n: usize| n as f64 / calls as f64;
        rate(failed) >= self.settings.failure_rate_threshold
            || rate(slow) >= self.settings.slow_call_rate_threshold
    }
}

#[cfg(test)]
mod release_tests {
    use super::*;

    #[test]
    fn a_released_probe_frees_its_slot() {
        let settings = BreakerSettings {
            window_size: 1,
            minimum_calls: 1,
            open_ms: 10,
            max_open_ms: 10,
            half_open_probes: 1,
            ..BreakerSettings::default()
        };
        let mut breaker = CircuitBreaker::new(settings);
        let start = Instant::now();
        let permit = breaker.try_acquire(start).expect("closed");
        breaker.record(permit, false, Duration::ZERO, start);
        let later = start + Duration::from_millis(20);
        let probe = breaker.try_acquire(later).expect("half-open probe");
        assert!(
            breaker.try_acquire(later).is_err(),
            "the only slot is taken"
        );
        breaker.release(probe);
        assert!(breaker.try_acquire(later).is_ok(), "the slot is free again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);
    const SLOW: Duration = Duration::from_millis(1_500);

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 0.5,
            slow_call_ms: 1_000,
            window_size: 10,
            minimum_calls: 4,
            open_ms: 1_000,
            max_open_ms: 3_000,
            half_open_probes: 2,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Makes one call through a breaker that must allow it.
    fn call(breaker: &mut CircuitBreaker, success: bool, duration: Duration, now: Instant) {
        let permit = breaker.try_acquire(now).expect("call allowed");
        breaker.record(permit, success, duration, now);
    }

    /// `count` calls with the same outcome.
    fn calls(
        breaker: &mut CircuitBreaker,
        count: usize,
        success: bool,
        duration: Duration,
        now: Instant,
    ) {
        for _ in 0..count {
            call(breaker, success, duration, now);
        }
    }

    /// Opens a closed breaker with `minimum_calls` failures.
    fn trip(breaker: &mut CircuitBreaker, now: Instant) {
        for _ in 0..breaker.settings().minimum_calls {
            call(breaker, false, FAST, now);
        }
        assert_eq!(breaker.state(now), BreakerState::Open);
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(BreakerSettings::default().validate(), Ok(()));
        assert_eq!(settings().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        let bad = BreakerSettings {
            window_size: 3,
            ..settings()
        };
        assert_eq!(
            bad.validate(),
            Err("window_size must be at least minimum_calls".to_owned())
        );
        let cases = [
            (
                BreakerSettings {
                    failure_rate_threshold: 1.5,
                    ..settings()
                },
                "failure_rate_threshold",
            ),
            (
                BreakerSettings {
                    slow_call_rate_threshold: -0.1,
                    ..settings()
                },
                "slow_call_rate_threshold",
            ),
            (
                BreakerSettings {
                    minimum_calls: 0,
                    ..settings()
                },
                "minimum_calls",
            ),
            (
                BreakerSettings {
                    open_ms: 0,
                    ..settings()
                },
                "open_ms",
            ),
            (
                BreakerSettings {
                    max_open_ms: 999,
                    ..settings()
                },
                "max_open_ms",
            ),
            (
                BreakerSettings {
                    half_open_probes: 0,
                    ..settings()
                },
                "half_open_probes",
            ),
        ];
        for (bad, field) in cases {
            let message = bad.validate().expect_err("invalid settings");
            assert!(message.starts_with(field), "{message}");
        }
    }

    #[test]
    fn state_names_and_gauges() {
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
        assert_eq!(BreakerState::Closed.as_gauge(), 0);
        assert_eq!(BreakerState::HalfOpen.as_gauge(), 1);
        assert_eq!(BreakerState::Open.as_gauge(), 2);
    }

    #[test]
    fn opens_only_after_minimum_calls() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        calls(&mut breaker, 3, false, FAST, now);
        assert_eq!(breaker.state(now), BreakerState::Closed);
        assert_eq!(breaker.consecutive_openings(), 0);
        call(&mut breaker, false, FAST, now);
        assert_eq!(breaker.state(now), BreakerState::Open);
        assert_eq!(breaker.consecutive_openings(), 1);
    }

    #[test]
    fn opens_on_failure_rate() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        calls(&mut breaker, 6, true, FAST, now);
        calls(&mut breaker, 4, false, FAST, now);
        // 4 failures out of 10: 40%, below the threshold.
        assert_eq!(breaker.state(now), BreakerState::Closed);
        // The oldest success leaves the window: 5 out of 10.
        call(&mut breaker, false, FAST, now);
        assert_eq!(breaker.state(now), BreakerState::Open);
    }

    #[test]
    fn opens_on_slow_calls() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        call(&mut breaker, true, FAST, now);
        call(&mut breaker, true, FAST, now);
        call(&mut breaker, true, SLOW, now);
        assert_eq!(breaker.state(now), BreakerState::Closed);
        // Exactly `slow_call_ms` counts as slow: 2 slow out of 4.
        call(&mut breaker, true, ms(1_000), now);
        assert_eq!(breaker.state(now), BreakerState::Open);
    }

    #[test]
    fn rejects_while_open_with_the_remaining_wait() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        trip(&mut breaker, start);

        let rejected = breaker.try_acquire(start + ms(400)).expect_err("open");
        assert_eq!(rejected.retry_in, ms(600));
        assert_eq!(rejected.to_string(), "circuit open; next attempt in 600ms");
        assert_eq!(breaker.state(start + ms(999)), BreakerState::Open);
        assert_eq!(breaker.state(start + ms(1_000)), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_allows_exactly_the_probes() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        trip(&mut breaker, start);
        let later = start + ms(1_000);

        let first = breaker.try_acquire(later).expect("first probe");
        let second = breaker.try_acquire(later).expect("second probe");
        assert!(first.is_probe() && second.is_probe());
        let rejected = breaker.try_acquire(later).expect_err("no third probe");
        assert_eq!(rejected.retry_in, PROBES_BUSY_RETRY);

        // One probe succeeded and one is out: still no room for another.
        breaker.record(first, true, FAST, later);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.try_acquire(later).is_err());

        breaker.record(second, true, FAST, later);
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[test]
    fn successful_probes_close_it_with_a_fresh_window() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        trip(&mut breaker, start);
        let later = start + ms(1_000);

        call(&mut breaker, true, FAST, later);
        call(&mut breaker, true, FAST, later);
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert_eq!(breaker.consecutive_openings(), 0);

        let permit = breaker.try_acquire(later).expect("closed");
        assert!(!permit.is_probe());
        breaker.record(permit, false, FAST, later);
        // The window starts empty again: 3 failures are below `minimum_calls`.
        call(&mut breaker, false, FAST, later);
        call(&mut breaker, false, FAST, later);
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens_with_a_doubled_wait_capped_at_max() {
        let mut now = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        trip(&mut breaker, now);
        assert_eq!(breaker.consecutive_openings(), 1);

        // A failed probe: open again for 2s.
        now += ms(1_000);
        let probe = breaker.try_acquire(now).expect("probe");
        breaker.record(probe, false, FAST, now);
        assert_eq!(breaker.consecutive_openings(), 2);
        let rejected = breaker.try_acquire(now).expect_err("open again");
        assert_eq!(rejected.retry_in, ms(2_000));

        // A slow (though successful) probe: 4s, capped at 3s.
        now += ms(2_000);
        let probe = breaker.try_acquire(now).expect("probe");
        breaker.record(probe, true, SLOW, now);
        assert_eq!(breaker.consecutive_openings(), 3);
        let rejected = breaker.try_acquire(now).expect_err("open again");
        assert_eq!(rejected.retry_in, ms(3_000));

        now += ms(3_000);
        assert_eq!(breaker.state(now), BreakerState::HalfOpen);
    }

    #[test]
    fn permits_from_an_earlier_state_are_ignored() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        let early = breaker.try_acquire(start).expect("closed");
        let late = breaker.try_acquire(start).expect("closed");
        trip(&mut breaker, start);

        // A closed-state call ending while open changes nothing.
        breaker.record(early, false, FAST, start);
        assert_eq!(breaker.consecutive_openings(), 1);
        assert_eq!(breaker.state(start), BreakerState::Open);

        // Nor does one ending while half-open: it is no probe.
        let later = start + ms(1_000);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        breaker.record(late, true, FAST, later);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        call(&mut breaker, true, FAST, later);
        call(&mut breaker, true, FAST, later);
        assert_eq!(breaker.state(later), BreakerState::Closed);
    }

    #[test]
    fn reconfigure_applies_new_thresholds() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        calls(&mut breaker, 7, true, FAST, now);
        calls(&mut breaker, 3, false, FAST, now);
        assert_eq!(breaker.state(now), BreakerState::Closed);

        let stricter = BreakerSettings {
            failure_rate_threshold: 0.25,
            ..settings()
        };
        breaker.reconfigure(stricter.clone());
        assert_eq!(breaker.settings(), &stricter);
        // The state is kept; the next outcome is judged by the new threshold (3 out of 10).
        assert_eq!(breaker.state(now), BreakerState::Closed);
        call(&mut breaker, true, FAST, now);
        assert_eq!(breaker.state(now), BreakerState::Open);
    }

    #[test]
    fn reconfigure_trims_the_window() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        calls(&mut breaker, 7, true, FAST, now);
        calls(&mut breaker, 3, false, FAST, now);
        breaker.reconfigure(BreakerSettings {
            window_size: 4,
            ..settings()
        });
        // Only the latest 4 calls count now, all failures.
        call(&mut breaker, false, FAST, now);
        assert_eq!(breaker.state(now), BreakerState::Open);
    }

    #[test]
    fn reconfigure_while_open_recomputes_the_wait() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(settings());
        trip(&mut breaker, start);
        breaker.reconfigure(BreakerSettings {
            open_ms: 500,
            ..settings()
        });
        assert_eq!(breaker.state(start + ms(500)), BreakerState::HalfOpen);
    }
}
