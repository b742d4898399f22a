//! The coordinator: starts the workers and the publisher, keeps time, samples the server
//! and itself every second, and assembles the results.
//!
//! A run goes through four phases. *Running*: workers open their connections at the ramp
//! rate from the start time, and the publisher sends from the start (or from the end of the
//! ramp) until `duration` has passed. *Stopping the publisher*: no new updates; requests in
//! flight finish. *Draining*: `drain` more time for deliveries in flight. *Stopping*: workers
//! close their connections, settle each connection's counts against the now complete
//! publish log, and send their summaries. Every phase is bounded, so a run always ends by
//! itself: after `duration`, on Ctrl-C, when every stream has ended (nothing published and
//! no connection left open), or if every worker is gone.

use std::{cell::RefCell, collections::BTreeMap, io, rc::Rc, time::Duration};

use tokio::{sync::Notify, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Plan,
    fleet::{Fleet, FleetError, FleetEvent, Launch},
    payload,
    procstat::{self, ProcError, ProcSample},
    protocol::{ConnCounts, EventCounts, FromWorker, Progress, ToWorker, Tracking, WorkerSummary},
    publisher::{PublishLog, Publisher},
    report::{
        ConnectionsReport, EventsReport, LoadgenReport, PublishReport, Report, RunReport, Sample,
        SequenceReport, ServerReport,
    },
    seqtrack::SeqCounts,
    stats::{Counts, Latency, StatsError},
};

/// Time between starting the workers and the first connection, for processes to start.
const START_DELAY: Duration = Duration::from_millis(200);
/// How often the publish log is passed to the workers.
const FORWARD_INTERVAL: Duration = Duration::from_millis(10);
/// How long workers get to send their summaries after `Stop`.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long workers keep going on their own if the coordinator falls silent.
const WORKER_DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// Why a run could not be carried out (measured failures are results, not errors).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runtime could not be built.
    #[error("cannot build a runtime: {0}")]
    Runtime(io::Error),
    /// The open-file limit could not be raised.
    #[error("open-file limit: {0}")]
    Limit(ProcError),
    /// A `--server-pid` cannot be sampled.
    #[error("--server-pid: {0}")]
    ServerPid(ProcError),
    /// Workers could not be started.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// Statistics could not be built or merged.
    #[error(transparent)]
    Stats(#[from] StatsError),
}

/// Carries out `plan` with workers launched as `launch`, blocking until it is done.
pub fn run(plan: &Plan, launch: Launch) -> Result<Report, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, coordinate(plan, launch))
}

/// What the coordinator knows about one worker.
#[derive(Default)]
struct WorkerState {
    pid: Option<u32>,
    progress: Option<Progress>,
    summary: Option<WorkerSummary>,
    gone: bool,
    error: Option<String>,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    StoppingPublisher,
    Draining,
    Stopping,
}

/// The server's figures as they accumulate.
struct ServerTrack {
    pids: Vec<u32>,
    before: ProcSample,
    last: ProcSample,
    peak_rss_kb: u64,
    after_ramp: Option<(u64, u64)>,
    errors: u64,
}

/// Live totals over the workers' latest progress reports.
#[derive(Default)]
struct Totals {
    connections: ConnCounts,
    events: u64,
    stamped: u64,
    reporting: usize,
    ramp_done: usize,
    last_settled_unix_ns: u64,
}

struct Coordinator<'a> {
    plan: &'a Plan,
    workers: Vec<WorkerState>,
    live_latency: Latency,
    publish_log: Option<Rc<RefCell<PublishLog>>>,
    server: Option<ServerTrack>,
    start: Instant,
    start_unix_ns: u64,
    samples: Vec<Sample>,
    last_tick: Instant,
    last_events: u64,
    last_stamped: u64,
    last_published: u64,
    /// Own CPU ticks per process (`None`: this process) at the last sample.
    own_ticks: BTreeMap<Option<u32>, u64>,
    last_own_total: u64,
    ramp_s: Option<f64>,
    ramp_complete: Rc<Notify>,
}

