//! The scheduler's storage: the `JobStore` port over both backends (jobs, notification
//! settings, who a user is to notifications, broadcasts and their deliveries).
//!
//! A broadcast's recipients are chosen by one `INSERT … SELECT` (100 000 users are one
//! statement, not 100 000 round trips); its segment's conditions are validated values
//! written into that statement (a language is letters, a plan id letters, digits, `_`, `-`;
//! days a number), so nothing an operator types reaches SQL unchecked.

use std::collections::BTreeSet;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use vitte_actors::domain::notification::{
    NotificationKind, NotificationSettings, QuietHours, Topic,
};
use vitte_actors::ports::clock::UnixMillis;
use vitte_actors::ports::schedule::{
    Audience, BroadcastId, BroadcastReport, Delivery, DeliveryStatus, Job, JobId, JobOutcome,
    JobStatus, JobStore, NewJob, PeriodMessage, Segment,
};
use vitte_actors::ports::{StoreError, UserId};

use super::schema::{
    broadcast_deliveries, broadcasts, dialogs, messages, notification_settings, scheduled_jobs,
    users,
};
use super::{Database, Pool, SqliteConn, StorageError};

const DAY_MS: i64 = 86_400_000;

type JobRow = (
    i64,
    String,
    i64,
    i64,
    String,
    String,
    String,
    i32,
    Option<String>,
);

const JOB_COLUMNS: (
    scheduled_jobs::id,
    scheduled_jobs::kind,
    scheduled_jobs::user_id,
    scheduled_jobs::due_at,
    scheduled_jobs::payload,
    scheduled_jobs::idempotency_key,
    scheduled_jobs::status,
    scheduled_jobs::attempts,
    scheduled_jobs::last_error,
) = (
    scheduled_jobs::id,
    scheduled_jobs::kind,
    scheduled_jobs::user_id,
    scheduled_jobs::due_at,
    scheduled_jobs::payload,
    scheduled_jobs::idempotency_key,
    scheduled_jobs::status,
    scheduled_jobs::attempts,
    scheduled_jobs::last_error,
);

/// A stored job; `None` for a kind or status this version does not know (skipped).
fn job(row: JobRow) -> Option<Job> {
    let (id, kind, user_id, due_at, payload, key, status, attempts, last_error) = row;
    Some(Job {
        id,
        kind: NotificationKind::parse(&kind)?,
        user_id,
        due_at,
        payload,
        key,
        status: JobStatus::parse(&status)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error,
    })
}

/// `COUNT(*)` of a raw query.
#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// The `WHERE` condition on `users u` of a segment; an invalid value is refused.
fn segment_condition(segment: &Segment, now: UnixMillis) -> Result<String, StoreError> {
    let mut condition = vec!["u.blocked_at IS NULL".to_owned()];
    if let Some(language) = &segment.language {
        let language = language.to_ascii_lowercase();
        if language.is_empty()
            || language.len() > 8
            || !language.bytes().all(|byte| byte.is_ascii_lowercase())
        {
            return Err(StoreError(format!(
                "segment.language {language:?} is not a language code"
            )));
        }
        let prefix: String = language.chars().take(2).collect();
        condition.push(format!(
            "lower(substr(COALESCE(u.language, u.language_code, ''), 1, 2)) = '{prefix}'"
        ));
    }
    if let Some(plan) = &segment.plan {
        let open = format!(
            "EXISTS (SELECT 1 FROM entitlements e WHERE e.user_id = u.id AND e.paid_until > {now}"
        );
        let clause = match plan.as_str() {
            "free" => format!("NOT {open})"),
            "paid" => format!("{open})"),
            product => {
                let valid = !product.is_empty()
                    && product.len() <= 64
                    && product.bytes().all(|byte| {
                        byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte)
                    });
                if !valid {
                    return Err(StoreError(format!(
                        "segment.plan {product:?} is not a plan id"
                    )));
                }
                format!("{open} AND e.plan_product = '{product}')")
            }
        };
        condition.push(clause);
    }
    if let Some(days) = segment.active_within_days {
        let since = now.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        condition.push(format!(
            "EXISTS (SELECT 1 FROM messages m JOIN dialogs d ON m.dialog_id = d.id \
             WHERE d.user_id = u.id AND m.role = 'user' AND m.created_at >= {since})"
        ));
    }
    Ok(condition.join(" AND "))
}

fn storage(error: StorageError) -> StoreError {
    StoreError::from(error)
}

