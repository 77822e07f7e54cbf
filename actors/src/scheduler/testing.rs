//! In-memory stand-ins for the scheduler's ports, for unit tests: [`JobBook`] keeps jobs,
//! audiences and broadcasts as a database would; [`RecordingNotifier`] remembers what
//! sessions asked of the scheduler.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::notification::{NotificationKind, NotificationSettings};
use crate::domain::texts::Lang;
use crate::ports::clock::UnixMillis;
use crate::ports::schedule::{
    Audience, BroadcastId, BroadcastReport, Delivery, DeliveryStatus, Job, JobId, JobOutcome,
    JobStatus, JobStore, NewJob, Notifier, PeriodMessage, Segment,
};
use crate::ports::{ChatId, StoreError, UserId};
use crate::sync::lock;

#[derive(Default)]
struct Book {
    jobs: Vec<Job>,
    audiences: HashMap<UserId, Audience>,
    messages: HashMap<UserId, Vec<PeriodMessage>>,
    broadcasts: Vec<BroadcastReport>,
    /// (broadcast, user, status, due_at)
    deliveries: Vec<(BroadcastId, UserId, DeliveryStatus, UnixMillis)>,
}

/// Jobs, users and broadcasts in memory.
#[derive(Default)]
pub struct JobBook {
    book: Mutex<Book>,
}

impl JobBook {
    /// A user the scheduler can reach (chat = user id, English, active).
    pub fn add_user(&self, user_id: UserId) {
        lock(&self.book).audiences.insert(
            user_id,
            Audience {
                user_id,
                chat_id: user_id,
                language: Some("en".into()),
                settings: NotificationSettings::default(),
                active: true,
                last_message_at: None,
                last_persona: None,
            },
        );
    }

    /// Changes what the scheduler knows of a user.
    pub fn with_audience(&self, user_id: UserId, change: impl FnOnce(&mut Audience)) {
        if let Some(audience) = lock(&self.book).audiences.get_mut(&user_id) {
            change(audience);
        }
    }

    /// A stored message of the user's dialog with `persona_id`.
    pub fn add_message(
        &self,
        user_id: UserId,
        persona_id: &str,
        role: &str,
        text: &str,
        at: UnixMillis,
    ) {
        let mut book = lock(&self.book);
        book.messages
            .entry(user_id)
            .or_default()
            .push(PeriodMessage {
                persona_id: persona_id.into(),
                role: role.into(),
                content: text.into(),
                created_at: at,
            });
        if role == "user" {
            if let Some(audience) = book.audiences.get_mut(&user_id) {
                audience.last_message_at = Some(at);
                audience.last_persona = Some(persona_id.into());
            }
        }
    }

    pub fn job(&self, key: &str) -> Option<Job> {
        lock(&self.book)
            .jobs
            .iter()
            .find(|job| job.key == key)
            .cloned()
    }

    pub fn jobs_of_kind(&self, kind: NotificationKind) -> Vec<Job> {
        lock(&self.book)
            .jobs
            .iter()
            .filter(|job| job.kind == kind)
            .cloned()
            .collect()
    }

    fn report(book: &Book, id: BroadcastId) -> Option<BroadcastReport> {
        let mut report = book
            .broadcasts
            .iter()
            .find(|broadcast| broadcast.id == id)?
            .clone();
        let count = |wanted: &[DeliveryStatus]| {
            book.deliveries
                .iter()
                .filter(|(broadcast, _, status, _)| *broadcast == id && wanted.contains(status))
                .count() as u64
        };
        report.pending = count(&[DeliveryStatus::Pending, DeliveryStatus::Sending]);
        report.sent = count(&[DeliveryStatus::Sent]);
        report.skipped = count(&[DeliveryStatus::Skipped]);
        report.failed = count(&[DeliveryStatus::Failed]);
        report.unconfirmed = count(&[DeliveryStatus::Unconfirmed]);
        Some(report)
    }
}

#[async_trait]
impl JobStore for JobBook {
    async fn schedule(&self, job: &NewJob) -> Result<bool, StoreError> {
        let mut book = lock(&self.book);
        if book.jobs.iter().any(|stored| stored.key == job.key) {
            return Ok(false);
        }
        let id = book.jobs.len() as JobId + 1;
        book.jobs.push(Job {
            id,
            kind: job.kind,
            user_id: job.user_id,
            due_at: job.due_at,
            payload: job.payload.clone(),
            key: job.key.clone(),
            status: JobStatus::Pending,
            attempts: 0,
            last_error: None,
        });
        Ok(true)
    }

