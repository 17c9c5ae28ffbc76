//! End to end on the real broker and ClickHouse, hostile input: malformed records, bad
//! timestamps and late records mixed into generated traffic (rejection metrics, dead letters,
//! nothing else lost); input not keyed by model (exact counts and quantiles with one instance,
//! the several-partitions warning); a flood of versions of one model against the version cap
//! (exact rejections, bounded state and memory).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Instance, Setup, free_port, services, tsv};
use modelwatch_codec::{Format, InferenceDecoder};
use modelwatch_kafka::{
    Encoder, Encoding, Event, GenOptions, Messages, Scenario, ScenarioConfig, SchemaIds, TopicKind,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

const WINDOW_MS: i64 = 30_000;
const SLIDE_MS: i64 = 5_000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Event time of a scenario: three hours ago, on a minute.
fn scenario_start() -> i64 {
    (now_ms() - 3 * 3_600_000) / 60_000 * 60_000
}

// ------------------------------------------------------------------------------------------
// Truth: the generated events regenerated in-process.

#[derive(Default)]
struct Truth {
    /// (model, version) -> (requests, errors)
    counts: BTreeMap<(String, String), (u64, u64)>,
    /// (model, version) -> (event time, latency)
    latencies: BTreeMap<(String, String), Vec<(i64, f64)>>,
    /// (model, version) of the metric events.
    metric_keys: BTreeSet<(String, String)>,
    last_event_ms: i64,
    inference_messages: u64,
    metric_messages: u64,
}

fn truth(cfg: &ScenarioConfig, count: u64) -> Truth {
    let s = Scenario::new(cfg, 0).unwrap();
    let mut t = Truth::default();
    for e in s.events().take(count as usize) {
        t.last_event_ms = t.last_event_ms.max(e.event_time_ms());
        match e {
            Event::Inference(i) => {
                t.inference_messages += 1;
                let k = (i.model.to_owned(), i.version.to_owned());
                let c = t.counts.entry(k.clone()).or_default();
                c.0 += 1;
                c.1 += u64::from(i.status != "ok");
                t.latencies.entry(k).or_default().push((i.event_time_ms, i.latency_ms));
            }
            Event::Metric(m) => {
                t.metric_messages += 1;
                t.metric_keys.insert((m.model.to_owned(), m.version.to_owned()));
            }
        }
    }
    t
}

fn generate(setup: &Setup, cfg: &ScenarioConfig, count: u64, properties: &[(&str, &str)]) {
    let opts = GenOptions {
        brokers: setup.services.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: Some(count),
        scenario: cfg.clone(),
        properties: properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..GenOptions::default()
    };
    let report = modelwatch_kafka::run(opts).unwrap();
    assert_eq!((report.delivered, report.failed), (count, 0), "generator delivery");
}

fn nearest_rank(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

// ------------------------------------------------------------------------------------------
// A producer in the test, with the (partition, offset) of every record.

/// A record to produce.
#[derive(Debug, Clone)]
struct Out {
    partition: i32,
    key: Vec<u8>,
    /// `None`: a tombstone.
    value: Option<Vec<u8>>,
    timestamp: i64,
}

/// A delivery report: (partition, offset) or the error.
type Report = Result<(i32, i64), String>;

#[derive(Default)]
struct Reports(Mutex<Vec<Option<Report>>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, i: Box<usize>) {
        let r = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap()[*i] = Some(r);
    }
}

/// Produces `records` to `topic` in order (one in flight per partition, so offsets follow the
/// order) and returns the (partition, offset) of each.
fn produce(brokers: &str, topic: &str, records: &[Out]) -> Vec<(i32, i64)> {
    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        .create_with_context(Reports::default())
        .unwrap();
    *producer.context().0.lock().unwrap() = vec![None; records.len()];
    for (i, r) in records.iter().enumerate() {
        let mut rec: BaseRecord<'_, [u8], [u8], Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition(r.partition)
                .key(&r.key[..])
                .timestamp(r.timestamp);
        if let Some(v) = &r.value {
            rec = rec.payload(&v[..]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(Instant::now() < deadline, "produce failed: {e}");
                    rec = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let reports = std::mem::take(&mut *producer.context().0.lock().unwrap());
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(Ok(po)) => po,
            other => panic!("record {i} not delivered: {other:?}"),
        })
        .collect()
}

/// A valid JSON inference record.
fn json_event(t: i64, model: &str, version: &str, latency: f64, status: &str) -> Vec<u8> {
    format!(
        "{{\"event_time\": {t}, \"model\": \"{model}\", \"version\": \"{version}\", \
         \"latency_ms\": {latency}, \"status\": \"{status}\", \"attributes\": {{\"route\": \"stable\"}}}}"
    )
    .into_bytes()
}

// ------------------------------------------------------------------------------------------
// Reading the instance, the tables and the dead-letter topic.

/// `modelwatch_events_rejected_total` by (topic, reason).
fn rejected(mw: &Instance) -> BTreeMap<(String, String), u64> {
    let text = mw.get("/metrics").unwrap_or_default();
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("modelwatch_events_rejected_total{")) {
        let label = |name: &str| {
            let from = l.find(&format!("{name}=\""))? + name.len() + 2;
            let to = from + l[from..].find('"')?;
            Some(l[from..to].to_owned())
        };
        let value: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        out.insert((label("topic").unwrap(), label("reason").unwrap()), value as u64);
    }
    out
}

/// What a failed wait shows: the counters that tell how far the instance got.
fn snapshot(mw: &Instance, setup: &Setup) -> String {
    let text = mw.get("/metrics").unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && [
                    "modelwatch_records_consumed",
                    "modelwatch_events_",
                    "modelwatch_dead_letter",
                    "modelwatch_active_versions",
                    "modelwatch_flushes_in_flight",
                    "modelwatch_paused",
                    "modelwatch_panes_closed",
                    "modelwatch_checkpoints",
                    "modelwatch_consumer_lag",
                    "modelwatch_keys_in_several",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    format!(
        "pane_stats requests {}; /metrics:\n{}\nVmHWM {:?} kB, VmRSS {:?} kB",
        pane_requests(setup),
        lines.join("\n"),
        mw.proc_status_kb("VmHWM"),
        mw.proc_status_kb("VmRSS"),
    )
}

/// Polls `cond` every 200 ms until it holds; after `timeout` panics with the instance's
/// counters and log.
fn wait_for(
    mw: &Instance,
    setup: &Setup,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Instance) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !cond(mw) {
        assert!(mw.is_running(), "modelwatch exited while waiting for {what}:\n{}", mw.log());
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}\nlog:\n{}",
            snapshot(mw, setup),
            mw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// pane_stats requests and errors per (model, version).
fn pane_totals(setup: &Setup) -> BTreeMap<(String, String), (u64, u64)> {
    let rows = tsv(&setup.sql(
        "SELECT model, version, sum(requests), sum(errors) FROM {db}.pane_stats FINAL \
         GROUP BY model, version ORDER BY model, version",
    ));
    rows.iter()
        .map(|r| ((r[0].clone(), r[1].clone()), (r[2].parse().unwrap(), r[3].parse().unwrap())))
        .collect()
}

fn pane_requests(setup: &Setup) -> u64 {
    let t = setup.sql("SELECT sum(requests) FROM {db}.pane_stats FINAL");
    t.trim().parse::<u64>().unwrap_or(0)
}

/// A dead letter as consumed.
#[derive(Debug)]
struct DeadLetter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    headers: BTreeMap<String, String>,
}

/// Every record of the (one-partition) dead-letter topic: read until `expected` came (at most
/// `timeout`), then until the topic stays quiet for 3 s, so a surplus shows as more records than
/// expected. (The test broker's high watermark cannot be trusted: tansu reported 1 for a topic
/// of 12 records written in one batch.)
fn dead_letters(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", common::fresh("e2e_input_dlq_reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let wait =
            if out.len() < expected { Duration::from_millis(500) } else { Duration::from_secs(3) };
        let Some(m) = consumer.poll(wait) else {
            if out.len() >= expected {
                return out;
            }
            assert!(Instant::now() < deadline, "read {} of {expected} dead letters", out.len());
            continue;
        };
        let m = m.unwrap();
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                let v =
                    h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
                headers.insert(h.key.to_owned(), v);
            }
        }
        out.push(DeadLetter {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            headers,
        });
        assert!(out.len() <= expected + 1_000, "far more dead letters than {expected}");
    }
}

