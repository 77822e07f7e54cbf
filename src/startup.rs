//! The composition root: builds every component from the configuration, wires them, serves
//! HTTP and runs the Telegram ingress until shutdown.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use teloxide::Bot;
use tokio::sync::watch;
use vitte_actors::domain::persona::PersonaCatalog;
use vitte_actors::domain::prompt::{PromptBuilder, TokenBudget, TokenCounter};
use vitte_actors::domain::safety::SafetyPolicy;
use vitte_actors::gateway::{
    EmbeddingSpec, LlmGateway, MemoryCache, MemoryRateLimiter, ProviderSpec,
};
use vitte_actors::memory::{KeeperDeps, MemoryDeps, MemoryKeeper};
use vitte_actors::metrics::Metrics;
use vitte_actors::outbox::{Outbox, OutboxDeps, OutboxHandle, Priority};
use vitte_actors::payments::{Commerce, DeskDeps, DeskHandle, PayloadSigner, PaymentDesk};
use vitte_actors::ports::payments::PaymentsApi;
use vitte_actors::ports::{
    Clock, LanguageModel, Messenger, RateLimiter, ResponseCache, SystemClock,
};
use vitte_actors::scheduler::{NotificationDeps, Scheduler, SchedulerDeps, SchedulerHandle};
use vitte_actors::session::{DraftSupport, SessionDeps, SessionRouter, SessionSettings};
use vitte_actors::supervision::{ActorKind, Supervisor};

use crate::api_chats::{ApiChatMessenger, ApiChats};
use crate::config::{ConfigSource, Purpose, Settings, TelegramMode};
use crate::http::{self, HttpState};
use crate::llm::ProviderEndpoint;
use crate::llm::{OpenAiClient, OpenAiEmbeddings};
use crate::redis_backend::RedisBackend;
use crate::reload::{ReloadError, Reloader, gateway_tuning, provider_tuning};
use crate::storage::Database;
use crate::telegram::bot_api::BotApiClient;
use crate::telegram::payments::StarsApi;
use crate::telegram::raw::RawBotApi;
use crate::telegram::{IncomingUpdate, UpdateSink, polling};

/// Wraps what sessions call the LLM through (fault injection in tests).
pub type LlmWrapper = Box<dyn FnOnce(Arc<dyn LanguageModel>) -> Arc<dyn LanguageModel>>;

/// Optional changes to the standard wiring.
#[derive(Default)]
pub struct Customization {
    pub wrap_llm: Option<LlmWrapper>,
    /// Where to read the configuration again on a live reload; without it, reloads are
    /// refused.
    pub config_source: Option<ConfigSource>,
    /// The time of day; the system's clock when `None` (tests move a manual one).
    pub clock: Option<Arc<dyn Clock>>,
    /// The clock the outbox paces Telegram calls by; `clock` when `None`. (Tests whose
    /// manual clock stands still pace by the system's, unless they drive a broadcast.)
    pub pacing_clock: Option<Arc<dyn Clock>>,
}

/// What every front end (the server, `vitte chat`) needs: storage, personas, the LLM gateway,
/// supervision and the session router.
pub struct Core {
    pub personas: Arc<PersonaCatalog>,
    pub database: Database,
    pub metrics: Metrics,
    pub supervisor: Arc<Supervisor>,
    pub gateway: Arc<LlmGateway>,
    pub redis: Option<RedisBackend>,
    pub router: SessionRouter,
    pub clock: Arc<dyn Clock>,
    pub desk: DeskHandle,
    /// Every message to Telegram goes through it.
    pub outbox: OutboxHandle,
    /// Notifications and broadcasts.
    pub scheduler: SchedulerHandle,
    /// The chats of the HTTP chat API (what sessions say there is kept for the caller).
    pub api_chats: ApiChats,
}

