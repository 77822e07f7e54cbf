//! The fault suite: vitte under load while things go wrong, each scenario ending in a
//! verdict. Every scenario demands that no message is lost (each is answered with a reply or
//! a visible notice) and none is answered twice; some demand more (the breaker opened,
//! readiness failed while PostgreSQL was down, RSS stayed flat).
//!
//! A scenario that stops or restarts a server runs its own: a throwaway PostgreSQL cluster
//! (`initdb`/`pg_ctl` on a free port) or a `redis-server` on a free port, never the shared
//! ones other tests use.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::peers::LlmBehaviour;
use crate::report::Report;
use crate::vitte::free_port;
use crate::{Backend, Fault, FaultContext, LoadConfig, Pattern};

/// The scenarios, by name.
pub const FAULTS: &[&str] = &[
    "llm-errors",
    "llm-outage",
    "slow-first-token",
    "stream-cut",
    "postgres-restart",
    "redis-stop",
    "session-panics",
    "duplicate-updates",
    "sigterm",
    "sigkill",
    "cpu-starvation",
    "churn",
];

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub vitte_binary: PathBuf,
    pub repository: PathBuf,
    /// Short runs (for CI), else the full ones of FAULTS.md.
    pub short: bool,
    /// PostgreSQL's programs (`initdb`, `pg_ctl`); found under /usr/lib/postgresql when
    /// `None`.
    pub postgres_bin: Option<PathBuf>,
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub fault: String,
    pub passed: bool,
    /// One line for the report: PASS/FAIL, the counts, and what was checked.
    pub line: String,
    pub report: Report,
}

