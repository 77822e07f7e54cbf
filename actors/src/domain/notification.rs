//! Proactive messages: their kinds, what users control about them (topics, quiet hours,
//! time zone), and the calendar arithmetic of recurring ones. Pure: times are passed in.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;

use crate::ports::clock::UnixMillis;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What a scheduled job tells the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotificationKind {
    /// The plan ends in three days and will not renew by itself.
    SubscriptionEnding,
    /// The plan was not renewed: its grace period started.
    GraceStarted,
    /// The grace period ended: the free tier applies again.
    GraceEnded,
    /// The subscription renewed.
    Renewed,
    /// A purchase went through.
    PaymentSucceeded,
    /// A renewal payment failed.
    PaymentFailed,
    /// The persona of the user's last dialog writes after days without a message.
    Inactivity,
    /// Monday 09:00 local: the week's dialogs, summarised.
    WeeklyRecap,
    /// The 1st, 10:00 local: the month's dialogs, summarised.
    MonthlyRecap,
    /// A round number of messages with a persona.
    Milestone,
    /// An operator's broadcast.
    Announcement,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 11] = [
        NotificationKind::SubscriptionEnding,
        NotificationKind::GraceStarted,
        NotificationKind::GraceEnded,
        NotificationKind::Renewed,
        NotificationKind::PaymentSucceeded,
        NotificationKind::PaymentFailed,
        NotificationKind::Inactivity,
        NotificationKind::WeeklyRecap,
        NotificationKind::MonthlyRecap,
        NotificationKind::Milestone,
        NotificationKind::Announcement,
    ];

    /// Its stored name and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::SubscriptionEnding => "subscription_ending",
            NotificationKind::GraceStarted => "grace_started",
            NotificationKind::GraceEnded => "grace_ended",
            NotificationKind::Renewed => "renewed",
            NotificationKind::PaymentSucceeded => "payment_succeeded",
            NotificationKind::PaymentFailed => "payment_failed",
            NotificationKind::Inactivity => "inactivity",
            NotificationKind::WeeklyRecap => "weekly_recap",
            NotificationKind::MonthlyRecap => "monthly_recap",
            NotificationKind::Milestone => "milestone",
            NotificationKind::Announcement => "announcement",
        }
    }

    pub fn parse(name: &str) -> Option<NotificationKind> {
        NotificationKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The /settings switch that turns it off.
    pub fn topic(self) -> Topic {
        match self {
            NotificationKind::SubscriptionEnding
            | NotificationKind::GraceStarted
            | NotificationKind::GraceEnded
            | NotificationKind::Renewed => Topic::Subscription,
            NotificationKind::PaymentSucceeded | NotificationKind::PaymentFailed => Topic::Payments,
            NotificationKind::Inactivity => Topic::Inactivity,
            NotificationKind::WeeklyRecap | NotificationKind::MonthlyRecap => Topic::Recaps,
            NotificationKind::Milestone => Topic::Milestones,
            NotificationKind::Announcement => Topic::Announcements,
        }
    }

    /// The misfire policy: how late a job of this kind may still be sent (after a restart
    /// or an outage); later it is skipped and recorded. A notice about money keeps a day;
    /// a recap is worth little after its morning; a milestone is news for an hour.
    pub fn misfire_window(self) -> Duration {
        let hours = match self {
            NotificationKind::Milestone => 1,
            NotificationKind::WeeklyRecap | NotificationKind::MonthlyRecap => 6,
            NotificationKind::Inactivity => 12,
            _ => 24,
        };
        Duration::from_secs(hours * 3_600)
    }

    /// Whether quiet hours hold it back. A payment's confirmation answers what the user
    /// just did, so it goes at once.
    pub fn waits_for_quiet_hours(self) -> bool {
        self != NotificationKind::PaymentSucceeded
    }
}

/// What /settings switches on and off: kinds grouped as users think of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Subscription,
    Payments,
    Inactivity,
    Recaps,
    Milestones,
    Announcements,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Subscription,
        Topic::Payments,
        Topic::Inactivity,
        Topic::Recaps,
        Topic::Milestones,
        Topic::Announcements,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Subscription => "subscription",
            Topic::Payments => "payments",
            Topic::Inactivity => "inactivity",
            Topic::Recaps => "recaps",
            Topic::Milestones => "milestones",
            Topic::Announcements => "announcements",
        }
    }

    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|topic| topic.as_str() == name)
    }
}

