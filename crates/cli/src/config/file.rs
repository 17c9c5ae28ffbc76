//! The configuration file as written: one struct per TOML section.
//!
//! The doc comment of every field is the user documentation of its key (the configuration
//! reference is generated from them, see `docs/configuration.md`). Every key has a named default
//! function; the keys without a usable default (`kafka.brokers`, `kafka.inference_topics`,
//! `clickhouse.url`) default to empty and are reported as required by validation. The defaults
//! of `[windows]`, `[drift]`, `[limits]` and `[latency]` are those of `modelwatch-core`.
//!
//! Nothing here is checked beyond the types: [`ConfigFile::validate`] turns a `ConfigFile` into a
//! [`Config`](super::Config).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use modelwatch_alert::{Matcher, RuleSpec, SchedulerSpec};
use modelwatch_codec::Format;
use modelwatch_core::{
    config::{DriftSpec, Limits, WindowSpec},
    latency::LatencySpec,
};
use modelwatch_judge::{DriftJudgeSpec, ErrorRateJudgeSpec, JudgeSpec, LatencyJudgeSpec};
use serde::{Deserialize, Serialize};
use toml::Table;

use super::duration;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where the input comes from: brokers, topics, format, dead letters.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// Where the results go.
    #[serde(default)]
    pub clickhouse: ClickHouseSection,
    /// Event-time windowing.
    #[serde(default)]
    pub windows: WindowsSection,
    /// Drift binning and references.
    #[serde(default)]
    pub drift: DriftSection,
    /// Caps that keep memory bounded whatever the input.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Resolution of the latency histograms.
    #[serde(default)]
    pub latency: LatencySection,
    /// The HTTP server: `/metrics`, `/healthz` and `/api`.
    #[serde(default)]
    pub http: HttpSection,
    /// Flushes to ClickHouse, checkpoints and backpressure.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// Canary pairs (`[[canary]]` entries).
    #[serde(default, rename = "canary", skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<CanaryEntry>,
    /// How canaries are judged against their baselines.
    #[serde(default)]
    pub judge: JudgeSection,
    /// Alert rules, delivery channels and notification timing.
    #[serde(default)]
    pub alerts: AlertsSection,
}

/// `[kafka]`: the consumer group that reads inference logs and metric events.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port` (the port defaults to 9092). Required.
    #[serde(default = "default_brokers")]
    pub brokers: Vec<String>,
    /// Consumer group id. Instances with the same group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics carrying `modelwatch.v1.InferenceLog` records. Required: at least one.
    #[serde(default = "default_topics")]
    pub inference_topics: Vec<String>,
    /// Topics carrying `modelwatch.v1.MetricEvent` records (GPU utilisation, queue depth, ...).
    /// A topic may not appear in both lists.
    #[serde(default = "default_topics")]
    pub metric_topics: Vec<String>,
    /// How message values are framed: `"auto"` (sniff every payload), `"avro"` (bare datum or
    /// single-object encoding), `"avro-confluent"` (Confluent framing with a schema id) or
    /// `"json"` (one object or newline-delimited objects).
    #[serde(default = "default_format")]
    pub format: Format,
    /// Where a consumer group without committed offsets starts: `"earliest"` (replay what the
    /// topics retain) or `"latest"` (only new messages).
    #[serde(default = "default_auto_offset_reset")]
    pub auto_offset_reset: OffsetReset,
    /// Topic that receives undecodable, late and badly timestamped messages, with the reason in
    /// a header. When unset, such messages are counted and dropped. Must not be an input topic.
    #[serde(default = "default_dead_letter_topic", skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// URL (http or https) of a Confluent-compatible schema registry, asked for the writer schema
    /// of Confluent-framed messages. Unset: no registry.
    #[serde(default = "default_schema_registry_url", skip_serializing_if = "Option::is_none")]
    pub schema_registry_url: Option<String>,
    /// Directory of `.avsc` writer schemas; `NAME.ID.avsc` is also registered under Confluent
    /// schema id `ID`. Relative to the working directory. Unset: only the built-in schemas.
    #[serde(default = "default_schema_dir", skip_serializing_if = "Option::is_none")]
    pub schema_dir: Option<PathBuf>,
    /// librdkafka properties passed through as they are (SASL, TLS, tuning), e.g.
    /// `"security.protocol" = "SASL_SSL"`. `bootstrap.servers`, `group.id`,
    /// `auto.offset.reset`, `enable.auto.commit` and `enable.auto.offset.store` are set by
    /// modelwatch and rejected here. Not overridable from the environment: use `${VAR}`.
    #[serde(default = "default_properties")]
    pub properties: BTreeMap<String, String>,
}

