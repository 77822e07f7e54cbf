//! What the scheduler does: runs one due job, delivers one broadcast message, plans a
//! user's jobs, writes /report.

use crate::domain::notification::NotificationKind;
use crate::domain::texts::{Lang, fill};
use crate::outbox::Priority;
use crate::ports::clock::{UnixMillis, millis};
use crate::ports::schedule::{Audience, Delivery, DeliveryStatus, Job, JobOutcome, PeriodMessage};
use crate::ports::{
    ChatId, ChatMessage, CompletionRequest, DeliveryError, LlmError, Purpose, Role, UserId,
};

use super::SchedulerDeps;
use super::planning::{
    InactivityPayload, MilestonePayload, NoticePayload, RecapPayload, jobs_for, next_recap,
};

/// Messages of a period a recap is written from (the newest, when there are more).
const RECAP_MESSAGES: usize = 80;
/// Messages of the last dialog a reminder in character sees.
const REMINDER_CONTEXT: usize = 6;

/// A broadcast message the outbox could not take yet is tried again this much later.
const BROADCAST_RETRY_MS: i64 = 5_000;

/// What a job's text turned out to be.
enum Composed {
    Text(String),
    /// Nothing to send, and why (recorded as the job's `last_error`).
    Nothing(String),
    /// Could not be written now (the LLM failed): try again later.
    NotNow(String),
    /// The LLM is rate-limited or its breakers are open: try again at `until`, without
    /// spending an attempt (the misfire window still ends the wait).
    Later {
        until: UnixMillis,
        reason: String,
    },
}

/// Why a text the LLM writes could not be had.
enum WriteError {
    Storage(String),
    Llm(LlmError),
}

impl WriteError {
    /// What the job does about it.
    fn composed(self, now: UnixMillis) -> Composed {
        match self {
            WriteError::Storage(reason) => Composed::NotNow(format!("storage: {reason}")),
            WriteError::Llm(
                LlmError::RateLimited { retry_in } | LlmError::CircuitOpen { retry_in },
            ) => Composed::Later {
                until: now.saturating_add(millis(retry_in).max(1_000)),
                reason: "the LLM is busy".into(),
            },
            WriteError::Llm(error) => Composed::NotNow(error.to_string()),
        }
    }
}

/// The label of `notifications_sent_total{status}` for an outcome.
fn status_label(outcome: &JobOutcome) -> &'static str {
    match outcome {
        JobOutcome::Done => "sent",
        JobOutcome::Skipped(reason) if reason == SWITCHED_OFF => "disabled",
        JobOutcome::Skipped(reason) if reason.starts_with(LATE) => "late",
        JobOutcome::Skipped(_) => "skipped",
        JobOutcome::Failed(_) => "failed",
        JobOutcome::Postponed { reason, .. } if reason == QUIET => "quiet",
        JobOutcome::Postponed { .. } => "retry",
        JobOutcome::Paused => "blocked",
    }
}

const SWITCHED_OFF: &str = "switched off by the user";
const LATE: &str = "too late";
const QUIET: &str = "quiet hours";

/// Runs one job taken from storage and records its outcome (and, for a recap, plans the
/// next one).
pub async fn run_job(deps: &SchedulerDeps, job: &Job) -> JobOutcome {
    let outcome = decide(deps, job).await;
    deps.metrics
        .notifications_sent_total
        .with_label_values(&[job.kind.as_str(), status_label(&outcome)])
        .inc();
    let now = deps.clock.now_millis();
    if let Err(error) = deps.store.finish(job.id, &outcome, now).await {
        // It stays `running`: the next start runs it again.
        tracing::warn!(%error, kind = job.kind.as_str(), "could not record a job's outcome");
    }
    let settled = !matches!(outcome, JobOutcome::Postponed { .. });
    if settled
        && matches!(
            job.kind,
            NotificationKind::WeeklyRecap | NotificationKind::MonthlyRecap
        )
    {
        plan_next_recap(deps, job).await;
    }
    outcome
}

