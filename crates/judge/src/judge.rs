//! The stateful judge of one canary pair.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use modelwatch_core::drift::{AlignedCounts, Epsilon, scores};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::counts::{Arm, ArmCounts, Class, Decision, MetricVerdict, Scope, Verdict};
use crate::spec::JudgeSpec;
use crate::stats;

/// Metric name of the Mann-Whitney latency comparison.
pub const LATENCY: &str = "latency";
/// Metric name of the tail latency comparison.
pub const LATENCY_TAIL: &str = "latency_tail";
/// Metric name of the error-rate comparison.
pub const ERROR_RATE: &str = "error_rate";
/// Metric name of the sample-ratio-mismatch check.
pub const SAMPLE_RATIO: &str = "sample_ratio";

/// Mixture standard deviation of the sample-ratio test, in share units.
const SRM_TAU: f64 = 0.02;
/// Log-scale spread assumed when converting `latency.min_effect` to the AUC mixture scale.
const LATENCY_TAU_SIGMA: f64 = 0.5;

/// The running state of one always-valid test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialState {
    /// Always-valid p-value of "no difference": the running minimum of `1 / Lambda`.
    pub p_value: f64,
    /// Running maximum of the confidence sequence's lower bounds (none yet: unbounded).
    pub lower: Option<f64>,
    /// Running minimum of the confidence sequence's upper bounds (none yet: unbounded).
    pub upper: Option<f64>,
    /// Looks taken.
    pub looks: u64,
}

impl Default for SequentialState {
    fn default() -> Self {
        Self { p_value: 1.0, lower: None, upper: None, looks: 0 }
    }
}

impl SequentialState {
    fn update(&mut self, e: &Estimate, alpha: f64) {
        self.p_value = stats::always_valid_p(self.p_value, e.theta, 0.0, e.v, e.tau2);
        let r = stats::mixture_radius(e.v, e.tau2, alpha);
        let lo = e.theta - r;
        let hi = e.theta + r;
        self.lower = Some(self.lower.map_or(lo, |l| l.max(lo)));
        self.upper = Some(self.upper.map_or(hi, |u| u.min(hi)));
        self.looks += 1;
    }
}

/// The serializable sequential state of a [`PairJudge`]: small, stored with the cumulative
/// verdict and handed back to [`PairJudge::restore`] after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeState {
    /// End of the last evaluation.
    pub last_end_ms: Option<i64>,
    /// Start of the canary's first pane (the cumulative span starts there).
    pub first_pane_ms: Option<i64>,
    /// Always-valid tests by metric name (`latency`, `latency_tail`, `error_rate`,
    /// `sample_ratio`).
    pub sequential: BTreeMap<String, SequentialState>,
}

#[derive(Debug, Clone)]
struct Pane {
    arm: Arm,
    start_ms: i64,
    end_ms: i64,
    counts: ArmCounts,
}

/// The stateful judge of one canary pair. Panes are additive; a pane of one arm may come in
/// several pieces (one per source partition) and they add up.
///
/// Driving contract: add every closed pane of both arms with [`PairJudge::add_pane`], then,
/// once everything of both arms up to `end_ms` is in (the tracker closed the window ending
/// there), call [`PairJudge::evaluate`]. The cumulative span starts at the canary's first pane;
/// baseline panes before it are only used by windows. Window verdicts are fixed-horizon and
/// informative; the pair's decision is the cumulative verdict's, from always-valid tests (see
/// the crate docs for the guarantee).
#[derive(Debug, Clone)]
pub struct PairJudge {
    spec: Arc<JudgeSpec>,
    expected_share: Option<f64>,
    window_ms: i64,
    cumulative: [ArmCounts; 2],
    /// Panes ending after the last evaluation, not in the cumulative counts yet.
    pending: Vec<Pane>,
    /// Panes already evaluated, kept while a future window needs them.
    recent: VecDeque<Pane>,
    state: JudgeState,
}

fn idx(arm: Arm) -> usize {
    match arm {
        Arm::Baseline => 0,
        Arm::Canary => 1,
    }
}