/// Where a consumer group without committed offsets starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetReset {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced after the group joined.
    Latest,
}

/// `[clickhouse]`: the database that receives panes, windows, drift scores and verdicts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    /// HTTP(S) interface of the server, e.g. `"http://localhost:8123"`. Required.
    #[serde(default = "default_clickhouse_url", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Database of the modelwatch tables (created by `modelwatch migrate`).
    #[serde(default = "default_database")]
    pub database: String,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password; prefer `"${CLICKHOUSE_PASSWORD}"` or `MODELWATCH_CLICKHOUSE_PASSWORD` to a
    /// literal.
    #[serde(default = "default_password")]
    pub password: String,
}

/// `[windows]`: sliding event-time windows built from panes of one slide each.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSection {
    /// Length of a sliding window; a whole multiple of `slide`, at most 360 slides.
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    /// How often windows advance, and the length of a pane.
    #[serde(default = "default_slide", with = "duration")]
    pub slide: Duration,
    /// How far behind the newest event time of its partition an event may arrive and still be
    /// counted; later events are dead-lettered. `"0s"` allowed.
    #[serde(default = "default_allowed_lateness", with = "duration")]
    pub allowed_lateness: Duration,
    /// How far an event's time may lead its Kafka record timestamp; beyond it the event has a bad
    /// clock and is dead-lettered, so it cannot push the watermark into the future.
    #[serde(default = "default_max_future_skew", with = "duration")]
    pub max_future_skew: Duration,
    /// Wall-clock silence after which a partition no longer holds back the watermark.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Wall-clock silence after which a partition that still has unread records in the broker
    /// (its high watermark, sampled every few seconds, is above its position) no longer holds
    /// back the watermark: its silence is a slow broker or consumer, not a quiet shipper, and
    /// closing its panes early would make its records late. At least `idle_timeout`.
    #[serde(default = "default_backlog_idle_timeout", with = "duration")]
    pub backlog_idle_timeout: Duration,
}

/// `[drift]`: frozen bins and references of the drift scores.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    /// Values of a (model, feature) sampled before its bin edges are frozen (10 to 1,000,000).
    #[serde(default = "default_edge_samples")]
    pub edge_samples: u32,
    /// The pinned reference of a version: its first `reference_period` of traffic.
    #[serde(default = "default_reference_period", with = "duration")]
    pub reference_period: Duration,
    /// Quantile bins of a numeric feature, besides the underflow and overflow bins (2 to 1,000).
    /// Up to 14 are binned on the fastest path; finer layouts take a slower general one.
    #[serde(default = "default_bins")]
    pub bins: u16,
    /// Values of a categorical feature kept before "other" (1 to 1,000). Up to 24 are looked
    /// up on the fastest path (but for values over 16 bytes); more take a slower general one.
    #[serde(default = "default_top_k")]
    pub top_k: u16,
    /// Additive smoothing of empty bins, shared by both sides of every score (above 0, at most
    /// 0.1).
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

/// `[limits]`: caps on tracked state. What is over a cap is counted and dropped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Most models tracked at once.
    #[serde(default = "default_max_models")]
    pub max_models: u32,
    /// Most versions tracked per model.
    #[serde(default = "default_max_versions_per_model")]
    pub max_versions_per_model: u32,
    /// Most features (numeric and categorical together) tracked per model.
    #[serde(default = "default_max_features")]
    pub max_features: u32,
    /// Event-time silence after which a version is evicted (after its last panes are written).
    #[serde(default = "default_idle_ttl", with = "duration")]
    pub idle_ttl: Duration,
}

/// `[latency]`: resolution of the latency histograms.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySection {
    /// Significant decimal digits of the latency histograms (1 to 5); 3 keeps every bucket within
    /// 0.1% of its values.
    #[serde(default = "default_significant_digits")]
    pub significant_digits: u8,
}