// ------------------------------------------------------------------------------------------
// 1. Malformed records, bad timestamps and late records in generated traffic.

#[test]
fn malformed_future_and_late_records_are_rejected_counted_and_dead_lettered_exactly() {
    let Some(svc) = services("e2e input: rejections") else { return };
    let setup = Setup::new(&svc, "e2e_rej", 4);
    const COUNT: u64 = 4_000;
    let start = scenario_start();
    let cfg = ScenarioConfig {
        seed: 11,
        start_time_ms: Some(start),
        requests_per_second: 300.0,
        ..ScenarioConfig::default()
    };
    let truth = truth(&cfg, COUNT);
    generate(&setup, &cfg, COUNT, &[]);

    // The test's own records, all into partition 0 after the generated ones there. The anchor is
    // newer than every generated event: the K late records below are older than its watermark
    // (event time - 2 s lateness) by far more than a pane, so their panes had closed.
    let anchor = truth.last_event_ms + 1_000;
    let probe = |t: i64| json_event(t, "probe", "p1", 7.5, "ok");
    // Garbage that cannot decode (checked below with the engine's own decoder).
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let random: Vec<u8> = (0..64)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    let avro = Messages::new(
        Scenario::new(&cfg, 0).unwrap().events(),
        Encoder::new(Encoding::Avro, SchemaIds::default()),
    )
    .map(Result::unwrap)
    .find(|m| m.topic == TopicKind::Inference)
    .unwrap()
    .payload;
    let truncated = avro[..avro.len() / 2].to_vec();
    let no_model = format!(
        "{{\"event_time\": {anchor}, \"version\": \"p1\", \"latency_ms\": 3.0, \"status\": \"ok\"}}"
    )
    .into_bytes();
    let mut dec = InferenceDecoder::new(Format::Auto);
    assert!(dec.decode_one(&avro).is_ok(), "the untruncated datum decodes");
    for g in [&random, &truncated, &no_model, &Vec::new()] {
        assert!(dec.decode_one(g).is_err(), "garbage {g:?} decodes");
    }

    // (record, expected rejection reason or None when it must be counted)
    let rec = |value: Option<Vec<u8>>, timestamp: i64| Out {
        partition: 0,
        key: b"probe".to_vec(),
        value,
        timestamp,
    };
    let future = |i: i64| rec(Some(probe(anchor + 5 * 60_000 + i)), anchor + i); // 5 min ahead
    let late = |i: i64| rec(Some(probe(anchor - 60_000 - i)), anchor - 60_000 - i);
    let valid = |i: i64| rec(Some(probe(anchor + 100 * i)), anchor + 100 * i);
    let mine: Vec<(Out, Option<&str>)> = vec![
        (valid(0), None),
        (rec(Some(random.clone()), anchor), Some("malformed")),
        (future(1), Some("bad_timestamp")),
        (late(1), Some("late")),
        (rec(Some(truncated.clone()), anchor), Some("malformed")),
        (valid(1), None),
        (rec(Some(no_model.clone()), anchor), Some("malformed")),
        (future(2), Some("bad_timestamp")),
        (late(2), Some("late")),
        (rec(Some(Vec::new()), anchor), Some("malformed")),
        (valid(2), None),
        (rec(None, anchor), Some("tombstone")),
        (late(3), Some("late")),
        (future(3), Some("bad_timestamp")),
        (valid(3), None),
        (late(4), Some("late")),
        (valid(4), None),
    ];
    let records: Vec<Out> = mine.iter().map(|(r, _)| r.clone()).collect();
    let positions = produce(&svc.brokers, &setup.inference, &records);
    let mut expected_reasons: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, why) in &mine {
        if let Some(why) = why {
            *expected_reasons.entry((setup.inference.clone(), (*why).to_owned())).or_default() += 1;
        }
    }
    let rejected_total: u64 = expected_reasons.values().sum();
    let valid_probes = mine.iter().filter(|(_, w)| w.is_none()).count() as u64;
    let mut expected_counts = truth.counts.clone();
    expected_counts.insert(("probe".into(), "p1".into()), (valid_probes, 0));
    let expected_requests: u64 = expected_counts.values().map(|c| c.0).sum();
    let inference_records = truth.inference_messages + mine.len() as u64;

    let port = free_port();
    let mw = Instance::start("e2e_rej", &setup.config(port, ""), port);
    let began = Instant::now();
    wait_for(
        &mw,
        &setup,
        "every record is read, rejected or written",
        Duration::from_secs(180),
        |mw| {
            mw.metric(&format!("modelwatch_records_consumed_total{{topic=\"{}\"", setup.inference))
                as u64
                >= inference_records
                && rejected(mw).values().sum::<u64>() >= rejected_total
                && mw.metric("modelwatch_dead_letters_total") as u64 >= rejected_total
                && pane_requests(&setup) >= expected_requests
                && mw.metric("modelwatch_flushes_in_flight") == 0.0
        },
    );
    eprintln!("e2e_rej: consumed and written in {:?}", began.elapsed());

    // Rejections per (topic, reason), exactly: none on the metric topic, none of the
    // generated inference records.
    assert_eq!(rejected(&mw), expected_reasons, "modelwatch_events_rejected_total");
    assert_eq!(mw.metric("modelwatch_dead_letters_total") as u64, rejected_total);
    assert_eq!(mw.metric("modelwatch_dead_letter_failures_total"), 0.0);

    // Nothing else lost or added: requests and errors per (model, version).
    assert_eq!(pane_totals(&setup), expected_counts, "pane_stats totals");

    // The dead-letter topic holds exactly the rejected records, byte for byte, with their
    // provenance and reason.
    let got = dead_letters(
        &svc.brokers,
        &setup.dead_letters,
        rejected_total as usize,
        Duration::from_secs(60),
    );
    assert_eq!(got.len() as u64, rejected_total, "dead letters: {got:#?}");
    let mut by_source: BTreeMap<(i32, i64), &DeadLetter> = BTreeMap::new();
    for d in &got {
        assert_eq!(d.headers.get("modelwatch.source.topic"), Some(&setup.inference), "{d:?}");
        let p: i32 = d.headers["modelwatch.source.partition"].parse().unwrap();
        let o: i64 = d.headers["modelwatch.source.offset"].parse().unwrap();
        assert!(by_source.insert((p, o), d).is_none(), "dead-lettered twice: {d:?}");
    }
    for ((out, why), (p, o)) in mine.iter().zip(&positions) {
        let Some(why) = why else {
            assert!(!by_source.contains_key(&(*p, *o)), "valid record {p}/{o} dead-lettered");
            continue;
        };
        let d = by_source.get(&(*p, *o)).unwrap_or_else(|| panic!("no dead letter for {p}/{o}"));
        let reason = &d.headers["modelwatch.reason"];
        assert!(reason.starts_with(&format!("{why}:")), "{p}/{o}: reason {reason:?}, not {why}");
        assert_eq!(d.value, out.value, "{p}/{o} ({why}): value bytes differ");
        assert_eq!(d.key.as_deref(), Some(&out.key[..]), "{p}/{o}: key");
        assert_eq!(d.timestamp, Some(out.timestamp), "{p}/{o}: timestamp");
        assert_eq!(d.headers["modelwatch.source.timestamp"], out.timestamp.to_string());
    }
    let status = mw.stop();
    assert!(status.success(), "exit status {status:?}");
}