    async fn cancel_pending(
        &self,
        user_id: UserId,
        kind: NotificationKind,
        keep: &str,
    ) -> Result<u64, StoreError> {
        let mut book = lock(&self.book);
        let before = book.jobs.len();
        book.jobs.retain(|job| {
            !(job.user_id == user_id
                && job.kind == kind
                && job.status == JobStatus::Pending
                && job.key != keep)
        });
        Ok((before - book.jobs.len()) as u64)
    }

    async fn take_due(&self, now: UnixMillis, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut book = lock(&self.book);
        let mut due: Vec<&mut Job> = book
            .jobs
            .iter_mut()
            .filter(|job| job.status == JobStatus::Pending && job.due_at <= now)
            .collect();
        due.sort_by_key(|job| (job.due_at, job.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|job| {
                job.status = JobStatus::Running;
                job.attempts += 1;
                job.clone()
            })
            .collect())
    }

    async fn finish(
        &self,
        id: JobId,
        outcome: &JobOutcome,
        _now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut book = lock(&self.book);
        let Some(job) = book.jobs.iter_mut().find(|job| job.id == id) else {
            return Ok(());
        };
        match outcome {
            JobOutcome::Done => job.status = JobStatus::Done,
            JobOutcome::Skipped(reason) => {
                job.status = JobStatus::Skipped;
                job.last_error = Some(reason.clone());
            }
            JobOutcome::Failed(reason) => {
                job.status = JobStatus::Failed;
                job.last_error = Some(reason.clone());
            }
            JobOutcome::Postponed { until, reason } => {
                job.status = JobStatus::Pending;
                job.due_at = *until;
                job.last_error = Some(reason.clone());
            }
            JobOutcome::Paused => job.status = JobStatus::Paused,
        }
        Ok(())
    }

    async fn recover_running(&self) -> Result<u64, StoreError> {
        let mut book = lock(&self.book);
        let mut count = 0;
        for job in book
            .jobs
            .iter_mut()
            .filter(|job| job.status == JobStatus::Running)
        {
            job.status = JobStatus::Pending;
            count += 1;
        }
        Ok(count)
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        Ok(lock(&self.book)
            .jobs
            .iter()
            .filter(|job| job.status == JobStatus::Pending)
            .map(|job| job.due_at)
            .min())
    }

    async fn jobs_of(&self, user_id: UserId) -> Result<Vec<Job>, StoreError> {
        Ok(lock(&self.book)
            .jobs
            .iter()
            .filter(|job| job.user_id == user_id)
            .cloned()
            .collect())
    }

    async fn audience(&self, user_id: UserId) -> Result<Option<Audience>, StoreError> {
        Ok(lock(&self.book).audiences.get(&user_id).cloned())
    }

