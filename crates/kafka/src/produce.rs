//! The traffic generator's producer: [`run`] writes a [`Scenario`]'s messages to Kafka.
//!
//! Contract:
//! - every message is keyed by its model name (librdkafka's default partitioner hashes the key,
//!   so one model's events stay in one partition) and carries its event time as the Kafka record
//!   timestamp;
//! - the run stops at the first bound reached: `count` messages, `duration` of event time, or
//!   `max_wall_time`; then it flushes (waiting at most `delivery_timeout`) and reports what the
//!   broker acknowledged;
//! - delivery is tracked per message through librdkafka's delivery reports; a run with any
//!   failed or unacknowledged message is an error ([`GenError::Undelivered`]) that still carries
//!   the report;
//! - the producer is a `BaseProducer` polled from the calling thread: `run` blocks, and must not
//!   be called from an async task.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    ClientConfig, ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
};
use serde::{Deserialize, Serialize};

use crate::{
    encode::{EncodeError, Encoder, Encoding, Messages, SchemaIds, TopicKind},
    scenario::ScenarioConfig,
    traffic::{Scenario, ScenarioError},
};

/// How fast messages are produced in wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Pacing {
    /// As fast as the producer accepts them (event time runs ahead of wall time).
    #[default]
    AsFastAsPossible,
    /// Real time: event time advances `speedup` times as fast as wall time, so the wall-clock
    /// request rate is `requests_per_second * speedup`.
    RealTime {
        /// Event-time seconds per wall-clock second (default 1).
        #[serde(default = "default_speedup")]
        speedup: f64,
    },
}

fn default_speedup() -> f64 {
    1.0
}

/// Compression of produced batches (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4 (built into the bundled librdkafka).
    #[default]
    Lz4,
    /// Snappy (built into the bundled librdkafka).
    Snappy,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Snappy => "snappy",
        }
    }
}

/// Which acknowledgement the producer waits for (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// All in-sync replicas (`acks=all`).
    #[default]
    All,
    /// The partition leader only (`acks=1`).
    Leader,
}

/// Options of [`run`]: where to produce, how much, how fast, how encoded, and the traffic model.
///
/// Deserializable from TOML (`scenario.toml`) or built from CLI flags; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenOptions {
    /// Kafka bootstrap servers (default `127.0.0.1:9092`).
    pub brokers: String,
    /// Topic of the inference logs (default `modelwatch.inference`).
    pub inference_topic: String,
    /// Topic of the metric events (default `modelwatch.metrics`).
    pub metric_topic: String,
    /// Encoding of the message values (default `avro`, a bare datum).
    pub encoding: Encoding,
    /// Schema ids written by the `avro-confluent` encoding.
    pub schema_ids: SchemaIds,
    /// Stop after this many messages, inference and metric together (default 10,000).
    pub count: Option<u64>,
    /// Stop when event time reaches the start plus this (e.g. `"1h"`; default none).
    #[serde(with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Stop after this much wall-clock time whatever else remains (default `"10m"`).
    #[serde(with = "humantime_serde")]
    pub max_wall_time: Duration,
    /// Wall-clock pacing (default as fast as possible).
    pub pacing: Pacing,
    /// `linger.ms`: how long a batch may wait to fill (default `"5ms"`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// `batch.size` in bytes (default 1 MiB).
    pub batch_size: u32,
    /// `compression.type` (default `lz4`).
    pub compression: Compression,
    /// `acks` (default `all`).
    pub acks: Acks,
    /// `message.timeout.ms`, and the longest wait for the final flush (default `"30s"`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Further librdkafka properties, applied last (they override the fields above).
    pub properties: BTreeMap<String, String>,
    /// The traffic model.
    pub scenario: ScenarioConfig,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            inference_topic: "modelwatch.inference".into(),
            metric_topic: "modelwatch.metrics".into(),
            encoding: Encoding::default(),
            schema_ids: SchemaIds::default(),
            count: Some(10_000),
            duration: None,
            max_wall_time: Duration::from_secs(600),
            pacing: Pacing::default(),
            linger: Duration::from_millis(5),
            batch_size: 1 << 20,
            compression: Compression::default(),
            acks: Acks::default(),
            delivery_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
            scenario: ScenarioConfig::default(),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenReport {
    /// Inference log messages handed to the producer.
    pub inference_messages: u64,
    /// Metric event messages handed to the producer.
    pub metric_messages: u64,
    /// Bytes of keys and values handed to the producer (before compression).
    pub bytes: u64,
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages whose delivery failed.
    pub failed: u64,
    /// Event time of the first message, ms since the Unix epoch.
    pub first_event_time_ms: Option<i64>,
    /// Event time of the last message.
    pub last_event_time_ms: Option<i64>,
    /// Wall-clock time from the first send to the end of the flush.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// Delivered messages per wall-clock second.
    pub messages_per_second: f64,
    /// Handed-over bytes per wall-clock second.
    pub bytes_per_second: f64,
    /// Which bound ended the run.
    pub stopped_by: StopReason,
}

