//! The scheduler's storage: persistent jobs, each user's notification settings and reach,
//! and broadcasts with their deliveries.

use async_trait::async_trait;

use super::clock::UnixMillis;
use super::{ChatId, StoreError, UserId};
use crate::domain::notification::{NotificationKind, NotificationSettings};

/// The storage id of a job.
pub type JobId = i64;
/// The storage id of a broadcast.
pub type BroadcastId = i64;

/// A job to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: NotificationKind,
    pub user_id: UserId,
    pub due_at: UnixMillis,
    /// What the job needs to do its work, as JSON (see the scheduler's handlers).
    pub payload: String,
    /// Unique per job and period (`weekly_recap:42:2026-W49`): scheduling the same key
    /// twice keeps the first, so a restart or a repeated event never schedules twice.
    pub key: String,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for its due time.
    Pending,
    /// Taken by the scheduler; a restart finds it here and runs it again (at-least-once).
    Running,
    /// Sent.
    Done,
    /// Not sent, on purpose (switched off, too late, nothing to say); `last_error` says why.
    Skipped,
    /// Not sent after every attempt; `last_error` says why.
    Failed,
    /// Held while the user has blocked the bot; pending again when they write.
    Paused,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Skipped => "skipped",
            JobStatus::Failed => "failed",
            JobStatus::Paused => "paused",
        }
    }

    pub fn parse(name: &str) -> Option<JobStatus> {
        [
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Done,
            JobStatus::Skipped,
            JobStatus::Failed,
            JobStatus::Paused,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub kind: NotificationKind,
    pub user_id: UserId,
    pub due_at: UnixMillis,
    pub payload: String,
    pub key: String,
    pub status: JobStatus,
    /// Runs started so far (this one included, once taken).
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// What the scheduler decided about a job it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    Skipped(String),
    Failed(String),
    /// Pending again, due at this moment (quiet hours, a retry after a failure).
    Postponed {
        until: UnixMillis,
        reason: String,
    },
    Paused,
}

/// Who a notification goes to, and what they chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    pub user_id: UserId,
    pub chat_id: ChatId,
    /// Chosen with /language, else Telegram's language code.
    pub language: Option<String>,
    pub settings: NotificationSettings,
    /// False once the user blocked the bot (until they write again).
    pub active: bool,
    /// When the user last wrote (their last stored message), if ever.
    pub last_message_at: Option<UnixMillis>,
    /// The persona of the active slot's dialog, if one is open.
    pub last_persona: Option<String>,
}

/// One message of a dialog, for recaps and in-character reminders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodMessage {
    pub persona_id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub created_at: UnixMillis,
}

/// Which users a broadcast goes to. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// The users' language (chosen with /language, else Telegram's): `ru`, `en`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `free` (no open plan), `paid` (any open plan), or a plan's product id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Wrote at least once within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_within_days: Option<u32>,
}

/// A broadcast's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BroadcastReport {
    pub id: BroadcastId,
    /// `running` or `done`.
    pub status: String,
    pub text: String,
    pub segment: Segment,
    pub created_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    /// Recipients chosen when it was created.
    pub total: u64,
    pub pending: u64,
    pub sent: u64,
    /// Blocked the bot, switched announcements off, or already gone.
    pub skipped: u64,
    pub failed: u64,
    /// In flight when the process stopped: maybe sent, never sent again.
    pub unconfirmed: u64,
}

/// The state of one broadcast delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    /// Handed to the outbox; a restart finds it here and marks it `unconfirmed`.
    Sending,
    Sent,
    Skipped,
    Failed,
    Unconfirmed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Unconfirmed => "unconfirmed",
        }
    }
}

/// A delivery taken to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub broadcast_id: BroadcastId,
    pub user_id: UserId,
    pub text: String,
}

