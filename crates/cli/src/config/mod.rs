//! The modelwatch configuration: a TOML file, `${VAR}` secrets, `MODELWATCH_*` overrides, and
//! validation into a [`Config`].
//!
//! Reading a configuration takes four steps, in this order:
//! 1. the text is parsed as TOML ([`ConfigError::Syntax`]);
//! 2. every `${VAR}` in a string value, at any depth, is replaced by the environment variable
//!    (`$${` is a literal `${`), see [`interpolate`]; keys overridden in step 3 are skipped;
//! 3. `MODELWATCH_<SECTION>_<KEY>` variables replace scalar keys of a section, literally, see
//!    [`overrides`]; `[[canary]]` entries and `[kafka.properties]` are not overridable;
//! 4. the result is deserialised into a [`ConfigFile`] (unknown keys are refused) and validated
//!    into a [`Config`] by [`ConfigFile::validate`].
//!
//! The environment is an explicit [`Environment`], so nothing here reads the process
//! environment by itself, and validation is pure: no network, no disk beyond the one file given
//! to [`Config::load`]. Every error names the key it is about ([`ConfigError`]).

mod duration;
mod env;
mod error;
mod file;
pub mod interpolate;
pub mod overrides;
pub mod reference;
mod secret;
mod validate;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use modelwatch_codec::Format;
use modelwatch_core::CoreConfig;
use url::Url;

pub use env::Environment;
pub use error::ConfigError;
pub use file::{
    AlertsSection, CanaryEntry, ClickHouseSection, ConfigFile, DriftSection, HttpSection,
    JudgeSection, KafkaSection, LatencySection, LimitsSection, OffsetReset, PipelineSection,
    SilenceEntry, WindowsSection,
};
pub use secret::Secret;
pub use validate::MIN_AUTH_TOKEN_LEN;

/// A validated configuration: every value checked, every cross-field rule holds.
///
/// Built only by [`Config::load`], [`Config::from_toml_str`] or [`ConfigFile::validate`], and
/// read-only afterwards.
#[derive(Debug, Clone)]
pub struct Config {
    kafka: KafkaConfig,
    clickhouse: ClickHouseConfig,
    core: CoreConfig,
    http: HttpConfig,
    pipeline: PipelineConfig,
    canaries: Vec<CanaryPair>,
    judge: modelwatch_judge::JudgeSpec,
    alerts: AlertsConfig,
}

/// Validated `[alerts]`: rules checked and compiled, every channel a rule names configured,
/// timings accepted by the scheduler, silences compiled.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// Notification timing.
    pub scheduler: modelwatch_alert::SchedulerSpec,
    /// Link back to modelwatch in notifications (may be empty).
    pub external_url: String,
    /// The rules, in file order.
    pub rules: Vec<modelwatch_alert::Rule>,
    /// The channels by name, checked by the delivery crate.
    pub channels: BTreeMap<String, modelwatch_notify::Validated<modelwatch_notify::ChannelConfig>>,
    /// How deliveries are retried.
    pub retry: modelwatch_notify::Validated<modelwatch_notify::RetryPolicy>,
    /// Silences of the file (ids `config-<index>`).
    pub silences: Vec<modelwatch_alert::Silence>,
}

impl AlertsConfig {
    /// Whether any rule is configured (without rules the alert worker does not run).
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// Validated `[kafka]`.
#[derive(Clone)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host[:port]`; at least one.
    pub brokers: Vec<String>,
    /// Consumer group id; not empty.
    pub group_id: String,
    /// Inference-log topics: at least one, valid Kafka names, no duplicates.
    pub inference_topics: Vec<String>,
    /// Metric-event topics: valid, no duplicates, none of them an inference topic.
    pub metric_topics: Vec<String>,
    /// Framing of message values.
    pub format: Format,
    /// Where a group without committed offsets starts.
    pub auto_offset_reset: OffsetReset,
    /// Dead-letter topic, not an input topic.
    pub dead_letter_topic: Option<String>,
    /// Schema registry, http or https.
    pub schema_registry_url: Option<Url>,
    /// Directory of `.avsc` files (not checked for existence: validation does no I/O).
    pub schema_dir: Option<PathBuf>,
    /// librdkafka properties, none of the reserved ones.
    pub properties: BTreeMap<String, String>,
}

