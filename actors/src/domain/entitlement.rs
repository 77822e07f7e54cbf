//! What a user may do, computed from stored periods and the clock: their plan's state
//! (active → grace → expired), their unlocked features, and whether one more message fits
//! today's limit (reset at local midnight of the configured time zone).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::domain::catalogue::Feature;
use crate::ports::clock::{UnixMillis, millis};

/// A paid plan's period, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPeriod {
    /// The catalogue product it came from.
    pub product_id: String,
    /// Paid up to here (Unix milliseconds).
    pub paid_until: UnixMillis,
    /// Whether Telegram renews it by itself (a subscription neither canceled nor failed).
    pub renewing: bool,
    /// The charge of the subscription's first payment (what `editUserStarSubscription`
    /// names); `None` for one-off plans.
    pub subscription_charge: Option<String>,
}

/// What a user has bought.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlement {
    pub plan: Option<PlanPeriod>,
    pub unlocked: BTreeSet<Feature>,
}

/// Where a plan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    /// No plan was ever bought: the free tier.
    Free,
    Active {
        until: UnixMillis,
    },
    /// Past its end (or a failed renewal's), still served until `until`.
    Grace {
        until: UnixMillis,
    },
    /// Over: the free tier again.
    Expired {
        since: UnixMillis,
    },
}

impl PlanState {
    /// Whether the plan's messages are open (active or in grace).
    pub fn is_paid(self) -> bool {
        matches!(self, PlanState::Active { .. } | PlanState::Grace { .. })
    }
}

/// The limits every user gets, from `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages a day on the free tier.
    pub free_daily_messages: u32,
    /// Messages a day on a paid plan (fair use).
    pub paid_daily_messages: u32,
    /// How long a plan is still served after it ends.
    pub grace: Duration,
    /// The zone whose midnight starts a new day.
    pub zone: Tz,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            free_daily_messages: 30,
            paid_daily_messages: 1_000,
            grace: Duration::from_secs(3 * 86_400),
            zone: chrono_tz::Europe::Moscow,
        }
    }
}

/// Why a message was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The free tier's messages for today are used up.
    FreeLimit,
    /// A paid plan's fair-use cap for today is reached.
    FairUse,
}

impl Denial {
    /// Its label in `entitlement_denials_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::FreeLimit => "free_limit",
            Denial::FairUse => "fair_use",
        }
    }
}

impl Entitlement {
    /// The plan's state at `now`.
    pub fn plan_state(&self, now: UnixMillis, grace: Duration) -> PlanState {
        let Some(plan) = &self.plan else {
            return PlanState::Free;
        };
        let grace_until = plan.paid_until.saturating_add(millis(grace));
        if now < plan.paid_until {
            PlanState::Active {
                until: plan.paid_until,
            }
        } else if now < grace_until {
            PlanState::Grace { until: grace_until }
        } else {
            PlanState::Expired { since: grace_until }
        }
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.unlocked.contains(&feature)
    }

    /// The messages a day this user may write at `now`.
    pub fn daily_limit(&self, now: UnixMillis, limits: &Limits) -> u32 {
        if self.plan_state(now, limits.grace).is_paid() {
            limits.paid_daily_messages
        } else {
            limits.free_daily_messages
        }
    }

    /// Whether one more message fits after `used_today`; why not otherwise.
    pub fn allows_another(
        &self,
        used_today: u32,
        now: UnixMillis,
        limits: &Limits,
    ) -> Result<(), Denial> {
        if used_today < self.daily_limit(now, limits) {
            return Ok(());
        }
        if self.plan_state(now, limits.grace).is_paid() {
            Err(Denial::FairUse)
        } else {
            Err(Denial::FreeLimit)
        }
    }
}

/// Changes a purchase, a renewal or a refund makes. Each is pure: it takes what storage holds
/// and returns what it should hold (the payment desk runs them inside a transaction).
impl Entitlement {
    /// A plan of `days` bought at `now`: it runs from the later of now and the current
    /// plan's end.
    pub fn extend_plan(mut self, product_id: &str, days: u32, now: UnixMillis) -> Entitlement {
        let from = self
            .plan
            .as_ref()
            .map_or(now, |plan| plan.paid_until.max(now));
        let paid_until = from.saturating_add(i64::from(days) * DAY_MS);
        let (renewing, subscription_charge) = self
            .plan
            .take()
            .map(|plan| (plan.renewing, plan.subscription_charge))
            .unwrap_or_default();
        self.plan = Some(PlanPeriod {
            product_id: product_id.to_owned(),
            paid_until,
            renewing,
            subscription_charge,
        });
        self
    }

