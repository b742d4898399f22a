//! What a run reports: the JSON results document, the status line printed every second,
//! and the short summary printed at the end.
//!
//! The JSON carries every figure and the run's parameters, so a results file alone says
//! what was measured and how. The load generator's own CPU use sits next to the server's
//! in every sample and in the totals: a figure taken while the tool was saturating a core
//! measures the tool, and the reader must be able to see that.

use std::{collections::BTreeMap, fmt::Write as _, io, path::Path};

use serde::Serialize;

use crate::{
    config::Params,
    protocol::Tracking,
    publisher::Api,
    seqtrack::SeqCounts,
    stats::{CountsSummary, LatencySummary},
};

/// The results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The loadgen version.
    pub loadgen_version: &'static str,
    /// When the run started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// When it ended.
    pub finished_unix_ms: u64,
    /// The parameters.
    pub params: Params,
    /// How the run went.
    pub run: RunReport,
    /// Connections.
    pub connections: ConnectionsReport,
    /// Events.
    pub events: EventsReport,
    /// Missing and duplicated updates.
    pub sequence: SequenceReport,
    /// Publish-to-receive latency, microseconds, of first deliveries: with `--api`, a stamped
    /// event counts only the first time its update reaches a connection that was owed it
    /// (duplicates, arrivals from before the connection opened and ones too late to tell
    /// are left out: they are counted in `sequence`). Without `--api`, every stamped event.
    pub latency_us: LatencySummary,
    /// The publisher, if it ran.
    pub publish: Option<PublishReport>,
    /// The server processes, if `--server-pid` was given.
    pub server: Option<ServerReport>,
    /// The load generator's own use of the machine.
    pub loadgen: LoadgenReport,
    /// One sample per second.
    pub samples: Vec<Sample>,
}

/// How the run went.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Seconds from the first connection to the end.
    pub elapsed_s: f64,
    /// Why it ended: `duration`, `interrupted`, `all_streams_ended` or `workers_gone`.
    pub stop_reason: &'static str,
    /// Workers.
    pub workers: usize,
    /// Whether workers were processes (`false`: threads).
    pub worker_processes: bool,
    /// Workers that ended without a final report (their figures are missing).
    pub workers_lost: usize,
    /// Errors workers reported.
    pub worker_errors: Vec<String>,
    /// The coordinator's open-file limit.
    pub nofile_limit: u64,
}

/// Connection figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionsReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections tried.
    pub attempted: u64,
    /// Connections that got a 200 `text/event-stream` head.
    pub established: u64,
    /// Connections that did not.
    pub failed: u64,
    /// Established connections the server ended.
    pub closed_by_server: u64,
    /// Established connections that ended in an error.
    pub errored: u64,
    /// Established connections open when the run stopped.
    pub open_at_stop: u64,
    /// Most open at once (sum of the workers' peaks).
    pub peak_open: u64,
    /// Seconds from the first connection until every one was established or had failed.
    pub ramp_s: Option<f64>,
    /// Why connections failed or errored, with counts.
    pub failures: BTreeMap<String, u64>,
}

/// Event figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsReport {
    /// Events received.
    pub total: u64,
    /// Events carrying a loadgen stamp.
    pub stamped: u64,
    /// Comment lines (keep-alives).
    pub comments: u64,
    /// `retry` fields.
    pub retry_fields: u64,
    /// Events per type.
    pub by_type: BTreeMap<String, u64>,
    /// Events whose `id` was not a number (with `--expect-sequential-ids`).
    pub non_numeric_ids: u64,
    /// Stamped events received before their send time (clock step); counted as 0 µs.
    pub negative_latency: u64,
    /// Event-stream body bytes received.
    pub body_bytes: u64,
    /// Events per second over the whole run.
    pub per_second_avg: f64,
    /// The busiest one-second sample.
    pub per_second_peak: f64,
    /// Stamped events received per second of publishing (deliveries/s): all stamped
    /// events over the publish window, `publish.window_s` (see the samples for the rate
    /// second by second).
    pub deliveries_per_second: Option<f64>,
    /// Events per established connection.
    pub per_connection: CountsSummary,
}

/// Missing and duplicated updates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SequenceReport {
    /// What was checked.
    pub mode: Option<Tracking>,
    /// The sums over connections.
    #[serde(flatten)]
    pub counts: SeqCounts,
    /// Connections that missed at least one.
    pub connections_with_missing: u64,
    /// Connections that received at least one twice.
    pub connections_with_duplicates: u64,
    /// Connections the server ended with every owed number received exactly once and
    /// nothing else (with `--expect-ids N`: ids 1..=N, no more): streams that ran to their
    /// end correctly.
    pub connections_complete: u64,
    /// `1 - missing / owed`; null when nothing was owed.
    pub delivered_ratio: Option<f64>,
}

