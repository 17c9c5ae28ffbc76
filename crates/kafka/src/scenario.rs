//! The traffic model's configuration: models, versions, distributions and incidents.
//!
//! Everything here is plain serde data (TOML or JSON); [`crate::Scenario::new`] validates it
//! without I/O and compiles it into the generator. Units: times are event-time milliseconds since
//! the Unix epoch or humantime offsets from the scenario's start (`"90s"`, `"10m"`); rates are
//! probabilities per request in `[0, 1]`; latencies are milliseconds.
//!
//! Latencies are a two-component log-normal mixture: a body (most requests) and a slow tail
//! (`tail_share` of the requests: cache misses, GC pauses, cold replicas). A
//! [`IncidentEffect::TailLatencyShift`] multiplies only the tail component, so the p99 moves
//! while the median stays put; a [`IncidentEffect::LatencyShift`] multiplies both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default event time of the first event: 2026-05-17T06:40:00Z.
pub const DEFAULT_START_TIME_MS: i64 = 1_779_000_000_000;

/// A point in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventTime {
    /// Milliseconds since the Unix epoch (an integer in TOML).
    Millis(i64),
    /// An offset from the scenario's start time (a humantime string in TOML: `"10m"`).
    Offset(#[serde(with = "humantime_serde")] Duration),
}

impl EventTime {
    /// The absolute event time in milliseconds, for a scenario starting at `start_ms`.
    pub fn resolve(self, start_ms: i64) -> i64 {
        match self {
            Self::Millis(ms) => ms,
            Self::Offset(d) => start_ms.saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        }
    }
}

/// The whole traffic model. Same config and seed: the same events, byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenarioConfig {
    /// Seed of every random draw (default 42).
    pub seed: u64,
    /// Event time of the first event in ms since the Unix epoch. Unset: the caller's clock
    /// (`run` reads the wall clock once; [`crate::Scenario::new`] takes it as an argument).
    pub start_time_ms: Option<i64>,
    /// Inference requests per second of event time over all models, as a Poisson process
    /// (default 200).
    pub requests_per_second: f64,
    /// Values of the `region` attribute, drawn uniformly.
    pub regions: Vec<String>,
    /// Values of the `tenant` attribute, drawn uniformly.
    pub tenants: Vec<String>,
    /// Serving hosts per version (default 3): the `host` attribute is `{model}-{version}-{i}`.
    pub hosts_per_version: u32,
    /// Metric events per (model, version, host).
    pub metrics: MetricsConfig,
    /// The models served (default: a fraud classifier and an LLM chat model, each with a canary).
    pub models: Vec<ModelConfig>,
    /// Incidents: changes to one model (version) during an event-time range.
    pub incidents: Vec<Incident>,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            start_time_ms: None,
            requests_per_second: 200.0,
            regions: strings(&["eu-west-1", "us-east-1", "ap-southeast-1"]),
            tenants: strings(&["acme", "globex", "initech", "umbrella"]),
            hosts_per_version: 3,
            metrics: MetricsConfig::default(),
            models: vec![ModelConfig::fraud_detector(), ModelConfig::support_chat()],
            incidents: Vec::new(),
        }
    }
}

pub(crate) fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// Metric events: per (model, version, host), every `interval` of event time, the gauges
/// `gpu_utilization` (percent, follows the host's load), `memory_bytes` and `queue_depth`, and
/// the counter `requests_total` (requests served by that host, cumulative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether metric events are generated at all (default true).
    pub enabled: bool,
    /// Event time between two samples of a series (default `"10s"`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, interval: Duration::from_secs(10) }
    }
}

/// One served model: a baseline version and optionally a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model name, also the Kafka message key.
    pub name: String,
    /// The baseline (stable) version, `route = stable`.
    pub baseline: String,
    /// The canary version, `route = canary`; none: all traffic goes to the baseline.
    pub canary: Option<String>,
    /// Share of this model's requests served by the canary, in `[0, 1]` (default 0.1).
    pub canary_share: f64,
    /// Relative weight of this model in the total request rate (default 1).
    pub weight: f64,
    /// Latency distribution of both versions.
    pub latency: LatencyConfig,
    /// Error classes: each request fails with `status` with probability `rate`.
    pub errors: Vec<ErrorClass>,
    /// Numeric input features.
    pub features: Vec<FeatureConfig>,
    /// Categorical input features.
    pub categories: Vec<CategoryConfig>,
    /// The numeric prediction and the predicted label.
    pub prediction: PredictionConfig,
    /// Token counts and time to first token, for LLM serving; none: those fields are null.
    pub llm: Option<LlmConfig>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            baseline: "v1".into(),
            canary: None,
            canary_share: 0.1,
            weight: 1.0,
            latency: LatencyConfig::default(),
            errors: vec![
                ErrorClass { status: "error".into(), rate: 0.005 },
                ErrorClass { status: "timeout".into(), rate: 0.002 },
            ],
            features: Vec::new(),
            categories: Vec::new(),
            prediction: PredictionConfig::default(),
            llm: None,
        }
    }
}

