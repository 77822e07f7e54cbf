//! The memory keeper's jobs, recall, and memory as a user meets it in a session, on the
//! in-memory ports.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::handlers::{extract, summarise};
use super::messages::{ExtractJob, SummariseJob};
use super::recall::{MemoryIndex, recall};
use super::testing::{MemoryLedger, WordEmbedder, word_vector};
use super::{KeeperDeps, MemoryDeps, MemoryKeeper};
use crate::domain::memory::{MemorySettings, content_hash, unit};
use crate::domain::prompt::TokenCounter;
use crate::metrics::Metrics;
use crate::ports::memory::{MemoryStore, StoredMemory};
use crate::ports::{
    Completion, CompletionRequest, LanguageModel, LlmError, ManualClock, Purpose, Role,
};
use crate::supervision::{ActorKind, KindPolicy, Supervisor};
use crate::sync::lock;
use crate::testing::{SessionHarness, eventually, pick, text};

const USER: i64 = 7;

/// Answers from a script (then `{"facts": []}`); records requests; with a gate, each
/// answer waits for a permit.
#[derive(Default)]
struct ScriptedLlm {
    answers: Mutex<VecDeque<String>>,
    requests: Mutex<Vec<CompletionRequest>>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl ScriptedLlm {
    fn answering(answers: &[&str]) -> ScriptedLlm {
        ScriptedLlm {
            answers: Mutex::new(answers.iter().map(|a| (*a).to_owned()).collect()),
            ..ScriptedLlm::default()
        }
    }
}

#[async_trait]
impl LanguageModel for ScriptedLlm {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        lock(&self.requests).push(request);
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let text = lock(&self.answers)
            .pop_front()
            .unwrap_or_else(|| r#"{"facts": []}"#.into());
        assert!(text != "PANIC", "a panic injected by the test");
        if text == "RATE_LIMITED" {
            return Err(LlmError::RateLimited {
                retry_in: Duration::from_secs(5),
            });
        }
        Ok(Completion {
            text,
            prompt_tokens: None,
            completion_tokens: None,
            provider: "scripted".into(),
        })
    }
}

struct Bench {
    deps: KeeperDeps,
    llm: Arc<ScriptedLlm>,
    ledger: Arc<MemoryLedger>,
}

fn bench(llm: ScriptedLlm) -> Bench {
    let llm = Arc::new(llm);
    let ledger = Arc::new(MemoryLedger::default());
    let metrics = Metrics::new().expect("metrics");
    let deps = KeeperDeps {
        llm: llm.clone(),
        embedder: Arc::new(WordEmbedder::default()),
        store: ledger.clone(),
        settings: MemorySettings::default(),
        counter: TokenCounter::new(),
        supervisor: Arc::new(Supervisor::new(HashMap::new(), metrics.clone())),
        metrics,
        clock: ManualClock::starting_at(1_000),
    };
    Bench { deps, llm, ledger }
}

fn job(dialog_id: i64, said: &[&str], through: i64) -> ExtractJob {
    ExtractJob {
        user_id: USER,
        dialog_id,
        persona_id: "mira".into(),
        persona_name: "Mira".into(),
        user_name: "Ann".into(),
        messages: said
            .iter()
            .map(|text| (Role::User, (*text).to_owned()))
            .collect(),
        through_message_id: through,
    }
}

fn saved(bench: &Bench, outcome: &str) -> u64 {
    bench
        .deps
        .metrics
        .memory_saved_total
        .with_label_values(&[outcome])
        .get()
}

fn current_texts(bench: &Bench) -> Vec<String> {
    bench
        .ledger
        .rows(USER)
        .into_iter()
        .filter(|row| row.superseded_by.is_none())
        .map(|row| row.memory.text)
        .collect()
}

#[tokio::test]
async fn facts_are_added_duplicates_skipped_near_duplicates_refreshed_contradictions_superseded() {
    let bench = bench(ScriptedLlm::answering(&[
        r#"{"facts": [
            {"text": "Ann lives in Berlin", "category": "identity", "importance": 5},
            {"text": "Ann loves green tea", "category": "preference", "importance": 3}
        ]}"#,
        // The same fact again, worded with other case and punctuation: skipped.
        r#"{"facts": [{"text": "ann LIVES in berlin!", "category": "identity", "importance": 5}]}"#,
        // A near duplicate (same words, other order): refreshes the stored one.
        r#"{"facts": [{"text": "Ann green tea loves", "category": "preference", "importance": 3}]}"#,
        // A contradiction of stored fact 1 (Berlin): supersedes it.
        r#"{"facts": [{"text": "Ann lives in Paris now", "category": "identity", "importance": 5, "replaces": 1}]}"#,
    ]));
    assert!(
        extract(
            &bench.deps,
            &job(1, &["I live in Berlin and love green tea"], 11)
        )
        .await
    );
    assert_eq!(saved(&bench, "added"), 2);
    let berlin = &bench.ledger.rows(USER)[0].memory;
    assert_eq!(berlin.persona_id, None, "identity is the whole user's");
    assert_eq!(berlin.content_hash, content_hash("Ann lives in Berlin"));
    let tea = &bench.ledger.rows(USER)[1].memory;
    assert_eq!(
        tea.persona_id.as_deref(),
        Some("mira"),
        "tastes are the persona's"
    );
    assert_eq!(
        bench.ledger.cursor(1),
        Some(11),
        "the dialog's cursor moved"
    );

    assert!(!extract(&bench.deps, &job(1, &["Berlin, yes"], 12)).await);
    assert_eq!(saved(&bench, "duplicate"), 1);
    assert_eq!(bench.ledger.rows(USER).len(), 2, "nothing added twice");

    bench.deps.clock.now_millis();
    assert!(!extract(&bench.deps, &job(1, &["tea!"], 13)).await);
    assert_eq!(saved(&bench, "refreshed"), 1);
    assert_eq!(bench.ledger.rows(USER).len(), 2);

    // The request listed the stored facts, numbered, so the model could name one.
    assert!(extract(&bench.deps, &job(1, &["I moved to Paris"], 14)).await);
    let request = lock(&bench.llm.requests)
        .last()
        .cloned()
        .expect("a request");
    assert_eq!(request.purpose, Purpose::Memory);
    assert_eq!(request.temperature, Some(0.0), "deterministic");
    assert!(
        !request.is_cacheable(),
        "facts about a user are never cached"
    );
    assert!(
        request.messages[0]
            .content
            .contains("1. Ann lives in Berlin")
    );
    assert_eq!(saved(&bench, "superseded"), 1);
    let rows = bench.ledger.rows(USER);
    assert_eq!(rows.len(), 3, "the old fact is kept as history");
    assert_eq!(rows[0].superseded_by, Some(rows[2].memory.id));
    assert_eq!(
        current_texts(&bench),
        ["Ann loves green tea", "Ann lives in Paris now"]
    );
}

