//! Additive counts of one arm and the vocabulary of verdicts.

use std::collections::BTreeMap;

/// One arm's counts over a span (a pane, a window or the cumulative span). Additive: the counts
/// of a span are the sum of the counts of its panes (and of the pieces of a pane).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmCounts {
    /// Requests.
    pub requests: u64,
    /// Requests whose status is not `ok`.
    pub errors: u64,
    /// Latency histogram: (bucket lowest value in microseconds, count), strictly increasing
    /// bucket values (the same bucket layout for both arms: HDR-style buckets from the tracker).
    pub latency: Vec<(u32, u64)>,
    /// Binned distributions by (kind, feature): kind is `feature` or `prediction` (the
    /// `pane_bins` kinds `numeric`, `categorical` and `label` are accepted too and reported as
    /// `feature`, `feature` and `prediction`); counts per bin in the model's frozen layout (both
    /// arms same layout; a shorter vector means trailing zeros).
    pub bins: BTreeMap<(String, String), Vec<u64>>,
}

impl ArmCounts {
    /// Adds `other` to these counts (histograms merge by bucket value, bins by index).
    ///
    /// ```
    /// use modelwatch_judge::ArmCounts;
    ///
    /// let mut a = ArmCounts { requests: 2, latency: vec![(100, 1), (300, 1)], ..ArmCounts::default() };
    /// let b = ArmCounts { requests: 2, errors: 1, latency: vec![(200, 1), (300, 1)], ..ArmCounts::default() };
    /// a.add(&b);
    /// assert_eq!((a.requests, a.errors), (4, 1));
    /// assert_eq!(a.latency, vec![(100, 1), (200, 1), (300, 2)]);
    /// ```
    pub fn add(&mut self, other: &ArmCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        if !other.latency.is_empty() {
            let mut merged = Vec::with_capacity(self.latency.len() + other.latency.len());
            let (mut i, mut j) = (0, 0);
            let (a, b) = (&self.latency, &other.latency);
            while i < a.len() || j < b.len() {
                match (a.get(i), b.get(j)) {
                    (Some(x), Some(y)) if x.0 == y.0 => {
                        merged.push((x.0, x.1 + y.1));
                        i += 1;
                        j += 1;
                    }
                    (Some(x), Some(y)) if x.0 < y.0 => {
                        merged.push(*x);
                        i += 1;
                    }
                    (Some(_), Some(y)) | (None, Some(y)) => {
                        merged.push(*y);
                        j += 1;
                    }
                    (Some(x), None) => {
                        merged.push(*x);
                        i += 1;
                    }
                    (None, None) => break,
                }
            }
            self.latency = merged;
        }
        for (key, counts) in &other.bins {
            let mine = self.bins.entry(key.clone()).or_default();
            if mine.len() < counts.len() {
                mine.resize(counts.len(), 0);
            }
            for (m, c) in mine.iter_mut().zip(counts) {
                *m += c;
            }
        }
    }

    /// No request, no latency and no binned value.
    pub fn is_empty(&self) -> bool {
        self.requests == 0
            && self.latency.iter().all(|b| b.1 == 0)
            && self.bins.values().all(|v| v.iter().all(|&c| c == 0))
    }
}

/// One side of a canary pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The stable version.
    Baseline,
    /// The version being judged.
    Canary,
}

/// The span a verdict covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One sliding window: fixed-horizon tests, informative only.
    Window,
    /// Everything since the canary's first pane: the sequential decision that gates.
    Cumulative,
}

impl Scope {
    /// `window` or `cumulative` (the `scope` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Window => "window",
            Self::Cumulative => "cumulative",
        }
    }
}

/// A metric's classification: the canary compared with the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No significant difference (or a difference in a direction that does not fail).
    Pass,
    /// Significantly higher on the canary (for drift: a significant, large enough drift).
    High,
    /// Significantly lower on the canary.
    Low,
    /// Too few observations on either arm to judge.
    NoData,
}

impl Class {
    /// `pass`, `high`, `low` or `nodata` (the `classification` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::High => "high",
            Self::Low => "low",
            Self::NoData => "nodata",
        }
    }
}

