//! The source and the dead-letter producer against a real broker (`MODELWATCH_TEST_BROKERS`,
//! required when `CI=true`). Every test uses its own random topic and group.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use common::{create_topics, fresh, real_broker};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use modelwatch_kafka::{
    DeadLetterOptions, DeadLetterProducer, Record, Source, SourceEvent, SourceOptions,
    dead_letter::{
        HEADER_REASON, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TIMESTAMP,
        HEADER_SOURCE_TOPIC,
    },
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
    producer::{BaseProducer, BaseRecord, Producer},
};

fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topics(brokers, &[topic], partitions);
}

/// Produces `per_partition` records to each of `partitions`, keyed and valued `p:i` where `i`
/// continues from `from`.
fn produce(brokers: &str, topic: &str, partitions: i32, from: usize, per_partition: usize) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for p in 0..partitions {
        for i in from..from + per_partition {
            let v = format!("{p}:{i}");
            let mut r = BaseRecord::to(topic).partition(p).key(&v).payload(&v);
            loop {
                match producer.send(r) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        r = back;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn options(brokers: &str, group: &str, topic: &str) -> SourceOptions {
    let mut o = SourceOptions::new(brokers, group, [topic]);
    o.max_batch = 500;
    o.revoke_timeout = Duration::from_secs(20);
    o
}

/// Records until `n` arrived or `timeout` passed; acknowledges revocations.
fn collect(source: &Source, n: usize, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        match source.recv_timeout(Duration::from_millis(100)).unwrap() {
            Some(SourceEvent::Batch(b)) => out.extend(b),
            Some(SourceEvent::Revoked(r)) => r.ack(),
            None => {}
        }
    }
    out
}

/// Offsets per partition, in arrival order.
fn offsets(records: &[Record]) -> BTreeMap<i32, Vec<i64>> {
    let mut m: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in records {
        m.entry(r.partition).or_default().push(r.offset);
    }
    m
}

#[test]
fn consumes_10k_records_once_each_in_offset_order() {
    let Some(brokers) = real_broker() else { return };
    let topic = fresh("mw-src-10k");
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, 4, 0, 2_500);
    let source = Source::start(&options(&brokers, &fresh("g"), &topic), |_, _| None).unwrap();
    let started = Instant::now();
    let got = collect(&source, 10_000, Duration::from_secs(60));
    eprintln!("consumed {} records in {:?}", got.len(), started.elapsed());
    assert_eq!(got.len(), 10_000);
    for (p, offs) in offsets(&got) {
        assert_eq!(offs, (0..2_500).collect::<Vec<i64>>(), "partition {p}");
    }
    for r in &got {
        let want = format!("{}:{}", r.partition, r.offset);
        assert_eq!(r.payload.as_deref(), Some(want.as_bytes()));
        assert_eq!(r.key.as_deref(), Some(want.as_bytes()));
        assert_eq!(&*r.topic, topic);
        assert!(r.timestamp.is_some());
    }
    assert!(collect(&source, 1, Duration::from_secs(2)).is_empty(), "more than 10,000");
    source.close().unwrap();
}

#[test]
fn starts_at_the_resume_offset_of_the_checkpoint() {
    let Some(brokers) = real_broker() else { return };
    let topic = fresh("mw-src-resume");
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, 4, 0, 1_000);
    let t = topic.clone();
    let resume = move |topic: &str, p: i32| (topic == t && p == 0).then_some(500);
    let source = Source::start(&options(&brokers, &fresh("g"), &topic), resume).unwrap();
    let got = collect(&source, 3_500, Duration::from_secs(60));
    let by_partition = offsets(&got);
    assert_eq!(by_partition[&0], (500..1_000).collect::<Vec<i64>>());
    for p in 1..4 {
        assert_eq!(by_partition[&p], (0..1_000).collect::<Vec<i64>>(), "partition {p}");
    }
    assert!(collect(&source, 1, Duration::from_secs(1)).is_empty());
    source.close().unwrap();
}

fn committed(brokers: &str, group: &str, topic: &str) -> BTreeMap<i32, Offset> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, 3);
    let c = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    c.elements().iter().map(|e| (e.partition(), e.offset())).collect()
}

