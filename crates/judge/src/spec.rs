//! The judge's settings (`[judge]`) and their validation.

use serde::{Deserialize, Serialize};

/// Which latency change is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A slower canary fails (the default).
    #[default]
    Increase,
    /// A faster canary fails (a latency that should not drop, such as a timeout budget).
    Decrease,
    /// Any significant change fails.
    Both,
}

impl Direction {
    /// Whether a significant increase fails.
    pub fn fails_up(self) -> bool {
        matches!(self, Self::Increase | Self::Both)
    }
    /// Whether a significant decrease fails.
    pub fn fails_down(self) -> bool {
        matches!(self, Self::Decrease | Self::Both)
    }
}

/// Latency judgement: Mann-Whitney on the whole histogram and a two-sample tail test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyJudgeSpec {
    /// Which change fails (default `increase`).
    pub direction: Direction,
    /// Smallest relative latency shift worth a rollback (default 0.10: every latency 10%
    /// higher). Promotion needs evidence that the canary's shift is below it; the
    /// Mann-Whitney effect is compared in AUC units, converted from this shift applied to the
    /// baseline's own cumulative histogram.
    pub min_effect: f64,
    /// Quantile of the baseline above which requests count as tail (default 0.99).
    pub tail_quantile: f64,
    /// Smallest relative increase of the canary's share of requests above the baseline's
    /// `tail_quantile` worth a rollback (default 1.0: twice as many requests above the
    /// baseline's p99, 2% instead of 1%).
    pub tail_min_effect: f64,
    /// Whether a latency or tail failure fails the whole verdict (default true).
    pub critical: bool,
    /// Weight of `latency` in the score (default 3).
    pub weight: f64,
    /// Weight of `latency_tail` in the score (default 2).
    pub tail_weight: f64,
}

impl Default for LatencyJudgeSpec {
    fn default() -> Self {
        Self {
            direction: Direction::Increase,
            min_effect: 0.10,
            tail_quantile: 0.99,
            tail_min_effect: 1.0,
            critical: true,
            weight: 3.0,
            tail_weight: 2.0,
        }
    }
}

/// Error-rate judgement: requests whose status is not `ok`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRateJudgeSpec {
    /// Smallest absolute increase of the error rate worth a rollback (default 0.005: half a
    /// percentage point).
    pub min_effect: f64,
    /// Whether an error-rate failure fails the whole verdict (default true).
    pub critical: bool,
    /// Weight in the score (default 3).
    pub weight: f64,
}

impl Default for ErrorRateJudgeSpec {
    fn default() -> Self {
        Self { min_effect: 0.005, critical: true, weight: 3.0 }
    }
}

/// Drift of the canary's feature and prediction distributions against the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftJudgeSpec {
    /// KL divergence `D(canary || baseline)` in nats at or above which a significant drift is
    /// flagged (default 0.1).
    pub kl_threshold: f64,
    /// Jensen-Shannon divergence in nats at or above which a significant drift is flagged
    /// (default 0.02).
    pub js_threshold: f64,
    /// False discovery rate of the chi-square tests, Benjamini-Hochberg over all features and
    /// predictions of the verdict (default 0.05).
    pub fdr_q: f64,
    /// Whether a flagged drift fails the whole verdict (default false: drift is shown, not
    /// acted on).
    pub critical: bool,
    /// Total weight of all drift metrics in the score, shared equally (default 2).
    pub weight: f64,
    /// Additive smoothing of KL (default 1e-4, as `[drift] epsilon`).
    pub epsilon: f64,
}

impl Default for DriftJudgeSpec {
    fn default() -> Self {
        Self {
            kl_threshold: 0.1,
            js_threshold: 0.02,
            fdr_q: 0.05,
            critical: false,
            weight: 2.0,
            epsilon: modelwatch_core::drift::DEFAULT_EPSILON,
        }
    }
}

/// The judge's settings. Defaults are production defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeSpec {
    /// Bound on the probability that a canary no worse than its baseline is ever rolled back,
    /// over the whole canary however often it is judged (default 0.05). Split equally between
    /// the critical sequential metrics (Bonferroni): `latency`, `latency_tail`, `error_rate`.
    pub alpha: f64,
    /// Probability of detecting an effect of the minimum size (and of promoting a healthy
    /// canary) once `samples_needed` canary requests are in (default 0.8).
    pub power: f64,
    /// Event time from the canary's first pane before it may be promoted (default 600000:
    /// ten minutes).
    pub min_duration_ms: i64,
    /// Requests of each arm before a metric is judged (default 100); below: `nodata`.
    pub min_samples: u64,
    /// Weighted score (0 to 100) a canary needs to be promoted (default 80).
    pub promote_score: f64,
    /// Level of the sample-ratio-mismatch test (default 0.001). The cumulative check is an
    /// always-valid sequential test, so this bounds the chance that a correct split is ever
    /// called mismatched; strict, because a mismatch voids every other result.
    pub srm_alpha: f64,
    /// Latency.
    pub latency: LatencyJudgeSpec,
    /// Error rate.
    pub error_rate: ErrorRateJudgeSpec,
    /// Feature and prediction drift.
    pub drift: DriftJudgeSpec,
}

