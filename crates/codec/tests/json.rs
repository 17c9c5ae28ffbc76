//! JSON decoding: single objects, NDJSON with a bad line, timestamps, optional fields, typed
//! errors with line and column, and the examples in `schemas/examples/`.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

mod common;

use common::Inf;
use modelwatch_codec::{DecodeError, Format, InferenceDecoder, MetricDecoder, Position, Problem};
use modelwatch_core::event::MetricKind;

fn all(d: &mut InferenceDecoder, payload: &[u8]) -> Vec<Result<String, DecodeError>> {
    let mut out = Vec::new();
    d.decode(payload, |r| {
        out.push(r.map(|r| format!("{}/{}@{}", r.model(), r.version(), r.event_time_ms)))
    });
    out
}

#[test]
fn single_object_matches_the_avro_contract() {
    let inf = Inf::sample(7);
    let mut d = InferenceDecoder::new(Format::Json);
    assert_eq!(d.decode_one(inf.json().as_bytes()).unwrap(), &inf.record());
    let mut d = InferenceDecoder::new(Format::Auto);
    assert_eq!(d.decode_one(format!("  \n{}\n", inf.json()).as_bytes()).unwrap(), &inf.record());
}

#[test]
fn ndjson_with_a_bad_middle_line_yields_the_good_lines() {
    let a = Inf::sample(1).json();
    let c = Inf::sample(3).json();
    let payload = format!(
        "{a}\n{{\"event_time\": 1, \"model\": \"m\", \"version\": \"v\", \"latency_ms\": \"slow\", \"status\": \"ok\"}}\n\n{c}\n"
    );
    let mut d = InferenceDecoder::new(Format::Auto);
    let got = all(&mut d, payload.as_bytes());
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].as_ref().unwrap(), "fraud-detector/v42@1779089412346");
    match &got[1] {
        Err(DecodeError::JsonField { field: "latency_ms", line: 2, column, .. }) => {
            assert!(*column > 50, "{column}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(got[2].as_ref().unwrap(), "fraud-detector/v42@1779089412348");
}

#[test]
fn syntax_errors_name_line_and_column_and_decoding_goes_on() {
    let ok = Inf::sample(0).json();
    let payload = format!("{ok}\n{{\"model\": \n{ok}\n{{oops}}\n{ok}");
    let mut d = InferenceDecoder::new(Format::Json);
    let got = all(&mut d, payload.as_bytes());
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[0].is_ok() && got[2].is_ok() && got[4].is_ok(), "{got:?}");
    assert!(
        matches!(got[1], Err(DecodeError::JsonField { field: "model", line: 2, .. })),
        "{:?}",
        got[1]
    );
    assert!(matches!(got[3], Err(DecodeError::Json { line: 4, column: 2, .. })), "{:?}", got[3]);
}

#[test]
fn event_time_accepts_rfc3339_with_offsets_and_epoch_ms() {
    let cases = [
        (r#""2026-05-18T07:30:12Z""#, 1_779_089_412_000),
        (r#""2026-05-18T09:30:12.345+02:00""#, 1_779_089_412_345),
        (r#""2026-05-18T02:30:12.3456-05:00""#, 1_779_089_412_345),
        (r#""1969-12-31T23:59:59.9995Z""#, -1),
        ("1779089412345", 1_779_089_412_345),
        ("1779089412345.9", 1_779_089_412_345),
        ("-5", -5),
    ];
    let mut d = InferenceDecoder::new(Format::Json);
    for (t, ms) in cases {
        let p = format!(
            r#"{{"event_time": {t}, "model": "m", "version": "v", "latency_ms": 1, "status": "ok"}}"#
        );
        assert_eq!(d.decode_one(p.as_bytes()).map(|r| r.event_time_ms).unwrap(), ms, "{t}");
    }
    for bad in [r#""2026-05-18T07:30:12""#, r#""yesterday""#, "1e300", "18446744073709551615"] {
        let p = format!(
            r#"{{"event_time": {bad}, "model": "m", "version": "v", "latency_ms": 1, "status": "ok"}}"#
        );
        let err = d.decode_one(p.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Field {
                    field: "event_time",
                    problem: Problem::BadTimestamp,
                    at: Position::Line { line: 1, .. }
                }
            ),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn missing_optional_fields_are_null_or_empty_and_unknown_fields_are_ignored() {
    let p =
        br#"{"event_time": 5, "model": "m", "version": "v", "latency_ms": 0, "status": "timeout",
                 "request_id": null, "features": null, "extra": {"nested": [1, 2, {"x": null}]}}"#;
    let mut d = InferenceDecoder::new(Format::Json);
    let r = d.decode_one(p).unwrap();
    assert_eq!(
        (r.request_id(), r.prediction, r.predicted_label(), r.tokens_in, r.ttft_ms),
        (None, None, None, None, None)
    );
    assert_eq!((r.features().len(), r.categories().len(), r.attributes().len()), (0, 0, 0));
    assert!(!r.is_ok());
}

#[test]
fn missing_required_fields_and_invalid_values_are_named() {
    let mut d = InferenceDecoder::new(Format::Json);
    let cases: [(&[u8], &str, Problem); 4] = [
        (
            br#"{"model": "m", "version": "v", "latency_ms": 1, "status": "ok"}"#,
            "event_time",
            Problem::Missing,
        ),
        (
            br#"{"event_time": 1, "model": "", "version": "v", "latency_ms": 1, "status": "ok"}"#,
            "model",
            Problem::Empty,
        ),
        (
            br#"{"event_time": 1, "model": "m", "version": "v", "latency_ms": -2, "status": "ok"}"#,
            "latency_ms",
            Problem::NegativeOrNotFinite,
        ),
        (
            br#"{"event_time": 1, "model": "m", "latency_ms": 1, "status": "ok"}"#,
            "version",
            Problem::Missing,
        ),
    ];
    for (p, field, problem) in cases {
        let err = d.decode_one(p).unwrap_err();
        assert!(
            matches!(err, DecodeError::Field { field: f, problem: q, at: Position::Line { line: 1, .. } } if f == field && q == problem),
            "{err:?}"
        );
    }
    let err = d.decode_one(br#"{"event_time": 1, "model": "m", "version": "v", "latency_ms": 1, "status": "ok", "features": {"a": "x"}}"#).unwrap_err();
    assert_eq!(err.field_name(), Some("features"));
    let err = d.decode_one(br#"{"event_time": 1, "model": "m", "version": "v", "latency_ms": 1, "status": "ok", "tokens_in": 1.5}"#).unwrap_err();
    assert_eq!(err.field_name(), Some("tokens_in"));
    assert!(matches!(d.decode_one(b"[1, 2]"), Err(DecodeError::Json { .. })));
    assert!(matches!(d.decode_one(b" \n "), Err(DecodeError::Empty)));
}

#[test]
fn escaped_strings_are_unescaped() {
    let p = br#"{"event_time": 1, "model": "fraud\u002ddetector", "version": "v\"1", "latency_ms": 1, "status": "ok", "attributes": {"ro\nute": "can\\ary"}}"#;
    let mut d = InferenceDecoder::new(Format::Json);
    let r = d.decode_one(p).unwrap();
    assert_eq!(
        (r.model(), r.version(), r.attribute("ro\nute")),
        ("fraud-detector", "v\"1", Some("can\\ary"))
    );
}

#[test]
fn pretty_printed_objects_span_lines() {
    let v: serde_json::Value = serde_json::from_str(&Inf::sample(1).json()).unwrap();
    let pretty = serde_json::to_string_pretty(&v).unwrap();
    let payload = format!("{pretty}\n{}\n", Inf::sample(2).json());
    let mut d = InferenceDecoder::new(Format::Auto);
    let got = all(&mut d, payload.as_bytes());
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(d.decode_one(pretty.as_bytes()).unwrap(), &Inf::sample(1).record());
}

#[test]
fn the_examples_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let mut n = 0;
        if name.starts_with("inference") {
            InferenceDecoder::new(Format::Auto).decode(&bytes, |r| {
                r.unwrap();
                n += 1
            });
        } else if name.starts_with("metric") {
            MetricDecoder::new(Format::Auto).decode(&bytes, |r| {
                r.unwrap();
                n += 1
            });
        } else {
            continue;
        }
        assert!(n >= 1, "{name}");
        if name.ends_with(".ndjson") {
            assert!(n >= 3, "{name}: {n}");
        }
        seen += 1;
    }
    assert!(seen >= 6, "{seen}");
}

#[test]
fn llm_example_carries_tokens_and_ttft() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/inference_llm.json"
    ))
    .unwrap();
    let mut d = InferenceDecoder::new(Format::Json);
    let r = d.decode_one(&bytes).unwrap();
    assert_eq!((r.tokens_in, r.tokens_out, r.ttft_ms), (Some(812), Some(256), Some(184.2)));
    assert_eq!(r.attribute("route"), Some("stable"));
}

#[test]
fn metric_json_validates_kind_and_value() {
    let mut d = MetricDecoder::new(Format::Json);
    let r = d.decode_one(br#"{"event_time": "2026-05-18T07:30:00Z", "model": "m", "version": "v", "name": "requests_total", "value": 120331, "kind": "counter"}"#).unwrap();
    assert_eq!((r.kind, r.value, r.name()), (MetricKind::Counter, 120_331.0, "requests_total"));
    let err = d.decode_one(br#"{"event_time": 1, "model": "m", "version": "v", "name": "x", "value": 1, "kind": "summary"}"#).unwrap_err();
    assert!(
        matches!(err, DecodeError::Field { field: "kind", problem: Problem::UnknownKind, .. }),
        "{err:?}"
    );
    let err = d
        .decode_one(
            br#"{"event_time": 1, "model": "m", "version": "v", "name": "x", "kind": "gauge"}"#,
        )
        .unwrap_err();
    assert!(
        matches!(err, DecodeError::Field { field: "value", problem: Problem::Missing, .. }),
        "{err:?}"
    );
}
