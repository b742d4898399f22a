//! A worker: one share of the run's connections, opened at the run's pace, reporting
//! progress every second and a summary at the end.
//!
//! A worker is single-threaded (a current-thread runtime and a `LocalSet`), so its
//! connections share their counters and histograms through `RefCell`s without locks or
//! atomics. It is driven by commands and reports over channels; [`crate::fleet`] connects
//! those to a child process's stdin/stdout or to a thread. It stops on `Stop`, when its
//! commands end (the coordinator is gone), or at its deadline, whichever comes first: a
//! worker never outlives its run.

use std::{cell::RefCell, rc::Rc, time::Duration};

use tokio::{
    sync::{
        mpsc::{UnboundedReceiver, UnboundedSender},
        Notify,
    },
    time::{Instant, MissedTickBehavior},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    payload, procstat,
    protocol::{FromWorker, Progress, ToWorker, Tracking, WorkerSpec, WorkerSummary},
    seqtrack::{Owed, SeqCounts, SeqTracker},
    stats::{Counts, StatsError},
    subscriber,
    timeline::Timeline,
    worker_state::{Live, WorkerContext},
};

/// How often a worker reports progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long connections get to wind down after a stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs a worker until it stops; must be called inside a `LocalSet`.
///
/// `process_stats` adds the process's own memory and CPU to the summary (for workers that
/// are processes of their own).
pub async fn run(
    spec: WorkerSpec,
    mut commands: UnboundedReceiver<ToWorker>,
    reports: UnboundedSender<FromWorker>,
    process_stats: bool,
) {
    let ctx = match WorkerContext::new(spec) {
        Ok(ctx) => Rc::new(ctx),
        Err(error) => {
            let _ = reports.send(FromWorker::Fatal {
                message: error.to_string(),
            });
            return;
        }
    };
    let tasks = TaskTracker::new();
    tokio::task::spawn_local(ramp(Rc::clone(&ctx), tasks.clone()));

    let deadline = instant_at(ctx.spec.deadline_unix_ns);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(ToWorker::Published { first_seq, sent_ns }) => {
                    if let Err(gap) = ctx.timeline.borrow_mut().extend(first_seq, &sent_ns) {
                        eprintln!("loadgen worker {}: {gap}", ctx.spec.index);
                    }
                }
                Some(ToWorker::Failed { seqs }) => {
                    let mut timeline = ctx.timeline.borrow_mut();
                    for seq in seqs {
                        timeline.mark_failed(seq);
                    }
                }
                Some(ToWorker::Start(_)) => {}
                Some(ToWorker::Stop) | None => break,
            },
            _ = ticker.tick() => {
                if reports.send(FromWorker::Progress(Box::new(ctx.progress()))).is_err() {
                    break;
                }
            }
            () = ctx.milestone.notified() => {
                if reports.send(FromWorker::Progress(Box::new(ctx.progress()))).is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }

    ctx.stop.cancel();
    tasks.close();
    let _ = tokio::time::timeout(STOP_GRACE, tasks.wait()).await;
    let mut summary = ctx.summary();
    if process_stats {
        summary.process = procstat::sample_self().ok();
    }
    let _ = reports.send(FromWorker::Final(Box::new(summary)));
}

/// Opens this worker's connections at their scheduled times.
async fn ramp(ctx: Rc<WorkerContext>, tasks: TaskTracker) {
    let start = instant_at(ctx.spec.start_unix_ns);
    let rate = ctx.spec.ramp_rate.max(f64::MIN_POSITIVE);
    let mut index = ctx.spec.index;
    while index < ctx.spec.connections {
        let Some(at) = Duration::try_from_secs_f64(index as f64 / rate)
            .ok()
            .and_then(|offset| start.checked_add(offset))
        else {
            break;
        };
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => break,
            () = tokio::time::sleep_until(at) => {}
        }
        ctx.live.borrow_mut().connections.attempted += 1;
        tasks.spawn_local(subscriber::run(index, Rc::clone(&ctx)));
        index += ctx.spec.workers.max(1);
    }
    let mut live = ctx.live.borrow_mut();
    live.ramp_done = true;
    ctx.check_milestones(&mut live);
}

/// The last id a connection of the counter stream is owed: the expected count when one was
/// given (so the ids lost at the end of a stream, or a whole stream that carried none, are
/// missing), raised to the highest id seen if the stream ran past it (so the extra ids show
/// as owed beyond the count); without a count, the highest id seen.
fn sequential_end(expected: Option<u64>, tracker: &SeqTracker) -> Option<u64> {
    match (expected, tracker.max_seen()) {
        (Some(expected), Some(seen)) => Some(expected.max(seen)),
        (expected, seen) => expected.or(seen),
    }
}

/// The `Instant` at which the wall clock reads `unix_ns`.
fn instant_at(unix_ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(unix_ns.saturating_sub(payload::unix_nanos()))
}