/// Hours of the user's night: from `start` up to `end` (local hours, 0–23; `start > end`
/// spans midnight; equal means none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: u8,
    pub end: u8,
}

impl QuietHours {
    /// Whether the local hour `hour` is quiet.
    pub fn contains(&self, hour: u32) -> bool {
        let (start, end) = (u32::from(self.start), u32::from(self.end));
        match start.cmp(&end) {
            std::cmp::Ordering::Equal => false,
            std::cmp::Ordering::Less => (start..end).contains(&hour),
            std::cmp::Ordering::Greater => hour >= start || hour < end,
        }
    }

    /// If `at` falls in quiet hours in `zone`, the moment they end; `None` otherwise.
    pub fn end_after(&self, at: UnixMillis, zone: Tz) -> Option<UnixMillis> {
        let local = zone.timestamp_millis_opt(at).single()?;
        if !self.contains(local.hour()) {
            return None;
        }
        // Try the end hour today, then tomorrow: the first one after `at`.
        let date = local.date_naive();
        [date, date.succ_opt()?]
            .into_iter()
            .filter_map(|day| local_moment(day, u32::from(self.end), zone))
            .find(|end| *end > at)
    }

    /// "23:00–08:00".
    pub fn describe(&self) -> String {
        format!("{:02}:00–{:02}:00", self.start, self.end)
    }
}

/// What a user chose about proactive messages (/settings); `None`s take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationSettings {
    /// Topics switched off.
    pub disabled: BTreeSet<Topic>,
    /// `None`: the configured default; `Some(None)` would be "none" and is stored as
    /// start == end.
    pub quiet: Option<QuietHours>,
    /// An IANA zone name the user set (`Europe/Moscow`).
    pub time_zone: Option<String>,
}

impl NotificationSettings {
    pub fn allows(&self, kind: NotificationKind) -> bool {
        !self.disabled.contains(&kind.topic())
    }

    /// The user's zone, or `default` if they set none (or an unknown one).
    pub fn zone(&self, default: Tz) -> Tz {
        self.time_zone
            .as_deref()
            .and_then(|name| name.parse().ok())
            .unwrap_or(default)
    }

    /// The user's quiet hours, or `default`.
    pub fn quiet_hours(&self, default: QuietHours) -> QuietHours {
        self.quiet.unwrap_or(default)
    }
}

/// The moment `hour`:00 of local `day` in `zone` (the earliest, if a clock change repeats
/// it; an hour later, if a clock change skips it).
fn local_moment(day: NaiveDate, hour: u32, zone: Tz) -> Option<UnixMillis> {
    let time = NaiveTime::from_hms_opt(hour, 0, 0)?;
    let local = day.and_time(time);
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|moment| moment.timestamp_millis())
}

/// The local date of `at` in `zone`.
fn local_date(at: UnixMillis, zone: Tz) -> NaiveDate {
    zone.timestamp_millis_opt(at)
        .single()
        .map_or_else(NaiveDate::default, |local| local.date_naive())
}

/// A recurring recap: which one, and for which period it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// When it is sent.
    pub due_at: UnixMillis,
    /// The period it covers: `[from, to)`.
    pub from: UnixMillis,
    pub to: UnixMillis,
    /// The period's name, part of the job's idempotency key: `2026-W49`, `2026-12`.
    pub period: String,
}

/// The next weekly recap after `now`: Monday 09:00 local, covering the seven days before.
pub fn next_weekly(now: UnixMillis, zone: Tz) -> Option<Occurrence> {
    let today = local_date(now, zone);
    (0..=7).find_map(|ahead| {
        let day = today + chrono::Duration::days(ahead);
        if day.weekday() != Weekday::Mon {
            return None;
        }
        let due_at = local_moment(day, 9, zone)?;
        if due_at <= now {
            return None;
        }
        let week = day.pred_opt()?.iso_week();
        Some(Occurrence {
            due_at,
            from: due_at - 7 * DAY_MS,
            to: due_at,
            period: format!("{}-W{:02}", week.year(), week.week()),
        })
    })
}

