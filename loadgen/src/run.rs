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

use std::{
    borrow::Cow, cell::RefCell, collections::BTreeMap, future::Future, io, pin::Pin, rc::Rc,
    time::Duration,
};

use tokio::{
    sync::Notify,
    task::JoinHandle,
    time::{Instant, Interval, MissedTickBehavior},
};
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

/// Carries out the run: sets it up, takes it through its phases, and builds the report.
async fn coordinate(plan: &Plan, launch: Launch) -> Result<Report, RunError> {
    let started_unix_ms = payload::unix_nanos() / 1_000_000;
    let wall_start = Instant::now();
    let nofile = procstat::raise_nofile_limit().map_err(RunError::Limit)?;
    // Workers run with the same limit: keep their share of connections under it.
    let fitted = plan_within_file_limit(plan, nofile.soft);
    let plan: &Plan = &fitted;
    let server = ServerTrack::start(&plan.server_pids)?;
    let own_before = procstat::own_and_children_cpu_secs().unwrap_or_default();

    let start = Instant::now() + START_DELAY;
    let start_unix_ns = payload::unix_nanos() + duration_nanos(START_DELAY);
    let specs = plan.worker_specs(start_unix_ns, worker_deadline_unix_ns(plan, start_unix_ns));
    let fleet = Fleet::start(&launch, specs)?;
    let coordinator = Coordinator::new(plan, &fleet, server, start, start_unix_ns)?;
    let mut session = Session::start(coordinator, fleet)?;
    session.drive().await;
    let (coordinator, ending) = session.close().await;

    let own_after = procstat::own_and_children_cpu_secs().unwrap_or_default();
    let wall = wall_start.elapsed().as_secs_f64();
    coordinator.finish(FinishInfo {
        started_unix_ms,
        stop_reason: ending.stop_reason,
        stopped_at: ending.stopped_at,
        nofile: nofile.soft,
        worker_processes: matches!(launch, Launch::Processes { .. }),
        worker_count: ending.worker_count,
        own_cpu: (own_after.0 - own_before.0, own_after.1 - own_before.1),
        wall,
    })
}

/// When workers stop by themselves if the coordinator falls silent: after the run, its
/// drain, the longest publish request and [`WORKER_DEADLINE_MARGIN`].
fn worker_deadline_unix_ns(plan: &Plan, start_unix_ns: u64) -> u64 {
    start_unix_ns
        + duration_nanos(plan.duration + plan.drain + WORKER_DEADLINE_MARGIN)
        + plan
            .publish
            .as_ref()
            .map_or(0, |publish| duration_nanos(publish.timeout))
}

/// What happened that [`Session::drive`] acts on.
enum Step {
    /// Nothing that changes the phase.
    Stay,
    /// A reason to move on to the next phase.
    Advance,
    /// The run is over.
    End,
}

/// How a run ended, for the report.
struct Ending {
    stop_reason: &'static str,
    /// When the workers were told to stop (or the run ended without that).
    stopped_at: Instant,
    /// Workers started, whether or not they are still there.
    worker_count: usize,
}

/// A run under way: the coordinator, its workers and publisher, and the phase it is in.
struct Session<'a> {
    coordinator: Coordinator<'a>,
    fleet: Fleet,
    /// The publisher's task until it has finished (`None` without a publisher).
    publisher: Option<JoinHandle<()>>,
    stop_publishing: CancellationToken,
    /// There is a publisher, whose log is passed on to the workers.
    publishing: bool,
    phase: Phase,
    /// When the phase ends at the latest.
    phase_deadline: Instant,
    stop_reason: &'static str,
    /// When the workers were told to stop.
    stopped_at: Option<Instant>,
    /// The once-a-second sample.
    ticker: Interval,
    /// Passing the publish log on to the workers.
    forward: Interval,
    /// Ctrl-C, if the plan handles it.
    ctrl_c: Pin<Box<dyn Future<Output = ()>>>,
}