#[test]
fn commits_exactly_what_the_caller_commits_and_nothing_on_close() {
    let Some(brokers) = real_broker() else { return };
    let topic = fresh("mw-src-commit");
    let group = fresh("g");
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, 4, 0, 100);
    let source = Source::start(&options(&brokers, &group, &topic), |_, _| None).unwrap();
    assert_eq!(collect(&source, 400, Duration::from_secs(60)).len(), 400);
    source.commit(&[(&topic, 0, 50), (&topic, 1, 100)]).unwrap();
    let c = committed(&brokers, &group, &topic);
    assert_eq!(c[&0], Offset::Offset(50));
    assert_eq!(c[&1], Offset::Offset(100));
    assert_eq!(c[&2], Offset::Invalid);
    assert_eq!(c[&3], Offset::Invalid);
    source.close().unwrap();
    // Closing committed nothing of its own (the position is 100 everywhere).
    let c = committed(&brokers, &group, &topic);
    assert_eq!((c[&0], c[&2]), (Offset::Offset(50), Offset::Invalid));

    // A new source of the group starts at the committed offsets.
    let source = Source::start(&options(&brokers, &group, &topic), |_, _| None).unwrap();
    let got = offsets(&collect(&source, 250, Duration::from_secs(60)));
    assert_eq!(got[&0], (50..100).collect::<Vec<i64>>());
    assert!(!got.contains_key(&1));
    assert_eq!(got[&2], (0..100).collect::<Vec<i64>>());
    assert_eq!(got[&3], (0..100).collect::<Vec<i64>>());
    assert!(collect(&source, 1, Duration::from_secs(1)).is_empty());
    source.close().unwrap();
}

#[test]
fn a_paused_partition_stops_while_others_flow_until_resumed() {
    let Some(brokers) = real_broker() else { return };
    let topic = fresh("mw-src-pause");
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, 4, 0, 100);
    let source = Source::start(&options(&brokers, &fresh("g"), &topic), |_, _| None).unwrap();
    assert_eq!(collect(&source, 400, Duration::from_secs(60)).len(), 400);

    source.pause(&[(&topic, 0)]).unwrap();
    produce(&brokers, &topic, 4, 100, 100);
    let got = collect(&source, 300, Duration::from_secs(30));
    let by_partition = offsets(&got);
    assert_eq!(got.len(), 300, "{:?}", by_partition.keys());
    assert!(!by_partition.contains_key(&0));
    assert!(collect(&source, 1, Duration::from_secs(2)).is_empty(), "paused partition delivered");

    source.resume(&[(&topic, 0)]).unwrap();
    let got = offsets(&collect(&source, 100, Duration::from_secs(30)));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0]);
    assert_eq!(got[&0], (100..200).collect::<Vec<i64>>());
    source.close().unwrap();
}

#[test]
fn a_second_member_triggers_an_acknowledged_revoke_and_a_2_plus_2_split() {
    let Some(brokers) = real_broker() else { return };
    let topic = fresh("mw-src-rebalance");
    let group = fresh("g");
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, 4, 0, 100);
    let a = Source::start(&options(&brokers, &group, &topic), |_, _| None).unwrap();
    assert_eq!(collect(&a, 400, Duration::from_secs(60)).len(), 400);

    let b = Source::start(&options(&brokers, &group, &topic), |_, _| None).unwrap();
    // A sees the revocation, commits what it processed (everything) and acknowledges.
    let deadline = Instant::now() + Duration::from_secs(60);
    let revoked = loop {
        assert!(Instant::now() < deadline, "no revocation");
        match a.recv_timeout(Duration::from_millis(100)).unwrap() {
            Some(SourceEvent::Revoked(r)) => break r,
            Some(SourceEvent::Batch(batch)) => panic!("unexpected records {batch:?}"),
            None => {}
        }
        if let Some(SourceEvent::Batch(batch)) = b.recv_timeout(Duration::from_millis(10)).unwrap()
        {
            panic!("b read before a let go: {batch:?}");
        }
    };
    let mut parts = revoked.partitions.clone();
    parts.sort();
    assert_eq!(parts, (0..4).map(|p| (topic.clone(), p)).collect::<Vec<_>>());
    a.commit(&(0..4).map(|p| (topic.as_str(), p, 100)).collect::<Vec<_>>()).unwrap();
    revoked.ack();

    // New records go to whichever member owns their partition; the two split 2 + 2.
    produce(&brokers, &topic, 4, 100, 100);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while from_a.len() + from_b.len() < 400 && Instant::now() < deadline {
        for (source, out) in [(&a, &mut from_a), (&b, &mut from_b)] {
            match source.recv_timeout(Duration::from_millis(20)).unwrap() {
                Some(SourceEvent::Batch(batch)) => out.extend(batch),
                Some(SourceEvent::Revoked(r)) => r.ack(),
                None => {}
            }
        }
    }
    let (oa, ob) = (offsets(&from_a), offsets(&from_b));
    eprintln!("a owns {:?}, b owns {:?}", oa.keys(), ob.keys());
    assert_eq!((oa.len(), ob.len()), (2, 2));
    let all: BTreeSet<i32> = oa.keys().chain(ob.keys()).copied().collect();
    assert_eq!(all, (0..4).collect());
    for offs in oa.values().chain(ob.values()) {
        assert_eq!(*offs, (100..200).collect::<Vec<i64>>());
    }
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn dead_letters_keep_the_bytes_and_carry_provenance_headers() {
    let Some(brokers) = real_broker() else { return };
    let dlq = fresh("mw-dlq");
    create_topic(&brokers, &dlq, 1);
    let mut producer = DeadLetterProducer::new(&DeadLetterOptions::new(&brokers, &dlq)).unwrap();
    let records: Vec<Record> = (0..100)
        .map(|i| Record {
            topic: "inference".into(),
            partition: i % 4,
            offset: 1_000 + i64::from(i),
            timestamp: Some(1_779_000_000_000 + i64::from(i)),
            key: (i % 10 != 0).then(|| vec![0xff, i as u8]),
            payload: Some(vec![0x00, 0xc3, i as u8, 0x28]),
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        producer.send(r, &std::io::Error::other(format!("bad record {i}"))).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let stats = producer.stats();
    assert_eq!((stats.sent, stats.delivered, stats.failed), (100, 100, 0));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", fresh("g"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < 100 && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        let want = &records[n];
        assert_eq!(m.key(), want.key.as_deref());
        assert_eq!(m.payload(), want.payload.as_deref());
        assert_eq!(m.timestamp().to_millis(), want.timestamp);
        let headers: BTreeMap<String, Vec<u8>> = m
            .headers()
            .unwrap()
            .iter()
            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
            .collect();
        let text = |k: &str| String::from_utf8(headers[k].clone()).unwrap();
        assert_eq!(headers.len(), 5);
        assert_eq!(text(HEADER_REASON), format!("bad record {n}"));
        assert_eq!(text(HEADER_SOURCE_TOPIC), "inference");
        assert_eq!(text(HEADER_SOURCE_PARTITION), want.partition.to_string());
        assert_eq!(text(HEADER_SOURCE_OFFSET), want.offset.to_string());
        assert_eq!(text(HEADER_SOURCE_TIMESTAMP), want.timestamp.unwrap().to_string());
        n += 1;
    }
    assert_eq!(n, 100);
}

/// The project's Python (`$MODELWATCH_PYVENV`, default `$MODELWATCH_CACHE/pyvenv`) when it has
/// confluent-kafka (`deploy/local/selftest.sh` installs it); `None` with a note outside CI.
fn python_with_confluent_kafka() -> Option<std::path::PathBuf> {
    let venv =
        std::env::var_os("MODELWATCH_PYVENV").map(std::path::PathBuf::from).unwrap_or_else(|| {
            let cache = std::env::var_os("MODELWATCH_CACHE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap())
                        .join(".cache/modelwatch")
                });
            cache.join("pyvenv")
        });
    let python = venv.join("bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} cannot import confluent_kafka but CI=true (deploy/local/selftest.sh installs it)",
        python.display()
    );
    eprintln!("note: skipping: {} cannot import confluent_kafka", python.display());
    None
}