impl PairJudge {
    /// A judge of one pair. `expected_share` is the canary's expected share of the pair's
    /// requests, in `(0, 1)` (enables the sample-ratio check; a value outside that range is
    /// treated as unknown); `window_ms` the window length.
    pub fn new(spec: Arc<JudgeSpec>, expected_share: Option<f64>, window_ms: i64) -> Self {
        Self {
            spec,
            expected_share: expected_share.filter(|s| *s > 0.0 && *s < 1.0),
            window_ms,
            cumulative: [ArmCounts::default(), ArmCounts::default()],
            pending: Vec::new(),
            recent: VecDeque::new(),
            state: JudgeState::default(),
        }
    }

    /// Adds (part of) one closed pane of one arm. Panes ending at or before the last evaluated
    /// end are ignored (replays after a restart).
    pub fn add_pane(&mut self, arm: Arm, pane_start_ms: i64, pane_end_ms: i64, counts: &ArmCounts) {
        if self.state.last_end_ms.is_some_and(|last| pane_end_ms <= last) {
            return;
        }
        self.pending.push(Pane {
            arm,
            start_ms: pane_start_ms,
            end_ms: pane_end_ms,
            counts: counts.clone(),
        });
    }

    /// End of the last evaluation.
    pub fn last_end_ms(&self) -> Option<i64> {
        self.state.last_end_ms
    }

    /// Start of the canary's first pane.
    pub fn first_pane_ms(&self) -> Option<i64> {
        self.state.first_pane_ms
    }

    /// Serializable sequential-test state (see [`JudgeState`]).
    pub fn state(&self) -> JudgeState {
        self.state.clone()
    }

    /// The cumulative counts of one arm (what [`PairJudge::restore`] expects back).
    pub fn cumulative(&self, arm: Arm) -> &ArmCounts {
        &self.cumulative[idx(arm)]
    }

    /// Restores after a restart: `state` as taken by [`PairJudge::state`], the cumulative
    /// counts of both arms over the panes from `state.first_pane_ms` to `state.last_end_ms`
    /// (rebuilt from `pane_stats` and `pane_bins`), and the panes of the last window (those
    /// ending at or before `last_end_ms` only feed windows; later ones are added as by
    /// [`PairJudge::add_pane`]).
    pub fn restore(
        &mut self,
        state: JudgeState,
        baseline_cumulative: ArmCounts,
        canary_cumulative: ArmCounts,
        recent_panes: Vec<(Arm, i64, i64, ArmCounts)>,
    ) {
        self.state = state;
        self.cumulative = [baseline_cumulative, canary_cumulative];
        self.pending.clear();
        self.recent.clear();
        let last = self.state.last_end_ms;
        for (arm, start_ms, end_ms, counts) in recent_panes {
            let p = Pane { arm, start_ms, end_ms, counts };
            if last.is_some_and(|l| end_ms <= l) {
                self.recent.push_back(p);
            } else {
                self.pending.push(p);
            }
        }
    }

    /// Everything of both arms up to `end_ms` is in: judges the window
    /// `[end_ms - window_ms, end_ms)` and the cumulative span since the canary's first pane.
    /// Returns `[window verdict, cumulative verdict]`; the pair's decision is the cumulative
    /// verdict's. Ends must increase; an end at or before the last one returns nothing.
    pub fn evaluate(&mut self, end_ms: i64) -> Vec<Verdict> {
        if self.state.last_end_ms.is_some_and(|l| end_ms <= l) {
            return Vec::new();
        }
        // Fold the panes that are due into the cumulative counts, canary's first pane first.
        let (due, later): (Vec<Pane>, Vec<Pane>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.end_ms <= end_ms);
        self.pending = later;
        if let Some(first) = due
            .iter()
            .filter(|p| p.arm == Arm::Canary && !p.counts.is_empty())
            .map(|p| p.start_ms)
            .min()
        {
            self.state.first_pane_ms =
                Some(self.state.first_pane_ms.map_or(first, |f| f.min(first)));
        }
        for p in due {
            let in_span = self.state.first_pane_ms.is_some_and(|f| p.start_ms >= f);
            if in_span {
                self.cumulative[idx(p.arm)].add(&p.counts);
            }
            self.recent.push_back(p);
        }
        let window_start = end_ms - self.window_ms;
        self.recent.retain(|p| p.start_ms >= window_start);
        let mut window = [ArmCounts::default(), ArmCounts::default()];
        for p in self.recent.iter().filter(|p| p.end_ms <= end_ms) {
            window[idx(p.arm)].add(&p.counts);
        }
        self.state.last_end_ms = Some(end_ms);

        let spec = Arc::clone(&self.spec);
        let w =
            judge_window(&spec, self.expected_share, &window[0], &window[1], window_start, end_ms);
        let start = self.state.first_pane_ms.unwrap_or(end_ms);
        let [b, c] = &self.cumulative;
        let cum = judge_cumulative(
            &spec,
            self.expected_share,
            b,
            c,
            start,
            end_ms,
            &mut self.state.sequential,
        );
        vec![w, cum]
    }
}

