//! What is measured: the scenarios, their sizes and rates, for a full run and a quick one.
//!
//! Full: capacity at 1k/10k/19.9k subscribers and 39.8k over two instances; fan-out at 1k
//! and 10k subscribers with the publish rate doubling each step until delivery falls
//! behind; the counter job at 1k/5k/10k clients; the page; the p99 goal's point twice
//! more for Pulse, nchan and the floor. About 20 minutes on 2 cores.
//! Quick: the same steps, small, to check the tooling in about 4 minutes.

use serde::{Deserialize, Serialize};

use crate::targets::{StreamSettings, Target};

/// Which scenario a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Subscribers to one topic at a low rate: who stays connected, memory, latency.
    Capacity,
    /// A fixed crowd and a rising publish rate.
    Fanout,
    /// Many `/stream` clients.
    Counter,
    /// The p99 goal's point (capacity at 10,000 × 1/s) measured again for Pulse, nchan
    /// and the floor, so that the goal reads the median of several runs, not one.
    Latency,
}

impl Scenario {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::Fanout => "fanout",
            Self::Counter => "counter",
            Self::Latency => "latency",
        }
    }
}

/// A fan-out series: one crowd, rising rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutSeries {
    /// Subscribers.
    pub subscribers: usize,
    /// Updates per second, one step each, in order.
    pub rates: Vec<f64>,
}

/// Everything a run measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// A quick run (small sizes, short holds).
    pub quick: bool,
    /// Connections opened per second.
    pub ramp_rate: f64,
    /// Connections opened per second to sse-starlette in the publishing scenarios: it spends
    /// about 1 ms of CPU accepting each one, so a faster ramp leaves connections waiting
    /// past the ramp (and the hold) instead of measuring fan-out. No goal depends on it.
    pub slow_ramp_rate: f64,
    /// loadgen's connect timeout, seconds.
    pub connect_timeout_s: u64,
    /// loadgen's drain after publishing, seconds.
    pub drain_s: f64,
    /// Payload bytes.
    pub payload_size: usize,
    /// Targets of the single-instance scenarios, in order.
    pub targets: Vec<Target>,
    /// Capacity: subscriber counts.
    pub capacity_sizes: Vec<usize>,
    /// Capacity: updates per second.
    pub capacity_rate: f64,
    /// Capacity: seconds of publishing after the ramp.
    pub capacity_hold_s: f64,
    /// Capacity over two Pulse instances and Redis: subscribers (0: skip).
    pub redis_size: usize,
    /// Fan-out series.
    pub fanout: Vec<FanoutSeries>,
    /// Fan-out: seconds of publishing per step.
    pub fanout_hold_s: f64,
    /// A step falls behind below this delivered ratio…
    pub behind_ratio: f64,
    /// …or above this p99, microseconds.
    pub behind_p99_us: f64,
    /// Counter job: concurrent clients.
    pub counter_clients: Vec<usize>,
    /// Counter job: the stream.
    pub stream: StreamSettings,
    /// Page: measured navigations.
    pub page_runs: usize,
    /// The points the issue's goals name, as measured in this profile.
    pub points: GoalPoints,
    /// Whether the floor server ([`crate::floor`]) is measured at the goals' points.
    #[serde(default)]
    pub floor: bool,
    /// Extra runs at the p99 goal's point for Pulse, nchan and the floor: the goal is read
    /// from the median of the capacity run and these. One run's p99 at 10,000 × 1/s moves
    /// by ±10 ms between runs here, as much as the goal's margin.
    #[serde(default)]
    pub latency_repeats: usize,
    /// The whole run stops starting new steps after this many minutes.
    pub max_minutes: f64,
}

/// Where each goal is evaluated (quick runs use their own, smaller points).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GoalPoints {
    /// Subscribers in one process with every update delivered (19,900).
    pub one_process: usize,
    /// Subscribers over two instances (39,800).
    pub two_instances: usize,
    /// RSS per idle subscriber measured at this many subscribers.
    pub rss_at: usize,
    /// p99 against nchan at this many subscribers × `capacity_rate` (10,000 × 1/s).
    pub p99_at: usize,
    /// CPU per event and p99 < 20 ms at this crowd…
    pub cpu_subscribers: usize,
    /// …and this rate (1,000 × 100/s).
    pub cpu_rate: f64,
    /// Counter job clients (5,000).
    pub counter_clients: usize,
}

