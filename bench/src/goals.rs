//! The goals, evaluated against what this run measured, with the ratios against
//! the peers measured in the same run.
//!
//! Ratios are always Pulse ÷ peer, so below 1 means Pulse uses less (or is faster). A goal
//! whose figures are missing (a step that failed or was skipped) is "not measured", never
//! met. Sizes are decimal: 8 KB is 8,000 bytes and 100 KB is 100,000 bytes, the stricter
//! reading, and the figures of those goals are shown in the same unit (kB, 1,000 bytes) so
//! that figure and limit compare at a glance.

use serde::{Deserialize, Serialize};

use crate::{
    figures::Figures,
    results::Results,
    scenarios::Scenario,
    targets::Target,
    util::{fmt_bytes, fmt_cpu_s, fmt_kb, fmt_percent, fmt_us, median, thousands},
};

/// Whether a goal is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Met.
    Met,
    /// Not met.
    NotMet,
    /// A figure it needs is missing.
    NotMeasured,
}

impl Status {
    /// For tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Met => "✅ met",
            Self::NotMet => "❌ not met",
            Self::NotMeasured => "⚪ not measured",
        }
    }

    /// Met when `ok` is known and true.
    pub fn from_check(ok: Option<bool>) -> Self {
        match ok {
            Some(true) => Self::Met,
            Some(false) => Self::NotMet,
            None => Self::NotMeasured,
        }
    }
}

/// One goal as evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// Short id.
    pub id: String,
    /// What the issue asks, with the point it was measured at.
    pub goal: String,
    /// Pulse's figure.
    pub pulse: String,
    /// nginx + nchan's figure at the same point ("–" where it does not apply).
    pub nchan: String,
    /// sse-starlette's figure.
    pub starlette: String,
    /// Pulse ÷ nchan.
    pub vs_nchan: Option<f64>,
    /// Pulse ÷ sse-starlette.
    pub vs_starlette: Option<f64>,
    /// The floor server's figure at the same point ("–" where it was not measured): the
    /// least any server pays here.
    #[serde(default)]
    pub floor: String,
    /// The floor's figure ÷ the peer's the goal is a ratio of: where it is past the goal's
    /// ratio, no server can meet the goal on this machine.
    #[serde(default)]
    pub floor_vs_peer: Option<f64>,
    /// The verdict.
    pub status: Status,
    /// How it was decided, and loadgen's CPU at that point.
    pub note: String,
}

/// Pulse ÷ peer, when both are known and the peer's is positive.
pub fn ratio(pulse: Option<f64>, peer: Option<f64>) -> Option<f64> {
    match (pulse, peer) {
        (Some(pulse), Some(peer)) if peer > 0.0 && pulse.is_finite() && peer.is_finite() => {
            Some(pulse / peer)
        }
        _ => None,
    }
}

/// Met when `value ≤ limit`.
pub fn at_most(value: Option<f64>, limit: f64) -> Status {
    Status::from_check(value.map(|value| value <= limit))
}

/// Met when `value < limit`.
pub fn below(value: Option<f64>, limit: f64) -> Status {
    Status::from_check(value.map(|value| value < limit))
}

const DASH: &str = "–";

fn cell(value: Option<f64>, format: fn(f64) -> String) -> String {
    value.map_or_else(|| DASH.to_owned(), format)
}

fn goal(
    id: &str,
    text: String,
    values: [Option<f64>; 3],
    format: fn(f64) -> String,
    status: Status,
    note: String,
) -> Goal {
    let [pulse, nchan, starlette] = values;
    Goal {
        id: id.to_owned(),
        goal: text,
        pulse: cell(pulse, format),
        nchan: cell(nchan, format),
        starlette: cell(starlette, format),
        vs_nchan: ratio(pulse, nchan),
        vs_starlette: ratio(pulse, starlette),
        floor: DASH.to_owned(),
        floor_vs_peer: None,
        status,
        note,
    }
}

/// Which peer a goal's ratio is taken against.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Nchan,
    Starlette,
}

impl Goal {
    /// Adds the floor's figure (and, against `peer`, its ratio) to the goal.
    fn with_floor(
        mut self,
        floor: Option<f64>,
        peers: [Option<f64>; 3],
        peer: Option<Peer>,
        format: fn(f64) -> String,
    ) -> Self {
        self.floor = cell(floor, format);
        self.floor_vs_peer = match peer {
            Some(Peer::Nchan) => ratio(floor, peers[1]),
            Some(Peer::Starlette) => ratio(floor, peers[2]),
            None => None,
        };
        self
    }
}