async fn decide(deps: &SchedulerDeps, job: &Job) -> JobOutcome {
    let now = deps.clock.now_millis();
    let audience = match deps.store.audience(job.user_id).await {
        Ok(Some(audience)) => audience,
        Ok(None) => return JobOutcome::Skipped("unknown user".into()),
        Err(error) => return retry(deps, job, now, format!("storage: {error}")),
    };
    if !audience.active {
        return JobOutcome::Paused;
    }
    if !audience.settings.allows(job.kind) {
        return JobOutcome::Skipped(SWITCHED_OFF.into());
    }
    let late = now - job.due_at;
    if late > millis(job.kind.misfire_window()) {
        return JobOutcome::Skipped(format!("{LATE}: {} min after its time", late / 60_000));
    }
    let zone = audience.settings.zone(deps.settings.default_zone);
    let quiet = audience.settings.quiet_hours(deps.settings.default_quiet);
    if job.kind.waits_for_quiet_hours() {
        if let Some(until) = quiet.end_after(now, zone) {
            return JobOutcome::Postponed {
                until,
                reason: QUIET.into(),
            };
        }
    }
    let text = match compose(deps, job, &audience).await {
        Composed::Text(text) => text,
        Composed::Nothing(reason) => return JobOutcome::Skipped(reason),
        Composed::NotNow(reason) => return retry(deps, job, now, reason),
        Composed::Later { until, reason } => return JobOutcome::Postponed { until, reason },
    };
    let messenger = deps.outbox.messenger(Priority::Notification);
    match messenger.send_text(audience.chat_id, &text, None).await {
        Ok(_) => JobOutcome::Done,
        // The outbox told storage: the user is inactive and their jobs are paused.
        Err(DeliveryError::Blocked) => JobOutcome::Paused,
        // Telegram may have shown it: not sent again.
        Err(DeliveryError::MaybeDelivered(_)) => JobOutcome::Done,
        Err(error) => retry(deps, job, now, error.to_string()),
    }
}

/// Another attempt later, or the end of them.
fn retry(deps: &SchedulerDeps, job: &Job, now: UnixMillis, reason: String) -> JobOutcome {
    if job.attempts >= deps.settings.max_attempts {
        return JobOutcome::Failed(reason);
    }
    let delay = millis(deps.settings.retry_delay).saturating_mul(i64::from(job.attempts.max(1)));
    JobOutcome::Postponed {
        until: now.saturating_add(delay),
        reason,
    }
}

fn lang_of(audience: &Audience) -> Lang {
    Lang::from_telegram(audience.language.as_deref())
}