/// An asymptotically normal estimate of a difference (canary - baseline) and what the
/// sequential test needs about it.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    theta: f64,
    /// Variance of `theta`.
    v: f64,
    /// Mixture variance.
    tau2: f64,
    /// The minimum effect in `theta` units.
    delta: f64,
}

/// One sequential metric computed on a span, before classification.
#[derive(Debug)]
struct Computed {
    name: &'static str,
    estimate: Option<Estimate>,
    /// Fixed-horizon two-sided p-value.
    p_fixed: Option<f64>,
    statistic: Option<f64>,
    effect: Option<f64>,
    threshold: f64,
    fails_up: bool,
    fails_down: bool,
    critical: bool,
    weight: f64,
    n: (u64, u64),
    evidence: serde_json::Map<String, serde_json::Value>,
    /// Canary requests needed for a powered decision (planning).
    required: Option<u64>,
}

impl Computed {
    /// The metric's verdict row with `classification`, `p_value` and `evidence`.
    fn verdict(
        &self,
        classification: Class,
        p_value: Option<f64>,
        evidence: serde_json::Map<String, serde_json::Value>,
    ) -> MetricVerdict {
        MetricVerdict {
            metric: self.name.into(),
            classification,
            statistic: self.statistic,
            p_value,
            effect: self.effect,
            n_baseline: self.n.0,
            n_canary: self.n.1,
            threshold: Some(self.threshold),
            critical: self.critical,
            weight: self.weight,
            evidence: serde_json::Value::Object(evidence),
        }
    }
}

fn smoothed(x: u64, n: u64) -> f64 {
    (x as f64 + 0.5) / (n as f64 + 1.0)
}

fn prop_variance(xb: u64, nb: u64, xc: u64, nc: u64) -> f64 {
    let pb = smoothed(xb, nb);
    let pc = smoothed(xc, nc);
    pb * (1.0 - pb) / nb as f64 + pc * (1.0 - pc) / nc as f64
}

fn ln_value(us: u32) -> f64 {
    f64::from(us.max(1)).ln()
}

fn geometric_mean(h: &[(u32, u64)]) -> Option<f64> {
    let n: u64 = h.iter().map(|b| b.1).sum();
    (n > 0).then(|| (h.iter().map(|b| ln_value(b.0) * b.1 as f64).sum::<f64>() / n as f64).exp())
}

fn scaled(h: &[(u32, u64)], factor: f64) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::with_capacity(h.len());
    for &(v, c) in h {
        let s = (f64::from(v) * factor).round().min(f64::from(u32::MAX)) as u32;
        match out.last_mut() {
            Some(last) if last.0 == s => last.1 += c,
            _ => out.push((s, c)),
        }
    }
    out
}

