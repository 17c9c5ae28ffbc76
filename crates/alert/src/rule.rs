//! Alert rules as configured (`[[alerts.rules]]`, [`RuleSpec`]) and as validated ([`Rule`]).
//!
//! Validation is pure and names the offending key as it is spelled in the TOML configuration,
//! with `alerts.rules` indices counting from 0 (`alerts.rules[2].threshold`). A validated rule
//! holds parsed metrics, compiled templates and millisecond durations, so evaluation cannot fail.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::glob::Glob;

/// An alerting setting (a rule or the `[alerts]` timings) that cannot be used, with the
/// configuration key it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A key that this rule needs is missing.
    #[error("`{key}` is required {reason}")]
    Missing {
        /// The configuration key, e.g. `alerts.rules[0].threshold`.
        key: String,
        /// When it is required.
        reason: &'static str,
    },
    /// A key that this rule must not have.
    #[error("`{key}` is not allowed {reason}")]
    NotAllowed {
        /// The configuration key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A value that does not parse.
    #[error("`{key}` is {value:?}; expected {expected}")]
    Invalid {
        /// The configuration key.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A template with a placeholder that does not exist.
    #[error(
        "`{key}` uses the unknown placeholder {{{{{name}}}}}; known: {{{{rule}}}}, {{{{model}}}}, \
         {{{{version}}}}, {{{{baseline}}}}, {{{{value}}}}, {{{{threshold}}}}, {{{{severity}}}}, \
         {{{{metric}}}}"
    )]
    UnknownPlaceholder {
        /// The configuration key of the template.
        key: String,
        /// The placeholder's name.
        name: String,
    },
    /// Two rules with one name.
    #[error("`{key}`: rule {name:?} is already defined by `alerts.rules[{first}]`")]
    DuplicateName {
        /// The configuration key of the second name.
        key: String,
        /// The name.
        name: String,
        /// Index of the first rule with it.
        first: usize,
    },
    /// A rule that names a channel that is not configured.
    #[error("`{key}` names the channel {name:?}, which is not configured in `[alerts.channels]`")]
    UnknownChannel {
        /// The configuration key, e.g. `alerts.rules[1].channels[0]`.
        key: String,
        /// The channel name.
        name: String,
    },
    /// A duration that is not a whole number of milliseconds, or too large.
    #[error("`{key}` must be a whole number of milliseconds below 100 years")]
    Resolution {
        /// The configuration key.
        key: String,
    },
}

/// One `[[alerts.rules]]` entry as written. [`RuleSpec::validate`] checks it.
///
/// `RuleSpec::default()` has the defaults of the configuration file (severity `warning`,
/// every model and version) and an empty name and metric, which validation refuses.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Rule name: the `alertname` label of its alerts. Unique among the rules.
    pub name: String,
    /// What is compared: a window metric (`latency_p50_ms`, `latency_p90_ms`,
    /// `latency_p99_ms`, `latency_p999_ms`, `latency_max_ms`, `error_rate`, `throughput_rps`,
    /// `requests`, `errors`, `timeouts`, `tokens_in`, `tokens_out`, `ttft_p50_ms`,
    /// `ttft_p99_ms`), a metric-event aggregate `metric:<name>:<agg>` (agg: `avg`, `sum`,
    /// `min`, `max`, `last`, `count`, `p50`, `p99`, `rate`), a drift score
    /// `drift:<kl|psi|js>:<feature>` or `drift:<kl|psi|js>:max` (the largest over the
    /// window's features), a canary verdict `canary:<rollback|invalid|promote|score>` (the
    /// judge's latest cumulative decision for the canary version of a `[[canary]]` pair: 1 or 0,
    /// or the score 0 to 100), or `absent` (a version that stops sending; see `absent_for`).
    pub metric: String,
    /// Comparison: `">"`, `">="`, `"<"` or `"<="`. Required unless `metric = "absent"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// The threshold the value is compared with. Required unless `metric = "absent"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Per-model thresholds (exact model names) that replace `threshold` for that model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, f64>,
    /// Compare the version with its canary baseline instead of an absolute value: only
    /// `"baseline"`. The rule then applies to canary versions only, on windows whose end both
    /// sides have. Not for drift or `absent` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_to: Option<RelativeTo>,
    /// With `relative_to`: `"ratio"` (canary / baseline; a zero baseline skips the window)
    /// or `"difference"` (canary - baseline). Default `"ratio"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// Drift rules: which drift scores are read: `"reference"` (the version against its pinned
    /// reference period, rows with `reference = "period"`) or `"baseline"` (a canary against
    /// its baseline's window, rows with `reference = "version:<baseline>"`). Default
    /// `"reference"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_reference: Option<DriftReference>,
    /// `absent` rules: how long a version may send nothing, in wall-clock time, before the
    /// condition holds. Required for, and only for, `metric = "absent"`.
    #[serde(default, with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub absent_for: Option<Duration>,
    /// Windows with fewer observations are not evaluated (the alert's state is unchanged):
    /// requests of the window for window metrics (both sides for baseline-relative rules),
    /// the metric's sample count for metric aggregates, the scored samples for drift.
    #[serde(default)]
    pub min_samples: u64,
    /// How long the condition must hold, in event time measured on window ends, before the
    /// alert fires (pending until then). `absent` rules count wall-clock time.
    #[serde(default, rename = "for", with = "duration")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after its condition stopped holding.
    #[serde(default, with = "duration")]
    pub keep_firing_for: Duration,
    /// Severity label of the alerts, e.g. `"warning"` or `"critical"`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Extra labels (templates). Labels identify an alert, so they may not use `{{value}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations (templates), e.g. `summary = "{{model}} {{version}}: p99 {{value}} ms"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Models the rule applies to: a glob with `*` and `?`. Default every model.
    #[serde(default = "default_glob")]
    pub model: String,
    /// Versions the rule applies to: a glob with `*` and `?`. Default every version.
    #[serde(default = "default_glob")]
    pub version: String,
    /// Names of the `[alerts.channels.NAME]` that receive the notifications.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

