//! Encodings: deterministic bytes, and the codec decodes them back to the generated records.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Instant,
};

use modelwatch_codec::{
    DirResolver, Format, InferenceDecoder, MetricDecoder, inference_log_schema, metric_event_schema,
};
use modelwatch_core::event::{InferenceRecord, MetricRecord};
use modelwatch_kafka::{
    Encoder, Encoding, Event, Messages, Scenario, ScenarioConfig, SchemaIds, TopicKind,
};

const START: i64 = 1_779_000_000_000;
const ALL: [Encoding; 4] =
    [Encoding::Avro, Encoding::AvroConfluent, Encoding::AvroSingleObject, Encoding::Json];
const IDS: SchemaIds = SchemaIds { inference: 11, metric: 12 };

fn scenario(seed: u64) -> Scenario {
    let config = ScenarioConfig { seed, start_time_ms: Some(START), ..ScenarioConfig::default() };
    Scenario::new(&config, 0).unwrap()
}

/// A hash of the first `n` messages (topic, key, event time, payload) and their total size.
fn digest(seed: u64, encoding: Encoding, n: usize) -> (u64, usize) {
    let s = scenario(seed);
    let mut h = DefaultHasher::new();
    let mut bytes = 0;
    for m in Messages::new(s.events(), Encoder::new(encoding, IDS)).take(n) {
        let m = m.unwrap();
        (m.topic == TopicKind::Inference, m.key, m.event_time_ms, &m.payload).hash(&mut h);
        bytes += m.payload.len();
    }
    (h.finish(), bytes)
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    for encoding in ALL {
        let a = digest(42, encoding, 20_000);
        assert_eq!(a, digest(42, encoding, 20_000), "{encoding:?} is not deterministic");
        assert_ne!(a.0, digest(43, encoding, 20_000).0, "{encoding:?} ignores the seed");
    }
    // Byte for byte, not just equal hashes: compare two full runs directly.
    let run = |seed| {
        let s = scenario(seed);
        Messages::new(s.events(), Encoder::new(Encoding::Json, IDS))
            .take(2_000)
            .map(|m| m.unwrap().payload)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

fn resolver() -> Arc<DirResolver> {
    Arc::new(
        DirResolver::builtin()
            .with(Some(IDS.inference), (*inference_log_schema()).clone())
            .unwrap()
            .with(Some(IDS.metric), (*metric_event_schema()).clone())
            .unwrap(),
    )
}

#[test]
fn every_encoding_decodes_to_the_generated_records() {
    for encoding in ALL {
        let format = match encoding {
            Encoding::Avro | Encoding::AvroSingleObject => Format::Avro,
            Encoding::AvroConfluent => Format::AvroConfluent,
            Encoding::Json => Format::Json,
        };
        // The specific format and auto-detection must both read it.
        for format in [format, Format::Auto] {
            let mut inf = InferenceDecoder::with_resolver(format, resolver());
            let mut met = MetricDecoder::with_resolver(format, resolver());
            let (mut want_inf, mut want_met) =
                (InferenceRecord::default(), MetricRecord::default());
            let s = scenario(9);
            let encoder = Encoder::new(encoding, IDS);
            let (mut n_inf, mut n_met, mut llm) = (0, 0, 0);
            let mut payload = Vec::new();
            for event in s.events().take(8_000) {
                payload.clear();
                encoder.encode(&event, &mut payload).unwrap();
                match &event {
                    Event::Inference(e) => {
                        e.fill(&mut want_inf);
                        let got = inf.decode_one(&payload).unwrap();
                        assert_eq!(*got, want_inf, "{encoding:?} via {format:?}");
                        n_inf += 1;
                        llm += usize::from(got.tokens_in.is_some());
                    }
                    Event::Metric(e) => {
                        e.fill(&mut want_met);
                        let got = met.decode_one(&payload).unwrap();
                        assert_eq!(*got, want_met, "{encoding:?} via {format:?}");
                        n_met += 1;
                    }
                }
            }
            assert!(n_inf > 7_000 && n_met > 100 && llm > 100, "{n_inf} {n_met} {llm}");
        }
    }
}

#[test]
fn framings_carry_the_configured_header() {
    let s = scenario(1);
    let events: Vec<Event<'_>> = s.events().take(5_000).collect();
    let metric = events.iter().find(|e| matches!(e, Event::Metric(_))).unwrap();
    let inference = events.iter().find(|e| matches!(e, Event::Inference(_))).unwrap();
    let enc = |encoding, e: &Event<'_>| {
        let mut out = Vec::new();
        Encoder::new(encoding, IDS).encode(e, &mut out).unwrap();
        out
    };
    assert_eq!(enc(Encoding::AvroConfluent, inference)[..5], [0, 0, 0, 0, 11]);
    assert_eq!(enc(Encoding::AvroConfluent, metric)[..5], [0, 0, 0, 0, 12]);
    let so = enc(Encoding::AvroSingleObject, inference);
    assert_eq!(so[..2], [0xC3, 0x01]);
    assert_eq!(
        u64::from_le_bytes(so[2..10].try_into().unwrap()),
        modelwatch_codec::fingerprint(&inference_log_schema())
    );
    assert_eq!(so[10..], enc(Encoding::Avro, inference)[..]);
    let json: serde_json::Value = serde_json::from_slice(&enc(Encoding::Json, inference)).unwrap();
    assert_eq!(json["event_time"], inference.event_time_ms());
    assert!(json["features"].is_object() && json["attributes"]["route"].is_string());
}

/// Generation and encoding speed without Kafka (`cargo test --release -- --ignored speed`).
#[test]
#[ignore = "a timing report, run on demand in release mode"]
fn speed() {
    for encoding in ALL {
        let s = scenario(3);
        let n = 300_000;
        let started = Instant::now();
        let mut messages = Messages::new(s.events(), Encoder::new(encoding, IDS));
        let mut payload = Vec::new();
        let mut bytes = 0;
        for _ in 0..n {
            messages.next_into(&mut payload).unwrap().unwrap();
            bytes += payload.len();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{encoding:?}: {:.0} events/s, {:.0} bytes/event",
            n as f64 / secs,
            bytes as f64 / n as f64
        );
    }
}