    async fn save_notification_settings(
        &self,
        user_id: UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError> {
        if let Some(audience) = lock(&self.book).audiences.get_mut(&user_id) {
            audience.settings = settings.clone();
        }
        Ok(())
    }

    async fn set_active(
        &self,
        user_id: UserId,
        active: bool,
        _now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut book = lock(&self.book);
        if let Some(audience) = book.audiences.get_mut(&user_id) {
            audience.active = active;
        }
        let (from, to) = if active {
            (JobStatus::Paused, JobStatus::Pending)
        } else {
            (JobStatus::Pending, JobStatus::Paused)
        };
        for job in book
            .jobs
            .iter_mut()
            .filter(|job| job.user_id == user_id && job.status == from)
        {
            job.status = to;
        }
        Ok(())
    }

    async fn period_messages(
        &self,
        user_id: UserId,
        from: UnixMillis,
        to: UnixMillis,
        limit: usize,
    ) -> Result<Vec<PeriodMessage>, StoreError> {
        let book = lock(&self.book);
        let mut messages: Vec<PeriodMessage> = book
            .messages
            .get(&user_id)
            .into_iter()
            .flatten()
            .filter(|message| (from..to).contains(&message.created_at))
            .cloned()
            .collect();
        let skip = messages.len().saturating_sub(limit);
        Ok(messages.split_off(skip))
    }

    async fn count_segment(&self, _segment: &Segment, _now: UnixMillis) -> Result<u64, StoreError> {
        Ok(lock(&self.book)
            .audiences
            .values()
            .filter(|audience| audience.active)
            .count() as u64)
    }

    async fn create_broadcast(
        &self,
        text: &str,
        segment: &Segment,
        now: UnixMillis,
    ) -> Result<BroadcastReport, StoreError> {
        let mut book = lock(&self.book);
        let id = book.broadcasts.len() as BroadcastId + 1;
        let mut users: Vec<UserId> = book
            .audiences
            .values()
            .filter(|audience| audience.active)
            .map(|audience| audience.user_id)
            .collect();
        users.sort_unstable();
        for user in &users {
            book.deliveries
                .push((id, *user, DeliveryStatus::Pending, now));
        }
        book.broadcasts.push(BroadcastReport {
            id,
            status: "running".into(),
            text: text.into(),
            segment: segment.clone(),
            created_at: now,
            finished_at: None,
            total: users.len() as u64,
            pending: 0,
            sent: 0,
            skipped: 0,
            failed: 0,
            unconfirmed: 0,
        });
        Ok(JobBook::report(&book, id).unwrap_or_else(|| unreachable!("just stored")))
    }

    async fn take_deliveries(
        &self,
        now: UnixMillis,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut book = lock(&self.book);
        let texts: HashMap<BroadcastId, String> = book
            .broadcasts
            .iter()
            .filter(|broadcast| broadcast.status == "running")
            .map(|broadcast| (broadcast.id, broadcast.text.clone()))
            .collect();
        let mut taken = Vec::new();
        for (broadcast, user, status, due_at) in book.deliveries.iter_mut() {
            if taken.len() >= limit {
                break;
            }
            if *status == DeliveryStatus::Pending && *due_at <= now {
                if let Some(text) = texts.get(broadcast) {
                    *status = DeliveryStatus::Sending;
                    taken.push(Delivery {
                        broadcast_id: *broadcast,
                        user_id: *user,
                        text: text.clone(),
                    });
                }
            }
        }
        Ok(taken)
    }

    async fn finish_delivery(
        &self,
        broadcast_id: BroadcastId,
        user_id: UserId,
        status: DeliveryStatus,
        retry_at: Option<UnixMillis>,
    ) -> Result<(), StoreError> {
        let mut book = lock(&self.book);
        if let Some(delivery) = book
            .deliveries
            .iter_mut()
            .find(|(broadcast, user, _, _)| *broadcast == broadcast_id && *user == user_id)
        {
            delivery.2 = status;
            if let Some(at) = retry_at {
                delivery.3 = at;
            }
        }
        Ok(())
    }

    async fn close_finished_broadcasts(&self, now: UnixMillis) -> Result<(), StoreError> {
        let mut book = lock(&self.book);
        let open: Vec<BroadcastId> = book
            .deliveries
            .iter()
            .filter(|(_, _, status, _)| {
                matches!(status, DeliveryStatus::Pending | DeliveryStatus::Sending)
            })
            .map(|(broadcast, ..)| *broadcast)
            .collect();
        for broadcast in book.broadcasts.iter_mut() {
            if broadcast.status == "running" && !open.contains(&broadcast.id) {
                broadcast.status = "done".into();
                broadcast.finished_at = Some(now);
            }
        }
        Ok(())
    }

    async fn recover_sending(&self) -> Result<u64, StoreError> {
        let mut book = lock(&self.book);
        let mut count = 0;
        for delivery in book.deliveries.iter_mut() {
            if delivery.2 == DeliveryStatus::Sending {
                delivery.2 = DeliveryStatus::Unconfirmed;
                count += 1;
            }
        }
        Ok(count)
    }

    async fn broadcast(&self, id: BroadcastId) -> Result<Option<BroadcastReport>, StoreError> {
        Ok(JobBook::report(&lock(&self.book), id))
    }
}

/// What sessions asked of the scheduler, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    Notify(NewJob),
    UserSeen(UserId),
    ZoneChanged(UserId),
    Report(UserId, ChatId, Lang),
}

/// A [`Notifier`] that only remembers.
#[derive(Default)]
pub struct RecordingNotifier {
    asked: Mutex<Vec<Asked>>,
}

impl RecordingNotifier {
    pub fn asked(&self) -> Vec<Asked> {
        lock(&self.asked).clone()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, job: NewJob) {
        lock(&self.asked).push(Asked::Notify(job));
    }

    fn user_seen(&self, user_id: UserId) {
        lock(&self.asked).push(Asked::UserSeen(user_id));
    }

    fn zone_changed(&self, user_id: UserId) {
        lock(&self.asked).push(Asked::ZoneChanged(user_id));
    }

    fn report_now(&self, user_id: UserId, chat: ChatId, lang: Lang) {
        lock(&self.asked).push(Asked::Report(user_id, chat, lang));
    }
}

impl crate::outbox::BlockedListener for JobBook {
    fn blocked(&self, chat: ChatId) {
        let mut book = lock(&self.book);
        if let Some(audience) = book.audiences.get_mut(&chat) {
            audience.active = false;
        }
        for job in book
            .jobs
            .iter_mut()
            .filter(|job| job.user_id == chat && job.status == JobStatus::Pending)
        {
            job.status = JobStatus::Paused;
        }
    }
}
