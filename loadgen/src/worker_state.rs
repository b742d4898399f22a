//! What a worker's connections share while they run: its counters, what each finished
//! connection leaves, and the worker's context. The worker ([`crate::worker`]) makes it;
//! its subscribers ([`crate::subscriber`]) update it.

use std::{cell::RefCell, collections::BTreeMap};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    protocol::{ConnCounts, EventCounts, WorkerSpec},
    seqtrack::SeqTracker,
    stats::{Latency, StatsError},
    timeline::Timeline,
};

/// Counters the connections of a worker update as they go.
pub(crate) struct Live {
    pub connections: ConnCounts,
    pub failures: BTreeMap<String, u64>,
    pub events: EventCounts,
    pub latency: Latency,
    /// Latencies since the last progress report.
    pub interval: Latency,
    pub ramp_done: bool,
    /// When the latest connection attempt was settled (established or failed).
    pub last_settled_ns: u64,
    pub(crate) announced_settled: bool,
    pub(crate) announced_ended: bool,
}

impl Live {
    /// Nothing counted yet.
    pub fn new() -> Result<Self, StatsError> {
        Ok(Self {
            connections: ConnCounts::default(),
            failures: BTreeMap::new(),
            events: EventCounts::default(),
            latency: Latency::new()?,
            interval: Latency::new()?,
            ramp_done: false,
            last_settled_ns: 0,
            announced_settled: false,
            announced_ended: false,
        })
    }
}

/// What a finished connection leaves for the summary.
pub(crate) struct ConnRecord {
    pub events: u64,
    pub tracker: Option<SeqTracker>,
    pub established_ns: u64,
    pub closed_ns: u64,
    /// The server ended the stream (rather than an error or the end of the run).
    pub closed_by_server: bool,
}

/// State shared by a worker's connections.
pub(crate) struct WorkerContext {
    pub spec: WorkerSpec,
    /// The request for each of `spec.targets`, as bytes.
    pub requests: Vec<Vec<u8>>,
    pub stop: CancellationToken,
    pub live: RefCell<Live>,
    /// The publisher's log as received so far.
    pub timeline: RefCell<Timeline>,
    pub records: RefCell<Vec<ConnRecord>>,
    /// Signalled when the ramp is over and every connection attempt has settled, so that
    /// the coordinator hears of it at once (it may be waiting to start publishing).
    pub milestone: Notify,
}

impl WorkerContext {
    /// Called whenever a connection attempt settles, a stream ends, or the ramp ends:
    /// signals [`WorkerContext::milestone`] once when the ramp has settled (the coordinator
    /// may be waiting to start publishing) and once when every stream has ended (it may
    /// stop the run), so the coordinator hears of these at once, not a second later.
    pub fn check_milestones(&self, live: &mut Live) {
        if !live.ramp_done || live.connections.pending() > 0 {
            return;
        }
        if !live.announced_settled {
            live.announced_settled = true;
            self.milestone.notify_one();
        }
        if !live.announced_ended && live.connections.open() == 0 {
            live.announced_ended = true;
            self.milestone.notify_one();
        }
    }
}
