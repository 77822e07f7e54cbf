//! Test support: the real application started in-process on port 0, against a fake Telegram
//! Bot API server and a fake OpenAI-compatible server (both real HTTP servers), on SQLite or
//! on a fresh PostgreSQL database.

#![allow(dead_code)]

pub mod fake_llm;
pub mod fake_telegram;
pub mod payments;
pub mod seed;
pub mod tcp_proxy;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use secrecy::SecretString;
use serde_json::Value;
use vitte::config::{ConfigSource, Settings, TelegramMode};
use vitte::startup::{AppHandle, Application, Customization, LlmWrapper};
use vitte::storage::Database;
use vitte_actors::ports::Clock as _;
use vitte_actors::ports::{Completion, CompletionRequest, LanguageModel, LlmError, ManualClock};
use vitte_actors::supervision::ActorKind;

pub use fake_llm::{FakeLlm, LlmBehaviour};
pub use fake_telegram::{FakeTelegram, callback_update, stopped_generation_update, text_update};
pub use vitte_actors::session::StreamingMode;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Runs each named `async fn name(backend: Backend)` as two tests: `name::sqlite`, and
/// `name::postgres` on the server `DATABASE_URL` names. Without `DATABASE_URL` the PostgreSQL
/// variant is reported as ignored, with the reason (see `build.rs`); under `CI` it always
/// runs, and fails if `DATABASE_URL` is missing.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_rt::test]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }

                #[actix_rt::test]
                #[cfg_attr(skip_postgres_tests, ignore = "DATABASE_URL is not set")]
                async fn postgres() {
                    super::$name($crate::support::Backend::postgres()).await;
                }
            }
        )*
    };
}

/// Which storage a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server URL from `DATABASE_URL`; each test creates its own database there.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL at `DATABASE_URL`; a test that needs it fails without it (such tests are
    /// compiled as ignored when `DATABASE_URL` is unset outside CI).
    pub fn postgres() -> Backend {
        Backend::Postgres(required_env("DATABASE_URL"))
    }
}

/// The value of a variable that a server-backed test needs: CI must set it.
pub fn required_env(variable: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| {
            panic!("{variable} is not set: this test needs it (CI must set it; see .ci/run)")
        })
}

/// A change to the test configuration before the app starts.
pub type AdjustSettings = Box<dyn FnOnce(&mut Settings)>;

/// How a test wants the app.
pub struct TestOptions {
    pub mode: TelegramMode,
    pub wrap_llm: Option<LlmWrapper>,
    pub adjust: Option<AdjustSettings>,
    /// Telegram's real limits in the outbox, paced by the app's manual clock (which the
    /// test drives with [`TestApp::drive_outbox_until`]); the fake Bot API records call
    /// times on that clock. Otherwise the outbox paces by the system's clock with limits no
    /// test reaches, so a test of something else never waits for them.
    pub telegram_limits: bool,
    /// How replies stream. The suites written around edit streaming (placeholders, their
    /// edits) run in `edit`; `tests/integration/drafts.rs` runs the production default,
    /// `auto` (message drafts in private chats).
    pub streaming: StreamingMode,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            mode: TelegramMode::Webhook,
            wrap_llm: None,
            adjust: None,
            telegram_limits: false,
            streaming: StreamingMode::Edit,
        }
    }
}

/// A running application with its fakes.
pub struct TestApp {
    pub address: String,
    pub telegram: FakeTelegram,
    pub llm: FakeLlm,
    pub database: Database,
    pub handle: AppHandle,
    pub settings: Settings,
    pub http: reqwest::Client,
    /// The app's clock: it moves only when a test moves it.
    pub clock: Arc<ManualClock>,
    /// The outbox, for driving its pacing in controlled time.
    pub outbox: vitte_actors::outbox::OutboxHandle,
    kept: Kept,
}

