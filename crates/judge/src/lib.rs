//! modelwatch-judge: the canary judge. Pure and synchronous: no I/O, no clock, no async.
//!
//! A [`PairJudge`] receives the closed panes of a baseline and a canary version as additive
//! [`ArmCounts`] and, at every window close, returns two [`Verdict`]s: one for the sliding
//! window and one for the cumulative span since the canary's first pane.
//!
//! # Metrics
//! - `latency`: Mann-Whitney U of the canary's latency histogram against the baseline's (ties
//!   corrected). Effect: ratio of geometric means - 1; the test's own scale is the AUC
//!   `P(canary > baseline)`, and the minimum effect is converted to it by shifting the
//!   baseline's own histogram by `latency.min_effect`.
//! - `latency_tail`: share of requests above the baseline's `tail_quantile` (p99), canary
//!   against baseline, so the baseline's own sampling error counts (a regression confined to
//!   the tail barely moves Mann-Whitney). Fisher's exact test when an expected cell is below 5,
//!   the two-proportion z test otherwise.
//! - `error_rate`: requests whose status is not `ok`, same tests.
//! - `drift:feature:<name>`, `drift:prediction:<name>`: KL `D(canary || baseline)`, JS and the
//!   chi-square test of homogeneity per binned distribution, Benjamini-Hochberg across all of
//!   them. Flagged (`high`) when the adjusted p-value is at most `drift.fdr_q` and KL or JS
//!   reaches its threshold. Not critical by default: drift alone never rolls back.
//! - `sample_ratio`: with an expected canary share, the observed split against it. A mismatch
//!   makes the verdict `invalid`: the arms do not see comparable traffic.
//!
//! # Windows inform, the cumulative verdict decides
//! Sliding windows share all but one pane, and re-testing cumulative data at every slide is
//! optional stopping: a fixed-horizon test at level `a` looked at 180 times rejects a healthy
//! canary far more often than `a`. So window verdicts are fixed-horizon tests at the
//! Bonferroni level `alpha / k` (`k` critical sequential metrics), shown for information, never
//! `promote`; gating uses the cumulative verdict, whose sequential metrics (`latency`,
//! `latency_tail`, `error_rate`, `sample_ratio`) are always-valid tests: the normal-mixture
//! mSPRT of Johari, Pekelis and Walsh on each asymptotically normal estimate (AUC - 1/2,
//! difference of tail shares, difference of error rates, canary share - expected share), see
//! [`stats`]. Each keeps a running always-valid p-value `p_n = min(p_{n-1}, 1 / Lambda_n)` and
//! the running intersection of its confidence sequence.
//!
//! # Decision (cumulative)
//! 1. `invalid` when the always-valid sample-ratio p-value fell below `srm_alpha` (sticky).
//! 2. `rollback` when a critical metric fails: its confidence sequence lies entirely on the
//!    harmful side of 0 (equivalently its always-valid p-value is below `alpha / k` with the
//!    estimate on the harmful side); a critical drift when `drift.critical` is set.
//! 3. `promote` when every critical sequential metric's confidence sequence lies below its
//!    minimum effect, `min_duration_ms` of event time passed since the canary's first pane and
//!    the weighted score reaches `promote_score`.
//! 4. `continue` otherwise, with `samples_needed`: the canary requests after which a canary
//!    with the minimum effect is rolled back, and a healthy one promoted, with probability
//!    `power` (from the confidence sequence's width at that sample size; a conservative
//!    single-look bound, minus the requests already in).
//!
//! # Guarantee
//! Over the whole life of a canary, judged at every slide for any number of slides, the
//! probability that a canary whose critical metrics are no worse than the baseline's is ever
//! rolled back is at most `alpha / k` per critical sequential metric and at most `alpha` in
//! total (Ville's inequality per metric, Bonferroni across them), up to the normal
//! approximation of each estimate. The sample-ratio check has the same property at
//! `srm_alpha` (default 0.001: a correct split is called mismatched with probability at most
//! 0.1% over the whole canary). The same confidence sequences bound the probability of
//! promoting a canary at least `min_effect` worse by `alpha / k` per metric. Drift is judged by
//! fixed-horizon tests with effect-size thresholds and is outside the guarantee; making it
//! critical is a deliberate choice. The tests of this crate check the guarantee by simulation.

mod counts;
mod judge;
pub mod spec;
pub mod stats;

pub use counts::{Arm, ArmCounts, Class, Decision, MetricVerdict, Scope, Verdict};
pub use judge::{
    ERROR_RATE, JudgeState, LATENCY, LATENCY_TAIL, PairJudge, SAMPLE_RATIO, SequentialState,
};
pub use spec::{
    Direction, DriftJudgeSpec, ErrorRateJudgeSpec, JudgeSpec, JudgeSpecError, LatencyJudgeSpec,
};
