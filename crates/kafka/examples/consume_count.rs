//! Counts the records of every partition of a topic with a plain rdkafka consumer, from the
//! beginning until nothing arrives for 5 s. Usage: consume_count BROKERS TOPIC PARTITIONS
//! [KEY=VALUE ...] (further librdkafka properties, e.g. modelwatch's fetch settings).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic, n) = (&args[1], &args[2], args[3].parse::<i32>().unwrap());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "consume-count")
        .set("enable.auto.commit", "false");
    for kv in &args[4..] {
        let (k, v) = kv.split_once('=').expect("KEY=VALUE");
        config.set(k, v);
    }
    let c: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut counts = vec![0u64; n as usize];
    let mut last = vec![-1i64; n as usize];
    let mut quiet = Instant::now();
    let start = Instant::now();
    while quiet.elapsed() < Duration::from_secs(5) {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                counts[m.partition() as usize] += 1;
                last[m.partition() as usize] = m.offset();
                quiet = Instant::now();
            }
            Some(Err(e)) => println!("error: {e}"),
            None => {}
        }
    }
    for p in 0..n {
        let w = c.fetch_watermarks(topic, p, Duration::from_secs(5));
        println!(
            "partition {p}: {} records, last offset {}, watermarks {w:?}",
            counts[p as usize], last[p as usize]
        );
    }
    println!("elapsed {:?}", start.elapsed() - Duration::from_secs(5));
}
