//! `loadgen`: one command per scenario, e.g. `loadgen --scenario throughput`; see `--help` and
//! BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use vitte_loadgen::peers::LlmBehaviour;
use vitte_loadgen::{Backend, LoadConfig, Pattern};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// 10 000 users, the LLM answers at once: the most messages per second.
    Throughput,
    /// 100 000 users, each reply taking ~10 s (20 chunks): the most replies in flight.
    Concurrency,
    /// 1 000 000 distinct users with one message each, short idle timeout: flat RSS.
    Churn,
    /// A fixed 1 000 messages/s: runtime overhead at p99.
    Latency,
    /// The fault suite (see `--faults`, `--short`): a verdict per scenario.
    Faults,
    /// 200 users with 300 long-term memories each, 10 messages each: recall's CPU time per
    /// message and RSS per active session with memories.
    Memory,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Database {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for vitte (runs `vitte serve` against fake Telegram and LLM peers)"
)]
struct Cli {
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Database,
    /// PostgreSQL server for --database postgres (a fresh database is created and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The vitte binary to run.
    #[arg(long, default_value = "target/release/vitte")]
    vitte: PathBuf,
    /// The repository (its config/ and personas/ are used).
    #[arg(long, default_value = ".")]
    repository: PathBuf,
    /// Overrides of the scenario's defaults.
    #[arg(long)]
    users: Option<usize>,
    #[arg(long)]
    messages: Option<u64>,
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration)]
    think_time: Option<Duration>,
    /// Messages per second (latency scenario).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long)]
    llm_chunks: Option<u32>,
    #[arg(long, value_parser = humantime::parse_duration)]
    llm_chunk_delay: Option<Duration>,
    #[arg(long, default_value_t = 0.0)]
    llm_failure_rate: f64,
    /// vitte's session shards and HTTP workers (0 = one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    #[arg(long, default_value_t = 0)]
    http_workers: usize,
    /// Worker threads of the fake Telegram/LLM server.
    #[arg(long, default_value_t = 1)]
    peer_workers: usize,
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Users in flight at once in the churn scenario.
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Webhook POSTs in flight at once.
    #[arg(long, default_value_t = 512)]
    max_posts: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    reply_timeout: Duration,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The fault scenarios to run (comma-separated; all when absent).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Short fault runs (as CI runs them).
    #[arg(long)]
    short: bool,
    /// Long-term memories per user (memory scenario).
    #[arg(long)]
    memories: Option<usize>,
    /// Length of the memories' vectors (memory scenario; vitte asks the embeddings for it).
    #[arg(long, default_value_t = 1536)]
    dimensions: usize,
    /// Share of updates delivered twice (a redelivery after newer ones).
    #[arg(long, default_value_t = 0.0)]
    redeliver_rate: f64,
    #[arg(long)]
    no_progress: bool,
    /// How vitte streams replies (its `streaming.mode`): message drafts or edits.
    #[arg(long, value_enum, default_value = "auto")]
    streaming: Streaming,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Streaming {
    Auto,
    Draft,
    Edit,
}

impl Streaming {
    fn as_str(self) -> &'static str {
        match self {
            Streaming::Auto => "auto",
            Streaming::Draft => "draft",
            Streaming::Edit => "edit",
        }
    }
}

