//! The pipeline fed from memory: generated traffic encoded as Kafka values, through decode,
//! tracking and row collection, without a broker or ClickHouse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use modelwatch_codec::Format;
use modelwatch_core::CoreConfig;
use modelwatch_core::config::{DriftSpec, WindowSpec};
use modelwatch_engine::{
    CanaryPair, Flush, Input, Pipeline, PipelineOptions, RejectKind, TopicKind, Topics,
};
use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect};
use modelwatch_kafka::{Encoder, Encoding, Messages, Scenario, ScenarioConfig, SchemaIds};
use std::time::Duration;

const START: i64 = 1_790_000_000_000;

fn core() -> CoreConfig {
    let s = Duration::from_secs;
    CoreConfig {
        windows: WindowSpec::new(s(30), s(5), s(2), s(60), s(1)).unwrap(),
        drift: DriftSpec::new(300, s(60), 10, 20, 1e-6).unwrap(),
        ..CoreConfig::default()
    }
}

fn pipeline() -> Pipeline {
    let topics = Topics::new(["inf"], ["met"]);
    Pipeline::new(
        topics,
        PipelineOptions {
            core: core(),
            group: "g".into(),
            format: Format::Auto,
            resolver: None,
            canaries: vec![CanaryPair {
                model: "fraud-detector".into(),
                baseline: "v41".into(),
                canary: "v42".into(),
            }],
        },
    )
}

fn scenario() -> ScenarioConfig {
    ScenarioConfig {
        start_time_ms: Some(START),
        incidents: vec![Incident {
            model: "fraud-detector".into(),
            version: Some("v42".into()),
            from: EventTime::Millis(START + 150_000),
            until: EventTime::Millis(START + 3_600_000),
            effect: IncidentEffect::FeatureDrift {
                feature: "amount".into(),
                shift: 0.0,
                scale: 4.0,
            },
        }],
        ..ScenarioConfig::default()
    }
}

/// Feeds `n` generated messages (inference to partition 0 of `inf`, metrics to partition 0 of
/// `met`), advancing after every 500, and returns what was flushed plus the expected requests.
fn feed(p: &mut Pipeline, n: usize, encoding: Encoding) -> (Vec<Flush>, BTreeMap<String, u64>) {
    let cfg = scenario();
    let s = Scenario::new(&cfg, 0).unwrap();
    let mut msgs = Messages::new(s.events(), Encoder::new(encoding, SchemaIds::default()));
    let mut payload = Vec::new();
    let mut offsets = [0i64; 2];
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut flushes = Vec::new();
    let mut decoder = modelwatch_codec::InferenceDecoder::new(Format::Auto);
    for i in 0..n {
        let (kind, _key, t) = msgs.next_into(&mut payload).unwrap().unwrap();
        let topic = match kind {
            modelwatch_kafka::TopicKind::Inference => 0,
            modelwatch_kafka::TopicKind::Metric => 1,
        };
        let input = Input {
            topic,
            partition: 0,
            offset: offsets[topic as usize],
            timestamp: Some(t),
            payload: Some(&payload),
        };
        offsets[topic as usize] += 1;
        if topic == 0 {
            let v = decoder.decode_one(&payload).unwrap().version().to_owned();
            *expected.entry(v).or_default() += 1;
        }
        assert_eq!(p.process(input), None, "message {i}");
        if i % 500 == 499 {
            p.advance();
            flushes.push(p.take_flush(1));
        }
    }
    p.advance();
    flushes.push(p.take_flush(1));
    (flushes, expected)
}

