//! The scheduler on in-memory storage and a real outbox, in controlled time: the manual
//! clock is set to the moments that matter (a Monday morning in Tashkent, the end of quiet
//! hours, a week of silence), never slept through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;

use super::testing::JobBook;
use super::{Scheduler, SchedulerDeps, SchedulerHandle, SchedulerSettings};
use crate::domain::notification::{NotificationKind, QuietHours, Topic};
use crate::domain::persona::{Persona, PersonaCatalog};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxDeps, OutboxSettings};
use crate::payments::testing::MemoryPaymentStore;
use crate::ports::clock::UnixMillis;
use crate::ports::schedule::{JobStatus, JobStore, Notifier, Segment};
use crate::ports::{Clock, ManualClock};
use crate::scheduler::planning::{NoticePayload, notice_job};
use crate::supervision::Supervisor;
use crate::sync::lock;
use crate::testing::{EchoLlm, RecordingMessenger, eventually};

const USER: i64 = 42;
const TASHKENT: chrono_tz::Tz = chrono_tz::Asia::Tashkent;

fn tashkent(text: &str) -> UnixMillis {
    let local = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("a time");
    TASHKENT
        .from_local_datetime(&local)
        .single()
        .expect("one moment")
        .timestamp_millis()
}

struct Bench {
    scheduler: SchedulerHandle,
    book: Arc<JobBook>,
    chat: Arc<RecordingMessenger>,
    llm: Arc<EchoLlm>,
    clock: Arc<ManualClock>,
    metrics: Metrics,
}

fn personas() -> Arc<PersonaCatalog> {
    let file = "name = \"Mira\"\ndescription = \"Keeps a lighthouse.\"\nfirst_mes = \"Hi\"\n\
                [[stories]]\nid = \"first\"\ntitle = \"First\"\npremise = \"A storm.\"\n\
                opening_message = \"Hi\"\n";
    let mira = Persona::parse(std::path::Path::new("mira.toml"), file).expect("persona");
    Arc::new(PersonaCatalog::new(vec![mira]))
}

/// The scheduler at `start`, on `book` (kept across a restart), users in Tashkent.
fn bench_on(book: Arc<JobBook>, start: UnixMillis) -> Bench {
    bench_with(book, start, None)
}

/// The same, writing with `writer` instead of the echoing LLM.
fn bench_with(
    book: Arc<JobBook>,
    start: UnixMillis,
    writer: Option<Arc<dyn crate::ports::LanguageModel>>,
) -> Bench {
    let clock = ManualClock::starting_at(start);
    let metrics = Metrics::new().expect("metrics");
    let supervisor = Arc::new(Supervisor::new(HashMap::new(), metrics.clone()));
    let chat = Arc::new(RecordingMessenger::default());
    let outbox = Outbox::launch(OutboxDeps {
        transport: chat.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        supervisor: supervisor.clone(),
        blocked: book.clone(),
        // Pacing is the outbox's own tests' business: here nothing waits for it.
        settings: OutboxSettings {
            global_per_second: 100_000,
            private_burst: 1_000,
            ..OutboxSettings::default()
        },
    });
    let llm = Arc::new(EchoLlm::default());
    let scheduler = Scheduler::launch(SchedulerDeps {
        store: book.clone(),
        payments: Arc::new(MemoryPaymentStore::new(clock.clone())),
        outbox,
        llm: writer.unwrap_or_else(|| llm.clone()),
        personas: personas(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        supervisor,
        settings: SchedulerSettings {
            default_zone: TASHKENT,
            ..SchedulerSettings::default()
        },
    });
    Bench {
        scheduler,
        book,
        chat,
        llm,
        clock,
        metrics,
    }
}

fn bench(start: UnixMillis) -> Bench {
    let book = Arc::new(JobBook::default());
    book.add_user(USER);
    bench_on(book, start)
}

impl Bench {
    fn status(&self, key: &str) -> Option<JobStatus> {
        self.book.job(key).map(|job| job.status)
    }

    async fn wait_status(&self, key: &str, status: JobStatus) {
        eventually(&format!("{key} is {status:?}"), || {
            self.status(key) == Some(status)
        })
        .await;
    }

    /// Sets the clock and lets the scheduler look.
    fn at(&self, moment: UnixMillis) {
        self.clock.set(moment);
        self.scheduler.poke();
    }

    fn sent(&self) -> Vec<String> {
        self.chat.texts_to(USER)
    }

    fn counted(&self, kind: NotificationKind, status: &str) -> u64 {
        self.metrics
            .notifications_sent_total
            .with_label_values(&[kind.as_str(), status])
            .get()
    }
}

#[actix_rt::test]
async fn the_weekly_recap_comes_monday_at_nine_local_and_plans_the_next_week() {
    // Thursday afternoon in Tashkent; the user wrote to Mira today.
    let bench = bench(tashkent("2026-12-03 15:00"));
    bench.book.add_message(
        USER,
        "mira",
        "user",
        "I found the old map",
        tashkent("2026-12-03 14:00"),
    );
    bench.book.add_message(
        USER,
        "mira",
        "assistant",
        "Then we sail at dawn",
        tashkent("2026-12-03 14:01"),
    );
    bench.scheduler.user_seen(USER);
    let key = "weekly_recap:42:2026-W49";
    bench.wait_status(key, JobStatus::Pending).await;
    let job = bench.book.job(key).expect("the recap");
    assert_eq!(job.due_at, tashkent("2026-12-07 09:00"));
    // Sunday night: nothing yet.
    bench.at(tashkent("2026-12-07 08:59"));
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert!(bench.sent().is_empty(), "{:?}", bench.sent());
    bench.at(tashkent("2026-12-07 09:00"));
    bench.wait_status(key, JobStatus::Done).await;
    let sent = bench.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].starts_with("📖 Your week in stories"),
        "{}",
        sent[0]
    );
    assert!(
        sent[0].contains("I found the old map"),
        "the LLM summarised the week: {}",
        sent[0]
    );
    // The next week's recap is planned, once.
    bench
        .wait_status("weekly_recap:42:2026-W50", JobStatus::Pending)
        .await;
    assert_eq!(
        bench
            .book
            .job("weekly_recap:42:2026-W50")
            .map(|job| job.due_at),
        Some(tashkent("2026-12-14 09:00"))
    );
    assert_eq!(bench.counted(NotificationKind::WeeklyRecap, "sent"), 1);
}

