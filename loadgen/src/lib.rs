//! vitte's load generator: it starts a real `vitte serve` in webhook mode, plays both of its
//! outside parties (Telegram and the LLM) over real HTTP, simulates users, and reports
//! throughput, latency, runtime overhead, resources, and lost or duplicated replies.

pub mod faults;
pub mod memory;
pub mod peers;
pub mod report;
pub mod tracker;
pub mod vitte;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::json;
use tokio::sync::Semaphore;

use futures::future::BoxFuture;

use crate::peers::{LlmBehaviour, Peers, Switches};
use crate::report::{Outcome, Report, Resources};
use crate::tracker::{Tracker, tag};
use crate::vitte::{VitteOptions, VitteProcess, WEBHOOK_SECRET};

/// Telegram user ids of simulated users start here.
const BASE_USER_ID: i64 = 5_000_000_000;

/// How users behave.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Each user waits for its reply (and the think time) before its next message, until
    /// `messages` were sent in all or `duration` passed.
    ClosedLoop {
        messages: Option<u64>,
        duration: Option<Duration>,
        think: Duration,
    },
    /// Messages at a fixed rate, spread over the users.
    FixedRate { per_second: f64, duration: Duration },
    /// Every user picks a persona and sends one message; `concurrency` users at a time.
    OneEach { concurrency: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Sqlite,
    /// A PostgreSQL server; a fresh database is created for the run and dropped after it.
    Postgres(String),
}

/// One run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub scenario: String,
    pub users: usize,
    pub pattern: Pattern,
    pub llm: LlmBehaviour,
    pub backend: Backend,
    pub vitte_binary: PathBuf,
    pub repository: PathBuf,
    pub shards: usize,
    pub http_workers: usize,
    pub peer_workers: usize,
    pub idle_timeout: Duration,
    /// Webhook POSTs in flight at once.
    pub max_posts: usize,
    pub reply_timeout: Duration,
    pub progress: bool,
    /// More environment for vitte (a scenario's settings).
    pub vitte_env: Vec<(String, String)>,
    /// Share of updates delivered a second time, a little later (out of order with what
    /// came since), as Telegram does when it is not sure a delivery arrived.
    pub redeliver_rate: f64,
    /// Long-term memories written for each user before the load (0: memory stays off).
    pub memories_per_user: usize,
    /// Length of the memories' vectors (what vitte asks the embeddings for).
    pub embedding_dimensions: usize,
}

impl LoadConfig {
    /// A closed loop of `users` sending `messages` in all, on `backend`, with the usual
    /// settings for a test.
    pub fn closed_loop(
        scenario: &str,
        users: usize,
        messages: u64,
        llm: LlmBehaviour,
        backend: Backend,
        vitte_binary: PathBuf,
        repository: PathBuf,
    ) -> LoadConfig {
        LoadConfig {
            scenario: scenario.into(),
            users,
            pattern: Pattern::ClosedLoop {
                messages: Some(messages),
                duration: None,
                think: Duration::from_millis(5),
            },
            llm,
            backend,
            vitte_binary,
            repository,
            shards: 2,
            http_workers: 2,
            peer_workers: 1,
            idle_timeout: Duration::from_secs(600),
            max_posts: 64,
            reply_timeout: Duration::from_secs(60),
            progress: false,
            vitte_env: Vec::new(),
            redeliver_rate: 0.0,
            memories_per_user: 0,
            embedding_dimensions: peers::EMBEDDING_DIMENSIONS,
        }
    }
}

impl LoadConfig {
    /// The memories seeded per user.
    pub fn memory_shape(&self) -> memory::Shape {
        memory::Shape {
            per_user: self.memories_per_user,
            dimensions: self.embedding_dimensions,
        }
    }
}

/// A fault injected while the load runs: `inject` starts `after` the measured phase began,
/// with the running system at hand, and returns what it observed (one line each).
pub struct Fault {
    pub after: Duration,
    pub inject:
        Box<dyn FnOnce(FaultContext) -> BoxFuture<'static, anyhow::Result<Vec<String>>> + Send>,
}