impl<'a> Session<'a> {
    /// Starts the publisher, if the plan has one, and the clocks: the run is *Running*
    /// until `duration` after the start.
    fn start(mut coordinator: Coordinator<'a>, fleet: Fleet) -> Result<Self, RunError> {
        let plan = coordinator.plan;
        let start = coordinator.start;
        let stop_publishing = CancellationToken::new();
        let publisher = coordinator.spawn_publisher(&stop_publishing)?;
        let mut ticker =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut forward = tokio::time::interval(FORWARD_INTERVAL);
        forward.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            publishing: coordinator.publish_log.is_some(),
            coordinator,
            fleet,
            publisher,
            stop_publishing,
            phase: Phase::Running,
            phase_deadline: start + plan.duration,
            stop_reason: "duration",
            stopped_at: None,
            ticker,
            forward,
            ctrl_c: Box::pin(ctrl_c_future(plan.handle_ctrl_c)),
        })
    }

    /// Takes the run through its phases until it ends.
    async fn drive(&mut self) {
        loop {
            match self.next().await {
                Step::Stay => {}
                Step::Advance => self.advance(),
                Step::End => return,
            }
        }
    }

    /// Waits for the next thing to happen (a worker's report, a tick, the publisher
    /// finishing, the phase's deadline, Ctrl-C) and handles it.
    async fn next(&mut self) -> Step {
        tokio::select! {
            event = self.fleet.next() => self.on_fleet_event(event),
            _ = self.ticker.tick() => self.on_tick(),
            _ = self.forward.tick(), if self.publishing => {
                self.coordinator.forward_log(&self.fleet);
                Step::Stay
            }
            () = wait_for(&mut self.publisher), if self.phase == Phase::StoppingPublisher => {
                self.publisher = None;
                Step::Advance
            }
            () = tokio::time::sleep_until(self.phase_deadline) => {
                if self.phase == Phase::Stopping {
                    Step::End
                } else {
                    Step::Advance
                }
            }
            () = &mut self.ctrl_c, if self.phase == Phase::Running => {
                eprintln!("loadgen: interrupted, stopping");
                self.stop_reason = "interrupted";
                Step::Advance
            }
        }
    }

    /// Handles a worker's report or departure (`None`: every worker is gone); the run ends
    /// when every worker has sent its summary or is gone.
    fn on_fleet_event(&mut self, event: Option<FleetEvent>) -> Step {
        let Some(event) = event else {
            if self.phase == Phase::Running {
                self.stop_reason = "workers_gone";
            }
            return Step::End;
        };
        self.coordinator.on_event(event);
        // Nothing left to wait for: every worker reported its summary or is gone.
        if self.coordinator.all_reported() {
            if self.phase != Phase::Stopping {
                self.stop_reason = "workers_gone";
            }
            return Step::End;
        }
        self.stop_if_streams_ended()
    }

    /// Takes the once-a-second sample.
    fn on_tick(&mut self) -> Step {
        self.coordinator.sample();
        self.stop_if_streams_ended()
    }

    /// Moves on when, with nothing published, every stream has ended while running.
    fn stop_if_streams_ended(&mut self) -> Step {
        if self.phase == Phase::Running
            && !self.publishing
            && self
                .coordinator
                .all_streams_ended(&self.coordinator.totals())
        {
            self.stop_reason = "all_streams_ended";
            Step::Advance
        } else {
            Step::Stay
        }
    }

    /// Moves on: Running → StoppingPublisher → Draining → Stopping, passing straight through
    /// a phase with nothing to wait for.
    fn advance(&mut self) {
        if self.phase == Phase::Running && self.stop_publisher() {
            return;
        }
        if self.phase == Phase::StoppingPublisher && self.start_draining() {
            return;
        }
        if self.phase == Phase::Draining {
            self.stop_workers();
        }
    }

    /// Tells the publisher to stop (*StoppingPublisher*); true if it is still to finish.
    fn stop_publisher(&mut self) -> bool {
        self.stop_publishing.cancel();
        self.phase = Phase::StoppingPublisher;
        // Bounded by the publisher itself; this is a backstop.
        self.phase_deadline = Instant::now()
            + self
                .coordinator
                .plan
                .publish
                .as_ref()
                .map_or(Duration::ZERO, |publish| {
                    publish.timeout + Duration::from_secs(2)
                });
        self.publisher.is_some()
    }

    /// Passes on the rest of the publish log and gives deliveries `drain` (*Draining*; no
    /// time if nothing was published or the run was interrupted); true if there is a wait.
    fn start_draining(&mut self) -> bool {
        self.coordinator.forward_log(&self.fleet);
        self.phase = Phase::Draining;
        let drain = if self.publishing && self.stop_reason != "interrupted" {
            self.coordinator.plan.drain
        } else {
            Duration::ZERO
        };
        self.phase_deadline = Instant::now() + drain;
        !drain.is_zero()
    }

    /// Tells the workers to stop and send their summaries (*Stopping*), within
    /// [`SUMMARY_TIMEOUT`].
    fn stop_workers(&mut self) {
        self.fleet.broadcast(&ToWorker::Stop);
        self.stopped_at = Some(Instant::now());
        self.phase = Phase::Stopping;
        self.phase_deadline = Instant::now() + SUMMARY_TIMEOUT;
    }

    /// Passes on what is left of the publish log, shuts the workers and the publisher
    /// down, and hands back the coordinator with how the run ended.
    async fn close(self) -> (Coordinator<'a>, Ending) {
        let stopped_at = self.stopped_at.unwrap_or_else(Instant::now);
        self.coordinator.forward_log(&self.fleet);
        let worker_pids = self.fleet.pids();
        self.fleet.shutdown().await;
        if let Some(task) = self.publisher {
            task.abort();
        }
        let worker_count = worker_pids.len().max(self.coordinator.workers.len());
        let ending = Ending {
            stop_reason: self.stop_reason,
            stopped_at,
            worker_count,
        };
        (self.coordinator, ending)
    }
}