#[tokio::test]
async fn a_malformed_answer_is_asked_again_once_then_skipped_and_counted() {
    let bench = bench(ScriptedLlm::answering(&[
        "Sure! Ann likes tea.",
        r#"{"facts": [{"text": "Ann likes tea", "category": "preference", "importance": 2}]}"#,
        "still not json",
        r#"{"facts": [{"text": "half", "category": "preference"}]}"#,
    ]));
    assert!(extract(&bench.deps, &job(1, &["I like tea"], 5)).await);
    assert_eq!(current_texts(&bench), ["Ann likes tea"]);
    let second_try = lock(&bench.llm.requests)[1].clone();
    assert!(
        second_try
            .messages
            .last()
            .expect("a message")
            .content
            .contains("could not be used"),
        "the model is told what was wrong"
    );

    assert!(!extract(&bench.deps, &job(1, &["and coffee"], 9)).await);
    assert_eq!(lock(&bench.llm.requests).len(), 4, "asked twice, not more");
    assert_eq!(
        current_texts(&bench),
        ["Ann likes tea"],
        "nothing half-read stored"
    );
    let malformed = bench
        .deps
        .metrics
        .memory_extraction_failures_total
        .with_label_values(&["malformed"])
        .get();
    assert_eq!(malformed, 1);
    assert_eq!(
        bench.ledger.cursor(1),
        Some(9),
        "the same messages are not tried forever"
    );
}