/// Validated `[clickhouse]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClickHouseConfig {
    /// HTTP(S) interface of the server.
    pub url: Url,
    /// Database of the modelwatch tables, a plain identifier.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (may be empty).
    pub password: Secret,
}

/// Validated `[http]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Whether to serve HTTP.
    pub enabled: bool,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Bearer token of the `/api` routes, at least [`MIN_AUTH_TOKEN_LEN`] long.
    pub auth_token: Option<Secret>,
}

/// Validated `[pipeline]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// Longest time between flushes (and checkpoints), 100 ms to 1 h.
    pub flush_interval: std::time::Duration,
    /// Rows that start a flush early, at least 1.
    pub flush_rows: usize,
    /// Flushes in flight, 1 to 64.
    pub max_in_flight: usize,
}

/// A validated `[[canary]]` entry: non-empty names, `baseline != canary`, share in (0, 1).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CanaryPair {
    /// The model.
    pub model: String,
    /// The baseline version.
    pub baseline: String,
    /// The canary version.
    pub canary: String,
    /// The canary's expected share of the pair's traffic.
    pub expected_share: Option<f64>,
}

impl ConfigFile {
    /// Parses a configuration text: TOML, then `${VAR}` substitution, then `MODELWATCH_*`
    /// overrides, then deserialisation. Values are not validated yet (see [`Self::validate`]).
    pub fn parse(text: &str, env: &Environment) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = text.parse().map_err(ConfigError::Syntax)?;
        let overrides = overrides::collect(env)?;
        overrides::remove_overridden(&mut doc, &overrides);
        interpolate::interpolate_table(&mut doc, "", env)?;
        overrides::insert(&mut doc, overrides)?;
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            ConfigError::Invalid {
                key: if path == "." { "(top level)".to_owned() } else { path },
                message,
            }
        })
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml_str(&text, env)
    }

    /// Parses and validates a configuration text.
    pub fn from_toml_str(text: &str, env: &Environment) -> Result<Self, ConfigError> {
        ConfigFile::parse(text, env)?.validate()
    }

    /// `[kafka]`.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }
    /// `[clickhouse]`.
    pub fn clickhouse(&self) -> &ClickHouseConfig {
        &self.clickhouse
    }
    /// `[windows]`, `[drift]`, `[limits]` and `[latency]`, as the core's validated specs.
    pub fn core(&self) -> &CoreConfig {
        &self.core
    }
    /// `[http]`.
    pub fn http(&self) -> &HttpConfig {
        &self.http
    }
    /// `[pipeline]`.
    pub fn pipeline(&self) -> &PipelineConfig {
        &self.pipeline
    }
    /// `[[canary]]` entries, in file order.
    pub fn canaries(&self) -> &[CanaryPair] {
        &self.canaries
    }
    /// `[judge]`, validated.
    pub fn judge(&self) -> &modelwatch_judge::JudgeSpec {
        &self.judge
    }
    /// `[alerts]`.
    pub fn alerts(&self) -> &AlertsConfig {
        &self.alerts
    }
    /// The configured canary pair of a model.
    pub fn canary_of(&self, model: &str) -> Option<&CanaryPair> {
        self.canaries.iter().find(|c| c.model == model)
    }
    /// A short human summary, without secrets.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

