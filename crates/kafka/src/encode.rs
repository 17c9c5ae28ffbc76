//! Generated events to Kafka message values, in the framings the input contract accepts.
//!
//! Avro datums are written by apache-avro's schema-aware serde serializer with the contract's
//! schemas (`modelwatch_codec::inference_log_schema`, `metric_event_schema`); maps are written
//! in the event's field order (not through a `HashMap`), so equal events give equal bytes. JSON
//! uses the contract's field names, `event_time` as epoch milliseconds, one object per message.

use std::{fmt, sync::Arc};

use apache_avro::{Schema, schema::NamesRef};
use serde::{
    Deserialize, Serialize, Serializer,
    ser::{SerializeMap, SerializeStruct},
};

use modelwatch_core::event::MetricKind;

use crate::traffic::{Event, Events, Inference, Metric};

/// How message values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// A bare Avro datum of the contract's schema.
    #[default]
    Avro,
    /// Avro in Confluent framing: `0x00`, the 4-byte big-endian schema id, the datum.
    AvroConfluent,
    /// Avro single-object encoding: `0xC3 0x01`, the 8-byte little-endian Rabin fingerprint of
    /// the contract's schema, the datum.
    AvroSingleObject,
    /// One JSON object.
    Json,
}

/// Confluent schema registry ids written by [`Encoding::AvroConfluent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaIds {
    /// Id of `modelwatch.v1.InferenceLog` (default 1).
    pub inference: u32,
    /// Id of `modelwatch.v1.MetricEvent` (default 2).
    pub metric: u32,
}

impl Default for SchemaIds {
    fn default() -> Self {
        Self { inference: 1, metric: 2 }
    }
}

/// Which input topic a message belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// The inference log topic.
    Inference,
    /// The metric event topic.
    Metric,
}

/// An event that could not be encoded (apache-avro refused it: a bug of this crate, since
/// generated events always match the contract).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Avro serialization failed.
    #[error("failed to encode an event as avro")]
    Avro(#[source] Box<apache_avro::Error>),
    /// JSON serialization failed.
    #[error("failed to encode an event as json")]
    Json(#[source] serde_json::Error),
}

/// Encodes events in one [`Encoding`].
#[derive(Clone)]
pub struct Encoder {
    encoding: Encoding,
    ids: SchemaIds,
    inference: Arc<Schema>,
    metric: Arc<Schema>,
    inference_fp: [u8; 8],
    metric_fp: [u8; 8],
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder").field("encoding", &self.encoding).field("ids", &self.ids).finish()
    }
}