#[async_trait]
impl JobStore for Database {
    async fn schedule(&self, job: &NewJob) -> Result<bool, StoreError> {
        let job = job.clone();
        let now = self.now();
        with_connection!(self, |conn| {
            let inserted = diesel::insert_into(scheduled_jobs::table)
                .values((
                    scheduled_jobs::kind.eq(job.kind.as_str()),
                    scheduled_jobs::user_id.eq(job.user_id),
                    scheduled_jobs::due_at.eq(job.due_at),
                    scheduled_jobs::payload.eq(&job.payload),
                    scheduled_jobs::idempotency_key.eq(&job.key),
                    scheduled_jobs::status.eq(JobStatus::Pending.as_str()),
                    scheduled_jobs::attempts.eq(0),
                    scheduled_jobs::created_at.eq(now),
                    scheduled_jobs::updated_at.eq(now),
                ))
                .on_conflict(scheduled_jobs::idempotency_key)
                .do_nothing()
                .execute(conn)
                .await?;
            Ok(inserted > 0)
        })
        .map_err(storage)
    }

    async fn cancel_pending(
        &self,
        user_id: UserId,
        kind: NotificationKind,
        keep: &str,
    ) -> Result<u64, StoreError> {
        let keep = keep.to_owned();
        with_connection!(self, |conn| {
            let deleted = diesel::delete(scheduled_jobs::table)
                .filter(scheduled_jobs::user_id.eq(user_id))
                .filter(scheduled_jobs::kind.eq(kind.as_str()))
                .filter(scheduled_jobs::status.eq(JobStatus::Pending.as_str()))
                .filter(scheduled_jobs::idempotency_key.ne(&keep))
                .execute(conn)
                .await?;
            Ok(deleted as u64)
        })
        .map_err(storage)
    }