impl ModelConfig {
    /// A fraud classifier (`fraud-detector`, v41 baseline, v42 canary at 10%).
    pub fn fraud_detector() -> Self {
        Self {
            name: "fraud-detector".into(),
            baseline: "v41".into(),
            canary: Some("v42".into()),
            canary_share: 0.1,
            weight: 3.0,
            latency: LatencyConfig::default(),
            features: vec![
                FeatureConfig {
                    name: "amount".into(),
                    dist: NumericDist::LogNormal { median: 45.0, sigma: 1.1 },
                },
                FeatureConfig {
                    name: "account_age_days".into(),
                    dist: NumericDist::Exponential { mean: 400.0 },
                },
                FeatureConfig {
                    name: "tx_last_24h".into(),
                    dist: NumericDist::Poisson { lambda: 3.0 },
                },
                FeatureConfig {
                    name: "risk_score".into(),
                    dist: NumericDist::Normal { mean: 0.0, std_dev: 1.0 },
                },
                FeatureConfig {
                    name: "hour_of_day".into(),
                    dist: NumericDist::Uniform { low: 0.0, high: 24.0 },
                },
            ],
            categories: vec![
                CategoryConfig {
                    name: "country".into(),
                    values: strings(&["US", "DE", "GB", "FR", "BR", "IN"]),
                    weights: vec![40.0, 15.0, 12.0, 10.0, 13.0, 10.0],
                },
                CategoryConfig {
                    name: "channel".into(),
                    values: strings(&["web", "ios", "android", "pos"]),
                    weights: vec![45.0, 20.0, 25.0, 10.0],
                },
            ],
            prediction: PredictionConfig::default(),
            ..Self::default()
        }
    }

    /// An LLM chat model (`support-chat`, 2024-05 baseline, 2024-06 canary at 20%).
    pub fn support_chat() -> Self {
        Self {
            name: "support-chat".into(),
            baseline: "2024-05".into(),
            canary: Some("2024-06".into()),
            canary_share: 0.2,
            weight: 1.0,
            latency: LatencyConfig {
                median_ms: 900.0,
                sigma: 0.4,
                tail_share: 0.02,
                tail_median_ms: 4000.0,
                tail_sigma: 0.4,
            },
            features: vec![FeatureConfig {
                name: "prompt_chars".into(),
                dist: NumericDist::LogNormal { median: 600.0, sigma: 0.8 },
            }],
            categories: vec![CategoryConfig {
                name: "language".into(),
                values: strings(&["en", "de", "es", "ja"]),
                weights: vec![70.0, 10.0, 12.0, 8.0],
            }],
            prediction: PredictionConfig {
                score: NumericDist::Beta { alpha: 8.0, beta: 2.0 },
                labels: strings(&["unhelpful", "helpful"]),
                label_edges: vec![0.5],
            },
            llm: Some(LlmConfig::default()),
            ..Self::default()
        }
    }
}

/// Two-component log-normal latency mixture (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Median of the body component in ms (default 20).
    pub median_ms: f64,
    /// Log-scale standard deviation of the body (default 0.35).
    pub sigma: f64,
    /// Probability that a request falls in the slow tail, in `[0, 1)` (default 0.03).
    pub tail_share: f64,
    /// Median of the tail component in ms (default 80).
    pub tail_median_ms: f64,
    /// Log-scale standard deviation of the tail (default 0.5).
    pub tail_sigma: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            median_ms: 20.0,
            sigma: 0.35,
            tail_share: 0.03,
            tail_median_ms: 80.0,
            tail_sigma: 0.5,
        }
    }
}

/// An error class and its base rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorClass {
    /// The `status` value (`error`, `timeout`, ...; never `ok`).
    pub status: String,
    /// Probability per request, in `[0, 1]`; the rates of a model sum to at most 1.
    pub rate: f64,
}