/// `[http]`: the server of `/metrics`, `/healthz` and `/api`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Whether to serve HTTP at all.
    #[serde(default = "default_http_enabled")]
    pub enabled: bool,
    /// Socket address to listen on, `ip:port`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token (`Authorization: Bearer ...`) required by every `/api` route when set, at
    /// least 16 characters; the Flagger webhooks may pass it as `metadata.token` instead.
    /// Unset: the `/api` routes (canary verdicts, Flagger hooks, silences) are open, so set one
    /// unless `listen` is private. `/metrics`, `/healthz` and `/readyz` stay open.
    #[serde(default = "default_auth_token", skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

/// `[judge]`: how the canary of every `[[canary]]` pair is judged against its baseline
/// (latency, error rate, drift, sample ratio) and when it is promoted or rolled back. Decisions
/// come from always-valid sequential tests over the data since the canary's first pane, so
/// judging it every slide does not raise the false-rollback rate above `alpha`. Verdicts are
/// rows of `canary_verdicts` and answers of `/api/v1/canaries`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeSection {
    /// Bound on the probability that a canary no worse than its baseline is ever rolled back,
    /// over its whole life however often it is judged; split equally between the critical
    /// sequential tests (Bonferroni). In (0, 1).
    pub alpha: f64,
    /// Probability of detecting an effect of the minimum size (and of promoting a healthy
    /// canary) once `samples_needed` canary requests are in. In (0, 1).
    pub power: f64,
    /// Event time from the canary's first pane before it may be promoted.
    #[serde(with = "duration")]
    pub min_duration: Duration,
    /// Requests of each version before a metric is judged; below it is `nodata`.
    pub min_samples: u64,
    /// Weighted score (0 to 100) a canary needs to be promoted.
    pub promote_score: f64,
    /// Level of the sample-ratio-mismatch test against `[[canary]] expected_share`
    /// (sequential, so it bounds the chance that a correct split is ever called mismatched).
    /// A mismatch makes the verdict `invalid` instead of judging it.
    pub srm_alpha: f64,
    /// Latency: Mann-Whitney U over the histograms and a tail test (`[judge.latency]`).
    pub latency: LatencyJudgeSpec,
    /// Error rate: two-proportion test, Fisher's exact test on small counts
    /// (`[judge.error_rate]`).
    pub error_rate: ErrorRateJudgeSpec,
    /// Feature and prediction drift of the canary against the baseline (`[judge.drift]`).
    pub drift: DriftJudgeSpec,
}

impl Default for JudgeSection {
    fn default() -> Self {
        JudgeSection::from(JudgeSpec::default())
    }
}

impl From<JudgeSpec> for JudgeSection {
    fn from(s: JudgeSpec) -> Self {
        Self {
            alpha: s.alpha,
            power: s.power,
            min_duration: Duration::from_millis(s.min_duration_ms.max(0) as u64),
            min_samples: s.min_samples,
            promote_score: s.promote_score,
            srm_alpha: s.srm_alpha,
            latency: s.latency,
            error_rate: s.error_rate,
            drift: s.drift,
        }
    }
}

impl JudgeSection {
    /// The judge's settings (not yet validated).
    pub fn to_spec(&self) -> JudgeSpec {
        JudgeSpec {
            alpha: self.alpha,
            power: self.power,
            min_duration_ms: i64::try_from(self.min_duration.as_millis()).unwrap_or(i64::MAX),
            min_samples: self.min_samples,
            promote_score: self.promote_score,
            srm_alpha: self.srm_alpha,
            latency: self.latency.clone(),
            error_rate: self.error_rate.clone(),
            drift: self.drift.clone(),
        }
    }
}

/// `[pipeline]`: how often results are flushed to ClickHouse (each flush ends with a checkpoint)
/// and how far consumption may run ahead of ClickHouse.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Longest time between two flushes, hence between two checkpoints (100ms to 1h). A restart
    /// replays about one window plus this much.
    #[serde(default = "default_flush_interval", with = "duration")]
    pub flush_interval: Duration,
    /// A flush starts early once this many rows wait (at least 1).
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// Flushes handed to ClickHouse and not yet written, at most (1 to 64); beyond, consumption
    /// pauses until ClickHouse catches up, so memory stays bounded while it is down.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

/// `[[canary]]`: a canary pair of one model. Models without an entry are paired by the `route`
/// attribute (`stable` / `canary`) of their records. Not overridable from the environment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryEntry {
    /// The model, as in the records' `model` field. At most one entry per model.
    pub model: String,
    /// The version serving most traffic, as in the records' `version` field.
    pub baseline: String,
    /// The version under test; different from `baseline`.
    pub canary: String,
    /// The canary's expected share of the pair's traffic, strictly between 0 and 1. When set, a
    /// sample-ratio-mismatch check gates every verdict. Unset: no such check.
    #[serde(default = "default_expected_share", skip_serializing_if = "Option::is_none")]
    pub expected_share: Option<f64>,
}

