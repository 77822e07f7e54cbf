//! `vitte simulate-broadcast --users N`: a broadcast to N users run through the real
//! scheduler, outbox and storage (a temporary SQLite database) in simulated time, with an
//! in-process stand-in for Telegram that records when each message went. It answers what an
//! operator wants to know before a broadcast: how long it takes under `[outbox]`'s limits,
//! whether the send schedule keeps to them, and what it costs in memory. BENCHMARKS.md
//! quotes it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use diesel::Connection;
use diesel::connection::SimpleConnection;
use vitte_actors::domain::persona::PersonaCatalog;
use vitte_actors::metrics::Metrics;
use vitte_actors::outbox::{Outbox, OutboxDeps};
use vitte_actors::ports::clock::UnixMillis;
use vitte_actors::ports::schedule::{JobStore, Segment};
use vitte_actors::ports::{
    ChatId, Clock, Completion, CompletionRequest, DeliveryError, Keyboard, LanguageModel, LlmError,
    ManualClock, Messenger, Render,
};
use vitte_actors::scheduler::{Scheduler, SchedulerDeps};
use vitte_actors::supervision::Supervisor;

use crate::config::{DatabaseTarget, Settings};
use crate::storage::Database;

/// Telegram as the simulation sees it: every message accepted at once, its time recorded.
struct Recorder {
    clock: Arc<ManualClock>,
    sent: Mutex<Vec<(UnixMillis, ChatId)>>,
}

impl Recorder {
    fn record(&self, chat: ChatId) {
        let at = self.clock.now_millis();
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((at, chat));
    }

    fn count(&self) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[async_trait]
impl Messenger for Recorder {
    async fn send_text(
        &self,
        chat: ChatId,
        _: &str,
        _: Option<&Keyboard>,
    ) -> Result<i64, DeliveryError> {
        self.record(chat);
        Ok(1)
    }

    async fn edit_text(
        &self,
        chat: ChatId,
        _: i64,
        _: &str,
        _: Option<&Keyboard>,
        _: Render,
    ) -> Result<(), DeliveryError> {
        self.record(chat);
        Ok(())
    }