impl Default for RuleSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            metric: String::new(),
            op: None,
            threshold: None,
            thresholds: BTreeMap::new(),
            relative_to: None,
            compare: None,
            drift_reference: None,
            absent_for: None,
            min_samples: 0,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            severity: default_severity(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            model: default_glob(),
            version: default_glob(),
            channels: Vec::new(),
        }
    }
}

fn default_severity() -> String {
    "warning".to_owned()
}

fn default_glob() -> String {
    "*".to_owned()
}

/// Durations as humantime strings: `"10s"`, `"5m"`, `"1h 30m"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            de::Error::custom(format_args!(
                "invalid duration \"{s}\" ({e}); expected e.g. \"10s\", \"5m\" or \"1h 30m\""
            ))
        })
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

/// Milliseconds of a configured duration, refusing sub-millisecond parts.
pub(crate) fn millis(key: impl FnOnce() -> String, d: Duration) -> Result<i64, ConfigError> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) || d > Duration::from_secs(100 * 365 * 86_400) {
        return Err(ConfigError::Resolution { key: key() });
    }
    Ok(d.as_millis() as i64)
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    /// Strictly greater.
    #[serde(rename = ">")]
    Gt,
    /// Greater or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Strictly less.
    #[serde(rename = "<")]
    Lt,
    /// Less or equal.
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    /// Whether `value op threshold` holds (false for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

/// What a baseline-relative rule compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelativeTo {
    /// The canary pair's baseline version, window by window.
    Baseline,
}

/// How a baseline-relative value is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// canary / baseline (undefined, so not evaluated, when the baseline is 0).
    #[default]
    Ratio,
    /// canary - baseline.
    Difference,
}

impl Compare {
    /// The relative value, `None` when undefined.
    pub fn apply(self, canary: f64, baseline: f64) -> Option<f64> {
        let v = match self {
            Compare::Ratio if baseline == 0.0 => return None,
            Compare::Ratio => canary / baseline,
            Compare::Difference => canary - baseline,
        };
        v.is_finite().then_some(v)
    }
}

/// Which drift scores a drift rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftReference {
    /// The version's pinned reference period (`DriftScoreRow.reference == "period"`).
    #[default]
    Reference,
    /// The canary pair's baseline window (`DriftScoreRow.reference == "version:<baseline>"`).
    Baseline,
}

/// A column of `window_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowMetric {
    /// `latency_p50_ms`.
    LatencyP50,
    /// `latency_p90_ms`.
    LatencyP90,
    /// `latency_p99_ms`.
    LatencyP99,
    /// `latency_p999_ms`.
    LatencyP999,
    /// `latency_max_ms`.
    LatencyMax,
    /// `error_rate`.
    ErrorRate,
    /// `throughput_rps`.
    ThroughputRps,
    /// `requests`.
    Requests,
    /// `errors`.
    Errors,
    /// `timeouts`.
    Timeouts,
    /// `tokens_in`.
    TokensIn,
    /// `tokens_out`.
    TokensOut,
    /// `ttft_p50_ms`.
    TtftP50,
    /// `ttft_p99_ms`.
    TtftP99,
}