impl fmt::Debug for KafkaConfig {
    /// Property values are left out: they carry SASL and TLS secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("inference_topics", &self.inference_topics)
            .field("metric_topics", &self.metric_topics)
            .field("format", &self.format)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("schema_registry_url", &self.schema_registry_url.as_ref().map(redacted))
            .field("schema_dir", &self.schema_dir)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A URL without its password.
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, and those have none.
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

/// The summary printed by `modelwatch check-config`; see [`Config::summary`].
#[derive(Debug)]
pub struct Summary<'a>(&'a Config);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use duration::format as d;
        let c = self.0;
        let k = &c.kafka;
        let ms = |v: i64| d(std::time::Duration::from_millis(v.unsigned_abs()));
        let none = || "none".to_owned();
        writeln!(
            f,
            "kafka: brokers {}; group {:?}; inference topics {}; metric topics {}; format {}; dead letters {}",
            k.brokers.join(","),
            k.group_id,
            list(&k.inference_topics),
            list(&k.metric_topics),
            serde_name(&k.format),
            k.dead_letter_topic.clone().unwrap_or_else(none),
        )?;
        writeln!(
            f,
            "clickhouse: {} database {:?} as {:?}",
            redacted(&c.clickhouse.url),
            c.clickhouse.database,
            c.clickhouse.user
        )?;
        let w = &c.core.windows;
        writeln!(
            f,
            "windows: {} every {} ({} panes); lateness {}; max future skew {}; idle timeout {} \
             ({} with a backlog)",
            ms(w.window_ms()),
            ms(w.slide_ms()),
            w.panes_per_window(),
            ms(w.lateness_ms()),
            ms(w.max_future_skew_ms()),
            ms(w.idle_timeout_ms()),
            ms(w.backlog_idle_timeout_ms()),
        )?;
        let dr = &c.core.drift;
        writeln!(
            f,
            "drift: edges from {} samples; reference period {}; {} bins; top {}; epsilon {}",
            dr.edge_samples(),
            ms(dr.reference_period_ms()),
            dr.bins(),
            dr.top_k(),
            dr.epsilon(),
        )?;
        let l = &c.core.limits;
        writeln!(
            f,
            "limits: {} models; {} versions per model; {} features per model; idle ttl {}",
            l.max_models(),
            l.max_versions_per_model(),
            l.max_features(),
            ms(l.idle_ttl_ms()),
        )?;
        writeln!(
            f,
            "pipeline: flush every {} or {} rows, {} flush(es) in flight",
            humantime::format_duration(c.pipeline.flush_interval),
            c.pipeline.flush_rows,
            c.pipeline.max_in_flight
        )?;
        if c.http.enabled {
            let token = if c.http.auth_token.is_some() { "set" } else { "unset" };
            writeln!(f, "http: listening on {}; auth token {token}", c.http.listen)?;
        } else {
            writeln!(f, "http: disabled")?;
        }
        let a = &c.alerts;
        if a.enabled() {
            writeln!(
                f,
                "alerts: {} rule(s), channels {}, {} silence(s); group wait {}, interval {}, \
                 repeat {}, max age {}",
                a.rules.len(),
                list(&a.channels.keys().cloned().collect::<Vec<_>>()),
                a.silences.len(),
                humantime::format_duration(a.scheduler.group_wait),
                humantime::format_duration(a.scheduler.group_interval),
                humantime::format_duration(a.scheduler.repeat_interval),
                humantime::format_duration(a.scheduler.max_notification_age),
            )?;
        } else {
            writeln!(f, "alerts: no rules")?;
        }
        if c.canaries.is_empty() {
            write!(f, "canaries: none configured (pairs come from the `route` attribute)")?;
        } else {
            write!(f, "canaries:")?;
            for p in &c.canaries {
                write!(f, "\n  {}: {} -> {}", p.model, p.baseline, p.canary)?;
                if let Some(s) = p.expected_share {
                    write!(f, " (expected share {s})")?;
                }
            }
        }
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(",") }
}

/// The configuration spelling of an enum value.
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    toml::Value::try_from(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests;
