//! The memory scenario's parts: memories written straight into vitte's database before the
//! load (hundreds per user: extraction would take hours to make them), and recall's figures
//! read back from vitte's `/metrics`.

use std::time::Duration;

use anyhow::Context;
use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 50;

/// A random unit vector of `dimensions`, as hex of little-endian `f32`s (how vitte stores
/// vectors).
fn random_vector_hex(dimensions: usize) -> String {
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| fastrand::f32() * 2.0 - 1.0)
        .collect();
    let norm = vector
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    for x in &mut vector {
        *x /= norm;
    }
    vector
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The INSERT statements that give each of `user_ids` `per_user` memories (the whole user's,
/// so every persona recalls them). `postgres` picks the bytea literal's syntax.
fn statements(user_ids: &[i64], shape: Shape, postgres: bool) -> Vec<String> {
    let rows: Vec<String> = user_ids
        .iter()
        .flat_map(|user| (0..shape.per_user).map(move |k| (*user, k)))
        .map(|(user, k)| {
            let hex = random_vector_hex(shape.dimensions);
            let vector = if postgres {
                format!("'\\x{hex}'::bytea")
            } else {
                format!("X'{hex}'")
            };
            format!(
                "({user}, NULL, NULL, 'Load fact {k}: the ship number {k} sails at {hour} o''clock', \
                 'identity', 3, {vector}, 'seed-{user}-{k}', 0, 0)",
                hour = k % 24
            )
        })
        .collect();
    rows.chunks(ROWS_PER_STATEMENT)
        .map(|chunk| {
            format!(
                "INSERT INTO memories (user_id, persona_id, dialog_id, text, category, \
                 importance, embedding, content_hash, created_at, confirmed_at) VALUES {};",
                chunk.join(",")
            )
        })
        .collect()
}

/// How many memories each user gets, and how long their vectors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub per_user: usize,
    pub dimensions: usize,
}

/// Writes `shape.per_user` memories for each of `user_ids` into vitte's database (migrated
/// already: vitte is running).
pub async fn seed(database_url: &str, user_ids: &[i64], shape: Shape) -> anyhow::Result<()> {
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let statements = statements(user_ids, shape, false);
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut connection =
                diesel::SqliteConnection::establish(&path).context("opening the SQLite file")?;
            connection.batch_execute("PRAGMA busy_timeout = 30000;")?;
            for statement in statements {
                connection
                    .batch_execute(&statement)
                    .context("seeding memories")?;
            }
            Ok(())
        })
        .await??;
    } else {
        let mut connection = AsyncPgConnection::establish(database_url)
            .await
            .context("connecting to PostgreSQL")?;
        for statement in statements(user_ids, shape, true) {
            connection
                .batch_execute(&statement)
                .await
                .context("seeding memories")?;
        }
    }
    Ok(())
}

/// A Prometheus histogram as `/metrics` shows it: cumulative counts per upper bound, the sum
/// and the count of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// The series `name{labels}` of a `/metrics` text (`labels` without braces, e.g.
    /// `stage="rank"`).
    pub fn parse(text: &str, name: &str, labels: &str) -> Histogram {
        let mut histogram = Histogram::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            if series == format!("{name}_sum{{{labels}}}") {
                histogram.sum = value;
            } else if series == format!("{name}_count{{{labels}}}") {
                histogram.count = value;
            } else if let Some(rest) =
                series.strip_prefix(&format!("{name}_bucket{{{labels},le=\""))
            {
                let bound = rest.trim_end_matches("\"}");
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().unwrap_or(f64::INFINITY)
                };
                histogram.buckets.push((bound, value));
            }
        }
        histogram
    }

    /// The upper bound of the bucket holding quantile `q` (0..1): the p99 is at most this.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let wanted = self.count * q;
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= wanted && self.count > 0.0)
            .map(|(bound, _)| *bound)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// The memory figures of a run, as report notes.
pub fn notes(
    metrics: &str,
    users: usize,
    shape: Shape,
    rss_before_mib: f64,
    rss_after_mib: f64,
) -> Vec<String> {
    let rank = Histogram::parse(metrics, "memory_recall_seconds", "stage=\"rank\"");
    let embed = Histogram::parse(metrics, "memory_recall_seconds", "stage=\"embed\"");
    let ms = |seconds: Option<f64>| {
        seconds.map_or_else(|| "n/a".to_owned(), |s| format!("{:.3} ms", s * 1000.0))
    };
    let skipped = |reason: &str| {
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "memory_recall_skipped_total{{reason=\"{reason}\"}} "
                ))
            })
            .unwrap_or("0")
            .trim()
            .to_owned()
    };
    let per_session_kib = (rss_after_mib - rss_before_mib) * 1024.0 / users.max(1) as f64;
    vec![
        format!(
            "memory: {users} users × {} memories of {} dimensions",
            shape.per_user, shape.dimensions
        ),
        format!(
            "recall ranking (CPU only) per message: {} recalls, mean {}, p99 ≤ {}",
            rank.count,
            ms(rank.mean()),
            ms(rank.quantile_bound(0.99))
        ),
        format!(
            "recall embedding call: mean {}, p99 ≤ {}; skipped: deadline {}, embedding failed {}",
            ms(embed.mean()),
            ms(embed.quantile_bound(0.99)),
            skipped("deadline"),
            skipped("embedding_failed")
        ),
        format!(
            "RSS with sessions live but no memories loaded {rss_before_mib:.1} MiB; after \
             every session recalled {rss_after_mib:.1} MiB: {per_session_kib:.0} KiB per \
             active session with memories"
        ),
    ]
}

/// How long to let vitte settle before reading RSS.
pub const SETTLE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_read_back_from_metrics_text() {
        let text = "memory_recall_seconds_bucket{stage=\"rank\",le=\"0.0001\"} 10\n\
                    memory_recall_seconds_bucket{stage=\"rank\",le=\"0.001\"} 99\n\
                    memory_recall_seconds_bucket{stage=\"rank\",le=\"+Inf\"} 100\n\
                    memory_recall_seconds_sum{stage=\"rank\"} 0.05\n\
                    memory_recall_seconds_count{stage=\"rank\"} 100\n";
        let histogram = Histogram::parse(text, "memory_recall_seconds", "stage=\"rank\"");
        assert_eq!(histogram.count, 100.0);
        assert_eq!(histogram.quantile_bound(0.99), Some(0.001));
        assert_eq!(histogram.quantile_bound(0.05), Some(0.0001));
        assert_eq!(histogram.mean(), Some(0.0005));
    }

    #[test]
    fn seed_statements_carry_vectors_in_each_backends_syntax() {
        let shape = |per_user| Shape {
            per_user,
            dimensions: 1536,
        };
        let postgres = statements(&[1, 2], shape(3), true);
        assert_eq!(postgres.len(), 1);
        assert!(postgres[0].contains("'::bytea"));
        assert_eq!(postgres[0].matches("'seed-").count(), 6);
        let sqlite = statements(&[1], shape(120), false);
        assert_eq!(sqlite.len(), 3);
        assert!(sqlite[0].contains(", X'"));
        // 1536 little-endian f32s: 12 288 hex digits.
        let hex_len = sqlite[0]
            .split("X'")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .map(str::len);
        assert_eq!(hex_len, Some(1536 * 8));
    }
}
