//! The statistics of the judge, public for known-answer tests and reuse.
//!
//! Fixed-horizon tests follow scipy's definitions (the tests of this crate compare them with
//! scipy 1.17 to about 1e-9 relative):
//! - [`mann_whitney_hist`]: `scipy.stats.mannwhitneyu(x, y, method="asymptotic",
//!   use_continuity=True)` computed from two histograms, ties corrected;
//! - [`fisher_exact`]: `scipy.stats.fisher_exact` on a 2 x 2 table (hypergeometric);
//! - [`two_proportion`]: the pooled two-proportion z test;
//! - [`chi_square_gof`]: `scipy.stats.chisquare(observed, expected_probs * total)`;
//! - [`benjamini_hochberg`]: `scipy.stats.false_discovery_control(ps, method="bh")`.
//!
//! Sequential helpers ([`mixture_log_lr`], [`always_valid_p`], [`mixture_radius`],
//! [`required_samples`]) implement the normal-mixture mSPRT of Johari, Pekelis and Walsh
//! ("Always valid inference", 2017) on an asymptotically normal estimate `theta_hat` with
//! variance `v`: with a `N(0, tau^2)` mixture over the effect, the likelihood ratio against
//! `theta = 0` is `Lambda = sqrt(v / (v + tau^2)) exp(theta_hat^2 tau^2 / (2 v (v + tau^2)))`.
//! `Lambda` is a nonnegative martingale under the null, so by Ville's inequality
//! `P(sup_n Lambda_n >= 1 / alpha) <= alpha`: the running minimum of `1 / Lambda_n` is a p-value
//! that stays valid however often it is looked at, and `{theta : Lambda_n(theta) < 1 / alpha}` is
//! a confidence sequence (valid at every look simultaneously).

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

fn std_normal() -> Normal {
    // Mean 0 and standard deviation 1 are valid parameters.
    Normal::standard()
}

/// Survival function of the standard normal.
pub fn norm_sf(z: f64) -> f64 {
    std_normal().sf(z)
}

/// Quantile of the standard normal (`p` in `(0, 1)`).
pub fn norm_ppf(p: f64) -> f64 {
    std_normal().inverse_cdf(p)
}

/// The result of a Mann-Whitney U test (see [`mann_whitney_hist`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// `U` of the first sample `x` (scipy's `statistic`): pairs with `x > y` plus half the ties.
    pub u: f64,
    /// Size of `x`.
    pub n_x: u64,
    /// Size of `y`.
    pub n_y: u64,
    /// `U - n_x n_y / 2` over its tie-corrected null standard deviation, no continuity
    /// correction (the asymptotically normal statistic the sequential test uses).
    pub z: f64,
    /// Two-sided p-value, continuity corrected (scipy's default).
    pub p_two_sided: f64,
    /// P-value of "x is stochastically greater than y", continuity corrected.
    pub p_greater: f64,
    /// P-value of "x is stochastically less than y", continuity corrected.
    pub p_less: f64,
    /// `U / (n_x n_y)`: `P(x > y) + P(x = y) / 2`, the common-language effect size.
    pub auc: f64,
    /// Null variance of `auc` (tie corrected): `var(U) / (n_x n_y)^2`.
    pub auc_variance: f64,
}