#[tokio::test]
async fn a_summary_is_a_deterministic_request_continuing_the_previous_one() {
    let bench = bench(ScriptedLlm::answering(&[
        "Ann and Mira met at the lighthouse.",
    ]));
    let summary = summarise(
        &bench.deps,
        &SummariseJob {
            user_id: USER,
            dialog_id: 3,
            persona_name: "Mira".into(),
            user_name: "Ann".into(),
            previous: Some("A storm broke.".into()),
            messages: vec![(Role::User, "Hello".into()), (Role::Assistant, "Hi".into())],
            through_message_id: 40,
        },
    )
    .await
    .expect("a summary");
    assert_eq!(summary.through_message_id, 40);
    assert!(summary.token_count > 0);
    assert_eq!(bench.ledger.summary(3), Some(summary));
    let request = lock(&bench.llm.requests)[0].clone();
    assert_eq!(
        (request.purpose, request.temperature),
        (Purpose::Summary, Some(0.0))
    );
    assert!(request.messages[0].content.contains("A storm broke."));
    assert_eq!(request.messages[1].content, "Ann: Hello\nMira: Hi");
}

fn stored(id: i64, persona: Option<&str>, text: &str, vector: Vec<f32>) -> StoredMemory {
    StoredMemory {
        id,
        persona_id: persona.map(str::to_owned),
        text: text.into(),
        category: "other".into(),
        importance: 3,
        embedding: unit(vector),
        content_hash: content_hash(text),
        created_at: 0,
        confirmed_at: 0,
    }
}

#[test]
fn names_and_numbers_are_recalled_even_when_embeddings_disagree() {
    let mut x = vec![0.0; 4];
    x[0] = 1.0;
    let mut y = vec![0.0; 4];
    y[1] = 1.0;
    let index = MemoryIndex::new(vec![
        stored(1, None, "Ann's dog is called Rex", x.clone()),
        stored(2, Some("arlo"), "Ann rides the night train", y.clone()),
        stored(3, Some("mira"), "Ann's flat number is 42", x.clone()),
    ]);
    let settings = MemorySettings {
        threshold: 0.2,
        ..MemorySettings::default()
    };
    // The query's vector points away from every memory; its words do not.
    let ranked = index.rank("mira", &y, "Is Rex ok?", &settings);
    let texts: Vec<&str> = ranked.iter().map(|memory| memory.text.as_str()).collect();
    assert_eq!(texts, ["Ann's dog is called Rex"]);
    // Another persona's memory is never in scope, however well it matches.
    let ranked = index.rank("mira", &y, "the night train", &settings);
    assert!(ranked.is_empty(), "arlo's memory stays arlo's");
    let ranked = index.rank("mira", &x, "anything", &settings);
    assert_eq!(ranked.len(), 2, "cosine alone finds the rest");
}

fn memory_deps(
    embedder: Arc<WordEmbedder>,
    ledger: Arc<MemoryLedger>,
    keeper: super::KeeperHandle,
) -> MemoryDeps {
    MemoryDeps {
        keeper,
        embedder,
        store: ledger,
        settings: MemorySettings::default(),
    }
}

fn launch_keeper(bench: &Bench, capacity: usize) -> super::KeeperHandle {
    let metrics = bench.deps.metrics.clone();
    let policy = KindPolicy {
        mailbox_capacity: capacity,
        ..KindPolicy::default()
    };
    MemoryKeeper::launch(KeeperDeps {
        llm: bench.llm.clone(),
        embedder: bench.deps.embedder.clone(),
        store: bench.ledger.clone(),
        settings: MemorySettings::default(),
        counter: TokenCounter::new(),
        supervisor: Arc::new(Supervisor::new(
            HashMap::from([(ActorKind::Memory, policy)]),
            metrics.clone(),
        )),
        metrics,
        clock: ManualClock::starting_at(1_000),
    })
}