    async fn take_due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let updated_at = self.now();
        in_transaction!(self, |conn| {
            let rows = scheduled_jobs::table
                .filter(scheduled_jobs::status.eq(JobStatus::Pending.as_str()))
                .filter(scheduled_jobs::due_at.le(now))
                .order((scheduled_jobs::due_at.asc(), scheduled_jobs::id.asc()))
                .limit(limit)
                .select(JOB_COLUMNS)
                .load::<JobRow>(conn)
                .await?;
            let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
            diesel::update(scheduled_jobs::table)
                .filter(scheduled_jobs::id.eq_any(&ids))
                .set((
                    scheduled_jobs::status.eq(JobStatus::Running.as_str()),
                    scheduled_jobs::attempts.eq(scheduled_jobs::attempts + 1),
                    scheduled_jobs::updated_at.eq(updated_at),
                ))
                .execute(conn)
                .await?;
            Ok(rows
                .into_iter()
                .filter_map(job)
                .map(|mut job| {
                    job.status = JobStatus::Running;
                    job.attempts += 1;
                    job
                })
                .collect())
        })
        .map_err(storage)
    }

    async fn finish(
        &self,
        id: JobId,
        outcome: &JobOutcome,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (status, error, due_at) = match outcome {
            JobOutcome::Done => (JobStatus::Done, None, None),
            JobOutcome::Skipped(reason) => (JobStatus::Skipped, Some(reason.clone()), None),
            JobOutcome::Failed(reason) => (JobStatus::Failed, Some(reason.clone()), None),
            JobOutcome::Postponed { until, reason } => {
                (JobStatus::Pending, Some(reason.clone()), Some(*until))
            }
            JobOutcome::Paused => (JobStatus::Paused, None, None),
        };
        with_connection!(self, |conn| {
            let target = scheduled_jobs::table.filter(scheduled_jobs::id.eq(id));
            match due_at {
                Some(due_at) => {
                    diesel::update(target)
                        .set((
                            scheduled_jobs::status.eq(status.as_str()),
                            scheduled_jobs::last_error.eq(&error),
                            scheduled_jobs::due_at.eq(due_at),
                            scheduled_jobs::updated_at.eq(now),
                        ))
                        .execute(conn)
                        .await?;
                }
                None => {
                    diesel::update(target)
                        .set((
                            scheduled_jobs::status.eq(status.as_str()),
                            scheduled_jobs::last_error.eq(&error),
                            scheduled_jobs::updated_at.eq(now),
                        ))
                        .execute(conn)
                        .await?;
                }
            }
            Ok(())
        })
        .map_err(storage)
    }

    async fn recover_running(&self) -> Result<u64, StoreError> {
        with_connection!(self, |conn| {
            let recovered = diesel::update(scheduled_jobs::table)
                .filter(scheduled_jobs::status.eq(JobStatus::Running.as_str()))
                .set(scheduled_jobs::status.eq(JobStatus::Pending.as_str()))
                .execute(conn)
                .await?;
            Ok(recovered as u64)
        })
        .map_err(storage)
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        with_connection!(self, |conn| {
            let next = scheduled_jobs::table
                .filter(scheduled_jobs::status.eq(JobStatus::Pending.as_str()))
                .select(diesel::dsl::min(scheduled_jobs::due_at))
                .first::<Option<i64>>(conn)
                .await?;
            Ok(next)
        })
        .map_err(storage)
    }

    async fn jobs_of(&self, user_id: UserId) -> Result<Vec<Job>, StoreError> {
        with_connection!(self, |conn| {
            let rows = scheduled_jobs::table
                .filter(scheduled_jobs::user_id.eq(user_id))
                .order((scheduled_jobs::due_at.desc(), scheduled_jobs::id.desc()))
                .select(JOB_COLUMNS)
                .load::<JobRow>(conn)
                .await?;
            Ok(rows.into_iter().filter_map(job).collect())
        })
        .map_err(storage)
    }

    async fn audience(&self, user_id: UserId) -> Result<Option<Audience>, StoreError> {
        with_connection!(self, |conn| {
            let user = users::table
                .filter(users::id.eq(user_id))
                .select((
                    users::chat_id,
                    users::language,
                    users::language_code,
                    users::blocked_at,
                    users::active_slot,
                ))
                .first::<(
                    i64,
                    Option<String>,
                    Option<String>,
                    Option<i64>,
                    Option<i32>,
                )>(conn)
                .await
                .optional()?;
            let Some((chat_id, language, language_code, blocked_at, active_slot)) = user else {
                return Ok(None);
            };
            let chosen = notification_settings::table
                .filter(notification_settings::user_id.eq(user_id))
                .select((
                    notification_settings::disabled_topics,
                    notification_settings::quiet_start,
                    notification_settings::quiet_end,
                    notification_settings::time_zone,
                ))
                .first::<(String, Option<i32>, Option<i32>, Option<String>)>(conn)
                .await
                .optional()?;
            let settings = chosen.map_or_else(NotificationSettings::default, |row| {
                let (disabled, start, end, time_zone) = row;
                let hour = |value: Option<i32>| value.and_then(|hour| u8::try_from(hour).ok());
                NotificationSettings {
                    disabled: disabled
                        .split(',')
                        .filter_map(Topic::parse)
                        .collect::<BTreeSet<_>>(),
                    quiet: match (hour(start), hour(end)) {
                        (Some(start), Some(end)) => Some(QuietHours { start, end }),
                        _ => None,
                    },
                    time_zone,
                }
            });
            let last_message_at = messages::table
                .inner_join(dialogs::table)
                .filter(dialogs::user_id.eq(user_id))
                .filter(messages::role.eq("user"))
                .select(diesel::dsl::max(messages::created_at))
                .first::<Option<i64>>(conn)
                .await?;
            let last_persona = match active_slot {
                Some(slot) => dialogs::table
                    .filter(dialogs::user_id.eq(user_id))
                    .filter(dialogs::slot.eq(slot))
                    .filter(dialogs::closed_at.is_null())
                    .order(dialogs::id.desc())
                    .select(dialogs::persona_id)
                    .first::<String>(conn)
                    .await
                    .optional()?,
                None => None,
            };
            Ok(Some(Audience {
                user_id,
                chat_id,
                language: language.or(language_code),
                settings,
                active: blocked_at.is_none(),
                last_message_at,
                last_persona,
            }))
        })
        .map_err(storage)
    }

    async fn save_notification_settings(
        &self,
        user_id: UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError> {
        let disabled = settings
            .disabled
            .iter()
            .map(|topic| topic.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let start = settings.quiet.map(|quiet| i32::from(quiet.start));
        let end = settings.quiet.map(|quiet| i32::from(quiet.end));
        let time_zone = settings.time_zone.clone();
        let now = self.now();
        with_connection!(self, |conn| {
            diesel::insert_into(notification_settings::table)
                .values((
                    notification_settings::user_id.eq(user_id),
                    notification_settings::disabled_topics.eq(&disabled),
                    notification_settings::quiet_start.eq(start),
                    notification_settings::quiet_end.eq(end),
                    notification_settings::time_zone.eq(&time_zone),
                    notification_settings::updated_at.eq(now),
                ))
                .on_conflict(notification_settings::user_id)
                .do_update()
                .set((
                    notification_settings::disabled_topics.eq(&disabled),
                    notification_settings::quiet_start.eq(start),
                    notification_settings::quiet_end.eq(end),
                    notification_settings::time_zone.eq(&time_zone),
                    notification_settings::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(storage)
    }

    async fn set_active(
        &self,
        user_id: UserId,
        active: bool,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (blocked_at, from, to) = if active {
            (None, JobStatus::Paused, JobStatus::Pending)
        } else {
            (Some(now), JobStatus::Pending, JobStatus::Paused)
        };
        in_transaction!(self, |conn| {
            diesel::update(users::table.filter(users::id.eq(user_id)))
                .set(users::blocked_at.eq(blocked_at))
                .execute(conn)
                .await?;
            diesel::update(scheduled_jobs::table)
                .filter(scheduled_jobs::user_id.eq(user_id))
                .filter(scheduled_jobs::status.eq(from.as_str()))
                .set((
                    scheduled_jobs::status.eq(to.as_str()),
                    scheduled_jobs::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .map_err(storage)
    }

    async fn period_messages(
        &self,
        user_id: UserId,
        from: UnixMillis,
        to: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PeriodMessage>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_connection!(self, |conn| {
            let mut rows = messages::table
                .inner_join(dialogs::table)
                .filter(dialogs::user_id.eq(user_id))
                .filter(messages::created_at.ge(from))
                .filter(messages::created_at.lt(to))
                .filter(messages::role.eq_any(["user", "assistant"]))
                .order((messages::created_at.desc(), messages::id.desc()))
                .limit(limit)
                .select((
                    dialogs::persona_id,
                    messages::role,
                    messages::content,
                    messages::created_at,
                ))
                .load::<(String, String, String, i64)>(conn)
                .await?;
            rows.reverse();
            Ok(rows
                .into_iter()
                .map(|(persona_id, role, content, created_at)| PeriodMessage {
                    persona_id,
                    role,
                    content,
                    created_at,
                })
                .collect())
        })
        .map_err(storage)
    }

    async fn count_segment(&self, segment: &Segment, now: UnixMillis) -> Result<u64, StoreError> {
        let query = format!(
            "SELECT COUNT(*) AS count FROM users u WHERE {}",
            segment_condition(segment, now)?
        );
        with_connection!(self, |conn| {
            let counted = diesel::sql_query(query.clone())
                .get_result::<Count>(conn)
                .await?;
            Ok(u64::try_from(counted.count).unwrap_or(0))
        })
        .map_err(storage)
    }

    async fn create_broadcast(
        &self,
        text: &str,
        segment: &Segment,
        now: UnixMillis,
    ) -> Result<BroadcastReport, StoreError> {
        let condition = segment_condition(segment, now)?;
        let segment_json = serde_json::to_string(segment)
            .map_err(|error| StoreError(format!("segment: {error}")))?;
        let text = text.to_owned();
        let id = in_transaction!(self, |conn| {
            let id = diesel::insert_into(broadcasts::table)
                .values((
                    broadcasts::text.eq(&text),
                    broadcasts::segment.eq(&segment_json),
                    broadcasts::status.eq("running"),
                    broadcasts::total.eq(0_i64),
                    broadcasts::created_at.eq(now),
                ))
                .returning(broadcasts::id)
                .get_result::<i64>(conn)
                .await?;
            let chosen = diesel::sql_query(format!(
                "INSERT INTO broadcast_deliveries (broadcast_id, user_id, status, due_at, \
                 updated_at) SELECT {id}, u.id, 'pending', {now}, {now} FROM users u WHERE \
                 {condition}"
            ))
            .execute(conn)
            .await?;
            diesel::update(broadcasts::table.filter(broadcasts::id.eq(id)))
                .set(broadcasts::total.eq(i64::try_from(chosen).unwrap_or(i64::MAX)))
                .execute(conn)
                .await?;
            Ok(id)
        })
        .map_err(storage)?;
        self.broadcast(id)
            .await?
            .ok_or_else(|| StoreError("the broadcast just stored is gone".into()))
    }

    async fn take_deliveries(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        in_transaction!(self, |conn| {
            let rows = broadcast_deliveries::table
                .inner_join(broadcasts::table)
                .filter(broadcasts::status.eq("running"))
                .filter(broadcast_deliveries::status.eq(DeliveryStatus::Pending.as_str()))
                .filter(broadcast_deliveries::due_at.le(now))
                .order((
                    broadcast_deliveries::broadcast_id.asc(),
                    broadcast_deliveries::user_id.asc(),
                ))
                .limit(limit)
                .select((
                    broadcast_deliveries::broadcast_id,
                    broadcast_deliveries::user_id,
                    broadcasts::text,
                ))
                .load::<(i64, i64, String)>(conn)
                .await?;
            for (broadcast_id, user_id, _) in &rows {
                diesel::update(broadcast_deliveries::table)
                    .filter(broadcast_deliveries::broadcast_id.eq(broadcast_id))
                    .filter(broadcast_deliveries::user_id.eq(user_id))
                    .set((
                        broadcast_deliveries::status.eq(DeliveryStatus::Sending.as_str()),
                        broadcast_deliveries::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok(rows
                .into_iter()
                .map(|(broadcast_id, user_id, text)| Delivery {
                    broadcast_id,
                    user_id,
                    text,
                })
                .collect())
        })
        .map_err(storage)
    }

    async fn finish_delivery(
        &self,
        broadcast_id: BroadcastId,
        user_id: UserId,
        status: DeliveryStatus,
        retry_at: Option<UnixMillis>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        with_connection!(self, |conn| {
            let target = broadcast_deliveries::table
                .filter(broadcast_deliveries::broadcast_id.eq(broadcast_id))
                .filter(broadcast_deliveries::user_id.eq(user_id));
            match retry_at {
                Some(due_at) => {
                    diesel::update(target)
                        .set((
                            broadcast_deliveries::status.eq(status.as_str()),
                            broadcast_deliveries::due_at.eq(due_at),
                            broadcast_deliveries::updated_at.eq(now),
                        ))
                        .execute(conn)
                        .await?;
                }
                None => {
                    diesel::update(target)
                        .set((
                            broadcast_deliveries::status.eq(status.as_str()),
                            broadcast_deliveries::updated_at.eq(now),
                        ))
                        .execute(conn)
                        .await?;
                }
            }
            Ok(())
        })
        .map_err(storage)
    }

    async fn close_finished_broadcasts(&self, now: UnixMillis) -> Result<(), StoreError> {
        with_connection!(self, |conn| {
            diesel::sql_query(format!(
                "UPDATE broadcasts SET status = 'done', finished_at = {now} \
                 WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM broadcast_deliveries d \
                 WHERE d.broadcast_id = broadcasts.id AND d.status IN ('pending', 'sending'))"
            ))
            .execute(conn)
            .await?;
            Ok(())
        })
        .map_err(storage)
    }

    async fn recover_sending(&self) -> Result<u64, StoreError> {
        with_connection!(self, |conn| {
            let recovered = diesel::update(broadcast_deliveries::table)
                .filter(broadcast_deliveries::status.eq(DeliveryStatus::Sending.as_str()))
                .set(broadcast_deliveries::status.eq(DeliveryStatus::Unconfirmed.as_str()))
                .execute(conn)
                .await?;
            Ok(recovered as u64)
        })
        .map_err(storage)
    }

    async fn broadcast(&self, id: BroadcastId) -> Result<Option<BroadcastReport>, StoreError> {
        with_connection!(self, |conn| {
            let row = broadcasts::table
                .filter(broadcasts::id.eq(id))
                .select((
                    broadcasts::text,
                    broadcasts::segment,
                    broadcasts::status,
                    broadcasts::total,
                    broadcasts::created_at,
                    broadcasts::finished_at,
                ))
                .first::<(String, String, String, i64, i64, Option<i64>)>(conn)
                .await
                .optional()?;
            let Some((text, segment, status, total, created_at, finished_at)) = row else {
                return Ok(None);
            };
            let counts = broadcast_deliveries::table
                .filter(broadcast_deliveries::broadcast_id.eq(id))
                .group_by(broadcast_deliveries::status)
                .select((broadcast_deliveries::status, diesel::dsl::count_star()))
                .load::<(String, i64)>(conn)
                .await?;
            let count = |wanted: &[&str]| -> u64 {
                counts
                    .iter()
                    .filter(|(status, _)| wanted.contains(&status.as_str()))
                    .map(|(_, count)| u64::try_from(*count).unwrap_or(0))
                    .sum()
            };
            Ok(Some(BroadcastReport {
                id,
                status,
                text,
                segment: serde_json::from_str(&segment).unwrap_or_default(),
                created_at,
                finished_at,
                total: u64::try_from(total).unwrap_or(0),
                pending: count(&["pending", "sending"]),
                sent: count(&["sent"]),
                skipped: count(&["skipped"]),
                failed: count(&["failed"]),
                unconfirmed: count(&["unconfirmed"]),
            }))
        })
        .map_err(storage)
    }
}
