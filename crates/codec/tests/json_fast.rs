//! The fast JSON path against the serde path: on any input, both give the same records and the
//! same errors. Objects are built from tricky pieces (numbers at the edges of JSON's grammar and
//! of `f64`, escapes, control characters, invalid UTF-8, nulls, unknown and repeated keys), then
//! mutated byte by byte.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

mod common;

use common::Inf;
use modelwatch_codec::{Format, InferenceDecoder};
use proptest::prelude::*;

fn results(d: &mut InferenceDecoder, payload: &[u8]) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    d.decode(payload, |r| out.push(r.map(|r| format!("{r:?}")).map_err(|e| format!("{e:?}"))));
    out
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        (-1e6..1e6f64).prop_map(|v| format!("{v:.3}")),
        "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
        prop::sample::select(vec![
            "0",
            "-0",
            "-0.0",
            "1e400",
            "-1e400",
            "1e-400",
            "4.9e-324",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "9007199254740993",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "18446744073709551616",
            "1E2",
            "2.5e+2",
            "NaN",
            "null",
            "true",
            "\"5\"",
        ])
        .prop_map(str::to_owned),
    ]
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z0-9_-]{0,12}".prop_map(|s| format!("\"{s}\"").into_bytes()),
        prop::sample::select(vec![
            "\"\"",
            "\"caf\u{e9}\"",
            "\"\\u00e9t\\u00e9\"",
            "\"a\\\"b\"",
            "\"tab\there\"",
            "\"x\\ny\"",
            "null",
            "5",
            "\"2026-05-18T07:30:12Z\"",
            "\"2026-05-18T09:30:12.5+02:00\"",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(b"\"bad\xff\"".to_vec()),
        Just(b"\"split\xc3\"".to_vec()),
    ]
}

fn map(value: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"null".to_vec()),
        Just(b"[]".to_vec()),
        proptest::collection::vec((text(), value), 0..4).prop_map(|entries| {
            let mut out = b"{".to_vec();
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(k);
                out.push(b':');
                out.extend(v);
            }
            out.push(b'}');
            out
        }),
    ]
}

fn field() -> impl Strategy<Value = (String, Vec<u8>)> {
    let num = || number().prop_map(String::into_bytes).boxed();
    let val = || prop_oneof![num(), text()].boxed();
    prop_oneof![
        val().prop_map(|v| ("event_time".into(), v)),
        text().prop_map(|v| ("model".into(), v)),
        text().prop_map(|v| ("version".into(), v)),
        text().prop_map(|v| ("request_id".into(), v)),
        num().prop_map(|v| ("latency_ms".into(), v)),
        text().prop_map(|v| ("status".into(), v)),
        val().prop_map(|v| ("prediction".into(), v)),
        text().prop_map(|v| ("predicted_label".into(), v)),
        map(num()).prop_map(|v| ("features".into(), v)),
        map(text().boxed()).prop_map(|v| ("categories".into(), v)),
        val().prop_map(|v| ("tokens_in".into(), v)),
        val().prop_map(|v| ("tokens_out".into(), v)),
        val().prop_map(|v| ("ttft_ms".into(), v)),
        map(text().boxed()).prop_map(|v| ("attributes".into(), v)),
        (
            prop::sample::select(vec!["extra", "mod\\u0065l", "caf\u{e9}"]),
            prop_oneof![
                val(),
                Just(b"{\"a\": [1, {\"b\": null}]}".to_vec()),
                Just(b"[true, false]".to_vec()),
                Just(b"tru".to_vec()),
            ]
        )
            .prop_map(|(k, v)| (k.to_owned(), v)),
    ]
}

/// A valid object (the sample record) with some fields replaced, added or repeated.
fn object() -> impl Strategy<Value = Vec<u8>> {
    (0..1000i64, proptest::collection::vec(field(), 0..5), any::<bool>()).prop_map(
        |(i, extra, pretty)| {
            let base = Inf::sample(i).json();
            let mut out = base.trim_end().trim_end_matches('}').as_bytes().to_vec();
            for (k, v) in extra {
                out.extend_from_slice(format!(",\"{k}\":").as_bytes());
                out.extend(v);
            }
            out.extend_from_slice(if pretty { b"\n}" } else { b"}" });
            out
        },
    )
}

fn mutate(mut p: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(i, b) in edits {
        if p.is_empty() {
            break;
        }
        let i = i % p.len();
        match b % 4 {
            0 => {
                p.remove(i);
            }
            1 => p[i] = b"\"{}[],:0-.e\\ \nn"[usize::from(b / 4) % 15],
            2 => p[i] ^= 1 << (b % 8),
            _ => p.insert(i, b),
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fast_json_path_equals_serde_path(
        objects in proptest::collection::vec(object(), 1..3),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        let payload = mutate(objects.join(&b'\n'), &edits);
        let mut fast = InferenceDecoder::new(Format::Json);
        let mut serde = InferenceDecoder::new(Format::Json);
        serde.set_fast_path(false);
        prop_assert_eq!(results(&mut fast, &payload), results(&mut serde, &payload));
        let one = (fast.decode_one(&payload).map(|r| format!("{r:?}")).map_err(|e| format!("{e:?}")),
                   serde.decode_one(&payload).map(|r| format!("{r:?}")).map_err(|e| format!("{e:?}")));
        prop_assert_eq!(one.0, one.1);
    }
}

#[test]
fn the_samples_decode_equally_on_both_paths() {
    let mut fast = InferenceDecoder::new(Format::Json);
    let mut serde = InferenceDecoder::new(Format::Json);
    serde.set_fast_path(false);
    for i in 0..50 {
        let json = Inf::sample(i).json();
        let a = fast.decode_one(json.as_bytes()).unwrap().clone();
        assert_eq!(&a, serde.decode_one(json.as_bytes()).unwrap());
        assert_eq!(a, Inf::sample(i).record());
    }
}
