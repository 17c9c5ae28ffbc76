//! The pure traffic model: a validated [`Scenario`] and the deterministic stream of its events.
//!
//! No I/O and no clock: the start time is part of the config (or passed in by the caller), and
//! every random draw comes from one `Xoshiro256++` generator seeded with the config's `seed`, in
//! a fixed order. So the same config gives the same events, bit for bit, on every run and
//! platform.
//!
//! Stream semantics:
//! - inference requests arrive as a Poisson process of `requests_per_second` in event time; each
//!   picks a model by weight, then the canary with the (possibly incident-changed) canary share,
//!   then a host of that version uniformly;
//! - metric samples of every (model, version, host) series are emitted at `start + k * interval`
//!   (k >= 1), before the first request at or after that time, so event times never decrease;
//! - `requests_total` counts the requests the stream gave that host, cumulatively, and restarts
//!   from the requests after the reset only at a configured `counter_reset`.

use modelwatch_core::event::{InferenceRecord, MetricRecord};
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use rand_distr::{Beta, Distribution, Exp, LogNormal, Normal, Poisson, Uniform};

use crate::scenario::{IncidentEffect, NumericDist, ScenarioConfig};

/// A scenario config that does not describe a valid traffic model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// No models are configured.
    #[error("the scenario has no models")]
    NoModels,
    /// Two models share a name.
    #[error("model `{0}` is configured twice")]
    DuplicateModel(String),
    /// A model's baseline and canary are the same version.
    #[error("model `{model}`: the canary is the baseline version `{version}`")]
    CanaryIsBaseline {
        /// The model.
        model: String,
        /// The version named twice.
        version: String,
    },
    /// A name (model, version, feature, status, label) is empty or a list is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What is empty.
        what: String,
    },
    /// A numeric parameter is out of its range.
    #[error("{what} = {value} is out of range: {expected}")]
    OutOfRange {
        /// The parameter, with its model.
        what: String,
        /// The value given.
        value: f64,
        /// The valid range.
        expected: &'static str,
    },
    /// A list of weights does not match its list of values.
    #[error("{what}: {weights} weights for {values} values")]
    WeightsMismatch {
        /// The categorical feature, with its model.
        what: String,
        /// Number of weights.
        weights: usize,
        /// Number of values.
        values: usize,
    },
    /// Prediction labels and edges do not fit together.
    #[error(
        "model `{model}`: {labels} labels need {} ascending label_edges, got {edges}",
        labels.saturating_sub(1)
    )]
    LabelEdges {
        /// The model.
        model: String,
        /// Number of labels.
        labels: usize,
        /// Number of edges.
        edges: usize,
    },
    /// An incident names a model that is not configured.
    #[error("incident {incident}: unknown model `{model}`")]
    UnknownModel {
        /// Index of the incident.
        incident: usize,
        /// The model named.
        model: String,
    },
    /// An incident names a version its model does not have.
    #[error("incident {incident}: model `{model}` has no version `{version}`")]
    UnknownVersion {
        /// Index of the incident.
        incident: usize,
        /// The model.
        model: String,
        /// The version named.
        version: String,
    },
    /// An incident names a feature its model does not have.
    #[error("incident {incident}: model `{model}` has no feature `{feature}` of that type")]
    UnknownFeature {
        /// Index of the incident.
        incident: usize,
        /// The model.
        model: String,
        /// The feature named.
        feature: String,
    },
    /// An incident ends before it starts.
    #[error("incident {incident}: until ({until}) is not after from ({from})")]
    EmptyWindow {
        /// Index of the incident.
        incident: usize,
        /// Resolved start, ms.
        from: i64,
        /// Resolved end, ms.
        until: i64,
    },
    /// A traffic split incident on a model without a canary.
    #[error("incident {incident}: model `{model}` has no canary to split traffic with")]
    NoCanary {
        /// Index of the incident.
        incident: usize,
        /// The model.
        model: String,
    },
}

/// A validated, compiled traffic model. Build with [`Scenario::new`], read with
/// [`Scenario::events`].
#[derive(Debug, Clone)]
pub struct Scenario {
    seed: u64,
    start_ms: i64,
    /// Mean gap between requests in ms.
    arrival: Exp<f64>,
    rate_per_ms: f64,
    regions: Vec<String>,
    tenants: Vec<String>,
    metric_interval_ms: Option<i64>,
    models: Vec<Model>,
    /// Cumulative model weights, normalised to end at 1.
    model_cdf: Vec<f64>,
    incidents: Vec<CompiledIncident>,
}

