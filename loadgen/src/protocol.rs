//! The messages between the coordinator and its workers, one JSON document per line.
//!
//! Workers are separate processes because one process may hold only so many sockets
//! (20 000 open files here); they read commands on stdin and write reports on stdout. The
//! same messages go over in-memory channels when workers run as threads (tests and small
//! runs), so both paths drive the very same worker code.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::{
    procstat::ProcSample,
    seqtrack::SeqCounts,
    stats::{Counts, LatencyWire},
};

/// A command from the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Start opening connections (the first message).
    Start(Box<WorkerSpec>),
    /// Updates the publisher sent: `sent_ns[i]` is the send time of `first_seq + i`.
    Published {
        /// The first sequence number.
        first_seq: u64,
        /// Send times, nanoseconds since the Unix epoch.
        sent_ns: Vec<u64>,
    },
    /// Updates whose publish request failed.
    Failed {
        /// Their sequence numbers.
        seqs: Vec<u64>,
    },
    /// Close every connection and send the final summary.
    Stop,
}

/// A report from a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker is up.
    Ready {
        /// Its process id.
        pid: u32,
        /// Its open-file limit.
        nofile: u64,
    },
    /// Totals so far, about once a second.
    Progress(Box<Progress>),
    /// Everything, once, after `Stop` (or the deadline).
    Final(Box<WorkerSummary>),
    /// The worker cannot run.
    Fatal {
        /// Why.
        message: String,
    },
}

/// What the connections of a run check about the events they receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracking {
    /// Nothing beyond counting (latency is still measured for stamped events).
    Off,
    /// Sequence numbers in the payloads, against the publisher's log.
    Published,
    /// `id` fields counting 1, 2, … (the counter stream).
    SequentialIds,
}

/// What one worker does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// This worker's number, from 0.
    pub index: usize,
    /// How many workers share the run; this one opens connections `index`, `index +
    /// workers`, … of the global sequence.
    pub workers: usize,
    /// Connections in the whole run.
    pub connections: usize,
    /// Connections opened per second, over the whole run.
    pub ramp_rate: f64,
    /// When connection 0 opens, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// When the worker stops by itself if no `Stop` came, nanoseconds since the Unix epoch.
    pub deadline_unix_ns: u64,
    /// Where to subscribe: connection `i` of the run goes to `targets[i % targets.len()]`
    /// (one entry unless `--subscribe-url` was given several times).
    pub targets: Vec<SubscribeTarget>,
    /// Source addresses; connection `i` binds to `source_addrs[i % len]`.
    pub source_addrs: Vec<IpAddr>,
    /// What to check.
    pub tracking: Tracking,
    /// With [`Tracking::SequentialIds`]: every connection is owed ids 1..=N (rather than
    /// up to the highest it saw), so lost last ids and empty streams count as missing.
    #[serde(default)]
    pub expected_ids: Option<u64>,
    /// Longest wait for the TCP connection and the response head, milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest line or event accepted.
    pub max_event_bytes: usize,
}

/// One subscribe URL as a worker uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeTarget {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The request, sent as is on every connection to `addr`.
    pub request: String,
}

impl WorkerSpec {
    /// Which of `targets` connection `index` of the run goes to: round-robin by its number
    /// in the whole run, so that every worker spreads its share evenly too.
    pub fn target_slot(&self, index: usize) -> usize {
        index % self.targets.len().max(1)
    }
}

/// Connection counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnCounts {
    /// Connections tried.
    pub attempted: u64,
    /// Connections whose response head was a 200 `text/event-stream`.
    pub established: u64,
    /// Connections that never got there.
    pub failed: u64,
    /// Established connections the server ended (end of body or EOF).
    pub closed_by_server: u64,
    /// Established connections that ended in an error (reset, malformed stream).
    pub errored: u64,
    /// Established connections still open when the run stopped.
    pub open_at_stop: u64,
    /// Most connections open at once.
    pub peak_open: u64,
}

impl ConnCounts {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.established
            .saturating_sub(self.closed_by_server + self.errored + self.open_at_stop)
    }

    /// Connections still connecting.
    pub fn pending(&self) -> u64 {
        self.attempted
            .saturating_sub(self.established + self.failed)
    }

    /// Adds another worker's counts (peaks add up: workers run at the same time).
    pub fn add(&mut self, other: &Self) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.failed += other.failed;
        self.closed_by_server += other.closed_by_server;
        self.errored += other.errored;
        self.open_at_stop += other.open_at_stop;
        self.peak_open += other.peak_open;
    }
}

/// Event counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Events dispatched.
    pub total: u64,
    /// Events whose data carried a loadgen stamp.
    pub stamped: u64,
    /// Comment lines (keep-alives).
    pub comments: u64,
    /// `retry` fields.
    pub retry_fields: u64,
    /// Events per type (`message` when none was given); at most [`MAX_EVENT_TYPES`]
    /// names, the rest under `(other)`.
    pub by_type: BTreeMap<String, u64>,
    /// With `--expect-sequential-ids`: events with an `id` that is not a whole number.
    pub non_numeric_ids: u64,
    /// Stamped events that arrived before their send time (clock stepped); counted as 0 µs.
    pub negative_latency: u64,
    /// Bytes of event-stream body received (after chunked decoding).
    pub body_bytes: u64,
}