/// "19,900/19,900 held, 0 missing, 0 duplicates".
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

fn quick_suffix(quick: bool, full: &str) -> String {
    if quick {
        format!(" — quick run; the goal is at {full}")
    } else {
        String::new()
    }
}

/// The counter job's runs at the goal's point: Pulse, nchan (it has no counter stream, so
/// always `None`), sse-starlette and the floor, with why each does not count, if it does
/// not (see [`Figures::counter_shortfall`]).
struct CounterJobs<'a> {
    runs: [Option<&'a Figures>; 4],
    shortfalls: [Vec<String>; 4],
}

impl<'a> CounterJobs<'a> {
    fn new(runs: [Option<&'a Figures>; 4], ids: u32) -> Self {
        Self {
            runs,
            shortfalls: runs.map(|f| f.map(|f| f.counter_shortfall(ids)).unwrap_or_default()),
        }
    }

    /// A goal of the form "≥ 10× less than sse-starlette", on `pick`'s figure. A run that
    /// did not do the job shows its figure marked "not counted" and has no ratio: Pulse's
    /// makes the goal not met, a peer's leaves it not measured.
    fn goal(
        &self,
        id: &str,
        text: String,
        pick: fn(&Figures) -> Option<f64>,
        format: fn(f64) -> String,
        how: String,
    ) -> Goal {
        let all = self.runs.map(|f| f.and_then(pick));
        let counts = |index: usize| self.shortfalls[index].is_empty();
        let counted: [Option<f64>; 4] =
            std::array::from_fn(|index| all[index].filter(|_| counts(index)));
        let peers = [counted[0], counted[1], counted[2]];
        let labels = [
            Target::Pulse,
            Target::Nchan,
            Target::Starlette,
            Target::Floor,
        ];
        let not_counted: Vec<String> = (0..4)
            .filter(|&index| !counts(index))
            .map(|index| {
                format!(
                    "{}'s run is not counted ({})",
                    labels[index].label(),
                    self.shortfalls[index].join(", ")
                )
            })
            .collect();
        let note = if not_counted.is_empty() {
            how
        } else {
            format!("{}; {how}", not_counted.join("; "))
        };
        let mut goal = goal(id, text, peers, format, Status::NotMeasured, note).with_floor(
            counted[3],
            peers,
            Some(Peer::Starlette),
            format,
        );
        goal.status = if counts(0) {
            at_most(goal.vs_starlette, 0.1)
        } else {
            Status::NotMet
        };
        let cells = [
            &mut goal.pulse,
            &mut goal.nchan,
            &mut goal.starlette,
            &mut goal.floor,
        ];
        for (index, text) in cells.into_iter().enumerate() {
            if !counts(index) {
                *text = format!("{} (not counted)", cell(all[index], format));
            }
        }
        goal
    }
}

/// Evaluates every goal of the issue against `results`.
pub fn evaluate(results: &Results) -> Vec<Goal> {
    let points = results.profile.points;
    let quick = results.profile.quick;
    let cap = |target, size| {
        results.figures(
            Scenario::Capacity,
            target,
            size,
            Some(results.profile.capacity_rate),
        )
    };
    let three = |size| {
        [
            cap(Target::Pulse, size),
            cap(Target::Nchan, size),
            cap(Target::Starlette, size),
        ]
    };
    let mut goals = Vec::new();
    // The floor server, measured at the goals' points (capacity at the p99 point).
    let floor_cap = cap(Target::Floor, points.p99_at);

    // Capacity in one process, every update delivered.
    let [pulse, nchan, starlette] = three(points.one_process);
    goals.push(Goal {
        id: "capacity-one-process".into(),
        goal: format!(
            "{} subscribers in one process, every update delivered{}",
            thousands(points.one_process as u64),
            quick_suffix(quick, "19,900")
        ),
        pulse: held_text(pulse),
        nchan: held_text(nchan),
        starlette: held_text(starlette),
        vs_nchan: None,
        vs_starlette: None,
        floor: DASH.into(),
        floor_vs_peer: None,
        status: Status::from_check(pulse.map(|f| f.all_held() && f.every_update_once())),
        note: loadgen_note(pulse),
    });

    // Capacity over two instances.
    let redis = cap(Target::PulseRedis, points.two_instances);
    goals.push(Goal {
        id: "capacity-two-instances".into(),
        goal: format!(
            "{} subscribers over two instances (Redis), every update delivered{}",
            thousands(points.two_instances as u64),
            quick_suffix(quick, "39,800")
        ),
        pulse: held_text(redis),
        nchan: DASH.into(),
        starlette: DASH.into(),
        vs_nchan: None,
        vs_starlette: None,
        floor: DASH.into(),
        floor_vs_peer: None,
        status: Status::from_check(redis.map(|f| f.all_held() && f.every_update_once())),
        note: loadgen_note(redis),
    });

    // Memory per idle subscriber.
    let rss =
        three(points.rss_at).map(|f| f.and_then(|f| f.server.as_ref()?.rss_bytes_per_connection));
    let floor_rss = floor_cap
        .filter(|_| points.rss_at == points.p99_at)
        .and_then(|f| f.server.as_ref()?.rss_bytes_per_connection);
    goals.push(
        goal(
            "rss-per-subscriber",
            format!(
                "RSS per idle subscriber ≤ 8 kB (8,000 bytes; at {} subscribers){}",
                thousands(points.rss_at as u64),
                quick_suffix(quick, "10,000")
            ),
            rss,
            fmt_kb,
            at_most(rss[0], 8_000.0),
            "server RSS after the ramp minus before, per open connection".into(),
        )
        .with_floor(floor_rss, rss, None, fmt_kb),
    );

    // CPU per delivered event at 1,000 × 100/s.
    let fan = |target| {
        results.figures(
            Scenario::Fanout,
            target,
            points.cpu_subscribers,
            Some(points.cpu_rate),
        )
    };
    let fanout = [
        fan(Target::Pulse),
        fan(Target::Nchan),
        fan(Target::Starlette),
    ];
    let cpu = fanout.map(|f| f.and_then(Figures::server_us_per_delivery));
    let floor_fan = fan(Target::Floor);
    let floor_cpu = floor_fan.and_then(Figures::server_us_per_delivery);
    let cpu_point = format!(
        "{} subscribers × {}/s",
        thousands(points.cpu_subscribers as u64),
        points.cpu_rate
    );
    let us_per_event = |us: f64| format!("{us:.2} µs/event");
    let cpu_note = format!(
        "server CPU over the publishing window ÷ updates delivered; {}",
        loadgen_note(fanout[0])
    );
    let mut vs_nchan = goal(
        "cpu-per-event-vs-nchan",
        format!("server CPU per delivered event ≤ 0.8× nchan's at {cpu_point}"),
        cpu,
        us_per_event,
        Status::NotMeasured,
        cpu_note.clone(),
    );
    vs_nchan.status = at_most(vs_nchan.vs_nchan, 0.8);
    goals.push(vs_nchan.with_floor(floor_cpu, cpu, Some(Peer::Nchan), us_per_event));
    let mut vs_starlette = goal(
        "cpu-per-event-vs-starlette",
        format!("server CPU per delivered event ≥ 10× cheaper than sse-starlette at {cpu_point}"),
        cpu,
        us_per_event,
        Status::NotMeasured,
        cpu_note,
    );
    vs_starlette.status = at_most(vs_starlette.vs_starlette, 0.1);
    goals.push(vs_starlette.with_floor(floor_cpu, cpu, Some(Peer::Starlette), us_per_event));

    // Publish-to-receive p99 at 10,000 × 1/s against nchan: the median of the capacity run
    // and the latency scenario's runs at that point.
    let p99_runs = three(points.p99_at);
    let rate = results.profile.capacity_rate;
    let p99s = |target| results.p99s_at(target, points.p99_at, rate);
    let measured = [Target::Pulse, Target::Nchan, Target::Starlette].map(p99s);
    let p99 = measured.each_ref().map(|p99s| median(p99s));
    let runs_each = [measured[0].len(), measured[1].len()];
    let mut p99_note = loadgen_note(p99_runs[0]);
    if runs_each.iter().any(|&runs| runs > 1) {
        p99_note = format!(
            "median of {} runs of Pulse and {} of nchan (each below); {p99_note}",
            runs_each[0], runs_each[1]
        );
    }
    let mut p99_goal = goal(
        "p99-vs-nchan",
        format!(
            "publish-to-receive p99 ≤ ½ nchan's at {} × {}/s{}",
            thousands(points.p99_at as u64),
            rate,
            quick_suffix(quick, "10,000 × 1/s")
        ),
        p99,
        fmt_us,
        Status::NotMeasured,
        p99_note,
    );
    p99_goal.status = at_most(p99_goal.vs_nchan, 0.5);
    let floor_p99 = median(&p99s(Target::Floor));
    goals.push(p99_goal.with_floor(floor_p99, p99, Some(Peer::Nchan), fmt_us));

    // p99 < 20 ms at 1,000 × 100/s.
    let p99_fan = fanout.map(|f| f.filter(|f| f.latency.count > 0).map(|f| f.latency.p99_us));
    let floor_p99_fan = floor_fan
        .filter(|f| f.latency.count > 0)
        .map(|f| f.latency.p99_us);
    goals.push(
        goal(
            "p99-under-20ms",
            format!("publish-to-receive p99 < 20 ms at {cpu_point}"),
            p99_fan,
            fmt_us,
            below(p99_fan[0], 20_000.0),
            loadgen_note(fanout[0]),
        )
        .with_floor(floor_p99_fan, p99_fan, None, fmt_us),
    );

    // The publisher is answered on acceptance: before the fan-out, so before the median
    // subscriber has the update.
    let publish_p50 = p99_runs.map(|f| {
        f.and_then(Figures::publish_latency)
            .map(|latency| latency.p50_us)
    });
    let delivery_p50 = p99_runs[0]
        .filter(|f| f.latency.count > 0)
        .map(|f| f.latency.p50_us);
    let accepted = match (publish_p50[0], delivery_p50) {
        (Some(publish), Some(delivery)) => Some(publish < delivery),
        _ => None,
    };
    goals.push(goal(
        "publish-on-acceptance",
        format!(
            "publisher answered on acceptance (publish latency p50 at {} × {}/s)",
            thousands(points.p99_at as u64),
            results.profile.capacity_rate
        ),
        publish_p50,
        fmt_us,
        Status::from_check(accepted),
        format!(
            "met when Pulse's publish p50 is below its delivery p50 ({}): the answer comes before the fan-out",
            cell(delivery_p50, fmt_us)
        ),
    ));

    // The counter job at 5,000 clients: a run counts only when it did the job, every
    // client closed by the server after reading ids 1…N once each.
    let counter = |target| results.figures(Scenario::Counter, target, points.counter_clients, None);
    let jobs = CounterJobs::new(
        [
            counter(Target::Pulse),
            None,
            counter(Target::Starlette),
            counter(Target::Floor),
        ],
        results.profile.stream.count,
    );
    let counter_point = format!(
        "{} `/stream` clients{}",
        thousands(points.counter_clients as u64),
        quick_suffix(quick, "5,000")
    );
    goals.push(jobs.goal(
        "counter-cpu",
        format!("counter job: ≥ 10× less CPU than sse-starlette with {counter_point}"),
        |f| f.server.as_ref().map(|s| s.cpu_s),
        fmt_cpu_s,
        format!(
            "server CPU seconds over the whole job; {}",
            loadgen_note(jobs.runs[0])
        ),
    ));
    goals.push(jobs.goal(
        "counter-memory",
        format!("counter job: ≥ 10× less memory than sse-starlette with {counter_point}"),
        |f| f.server.as_ref().map(|s| s.rss_kb_peak as f64 * 1024.0),
        fmt_bytes,
        "peak RSS of the server process(es)".into(),
    ));

    // The page.
    let page = results.page.as_ref();
    let gzip = page
        .filter(|page| !page.wasm.is_empty())
        .map(|page| page.wasm.iter().map(|file| file.gzip as f64).sum::<f64>());
    goals.push(goal(
        "wasm-gzip",
        "release WASM ≤ 100 kB gzipped (100,000 bytes)".into(),
        [gzip, None, None],
        fmt_kb,
        at_most(gzip, 100_000.0),
        page.map_or_else(String::new, |page| {
            if page.looks_like_debug() {
                "the WASM looks like a debug build: run `cargo leptos build --release` first".into()
            } else {
                "gzip -9 of every .wasm under pkg/".into()
            }
        }),
    ));
    let first = page
        .and_then(|page| page.first_message.as_ref())
        .and_then(|first| first.median_ms);
    goals.push(goal(
        "first-message",
        "first counter message ≤ 300 ms after navigation (median)".into(),
        [first.map(|ms| ms * 1000.0), None, None],
        fmt_us,
        at_most(first, 300.0),
        "Debian's chromium, a fresh context (empty cache) per navigation".into(),
    ));
    goals
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        figures::{
            tests::{counter_report, sample_report},
            Figures,
        },
        machine::Machine,
        page::{FileSize, FirstMessage, PageResult},
        results::{RunRecord, SCHEMA},
        scenarios::Profile,
    };