const WINDOW_METRICS: [(&str, WindowMetric); 14] = [
    ("latency_p50_ms", WindowMetric::LatencyP50),
    ("latency_p90_ms", WindowMetric::LatencyP90),
    ("latency_p99_ms", WindowMetric::LatencyP99),
    ("latency_p999_ms", WindowMetric::LatencyP999),
    ("latency_max_ms", WindowMetric::LatencyMax),
    ("error_rate", WindowMetric::ErrorRate),
    ("throughput_rps", WindowMetric::ThroughputRps),
    ("requests", WindowMetric::Requests),
    ("errors", WindowMetric::Errors),
    ("timeouts", WindowMetric::Timeouts),
    ("tokens_in", WindowMetric::TokensIn),
    ("tokens_out", WindowMetric::TokensOut),
    ("ttft_p50_ms", WindowMetric::TtftP50),
    ("ttft_p99_ms", WindowMetric::TtftP99),
];

impl WindowMetric {
    /// The value of this metric in a window row (`None` when the row has none, e.g. a
    /// latency quantile of a window without requests).
    pub fn of(self, r: &modelwatch_clickhouse::rows::WindowStatsRow) -> Option<f64> {
        match self {
            WindowMetric::LatencyP50 => r.latency_p50_ms,
            WindowMetric::LatencyP90 => r.latency_p90_ms,
            WindowMetric::LatencyP99 => r.latency_p99_ms,
            WindowMetric::LatencyP999 => r.latency_p999_ms,
            WindowMetric::LatencyMax => r.latency_max_ms,
            WindowMetric::ErrorRate => r.error_rate,
            WindowMetric::ThroughputRps => Some(r.throughput_rps),
            WindowMetric::Requests => Some(r.requests as f64),
            WindowMetric::Errors => Some(r.errors as f64),
            WindowMetric::Timeouts => Some(r.timeouts as f64),
            WindowMetric::TokensIn => Some(r.tokens_in as f64),
            WindowMetric::TokensOut => Some(r.tokens_out as f64),
            WindowMetric::TtftP50 => r.ttft_p50_ms,
            WindowMetric::TtftP99 => r.ttft_p99_ms,
        }
        .filter(|v| v.is_finite())
    }
}

/// An aggregate of `metric_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricAgg {
    /// `avg`: sum / count.
    Avg,
    /// `sum`.
    Sum,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `last`: the latest sample by event time.
    Last,
    /// `count`: samples.
    Count,
    /// `p50`: median.
    P50,
    /// `p99`.
    P99,
    /// `rate`: counters' increase per second (undefined for gauges).
    Rate,
}

const METRIC_AGGS: [(&str, MetricAgg); 9] = [
    ("avg", MetricAgg::Avg),
    ("sum", MetricAgg::Sum),
    ("min", MetricAgg::Min),
    ("max", MetricAgg::Max),
    ("last", MetricAgg::Last),
    ("count", MetricAgg::Count),
    ("p50", MetricAgg::P50),
    ("p99", MetricAgg::P99),
    ("rate", MetricAgg::Rate),
];

impl MetricAgg {
    /// The aggregate's value in a metric row (`None` when undefined).
    pub fn of(self, r: &modelwatch_clickhouse::rows::MetricStatsRow) -> Option<f64> {
        match self {
            MetricAgg::Avg => (r.count > 0).then(|| r.sum / r.count as f64),
            MetricAgg::Sum => Some(r.sum),
            MetricAgg::Min => Some(r.min),
            MetricAgg::Max => Some(r.max),
            MetricAgg::Last => Some(r.last),
            MetricAgg::Count => Some(r.count as f64),
            MetricAgg::P50 => r.p50,
            MetricAgg::P99 => r.p99,
            MetricAgg::Rate => r.rate_per_s,
        }
        .filter(|v| v.is_finite())
    }
}

/// A value of a canary verdict (`canary_verdicts` rows of metric `overall`, scope
/// `cumulative`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryMetric {
    /// `canary:rollback`: 1 when the decision is `rollback`, else 0.
    Rollback,
    /// `canary:invalid`: 1 when the comparison is invalid (sample-ratio mismatch), else 0.
    Invalid,
    /// `canary:promote`: 1 when the decision is `promote`, else 0.
    Promote,
    /// `canary:score`: the verdict's weighted score, 0 to 100.
    Score,
}

impl CanaryMetric {
    /// The value of an `overall` verdict row.
    pub fn of(self, r: &modelwatch_clickhouse::rows::CanaryVerdictRow) -> Option<f64> {
        let is = |d: &str| Some(if r.decision == d { 1.0 } else { 0.0 });
        match self {
            CanaryMetric::Rollback => is("rollback"),
            CanaryMetric::Invalid => is("invalid"),
            CanaryMetric::Promote => is("promote"),
            CanaryMetric::Score => r.score.filter(|v| v.is_finite()),
        }
    }
}

