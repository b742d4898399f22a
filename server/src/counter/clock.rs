//! The counter streams' shared clock: one task sends every stream its next event when due.
//!
//! A timer per stream meant, for every event, a timer firing, a task woken and polled and a
//! write from that task: besides the write itself, most of the job's CPU. Here one task
//! keeps every stream's next due time. When a step of the grid comes, it hands the events
//! of the streams due then to their [`Sink`]s, which write them straight to the sockets
//! (see [`crate::stream::sink`]); the streams' own tasks stay asleep. Each event is encoded once
//! and shared by every stream that sends it.
//!
//! Timing: a stream's first event goes out when it opens, then one every `interval`,
//! woken on a process-wide grid of [`grid`] steps, so the streams due in the same step
//! share one wake-up. An event is late by less than one step (25 ms at a 1 s interval)
//! and never early, and the lateness does not add up: each event is due one interval after
//! the previous one was due, not after it went out. After a stall (a busy runtime) the next
//! event is due an interval from then, so a late stream does not burst.

use std::{
    collections::BTreeMap,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{sync::mpsc, time::Instant};

use super::{end_event, message, CounterSettings};
use crate::{
    metrics::StreamMetrics,
    stream::{
        sink::{Delivery, Sink},
        ticks::round_up,
    },
    update::Update,
};

/// Events kept encoded for reuse; a stream configured to count further encodes the rest
/// as it sends them.
const CACHED_EVENTS: u32 = 4096;

/// The handle streams register with; the clock's task stops when every handle is gone.
#[derive(Debug, Clone)]
pub struct Clock {
    registrations: mpsc::UnboundedSender<Entry>,
    interval: Duration,
}

/// One open stream, as the clock sees it.
#[derive(Debug)]
struct Entry {
    /// Gone when the stream is (the client left or the server is stopping).
    sink: Weak<Sink>,
    /// The number of the event it gets next; `count + 1` is the end event.
    next: u32,
    /// When that is due, before rounding up to the grid.
    due: Instant,
}

impl Clock {
    /// Starts the clock's task on the current runtime; it counts the events it writes
    /// straight to sockets in `metrics`, once per step.
    pub fn start(settings: CounterSettings, metrics: Arc<StreamMetrics>) -> Self {
        let (registrations, incoming) = mpsc::unbounded_channel();
        tokio::spawn(run(settings, incoming, metrics));
        Self {
            registrations,
            interval: settings.interval,
        }
    }

    /// Has the clock send event `next` (and those after it) to `sink`, the first one an
    /// interval from now. Returns `false` if the clock has stopped.
    pub fn register(&self, sink: &Arc<Sink>, next: u32) -> bool {
        self.registrations
            .send(Entry {
                sink: Arc::downgrade(sink),
                next,
                due: Instant::now() + self.interval,
            })
            .is_ok()
    }
}

/// Registrations taken from the queue at once.
const REGISTRATIONS_AT_ONCE: usize = 256;

async fn run(
    settings: CounterSettings,
    mut incoming: mpsc::UnboundedReceiver<Entry>,
    metrics: Arc<StreamMetrics>,
) {
    let grid = grid(settings.interval);
    let mut events = Events::new(settings);
    let mut schedule = Schedule::default();
    let mut firing = Vec::new();
    let mut arrived = Vec::with_capacity(REGISTRATIONS_AT_ONCE);
    // One timer, moved to the earliest due step whenever that changes.
    let idle = || Instant::now() + Duration::from_secs(24 * 3600);
    let timer = tokio::time::sleep_until(idle());
    tokio::pin!(timer);
    loop {
        let wake = schedule
            .due
            .first_key_value()
            .map_or_else(idle, |(at, _)| *at);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            count = incoming.recv_many(&mut arrived, REGISTRATIONS_AT_ONCE) => {
                if count == 0 {
                    return;
                }
                for entry in arrived.drain(..) {
                    schedule.insert(entry, grid);
                }
                schedule.prune_now_and_then();
            }
            () = &mut timer => {
                let fired = Instant::now();
                while let Some(step) = schedule.due.first_entry().filter(|step| *step.key() <= fired) {
                    let mut step = step.remove();
                    schedule.len -= step.len();
                    firing.append(&mut step);
                }
                // One write per stream, ~5-10 µs each: the 500 streams due in a step at the
                // open-file limit (20,000 streams a process at a 1 s interval) take a few
                // milliseconds, well within the 25 ms step.
                let mut written = 0;
                for entry in firing.drain(..) {
                    let (delivery, next) = send(entry, &mut events, fired, settings.interval, grid);
                    written += u64::from(delivery == Some(Delivery::Written));
                    if let Some(entry) = next {
                        schedule.insert(entry, grid);
                    }
                }
                metrics.written_directly(written);
            }
        }
    }
}