async fn coordinate(plan: &Plan, launch: Launch) -> Result<Report, RunError> {
    let started_unix_ms = payload::unix_nanos() / 1_000_000;
    let wall_start = Instant::now();
    let nofile = procstat::raise_nofile_limit().map_err(RunError::Limit)?;
    // Workers run with the same limit: keep their share of connections under it.
    let fitted;
    let plan = match fit_to_file_limit(plan, nofile.soft) {
        Some(adjusted) => {
            eprintln!(
                "loadgen: the open-file limit is {}: at most {} connections per worker",
                nofile.soft, adjusted.conns_per_worker
            );
            fitted = adjusted;
            &fitted
        }
        None => plan,
    };
    let server = if plan.server_pids.is_empty() {
        None
    } else {
        let before = procstat::sample_all(&plan.server_pids).map_err(RunError::ServerPid)?;
        Some(ServerTrack {
            pids: plan.server_pids.clone(),
            before,
            last: before,
            peak_rss_kb: before.rss_kb,
            after_ramp: None,
            errors: 0,
        })
    };
    let own_before = procstat::own_and_children_cpu_secs().unwrap_or_default();

    let start = Instant::now() + START_DELAY;
    let start_unix_ns = payload::unix_nanos() + duration_nanos(START_DELAY);
    let deadline_unix_ns = start_unix_ns
        + duration_nanos(plan.duration + plan.drain + WORKER_DEADLINE_MARGIN)
        + plan
            .publish
            .as_ref()
            .map_or(0, |publish| duration_nanos(publish.timeout));
    let mut fleet = Fleet::start(&launch, plan.worker_specs(start_unix_ns, deadline_unix_ns))?;

    let mut coordinator = Coordinator {
        plan,
        workers: (0..fleet.len()).map(|_| WorkerState::default()).collect(),
        live_latency: Latency::new()?,
        publish_log: None,
        server,
        start,
        start_unix_ns,
        samples: Vec::new(),
        last_tick: start,
        last_events: 0,
        last_stamped: 0,
        last_published: 0,
        own_ticks: BTreeMap::new(),
        last_own_total: 0,
        ramp_s: None,
        ramp_complete: Rc::new(Notify::new()),
    };
    for (state, pid) in coordinator.workers.iter_mut().zip(fleet_pids(&fleet)) {
        state.pid = pid;
    }
    coordinator.own_ticks = coordinator.read_own_ticks();
    coordinator.last_own_total = coordinator.own_ticks.values().sum();

    // The publisher.
    let stop_publishing = CancellationToken::new();
    let mut publisher_task: Option<JoinHandle<()>> = match &plan.publish {
        Some(publish_plan) => {
            let log = Rc::new(RefCell::new(PublishLog::new()?));
            coordinator.publish_log = Some(Rc::clone(&log));
            let publisher = Rc::new(Publisher::new(publish_plan.clone(), log));
            let stop = stop_publishing.clone();
            let ramp_complete = Rc::clone(&coordinator.ramp_complete);
            let after_ramp = plan.publish_after_ramp;
            Some(tokio::task::spawn_local(async move {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(start) => {}
                }
                if after_ramp {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = ramp_complete.notified() => {}
                    }
                }
                publisher.run(stop).await;
            }))
        }
        None => None,
    };

    let mut phase = Phase::Running;
    let mut phase_deadline = start + plan.duration;
    let mut stop_reason = "duration";
    let mut stopped_at = None;
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forward = tokio::time::interval(FORWARD_INTERVAL);
    forward.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let publishing = coordinator.publish_log.is_some();
    let ctrl_c = ctrl_c_future(plan.handle_ctrl_c);
    tokio::pin!(ctrl_c);

    loop {
        let mut next_phase = false;
        tokio::select! {
            event = fleet.next() => {
                match event {
                    Some(event) => {
                        coordinator.on_event(event);
                        if phase == Phase::Running
                            && !publishing
                            && coordinator.all_streams_ended(&coordinator.totals())
                        {
                            stop_reason = "all_streams_ended";
                            next_phase = true;
                        }
                    }
                    None => {
                        if phase == Phase::Running {
                            stop_reason = "workers_gone";
                        }
                        break;
                    }
                }
                // Nothing left to wait for: every worker reported its summary or is gone.
                if coordinator.workers.iter().all(|worker| worker.gone || worker.summary.is_some()) {
                    if phase != Phase::Stopping {
                        stop_reason = "workers_gone";
                    }
                    break;
                }
            }
            _ = ticker.tick() => {
                let totals = coordinator.sample();
                if phase == Phase::Running && !publishing && coordinator.all_streams_ended(&totals) {
                    stop_reason = "all_streams_ended";
                    next_phase = true;
                }
            }
            _ = forward.tick(), if publishing => coordinator.forward_log(&fleet),
            () = wait_for(&mut publisher_task), if phase == Phase::StoppingPublisher => {
                publisher_task = None;
                next_phase = true;
            }
            () = tokio::time::sleep_until(phase_deadline) => {
                if phase == Phase::Stopping {
                    break;
                }
                next_phase = true;
            }
            () = &mut ctrl_c, if phase == Phase::Running => {
                eprintln!("loadgen: interrupted, stopping");
                stop_reason = "interrupted";
                next_phase = true;
            }
        }
        if !next_phase {
            continue;
        }
        // Advance: Running → StoppingPublisher → Draining → Stopping.
        if phase == Phase::Running {
            stop_publishing.cancel();
            phase = Phase::StoppingPublisher;
            // Bounded by the publisher itself; this is a backstop.
            phase_deadline = Instant::now()
                + plan.publish.as_ref().map_or(Duration::ZERO, |publish| {
                    publish.timeout + Duration::from_secs(2)
                });
            if publisher_task.is_some() {
                continue;
            }
        }
        if phase == Phase::StoppingPublisher {
            coordinator.forward_log(&fleet);
            phase = Phase::Draining;
            let drain = if publishing && stop_reason != "interrupted" {
                plan.drain
            } else {
                Duration::ZERO
            };
            phase_deadline = Instant::now() + drain;
            if !drain.is_zero() {
                continue;
            }
        }
        if phase == Phase::Draining {
            fleet.broadcast(&ToWorker::Stop);
            stopped_at = Some(Instant::now());
            phase = Phase::Stopping;
            phase_deadline = Instant::now() + SUMMARY_TIMEOUT;
        }
    }
    let stopped_at = stopped_at.unwrap_or_else(Instant::now);
    coordinator.forward_log(&fleet);
    let worker_pids = fleet.pids();
    fleet.shutdown().await;
    if let Some(task) = publisher_task {
        task.abort();
    }

    let own_after = procstat::own_and_children_cpu_secs().unwrap_or_default();
    let wall = wall_start.elapsed().as_secs_f64();
    let worker_count = worker_pids.len().max(coordinator.workers.len());
    coordinator.finish(FinishInfo {
        started_unix_ms,
        stop_reason,
        stopped_at,
        nofile: nofile.soft,
        worker_processes: matches!(launch, Launch::Processes { .. }),
        worker_count,
        own_cpu: (own_after.0 - own_before.0, own_after.1 - own_before.1),
        wall,
    })
}