/// A drift score column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// KL divergence D(current || reference).
    Kl,
    /// Population stability index.
    Psi,
    /// Jensen-Shannon divergence.
    Js,
}

impl DriftKind {
    /// The score in a drift row.
    pub fn of(self, r: &modelwatch_clickhouse::rows::DriftScoreRow) -> Option<f64> {
        Some(match self {
            DriftKind::Kl => r.kl,
            DriftKind::Psi => r.psi,
            DriftKind::Js => r.js,
        })
        .filter(|v| v.is_finite())
    }
}

/// Which features a drift rule reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureSel {
    /// One feature (or `prediction` / `predicted_label`) by name.
    Named(String),
    /// The largest score over the window's features.
    Max,
}

/// What a rule evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A `window_stats` column.
    Window(WindowMetric),
    /// A `metric_stats` aggregate of one metric name.
    MetricEvent {
        /// `MetricEvent.name`.
        name: String,
        /// The aggregate.
        agg: MetricAgg,
    },
    /// A `drift_scores` score.
    Drift {
        /// Score kind.
        kind: DriftKind,
        /// Feature or maximum over features.
        feature: FeatureSel,
        /// Reference-period or baseline rows.
        reference: DriftReference,
    },
    /// The canary judge's latest cumulative verdict of a pair, on the canary version.
    Canary(CanaryMetric),
    /// No window with requests for longer than this, in wall-clock milliseconds.
    Absent {
        /// The silence that makes the condition hold.
        after_ms: i64,
    },
}

impl Metric {
    /// Parses the `metric` string (without the `absent` duration, which comes from
    /// `absent_for`). `None` when it names nothing known.
    fn parse(s: &str, reference: DriftReference, absent_after_ms: i64) -> Option<Metric> {
        if s == "absent" {
            return Some(Metric::Absent { after_ms: absent_after_ms });
        }
        if let Some(&(_, m)) = WINDOW_METRICS.iter().find(|(n, _)| *n == s) {
            return Some(Metric::Window(m));
        }
        if let Some(rest) = s.strip_prefix("metric:") {
            // The aggregate is the last segment: metric names may contain ':'.
            let (name, agg) = rest.rsplit_once(':')?;
            let &(_, agg) = METRIC_AGGS.iter().find(|(n, _)| *n == agg)?;
            return (!name.is_empty()).then(|| Metric::MetricEvent { name: name.to_owned(), agg });
        }
        if let Some(rest) = s.strip_prefix("canary:") {
            return Some(Metric::Canary(match rest {
                "rollback" => CanaryMetric::Rollback,
                "invalid" => CanaryMetric::Invalid,
                "promote" => CanaryMetric::Promote,
                "score" => CanaryMetric::Score,
                _ => return None,
            }));
        }
        if let Some(rest) = s.strip_prefix("drift:") {
            let (kind, feature) = rest.split_once(':')?;
            let kind = match kind {
                "kl" => DriftKind::Kl,
                "psi" => DriftKind::Psi,
                "js" => DriftKind::Js,
                _ => return None,
            };
            let feature = match feature {
                "" => return None,
                "max" => FeatureSel::Max,
                f => FeatureSel::Named(f.to_owned()),
            };
            return Some(Metric::Drift { kind, feature, reference });
        }
        None
    }
}

/// A placeholder of a label or annotation template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholder {
    Rule,
    Model,
    Version,
    Baseline,
    Value,
    Threshold,
    Severity,
    Metric,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Placeholder),
}

/// A parsed `{{placeholder}}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// The model.
    pub model: &'a str,
    /// The version.
    pub version: &'a str,
    /// The baseline version (empty for rules that have none).
    pub baseline: &'a str,
    /// The evaluated value, if any.
    pub value: Option<f64>,
    /// The threshold in force.
    pub threshold: Option<f64>,
    /// The severity.
    pub severity: &'a str,
    /// The metric as configured.
    pub metric: &'a str,
}