/// Mann-Whitney U test of two histograms of (value, count) with strictly increasing values.
///
/// Equal values are ties (midranks, tie-corrected variance), so two histograms with the same
/// bucket layout are compared exactly as scipy compares the expanded samples. `None` when either
/// side is empty or every observation has the same value (no variance).
///
/// ```
/// use modelwatch_judge::stats::mann_whitney_hist;
///
/// // scipy.stats.mannwhitneyu([1, 1, 3, 3, 3, 3], [1, 1, 1, 2, 2, 2], method="asymptotic")
/// let x = [(1, 2), (3, 4)];
/// let y = [(1, 3), (2, 3)];
/// let r = mann_whitney_hist(&x, &y).expect("both sides have data");
/// assert_eq!(r.u, 27.0);
/// assert!((r.p_two_sided - 0.14705724728090883).abs() < 1e-10);
/// ```
pub fn mann_whitney_hist(x: &[(u32, u64)], y: &[(u32, u64)]) -> Option<MannWhitney> {
    let n_x: u64 = x.iter().map(|b| b.1).sum();
    let n_y: u64 = y.iter().map(|b| b.1).sum();
    if n_x == 0 || n_y == 0 {
        return None;
    }
    // Walk the merged values: each distinct value gets the midrank of its tie group.
    let (mut i, mut j) = (0, 0);
    let mut below = 0.0f64; // observations below the current value
    let mut rank_sum_x = 0.0f64;
    let mut tie_term = 0.0f64;
    while i < x.len() || j < y.len() {
        let vx = x.get(i).map(|b| b.0);
        let vy = y.get(j).map(|b| b.0);
        let v = match (vx, vy) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        let cx = if vx == Some(v) {
            i += 1;
            x[i - 1].1 as f64
        } else {
            0.0
        };
        let cy = if vy == Some(v) {
            j += 1;
            y[j - 1].1 as f64
        } else {
            0.0
        };
        let t = cx + cy;
        if t == 0.0 {
            continue;
        }
        let midrank = below + (t + 1.0) / 2.0;
        rank_sum_x += cx * midrank;
        tie_term += t * t * t - t;
        below += t;
    }
    let (n1, n2) = (n_x as f64, n_y as f64);
    let n = n1 + n2;
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var.is_nan() || var <= 0.0 {
        return None;
    }
    let s = var.sqrt();
    let u2 = n1 * n2 - u;
    // scipy: z = (U - mu - 0.5) / s with U = max(U1, U2) (two-sided), U1 (greater), U2 (less).
    let z_of = |uu: f64| (uu - mu - 0.5) / s;
    let p_two_sided = (2.0 * norm_sf(z_of(u.max(u2)))).min(1.0);
    Some(MannWhitney {
        u,
        n_x,
        n_y,
        z: (u - mu) / s,
        p_two_sided,
        p_greater: norm_sf(z_of(u)),
        p_less: norm_sf(z_of(u2)),
        auc: u / (n1 * n2),
        auc_variance: var / (n1 * n2) / (n1 * n2),
    })
}

/// The value at quantile `q` of a histogram (lowest value of the bucket holding the
/// `ceil(q * n)`-th observation, HDR's rule); `None` when empty.
pub fn hist_quantile(h: &[(u32, u64)], q: f64) -> Option<u32> {
    let n: u64 = h.iter().map(|b| b.1).sum();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for &(v, c) in h {
        seen += c;
        if seen >= rank {
            return Some(v);
        }
    }
    h.last().map(|b| b.0)
}

/// Observations strictly above `value` in a histogram.
pub fn hist_count_above(h: &[(u32, u64)], value: u32) -> u64 {
    h.iter().filter(|b| b.0 > value).map(|b| b.1).sum()
}

/// The result of Fisher's exact test (see [`fisher_exact`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FisherExact {
    /// Sample odds ratio `a d / (b c)`; infinite when `b` or `c` is 0, NaN when a row or
    /// column is empty (as scipy).
    pub odds_ratio: f64,
    /// Two-sided p-value: the probability of the tables no more likely than the observed one.
    pub p_two_sided: f64,
    /// P-value of "odds ratio > 1": `P(X >= a)`.
    pub p_greater: f64,
    /// P-value of "odds ratio < 1": `P(X <= a)`.
    pub p_less: f64,
}