/// The next monthly recap after `now`: the 1st, 10:00 local, covering the month before.
pub fn next_monthly(now: UnixMillis, zone: Tz) -> Option<Occurrence> {
    let today = local_date(now, zone);
    let this_month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1)?;
    let next_month = this_month.checked_add_months(chrono::Months::new(1))?;
    [this_month, next_month].into_iter().find_map(|first| {
        let due_at = local_moment(first, 10, zone)?;
        if due_at <= now {
            return None;
        }
        let previous = first.checked_sub_months(chrono::Months::new(1))?;
        Some(Occurrence {
            due_at,
            from: local_moment(previous, 10, zone)?,
            to: due_at,
            period: format!("{}-{:02}", previous.year(), previous.month()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(zone: Tz, text: &str) -> UnixMillis {
        let local = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("a time");
        zone.from_local_datetime(&local)
            .single()
            .expect("one moment")
            .timestamp_millis()
    }

    #[test]
    fn the_weekly_recap_is_monday_nine_local() {
        let zone = chrono_tz::Asia::Tashkent;
        // Thursday 3 December 2026.
        let weekly = next_weekly(at(zone, "2026-12-03 15:00"), zone).expect("a next one");
        assert_eq!(weekly.due_at, at(zone, "2026-12-07 09:00"));
        assert_eq!(weekly.period, "2026-W49");
        // On Monday at 09:00 itself, the next one is a week later.
        let next = next_weekly(weekly.due_at, zone).expect("a next one");
        assert_eq!(next.due_at, at(zone, "2026-12-14 09:00"));
        // On Monday before nine, it is today.
        let early = next_weekly(at(zone, "2026-12-07 08:59"), zone).expect("a next one");
        assert_eq!(early.due_at, weekly.due_at);
    }

    #[test]
    fn the_monthly_recap_is_the_first_at_ten_local() {
        let zone = chrono_tz::Europe::Moscow;
        let monthly = next_monthly(at(zone, "2026-12-03 15:00"), zone).expect("a next one");
        assert_eq!(monthly.due_at, at(zone, "2027-01-01 10:00"));
        assert_eq!(monthly.period, "2026-12");
        assert_eq!(monthly.from, at(zone, "2026-12-01 10:00"));
        let early = next_monthly(at(zone, "2026-12-01 09:00"), zone).expect("a next one");
        assert_eq!(early.period, "2026-11");
    }

    #[test]
    fn quiet_hours_span_midnight_and_end_at_their_end_hour() {
        let zone = chrono_tz::Asia::Tashkent;
        let quiet = QuietHours { start: 23, end: 8 };
        assert_eq!(
            quiet.end_after(at(zone, "2026-12-03 23:30"), zone),
            Some(at(zone, "2026-12-04 08:00"))
        );
        assert_eq!(
            quiet.end_after(at(zone, "2026-12-04 03:00"), zone),
            Some(at(zone, "2026-12-04 08:00"))
        );
        assert_eq!(quiet.end_after(at(zone, "2026-12-04 08:00"), zone), None);
        assert_eq!(quiet.end_after(at(zone, "2026-12-04 22:59"), zone), None);
        let none = QuietHours { start: 0, end: 0 };
        assert_eq!(none.end_after(at(zone, "2026-12-04 03:00"), zone), None);
    }

    #[test]
    fn settings_switch_topics_off_and_fall_back_to_defaults() {
        let mut settings = NotificationSettings::default();
        assert!(settings.allows(NotificationKind::WeeklyRecap));
        settings.disabled.insert(Topic::Recaps);
        assert!(!settings.allows(NotificationKind::MonthlyRecap));
        assert!(settings.allows(NotificationKind::Inactivity));
        settings.time_zone = Some("Nowhere/Atlantis".into());
        assert_eq!(settings.zone(chrono_tz::UTC), chrono_tz::UTC);
        for kind in NotificationKind::ALL {
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
        }
    }
}