impl Template {
    /// Parses `text`: `{{ name }}` (spaces optional) is a placeholder, anything else is copied.
    /// `key` names the template in errors.
    pub fn parse(key: &str, text: &str) -> Result<Template, ConfigError> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open..].find("}}") else { break };
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let name = rest[open + 2..open + close].trim();
            let var = match name {
                "rule" => Placeholder::Rule,
                "model" => Placeholder::Model,
                "version" => Placeholder::Version,
                "baseline" => Placeholder::Baseline,
                "value" => Placeholder::Value,
                "threshold" => Placeholder::Threshold,
                "severity" => Placeholder::Severity,
                "metric" => Placeholder::Metric,
                _ => {
                    return Err(ConfigError::UnknownPlaceholder {
                        key: key.to_owned(),
                        name: name.to_owned(),
                    });
                }
            };
            segments.push(Segment::Var(var));
            rest = &rest[open + close + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template { segments })
    }

    pub(crate) fn uses(&self, p: Placeholder) -> bool {
        self.segments.contains(&Segment::Var(p))
    }

    /// The text with every placeholder replaced; numbers in Rust's shortest round-trip
    /// notation, absent numbers as the empty string.
    pub fn render(&self, c: &TemplateContext<'_>) -> String {
        let mut out = String::new();
        let num = |out: &mut String, v: Option<f64>| {
            if let Some(v) = v {
                out.push_str(&v.to_string());
            }
        };
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(Placeholder::Rule) => out.push_str(c.rule),
                Segment::Var(Placeholder::Model) => out.push_str(c.model),
                Segment::Var(Placeholder::Version) => out.push_str(c.version),
                Segment::Var(Placeholder::Baseline) => out.push_str(c.baseline),
                Segment::Var(Placeholder::Value) => num(&mut out, c.value),
                Segment::Var(Placeholder::Threshold) => num(&mut out, c.threshold),
                Segment::Var(Placeholder::Severity) => out.push_str(c.severity),
                Segment::Var(Placeholder::Metric) => out.push_str(c.metric),
            }
        }
        out
    }
}

/// Label names every alert carries; a rule's `labels` may not redefine them.
pub const RESERVED_LABELS: [&str; 4] = ["alertname", "model", "version", "severity"];

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    name: String,
    metric_text: String,
    metric: Metric,
    op: Op,
    threshold: f64,
    thresholds: BTreeMap<String, f64>,
    relative: Option<Compare>,
    min_samples: u64,
    for_ms: i64,
    keep_firing_for_ms: i64,
    severity: String,
    labels: BTreeMap<String, Template>,
    annotations: BTreeMap<String, Template>,
    model: Glob,
    version: Glob,
    channels: Vec<String>,
}