/// What to do with the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Healthy with enough evidence, after the minimum duration.
    Promote,
    /// Not enough evidence yet either way.
    Continue,
    /// A critical metric is significantly worse on the canary.
    Rollback,
    /// Sample-ratio mismatch: the traffic split is not the expected one, so the comparison is
    /// not judged.
    Invalid,
}

impl Decision {
    /// `promote`, `continue`, `rollback` or `invalid` (the `decision` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Continue => "continue",
            Self::Rollback => "rollback",
            Self::Invalid => "invalid",
        }
    }
}

/// The judgement of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricVerdict {
    /// `latency`, `latency_tail`, `error_rate`, `sample_ratio`, `drift:feature:<name>` or
    /// `drift:prediction:<name>`.
    pub metric: String,
    /// The classification.
    pub classification: Class,
    /// The test statistic (z for latency, tail, error rate and sample ratio; chi-square for
    /// drift).
    pub statistic: Option<f64>,
    /// The p-value: fixed-horizon in a window verdict, always-valid in a cumulative one (drift
    /// and the fixed-horizon values are in `evidence` either way).
    pub p_value: Option<f64>,
    /// The effect: relative latency shift (ratio of geometric means - 1), relative increase of
    /// the tail share, absolute error-rate difference, canary share minus expected share, KL.
    pub effect: Option<f64>,
    /// Baseline observations.
    pub n_baseline: u64,
    /// Canary observations.
    pub n_canary: u64,
    /// The threshold the effect is judged against (the minimum effect; `srm_alpha` for the
    /// sample ratio; the KL threshold for drift).
    pub threshold: Option<f64>,
    /// Whether a failure of this metric fails the verdict.
    pub critical: bool,
    /// Weight in the score.
    pub weight: f64,
    /// Everything else worth showing (quantiles, bounds, adjusted p-values, samples needed).
    pub evidence: serde_json::Value,
}

/// The judgement of a canary pair over one span.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Window or cumulative.
    pub scope: Scope,
    /// Span start, ms since the epoch.
    pub start_ms: i64,
    /// Span end (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// The decision (for a window: informative only, never `promote`).
    pub decision: Decision,
    /// Weighted share of metrics that do not fail, in `[0, 100]`.
    pub score: f64,
    /// One verdict per metric.
    pub metrics: Vec<MetricVerdict>,
    /// Canary requests still needed when the decision is `continue` for lack of evidence.
    pub samples_needed: Option<u64>,
    /// One human sentence.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(seed: u64) -> ArmCounts {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut latency: Vec<(u32, u64)> =
            (0..rng.usize(0..20)).map(|_| (rng.u32(0..50) * 10, rng.u64(1..5))).collect();
        latency.sort_unstable();
        latency.dedup_by_key(|b| b.0);
        let mut bins = BTreeMap::new();
        for f in ["a", "b"] {
            if rng.bool() {
                let v = (0..rng.usize(0..6)).map(|_| rng.u64(0..9)).collect();
                bins.insert(("feature".to_owned(), f.to_owned()), v);
            }
        }
        ArmCounts { requests: rng.u64(0..100), errors: rng.u64(0..3), latency, bins }
    }

    /// Adding is associative and commutative up to trailing zero bins (a window is the sum of
    /// its panes in any order).
    #[test]
    fn add_is_associative_and_commutative() {
        for seed in 0..200 {
            let (a, b, c) = (counts(seed), counts(seed + 1000), counts(seed + 2000));
            let mut ab_c = a.clone();
            ab_c.add(&b);
            ab_c.add(&c);
            let mut bc = b.clone();
            bc.add(&c);
            let mut a_bc = a.clone();
            a_bc.add(&bc);
            let mut cba = c.clone();
            cba.add(&b);
            cba.add(&a);
            assert_eq!(ab_c, a_bc);
            assert_eq!(ab_c, cba);
            assert!(ab_c.latency.windows(2).all(|w| w[0].0 < w[1].0));
            let total: u64 = [&a, &b, &c].iter().flat_map(|x| x.latency.iter()).map(|b| b.1).sum();
            assert_eq!(ab_c.latency.iter().map(|b| b.1).sum::<u64>(), total);
        }
        assert!(ArmCounts::default().is_empty());
    }
}