fn latency(spec: &JudgeSpec, alpha: f64, b: &ArmCounts, c: &ArmCounts) -> Computed {
    let l = &spec.latency;
    let nb: u64 = b.latency.iter().map(|x| x.1).sum();
    let nc: u64 = c.latency.iter().map(|x| x.1).sum();
    let mut out = Computed {
        name: LATENCY,
        estimate: None,
        p_fixed: None,
        statistic: None,
        effect: None,
        threshold: l.min_effect,
        fails_up: l.direction.fails_up(),
        fails_down: l.direction.fails_down(),
        critical: l.critical,
        weight: l.weight,
        n: (nb, nc),
        evidence: serde_json::Map::new(),
        required: None,
    };
    let tau = stats::norm_sf(-(1.0 + l.min_effect).ln() / (LATENCY_TAU_SIGMA * 2f64.sqrt())) - 0.5;
    let tau2 = tau * tau;
    let ratio = if nb > 0 { nc as f64 / nb as f64 } else { 1.0 / 9.0 };
    if nb < spec.min_samples || nc < spec.min_samples {
        out.required = stats::required_samples((1.0 + ratio) / 12.0, tau, tau2, alpha, spec.power);
        return out;
    }
    let Some(mw) = stats::mann_whitney_hist(&c.latency, &b.latency) else { return out };
    // The minimum effect in AUC units: the baseline against itself shifted by min_effect.
    let delta = stats::mann_whitney_hist(&scaled(&b.latency, 1.0 + l.min_effect), &b.latency)
        .map_or(tau, |s| s.auc - 0.5)
        .max(1e-6);
    let v1 = mw.auc_variance * nc as f64;
    out.estimate = Some(Estimate { theta: mw.auc - 0.5, v: mw.auc_variance, tau2, delta });
    out.p_fixed = Some(mw.p_two_sided);
    out.statistic = Some(mw.z);
    let gb = geometric_mean(&b.latency);
    let gc = geometric_mean(&c.latency);
    out.effect = gb.zip(gc).map(|(gb, gc)| gc / gb - 1.0);
    out.required = stats::required_samples(v1, delta, tau2, alpha, spec.power);
    let q = |h: &[(u32, u64)], q: f64| stats::hist_quantile(h, q).map(|us| f64::from(us) / 1000.0);
    let e = &mut out.evidence;
    e.insert("u".into(), json!(mw.u));
    e.insert("auc".into(), json!(mw.auc));
    e.insert("auc_min_effect".into(), json!(0.5 + delta));
    e.insert("p_greater".into(), json!(mw.p_greater));
    e.insert("p_less".into(), json!(mw.p_less));
    e.insert("baseline_p50_ms".into(), json!(q(&b.latency, 0.5)));
    e.insert("canary_p50_ms".into(), json!(q(&c.latency, 0.5)));
    e.insert("baseline_p99_ms".into(), json!(q(&b.latency, 0.99)));
    e.insert("canary_p99_ms".into(), json!(q(&c.latency, 0.99)));
    out
}

fn latency_tail(spec: &JudgeSpec, alpha: f64, b: &ArmCounts, c: &ArmCounts) -> Computed {
    let l = &spec.latency;
    let nb: u64 = b.latency.iter().map(|x| x.1).sum();
    let nc: u64 = c.latency.iter().map(|x| x.1).sum();
    let p0 = 1.0 - l.tail_quantile;
    let delta = p0 * l.tail_min_effect;
    let ratio = if nb > 0 { nc as f64 / nb as f64 } else { 1.0 / 9.0 };
    let v1 = (p0 + delta) * (1.0 - p0 - delta) + ratio * p0 * (1.0 - p0);
    let mut out = Computed {
        name: LATENCY_TAIL,
        estimate: None,
        p_fixed: None,
        statistic: None,
        effect: None,
        threshold: l.tail_min_effect,
        fails_up: l.direction.fails_up(),
        fails_down: l.direction.fails_down(),
        critical: l.critical,
        weight: l.tail_weight,
        n: (nb, nc),
        evidence: serde_json::Map::new(),
        required: stats::required_samples(v1, delta, delta * delta, alpha, spec.power),
    };
    // The baseline's quantile needs about ten requests above it to mean anything.
    let min_baseline = ((10.0 / p0).ceil() as u64).max(spec.min_samples);
    if nb < min_baseline || nc < spec.min_samples {
        return out;
    }
    let Some(threshold_us) = stats::hist_quantile(&b.latency, l.tail_quantile) else { return out };
    let xb = stats::hist_count_above(&b.latency, threshold_us);
    let xc = stats::hist_count_above(&c.latency, threshold_us);
    let (pb, pc) = (xb as f64 / nb as f64, xc as f64 / nc as f64);
    let v = prop_variance(xb, nb, xc, nc);
    out.estimate = Some(Estimate { theta: pc - pb, v, tau2: delta * delta, delta });
    out.statistic = Some((pc - pb) / v.sqrt());
    out.effect = (xb > 0).then(|| pc / pb - 1.0);
    let (test, p) = proportion_test(xc, nc, xb, nb);
    out.p_fixed = p;
    let e = &mut out.evidence;
    e.insert("baseline_quantile_ms".into(), json!(f64::from(threshold_us) / 1000.0));
    e.insert("quantile".into(), json!(l.tail_quantile));
    e.insert("baseline_above".into(), json!(xb));
    e.insert("canary_above".into(), json!(xc));
    e.insert("baseline_share_above".into(), json!(pb));
    e.insert("canary_share_above".into(), json!(pc));
    e.insert("test".into(), json!(test));
    out
}

