//! Avro decoding: framings, fast and generic paths, writer-schema evolution, typed errors, and a
//! differential property test of the fast path against apache-avro's resolution.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

mod common;

use std::sync::Arc;

use common::{Inf, Met, bare, confluent, edited_inference_schema, single_object, sorted};
use modelwatch_codec::{
    DecodeError, DirResolver, Format, InferenceDecoder, MetricDecoder, Position, Problem,
    ResolveError, fingerprint, inference_log_schema, metric_event_schema,
};
use proptest::prelude::*;

fn one(
    d: &mut InferenceDecoder,
    payload: &[u8],
) -> Result<modelwatch_core::event::InferenceRecord, DecodeError> {
    d.decode_one(payload).map(sorted)
}

#[test]
fn bare_datum_round_trips_through_the_fast_path() {
    let s = inference_log_schema();
    for i in 0..5 {
        let inf = Inf::sample(i);
        let bytes = bare(&s, inf.value());
        for format in [Format::Avro, Format::Auto] {
            let mut d = InferenceDecoder::new(format);
            assert_eq!(one(&mut d, &bytes).unwrap(), inf.record(), "{format:?}");
        }
    }
}

#[test]
fn the_sample_record_is_about_800_bytes() {
    let n = bare(&inference_log_schema(), Inf::sample(0).value()).len();
    assert!((700..900).contains(&n), "{n}");
}

#[test]
fn single_object_round_trips() {
    let s = inference_log_schema();
    let inf = Inf::sample(3);
    let bytes = single_object(&s, inf.value());
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    for format in [Format::Avro, Format::Auto] {
        let mut d = InferenceDecoder::new(format);
        assert_eq!(one(&mut d, &bytes).unwrap(), inf.record());
        d.set_fast_path(false);
        assert_eq!(one(&mut d, &bytes).unwrap(), inf.record());
    }
}

#[test]
fn confluent_round_trips_through_both_paths() {
    let s = inference_log_schema();
    let resolver = Arc::new(DirResolver::builtin().with(Some(7), (*s).clone()).unwrap());
    let mut inf = Inf::sample(1);
    inf.tokens_in = Some(812);
    inf.tokens_out = Some(256);
    inf.ttft_ms = Some(184.2);
    inf.request_id = None;
    let bytes = confluent(7, &s, inf.value());
    for format in [Format::AvroConfluent, Format::Auto] {
        let mut d = InferenceDecoder::with_resolver(format, resolver.clone());
        assert_eq!(one(&mut d, &bytes).unwrap(), inf.record());
        // Served from the decoder's plan cache the second time.
        assert_eq!(one(&mut d, &bytes).unwrap(), inf.record());
        d.set_fast_path(false);
        assert_eq!(one(&mut d, &bytes).unwrap(), inf.record());
    }
}

#[test]
fn writer_that_adds_an_optional_field_resolves() {
    let writer = edited_inference_schema(|f| {
        f.insert(
            4,
            serde_json::json!({"name": "gpu", "type": ["null", "string"], "default": null}),
        );
    });
    assert_ne!(fingerprint(&writer), fingerprint(&inference_log_schema()));
    let inf = Inf::sample(2);
    let mut v = inf.value();
    if let apache_avro::types::Value::Record(fields) = &mut v {
        fields.insert(
            4,
            (
                "gpu".into(),
                apache_avro::types::Value::Union(
                    1,
                    Box::new(apache_avro::types::Value::String("a100".into())),
                ),
            ),
        );
    }
    let resolver = Arc::new(DirResolver::builtin().with(Some(8), writer.clone()).unwrap());
    let mut d = InferenceDecoder::with_resolver(Format::Auto, resolver);
    assert_eq!(one(&mut d, &confluent(8, &writer, v.clone())).unwrap(), inf.record());
    // Single-object with the evolved writer's fingerprint goes through the same resolution.
    assert_eq!(one(&mut d, &single_object(&writer, v)).unwrap(), inf.record());
}

