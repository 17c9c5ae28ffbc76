//! From the file as written to a [`Config`]: every check, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use modelwatch_codec::Format;
use modelwatch_core::{
    CoreConfig,
    config::{DriftSpec, Limits, WindowSpec},
    latency::LatencySpec,
};
use url::Url;

use super::{
    AlertsConfig, CanaryPair, ClickHouseConfig, Config, ConfigError, ConfigFile, HttpConfig,
    KafkaConfig, PipelineConfig, Secret,
    file::{
        AlertsSection, CanaryEntry, ClickHouseSection, HttpSection, KafkaSection, PipelineSection,
        SilenceEntry,
    },
};

/// The shortest accepted `http.auth_token`.
pub const MIN_AUTH_TOKEN_LEN: usize = 16;

/// librdkafka properties that modelwatch sets itself, with what to use instead.
const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `kafka.brokers`"),
    ("metadata.broker.list", "use `kafka.brokers`"),
    ("group.id", "use `kafka.group_id`"),
    ("auto.offset.reset", "use `kafka.auto_offset_reset`"),
    ("enable.auto.commit", "offsets are committed only after clickhouse acknowledged"),
    ("enable.auto.offset.store", "offsets are stored only after clickhouse acknowledged"),
];

impl ConfigFile {
    /// Checks every value and builds the validated [`Config`]. Pure: reads no file, opens no
    /// connection; the first problem found is returned.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let kafka = kafka(self.kafka)?;
        let clickhouse = clickhouse(self.clickhouse)?;
        let w = self.windows;
        let d = self.drift;
        let l = self.limits;
        let core = CoreConfig {
            windows: WindowSpec::new(
                w.window,
                w.slide,
                w.allowed_lateness,
                w.max_future_skew,
                w.idle_timeout,
            )?
            .with_backlog_idle_timeout(w.backlog_idle_timeout)?,
            drift: DriftSpec::new(d.edge_samples, d.reference_period, d.bins, d.top_k, d.epsilon)?,
            limits: Limits::new(
                l.max_models,
                l.max_versions_per_model,
                l.max_features,
                l.idle_ttl,
            )?,
            latency: LatencySpec::new(self.latency.significant_digits)?,
        };
        let http = http(self.http)?;
        let pipeline = pipeline(self.pipeline)?;
        let canaries = canaries(self.canaries)?;
        let judge = self.judge.to_spec();
        if let Err(e) = judge.validate() {
            let modelwatch_judge::JudgeSpecError::OutOfRange { field, .. } = &e;
            let field = if *field == "min_duration_ms" { "min_duration" } else { field };
            return Err(ConfigError::Invalid {
                key: format!("judge.{field}"),
                message: e.to_string(),
            });
        }
        let alerts = alerts(self.alerts)?;
        Ok(Config { kafka, clickhouse, core, http, pipeline, canaries, judge, alerts })
    }
}

fn kafka(k: KafkaSection) -> Result<KafkaConfig, ConfigError> {
    if k.brokers.is_empty() {
        return Err(ConfigError::Required { key: "kafka.brokers" });
    }
    for (i, broker) in k.brokers.iter().enumerate() {
        if !is_broker(broker) {
            return Err(ConfigError::Broker {
                key: format!("kafka.brokers[{i}]"),
                value: broker.clone(),
            });
        }
    }
    if k.group_id.trim().is_empty() {
        return Err(ConfigError::Empty { key: "kafka.group_id".to_owned() });
    }
    if k.inference_topics.is_empty() {
        return Err(ConfigError::Required { key: "kafka.inference_topics" });
    }
    topics("kafka.inference_topics", &k.inference_topics)?;
    topics("kafka.metric_topics", &k.metric_topics)?;
    if let Some(topic) = k.metric_topics.iter().find(|t| k.inference_topics.contains(t)) {
        return Err(ConfigError::TopicInBothLists { topic: topic.clone() });
    }
    if let Some(dlq) = &k.dead_letter_topic {
        topic_name("kafka.dead_letter_topic", dlq)?;
        if k.inference_topics.contains(dlq) || k.metric_topics.contains(dlq) {
            return Err(ConfigError::DeadLetterIsInput { topic: dlq.clone() });
        }
    }
    let schema_registry_url = k
        .schema_registry_url
        .as_deref()
        .map(|u| http_url("kafka.schema_registry_url", u))
        .transpose()?;
    if k.schema_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        return Err(ConfigError::Empty { key: "kafka.schema_dir".to_owned() });
    }
    if k.format == Format::AvroConfluent && schema_registry_url.is_none() && k.schema_dir.is_none()
    {
        return Err(ConfigError::ConfluentWithoutSchemas);
    }
    for property in k.properties.keys() {
        if let Some((_, instead)) = RESERVED_PROPERTIES.iter().find(|(p, _)| p == property) {
            return Err(ConfigError::ReservedProperty { property: property.clone(), instead });
        }
        if property.trim().is_empty() {
            return Err(ConfigError::Empty { key: "kafka.properties".to_owned() });
        }
    }
    Ok(KafkaConfig {
        brokers: k.brokers,
        group_id: k.group_id,
        inference_topics: k.inference_topics,
        metric_topics: k.metric_topics,
        format: k.format,
        auto_offset_reset: k.auto_offset_reset,
        dead_letter_topic: k.dead_letter_topic,
        schema_registry_url,
        schema_dir: k.schema_dir,
        properties: k.properties,
    })
}