#[derive(Debug, Clone)]
struct Model {
    name: String,
    versions: Vec<Version>,
    canary_share: f64,
    body: LogNormal<f64>,
    tail: LogNormal<f64>,
    tail_share: f64,
    errors: Vec<(String, f64)>,
    features: Vec<(String, Dist)>,
    categories: Vec<Category>,
    score: Dist,
    labels: Vec<String>,
    label_edges: Vec<f64>,
    llm: Option<Llm>,
    /// Indices into `Scenario::incidents`.
    incidents: Vec<usize>,
    /// Expected requests per host and metric interval, for the utilisation gauge.
    expected_per_host_interval: f64,
}

#[derive(Debug, Clone)]
struct Version {
    name: String,
    route: &'static str,
    hosts: Vec<String>,
}

#[derive(Debug, Clone)]
struct Category {
    name: String,
    values: Vec<String>,
    cdf: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Llm {
    tokens_in: LogNormal<f64>,
    tokens_out: LogNormal<f64>,
    ttft: LogNormal<f64>,
}

#[derive(Debug, Clone, Copy)]
enum Dist {
    Normal(Normal<f64>),
    LogNormal(LogNormal<f64>),
    Uniform(Uniform<f64>),
    Exp(Exp<f64>),
    Poisson(Poisson<f64>),
    Beta(Beta<f64>),
}

impl Dist {
    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> f64 {
        match self {
            Self::Normal(d) => d.sample(rng),
            Self::LogNormal(d) => d.sample(rng),
            Self::Uniform(d) => d.sample(rng),
            Self::Exp(d) => d.sample(rng),
            Self::Poisson(d) => d.sample(rng),
            Self::Beta(d) => d.sample(rng),
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledIncident {
    model: usize,
    /// `None`: every version.
    version: Option<usize>,
    from: i64,
    until: i64,
    effect: Effect,
}

#[derive(Debug, Clone)]
enum Effect {
    Latency(f64),
    TailLatency(f64),
    ErrorSpike { status: String, rate: f64 },
    Feature { index: usize, shift: f64, scale: f64 },
    Category { index: usize, cdf: Vec<f64> },
    Prediction { shift: f64, scale: f64 },
    Split(f64),
    CounterReset,
}

/// A range check that names the parameter.
fn check(
    what: impl FnOnce() -> String,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<(), ScenarioError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(ScenarioError::OutOfRange { what: what(), value, expected })
    }
}

fn positive(what: impl FnOnce() -> String, v: f64) -> Result<(), ScenarioError> {
    check(what, v, v > 0.0, "> 0")
}

fn probability(what: impl FnOnce() -> String, v: f64) -> Result<(), ScenarioError> {
    check(what, v, (0.0..=1.0).contains(&v), "in [0, 1]")
}

fn non_empty(what: impl FnOnce() -> String, s: &str) -> Result<(), ScenarioError> {
    if s.is_empty() { Err(ScenarioError::Empty { what: what() }) } else { Ok(()) }
}

/// A log-normal given by its median.
fn log_normal(
    what: impl Fn() -> String,
    median: f64,
    sigma: f64,
) -> Result<LogNormal<f64>, ScenarioError> {
    positive(|| format!("{} median", what()), median)?;
    positive(|| format!("{} sigma", what()), sigma)?;
    LogNormal::new(median.ln(), sigma).map_err(|_| ScenarioError::OutOfRange {
        what: what(),
        value: sigma,
        expected: "a valid log-normal",
    })
}

fn compile_dist(what: impl Fn() -> String, d: NumericDist) -> Result<Dist, ScenarioError> {
    let bad = |value: f64, expected: &'static str| ScenarioError::OutOfRange {
        what: what(),
        value,
        expected,
    };
    Ok(match d {
        NumericDist::Normal { mean, std_dev } => {
            check(&what, mean, true, "finite")?;
            positive(|| format!("{} std_dev", what()), std_dev)?;
            Dist::Normal(Normal::new(mean, std_dev).map_err(|_| bad(std_dev, "> 0"))?)
        }
        NumericDist::LogNormal { median, sigma } => {
            Dist::LogNormal(log_normal(&what, median, sigma)?)
        }
        NumericDist::Uniform { low, high } => {
            check(&what, low, true, "finite")?;
            check(|| format!("{} high", what()), high, high > low, "> low")?;
            Dist::Uniform(Uniform::new(low, high).map_err(|_| bad(high, "> low"))?)
        }
        NumericDist::Exponential { mean } => {
            positive(|| format!("{} mean", what()), mean)?;
            Dist::Exp(Exp::new(1.0 / mean).map_err(|_| bad(mean, "> 0"))?)
        }
        NumericDist::Poisson { lambda } => {
            positive(|| format!("{} lambda", what()), lambda)?;
            Dist::Poisson(Poisson::new(lambda).map_err(|_| bad(lambda, "> 0 and < 2^64"))?)
        }
        NumericDist::Beta { alpha, beta } => {
            positive(|| format!("{} alpha", what()), alpha)?;
            positive(|| format!("{} beta", what()), beta)?;
            Dist::Beta(Beta::new(alpha, beta).map_err(|_| bad(alpha, "> 0"))?)
        }
    })
}

/// Cumulative weights normalised to end at 1; empty weights: uniform.
fn cdf(
    what: impl Fn() -> String,
    weights: &[f64],
    values: usize,
) -> Result<Vec<f64>, ScenarioError> {
    if values == 0 {
        return Err(ScenarioError::Empty { what: format!("{} values", what()) });
    }
    let weights: Vec<f64> = if weights.is_empty() { vec![1.0; values] } else { weights.to_vec() };
    if weights.len() != values {
        return Err(ScenarioError::WeightsMismatch {
            what: what(),
            weights: weights.len(),
            values,
        });
    }
    for &w in &weights {
        check(|| format!("{} weight", what()), w, w >= 0.0, ">= 0")?;
    }
    let total: f64 = weights.iter().sum();
    positive(|| format!("{} total weight", what()), total)?;
    let mut acc = 0.0;
    Ok(weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect())
}

/// The index of the first cumulative weight above `u` (the last index for rounding leftovers).
fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.iter().position(|&c| u < c).unwrap_or(cdf.len().saturating_sub(1))
}

impl Scenario {
    /// Validates `config` and compiles it. `now_ms` is the start time when the config sets none
    /// (pass the wall clock, or a constant for reproducible runs).
    pub fn new(config: &ScenarioConfig, now_ms: i64) -> Result<Self, ScenarioError> {
        let start_ms = config.start_time_ms.unwrap_or(now_ms);
        positive(|| "requests_per_second".into(), config.requests_per_second)?;
        if config.models.is_empty() {
            return Err(ScenarioError::NoModels);
        }
        for (what, list) in [("regions", &config.regions), ("tenants", &config.tenants)] {
            if list.is_empty() || list.iter().any(String::is_empty) {
                return Err(ScenarioError::Empty { what: what.into() });
            }
        }
        if config.hosts_per_version == 0 {
            return Err(ScenarioError::Empty { what: "hosts_per_version".into() });
        }
        let metric_interval_ms = if config.metrics.enabled {
            let ms = config.metrics.interval.as_millis().min(i64::MAX as u128) as i64;
            if ms == 0 {
                return Err(ScenarioError::Empty { what: "metrics.interval".into() });
            }
            Some(ms)
        } else {
            None
        };
        let rate_per_ms = config.requests_per_second / 1000.0;
        let total_weight: f64 = config.models.iter().map(|m| m.weight).sum();

        let mut models = Vec::with_capacity(config.models.len());
        for m in &config.models {
            non_empty(|| "model name".into(), &m.name)?;
            if models.iter().any(|o: &Model| o.name == m.name) {
                return Err(ScenarioError::DuplicateModel(m.name.clone()));
            }
            let name = &m.name;
            non_empty(|| format!("model `{name}` baseline"), &m.baseline)?;
            check(|| format!("model `{name}` weight"), m.weight, m.weight >= 0.0, ">= 0")?;
            probability(|| format!("model `{name}` canary_share"), m.canary_share)?;
            let hosts = |v: &str| {
                (0..config.hosts_per_version).map(|i| format!("{name}-{v}-{i}")).collect()
            };
            let mut versions = vec![Version {
                name: m.baseline.clone(),
                route: "stable",
                hosts: hosts(&m.baseline),
            }];
            if let Some(c) = &m.canary {
                non_empty(|| format!("model `{name}` canary"), c)?;
                if *c == m.baseline {
                    return Err(ScenarioError::CanaryIsBaseline {
                        model: name.clone(),
                        version: c.clone(),
                    });
                }
                versions.push(Version { name: c.clone(), route: "canary", hosts: hosts(c) });
            }
            let l = &m.latency;
            let body = log_normal(|| format!("model `{name}` latency"), l.median_ms, l.sigma)?;
            let tail = log_normal(
                || format!("model `{name}` tail latency"),
                l.tail_median_ms,
                l.tail_sigma,
            )?;
            check(
                || format!("model `{name}` latency tail_share"),
                l.tail_share,
                (0.0..1.0).contains(&l.tail_share),
                "in [0, 1)",
            )?;
            let mut errors = Vec::new();
            for e in &m.errors {
                non_empty(|| format!("model `{name}` error status"), &e.status)?;
                probability(|| format!("model `{name}` error `{}` rate", e.status), e.rate)?;
                errors.push((e.status.clone(), e.rate));
            }
            let total_error: f64 = m.errors.iter().map(|e| e.rate).sum();
            probability(|| format!("model `{name}` total error rate"), total_error)?;
            let mut features = Vec::new();
            for f in &m.features {
                non_empty(|| format!("model `{name}` feature name"), &f.name)?;
                features.push((
                    f.name.clone(),
                    compile_dist(|| format!("model `{name}` feature `{}`", f.name), f.dist)?,
                ));
            }
            let mut categories = Vec::new();
            for c in &m.categories {
                non_empty(|| format!("model `{name}` category name"), &c.name)?;
                if c.values.iter().any(String::is_empty) {
                    return Err(ScenarioError::Empty {
                        what: format!("model `{name}` category `{}` value", c.name),
                    });
                }
                categories.push(Category {
                    name: c.name.clone(),
                    values: c.values.clone(),
                    cdf: cdf(
                        || format!("model `{name}` category `{}`", c.name),
                        &c.weights,
                        c.values.len(),
                    )?,
                });
            }
            let p = &m.prediction;
            let score = compile_dist(|| format!("model `{name}` prediction score"), p.score)?;
            let edges_ok = if p.labels.is_empty() {
                p.label_edges.is_empty()
            } else {
                p.label_edges.len() + 1 == p.labels.len()
                    && p.label_edges.windows(2).all(|w| w[0] < w[1])
                    && p.label_edges.iter().all(|e| e.is_finite())
            };
            if !edges_ok {
                return Err(ScenarioError::LabelEdges {
                    model: name.clone(),
                    labels: p.labels.len(),
                    edges: p.label_edges.len(),
                });
            }
            if p.labels.iter().any(String::is_empty) {
                return Err(ScenarioError::Empty { what: format!("model `{name}` label") });
            }
            let llm = match &m.llm {
                None => None,
                Some(c) => Some(Llm {
                    tokens_in: log_normal(
                        || format!("model `{name}` llm tokens_in"),
                        c.tokens_in_median,
                        c.tokens_sigma,
                    )?,
                    tokens_out: log_normal(
                        || format!("model `{name}` llm tokens_out"),
                        c.tokens_out_median,
                        c.tokens_sigma,
                    )?,
                    ttft: log_normal(
                        || format!("model `{name}` llm ttft"),
                        c.ttft_median_ms,
                        c.ttft_sigma,
                    )?,
                }),
            };
            let share = if total_weight > 0.0 { m.weight / total_weight } else { 0.0 };
            let per_version = |v: usize| if v == 0 { 1.0 - m.canary_share } else { m.canary_share };
            let expected = metric_interval_ms.unwrap_or(0) as f64 * rate_per_ms * share
                / f64::from(config.hosts_per_version)
                * per_version(versions.len() - 1).max(per_version(0));
            models.push(Model {
                name: name.clone(),
                versions,
                canary_share: if m.canary.is_some() { m.canary_share } else { 0.0 },
                body,
                tail,
                tail_share: l.tail_share,
                errors,
                features,
                categories,
                score,
                labels: p.labels.clone(),
                label_edges: p.label_edges.clone(),
                llm,
                incidents: Vec::new(),
                expected_per_host_interval: expected.max(1.0),
            });
        }
        positive(|| "total model weight".into(), total_weight)?;
        let mut acc = 0.0;
        let model_cdf = config
            .models
            .iter()
            .map(|m| {
                acc += m.weight / total_weight;
                acc
            })
            .collect();

        let mut incidents = Vec::with_capacity(config.incidents.len());
        for (i, inc) in config.incidents.iter().enumerate() {
            let Some(mi) = models.iter().position(|m| m.name == inc.model) else {
                return Err(ScenarioError::UnknownModel { incident: i, model: inc.model.clone() });
            };
            let model = &models[mi];
            let version = match &inc.version {
                None => None,
                Some(v) => {
                    Some(model.versions.iter().position(|x| x.name == *v).ok_or_else(|| {
                        ScenarioError::UnknownVersion {
                            incident: i,
                            model: inc.model.clone(),
                            version: v.clone(),
                        }
                    })?)
                }
            };
            let (from, until) = (inc.from.resolve(start_ms), inc.until.resolve(start_ms));
            if until <= from {
                return Err(ScenarioError::EmptyWindow { incident: i, from, until });
            }
            let what = || format!("incident {i}");
            let unknown_feature = |feature: &str| ScenarioError::UnknownFeature {
                incident: i,
                model: inc.model.clone(),
                feature: feature.to_owned(),
            };
            let effect = match &inc.effect {
                IncidentEffect::LatencyShift { multiplier } => {
                    positive(what, *multiplier)?;
                    Effect::Latency(*multiplier)
                }
                IncidentEffect::TailLatencyShift { multiplier } => {
                    positive(what, *multiplier)?;
                    Effect::TailLatency(*multiplier)
                }
                IncidentEffect::ErrorSpike { status, rate } => {
                    non_empty(|| format!("incident {i} status"), status)?;
                    probability(what, *rate)?;
                    Effect::ErrorSpike { status: status.clone(), rate: *rate }
                }
                IncidentEffect::FeatureDrift { feature, shift, scale } => {
                    check(what, *shift, true, "finite")?;
                    check(what, *scale, true, "finite")?;
                    let index = model
                        .features
                        .iter()
                        .position(|f| f.0 == *feature)
                        .ok_or_else(|| unknown_feature(feature))?;
                    Effect::Feature { index, shift: *shift, scale: *scale }
                }
                IncidentEffect::CategoryDrift { feature, weights } => {
                    let index = model
                        .categories
                        .iter()
                        .position(|c| c.name == *feature)
                        .ok_or_else(|| unknown_feature(feature))?;
                    let cdf = cdf(what, weights, model.categories[index].values.len())?;
                    Effect::Category { index, cdf }
                }
                IncidentEffect::PredictionDrift { shift, scale } => {
                    check(what, *shift, true, "finite")?;
                    check(what, *scale, true, "finite")?;
                    Effect::Prediction { shift: *shift, scale: *scale }
                }
                IncidentEffect::TrafficSplit { canary_share } => {
                    probability(what, *canary_share)?;
                    if model.versions.len() < 2 {
                        return Err(ScenarioError::NoCanary {
                            incident: i,
                            model: inc.model.clone(),
                        });
                    }
                    Effect::Split(*canary_share)
                }
                IncidentEffect::CounterReset => Effect::CounterReset,
            };
            models[mi].incidents.push(incidents.len());
            incidents.push(CompiledIncident { model: mi, version, from, until, effect });
        }

        Ok(Self {
            seed: config.seed,
            start_ms,
            arrival: Exp::new(rate_per_ms).map_err(|_| ScenarioError::OutOfRange {
                what: "requests_per_second".into(),
                value: config.requests_per_second,
                expected: "> 0",
            })?,
            rate_per_ms,
            regions: config.regions.clone(),
            tenants: config.tenants.clone(),
            metric_interval_ms,
            models,
            model_cdf,
            incidents,
        })
    }