/// A numeric distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NumericDist {
    /// Gaussian.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (> 0).
        std_dev: f64,
    },
    /// Log-normal, given by its median.
    LogNormal {
        /// Median (> 0).
        median: f64,
        /// Log-scale standard deviation (> 0).
        sigma: f64,
    },
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound (> low).
        high: f64,
    },
    /// Exponential.
    Exponential {
        /// Mean (> 0).
        mean: f64,
    },
    /// Poisson counts (as floats).
    Poisson {
        /// Mean (> 0).
        lambda: f64,
    },
    /// Beta on `[0, 1]` (scores, probabilities).
    Beta {
        /// First shape parameter (> 0).
        alpha: f64,
        /// Second shape parameter (> 0).
        beta: f64,
    },
}

/// A numeric input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Feature name (key of the `features` map).
    pub name: String,
    /// Its distribution.
    pub dist: NumericDist,
}

/// A categorical input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Feature name (key of the `categories` map).
    pub name: String,
    /// The values.
    pub values: Vec<String>,
    /// Relative weights, one per value; empty: uniform.
    #[serde(default)]
    pub weights: Vec<f64>,
}

/// The model's output: a numeric score and, when `labels` is not empty, a predicted label.
///
/// The label is `labels[i]` where `i` is the number of `label_edges` at or below the score:
/// labels `[a, b]` with edges `[0.5]` give `a` below 0.5 and `b` from 0.5 on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionConfig {
    /// Distribution of the score (default Beta(2, 8), mean 0.2).
    pub score: NumericDist,
    /// Predicted labels in score order (default `["legit", "fraud"]`).
    pub labels: Vec<String>,
    /// Ascending cut points between consecutive labels (`labels.len() - 1` of them).
    pub label_edges: Vec<f64>,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            score: NumericDist::Beta { alpha: 2.0, beta: 8.0 },
            labels: strings(&["legit", "fraud"]),
            label_edges: vec![0.5],
        }
    }
}

/// LLM serving fields: log-normal token counts and time to first token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Median prompt tokens (default 350).
    pub tokens_in_median: f64,
    /// Median generated tokens (default 180).
    pub tokens_out_median: f64,
    /// Log-scale standard deviation of both token counts (default 0.6).
    pub tokens_sigma: f64,
    /// Median time to first token in ms (default 250); multiplied by latency incidents too.
    pub ttft_median_ms: f64,
    /// Log-scale standard deviation of the time to first token (default 0.3).
    pub ttft_sigma: f64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            tokens_in_median: 350.0,
            tokens_out_median: 180.0,
            tokens_sigma: 0.6,
            ttft_median_ms: 250.0,
            ttft_sigma: 0.3,
        }
    }
}

/// A change to one model, or one of its versions, during `[from, until)` of event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// The model affected.
    pub model: String,
    /// The version affected; none: every version of the model. Ignored by `traffic_split`.
    #[serde(default)]
    pub version: Option<String>,
    /// Start of the incident (inclusive).
    pub from: EventTime,
    /// End of the incident (exclusive).
    pub until: EventTime,
    /// What changes.
    pub effect: IncidentEffect,
}

/// What an incident changes. Multipliers and shifts of several overlapping incidents compose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IncidentEffect {
    /// Every latency (and time to first token) is multiplied.
    LatencyShift {
        /// Factor (> 0).
        multiplier: f64,
    },
    /// Only the slow-tail component's latencies are multiplied: the p99 moves, the median not.
    TailLatencyShift {
        /// Factor (> 0).
        multiplier: f64,
    },
    /// Requests fail with `status` with probability `rate` (before the base error classes).
    ErrorSpike {
        /// The error class (not `ok`).
        status: String,
        /// Probability per request in `[0, 1]`.
        rate: f64,
    },
    /// A numeric feature becomes `value * scale + shift`.
    FeatureDrift {
        /// The feature's name.
        feature: String,
        /// Added after scaling.
        #[serde(default)]
        shift: f64,
        /// Factor (default 1).
        #[serde(default = "one")]
        scale: f64,
    },
    /// A categorical feature's mix changes to these weights (one per value, in config order).
    CategoryDrift {
        /// The categorical feature's name.
        feature: String,
        /// The new relative weights.
        weights: Vec<f64>,
    },
    /// The prediction score becomes `score * scale + shift` (labels follow the new score).
    PredictionDrift {
        /// Added after scaling.
        #[serde(default)]
        shift: f64,
        /// Factor (default 1).
        #[serde(default = "one")]
        scale: f64,
    },
    /// The model's canary share changes.
    TrafficSplit {
        /// The canary's share of the model's requests during the incident, in `[0, 1]`.
        canary_share: f64,
    },
    /// The `requests_total` counters of the version's hosts restart from zero at `from` (a
    /// deploy or a crash); `until` only has to be later than `from`.
    CounterReset,
}

fn one() -> f64 {
    1.0
}