/// The streams by due step.
#[derive(Default)]
struct Schedule {
    due: BTreeMap<Instant, Vec<Entry>>,
    len: usize,
    /// Registrations since dead entries were last pruned.
    since_pruned: usize,
}

impl Schedule {
    fn insert(&mut self, entry: Entry, grid: Duration) {
        self.due
            .entry(round_up(entry.due, grid))
            .or_default()
            .push(entry);
        self.len += 1;
        self.since_pruned += 1;
    }

    /// Drops the entries of streams that are gone once registrations since the last time
    /// reach half the schedule: what clients that left hold (a weak reference until their
    /// next due time, up to an interval) stays bounded, at a cost of O(1) a registration.
    fn prune_now_and_then(&mut self) {
        if self.since_pruned < self.len / 2 + 1024 {
            return;
        }
        self.since_pruned = 0;
        self.due.retain(|_, entries| {
            entries.retain(|entry| entry.sink.strong_count() > 0);
            !entries.is_empty()
        });
        self.len = self.due.values().map(Vec::len).sum();
    }
}

impl Drop for Schedule {
    /// The clock stopped (the server is gone, or a panic): streams still open end now
    /// rather than wait for events that will never come.
    fn drop(&mut self) {
        for entry in self.due.values().flatten() {
            if let Some(sink) = entry.sink.upgrade() {
                sink.close();
            }
        }
    }
}

/// Hands `entry` its next event; returns what became of it (`None`: the stream is gone)
/// and the entry with its following event, unless it is done.
fn send(
    mut entry: Entry,
    events: &mut Events,
    fired: Instant,
    interval: Duration,
    grid: Duration,
) -> (Option<Delivery>, Option<Entry>) {
    let Some(sink) = entry.sink.upgrade() else {
        return (None, None);
    };
    let event = events.get(entry.next);
    let last = entry.next > events.count;
    // The end event is queued, not written: the stream's task sends it together with the
    // end of the response, in one write.
    let delivery = sink.deliver(&event, !last);
    if delivery == Delivery::Full || last {
        // After the end event, or for a client so far behind that its queue is full: the
        // stream ends after what it has, and a client that was cut off resumes from its
        // last id.
        sink.close();
        return (Some(delivery), None);
    }
    entry.next += 1;
    let next = entry.due + interval;
    entry.due = if next + grid < fired {
        fired + interval
    } else {
        next
    };
    (Some(delivery), Some(entry))
}

/// The counter's events, encoded once each (up to [`CACHED_EVENTS`]).
struct Events {
    count: u32,
    retry: Duration,
    cached: Vec<Arc<Update>>,
    end: Arc<Update>,
}

impl Events {
    fn new(settings: CounterSettings) -> Self {
        Self {
            count: settings.count,
            retry: settings.retry,
            cached: Vec::new(),
            end: Update::raw(end_event()),
        }
    }

    /// Event `n`: message `n`, or the end event past the last message.
    fn get(&mut self, n: u32) -> Arc<Update> {
        if n > self.count {
            return Arc::clone(&self.end);
        }
        if n > CACHED_EVENTS {
            return Update::raw(message(n, self.retry));
        }
        while self.cached.len() < n as usize {
            let next = self.cached.len() as u32 + 1;
            self.cached.push(Update::raw(message(next, self.retry)));
        }
        Arc::clone(&self.cached[n as usize - 1])
    }
}