#[test]
fn generated_avro_traffic_becomes_rows_and_checkpoints() {
    let mut p = pipeline();
    let (flushes, expected) = feed(&mut p, 60_000, Encoding::Avro);
    // Requests per version in pane rows, for panes that closed.
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for f in &flushes {
        for r in &f.rows.pane_stats {
            *got.entry(r.version.clone()).or_default() += r.requests;
        }
    }
    for (v, n) in &expected {
        let g = got.get(v).copied().unwrap_or(0);
        // Only the last few panes (watermark lag) may still be open.
        assert!(g <= *n && g + 2_000 >= *n, "{v}: {g} of {n}");
    }
    let rows = |f: &dyn Fn(&Flush) -> usize| flushes.iter().map(f).sum::<usize>();
    assert!(rows(&|f| f.rows.window_stats.len()) > 100);
    assert!(rows(&|f| f.rows.pane_bins.len()) > 100);
    assert!(rows(&|f| f.rows.metric_stats.len()) > 100);
    assert!(rows(&|f| f.layouts.len()) > 0, "layouts are written once frozen");
    assert!(rows(&|f| f.counters.len()) > 0, "counter series go with checkpoints");
    // Every window with requests reports their routes (the generator routes baselines
    // `stable` and canaries `canary`); routed counts never exceed the window's requests.
    let windows: Vec<_> = flushes.iter().flat_map(|f| &f.rows.window_stats).collect();
    let routes: Vec<_> = flushes.iter().flat_map(|f| &f.rows.routes).collect();
    assert_eq!(routes.len(), windows.len());
    for r in &routes {
        let w = windows
            .iter()
            .find(|w| {
                (&w.model, &w.version, w.window_end_ms) == (&r.model, &r.version, r.window_end_ms)
            })
            .unwrap();
        assert_eq!(r.stable + r.canary, w.requests, "{r:?}");
        let canary = r.version == "v42" || r.version == "2024-06";
        assert_eq!(if canary { r.stable } else { r.canary }, 0, "{r:?}");
    }
    // Every flush checkpoints both partitions once they have a position.
    let last = flushes.last().unwrap();
    assert_eq!(last.checkpoints.len(), 2);
    for c in &last.checkpoints {
        assert!(c.resume_offset >= 0 && c.cutoff_ms > START, "{c:?}");
    }
    // Canary-against-baseline drift of `amount` rises after the incident.
    let kl = |from: i64, to: i64| {
        let v: Vec<f64> = flushes
            .iter()
            .flat_map(|f| &f.rows.drift_scores)
            .filter(|d| d.reference == "version:v41" && d.feature == "amount")
            .filter(|d| d.window_end_ms > from && d.window_end_ms <= to)
            .map(|d| d.kl)
            .collect();
        assert!(!v.is_empty(), "no canary drift rows in ({from}, {to}]");
        v.iter().sum::<f64>() / v.len() as f64
    };
    let before = kl(START + 60_000, START + 150_000);
    let after = kl(START + 200_000, i64::MAX);
    assert!(after > 10.0 * before, "before {before}, after {after}");
    // A layout is written once: never twice.
    let mut names: Vec<(String, String)> = flushes
        .iter()
        .flat_map(|f| &f.layouts)
        .map(|l| (l.model.clone(), l.feature.clone()))
        .collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
}

#[test]
fn json_and_avro_give_the_same_rows() {
    let strip = |flushes: Vec<Flush>| {
        flushes
            .into_iter()
            .flat_map(|f| f.rows.window_stats)
            .map(|mut r| {
                r.written_at_ms = 0;
                r
            })
            .collect::<Vec<_>>()
    };
    let (a, _) = feed(&mut pipeline(), 8_000, Encoding::Avro);
    let (j, _) = feed(&mut pipeline(), 8_000, Encoding::Json);
    let (a, j) = (strip(a), strip(j));
    assert!(!a.is_empty());
    assert_eq!(a, j);
}

