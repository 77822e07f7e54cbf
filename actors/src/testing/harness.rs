//! The sessions' test bench: a session router on the in-memory ports, with a manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{EchoLlm, MemoryStore, RecordingMessenger, eventually};
use crate::domain::catalogue::{Catalogue, TEST_CATALOGUE};
use crate::domain::entitlement::Limits;
use crate::domain::event::Inbound;
use crate::domain::memory::MemorySettings;
use crate::domain::persona::{Persona, PersonaCatalog};
use crate::domain::prompt::{PromptBuilder, TokenBudget, TokenCounter};
use crate::domain::safety::SafetyPolicy;
use crate::memory::testing::{MemoryLedger, WordEmbedder};
use crate::memory::{KeeperDeps, MemoryDeps, MemoryKeeper};
use crate::metrics::Metrics;
use crate::payments::testing::{MemoryPaymentStore, RecordingPaymentsApi};
use crate::payments::{Commerce, DeskDeps, DeskHandle, PayloadSigner, PaymentDesk};
use crate::ports::*;
use crate::resilience::backoff::BackoffSettings;
use crate::scheduler::testing::{JobBook, RecordingNotifier};
use crate::scheduler::{NotificationDeps, SchedulerSettings};
use crate::session::{SessionDeps, SessionRouter, SessionSettings};
use crate::supervision::{ActorKind, KindPolicy, Supervisor};

/// A session router on the in-memory ports, with a manual clock: the sessions' test bench.
pub struct SessionHarness {
    pub router: SessionRouter,
    pub payments: Arc<MemoryPaymentStore>,
    pub payments_api: Arc<RecordingPaymentsApi>,
    pub desk: DeskHandle,
    limits: Limits,
    pub messenger: Arc<RecordingMessenger>,
    pub llm: Arc<EchoLlm>,
    pub store: Arc<MemoryStore>,
    pub metrics: Metrics,
    pub clock: Arc<ManualClock>,
    /// Long-term memory's store (memory is off unless the harness was made
    /// [`SessionHarness::with_memory`]).
    pub memories: Arc<MemoryLedger>,
    /// The scheduler's storage (notification settings) and what sessions asked of it.
    pub jobs: Arc<JobBook>,
    pub notifier: Arc<RecordingNotifier>,
    settings: SessionSettings,
    policy: KindPolicy,
}

/// `policy` with a short restart backoff.
fn supervised_policy(policy: &KindPolicy) -> KindPolicy {
    KindPolicy {
        backoff: BackoffSettings {
            min_ms: 10,
            max_ms: 50,
            jitter: 0.0,
            reset_after_ms: 1_000,
        },
        ..policy.clone()
    }
}

/// Test personas: each with one story, `first`, whose opening greets the user.
const TEST_PERSONAS: [(&str, &str, &str); 4] = [
    ("mira", "Mira", "Keeps a lighthouse."),
    ("arlo", "Arlo", "Runs a night train."),
    ("nova", "Nova", "Maps the stars."),
    ("kai", "Kai", "Carves boats."),
];

impl SessionHarness {
    /// Sessions with `settings`, answered by `llm`, supervised by `policy` (with a short
    /// restart backoff).
    pub fn new(settings: SessionSettings, llm: EchoLlm, policy: KindPolicy) -> SessionHarness {
        let clock = ManualClock::starting_at(1_700_000_000_000);
        let ports = (
            Arc::new(RecordingMessenger::default()),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        );
        SessionHarness::start(settings, Arc::new(llm), policy, Limits::default(), ports)
    }

    /// The standard harness with `limits` (a small free tier, say).
    pub fn with_limits(limits: Limits) -> SessionHarness {
        let clock = ManualClock::starting_at(1_700_000_000_000);
        let ports = (
            Arc::new(RecordingMessenger::default()),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        );
        let llm = Arc::new(EchoLlm::default());
        SessionHarness::start(
            SessionSettings::default(),
            llm,
            KindPolicy::default(),
            limits,
            ports,
        )
    }

    /// The standard harness with long-term memory on.
    pub fn with_memory() -> SessionHarness {
        let clock = ManualClock::starting_at(1_700_000_000_000);
        let ports = (
            Arc::new(RecordingMessenger::default()),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        );
        SessionHarness::start_with(
            SessionSettings::default(),
            Arc::new(EchoLlm::default()),
            KindPolicy::default(),
            Limits::default(),
            ports,
            MemorySettings::default(),
        )
    }

    fn start(
        settings: SessionSettings,
        llm: Arc<EchoLlm>,
        policy: KindPolicy,
        limits: Limits,
        ports: (Arc<RecordingMessenger>, Arc<MemoryStore>, Arc<ManualClock>),
    ) -> SessionHarness {
        let memory_off = MemorySettings {
            enabled: false,
            ..MemorySettings::default()
        };
        SessionHarness::start_with(settings, llm, policy, limits, ports, memory_off)
    }