/// The publisher's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// The API.
    pub api: Api,
    /// The publish URL.
    pub url: String,
    /// Updates per second asked for.
    pub target_rate: f64,
    /// Updates sent (sequence numbers handed out).
    pub sent: u64,
    /// Publish requests answered 2xx.
    pub ok: u64,
    /// Publish requests that failed, including failed connects.
    pub failed: u64,
    /// Why, with counts.
    pub failures: BTreeMap<String, u64>,
    /// Times the schedule waited for a free connection.
    pub backlogged: u64,
    /// Updates per second actually sent: `sent / window_s`.
    pub achieved_rate: f64,
    /// Seconds of publishing: from the first send to the last plus one interval of the
    /// schedule (`1 / target_rate`), so that updates sent on time give `target_rate`; the
    /// wait for unanswered requests after the last send is not included.
    pub window_s: f64,
    /// Time to the publish response, microseconds (successful requests).
    pub latency_us: LatencySummary,
}

/// The server's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// The sampled processes.
    pub pids: Vec<u32>,
    /// Resident memory before any connection, KiB.
    pub rss_kb_before: u64,
    /// Resident memory as soon as every connection had been made or had failed (sampled
    /// when the coordinator learns of the last one, right after it settled), KiB.
    pub rss_kb_after_ramp: Option<u64>,
    /// Connections open at that moment.
    pub open_after_ramp: Option<u64>,
    /// `(after_ramp - before) / open_after_ramp`, bytes.
    pub rss_bytes_per_connection: Option<f64>,
    /// Largest resident memory seen, KiB.
    pub rss_kb_peak: u64,
    /// Resident memory at the end, KiB.
    pub rss_kb_end: u64,
    /// CPU seconds used during the run.
    pub cpu_s: f64,
    /// Average CPU use, percent of one core.
    pub cpu_percent_avg: f64,
    /// Samples that could not be read (the process exited?).
    pub sample_errors: u64,
}

/// The load generator's own figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadgenReport {
    /// Processes (coordinator plus worker processes).
    pub processes: usize,
    /// CPU seconds of all of them.
    pub cpu_s: f64,
    /// Average CPU use, percent of one core.
    pub cpu_percent_avg: f64,
    /// CPU seconds of the coordinator (with thread workers, everything).
    pub coordinator_cpu_s: f64,
    /// CPU seconds of the worker processes.
    pub workers_cpu_s: f64,
    /// Peak resident memory of the coordinator, KiB.
    pub coordinator_peak_rss_kb: u64,
    /// Peak resident memory of each worker process, KiB.
    pub worker_peak_rss_kb: Vec<u64>,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the first connection.
    pub t_s: f64,
    /// Connections open.
    pub open: u64,
    /// Connections established so far.
    pub established: u64,
    /// Connections failed so far.
    pub failed: u64,
    /// Events per second since the previous sample.
    pub events_per_s: f64,
    /// Stamped events per second.
    pub stamped_per_s: f64,
    /// Latency p99 so far, microseconds (none before the first stamped event).
    pub p99_us: Option<u64>,
    /// Updates published per second.
    pub published_per_s: f64,
    /// Server resident memory, KiB.
    pub server_rss_kb: Option<u64>,
    /// Server CPU use, percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Load generator CPU use (all processes), percent of one core.
    pub loadgen_cpu_percent: f64,
}

impl Sample {
    /// The status line for this sample.
    pub fn status_line(&self, requested: usize) -> String {
        let mut line = format!(
            "[{:>6.1}s] open {}/{} fail {} | ev/s {:.0}",
            self.t_s, self.open, requested, self.failed, self.events_per_s,
        );
        if let Some(p99) = self.p99_us {
            let _ = write!(line, " | p99 {}", format_micros(p99));
        }
        if self.published_per_s > 0.0 {
            let _ = write!(line, " | pub/s {:.0}", self.published_per_s);
        }
        if let (Some(rss), Some(cpu)) = (self.server_rss_kb, self.server_cpu_percent) {
            let _ = write!(
                line,
                " | server {:.1} MiB cpu {:.0}%",
                rss as f64 / 1024.0,
                cpu
            );
        }
        let _ = write!(line, " | loadgen cpu {:.0}%", self.loadgen_cpu_percent);
        line
    }
}