    /// Event time of the first event, ms since the Unix epoch.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// The configured inference request rate, per second of event time.
    pub fn requests_per_second(&self) -> f64 {
        self.rate_per_ms * 1000.0
    }

    /// The endless, deterministic stream of events, in non-decreasing event time.
    pub fn events(&self) -> Events<'_> {
        let series = self
            .models
            .iter()
            .map(|m| m.versions.iter().map(|v| vec![HostState::default(); v.hosts.len()]).collect())
            .collect();
        Events {
            scenario: self,
            rng: Xoshiro256PlusPlus::seed_from_u64(self.seed),
            clock_ms: 0.0,
            next_tick: self.metric_interval_ms.map(|i| self.start_ms.saturating_add(i)),
            pending: None,
            metrics: std::collections::VecDeque::new(),
            series,
            resets_done: vec![false; self.incidents.len()],
        }
    }
}

/// One generated event: an inference log or a metric sample.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "events live one at a time on the stack; boxing would allocate per event"
)]
pub enum Event<'a> {
    /// An inference log (`modelwatch.v1.InferenceLog`).
    Inference(Inference<'a>),
    /// A metric sample (`modelwatch.v1.MetricEvent`).
    Metric(Metric<'a>),
}

impl Event<'_> {
    /// Event time, ms since the Unix epoch.
    pub fn event_time_ms(&self) -> i64 {
        match self {
            Self::Inference(i) => i.event_time_ms,
            Self::Metric(m) => m.event_time_ms,
        }
    }

    /// The model name (the Kafka key).
    pub fn model(&self) -> &str {
        match self {
            Self::Inference(i) => i.model,
            Self::Metric(m) => m.model,
        }
    }
}