impl Core {
    /// Loads personas, opens and migrates the database, builds the LLM gateway and starts
    /// the session shards with `messenger` (the Bot API, the terminal) as the outbox's transport.
    pub async fn start(
        settings: &Settings,
        messenger: Arc<dyn Messenger>,
        payments_api: Arc<dyn PaymentsApi>,
        wrap_llm: Option<LlmWrapper>,
        clock: Arc<dyn Clock>,
        pacing: Arc<dyn Clock>,
    ) -> anyhow::Result<Core> {
        let personas = Arc::new(PersonaCatalog::load_dir(&settings.personas.dir)?);
        let catalogue = Arc::new(settings.catalogue()?);
        let limits = settings.limits()?;
        let safety = Arc::new(SafetyPolicy::load(&settings.safety.file)?);
        let database = Database::connect(
            &settings.database_target()?,
            settings.database.max_connections,
            clock.clone(),
        )
        .context("opening the database")?;
        let applied = database
            .migrate()
            .await
            .context("applying database migrations")?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        let metrics = Metrics::new().context("creating metrics")?;
        let supervisor = Arc::new(Supervisor::new(
            settings.supervision.policies(),
            metrics.clone(),
        ));
        // Building the tokenizer takes a while; do it off the event loop, once.
        let counter = tokio::task::spawn_blocking(TokenCounter::new)
            .await
            .context("loading the tokenizer")?;

        let redis_url = settings.redis.url.expose_secret();
        let redis = if redis_url.is_empty() {
            None
        } else {
            Some(
                RedisBackend::new(redis_url, settings.llm.cache.max_entries, metrics.clone())
                    .context("redis.url")?,
            )
        };
        if let Some(redis) = &redis {
            redis.connect_in_background();
        }
        let (limiter, cache): (Arc<dyn RateLimiter>, Arc<dyn ResponseCache>) = match &redis {
            Some(redis) => (Arc::new(redis.clone()), Arc::new(redis.clone())),
            None => (
                Arc::new(MemoryRateLimiter::default()),
                Arc::new(MemoryCache::new(settings.llm.cache.max_entries)),
            ),
        };
        let llm = &settings.llm;
        let mut providers = vec![ProviderSpec {
            name: llm.name.clone(),
            model: llm.model.clone(),
            client: Arc::new(
                OpenAiClient::new(&ProviderEndpoint::primary(llm))
                    .context("creating the LLM client")?,
            ),
            tuning: provider_tuning(&llm.breaker, &llm.rate_limit, &llm.retry),
        }];
        for fallback in &llm.fallbacks {
            providers.push(ProviderSpec {
                name: fallback.name.clone(),
                model: fallback.model.clone(),
                client: Arc::new(
                    OpenAiClient::new(&ProviderEndpoint::fallback(llm, fallback))
                        .context("creating a fallback LLM client")?,
                ),
                tuning: provider_tuning(&fallback.breaker, &fallback.rate_limit, &fallback.retry),
            });
        }
        let memory_settings = settings.memory()?;
        let embeddings = &settings.memory.embeddings;
        let embeddings_client = OpenAiEmbeddings::new(
            settings.embeddings_base_url(),
            settings.embeddings_api_key(),
            &embeddings.model,
            embeddings.dimensions,
            embeddings.request_timeout,
            settings.llm.connect_timeout,
        )
        .context("creating the embeddings client")?;
        let gateway = Arc::new(
            LlmGateway::new(
                providers,
                gateway_tuning(settings),
                limiter,
                cache,
                supervisor.clone(),
            )
            .with_embeddings(EmbeddingSpec {
                name: embeddings.name.clone(),
                model: embeddings.model.clone(),
                client: Arc::new(embeddings_client),
                tuning: provider_tuning(
                    &embeddings.breaker,
                    &embeddings.rate_limit,
                    &embeddings.retry,
                ),
            }),
        );
        let sessions_llm: Arc<dyn LanguageModel> = match wrap_llm {
            Some(wrap) => wrap(gateway.clone()),
            None => gateway.clone(),
        };
        // Every message to Telegram goes through the outbox, paced by Telegram's limits.
        let outbox = Outbox::launch(OutboxDeps {
            transport: messenger,
            clock: pacing,
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            blocked: Arc::new(database.clone()),
            settings: settings.outbox()?,
        });
        let scheduler_settings = settings.scheduler()?;
        let scheduler = Scheduler::launch(SchedulerDeps {
            store: Arc::new(database.clone()),
            payments: Arc::new(database.clone()),
            outbox: outbox.clone(),
            llm: gateway.clone(),
            personas: personas.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            settings: scheduler_settings.clone(),
        });
        // Sessions speak to Telegram through the outbox, and to chat API callers in memory.
        let api_chats = ApiChats::default();
        let messenger: Arc<dyn Messenger> = Arc::new(ApiChatMessenger::new(
            api_chats.clone(),
            outbox.messenger(Priority::Reply),
        ));
        let commerce = Commerce {
            catalogue,
            limits,
            signer: PayloadSigner::new(&settings.payload_key()),
            api: payments_api,
            store: Arc::new(database.clone()),
        };
        let desk = PaymentDesk::launch(DeskDeps {
            commerce: commerce.clone(),
            messenger: outbox.messenger(Priority::Notification),
            notifier: Arc::new(scheduler.clone()),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
            sweep_every: settings.payments.sweep_every,
            events: Arc::new(database.clone()),
        });
        let keeper = MemoryKeeper::launch(KeeperDeps {
            llm: gateway.clone(),
            embedder: gateway.clone(),
            store: Arc::new(database.clone()),
            settings: memory_settings.clone(),
            counter,
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
        });
        let deps = SessionDeps {
            messenger,
            llm: sessions_llm,
            store: Arc::new(database.clone()),
            personas: personas.clone(),
            prompts: PromptBuilder::new(
                counter,
                TokenBudget {
                    context_tokens: settings.llm.context_tokens as usize,
                    reply_tokens: settings.llm.max_reply_tokens as usize,
                },
                Arc::new(safety.prompt().clone()),
            ),
            safety,
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            settings: SessionSettings {
                history_limit: settings.session.history_limit,
                edit_interval: settings.streaming.edit_interval,
                min_edit_chars: settings.streaming.min_edit_chars,
                draft_interval: settings.streaming.draft_interval,
                draft_refresh: settings.streaming.draft_refresh,
                continue_every: settings.session.continue_every,
                welcome_back_after: settings.session.welcome_back_after,
                max_message_chars: settings.session.max_message_chars,
                answer_within: settings.session.answer_within,
            },
            drafts: DraftSupport::new(settings.streaming.mode, clock.now_millis()),
            events: Arc::new(database.clone()),
            clock: clock.clone(),
            in_flight: AtomicUsize::new(0),
            commerce,
            desk: desk.clone(),
            memory: MemoryDeps {
                keeper: keeper.clone(),
                embedder: gateway.clone(),
                store: Arc::new(database.clone()),
                settings: memory_settings,
            },
            notifications: NotificationDeps {
                notifier: Arc::new(scheduler.clone()),
                store: Arc::new(database.clone()),
                settings: scheduler_settings,
            },
        };
        let shards = match settings.session.shards {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            shards => shards,
        };
        let router = SessionRouter::start(shards, deps);
        desk.listen(Arc::new(router.clone()));
        keeper.listen(Arc::new(router.clone()));
        Ok(Core {
            personas,
            database,
            metrics,
            supervisor,
            gateway,
            redis,
            router,
            clock,
            desk,
            outbox,
            scheduler,
            api_chats,
        })
    }
}

