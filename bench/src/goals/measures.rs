//! One function per goal: the figures it is judged on, read from the results at the goal's
//! point, for Pulse, nchan, sse-starlette and the floor server (the least any server pays
//! there).

use crate::{
    figures::Figures,
    results::Results,
    scenarios::Scenario,
    targets::Target,
    util::{fmt_bytes, fmt_cpu_s, fmt_kb, fmt_percent, fmt_us, median, thousands},
    verdict::{cell, DASH},
};

/// What a goal's measure found.
pub(super) struct Measured {
    /// The point it was measured at, for the goal's text.
    pub point: String,
    /// Pulse's, nchan's, sse-starlette's and the floor's figures; `None` where missing,
    /// not applicable or not counted.
    pub values: [Option<f64>; 4],
    /// How the figures are shown.
    pub format: fn(f64) -> String,
    /// Cells that show more than the figure (held counts, "not counted"), same order.
    pub cells: [Option<String>; 4],
    /// For [`super::Threshold::Holds`]: whether the condition held, if it was measured.
    pub holds: Option<bool>,
    /// Pulse's run did not do the job: the goal is not met, whatever its figure.
    pub disqualified: bool,
    /// How it was decided, and loadgen's CPU at that point.
    pub note: String,
}

impl Measured {
    fn new(point: String, values: [Option<f64>; 4], format: fn(f64) -> String) -> Self {
        Self {
            point,
            values,
            format,
            cells: Default::default(),
            holds: None,
            disqualified: false,
            note: String::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// A capacity goal: the cells show who was held, the condition is that Pulse held
    /// everyone and delivered every update once.
    fn held(point: usize, runs: [Option<&Figures>; 3]) -> Self {
        let mut measured = Self::new(thousands(point as u64), [None; 4], fmt_us);
        for (cell, figures) in measured.cells.iter_mut().zip(runs) {
            *cell = Some(held_text(figures));
        }
        measured.holds = runs[0].map(|f| f.all_held() && f.every_update_once());
        measured.note(loadgen_note(runs[0]))
    }
}

const PEERS: [Target; 3] = [Target::Pulse, Target::Nchan, Target::Starlette];

/// The capacity runs at `size` (at the profile's capacity rate) of `target`.
fn capacity(results: &Results, target: Target, size: usize) -> Option<&Figures> {
    let rate = Some(results.profile.capacity_rate);
    results.figures(Scenario::Capacity, target, size, rate)
}

/// The fan-out runs at the CPU goals' point: Pulse, the peers and the floor.
fn fanout(results: &Results) -> [Option<&Figures>; 4] {
    let points = results.profile.points;
    [
        Target::Pulse,
        Target::Nchan,
        Target::Starlette,
        Target::Floor,
    ]
    .map(|target| {
        results.figures(
            Scenario::Fanout,
            target,
            points.cpu_subscribers,
            Some(points.cpu_rate),
        )
    })
}

fn fanout_point(results: &Results) -> String {
    let points = results.profile.points;
    format!(
        "{} subscribers × {}/s",
        thousands(points.cpu_subscribers as u64),
        points.cpu_rate
    )
}

fn capacity_point(results: &Results) -> String {
    format!(
        "{} × {}/s",
        thousands(results.profile.points.p99_at as u64),
        results.profile.capacity_rate
    )
}

/// "19,900/19,900 held, 0 missing, 0 dup".
fn held_text(figures: Option<&Figures>) -> String {
    match figures {
        None => DASH.to_owned(),
        Some(f) => format!(
            "{}/{} held, {} missing, {} dup",
            thousands(f.open_at_stop),
            thousands(f.requested),
            thousands(f.missing),
            thousands(f.duplicates)
        ),
    }
}

fn loadgen_note(figures: Option<&Figures>) -> String {
    figures.map_or_else(String::new, |f| {
        format!(
            "loadgen used {} of a core ({})",
            fmt_percent(f.loadgen_cpu_percent_avg),
            fmt_cpu_s(f.loadgen_cpu_s)
        )
    })
}

fn fmt_us_per_event(us: f64) -> String {
    format!("{us:.2} µs/event")
}

/// Every subscriber of one process held and every update delivered once.
pub(super) fn capacity_one_process(results: &Results) -> Measured {
    let size = results.profile.points.one_process;
    Measured::held(size, PEERS.map(|target| capacity(results, target, size)))
}

/// The same over two instances sharing Redis (Pulse only).
pub(super) fn capacity_two_instances(results: &Results) -> Measured {
    let size = results.profile.points.two_instances;
    let redis = capacity(results, Target::PulseRedis, size);
    Measured::held(size, [redis, None, None])
}

/// Server RSS after the ramp minus before, per open connection.
pub(super) fn rss_per_subscriber(results: &Results) -> Measured {
    let points = results.profile.points;
    let rss = |figures: Option<&Figures>| figures?.server.as_ref()?.rss_bytes_per_connection;
    let [pulse, nchan, starlette] =
        PEERS.map(|target| rss(capacity(results, target, points.rss_at)));
    // The floor runs only at the p99 point.
    let floor = (points.rss_at == points.p99_at)
        .then(|| rss(capacity(results, Target::Floor, points.p99_at)))
        .flatten();
    Measured::new(
        thousands(points.rss_at as u64),
        [pulse, nchan, starlette, floor],
        fmt_kb,
    )
    .note("server RSS after the ramp minus before, per open connection")
}

/// Server CPU over the publishing window ÷ updates delivered.
pub(super) fn cpu_per_event(results: &Results) -> Measured {
    let runs = fanout(results);
    Measured::new(
        fanout_point(results),
        runs.map(|f| f.and_then(Figures::server_us_per_delivery)),
        fmt_us_per_event,
    )
    .note(format!(
        "server CPU over the publishing window ÷ updates delivered; {}",
        loadgen_note(runs[0])
    ))
}

/// The median p99 of the capacity run and the latency scenario's runs at the p99 point.
pub(super) fn p99_at_capacity(results: &Results) -> Measured {
    let points = results.profile.points;
    let rate = results.profile.capacity_rate;
    let p99s = |target| results.p99s_at(target, points.p99_at, rate);
    let measured = [
        Target::Pulse,
        Target::Nchan,
        Target::Starlette,
        Target::Floor,
    ]
    .map(p99s);
    let mut note = loadgen_note(capacity(results, Target::Pulse, points.p99_at));
    let [pulse_runs, nchan_runs] = [measured[0].len(), measured[1].len()];
    if pulse_runs > 1 || nchan_runs > 1 {
        note = format!(
            "median of {pulse_runs} runs of Pulse and {nchan_runs} of nchan (each below); {note}"
        );
    }
    Measured::new(
        capacity_point(results),
        measured.each_ref().map(|p99s| median(p99s)),
        fmt_us,
    )
    .note(note)
}

/// The p99 of the fan-out run at the CPU goals' point.
pub(super) fn p99_at_fanout(results: &Results) -> Measured {
    let runs = fanout(results);
    let p99 = |f: Option<&Figures>| f.filter(|f| f.latency.count > 0).map(|f| f.latency.p99_us);
    Measured::new(fanout_point(results), runs.map(p99), fmt_us).note(loadgen_note(runs[0]))
}

/// Pulse's publish p50 below its delivery p50: the answer comes before the fan-out.
pub(super) fn publish_on_acceptance(results: &Results) -> Measured {
    let points = results.profile.points;
    let runs = PEERS.map(|target| capacity(results, target, points.p99_at));
    let [pulse, nchan, starlette] = runs.map(|f| Some(f?.publish_latency()?.p50_us));
    let delivery = runs[0]
        .filter(|f| f.latency.count > 0)
        .map(|f| f.latency.p50_us);
    let mut measured = Measured::new(
        capacity_point(results),
        [pulse, nchan, starlette, None],
        fmt_us,
    )
    .note(format!(
        "met when Pulse's publish p50 is below its delivery p50 ({}): the answer comes before the fan-out",
        cell(delivery, fmt_us)
    ));
    measured.holds = pulse
        .zip(delivery)
        .map(|(publish, delivery)| publish < delivery);
    measured
}

/// Server CPU seconds over the whole counter job.
pub(super) fn counter_cpu(results: &Results) -> Measured {
    let how = format!(
        "server CPU seconds over the whole job; {}",
        loadgen_note(counter_runs(results)[0])
    );
    counter_job(
        results,
        |f| f.server.as_ref().map(|s| s.cpu_s),
        fmt_cpu_s,
        how,
    )
}

/// Peak RSS of the server process(es) over the counter job.
pub(super) fn counter_memory(results: &Results) -> Measured {
    counter_job(
        results,
        |f| f.server.as_ref().map(|s| s.rss_kb_peak as f64 * 1024.0),
        fmt_bytes,
        "peak RSS of the server process(es)".into(),
    )
}

/// The counter job's runs: Pulse, nchan (it has no counter stream, so always `None`),
/// sse-starlette and the floor.
fn counter_runs(results: &Results) -> [Option<&Figures>; 4] {
    let clients = results.profile.points.counter_clients;
    let run = |target| results.figures(Scenario::Counter, target, clients, None);
    [
        run(Target::Pulse),
        None,
        run(Target::Starlette),
        run(Target::Floor),
    ]
}

/// `pick`'s figure of each counter run. A run counts only when it did the job, every
/// client closed by the server after reading ids 1…N once each (see
/// [`Figures::counter_shortfall`]); one that did not shows its figure marked "not counted"
/// and has no ratio: Pulse's makes the goal not met, a peer's leaves it not measured. `how`
/// says how the figure is taken.
fn counter_job(
    results: &Results,
    pick: fn(&Figures) -> Option<f64>,
    format: fn(f64) -> String,
    how: String,
) -> Measured {
    let runs = counter_runs(results);
    let ids = results.profile.stream.count;
    let shortfalls = runs.map(|f| f.map(|f| f.counter_shortfall(ids)).unwrap_or_default());
    let all = runs.map(|f| f.and_then(pick));
    let counts: [bool; 4] = std::array::from_fn(|index| shortfalls[index].is_empty());
    let values = std::array::from_fn(|index| all[index].filter(|_| counts[index]));
    let clients = results.profile.points.counter_clients;
    let mut measured = Measured::new(thousands(clients as u64), values, format);
    let labels = [
        Target::Pulse,
        Target::Nchan,
        Target::Starlette,
        Target::Floor,
    ];
    let mut not_counted = Vec::new();
    for index in (0..4).filter(|&index| !counts[index]) {
        measured.cells[index] = Some(format!("{} (not counted)", cell(all[index], format)));
        not_counted.push(format!(
            "{}'s run is not counted ({})",
            labels[index].label(),
            shortfalls[index].join(", ")
        ));
    }
    measured.disqualified = !counts[0];
    not_counted.push(how);
    measured.note = not_counted.join("; ");
    measured
}

/// gzip -9 of every .wasm under `pkg/`.
pub(super) fn wasm_gzip(results: &Results) -> Measured {
    let page = results.page.as_ref();
    let gzip = page
        .filter(|page| !page.wasm.is_empty())
        .map(|page| page.wasm.iter().map(|file| file.gzip as f64).sum::<f64>());
    let note = page.map_or("", |page| {
        if page.looks_like_debug() {
            "the WASM looks like a debug build: run `cargo leptos build --release` first"
        } else {
            "gzip -9 of every .wasm under pkg/"
        }
    });
    Measured::new(String::new(), [gzip, None, None, None], fmt_kb).note(note)
}

/// The median time from navigation to the first counter message.
pub(super) fn first_message(results: &Results) -> Measured {
    let median_ms = results
        .page
        .as_ref()
        .and_then(|page| page.first_message.as_ref())
        .and_then(|first| first.median_ms);
    Measured::new(
        String::new(),
        [median_ms.map(|ms| ms * 1000.0), None, None, None],
        fmt_us,
    )
    .note("Debian's chromium, a fresh context (empty cache) per navigation")
}
