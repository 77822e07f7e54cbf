//! Which jobs a user should have, as [`NewJob`]s with their idempotency keys. Pure: the
//! caller stores them (a key stored already keeps the first).

use serde_json::json;

use crate::domain::notification::{NotificationKind, Occurrence, next_monthly, next_weekly};
use crate::ports::clock::{UnixMillis, millis};
use crate::ports::schedule::{Audience, NewJob};
use crate::ports::{DialogId, UserId};

use super::SchedulerSettings;

/// What a recap job carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecapPayload {
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub period: String,
}

/// What an inactivity reminder carries: the user's last message when it was planned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InactivityPayload {
    pub since: UnixMillis,
}

/// What a milestone carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MilestonePayload {
    pub persona_id: String,
    pub count: u32,
}

/// What the payment desk's notices carry: their text, written in the user's language when
/// the event happened; notices about a plan's end (the warning, grace started, grace
/// ended) also that end, checked again when due: a renewal since makes them moot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoticePayload {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_until: Option<UnixMillis>,
}

fn recap_job(kind: NotificationKind, user_id: UserId, occurrence: Occurrence) -> NewJob {
    let payload = RecapPayload {
        from: occurrence.from,
        to: occurrence.to,
        period: occurrence.period,
    };
    NewJob {
        kind,
        user_id,
        due_at: occurrence.due_at,
        key: format!("{}:{user_id}:{}", kind.as_str(), payload.period),
        payload: json!(payload).to_string(),
    }
}

/// The next recap of `kind` after `after`, in the user's zone.
pub fn next_recap(
    kind: NotificationKind,
    audience: &Audience,
    after: UnixMillis,
    settings: &SchedulerSettings,
) -> Option<NewJob> {
    let zone = audience.settings.zone(settings.default_zone);
    let occurrence = match kind {
        NotificationKind::WeeklyRecap => next_weekly(after, zone)?,
        NotificationKind::MonthlyRecap => next_monthly(after, zone)?,
        _ => return None,
    };
    Some(recap_job(kind, audience.user_id, occurrence))
}

/// The jobs a user who was just seen should have: their next recaps, and a reminder
/// `inactivity_after` their last message (one per silence: its key is that message's time).
pub fn jobs_for(audience: &Audience, now: UnixMillis, settings: &SchedulerSettings) -> Vec<NewJob> {
    let mut jobs: Vec<NewJob> = [
        NotificationKind::WeeklyRecap,
        NotificationKind::MonthlyRecap,
    ]
    .into_iter()
    .filter_map(|kind| next_recap(kind, audience, now, settings))
    .collect();
    if let Some(since) = audience.last_message_at {
        jobs.push(inactivity_job(audience.user_id, since, settings));
    }
    jobs
}

/// The reminder for the silence that began at `since`.
pub fn inactivity_job(user_id: UserId, since: UnixMillis, settings: &SchedulerSettings) -> NewJob {
    let kind = NotificationKind::Inactivity;
    NewJob {
        kind,
        user_id,
        due_at: since.saturating_add(millis(settings.inactivity_after)),
        key: format!("{}:{user_id}:{since}", kind.as_str()),
        payload: json!(InactivityPayload { since }).to_string(),
    }
}

/// A milestone reached now in `dialog`.
pub fn milestone_job(
    user_id: UserId,
    dialog: DialogId,
    persona_id: &str,
    count: u32,
    now: UnixMillis,
) -> NewJob {
    let kind = NotificationKind::Milestone;
    NewJob {
        kind,
        user_id,
        due_at: now,
        key: format!("{}:{dialog}:{count}", kind.as_str()),
        payload: json!(MilestonePayload {
            persona_id: persona_id.to_owned(),
            count,
        })
        .to_string(),
    }
}

/// A payment desk's notice of `kind`, due at `due_at`; `event` makes its key unique (a
/// charge id, a plan's end).
pub fn notice_job(
    kind: NotificationKind,
    user_id: UserId,
    due_at: UnixMillis,
    event: &str,
    payload: NoticePayload,
) -> NewJob {
    NewJob {
        kind,
        user_id,
        due_at,
        key: format!("{}:{user_id}:{event}", kind.as_str()),
        payload: json!(payload).to_string(),
    }
}