impl Default for JudgeSpec {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            power: 0.8,
            min_duration_ms: 600_000,
            min_samples: 100,
            promote_score: 80.0,
            srm_alpha: 0.001,
            latency: LatencyJudgeSpec::default(),
            error_rate: ErrorRateJudgeSpec::default(),
            drift: DriftJudgeSpec::default(),
        }
    }
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeSpecError {
    /// A number outside its valid range.
    #[error("judge.{field} = {value} is out of range: expected {expected}")]
    OutOfRange {
        /// The setting, as in the `[judge]` section.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The valid range.
        expected: &'static str,
    },
}

fn check(
    field: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<(), JudgeSpecError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(JudgeSpecError::OutOfRange { field, value, expected })
    }
}

fn open_unit(field: &'static str, v: f64) -> Result<(), JudgeSpecError> {
    check(field, v, v > 0.0 && v < 1.0, "in (0, 1)")
}

fn positive(field: &'static str, v: f64) -> Result<(), JudgeSpecError> {
    check(field, v, v > 0.0, "> 0")
}

fn weight(field: &'static str, v: f64) -> Result<(), JudgeSpecError> {
    check(field, v, v >= 0.0, ">= 0")
}

impl JudgeSpec {
    /// Checks every field, naming the first bad one. Pure.
    ///
    /// ```
    /// use modelwatch_judge::JudgeSpec;
    ///
    /// assert!(JudgeSpec::default().validate().is_ok());
    /// let bad = JudgeSpec { alpha: 1.5, ..JudgeSpec::default() };
    /// assert!(bad.validate().unwrap_err().to_string().contains("judge.alpha"));
    /// ```
    pub fn validate(&self) -> Result<(), JudgeSpecError> {
        open_unit("alpha", self.alpha)?;
        check("power", self.power, self.power >= 0.5 && self.power < 1.0, "in [0.5, 1)")?;
        let d = self.min_duration_ms as f64;
        check("min_duration", d, self.min_duration_ms >= 0, ">= 0")?;
        check("min_samples", self.min_samples as f64, self.min_samples >= 2, ">= 2")?;
        let s = self.promote_score;
        check("promote_score", s, (0.0..=100.0).contains(&s), "in [0, 100]")?;
        open_unit("srm_alpha", self.srm_alpha)?;
        let l = &self.latency;
        positive("latency.min_effect", l.min_effect)?;
        open_unit("latency.tail_quantile", l.tail_quantile)?;
        positive("latency.tail_min_effect", l.tail_min_effect)?;
        weight("latency.weight", l.weight)?;
        weight("latency.tail_weight", l.tail_weight)?;
        let e = &self.error_rate;
        check(
            "error_rate.min_effect",
            e.min_effect,
            e.min_effect > 0.0 && e.min_effect < 1.0,
            "in (0, 1)",
        )?;
        weight("error_rate.weight", e.weight)?;
        let dr = &self.drift;
        weight("drift.kl_threshold", dr.kl_threshold)?;
        weight("drift.js_threshold", dr.js_threshold)?;
        open_unit("drift.fdr_q", dr.fdr_q)?;
        weight("drift.weight", dr.weight)?;
        positive("drift.epsilon", dr.epsilon)?;
        Ok(())
    }

    /// Number of critical sequential metrics: `latency` and `latency_tail` when latency is
    /// critical, `error_rate` when it is.
    pub fn critical_sequential_metrics(&self) -> u32 {
        2 * u32::from(self.latency.critical) + u32::from(self.error_rate.critical)
    }

    /// The level of each sequential metric: `alpha` over the critical sequential metrics
    /// (Bonferroni), or `alpha` when none is critical.
    pub fn metric_alpha(&self) -> f64 {
        self.alpha / f64::from(self.critical_sequential_metrics().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_field() {
        let field = |s: JudgeSpec| match s.validate() {
            Err(JudgeSpecError::OutOfRange { field, .. }) => field,
            Ok(()) => "ok",
        };
        assert_eq!(field(JudgeSpec::default()), "ok");
        assert_eq!(field(JudgeSpec { power: 0.3, ..JudgeSpec::default() }), "power");
        assert_eq!(field(JudgeSpec { srm_alpha: 0.0, ..JudgeSpec::default() }), "srm_alpha");
        assert_eq!(
            field(JudgeSpec { min_duration_ms: -1, ..JudgeSpec::default() }),
            "min_duration"
        );
        let mut s = JudgeSpec::default();
        s.latency.tail_quantile = 1.0;
        assert_eq!(field(s), "latency.tail_quantile");
        let mut s = JudgeSpec::default();
        s.drift.fdr_q = f64::NAN;
        assert_eq!(field(s), "drift.fdr_q");
    }

    #[test]
    fn alpha_is_split_over_critical_metrics() {
        let mut s = JudgeSpec::default();
        assert_eq!(s.critical_sequential_metrics(), 3);
        s.error_rate.critical = false;
        assert_eq!(s.metric_alpha(), 0.025);
    }

    #[test]
    fn toml_like_input_rejects_unknown_fields() {
        let s: JudgeSpec =
            serde_json::from_str(r#"{"alpha": 0.01, "latency": {"direction": "both"}}"#)
                .expect("valid");
        assert_eq!((s.alpha, s.latency.direction), (0.01, Direction::Both));
        assert!(serde_json::from_str::<JudgeSpec>(r#"{"alpah": 0.01}"#).is_err());
    }
}