/// A generated inference log; field names and meanings as in the input contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference<'a> {
    /// Event time, ms since the Unix epoch.
    pub event_time_ms: i64,
    /// Model name.
    pub model: &'a str,
    /// Model version.
    pub version: &'a str,
    /// 16 hex digits drawn from the seed.
    pub request_id: String,
    /// Server-side latency, ms.
    pub latency_ms: f64,
    /// `ok` or an error class.
    pub status: &'a str,
    /// The score.
    pub prediction: Option<f64>,
    /// The predicted label.
    pub predicted_label: Option<&'a str>,
    /// Numeric features in config order.
    pub features: Vec<(&'a str, f64)>,
    /// Categorical features in config order.
    pub categories: Vec<(&'a str, &'a str)>,
    /// Prompt tokens (LLM models).
    pub tokens_in: Option<i64>,
    /// Generated tokens (LLM models).
    pub tokens_out: Option<i64>,
    /// Time to first token, ms (LLM models).
    pub ttft_ms: Option<f64>,
    /// `region`, `tenant`, `route`, `host`, in that order.
    pub attributes: [(&'static str, &'a str); 4],
}

/// A generated metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric<'a> {
    /// Event time, ms since the Unix epoch.
    pub event_time_ms: i64,
    /// Model name.
    pub model: &'a str,
    /// Model version.
    pub version: &'a str,
    /// `gpu_utilization`, `memory_bytes`, `queue_depth` or `requests_total`.
    pub name: &'static str,
    /// The sampled value.
    pub value: f64,
    /// Gauge or counter.
    pub kind: modelwatch_core::event::MetricKind,
    /// `host` and `route`, in that order.
    pub attributes: [(&'static str, &'a str); 2],
}

