//! No input panics, in any format: arbitrary bytes and mutated valid encodings (bit flips,
//! truncation, inserted bytes) always come back as records or typed errors.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

mod common;

use std::sync::Arc;

use common::{Inf, Met, bare, confluent, edited_inference_schema, single_object};
use modelwatch_codec::{
    DirResolver, Format, InferenceDecoder, MetricDecoder, inference_log_schema, metric_event_schema,
};
use proptest::prelude::*;

const FORMATS: [Format; 4] = [Format::Auto, Format::Avro, Format::AvroConfluent, Format::Json];

fn resolver() -> Arc<DirResolver> {
    let evolved = edited_inference_schema(|f| {
        f.insert(
            2,
            serde_json::json!({"name": "gpu", "type": ["null", "string"], "default": null}),
        );
        f.retain(|x| x["name"] != "categories");
    });
    Arc::new(
        DirResolver::builtin()
            .with(Some(1), (*inference_log_schema()).clone())
            .unwrap()
            .with(Some(2), evolved)
            .unwrap()
            .with(Some(3), (*metric_event_schema()).clone())
            .unwrap(),
    )
}

/// Feeds `payload` to every decoder in every format, with both paths; returns how many records
/// came through (so the work is not optimised away).
fn feed(payload: &[u8], r: &Arc<DirResolver>) -> usize {
    let mut n = 0;
    for format in FORMATS {
        for fast in [true, false] {
            let mut d = InferenceDecoder::with_resolver(format, r.clone());
            d.set_fast_path(fast);
            d.decode(payload, |x| n += usize::from(x.is_ok()));
            let _ = d.decode_one(payload);
            let mut m = MetricDecoder::with_resolver(format, r.clone());
            m.set_fast_path(fast);
            m.decode(payload, |x| n += usize::from(x.is_ok()));
            let _ = m.decode_one(payload);
        }
    }
    n
}

fn valid_payloads() -> Vec<Vec<u8>> {
    let s = inference_log_schema();
    let ms = metric_event_schema();
    let mut llm = Inf::sample(1);
    llm.tokens_in = Some(10);
    llm.ttft_ms = Some(1.5);
    vec![
        bare(&s, Inf::sample(0).value()),
        single_object(&s, llm.value()),
        confluent(1, &s, Inf::sample(2).value()),
        bare(&ms, Met::sample(0).value()),
        confluent(3, &ms, Met::sample(1).value()),
        Inf::sample(3).json().into_bytes(),
        format!("{}\n{}\n", Inf::sample(4).json(), Inf::sample(5).json()).into_bytes(),
        br#"{"event_time": "2026-05-18T09:30:00+02:00", "model": "m", "version": "v", "name": "gpu", "value": 0.5, "kind": "gauge"}"#.to_vec(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Set(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u8),
                Just(0x7f),
                Just(0x80),
                Just(0xff),
                Just(b'{'),
                Just(b'\n'),
                any::<u8>()
            ]
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

fn apply(p: &mut Vec<u8>, m: &Mutation) {
    if p.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, b) => {
            let i = i % p.len();
            p[i] ^= 1 << b;
        }
        Mutation::Truncate(i) => p.truncate(i % p.len()),
        Mutation::Insert(i, v) => {
            let i = i % (p.len() + 1);
            p.splice(i..i, v.iter().copied());
        }
        Mutation::Set(i, b) => {
            let i = i % p.len();
            p[i] = *b;
        }
    }
}

#[test]
fn valid_payloads_decode() {
    let r = resolver();
    for p in valid_payloads() {
        assert!(feed(&p, &r) > 0, "{p:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        feed(&bytes, &resolver());
    }

    #[test]
    fn arbitrary_bytes_behind_headers_never_panic(
        header in prop_oneof![
            Just(vec![0u8, 0, 0, 0, 1]),
            Just(vec![0u8, 0, 0, 0, 2]),
            Just(vec![0u8, 0, 0, 0, 3]),
            Just(single_object(&inference_log_schema(), Inf::sample(0).value())[..10].to_vec()),
            Just(vec![]),
        ],
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut p = header;
        p.extend(body);
        feed(&p, &resolver());
    }

    #[test]
    fn mutated_valid_encodings_never_panic(
        which in 0..8usize,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut p = valid_payloads().swap_remove(which);
        for m in &mutations {
            apply(&mut p, m);
        }
        feed(&p, &resolver());
    }
}