// ------------------------------------------------------------------------------------------
// 2. Input not keyed by model.

#[test]
fn input_not_keyed_by_model_is_counted_exactly_by_one_instance_and_reported() {
    let Some(svc) = services("e2e input: unkeyed") else { return };
    let setup = Setup::new(&svc, "e2e_unkeyed", 4);
    const COUNT: u64 = 30_000;
    let start = scenario_start();
    let cfg = ScenarioConfig {
        seed: 23,
        start_time_ms: Some(start),
        requests_per_second: 300.0,
        ..ScenarioConfig::default()
    };
    let truth = truth(&cfg, COUNT);
    // The random partitioner ignores the model keys: every version spreads over 4 partitions.
    generate(&setup, &cfg, COUNT, &[("partitioner", "random")]);

    let port = free_port();
    // A partition silent for idle_timeout (wall clock) stops holding back the windows of the
    // others: under a loaded machine a partition may deliver its first records seconds after
    // the others, so idleness gets more room here than the harness's 5 s (the backlog idle
    // timeout as the harness's, see Setup::config).
    let windows = "[windows]\nwindow = \"30s\"\nslide = \"5s\"\nallowed_lateness = \"2s\"\n\
                   idle_timeout = \"10s\"\nbacklog_idle_timeout = \"5m\"\n";
    let mw = Instance::start("e2e_unkeyed", &setup.config(port, windows), port);
    let expected: u64 = truth.counts.values().map(|c| c.0).sum();
    let began = Instant::now();
    wait_for(&mw, &setup, "every pane is written", Duration::from_secs(240), |mw| {
        pane_requests(&setup) >= expected && mw.metric("modelwatch_flushes_in_flight") == 0.0
    });
    eprintln!("e2e_unkeyed: written in {:?}", began.elapsed());
    assert_eq!(rejected(&mw), BTreeMap::new(), "nothing may be rejected");
    assert_eq!(pane_totals(&setup), truth.counts, "pane_stats totals");

    // p99 of a full window within 1% of the exact p99, for every version with enough requests.
    let end = (start + 60_000) / SLIDE_MS * SLIDE_MS;
    let mut checked = 0;
    for ((model, version), lat) in &truth.latencies {
        let in_window: Vec<f64> = lat
            .iter()
            .filter(|(t, _)| *t >= end - WINDOW_MS && *t < end)
            .map(|(_, l)| *l)
            .collect();
        if in_window.len() < 100 {
            continue;
        }
        checked += 1;
        let exact = nearest_rank(in_window.clone(), 0.99);
        let r = tsv(&setup.sql(&format!(
            "SELECT latency_p99_ms, requests FROM {{db}}.window_stats FINAL \
             WHERE model = '{model}' AND version = '{version}' AND window_end_ms = {end}"
        )));
        assert_eq!(r.len(), 1, "window {end} of {model}/{version} missing");
        let p99: f64 = r[0][0].parse().unwrap();
        let n: usize = r[0][1].parse().unwrap();
        if n != in_window.len() {
            // Which windows are short: every window of this version, against the truth.
            let rows = tsv(&setup.sql(&format!(
                "SELECT window_end_ms, requests, written_at_ms FROM {{db}}.window_stats FINAL \
                 WHERE model = '{model}' AND version = '{version}' ORDER BY window_end_ms"
            )));
            let short: Vec<String> = rows
                .iter()
                .filter_map(|r| {
                    let e: i64 = r[0].parse().ok()?;
                    let want = lat.iter().filter(|(t, _)| *t >= e - WINDOW_MS && *t < e).count();
                    (r[1] != want.to_string())
                        .then(|| format!("end {e}: {} of {want} (written at {})", r[1], r[2]))
                })
                .collect();
            panic!(
                "{model}/{version}: window ending {end} holds {n} requests, not {}; \
                 windows short of requests ({} of {}):\n{}",
                in_window.len(),
                short.len(),
                rows.len(),
                short.join("\n")
            );
        }
        assert!(
            (p99 - exact).abs() <= 0.01 * exact,
            "{model}/{version}: p99 {p99} vs exact {exact} over {n} requests"
        );
    }
    assert_eq!(checked, truth.counts.len(), "every version has 100 requests in the window");

    // Detected and reported (the check runs every 10 s).
    // Detected and reported: every version, in the inference stream and in the metric stream
    // (each is windowed, and checked, on its own). The gauge is refreshed every 10 s, from what
    // was read so far: wait until it counts them all.
    let spread = truth.counts.len() + truth.metric_keys.len();
    let several = |mw: &Instance| mw.metric("modelwatch_keys_in_several_partitions ") as usize;
    mw.wait_until(
        "keys_in_several_partitions counts every version",
        Duration::from_secs(60),
        |mw| several(mw) >= spread,
    );
    assert_eq!(several(&mw), spread, "versions in several partitions");
    mw.wait_until("the warning is logged", Duration::from_secs(30), |mw| {
        mw.log().contains("versions seen in several partitions")
    });
    let status = mw.stop();
    assert!(status.success(), "exit status {status:?}");
}