/// Indices of a (model, version, host) series.
type Series = (usize, usize, usize);

impl Inference<'_> {
    /// Writes this event into a core record (cleared first), as a decoder of its encoding would:
    /// to feed the engine in-process, or to compare with decoded records.
    pub fn fill(&self, r: &mut InferenceRecord) {
        r.clear();
        r.event_time_ms = self.event_time_ms;
        r.set_model(self.model);
        r.set_version(self.version);
        r.set_request_id(Some(&self.request_id));
        r.latency_ms = self.latency_ms;
        r.set_status(self.status);
        r.prediction = self.prediction;
        r.set_predicted_label(self.predicted_label);
        for &(n, v) in &self.features {
            r.push_feature(n, v);
        }
        for &(n, v) in &self.categories {
            r.push_category(n, v);
        }
        r.tokens_in = self.tokens_in;
        r.tokens_out = self.tokens_out;
        r.ttft_ms = self.ttft_ms;
        for &(n, v) in &self.attributes {
            r.push_attribute(n, v);
        }
    }

    /// The value of one attribute (`region`, `tenant`, `route`, `host`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.0 == name).map(|a| a.1)
    }

    /// The value of one numeric feature.
    pub fn feature(&self, name: &str) -> Option<f64> {
        self.features.iter().find(|f| f.0 == name).map(|f| f.1)
    }

    /// The value of one categorical feature.
    pub fn category(&self, name: &str) -> Option<&str> {
        self.categories.iter().find(|c| c.0 == name).map(|c| c.1)
    }
}