async fn compose(deps: &SchedulerDeps, job: &Job, audience: &Audience) -> Composed {
    let lang = lang_of(audience);
    let texts = lang.texts().notifications;
    match job.kind {
        NotificationKind::SubscriptionEnding
        | NotificationKind::GraceStarted
        | NotificationKind::GraceEnded => {
            let Ok(notice) = serde_json::from_str::<NoticePayload>(&job.payload) else {
                return Composed::Nothing("malformed payload".into());
            };
            let Some(paid_until) = notice.paid_until else {
                return Composed::Text(notice.text);
            };
            // About a plan's end: moot if the plan was renewed or extended since (or, for
            // the warning before it, renews by itself).
            match deps.payments.entitlement(job.user_id).await {
                Ok(entitlement) => {
                    let still = entitlement.plan.as_ref().is_some_and(|plan| {
                        plan.paid_until == paid_until
                            && !(job.kind == NotificationKind::SubscriptionEnding && plan.renewing)
                    });
                    if still {
                        Composed::Text(notice.text)
                    } else {
                        Composed::Nothing("renewed or renewing since".into())
                    }
                }
                Err(error) => Composed::NotNow(format!("storage: {error}")),
            }
        }
        NotificationKind::Renewed
        | NotificationKind::PaymentSucceeded
        | NotificationKind::PaymentFailed
        | NotificationKind::Announcement => {
            match serde_json::from_str::<NoticePayload>(&job.payload) {
                Ok(notice) => Composed::Text(notice.text),
                Err(_) => Composed::Nothing("malformed payload".into()),
            }
        }
        NotificationKind::Milestone => {
            let Ok(milestone) = serde_json::from_str::<MilestonePayload>(&job.payload) else {
                return Composed::Nothing("malformed payload".into());
            };
            let name = deps
                .personas
                .get(&milestone.persona_id)
                .map_or(milestone.persona_id.clone(), |persona| persona.name.clone());
            Composed::Text(fill(
                texts.milestone,
                &[("persona", &name), ("count", &milestone.count.to_string())],
            ))
        }
        NotificationKind::Inactivity => remind(deps, job, audience, lang).await,
        NotificationKind::WeeklyRecap | NotificationKind::MonthlyRecap => {
            let Ok(recap) = serde_json::from_str::<RecapPayload>(&job.payload) else {
                return Composed::Nothing("malformed payload".into());
            };
            let title = if job.kind == NotificationKind::WeeklyRecap {
                texts.weekly_title
            } else {
                texts.monthly_title
            };
            match write_recap(deps, job.user_id, recap.from, recap.to, lang).await {
                Ok(Some(summary)) => Composed::Text(format!("{title}\n\n{summary}")),
                Ok(None) => Composed::Nothing("no messages in the period".into()),
                Err(error) => error.composed(deps.clock.now_millis()),
            }
        }
    }
}

/// The persona of the user's last dialog writes to them, in character.
async fn remind(deps: &SchedulerDeps, job: &Job, audience: &Audience, lang: Lang) -> Composed {
    let Ok(payload) = serde_json::from_str::<InactivityPayload>(&job.payload) else {
        return Composed::Nothing("malformed payload".into());
    };
    if audience
        .last_message_at
        .is_some_and(|last| last > payload.since)
    {
        return Composed::Nothing("the user wrote since".into());
    }
    let Some(persona) = audience
        .last_persona
        .as_deref()
        .and_then(|id| deps.personas.get(id))
    else {
        return Composed::Nothing("no open dialog".into());
    };
    let texts = lang.texts().notifications;
    let recent = deps
        .store
        .period_messages(
            job.user_id,
            0,
            payload.since.saturating_add(1),
            REMINDER_CONTEXT,
        )
        .await
        .unwrap_or_default();
    let days = (millis(deps.settings.inactivity_after) / 86_400_000).to_string();
    let mut messages = vec![ChatMessage {
        role: Role::System,
        content: format!(
            "{}\n\n{}\n\n{}",
            persona.system_prompt, persona.description, persona.personality
        ),
    }];
    messages.extend(
        recent
            .iter()
            .filter(|message| message.persona_id == persona.id)
            .map(|message| ChatMessage {
                role: if message.role == "assistant" {
                    Role::Assistant
                } else {
                    Role::User
                },
                content: message.content.clone(),
            }),
    );
    messages.push(ChatMessage {
        role: Role::System,
        content: fill(
            texts.inactivity_instruction,
            &[("language", texts.language_name), ("days", &days)],
        ),
    });
    let mut request = CompletionRequest::derived(messages, Purpose::Summary);
    // Written for this user, in character: not a deterministic text worth caching.
    request.temperature = None;
    match deps.llm.complete(request).await {
        Ok(completion) if !completion.text.trim().is_empty() => {
            Composed::Text(format!("{}: {}", persona.name, completion.text.trim()))
        }
        Err(error @ (LlmError::RateLimited { .. } | LlmError::CircuitOpen { .. })) => {
            WriteError::Llm(error).composed(deps.clock.now_millis())
        }
        outcome => {
            if job.attempts < deps.settings.max_attempts {
                let reason = match outcome {
                    Err(error) => error.to_string(),
                    Ok(_) => "an empty answer".into(),
                };
                return Composed::NotNow(reason);
            }
            Composed::Text(fill(
                texts.inactivity_fallback,
                &[("persona", &persona.name)],
            ))
        }
    }
}