/// Files a process needs besides its connections (runtime, pipes, /proc reads).
const SPARE_FILES: u64 = 64;

/// The plan with fewer connections per worker process if `nofile` cannot hold a worker's
/// share; `None` if it fits.
fn fit_to_file_limit(plan: &Plan, nofile: u64) -> Option<Plan> {
    let room = usize::try_from(nofile.saturating_sub(SPARE_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    // Thread workers share this process; the flag's own limit is all that can be done.
    if plan.in_process || plan.conns_per_worker <= room {
        return None;
    }
    let mut fitted = plan.clone();
    fitted.conns_per_worker = room;
    Some(fitted)
}

fn fleet_pids(fleet: &Fleet) -> Vec<Option<u32>> {
    let pids = fleet.pids();
    (0..fleet.len())
        .map(|index| pids.get(index).copied())
        .collect()
}

/// Waits for the task if there is one, forever otherwise.
async fn wait_for(task: &mut Option<JoinHandle<()>>) {
    match task {
        Some(task) => {
            let _ = task.await;
        }
        None => std::future::pending().await,
    }
}

/// Completes on Ctrl-C if `enabled`, never otherwise.
async fn ctrl_c_future(enabled: bool) {
    if enabled && tokio::signal::ctrl_c().await.is_ok() {
        return;
    }
    std::future::pending::<()>().await;
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What the end of the run adds to the report.
struct FinishInfo {
    started_unix_ms: u64,
    stop_reason: &'static str,
    stopped_at: Instant,
    nofile: u64,
    worker_processes: bool,
    worker_count: usize,
    /// CPU seconds of this process and of waited-for children during the run.
    own_cpu: (f64, f64),
    wall: f64,
}

impl Coordinator<'_> {
    fn on_event(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::Report(index, report) => {
                let Some(state) = self.workers.get_mut(index) else {
                    return;
                };
                match report {
                    FromWorker::Ready { pid, .. } => state.pid = Some(pid),
                    FromWorker::Progress(progress) => {
                        if let Ok(interval) = Latency::from_wire(&progress.latency) {
                            let _ = self.live_latency.merge(&interval);
                        }
                        state.progress = Some(*progress);
                        let totals = self.totals();
                        self.check_ramp(&totals);
                    }
                    FromWorker::Final(summary) => state.summary = Some(*summary),
                    FromWorker::Fatal { message } => {
                        eprintln!("loadgen: worker {index}: {message}");
                        state.error = Some(message);
                    }
                }
            }
            FleetEvent::Gone(index) => {
                if let Some(state) = self.workers.get_mut(index) {
                    state.gone = true;
                }
            }
        }
    }

    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for progress in self
            .workers
            .iter()
            .filter_map(|worker| worker.progress.as_ref())
        {
            totals.connections.add(&progress.connections);
            totals.events += progress.events;
            totals.stamped += progress.stamped;
            totals.reporting += 1;
            totals.ramp_done += usize::from(progress.ramp_done);
            totals.last_settled_unix_ns = totals
                .last_settled_unix_ns
                .max(progress.last_settled_unix_ns);
        }
        totals
    }

    fn ramp_finished(&self, totals: &Totals) -> bool {
        totals.reporting == self.workers.len()
            && totals.ramp_done == self.workers.len()
            && totals.connections.pending() == 0
    }

    /// Notes the end of the ramp (every connection established or failed) the first time
    /// it is seen, and lets a publisher waiting for it go.
    fn check_ramp(&mut self, totals: &Totals) {
        if self.ramp_s.is_none() && self.ramp_finished(totals) {
            let settled = totals.last_settled_unix_ns.max(self.start_unix_ns);
            self.ramp_s = Some((settled - self.start_unix_ns) as f64 / 1e9);
            // The server's memory with every connection made: the base of the
            // per-connection figure.
            if let Some(server) = &mut self.server {
                match procstat::sample_all(&server.pids) {
                    Ok(sample) => {
                        server.peak_rss_kb = server.peak_rss_kb.max(sample.rss_kb);
                        server.after_ramp = Some((sample.rss_kb, totals.connections.open()));
                    }
                    Err(_) => server.errors += 1,
                }
            }
            self.ramp_complete.notify_one();
        }
    }

    fn all_streams_ended(&self, totals: &Totals) -> bool {
        self.ramp_finished(totals) && totals.connections.open() == 0
    }

    /// Passes new publish-log entries to the workers.
    fn forward_log(&self, fleet: &Fleet) {
        let Some(log) = &self.publish_log else {
            return;
        };
        let (first_seq, sent_ns, failed) = log.borrow_mut().take_unforwarded();
        if !sent_ns.is_empty() {
            fleet.broadcast(&ToWorker::Published { first_seq, sent_ns });
        }
        if !failed.is_empty() {
            fleet.broadcast(&ToWorker::Failed { seqs: failed });
        }
    }

    fn read_own_ticks(&self) -> BTreeMap<Option<u32>, u64> {
        let mut ticks = BTreeMap::new();
        if let Ok(own) = procstat::sample_self() {
            ticks.insert(None, own.cpu_ticks);
        }
        for pid in self.workers.iter().filter_map(|worker| worker.pid) {
            if let Ok(sample) = procstat::sample(pid) {
                ticks.insert(Some(pid), sample.cpu_ticks);
            }
        }
        ticks
    }

    /// Takes the once-a-second sample and prints the status line.
    fn sample(&mut self) -> Totals {
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        let totals = self.totals();

        self.check_ramp(&totals);

        let published = self
            .publish_log
            .as_ref()
            .map_or(0, |log| log.borrow().timeline.len());
        let per_second = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;

        let (server_rss_kb, server_cpu_percent) = match &mut self.server {
            Some(server) => match procstat::sample_all(&server.pids) {
                Ok(sample) => {
                    let cpu = procstat::ticks_to_secs(
                        sample.cpu_ticks.saturating_sub(server.last.cpu_ticks),
                    );
                    server.last = sample;
                    server.peak_rss_kb = server.peak_rss_kb.max(sample.rss_kb);
                    (Some(sample.rss_kb), Some(cpu / dt * 100.0))
                }
                Err(_) => {
                    server.errors += 1;
                    (None, None)
                }
            },
            None => (None, None),
        };

        let own_ticks = self.read_own_ticks();
        for (process, ticks) in own_ticks {
            self.own_ticks.insert(process, ticks);
        }
        let own_total: u64 = self.own_ticks.values().sum();
        let own_cpu = procstat::ticks_to_secs(own_total.saturating_sub(self.last_own_total));
        self.last_own_total = own_total;

        let sample = Sample {
            t_s: now.duration_since(self.start).as_secs_f64(),
            open: totals.connections.open(),
            established: totals.connections.established,
            failed: totals.connections.failed,
            events_per_s: per_second(totals.events, self.last_events),
            stamped_per_s: per_second(totals.stamped, self.last_stamped),
            p99_us: (self.live_latency.count() > 0).then(|| self.live_latency.percentile(990)),
            published_per_s: per_second(published, self.last_published),
            server_rss_kb,
            server_cpu_percent,
            loadgen_cpu_percent: own_cpu / dt * 100.0,
        };
        self.last_events = totals.events;
        self.last_stamped = totals.stamped;
        self.last_published = published;
        if !self.plan.quiet {
            eprintln!("{}", sample.status_line(self.plan.connections));
        }
        self.samples.push(sample);
        totals
    }

    /// Merges the workers' summaries into the report.
    fn finish(mut self, info: FinishInfo) -> Result<Report, RunError> {
        let server_end = self
            .server
            .as_ref()
            .map(|server| procstat::sample_all(&server.pids));
        let mut connections = ConnCounts::default();
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut events = EventCounts::default();
        let mut latency = Latency::new()?;
        let mut seq = SeqCounts::default();
        let mut connections_with_missing = 0;
        let mut connections_with_duplicates = 0;
        let mut connections_complete = 0;
        let mut per_connection = Counts::default();
        let mut worker_peak_rss_kb = Vec::new();
        let mut workers_lost = 0;
        let mut worker_errors = Vec::new();
        for (index, worker) in self.workers.iter().enumerate() {
            if let Some(error) = &worker.error {
                worker_errors.push(format!("worker {index}: {error}"));
            }
            let Some(summary) = &worker.summary else {
                workers_lost += 1;
                continue;
            };
            connections.add(&summary.connections);
            for (reason, count) in &summary.failures {
                *failures.entry(reason.clone()).or_insert(0) += count;
            }
            events.add(&summary.events);
            latency.merge(&Latency::from_wire(&summary.latency)?)?;
            seq.add(&summary.seq);
            connections_with_missing += summary.connections_with_missing;
            connections_with_duplicates += summary.connections_with_duplicates;
            connections_complete += summary.connections_complete;
            per_connection.merge(&summary.events_per_connection);
            if let Some(process) = &summary.process {
                worker_peak_rss_kb.push(process.hwm_kb);
            }
        }

        let elapsed_s = info
            .stopped_at
            .duration_since(self.start)
            .as_secs_f64()
            .max(1e-3);
        let per_second_peak = self
            .samples
            .iter()
            .map(|sample| sample.events_per_s)
            .fold(0.0, f64::max);

        let publish = match (&self.plan.publish, &self.publish_log) {
            (Some(plan), Some(log)) => {
                let log = log.borrow();
                let window_s = log.window_s(plan.rate);
                Some(PublishReport {
                    api: plan.api,
                    url: plan.target.url.clone(),
                    target_rate: plan.rate,
                    sent: log.timeline.len(),
                    ok: log.ok,
                    failed: log.failed,
                    failures: log.failures.clone(),
                    backlogged: log.backlogged,
                    achieved_rate: log.achieved_rate(plan.rate),
                    window_s,
                    latency_us: log.latency.summary(),
                })
            }
            _ => None,
        };
        let deliveries_per_second = publish
            .as_ref()
            .filter(|publish| publish.window_s > 0.0)
            .map(|publish| events.stamped as f64 / publish.window_s);

        let server = self.server.take().map(|server| {
            let end = match server_end {
                Some(Ok(end)) => end,
                _ => server.last,
            };
            let cpu_s =
                procstat::ticks_to_secs(end.cpu_ticks.saturating_sub(server.before.cpu_ticks));
            let (rss_kb_after_ramp, open_after_ramp) = match server.after_ramp {
                Some((rss, open)) => (Some(rss), Some(open)),
                None => (None, None),
            };
            ServerReport {
                pids: server.pids,
                rss_kb_before: server.before.rss_kb,
                rss_kb_after_ramp,
                open_after_ramp,
                rss_bytes_per_connection: server.after_ramp.and_then(|(rss, open)| {
                    (open > 0)
                        .then(|| (rss as f64 - server.before.rss_kb as f64) * 1024.0 / open as f64)
                }),
                rss_kb_peak: server.peak_rss_kb.max(end.rss_kb),
                rss_kb_end: end.rss_kb,
                cpu_s,
                cpu_percent_avg: cpu_s / info.wall.max(1e-3) * 100.0,
                sample_errors: server.errors,
            }
        });

        let (coordinator_cpu_s, workers_cpu_s) = info.own_cpu;
        let loadgen = LoadgenReport {
            processes: 1 + if info.worker_processes {
                info.worker_count
            } else {
                0
            },
            cpu_s: coordinator_cpu_s + workers_cpu_s,
            cpu_percent_avg: (coordinator_cpu_s + workers_cpu_s) / info.wall.max(1e-3) * 100.0,
            coordinator_cpu_s,
            workers_cpu_s,
            coordinator_peak_rss_kb: procstat::sample_self().map_or(0, |own| own.hwm_kb),
            worker_peak_rss_kb,
        };

        let mode = match self.plan.tracking {
            Tracking::Off => None,
            tracking => Some(tracking),
        };
        let delivered_ratio = seq.delivered_ratio();

        Ok(Report {
            loadgen_version: env!("CARGO_PKG_VERSION"),
            started_unix_ms: info.started_unix_ms,
            finished_unix_ms: payload::unix_nanos() / 1_000_000,
            params: self.plan.params(),
            run: RunReport {
                elapsed_s,
                stop_reason: info.stop_reason,
                workers: self.workers.len(),
                worker_processes: info.worker_processes,
                workers_lost,
                worker_errors,
                nofile_limit: info.nofile,
            },
            connections: ConnectionsReport {
                requested: self.plan.connections,
                attempted: connections.attempted,
                established: connections.established,
                failed: connections.failed,
                closed_by_server: connections.closed_by_server,
                errored: connections.errored,
                open_at_stop: connections.open_at_stop,
                peak_open: connections.peak_open,
                ramp_s: self.ramp_s,
                failures,
            },
            events: EventsReport {
                total: events.total,
                stamped: events.stamped,
                comments: events.comments,
                retry_fields: events.retry_fields,
                by_type: events.by_type.clone(),
                non_numeric_ids: events.non_numeric_ids,
                negative_latency: events.negative_latency,
                body_bytes: events.body_bytes,
                per_second_avg: events.total as f64 / elapsed_s,
                per_second_peak,
                deliveries_per_second,
                per_connection: per_connection.summary(),
            },
            sequence: SequenceReport {
                mode,
                counts: seq,
                connections_with_missing,
                connections_with_duplicates,
                connections_complete,
                delivered_ratio,
            },
            latency_us: latency.summary(),
            publish,
            server,
            loadgen,
            samples: std::mem::take(&mut self.samples),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;

    fn plan(args: &[&str]) -> Plan {
        let mut argv = vec!["loadgen", "--subscribe-url", "http://127.0.0.1:1/"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::try_parse_from(argv)
            .unwrap()
            .run
            .into_plan()
            .unwrap()
    }

    #[test]
    fn worker_shares_fit_the_file_limit() {
        assert!(fit_to_file_limit(&plan(&["-c", "40000"]), 20_000).is_none());
        let fitted = fit_to_file_limit(&plan(&["-c", "40000"]), 1024).unwrap();
        assert_eq!(fitted.conns_per_worker, 1024 - SPARE_FILES as usize);
        assert_eq!(fitted.workers(), 42);
        // Thread workers cannot be split further.
        assert!(fit_to_file_limit(&plan(&["-c", "5000", "--in-process"]), 1024).is_none());
    }
}
