//! Drift scores between a current and a reference distribution over the same frozen bins.
//!
//! # Contract
//!
//! This module only scores aligned counts. The bins (numeric quantile edges with underflow and
//! overflow bins, or categorical top-K values plus "other") are frozen elsewhere, shared by all
//! versions of a model and persisted with the reference counts, so bin `i` means the same thing on
//! both sides and a replay produces the same counts. Given the same two count vectors and the
//! same epsilon, [`scores`] returns bit-identical results: it reads no clock and no state.
//!
//! Alignment is a type, not a precondition: [`AlignedCounts::new`] checks that both count vectors
//! have the same number of bins and is the only way to reach [`scores`]. A window with no
//! observation on either side has no distribution, so [`scores`] returns `None` rather than NaN.
//!
//! # Scores
//!
//! All divergences are in nats (natural logarithm). With `B` bins, current counts `c_i` summing
//! to `N` and reference counts `r_i` summing to `M`, the proportions are `p_i = c_i / N` and
//! `q_i = r_i / M`.
//!
//! - **Smoothing.** An empty bin makes `ln(p / q)` infinite, so KL and PSI use one shared additive
//!   epsilon on both sides: `p'_i = (p_i + eps) / (1 + B * eps)` and likewise `q'_i`; both still
//!   sum to 1. The default is [`DEFAULT_EPSILON`] (`1e-4`): small enough to leave bins holding a
//!   fraction of a percent nearly unchanged, large enough that one empty bin contributes a bounded
//!   amount (about `p_i * ln(p_i / 1e-4)`). Scores are only comparable between runs that use the
//!   same epsilon.
//! - **KL** = `D_KL(current || reference) = sum p'_i ln(p'_i / q'_i)`, the primary score. It is
//!   not symmetric: it weighs the bins where current traffic lands.
//! - **PSI** (population stability index) = `sum (p'_i - q'_i) ln(p'_i / q'_i)`, which equals
//!   `D_KL(p' || q') + D_KL(q' || p')` and is symmetric.
//! - **JS**, the Jensen-Shannon *divergence* `0.5 D_KL(p || m) + 0.5 D_KL(q || m)` with
//!   `m = (p + q) / 2`, is computed on the **unsmoothed** proportions with `0 ln 0 = 0`: wherever
//!   `p_i > 0`, `m_i >= p_i / 2 > 0`, so it is always finite, symmetric and within `[0, ln 2]`.
//!   Note that scipy's `scipy.spatial.distance.jensenshannon` returns the Jensen-Shannon
//!   *distance*, the square root of this value.
//! - **Chi-square test of homogeneity** on the 2 x B table of raw counts (rows: current and
//!   reference). Bins empty on both sides carry no information and are dropped, leaving `B'` bins;
//!   the statistic is `sum (O - E)^2 / E` with `E = row total * column total / (N + M)`, with
//!   `B' - 1` degrees of freedom and no continuity correction (as
//!   `scipy.stats.chi2_contingency(table, correction=False)`). The p-value is the chi-square
//!   survival function, computed directly rather than as `1 - cdf`, so tiny p-values keep their
//!   precision for multiple-testing control. When `B' < 2` (all observations in one bin on both
//!   sides) the two distributions are identical and the test has nothing to reject: the scores
//!   report `chi2 = 0`, `dof = 0` and `p_value = 1`.
//!
//! The sample sizes `N` and `M` are reported with the scores so that a consumer can judge how much
//! a score means.
//!
//! ```
//! use modelwatch_core::drift::{AlignedCounts, Epsilon, scores};
//!
//! let current = [30, 70];
//! let reference = [45, 55];
//! let pair = AlignedCounts::new(&current, &reference)?;
//! let s = scores(&pair, Epsilon::DEFAULT).expect("both sides have observations");
//! assert!(s.kl > 0.0 && s.psi > 0.0 && s.js > 0.0);
//! assert_eq!((s.dof, s.samples, s.reference_samples), (1, 100, 100));
//! assert!(s.p_value < 0.05);
//! # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
//! ```

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// The default additive smoothing constant for KL and PSI: `1e-4`, added to every proportion on
/// both sides before renormalising (see the [module documentation](self)).
///
/// ```
/// use modelwatch_core::drift::{DEFAULT_EPSILON, Epsilon};
///
/// assert_eq!(DEFAULT_EPSILON, 1e-4);
/// assert_eq!(Epsilon::DEFAULT.get(), DEFAULT_EPSILON);
/// ```
pub const DEFAULT_EPSILON: f64 = 1e-4;