/// Two-sided test of `x1 / n1` against `x2 / n2`: Fisher's exact test when an expected cell is
/// below 5, the pooled z test otherwise.
fn proportion_test(x1: u64, n1: u64, x2: u64, n2: u64) -> (&'static str, Option<f64>) {
    let total = (n1 + n2) as f64;
    let col1 = (x1 + x2) as f64;
    let col2 = total - col1;
    let min_expected = [n1 as f64 * col1, n1 as f64 * col2, n2 as f64 * col1, n2 as f64 * col2]
        .into_iter()
        .fold(f64::INFINITY, f64::min)
        / total;
    if min_expected < 5.0 {
        ("fisher_exact", Some(stats::fisher_exact(x1, n1 - x1, x2, n2 - x2).p_two_sided))
    } else {
        ("two_proportion_z", stats::two_proportion(x1, n1, x2, n2).map(|t| t.p_two_sided))
    }
}

fn error_rate(spec: &JudgeSpec, alpha: f64, b: &ArmCounts, c: &ArmCounts) -> Computed {
    let e = &spec.error_rate;
    let (nb, nc) = (b.requests, c.requests);
    let (xb, xc) = (b.errors.min(nb), c.errors.min(nc));
    let ratio = if nb > 0 { nc as f64 / nb as f64 } else { 1.0 / 9.0 };
    let p0 = if nb + nc > 0 { ((xb + xc) as f64 / (nb + nc) as f64).max(0.001) } else { 0.01 };
    let delta = e.min_effect;
    let v1 = (p0 + delta) * (1.0 - p0 - delta).max(0.0) + ratio * p0 * (1.0 - p0);
    let mut out = Computed {
        name: ERROR_RATE,
        estimate: None,
        p_fixed: None,
        statistic: None,
        effect: None,
        threshold: delta,
        fails_up: true,
        fails_down: false,
        critical: e.critical,
        weight: e.weight,
        n: (nb, nc),
        evidence: serde_json::Map::new(),
        required: stats::required_samples(v1, delta, delta * delta, alpha, spec.power),
    };
    if nb < spec.min_samples || nc < spec.min_samples {
        return out;
    }
    let (pb, pc) = (xb as f64 / nb as f64, xc as f64 / nc as f64);
    let v = prop_variance(xb, nb, xc, nc);
    out.estimate = Some(Estimate { theta: pc - pb, v, tau2: delta * delta, delta });
    out.statistic = Some((pc - pb) / v.sqrt());
    out.effect = Some(pc - pb);
    let (test, p) = proportion_test(xc, nc, xb, nb);
    out.p_fixed = p;
    let ev = &mut out.evidence;
    ev.insert("baseline_errors".into(), json!(xb));
    ev.insert("canary_errors".into(), json!(xc));
    ev.insert("baseline_rate".into(), json!(pb));
    ev.insert("canary_rate".into(), json!(pc));
    ev.insert("test".into(), json!(test));
    out
}

/// Whether this estimate's classification fails the metric.
fn failing(class: Class, up: bool, down: bool) -> bool {
    (class == Class::High && up) || (class == Class::Low && down)
}

/// `feature` for inputs, `prediction` for outputs.
fn drift_kind(kind: &str) -> &str {
    match kind {
        "numeric" | "categorical" | "feature" => "feature",
        "prediction" | "label" => "prediction",
        other => other,
    }
}

