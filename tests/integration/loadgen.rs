//! A small load run in CI: the load generator against the real `vitte` binary, checking that
//! nothing is lost or answered twice (not a speed assertion: speed is in BENCHMARKS.md).

use std::path::PathBuf;
use std::time::Duration;

use vitte_loadgen::peers::LlmBehaviour;
use vitte_loadgen::{Backend, LoadConfig, Pattern};

fn small_run(backend: Backend, failure_rate: f64) -> LoadConfig {
    LoadConfig {
        scenario: "ci".into(),
        users: 25,
        pattern: Pattern::ClosedLoop {
            messages: Some(150),
            duration: None,
            think: Duration::from_millis(5),
        },
        llm: LlmBehaviour {
            failure_rate,
            ..LlmBehaviour::steady(2, Duration::from_millis(5))
        },
        backend,
        vitte_binary: PathBuf::from(env!("CARGO_BIN_EXE_vitte")),
        repository: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        shards: 2,
        http_workers: 2,
        peer_workers: 1,
        idle_timeout: Duration::from_secs(60),
        max_posts: 64,
        reply_timeout: Duration::from_secs(30),
        progress: false,
        vitte_env: Vec::new(),
        memories_per_user: 0,
        embedding_dimensions: 1536,
        redeliver_rate: 0.0,
    }
}

async fn assert_nothing_lost(config: LoadConfig) -> vitte_loadgen::report::Report {
    let report = vitte_loadgen::run(config)
        .await
        .expect("the load run completes");
    assert_eq!(report.messages_sent, 150, "{}", report.render());
    assert_eq!(report.lost, 0, "{}", report.render());
    assert_eq!(report.duplicated, 0, "{}", report.render());
    assert_eq!(report.unexpected_texts, 0, "{}", report.render());
    assert!(report.vitte.peak_rss_mib > 0.0, "resources were read");
    report
}

#[actix_rt::test]
async fn a_small_load_run_loses_and_duplicates_nothing_on_sqlite() {
    // LLM failures are retried by the gateway or answered with a notice: still nothing lost.
    // Replies stream as message drafts (the default), which the generator follows.
    let report = assert_nothing_lost(small_run(Backend::Sqlite, 0.05)).await;
    assert!(
        report.draft_calls >= report.messages_answered - report.notices,
        "every reply opened with a draft: {}",
        report.render()
    );
}

#[actix_rt::test]
#[cfg_attr(skip_postgres_tests, ignore = "DATABASE_URL is not set")]
async fn a_small_load_run_loses_and_duplicates_nothing_on_postgres() {
    let server = crate::support::required_env("DATABASE_URL");
    // Streamed by edits here, which the generator follows too.
    let mut config = small_run(Backend::Postgres(server), 0.0);
    config.vitte_env = vec![("VITTE__STREAMING__MODE".into(), "edit".into())];
    let report = assert_nothing_lost(config).await;
    assert_eq!(report.draft_calls, 0, "{}", report.render());
    assert_eq!(
        report.notices,
        0,
        "every message got the persona's reply: {}",
        report.render()
    );
}