/// Files a process needs besides its connections (runtime, pipes, /proc reads).
const SPARE_FILES: u64 = 64;

/// The plan to run under the open-file limit `nofile`: `plan` itself, or a copy with fewer
/// connections per worker (saying so on stderr).
fn plan_within_file_limit(plan: &Plan, nofile: u64) -> Cow<'_, Plan> {
    match fit_to_file_limit(plan, nofile) {
        Some(fitted) => {
            eprintln!(
                "loadgen: the open-file limit is {nofile}: at most {} connections per worker",
                fitted.conns_per_worker
            );
            Cow::Owned(fitted)
        }
        None => Cow::Borrowed(plan),
    }
}

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

impl<'a> Coordinator<'a> {
    /// A coordinator of `fleet` for a run from `start`, with its own CPU ticks read as the
    /// base of the first sample.
    fn new(
        plan: &'a Plan,
        fleet: &Fleet,
        server: Option<ServerTrack>,
        start: Instant,
        start_unix_ns: u64,
    ) -> Result<Self, RunError> {
        let mut coordinator = Coordinator {
            plan,
            workers: fleet_pids(fleet)
                .into_iter()
                .map(|pid| WorkerState {
                    pid,
                    ..WorkerState::default()
                })
                .collect(),
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
        coordinator.own_ticks = coordinator.read_own_ticks();
        coordinator.last_own_total = coordinator.own_ticks.values().sum();
        Ok(coordinator)
    }

    /// Starts the publisher if the plan has one: from the start (or, with
    /// `--publish-after-ramp`, the end of the ramp) until `stop`, logging to
    /// [`Self::publish_log`].
    fn spawn_publisher(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<Option<JoinHandle<()>>, RunError> {
        let plan = self.plan;
        let Some(publish_plan) = &plan.publish else {
            return Ok(None);
        };
        let log = Rc::new(RefCell::new(PublishLog::new()?));
        self.publish_log = Some(Rc::clone(&log));
        let publisher = Rc::new(Publisher::new(publish_plan.clone(), log));
        let stop = stop.clone();
        let ramp_complete = Rc::clone(&self.ramp_complete);
        let after_ramp = plan.publish_after_ramp;
        let start = self.start;
        Ok(Some(tokio::task::spawn_local(async move {
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
        })))
    }

    /// Whether every worker has sent its summary or is gone.
    fn all_reported(&self) -> bool {
        self.workers
            .iter()
            .all(|worker| worker.gone || worker.summary.is_some())
    }

    /// Takes in a worker's report or notes that it is gone.
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
    fn sample(&mut self) {
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
    }

    /// Merges the workers' summaries, the publisher's log and the samples into the report.
    fn finish(mut self, info: FinishInfo) -> Result<Report, RunError> {
        let server_end = self
            .server
            .as_ref()
            .map(|server| procstat::sample_all(&server.pids));
        let mut merged = self.merge_summaries()?;
        let elapsed_s = info
            .stopped_at
            .duration_since(self.start)
            .as_secs_f64()
            .max(1e-3);
        let publish = self.publish_report();
        let deliveries_per_second = publish
            .as_ref()
            .filter(|publish| publish.window_s > 0.0)
            .map(|publish| merged.events.stamped as f64 / publish.window_s);
        let server = self
            .server
            .take()
            .map(|server| server.report(server_end, info.wall));
        let loadgen = loadgen_report(&info, std::mem::take(&mut merged.worker_peak_rss_kb));
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
                workers_lost: merged.workers_lost,
                worker_errors: std::mem::take(&mut merged.worker_errors),
                nofile_limit: info.nofile,
            },
            connections: merged.connections_report(self.plan.connections, self.ramp_s),
            events: merged.events_report(
                elapsed_s,
                self.peak_events_per_second(),
                deliveries_per_second,
            ),
            sequence: merged.sequence_report(self.plan.tracking),
            latency_us: merged.latency.summary(),
            publish,
            server,
            loadgen,
            samples: std::mem::take(&mut self.samples),
        })
    }

    /// The workers' summaries added up; a worker without one counts as lost.
    fn merge_summaries(&self) -> Result<Merged, RunError> {
        let mut merged = Merged::new()?;
        for (index, worker) in self.workers.iter().enumerate() {
            if let Some(error) = &worker.error {
                merged
                    .worker_errors
                    .push(format!("worker {index}: {error}"));
            }
            match &worker.summary {
                Some(summary) => merged.add(summary)?,
                None => merged.workers_lost += 1,
            }
        }
        Ok(merged)
    }

    /// The highest events-per-second of the once-a-second samples.
    fn peak_events_per_second(&self) -> f64 {
        self.samples
            .iter()
            .map(|sample| sample.events_per_s)
            .fold(0.0, f64::max)
    }

    /// What the publisher did, if there was one.
    fn publish_report(&self) -> Option<PublishReport> {
        let (Some(plan), Some(log)) = (&self.plan.publish, &self.publish_log) else {
            return None;
        };
        let log = log.borrow();
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
            window_s: log.window_s(plan.rate),
            latency_us: log.latency.summary(),
        })
    }
}