fn config(cli: &Cli) -> LoadConfig {
    let chunks = cli.llm_chunks;
    let delay = cli.llm_chunk_delay;
    let (scenario, users, pattern, llm, idle) = match cli.scenario {
        Scenario::Throughput => (
            "throughput",
            cli.users.unwrap_or(10_000),
            Pattern::ClosedLoop {
                messages: Some(cli.messages.unwrap_or(100_000)),
                duration: cli.duration,
                think: cli.think_time.unwrap_or(Duration::ZERO),
            },
            (chunks.unwrap_or(1), delay.unwrap_or(Duration::ZERO)),
            Duration::from_secs(900),
        ),
        Scenario::Concurrency => {
            let users = cli.users.unwrap_or(100_000);
            (
                "concurrency",
                users,
                Pattern::ClosedLoop {
                    messages: Some(cli.messages.unwrap_or(users as u64)),
                    duration: cli.duration,
                    think: cli.think_time.unwrap_or(Duration::ZERO),
                },
                (
                    chunks.unwrap_or(20),
                    delay.unwrap_or(Duration::from_millis(500)),
                ),
                Duration::from_secs(900),
            )
        }
        Scenario::Churn => (
            "churn",
            cli.users.unwrap_or(1_000_000),
            Pattern::OneEach {
                concurrency: cli.concurrency,
            },
            (chunks.unwrap_or(1), delay.unwrap_or(Duration::ZERO)),
            Duration::from_secs(2),
        ),
        Scenario::Memory => {
            let users = cli.users.unwrap_or(200);
            (
                "memory",
                users,
                Pattern::ClosedLoop {
                    messages: Some(cli.messages.unwrap_or(users as u64 * 10)),
                    duration: cli.duration,
                    think: cli.think_time.unwrap_or(Duration::ZERO),
                },
                (chunks.unwrap_or(1), delay.unwrap_or(Duration::ZERO)),
                Duration::from_secs(900),
            )
        }
        Scenario::Latency | Scenario::Faults => (
            "latency",
            cli.users.unwrap_or(2_000),
            Pattern::FixedRate {
                per_second: cli.rate.unwrap_or(1_000.0),
                duration: cli.duration.unwrap_or(Duration::from_secs(60)),
            },
            (chunks.unwrap_or(1), delay.unwrap_or(Duration::ZERO)),
            Duration::from_secs(900),
        ),
    };
    LoadConfig {
        scenario: scenario.into(),
        users,
        pattern,
        llm: LlmBehaviour {
            failure_rate: cli.llm_failure_rate,
            ..LlmBehaviour::steady(llm.0, llm.1)
        },
        backend: match cli.database {
            Database::Sqlite => Backend::Sqlite,
            Database::Postgres => Backend::Postgres(cli.postgres_url.clone()),
        },
        vitte_binary: cli.vitte.clone(),
        repository: cli.repository.clone(),
        shards: cli.shards,
        http_workers: cli.http_workers,
        peer_workers: cli.peer_workers,
        idle_timeout: cli.idle_timeout.unwrap_or(idle),
        max_posts: cli.max_posts,
        reply_timeout: cli.reply_timeout,
        progress: !cli.no_progress,
        vitte_env: {
            let mut env = vec![(
                "VITTE__STREAMING__MODE".to_owned(),
                cli.streaming.as_str().to_owned(),
            )];
            if let Scenario::Memory = cli.scenario {
                env.push(("VITTE__MEMORY__ENABLED".into(), "true".into()));
                env.push((
                    "VITTE__MEMORY__EMBEDDINGS__DIMENSIONS".into(),
                    cli.dimensions.to_string(),
                ));
            }
            env
        },
        redeliver_rate: cli.redeliver_rate,
        memories_per_user: match cli.scenario {
            Scenario::Memory => cli.memories.unwrap_or(300),
            _ => 0,
        },
        embedding_dimensions: cli.dimensions,
    }
}

/// Runs the fault scenarios, printing a verdict line each; fails if any failed.
async fn run_faults(cli: &Cli) -> anyhow::Result<()> {
    let options = vitte_loadgen::faults::SuiteOptions {
        vitte_binary: cli.vitte.clone(),
        repository: cli.repository.clone(),
        short: cli.short,
        postgres_bin: None,
    };
    let names: Vec<String> = if cli.faults.is_empty() {
        vitte_loadgen::faults::FAULTS
            .iter()
            .map(|name| (*name).to_owned())
            .collect()
    } else {
        cli.faults.clone()
    };
    let mut verdicts = Vec::new();
    for name in &names {
        let verdict = vitte_loadgen::faults::run_fault(name, &options).await?;
        println!("{}", verdict.line);
        if !verdict.passed {
            print!("{}", verdict.report.render());
        }
        verdicts.push(verdict);
    }
    if let Some(path) = &cli.json {
        let reports: Vec<_> = verdicts
            .iter()
            .map(|verdict| (verdict.fault.clone(), verdict.passed, &verdict.report))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|verdict| !verdict.passed)
        .map(|verdict| verdict.fault.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            // Without a runtime nothing can run; this fails only if the OS refuses threads.
            .expect("a tokio runtime")
    });
    if matches!(cli.scenario, Scenario::Faults) {
        return system.block_on(run_faults(&cli));
    }
    let config = config(&cli);
    let report = system.block_on(vitte_loadgen::run(config))?;
    print!("{}", report.render());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.lost > 0 || report.duplicated > 0 {
        anyhow::bail!(
            "{} lost and {} duplicated replies",
            report.lost,
            report.duplicated
        );
    }
    Ok(())
}