impl RuleSpec {
    /// Checks the entry `alerts.rules[index]` and builds its [`Rule`].
    pub fn validate(&self, index: usize) -> Result<Rule, ConfigError> {
        let key = |field: &str| format!("alerts.rules[{index}].{field}");
        if self.name.trim().is_empty() {
            return Err(ConfigError::Missing { key: key("name"), reason: "and may not be blank" });
        }
        let absent = self.metric == "absent";
        let after_ms = match (absent, self.absent_for) {
            (true, Some(d)) if d.is_zero() => {
                return Err(ConfigError::Invalid {
                    key: key("absent_for"),
                    value: "0s".to_owned(),
                    expected: "a duration greater than zero",
                });
            }
            (true, Some(d)) => millis(|| key("absent_for"), d)?,
            (true, None) => {
                return Err(ConfigError::Missing {
                    key: key("absent_for"),
                    reason: "for `metric = \"absent\"`",
                });
            }
            (false, Some(_)) => {
                return Err(ConfigError::NotAllowed {
                    key: key("absent_for"),
                    reason: "unless `metric = \"absent\"`",
                });
            }
            (false, None) => 0,
        };
        let metric =
            Metric::parse(&self.metric, self.drift_reference.unwrap_or_default(), after_ms)
                .ok_or_else(|| ConfigError::Invalid {
                    key: key("metric"),
                    value: self.metric.clone(),
                    expected: "a window metric (e.g. latency_p99_ms, error_rate), \
                               metric:<name>:<avg|sum|min|max|last|count|p50|p99|rate>, \
                               drift:<kl|psi|js>:<feature|max>, \
                               canary:<rollback|invalid|promote|score> or absent",
                })?;
        let is_drift = matches!(metric, Metric::Drift { .. });
        if self.drift_reference.is_some() && !is_drift {
            return Err(ConfigError::NotAllowed {
                key: key("drift_reference"),
                reason: "unless the metric is a drift score",
            });
        }
        let (op, threshold) = if absent {
            for (field, given) in [
                ("op", self.op.is_some()),
                ("threshold", self.threshold.is_some()),
                ("thresholds", !self.thresholds.is_empty()),
            ] {
                if given {
                    return Err(ConfigError::NotAllowed {
                        key: key(field),
                        reason: "for `metric = \"absent\"` (its threshold is `absent_for`)",
                    });
                }
            }
            (Op::Gt, after_ms as f64 / 1000.0)
        } else {
            let op = self
                .op
                .ok_or(ConfigError::Missing { key: key("op"), reason: "for a threshold rule" })?;
            let threshold = self.threshold.ok_or(ConfigError::Missing {
                key: key("threshold"),
                reason: "for a threshold rule",
            })?;
            (op, threshold)
        };
        let finite = |k: String, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key: k,
                    value: v.to_string(),
                    expected: "a finite number",
                })
            }
        };
        finite(key("threshold"), threshold)?;
        for (model, &v) in &self.thresholds {
            finite(key(&format!("thresholds.{model:?}")), v)?;
        }
        let relative = match (self.relative_to, self.compare) {
            (Some(RelativeTo::Baseline), c) => {
                if absent || is_drift || matches!(metric, Metric::Canary(_)) {
                    return Err(ConfigError::NotAllowed {
                        key: key("relative_to"),
                        reason: "for drift, canary or `absent` rules (use `drift_reference = \
                                 \"baseline\"` for drift against the baseline; canary verdicts \
                                 already compare with the baseline)",
                    });
                }
                Some(c.unwrap_or_default())
            }
            (None, Some(_)) => {
                return Err(ConfigError::NotAllowed {
                    key: key("compare"),
                    reason: "without `relative_to = \"baseline\"`",
                });
            }
            (None, None) => None,
        };
        let for_ms = millis(|| key("for"), self.for_)?;
        let keep_firing_for_ms = millis(|| key("keep_firing_for"), self.keep_firing_for)?;
        if self.severity.trim().is_empty() {
            return Err(ConfigError::Missing {
                key: key("severity"),
                reason: "and may not be blank",
            });
        }
        let mut labels = BTreeMap::new();
        for (name, text) in &self.labels {
            let k = key(&format!("labels.{name}"));
            if RESERVED_LABELS.contains(&name.as_str()) || name.is_empty() {
                return Err(ConfigError::NotAllowed {
                    key: k,
                    reason: "(alertname, model, version and severity are set by modelwatch)",
                });
            }
            let t = Template::parse(&k, text)?;
            if t.uses(Placeholder::Value) {
                return Err(ConfigError::NotAllowed {
                    key: k,
                    reason: "to use {{value}} (labels identify an alert; put it in an annotation)",
                });
            }
            labels.insert(name.clone(), t);
        }
        let mut annotations = BTreeMap::new();
        for (name, text) in &self.annotations {
            let k = key(&format!("annotations.{name}"));
            annotations.insert(name.clone(), Template::parse(&k, text)?);
        }
        for (i, c) in self.channels.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(ConfigError::Missing {
                    key: key(&format!("channels[{i}]")),
                    reason: "to be a channel name, not blank",
                });
            }
        }
        Ok(Rule {
            name: self.name.clone(),
            metric_text: self.metric.clone(),
            metric,
            op,
            threshold,
            thresholds: self.thresholds.clone(),
            relative,
            min_samples: self.min_samples,
            for_ms,
            keep_firing_for_ms,
            severity: self.severity.clone(),
            labels,
            annotations,
            model: Glob::new(&self.model),
            version: Glob::new(&self.version),
            channels: self.channels.clone(),
        })
    }
}

/// Validates every `[[alerts.rules]]` entry, and that names are unique.
pub fn validate_rules(specs: &[RuleSpec]) -> Result<Vec<Rule>, ConfigError> {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rules = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        if let Some(&f) = first.get(s.name.as_str()) {
            return Err(ConfigError::DuplicateName {
                key: format!("alerts.rules[{i}].name"),
                name: s.name.clone(),
                first: f,
            });
        }
        first.insert(&s.name, i);
        rules.push(s.validate(i)?);
    }
    Ok(rules)
}

/// Checks that every channel named by `rules` (validated from `alerts.rules` in this order) is
/// configured: `known` tells whether a channel name exists.
pub fn check_channels(rules: &[Rule], known: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
    for (i, r) in rules.iter().enumerate() {
        for (j, c) in r.channels.iter().enumerate() {
            if !known(c) {
                return Err(ConfigError::UnknownChannel {
                    key: format!("alerts.rules[{i}].channels[{j}]"),
                    name: c.clone(),
                });
            }
        }
    }
    Ok(())
}