/// The running server.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    server_handle: ServerHandle,
    core: Core,
    shutdown: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    ingress: Option<tokio::task::JoinHandle<()>>,
    ingress_ready: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
}

/// Stops a running [`Application`] from elsewhere (tests, operators' endpoints).
#[derive(Clone)]
pub struct AppHandle {
    shutdown: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
}

impl AppHandle {
    /// Asks the application to shut down gracefully and waits until it has.
    pub async fn stop(&self) {
        self.shutdown.send_replace(true);
        self.wait_stopped().await;
    }

    /// Stops the application at once, as SIGKILL would: no reply in progress is finished,
    /// nothing is flushed; what storage holds is what the next start finds (for tests of
    /// crash recovery).
    pub async fn kill(&self) {
        self.kill.send_replace(true);
        self.wait_stopped().await;
    }

    async fn wait_stopped(&self) {
        let mut stopped = self.stopped.clone();
        // An error means the application is gone already, which is what we wait for.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Application::build_with(settings, Customization::default()).await
    }

    /// Validates the configuration, starts every component and binds the HTTP listener
    /// (port 0 picks a free port; see [`Application::port`]).
    pub async fn build_with(
        settings: Settings,
        customization: Customization,
    ) -> anyhow::Result<Application> {
        settings.validate(Purpose::Serve)?;
        let address = settings.http_address()?;
        let api_url = reqwest::Url::parse(&settings.telegram.api_url)
            .context("telegram.api_url is not a URL")?;
        // The client must outwait a long poll, or every quiet getUpdates would time out.
        // Idle connections kept to the Bot API: every streamed reply opens with a send, and
        // thousands of replies in flight must not each keep a socket to Telegram open
        // besides their LLM connection (measured: at 15 000 in flight that exhausted the
        // open-file limit). Telegram serves about 30 messages/s per bot anyway.
        let telegram_client = teloxide::net::default_reqwest_settings()
            .timeout(settings.telegram.polling_timeout + polling::CLIENT_TIMEOUT_MARGIN)
            .pool_max_idle_per_host(crate::telegram::bot_api::MAX_CONCURRENT_CALLS)
            .build()
            .context("creating the Telegram HTTP client")?;
        let bot = Bot::with_client(settings.telegram.token.expose_secret(), telegram_client)
            .set_api_url(api_url);
        let clock = customization
            .clock
            .unwrap_or_else(|| Arc::new(SystemClock) as Arc<dyn Clock>);
        let pacing = customization.pacing_clock.unwrap_or_else(|| clock.clone());
        let core = Core::start(
            &settings,
            Arc::new(BotApiClient::new(bot.clone())),
            Arc::new(StarsApi::new(RawBotApi::new(&bot))),
            customization.wrap_llm,
            clock,
            pacing,
        )
        .await?;
        let reloader = Arc::new(Reloader::new(
            customization.config_source,
            settings.clone(),
            core.supervisor.clone(),
            core.gateway.clone(),
            core.outbox.clone(),
        ));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (kill, _) = watch::channel(false);
        let (stopped, _) = watch::channel(false);
        let sink = UpdateSink {
            router: core.router.clone(),
            desk: core.desk.clone(),
            metrics: core.metrics.clone(),
            database: core.database.clone(),
            clock: core.clock.clone(),
            ingress_ready: Arc::new(AtomicBool::new(false)),
        };
        // What a crash left unfinished goes to its sessions before anything new arrives.
        resume_unfinished(&sink).await?;
        let ingress_ready = sink.ingress_ready.clone();
        let webhook_secret = match settings.telegram.mode {
            TelegramMode::Webhook => settings.telegram.webhook_secret.clone(),
            TelegramMode::Polling => SecretString::from(""),
        };
        let state = HttpState {
            database: core.database.clone(),
            metrics: core.metrics.clone(),
            sink: sink.clone(),
            webhook_secret: webhook_secret.clone(),
            telegram_mode: settings.telegram.mode.as_str(),
            admin_token: settings.admin.token.clone(),
            supervisor: core.supervisor.clone(),
            gateway: core.gateway.clone(),
            redis: core.redis.clone(),
            reloader: reloader.clone(),
            storage_probe: Arc::new(http::probe::StorageProbe::new(core.database.clone())),
            scheduler: core.scheduler.clone(),
            catalogue: Arc::new(settings.catalogue()?),
            clock: core.clock.clone(),
            api: http::chat_api::ChatApiState {
                keys: Arc::new(settings.api.keys.clone()),
                chats: core.api_chats.clone(),
                reply_timeout: settings.api.reply_timeout,
                max_message_chars: settings.session.max_message_chars,
            },
        };
        let listener = TcpListener::bind(address)
            .with_context(|| format!("binding http.address {address}"))?;
        let port = listener.local_addr()?.port();
        let workers = match settings.http.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            workers => workers,
        };
        let api_body_limit = settings.api.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(http::routes)
                .configure(http::chat_api_routes(api_body_limit))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(
            settings
                .supervision
                .kind(ActorKind::Session)
                .shutdown_timeout
                .as_secs(),
        )
        .listen(listener)?
        .run();
        let server_handle = server.handle();