fn drift_metrics(spec: &JudgeSpec, b: &ArmCounts, c: &ArmCounts) -> Vec<MetricVerdict> {
    let d = &spec.drift;
    let eps = Epsilon::new(d.epsilon).unwrap_or(Epsilon::DEFAULT);
    let mut keys: Vec<&(String, String)> = b.bins.keys().chain(c.bins.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let empty = Vec::new();
        let mut cb = b.bins.get(key).unwrap_or(&empty).clone();
        let mut cc = c.bins.get(key).unwrap_or(&empty).clone();
        let len = cb.len().max(cc.len());
        cb.resize(len, 0);
        cc.resize(len, 0);
        let s = AlignedCounts::new(&cc, &cb).ok().and_then(|p| scores(&p, eps));
        let n = (cb.iter().sum::<u64>(), cc.iter().sum::<u64>());
        rows.push((format!("drift:{}:{}", drift_kind(&key.0), key.1), s, n));
    }
    let with_data: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.1.filter(|_| r.2.0 >= spec.min_samples && r.2.1 >= spec.min_samples))
        .map(|s| s.p_value)
        .collect();
    let adjusted = stats::benjamini_hochberg(&with_data);
    let weight = if rows.is_empty() { 0.0 } else { d.weight / rows.len() as f64 };
    let mut k = 0;
    rows.into_iter()
        .map(|(metric, s, n)| {
            let judged = s.filter(|_| n.0 >= spec.min_samples && n.1 >= spec.min_samples);
            let (classification, evidence) = match judged {
                None => (Class::NoData, json!({})),
                Some(s) => {
                    let adj = adjusted[k];
                    k += 1;
                    let large = s.kl >= d.kl_threshold || s.js >= d.js_threshold;
                    let class = if adj <= d.fdr_q && large { Class::High } else { Class::Pass };
                    (
                        class,
                        json!({
                            "kl": s.kl, "js": s.js, "psi": s.psi, "dof": s.dof,
                            "p_bh": adj, "fdr_q": d.fdr_q, "js_threshold": d.js_threshold,
                        }),
                    )
                }
            };
            MetricVerdict {
                metric,
                classification,
                statistic: judged.map(|s| s.chi2),
                p_value: judged.map(|s| s.p_value),
                effect: judged.map(|s| s.kl),
                n_baseline: n.0,
                n_canary: n.1,
                threshold: Some(d.kl_threshold),
                critical: d.critical,
                weight,
                evidence,
            }
        })
        .collect()
}

/// The sample-ratio check. `sequential`: the always-valid state to update (cumulative scope).
fn sample_ratio(
    spec: &JudgeSpec,
    share: f64,
    b: &ArmCounts,
    c: &ArmCounts,
    sequential: Option<&mut SequentialState>,
) -> MetricVerdict {
    let (nb, nc) = (b.requests, c.requests);
    let n = nb + nc;
    let mut m = MetricVerdict {
        metric: SAMPLE_RATIO.into(),
        classification: Class::NoData,
        statistic: None,
        p_value: None,
        effect: None,
        n_baseline: nb,
        n_canary: nc,
        threshold: Some(spec.srm_alpha),
        critical: true,
        weight: 0.0,
        evidence: json!({ "expected_share": share }),
    };
    if n < spec.min_samples {
        return m;
    }
    let observed = nc as f64 / n as f64;
    let chi = stats::chi_square_gof(&[nb, nc], &[1.0 - share, share]);
    m.effect = Some(observed - share);
    let v = share * (1.0 - share) / n as f64;
    m.statistic = Some((observed - share) / v.sqrt());
    let sign = if observed > share { Class::High } else { Class::Low };
    let p = match sequential {
        Some(st) => {
            st.update(
                &Estimate { theta: observed - share, v, tau2: SRM_TAU * SRM_TAU, delta: 0.0 },
                spec.srm_alpha,
            );
            Some(st.p_value)
        }
        None => chi.map(|c| c.p),
    };
    m.p_value = p;
    m.classification = if p.is_some_and(|p| p < spec.srm_alpha) { sign } else { Class::Pass };
    m.evidence = json!({
        "expected_share": share,
        "observed_share": observed,
        "chi2": chi.map(|c| c.stat),
        "chi2_p": chi.map(|c| c.p),
    });
    m
}

fn score(metrics: &[MetricVerdict], fails: &dyn Fn(&MetricVerdict) -> bool) -> f64 {
    let mut total = 0.0;
    let mut good = 0.0;
    for m in
        metrics.iter().filter(|m| m.metric != SAMPLE_RATIO && m.classification != Class::NoData)
    {
        total += m.weight;
        if !fails(m) {
            good += m.weight;
        }
    }
    if total > 0.0 { 100.0 * good / total } else { 0.0 }
}