/// The two count vectors do not have the same number of bins, so they cannot be compared bin by
/// bin.
///
/// ```
/// use modelwatch_core::drift::AlignedCounts;
///
/// let err = AlignedCounts::new(&[1, 2, 3], &[1, 2]).unwrap_err();
/// assert_eq!((err.current_bins, err.reference_bins), (3, 2));
/// assert_eq!(err.to_string(), "current has 3 bins but reference has 2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("current has {current_bins} bins but reference has {reference_bins}")]
pub struct LayoutMismatch {
    /// Number of bins of the current counts.
    pub current_bins: usize,
    /// Number of bins of the reference counts.
    pub reference_bins: usize,
}

/// A smoothing epsilon that is not a finite number greater than zero.
///
/// ```
/// use modelwatch_core::drift::Epsilon;
///
/// let err = Epsilon::new(0.0).unwrap_err();
/// assert_eq!(err.to_string(), "smoothing epsilon must be finite and greater than 0, got 0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("smoothing epsilon must be finite and greater than 0, got {0}")]
pub struct InvalidEpsilon(pub f64);

/// The additive smoothing constant of KL and PSI: a finite number greater than zero.
///
/// It deserializes from a plain number and rejects invalid values while deserializing.
///
/// ```
/// use modelwatch_core::drift::Epsilon;
///
/// assert_eq!(Epsilon::new(1e-3)?.get(), 1e-3);
/// assert!(Epsilon::new(-1e-3).is_err());
/// assert!(Epsilon::new(f64::NAN).is_err());
/// assert!(Epsilon::new(f64::INFINITY).is_err());
/// # Ok::<(), modelwatch_core::drift::InvalidEpsilon>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Epsilon(f64);

impl Epsilon {
    /// [`DEFAULT_EPSILON`] as an [`Epsilon`].
    ///
    /// ```
    /// use modelwatch_core::drift::Epsilon;
    ///
    /// assert_eq!(Epsilon::default(), Epsilon::DEFAULT);
    /// ```
    pub const DEFAULT: Epsilon = Epsilon(DEFAULT_EPSILON);

    /// Validates `value`: it must be finite and greater than zero.
    ///
    /// ```
    /// use modelwatch_core::drift::Epsilon;
    ///
    /// assert!(Epsilon::new(1e-6).is_ok());
    /// assert!(Epsilon::new(0.0).is_err());
    /// ```
    pub fn new(value: f64) -> Result<Epsilon, InvalidEpsilon> {
        if value.is_finite() && value > 0.0 {
            Ok(Epsilon(value))
        } else {
            Err(InvalidEpsilon(value))
        }
    }

    /// The value, always finite and greater than zero.
    ///
    /// ```
    /// use modelwatch_core::drift::Epsilon;
    ///
    /// assert_eq!(Epsilon::new(0.5)?.get(), 0.5);
    /// # Ok::<(), modelwatch_core::drift::InvalidEpsilon>(())
    /// ```
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for Epsilon {
    fn default() -> Self {
        Epsilon::DEFAULT
    }
}

impl TryFrom<f64> for Epsilon {
    type Error = InvalidEpsilon;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Epsilon::new(value)
    }
}

impl From<Epsilon> for f64 {
    fn from(epsilon: Epsilon) -> f64 {
        epsilon.0
    }
}