impl Metric<'_> {
    /// Writes this event into a core record (cleared first).
    pub fn fill(&self, r: &mut MetricRecord) {
        r.clear();
        r.event_time_ms = self.event_time_ms;
        r.set_model(self.model);
        r.set_version(self.version);
        r.set_name(self.name);
        r.value = self.value;
        r.kind = self.kind;
        for &(n, v) in &self.attributes {
            r.push_attribute(n, v);
        }
    }

    /// The value of one attribute (`host`, `route`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.0 == name).map(|a| a.1)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct HostState {
    /// Requests since the last counter reset.
    total: u64,
    /// Requests since the last sample.
    since_tick: u64,
}

/// Effects of the incidents active for one request.
#[derive(Debug, Clone, Copy)]
struct Active<'s> {
    latency: f64,
    tail: f64,
    spike: Option<(&'s str, f64)>,
    prediction: (f64, f64),
}

/// The event stream of a [`Scenario`]; see the module docs.
#[derive(Debug)]
pub struct Events<'a> {
    scenario: &'a Scenario,
    rng: Xoshiro256PlusPlus,
    /// Event time of the last request, ms after the start (fractional).
    clock_ms: f64,
    next_tick: Option<i64>,
    /// A request drawn but held back behind metric samples that come first, with its series.
    pending: Option<(Inference<'a>, Series)>,
    metrics: std::collections::VecDeque<Metric<'a>>,
    /// Per model, version and host.
    series: Vec<Vec<Vec<HostState>>>,
    resets_done: Vec<bool>,
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        loop {
            if let Some(m) = self.metrics.pop_front() {
                return Some(Event::Metric(m));
            }
            let (req, series) = match self.pending.take() {
                Some(r) => r,
                None => self.request(),
            };
            match self.next_tick {
                Some(tick) if tick <= req.event_time_ms => {
                    self.pending = Some((req, series));
                    self.sample_metrics(tick);
                    self.next_tick = Some(
                        tick.saturating_add(self.scenario.metric_interval_ms.unwrap_or(i64::MAX)),
                    );
                }
                _ => {
                    let st = &mut self.series[series.0][series.1][series.2];
                    st.total += 1;
                    st.since_tick += 1;
                    return Some(Event::Inference(req));
                }
            }
        }
    }
}