// ------------------------------------------------------------------------------------------
// 3. A flood of versions of one model against the version cap.

#[test]
fn a_flood_of_versions_is_capped_with_exact_rejections_and_bounded_memory() {
    let Some(svc) = services("e2e input: version flood") else { return };
    let setup = Setup::new(&svc, "e2e_flood", 4);
    const VERSIONS: usize = 10_000;
    const CAP: usize = 100;
    const PER_VERSION: usize = 3;
    let base = scenario_start();
    // Version v's events are consecutive, event time 2 ms apart, all in partition 0: the first
    // CAP versions in offset order are the first CAP seen, whatever the batching.
    let records = |versions: std::ops::Range<usize>| -> Vec<Out> {
        versions
            .flat_map(|v| (0..PER_VERSION).map(move |e| (v, e)))
            .map(|(v, e)| {
                let t = base + 2 * (v * PER_VERSION + e) as i64;
                let status = if e == 2 { "error" } else { "ok" };
                Out {
                    partition: 0,
                    key: b"flood".to_vec(),
                    value: Some(json_event(
                        t,
                        "flood",
                        &format!("v{v:05}"),
                        5.0 + e as f64,
                        status,
                    )),
                    timestamp: t,
                }
            })
            .collect()
    };

    let port = free_port();
    let extra = format!("[limits]\nmax_versions_per_model = {CAP}\n");
    let mw = Instance::start("e2e_flood", &setup.config(port, &extra), port);
    let consumed = |mw: &Instance| {
        mw.metric(&format!("modelwatch_records_consumed_total{{topic=\"{}\"", setup.inference))
            as usize
    };
    let active = |mw: &Instance| mw.metric("modelwatch_active_versions ") as usize;

    // Phase 1: exactly CAP versions; the peak RSS with them is the baseline.
    produce(&svc.brokers, &setup.inference, &records(0..CAP));
    wait_for(&mw, &setup, "the admitted versions are read", Duration::from_secs(60), |mw| {
        consumed(mw) >= CAP * PER_VERSION && active(mw) == CAP
    });
    let baseline_kb = mw.proc_status_kb("VmHWM").unwrap();

    // Phase 2: the flood.
    let flood = records(CAP..VERSIONS);
    let over = (flood.len()) as u64;
    let began = Instant::now();
    produce(&svc.brokers, &setup.inference, &flood);
    let max_active = Cell::new(0_usize);
    wait_for(
        &mw,
        &setup,
        "the flood is read and the panes written",
        Duration::from_secs(180),
        |mw| {
            max_active.set(max_active.get().max(active(mw)));
            consumed(mw) >= VERSIONS * PER_VERSION
                && mw.metric("modelwatch_dead_letters_total") as u64 >= over
                && pane_requests(&setup) >= (CAP * PER_VERSION) as u64
                && mw.metric("modelwatch_flushes_in_flight") == 0.0
        },
    );
    max_active.set(max_active.get().max(active(&mw)));
    let peak_kb = mw.proc_status_kb("VmHWM").unwrap();
    eprintln!(
        "e2e_flood: flood read in {:?}; VmHWM {baseline_kb} kB with {CAP} versions, \
         {peak_kb} kB after {VERSIONS}; most versions tracked {}",
        began.elapsed(),
        max_active.get()
    );

    // Exactly the events of the versions past the cap were rejected, for that reason only.
    let want: BTreeMap<(String, String), u64> =
        [((setup.inference.clone(), "over_version_cap".to_owned()), over)].into();
    assert_eq!(rejected(&mw), want, "modelwatch_events_rejected_total");
    assert_eq!(mw.metric("modelwatch_dead_letters_total") as u64, over);
    // State stayed capped (no metric events here, so the metric stream tracks none).
    assert!(max_active.get() <= CAP, "active versions reached {}", max_active.get());
    assert_eq!(active(&mw), CAP);
    // Memory: beyond the state of the CAP admitted versions, the flood may only cost transient
    // I/O buffers, each bounded by configuration: the consumer's prefetch (16 MiB,
    // `queued.max.messages.kbytes` of the default SourceOptions) and the dead-letter producer's
    // records in flight (at most 10,000 of ~300 bytes with their headers: ~3 MiB, ~8 MiB with
    // librdkafka's per-message overhead); 8 MiB more for allocator slack. With the cap lifted
    // the same flood (10,000 tracked versions) peaked at 68 MB against 26.5 MB with 100
    // versions, +42 MB: past this bound, so the bound can fail.
    let bound_kb = baseline_kb + 32 * 1024;
    assert!(
        peak_kb < bound_kb,
        "peak RSS {peak_kb} kB over {bound_kb} kB ({baseline_kb} kB with {CAP} versions + 32 MiB)"
    );

    // The rows cover exactly the admitted versions, with all their events.
    let rows = tsv(&setup.sql(
        "SELECT version, sum(requests), sum(errors) FROM {db}.pane_stats FINAL \
         WHERE model = 'flood' GROUP BY version ORDER BY version",
    ));
    let got: BTreeMap<String, (u64, u64)> = rows
        .iter()
        .map(|r| (r[0].clone(), (r[1].parse().unwrap(), r[2].parse().unwrap())))
        .collect();
    let admitted: BTreeMap<String, (u64, u64)> =
        (0..CAP).map(|v| (format!("v{v:05}"), (PER_VERSION as u64, 1))).collect();
    assert_eq!(got, admitted, "pane_stats versions");
    let models: BTreeSet<String> =
        tsv(&setup.sql("SELECT DISTINCT model FROM {db}.pane_stats FINAL"))
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
    assert_eq!(models, BTreeSet::from(["flood".to_owned()]));
    let status = mw.stop();
    assert!(status.success(), "exit status {status:?}");
}