/// `host` or `host:port`, IPv6 hosts in brackets; no blanks, no scheme.
fn is_broker(s: &str) -> bool {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '/') {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return false,
            },
            None => return false,
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    !host.is_empty() && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn topics(key: &'static str, list: &[String]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for (i, topic) in list.iter().enumerate() {
        topic_name(&format!("{key}[{i}]"), topic)?;
        if !seen.insert(topic) {
            return Err(ConfigError::DuplicateTopic { key, topic: topic.clone() });
        }
    }
    Ok(())
}

/// Kafka's own rule for topic names.
fn topic_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let legal = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if legal && (1..=249).contains(&name.len()) && name != "." && name != ".." {
        Ok(())
    } else {
        Err(ConfigError::TopicName { key: key.to_owned(), value: name.to_owned() })
    }
}

fn http_url(key: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|source| ConfigError::Url { key, source })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(ConfigError::Url { key, source: url::ParseError::EmptyHost }),
        scheme => Err(ConfigError::UrlScheme { key, scheme: scheme.to_owned() }),
    }
}

fn clickhouse(c: ClickHouseSection) -> Result<ClickHouseConfig, ConfigError> {
    let url = c.url.ok_or(ConfigError::Required { key: "clickhouse.url" })?;
    let url = http_url("clickhouse.url", &url)?;
    // The storage crate's rule (pure), so check-config and migrate agree.
    if modelwatch_clickhouse::StoreConfig::new(url.as_str())
        .with_database(&c.database)
        .validate()
        .is_err()
    {
        return Err(ConfigError::DatabaseName { value: c.database });
    }
    // The clickhouse client ignores credentials in the URL; they would also show in logs.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::UrlCredentials { key: "clickhouse.url" });
    }
    if c.user.is_empty() {
        return Err(ConfigError::Empty { key: "clickhouse.user".to_owned() });
    }
    Ok(ClickHouseConfig {
        url,
        database: c.database,
        user: c.user,
        password: Secret::new(c.password),
    })
}

fn pipeline(p: PipelineSection) -> Result<PipelineConfig, ConfigError> {
    let bad = |key: &str, message: &str| ConfigError::Invalid {
        key: format!("pipeline.{key}"),
        message: message.to_owned(),
    };
    let interval = p.flush_interval;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
        return Err(bad("flush_interval", "must be between 100ms and 1h"));
    }
    if p.flush_rows == 0 {
        return Err(bad("flush_rows", "must be at least 1"));
    }
    if !(1..=64).contains(&p.max_in_flight) {
        return Err(bad("max_in_flight", "must be between 1 and 64"));
    }
    Ok(PipelineConfig {
        flush_interval: interval,
        flush_rows: p.flush_rows,
        max_in_flight: p.max_in_flight,
    })
}

