//! The run's figures: percentiles, throughput, resources, and how they are printed.

use serde::Serialize;

use crate::tracker::Sample;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Distribution {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Distribution {
    /// Nearest-rank percentiles of `values_us` (microseconds).
    pub fn of(mut values_us: Vec<u64>) -> Distribution {
        if values_us.is_empty() {
            return Distribution::default();
        }
        values_us.sort_unstable();
        let at = |percent: f64| {
            let rank = ((percent / 100.0) * values_us.len() as f64).ceil() as usize;
            values_us[rank.clamp(1, values_us.len()) - 1] as f64 / 1000.0
        };
        Distribution {
            p50_ms: at(50.0),
            p95_ms: at(95.0),
            p99_ms: at(99.0),
            max_ms: at(100.0),
        }
    }
}

/// What vitte's process used, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resources {
    pub peak_rss_mib: f64,
    pub final_rss_mib: f64,
    pub cpu_seconds: f64,
}

/// Everything a run measured, with the parameters that produced it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub backend: String,
    pub parameters: serde_json::Value,
    pub duration_seconds: f64,
    pub messages_sent: u64,
    pub messages_answered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unexpected_texts: u64,
    /// Messages answered with a notice (LLM failed, queue full, …) instead of a reply.
    pub notices: u64,
    pub llm_requests: u64,
    pub llm_failures_injected: u64,
    pub answered_per_second: f64,
    pub end_to_end: Distribution,
    pub overhead: Distribution,
    pub first_visible_after_first_chunk: Distribution,
    /// Bot API calls carrying replies (placeholders or empty drafts, drafts, edits, final
    /// messages) per message answered.
    pub bot_api_calls_per_reply: f64,
    /// `sendMessageDraft` calls among them.
    pub draft_calls: u64,
    pub peak_in_flight: u64,
    pub peak_sessions_active: u64,
    pub vitte: Resources,
    pub rss_per_in_flight_kib: Option<f64>,
    pub loadgen_cpu_seconds: f64,
    /// (seconds, vitte's RSS in MiB), sampled once a second.
    pub rss_timeline_mib: Vec<(f64, f64)>,
    /// Notices by their first words.
    pub notice_kinds: std::collections::BTreeMap<String, u64>,
    /// What an injected fault observed.
    pub notes: Vec<String>,
}

impl Report {
    /// RSS at each quarter of the run (MiB), to see whether it stays flat.
    pub fn rss_quarters(&self) -> Vec<f64> {
        let samples = &self.rss_timeline_mib;
        if samples.is_empty() {
            return Vec::new();
        }
        (1..=4)
            .map(|quarter| samples[(samples.len() * quarter / 4).saturating_sub(1)].1)
            .collect()
    }
}

/// Counts and timings before resources are added.
pub struct Outcome {
    pub duration_seconds: f64,
    pub sent: u64,
    pub answered: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub samples: Vec<Sample>,
}

impl Report {
    /// Derives the figures from the raw outcome.
    pub fn figures(outcome: &Outcome) -> (f64, Distribution, Distribution, Distribution) {
        let rate = if outcome.duration_seconds > 0.0 {
            outcome.answered as f64 / outcome.duration_seconds
        } else {
            0.0
        };
        let end_to_end =
            Distribution::of(outcome.samples.iter().map(|s| s.end_to_end_us).collect());
        let overhead = Distribution::of(outcome.samples.iter().map(Sample::overhead_us).collect());
        let first_visible =
            Distribution::of(outcome.samples.iter().map(|s| s.first_visible_us).collect());
        (rate, end_to_end, overhead, first_visible)
    }

    /// A table for people.
    pub fn render(&self) -> String {
        let row = |name: &str, d: &Distribution| {
            format!(
                "  {name:<34} p50 {:>9.2}  p95 {:>9.2}  p99 {:>9.2}  max {:>9.2}  ms\n",
                d.p50_ms, d.p95_ms, d.p99_ms, d.max_ms
            )
        };
        let mut out = format!(
            "scenario {} on {} — {:.1} s\n",
            self.scenario, self.backend, self.duration_seconds
        );
        out += &format!(
            "  messages sent {} answered {} (with a notice {}) lost {} duplicated {} \
             (unexpected texts {})\n",
            self.messages_sent,
            self.messages_answered,
            self.notices,
            self.lost,
            self.duplicated,
            self.unexpected_texts
        );
        out += &format!(
            "  answered per second {:.1}; LLM requests {} (failures injected {})\n",
            self.answered_per_second, self.llm_requests, self.llm_failures_injected
        );
        out += &row("end to end", &self.end_to_end);
        out += &row("runtime overhead (minus LLM time)", &self.overhead);
        out += &row(
            "first chunk → first visible text",
            &self.first_visible_after_first_chunk,
        );
        out += &format!(
            "  Bot API calls per reply {:.2} (message drafts among all of them {})\n",
            self.bot_api_calls_per_reply, self.draft_calls
        );
        out += &format!(
            "  peak replies in flight {}; peak sessions active {}\n",
            self.peak_in_flight, self.peak_sessions_active
        );
        out += &format!(
            "  vitte: peak RSS {:.1} MiB, final RSS {:.1} MiB, CPU {:.1} s",
            self.vitte.peak_rss_mib, self.vitte.final_rss_mib, self.vitte.cpu_seconds
        );
        if let Some(per) = self.rss_per_in_flight_kib {
            out += &format!(", {per:.1} KiB RSS per reply in flight");
        }
        let quarters: Vec<String> = self
            .rss_quarters()
            .iter()
            .map(|mib| format!("{mib:.0}"))
            .collect();
        if !quarters.is_empty() {
            out += &format!(
                "\n  vitte RSS at each quarter of the run: {} MiB",
                quarters.join(" / ")
            );
        }
        out += &format!("\n  load generator CPU {:.1} s\n", self.loadgen_cpu_seconds);
        for (kind, count) in &self.notice_kinds {
            out += &format!("  notice \"{kind} …\" × {count}\n");
        }
        for note in &self.notes {
            out += &format!("  note: {note}\n");
        }
        out += &format!("  parameters {}\n", self.parameters);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let d = Distribution::of(values);
        assert_eq!(
            (d.p50_ms, d.p95_ms, d.p99_ms, d.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Distribution::of(vec![]), Distribution::default());
        let one = Distribution::of(vec![2500]);
        assert_eq!((one.p50_ms, one.max_ms), (2.5, 2.5));
    }

    #[test]
    fn overhead_is_end_to_end_minus_llm_time_and_rate_counts_answers() {
        let samples = vec![
            Sample {
                end_to_end_us: 12_000,
                llm_us: 10_000,
                first_visible_us: 1_000,
            },
            Sample {
                end_to_end_us: 10_500,
                llm_us: 10_000,
                first_visible_us: 300,
            },
            Sample {
                end_to_end_us: 9_000,
                llm_us: 10_000,
                first_visible_us: 200,
            },
        ];
        let outcome = Outcome {
            duration_seconds: 2.0,
            sent: 4,
            answered: 3,
            duplicated: 0,
            unexpected: 0,
            samples,
        };
        let (rate, end_to_end, overhead, first) = Report::figures(&outcome);
        assert_eq!(rate, 1.5);
        assert_eq!(end_to_end.max_ms, 12.0);
        assert_eq!(
            (overhead.p50_ms, overhead.max_ms),
            (0.5, 2.0),
            "clock skew clamps to 0"
        );
        assert_eq!(first.p50_ms, 0.3);
    }
}