impl Profile {
    /// The full benchmark.
    pub fn full() -> Self {
        Self {
            quick: false,
            ramp_rate: 2000.0,
            slow_ramp_rate: 500.0,
            connect_timeout_s: 30,
            drain_s: 2.0,
            payload_size: 128,
            targets: vec![Target::Pulse, Target::Nchan, Target::Starlette],
            capacity_sizes: vec![1_000, 10_000, 19_900],
            capacity_rate: 1.0,
            capacity_hold_s: 20.0,
            redis_size: 39_800,
            fanout: vec![
                FanoutSeries {
                    subscribers: 1_000,
                    rates: vec![50.0, 100.0, 200.0, 400.0, 800.0, 1600.0],
                },
                FanoutSeries {
                    subscribers: 10_000,
                    rates: vec![5.0, 10.0, 20.0, 40.0, 80.0, 160.0],
                },
            ],
            fanout_hold_s: 6.0,
            behind_ratio: 0.99,
            behind_p99_us: 1_000_000.0,
            counter_clients: vec![1_000, 5_000, 10_000],
            stream: StreamSettings::default(),
            page_runs: 10,
            points: GoalPoints {
                one_process: 19_900,
                two_instances: 39_800,
                rss_at: 10_000,
                p99_at: 10_000,
                cpu_subscribers: 1_000,
                cpu_rate: 100.0,
                counter_clients: 5_000,
            },
            max_minutes: 35.0,
            floor: true,
            latency_repeats: 2,
        }
    }

    /// A short run that goes through every step, to check the tooling.
    pub fn quick() -> Self {
        Self {
            quick: true,
            connect_timeout_s: 15,
            drain_s: 1.0,
            capacity_sizes: vec![500, 2_000],
            capacity_hold_s: 3.0,
            redis_size: 2_000,
            fanout: vec![
                FanoutSeries {
                    subscribers: 1_000,
                    rates: vec![100.0, 400.0],
                },
                FanoutSeries {
                    subscribers: 2_000,
                    rates: vec![5.0, 20.0],
                },
            ],
            fanout_hold_s: 3.0,
            counter_clients: vec![200, 1_000],
            stream: StreamSettings {
                count: 5,
                interval_ms: 200,
            },
            page_runs: 3,
            points: GoalPoints {
                one_process: 2_000,
                two_instances: 2_000,
                rss_at: 2_000,
                p99_at: 2_000,
                cpu_subscribers: 1_000,
                cpu_rate: 100.0,
                counter_clients: 1_000,
            },
            max_minutes: 10.0,
            latency_repeats: 1,
            ..Self::full()
        }
    }

    /// Connections per second for `target` in the capacity and fan-out scenarios.
    pub fn publish_ramp_rate(&self, target: Target) -> f64 {
        match target {
            Target::Starlette => self.slow_ramp_rate,
            _ => self.ramp_rate,
        }
    }

    /// Seconds loadgen runs for `connections` to `target` plus `hold` of publishing:
    /// `--duration` counts from the first connection, and publishing starts once the ramp
    /// is over, so the ramp gets a margin for servers that accept slowly.
    pub fn duration_s(&self, target: Target, connections: usize, hold_s: f64) -> f64 {
        let ramp = connections as f64 / self.publish_ramp_rate(target);
        (ramp * 1.5 + 1.0 + hold_s).ceil()
    }

    /// Seconds a counter run may take: the ramp four times over (a server may accept much
    /// slower than it is offered), every message, and a margin. loadgen stops as soon as
    /// every stream has ended, so a fast server does not wait for this.
    pub fn counter_duration_s(&self, clients: usize) -> f64 {
        let ramp = clients as f64 / self.ramp_rate;
        let stream = f64::from(self.stream.count) * self.stream.interval_ms as f64 / 1000.0;
        (ramp * 4.0 + stream + 15.0).ceil()
    }

    /// Whether a fan-out step fell behind.
    pub fn behind(&self, delivered_ratio: f64, p99_us: f64) -> bool {
        delivered_ratio < self.behind_ratio || p99_us > self.behind_p99_us
    }

    /// Whether a fan-out step's figures end its series: delivery fell behind, the
    /// publisher could not get 90% of the rate accepted (the server answers publishes only
    /// so fast), or nothing was delivered at all (publishing never started: the crowd was
    /// not in by the end), or nothing was owed, so that no share delivered is known.
    pub fn ends_series(&self, figures: &crate::figures::Figures) -> bool {
        let publisher_behind = figures
            .publish
            .as_ref()
            .is_some_and(|publish| publish.achieved_rate < 0.9 * publish.target_rate);
        !figures.measured_delivery()
            || publisher_behind
            || figures
                .delivered_ratio
                .is_none_or(|ratio| self.behind(ratio, figures.latency.p99_us))
    }