    async fn delete_message(&self, _: ChatId, _: i64) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn acknowledge_button(&self, _: &str) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// A broadcast needs no LLM.
struct NoLlm;

#[async_trait]
impl LanguageModel for NoLlm {
    async fn complete(&self, _: CompletionRequest) -> Result<Completion, LlmError> {
        Err(LlmError::Unreachable("no LLM in a simulation".into()))
    }
}

/// What the simulation found.
#[derive(Debug)]
pub struct BroadcastSimulation {
    pub users: usize,
    pub sent: usize,
    /// The most messages in any one second of simulated time.
    pub busiest_second: usize,
    /// The most messages one chat got.
    pub most_per_chat: usize,
    /// From the first message to the last, in simulated time.
    pub simulated: Duration,
    /// What the limit allows at best: users / global_per_second.
    pub ideal: Duration,
    /// Real time the simulation took (seeding excluded).
    pub wall: Duration,
    /// The process's peak resident memory, KiB (`VmHWM`).
    pub peak_rss_kib: Option<u64>,
}

/// Seeds `users` users into a temporary SQLite database and broadcasts to them.
pub async fn simulate_broadcast(
    settings: &Settings,
    users: usize,
) -> anyhow::Result<BroadcastSimulation> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let path = dir.path().join("simulation.db");
    let start = 1_800_000_000_000;
    let clock = ManualClock::starting_at(start);
    let database = Database::connect(&DatabaseTarget::Sqlite(path.clone()), 4, clock.clone())?;
    database
        .migrate()
        .await
        .context("migrating the simulation's database")?;
    seed(&path, users, start).await?;
    let metrics = Metrics::new().context("metrics")?;
    let supervisor = Arc::new(Supervisor::new(
        settings.supervision.policies(),
        metrics.clone(),
    ));
    let recorder = Arc::new(Recorder {
        clock: clock.clone(),
        sent: Mutex::new(Vec::with_capacity(users)),
    });
    let outbox_settings = settings.outbox()?;
    let global = outbox_settings.global_per_second;
    let outbox = Outbox::launch(OutboxDeps {
        transport: recorder.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        supervisor: supervisor.clone(),
        blocked: Arc::new(database.clone()),
        settings: outbox_settings,
    });
    let mut scheduler_settings = settings.scheduler()?;
    // Nobody sleeps in a simulation.
    scheduler_settings.default_quiet.end = scheduler_settings.default_quiet.start;
    let scheduler = Scheduler::launch(SchedulerDeps {
        store: Arc::new(database.clone()),
        payments: Arc::new(database.clone()),
        outbox: outbox.clone(),
        llm: Arc::new(NoLlm),
        personas: Arc::new(PersonaCatalog::new(Vec::new())),
        clock: clock.clone(),
        metrics,
        supervisor,
        settings: scheduler_settings,
    });
    let began = Instant::now();
    database
        .create_broadcast("A new story tonight", &Segment::default(), start)
        .await
        .context("creating the broadcast")?;
    scheduler.poke();
    let mut idle_rounds = 0;
    while recorder.count() < users {
        let moving = clock.clone();
        let idle = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let saw_idle = idle.clone();
        outbox
            .at_rest(move |pulse| {
                let now = moving.now_millis();
                match pulse.next_ready_at {
                    Some(at) => moving.set(at.max(now)),
                    // Nothing queued: the scheduler is fetching the next batch.
                    None => saw_idle.store(true, std::sync::atomic::Ordering::SeqCst),
                }
            })
            .await;
        if idle.load(std::sync::atomic::Ordering::SeqCst) {
            idle_rounds += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
            if idle_rounds % 100 == 0 {
                // The scheduler waits for its clock (a partial batch): let it pass.
                clock.advance(Duration::from_millis(100));
            }
        } else {
            tokio::task::yield_now().await;
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(3_600),
            "the simulation stalled at {} of {users} messages",
            recorder.count()
        );
    }
    let wall = began.elapsed();
    let mut sent = recorder
        .sent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    sent.sort_unstable();
    let times: Vec<UnixMillis> = sent.iter().map(|(at, _)| *at).collect();
    let mut busiest_second = 0;
    let mut first = 0;
    for last in 0..times.len() {
        while times[last] - times[first] >= 1_000 {
            first += 1;
        }
        busiest_second = busiest_second.max(last - first + 1);
    }
    let mut chats: Vec<ChatId> = sent.iter().map(|(_, chat)| *chat).collect();
    chats.sort_unstable();
    let most_per_chat = chats
        .chunk_by(|a, b| a == b)
        .map(<[ChatId]>::len)
        .max()
        .unwrap_or(0);
    let span = times.last().copied().unwrap_or(start) - times.first().copied().unwrap_or(start);
    Ok(BroadcastSimulation {
        users,
        sent: sent.len(),
        busiest_second,
        most_per_chat,
        simulated: Duration::from_millis(span.unsigned_abs()),
        ideal: Duration::from_secs_f64(users as f64 / f64::from(global.max(1))),
        wall,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Writes `users` users (ids from 1) straight into the SQLite file.
async fn seed(path: &std::path::Path, users: usize, now: UnixMillis) -> anyhow::Result<()> {
    let path = path.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut connection = diesel::SqliteConnection::establish(&path)
            .context("opening the simulation's database")?;
        connection.batch_execute("PRAGMA busy_timeout = 30000; BEGIN;")?;
        let ids: Vec<usize> = (1..=users).collect();
        for chunk in ids.chunks(500) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|id| format!("({id}, {id}, 'User{id}', 'en', {now}, {now})"))
                .collect();
            connection.batch_execute(&format!(
                "INSERT INTO users (id, chat_id, first_name, language_code, created_at, \
                 updated_at) VALUES {};",
                rows.join(",")
            ))?;
        }
        connection.batch_execute("COMMIT;")?;
        Ok(())
    })
    .await
    .context("seeding users")?
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