impl<'a> Events<'a> {
    fn active(&self, model: &'a Model, version: usize, t: i64) -> Active<'a> {
        let mut a = Active { latency: 1.0, tail: 1.0, spike: None, prediction: (1.0, 0.0) };
        for &i in &model.incidents {
            let inc = &self.scenario.incidents[i];
            if t < inc.from || t >= inc.until || inc.version.is_some_and(|v| v != version) {
                continue;
            }
            match &inc.effect {
                Effect::Latency(m) => a.latency *= m,
                Effect::TailLatency(m) => a.tail *= m,
                Effect::ErrorSpike { status, rate } => a.spike = Some((status, *rate)),
                Effect::Prediction { shift, scale } => {
                    a.prediction = (a.prediction.0 * scale, a.prediction.1 * scale + shift);
                }
                Effect::Feature { .. }
                | Effect::Category { .. }
                | Effect::Split(_)
                | Effect::CounterReset => {}
            }
        }
        a
    }

    fn canary_share(&self, model: &Model, t: i64) -> f64 {
        let mut share = model.canary_share;
        for &i in &model.incidents {
            let inc = &self.scenario.incidents[i];
            if let Effect::Split(s) = inc.effect
                && t >= inc.from
                && t < inc.until
            {
                share = s;
            }
        }
        share
    }

    fn request(&mut self) -> (Inference<'a>, Series) {
        let s: &'a Scenario = self.scenario;
        self.clock_ms += s.arrival.sample(&mut self.rng);
        let t = s.start_ms.saturating_add(self.clock_ms as i64);
        let rng = &mut self.rng;
        let mi = pick(&s.model_cdf, rng.random::<f64>());
        let model: &'a Model = &s.models[mi];
        let share = self.canary_share(model, t);
        let rng = &mut self.rng;
        let canary = model.versions.len() > 1 && rng.random::<f64>() < share;
        let vi = usize::from(canary);
        let version = &model.versions[vi];
        let hi = rng.random_range(0..version.hosts.len());
        let host = &version.hosts[hi];
        let region = &s.regions[rng.random_range(0..s.regions.len())];
        let tenant = &s.tenants[rng.random_range(0..s.tenants.len())];
        let request_id = format!("{:016x}", rng.random::<u64>());
        let a = self.active(model, vi, t);
        let rng = &mut self.rng;

        let mut status = "ok";
        if let Some((spike, rate)) = a.spike
            && rng.random::<f64>() < rate
        {
            status = spike;
        } else {
            let u = rng.random::<f64>();
            let mut acc = 0.0;
            for (e, rate) in &model.errors {
                acc += rate;
                if u < acc {
                    status = e;
                    break;
                }
            }
        }
        let latency_ms = if rng.random::<f64>() < model.tail_share {
            model.tail.sample(rng) * a.tail
        } else {
            model.body.sample(rng)
        } * a.latency;

        let mut features = Vec::with_capacity(model.features.len());
        for (fi, (name, dist)) in model.features.iter().enumerate() {
            let mut x = dist.sample(rng);
            for &i in &model.incidents {
                let inc = &s.incidents[i];
                if let Effect::Feature { index, shift, scale } = inc.effect
                    && index == fi
                    && t >= inc.from
                    && t < inc.until
                    && inc.version.is_none_or(|v| v == vi)
                {
                    x = x * scale + shift;
                }
            }
            features.push((name.as_str(), x));
        }
        let mut categories = Vec::with_capacity(model.categories.len());
        for (ci, c) in model.categories.iter().enumerate() {
            let mut cdf = &c.cdf;
            for &i in &model.incidents {
                let inc = &s.incidents[i];
                if let Effect::Category { index, cdf: drifted } = &inc.effect
                    && *index == ci
                    && t >= inc.from
                    && t < inc.until
                    && inc.version.is_none_or(|v| v == vi)
                {
                    cdf = drifted;
                }
            }
            categories.push((c.name.as_str(), c.values[pick(cdf, rng.random::<f64>())].as_str()));
        }
        let score = model.score.sample(rng) * a.prediction.0 + a.prediction.1;
        let predicted_label = (!model.labels.is_empty()).then(|| {
            model.labels[model.label_edges.iter().take_while(|&&e| e <= score).count()].as_str()
        });
        let (tokens_in, tokens_out, ttft_ms) = match &model.llm {
            None => (None, None, None),
            Some(l) => (
                Some(l.tokens_in.sample(rng).round().max(1.0) as i64),
                Some(l.tokens_out.sample(rng).round().max(1.0) as i64),
                Some(l.ttft.sample(rng) * a.latency),
            ),
        };
        let req = Inference {
            event_time_ms: t,
            model: &model.name,
            version: &version.name,
            request_id,
            latency_ms,
            status,
            prediction: Some(score),
            predicted_label,
            features,
            categories,
            tokens_in,
            tokens_out,
            ttft_ms,
            attributes: [
                ("region", region),
                ("tenant", tenant),
                ("route", version.route),
                ("host", host),
            ],
        };
        (req, (mi, vi, hi))
    }

    fn sample_metrics(&mut self, tick: i64) {
        use modelwatch_core::event::MetricKind::{Counter, Gauge};
        let s: &'a Scenario = self.scenario;
        for (i, inc) in s.incidents.iter().enumerate() {
            if matches!(inc.effect, Effect::CounterReset)
                && !self.resets_done[i]
                && tick >= inc.from
            {
                self.resets_done[i] = true;
                for (vi, hosts) in self.series[inc.model].iter_mut().enumerate() {
                    if inc.version.is_none_or(|v| v == vi) {
                        for h in hosts {
                            // Only the requests since the last sample survive (approximately
                            // the ones after the reset).
                            h.total = h.since_tick;
                        }
                    }
                }
            }
        }
        for (mi, model) in s.models.iter().enumerate() {
            for (vi, version) in model.versions.iter().enumerate() {
                let a = self.active(model, vi, tick);
                for (hi, host) in version.hosts.iter().enumerate() {
                    let st = self.series[mi][vi][hi];
                    let rng = &mut self.rng;
                    let load = st.since_tick as f64 / model.expected_per_host_interval;
                    let util = (55.0 * load * a.latency.max(1.0)
                        + 5.0 * (rng.random::<f64>() - 0.5))
                        .clamp(0.0, 100.0);
                    let memory = (12u64 << 30) as f64
                        + util * 40.0 * (1u64 << 20) as f64
                        + (rng.random::<f64>() * 64.0).floor() * (1u64 << 20) as f64;
                    let queue = (load * a.latency * 2.0 + rng.random::<f64>() * 2.0).floor();
                    let attributes = [("host", host.as_str()), ("route", version.route)];
                    let metric = |name, value, kind| Metric {
                        event_time_ms: tick,
                        model: &model.name,
                        version: &version.name,
                        name,
                        value,
                        kind,
                        attributes,
                    };
                    self.metrics.push_back(metric("gpu_utilization", util, Gauge));
                    self.metrics.push_back(metric("memory_bytes", memory, Gauge));
                    self.metrics.push_back(metric("queue_depth", queue, Gauge));
                    self.metrics.push_back(metric("requests_total", st.total as f64, Counter));
                    self.series[mi][vi][hi].since_tick = 0;
                }
            }
        }
    }
}