#[test]
fn writer_that_drops_optional_fields_resolves_to_defaults() {
    const DROPPED: [&str; 8] = [
        "request_id",
        "prediction",
        "predicted_label",
        "categories",
        "tokens_in",
        "tokens_out",
        "ttft_ms",
        "attributes",
    ];
    let writer =
        edited_inference_schema(|f| f.retain(|x| !DROPPED.contains(&x["name"].as_str().unwrap())));
    let inf = Inf::sample(4);
    let mut v = inf.value();
    if let apache_avro::types::Value::Record(fields) = &mut v {
        fields.retain(|(n, _)| !DROPPED.contains(&n.as_str()));
    }
    let resolver = Arc::new(DirResolver::builtin().with(Some(9), writer.clone()).unwrap());
    let mut d = InferenceDecoder::with_resolver(Format::AvroConfluent, resolver);
    let got = one(&mut d, &confluent(9, &writer, v)).unwrap();
    let expected = Inf {
        request_id: None,
        prediction: None,
        predicted_label: None,
        categories: Default::default(),
        attributes: Default::default(),
        ..inf
    };
    assert_eq!(got, expected.record());
}

#[test]
fn reordered_writer_resolves() {
    let writer = edited_inference_schema(|f| f.reverse());
    let inf = Inf::sample(5);
    let mut v = inf.value();
    if let apache_avro::types::Value::Record(fields) = &mut v {
        fields.reverse();
    }
    let resolver = Arc::new(DirResolver::builtin().with(Some(10), writer.clone()).unwrap());
    let mut d = InferenceDecoder::with_resolver(Format::AvroConfluent, resolver);
    assert_eq!(one(&mut d, &confluent(10, &writer, v)).unwrap(), inf.record());
}

#[test]
fn incompatible_writer_is_a_typed_error() {
    let writer =
        edited_inference_schema(|f| f[1] = serde_json::json!({"name": "model", "type": "int"}));
    let resolver = Arc::new(DirResolver::builtin().with(Some(11), writer).unwrap());
    let mut d = InferenceDecoder::with_resolver(Format::AvroConfluent, resolver);
    let err = d.decode_one(&[0, 0, 0, 0, 11, 2, 2]).unwrap_err();
    assert!(matches!(err, DecodeError::IncompatibleSchema { .. }), "{err:?}");
}

#[test]
fn unknown_id_and_fingerprint_are_typed_errors() {
    let s = inference_log_schema();
    let mut d = InferenceDecoder::new(Format::Auto);
    let err = d.decode_one(&confluent(99, &s, Inf::sample(0).value())).unwrap_err();
    assert!(matches!(err, DecodeError::Resolve(ResolveError::UnknownId(99))), "{err:?}");
    let mut so = single_object(&s, Inf::sample(0).value());
    so[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let err = d.decode_one(&so).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Resolve(ResolveError::UnknownFingerprint(0x0123_4567_89ab_cdef))
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "cannot resolve the writer schema");
}

#[test]
fn framing_errors_are_typed() {
    let mut d = InferenceDecoder::new(Format::AvroConfluent);
    assert!(matches!(d.decode_one(&[]), Err(DecodeError::Empty)));
    assert!(matches!(d.decode_one(&[1, 2]), Err(DecodeError::BadMagic { found: 1, .. })));
    assert!(matches!(d.decode_one(&[0, 0, 0]), Err(DecodeError::TruncatedHeader { .. })));
    let mut d = InferenceDecoder::new(Format::Avro);
    assert!(matches!(d.decode_one(&[0xC3, 0x01, 5]), Err(DecodeError::TruncatedHeader { .. })));
}