/// The workers' summaries added up.
struct Merged {
    connections: ConnCounts,
    failures: BTreeMap<String, u64>,
    events: EventCounts,
    latency: Latency,
    seq: SeqCounts,
    connections_with_missing: u64,
    connections_with_duplicates: u64,
    connections_complete: u64,
    per_connection: Counts,
    worker_peak_rss_kb: Vec<u64>,
    workers_lost: usize,
    worker_errors: Vec<String>,
}

impl Merged {
    /// Nothing merged yet.
    fn new() -> Result<Self, RunError> {
        Ok(Self {
            connections: ConnCounts::default(),
            failures: BTreeMap::new(),
            events: EventCounts::default(),
            latency: Latency::new()?,
            seq: SeqCounts::default(),
            connections_with_missing: 0,
            connections_with_duplicates: 0,
            connections_complete: 0,
            per_connection: Counts::default(),
            worker_peak_rss_kb: Vec::new(),
            workers_lost: 0,
            worker_errors: Vec::new(),
        })
    }

    /// Adds one worker's summary.
    fn add(&mut self, summary: &WorkerSummary) -> Result<(), RunError> {
        self.connections.add(&summary.connections);
        for (reason, count) in &summary.failures {
            *self.failures.entry(reason.clone()).or_insert(0) += count;
        }
        self.events.add(&summary.events);
        self.latency.merge(&Latency::from_wire(&summary.latency)?)?;
        self.seq.add(&summary.seq);
        self.connections_with_missing += summary.connections_with_missing;
        self.connections_with_duplicates += summary.connections_with_duplicates;
        self.connections_complete += summary.connections_complete;
        self.per_connection.merge(&summary.events_per_connection);
        if let Some(process) = &summary.process {
            self.worker_peak_rss_kb.push(process.hwm_kb);
        }
        Ok(())
    }