#[test]
fn bad_records_are_rejected_with_their_reason() {
    let mut p = pipeline();
    let mut input = |offset: i64, ts: Option<i64>, payload: Option<&[u8]>| {
        p.process(Input { topic: 0, partition: 0, offset, timestamp: ts, payload })
    };
    let ok = |t: i64| {
        format!(r#"{{"event_time":{t},"model":"m","version":"v","latency_ms":3.0,"status":"ok"}}"#)
    };
    assert_eq!(input(0, Some(START), Some(ok(START).as_bytes())), None);
    let r = input(1, Some(START), None).unwrap();
    assert_eq!(r.kind, RejectKind::Tombstone);
    let r = input(2, Some(START), Some(b"{\"model\": 1}")).unwrap();
    assert_eq!(r.kind, RejectKind::Malformed);
    assert!(r.reason.contains("model") || r.reason.contains("event_time"), "{}", r.reason);
    // Two minutes ahead of its record timestamp: a bad clock.
    let r = input(3, Some(START), Some(ok(START + 120_000).as_bytes())).unwrap();
    assert_eq!(r.kind, RejectKind::BadTimestamp);
    // Move the watermark on, then an event a minute old is late.
    assert_eq!(input(4, Some(START + 90_000), Some(ok(START + 90_000).as_bytes())), None);
    p.advance();
    let mut input = |offset: i64, ts: Option<i64>, payload: Option<&[u8]>| {
        p.process(Input { topic: 0, partition: 0, offset, timestamp: ts, payload })
    };
    let r = input(5, Some(START + 90_000), Some(ok(START + 10_000).as_bytes())).unwrap();
    assert_eq!(r.kind, RejectKind::Late);
    let c = p.counts()[0];
    assert_eq!((c.records, c.recorded), (6, 2));
    assert_eq!(c.rejected, [1, 1, 1, 1, 0, 0]);
    assert_eq!(p.topics().topic(0).kind, TopicKind::Inference);
}

#[test]
fn canary_drift_pairs_windows_released_in_bulk() {
    // A registered partition without events holds every window back until it is idle; then
    // hundreds of windows of both versions come out in one advance.
    let mut p = pipeline();
    p.assign(0, 0, None);
    p.assign(0, 1, None);
    p.assign(1, 0, None);
    p.tick(0);
    let (flushes, _) = feed(&mut p, 30_000, Encoding::Avro);
    let before: usize = flushes.iter().map(|f| f.rows.window_stats.len()).sum();
    assert_eq!(before, 0, "partition 1 of `inf` is not idle yet");
    p.tick(500);
    p.tick(5_000);
    let f = p.take_flush(2);
    let canary_windows = f.rows.window_stats.iter().filter(|w| w.version == "v42").count();
    let paired = f
        .rows
        .drift_scores
        .iter()
        .filter(|d| d.reference == "version:v41" && d.feature == "amount")
        .count();
    assert!(canary_windows > 20, "{canary_windows}");
    assert_eq!(paired, canary_windows, "every canary window is scored against its baseline's");
}

#[test]
fn a_restore_whose_first_record_is_past_the_resume_offset_is_reported() {
    use modelwatch_core::PartitionCheckpoint;
    let mut p = pipeline();
    let cp =
        PartitionCheckpoint { cutoff_ms: START - 30_000, resume_offset: 100, watermark_ms: START };
    p.assign(0, 0, Some(cp));
    p.assign(0, 1, Some(cp));
    let ok = format!(
        r#"{{"event_time":{START},"model":"m","version":"v","latency_ms":3.0,"status":"ok"}}"#
    );
    let input = |p: &mut Pipeline, partition: i32, offset: i64| {
        let payload = Some(ok.as_bytes());
        p.process(Input { topic: 0, partition, offset, timestamp: Some(START), payload })
    };
    // Partition 0 starts at its resume offset; partition 1 36 records later (a broker that
    // skipped the rest of the record batch holding the resume offset).
    assert_eq!(input(&mut p, 0, 100), None);
    assert_eq!(input(&mut p, 0, 101), None);
    assert_eq!(input(&mut p, 1, 136), None);
    assert_eq!(input(&mut p, 1, 137), None);
    assert_eq!(p.resume_gaps(), 1);
    // Only the first record after a restore is compared: later offset gaps are normal
    // (transaction markers, compaction).
    assert_eq!(input(&mut p, 0, 150), None);
    assert_eq!(p.resume_gaps(), 1);
}
