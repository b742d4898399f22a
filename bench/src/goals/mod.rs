//! The goals as a table of data: each names what it measures (the scenario), the
//! threshold that meets it and the peer its ratio is taken against, and has one small
//! function in [`measures`] that reads its figures from the results. [`evaluate`] judges
//! every row the same way.
//!
//! A goal whose figures are missing (a step that failed or was skipped) is "not measured",
//! never met. Sizes are decimal: 8 KB is 8,000 bytes and 100 KB is 100,000 bytes, the
//! stricter reading, and the figures of those goals are shown in the same unit (kB, 1,000
//! bytes) so that figure and limit compare at a glance.

mod measures;
#[cfg(test)]
pub(crate) mod tests;

use crate::{
    results::Results,
    scenarios::Scenario,
    verdict::{at_most, below, cell, ratio, Goal, Status},
};
use measures::Measured;

/// Where a goal's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Runs of one scenario (the p99 goal also reads [`Scenario::Latency`]'s repeats).
    Run(Scenario),
    /// The page step: WASM sizes and the first message in chromium.
    Page,
}

/// Which peer a goal's ratio is taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// nginx + nchan.
    Nchan,
    /// FastAPI + sse-starlette.
    Starlette,
}

impl Peer {
    /// The peer's place in [`Measured::values`].
    fn index(self) -> usize {
        match self {
            Self::Nchan => 1,
            Self::Starlette => 2,
        }
    }
}

/// What meets a goal: a limit on Pulse's figure, or, when the goal has a peer, on Pulse's
/// figure ÷ the peer's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// At most this.
    AtMost(f64),
    /// Strictly below this.
    Below(f64),
    /// A condition the measure checks itself (every update delivered; answered before the
    /// fan-out).
    Holds,
}

/// One goal of the issue.
pub struct GoalSpec {
    /// Short id, stable across runs.
    pub id: &'static str,
    /// What the issue asks. `{point}` is replaced by the point it was measured at, and
    /// `{quick}` by a remark on a quick run (whose points are smaller).
    pub text: &'static str,
    /// The point the issue sets, for the remark on a quick run.
    pub full_point: &'static str,
    /// Where its figures come from.
    pub source: Source,
    /// The peer a ratio is taken against; `None` for a limit on Pulse's own figure.
    pub peer: Option<Peer>,
    /// What meets it.
    pub threshold: Threshold,
    /// Reads its figures from the results.
    measure: fn(&Results) -> Measured,
}

