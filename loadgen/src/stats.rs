//! Latency histograms and exact distributions, and how they travel between processes.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits: every value below
//! 2.048 ms is exact, larger ones are within 0.1%), next to the exact minimum, maximum and
//! sum. Percentiles use the nearest-rank definition computed in integers (the value below
//! which at least p‰ of the samples lie); floating-point rank arithmetic would turn p99 of
//! 100 samples into the 100th. A reported percentile is the top of its histogram bucket,
//! never above the exact maximum.
//!
//! Workers send their histograms to the coordinator as sparse `(value, count)` lists, which
//! merge without loss: each value is the top of its bucket and lands in the same bucket.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency tracked, in microseconds (one hour); larger values count as this.
pub const MAX_TRACKED_US: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles loadgen reports, in parts per thousand.
const P50: u64 = 500;
const P90: u64 = 900;
const P99: u64 = 990;
const P999: u64 = 999;

/// Why statistics from a worker cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// The histogram could not be built or merged.
    #[error("histogram: {0}")]
    Histogram(String),
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
    min: u64,
    max: u64,
    sum: u128,
}

/// A [`Latency`] as it crosses a process boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyWire {
    /// `(bucket top, count)` of every non-empty bucket.
    pub buckets: Vec<(u64, u64)>,
    /// Exact smallest sample.
    pub min: u64,
    /// Exact largest sample.
    pub max: u64,
    /// Exact sum of the samples (saturating; a u64 of microseconds is 584 000 years).
    pub sum: u64,
}

/// The figures reported for a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample (exact).
    pub min_us: u64,
    /// Mean (exact).
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample (exact).
    pub max_us: u64,
}