    /// A subscription's payment (its first or a renewal): paid up to Telegram's
    /// `expires_at` when it says so, else 30 days more; it renews.
    pub fn extend_subscription(
        self,
        product_id: &str,
        charge_id: Option<&str>,
        expires_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Entitlement {
        let mut extended = self.extend_plan(product_id, 30, now);
        if let Some(plan) = extended.plan.as_mut() {
            if let Some(expires_at) = expires_at.filter(|at| *at > now) {
                plan.paid_until = expires_at;
            }
            plan.renewing = true;
            if let Some(charge_id) = charge_id {
                plan.subscription_charge = Some(charge_id.to_owned());
            }
        }
        extended
    }

    /// A refunded plan payment of `days`: the plan ends that much earlier, or at once (with
    /// no grace: nothing left is paid for) when that is in the past; a refunded
    /// subscription stops renewing.
    pub fn withdraw_plan(mut self, days: u32, charge_id: &str, now: UnixMillis) -> Entitlement {
        let Some(mut plan) = self.plan.take() else {
            return self;
        };
        plan.paid_until = plan.paid_until.saturating_sub(i64::from(days) * DAY_MS);
        if plan.subscription_charge.as_deref() == Some(charge_id) {
            plan.renewing = false;
        }
        if plan.paid_until > now {
            self.plan = Some(plan);
        }
        self
    }

    /// Renewal switched on or off (by the user from /status, or by Telegram).
    pub fn with_renewal(mut self, renewing: bool) -> Entitlement {
        if let Some(plan) = self.plan.as_mut() {
            plan.renewing = renewing;
        }
        self
    }

    /// A failed renewal: the plan stops renewing and its grace starts now at the latest.
    pub fn renewal_failed(mut self, now: UnixMillis) -> Entitlement {
        if let Some(plan) = self.plan.as_mut() {
            plan.renewing = false;
            plan.paid_until = plan.paid_until.min(now);
        }
        self
    }

    pub fn unlock(mut self, feature: Feature) -> Entitlement {
        self.unlocked.insert(feature);
        self
    }

    pub fn lock(mut self, feature: Feature) -> Entitlement {
        self.unlocked.remove(&feature);
        self
    }
}

const DAY_MS: i64 = 86_400_000;

/// The IANA time zone called `name` (`Europe/Moscow`).
pub fn parse_zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

/// A moment as the user's clock shows it in `zone`: `2026-12-03 14:05`.
pub fn format_local(at: UnixMillis, zone: Tz) -> String {
    zone.timestamp_millis_opt(at).single().map_or_else(
        || at.to_string(),
        |time| time.format("%Y-%m-%d %H:%M").to_string(),
    )
}

/// The local day of `now` in `zone`, as days since 1970-01-01 (a key for "today").
pub fn local_day(now: UnixMillis, zone: Tz) -> i64 {
    let local = zone.timestamp_millis_opt(now).single().map_or_else(
        || chrono::DateTime::UNIX_EPOCH.naive_utc(),
        |time| time.naive_local(),
    );
    local
        .date()
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days()
}

/// The start (Unix milliseconds) of the local day that contains `now`.
pub fn day_start(now: UnixMillis, zone: Tz) -> UnixMillis {
    let Some(local) = zone.timestamp_millis_opt(now).single() else {
        return now;
    };
    let midnight = local.date_naive().and_time(NaiveTime::MIN);
    // A zone may skip midnight (a DST change at 00:00): the earliest time of that day.
    zone.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .map_or(now, |start| start.timestamp_millis())
}

/// The next local midnight after `now` (when today's count starts over).
pub fn next_day_start(now: UnixMillis, zone: Tz) -> UnixMillis {
    // The next day starts at most 25 hours after this one did (DST), at least 23 after.
    let start = day_start(now, zone);
    let probe = start + 26 * 3_600_000;
    let next = day_start(probe, zone);
    if next > now {
        next
    } else {
        day_start(probe + 3_600_000, zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn limits() -> Limits {
        Limits {
            free_daily_messages: 3,
            paid_daily_messages: 5,
            grace: Duration::from_secs(3 * 86_400),
            zone: chrono_tz::Asia::Tashkent,
        }
    }

    fn paid_until(until: i64) -> Entitlement {
        Entitlement {
            plan: Some(PlanPeriod {
                product_id: "week".into(),
                paid_until: until,
                renewing: false,
                subscription_charge: None,
            }),
            unlocked: BTreeSet::new(),
        }
    }

    #[test]
    fn a_plan_goes_active_then_grace_then_expired() {
        let limits = limits();
        let plan = paid_until(10 * DAY);
        assert_eq!(
            plan.plan_state(9 * DAY, limits.grace),
            PlanState::Active { until: 10 * DAY }
        );
        assert_eq!(
            plan.plan_state(10 * DAY, limits.grace),
            PlanState::Grace { until: 13 * DAY }
        );
        assert_eq!(
            plan.plan_state(13 * DAY, limits.grace),
            PlanState::Expired { since: 13 * DAY }
        );
        assert_eq!(
            Entitlement::default().plan_state(0, limits.grace),
            PlanState::Free
        );
    }

    #[test]
    fn the_limit_follows_the_plan() {
        let limits = limits();
        let free = Entitlement::default();
        assert_eq!(free.allows_another(2, 0, &limits), Ok(()));
        assert_eq!(free.allows_another(3, 0, &limits), Err(Denial::FreeLimit));
        let paid = paid_until(10 * DAY);
        assert_eq!(paid.allows_another(4, DAY, &limits), Ok(()));
        assert_eq!(paid.allows_another(5, DAY, &limits), Err(Denial::FairUse));
        // In grace still paid; expired is the free tier again.
        assert_eq!(paid.allows_another(4, 11 * DAY, &limits), Ok(()));
        assert_eq!(
            paid.allows_another(3, 14 * DAY, &limits),
            Err(Denial::FreeLimit)
        );
    }

    #[test]
    fn a_day_starts_at_local_midnight() {
        let zone = chrono_tz::Asia::Tashkent; // UTC+5, no DST
        // 2026-12-02 18:59:59 UTC = 23:59:59 in Tashkent.
        let before = 1_796_237_999_000;
        let after = before + 1_000;
        assert_eq!(local_day(after, zone), local_day(before, zone) + 1);
        assert_eq!(day_start(after, zone), after);
        assert_eq!(next_day_start(before, zone), after);
        assert_eq!(next_day_start(after, zone), after + DAY);
    }

    #[test]
    fn days_around_a_dst_change_are_whole() {
        let zone = chrono_tz::Europe::Berlin;
        // 2026-03-29: clocks go from 02:00 to 03:00; that day has 23 hours.
        let noon_before = 1_774_695_600_000; // 2026-03-28 11:00 UTC = 12:00 CET
        let start = next_day_start(noon_before, zone); // 2026-03-29 00:00 CET
        let next = next_day_start(start, zone);
        assert_eq!(next - start, 23 * 3_600_000);
    }

    #[test]
    fn purchases_extend_and_refunds_withdraw_without_grace() {
        let now = 100 * DAY;
        let week = Entitlement::default().extend_plan("week", 7, now);
        assert_eq!(week.plan.as_ref().map(|p| p.paid_until), Some(107 * DAY));
        let two = week.clone().extend_plan("week", 7, now + DAY);
        assert_eq!(two.plan.as_ref().map(|p| p.paid_until), Some(114 * DAY));
        let back = two.withdraw_plan(7, "c2", now + DAY);
        assert_eq!(back.plan.as_ref().map(|p| p.paid_until), Some(107 * DAY));
        assert_eq!(back.withdraw_plan(7, "c1", now + DAY).plan, None);
        let unlocked = Entitlement::default().unlock(Feature::FantasyScenes);
        assert!(unlocked.has(Feature::FantasyScenes));
        assert!(
            !unlocked
                .lock(Feature::FantasyScenes)
                .has(Feature::FantasyScenes)
        );
    }

    #[test]
    fn a_subscription_follows_telegrams_expiry_and_a_failure_starts_grace_now() {
        let now = 100 * DAY;
        let subscribed =
            Entitlement::default().extend_subscription("month", Some("s1"), Some(131 * DAY), now);
        let plan = subscribed.plan.clone().expect("plan");
        assert_eq!((plan.paid_until, plan.renewing), (131 * DAY, true));
        let renewed = subscribed.extend_subscription("month", None, None, 131 * DAY);
        let plan = renewed.plan.clone().expect("plan");
        assert_eq!(plan.paid_until, 161 * DAY);
        assert_eq!(plan.subscription_charge.as_deref(), Some("s1"));
        let failed = renewed.renewal_failed(140 * DAY);
        let grace = Duration::from_secs(3 * 86_400);
        assert_eq!(
            failed.plan_state(140 * DAY, grace),
            PlanState::Grace { until: 143 * DAY }
        );
        assert!(!failed.plan.expect("plan").renewing);
    }
}