fn http(h: HttpSection) -> Result<HttpConfig, ConfigError> {
    let listen = h
        .listen
        .parse()
        .map_err(|source| ConfigError::ListenAddress { value: h.listen.clone(), source })?;
    if h.auth_token.as_ref().is_some_and(|t| t.chars().count() < MIN_AUTH_TOKEN_LEN) {
        return Err(ConfigError::AuthTokenTooShort { min: MIN_AUTH_TOKEN_LEN });
    }
    Ok(HttpConfig { enabled: h.enabled, listen, auth_token: h.auth_token.map(Secret::new) })
}

fn canaries(entries: Vec<CanaryEntry>) -> Result<Vec<CanaryPair>, ConfigError> {
    let mut first_of_model = BTreeMap::new();
    let mut pairs = Vec::with_capacity(entries.len());
    for (index, e) in entries.into_iter().enumerate() {
        for (field, value) in
            [("model", &e.model), ("baseline", &e.baseline), ("canary", &e.canary)]
        {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty { key: format!("canary[{index}].{field}") });
            }
        }
        if e.baseline == e.canary {
            return Err(ConfigError::CanarySameVersion { index, version: e.baseline });
        }
        if let Some(&first) = first_of_model.get(&e.model) {
            return Err(ConfigError::DuplicateCanary { index, first, model: e.model });
        }
        if let Some(value) = e.expected_share
            && !(value > 0.0 && value < 1.0)
        {
            return Err(ConfigError::CanaryShare { index, value });
        }
        first_of_model.insert(e.model.clone(), index);
        pairs.push(CanaryPair {
            model: e.model,
            baseline: e.baseline,
            canary: e.canary,
            expected_share: e.expected_share,
        });
    }
    Ok(pairs)
}

fn alerts(a: AlertsSection) -> Result<AlertsConfig, ConfigError> {
    let scheduler = modelwatch_alert::SchedulerSpec {
        group_wait: a.group_wait,
        group_interval: a.group_interval,
        repeat_interval: a.repeat_interval,
        max_notification_age: a.max_notification_age,
    };
    let rules = modelwatch_alert::validate_rules(&a.rules)?;
    // The scheduler's own checks of the timings (whole milliseconds, group_interval >= 1s).
    modelwatch_alert::Scheduler::new(&scheduler, &rules)?;
    for name in a.channels.keys() {
        if name.trim().is_empty() {
            return Err(ConfigError::Empty { key: "alerts.channels".to_owned() });
        }
    }
    modelwatch_alert::check_channels(&rules, |c| a.channels.contains_key(c))?;
    let external_url = match &a.external_url {
        Some(u) => http_url("alerts.external_url", u)?.to_string(),
        None => String::new(),
    };
    let channels = a
        .channels
        .into_iter()
        .map(|(name, table)| {
            let c = crate::channels::validate(&name, table)?;
            Ok((name, c))
        })
        .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
    let retry = crate::channels::retry_policy(a.retry)?;
    let silences = a
        .silences
        .into_iter()
        .enumerate()
        .map(|(i, s)| silence(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AlertsConfig { scheduler, external_url, rules, channels, retry, silences })
}

fn silence(index: usize, s: SilenceEntry) -> Result<modelwatch_alert::Silence, ConfigError> {
    let time = |field: &str, value: &str| {
        humantime::parse_rfc3339(value)
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
            .map_err(|e| ConfigError::Invalid {
                key: format!("alerts.silences[{index}].{field}"),
                message: format!(
                    "{value:?} is not an RFC 3339 UTC time such as \"2026-11-22T12:00:00Z\" ({e})"
                ),
            })
    };
    let starts = match &s.starts_at {
        Some(v) => time("starts_at", v)?,
        None => 0,
    };
    let ends = time("ends_at", &s.ends_at)?;
    modelwatch_alert::Silence::new(
        format!("config-{index}"),
        s.matchers,
        starts,
        ends,
        s.created_by,
        s.comment,
    )
    .map_err(|e| ConfigError::Invalid {
        key: format!("alerts.silences[{index}]"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        for ok in ["localhost", "localhost:9092", "10.0.0.1:9093", "[::1]:9092", "[::1]", "k-1.x"] {
            assert!(is_broker(ok), "{ok}");
        }
        for bad in ["", ":9092", "host:", "host:0", "host:99999", "a b", "PLAINTEXT://h:1", "[::1"]
        {
            assert!(!is_broker(bad), "{bad}");
        }
    }
}