/// The twelve goals, in the report's order.
pub const GOALS: [GoalSpec; 12] = [
    GoalSpec {
        id: "capacity-one-process",
        text: "{point} subscribers in one process, every update delivered{quick}",
        full_point: "19,900",
        source: Source::Run(Scenario::Capacity),
        peer: None,
        threshold: Threshold::Holds,
        measure: measures::capacity_one_process,
    },
    GoalSpec {
        id: "capacity-two-instances",
        text: "{point} subscribers over two instances (Redis), every update delivered{quick}",
        full_point: "39,800",
        source: Source::Run(Scenario::Capacity),
        peer: None,
        threshold: Threshold::Holds,
        measure: measures::capacity_two_instances,
    },
    GoalSpec {
        id: "rss-per-subscriber",
        text: "RSS per idle subscriber ≤ 8 kB (8,000 bytes; at {point} subscribers){quick}",
        full_point: "10,000",
        source: Source::Run(Scenario::Capacity),
        peer: None,
        threshold: Threshold::AtMost(8_000.0),
        measure: measures::rss_per_subscriber,
    },
    GoalSpec {
        id: "cpu-per-event-vs-nchan",
        text: "server CPU per delivered event ≤ 0.8× nchan's at {point}",
        full_point: "1,000 subscribers × 100/s",
        source: Source::Run(Scenario::Fanout),
        peer: Some(Peer::Nchan),
        threshold: Threshold::AtMost(0.8),
        measure: measures::cpu_per_event,
    },
    GoalSpec {
        id: "cpu-per-event-vs-starlette",
        text: "server CPU per delivered event ≥ 10× cheaper than sse-starlette at {point}",
        full_point: "1,000 subscribers × 100/s",
        source: Source::Run(Scenario::Fanout),
        peer: Some(Peer::Starlette),
        threshold: Threshold::AtMost(0.1),
        measure: measures::cpu_per_event,
    },
    GoalSpec {
        id: "p99-vs-nchan",
        text: "publish-to-receive p99 ≤ ½ nchan's at {point}{quick}",
        full_point: "10,000 × 1/s",
        source: Source::Run(Scenario::Capacity),
        peer: Some(Peer::Nchan),
        threshold: Threshold::AtMost(0.5),
        measure: measures::p99_at_capacity,
    },
    GoalSpec {
        id: "p99-under-20ms",
        text: "publish-to-receive p99 < 20 ms at {point}",
        full_point: "1,000 subscribers × 100/s",
        source: Source::Run(Scenario::Fanout),
        peer: None,
        threshold: Threshold::Below(20_000.0),
        measure: measures::p99_at_fanout,
    },
    GoalSpec {
        id: "publish-on-acceptance",
        text: "publisher answered on acceptance (publish latency p50 at {point})",
        full_point: "10,000 × 1",
        source: Source::Run(Scenario::Capacity),
        peer: None,
        threshold: Threshold::Holds,
        measure: measures::publish_on_acceptance,
    },
    GoalSpec {
        id: "counter-cpu",
        text: "counter job: ≥ 10× less CPU than sse-starlette with {point} `/stream` clients{quick}",
        full_point: "5,000",
        source: Source::Run(Scenario::Counter),
        peer: Some(Peer::Starlette),
        threshold: Threshold::AtMost(0.1),
        measure: measures::counter_cpu,
    },
    GoalSpec {
        id: "counter-memory",
        text: "counter job: ≥ 10× less memory than sse-starlette with {point} `/stream` clients{quick}",
        full_point: "5,000",
        source: Source::Run(Scenario::Counter),
        peer: Some(Peer::Starlette),
        threshold: Threshold::AtMost(0.1),
        measure: measures::counter_memory,
    },
    GoalSpec {
        id: "wasm-gzip",
        text: "release WASM ≤ 100 kB gzipped (100,000 bytes)",
        full_point: "",
        source: Source::Page,
        peer: None,
        threshold: Threshold::AtMost(100_000.0),
        measure: measures::wasm_gzip,
    },
    GoalSpec {
        id: "first-message",
        text: "first counter message ≤ 300 ms after navigation (median)",
        full_point: "",
        source: Source::Page,
        peer: None,
        // The figure is in microseconds, like every latency.
        threshold: Threshold::AtMost(300_000.0),
        measure: measures::first_message,
    },
];

impl GoalSpec {
    /// This goal judged on `results`.
    pub fn evaluate(&self, results: &Results) -> Goal {
        let measured = (self.measure)(results);
        let [pulse, nchan, starlette, floor] = measured.values;
        let peer = self.peer.and_then(|peer| measured.values[peer.index()]);
        let judged = if self.peer.is_some() {
            ratio(pulse, peer)
        } else {
            pulse
        };
        let status = match self.threshold {
            _ if measured.disqualified => Status::NotMet,
            Threshold::AtMost(limit) => at_most(judged, limit),
            Threshold::Below(limit) => below(judged, limit),
            Threshold::Holds => Status::from_check(measured.holds),
        };
        let [pulse_cell, nchan_cell, starlette_cell, floor_cell] = std::array::from_fn(|index| {
            measured.cells[index]
                .clone()
                .unwrap_or_else(|| cell(measured.values[index], measured.format))
        });
        Goal {
            id: self.id.to_owned(),
            goal: self.text(results, &measured.point),
            pulse: pulse_cell,
            nchan: nchan_cell,
            starlette: starlette_cell,
            vs_nchan: ratio(pulse, nchan),
            vs_starlette: ratio(pulse, starlette),
            floor: floor_cell,
            floor_vs_peer: self.peer.and_then(|_| ratio(floor, peer)),
            status,
            note: measured.note,
        }
    }

    fn text(&self, results: &Results, point: &str) -> String {
        let quick = if results.profile.quick {
            format!(" — quick run; the goal is at {}", self.full_point)
        } else {
            String::new()
        };
        self.text
            .replace("{point}", point)
            .replace("{quick}", &quick)
    }
}

/// Evaluates every goal of the issue against `results`.
pub fn evaluate(results: &Results) -> Vec<Goal> {
    GOALS.iter().map(|spec| spec.evaluate(results)).collect()
}
