//! Counters for `GET /metrics`, in the Prometheus text format.
//!
//! Plain atomics: updating a counter costs one atomic add and never takes a lock.

use std::{
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Instant,
};

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::IntoResponse,
};

/// Counters for one kind of stream.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    open: AtomicU64,
    started: AtomicU64,
    events: AtomicU64,
    resumes: AtomicU64,
    disconnects: AtomicU64,
}

impl StreamMetrics {
    /// Streams open right now.
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Streams started since the server started.
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }

    /// Events written to streams.
    pub fn events(&self) -> u64 {
        self.events.load(Relaxed)
    }

    /// Streams that resumed from a `Last-Event-ID`.
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Relaxed)
    }

    /// Streams that ended before their last event (the client left or the server stopped;
    /// a hub stream has no last event, so each of its ends counts).
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Relaxed)
    }

    /// Counts `n` events a fan-out wrote straight to the streams' sockets. The fan-out
    /// counts them as it goes and adds them here once per step, not once per stream: the
    /// streams' own tasks are not woken for these writes, so they could count them only
    /// later (see [`StreamTracker::sent_directly`]).
    pub fn written_directly(&self, n: u64) {
        if n > 0 {
            self.events.fetch_add(n, Relaxed);
        }
    }
}

/// Every counter the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The counter demo's `/stream`.
    pub counter: Arc<StreamMetrics>,
    /// The hub's subscriptions.
    pub hub: Arc<StreamMetrics>,
}

impl Metrics {
    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let kinds = [("counter", &self.counter), ("hub", &self.hub)];
        for family in FAMILIES {
            let Family {
                name,
                kind,
                help,
                read,
            } = family;
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (label, metrics) in kinds {
                let _ = writeln!(out, "{name}{{stream=\"{label}\"}} {}", read(metrics));
            }
        }
        out
    }
}

/// One metric family of [`StreamMetrics`], labelled by stream kind.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: fn(&StreamMetrics) -> u64,
}

const FAMILIES: [Family; 5] = [
    Family {
        name: "pulse_streams_open",
        kind: "gauge",
        help: "Event streams open now.",
        read: StreamMetrics::open,
    },
    Family {
        name: "pulse_streams_started_total",
        kind: "counter",
        help: "Event streams started.",
        read: StreamMetrics::started,
    },
    Family {
        name: "pulse_events_sent_total",
        kind: "counter",
        help: "Events written to event streams.",
        read: StreamMetrics::events,
    },
    Family {
        name: "pulse_stream_resumes_total",
        kind: "counter",
        help: "Event streams resumed from a Last-Event-ID.",
        read: StreamMetrics::resumes,
    },
    Family {
        name: "pulse_stream_disconnects_total",
        kind: "counter",
        help: "Event streams that ended before their last event (hub streams have none: each end counts).",
        read: StreamMetrics::disconnects,
    },
];

/// Keeps one stream's counters right for as long as it lives: open on creation, closed on
/// drop, and counted as a disconnect unless [`StreamTracker::finish`] was called.
#[derive(Debug)]
pub struct StreamTracker {
    metrics: Arc<StreamMetrics>,
    opened: Instant,
    sent: u64,
    /// Events not yet added to the shared counter: it is updated every
    /// [`FLUSH_EVERY`] events (and when the stream ends), not on each one, so that streams
    /// on different threads do not fight over one cache line.
    unflushed: u32,
    finished: bool,
}

/// How many events a stream counts locally before adding them to the shared counter.
const FLUSH_EVERY: u32 = 32;

impl StreamTracker {
    /// Counts a new stream; `resumed` when it continues from a `Last-Event-ID`.
    pub fn start(metrics: Arc<StreamMetrics>, resumed: bool) -> Self {
        tracing::debug!(resumed, "stream opened");
        metrics.open.fetch_add(1, Relaxed);
        metrics.started.fetch_add(1, Relaxed);
        if resumed {
            metrics.resumes.fetch_add(1, Relaxed);
        }
        Self {
            metrics,
            opened: Instant::now(),
            sent: 0,
            unflushed: 0,
            finished: false,
        }
    }

    /// Counts `n` events written.
    pub fn sent(&mut self, n: u64) {
        self.sent += n;
        let pending = u64::from(self.unflushed) + n;
        if pending >= u64::from(FLUSH_EVERY) {
            self.metrics.events.fetch_add(pending, Relaxed);
            self.unflushed = 0;
        } else {
            self.unflushed = pending as u32;
        }
    }

    /// Counts `n` events the fan-out wrote straight to this stream's socket: in the
    /// stream's own tally only, as the fan-out already added them to the shared counter
    /// ([`StreamMetrics::written_directly`]).
    pub fn sent_directly(&mut self, n: u64) {
        self.sent += n;
    }

    /// Marks the stream as having reached its natural end.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamTracker {
    fn drop(&mut self) {
        self.metrics
            .events
            .fetch_add(u64::from(self.unflushed), Relaxed);
        self.metrics.open.fetch_sub(1, Relaxed);
        if !self.finished {
            self.metrics.disconnects.fetch_add(1, Relaxed);
        }
        tracing::debug!(
            events = self.sent,
            seconds = self.opened.elapsed().as_secs_f64(),
            finished = self.finished,
            "stream closed"
        );
    }
}

/// `GET /metrics`.
/// `GET /metrics`, serving `metrics`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(handler))
        .with_state(metrics)
}

pub async fn handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_keeps_counts_right() {
        let metrics = Metrics::default();
        {
            let mut finished = StreamTracker::start(metrics.counter.clone(), false);
            let _left = StreamTracker::start(metrics.counter.clone(), true);
            finished.sent(3);
            // Counted by the fan-out that wrote them, not again by the stream.
            finished.sent_directly(5);
            metrics.counter.written_directly(5);
            assert_eq!(metrics.counter.events(), 5, "direct writes count at once");
            finished.finish();
            assert_eq!(metrics.counter.open(), 2);
        }
        assert_eq!(metrics.counter.open(), 0);
        assert_eq!(metrics.counter.started(), 2);
        assert_eq!(metrics.counter.events(), 8);
        assert_eq!(metrics.counter.resumes(), 1);
        assert_eq!(metrics.counter.disconnects(), 1);
    }

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        let _open = StreamTracker::start(metrics.counter.clone(), false);
        let text = metrics.render();
        assert!(text.contains("# TYPE pulse_streams_open gauge\n"));
        assert!(text.contains("pulse_streams_open{stream=\"counter\"} 1\n"));
        assert!(text.contains("pulse_streams_started_total{stream=\"counter\"} 1\n"));
    }
}