/// Fisher's exact test of the 2 x 2 table `[[a, b], [c, d]]`, as `scipy.stats.fisher_exact`.
///
/// The null distribution of `a` given the margins is hypergeometric; its probabilities are
/// computed by the ratio recursion from the mode (no factorials), so the cost is linear in the
/// support (at most `min(a + b, a + c)` + 1 tables).
///
/// ```
/// use modelwatch_judge::stats::fisher_exact;
///
/// let r = fisher_exact(3, 1, 1, 3);
/// assert!((r.p_two_sided - 0.48571428571428565).abs() < 1e-12);
/// assert_eq!(r.odds_ratio, 9.0);
/// ```
pub fn fisher_exact(a: u64, b: u64, c: u64, d: u64) -> FisherExact {
    let row1 = a + b;
    let row2 = c + d;
    let col1 = a + c;
    let col2 = b + d;
    if row1 == 0 || row2 == 0 || col1 == 0 || col2 == 0 {
        return FisherExact { odds_ratio: f64::NAN, p_two_sided: 1.0, p_greater: 1.0, p_less: 1.0 };
    }
    let odds_ratio =
        if b > 0 && c > 0 { (a as f64 * d as f64) / (b as f64 * c as f64) } else { f64::INFINITY };
    let lo = col1.saturating_sub(row2);
    let hi = row1.min(col1);
    // Unnormalised pmf relative to the mode by the recursion
    // pmf(x + 1) / pmf(x) = (row1 - x)(col1 - x) / ((x + 1)(row2 - col1 + x + 1)).
    let (r1, r2, c1) = (row1 as f64, row2 as f64, col1 as f64);
    let ratio_up = |x: f64| (r1 - x) * (c1 - x) / ((x + 1.0) * (r2 - c1 + x + 1.0));
    let mode = (((c1 + 1.0) * (r1 + 1.0) / (r1 + r2 + 2.0)).floor() as u64).clamp(lo, hi);
    let len = (hi - lo + 1) as usize;
    let mut w = vec![0.0f64; len];
    let mi = (mode - lo) as usize;
    w[mi] = 1.0;
    for k in mi + 1..len {
        let x = (lo + k as u64 - 1) as f64;
        w[k] = w[k - 1] * ratio_up(x);
    }
    for k in (0..mi).rev() {
        let x = (lo + k as u64) as f64;
        w[k] = w[k + 1] / ratio_up(x);
    }
    let total: f64 = w.iter().sum();
    let ai = (a - lo) as usize;
    let p_less = (w[..=ai].iter().sum::<f64>() / total).min(1.0);
    let p_greater = (w[ai..].iter().sum::<f64>() / total).min(1.0);
    let pexact = w[ai];
    let pmode = w[mi];
    let p_two_sided = if (pexact - pmode).abs() / pexact.max(pmode) <= 1e-14 {
        1.0
    } else {
        let cut = pexact * (1.0 + 1e-14);
        (w.iter().filter(|&&p| p <= cut).sum::<f64>() / total).min(1.0)
    };
    FisherExact { odds_ratio, p_two_sided, p_greater, p_less }
}

/// The result of a two-proportion z test (see [`two_proportion`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwoProportion {
    /// `x1 / n1`.
    pub p1: f64,
    /// `x2 / n2`.
    pub p2: f64,
    /// `(p1 - p2) / se` with the pooled standard error.
    pub z: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
    /// P-value of `p1 > p2`.
    pub p_greater: f64,
    /// P-value of `p1 < p2`.
    pub p_less: f64,
}

/// Pooled two-proportion z test of `x1` of `n1` against `x2` of `n2` (no continuity
/// correction; as `statsmodels.stats.proportion.proportions_ztest`, or by hand with
/// `scipy.stats.norm.sf`). `None` when a side is empty or the pooled proportion is 0 or 1.
///
/// ```
/// use modelwatch_judge::stats::two_proportion;
///
/// let r = two_proportion(30, 1000, 10, 1000).expect("defined");
/// assert!(r.z > 3.0 && r.p_greater < 0.001);
/// ```
pub fn two_proportion(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<TwoProportion> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return None;
    }
    let z = (p1 - p2) / se;
    Some(TwoProportion {
        p1,
        p2,
        z,
        p_two_sided: (2.0 * norm_sf(z.abs())).min(1.0),
        p_greater: norm_sf(z),
        p_less: norm_sf(-z),
    })
}