impl Rule {
    /// The rule's name (`alertname`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What it evaluates.
    pub fn metric(&self) -> &Metric {
        &self.metric
    }
    /// The metric as configured.
    pub fn metric_text(&self) -> &str {
        &self.metric_text
    }
    /// The comparison.
    pub fn op(&self) -> Op {
        self.op
    }
    /// The threshold in force for a model (its override, else the rule's).
    pub fn threshold_for(&self, model: &str) -> f64 {
        self.thresholds.get(model).copied().unwrap_or(self.threshold)
    }
    /// `Some(compare)` for a baseline-relative rule.
    pub fn relative(&self) -> Option<Compare> {
        self.relative
    }
    /// The fewest observations of an evaluated window.
    pub fn min_samples(&self) -> u64 {
        self.min_samples
    }
    /// `for` in milliseconds.
    pub fn for_ms(&self) -> i64 {
        self.for_ms
    }
    /// `keep_firing_for` in milliseconds.
    pub fn keep_firing_for_ms(&self) -> i64 {
        self.keep_firing_for_ms
    }
    /// The severity.
    pub fn severity(&self) -> &str {
        &self.severity
    }
    /// The channels notified.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
    /// Whether the rule applies to this model and version.
    pub fn applies_to(&self, model: &str, version: &str) -> bool {
        self.model.matches(model) && self.version.matches(version)
    }