#[test]
fn validation_names_the_field_and_the_byte_offset() {
    let s = inference_log_schema();
    let mut inf = Inf::sample(0);
    inf.model = String::new();
    let mut d = InferenceDecoder::new(Format::Avro);
    let err = d.decode_one(&bare(&s, inf.value())).unwrap_err();
    // event_time takes 6 bytes, so the model's length is at byte 6.
    assert!(
        matches!(
            err,
            DecodeError::Field { field: "model", problem: Problem::Empty, at: Position::Byte(6) }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "invalid `model` at byte 6: empty");

    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let mut inf = Inf::sample(0);
        inf.latency_ms = bad;
        for fast in [true, false] {
            d.set_fast_path(fast);
            let err = d.decode_one(&bare(&s, inf.value())).unwrap_err();
            assert_eq!(err.field_name(), Some("latency_ms"), "{err:?}");
        }
    }
    d.set_fast_path(true);

    let mut bytes = bare(&s, Inf::sample(0).value());
    bytes.push(0);
    assert!(matches!(d.decode_one(&bytes), Err(DecodeError::TrailingBytes { remaining: 1, .. })));
    bytes.truncate(bytes.len() - 30);
    let err = d.decode_one(&bytes).unwrap_err();
    assert_eq!(err.field_name(), Some("attributes"), "{err:?}");
}

/// Replaces the first occurrence of `from` in `bytes` by `to` (same length).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
    at
}

#[test]
fn invalid_utf8_names_the_field_and_the_byte_offset() {
    let s = inference_log_schema();
    let mut d = InferenceDecoder::new(Format::Avro);
    let invalid = |field, at| DecodeError::Field { field, problem: Problem::InvalidUtf8, at };
    let same = |a: &DecodeError, b: &DecodeError| a.to_string() == b.to_string();

    // One string with a byte that is never UTF-8.
    let mut inf = Inf::sample(0);
    inf.model = "m#Q".into();
    let mut bytes = bare(&s, inf.value());
    let at = patch(&mut bytes, b"m#Q", b"m#\xff");
    let err = d.decode_one(&bytes).unwrap_err();
    assert!(same(&err, &invalid("model", Position::Byte(at))), "{err:?}");

    // A character split over two strings: the record's text is valid, the strings are not.
    let mut inf = Inf::sample(0);
    inf.model = "m#".into();
    inf.version = "Q".into();
    let mut bytes = bare(&s, inf.value());
    let at = patch(&mut bytes, b"m#", &[b'm', 0xC3]);
    patch(&mut bytes, &[2, b'Q'], &[2, 0xA9]);
    let err = d.decode_one(&bytes).unwrap_err();
    assert!(same(&err, &invalid("model", Position::Byte(at))), "{err:?}");

    // The same in the last map; the first error of the datum wins.
    let mut inf = Inf::sample(0);
    inf.attributes = [("zone#".to_string(), "Q".to_string())].into();
    let mut bytes = bare(&s, inf.value());
    let at = patch(&mut bytes, b"zone#", &[b'z', b'o', b'n', b'e', 0xC3]);
    patch(&mut bytes, &[2, b'Q'], &[2, 0xA9]);
    let err = d.decode_one(&bytes).unwrap_err();
    assert!(same(&err, &invalid("attributes", Position::Byte(at))), "{err:?}");
    inf.model = "m#Q".into();
    inf.latency_ms = -1.0;
    let mut bytes = bare(&s, inf.value());
    let at = patch(&mut bytes, b"m#Q", b"m#\xff");
    let err = d.decode_one(&bytes).unwrap_err();
    assert!(same(&err, &invalid("model", Position::Byte(at))), "{err:?}");

    // The decoder's record is whole again for the next datum.
    let inf = Inf::sample(1);
    assert_eq!(one(&mut d, &bare(&s, inf.value())).unwrap(), inf.record());
}