fn metric_fails(spec: &JudgeSpec, m: &MetricVerdict) -> bool {
    match m.metric.as_str() {
        LATENCY | LATENCY_TAIL => failing(
            m.classification,
            spec.latency.direction.fails_up(),
            spec.latency.direction.fails_down(),
        ),
        SAMPLE_RATIO => false,
        _ => m.classification == Class::High,
    }
}

fn fmt_p(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".into(), |p| format!("{p:.3e}"))
}

/// Fixed-horizon tests on one window.
fn judge_window(
    spec: &JudgeSpec,
    expected_share: Option<f64>,
    b: &ArmCounts,
    c: &ArmCounts,
    start_ms: i64,
    end_ms: i64,
) -> Verdict {
    let alpha = spec.metric_alpha();
    let mut metrics = Vec::new();
    if let Some(share) = expected_share {
        metrics.push(sample_ratio(spec, share, b, c, None));
    }
    for mut comp in
        [latency(spec, alpha, b, c), latency_tail(spec, alpha, b, c), error_rate(spec, alpha, b, c)]
    {
        let classification = match (comp.estimate, comp.p_fixed) {
            (Some(e), Some(p)) if p < alpha => {
                if e.theta > 0.0 {
                    Class::High
                } else {
                    Class::Low
                }
            }
            (Some(_), Some(_)) => Class::Pass,
            _ => Class::NoData,
        };
        let mut evidence = std::mem::take(&mut comp.evidence);
        evidence.insert("alpha".into(), json!(alpha));
        metrics.push(comp.verdict(classification, comp.p_fixed, evidence));
    }
    metrics.extend(drift_metrics(spec, b, c));
    let score = score(&metrics, &|m| metric_fails(spec, m));
    let srm = metrics
        .iter()
        .find(|m| m.metric == SAMPLE_RATIO && matches!(m.classification, Class::High | Class::Low));
    let failed: Vec<&MetricVerdict> =
        metrics.iter().filter(|m| m.critical && metric_fails(spec, m)).collect();
    let (decision, reason) = if let Some(m) = srm {
        (
            Decision::Invalid,
            format!(
                "sample ratio mismatch in this window (chi-square p = {} < {}): not judged",
                fmt_p(m.p_value),
                spec.srm_alpha
            ),
        )
    } else if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|m| m.metric.as_str()).collect();
        (
            Decision::Rollback,
            format!(
                "fixed-horizon window tests fail {} (informative; gating uses the cumulative verdict)",
                names.join(", ")
            ),
        )
    } else {
        (Decision::Continue, "no critical metric fails in this window (informative; gating uses the cumulative verdict)".into())
    };
    Verdict {
        scope: Scope::Window,
        start_ms,
        end_ms,
        decision,
        score,
        metrics,
        samples_needed: None,
        reason,
    }
}

