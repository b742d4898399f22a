//! The results of a benchmark run: every loadgen run with its figures (and loadgen's whole
//! document), the page, the machine, and the goals as evaluated. This is what
//! `bench/results/<date>.json` holds; the markdown report and the charts are made from it
//! alone (`bench render` redoes them from a file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    figures::Figures,
    machine::Machine,
    page::PageResult,
    scenarios::{Profile, Scenario},
    targets::Target,
    verdict::Goal,
};

/// Bumped when the layout changes.
pub const SCHEMA: u32 = 1;

/// One loadgen run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The scenario.
    pub scenario: Scenario,
    /// The server under test.
    pub target: Target,
    /// Subscribers (or counter clients).
    pub subscribers: usize,
    /// Updates per second (publishing scenarios).
    pub rate: Option<f64>,
    /// What loadgen measured, if it ran.
    pub figures: Option<Figures>,
    /// Why it did not run, or what went wrong around it.
    pub error: Option<String>,
    /// Fan-out: whether delivery fell behind at this step.
    pub behind: Option<bool>,
    /// Seconds the step took, with the server's start and stop.
    pub wall_s: f64,
    /// Cores other processes kept busy just before the step (nothing of the benchmark's
    /// runs then): well above 0 means the step shared the machine.
    #[serde(default)]
    pub busy_cores_before: Option<f64>,
    /// loadgen's whole results document.
    pub loadgen: Option<Value>,
}

/// A whole benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The UTC date of the start, `YYYY-MM-DD`.
    pub date: String,
    /// A quick run (small sizes: checks the tooling, not the goals).
    pub quick: bool,
    /// Only some scenarios ran (`--only`, `--targets`).
    #[serde(default)]
    pub partial: bool,
    /// Start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// End.
    pub finished_unix_ms: u64,
    /// Stopped early by Ctrl-C / SIGTERM.
    pub interrupted: bool,
    /// The machine.
    pub machine: Machine,
    /// Versions of everything measured and used.
    pub versions: BTreeMap<String, String>,
    /// What was planned.
    pub profile: Profile,
    /// Every loadgen run.
    pub runs: Vec<RunRecord>,
    /// The page.
    pub page: Option<PageResult>,
    /// The goals.
    pub goals: Vec<Goal>,
    /// Steps skipped or failed, and other remarks.
    pub notes: Vec<String>,
}

impl Results {
    /// The run of `scenario` against `target` with `subscribers` (and `rate`, if given).
    pub fn find(
        &self,
        scenario: Scenario,
        target: Target,
        subscribers: usize,
        rate: Option<f64>,
    ) -> Option<&RunRecord> {
        self.runs.iter().find(|run| {
            run.scenario == scenario
                && run.target == target
                && run.subscribers == subscribers
                && match rate {
                    Some(rate) => run.rate.is_some_and(|r| (r - rate).abs() < 1e-9),
                    None => true,
                }
        })
    }

    /// The figures of that run, if it produced any.
    pub fn figures(
        &self,
        scenario: Scenario,
        target: Target,
        subscribers: usize,
        rate: Option<f64>,
    ) -> Option<&Figures> {
        self.find(scenario, target, subscribers, rate)?
            .figures
            .as_ref()
    }

    /// Every run of `target` at `subscribers` × `rate` that the p99 goal reads: the
    /// capacity run, then each [`Scenario::Latency`] run, in the order they ran.
    pub fn runs_at(&self, target: Target, subscribers: usize, rate: f64) -> Vec<&RunRecord> {
        let capacity = self.find(Scenario::Capacity, target, subscribers, Some(rate));
        let again = self.runs.iter().filter(|run| {
            run.scenario == Scenario::Latency
                && run.target == target
                && run.subscribers == subscribers
                && run.rate.is_some_and(|r| (r - rate).abs() < 1e-9)
        });
        capacity.into_iter().chain(again).collect()
    }

    /// The figures of those runs that measured latency (delivered anything), in order.
    pub fn latency_figures_at(
        &self,
        target: Target,
        subscribers: usize,
        rate: f64,
    ) -> Vec<&Figures> {
        self.runs_at(target, subscribers, rate)
            .into_iter()
            .filter_map(|run| run.figures.as_ref())
            .filter(|figures| figures.latency.count > 0)
            .collect()
    }

    /// Their p99 latencies.
    pub fn p99s_at(&self, target: Target, subscribers: usize, rate: f64) -> Vec<f64> {
        self.latency_figures_at(target, subscribers, rate)
            .into_iter()
            .map(|figures| figures.latency.p99_us)
            .collect()
    }

    /// Runs of a scenario, in the order they ran.
    pub fn of(&self, scenario: Scenario) -> impl Iterator<Item = &RunRecord> {
        self.runs.iter().filter(move |run| run.scenario == scenario)
    }

    /// The targets that appear in a scenario, in the profile's order (Pulse first).
    pub fn targets_in(&self, scenario: Scenario) -> Vec<Target> {
        let mut targets: Vec<Target> = self.of(scenario).map(|run| run.target).collect();
        targets.sort();
        targets.dedup();
        targets
    }

    /// Distinct subscriber counts of a scenario, ascending.
    pub fn sizes_in(&self, scenario: Scenario) -> Vec<usize> {
        let mut sizes: Vec<usize> = self.of(scenario).map(|run| run.subscribers).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}