#[actix_rt::test]
async fn quiet_hours_postpone_a_notice_to_their_end() {
    let bench = bench(tashkent("2026-12-03 23:30"));
    bench.book.with_audience(USER, |audience| {
        audience.settings.quiet = Some(QuietHours { start: 22, end: 9 });
    });
    let notice = NoticePayload {
        text: "Your plan is in its grace period".into(),
        paid_until: None,
    };
    let job = notice_job(
        NotificationKind::GraceStarted,
        USER,
        bench.clock.now_millis(),
        "1",
        notice,
    );
    let key = job.key.clone();
    bench.scheduler.notify(job);
    eventually("postponed", || {
        bench
            .book
            .job(&key)
            .is_some_and(|job| job.due_at == tashkent("2026-12-04 09:00"))
    })
    .await;
    assert!(bench.sent().is_empty());
    assert_eq!(bench.counted(NotificationKind::GraceStarted, "quiet"), 1);
    bench.at(tashkent("2026-12-04 09:00"));
    bench.wait_status(&key, JobStatus::Done).await;
    assert_eq!(bench.sent(), ["Your plan is in its grace period"]);
}

#[actix_rt::test]
async fn after_a_week_of_silence_the_persona_writes_once_in_character() {
    let start = tashkent("2026-12-03 12:00");
    let bench = bench(start);
    bench
        .book
        .add_message(USER, "mira", "user", "Good night, keeper", start);
    bench.scheduler.user_seen(USER);
    let key = format!("inactivity:42:{start}");
    bench.wait_status(&key, JobStatus::Pending).await;
    // Seen again without a new message: the same reminder, not a second one.
    bench.scheduler.user_seen(USER);
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        bench.book.jobs_of_kind(NotificationKind::Inactivity).len(),
        1
    );
    bench.at(start + 7 * 86_400_000);
    bench.wait_status(&key, JobStatus::Done).await;
    let sent = bench.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("Mira: "),
        "in the persona's voice: {}",
        sent[0]
    );
    let request = lock(&bench.llm.requests)
        .last()
        .cloned()
        .expect("asked the LLM");
    assert!(
        request.messages[0].content.contains("Keeps a lighthouse."),
        "the persona's own description"
    );
    assert!(
        request
            .messages
            .last()
            .is_some_and(|message| message.content.contains("7 days")),
        "{:?}",
        request.messages.last()
    );
}