/// Our librdkafka is built without zstd (see the README). A zstd batch is not delivered and
/// the records after it in its partition wait: nothing is skipped, and the consumer errors
/// librdkafka reports on every retry of the fetch are counted (the engine publishes the count
/// as `modelwatch_kafka_consumer_errors_total`; the poll thread logs the cause).
#[test]
fn a_zstd_batch_holds_its_partition_and_counts_consumer_errors() {
    let Some(brokers) = real_broker() else { return };
    let Some(python) = python_with_confluent_kafka() else { return };
    let topic = fresh("mw-src-zstd");
    create_topic(&brokers, &topic, 1);
    // Three batches of ten, produced by confluent-kafka (its librdkafka has zstd): lz4, zstd, lz4.
    let script = r#"
import sys
from confluent_kafka import Producer
brokers, topic = sys.argv[1], sys.argv[2]
for n, codec in enumerate(["lz4", "zstd", "lz4"]):
    p = Producer({"bootstrap.servers": brokers, "compression.type": codec, "linger.ms": 50})
    for i in range(10):
        p.produce(topic, value=f"{codec}:{n * 10 + i}".encode(), partition=0)
    assert p.flush(30) == 0, "undelivered"
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &brokers, &topic])
        .output()
        .unwrap();
    assert!(out.status.success(), "produce: {}", String::from_utf8_lossy(&out.stderr));

    let source = Source::start(&options(&brokers, &fresh("g"), &topic), |_, _| None).unwrap();
    let got = collect(&source, 10, Duration::from_secs(30));
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(values, (0..10).map(|i| format!("lz4:{i}")).collect::<Vec<_>>());
    // The zstd batch: errors, and neither it nor the lz4 batch behind it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.poll_errors() < 2 && Instant::now() < deadline {
        let more = collect(&source, 1, Duration::from_millis(500));
        assert!(more.is_empty(), "delivered past the zstd batch: {more:?}");
    }
    assert!(source.poll_errors() >= 2, "errors: {}", source.poll_errors());
    assert!(collect(&source, 1, Duration::from_secs(2)).is_empty());
    source.close().unwrap();
}