/// The LLM's recap of the user's dialogs in `[from, to)`; `None` when there were none.
async fn write_recap(
    deps: &SchedulerDeps,
    user_id: UserId,
    from: UnixMillis,
    to: UnixMillis,
    lang: Lang,
) -> Result<Option<String>, WriteError> {
    let period = deps
        .store
        .period_messages(user_id, from, to, RECAP_MESSAGES)
        .await
        .map_err(|error| WriteError::Storage(error.to_string()))?;
    if period.is_empty() {
        return Ok(None);
    }
    let texts = lang.texts().notifications;
    let messages = vec![
        ChatMessage {
            role: Role::System,
            content: fill(
                texts.recap_instruction,
                &[("language", texts.language_name)],
            ),
        },
        ChatMessage {
            role: Role::User,
            content: transcript(deps, &period),
        },
    ];
    let request = CompletionRequest::derived(messages, Purpose::Summary);
    match deps.llm.complete(request).await {
        Ok(completion) if !completion.text.trim().is_empty() => {
            Ok(Some(completion.text.trim().to_owned()))
        }
        Ok(_) => Err(WriteError::Llm(LlmError::Malformed(
            "an empty recap".into(),
        ))),
        Err(error) => Err(WriteError::Llm(error)),
    }
}

/// The period's messages as the recap's model reads them: `Mira: …` / `User: …`.
fn transcript(deps: &SchedulerDeps, period: &[PeriodMessage]) -> String {
    period
        .iter()
        .map(|message| {
            let speaker = if message.role == "assistant" {
                deps.personas
                    .get(&message.persona_id)
                    .map_or(message.persona_id.clone(), |persona| persona.name.clone())
            } else {
                "User".to_owned()
            };
            format!("{speaker}: {}", message.content)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn plan_next_recap(deps: &SchedulerDeps, job: &Job) {
    let Ok(Some(audience)) = deps.store.audience(job.user_id).await else {
        return;
    };
    let now = deps.clock.now_millis();
    let silent_for = audience
        .last_message_at
        .map_or(i64::MAX, |last| now.saturating_sub(last));
    if silent_for > millis(deps.settings.recaps_stop_after) {
        // Started again when the user writes.
        return;
    }
    if let Some(next) = next_recap(job.kind, &audience, job.due_at.max(now), &deps.settings) {
        if let Err(error) = deps.store.schedule(&next).await {
            tracing::warn!(%error, "could not plan the next recap");
        }
    }
}

/// The user was seen (their session started or went idle): they are active, and have
/// their next recaps and the reminder for their current silence planned.
pub async fn user_seen(deps: &SchedulerDeps, user_id: UserId) {
    let now = deps.clock.now_millis();
    let audience = match deps.store.audience(user_id).await {
        Ok(Some(audience)) => audience,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "could not plan a user's notifications");
            return;
        }
    };
    if !audience.active {
        if let Err(error) = deps.store.set_active(user_id, true, now).await {
            tracing::warn!(%error, "could not mark a user active again");
        }
    }
    for job in jobs_for(&audience, now, &deps.settings) {
        let kind = job.kind;
        let key = job.key.clone();
        if let Err(error) = deps.store.schedule(&job).await {
            tracing::warn!(%error, "could not plan a notification");
            continue;
        }
        if kind == NotificationKind::Inactivity {
            // Only the reminder of the current silence stays.
            if let Err(error) = deps.store.cancel_pending(user_id, kind, &key).await {
                tracing::warn!(%error, "could not cancel an old reminder");
            }
        }
    }
}

/// Replans a user's recaps after they changed their time zone: the pending ones go, the
/// next ones are planned in the new zone.
pub async fn replan_recaps(deps: &SchedulerDeps, user_id: UserId) {
    for kind in [
        NotificationKind::WeeklyRecap,
        NotificationKind::MonthlyRecap,
    ] {
        if let Err(error) = deps.store.cancel_pending(user_id, kind, "").await {
            tracing::warn!(%error, "could not cancel a recap");
        }
    }
    user_seen(deps, user_id).await;
}

/// /report: the last seven days' recap, at once and at a reply's priority.
pub async fn report_now(deps: &SchedulerDeps, user_id: UserId, chat: ChatId, lang: Lang) {
    let texts = lang.texts().notifications;
    let messenger = deps.outbox.messenger(Priority::Reply);
    let now = deps.clock.now_millis();
    let text = match write_recap(deps, user_id, now - 7 * 86_400_000, now + 1, lang).await {
        Ok(Some(summary)) => format!("{}\n\n{summary}", texts.weekly_title),
        Ok(None) => texts.report_empty.to_owned(),
        Err(WriteError::Storage(error)) => {
            tracing::info!(%error, "could not write a report");
            texts.report_failed.to_owned()
        }
        Err(WriteError::Llm(error)) => {
            tracing::info!(%error, "could not write a report");
            texts.report_failed.to_owned()
        }
    };
    if let Err(error) = messenger.send_text(chat, &text, None).await {
        tracing::info!(%error, "could not send a report");
    }
}

/// Sends one broadcast message, unless the user has since blocked the bot, switched
/// announcements off, or is in quiet hours (then it waits for their end).
pub async fn deliver(
    deps: &SchedulerDeps,
    delivery: &Delivery,
) -> (DeliveryStatus, Option<UnixMillis>) {
    let kind = NotificationKind::Announcement;
    let count = |status: &str| {
        deps.metrics
            .notifications_sent_total
            .with_label_values(&[kind.as_str(), status])
            .inc();
    };
    let audience = match deps.store.audience(delivery.user_id).await {
        Ok(Some(audience)) => audience,
        Ok(None) => {
            count("skipped");
            return (DeliveryStatus::Skipped, None);
        }
        Err(error) => {
            tracing::warn!(%error, "could not read a broadcast's recipient");
            let retry_at = deps
                .clock
                .now_millis()
                .saturating_add(millis(deps.settings.retry_delay));
            return (DeliveryStatus::Pending, Some(retry_at));
        }
    };
    if !audience.active {
        count("blocked");
        return (DeliveryStatus::Skipped, None);
    }
    if !audience.settings.allows(kind) {
        count("disabled");
        return (DeliveryStatus::Skipped, None);
    }
    let zone = audience.settings.zone(deps.settings.default_zone);
    let quiet = audience.settings.quiet_hours(deps.settings.default_quiet);
    if let Some(until) = quiet.end_after(deps.clock.now_millis(), zone) {
        count("quiet");
        return (DeliveryStatus::Pending, Some(until));
    }
    let messenger = deps.outbox.messenger(Priority::Broadcast);
    match messenger
        .send_text(audience.chat_id, &delivery.text, None)
        .await
    {
        Ok(_) => {
            count("sent");
            (DeliveryStatus::Sent, None)
        }
        Err(DeliveryError::Blocked) => {
            count("blocked");
            (DeliveryStatus::Skipped, None)
        }
        Err(DeliveryError::MaybeDelivered(_)) => {
            count("sent");
            (DeliveryStatus::Unconfirmed, None)
        }
        // The outbox was full, or Telegram kept asking to wait: later.
        Err(DeliveryError::Shed | DeliveryError::Throttled { .. }) => {
            count("retry");
            let retry_at = deps.clock.now_millis().saturating_add(BROADCAST_RETRY_MS);
            (DeliveryStatus::Pending, Some(retry_at))
        }
        Err(error) => {
            tracing::info!(%error, "a broadcast message was not delivered");
            count("failed");
            (DeliveryStatus::Failed, None)
        }
    }
}