/// The wake-up grid for streams sending every `interval`: a fortieth of it, at least 1 ms
/// (the timer's resolution) and at most 25 ms.
pub fn grid(interval: Duration) -> Duration {
    (interval / 40).clamp(Duration::from_millis(1), Duration::from_millis(25))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn ticks_land_on_a_shared_grid_never_early() {
        let grid = grid(Duration::from_secs(1));
        assert_eq!(grid, Duration::from_millis(25));
        assert_eq!(
            super::grid(Duration::from_millis(20)),
            Duration::from_millis(1)
        );
        let start = Instant::now();
        let mut woken = Vec::new();
        for offset_us in [0, 1, 3_333, 24_999, 25_000, 123_456] {
            let due = start + Duration::from_micros(offset_us);
            let at = round_up(due, grid);
            assert!(at >= due, "early by {:?}", due - at);
            assert!(at - due < grid, "late by {:?}", at - due);
            woken.push(at);
        }
        // Due times within one step share one wake-up.
        assert_eq!(
            round_up(start + Duration::from_micros(2_001), grid),
            round_up(start + Duration::from_micros(2_002), grid)
        );
        // Rounding is idempotent: a grid point stays where it is.
        for at in woken {
            assert_eq!(round_up(at, grid), at);
        }
    }

    fn settings(count: u32) -> CounterSettings {
        CounterSettings {
            count,
            interval: Duration::from_secs(1),
            retry: Duration::from_secs(15),
        }
    }

    /// The next event the clock hands `sink` (queued: no socket is attached), with when.
    async fn next(sink: &Sink) -> Option<(Instant, Bytes)> {
        let event = sink.recv().await?;
        sink.written();
        Some((Instant::now(), event.wire.clone()))
    }

    #[tokio::test(start_paused = true)]
    async fn sends_each_event_on_time_without_drift_then_the_end() {
        let settings = settings(5);
        let interval = settings.interval;
        // Late by less than one grid step, plus the timer's 1 ms resolution.
        let late = grid(interval) + Duration::from_millis(1);
        let clock = Clock::start(settings, Arc::default());
        let sink = Sink::new(4);
        let start = Instant::now();
        assert!(clock.register(&sink, 2));
        for n in 2..=5u32 {
            let (at, wire) = next(&sink).await.expect("an event");
            assert_eq!(wire, message(n, settings.retry));
            let elapsed = at - start;
            let due = interval * (n - 1);
            assert!(elapsed >= due, "message {n} early: {elapsed:?}");
            assert!(elapsed < due + late, "message {n} drifted: {elapsed:?}");
        }
        let (at, wire) = next(&sink).await.expect("the end event");
        assert_eq!(wire, end_event());
        assert!(at - start >= interval * 5);
        assert!(
            next(&sink).await.is_none(),
            "the stream ends after the end event"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_delays_the_next_event_instead_of_bursting() {
        let settings = settings(10);
        let interval = settings.interval;
        let late = grid(interval) + Duration::from_millis(1);
        let clock = Clock::start(settings, Arc::default());
        let sink = Sink::new(4);
        assert!(clock.register(&sink, 1));
        next(&sink).await.expect("message 1");
        // The runtime stalls for 3.5 intervals: the next event comes at once, then one an
        // interval after it, not a burst of the missed ones.
        tokio::time::advance(interval * 7 / 2).await;
        let (at, wire) = next(&sink).await.expect("message 2");
        assert_eq!(wire, message(2, settings.retry));
        let (after, wire) = next(&sink).await.expect("message 3");
        assert_eq!(wire, message(3, settings.retry));
        assert!(after - at >= interval - late, "burst: {:?}", after - at);
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_off_a_stream_that_does_not_read() {
        let settings = settings(100);
        let interval = settings.interval;
        let clock = Clock::start(settings, Arc::default());
        // Nobody takes from this one: when its queue is full, the clock closes it.
        let stuck = Sink::new(2);
        assert!(clock.register(&stuck, 1));
        tokio::time::sleep(interval * 5).await;
        assert_eq!(
            stuck.try_recv().map(|e| e.wire.clone()),
            Some(message(1, settings.retry))
        );
        assert_eq!(
            stuck.try_recv().map(|e| e.wire.clone()),
            Some(message(2, settings.retry))
        );
        assert!(stuck.try_recv().is_none());
        assert!(
            stuck.recv().await.is_none(),
            "closed after its queue was full"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_end_when_the_clock_stops() {
        let clock = Clock::start(settings(10), Arc::default());
        let sink = Sink::new(4);
        assert!(clock.register(&sink, 1));
        drop(clock);
        assert!(
            sink.recv().await.is_none(),
            "closed when the clock's task ended"
        );
    }

    #[test]
    fn forgets_streams_that_are_gone() {
        let grid = grid(Duration::from_secs(1));
        let mut schedule = Schedule::default();
        let live = Sink::new(1);
        let entry = |sink: &Arc<Sink>| Entry {
            sink: Arc::downgrade(sink),
            next: 2,
            due: Instant::now(),
        };
        schedule.insert(entry(&live), grid);
        for _ in 0..2_200 {
            let gone = Sink::new(1);
            schedule.insert(entry(&gone), grid);
        }
        assert_eq!(schedule.len, 2_201);
        schedule.prune_now_and_then();
        assert_eq!(schedule.len, 1);
        assert_eq!(schedule.due.values().map(Vec::len).sum::<usize>(), 1);
    }

    #[test]
    fn encodes_events_once_and_shares_them() {
        let mut events = Events::new(settings(3));
        let first = events.get(2);
        assert!(Arc::ptr_eq(&first, &events.get(2)));
        assert_eq!(first.wire, message(2, Duration::from_secs(15)));
        assert_eq!(events.get(4).wire, end_event());
        assert_eq!(events.get(4_000_000).wire, end_event());
    }
}