/// Runs the scenario `name`.
pub async fn run_fault(name: &str, options: &SuiteOptions) -> anyhow::Result<Verdict> {
    let scale = |short: u64, full: u64| if options.short { short } else { full };
    let seconds = |short: u64, full: u64| Duration::from_secs(scale(short, full));
    let steady = LlmBehaviour::steady(4, Duration::from_millis(25));
    let base = |users: usize, messages: u64, llm: LlmBehaviour, backend: Backend| {
        LoadConfig::closed_loop(
            name,
            users,
            messages,
            llm,
            backend,
            options.vitte_binary.clone(),
            options.repository.clone(),
        )
    };
    let mut extra_checks: Vec<Check> = Vec::new();
    let mut cleanup: Option<Server> = None;
    let (config, fault) = match name {
        "llm-errors" => {
            let llm = LlmBehaviour {
                failure_rate: 0.3,
                ..steady
            };
            (base(50, scale(300, 5_000), llm, Backend::Sqlite), None)
        }
        "llm-outage" => {
            let mut config = base(40, scale(400, 6_000), steady, Backend::Sqlite);
            // A quick breaker, so a short outage opens it.
            config.vitte_env = env(&[
                ("VITTE__LLM__BREAKER__MINIMUM_CALLS", "5"),
                ("VITTE__LLM__BREAKER__WINDOW_SIZE", "10"),
                ("VITTE__LLM__BREAKER__OPEN_MS", "1000"),
                ("VITTE__LLM__RETRY__MAX_ATTEMPTS", "1"),
            ]);
            config.pattern = Pattern::ClosedLoop {
                messages: None,
                duration: Some(seconds(12, 90)),
                think: Duration::from_millis(100),
            };
            let outage = seconds(5, 60);
            extra_checks.push(Check::NoteContains("the breaker opened"));
            extra_checks.push(Check::NoteContains("the breaker closed again"));
            (config, Some(llm_outage(outage)))
        }
        "slow-first-token" => {
            let llm = LlmBehaviour {
                first_token_delay: seconds(3, 20),
                ..steady
            };
            (base(40, scale(120, 400), llm, Backend::Sqlite), None)
        }
        "stream-cut" => {
            let llm = LlmBehaviour {
                cut_rate: 0.3,
                chunks: 8,
                ..steady
            };
            (base(40, scale(300, 5_000), llm, Backend::Sqlite), None)
        }
        "postgres-restart" => {
            let server = Server::postgres(options).await?;
            let url = server.url.clone();
            let mut config = base(30, scale(600, 8_000), steady, Backend::Postgres(url));
            config.pattern = Pattern::ClosedLoop {
                messages: None,
                duration: Some(seconds(12, 60)),
                think: Duration::from_millis(20),
            };
            extra_checks.push(Check::NoteContains(
                "readiness failed while PostgreSQL was down",
            ));
            let fault = postgres_restart(server.data_dir.clone(), server.bin.clone());
            cleanup = Some(server);
            (config, Some(fault))
        }
        "redis-stop" => {
            let server = Server::redis().await?;
            let mut config = base(30, scale(600, 8_000), steady, Backend::Sqlite);
            config.vitte_env = env(&[("VITTE__REDIS__URL", &server.url)]);
            config.pattern = Pattern::ClosedLoop {
                messages: None,
                duration: Some(seconds(10, 60)),
                think: Duration::from_millis(20),
            };
            extra_checks.push(Check::NoNotices);
            extra_checks.push(Check::NoteContains("the in-process fallback served"));
            extra_checks.push(Check::NoteContains("Redis was used again"));
            let fault = redis_stop(server.port);
            cleanup = Some(server);
            (config, Some(fault))
        }
        "session-panics" => {
            let mut config = base(60, scale(600, 10_000), steady, Backend::Sqlite);
            let rate = if options.short { "0.05" } else { "0.01" };
            config.vitte_env = env(&[
                ("VITTE_FAULT_SESSION_PANIC_RATE", rate),
                // Panics are the point here: the kind must not escalate and stop the run.
                (
                    "VITTE__SUPERVISION__SESSION__RESTART_INTENSITY__MAX_RESTARTS",
                    "100000",
                ),
            ]);
            extra_checks.push(Check::PanicsMatchApologies);
            (config, Some(observe_panics()))
        }
        "duplicate-updates" => {
            let mut config = base(60, scale(600, 10_000), steady, Backend::Sqlite);
            config.redeliver_rate = 0.3;
            extra_checks.push(Check::NoteContains("redeliveries turned away"));
            (config, Some(count_duplicates_after(seconds(6, 40))))
        }
        "sigterm" => {
            let mut config = base(40, scale(400, 6_000), steady, Backend::Sqlite);
            config.pattern = Pattern::ClosedLoop {
                messages: None,
                duration: Some(seconds(10, 60)),
                think: Duration::from_millis(20),
            };
            extra_checks.push(Check::NoteContains("exited cleanly"));
            (config, Some(signal_and_restart(Signal::Term)))
        }
        "sigkill" => {
            let mut config = base(40, scale(400, 6_000), steady, Backend::Sqlite);
            config.pattern = Pattern::ClosedLoop {
                messages: None,
                duration: Some(seconds(10, 60)),
                think: Duration::from_millis(20),
            };
            (config, Some(signal_and_restart(Signal::Kill)))
        }
        "cpu-starvation" => {
            let mut config = base(2_000, 0, steady, Backend::Sqlite);
            config.pattern = Pattern::FixedRate {
                per_second: if options.short { 200.0 } else { 1_000.0 },
                duration: seconds(5, 30),
            };
            config.reply_timeout = Duration::from_secs(180);
            (config, Some(starve_cpu(3, seconds(6, 35))))
        }
        "churn" => {
            let users = scale(1_500, 1_000_000) as usize;
            let mut config = base(
                users,
                0,
                LlmBehaviour::steady(1, Duration::ZERO),
                Backend::Sqlite,
            );
            config.pattern = Pattern::OneEach { concurrency: 200 };
            config.idle_timeout = Duration::from_secs(2);
            extra_checks.push(Check::FlatRss);
            (config, None)
        }
        other => bail!(
            "no fault scenario {other:?}; the scenarios are {}",
            FAULTS.join(", ")
        ),
    };
    let report = crate::run_with(config, fault).await;
    drop(cleanup);
    let report = report?;
    Ok(judge(name, report, &extra_checks))
}