#[test]
fn metric_events_round_trip_and_validate_kind() {
    let s = metric_event_schema();
    let mut d = MetricDecoder::new(Format::Auto);
    for (i, kind) in ["gauge", "counter"].into_iter().enumerate() {
        let mut m = Met::sample(i as i64);
        m.kind = kind.into();
        assert_eq!(d.decode_one(&bare(&s, m.value())).unwrap(), &m.record());
        assert_eq!(d.decode_one(&single_object(&s, m.value())).unwrap(), &m.record());
        d.set_fast_path(false);
        assert_eq!(d.decode_one(&bare(&s, m.value())).unwrap(), &m.record());
        d.set_fast_path(true);
    }
    let mut m = Met::sample(0);
    m.kind = "histogram".into();
    for fast in [true, false] {
        d.set_fast_path(fast);
        let err = d.decode_one(&bare(&s, m.value())).unwrap_err();
        assert!(
            matches!(err, DecodeError::Field { field: "kind", problem: Problem::UnknownKind, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn inference_schema_is_not_a_metric_schema() {
    let mut d = MetricDecoder::new(Format::Auto);
    let so = single_object(&inference_log_schema(), Inf::sample(0).value());
    // The inference fingerprint is known to the resolver, but it cannot be read as a metric.
    let err = d.decode_one(&so).unwrap_err();
    assert!(matches!(err, DecodeError::IncompatibleSchema { .. }), "{err:?}");
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_]{0,12}|\\PC{0,6}"
}

fn non_empty() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,16}|\\PC{1,6}"
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), -1e9..1e9f64, Just(0.0), Just(-0.0)]
}

prop_compose! {
    fn inference()(
        event_time in any::<i64>(),
        model in non_empty(),
        version in non_empty(),
        request_id in proptest::option::of(name()),
        latency_ms in prop_oneof![0.0..1e6f64, Just(0.0), Just(f64::MAX)],
        status in name(),
        prediction in proptest::option::of(double()),
        predicted_label in proptest::option::of(name()),
        features in proptest::collection::btree_map(name(), double(), 0..25),
        categories in proptest::collection::btree_map(name(), name(), 0..5),
        tokens_in in proptest::option::of(any::<i64>()),
        tokens_out in proptest::option::of(any::<i64>()),
        ttft_ms in proptest::option::of(double()),
        attributes in proptest::collection::btree_map(name(), name(), 0..5),
    ) -> Inf {
        Inf { event_time, model, version, request_id, latency_ms, status, prediction,
              predicted_label, features, categories, tokens_in, tokens_out, ttft_ms, attributes }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The fast path and apache-avro's schema resolution agree field by field.
    #[test]
    fn fast_path_equals_generic_path(inf in inference(), framing in 0..3u8) {
        let s = inference_log_schema();
        let resolver = Arc::new(DirResolver::builtin().with(Some(1), (*s).clone()).unwrap());
        let bytes = match framing {
            0 => bare(&s, inf.value()),
            1 => single_object(&s, inf.value()),
            _ => confluent(1, &s, inf.value()),
        };
        let mut fast = InferenceDecoder::with_resolver(Format::Auto, resolver.clone());
        let mut generic = InferenceDecoder::with_resolver(Format::Auto, resolver);
        generic.set_fast_path(false);
        let a = sorted(fast.decode_one(&bytes).unwrap());
        let b = generic.decode_one(&bytes).unwrap().clone();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &inf.record());
    }

    /// Same for metric events.
    #[test]
    fn metric_fast_path_equals_generic_path(
        event_time in any::<i64>(),
        name in non_empty(),
        value in -1e300..1e300f64,
        counter in any::<bool>(),
        attributes in proptest::collection::btree_map(name(), name(), 0..6),
    ) {
        let m = Met { event_time, name, value, kind: if counter { "counter" } else { "gauge" }.into(),
                      attributes, ..Met::sample(0) };
        let bytes = bare(&metric_event_schema(), m.value());
        let mut fast = MetricDecoder::new(Format::Avro);
        let mut generic = MetricDecoder::new(Format::Avro);
        generic.set_fast_path(false);
        let a = fast.decode_one(&bytes).unwrap().clone();
        let b = generic.decode_one(&bytes).unwrap().clone();
        // One attribute map: compare as sets, apache-avro wrote it in hash order.
        let mut aa: Vec<_> = a.attributes().collect();
        aa.sort();
        prop_assert_eq!(aa, b.attributes().collect::<Vec<_>>());
        prop_assert_eq!((a.event_time_ms, a.name(), a.value.to_bits(), a.kind),
                        (b.event_time_ms, b.name(), b.value.to_bits(), b.kind));
        prop_assert_eq!(b, m.record());
    }
}