impl Latency {
    /// An empty distribution.
    pub fn new() -> Result<Self, StatsError> {
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKED_US, SIGNIFICANT_DIGITS)
            .map_err(|error| StatsError::Histogram(format!("{error:?}")))?;
        Ok(Self {
            histogram,
            min: u64::MAX,
            max: 0,
            sum: 0,
        })
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Adds one sample, in microseconds.
    pub fn record(&mut self, micros: u64) {
        let micros = micros.min(MAX_TRACKED_US);
        self.histogram.saturating_record(micros);
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
        self.sum += u128::from(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) -> Result<(), StatsError> {
        self.histogram
            .add(&other.histogram)
            .map_err(|error| StatsError::Histogram(format!("{error:?}")))?;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        Ok(())
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.histogram.reset();
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
    }

    /// The nearest-rank percentile for `permille` parts per thousand (0 if empty).
    pub fn percentile(&self, permille: u64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = (u128::from(total) * u128::from(permille))
            .div_ceil(1000)
            .max(1);
        let mut seen = 0u128;
        for bucket in self.histogram.iter_recorded() {
            seen += u128::from(bucket.count_at_value());
            if seen >= rank {
                return bucket.value_iterated_to().min(self.max);
            }
        }
        self.max
    }

    /// The reported figures.
    pub fn summary(&self) -> LatencySummary {
        let count = self.count();
        if count == 0 {
            return LatencySummary::default();
        }
        LatencySummary {
            count,
            min_us: self.min,
            mean_us: self.sum as f64 / count as f64,
            p50_us: self.percentile(P50),
            p90_us: self.percentile(P90),
            p99_us: self.percentile(P99),
            p999_us: self.percentile(P999),
            max_us: self.max,
        }
    }

    /// The form sent between processes.
    pub fn to_wire(&self) -> LatencyWire {
        LatencyWire {
            buckets: self
                .histogram
                .iter_recorded()
                .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
                .collect(),
            min: if self.count() == 0 { 0 } else { self.min },
            max: self.max,
            sum: u64::try_from(self.sum).unwrap_or(u64::MAX),
        }
    }

    /// Rebuilds a distribution sent by [`Latency::to_wire`].
    pub fn from_wire(wire: &LatencyWire) -> Result<Self, StatsError> {
        let mut latency = Self::new()?;
        for &(value, count) in &wire.buckets {
            latency
                .histogram
                .record_n(value.min(MAX_TRACKED_US), count)
                .map_err(|error| StatsError::Histogram(format!("{error:?}")))?;
        }
        if latency.count() > 0 {
            latency.min = wire.min;
            latency.max = wire.max;
            latency.sum = u128::from(wire.sum);
        }
        Ok(latency)
    }
}

/// An exact distribution of small whole numbers, such as events per connection: how many
/// times each value occurred. Connections mostly see the same few counts, so this stays small.
///
/// It travels as a list of `[value, count]` pairs: JSON object keys would be strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<(u64, u64)>", from = "Vec<(u64, u64)>")]
pub struct Counts(pub BTreeMap<u64, u64>);

impl From<Counts> for Vec<(u64, u64)> {
    fn from(counts: Counts) -> Self {
        counts.0.into_iter().collect()
    }
}

impl From<Vec<(u64, u64)>> for Counts {
    fn from(pairs: Vec<(u64, u64)>) -> Self {
        let mut counts = Self::default();
        for (value, count) in pairs {
            *counts.0.entry(value).or_insert(0) += count;
        }
        counts
    }
}

/// The reported figures of a [`Counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CountsSummary {
    /// Number of samples (connections).
    pub samples: u64,
    /// Samples that were zero.
    pub zero: u64,
    /// Smallest value.
    pub min: u64,
    /// 1st percentile.
    pub p1: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest value.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Counts {
    /// Adds one sample.
    pub fn record(&mut self, value: u64) {
        *self.0.entry(value).or_insert(0) += 1;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (&value, &count) in &other.0 {
            *self.0.entry(value).or_insert(0) += count;
        }
    }

    /// Number of samples.
    pub fn samples(&self) -> u64 {
        self.0.values().sum()
    }

    /// The nearest-rank percentile for `permille` parts per thousand (0 if empty).
    pub fn percentile(&self, permille: u64) -> u64 {
        let rank = (u128::from(self.samples()) * u128::from(permille))
            .div_ceil(1000)
            .max(1);
        let mut seen = 0u128;
        for (&value, &count) in &self.0 {
            seen += u128::from(count);
            if seen >= rank {
                return value;
            }
        }
        0
    }

    /// The reported figures.
    pub fn summary(&self) -> CountsSummary {
        let samples = self.samples();
        if samples == 0 {
            return CountsSummary::default();
        }
        let sum: u128 = self
            .0
            .iter()
            .map(|(&value, &count)| u128::from(value) * u128::from(count))
            .sum();
        CountsSummary {
            samples,
            zero: self.0.get(&0).copied().unwrap_or(0),
            min: self.0.keys().next().copied().unwrap_or(0),
            p1: self.percentile(10),
            p50: self.percentile(P50),
            p99: self.percentile(P99),
            max: self.0.keys().next_back().copied().unwrap_or(0),
            mean: sum as f64 / samples as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency_of(values: impl IntoIterator<Item = u64>) -> Latency {
        let mut latency = Latency::new().unwrap();
        for value in values {
            latency.record(value);
        }
        latency
    }

    /// The nearest-rank percentile of sorted `values`, the slow obvious way.
    fn nearest_rank(sorted: &[u64], permille: u64) -> u64 {
        let rank = (sorted.len() as u64 * permille).div_ceil(1000).max(1);
        sorted[rank as usize - 1]
    }

    #[test]
    fn exact_percentiles_below_two_milliseconds() {
        let summary = latency_of(1..=1000).summary();
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.min_us, 1);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p90_us, 900);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.p999_us, 999);
        assert_eq!(summary.max_us, 1000);
        assert!((summary.mean_us - 500.5).abs() < 1e-9);
    }

    #[test]
    fn p99_of_a_hundred_is_the_99th() {
        let summary = latency_of(1..=100).summary();
        assert_eq!(summary.p99_us, 99);
        assert_eq!(summary.p50_us, 50);
        assert_eq!(summary.p999_us, 100);
    }