/// Most distinct event type names kept.
pub const MAX_EVENT_TYPES: usize = 32;
/// Where event types beyond [`MAX_EVENT_TYPES`] are counted.
pub const OTHER_EVENT_TYPE: &str = "(other)";

impl EventCounts {
    /// Counts one event of type `name`.
    pub fn count_type(&mut self, name: &[u8]) {
        let name = String::from_utf8_lossy(name);
        if let Some(count) = self.by_type.get_mut(name.as_ref()) {
            *count += 1;
        } else if self.by_type.len() < MAX_EVENT_TYPES {
            self.by_type.insert(name.into_owned(), 1);
        } else {
            *self.by_type.entry(OTHER_EVENT_TYPE.to_owned()).or_insert(0) += 1;
        }
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, other: &Self) {
        self.total += other.total;
        self.stamped += other.stamped;
        self.comments += other.comments;
        self.retry_fields += other.retry_fields;
        self.non_numeric_ids += other.non_numeric_ids;
        self.negative_latency += other.negative_latency;
        self.body_bytes += other.body_bytes;
        for (name, &count) in &other.by_type {
            *self.by_type.entry(name.clone()).or_insert(0) += count;
        }
    }
}

/// A worker's totals so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Connection counts.
    pub connections: ConnCounts,
    /// Events dispatched so far.
    pub events: u64,
    /// Stamped events so far.
    pub stamped: u64,
    /// Whether every connection of this worker has been started.
    pub ramp_done: bool,
    /// When the latest connection attempt was settled (established or failed), nanoseconds
    /// since the Unix epoch; 0 if none was.
    pub last_settled_unix_ns: u64,
    /// Latencies recorded since the previous progress report.
    pub latency: LatencyWire,
}

/// Everything a worker measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// The worker's number.
    pub index: usize,
    /// Its process id.
    pub pid: u32,
    /// Connection counts.
    pub connections: ConnCounts,
    /// Why connections failed or ended in errors, with counts.
    pub failures: BTreeMap<String, u64>,
    /// Event counts.
    pub events: EventCounts,
    /// Latency of stamped events, microseconds.
    pub latency: LatencyWire,
    /// Sequence checks, summed over connections.
    pub seq: SeqCounts,
    /// Connections that missed at least one owed update.
    pub connections_with_missing: u64,
    /// Connections that received at least one duplicate.
    pub connections_with_duplicates: u64,
    /// Connections the server ended (end of body or EOF) with every owed number received
    /// exactly once and nothing else: for the counter stream, streams that ran to their end
    /// correctly.
    #[serde(default)]
    pub connections_complete: u64,
    /// Events received per established connection.
    pub events_per_connection: Counts,
    /// The worker process's own memory and CPU at the end (absent for thread workers).
    pub process: Option<ProcSample>,
}

/// Most distinct failure reasons kept per worker.
pub const MAX_FAILURE_REASONS: usize = 32;

/// Counts one failure under `reason`, keeping at most [`MAX_FAILURE_REASONS`] reasons.
pub fn count_failure(failures: &mut BTreeMap<String, u64>, reason: &str) {
    if let Some(count) = failures.get_mut(reason) {
        *count += 1;
    } else if failures.len() < MAX_FAILURE_REASONS {
        failures.insert(reason.to_owned(), 1);
    } else {
        *failures.entry(OTHER_EVENT_TYPE.to_owned()).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json_lines() {
        let messages = vec![
            ToWorker::Published {
                first_seq: 5,
                sent_ns: vec![1, 2, 3],
            },
            ToWorker::Failed { seqs: vec![6] },
            ToWorker::Stop,
        ];
        for message in messages {
            let line = serde_json::to_string(&message).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<ToWorker>(&line).unwrap(), message);
        }
        let summary = FromWorker::Final(Box::default());
        let line = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<FromWorker>(&line).unwrap(), summary);
    }

    #[test]
    fn caps_event_types_and_failure_reasons() {
        let mut events = EventCounts::default();
        for i in 0..100 {
            events.count_type(format!("type{i}").as_bytes());
        }
        events.count_type(b"type0");
        assert_eq!(events.by_type.len(), MAX_EVENT_TYPES + 1);
        assert_eq!(events.by_type["type0"], 2);
        assert_eq!(
            events.by_type[OTHER_EVENT_TYPE],
            100 - MAX_EVENT_TYPES as u64
        );

        let mut failures = BTreeMap::new();
        for i in 0..40 {
            count_failure(&mut failures, &format!("reason {i}"));
        }
        assert_eq!(failures.len(), MAX_FAILURE_REASONS + 1);
    }

    #[test]
    fn connection_arithmetic() {
        let mut counts = ConnCounts {
            attempted: 10,
            established: 7,
            failed: 1,
            closed_by_server: 2,
            errored: 1,
            open_at_stop: 0,
            peak_open: 6,
        };
        assert_eq!(counts.open(), 4);
        assert_eq!(counts.pending(), 2);
        counts.add(&counts.clone());
        assert_eq!(counts.attempted, 20);
        assert_eq!(counts.peak_open, 12);
    }
}