#[actix_rt::test]
async fn recall_waits_for_the_embedding_no_longer_than_its_deadline() {
    let bench = bench(ScriptedLlm::default());
    let ledger = bench.ledger.clone();
    let embedder = Arc::new(WordEmbedder::default());
    let mut deps = memory_deps(embedder.clone(), ledger.clone(), launch_keeper(&bench, 10));
    deps.settings.recall_deadline = Duration::from_millis(50);
    ledger
        .add_memory(&crate::ports::memory::NewMemory {
            user_id: USER,
            persona_id: None,
            dialog_id: None,
            text: "Ann's dog is called Rex".into(),
            category: "relationship".into(),
            importance: 4,
            embedding: unit(word_vector("Ann's dog is called Rex")),
            content_hash: content_hash("Ann's dog is called Rex"),
            at: 0,
        })
        .await
        .expect("stored");
    let metrics = &bench.deps.metrics;
    let counter = TokenCounter::new();
    let count = |text: &str| counter.count(text);
    let mut cache = None;
    let found = recall(
        &deps,
        metrics,
        &mut cache,
        USER,
        "mira",
        "how is my dog Rex",
        count,
    )
    .await;
    assert_eq!(found, "- Ann's dog is called Rex");
    assert_eq!(embedder.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    embedder.delay(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let found = recall(
        &deps,
        metrics,
        &mut cache,
        USER,
        "mira",
        "how is Rex",
        count,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait for the embedding"
    );
    assert_eq!(found, "", "the reply goes without memories");
    let skipped = |reason: &str| {
        metrics
            .memory_recall_skipped_total
            .with_label_values(&[reason])
            .get()
    };
    assert_eq!(skipped("deadline"), 1);

    embedder.delay(Duration::ZERO);
    embedder.fail(true);
    let found = recall(&deps, metrics, &mut cache, USER, "mira", "Rex?", count).await;
    assert_eq!(found, "");
    assert_eq!(skipped("embedding_failed"), 1);
}

#[actix_rt::test]
async fn the_keepers_queue_drops_its_oldest_job_when_full_and_forgetting_goes_first() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let bench = bench(ScriptedLlm {
        gate: Some(gate.clone()),
        ..ScriptedLlm::default()
    });
    let keeper = launch_keeper(&bench, 2);
    for (number, said) in ["one", "two", "three", "four"].iter().enumerate() {
        keeper.extract(job(number as i64 + 1, &[said], 1));
    }
    let metrics = bench.deps.metrics.clone();
    eventually("the first job started and the queue overflowed", || {
        lock(&bench.llm.requests).len() == 1 && metrics.memory_jobs_dropped_total.get() == 1
    })
    .await;
    assert_eq!(metrics.memory_queue_depth.get(), 2);
    // Another user's forgetting does not wait behind this user's job in progress.
    assert_eq!(keeper.forget(USER + 1, None).await, Ok(0));
    assert_eq!(
        lock(&bench.llm.requests).len(),
        1,
        "the gate is still closed"
    );
    // Forgetting everything waits only for the job in progress, and drops the user's queue.
    let forgot = {
        let keeper = keeper.clone();
        actix_rt::spawn(async move { keeper.forget(USER, None).await })
    };
    eventually("the forgetting queued in place of the user's jobs", || {
        metrics.memory_queue_depth.get() == 1
    })
    .await;
    gate.add_permits(10);
    assert_eq!(forgot.await.expect("joined"), Ok(0));
    eventually("the queue emptied", || {
        metrics.memory_queue_depth.get() == 0
    })
    .await;
    assert_eq!(
        lock(&bench.llm.requests).len(),
        1,
        "the user's queued jobs went with everything else"
    );
}

#[actix_rt::test]
async fn a_fact_told_to_one_persona_is_recalled_by_another_and_forgotten_on_request() {
    let h = SessionHarness::with_memory();
    *lock(&h.llm.facts) = Some(
        r#"{"facts": [{"text": "User's dog is called Rex", "category": "relationship", "importance": 4}]}"#
            .into(),
    );
    h.handle(pick(USER, "mira")).await;
    for said in ["hi", "my dog Rex", "he is five", "he loves sticks"] {
        h.handle(text(USER, said)).await;
    }
    eventually("the fact stored", || !h.memories.rows(USER).is_empty()).await;
    *lock(&h.llm.facts) = None;

    h.handle(pick(USER, "arlo")).await;
    h.handle(text(USER, "how is my dog Rex")).await;
    let prompt = lock(&h.llm.requests)
        .iter()
        .rev()
        .find(|request| request.purpose == Purpose::Companion)
        .map(|request| request.messages[0].content.clone())
        .expect("a reply's request");
    assert!(
        prompt.contains("What you remember about User7:\n- User's dog is called Rex"),
        "{prompt}"
    );

    h.handle(crate::testing::command(USER, "/memory")).await;
    assert!(
        h.last_text(USER).contains("1. User's dog is called Rex"),
        "{}",
        h.last_text(USER)
    );
    let id = h.memories.rows(USER)[0].memory.id;
    let forget = crate::session::buttons::ButtonData::ForgetMemory {
        memory: id,
        page: 0,
    };
    h.handle(crate::testing::press(USER, &forget.encode()))
        .await;
    assert!(h.memories.rows(USER).is_empty());
    let before = lock(&h.llm.requests).len();
    h.handle(text(USER, "Rex again")).await;
    let prompt = lock(&h.llm.requests)[before..]
        .iter()
        .find(|request| request.purpose == Purpose::Companion)
        .expect("a reply's request")
        .messages[0]
        .content
        .clone();
    assert!(
        !prompt.contains("Rex"),
        "a forgotten fact is never recalled: {prompt}"
    );

    // "Forget everything" takes all the persona may recall, the whole user's facts too.
    *lock(&h.llm.facts) = Some(
        r#"{"facts": [
            {"text": "User7 likes plums", "category": "preference", "importance": 2},
            {"text": "User7 is called Sam", "category": "identity", "importance": 5}
        ]}"#
        .into(),
    );
    for said in ["plums!", "call me Sam", "bye"] {
        h.handle(text(USER, said)).await;
    }
    eventually("two facts stored", || h.memories.rows(USER).len() == 2).await;
    *lock(&h.llm.facts) = None;
    // A stale button, from mira's list, forgets nothing while arlo is active.
    let stale = crate::session::buttons::ButtonData::ForgetAllMemories {
        persona: "mira".into(),
    };
    h.handle(crate::testing::press(USER, &stale.encode())).await;
    assert_eq!(h.memories.rows(USER).len(), 2);
    assert_eq!(h.last_text(USER), "Cancelled.");
    let everything = crate::session::buttons::ButtonData::ForgetAllMemories {
        persona: "arlo".into(),
    };
    h.handle(crate::testing::press(USER, &everything.encode()))
        .await;
    assert!(h.memories.rows(USER).is_empty());
    assert_eq!(
        h.last_text(USER),
        "Forgotten: 2. None of it will come up again."
    );
    h.handle(crate::testing::command(USER, "/memory")).await;
    assert_eq!(
        h.last_text(USER),
        "Arlo does not remember anything about you yet."
    );
    h.router.stop();
}