/// `[alerts]`: alert rules evaluated on every closed window, the channels that receive their
/// notifications, and when notifications are sent. Alerts of one rule and one model form a group
/// that is notified as one (Alertmanager's grouping). Without rules nothing is evaluated or sent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// How long a new group waits for more alerts before its first notification, so a burst of
    /// alerts becomes one notification.
    #[serde(default = "default_group_wait", with = "duration")]
    pub group_wait: Duration,
    /// How often a group may be notified of changes (new, resolved or re-firing alerts); at
    /// least 1s.
    #[serde(default = "default_group_interval", with = "duration")]
    pub group_interval: Duration,
    /// How often a group whose alerts keep firing unchanged is notified again.
    #[serde(default = "default_repeat_interval", with = "duration")]
    pub repeat_interval: Duration,
    /// Firing alerts whose latest evaluated window ended longer ago than this (wall clock) are
    /// not notified: results of catching up on old data (a replay, a backlog). They are still
    /// written to the `alerts` table. Resolutions of alerts that were notified firing are always
    /// sent.
    #[serde(default = "default_max_notification_age", with = "duration")]
    pub max_notification_age: Duration,
    /// A link back to modelwatch (or a dashboard) put in every notification (`externalURL` of
    /// the Alertmanager webhook format, `generatorURL` of its alerts). Unset: empty.
    #[serde(default = "default_external_url", skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// The rules (`[[alerts.rules]]` entries); see the table of rule keys below.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// The delivery channels by name (`[alerts.channels.NAME]` tables, each with a `type`); see
    /// the tables of channel keys below.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, Table>,
    /// How a delivery that fails is retried (`[alerts.retry]`); see the table of retry keys
    /// below. Each attempt is a row of the `alerts` table.
    #[serde(default, skip_serializing_if = "Table::is_empty")]
    pub retry: Table,
    /// Silences written in the file (`[[alerts.silences]]` entries); more can be added through
    /// the `silences` table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<SilenceEntry>,
}

/// `[[alerts.silences]]`: a silence set in the configuration file. A firing alert whose labels
/// satisfy every matcher is not notified while the silence is active; it is still written to the
/// `alerts` table, and its resolution is still sent if it was notified firing before.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceEntry {
    /// Label matchers, all of which must hold, e.g. `[{ name = "model", value = "fraud" }]`.
    /// Keys: `name`, `value`, `is_regex` (default false; true: `value` is an anchored regular
    /// expression) and `is_equal` (default true; false negates). Matchers that every alert
    /// would satisfy are refused.
    pub matchers: Vec<Matcher>,
    /// When the silence starts, RFC 3339 UTC (`"2026-11-22T12:00:00Z"`). Unset: at once.
    #[serde(default = "default_silence_starts_at", skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// When the silence ends, RFC 3339 UTC; after `starts_at`.
    pub ends_at: String,
    /// Who set the silence.
    #[serde(default = "default_silence_created_by")]
    pub created_by: String,
    /// Why.
    #[serde(default = "default_silence_comment")]
    pub comment: String,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            max_notification_age: default_max_notification_age(),
            external_url: default_external_url(),
            rules: Vec::new(),
            channels: BTreeMap::new(),
            retry: Table::new(),
            silences: Vec::new(),
        }
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            group_id: default_group_id(),
            inference_topics: default_topics(),
            metric_topics: default_topics(),
            format: default_format(),
            auto_offset_reset: default_auto_offset_reset(),
            dead_letter_topic: default_dead_letter_topic(),
            schema_registry_url: default_schema_registry_url(),
            schema_dir: default_schema_dir(),
            properties: default_properties(),
        }
    }
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            flush_interval: default_flush_interval(),
            flush_rows: default_flush_rows(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        Self {
            url: default_clickhouse_url(),
            database: default_database(),
            user: default_user(),
            password: default_password(),
        }
    }
}

impl Default for WindowsSection {
    fn default() -> Self {
        Self {
            window: default_window(),
            slide: default_slide(),
            allowed_lateness: default_allowed_lateness(),
            max_future_skew: default_max_future_skew(),
            idle_timeout: default_idle_timeout(),
            backlog_idle_timeout: default_backlog_idle_timeout(),
        }
    }
}