    #[test]
    fn percentiles_within_a_tenth_of_a_percent() {
        // A skewed, repeatable spread up to 10 s, in shuffled order.
        let values: Vec<u64> = (0..50_000u64)
            .map(|i| 1 + (i * 7919 % 50_000).pow(2) / 250)
            .collect();
        let latency = latency_of(values.iter().copied());
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for permille in [P50, P90, P99, P999, 1000, 1] {
            let exact = nearest_rank(&sorted, permille);
            let reported = latency.percentile(permille);
            assert!(reported >= exact, "p{permille}: {reported} < {exact}");
            assert!(
                reported - exact <= exact / 1000 + 1,
                "p{permille}: {reported} vs {exact}"
            );
        }
        let summary = latency.summary();
        assert_eq!(summary.max_us, *sorted.last().unwrap());
        assert_eq!(summary.min_us, sorted[0]);
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((summary.mean_us - mean).abs() < 1e-6);
    }

    #[test]
    fn a_percentile_never_exceeds_the_maximum() {
        let latency = latency_of([10_001, 10_001, 10_001]);
        assert_eq!(latency.summary().p50_us, 10_001);
        assert_eq!(latency.summary().max_us, 10_001);
    }

    #[test]
    fn clamps_absurd_values() {
        let latency = latency_of([0, u64::MAX]);
        assert_eq!(latency.summary().max_us, MAX_TRACKED_US);
        assert_eq!(latency.summary().min_us, 0);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let a = latency_of((1..5000).step_by(3));
        let b = latency_of((100..900_000).step_by(997));
        let mut merged = a.clone();
        merged.merge(&b).unwrap();
        let whole = latency_of((1..5000).step_by(3).chain((100..900_000).step_by(997)));
        assert_eq!(merged.summary(), whole.summary());
    }

    #[test]
    fn the_wire_form_loses_nothing() {
        let original = latency_of((0..50_000u64).map(|i| i * i % 3_000_017));
        let copy = Latency::from_wire(&original.to_wire()).unwrap();
        assert_eq!(copy.summary(), original.summary());
        for permille in (0..=1000).step_by(37).chain([990, 999, 1000]) {
            assert_eq!(copy.percentile(permille), original.percentile(permille));
        }
        let json = serde_json::to_string(&original.to_wire()).unwrap();
        let back: LatencyWire = serde_json::from_str(&json).unwrap();
        assert_eq!(
            Latency::from_wire(&back).unwrap().summary(),
            original.summary()
        );
        let empty = Latency::from_wire(&Latency::new().unwrap().to_wire()).unwrap();
        assert_eq!(empty.summary(), LatencySummary::default());
    }

    #[test]
    fn reset_forgets() {
        let mut latency = latency_of([5, 6]);
        latency.reset();
        assert_eq!(latency.summary(), LatencySummary::default());
        latency.record(7);
        assert_eq!(latency.summary().min_us, 7);
    }

    #[test]
    fn counts_distribution() {
        let mut counts = Counts::default();
        for value in [0, 20, 20, 20, 19, 20, 20, 20, 20, 20] {
            counts.record(value);
        }
        let summary = counts.summary();
        assert_eq!(summary.samples, 10);
        assert_eq!(summary.zero, 1);
        assert_eq!(summary.min, 0);
        assert_eq!(summary.p1, 0);
        assert_eq!(summary.p50, 20);
        assert_eq!(summary.max, 20);
        assert!((summary.mean - 17.9).abs() < 1e-9);

        let mut other = Counts::default();
        other.record(21);
        counts.merge(&other);
        assert_eq!(counts.summary().max, 21);
        assert_eq!(counts.summary().samples, 11);
        assert_eq!(Counts::default().summary(), CountsSummary::default());

        let json = serde_json::to_string(&counts).unwrap();
        assert_eq!(json, "[[0,1],[19,1],[20,8],[21,1]]");
        assert_eq!(serde_json::from_str::<Counts>(&json).unwrap(), counts);
    }
}
