//! Catch-up against the real broker and ClickHouse: how fast modelwatch reads a backlog compared
//! with a bare consumer, and what it costs in CPU.
//!
//! A fresh 4-partition topic is preloaded with N bare-Avro records (default 500,000; 50 models
//! x baseline + canary = 100 versions, 20 numeric and 2 categorical features, 10,000 events/s
//! of event time starting three hours ago) by `modelwatch_kafka::run`. Then, in rounds (the
//! order alternating, to show the noise and any cache effect of reading the topic first):
//! - **consume only**: an rdkafka `BaseConsumer` with the engine's exact client configuration
//!   (`SourceOptions::client_config()`, a fresh group) polls every record and touches its
//!   payload;
//! - **modelwatch**: the real `modelwatch_engine::run` (ClickHouse sink on a fresh, migrated
//!   database; a fresh group; the binary's defaults) until its `records_consumed` metric
//!   reaches N, then stopped through the stop flag (it flushes and checkpoints).
//!
//! Rates are measured from the first record seen to the last (group join excluded; the join
//! time is printed apart); counts are sampled every 10 ms (the engine here publishes its
//! counters every 10 ms instead of the binary's 250 ms, so its last record is not seen up to a
//! quarter of a second late; each change is timed when seen). CPU is this process's user + system time
//! over each phase (the phases do not overlap; the engine's includes its stop and final flush,
//! and the ClickHouse server's own CPU is not included).
//!
//! Run (services needed, else it prints a skip note):
//! ```text
//! deploy/local/services.sh up
//! set -a; source ~/.cache/modelwatch/run/services.env; set +a
//! cargo bench -p modelwatch-benches --bench catchup
//! ```
//! `MODELWATCH_BENCH_SINK=null` gives the engine the null sink instead of ClickHouse (to see
//! what the inserts cost). `MODELWATCH_BENCH_WATCH_PIDS=broker=PID,clickhouse=PID` also prints those processes' CPU
//! seconds over each phase (on a small machine they compete with the engine for the cores).
//! `MODELWATCH_BENCH_RECORDS` (default 500000) and `MODELWATCH_BENCH_ROUNDS` (default 2)
//! change the size. The shared broker of `services.sh` stores in SQLite and takes minutes to
//! ingest half a million records (and slows everyone else's tests meanwhile): point
//! `MODELWATCH_TEST_BROKERS` at a private in-memory broker for this benchmark (see
//! benches/README.md). Both phases read from the same broker, so the ratio holds either way,
//! but the absolute rates are the broker's.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use modelwatch_benches::live::{
    Engine, Progress, cpu_seconds, cpu_seconds_of, create_topic, delete_topic, fresh, gen_options,
    runtime, services, store, wall_ms, watched_pids,
};
use modelwatch_kafka::SourceOptions;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Event time per wall second of the preloaded traffic (100 per version).
const RPS: f64 = 10_000.0;
/// Longest time a phase may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Phase {
    name: &'static str,
    records: u64,
    progress: Progress,
    cpu_s: f64,
    /// CPU seconds of the watched processes (the broker, ClickHouse) over the phase.
    others: Vec<(String, f64)>,
}

/// CPU seconds of the watched processes so far.
fn others_cpu() -> Vec<(String, f64)> {
    watched_pids().into_iter().map(|(name, pid)| (name, cpu_seconds_of(pid))).collect()
}

fn delta(after: Vec<(String, f64)>, before: &[(String, f64)]) -> Vec<(String, f64)> {
    after.into_iter().zip(before).map(|((n, a), (_, b))| (n, a - b)).collect()
}

impl Phase {
    fn print(&self, n: u64) {
        println!(
            "  {:<13} {:>9} records  {:>9.0} rec/s (first to last record)  join {:.2} s  \
             total {:.2} s  CPU {:.2} s = {:.2} CPU s per million records",
            self.name,
            self.records,
            self.progress.rate(),
            self.progress.join_seconds(),
            self.progress.total_seconds(),
            self.cpu_s,
            self.cpu_s / n as f64 * 1e6,
        );
        for (name, cpu) in &self.others {
            println!("  {:<13} CPU {cpu:.2} s over the phase", format!("({name})"));
        }
    }
}