    #[test]
    fn ratios_and_verdicts() {
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
        assert_eq!(at_most(Some(0.8), 0.8), Status::Met);
        assert_eq!(at_most(Some(0.81), 0.8), Status::NotMet);
        assert_eq!(at_most(None, 0.8), Status::NotMeasured);
        assert_eq!(below(Some(20_000.0), 20_000.0), Status::NotMet);
        assert_eq!(below(Some(19_999.0), 20_000.0), Status::Met);
        assert_eq!(Status::NotMet.label(), "❌ not met");
    }

    fn record(
        scenario: Scenario,
        target: Target,
        subs: usize,
        rate: Option<f64>,
        f: Figures,
    ) -> RunRecord {
        RunRecord {
            scenario,
            target,
            subscribers: subs,
            rate,
            figures: Some(f),
            error: None,
            behind: Some(false),
            wall_s: 1.0,
            busy_cores_before: None,
            loadgen: None,
        }
    }

    fn with(mut f: Figures, us_per_event: f64, p99: f64, rss: f64) -> Figures {
        // One second of window, 1,000,000 deliveries.
        f.window = Some(crate::figures::Window {
            seconds: 1.0,
            server_cpu_s: us_per_event,
            loadgen_cpu_s: 0.5,
            deliveries: 1_000_000.0,
        });
        f.latency.p99_us = p99;
        f.server.as_mut().unwrap().rss_bytes_per_connection = Some(rss);
        f
    }