    /// The goal's point (CPU per event, p99 < 20 ms) when `series` stopped at step
    /// `stopped` before reaching it: it is run anyway, so that every target has a figure
    /// there (a server that fell behind at a slower rate is measured at the goal's rate
    /// too, behind or not).
    pub fn goal_rate_after_stop(&self, series: &FanoutSeries, stopped: usize) -> Option<f64> {
        let rate = self.points.cpu_rate;
        (series.subscribers == self.points.cpu_subscribers
            && series.rates.iter().skip(stopped + 1).any(|r| *r == rate))
        .then_some(rate)
    }

    /// loadgen runs planned (fan-out series counted in full), for the progress display.
    pub fn planned_runs(&self) -> usize {
        let targets = self.targets.len();
        let capacity = self.capacity_sizes.len() * targets + usize::from(self.redis_size > 0);
        let fanout: usize = self.fanout.iter().map(|series| series.rates.len()).sum();
        let counter_targets = self
            .targets
            .iter()
            .filter(|target| **target != Target::Nchan)
            .count();
        capacity
            + fanout * targets
            + self.counter_clients.len() * counter_targets
            + self.floor_runs()
            + self.latency_repeats * self.latency_targets().len()
    }

    /// The targets measured again at the p99 goal's point: Pulse and nchan (the goal's
    /// two sides) when in the profile, and the floor when it runs.
    pub fn latency_targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = [Target::Pulse, Target::Nchan]
            .into_iter()
            .filter(|target| self.targets.contains(target))
            .collect();
        if self.floor {
            targets.push(Target::Floor);
        }
        targets
    }

    /// The floor's runs: capacity at the p99 point, the CPU point of the fan-out, and the
    /// counter job.
    pub fn floor_runs(&self) -> usize {
        if self.floor {
            3
        } else {
            0
        }
    }

    /// A rough upper bound of the whole run, seconds, for the progress display.
    pub fn estimate_s(&self) -> f64 {
        let per_run_overhead = 4.0 + self.drain_s;
        let capacity: f64 = self
            .capacity_sizes
            .iter()
            .flat_map(|&size| self.targets.iter().map(move |&target| (target, size)))
            .map(|(target, size)| {
                self.duration_s(target, size, self.capacity_hold_s) + per_run_overhead
            })
            .sum::<f64>()
            + if self.redis_size > 0 {
                self.duration_s(Target::PulseRedis, self.redis_size, self.capacity_hold_s)
                    + per_run_overhead
            } else {
                0.0
            };
        // sse-starlette falls behind after a step or two; count two.
        let fanout: f64 = self
            .fanout
            .iter()
            .flat_map(|series| self.targets.iter().map(move |&target| (target, series)))
            .map(|(target, series)| {
                let steps = match target {
                    Target::Starlette => series.rates.len().min(2),
                    _ => series.rates.len(),
                };
                (self.duration_s(target, series.subscribers, self.fanout_hold_s) + per_run_overhead)
                    * steps as f64
            })
            .sum();
        let counter: f64 = self
            .counter_clients
            .iter()
            .map(|&clients| {
                let ramp = clients as f64 / self.ramp_rate;
                let stream = f64::from(self.stream.count) * self.stream.interval_ms as f64 / 1e3;
                (ramp + stream + per_run_overhead) * 2.0
            })
            .sum();
        let floor = if self.floor {
            let points = self.points;
            let stream = f64::from(self.stream.count) * self.stream.interval_ms as f64 / 1e3;
            self.duration_s(Target::Floor, points.p99_at, self.capacity_hold_s)
                + self.duration_s(Target::Floor, points.cpu_subscribers, self.fanout_hold_s)
                + points.counter_clients as f64 / self.ramp_rate
                + stream
                + 3.0 * per_run_overhead
        } else {
            0.0
        };
        let latency: f64 = self
            .latency_targets()
            .into_iter()
            .map(|target| {
                (self.duration_s(target, self.points.p99_at, self.capacity_hold_s)
                    + per_run_overhead)
                    * self.latency_repeats as f64
            })
            .sum();
        capacity + fanout + counter + floor + latency + 30.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_that_stops_early_still_measures_the_goals_point() {
        let full = Profile::full();
        let crowd = full.fanout[0].clone();
        assert_eq!(crowd.subscribers, full.points.cpu_subscribers);
        // Behind at 50/s (step 0): 100/s is the goal's point, run anyway.
        assert_eq!(
            full.goal_rate_after_stop(&crowd, 0),
            Some(full.points.cpu_rate)
        );
        // Behind at 100/s or later: the goal's point was already measured.
        assert_eq!(full.goal_rate_after_stop(&crowd, 1), None);
        assert_eq!(full.goal_rate_after_stop(&crowd, 3), None);
        // Other crowds have no such point.
        assert_eq!(full.goal_rate_after_stop(&full.fanout[1], 0), None);
    }

    #[test]
    fn the_full_profile_is_the_issues_scenarios() {
        let full = Profile::full();
        assert_eq!(full.capacity_sizes, [1_000, 10_000, 19_900]);
        assert_eq!(full.redis_size, 39_800);
        assert_eq!(
            full.fanout[0].rates,
            [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0]
        );
        assert_eq!(full.fanout[1].rates, [5.0, 10.0, 20.0, 40.0, 80.0, 160.0]);
        assert_eq!(full.counter_clients, [1_000, 5_000, 10_000]);
        assert_eq!(full.stream, StreamSettings::default());
        // Every goal point is measured.
        let points = full.points;
        assert!(full.capacity_sizes.contains(&points.one_process));
        assert!(full.capacity_sizes.contains(&points.rss_at));
        assert!(full.capacity_sizes.contains(&points.p99_at));
        assert_eq!(full.redis_size, points.two_instances);
        assert!(full
            .fanout
            .iter()
            .any(|series| series.subscribers == points.cpu_subscribers
                && series.rates.contains(&points.cpu_rate)));
        assert!(full.counter_clients.contains(&points.counter_clients));
        // One process cannot hold more than its open-file limit allows (20,000).
        assert!(full.capacity_sizes.iter().all(|&size| size <= 19_900));
        // About 25 minutes at most on this machine (an upper bound: runs take ~19).
        assert!(full.estimate_s() < 25.0 * 60.0, "{}", full.estimate_s());
        assert!(full.estimate_s() < full.max_minutes * 60.0);
        // Capacity, Redis, fan-out, counter, floor, and the p99 point twice more for Pulse,
        // nchan and the floor.
        assert_eq!(full.planned_runs(), 9 + 1 + 36 + 6 + 3 + 6);
        assert_eq!(
            full.latency_targets(),
            [Target::Pulse, Target::Nchan, Target::Floor]
        );
        let narrowed = Profile {
            targets: vec![Target::Pulse, Target::Starlette],
            floor: false,
            ..Profile::full()
        };
        assert_eq!(narrowed.latency_targets(), [Target::Pulse]);
    }

    #[test]
    fn the_quick_profile_goes_through_the_same_points_small() {
        let quick = Profile::quick();
        assert!(quick.quick);
        let points = quick.points;
        assert!(quick.capacity_sizes.contains(&points.one_process));
        assert!(quick.capacity_sizes.contains(&points.p99_at));
        assert!(quick
            .fanout
            .iter()
            .any(|series| series.subscribers == points.cpu_subscribers
                && series.rates.contains(&points.cpu_rate)));
        assert!(quick.counter_clients.contains(&points.counter_clients));
        assert!(quick.estimate_s() < 6.0 * 60.0, "{}", quick.estimate_s());
        assert_eq!(quick.latency_repeats, 1);
    }

    #[test]
    fn durations_cover_the_ramp_and_the_hold() {
        let full = Profile::full();
        // 19,900 at 2,000/s: ~10 s of ramp, 50% margin, 1 s, 10 s of publishing.
        assert_eq!(full.duration_s(Target::Pulse, 19_900, 10.0), 26.0);
        assert_eq!(full.duration_s(Target::Nchan, 1_000, 6.0), 8.0);
        // sse-starlette's crowds open at 500/s.
        assert_eq!(full.duration_s(Target::Starlette, 10_000, 6.0), 37.0);
        // 5,000 streams of 20 × 1 s.
        assert_eq!(full.counter_duration_s(5_000), 45.0);
    }

    #[test]
    fn a_step_falls_behind_on_losses_or_latency() {
        let full = Profile::full();
        assert!(!full.behind(1.0, 20_000.0));
        assert!(!full.behind(0.99, 1_000_000.0));
        assert!(full.behind(0.989, 1_000.0));
        assert!(full.behind(1.0, 1_000_001.0));
        let delivered =
            crate::figures::Figures::from_loadgen(&crate::figures::tests::sample_report());
        assert!(!full.ends_series(&delivered));
        let mut slow_publisher = delivered.clone();
        slow_publisher.publish.as_mut().unwrap().achieved_rate = 85.0;
        assert!(full.ends_series(&slow_publisher));
        let mut nothing = delivered.clone();
        nothing.latency.count = 0;
        nothing.publish.as_mut().unwrap().ok = 0;
        assert!(full.ends_series(&nothing));
        let mut nothing_owed = delivered.clone();
        nothing_owed.delivered_ratio = None;
        assert!(full.ends_series(&nothing_owed));
    }
}