#[actix_rt::test]
async fn a_reminder_is_dropped_when_the_user_wrote_in_the_meantime() {
    let start = tashkent("2026-12-03 12:00");
    let bench = bench(start);
    bench.book.add_message(USER, "mira", "user", "hello", start);
    bench.scheduler.user_seen(USER);
    let first = format!("inactivity:42:{start}");
    bench.wait_status(&first, JobStatus::Pending).await;
    // Three days later the user writes again: the old reminder goes, a new one is planned.
    let later = start + 3 * 86_400_000;
    bench.clock.set(later);
    bench
        .book
        .add_message(USER, "mira", "user", "back again", later);
    bench.scheduler.user_seen(USER);
    let second = format!("inactivity:42:{later}");
    bench.wait_status(&second, JobStatus::Pending).await;
    eventually("the old reminder is cancelled", || {
        bench.book.job(&first).is_none()
    })
    .await;
}

#[actix_rt::test]
async fn a_switched_off_topic_is_skipped_and_a_late_job_is_not_sent() {
    let bench = bench(tashkent("2026-12-03 12:00"));
    bench.book.with_audience(USER, |audience| {
        audience.settings.disabled.insert(Topic::Milestones);
    });
    let milestone =
        crate::scheduler::planning::milestone_job(USER, 7, "mira", 100, bench.clock.now_millis());
    let milestone_key = milestone.key.clone();
    bench.scheduler.notify(milestone);
    bench.wait_status(&milestone_key, JobStatus::Skipped).await;
    assert_eq!(bench.counted(NotificationKind::Milestone, "disabled"), 1);
    // A renewal notice found two days after its time (the process was down) is skipped
    // and recorded, not sent late.
    let two_days_ago = bench.clock.now_millis() - 2 * 86_400_000;
    let notice = NoticePayload {
        text: "renewed".into(),
        paid_until: None,
    };
    let late = notice_job(NotificationKind::Renewed, USER, two_days_ago, "c9", notice);
    let late_key = late.key.clone();
    bench.book.schedule(&late).await.expect("stored");
    bench.scheduler.poke();
    bench.wait_status(&late_key, JobStatus::Skipped).await;
    assert!(
        bench
            .book
            .job(&late_key)
            .and_then(|job| job.last_error)
            .is_some_and(|why| why.starts_with("too late"))
    );
    assert_eq!(bench.counted(NotificationKind::Renewed, "late"), 1);
    assert!(bench.sent().is_empty());
}

#[actix_rt::test]
async fn a_user_who_blocked_the_bot_is_paused_until_they_write_again() {
    let bench = bench(tashkent("2026-12-03 12:00"));
    lock(&bench.chat.blocked).insert(USER);
    let now = bench.clock.now_millis();
    let first = notice_job(
        NotificationKind::Renewed,
        USER,
        now,
        "c1",
        NoticePayload {
            text: "renewed".into(),
            paid_until: None,
        },
    );
    let later = notice_job(
        NotificationKind::GraceStarted,
        USER,
        now + 3_600_000,
        "c2",
        NoticePayload {
            text: "grace".into(),
            paid_until: None,
        },
    );
    let (first_key, later_key) = (first.key.clone(), later.key.clone());
    bench.book.schedule(&later).await.expect("stored");
    bench.scheduler.notify(first);
    bench.wait_status(&first_key, JobStatus::Paused).await;
    // The outbox told storage: the user's other jobs wait too.
    assert_eq!(bench.status(&later_key), Some(JobStatus::Paused));
    assert_eq!(bench.metrics.telegram_blocked_users_total.get(), 1);
    // The user unblocks and writes: their jobs are pending again and go.
    lock(&bench.chat.blocked).clear();
    bench.scheduler.user_seen(USER);
    bench.wait_status(&later_key, JobStatus::Pending).await;
    bench.at(now + 3_600_000);
    bench.wait_status(&later_key, JobStatus::Done).await;
    bench.wait_status(&first_key, JobStatus::Done).await;
}

#[actix_rt::test]
async fn a_restart_runs_interrupted_jobs_again_and_done_ones_never() {
    let book = Arc::new(JobBook::default());
    book.add_user(USER);
    let start = tashkent("2026-12-03 12:00");
    for (event, due) in [("a", start), ("b", start), ("c", start + 60_000)] {
        let job = notice_job(
            NotificationKind::Renewed,
            USER,
            due,
            event,
            NoticePayload {
                text: format!("notice {event}"),
                paid_until: None,
            },
        );
        book.schedule(&job).await.expect("stored");
    }
    let first = bench_on(book.clone(), start);
    first.wait_status("renewed:42:a", JobStatus::Done).await;
    first.wait_status("renewed:42:b", JobStatus::Done).await;
    assert_eq!(first.sent(), ["notice a", "notice b"]);
    // The process stops while "c" runs: it is left `running`.
    let taken = book.take_due(start + 60_000, 10).await.expect("taken");
    assert_eq!(taken.len(), 1);
    drop(first);
    let second = bench_on(book.clone(), start + 60_000);
    second.wait_status("renewed:42:c", JobStatus::Done).await;
    assert_eq!(second.sent(), ["notice c"], "a and b are not sent again");
    let attempts = book.job("renewed:42:c").map(|job| job.attempts);
    assert_eq!(attempts, Some(2));
}

