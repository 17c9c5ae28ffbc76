//! modelwatch-codec: Kafka message values to modelwatch records.
//!
//! Decoders turn the bytes of one Kafka message value into [`InferenceRecord`]s or
//! [`MetricRecord`]s of `modelwatch-core`, following the input contract (`schemas/*.avsc`):
//! Avro as a bare datum, in single-object encoding or in Confluent framing, and JSON (one object
//! or newline-delimited objects). The framing rules, the choice between the fast and the generic
//! Avro path, and the allocation behaviour are stated in [`decoder`]; the JSON rules in the docs
//! of [`Format::Json`] and below.
//!
//! Contract of every decoder:
//! - every failure is a typed [`DecodeError`]; no input panics, and nothing is allocated in
//!   proportion to a length read from the input before that length was checked against the
//!   bytes that remain;
//! - a decoded record is validated: `event_time` present; `model`, `version` (and a metric's
//!   `name`) non-empty; `latency_ms` finite and >= 0; a metric's `value` finite; `kind` is
//!   `gauge` or `counter`. A failed check names the field and where it was found (byte offset
//!   for Avro, line and column for JSON);
//! - JSON: `event_time` is epoch milliseconds (an integer, or a float truncated towards zero) or
//!   an RFC 3339 string with offset; missing optional fields are null or empty, unknown fields
//!   are ignored; a bad line of newline-delimited JSON yields its error and the other lines
//!   still decode;
//! - the fast Avro path and JSON without escaped strings allocate nothing per record once the
//!   decoder's record buffer is warm.
//!
//! [`InferenceRecord`]: modelwatch_core::event::InferenceRecord
//! [`MetricRecord`]: modelwatch_core::event::MetricRecord

mod avro;
mod check;
pub mod decoder;
mod error;
mod generic;
mod inference;
mod json;
mod json_scan;
mod metric;
#[cfg(feature = "registry")]
mod registry;
mod resolver;
mod schema;

pub use decoder::{Format, InferenceDecoder, MAX_AVRO_ALLOCATION, MetricDecoder};
pub use error::{DecodeError, Position, Problem, ResolveError};
#[cfg(feature = "registry")]
pub use registry::RegistryResolver;
pub use resolver::{DirResolver, SchemaResolver};
pub use schema::{
    INFERENCE_LOG_AVSC, METRIC_EVENT_AVSC, fingerprint, inference_log_schema, metric_event_schema,
};