    /// The connections section, for `requested` connections and a ramp of `ramp_s`.
    fn connections_report(&self, requested: usize, ramp_s: Option<f64>) -> ConnectionsReport {
        let connections = &self.connections;
        ConnectionsReport {
            requested,
            attempted: connections.attempted,
            established: connections.established,
            failed: connections.failed,
            closed_by_server: connections.closed_by_server,
            errored: connections.errored,
            open_at_stop: connections.open_at_stop,
            peak_open: connections.peak_open,
            ramp_s,
            failures: self.failures.clone(),
        }
    }

    /// The events section, over `elapsed_s` seconds.
    fn events_report(
        &self,
        elapsed_s: f64,
        per_second_peak: f64,
        deliveries_per_second: Option<f64>,
    ) -> EventsReport {
        let events = &self.events;
        EventsReport {
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
            per_connection: self.per_connection.summary(),
        }
    }

    /// The sequence section; `mode` is absent when nothing was tracked.
    fn sequence_report(&self, tracking: Tracking) -> SequenceReport {
        SequenceReport {
            mode: match tracking {
                Tracking::Off => None,
                tracking => Some(tracking),
            },
            counts: self.seq,
            connections_with_missing: self.connections_with_missing,
            connections_with_duplicates: self.connections_with_duplicates,
            connections_complete: self.connections_complete,
            delivered_ratio: self.seq.delivered_ratio(),
        }
    }
}

impl ServerTrack {
    /// Takes the first sample of `pids`; `None` when there is no server to sample.
    fn start(pids: &[u32]) -> Result<Option<Self>, RunError> {
        if pids.is_empty() {
            return Ok(None);
        }
        let before = procstat::sample_all(pids).map_err(RunError::ServerPid)?;
        Ok(Some(Self {
            pids: pids.to_vec(),
            before,
            last: before,
            peak_rss_kb: before.rss_kb,
            after_ramp: None,
            errors: 0,
        }))
    }

    /// The server section, from the last sample `end` (the latest periodic one if it
    /// failed) over a run of `wall` seconds.
    fn report(self, end: Option<Result<ProcSample, ProcError>>, wall: f64) -> ServerReport {
        let end = match end {
            Some(Ok(end)) => end,
            _ => self.last,
        };
        let cpu_s = procstat::ticks_to_secs(end.cpu_ticks.saturating_sub(self.before.cpu_ticks));
        let before_kb = self.before.rss_kb;
        ServerReport {
            pids: self.pids,
            rss_kb_before: before_kb,
            rss_kb_after_ramp: self.after_ramp.map(|(rss, _)| rss),
            open_after_ramp: self.after_ramp.map(|(_, open)| open),
            rss_bytes_per_connection: self.after_ramp.and_then(|(rss, open)| {
                (open > 0).then(|| (rss as f64 - before_kb as f64) * 1024.0 / open as f64)
            }),
            rss_kb_peak: self.peak_rss_kb.max(end.rss_kb),
            rss_kb_end: end.rss_kb,
            cpu_s,
            cpu_percent_avg: cpu_s / wall.max(1e-3) * 100.0,
            sample_errors: self.errors,
        }
    }
}

/// The loadgen section: its processes and their CPU over the run, its memory.
fn loadgen_report(info: &FinishInfo, worker_peak_rss_kb: Vec<u64>) -> LoadgenReport {
    let (coordinator_cpu_s, workers_cpu_s) = info.own_cpu;
    LoadgenReport {
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
