//! `[outbox]` (Telegram's limits as the outbox keeps them) and `[notifications]` (the
//! scheduler: defaults users can change, reminders, recaps, retries).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vitte_actors::domain::entitlement::parse_zone;
use vitte_actors::domain::notification::QuietHours;
use vitte_actors::outbox::OutboxSettings;
use vitte_actors::scheduler::SchedulerSettings;

use super::{ConfigError, Settings};

/// `[outbox]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OutboxSection {
    pub global_per_second: u32,
    #[serde(with = "humantime_serde")]
    pub private_interval: Duration,
    pub private_burst: u32,
    pub group_per_minute: u32,
    pub capacity: usize,
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    pub max_attempts: u32,
}

/// `[notifications]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NotificationsSection {
    /// The zone of users who set none (empty: `limits.time_zone`).
    pub time_zone: String,
    /// Default quiet hours, local: `23` to `8`; equal hours mean none.
    pub quiet_start: u8,
    pub quiet_end: u8,
    #[serde(with = "humantime_serde")]
    pub inactivity_after: Duration,
    pub milestones: Vec<u32>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub batch: usize,
    pub concurrency: usize,
    pub broadcast_batch: usize,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub recaps_stop_after: Duration,
}

impl Settings {
    /// The outbox's limits, checked.
    pub fn outbox(&self) -> Result<OutboxSettings, ConfigError> {
        let section = &self.outbox;
        for (key, value) in [
            ("outbox.global_per_second", section.global_per_second),
            ("outbox.private_burst", section.private_burst),
            ("outbox.group_per_minute", section.group_per_minute),
            ("outbox.max_attempts", section.max_attempts),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if section.capacity == 0 {
            return Err(ConfigError::invalid(
                "outbox.capacity",
                "must be at least 1",
            ));
        }
        if section.private_interval.is_zero() {
            return Err(ConfigError::invalid(
                "outbox.private_interval",
                "must be longer than zero",
            ));
        }
        Ok(OutboxSettings {
            global_per_second: section.global_per_second,
            private_interval: section.private_interval,
            private_burst: section.private_burst,
            group_per_minute: section.group_per_minute,
            capacity: section.capacity,
            max_retry_after: section.max_retry_after,
            max_attempts: section.max_attempts,
        })
    }

    /// The scheduler's settings, checked.
    pub fn scheduler(&self) -> Result<SchedulerSettings, ConfigError> {
        let section = &self.notifications;
        let zone_name = if section.time_zone.trim().is_empty() {
            &self.limits.time_zone
        } else {
            &section.time_zone
        };
        let default_zone = parse_zone(zone_name).ok_or_else(|| {
            ConfigError::invalid(
                "notifications.time_zone",
                format!("{zone_name:?} is not an IANA time zone (such as Europe/Moscow)"),
            )
        })?;
        for (key, hour) in [
            ("notifications.quiet_start", section.quiet_start),
            ("notifications.quiet_end", section.quiet_end),
        ] {
            if hour > 23 {
                return Err(ConfigError::invalid(key, "must be an hour from 0 to 23"));
            }
        }
        for (key, value) in [
            ("notifications.batch", section.batch),
            ("notifications.concurrency", section.concurrency),
            ("notifications.broadcast_batch", section.broadcast_batch),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if section.poll_interval.is_zero() {
            return Err(ConfigError::invalid(
                "notifications.poll_interval",
                "must be longer than zero",
            ));
        }
        Ok(SchedulerSettings {
            poll_interval: section.poll_interval,
            batch: section.batch,
            concurrency: section.concurrency,
            broadcast_batch: section.broadcast_batch,
            default_zone,
            default_quiet: QuietHours {
                start: section.quiet_start,
                end: section.quiet_end,
            },
            inactivity_after: section.inactivity_after,
            milestones: section.milestones.clone(),
            max_attempts: section.max_attempts.max(1),
            retry_delay: section.retry_delay,
            recaps_stop_after: section.recaps_stop_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_from(&dir, "local").expect("the default configuration loads")
    }

    #[test]
    fn the_defaults_keep_telegrams_limits_and_a_night_of_quiet() {
        let settings = defaults();
        let outbox = settings.outbox().expect("valid");
        assert_eq!(outbox.global_per_second, 30);
        assert_eq!(outbox.group_per_minute, 20);
        let scheduler = settings.scheduler().expect("valid");
        assert_eq!(scheduler.default_quiet, QuietHours { start: 23, end: 8 });
        assert_eq!(scheduler.default_zone.name(), settings.limits.time_zone);
    }

    #[test]
    fn nonsense_is_refused_with_the_key_named() {
        let mut settings = defaults();
        settings.notifications.quiet_start = 25;
        let error = settings.scheduler().expect_err("refused").to_string();
        assert!(error.starts_with("notifications.quiet_start"), "{error}");
        settings.notifications.quiet_start = 23;
        settings.notifications.time_zone = "Mars/Olympus".into();
        let error = settings.scheduler().expect_err("refused").to_string();
        assert!(error.starts_with("notifications.time_zone"), "{error}");
        settings.outbox.global_per_second = 0;
        let error = settings.outbox().expect_err("refused").to_string();
        assert!(error.starts_with("outbox.global_per_second"), "{error}");
    }
}