/// Current and reference counts over the same bin layout: bin `i` of one is bin `i` of the other.
///
/// The length check is the only precondition this module can verify; that both vectors were
/// binned with the same frozen edges is the caller's contract (see the
/// [module documentation](self)).
///
/// ```
/// use modelwatch_core::drift::AlignedCounts;
///
/// let pair = AlignedCounts::new(&[3, 0, 5], &[2, 2, 2])?;
/// assert_eq!(pair.bins(), 3);
/// assert_eq!((pair.current_total(), pair.reference_total()), (8, 6));
/// assert!(AlignedCounts::new(&[3, 0, 5], &[2, 2]).is_err());
/// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignedCounts<'a> {
    current: &'a [u64],
    reference: &'a [u64],
    current_total: u64,
    reference_total: u64,
}

impl<'a> AlignedCounts<'a> {
    /// Pairs `current` with `reference`, or fails if they have different numbers of bins.
    ///
    /// Totals saturate at `u64::MAX` (about 1.8e19 observations, out of reach of any window).
    ///
    /// ```
    /// use modelwatch_core::drift::AlignedCounts;
    ///
    /// let pair = AlignedCounts::new(&[1, 2], &[3, 4])?;
    /// assert_eq!(pair.current(), &[1, 2]);
    /// assert_eq!(pair.reference(), &[3, 4]);
    /// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
    /// ```
    pub fn new(
        current: &'a [u64],
        reference: &'a [u64],
    ) -> Result<AlignedCounts<'a>, LayoutMismatch> {
        if current.len() != reference.len() {
            return Err(LayoutMismatch {
                current_bins: current.len(),
                reference_bins: reference.len(),
            });
        }
        let total = |counts: &[u64]| counts.iter().fold(0u64, |acc, &c| acc.saturating_add(c));
        Ok(AlignedCounts {
            current,
            reference,
            current_total: total(current),
            reference_total: total(reference),
        })
    }

    /// The current counts.
    ///
    /// ```
    /// # use modelwatch_core::drift::AlignedCounts;
    /// assert_eq!(AlignedCounts::new(&[7], &[9])?.current(), &[7]);
    /// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
    /// ```
    pub fn current(&self) -> &'a [u64] {
        self.current
    }

    /// The reference counts.
    ///
    /// ```
    /// # use modelwatch_core::drift::AlignedCounts;
    /// assert_eq!(AlignedCounts::new(&[7], &[9])?.reference(), &[9]);
    /// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
    /// ```
    pub fn reference(&self) -> &'a [u64] {
        self.reference
    }

    /// The number of bins, the same on both sides.
    ///
    /// ```
    /// # use modelwatch_core::drift::AlignedCounts;
    /// assert_eq!(AlignedCounts::new(&[], &[])?.bins(), 0);
    /// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
    /// ```
    pub fn bins(&self) -> usize {
        self.current.len()
    }

    /// The sum of the current counts.
    ///
    /// ```
    /// # use modelwatch_core::drift::AlignedCounts;
    /// assert_eq!(AlignedCounts::new(&[1, 2], &[0, 0])?.current_total(), 3);
    /// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
    /// ```
    pub fn current_total(&self) -> u64 {
        self.current_total
    }

    /// The sum of the reference counts.
    ///
    /// ```
    /// # use modelwatch_core::drift::AlignedCounts;
    /// assert_eq!(AlignedCounts::new(&[1, 2], &[0, 0])?.reference_total(), 0);
    /// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
    /// ```
    pub fn reference_total(&self) -> u64 {
        self.reference_total
    }
}