/// Always-valid tests on the cumulative span; updates the sequential states.
fn judge_cumulative(
    spec: &JudgeSpec,
    expected_share: Option<f64>,
    b: &ArmCounts,
    c: &ArmCounts,
    start_ms: i64,
    end_ms: i64,
    sequential: &mut BTreeMap<String, SequentialState>,
) -> Verdict {
    let alpha = spec.metric_alpha();
    let mut metrics = Vec::new();
    if let Some(share) = expected_share {
        let st = sequential.entry(SAMPLE_RATIO.into()).or_default();
        let mut m = sample_ratio(spec, share, b, c, Some(st));
        // Sticky: once the always-valid p-value fell below srm_alpha the split is mismatched.
        if m.classification == Class::NoData && st.p_value < spec.srm_alpha {
            m.classification = Class::High;
        }
        metrics.push(m);
    }
    // (name, critical, proven, required canary samples)
    let mut plans: Vec<(&'static str, bool, bool, Option<u64>)> = Vec::new();
    for mut comp in
        [latency(spec, alpha, b, c), latency_tail(spec, alpha, b, c), error_rate(spec, alpha, b, c)]
    {
        let st = sequential.entry(comp.name.into()).or_default();
        if let Some(e) = comp.estimate {
            st.update(&e, alpha);
        }
        let (lower, upper) = (st.lower, st.upper);
        let has_data = comp.estimate.is_some();
        let classification = if !has_data && st.looks == 0 {
            Class::NoData
        } else if lower.is_some_and(|l| l > 0.0) {
            Class::High
        } else if upper.is_some_and(|u| u < 0.0) {
            Class::Low
        } else {
            Class::Pass
        };
        let delta = comp.estimate.map(|e| e.delta);
        let proven = has_data
            && delta.is_some_and(|d| {
                (!comp.fails_up || upper.is_some_and(|u| u < d))
                    && (!comp.fails_down || lower.is_some_and(|l| l > -d))
            });
        plans.push((comp.name, comp.critical, proven, comp.required));
        let mut evidence = std::mem::take(&mut comp.evidence);
        evidence.insert("alpha".into(), json!(alpha));
        evidence.insert("p_fixed_horizon".into(), json!(comp.p_fixed));
        evidence.insert("estimate".into(), json!(comp.estimate.map(|e| e.theta)));
        evidence.insert("cs_lower".into(), json!(lower));
        evidence.insert("cs_upper".into(), json!(upper));
        evidence.insert("min_effect_estimate_units".into(), json!(delta));
        evidence.insert("within_min_effect".into(), json!(proven));
        evidence.insert("required_canary_samples".into(), json!(comp.required));
        evidence.insert("looks".into(), json!(st.looks));
        metrics.push(comp.verdict(classification, has_data.then_some(st.p_value), evidence));
    }
    metrics.extend(drift_metrics(spec, b, c));
    let score = score(&metrics, &|m| metric_fails(spec, m));
    let n_canary = c.requests;
    let elapsed = end_ms - start_ms;

    let srm = metrics
        .iter()
        .find(|m| m.metric == SAMPLE_RATIO && matches!(m.classification, Class::High | Class::Low));
    let failed: Vec<&MetricVerdict> =
        metrics.iter().filter(|m| m.critical && metric_fails(spec, m)).collect();
    let unproven: Vec<&(&'static str, bool, bool, Option<u64>)> =
        plans.iter().filter(|p| p.1 && !p.2).collect();
    let mut samples_needed = None;
    let (decision, reason) = if let Some(m) = srm {
        let observed = m.evidence.get("observed_share").and_then(serde_json::Value::as_f64);
        (
            Decision::Invalid,
            format!(
                "sample ratio mismatch: canary share {:.4} against the expected {:.4} (always-valid p = {} < {}), so the comparison is not judged",
                observed.unwrap_or(f64::NAN),
                expected_share.unwrap_or(f64::NAN),
                fmt_p(m.p_value),
                spec.srm_alpha
            ),
        )
    } else if !failed.is_empty() {
        let what: Vec<String> = failed
            .iter()
            .map(|m| {
                format!(
                    "{} is {} on the canary (p = {})",
                    m.metric,
                    m.classification.as_str(),
                    fmt_p(m.p_value)
                )
            })
            .collect();
        (Decision::Rollback, format!("rollback: {}", what.join("; ")))
    } else if n_canary == 0 {
        (Decision::Continue, "no canary requests yet".into())
    } else if !unproven.is_empty() {
        let needed = unproven
            .iter()
            .map(|p| p.3.map_or(1, |r| r.saturating_sub(n_canary).max(1)))
            .max()
            .unwrap_or(1);
        samples_needed = Some(needed);
        let names: Vec<&str> = unproven.iter().map(|p| p.0).collect();
        (
            Decision::Continue,
            format!(
                "not enough evidence yet that {} stay within the minimum effect: about {needed} more canary requests needed",
                names.join(", ")
            ),
        )
    } else if elapsed < spec.min_duration_ms {
        (
            Decision::Continue,
            format!(
                "healthy so far; waiting for the minimum duration ({} of {} s)",
                elapsed / 1000,
                spec.min_duration_ms / 1000
            ),
        )
    } else if score < spec.promote_score {
        (
            Decision::Continue,
            format!(
                "no critical failure, but the score {score:.1} is below {}",
                spec.promote_score
            ),
        )
    } else {
        (
            Decision::Promote,
            format!(
                "every critical metric is within its minimum effect after {} s and {n_canary} canary requests",
                elapsed / 1000
            ),
        )
    };
    Verdict {
        scope: Scope::Cumulative,
        start_ms,
        end_ms,
        decision,
        score,
        metrics,
        samples_needed,
        reason,
    }
}