impl Default for DriftSection {
    fn default() -> Self {
        Self {
            edge_samples: default_edge_samples(),
            reference_period: default_reference_period(),
            bins: default_bins(),
            top_k: default_top_k(),
            epsilon: default_epsilon(),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_models: default_max_models(),
            max_versions_per_model: default_max_versions_per_model(),
            max_features: default_max_features(),
            idle_ttl: default_idle_ttl(),
        }
    }
}

impl Default for LatencySection {
    fn default() -> Self {
        Self { significant_digits: default_significant_digits() }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            enabled: default_http_enabled(),
            listen: default_listen(),
            auth_token: default_auth_token(),
        }
    }
}

// Named defaults. Required keys default to empty and are reported by validation.

fn default_brokers() -> Vec<String> {
    Vec::new()
}
fn default_group_id() -> String {
    "modelwatch".to_owned()
}
fn default_topics() -> Vec<String> {
    Vec::new()
}
fn default_format() -> Format {
    Format::Auto
}
fn default_auto_offset_reset() -> OffsetReset {
    OffsetReset::Earliest
}
fn default_dead_letter_topic() -> Option<String> {
    None
}
fn default_schema_registry_url() -> Option<String> {
    None
}
fn default_schema_dir() -> Option<PathBuf> {
    None
}
fn default_properties() -> BTreeMap<String, String> {
    BTreeMap::new()
}
fn default_clickhouse_url() -> Option<String> {
    None
}
fn default_database() -> String {
    "modelwatch".to_owned()
}
fn default_user() -> String {
    "default".to_owned()
}
fn default_password() -> String {
    String::new()
}
fn default_window() -> Duration {
    WindowSpec::DEFAULT_WINDOW
}
fn default_slide() -> Duration {
    WindowSpec::DEFAULT_SLIDE
}
fn default_allowed_lateness() -> Duration {
    WindowSpec::DEFAULT_ALLOWED_LATENESS
}
fn default_max_future_skew() -> Duration {
    WindowSpec::DEFAULT_MAX_FUTURE_SKEW
}
fn default_idle_timeout() -> Duration {
    WindowSpec::DEFAULT_IDLE_TIMEOUT
}
fn default_backlog_idle_timeout() -> Duration {
    WindowSpec::DEFAULT_BACKLOG_IDLE_TIMEOUT
}
fn default_edge_samples() -> u32 {
    DriftSpec::DEFAULT_EDGE_SAMPLES
}
fn default_reference_period() -> Duration {
    DriftSpec::DEFAULT_REFERENCE_PERIOD
}
fn default_bins() -> u16 {
    DriftSpec::DEFAULT_BINS
}
fn default_top_k() -> u16 {
    DriftSpec::DEFAULT_TOP_K
}
fn default_epsilon() -> f64 {
    DriftSpec::default().epsilon()
}
fn default_max_models() -> u32 {
    Limits::default().max_models()
}
fn default_max_versions_per_model() -> u32 {
    Limits::default().max_versions_per_model()
}
fn default_max_features() -> u32 {
    Limits::default().max_features()
}
fn default_idle_ttl() -> Duration {
    Duration::from_millis(Limits::default().idle_ttl_ms().unsigned_abs())
}
fn default_significant_digits() -> u8 {
    LatencySpec::default().significant_digits()
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_flush_rows() -> usize {
    100_000
}
fn default_max_in_flight() -> usize {
    4
}
fn default_http_enabled() -> bool {
    true
}
fn default_listen() -> String {
    "0.0.0.0:9464".to_owned()
}
fn default_auth_token() -> Option<String> {
    None
}
fn default_expected_share() -> Option<f64> {
    None
}
fn default_group_wait() -> Duration {
    SchedulerSpec::default().group_wait
}
fn default_group_interval() -> Duration {
    SchedulerSpec::default().group_interval
}
fn default_repeat_interval() -> Duration {
    SchedulerSpec::default().repeat_interval
}
fn default_max_notification_age() -> Duration {
    SchedulerSpec::default().max_notification_age
}
fn default_external_url() -> Option<String> {
    None
}
fn default_silence_starts_at() -> Option<String> {
    None
}
fn default_silence_created_by() -> String {
    "config".to_owned()
}
fn default_silence_comment() -> String {
    String::new()
}