/// What a scenario checks beyond "nothing lost, nothing twice".
enum Check {
    /// A line the fault observed.
    NoteContains(&'static str),
    /// Every message got the persona's reply (none a notice).
    NoNotices,
    /// vitte's count of session panics equals the apologies users saw.
    PanicsMatchApologies,
    /// RSS at the run's last quarter is within 20 % (or 30 MiB) of its second quarter.
    FlatRss,
}

fn judge(name: &str, report: Report, checks: &[Check]) -> Verdict {
    let mut failures = Vec::new();
    if report.lost > 0 {
        failures.push(format!("{} lost", report.lost));
    }
    if report.duplicated > 0 {
        failures.push(format!("{} answered twice", report.duplicated));
    }
    if report.messages_sent == 0 {
        failures.push("nothing was sent".to_owned());
    }
    for check in checks {
        match check {
            Check::NoteContains(text) => {
                if !report.notes.iter().any(|note| note.contains(text)) {
                    failures.push(format!("not seen: {text}"));
                }
            }
            Check::NoNotices => {
                if report.notices > 0 {
                    failures.push(format!("{} answered with a notice", report.notices));
                }
            }
            Check::PanicsMatchApologies => {
                let apologies: u64 = report
                    .notice_kinds
                    .iter()
                    .filter(|(kind, _)| kind.starts_with("Sorry, something went wrong"))
                    .map(|(_, count)| count)
                    .sum();
                let panics = report
                    .notes
                    .iter()
                    .find_map(|note| note.strip_prefix("session panics counted by vitte: "))
                    .and_then(|count| count.parse::<u64>().ok())
                    .unwrap_or(0);
                if panics == 0 || panics != apologies {
                    failures.push(format!("{panics} panics but {apologies} apologies"));
                }
            }
            Check::FlatRss => {
                let quarters = report.rss_quarters();
                if let [_, second, _, last] = quarters[..] {
                    if last > (second * 1.2).max(second + 30.0) {
                        failures.push(format!("RSS grew from {second:.0} to {last:.0} MiB"));
                    }
                } else {
                    failures.push("too few RSS samples".to_owned());
                }
            }
        }
    }
    let passed = failures.is_empty();
    let mut line = format!(
        "{} {name}: {} sent, {} answered ({} with a notice), {} lost, {} twice, {:.0} s",
        if passed { "PASS" } else { "FAIL" },
        report.messages_sent,
        report.messages_answered,
        report.notices,
        report.lost,
        report.duplicated,
        report.duration_seconds,
    );
    for note in &report.notes {
        line += &format!("; {note}");
    }
    if !passed {
        line += &format!(" — {}", failures.join(", "));
    }
    Verdict {
        fault: name.to_owned(),
        passed,
        line,
        report,
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// Polls `probe` every 100 ms until it holds or `within` passes; returns whether it held.
async fn eventually<F, Fut>(within: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if probe().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const BREAKER: &str = "llm_breaker_state{provider=\"primary\"}";

/// The LLM answers 503 for `outage`, then recovers.
fn llm_outage(outage: Duration) -> Fault {
    Fault {
        after: Duration::from_secs(2),
        inject: Box::new(move |context: FaultContext| {
            Box::pin(async move {
                let mut notes = Vec::new();
                context
                    .switches
                    .llm_down
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let opened = eventually(outage, || async {
                    context.metric(BREAKER).await == Some(2.0)
                })
                .await;
                if opened {
                    notes.push("the breaker opened".to_owned());
                }
                let started = Instant::now();
                tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
                context
                    .switches
                    .llm_down
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                let closed = eventually(Duration::from_secs(30), || async {
                    context.metric(BREAKER).await == Some(0.0)
                })
                .await;
                if closed {
                    notes.push("the breaker closed again".to_owned());
                }
                Ok(notes)
            })
        }),
    }
}

/// PostgreSQL stops for a few seconds mid-load, then starts again.
fn postgres_restart(data_dir: PathBuf, bin: PathBuf) -> Fault {
    Fault {
        after: Duration::from_secs(3),
        inject: Box::new(move |context: FaultContext| {
            Box::pin(async move {
                let mut notes = Vec::new();
                pg_ctl(&bin, &data_dir, &["stop", "-m", "fast", "-w"]).await?;
                let failed = eventually(Duration::from_secs(4), || async {
                    context.ready_status().await == Some(503)
                })
                .await;
                if failed {
                    notes.push("readiness failed while PostgreSQL was down".to_owned());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                pg_ctl(&bin, &data_dir, &["start", "-w", "-l", "/dev/null"]).await?;
                let ready = eventually(Duration::from_secs(30), || async {
                    context.ready_status().await == Some(200)
                })
                .await;
                if ready {
                    notes.push("ready again once it was back".to_owned());
                }
                Ok(notes)
            })
        }),
    }
}

/// Redis stops for a few seconds mid-load, then starts again on the same port.
fn redis_stop(port: u16) -> Fault {
    Fault {
        after: Duration::from_secs(2),
        inject: Box::new(move |context: FaultContext| {
            Box::pin(async move {
                let mut notes = Vec::new();
                let _ = tokio::process::Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "shutdown", "nosave"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
                let fallback = eventually(Duration::from_secs(10), || async {
                    context.metric("redis_fallback_active").await == Some(1.0)
                })
                .await;
                if fallback {
                    notes.push("the in-process fallback served".to_owned());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                start_redis(port).await?;
                let back = eventually(Duration::from_secs(20), || async {
                    context.metric("redis_fallback_active").await == Some(0.0)
                })
                .await;
                if back {
                    notes.push("Redis was used again".to_owned());
                }
                Ok(notes)
            })
        }),
    }
}

/// Reads vitte's panic and restart counts when the load is over.
fn observe_panics() -> Fault {
    Fault {
        after: Duration::ZERO,
        inject: Box::new(move |context: FaultContext| {
            Box::pin(async move {
                // Wait for the load to drain (the tracker's in-flight count falls to zero).
                eventually(Duration::from_secs(600), || async {
                    context
                        .tracker
                        .sent
                        .load(std::sync::atomic::Ordering::SeqCst)
                        > 0
                        && context.tracker.in_flight() == 0
                })
                .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let panics = context
                    .metric("vitte_session_panics_total")
                    .await
                    .unwrap_or(-1.0);
                let restarts = context
                    .metric("vitte_actor_restarts_total{kind=\"session\"}")
                    .await
                    .unwrap_or(-1.0);
                Ok(vec![
                    format!("session panics counted by vitte: {panics}"),
                    format!("session restarts counted by vitte: {restarts}"),
                ])
            })
        }),
    }
}

/// Reads vitte's count of redelivered updates it turned away, after `after`.
fn count_duplicates_after(after: Duration) -> Fault {
    Fault {
        after,
        inject: Box::new(move |context: FaultContext| {
            Box::pin(async move {
                let turned_away = context
                    .metric("telegram_duplicate_updates_total")
                    .await
                    .unwrap_or(0.0);
                Ok(if turned_away > 0.0 {
                    vec![format!("{turned_away} redeliveries turned away")]
                } else {
                    Vec::new()
                })
            })
        }),
    }
}

enum Signal {
    Term,
    Kill,
}

/// vitte gets SIGTERM (drains, exits) or SIGKILL mid-load, and is started again on the
/// same database; Telegram (the poster) keeps delivering meanwhile.
fn signal_and_restart(signal: Signal) -> Fault {
    Fault {
        after: Duration::from_secs(3),
        inject: Box::new(move |context: FaultContext| {
            Box::pin(async move {
                let mut notes = Vec::new();
                {
                    let mut vitte = context.vitte.lock().await;
                    match signal {
                        Signal::Term => {
                            let started = Instant::now();
                            let status = vitte.terminate(Duration::from_secs(40)).await?;
                            if status.success() {
                                notes.push(format!(
                                    "exited cleanly {:.1} s after SIGTERM",
                                    started.elapsed().as_secs_f64()
                                ));
                            } else {
                                notes.push(format!("exited with {status} after SIGTERM"));
                            }
                        }
                        Signal::Kill => {
                            vitte.kill().await?;
                            notes.push("killed".to_owned());
                        }
                    }
                }
                context.restart_vitte().await?;
                let rewritten = context
                    .metric("vitte_recovered_replies_total{outcome=\"rewritten\"}")
                    .await
                    .unwrap_or(0.0);
                let replayed = context
                    .metric("vitte_replayed_updates_total")
                    .await
                    .unwrap_or(0.0);
                notes.push(format!(
                    "restarted: {rewritten} replies rewritten, {replayed} updates replayed so far"
                ));
                Ok(notes)
            })
        }),
    }
}

/// `threads` busy loops in their own processes for `during` (a bounded hog).
fn starve_cpu(threads: usize, during: Duration) -> Fault {
    Fault {
        after: Duration::ZERO,
        inject: Box::new(move |_context: FaultContext| {
            Box::pin(async move {
                let mut hogs = Vec::new();
                for _ in 0..threads {
                    let hog = tokio::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .kill_on_drop(true)
                        .spawn()
                        .context("starting a busy loop")?;
                    hogs.push(hog);
                }
                tokio::time::sleep(during).await;
                for mut hog in hogs {
                    let _ = hog.kill().await;
                }
                Ok(vec![format!(
                    "{threads} busy loops ran for {} s",
                    during.as_secs()
                )])
            })
        }),
    }
}

/// A throwaway server a scenario stops and starts; removed when dropped.
struct Server {
    url: String,
    port: u16,
    data_dir: PathBuf,
    bin: PathBuf,
    kind: ServerKind,
    _temp: tempfile::TempDir,
}

enum ServerKind {
    Postgres,
    Redis,
}

impl Server {
    /// A PostgreSQL cluster of its own (trust auth, a free port, data in a temp dir).
    async fn postgres(options: &SuiteOptions) -> anyhow::Result<Server> {
        let bin = match &options.postgres_bin {
            Some(bin) => bin.clone(),
            None => find_postgres_bin()?,
        };
        let temp = tempfile::tempdir()?;
        let data_dir = temp.path().join("data");
        let port = free_port()?;
        // initdb refuses to run as root: as the postgres user when we are root.
        let as_root = std::env::var("USER").is_ok_and(|user| user == "root") || nix_is_root();
        if as_root {
            std::os::unix::fs::chown(temp.path(), Some(postgres_uid()?), None)
                .context("giving the temp dir to postgres")?;
        }
        run_as_postgres(
            as_root,
            &bin.join("initdb"),
            &[
                "-D",
                &data_dir.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )
        .await?;
        std::fs::write(
            data_dir.join("postgresql.auto.conf"),
            format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
                temp.path().display()
            ),
        )?;
        if as_root {
            std::os::unix::fs::chown(
                data_dir.join("postgresql.auto.conf"),
                Some(postgres_uid()?),
                None,
            )?;
        }
        pg_ctl(&bin, &data_dir, &["start", "-w", "-l", "/dev/null"]).await?;
        Ok(Server {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            data_dir,
            bin,
            kind: ServerKind::Postgres,
            _temp: temp,
        })
    }

    /// A redis-server of its own on a free port, keeping nothing on disk.
    async fn redis() -> anyhow::Result<Server> {
        let port = free_port()?;
        start_redis(port).await?;
        Ok(Server {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            data_dir: PathBuf::new(),
            bin: PathBuf::new(),
            kind: ServerKind::Redis,
            _temp: tempfile::tempdir()?,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match self.kind {
            ServerKind::Postgres => {
                let _ = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "{} {} -D {} stop -m immediate",
                        as_postgres_prefix(),
                        self.bin.join("pg_ctl").display(),
                        self.data_dir.display()
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            ServerKind::Redis => {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

async fn start_redis(port: u16) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
        ])
        .stdout(Stdio::null())
        .status()
        .await
        .context("starting redis-server (is it installed?)")?;
    if !status.success() {
        bail!("redis-server exited with {status}");
    }
    let up = eventually(Duration::from_secs(10), || async {
        tokio::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .stdout(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success())
    })
    .await;
    if !up {
        bail!("redis-server on port {port} did not answer");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn postgres_uid() -> anyhow::Result<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some("postgres"))
                .then(|| fields.nth(1).and_then(|uid| uid.parse().ok()))
                .flatten()
        })
        .context("no postgres user to run a throwaway cluster as")
}

fn as_postgres_prefix() -> &'static str {
    if nix_is_root() {
        "runuser -u postgres --"
    } else {
        ""
    }
}

async fn run_as_postgres(as_root: bool, program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut command = if as_root {
        let mut command = tokio::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        tokio::process::Command::new(program)
    };
    let output = command
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn pg_ctl(bin: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["-D", data_dir.to_str().context("a UTF-8 data dir")?];
    full.extend_from_slice(args);
    run_as_postgres(nix_is_root(), &bin.join("pg_ctl"), &full).await
}

/// The newest PostgreSQL's programs under /usr/lib/postgresql.
fn find_postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's programs (initdb, pg_ctl) are not installed")?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql")
}