        actix_rt::spawn(crate::telegram::register_commands(bot.clone()));
        actix_rt::spawn(prune_inbox(
            core.database.clone(),
            core.clock.clone(),
            settings.log.event_retention,
            shutdown.subscribe(),
        ));
        let ingress = match settings.telegram.mode {
            TelegramMode::Polling => Some(actix_rt::spawn(polling::run(
                bot,
                sink,
                settings.telegram.polling_timeout,
                shutdown_rx,
            ))),
            TelegramMode::Webhook => Some(actix_rt::spawn(crate::telegram::webhook::register(
                bot,
                settings.telegram.webhook_url.clone(),
                webhook_secret,
                sink,
                shutdown_rx,
            ))),
        };
        tracing::info!(
            port,
            mode = settings.telegram.mode.as_str(),
            "vitte is serving"
        );
        Ok(Application {
            port,
            server,
            server_handle,
            core,
            shutdown,
            kill,
            stopped,
            ingress,
            ingress_ready,
            reloader,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn database(&self) -> &Database {
        &self.core.database
    }

    /// The outbox (a test or the benchmark drives a manual pacing clock through it).
    pub fn outbox(&self) -> &OutboxHandle {
        &self.core.outbox
    }

    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            shutdown: self.shutdown.clone(),
            kill: self.kill.clone(),
            stopped: self.stopped.subscribe(),
        }
    }