/// The drift of a current distribution from a reference distribution (see the
/// [module documentation](self) for the definitions). Divergences are in nats.
///
/// ```
/// use modelwatch_core::drift::{AlignedCounts, DriftScores, Epsilon, scores};
///
/// let pair = AlignedCounts::new(&[10, 20, 30], &[10, 20, 30])?;
/// let s: DriftScores = scores(&pair, Epsilon::DEFAULT).expect("non-empty");
/// assert_eq!((s.kl, s.psi, s.js, s.chi2, s.p_value), (0.0, 0.0, 0.0, 0.0, 1.0));
/// assert_eq!(s.dof, 2);
/// # Ok::<(), modelwatch_core::drift::LayoutMismatch>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftScores {
    /// `D_KL(current || reference)` on the smoothed proportions, in nats; `>= 0`.
    pub kl: f64,
    /// Population stability index on the smoothed proportions, in nats; `>= 0`, symmetric.
    pub psi: f64,
    /// Jensen-Shannon divergence (not distance) on the unsmoothed proportions, in nats; in
    /// `[0, ln 2]`, symmetric.
    pub js: f64,
    /// Chi-square statistic of the test of homogeneity on the raw counts; `0` when `dof` is `0`.
    pub chi2: f64,
    /// Degrees of freedom of the chi-square test: the number of bins non-empty on at least one
    /// side, minus one; `0` when the test is undefined (fewer than two such bins).
    pub dof: u64,
    /// P-value of the chi-square test (survival function at `chi2`); `1` when `dof` is `0`.
    pub p_value: f64,
    /// Number of current observations (sum of the current counts).
    pub samples: u64,
    /// Number of reference observations (sum of the reference counts).
    pub reference_samples: u64,
}

/// Scores the drift of `pair.current()` from `pair.reference()`, smoothing KL and PSI with
/// `epsilon`.
///
/// Returns `None` when either side has no observation, since an empty window has no distribution.
///
/// ```
/// use modelwatch_core::drift::{AlignedCounts, Epsilon, scores};
///
/// let eps = Epsilon::new(1e-3)?;
/// let s = scores(&AlignedCounts::new(&[400, 60, 30, 0, 10], &[200, 120, 150, 40, 160])?, eps)
///     .expect("both sides have observations");
/// assert!(s.p_value < 1e-60);
/// assert_eq!(scores(&AlignedCounts::new(&[0, 0], &[3, 4])?, eps), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scores(pair: &AlignedCounts<'_>, epsilon: Epsilon) -> Option<DriftScores> {
    if pair.current_total == 0 || pair.reference_total == 0 {
        return None;
    }
    let n = pair.current_total as f64;
    let m = pair.reference_total as f64;
    let eps = epsilon.get();
    let norm = 1.0 + pair.bins() as f64 * eps;

    let mut kl = 0.0;
    let mut psi = 0.0;
    let mut js = 0.0;
    for (&c, &r) in pair.current.iter().zip(pair.reference) {
        let p = c as f64 / n;
        let q = r as f64 / m;

        let ps = (p + eps) / norm;
        let qs = (q + eps) / norm;
        let log_ratio = (ps / qs).ln();
        kl += ps * log_ratio;
        psi += (ps - qs) * log_ratio;

        let mid = 0.5 * (p + q);
        if p > 0.0 {
            js += 0.5 * p * (p / mid).ln();
        }
        if q > 0.0 {
            js += 0.5 * q * (q / mid).ln();
        }
    }
    let (chi2, dof, p_value) = chi_square_homogeneity(pair);

    Some(DriftScores {
        // Each is non-negative (JS also at most ln 2) in exact arithmetic; the clamps only remove
        // rounding residue such as -1e-17 between near-identical distributions.
        kl: kl.max(0.0),
        psi: psi.max(0.0),
        js: js.clamp(0.0, std::f64::consts::LN_2),
        chi2,
        dof,
        p_value,
        samples: pair.current_total,
        reference_samples: pair.reference_total,
    })
}

