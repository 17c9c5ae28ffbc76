//! The dead-letter producer: records that cannot be processed go, byte for byte, to a topic of
//! their own.
//!
//! Contract:
//! - the original key and value are produced unchanged, with the record's timestamp, and five
//!   headers say where it came from and why: `modelwatch.reason` (the error's `Display`),
//!   `modelwatch.source.topic`, `modelwatch.source.partition`, `modelwatch.source.offset` and
//!   `modelwatch.source.timestamp` (milliseconds since the epoch; empty when the record had none),
//!   numbers as decimal text;
//! - [`DeadLetterProducer::send`] enqueues without waiting for the broker; at most
//!   `max_in_flight` records wait for their delivery report, and a full queue is served by
//!   polling delivery reports (backing off) until there is room or `enqueue_timeout` passes;
//! - delivery is at-least-once: a record dead-lettered before a crash may be dead-lettered again
//!   on replay. Failed deliveries are counted ([`DeadLetterStats`]), not retried by this type;
//! - the producer is a `BaseProducer` polled from the calling thread: call it from a blocking
//!   thread, not from an async task. [`DeadLetterProducer::outstanding`] tells without waiting
//!   whether every record was acknowledged (a caller that must not checkpoint past an
//!   unacknowledged dead letter polls it instead of blocking in `flush`).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
};

use crate::source::RecordRef;

/// Header carrying the error's `Display`.
pub const HEADER_REASON: &str = "modelwatch.reason";
/// Header carrying the source topic.
pub const HEADER_SOURCE_TOPIC: &str = "modelwatch.source.topic";
/// Header carrying the source partition (decimal).
pub const HEADER_SOURCE_PARTITION: &str = "modelwatch.source.partition";
/// Header carrying the source offset (decimal).
pub const HEADER_SOURCE_OFFSET: &str = "modelwatch.source.offset";
/// Header carrying the source record's timestamp in milliseconds (decimal, empty if none).
pub const HEADER_SOURCE_TIMESTAMP: &str = "modelwatch.source.timestamp";

/// Settings of a [`DeadLetterProducer`].
#[derive(Debug, Clone)]
pub struct DeadLetterOptions {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The dead-letter topic.
    pub topic: String,
    /// Records enqueued and not yet acknowledged, at most (librdkafka's
    /// `queue.buffering.max.messages`).
    pub max_in_flight: usize,
    /// How long [`DeadLetterProducer::send`] backs off on a full queue before giving up.
    pub enqueue_timeout: Duration,
    /// How long the broker has to acknowledge a record (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Further librdkafka properties (SASL, TLS), applied last.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl DeadLetterOptions {
    /// Options with the defaults: 10,000 in flight, 30 s to enqueue, 60 s to deliver.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            max_in_flight: 10_000,
            enqueue_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(60),
            properties: std::collections::BTreeMap::new(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("queue.buffering.max.messages", self.max_in_flight.max(1).to_string())
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", self.delivery_timeout.as_millis().max(1).to_string());
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Why dead-lettering failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The topic name is empty (no I/O was done).
    #[error("the dead-letter topic name is empty")]
    EmptyTopic,
    /// librdkafka refused the configuration; not retryable.
    #[error("failed to create the dead-letter producer")]
    Create(#[source] KafkaError),
    /// The queue stayed full for `enqueue_timeout`: the broker is slow or down; retryable.
    #[error("the dead-letter queue stayed full")]
    QueueFull,
    /// librdkafka refused the record (too large, say); not retryable for this record.
    #[error("failed to enqueue a dead-letter record")]
    Enqueue(#[source] KafkaError),
    /// Records were still unacknowledged when the flush timed out; retryable.
    #[error("failed to flush the dead-letter producer")]
    Flush(#[source] KafkaError),
}

/// Delivery counts of a [`DeadLetterProducer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadLetterStats {
    /// Records enqueued.
    pub sent: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records whose delivery failed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counts {}

impl ProducerContext for Counts {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        let counter = if result.is_ok() { &self.delivered } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces unprocessable records to the dead-letter topic; see the module docs.
pub struct DeadLetterProducer {
    producer: BaseProducer<Counts>,
    topic: String,
    enqueue_timeout: Duration,
    sent: u64,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DeadLetterProducer {
    /// Creates the producer (no connection is made until the first record).
    pub fn new(opts: &DeadLetterOptions) -> Result<Self, DeadLetterError> {
        if opts.topic.trim().is_empty() {
            return Err(DeadLetterError::EmptyTopic);
        }
        let producer = opts
            .client_config()
            .create_with_context(Counts::default())
            .map_err(DeadLetterError::Create)?;
        Ok(Self {
            producer,
            topic: opts.topic.clone(),
            enqueue_timeout: opts.enqueue_timeout,
            sent: 0,
        })
    }

    /// Enqueues `record`'s original key and value with the provenance headers and `reason`
    /// (a [`RecordRef`] of a batch, or a `&Record`).
    pub fn send<'a>(
        &mut self,
        record: impl Into<RecordRef<'a>>,
        reason: &dyn std::fmt::Display,
    ) -> Result<(), DeadLetterError> {
        let record = record.into();
        let reason = reason.to_string();
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let timestamp = record.timestamp.map(|t| t.to_string()).unwrap_or_default();
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header { key: HEADER_REASON, value: Some(&reason) })
            .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(&**record.topic) })
            .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(&offset) })
            .insert(Header { key: HEADER_SOURCE_TIMESTAMP, value: Some(&timestamp) });
        let mut out: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(k) = record.key {
            out = out.key(k);
        }
        if let Some(p) = record.payload {
            out = out.payload(p);
        }
        if let Some(t) = record.timestamp {
            out = out.timestamp(t);
        }
        let deadline = Instant::now() + self.enqueue_timeout;
        loop {
            match self.producer.send(out) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if Instant::now() >= deadline {
                        return Err(DeadLetterError::QueueFull);
                    }
                    out = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(DeadLetterError::Enqueue(e)),
            }
        }
        self.sent += 1;
        // Serve delivery reports now and then without waiting.
        if self.sent.is_multiple_of(128) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Records enqueued and not yet acknowledged or failed, after serving the delivery
    /// reports that arrived (never waits).
    pub fn outstanding(&mut self) -> usize {
        self.producer.poll(Duration::ZERO);
        self.producer.in_flight_count().max(0) as usize
    }

    /// Waits until every enqueued record is acknowledged or failed, at most `timeout`.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), DeadLetterError> {
        let r = self.producer.flush(timeout);
        self.producer.poll(Duration::ZERO);
        r.map_err(DeadLetterError::Flush)
    }

    /// Delivery counts so far (reports are served by [`send`](Self::send) and
    /// [`flush`](Self::flush)).
    pub fn stats(&self) -> DeadLetterStats {
        let c = self.producer.context();
        DeadLetterStats {
            sent: self.sent,
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_topic_is_refused_without_io() {
        let o = DeadLetterOptions::new("127.0.0.1:1", "");
        assert!(matches!(DeadLetterProducer::new(&o), Err(DeadLetterError::EmptyTopic)));
        let o = DeadLetterOptions { max_in_flight: 0, ..DeadLetterOptions::new("b", "dlq") };
        assert_eq!(o.client_config().get("queue.buffering.max.messages"), Some("1"));
    }
}