/// The result of a chi-square goodness-of-fit test (see [`chi_square_gof`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquare {
    /// `sum (O - E)^2 / E`.
    pub stat: f64,
    /// Categories - 1.
    pub dof: u64,
    /// Survival function of the chi-square distribution at `stat`.
    pub p: f64,
}

/// Chi-square goodness of fit of `observed` counts against `expected_probs` (same length, at
/// least 2, positive, summing to 1), as `scipy.stats.chisquare(observed, f_exp=probs * total)`.
/// `None` when the input does not make a test.
///
/// ```
/// use modelwatch_judge::stats::chi_square_gof;
///
/// let r = chi_square_gof(&[850, 150], &[0.9, 0.1]).expect("valid");
/// assert_eq!(r.dof, 1);
/// assert!(r.p < 1e-6);
/// ```
pub fn chi_square_gof(observed: &[u64], expected_probs: &[f64]) -> Option<ChiSquare> {
    if observed.len() != expected_probs.len()
        || observed.len() < 2
        || expected_probs.iter().any(|&p| p.is_nan() || p <= 0.0)
    {
        return None;
    }
    let total: u64 = observed.iter().sum();
    if total == 0 {
        return None;
    }
    let stat: f64 = observed
        .iter()
        .zip(expected_probs)
        .map(|(&o, &p)| {
            let e = p * total as f64;
            let d = o as f64 - e;
            d * d / e
        })
        .sum();
    let dof = observed.len() as u64 - 1;
    let p = ChiSquared::new(dof as f64).ok()?.sf(stat);
    Some(ChiSquare { stat, dof, p })
}

