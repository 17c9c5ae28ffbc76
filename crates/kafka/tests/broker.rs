//! `run` against librdkafka's in-process mock cluster (always), a dead address (always) and a
//! real broker (`MODELWATCH_TEST_BROKERS`, required when `CI=true`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use common::{create_topics, fresh, real_broker};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use modelwatch_codec::{Format, InferenceDecoder, MetricDecoder};
use modelwatch_kafka::{
    Encoder, GenError, GenOptions, Messages, Pacing, Scenario, ScenarioConfig, StopReason,
    TopicKind, run,
};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
    mocking::MockCluster,
};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn run_delivers_to_the_mock_cluster_and_reports() {
    let cluster = MockCluster::new(1).unwrap();
    let opts = GenOptions {
        brokers: cluster.bootstrap_servers(),
        inference_topic: fresh("inference"),
        metric_topic: fresh("metrics"),
        count: Some(3_000),
        scenario: ScenarioConfig { start_time_ms: Some(now_ms()), ..ScenarioConfig::default() },
        ..GenOptions::default()
    };
    cluster.create_topic(&opts.inference_topic, 4, 1).unwrap();
    cluster.create_topic(&opts.metric_topic, 1, 1).unwrap();
    let report = run(opts).unwrap();
    assert_eq!((report.messages(), report.delivered, report.failed), (3_000, 3_000, 0));
    assert_eq!(report.stopped_by, StopReason::Count);
    // 3,000 messages at 200 requests/s span 15 s of event time: one metric tick of 48 series.
    assert_eq!(report.metric_messages, 48);
    assert!(report.bytes > 3_000 * 100 && report.messages_per_second > 0.0);
}

#[test]
fn run_stops_at_the_event_time_duration() {
    let cluster = MockCluster::new(1).unwrap();
    let start = now_ms();
    let opts = GenOptions {
        brokers: cluster.bootstrap_servers(),
        inference_topic: fresh("inference"),
        metric_topic: fresh("metrics"),
        count: None,
        duration: Some(Duration::from_secs(5)),
        scenario: ScenarioConfig { start_time_ms: Some(start), ..ScenarioConfig::default() },
        ..GenOptions::default()
    };
    cluster.create_topic(&opts.inference_topic, 1, 1).unwrap();
    cluster.create_topic(&opts.metric_topic, 1, 1).unwrap();
    let report = run(opts).unwrap();
    assert_eq!(report.stopped_by, StopReason::Duration);
    assert!(report.last_event_time_ms.unwrap() < start + 5_000);
    // About 200 requests per second for 5 s.
    assert!((800..1_200).contains(&report.inference_messages), "{report:?}");
}

#[test]
fn undelivered_messages_are_an_error_with_the_report() {
    let opts = GenOptions {
        // Nothing listens on port 1 of the loopback interface.
        brokers: "127.0.0.1:1".into(),
        count: Some(10),
        delivery_timeout: Duration::from_secs(1),
        scenario: ScenarioConfig { start_time_ms: Some(now_ms()), ..ScenarioConfig::default() },
        ..GenOptions::default()
    };
    match run(opts) {
        Err(GenError::Undelivered { report, .. }) => {
            assert_eq!((report.messages(), report.delivered), (10, 0));
        }
        other => panic!("expected undelivered, got {other:?}"),
    }
}

#[test]
fn produces_10k_events_to_a_real_broker_and_reads_them_back() {
    let Some(brokers) = real_broker() else { return };
    let inference_topic = fresh("modelwatch-gen-inference");
    let metric_topic = fresh("modelwatch-gen-metrics");
    create_topics(&brokers, &[&inference_topic, &metric_topic], 4);

    let scenario = ScenarioConfig {
        seed: 99,
        start_time_ms: Some(now_ms()),
        // A tick every 5 s: about 5% metric events.
        metrics: modelwatch_kafka::scenario::MetricsConfig {
            enabled: true,
            interval: Duration::from_secs(5),
        },
        ..ScenarioConfig::default()
    };
    let opts = GenOptions {
        brokers: brokers.clone(),
        inference_topic: inference_topic.clone(),
        metric_topic: metric_topic.clone(),
        count: Some(10_000),
        max_wall_time: Duration::from_secs(120),
        scenario: scenario.clone(),
        ..GenOptions::default()
    };
    let encoding = opts.encoding;
    let ids = opts.schema_ids;
    let started = Instant::now();
    let report = run(opts).unwrap();
    eprintln!("produced {report:?} in {:?}", started.elapsed());
    assert_eq!((report.messages(), report.delivered), (10_000, 10_000));
    assert!(report.metric_messages > 0 && report.inference_messages > 9_000);

    // What the generator should have sent, per topic and key.
    let s = Scenario::new(&scenario, 0).unwrap();
    let mut expected: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for m in Messages::new(s.events(), Encoder::new(encoding, ids)).take(10_000) {
        let m = m.unwrap();
        *expected.entry((m.topic == TopicKind::Inference, m.key.to_owned())).or_default() += 1;
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", fresh("modelwatch-gen-test"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&inference_topic, &metric_topic]).unwrap();
    let mut got: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let mut partitions_of_key: HashMap<(bool, String), HashSet<i32>> = HashMap::new();
    let mut inference = InferenceDecoder::new(Format::Avro);
    let mut metric = MetricDecoder::new(Format::Avro);
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while n < 10_000 && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else { continue };
        let msg = msg.unwrap();
        let is_inference = msg.topic() == inference_topic;
        let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
        let payload = msg.payload().unwrap();
        let model = if is_inference {
            inference.decode_one(payload).unwrap().model().to_owned()
        } else {
            metric.decode_one(payload).unwrap().model().to_owned()
        };
        assert_eq!(key, model, "the key is the model name");
        partitions_of_key.entry((is_inference, key.clone())).or_default().insert(msg.partition());
        *got.entry((is_inference, key)).or_default() += 1;
        n += 1;
    }
    // Nothing more arrives.
    let extra = consumer.poll(Duration::from_secs(2));
    assert!(extra.is_none(), "more than 10,000 messages");
    assert_eq!(n, 10_000, "consumed {n} of 10,000 in time");
    assert_eq!(got, expected);
    for (key, partitions) in partitions_of_key {
        assert_eq!(partitions.len(), 1, "{key:?} is spread over {partitions:?}");
    }
}

#[test]
fn real_time_pacing_follows_event_time_at_the_speedup() {
    let cluster = MockCluster::new(1).unwrap();
    let opts = GenOptions {
        brokers: cluster.bootstrap_servers(),
        inference_topic: fresh("inference"),
        metric_topic: fresh("metrics"),
        count: None,
        // 3 s of event time at 10x: about 0.3 s of wall time.
        duration: Some(Duration::from_secs(3)),
        pacing: Pacing::RealTime { speedup: 10.0 },
        scenario: ScenarioConfig { start_time_ms: Some(now_ms()), ..ScenarioConfig::default() },
        ..GenOptions::default()
    };
    cluster.create_topic(&opts.inference_topic, 1, 1).unwrap();
    cluster.create_topic(&opts.metric_topic, 1, 1).unwrap();
    let report = run(opts).unwrap();
    assert_eq!(report.stopped_by, StopReason::Duration);
    let span = (report.last_event_time_ms.unwrap() - report.first_event_time_ms.unwrap()) as f64;
    // The wall time covers the event-time span divided by the speedup (plus the flush).
    assert!(report.elapsed.as_secs_f64() >= span / 1000.0 / 10.0 * 0.95, "{report:?}");
    assert!(report.elapsed < Duration::from_secs(3), "{report:?}");
}