/// The running system, for a fault to act on.
pub struct FaultContext {
    /// vitte's process (a fault may kill and start it again).
    pub vitte: Arc<tokio::sync::Mutex<VitteProcess>>,
    pub options: VitteOptions,
    /// The fake Telegram and LLM.
    pub peers_url: String,
    pub switches: Arc<Switches>,
    pub client: reqwest::Client,
    pub tracker: Arc<Tracker>,
}

impl FaultContext {
    /// vitte's base URL.
    pub fn vitte_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.options.port)
    }

    /// The value of one sample line of vitte's /metrics (`None` while it does not answer).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        metric(&self.client, &self.vitte_url(), sample).await
    }

    /// The status of vitte's /health/ready (`None` while it does not answer).
    pub async fn ready_status(&self) -> Option<u16> {
        self.client
            .get(format!("{}/health/ready", self.vitte_url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16())
    }

    /// Starts vitte again after it stopped (same port, database and settings) and waits
    /// until it is ready.
    pub async fn restart_vitte(&self) -> anyhow::Result<()> {
        let mut fresh = VitteProcess::spawn(&self.options, &self.peers_url).await?;
        fresh.wait_ready(Duration::from_secs(60)).await?;
        *self.vitte.lock().await = fresh;
        Ok(())
    }
}

/// The value of one sample line of `/metrics` at `base`.
pub async fn metric(client: &reqwest::Client, base: &str, sample: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == sample)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Posts updates to vitte's webhook, retrying as Telegram does when vitte cannot take one
/// (until `retry_for` has passed), and delivering some a second time.
struct Poster {
    client: reqwest::Client,
    url: String,
    next_update_id: AtomicI64,
    permits: Semaphore,
    failures: AtomicU64,
    retry_for: Duration,
    redeliver_rate: f64,
    redelivered: AtomicU64,
    /// Updates never accepted within `retry_for` (each counts its message lost).
    given_up: AtomicU64,
}

impl Poster {
    async fn post(self: &Arc<Self>, update: serde_json::Value) {
        if !self.deliver(&update).await {
            self.given_up.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.redeliver_rate > 0.0 && fastrand::f64() < self.redeliver_rate {
            // Telegram was not sure it arrived: a second delivery, after newer updates.
            self.redelivered.fetch_add(1, Ordering::Relaxed);
            let poster = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
                poster.deliver(&update).await;
            });
        }
    }

    /// Posts until vitte accepts (2xx) or `retry_for` passes; returns whether it accepted.
    async fn deliver(&self, update: &serde_json::Value) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let deadline = Instant::now() + self.retry_for;
        let mut attempt = 0_u32;
        loop {
            let sent = self
                .client
                .post(&self.url)
                .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
                .timeout(Duration::from_secs(30))
                .json(update)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return true,
                _ => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= deadline {
                        return false;
                    }
                    let pause = Duration::from_millis(100 << attempt.min(4));
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }

    fn sender(user_id: i64) -> serde_json::Value {
        json!({ "id": user_id, "is_bot": false, "first_name": "Load", "language_code": "en" })
    }

    async fn pick_persona(self: &Arc<Self>, user_id: i64) {
        let update_id = self.next_update_id.fetch_add(1, Ordering::Relaxed);
        self.post(json!({
            "update_id": update_id,
            "callback_query": {
                "id": format!("cb{update_id}"),
                "from": Poster::sender(user_id),
                "chat_instance": "load",
                "data": START_STORY,
            }
        }))
        .await;
    }

    async fn say(self: &Arc<Self>, user_id: i64, text: &str) {
        let update_id = self.next_update_id.fetch_add(1, Ordering::Relaxed);
        self.post(json!({
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": 0,
                "chat": { "id": user_id, "type": "private", "first_name": "Load" },
                "from": Poster::sender(user_id),
                "text": text,
            }
        }))
        .await;
    }
}