/// Benjamini-Hochberg adjusted p-values, in the input order, as
/// `scipy.stats.false_discovery_control(ps, method="bh")`: reject the hypotheses whose adjusted
/// p-value is at most `q` to control the false discovery rate at `q`.
///
/// ```
/// use modelwatch_judge::stats::benjamini_hochberg;
///
/// let adj = benjamini_hochberg(&[0.01, 0.04, 0.03]);
/// assert_eq!(adj, vec![0.03, 0.04, 0.04]);
/// ```
pub fn benjamini_hochberg(ps: &[f64]) -> Vec<f64> {
    let m = ps.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| ps[i].total_cmp(&ps[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = f64::INFINITY;
    for (k, &i) in order.iter().enumerate().rev() {
        let v = ps[i] * m as f64 / (k + 1) as f64;
        running = running.min(v);
        adjusted[i] = running.min(1.0);
    }
    adjusted
}

/// Natural log of the normal-mixture likelihood ratio of the mSPRT (module docs) of
/// `theta = theta0` for an estimate `theta_hat` with variance `v` and mixture variance `tau2`.
pub fn mixture_log_lr(theta_hat: f64, theta0: f64, v: f64, tau2: f64) -> f64 {
    let d = theta_hat - theta0;
    0.5 * (v / (v + tau2)).ln() + d * d * tau2 / (2.0 * v * (v + tau2))
}

/// The always-valid p-value after one more look: `min(previous, 1 / Lambda)` (module docs).
///
/// ```
/// use modelwatch_judge::stats::always_valid_p;
///
/// // An estimate 5 standard errors from 0 with tau = 10 standard errors.
/// let p = always_valid_p(1.0, 5.0, 0.0, 1.0, 100.0);
/// assert!(p < 0.01);
/// assert_eq!(always_valid_p(p, 0.0, 0.0, 1.0, 100.0), p);
/// ```
pub fn always_valid_p(previous: f64, theta_hat: f64, theta0: f64, v: f64, tau2: f64) -> f64 {
    let p = (-mixture_log_lr(theta_hat, theta0, v, tau2)).exp().min(1.0);
    previous.min(p)
}

/// Half-width of the level-`alpha` confidence sequence at this look: the set
/// `{theta : Lambda(theta) < 1 / alpha}` is `theta_hat +- mixture_radius(v, tau2, alpha)`.
pub fn mixture_radius(v: f64, tau2: f64, alpha: f64) -> f64 {
    (v * (v + tau2) / tau2 * (2.0 * (1.0 / alpha).ln() + ((v + tau2) / v).ln())).sqrt()
}

/// Canary samples `n` after which an effect of `delta` (in the units of the estimate, whose
/// variance is `v1 / n`) is detected by the level-`alpha` confidence sequence with probability
/// at least `power` at that single look: `delta / sqrt(v) >= radius / sqrt(v) + z_power`. By
/// symmetry it is also the sample size at which a null effect is shown to be below `delta`
/// with that probability. Looks before `n` only add power, so this is conservative. `None` when
/// the inputs are not positive and finite.
///
/// ```
/// use modelwatch_judge::stats::required_samples;
///
/// let n = required_samples(0.0078, 0.005, 0.005 * 0.005, 0.05 / 3.0, 0.8).expect("valid");
/// assert!((4_000..8_000).contains(&n));
/// ```
pub fn required_samples(v1: f64, delta: f64, tau2: f64, alpha: f64, power: f64) -> Option<u64> {
    if !(v1 > 0.0 && delta > 0.0 && tau2 > 0.0 && v1.is_finite() && delta.is_finite()) {
        return None;
    }
    let z_power = norm_ppf(power.clamp(0.5, 0.999_999));
    let ok = |n: f64| {
        let v = v1 / n;
        delta >= mixture_radius(v, tau2, alpha) + z_power * v.sqrt()
    };
    let mut hi = 1.0f64;
    while !ok(hi) {
        hi *= 2.0;
        if hi > 1e15 {
            return None;
        }
    }
    let mut lo = hi / 2.0;
    if ok(lo) {
        return Some(lo.ceil() as u64);
    }
    while hi - lo > 1.0 {
        let mid = ((lo + hi) / 2.0).floor();
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The confidence sequence is exactly the set where the mixture likelihood ratio is below
    /// `1 / alpha`.
    #[test]
    fn radius_is_the_likelihood_ratio_boundary() {
        for (v, tau2, alpha) in [(1e-4, 1e-3, 0.05), (2.0, 0.5, 0.001), (1e-7, 1e-5, 0.0167)] {
            let r = mixture_radius(v, tau2, alpha);
            let at = mixture_log_lr(r, 0.0, v, tau2);
            assert!((at - (1.0 / alpha).ln()).abs() < 1e-9, "{at}");
            assert!(always_valid_p(1.0, r * 1.01, 0.0, v, tau2) < alpha);
            assert!(always_valid_p(1.0, r * 0.99, 0.0, v, tau2) > alpha);
        }
    }

    #[test]
    fn quantiles_and_tails_of_histograms() {
        let h = [(10, 50), (20, 40), (30, 9), (40, 1)];
        assert_eq!(hist_quantile(&h, 0.5), Some(10));
        assert_eq!(hist_quantile(&h, 0.99), Some(30));
        assert_eq!(hist_quantile(&h, 1.0), Some(40));
        assert_eq!(hist_count_above(&h, 20), 10);
        assert_eq!(hist_quantile(&[], 0.5), None);
    }

    #[test]
    fn required_samples_grow_as_the_effect_shrinks() {
        let n1 = required_samples(0.01, 0.01, 1e-4, 0.0167, 0.8).expect("valid");
        let n2 = required_samples(0.01, 0.005, 2.5e-5, 0.0167, 0.8).expect("valid");
        assert!(n2 > 3 * n1, "{n1} {n2}");
        assert!(required_samples(0.0, 0.01, 1e-4, 0.05, 0.8).is_none());
    }
}