fn consume_only(brokers: &str, topic: &str, n: u64) -> Result<Phase, String> {
    let group = fresh("mw_bench_consume");
    let opts = SourceOptions::new(brokers, &group, [topic]);
    let consumer: BaseConsumer =
        opts.client_config().create().map_err(|e| format!("consumer: {e}"))?;
    let others0 = others_cpu();
    let cpu0 = cpu_seconds();
    let mut progress = Progress::start();
    consumer.subscribe(&[topic]).map_err(|e| format!("subscribe: {e}"))?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let (mut count, mut bytes) = (0u64, 0usize);
    while count < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                count += 1;
                bytes += black_box(m.payload()).map_or(0, <[u8]>::len);
                if count == 1 || count.is_multiple_of(1024) || count == n {
                    progress.note(count);
                }
            }
            Some(Err(e)) => eprintln!("consume-only: poll error: {e}"),
            None => {}
        }
    }
    let cpu_s = cpu_seconds() - cpu0;
    let others = delta(others_cpu(), &others0);
    black_box(bytes);
    drop(consumer);
    Ok(Phase { name: "consume-only", records: count, progress, cpu_s, others })
}

fn modelwatch(
    brokers: &str,
    url: &str,
    topic: &str,
    n: u64,
    rt: &tokio::runtime::Runtime,
) -> Result<Phase, String> {
    let db = fresh("mw_bench");
    let (store, writer) = store(rt, url, &db).map_err(|e| format!("store: {e}"))?;
    let group = fresh("mw_bench_engine");
    let others0 = others_cpu();
    let cpu0 = cpu_seconds();
    let mut progress = Progress::start();
    let null = std::env::var("MODELWATCH_BENCH_SINK").as_deref() == Ok("null");
    let writer = if null { None } else { Some(writer) };
    let engine = Engine::start(brokers, topic, &group, store.clone(), writer, rt);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut seen = 0;
    while seen < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        seen = engine.metrics.snapshot().records;
        progress.note(seen);
    }
    let report = engine.stop()?;
    let cpu_s = cpu_seconds() - cpu0;
    let others = delta(others_cpu(), &others0);
    let sql = format!("DROP DATABASE IF EXISTS `{db}`");
    let _ = rt.block_on(store.client().query(&sql).execute());
    if report.records < n {
        return Err(format!("modelwatch consumed {} of {n} records", report.records));
    }
    Ok(Phase { name: "modelwatch", records: report.records, progress, cpu_s, others })
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without `--bench`: skip there (this
    // takes a minute and loads the services).
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("note: the catch-up benchmark runs under `cargo bench` only");
        return;
    }
    let Some(svc) = services("catch-up") else { return };
    let n: u64 = env_or("MODELWATCH_BENCH_RECORDS", 500_000);
    let rounds: usize = env_or("MODELWATCH_BENCH_ROUNDS", 2);
    let topic = fresh("mw_bench_catchup");
    if let Err(e) = create_topic(&svc.brokers, &topic, 4) {
        panic!("{e}");
    }
    let start_ms = (wall_ms() - 3 * 3_600_000) / 60_000 * 60_000;
    let t = Instant::now();
    let gen_report = modelwatch_kafka::run(gen_options(&svc.brokers, &topic, n, RPS, start_ms))
        .unwrap_or_else(|e| panic!("preloading: {e}"));
    assert_eq!((gen_report.delivered, gen_report.failed), (n, 0), "preload delivered");
    println!(
        "preloaded {n} bare-Avro records ({:.0} bytes each, 100 versions, 20 features) into \
         {topic} (4 partitions) in {:.1} s",
        gen_report.bytes as f64 / n as f64,
        t.elapsed().as_secs_f64()
    );

    let rt = runtime();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        println!(
            "round {} ({}):",
            round + 1,
            if round % 2 == 0 { "consume-only first" } else { "modelwatch first" }
        );
        let (a, b) = if round % 2 == 0 {
            let a = consume_only(&svc.brokers, &topic, n);
            let b = modelwatch(&svc.brokers, &svc.clickhouse_url, &topic, n, &rt);
            (a, b)
        } else {
            let b = modelwatch(&svc.brokers, &svc.clickhouse_url, &topic, n, &rt);
            let a = consume_only(&svc.brokers, &topic, n);
            (a, b)
        };
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => panic!("round {}: {a:?} / {b:?}", round + 1),
        };
        a.print(n);
        b.print(n);
        let ratio = b.progress.rate() / a.progress.rate();
        println!(
            "  ratio modelwatch / consume-only: {ratio:.3} (target >= 0.9); with the group \
             join: {:.3}",
            a.progress.total_seconds() / b.progress.total_seconds()
        );
        ratios.push(ratio);
    }
    println!("ratios: {ratios:.3?}");
    delete_topic(&svc.brokers, &topic);
}