#[actix_rt::test]
async fn a_dialog_that_goes_idle_hands_its_new_messages_to_the_keeper() {
    let h = SessionHarness::with_memory();
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "I am a pilot")).await;
    let extractions = || {
        lock(&h.llm.requests)
            .iter()
            .filter(|request| request.purpose == Purpose::Memory)
            .count()
    };
    assert_eq!(extractions(), 0, "three messages are not enough yet");
    // The session's idle timeout (15 minutes by default) passes: it passivates.
    h.clock.advance(Duration::from_secs(16 * 60));
    eventually("passivated", || h.metrics.sessions_active.get() == 0).await;
    eventually("the idle dialog's messages extracted", || {
        extractions() == 1
    })
    .await;
    let request = lock(&h.llm.requests)
        .iter()
        .find(|request| request.purpose == Purpose::Memory)
        .cloned()
        .expect("an extraction");
    assert!(request.messages[1].content.contains("User7: I am a pilot"));
    h.router.stop();
}

#[actix_rt::test]
async fn a_panicking_job_is_counted_and_the_keeper_goes_on_with_the_next() {
    let bench = bench(ScriptedLlm::answering(&[
        "PANIC",
        r#"{"facts": [{"text": "Ann sings", "category": "preference", "importance": 2}]}"#,
    ]));
    let keeper = launch_keeper(&bench, 10);
    keeper.extract(job(1, &["first"], 1));
    keeper.extract(job(2, &["I sing"], 2));
    eventually("the second job stored its fact", || {
        !bench.ledger.rows(USER).is_empty()
    })
    .await;
    let restarts = bench
        .deps
        .metrics
        .actor_restarts_total
        .with_label_values(&["memory"])
        .get();
    assert_eq!(restarts, 1);
    assert_eq!(current_texts(&bench), ["Ann sings"]);
}

#[tokio::test(start_paused = true)]
async fn the_keeper_waits_for_its_turn_of_the_rate_limit_instead_of_losing_the_job() {
    let bench = bench(ScriptedLlm::answering(&[
        "RATE_LIMITED",
        "RATE_LIMITED",
        r#"{"facts": [{"text": "Ann rows", "category": "preference", "importance": 2}]}"#,
    ]));
    let started = tokio::time::Instant::now();
    assert!(extract(&bench.deps, &job(1, &["I row every morning"], 3)).await);
    assert_eq!(current_texts(&bench), ["Ann rows"]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "two turns of 5 s waited"
    );
}