    fn context<'a>(
        &'a self,
        model: &'a str,
        version: &'a str,
        baseline: &'a str,
        value: Option<f64>,
    ) -> TemplateContext<'a> {
        TemplateContext {
            rule: &self.name,
            model,
            version,
            baseline,
            value,
            threshold: Some(self.threshold_for(model)),
            severity: &self.severity,
            metric: &self.metric_text,
        }
    }

    /// The label set of the rule's alert for (model, version): `alertname`, `model`,
    /// `version`, `severity` and the rendered `labels`.
    pub fn labels(&self, model: &str, version: &str, baseline: &str) -> BTreeMap<String, String> {
        let c = self.context(model, version, baseline, None);
        let mut out: BTreeMap<String, String> =
            self.labels.iter().map(|(k, t)| (k.clone(), t.render(&c))).collect();
        out.insert("alertname".to_owned(), self.name.clone());
        out.insert("model".to_owned(), model.to_owned());
        out.insert("version".to_owned(), version.to_owned());
        out.insert("severity".to_owned(), self.severity.clone());
        out
    }

    /// The rendered annotations for an evaluated value.
    pub fn annotations(
        &self,
        model: &str,
        version: &str,
        baseline: &str,
        value: Option<f64>,
    ) -> BTreeMap<String, String> {
        let c = self.context(model, version, baseline, value);
        self.annotations.iter().map(|(k, t)| (k.clone(), t.render(&c))).collect()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(metric: &str) -> RuleSpec {
        RuleSpec {
            name: "r".into(),
            metric: metric.into(),
            op: Some(Op::Gt),
            threshold: Some(1.0),
            severity: "warning".into(),
            model: "*".into(),
            version: "*".into(),
            ..RuleSpec::default()
        }
    }

    #[test]
    fn parses_every_metric_form() {
        let r = spec("latency_p99_ms").validate(0).unwrap();
        assert_eq!(r.metric(), &Metric::Window(WindowMetric::LatencyP99));
        let r = spec("metric:gpu:util:avg").validate(0).unwrap();
        assert_eq!(
            r.metric(),
            &Metric::MetricEvent { name: "gpu:util".into(), agg: MetricAgg::Avg }
        );
        let mut s = spec("drift:psi:max");
        s.drift_reference = Some(DriftReference::Baseline);
        assert_eq!(
            s.validate(0).unwrap().metric(),
            &Metric::Drift {
                kind: DriftKind::Psi,
                feature: FeatureSel::Max,
                reference: DriftReference::Baseline
            }
        );
        let mut s = spec("absent");
        s.op = None;
        s.threshold = None;
        s.absent_for = Some(Duration::from_secs(300));
        assert_eq!(s.validate(0).unwrap().metric(), &Metric::Absent { after_ms: 300_000 });
        for bad in
            ["latency", "metric:x", "metric::avg", "metric:x:median", "drift:kl:", "drift:x:f"]
        {
            let e = spec(bad).validate(3).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { key, .. } if key == "alerts.rules[3].metric")
            );
        }
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = spec("error_rate");
        s.threshold = None;
        let e = s.validate(2).unwrap_err();
        assert_eq!(e.to_string(), "`alerts.rules[2].threshold` is required for a threshold rule");
        let mut s = spec("error_rate");
        s.threshold = Some(f64::NAN);
        assert!(s.validate(2).unwrap_err().to_string().contains("alerts.rules[2].threshold"));
        let mut s = spec("error_rate");
        s.annotations.insert("summary".into(), "{{model}} is {{colour}}".into());
        let e = s.validate(1).unwrap_err();
        assert_eq!(
            e,
            ConfigError::UnknownPlaceholder {
                key: "alerts.rules[1].annotations.summary".into(),
                name: "colour".into()
            }
        );
        assert!(e.to_string().contains("{{colour}}"), "{e}");
        let mut s = spec("error_rate");
        s.labels.insert("v".into(), "{{value}}".into());
        assert!(
            matches!(s.validate(0), Err(ConfigError::NotAllowed { key, .. }) if key == "alerts.rules[0].labels.v")
        );
        let mut s = spec("error_rate");
        s.labels.insert("model".into(), "x".into());
        assert!(s.validate(0).is_err());
        let mut s = spec("drift:kl:f");
        s.relative_to = Some(RelativeTo::Baseline);
        assert!(
            matches!(s.validate(0), Err(ConfigError::NotAllowed { key, .. }) if key == "alerts.rules[0].relative_to")
        );
        let mut s = spec("error_rate");
        s.compare = Some(Compare::Difference);
        assert!(s.validate(0).is_err());
        let mut s = spec("absent");
        s.absent_for = Some(Duration::from_secs(1));
        assert!(
            matches!(s.validate(0), Err(ConfigError::NotAllowed { key, .. }) if key == "alerts.rules[0].op")
        );
        let mut s = spec("error_rate");
        s.for_ = Duration::from_micros(1500);
        assert_eq!(
            s.validate(0),
            Err(ConfigError::Resolution { key: "alerts.rules[0].for".into() })
        );
        let e = validate_rules(&[spec("error_rate"), spec("requests")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`alerts.rules[1].name`: rule \"r\" is already defined by `alerts.rules[0]`"
        );
    }

    #[test]
    fn channels_must_be_configured() {
        let mut s = spec("requests");
        s.channels = vec!["pager".into(), "mail".into()];
        let rules = vec![spec("error_rate").validate(0).unwrap(), s.validate(1).unwrap()];
        assert_eq!(check_channels(&rules, |c| c == "pager" || c == "mail"), Ok(()));
        assert_eq!(
            check_channels(&rules, |c| c == "pager").unwrap_err().to_string(),
            "`alerts.rules[1].channels[1]` names the channel \"mail\", which is not configured \
             in `[alerts.channels]`"
        );
    }

    #[test]
    fn templates_render_every_placeholder() {
        let t = Template::parse(
            "k",
            "{{rule}}/{{ model }}/{{version}}/{{baseline}}/{{value}}/{{threshold}}/{{severity}}/{{metric}} {{",
        )
        .unwrap();
        let c = TemplateContext {
            rule: "r",
            model: "m",
            version: "v2",
            baseline: "v1",
            value: Some(0.25),
            threshold: Some(2.0),
            severity: "critical",
            metric: "error_rate",
        };
        assert_eq!(t.render(&c), "r/m/v2/v1/0.25/2/critical/error_rate {{");
    }

    #[test]
    fn thresholds_are_overridden_per_model_and_scope_is_globbed() {
        let mut s = spec("error_rate");
        s.thresholds.insert("fraud".into(), 0.5);
        s.model = "fr*".into();
        s.version = "v?".into();
        let r = s.validate(0).unwrap();
        assert_eq!(r.threshold_for("fraud"), 0.5);
        assert_eq!(r.threshold_for("frog"), 1.0);
        assert!(r.applies_to("fraud", "v1"));
        assert!(!r.applies_to("fraud", "v10"));
        assert!(!r.applies_to("ranker", "v1"));
    }

    #[test]
    fn deserializes_from_toml_like_input() {
        let s: RuleSpec = serde_json::from_str(
            r#"{"name":"slow","metric":"latency_p99_ms","op":">=","threshold":1.5,
                "relative_to":"baseline","compare":"ratio","for":"2m","keep_firing_for":"30s",
                "labels":{"team":"ml"},"channels":["pager"]}"#,
        )
        .unwrap();
        let r = s.validate(0).unwrap();
        assert_eq!(r.for_ms(), 120_000);
        assert_eq!(r.keep_firing_for_ms(), 30_000);
        assert_eq!(r.relative(), Some(Compare::Ratio));
        assert_eq!(r.op(), Op::Ge);
        assert_eq!(r.severity(), "warning");
        let minimal: RuleSpec =
            serde_json::from_str(r#"{"name":"x","metric":"requests"}"#).unwrap();
        assert_eq!(
            minimal,
            RuleSpec { name: "x".into(), metric: "requests".into(), ..RuleSpec::default() }
        );
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"name":"x","metric":"requests","colour":1}"#)
                .is_err()
        );
    }
}