/// Chi-square test of homogeneity on the 2 x B table of raw counts, dropping all-empty bins:
/// `(statistic, dof, p_value)`. Requires both totals to be non-zero.
fn chi_square_homogeneity(pair: &AlignedCounts<'_>) -> (f64, u64, f64) {
    let n = pair.current_total as f64;
    let m = pair.reference_total as f64;
    let total = n + m;

    let mut statistic = 0.0;
    let mut columns = 0u64;
    for (&c, &r) in pair.current.iter().zip(pair.reference) {
        let column = c as f64 + r as f64;
        if column == 0.0 {
            continue;
        }
        columns += 1;
        // Product first, then one division: exact whenever the product is exactly representable,
        // so proportional rows give exactly E = O and a statistic of exactly 0.
        let expected_current = n * column / total;
        let expected_reference = m * column / total;
        let dc = c as f64 - expected_current;
        let dr = r as f64 - expected_reference;
        statistic += dc * dc / expected_current + dr * dr / expected_reference;
    }
    if columns < 2 {
        return (0.0, 0, 1.0);
    }
    let dof = columns - 1;
    let distribution = ChiSquared::new(dof as f64)
        .expect("a chi-square with at least one degree of freedom is valid");
    (statistic, dof, distribution.sf(statistic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn score(current: &[u64], reference: &[u64], eps: f64) -> DriftScores {
        let pair = AlignedCounts::new(current, reference).expect("same layout");
        scores(&pair, Epsilon::new(eps).expect("valid epsilon")).expect("non-empty sides")
    }

    #[track_caller]
    fn assert_rel(actual: f64, expected: f64, tol: f64, what: &str) {
        let err = ((actual - expected) / expected).abs();
        assert!(
            err <= tol,
            "{what}: got {actual:e}, expected {expected:e}, relative error {err:e}"
        );
    }

    struct Expected {
        kl: f64,
        psi: f64,
        js: f64,
        chi2: f64,
        dof: u64,
        p: f64,
    }

    #[track_caller]
    fn check(current: &[u64], reference: &[u64], eps: f64, e: Expected) {
        let s = score(current, reference, eps);
        assert_rel(s.kl, e.kl, 1e-9, "kl");
        assert_rel(s.psi, e.psi, 1e-9, "psi");
        assert_rel(s.js, e.js, 1e-9, "js");
        assert_rel(s.chi2, e.chi2, 1e-9, "chi2");
        assert_eq!(s.dof, e.dof, "dof");
        assert_rel(s.p_value, e.p, 1e-6, "p_value");
        assert_eq!(s.samples, current.iter().sum::<u64>());
        assert_eq!(s.reference_samples, reference.iter().sum::<u64>());
    }

    // Expected values below were computed independently with scipy 1.17.1 / numpy 2.4:
    //
    //     import numpy as np
    //     from scipy.stats import entropy, chi2_contingency
    //     from scipy.spatial.distance import jensenshannon
    //
    //     def expected(cur, ref, eps=1e-4):
    //         c = np.array(cur, dtype=float); r = np.array(ref, dtype=float)
    //         B = len(c)
    //         p = c / c.sum(); q = r / r.sum()
    //         p_s = (p + eps) / (1 + B * eps); q_s = (q + eps) / (1 + B * eps)
    //         kl = entropy(p_s, q_s)
    //         psi = np.sum((p_s - q_s) * np.log(p_s / q_s))
    //         js = jensenshannon(p, q) ** 2          # natural log base by default
    //         keep = (c + r) > 0                     # drop bins empty on both sides
    //         stat, pval, dof, _ = chi2_contingency(np.array([c[keep], r[keep]]), correction=False)
    //         return kl, psi, js, stat, dof, pval

    #[test]
    fn known_answer_empty_bins_on_one_side() {
        // expected([12, 0, 7, 0, 31], [10, 5, 9, 0, 26])
        check(
            &[12, 0, 7, 0, 31],
            &[10, 5, 9, 0, 26],
            1e-4,
            Expected {
                kl: 0.11686974065664898,
                psi: 0.7254344885639795,
                js: 0.039016785541134136,
                chi2: 5.870414673046252,
                dof: 3,
                p: 0.11808788516722324,
            },
        );
    }

    #[test]
    fn known_answer_two_bins() {
        // expected([30, 70], [45, 55])
        check(
            &[30, 70],
            &[45, 55],
            1e-4,
            Expected {
                kl: 0.047154109201032565,
                psi: 0.09695217905733428,
                js: 0.012061680273741084,
                chi2: 4.8,
                dof: 1,
                p: 0.028459736916310638,
            },
        );
    }

    #[test]
    fn known_answer_very_different_tiny_p_value() {
        // expected([300, 200, 100], [100, 200, 300])
        check(
            &[300, 200, 100],
            &[100, 200, 300],
            1e-4,
            Expected {
                kl: 0.3659610278912355,
                psi: 0.7319220557824709,
                js: 0.08720802396075794,
                chi2: 200.0,
                dof: 2,
                p: 3.7200759760208177e-44,
            },
        );
    }

    #[test]
    fn known_answer_twelve_bins() {
        // expected([5, 17, 42, 88, 130, 151, 140, 97, 60, 31, 12, 3],
        //          [9, 25, 51, 95, 121, 139, 133, 101, 55, 24, 10, 6])
        check(
            &[5, 17, 42, 88, 130, 151, 140, 97, 60, 31, 12, 3],
            &[9, 25, 51, 95, 121, 139, 133, 101, 55, 24, 10, 6],
            1e-4,
            Expected {
                kl: 0.008880682989142465,
                psi: 0.018616633423317992,
                js: 0.0023272612550643825,
                chi2: 7.143500125171819,
                dof: 11,
                p: 0.7873463154328717,
            },
        );
    }

    #[test]
    fn known_answer_unequal_totals_other_epsilon_and_tiny_p_value() {
        // expected([400, 60, 30, 0, 10], [200, 120, 150, 40, 160], eps=1e-3)
        check(
            &[400, 60, 30, 0, 10],
            &[200, 120, 150, 40, 160],
            1e-3,
            Expected {
                kl: 0.6019898589602426,
                psi: 1.501138570021122,
                js: 0.16270944004408536,
                chi2: 321.09771729587357,
                dof: 4,
                p: 3.0396284966335784e-68,
            },
        );
    }

    #[test]
    fn empty_side_yields_none() {
        let eps = Epsilon::DEFAULT;
        let none =
            |c: &[u64], r: &[u64]| scores(&AlignedCounts::new(c, r).expect("same layout"), eps);
        assert_eq!(none(&[0, 0, 0], &[1, 2, 3]), None);
        assert_eq!(none(&[1, 2, 3], &[0, 0, 0]), None);
        assert_eq!(none(&[0, 0], &[0, 0]), None);
        assert_eq!(none(&[], &[]), None);
    }

    #[test]
    fn layout_mismatch_is_an_error() {
        assert_eq!(
            AlignedCounts::new(&[1, 2, 3], &[1, 2]),
            Err(LayoutMismatch { current_bins: 3, reference_bins: 2 })
        );
    }

    #[test]
    fn invalid_epsilons_are_rejected() {
        for bad in [0.0, -0.0, -1e-4, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(Epsilon::new(bad).is_err(), "{bad} accepted");
        }
        assert!(serde_json::from_str::<Epsilon>("0.0").is_err());
        assert!(serde_json::from_str::<Epsilon>("-1").is_err());
        let eps: Epsilon = serde_json::from_str("0.001").expect("valid epsilon");
        assert_eq!(eps.get(), 1e-3);
        assert_eq!(serde_json::to_string(&eps).expect("serializes"), "0.001");
    }

    #[test]
    fn single_non_empty_bin_has_undefined_test() {
        let s = score(&[0, 5, 0], &[0, 9, 0], DEFAULT_EPSILON);
        assert_eq!((s.chi2, s.dof, s.p_value), (0.0, 0, 1.0));
        assert_eq!((s.kl, s.psi, s.js), (0.0, 0.0, 0.0));
    }

    #[test]
    fn disjoint_supports_reach_the_js_bound() {
        let s = score(&[5, 0], &[0, 7], DEFAULT_EPSILON);
        assert_rel(s.js, std::f64::consts::LN_2, 1e-15, "js");
        assert!(s.kl.is_finite() && s.psi.is_finite());
    }

    #[test]
    fn scores_round_trip_through_serde() {
        let s = score(&[30, 70], &[45, 55], DEFAULT_EPSILON);
        let json = serde_json::to_string(&s).expect("serializes");
        let back: DriftScores = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, s);
    }

    /// Two count vectors of the same length (1 to 16 bins), each with a non-zero total.
    fn aligned_counts() -> impl Strategy<Value = (Vec<u64>, Vec<u64>)> {
        (1usize..=16).prop_flat_map(|bins| {
            let side = prop::collection::vec(0u64..1_000, bins)
                .prop_filter("non-empty", |v| v.iter().any(|&c| c > 0));
            (side.clone(), side)
        })
    }

    fn epsilon() -> impl Strategy<Value = Epsilon> {
        (1e-8f64..1e-1).prop_map(|e| Epsilon::new(e).expect("positive finite"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    proptest! {
        #[test]
        fn scores_are_finite_and_in_range(
            (current, reference) in aligned_counts(),
            eps in epsilon(),
        ) {
            let s = scores(&AlignedCounts::new(&current, &reference).expect("same layout"), eps)
                .expect("non-empty sides");
            prop_assert!(s.kl.is_finite() && s.kl >= 0.0, "kl {}", s.kl);
            prop_assert!(s.psi.is_finite() && s.psi >= 0.0, "psi {}", s.psi);
            prop_assert!((0.0..=std::f64::consts::LN_2).contains(&s.js), "js {}", s.js);
            prop_assert!(s.chi2.is_finite() && s.chi2 >= 0.0, "chi2 {}", s.chi2);
            prop_assert!((0.0..=1.0).contains(&s.p_value), "p {}", s.p_value);
            prop_assert!(s.dof < current.len() as u64);
        }

        #[test]
        fn identical_distributions_score_zero(
            (current, _) in aligned_counts(),
            k in 1u64..50,
            eps in epsilon(),
        ) {
            let scaled: Vec<u64> = current.iter().map(|&c| c * k).collect();
            let s = scores(&AlignedCounts::new(&current, &scaled).expect("same layout"), eps)
                .expect("non-empty sides");
            prop_assert!(s.kl.abs() <= 1e-12, "kl {}", s.kl);
            prop_assert!(s.psi.abs() <= 1e-12, "psi {}", s.psi);
            prop_assert!(s.js.abs() <= 1e-12, "js {}", s.js);
            prop_assert_eq!(s.chi2, 0.0);
            prop_assert_eq!(s.p_value, 1.0);
        }

        #[test]
        fn scaling_both_sides_leaves_divergences_unchanged(
            (current, reference) in aligned_counts(),
            k in 2u64..1_000,
            eps in epsilon(),
        ) {
            let s = scores(&AlignedCounts::new(&current, &reference).expect("same layout"), eps)
                .expect("non-empty sides");
            let cs: Vec<u64> = current.iter().map(|&c| c * k).collect();
            let rs: Vec<u64> = reference.iter().map(|&r| r * k).collect();
            let t = scores(&AlignedCounts::new(&cs, &rs).expect("same layout"), eps)
                .expect("non-empty sides");
            prop_assert!(close(s.kl, t.kl), "kl {} vs {}", s.kl, t.kl);
            prop_assert!(close(s.psi, t.psi), "psi {} vs {}", s.psi, t.psi);
            prop_assert!(close(s.js, t.js), "js {} vs {}", s.js, t.js);
            prop_assert_eq!(s.dof, t.dof);
        }

        #[test]
        fn swapping_sides_leaves_symmetric_scores_unchanged(
            (current, reference) in aligned_counts(),
            eps in epsilon(),
        ) {
            let s = scores(&AlignedCounts::new(&current, &reference).expect("same layout"), eps)
                .expect("non-empty sides");
            let t = scores(&AlignedCounts::new(&reference, &current).expect("same layout"), eps)
                .expect("non-empty sides");
            prop_assert!(close(s.psi, t.psi), "psi {} vs {}", s.psi, t.psi);
            prop_assert!(close(s.js, t.js), "js {} vs {}", s.js, t.js);
            prop_assert!(close(s.chi2, t.chi2), "chi2 {} vs {}", s.chi2, t.chi2);
            prop_assert_eq!(s.dof, t.dof);
        }
    }
}
