//! A goal as evaluated: the verdict, the figures it was judged on and the ratios against the
//! peers. Ratios are always Pulse ÷ peer, so below 1 means Pulse uses less (or is faster).

use serde::{Deserialize, Serialize};

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

/// What a table shows where a figure is missing or does not apply.
pub const DASH: &str = "–";

/// `value` formatted, or [`DASH`].
pub fn cell(value: Option<f64>, format: fn(f64) -> String) -> String {
    value.map_or_else(|| DASH.to_owned(), format)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cell(None, |v| v.to_string()), "–");
    }
}