    fn start_with(
        settings: SessionSettings,
        llm: Arc<EchoLlm>,
        policy: KindPolicy,
        limits: Limits,
        (messenger, store, clock): (Arc<RecordingMessenger>, Arc<MemoryStore>, Arc<ManualClock>),
        memory_settings: MemorySettings,
    ) -> SessionHarness {
        let metrics = Metrics::new().expect("metrics");
        let sessions_store = store.clone();
        let payments = Arc::new(MemoryPaymentStore::counting_replies(
            clock.clone(),
            Box::new(move |user, since| sessions_store.replies_since(user, since)),
        ));
        let payments_api = Arc::new(RecordingPaymentsApi::default());
        let supervisor = Arc::new(Supervisor::new(
            HashMap::from([
                (ActorKind::Session, supervised_policy(&policy)),
                (
                    ActorKind::Payments,
                    supervised_policy(&KindPolicy::default()),
                ),
                (ActorKind::Memory, supervised_policy(&KindPolicy::default())),
            ]),
            metrics.clone(),
        ));
        let commerce = Commerce {
            catalogue: Arc::new(
                Catalogue::parse("catalogue.toml", TEST_CATALOGUE).expect("catalogue"),
            ),
            limits: limits.clone(),
            signer: PayloadSigner::new(b"test"),
            api: payments_api.clone(),
            store: payments.clone(),
        };
        let jobs = Arc::new(JobBook::default());
        let notifier = Arc::new(RecordingNotifier::default());
        let events = Arc::new(super::MemoryEvents::default());
        let desk = PaymentDesk::launch(DeskDeps {
            commerce: commerce.clone(),
            messenger: messenger.clone(),
            notifier: notifier.clone(),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
            sweep_every: Duration::from_secs(60),
            events: events.clone(),
        });
        let memories = Arc::new(MemoryLedger::default());
        let embedder = Arc::new(WordEmbedder::default());
        let keeper = MemoryKeeper::launch(KeeperDeps {
            llm: llm.clone(),
            embedder: embedder.clone(),
            store: memories.clone(),
            settings: memory_settings.clone(),
            counter: TokenCounter::new(),
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            clock: clock.clone(),
        });
        let safety = Arc::new(
            SafetyPolicy::parse("safety.toml", crate::domain::safety::TEST_POLICY).expect("policy"),
        );
        let personas = TEST_PERSONAS
            .iter()
            .map(|(id, name, description)| {
                let file = format!(
                    "name = \"{name}\"\ndescription = \"{description}\"\nfirst_mes = \"Hi\"\n\
                     [[stories]]\nid = \"first\"\ntitle = \"First\"\npremise = \"A storm.\"\n\
                     opening_message = \"Hi {{{{user}}}}\"\n"
                );
                Persona::parse(std::path::Path::new(&format!("{id}.toml")), &file).expect("persona")
            })
            .collect();
        let deps = SessionDeps {
            messenger: messenger.clone(),
            llm: llm.clone(),
            store: store.clone(),
            personas: Arc::new(PersonaCatalog::new(personas)),
            prompts: PromptBuilder::new(
                TokenCounter::new(),
                TokenBudget {
                    context_tokens: 4000,
                    reply_tokens: 500,
                },
                Arc::new(safety.prompt().clone()),
            ),
            safety,
            metrics: metrics.clone(),
            supervisor,
            settings: settings.clone(),
            drafts: crate::session::DraftSupport::default(),
            events: events.clone(),
            clock: clock.clone(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            commerce,
            desk: desk.clone(),
            memory: MemoryDeps {
                keeper: keeper.clone(),
                embedder: embedder.clone(),
                store: memories.clone(),
                settings: memory_settings,
            },
            notifications: NotificationDeps {
                notifier: notifier.clone(),
                store: jobs.clone(),
                // A milestone at the second persona message, so a test reaches one quickly.
                settings: SchedulerSettings {
                    milestones: vec![2, 100],
                    ..SchedulerSettings::default()
                },
            },
        };
        let router = SessionRouter::start(1, deps);
        desk.listen(Arc::new(router.clone()));
        keeper.listen(Arc::new(router.clone()));
        SessionHarness {
            router,
            payments,
            payments_api,
            desk,
            limits,
            messenger,
            llm,
            store,
            metrics,
            clock,
            memories,
            jobs,
            notifier,
            settings,
            policy,
        }
    }

    /// Stops every session at once (as a crash would: replies in progress end where they
    /// are), then starts anew on the same storage, chat and clock, answered by `llm`.
    pub fn crash_and_restart(self, llm: EchoLlm) -> SessionHarness {
        self.router.stop();
        let ports = (self.messenger, self.store, self.clock);
        SessionHarness::start(
            self.settings,
            Arc::new(llm),
            self.policy,
            self.limits,
            ports,
        )
    }

    /// The default settings and policy, and an LLM that echoes at once.
    pub fn standard() -> SessionHarness {
        SessionHarness::new(
            SessionSettings::default(),
            EchoLlm::default(),
            KindPolicy::default(),
        )
    }

    /// Routes `event` and waits until the session has finished it (and every event before).
    pub async fn handle(&self, event: Inbound) {
        self.router.route(event);
        eventually("the event handled", || self.router.in_flight() == 0).await;
    }

    /// The last message the chat shows.
    pub fn last_text(&self, chat: ChatId) -> String {
        self.messenger.texts_to(chat).pop().unwrap_or_default()
    }

    /// The `callback_data` of the buttons of the chat's last message, row by row.
    pub fn last_buttons(&self, chat: ChatId) -> Vec<String> {
        self.last_keyboard(chat)
            .into_iter()
            .map(|button| button.data)
            .collect()
    }

    /// The labels of the buttons of the chat's last message, row by row.
    pub fn last_labels(&self, chat: ChatId) -> Vec<String> {
        self.last_keyboard(chat)
            .into_iter()
            .map(|button| button.label)
            .collect()
    }

    fn last_keyboard(&self, chat: ChatId) -> Vec<Button> {
        self.messenger
            .messages_to(chat)
            .pop()
            .and_then(|message| message.keyboard)
            .map(|keyboard| keyboard.rows.into_iter().flatten().collect())
            .unwrap_or_default()
    }
}