/// The scheduler's storage.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores `job` unless a job with its key exists. Returns whether it was new.
    async fn schedule(&self, job: &NewJob) -> Result<bool, StoreError>;

    /// Removes the user's pending jobs of `kind` whose key differs from `keep` (an
    /// inactivity reminder moved by a newer message).
    async fn cancel_pending(
        &self,
        user_id: UserId,
        kind: NotificationKind,
        keep: &str,
    ) -> Result<u64, StoreError>;

    /// Takes at most `limit` pending jobs due at `now` or before, oldest due first: each
    /// becomes `running` with one more attempt.
    async fn take_due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError>;

    /// Records what became of a job taken with [`JobStore::take_due`].
    async fn finish(
        &self,
        id: JobId,
        outcome: &JobOutcome,
        now: UnixMillis,
    ) -> Result<(), StoreError>;

    /// Jobs left `running` by a process that stopped become `pending` again (they run
    /// again: at-least-once). Returns how many.
    async fn recover_running(&self) -> Result<u64, StoreError>;

    /// When the earliest pending job is due.
    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError>;

    /// The user's jobs, newest due first (for operators and tests).
    async fn jobs_of(&self, user_id: UserId) -> Result<Vec<Job>, StoreError>;

    /// Who the user is to notifications; `None` for a user never seen.
    async fn audience(&self, user_id: UserId) -> Result<Option<Audience>, StoreError>;

    /// Stores the user's notification settings.
    async fn save_notification_settings(
        &self,
        user_id: UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError>;

    /// The user blocked the bot (`active` false: their pending jobs pause) or wrote again
    /// (`active` true: paused jobs are pending again).
    async fn set_active(
        &self,
        user_id: UserId,
        active: bool,
        now: UnixMillis,
    ) -> Result<(), StoreError>;

    /// The user's messages (and the replies) in `[from, to)`, oldest first, at most `limit`
    /// (the newest ones when there are more).
    async fn period_messages(
        &self,
        user_id: UserId,
        from: UnixMillis,
        to: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PeriodMessage>, StoreError>;

    /// How many active users `segment` holds now.
    async fn count_segment(&self, segment: &Segment, now: UnixMillis) -> Result<u64, StoreError>;

    /// Stores a broadcast and a pending delivery for each active user in `segment`.
    async fn create_broadcast(
        &self,
        text: &str,
        segment: &Segment,
        now: UnixMillis,
    ) -> Result<BroadcastReport, StoreError>;

    /// Takes at most `limit` pending deliveries of running broadcasts due at `now` or
    /// before: each becomes `sending`.
    async fn take_deliveries(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records a delivery's outcome; `Pending` with `retry_at` puts it back (quiet hours).
    async fn finish_delivery(
        &self,
        broadcast_id: BroadcastId,
        user_id: UserId,
        status: DeliveryStatus,
        retry_at: Option<UnixMillis>,
    ) -> Result<(), StoreError>;

    /// Marks broadcasts with nothing pending or sending as done (at `now`).
    async fn close_finished_broadcasts(&self, now: UnixMillis) -> Result<(), StoreError>;

    /// Deliveries left `sending` by a process that stopped become `unconfirmed`: they may
    /// have been sent, so they are never sent again. Returns how many.
    async fn recover_sending(&self) -> Result<u64, StoreError>;

    async fn broadcast(&self, id: BroadcastId) -> Result<Option<BroadcastReport>, StoreError>;
}

/// How the payment desk and sessions reach the scheduler. Nothing here waits.
pub trait Notifier: Send + Sync + 'static {
    /// Schedules `job` (a job with its key stored already is kept as it is).
    fn notify(&self, job: NewJob);

    /// The user's session started or went idle: they are active, and their recaps and
    /// inactivity reminder are planned.
    fn user_seen(&self, user_id: UserId);

    /// The user changed their time zone: their recaps move.
    fn zone_changed(&self, user_id: UserId);

    /// /report: the last seven days' recap, sent to `chat` when written.
    fn report_now(&self, user_id: UserId, chat: ChatId, lang: crate::domain::texts::Lang);
}