/// `850µs`, `12.3ms`, `4.56s`.
pub fn format_micros(micros: u64) -> String {
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", micros as f64 / 1e3)
    } else {
        format!("{:.2}s", micros as f64 / 1e6)
    }
}

impl Report {
    /// A few lines for a person: the headline figures, each next to the tool's own CPU.
    pub fn summary_text(&self) -> String {
        let mut text = String::new();
        let c = &self.connections;
        let _ = writeln!(
            text,
            "connections: {} established of {} ({} failed, {} closed by server, {} errors, {} open at stop, peak {})",
            c.established, c.requested, c.failed, c.closed_by_server, c.errored, c.open_at_stop, c.peak_open
        );
        for (reason, count) in &c.failures {
            let _ = writeln!(text, "  {count} × {reason}");
        }
        let e = &self.events;
        let _ = writeln!(
            text,
            "events: {} ({:.0}/s avg, {:.0}/s peak; per connection min {} median {} max {})",
            e.total,
            e.per_second_avg,
            e.per_second_peak,
            e.per_connection.min,
            e.per_connection.p50,
            e.per_connection.max
        );
        if let Some(mode) = self.sequence.mode {
            let s = &self.sequence;
            let _ = writeln!(
                text,
                "sequence ({mode:?}): owed {} missing {} duplicates {} early {} late {} ({} connections missed some)",
                s.counts.owed, s.counts.missing, s.counts.duplicates, s.counts.early, s.counts.late, s.connections_with_missing
            );
        }
        let l = &self.latency_us;
        if l.count > 0 {
            let _ = writeln!(
                text,
                "latency: p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)",
                format_micros(l.p50_us),
                format_micros(l.p90_us),
                format_micros(l.p99_us),
                format_micros(l.p999_us),
                format_micros(l.max_us),
                l.count
            );
        }
        if let Some(p) = &self.publish {
            let _ = writeln!(
                text,
                "publish: {} sent, {} ok, {} failed, {:.1}/s of {:.1}/s; response p50 {} p99 {} max {}",
                p.sent,
                p.ok,
                p.failed,
                p.achieved_rate,
                p.target_rate,
                format_micros(p.latency_us.p50_us),
                format_micros(p.latency_us.p99_us),
                format_micros(p.latency_us.max_us)
            );
        }
        if let Some(s) = &self.server {
            let per_conn = s
                .rss_bytes_per_connection
                .map_or_else(|| "n/a".to_owned(), |bytes| format!("{:.0} B", bytes));
            let _ = writeln!(
                text,
                "server: rss {:.1} → {:.1} MiB (peak {:.1}), {per_conn}/connection, cpu {:.2}s ({:.0}% avg)",
                s.rss_kb_before as f64 / 1024.0,
                s.rss_kb_end as f64 / 1024.0,
                s.rss_kb_peak as f64 / 1024.0,
                s.cpu_s,
                s.cpu_percent_avg
            );
        }
        let g = &self.loadgen;
        let _ = writeln!(
            text,
            "loadgen: cpu {:.2}s ({:.0}% avg) in {} processes",
            g.cpu_s, g.cpu_percent_avg, g.processes
        );
        text
    }
}

/// Writes the report as pretty JSON to `path`, or to stdout.
pub fn write_json(report: &Report, path: Option<&Path>) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    json.push(b'\n');
    match path {
        Some(path) => std::fs::write(path, json),
        None => {
            use std::io::Write;
            let mut stdout = io::stdout().lock();
            stdout.write_all(&json)?;
            stdout.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(format_micros(850), "850µs");
        assert_eq!(format_micros(12_345), "12.3ms");
        assert_eq!(format_micros(4_560_000), "4.56s");
    }

    #[test]
    fn the_status_line_shows_what_is_known() {
        let mut sample = Sample {
            t_s: 3.0,
            open: 10,
            events_per_s: 2500.0,
            p99_us: Some(1500),
            loadgen_cpu_percent: 12.0,
            ..Sample::default()
        };
        let line = sample.status_line(20);
        assert!(line.contains("open 10/20"), "{line}");
        assert!(line.contains("ev/s 2500"), "{line}");
        assert!(line.contains("p99 1.5ms"), "{line}");
        assert!(!line.contains("server"), "{line}");
        sample.server_rss_kb = Some(2048);
        sample.server_cpu_percent = Some(50.0);
        assert!(sample.status_line(20).contains("server 2.0 MiB cpu 50%"));
    }
}