impl GenReport {
    /// Messages handed to the producer.
    pub fn messages(&self) -> u64 {
        self.inference_messages + self.metric_messages
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `count` messages were produced.
    #[default]
    Count,
    /// Event time reached the end of `duration`.
    Duration,
    /// `max_wall_time` passed.
    WallTime,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The options are inconsistent (no I/O was done).
    #[error("invalid scenario")]
    Scenario(#[from] ScenarioError),
    /// Neither `count` nor `duration` bounds the run.
    #[error("the run is unbounded: set `count` or `duration`")]
    Unbounded,
    /// A pacing speed-up that is not a positive number.
    #[error("pacing speedup must be > 0, got {0}")]
    Speedup(f64),
    /// A topic name is empty.
    #[error("the {0} topic name is empty")]
    EmptyTopic(&'static str),
    /// librdkafka refused the configuration (a bad `properties` entry, say); not retryable.
    #[error("failed to create the kafka producer")]
    Create(#[source] KafkaError),
    /// An event could not be encoded (a bug).
    #[error("failed to encode a generated event")]
    Encode(#[from] EncodeError),
    /// librdkafka refused to enqueue a message for a reason other than a full queue.
    #[error("failed to enqueue a message")]
    Enqueue(#[source] KafkaError),
    /// Some messages were not acknowledged: failed, or still in flight at the flush timeout.
    /// The broker may be down or the topic missing; retrying the run duplicates what was
    /// delivered.
    #[error("{} of {} messages were not delivered", report.messages() - report.delivered, report.messages())]
    Undelivered {
        /// What was produced and acknowledged.
        report: Box<GenReport>,
        /// The first delivery error, if a report carried one (none: a flush timeout).
        #[source]
        first: Option<KafkaError>,
    },
}

/// Options checked without I/O (rule: validation is pure).
#[derive(Debug)]
struct Validated {
    scenario: Scenario,
    end_event_ms: Option<i64>,
}

impl GenOptions {
    /// Checks the options and compiles the scenario; `now_ms` is the start time when the
    /// scenario sets none.
    fn validate(&self, now_ms: i64) -> Result<Validated, GenError> {
        if self.count.is_none() && self.duration.is_none() {
            return Err(GenError::Unbounded);
        }
        if let Pacing::RealTime { speedup } = self.pacing
            && !(speedup.is_finite() && speedup > 0.0)
        {
            return Err(GenError::Speedup(speedup));
        }
        if self.inference_topic.is_empty() {
            return Err(GenError::EmptyTopic("inference"));
        }
        if self.metric_topic.is_empty() {
            return Err(GenError::EmptyTopic("metric"));
        }
        let scenario = Scenario::new(&self.scenario, now_ms)?;
        let end_event_ms = self.duration.map(|d| {
            scenario.start_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64)
        });
        Ok(Validated { scenario, end_event_ms })
    }

    /// Checks the options without I/O (what [`run`] checks before connecting); a scenario
    /// without a start time is checked as if it started now.
    pub fn check(&self) -> Result<(), GenError> {
        self.validate(0).map(drop)
    }

    /// The librdkafka configuration these options describe.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("batch.size", self.batch_size.to_string())
            .set("compression.type", self.compression.as_str())
            .set(
                "acks",
                match self.acks {
                    Acks::All => "all",
                    Acks::Leader => "1",
                },
            )
            .set("message.timeout.ms", self.delivery_timeout.as_millis().max(1).to_string());
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Counts delivery reports.
#[derive(Debug, Default)]
struct Tracker {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<KafkaError>>,
}

impl ClientContext for Tracker {}

impl ProducerContext for Tracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock()
                    && first.is_none()
                {
                    *first = Some(e.clone());
                }
            }
        }
    }
}

/// Produces the scenario's messages to Kafka; see the module docs for the contract.
pub fn run(opts: GenOptions) -> Result<GenReport, GenError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
    let v = opts.validate(now_ms)?;
    let producer: BaseProducer<Tracker> =
        opts.client_config().create_with_context(Tracker::default()).map_err(GenError::Create)?;
    let mut messages =
        Messages::new(v.scenario.events(), Encoder::new(opts.encoding, opts.schema_ids));

    let started = Instant::now();
    let deadline = started + opts.max_wall_time;
    let start_event = v.scenario.start_ms();
    let mut report = GenReport::default();
    let mut payload = Vec::with_capacity(1024);
    report.stopped_by = loop {
        if opts.count.is_some_and(|n| report.messages() >= n) {
            break StopReason::Count;
        }
        let now = Instant::now();
        if now >= deadline {
            break StopReason::WallTime;
        }
        let Some(next) = messages.next_into(&mut payload) else { break StopReason::Count };
        let (topic, key, event_ms) = next?;
        if v.end_event_ms.is_some_and(|end| event_ms >= end) {
            break StopReason::Duration;
        }
        if let Pacing::RealTime { speedup } = opts.pacing {
            let due = Duration::from_secs_f64(
                (event_ms.saturating_sub(start_event)).max(0) as f64 / 1000.0 / speedup,
            );
            let due = started + due;
            if due >= deadline {
                break StopReason::WallTime;
            }
            // Serve delivery reports while waiting.
            while Instant::now() < due {
                producer.poll(
                    due.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)),
                );
            }
        }
        let topic_name = match topic {
            TopicKind::Inference => &opts.inference_topic,
            TopicKind::Metric => &opts.metric_topic,
        };
        let mut record = BaseRecord::to(topic_name).key(key).payload(&payload).timestamp(event_ms);
        let taken = loop {
            match producer.send(record) {
                Ok(()) => break true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                // The queue stayed full until the deadline.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    break false;
                }
                Err((e, _)) => return Err(GenError::Enqueue(e)),
            }
        };
        if !taken {
            break StopReason::WallTime;
        }
        report.first_event_time_ms.get_or_insert(event_ms);
        report.last_event_time_ms = Some(event_ms);
        report.bytes += (payload.len() + key.len()) as u64;
        match topic {
            TopicKind::Inference => report.inference_messages += 1,
            TopicKind::Metric => report.metric_messages += 1,
        }
        if report.messages() % 256 == 0 {
            producer.poll(Duration::ZERO);
        }
    };
    let flushed = producer.flush(opts.delivery_timeout);
    producer.poll(Duration::ZERO);
    let ctx = producer.context();
    report.delivered = ctx.delivered.load(Ordering::Relaxed);
    report.failed = ctx.failed.load(Ordering::Relaxed);
    report.elapsed = started.elapsed();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    report.messages_per_second = report.delivered as f64 / secs;
    report.bytes_per_second = report.bytes as f64 / secs;
    if report.delivered < report.messages() {
        let first = ctx.first_error.lock().ok().and_then(|mut f| f.take()).or(flushed.err());
        return Err(GenError::Undelivered { report: Box::new(report), first });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_from_toml_with_defaults_and_reject_unknown_fields() {
        let o: GenOptions = toml::from_str(
            r#"
            brokers = "127.0.0.1:19092"
            encoding = "avro-confluent"
            count = 500
            duration = "2m"
            pacing = { mode = "real-time", speedup = 60.0 }
            [properties]
            "queue.buffering.max.messages" = "50000"
            [scenario]
            seed = 7
            start_time_ms = 1779000000000
            [[scenario.models]]
            name = "ranker"
            canary = "v2"
            features = [{ name = "x", dist = { kind = "normal", mean = 0.0, std_dev = 1.0 } }]
            [[scenario.incidents]]
            model = "ranker"
            version = "v2"
            from = "30s"
            until = 1779000090000
            effect = { kind = "tail_latency_shift", multiplier = 1.5 }
            "#,
        )
        .expect("parses");
        assert_eq!(o.encoding, Encoding::AvroConfluent);
        assert_eq!(o.duration, Some(Duration::from_secs(120)));
        assert_eq!(o.pacing, Pacing::RealTime { speedup: 60.0 });
        assert_eq!(o.linger, Duration::from_millis(5));
        assert_eq!(o.scenario.models[0].baseline, "v1");
        let v = o.validate(0).expect("valid");
        assert_eq!(v.end_event_ms, Some(1_779_000_120_000));
        assert_eq!(o.client_config().get("queue.buffering.max.messages"), Some("50000"));
        assert_eq!(o.client_config().get("compression.type"), Some("lz4"));

        assert!(toml::from_str::<GenOptions>("brokerz = \"x\"").is_err());
        assert!(toml::from_str::<GenOptions>("[scenario]\nsed = 1").is_err());
    }

    #[test]
    fn the_example_scenario_file_is_valid() {
        let o: GenOptions =
            toml::from_str(include_str!("../examples/scenario.toml")).expect("parses");
        o.check().expect("valid");
        assert_eq!(o.scenario.incidents.len(), 8);
    }

    #[test]
    fn cross_field_checks_have_named_errors() {
        let o = GenOptions { count: None, duration: None, ..GenOptions::default() };
        assert!(matches!(o.validate(0), Err(GenError::Unbounded)));
        let o = GenOptions { pacing: Pacing::RealTime { speedup: 0.0 }, ..GenOptions::default() };
        assert!(matches!(o.validate(0), Err(GenError::Speedup(_))));
        let mut o = GenOptions::default();
        o.scenario.models.clear();
        assert!(matches!(o.validate(0), Err(GenError::Scenario(ScenarioError::NoModels))));
    }
}
