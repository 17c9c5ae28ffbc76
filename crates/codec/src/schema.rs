//! The contract's Avro schemas, embedded from `schemas/`, and their Rabin fingerprints.
//!
//! The fingerprint is the 64-bit CRC-64-AVRO (Rabin) of the schema's Parsing Canonical Form, read
//! as the little-endian `u64` of the 8 bytes that single-object encoding puts after `0xC3 0x01`.
//! Canonical form drops `doc`, `default` and `logicalType`, so a writer that declares
//! `event_time` as a plain `long` has the same fingerprint and the same binary layout.

use std::sync::{Arc, LazyLock};

use apache_avro::{Schema, rabin::Rabin};

/// The text of `schemas/inference_log.avsc` (record `modelwatch.v1.InferenceLog`).
pub const INFERENCE_LOG_AVSC: &str = include_str!("../../../schemas/inference_log.avsc");
/// The text of `schemas/metric_event.avsc` (record `modelwatch.v1.MetricEvent`).
pub const METRIC_EVENT_AVSC: &str = include_str!("../../../schemas/metric_event.avsc");

/// One of the contract's schemas, parsed, with its fingerprint.
#[derive(Debug)]
pub(crate) struct OwnSchema {
    pub(crate) schema: Arc<Schema>,
    pub(crate) fingerprint: u64,
}

fn own(text: &str) -> OwnSchema {
    // The embedded texts are constants of this crate, parsed by its unit tests.
    #[expect(clippy::expect_used, reason = "embedded constant, checked by the tests")]
    let schema = Schema::parse_str(text).expect("embedded contract schema parses");
    let fingerprint = fingerprint(&schema);
    OwnSchema { schema: Arc::new(schema), fingerprint }
}

pub(crate) static INFERENCE: LazyLock<OwnSchema> = LazyLock::new(|| own(INFERENCE_LOG_AVSC));
pub(crate) static METRIC: LazyLock<OwnSchema> = LazyLock::new(|| own(METRIC_EVENT_AVSC));

/// The contract's `modelwatch.v1.InferenceLog` schema.
pub fn inference_log_schema() -> Arc<Schema> {
    Arc::clone(&INFERENCE.schema)
}

/// The contract's `modelwatch.v1.MetricEvent` schema.
pub fn metric_event_schema() -> Arc<Schema> {
    Arc::clone(&METRIC.schema)
}

/// The Rabin fingerprint of a schema, as single-object encoding carries it (see the module docs).
pub fn fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut le = [0u8; 8];
    for (d, s) in le.iter_mut().zip(bytes) {
        *d = s;
    }
    u64::from_le_bytes(le)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_parse_and_have_distinct_fingerprints() {
        assert_eq!(
            inference_log_schema().name().map(|n| n.fullname(None)),
            Some("modelwatch.v1.InferenceLog".into())
        );
        assert_eq!(
            metric_event_schema().name().map(|n| n.fullname(None)),
            Some("modelwatch.v1.MetricEvent".into())
        );
        assert_ne!(INFERENCE.fingerprint, METRIC.fingerprint);
    }

    #[test]
    fn fingerprint_matches_the_single_object_header() {
        let s = inference_log_schema();
        let header = apache_avro::headers::HeaderBuilder::build_header(
            &apache_avro::headers::RabinFingerprintHeader::from_schema(&s),
        );
        assert_eq!(&header[..2], &[0xC3, 0x01]);
        assert_eq!(u64::from_le_bytes(header[2..10].try_into().unwrap()), fingerprint(&s));
    }
}