/// The button that starts Mira's first story (the persona the load talks to).
const START_STORY: &str = "s:mira:storm-night";

struct Run {
    tracker: Arc<Tracker>,
    poster: Arc<Poster>,
    config: LoadConfig,
}

impl Run {
    async fn greet(&self, user: usize) -> bool {
        self.poster.pick_persona(self.tracker.user_id(user)).await;
        self.tracker
            .wait_greeted(user, self.config.reply_timeout)
            .await
    }

    async fn send(&self, user: usize, seq: u64) {
        self.tracker.message_sent(user, seq);
        self.post(user, seq).await;
    }

    /// Posts message `seq` of `user` (already marked sent).
    async fn post(&self, user: usize, seq: u64) {
        let text = format!("{} tell me about the ships tonight", tag(user, seq));
        self.poster.say(self.tracker.user_id(user), &text).await;
    }
}

async fn greet_all(run: &Arc<Run>, users: usize) -> usize {
    let greeted = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..run.config.max_posts.min(users).max(1))
        .map(|_| {
            let (run, greeted, next) = (run.clone(), greeted.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let user = next.fetch_add(1, Ordering::Relaxed);
                    if user >= users {
                        break;
                    }
                    if run.greet(user).await {
                        greeted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    greeted.load(Ordering::Relaxed)
}

async fn closed_loop(
    run: Arc<Run>,
    messages: Option<u64>,
    duration: Option<Duration>,
    think: Duration,
) {
    let budget = Arc::new(AtomicU64::new(messages.unwrap_or(u64::MAX)));
    let deadline = duration.map(|duration| Instant::now() + duration);
    let tasks: Vec<_> = (0..run.config.users)
        .map(|user| {
            let (run, budget) = (run.clone(), budget.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                loop {
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        break;
                    }
                    if budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(1)
                        })
                        .is_err()
                    {
                        break;
                    }
                    seq += 1;
                    run.send(user, seq).await;
                    if !run
                        .tracker
                        .wait_answered(user, seq, run.config.reply_timeout)
                        .await
                    {
                        break; // counted as lost; the user gives up
                    }
                    if !think.is_zero() {
                        let jitter = 0.5 + fastrand::f64();
                        tokio::time::sleep(think.mul_f64(jitter)).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn fixed_rate(run: Arc<Run>, per_second: f64, duration: Duration) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let users = run.config.users;
    let seqs: Arc<Vec<AtomicU64>> = Arc::new((0..users).map(|_| AtomicU64::new(0)).collect());
    let deadline = Instant::now() + duration;
    let mut next = 0;
    while Instant::now() < deadline {
        ticks.tick().await;
        // The next user with no message awaiting an answer.
        let Some(user) = (0..users)
            .map(|offset| (next + offset) % users)
            .find(|user| run.tracker.is_idle(*user))
        else {
            continue;
        };
        next = user + 1;
        let seq = seqs[user].fetch_add(1, Ordering::Relaxed) + 1;
        let run = run.clone();
        // Marked busy here, not in the task: under load the task may start after later
        // ticks, which must not pick the same user again (a second message in flight would
        // be miscounted: one reply seen as lost, the other as a duplicate).
        run.tracker.message_sent(user, seq);
        tokio::spawn(async move { run.post(user, seq).await });
    }
}

async fn one_each(run: Arc<Run>, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (run, next) = (run.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let user = next.fetch_add(1, Ordering::Relaxed);
                    if user >= run.config.users {
                        break;
                    }
                    if run.greet(user).await {
                        run.send(user, 1).await;
                        run.tracker
                            .wait_answered(user, 1, run.config.reply_timeout)
                            .await;
                    } else {
                        // The persona's greeting never came: a reply lost.
                        run.tracker.greetings_missing.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

async fn create_database(server: &str) -> anyhow::Result<(String, String)> {
    let name = format!(
        "vitte_load_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis())
    );
    let mut admin = AsyncPgConnection::establish(server)
        .await
        .context("connecting to PostgreSQL")?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let mut url = url::Url::parse(server)?;
    url.set_path(&name);
    Ok((url.to_string(), name))
}

async fn drop_database(server: &str, name: &str) {
    if let Ok(mut admin) = AsyncPgConnection::establish(server).await {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}

/// Peak values seen while the run goes on.
#[derive(Default)]
struct Peaks {
    in_flight: AtomicU64,
    sessions: AtomicU64,
    rss_kib: AtomicU64,
    /// (seconds since the measured phase began, RSS MiB), once a second.
    rss_timeline: std::sync::Mutex<Vec<(f64, f64)>>,
}

async fn sessions_active(client: &reqwest::Client, vitte: &str) -> Option<u64> {
    let text = client
        .get(format!("{vitte}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("vitte_sessions_active "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// Runs one load test and reports it.
pub async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    run_with(config, None).await
}

/// Runs one load test with `fault` injected while it runs, and reports it (with what the
/// fault observed in `notes`).
pub async fn run_with(config: LoadConfig, fault: Option<Fault>) -> anyhow::Result<Report> {
    raise_open_files_limit();
    let tracker = Arc::new(Tracker::new(config.users, BASE_USER_ID));
    let peers = Peers::start(tracker.clone(), config.llm, config.peer_workers)?;
    // The SQLite file lives in a directory removed when the run ends.
    let data_dir = tempfile::tempdir()?;
    let (database_url, postgres) = match &config.backend {
        Backend::Sqlite => (
            format!("sqlite://{}", data_dir.path().join("vitte.db").display()),
            None,
        ),
        Backend::Postgres(server) => {
            let (url, name) = create_database(server).await?;
            (url, Some((server.clone(), name)))
        }
    };
    let options = VitteOptions {
        binary: config.vitte_binary.clone(),
        repository: config.repository.clone(),
        database_url,
        shards: config.shards,
        http_workers: config.http_workers,
        idle_timeout: config.idle_timeout,
        max_connections: 16,
        port: vitte::free_port()?,
        extra_env: config.vitte_env.clone(),
    };
    let mut vitte = VitteProcess::spawn(&options, &peers.url()).await?;
    vitte.wait_ready(Duration::from_secs(60)).await?;
    if config.memories_per_user > 0 {
        let user_ids: Vec<i64> = (0..config.users)
            .map(|user| tracker.user_id(user))
            .collect();
        memory::seed(&options.database_url, &user_ids, config.memory_shape()).await?;
    }
    let vitte_url = vitte.url.clone();
    let vitte = Arc::new(tokio::sync::Mutex::new(vitte));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.max_posts)
        .build()?;
    let poster = Arc::new(Poster {
        client: client.clone(),
        url: format!("{vitte_url}/telegram/webhook"),
        next_update_id: AtomicI64::new(1),
        permits: Semaphore::new(config.max_posts),
        failures: AtomicU64::new(0),
        retry_for: config.reply_timeout,
        redeliver_rate: config.redeliver_rate,
        redelivered: AtomicU64::new(0),
        given_up: AtomicU64::new(0),
    });
    let run = Arc::new(Run {
        tracker: tracker.clone(),
        poster: poster.clone(),
        config: config.clone(),
    });

    // Everyone but the one-message users picks a persona first (not measured).
    if !matches!(config.pattern, Pattern::OneEach { .. }) {
        let greeted = greet_all(&run, config.users).await;
        anyhow::ensure!(
            greeted == config.users,
            "only {greeted} of {} users were greeted",
            config.users
        );
    }

    // RSS with every session live and no memories loaded yet (they load on first recall).
    tokio::time::sleep(memory::SETTLE).await;
    let rss_before_mib = vitte.lock().await.rss_mib().unwrap_or(0.0);
    let peaks = Arc::new(Peaks::default());
    let progress = indicatif::ProgressBar::new(match &config.pattern {
        Pattern::ClosedLoop {
            messages: Some(messages),
            ..
        } => *messages,
        Pattern::OneEach { .. } => config.users as u64,
        _ => 0,
    });
    if !config.progress {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} answered, {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let sampler = {
        let (tracker, peaks, progress, client, url, vitte) = (
            tracker.clone(),
            peaks.clone(),
            progress.clone(),
            client.clone(),
            vitte_url.clone(),
            vitte.clone(),
        );
        tokio::spawn(async move {
            let mut tick = 0_u64;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tick += 1;
                // The process a fault may have started anew.
                let pid = vitte.lock().await.pid;
                peaks
                    .in_flight
                    .fetch_max(tracker.in_flight(), Ordering::Relaxed);
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|status| {
                        status
                            .lines()
                            .find_map(|line| line.strip_prefix("VmRSS:"))
                            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                    })
                    .unwrap_or(0);
                peaks.rss_kib.fetch_max(rss, Ordering::Relaxed);
                if tick % 10 == 0 {
                    if let Some(sessions) = sessions_active(&client, &url).await {
                        peaks.sessions.fetch_max(sessions, Ordering::Relaxed);
                    }
                    peaks
                        .rss_timeline
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((tick as f64 / 10.0, rss as f64 / 1024.0));
                }
                progress.set_position(tracker.answered.load(Ordering::Relaxed));
                progress.set_message(format!(
                    "{} in flight, RSS {} MiB",
                    tracker.in_flight(),
                    rss / 1024
                ));
            }
        })
    };

    let cpu_before = vitte.lock().await.cpu_seconds().unwrap_or(0.0);
    let loadgen_cpu_before =
        vitte::cpu_seconds_of(std::path::Path::new("/proc/self/stat")).unwrap_or(0.0);
    let started = Instant::now();
    let injector = fault.map(|fault| {
        let context = FaultContext {
            vitte: vitte.clone(),
            options: options.clone(),
            peers_url: peers.url(),
            switches: peers.switches.clone(),
            client: client.clone(),
            tracker: tracker.clone(),
        };
        tokio::spawn(async move {
            tokio::time::sleep(fault.after).await;
            (fault.inject)(context).await
        })
    });
    match config.pattern.clone() {
        Pattern::ClosedLoop {
            messages,
            duration,
            think,
        } => closed_loop(run.clone(), messages, duration, think).await,
        Pattern::FixedRate {
            per_second,
            duration,
        } => fixed_rate(run.clone(), per_second, duration).await,
        Pattern::OneEach { concurrency } => one_each(run.clone(), concurrency).await,
    }
    let mut notes = match injector {
        Some(injector) => injector
            .await
            .map_err(|error| anyhow::anyhow!("the fault task failed: {error}"))??,
        None => Vec::new(),
    };
    // Wait for the last replies.
    let grace = Instant::now() + config.reply_timeout;
    while tracker.in_flight() > 0 && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let duration = started.elapsed();
    // A moment for duplicates to show up, if any.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampler.abort();
    progress.finish_and_clear();

    let mut vitte = vitte.lock().await;
    if config.memories_per_user > 0 {
        let metrics = client
            .get(format!("{vitte_url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        notes.extend(memory::notes(
            &metrics,
            config.users,
            config.memory_shape(),
            rss_before_mib,
            vitte.rss_mib().unwrap_or(0.0),
        ));
    }
    let resources = Resources {
        peak_rss_mib: vitte
            .peak_rss_mib()
            .unwrap_or(peaks.rss_kib.load(Ordering::Relaxed) as f64 / 1024.0),
        final_rss_mib: vitte.rss_mib().unwrap_or(0.0),
        // A restarted process counts from its own start.
        cpu_seconds: (vitte.cpu_seconds().unwrap_or(0.0) - cpu_before).max(0.0),
    };
    let loadgen_cpu = vitte::cpu_seconds_of(std::path::Path::new("/proc/self/stat")).unwrap_or(0.0)
        - loadgen_cpu_before;
    vitte.terminate(Duration::from_secs(60)).await?;
    peers.stop().await;
    if let Some((server, name)) = postgres {
        drop_database(&server, &name).await;
    }

    let outcome = Outcome {
        duration_seconds: duration.as_secs_f64(),
        sent: tracker.sent.load(Ordering::SeqCst),
        answered: tracker.answered.load(Ordering::SeqCst),
        duplicated: tracker.duplicated.load(Ordering::SeqCst),
        unexpected: tracker.unexpected.load(Ordering::SeqCst),
        samples: tracker.take_samples(),
    };
    let (rate, end_to_end, overhead, first_visible) = Report::figures(&outcome);
    let peak_in_flight = peaks.in_flight.load(Ordering::Relaxed);
    Ok(Report {
        scenario: config.scenario.clone(),
        backend: match config.backend {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres(_) => "postgres".into(),
        },
        parameters: json!({
            "users": config.users,
            "pattern": format!("{:?}", config.pattern),
            "llm_chunks": config.llm.chunks,
            "llm_chunk_delay_ms": config.llm.chunk_delay.as_millis() as u64,
            "llm_failure_rate": config.llm.failure_rate,
            "shards": config.shards,
            "http_workers": config.http_workers,
            "peer_workers": config.peer_workers,
            "idle_timeout_s": config.idle_timeout.as_secs_f64(),
            "max_posts": config.max_posts,
            "webhook_post_retries": poster.failures.load(Ordering::Relaxed),
            "redelivered_updates": poster.redelivered.load(Ordering::Relaxed),
            "updates_never_accepted": poster.given_up.load(Ordering::Relaxed),
            "answered_with_notice": tracker.notices.load(Ordering::Relaxed),
            "greetings_missing": tracker.greetings_missing.load(Ordering::Relaxed),
            "memories_per_user": config.memories_per_user,
            "embedding_dimensions": config.embedding_dimensions,
            "vitte_env": config.vitte_env,
        }),
        duration_seconds: outcome.duration_seconds,
        messages_sent: outcome.sent,
        messages_answered: outcome.answered,
        lost: outcome.sent.saturating_sub(outcome.answered)
            + tracker.greetings_missing.load(Ordering::SeqCst),
        duplicated: outcome.duplicated,
        unexpected_texts: outcome.unexpected,
        notices: tracker.notices.load(Ordering::SeqCst),
        llm_requests: tracker.llm_requests.load(Ordering::SeqCst),
        llm_failures_injected: tracker.llm_failures.load(Ordering::SeqCst),
        answered_per_second: rate,
        end_to_end,
        overhead,
        first_visible_after_first_chunk: first_visible,
        bot_api_calls_per_reply: tracker.reply_calls.load(Ordering::SeqCst) as f64
            / outcome.answered.max(1) as f64,
        draft_calls: tracker.draft_calls.load(Ordering::SeqCst),
        peak_in_flight,
        peak_sessions_active: peaks.sessions.load(Ordering::Relaxed),
        rss_per_in_flight_kib: (peak_in_flight > 0)
            .then(|| resources.peak_rss_mib * 1024.0 / peak_in_flight as f64),
        vitte: resources,
        loadgen_cpu_seconds: loadgen_cpu,
        rss_timeline_mib: std::mem::take(
            &mut *peaks
                .rss_timeline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ),
        notice_kinds: tracker.notice_kinds(),
        notes,
    })
}

/// Many connections need many file descriptors; raise the limit as far as allowed.
fn raise_open_files_limit() {
    let wanted = 1_048_576;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted).is_err() {
        let _ = rlimit::increase_nofile_limit(wanted);
    }
}
