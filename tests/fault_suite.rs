//! The fault suite's short runs (see `loadgen --scenario faults` and FAULTS.md): the real
//! `vitte` binary (a test build, so its fault hooks are in) under load while things go wrong,
//! each scenario with a verdict. Its own test binary, so it runs alone: one scenario starves
//! the CPU on purpose, and the scenarios take turns.

use std::path::PathBuf;
use std::sync::Mutex;

use vitte_loadgen::faults::{SuiteOptions, run_fault};

/// The scenarios take turns (they measure the machine).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn options() -> SuiteOptions {
    SuiteOptions {
        vitte_binary: PathBuf::from(env!("CARGO_BIN_EXE_vitte")),
        repository: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        short: true,
        postgres_bin: None,
    }
}

/// Runs the scenarios in turn, prints a verdict line each, and fails naming the failed ones.
fn run(names: &[&str]) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    let mut failed = Vec::new();
    for name in names {
        let verdict = system
            .block_on(run_fault(name, &options()))
            .unwrap_or_else(|error| panic!("{name} could not run: {error:#}"));
        eprintln!("{}", verdict.line);
        if !verdict.passed {
            eprint!("{}", verdict.report.render());
            failed.push(verdict.line);
        }
    }
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

#[test]
fn faults_of_the_llm_telegram_the_process_and_the_machine_lose_and_double_nothing() {
    run(&[
        "llm-errors",
        "llm-outage",
        "slow-first-token",
        "stream-cut",
        "session-panics",
        "duplicate-updates",
        "sigterm",
        "sigkill",
        "cpu-starvation",
        "churn",
    ]);
}

#[test]
#[cfg_attr(
    skip_postgres_tests,
    ignore = "DATABASE_URL is not set (PostgreSQL is not set up)"
)]
fn a_postgresql_restart_mid_load_loses_nothing() {
    run(&["postgres-restart"]);
}

#[test]
#[cfg_attr(
    skip_redis_tests,
    ignore = "REDIS_URL is not set (Redis is not set up)"
)]
fn redis_going_away_mid_load_fails_no_message() {
    run(&["redis-stop"]);
}
