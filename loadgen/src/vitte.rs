//! The `vitte serve` process under test: started with its peers' addresses, watched through
//! `/proc`, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Clock ticks per second of /proc/<pid>/stat CPU times (Linux's USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// How to run vitte for a load test.
#[derive(Debug, Clone)]
pub struct VitteOptions {
    pub binary: PathBuf,
    /// The repository (for `config/` and `personas/`).
    pub repository: PathBuf,
    pub database_url: String,
    pub shards: usize,
    pub http_workers: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// The HTTP port (kept across restarts, so the webhook's address does not change).
    pub port: u16,
    /// More environment for vitte (a fault scenario's settings).
    pub extra_env: Vec<(String, String)>,
}

pub const WEBHOOK_SECRET: &str = "load-secret";

pub struct VitteProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub url: String,
}

/// A free local TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl VitteProcess {
    /// Starts `vitte serve` in webhook mode against `peers` (Telegram and LLM).
    pub async fn spawn(options: &VitteOptions, peers: &str) -> anyhow::Result<VitteProcess> {
        if !options.binary.is_file() {
            bail!(
                "no vitte binary at {} (build it with `cargo build --release`)",
                options.binary.display()
            );
        }
        let port = options.port;
        let env: Vec<(&str, String)> = vec![
            (
                "VITTE_CONFIG_DIR",
                options.repository.join("config").display().to_string(),
            ),
            ("VITTE_ENV", "local".into()),
            (
                "VITTE__PERSONAS__DIR",
                options.repository.join("personas").display().to_string(),
            ),
            (
                "VITTE__PAYMENTS__CATALOGUE",
                options
                    .repository
                    .join("config/catalogue.toml")
                    .display()
                    .to_string(),
            ),
            // Load users write far more than a free tier's day: the limit is not measured.
            ("VITTE__LIMITS__FREE_DAILY_MESSAGES", "1000000".into()),
            ("VITTE__LIMITS__PAID_DAILY_MESSAGES", "1000000".into()),
            // Memory is measured by its own scenario (which turns it on).
            ("VITTE__MEMORY__ENABLED", "false".into()),
            ("VITTE__TELEGRAM__TOKEN", "123456:LOAD".into()),
            ("VITTE__TELEGRAM__API_URL", peers.into()),
            ("VITTE__TELEGRAM__MODE", "webhook".into()),
            (
                "VITTE__TELEGRAM__WEBHOOK_URL",
                "https://load.example.org/telegram/webhook".into(),
            ),
            ("VITTE__TELEGRAM__WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            ("VITTE__LLM__BASE_URL", peers.into()),
            ("VITTE__LLM__API_KEY", "sk-load".into()),
            ("VITTE__LLM__REQUEST_TIMEOUT", "300s".into()),
            // The generator measures vitte, not its protective limits.
            ("VITTE__LLM__RATE_LIMIT__PER_MINUTE", "100000000".into()),
            ("VITTE__LLM__RATE_LIMIT__BURST", "1000000".into()),
            (
                "VITTE__LLM__USER_RATE_LIMIT__PER_MINUTE",
                "100000000".into(),
            ),
            ("VITTE__LLM__USER_RATE_LIMIT__BURST", "1000000".into()),
            (
                "VITTE__MEMORY__LLM_RATE_LIMIT__PER_MINUTE",
                "100000000".into(),
            ),
            ("VITTE__MEMORY__LLM_RATE_LIMIT__BURST", "1000000".into()),
            (
                "VITTE__MEMORY__EMBEDDINGS__RATE_LIMIT__PER_MINUTE",
                "100000000".into(),
            ),
            (
                "VITTE__MEMORY__EMBEDDINGS__RATE_LIMIT__BURST",
                "1000000".into(),
            ),
            // The fake Bot API has no flood control: Telegram's limits in the outbox would
            // measure Telegram (30 messages a second), not vitte. `vitte simulate-broadcast`
            // measures the outbox under them.
            ("VITTE__OUTBOX__GLOBAL_PER_SECOND", "100000000".into()),
            ("VITTE__OUTBOX__PRIVATE_BURST", "100000000".into()),
            ("VITTE__OUTBOX__GROUP_PER_MINUTE", "100000000".into()),
            ("VITTE__OUTBOX__CAPACITY", "10000000".into()),
            // No quiet hours: a run at night must not hold notices back.
            ("VITTE__NOTIFICATIONS__QUIET_END", "23".into()),
            ("VITTE__DATABASE__URL", options.database_url.clone()),
            (
                "VITTE__DATABASE__MAX_CONNECTIONS",
                options.max_connections.to_string(),
            ),
            ("VITTE__HTTP__ADDRESS", format!("127.0.0.1:{port}")),
            ("VITTE__HTTP__WORKERS", options.http_workers.to_string()),
            ("VITTE__SESSION__SHARDS", options.shards.to_string()),
            (
                "VITTE__SUPERVISION__SESSION__IDLE_TIMEOUT",
                humantime::format_duration(options.idle_timeout).to_string(),
            ),
            // LOADGEN_VITTE_LOG (RUST_LOG syntax) looks deeper, e.g.
            // "warn,vitte_actors::gateway=debug" to see what the gateway retried.
            (
                "VITTE__LOG__LEVEL",
                std::env::var("LOADGEN_VITTE_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ];
        // vitte's own log (and panic messages) only when asked for: LOADGEN_VITTE_LOG.
        let stderr = if std::env::var_os("LOADGEN_VITTE_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        // Raise the open-files limit for the many connections a large run holds.
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(r#"ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" serve"#)
            .arg(&options.binary)
            .envs(env)
            .envs(options.extra_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command.spawn().context("starting vitte")?;
        let pid = child.id().context("vitte has no pid")?;
        Ok(VitteProcess {
            child,
            pid,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Waits for /health/ready.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("vitte exited during start-up: {status} (LOADGEN_VITTE_LOG=warn shows why)");
            }
            if let Ok(response) = client
                .get(format!("{}/health/ready", self.url))
                .send()
                .await
            {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("vitte was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Current resident memory in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        proc_status_kib(self.pid, "VmRSS:").map(|kib| kib / 1024.0)
    }

    /// Peak resident memory (high-water mark) in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        proc_status_kib(self.pid, "VmHWM:").map(|kib| kib / 1024.0)
    }

    /// User plus system CPU seconds so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&Path::new("/proc").join(self.pid.to_string()).join("stat"))
    }

    /// SIGKILL: stops at once, nothing finished.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing vitte")
    }

    /// SIGTERM, then a wait for the exit (killed after `timeout`, and an error).
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!("vitte did not stop within {timeout:?} of SIGTERM")
            }
        }
    }

    /// SIGTERM, then a wait for a graceful exit (killed after `timeout`).
    pub async fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("vitte did not stop within {timeout:?} of SIGTERM")
            }
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// utime + stime of a /proc/<pid>/stat file, in seconds.
pub fn cpu_seconds_of(stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    parse_cpu_seconds(&text)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces, so split after its ')').
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_seconds;

    #[test]
    fn cpu_seconds_come_from_utime_and_stime() {
        let stat = "1234 (vitte serve) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    }
}