/// What outlives one run of the app within a test (a restart keeps it), besides the fakes.
struct Kept {
    /// Holds the SQLite file and `config/` (read again on a live reload).
    data_dir: Arc<tempfile::TempDir>,
    /// The outbox paces by the app's manual clock (see [`TestOptions::telegram_limits`]).
    telegram_limits: bool,
    next_update_id: Arc<AtomicI64>,
    /// Ends a hung test (with its name) instead of the whole run hanging.
    watchdog: Arc<watchdog::Watchdog>,
    /// The server URL and name of the test's own PostgreSQL database, dropped by `stop`.
    postgres: Option<(String, String)>,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

static DATABASE_COUNTER: AtomicI64 = AtomicI64::new(0);

/// Creates an empty PostgreSQL database for one test; returns its URL and name.
async fn fresh_postgres_database(server_url: &str) -> (String, String) {
    let name = format!(
        "vitte_test_{}_{}_{}",
        std::process::id(),
        DATABASE_COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos())
    );
    let mut admin = AsyncPgConnection::establish(server_url)
        .await
        .expect("DATABASE_URL must point to a reachable PostgreSQL server");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create a test database");
    let mut url = url::Url::parse(server_url).expect("DATABASE_URL is a URL");
    url.set_path(&name);
    (url.to_string(), name)
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, TestOptions::default()).await
    }

    /// The app with its configuration changed by `adjust` before it starts.
    pub async fn spawn_adjusted(
        backend: Backend,
        adjust: impl FnOnce(&mut Settings) + 'static,
    ) -> TestApp {
        let options = TestOptions {
            adjust: Some(Box::new(adjust)),
            ..TestOptions::default()
        };
        TestApp::spawn_with(backend, options).await
    }

    pub async fn spawn_with(backend: Backend, options: TestOptions) -> TestApp {
        // `TEST_LOG=debug cargo nextest run …` shows the application's logs of a failing test.
        if let Ok(level) = std::env::var("TEST_LOG") {
            vitte::telemetry::init(vitte::config::LogFormat::Pretty, &level);
        }
        let telegram = FakeTelegram::start().await;
        let llm = FakeLlm::start().await;
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let (database_url, postgres) = match &backend {
            Backend::Sqlite => (
                format!("sqlite://{}", data_dir.path().join("vitte.db").display()),
                None,
            ),
            Backend::Postgres(server) => {
                let (url, name) = fresh_postgres_database(server).await;
                (url, Some((server.clone(), name)))
            }
        };
        // The app's own config directory, so a test can change it and reload.
        let config_dir = data_dir.path().join("config");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        // The test's own defaults (what `adjust` below sets in memory), so that a live reload
        // reading the files keeps them: no quiet hours, and unless the test keeps Telegram's
        // limits, limits no test reaches.
        let mut defaults =
            std::fs::read_to_string(repo_path("config/default.toml")).expect("read default.toml");
        defaults = defaults
            .replace("\nquiet_start = 23\n", "\nquiet_start = 0\n")
            .replace("\nquiet_end = 8\n", "\nquiet_end = 0\n");
        if !options.telegram_limits {
            defaults = defaults
                .replace(
                    "\nglobal_per_second = 30\n",
                    "\nglobal_per_second = 1000000\n",
                )
                .replace("\nprivate_burst = 3\n", "\nprivate_burst = 1000000\n")
                .replace(
                    "\ngroup_per_minute = 20\n",
                    "\ngroup_per_minute = 1000000\n",
                );
        }
        std::fs::write(config_dir.join("default.toml"), defaults).expect("write default.toml");
        let mut settings =
            Settings::load_from(&config_dir, "local").expect("default configuration");
        settings.telegram.token = SecretString::from("123456:TEST-TOKEN");
        settings.telegram.api_url = telegram.api_url();
        settings.telegram.mode = options.mode;
        settings.telegram.webhook_url = "https://bot.example.org/telegram/webhook".into();
        settings.telegram.webhook_secret = SecretString::from(WEBHOOK_SECRET);
        settings.telegram.polling_timeout = Duration::from_secs(1);
        settings.llm.base_url = llm.base_url();
        settings.llm.api_key = SecretString::from("sk-test-key");
        settings.llm.request_timeout = Duration::from_secs(3);
        settings.database.url = SecretString::from(database_url);
        settings.database.max_connections = 4;
        settings.http.address = "127.0.0.1:0".into();
        settings.http.workers = 1;
        settings.session.shards = 2;
        settings
            .supervision
            .kind_mut(ActorKind::Session)
            .shutdown_timeout = Duration::from_secs(5);
        settings.personas.dir = repo_path("personas");
        settings.safety.file = repo_path("config/safety.toml");
        settings.payments.catalogue = repo_path("config/catalogue.toml");
        settings.admin.token = SecretString::from(ADMIN_TOKEN);
        // (The copied default.toml holds no quiet hours, a run at night must not hold
        // notices back, and unless `telegram_limits`, outbox limits no test reaches.)
        assert_eq!(settings.notifications.quiet_start, 0);
        settings.streaming.mode = options.streaming;
        if let Some(adjust) = options.adjust {
            adjust(&mut settings);
        }
        let kept = Kept {
            data_dir,
            telegram_limits: options.telegram_limits,
            next_update_id: Arc::new(AtomicI64::new(1)),
            watchdog: Arc::new(watchdog::Watchdog::arm()),
            postgres,
        };
        let fakes = (telegram, llm, ManualClock::starting_now());
        TestApp::launch(settings, options.wrap_llm, fakes, kept).await
    }

    async fn launch(
        settings: Settings,
        wrap_llm: Option<LlmWrapper>,
        (telegram, llm, clock): (FakeTelegram, FakeLlm, Arc<ManualClock>),
        kept: Kept,
    ) -> TestApp {
        let pacing_clock: Arc<dyn vitte_actors::ports::Clock> = if kept.telegram_limits {
            telegram.use_clock(clock.clone());
            clock.clone()
        } else {
            Arc::new(vitte_actors::ports::SystemClock)
        };
        let customization = Customization {
            clock: Some(clock.clone()),
            pacing_clock: Some(pacing_clock),
            wrap_llm,
            config_source: Some(ConfigSource {
                dir: kept.data_dir.path().join("config"),
                environment: "local".into(),
            }),
        };
        let application = Application::build_with(settings.clone(), customization)
            .await
            .expect("the application starts");
        let address = format!("http://127.0.0.1:{}", application.port());
        let database = application.database().clone();
        let outbox = application.outbox().clone();
        let handle = application.handle();
        actix_rt::spawn(async move {
            if let Err(error) = application.run_until_stopped().await {
                panic!("application failed: {error:#}");
            }
        });
        let app = TestApp {
            address,
            telegram,
            llm,
            database,
            handle,
            settings,
            // No idle keep-alive connections: the server's graceful stop would wait for them.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                // A request the application never answers fails the test instead of hanging it.
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            clock,
            outbox,
            kept,
        };
        app.wait_until_ready().await;
        app
    }

    /// Stops the application and starts a new one on the same database and fakes.
    pub async fn restart(self) -> TestApp {
        self.handle.stop().await;
        let fakes = (self.telegram, self.llm, self.clock);
        TestApp::launch(self.settings, None, fakes, self.kept).await
    }

    /// Kills the application (as SIGKILL would: nothing in progress is finished) and starts
    /// a new one on the same database and fakes.
    pub async fn crash_and_restart(self) -> TestApp {
        self.handle.kill().await;
        let fakes = (self.telegram, self.llm, self.clock);
        TestApp::launch(self.settings, None, fakes, self.kept).await
    }

    /// Stops the application and the fakes, and drops the test's PostgreSQL database.
    pub async fn stop(&self) {
        tracing::info!("test: stopping the application");
        self.handle.stop().await;
        tracing::info!("test: stopping the fake Telegram");
        self.telegram.stop().await;
        tracing::info!("test: stopping the fake LLM");
        self.llm.stop().await;
        tracing::info!("test: dropping the test database");
        self.drop_postgres_database().await;
        tracing::info!("test: stopped");
    }

    /// Drops the test's PostgreSQL database, ending its connections (also while the app runs,
    /// to simulate losing the database).
    pub async fn drop_postgres_database(&self) {
        if let Some((server, name)) = &self.kept.postgres {
            if let Ok(mut admin) = AsyncPgConnection::establish(server).await {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
    }

    /// Makes the test's PostgreSQL database refuse writes (or take them again): new
    /// sessions are read-only, and the app's open connections are ended so it reconnects.
    pub async fn set_postgres_read_only(&self, read_only: bool) {
        let (server, name) = self.kept.postgres.as_ref().expect("a PostgreSQL test");
        let mut admin = AsyncPgConnection::establish(server)
            .await
            .expect("the PostgreSQL server answers");
        let setting = if read_only { "on" } else { "off" };
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {setting}; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid();"
            ))
            .await
            .expect("the database's writability changes");
    }

    /// Moves the app's manual clock whenever the outbox has nothing in flight and nothing
    /// it may send now: to the moment its next call may go, or 10 ms on when nothing waits
    /// (the scheduler's passes run meanwhile). Every call is thus sent, and recorded by the
    /// fake, at the moment the outbox chose. Needs [`TestOptions::telegram_limits`].
    pub async fn drive_outbox_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let mut steps: u64 = 0;
        while !done() {
            steps += 1;
            assert!(steps < 2_000_000, "the outbox never got to: {what}");
            let clock = self.clock.clone();
            self.outbox
                .at_rest(move |pulse| {
                    let now = clock.now_millis();
                    match pulse.next_ready_at {
                        Some(at) => clock.set(at.max(now)),
                        None => clock.set(now + 10),
                    }
                })
                .await;
            // Whoever the moved clock woke (the scheduler, callers) acts before it moves on.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The SQLite file's directory (moved away to make the database vanish).
    pub fn data_dir(&self) -> &Path {
        self.kept.data_dir.path()
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = self
                .http
                .get(format!("{}/health/ready", self.address))
                .send()
                .await
            {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the application never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `config/local.toml` (read with default.toml on the next reload).
    pub fn write_local_config(&self, toml: &str) {
        std::fs::write(self.kept.data_dir.path().join("config/local.toml"), toml)
            .expect("write local.toml");
    }

    /// Calls an admin endpoint with the admin token.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin endpoint answers")
    }

    /// `GET path` on the application (e.g. `/health/ready`).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the application answers")
    }

    /// `GET /admin/actors` as JSON.
    pub async fn actors(&self) -> Value {
        self.admin(reqwest::Method::GET, "/admin/actors")
            .await
            .json()
            .await
            .expect("/admin/actors answers JSON")
    }

    pub fn next_update_id(&self) -> i64 {
        self.kept.next_update_id.fetch_add(1, Ordering::SeqCst)
    }

    /// POSTs an update to the webhook with the right secret; returns the HTTP status.
    pub async fn post_update(&self, update: &Value) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/telegram/webhook", self.address))
            .header("X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET)
            .json(update)
            .send()
            .await
            .expect("webhook answers")
            .status()
    }

    /// The user (an English speaker named after the id) writes `text`.
    pub async fn user_says(&self, user_id: i64, text: &str) {
        let update = text_update(
            self.next_update_id(),
            user_id,
            &format!("User{user_id}"),
            "en",
            text,
        );
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
    }

    /// The user presses an inline button carrying `data`.
    pub async fn user_presses(&self, user_id: i64, data: &str) {
        let update = callback_update(
            self.next_update_id(),
            user_id,
            &format!("User{user_id}"),
            "en",
            data,
        );
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
    }

    /// Starts the persona's first story and waits for its opening.
    pub async fn start_dialog(&self, user_id: i64, persona_id: &str) {
        let story = first_story(persona_id);
        self.start_story(user_id, persona_id, &story).await;
    }

    /// Starts a story and waits for its opening (under the slot's header), shown and stored:
    /// storing it is the last thing the session does for the button, so the next message
    /// finds the session idle.
    pub async fn start_story(&self, user_id: i64, persona_id: &str, story_id: &str) {
        let before = self.telegram.sent_texts(user_id).len();
        let stored_before = self.dialog_messages(user_id).await.len();
        self.user_presses(user_id, &format!("s:{persona_id}:{story_id}"))
            .await;
        self.wait_for_texts(user_id, before + 1).await;
        self.stored_when(user_id, "the story's opening stored", |stored| {
            stored.len() > stored_before
        })
        .await;
    }

    /// The user presses a button on the bot's message `message_id`.
    pub async fn user_presses_on(&self, user_id: i64, data: &str, message_id: i64) {
        let mut update = callback_update(
            self.next_update_id(),
            user_id,
            &format!("User{user_id}"),
            "en",
            data,
        );
        update["callback_query"]["message"]["message_id"] = serde_json::json!(message_id);
        assert_eq!(self.post_update(&update).await, reqwest::StatusCode::OK);
    }

    /// The user's stored messages as (role, content, status), oldest first.
    pub async fn dialog_messages(&self, user_id: i64) -> Vec<(String, String, String)> {
        self.database
            .user_messages(user_id)
            .await
            .expect("stored messages")
            .into_iter()
            .map(|message| (message.role, message.content, message.status))
            .collect()
    }

    /// Waits until the user's stored messages — (role, content, status), oldest first —
    /// pass `check` (a reply is stored just after its final edit is shown); returns them.
    pub async fn stored_when(
        &self,
        user_id: i64,
        what: &str,
        check: impl Fn(&[(String, String, String)]) -> bool,
    ) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stored = self.dialog_messages(user_id).await;
            if check(&stored) {
                return stored;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the chat's last message reads `expected`.
    pub async fn wait_for_last_text(&self, chat_id: i64, expected: &str) -> Vec<String> {
        wait_until(&format!("{expected:?} last in chat {chat_id}"), || {
            let texts = self.telegram.sent_texts(chat_id);
            (texts.last().map(String::as_str) == Some(expected)).then_some(texts)
        })
        .await
    }

    /// Waits until at least `count` messages were sent to `chat_id`; returns them all.
    pub async fn wait_for_texts(&self, chat_id: i64, count: usize) -> Vec<String> {
        wait_until(&format!("{count} messages to chat {chat_id}"), || {
            let texts = self.telegram.sent_texts(chat_id);
            (texts.len() >= count).then_some(texts)
        })
        .await
    }

    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample line of /metrics (e.g. `ai_requests_total{status="ok"}`).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics_text().await;
        sample_value(&text, sample)
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{text}"))
    }

    /// Waits until a sample of /metrics shows `value`: a counter is counted after the Telegram
    /// call it follows, so a test that saw the message may read /metrics a moment too early.
    pub async fn wait_for_metric(&self, sample: &str, value: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen = sample_value(&self.metrics_text().await, sample);
            if seen == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} never reached {value} (now {seen:?})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The value of one sample line (e.g. `ai_requests_total{status="ok"}`) in a /metrics text.
fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

/// `count` pieces of `size` characters each ("p01-xxxx… "): a streamed answer whose
/// drafts and parts a test can recognise.
pub fn pieces(count: usize, size: usize) -> Vec<String> {
    (1..=count)
        .map(|index| {
            let mut piece = format!("p{index:02}-");
            while piece.chars().count() < size - 1 {
                piece.push('x');
            }
            piece.push(' ');
            piece
        })
        .collect()
}

/// The `callback_data` of every button of a message (as `sent_messages` shows it), row by
/// row; empty without buttons.
pub fn button_data(message: &Value) -> Vec<String> {
    buttons(message, "callback_data")
}

/// The labels of every button of a message, row by row.
pub fn button_labels(message: &Value) -> Vec<String> {
    buttons(message, "text")
}

fn buttons(message: &Value, field: &str) -> Vec<String> {
    message["reply_markup"]["inline_keyboard"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .filter_map(|button| button[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The id of a persona's first story (as the shipped files define it).
pub fn first_story(persona_id: &str) -> String {
    let catalog = vitte_actors::domain::persona::PersonaCatalog::load_dir(&repo_path("personas"))
        .expect("the shipped personas load");
    let persona = catalog.get(persona_id).expect("a shipped persona");
    persona.stories[0].id.clone()
}

/// The opening message of a persona's story for `user_name`.
pub fn story_opening(persona_id: &str, story_id: &str, user_name: &str) -> String {
    let catalog = vitte_actors::domain::persona::PersonaCatalog::load_dir(&repo_path("personas"))
        .expect("the shipped personas load");
    let persona = catalog.get(persona_id).expect("a shipped persona");
    let story = persona.story(story_id).expect("a shipped story");
    persona.substitute(story.opening_message.trim(), user_name)
}

/// The `ai_requests_total` sample of the primary provider for `status`.
pub fn ai_requests(status: &str) -> String {
    format!("ai_requests_total{{model=\"deepseek-chat\",provider=\"primary\",status=\"{status}\"}}")
}

/// Waits until `probe` returns something, failing the test after [`PATIENCE`].
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async condition until it holds, failing the test after [`PATIENCE`].
pub async fn wait_until_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wraps the real LLM client and panics (inside the session's work) when the last user
/// message contains `trigger`: fault injection for supervision tests.
pub struct PanicOnTrigger {
    pub inner: Arc<dyn LanguageModel>,
    pub trigger: &'static str,
}

#[async_trait]
impl LanguageModel for PanicOnTrigger {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        if request.last_user_text().contains(self.trigger) {
            panic!("fault injected by the test");
        }
        self.inner.complete(request).await
    }
}

/// The texts of the `messages` array of an LLM request.
pub fn request_texts(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|message| {
                    (
                        message["role"].as_str().unwrap_or_default().to_owned(),
                        message["content"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
