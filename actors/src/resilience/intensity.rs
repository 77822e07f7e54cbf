//! Restart intensity: Erlang's "at most MaxR restarts within MaxT".
//!
//! A supervisor restarts a failed child, but a child that keeps failing should not be restarted
//! forever: once more than `max_restarts` restarts happened within the last `within_ms`, the
//! supervisor gives up and escalates. [`RestartIntensity`] remembers the restart times of one
//! child (or one supervisor) and answers that question. The escalation lasts until old restarts
//! leave the window.
//!
//! A restart exactly `within_ms` ago still counts, as in Erlang. Nothing here reads a clock:
//! time comes in as `now`, which makes it deterministic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How many restarts are tolerated within which period.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntensitySettings {
    /// The most restarts tolerated within the window (Erlang's MaxR).
    pub max_restarts: u32,
    /// The window's length in milliseconds (Erlang's MaxT).
    pub within_ms: u64,
}

impl Default for IntensitySettings {
    fn default() -> Self {
        IntensitySettings {
            max_restarts: 5,
            within_ms: 5_000,
        }
    }
}

impl IntensitySettings {
    /// Checks that the settings make sense; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.within_ms < 1 {
            return Err("within_ms must be at least 1".to_owned());
        }
        Ok(())
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.within_ms)
    }

    fn limit(&self) -> usize {
        usize::try_from(self.max_restarts).unwrap_or(usize::MAX)
    }
}

/// The recent restarts of one thing; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct RestartIntensity {
    /// Restart times, oldest first.
    history: VecDeque<Instant>,
}

impl RestartIntensity {
    /// No restarts yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a restart; returns true if the restarts within the window now exceed
    /// `max_restarts`.
    pub fn record(&mut self, settings: &IntensitySettings, now: Instant) -> bool {
        self.forget_old(settings, now);
        self.history.push_back(now);
        self.history.len() > settings.limit()
    }

    /// Whether the restarts still within the window exceed `max_restarts` (the escalation
    /// lasts until old restarts leave the window).
    pub fn exceeded(&mut self, settings: &IntensitySettings, now: Instant) -> bool {
        self.recent(settings, now) > settings.limit()
    }

    /// Restarts within the window.
    pub fn recent(&mut self, settings: &IntensitySettings, now: Instant) -> usize {
        self.forget_old(settings, now);
        self.history.len()
    }

    /// Drops the restarts that happened more than `within_ms` before `now`.
    fn forget_old(&mut self, settings: &IntensitySettings, now: Instant) {
        let window = settings.window();
        while let Some(&oldest) = self.history.front() {
            if now.saturating_duration_since(oldest) <= window {
                break;
            }
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn two_per_second() -> IntensitySettings {
        IntensitySettings {
            max_restarts: 2,
            within_ms: 1_000,
        }
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(IntensitySettings::default().validate(), Ok(()));
        let empty = IntensitySettings {
            within_ms: 0,
            ..IntensitySettings::default()
        };
        assert_eq!(
            empty.validate(),
            Err("within_ms must be at least 1".to_owned())
        );
    }

    #[test]
    fn third_restart_within_the_window_exceeds() {
        let s = two_per_second();
        let start = Instant::now();
        let mut intensity = RestartIntensity::new();
        assert!(!intensity.record(&s, start));
        assert!(!intensity.record(&s, start + ms(300)));
        assert!(!intensity.exceeded(&s, start + ms(300)));
        assert!(intensity.record(&s, start + ms(600)));
        assert!(intensity.exceeded(&s, start + ms(600)));
        assert_eq!(intensity.recent(&s, start + ms(600)), 3);
    }

    #[test]
    fn escalation_ends_once_old_restarts_leave_the_window() {
        let s = two_per_second();
        let start = Instant::now();
        let mut intensity = RestartIntensity::default();
        intensity.record(&s, start);
        intensity.record(&s, start + ms(300));
        intensity.record(&s, start + ms(600));

        // The first restart is exactly 1s old: still inside.
        assert!(intensity.exceeded(&s, start + ms(1_000)));
        assert!(!intensity.exceeded(&s, start + ms(1_001)));
        assert_eq!(intensity.recent(&s, start + ms(1_001)), 2);
        assert_eq!(intensity.recent(&s, start + ms(2_000)), 0);
    }

    #[test]
    fn spread_out_restarts_never_exceed() {
        let s = two_per_second();
        let start = Instant::now();
        let mut intensity = RestartIntensity::new();
        for i in 0..10 {
            assert!(!intensity.record(&s, start + ms(600 * i)));
        }
    }

    #[test]
    fn zero_restarts_allowed_exceeds_at_once() {
        let s = IntensitySettings {
            max_restarts: 0,
            within_ms: 1_000,
        };
        assert!(RestartIntensity::new().record(&s, Instant::now()));
    }
}