#[actix_rt::test]
async fn a_broadcast_reaches_every_active_user_once_and_never_twice_after_a_restart() {
    let book = Arc::new(JobBook::default());
    for user in 1..=50 {
        book.add_user(user);
    }
    book.with_audience(7, |audience| audience.active = false);
    book.with_audience(8, |audience| {
        audience.settings.disabled.insert(Topic::Announcements);
    });
    // User 9 sleeps in Tashkent's quiet hours until 09:00 (the others' quiet hours are
    // none).
    for user in (1..=50).filter(|user| *user != 9) {
        book.with_audience(user, |audience| {
            audience.settings.quiet = Some(QuietHours { start: 0, end: 0 });
        });
    }
    let start = tashkent("2026-12-04 07:00");
    // A delivery left `sending` by a stopped process is never sent again.
    let report = book
        .create_broadcast("Stories tonight", &Segment::default(), start)
        .await
        .expect("created");
    assert_eq!(report.total, 49, "active users only");
    let interrupted = book.take_deliveries(start, 1).await.expect("taken");
    assert_eq!(interrupted.len(), 1);
    let bench = bench_on(book.clone(), start);
    eventually("every awake user got it", || {
        (1..=50)
            .filter(|user| ![7, 8, 9, interrupted[0].user_id].contains(user))
            .all(|user| bench.chat.texts_to(user) == ["Stories tonight"])
    })
    .await;
    let report = book
        .broadcast(report.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        (
            report.sent,
            report.skipped,
            report.unconfirmed,
            report.pending
        ),
        (46, 1, 1, 1)
    );
    assert!(bench.chat.texts_to(interrupted[0].user_id).is_empty());
    assert!(bench.chat.texts_to(9).is_empty(), "quiet hours");
    bench.at(tashkent("2026-12-04 09:00"));
    eventually("the sleeper gets it after their quiet hours", || {
        bench.chat.texts_to(9) == ["Stories tonight"]
    })
    .await;
    eventually("the broadcast is done", || {
        futures::executor::block_on(book.broadcast(report.id))
            .ok()
            .flatten()
            .is_some_and(|report| report.status == "done")
    })
    .await;
}

/// An LLM whose rate limit is always spent.
struct BusyLlm;

#[async_trait::async_trait]
impl crate::ports::LanguageModel for BusyLlm {
    async fn complete(
        &self,
        _request: crate::ports::CompletionRequest,
    ) -> Result<crate::ports::Completion, crate::ports::LlmError> {
        Err(crate::ports::LlmError::RateLimited {
            retry_in: Duration::from_secs(30),
        })
    }
}

#[actix_rt::test]
async fn a_recap_waits_for_a_busy_llm_without_spending_its_attempts_until_its_window_ends() {
    let book = Arc::new(JobBook::default());
    book.add_user(USER);
    let monday = tashkent("2026-12-07 09:00");
    book.add_message(USER, "mira", "user", "hello", monday - 86_400_000);
    let bench = bench_with(book, monday - 60_000, Some(Arc::new(BusyLlm)));
    bench.scheduler.user_seen(USER);
    let key = "weekly_recap:42:2026-W49";
    bench.wait_status(key, JobStatus::Pending).await;
    // Five tries, each 30 s after the last: still pending, never failed.
    for attempt in 0..5 {
        bench.at(monday + attempt * 30_000);
        eventually("postponed 30 s", || {
            bench
                .book
                .job(key)
                .is_some_and(|job| job.due_at == monday + (attempt + 1) * 30_000)
        })
        .await;
    }
    assert_eq!(bench.status(key), Some(JobStatus::Pending));
    assert_eq!(bench.counted(NotificationKind::WeeklyRecap, "retry"), 5);
    // Past its misfire window (six hours) it is skipped as late, not sent at noon.
    bench.at(monday + 7 * 3_600_000);
    bench.wait_status(key, JobStatus::Skipped).await;
    assert!(bench.sent().is_empty());
}