    pub(crate) fn results() -> Results {
        let base = Figures::from_loadgen(&sample_report());
        let profile = Profile::full();
        let p = profile.points;
        let mut runs = Vec::new();
        for (target, us, p99, rss) in [
            (Target::Pulse, 1.0, 3_000.0, 6_000.0),
            (Target::Nchan, 2.0, 8_000.0, 10_000.0),
            (Target::Starlette, 20.0, 900_000.0, 50_000.0),
        ] {
            let f = with(base.clone(), us, p99, rss);
            runs.push(record(
                Scenario::Capacity,
                target,
                p.one_process,
                Some(1.0),
                f.clone(),
            ));
            runs.push(record(
                Scenario::Capacity,
                target,
                p.p99_at,
                Some(1.0),
                f.clone(),
            ));
            runs.push(record(
                Scenario::Fanout,
                target,
                p.cpu_subscribers,
                Some(p.cpu_rate),
                f.clone(),
            ));
            if target != Target::Nchan {
                let mut job = Figures::from_loadgen(&counter_report(p.counter_clients as u64));
                let server = job.server.as_mut().unwrap();
                server.cpu_s = us * 10.0;
                server.rss_kb_peak = (rss / 100.0) as u64;
                runs.push(record(
                    Scenario::Counter,
                    target,
                    p.counter_clients,
                    None,
                    job,
                ));
            }
        }
        let mut held = base.clone();
        held.requested = p.two_instances as u64;
        held.established = held.requested;
        held.open_at_stop = held.requested;
        runs.push(record(
            Scenario::Capacity,
            Target::PulseRedis,
            p.two_instances,
            Some(1.0),
            held,
        ));
        Results {
            schema: SCHEMA,
            date: "2026-11-25".into(),
            quick: false,
            partial: false,
            started_unix_ms: 0,
            finished_unix_ms: 1,
            interrupted: false,
            machine: Machine::default(),
            versions: Default::default(),
            profile,
            runs,
            page: Some(PageResult {
                site_root: "target/site".into(),
                wasm: vec![FileSize {
                    file: "pulse.wasm".into(),
                    raw: 300_000,
                    gzip: 120_000,
                    brotli: 90_000,
                }],
                other: vec![],
                first_message: Some(FirstMessage {
                    runs_ms: vec![120.0, 140.0, 130.0],
                    median_ms: Some(130.0),
                    min_ms: Some(120.0),
                    max_ms: Some(140.0),
                    dom_content_loaded_ms: vec![],
                    errors: vec![],
                }),
                error: None,
            }),
            goals: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn evaluates_every_goal_with_ratios_against_the_peers() {
        let results = results();
        let goals = evaluate(&results);
        let by_id = |id: &str| goals.iter().find(|goal| goal.id == id).unwrap().clone();
        assert_eq!(goals.len(), 12);

        let one = by_id("capacity-one-process");
        assert_eq!(one.status, Status::Met);
        assert!(
            one.pulse.starts_with("1,000/1,000 held, 0 missing"),
            "{}",
            one.pulse
        );
        assert_eq!(by_id("capacity-two-instances").status, Status::Met);

        let rss = by_id("rss-per-subscriber");
        assert_eq!(rss.status, Status::Met);
        assert_eq!(rss.vs_nchan, Some(0.6));
        // In the goal's own unit: 6,000 bytes against 8 kB, not "5.9 KiB".
        assert_eq!(rss.pulse, "6.00 kB");
        assert!(rss.goal.contains("≤ 8 kB (8,000 bytes"), "{}", rss.goal);

        let cpu = by_id("cpu-per-event-vs-nchan");
        assert_eq!(cpu.vs_nchan, Some(0.5));
        assert_eq!(cpu.status, Status::Met);
        assert_eq!(cpu.pulse, "1.00 µs/event");
        let cheap = by_id("cpu-per-event-vs-starlette");
        assert_eq!(cheap.vs_starlette, Some(0.05));
        assert_eq!(cheap.status, Status::Met);

        let p99 = by_id("p99-vs-nchan");
        assert_eq!(p99.vs_nchan, Some(0.375));
        assert_eq!(p99.status, Status::Met);
        assert_eq!(by_id("p99-under-20ms").status, Status::Met);

        // Publish p50 180 µs, delivery p50 700 µs.
        let publish = by_id("publish-on-acceptance");
        assert_eq!(publish.status, Status::Met);
        assert_eq!(publish.pulse, "180 µs");

        assert_eq!(by_id("counter-cpu").vs_starlette, Some(0.05));
        assert_eq!(by_id("counter-cpu").status, Status::Met);
        assert_eq!(by_id("counter-cpu").nchan, "–");
        let memory = by_id("counter-memory");
        assert!((memory.vs_starlette.unwrap() - 0.12).abs() < 1e-9);
        assert_eq!(memory.status, Status::NotMet);

        let wasm = by_id("wasm-gzip");
        assert_eq!(wasm.status, Status::NotMet);
        assert_eq!(wasm.pulse, "120.00 kB");
        assert_eq!(wasm.goal, "release WASM ≤ 100 kB gzipped (100,000 bytes)");
        assert_eq!(by_id("first-message").status, Status::Met);
        assert_eq!(by_id("first-message").pulse, "130.0 ms");
    }

    fn counter_figures(results: &mut Results, target: Target) -> &mut Figures {
        results
            .runs
            .iter_mut()
            .find(|run| run.scenario == Scenario::Counter && run.target == target)
            .and_then(|run| run.figures.as_mut())
            .unwrap()
    }

    #[test]
    fn a_counter_run_that_lost_ids_does_not_count() {
        let goal_of = |results: &Results, id: &str| {
            evaluate(results)
                .into_iter()
                .find(|goal| goal.id == id)
                .unwrap()
        };
        // Every stream closed by the server, but 12 lost their last id: Pulse did not do
        // the job, whatever its CPU.
        let mut results = results();
        let pulse = counter_figures(&mut results, Target::Pulse);
        pulse.missing = 12;
        pulse.connections_with_missing = 12;
        pulse.complete = Some(4_988);
        let cpu = goal_of(&results, "counter-cpu");
        assert_eq!(cpu.status, Status::NotMet);
        assert_eq!(cpu.vs_starlette, None);
        assert_eq!(cpu.pulse, "10.00 s (not counted)");
        assert!(
            cpu.note.starts_with(
                "Pulse's run is not counted (4,988/5,000 streams complete, 12 ids missing)"
            ),
            "{}",
            cpu.note
        );
        assert_eq!(goal_of(&results, "counter-memory").status, Status::NotMet);

        // sse-starlette's run broke off: nothing to compare against.
        let mut results = self::results();
        let starlette = counter_figures(&mut results, Target::Starlette);
        starlette.errored = 30;
        starlette.complete = Some(4_970);
        starlette.missing = 300;
        let cpu = goal_of(&results, "counter-cpu");
        assert_eq!(cpu.status, Status::NotMeasured);
        assert!(
            cpu.starlette.ends_with("(not counted)"),
            "{}",
            cpu.starlette
        );
        assert_eq!(cpu.pulse, "10.00 s");
    }

    /// Adds latency-scenario runs at the p99 point with these p99s.
    pub(crate) fn add_latency_runs(results: &mut Results, target: Target, p99s: &[f64]) {
        let base = results
            .figures(
                Scenario::Capacity,
                target,
                results.profile.points.p99_at,
                Some(1.0),
            )
            .cloned()
            .unwrap_or_else(|| Figures::from_loadgen(&sample_report()));
        for &p99 in p99s {
            let mut f = base.clone();
            f.latency.p99_us = p99;
            results.runs.push(record(
                Scenario::Latency,
                target,
                results.profile.points.p99_at,
                Some(1.0),
                f,
            ));
        }
    }

    #[test]
    fn the_p99_goal_reads_the_median_of_every_run_at_its_point() {
        let mut results = results();
        // Capacity runs: Pulse 3 ms, nchan 8 ms. Pulse's one slow run and nchan's one fast
        // run do not decide the goal.
        add_latency_runs(&mut results, Target::Pulse, &[5_000.0, 3_500.0]);
        add_latency_runs(&mut results, Target::Nchan, &[4_000.0, 9_000.0]);
        add_latency_runs(&mut results, Target::Floor, &[2_000.0, 2_500.0]);
        let mut f = results.runs[0].figures.clone().unwrap();
        f.latency.count = 0;
        // A run that delivered nothing has no p99 to count.
        results.runs.push(record(
            Scenario::Latency,
            Target::Pulse,
            10_000,
            Some(1.0),
            f,
        ));
        assert_eq!(
            results.p99s_at(Target::Pulse, 10_000, 1.0),
            [3_000.0, 5_000.0, 3_500.0]
        );
        let goals = evaluate(&results);
        let p99 = goals.iter().find(|goal| goal.id == "p99-vs-nchan").unwrap();
        assert_eq!(p99.pulse, "3.50 ms");
        assert_eq!(p99.nchan, "8.00 ms");
        assert_eq!(p99.vs_nchan, Some(3_500.0 / 8_000.0));
        assert_eq!(p99.status, Status::Met);
        // The floor has no capacity run here: the median of its two.
        assert_eq!(p99.floor, "2.25 ms");
        assert!(
            p99.note
                .starts_with("median of 3 runs of Pulse and 3 of nchan"),
            "{}",
            p99.note
        );

        // The median, not the best run, decides: two slow runs of three fail the goal.
        add_latency_runs(&mut results, Target::Pulse, &[4_500.0, 4_600.0]);
        let goals = evaluate(&results);
        let p99 = goals.iter().find(|goal| goal.id == "p99-vs-nchan").unwrap();
        assert_eq!(p99.pulse, "4.50 ms");
        assert_eq!(p99.status, Status::NotMet);
    }

    #[test]
    fn missing_figures_are_not_measured_never_met() {
        let mut results = results();
        results.runs.retain(|run| run.target != Target::Nchan);
        results.page = None;
        let goals = evaluate(&results);
        let status = |id: &str| goals.iter().find(|goal| goal.id == id).unwrap().status;
        assert_eq!(status("cpu-per-event-vs-nchan"), Status::NotMeasured);
        assert_eq!(status("p99-vs-nchan"), Status::NotMeasured);
        assert_eq!(status("wasm-gzip"), Status::NotMeasured);
        assert_eq!(status("first-message"), Status::NotMeasured);
        // Goals that do not need nchan are still decided.
        assert_eq!(status("cpu-per-event-vs-starlette"), Status::Met);
    }
}