impl Encoder {
    /// An encoder; `ids` matter only for [`Encoding::AvroConfluent`].
    pub fn new(encoding: Encoding, ids: SchemaIds) -> Self {
        let inference = modelwatch_codec::inference_log_schema();
        let metric = modelwatch_codec::metric_event_schema();
        let inference_fp = modelwatch_codec::fingerprint(&inference).to_le_bytes();
        let metric_fp = modelwatch_codec::fingerprint(&metric).to_le_bytes();
        Self { encoding, ids, inference, metric, inference_fp, metric_fp }
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Appends the encoded value of `event` to `out`.
    pub fn encode(&self, event: &Event<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match event {
            Event::Inference(i) => self.write(
                &InferenceOut(i),
                &self.inference,
                self.ids.inference,
                &self.inference_fp,
                out,
            ),
            Event::Metric(m) => {
                self.write(&MetricOut(m), &self.metric, self.ids.metric, &self.metric_fp, out)
            }
        }
    }

    fn write<T: Serialize>(
        &self,
        value: &T,
        schema: &Schema,
        id: u32,
        fingerprint: &[u8; 8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        match self.encoding {
            Encoding::Json => return serde_json::to_writer(out, value).map_err(EncodeError::Json),
            Encoding::Avro => {}
            Encoding::AvroConfluent => {
                out.push(0);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Encoding::AvroSingleObject => {
                out.extend_from_slice(&[0xC3, 0x01]);
                out.extend_from_slice(fingerprint);
            }
        }
        // The contract's schemas reference no named types, so no names need resolving.
        let names = NamesRef::new();
        apache_avro::write_avro_datum_ref(schema, &names, value, out)
            .map(drop)
            .map_err(|e| EncodeError::Avro(Box::new(e)))
    }
}

/// Pairs serialized as a map, in their order.
struct Pairs<'p, V>(&'p [(&'p str, V)]);

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct InferenceOut<'e, 'a>(&'e Inference<'a>);

impl Serialize for InferenceOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut r = s.serialize_struct("InferenceLog", 14)?;
        r.serialize_field("event_time", &i.event_time_ms)?;
        r.serialize_field("model", i.model)?;
        r.serialize_field("version", i.version)?;
        r.serialize_field("request_id", &Some(i.request_id.as_str()))?;
        r.serialize_field("latency_ms", &i.latency_ms)?;
        r.serialize_field("status", i.status)?;
        r.serialize_field("prediction", &i.prediction)?;
        r.serialize_field("predicted_label", &i.predicted_label)?;
        r.serialize_field("features", &Pairs(&i.features))?;
        r.serialize_field("categories", &Pairs(&i.categories))?;
        r.serialize_field("tokens_in", &i.tokens_in)?;
        r.serialize_field("tokens_out", &i.tokens_out)?;
        r.serialize_field("ttft_ms", &i.ttft_ms)?;
        r.serialize_field("attributes", &Pairs(&i.attributes))?;
        r.end()
    }
}

struct MetricOut<'e, 'a>(&'e Metric<'a>);

impl Serialize for MetricOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut r = s.serialize_struct("MetricEvent", 7)?;
        r.serialize_field("event_time", &m.event_time_ms)?;
        r.serialize_field("model", m.model)?;
        r.serialize_field("version", m.version)?;
        r.serialize_field("name", m.name)?;
        r.serialize_field("value", &m.value)?;
        let kind = match m.kind {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        };
        r.serialize_field("kind", kind)?;
        r.serialize_field("attributes", &Pairs(&m.attributes))?;
        r.end()
    }
}

/// One Kafka message: the topic kind, the key (the model name, so one model stays in one
/// partition), the encoded value and the event time (used as the record timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Inference or metric topic.
    pub topic: TopicKind,
    /// The model name.
    pub key: &'a str,
    /// The encoded value.
    pub payload: Vec<u8>,
    /// Event time, ms since the Unix epoch.
    pub event_time_ms: i64,
}

/// The endless stream of encoded messages of a scenario: [`Events`] through an [`Encoder`].
#[derive(Debug)]
pub struct Messages<'a> {
    events: Events<'a>,
    encoder: Encoder,
}

impl<'a> Messages<'a> {
    /// Encodes `events` with `encoder`.
    pub fn new(events: Events<'a>, encoder: Encoder) -> Self {
        Self { events, encoder }
    }

    /// Encodes the next event into `payload` (cleared first) without allocating a new buffer;
    /// returns its topic, key and event time. The stream is endless: `None` never comes from
    /// the generator itself.
    pub fn next_into(
        &mut self,
        payload: &mut Vec<u8>,
    ) -> Option<Result<(TopicKind, &'a str, i64), EncodeError>> {
        let event = self.events.next()?;
        payload.clear();
        let topic = match event {
            Event::Inference(_) => TopicKind::Inference,
            Event::Metric(_) => TopicKind::Metric,
        };
        let key = match &event {
            Event::Inference(i) => i.model,
            Event::Metric(m) => m.model,
        };
        Some(self.encoder.encode(&event, payload).map(|()| (topic, key, event.event_time_ms())))
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, EncodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut payload = Vec::with_capacity(256);
        Some(self.next_into(&mut payload)?.map(|(topic, key, event_time_ms)| Message {
            topic,
            key,
            payload,
            event_time_ms,
        }))
    }
}