    /// Serves until SIGTERM/SIGINT or [`AppHandle::stop`], then shuts down gracefully:
    /// not ready at once, the ingress stops, replies in progress finish (up to
    /// `session.shutdown_timeout`), then the HTTP server and the sessions stop. A second
    /// SIGTERM/SIGINT stops at once (an error: the drain was cut short).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (core, shutdown, reloader) = (self.core, self.shutdown, self.reloader);
        let mut shutdown_rx = shutdown.subscribe();
        let mut kill_rx = self.kill.subscribe();
        let server_task = actix_rt::spawn(self.server);
        let mut reload_signals = reload_signals();
        // One future for the whole loop, so a SIGTERM during a reload is not missed.
        let terminated = termination_signal();
        tokio::pin!(terminated);
        loop {
            tokio::select! {
                _ = shutdown_rx.wait_for(|requested| *requested) => break,
                _ = kill_rx.wait_for(|killed| *killed) => {
                    tracing::warn!("killed: stopping at once, nothing finished");
                    core.router.stop();
                    if let Some(ingress) = self.ingress {
                        ingress.abort();
                    }
                    self.server_handle.stop(false).await;
                    server_task.abort();
                    shutdown.send_replace(true);
                    self.stopped.send_replace(true);
                    return Ok(());
                }
                () = &mut terminated => {
                    tracing::info!("termination signal received");
                    break;
                }
                Some(()) = reload_signals.recv() => {
                    // Reading the files blocks: do it off the event loop.
                    let reloading = reloader.clone();
                    let reloaded = tokio::task::spawn_blocking(move || reloading.reload())
                        .await
                        .unwrap_or(Err(ReloadError::Interrupted));
                    match reloaded {
                        Ok(report) if !report.needs_restart.is_empty() => tracing::warn!(
                            keys = ?report.needs_restart,
                            "reloaded; these changed keys take effect only after a restart"
                        ),
                        Ok(_) => {}
                        Err(error) => tracing::error!(%error, "reload on SIGHUP refused; the running settings stay"),
                    }
                }
            }
        }
        tracing::info!("shutting down");
        // Not ready from now on, so Kubernetes stops sending traffic.
        self.ingress_ready.store(false, Ordering::SeqCst);
        shutdown.send_replace(true);
        let server_handle = self.server_handle.clone();
        // The HTTP server stays up while replies finish: /health/ready answers 503 (so
        // Kubernetes sends nothing more), the webhook 503 (so Telegram delivers again later),
        // and Prometheus still sees the drain.
        let drain = async {
            if let Some(ingress) = self.ingress {
                // The ingress task ends on the shutdown signal; a join error means it
                // panicked, which was logged already.
                let _ = ingress.await;
            }
            tracing::debug!("ingress stopped");
            let shutdown_timeout = core.supervisor.policy(ActorKind::Session).shutdown_timeout;
            if !core.router.drain(shutdown_timeout).await {
                tracing::warn!(
                    unfinished = core.router.in_flight(),
                    "shutdown timeout reached with replies in progress"
                );
            }
            server_handle.stop(true).await;
            let _ = server_task.await;
            tracing::debug!("HTTP server stopped");
        };
        // A second SIGTERM (or Ctrl-C) does not wait for the drain: whatever was accepted
        // is in the inbox, and the next start finishes it.
        let cut_short = tokio::select! {
            () = drain => false,
            () = termination_signal() => true,
        };
        core.router.stop();
        self.stopped.send_replace(true);
        if cut_short {
            self.server_handle.stop(false).await;
            tracing::warn!("a second termination signal: stopped without finishing the drain");
            anyhow::bail!(
                "stopped at once by a second termination signal (unfinished replies are \
                 finished after the next start)"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long handled update ids are kept for the duplicate check (Telegram gives up
/// redelivering an update within about a day).
const INBOX_RETENTION: Duration = Duration::from_secs(48 * 3600);
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Once an hour (on `clock`), forgets handled update ids older than the retention, and
/// events older than `event_retention`, until shutdown.
async fn prune_inbox(
    database: Database,
    clock: Arc<dyn Clock>,
    event_retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            () = clock.sleep(PRUNE_INTERVAL) => {}
        }
        match database.prune_inbox(INBOX_RETENTION).await {
            Ok(pruned) => tracing::debug!(pruned, "old update ids forgotten"),
            Err(error) => tracing::warn!(%error, "could not prune old update ids"),
        }
        match database.prune_events(event_retention).await {
            Ok(pruned) => tracing::debug!(pruned, "old events forgotten"),
            Err(error) => tracing::warn!(%error, "could not prune the event log"),
        }
    }
}

/// After a restart: hands every update accepted but not handled to its session again (in
/// the order they came), and activates the sessions of users whose reply a crash cut short
/// (each finishes it, or fails it visibly, as it loads).
async fn resume_unfinished(sink: &UpdateSink) -> anyhow::Result<()> {
    let unhandled = sink
        .database
        .unhandled_updates()
        .await
        .context("reading the updates a restart left unhandled")?;
    for stored in &unhandled {
        match IncomingUpdate::from_value(
            serde_json::from_str(&stored.payload).unwrap_or(serde_json::Value::Null),
        ) {
            Ok(update) => sink.replay(&update, stored.received_at),
            Err(error) => {
                tracing::warn!(%error, update_id = stored.update_id, "a stored update is unreadable");
            }
        }
    }
    let users = sink
        .database
        .users_with_unfinished_replies()
        .await
        .context("finding the replies a restart left unfinished")?;
    for user_id in &users {
        sink.router.activate(*user_id);
    }
    if !unhandled.is_empty() || !users.is_empty() {
        tracing::info!(
            updates = unhandled.len(),
            users = users.len(),
            "resuming what the last run left unfinished"
        );
    }
    Ok(())
}

/// A message per SIGHUP (an operator's "reload"), for as long as the application runs.
fn reload_signals() -> tokio::sync::mpsc::Receiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                actix_rt::spawn(async move {
                    while hangups.recv().await.is_some() {
                        if sender.send(()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP; reload over HTTP only"),
        }
    }
    #[cfg(not(unix))]
    drop(sender);
    receiver
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops vitte");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