impl WorkerContext {
    fn new(spec: WorkerSpec) -> Result<Self, StatsError> {
        Ok(Self {
            requests: spec
                .targets
                .iter()
                .map(|target| target.request.clone().into_bytes())
                .collect(),
            spec,
            stop: CancellationToken::new(),
            live: RefCell::new(Live::new()?),
            timeline: RefCell::new(Timeline::new()),
            records: RefCell::new(Vec::new()),
            milestone: Notify::new(),
        })
    }

    fn progress(&self) -> Progress {
        let mut live = self.live.borrow_mut();
        let latency = live.interval.to_wire();
        live.interval.reset();
        Progress {
            connections: live.connections,
            events: live.events.total,
            stamped: live.events.stamped,
            ramp_done: live.ramp_done,
            last_settled_unix_ns: live.last_settled_ns,
            latency,
        }
    }

    /// Settles every connection's sequence checks against the final log.
    fn summary(&self) -> WorkerSummary {
        let live = self.live.borrow();
        let timeline = self.timeline.borrow();
        let records = self.records.borrow();
        let mut seq = SeqCounts::default();
        let mut connections_with_missing = 0;
        let mut connections_with_duplicates = 0;
        let mut connections_complete = 0;
        let mut events_per_connection = Counts::default();
        for record in records.iter() {
            events_per_connection.record(record.events);
            let Some(tracker) = &record.tracker else {
                continue;
            };
            let counts = match self.spec.tracking {
                Tracking::Published => tracker.finish(
                    timeline.last_seq(),
                    &Owed::Published {
                        timeline: &timeline,
                        after_ns: record.established_ns,
                        before_ns: record.closed_ns,
                    },
                ),
                Tracking::SequentialIds => tracker.finish(
                    sequential_end(self.spec.expected_ids, tracker),
                    &Owed::Every,
                ),
                Tracking::Off => continue,
            };
            connections_with_missing += u64::from(counts.missing > 0);
            connections_with_duplicates += u64::from(counts.duplicates > 0);
            // A counter stream that ran past its count did not end correctly either.
            let within_count = match (self.spec.tracking, self.spec.expected_ids) {
                (Tracking::SequentialIds, Some(expected)) => {
                    tracker.max_seen().unwrap_or(0) <= expected
                }
                _ => true,
            };
            connections_complete +=
                u64::from(record.closed_by_server && counts.is_exact() && within_count);
            seq.add(&counts);
        }
        WorkerSummary {
            index: self.spec.index,
            pid: std::process::id(),
            connections: live.connections,
            failures: live.failures.clone(),
            events: live.events.clone(),
            latency: live.latency.to_wire(),
            seq,
            connections_with_missing,
            connections_with_duplicates,
            connections_complete,
            events_per_connection,
            process: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker_state::ConnRecord;

    fn context(tracking: Tracking, expected_ids: Option<u64>) -> WorkerContext {
        WorkerContext::new(WorkerSpec {
            index: 0,
            workers: 1,
            connections: 4,
            ramp_rate: 1.0,
            start_unix_ns: 0,
            deadline_unix_ns: 0,
            targets: Vec::new(),
            source_addrs: Vec::new(),
            tracking,
            expected_ids,
            connect_timeout_ms: 1,
            max_event_bytes: 1024,
        })
        .unwrap()
    }

    fn record(ids: impl IntoIterator<Item = u64>, closed_by_server: bool) -> ConnRecord {
        let mut tracker = SeqTracker::new(1);
        let mut events = 0;
        for id in ids {
            tracker.record(id, &Owed::Every);
            events += 1;
        }
        ConnRecord {
            events,
            tracker: Some(tracker),
            established_ns: 1,
            closed_ns: 2,
            closed_by_server,
        }
    }

    fn counter_records() -> Vec<ConnRecord> {
        vec![
            // Ids 1..=20, ended by the server: the one complete stream.
            record(1..=20, true),
            // The last three ids lost.
            record(1..=17, true),
            // Nothing at all.
            record([], true),
            // Every id, but it ended in an error.
            record(1..=20, false),
            // One id past the count.
            record(1..=21, true),
        ]
    }

    #[test]
    fn counter_streams_owe_every_expected_id() {
        let ctx = context(Tracking::SequentialIds, Some(20));
        *ctx.records.borrow_mut() = counter_records();
        let summary = ctx.summary();
        assert_eq!(summary.seq.owed, 20 * 4 + 21);
        assert_eq!(summary.seq.missing, 3 + 20);
        assert_eq!(summary.connections_with_missing, 2);
        assert_eq!(summary.connections_complete, 1);
    }

    #[test]
    fn without_a_count_ids_are_owed_up_to_the_highest_seen() {
        let ctx = context(Tracking::SequentialIds, None);
        *ctx.records.borrow_mut() = counter_records();
        let summary = ctx.summary();
        assert_eq!(summary.seq.owed, 20 + 17 + 20 + 21);
        assert_eq!(summary.seq.missing, 0);
        assert_eq!(summary.connections_complete, 4);
    }
}
