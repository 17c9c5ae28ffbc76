//! Memory while ClickHouse is unreachable: the engine runs against a private ClickHouse server
//! (its own data dir and loopback ports, started and stopped by `deploy/local/clickhouse-start.sh`
//! and `clickhouse-stop.sh`) while a producer keeps writing records at a steady rate; after a
//! healthy phase the server is killed (SIGKILL, as a crash: connections are refused at once; a
//! clean stop takes ~20 s), left down for a while, then started again on its data.
//!
//! The producer is this benchmark's own binary re-run as a child process
//! (`MODELWATCH_BENCH_ROLE=produce`), so the resident set measured (VmRSS of this process,
//! sampled every 100 ms) is the engine's alone: its consumer's prefetch, the batches in the
//! channel, the tracker and the flushes waiting for the sink. Expected: once the flushes in
//! flight reach `max_in_flight` (4), consumption pauses, the records count stops growing and
//! the RSS levels off; after the restart the flushes drain, consumption resumes and catches up.
//!
//! Run (a broker and `clickhouse-server` needed, else it prints a skip note):
//! ```text
//! deploy/local/services.sh up
//! set -a; source ~/.cache/modelwatch/run/services.env; set +a
//! cargo bench -p modelwatch-benches --bench backpressure
//! ```
//! `MODELWATCH_BENCH_RATE` (records per second, default 10000), `MODELWATCH_BENCH_HEALTHY_S`
//! (default 15), `MODELWATCH_BENCH_OUTAGE_S` (default 45) and `MODELWATCH_BENCH_AFTER_S`
//! (producing after the restart, default 15) change the shape; catching up is bounded by 90 s.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark reports")]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use modelwatch_benches::live::{
    Engine, PrivateClickHouse, Snapshot, create_topic, delete_topic, fresh, gen_options, rss_kib,
    runtime, services, store, wall_ms,
};
use modelwatch_kafka::Pacing;

/// Event time per second of the produced traffic (100 per version); the wall-clock rate is set
/// by the pacing's speed-up.
const RPS: f64 = 10_000.0;

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The child: produces `MODELWATCH_BENCH_COUNT` records at `MODELWATCH_BENCH_RATE` per second.
fn produce() {
    let brokers = std::env::var("MODELWATCH_TEST_BROKERS").unwrap_or_default();
    let topic = std::env::var("MODELWATCH_BENCH_TOPIC").unwrap_or_default();
    let count: u64 = env_or("MODELWATCH_BENCH_COUNT", 0);
    let rate: f64 = env_or("MODELWATCH_BENCH_RATE", 10_000.0);
    let start_ms: i64 = env_or("MODELWATCH_BENCH_START_MS", 0);
    let mut opts = gen_options(&brokers, &topic, count, RPS, start_ms);
    opts.pacing = Pacing::RealTime { speedup: rate / RPS };
    opts.max_wall_time = Duration::from_secs_f64(count as f64 / rate + 60.0);
    match modelwatch_kafka::run(opts) {
        Ok(r) => eprintln!(
            "producer: {} delivered, {} failed, {:.0} rec/s",
            r.delivered, r.failed, r.messages_per_second
        ),
        Err(e) => {
            eprintln!("producer: {e}");
            std::process::exit(1);
        }
    }
}

struct Sample {
    t: f64,
    rss_kib: u64,
    m: Snapshot,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    if std::env::var("MODELWATCH_BENCH_ROLE").as_deref() == Ok("produce") {
        produce();
        return;
    }
    // `cargo test --all-targets` runs harness-less benches without `--bench`: skip there (this
    // takes a minute and loads the services).
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("note: the backpressure benchmark runs under `cargo bench` only");
        return;
    }
    let Some(svc) = services("backpressure") else { return };
    let rate: f64 = env_or("MODELWATCH_BENCH_RATE", 10_000.0);
    let healthy_s: f64 = env_or("MODELWATCH_BENCH_HEALTHY_S", 15.0);
    let outage_s: f64 = env_or("MODELWATCH_BENCH_OUTAGE_S", 45.0);
    let after_s: f64 = env_or("MODELWATCH_BENCH_AFTER_S", 15.0);
    let count = (rate * (healthy_s + outage_s + after_s)) as u64;

    let ch = PrivateClickHouse::new();
    if let Err(e) = ch.start() {
        eprintln!("note: skipping the backpressure benchmark: no private ClickHouse ({e})");
        return;
    }
    let topic = fresh("mw_bench_bp");
    create_topic(&svc.brokers, &topic, 4).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    let (store, writer) =
        store(&rt, &ch.url(), "modelwatch").unwrap_or_else(|e| panic!("store: {e}"));

    let start_ms = (wall_ms() - 3_600_000) / 60_000 * 60_000;
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
    let mut producer: Child = Command::new(exe)
        .env("MODELWATCH_BENCH_ROLE", "produce")
        .env("MODELWATCH_BENCH_TOPIC", &topic)
        .env("MODELWATCH_BENCH_COUNT", count.to_string())
        .env("MODELWATCH_BENCH_RATE", rate.to_string())
        .env("MODELWATCH_BENCH_START_MS", start_ms.to_string())
        .spawn()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let rss_before = rss_kib();
    let engine =
        Engine::start(&svc.brokers, &topic, &fresh("mw_bench_bp"), store, Some(writer), &rt);
    println!(
        "producing {count} records at {rate:.0}/s into {topic}; ClickHouse at {}; RSS before \
         the engine {:.1} MiB",
        ch.url(),
        mib(rss_before)
    );
    println!("   t s   RSS MiB   records  paused in_flight checkpoints insert_failures  phase");

    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut stopped_at = None;
    let mut restarted_at = None;
    let mut caught_up_at = None;
    let mut next_print = 0.0;
    let hard_end = healthy_s + outage_s + after_s + 90.0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let t = t0.elapsed().as_secs_f64();
        let s = Sample { t, rss_kib: rss_kib(), m: engine.metrics.snapshot() };
        let phase = match (stopped_at, restarted_at) {
            (None, _) => "healthy",
            (Some(_), None) => "ClickHouse down",
            _ => "restarted",
        };
        let changed = samples.last().is_some_and(|p: &Sample| p.m.paused != s.m.paused);
        if t >= next_print || changed {
            next_print = t + 2.0;
            println!(
                "{:>6.1} {:>9.1} {:>9} {:>7} {:>9} {:>11} {:>15}  {phase}",
                t,
                mib(s.rss_kib),
                s.m.records,
                u8::from(s.m.paused),
                s.m.in_flight,
                s.m.checkpoints,
                s.m.insert_failures
            );
        }
        let done = s.m.records >= count && !s.m.paused && s.m.in_flight == 0;
        samples.push(s);
        if stopped_at.is_none() && t >= healthy_s {
            ch.kill().unwrap_or_else(|e| panic!("{e}"));
            stopped_at = Some(t0.elapsed().as_secs_f64());
            println!("-- ClickHouse killed at {:.1} s", t0.elapsed().as_secs_f64());
        }
        if restarted_at.is_none() && t >= healthy_s + outage_s {
            ch.start().unwrap_or_else(|e| panic!("{e}"));
            restarted_at = Some(t0.elapsed().as_secs_f64());
            println!("-- ClickHouse restarted at {:.1} s", t0.elapsed().as_secs_f64());
        }
        if restarted_at.is_some() && done {
            caught_up_at = Some(t);
            break;
        }
        if t > hard_end {
            break;
        }
    }
    let report = engine.stop();
    let _ = producer.wait();
    delete_topic(&svc.brokers, &topic);

    let (Some(down), Some(up)) = (stopped_at, restarted_at) else {
        panic!("the outage did not happen")
    };
    let peak = |from: f64, to: f64| {
        samples.iter().filter(|s| s.t >= from && s.t < to).map(|s| s.rss_kib).max().unwrap_or(0)
    };
    let records_at = |t: f64| samples.iter().rev().find(|s| s.t <= t).map_or(0, |s| s.m.records);
    let first_paused = samples.iter().find(|s| s.t >= down && s.m.paused).map(|s| s.t);
    let resumed = samples.iter().find(|s| s.t >= up && !s.m.paused).map(|s| s.t);
    // The producer started just before t = 0 at a steady rate: about `rate * t` records exist.
    let level = samples
        .iter()
        .find(|s| s.t >= up && s.m.records as f64 >= (rate * s.t).min(count as f64) * 0.99)
        .map(|s| s.t);
    let half = down + (up - down) / 2.0;
    println!("summary:");
    println!("  RSS before the engine: {:.1} MiB", mib(rss_before));
    println!("  peak RSS while healthy: {:.1} MiB", mib(peak(0.0, down)));
    println!(
        "  peak RSS while ClickHouse was down: {:.1} MiB (first half {:.1} MiB, second half \
         {:.1} MiB)",
        mib(peak(down, up)),
        mib(peak(down, half)),
        mib(peak(half, up))
    );
    println!("  peak RSS after the restart: {:.1} MiB", mib(peak(up, f64::MAX)));
    match first_paused {
        Some(p) => println!(
            "  consumption paused {:.1} s after the stop; records consumed while paused: {} \
             (at pause {}, at restart {})",
            p - down,
            records_at(up) - records_at(p),
            records_at(p),
            records_at(up)
        ),
        None => println!("  consumption never paused while ClickHouse was down"),
    }
    if let Some(r) = resumed {
        println!("  consumption resumed {:.1} s after the restart", r - up);
    }
    match level {
        Some(l) => println!(
            "  back level with the producer (within 1%) {:.1} s after the restart, having read \
             {} records since it ({:.0} rec/s)",
            l - up,
            records_at(l) - records_at(up),
            (records_at(l) - records_at(up)) as f64 / (l - up).max(0.1)
        ),
        None => println!("  never back level with the producer within the bound"),
    }
    match caught_up_at {
        Some(c) => println!(
            "  caught up (all {count} records consumed, no flush in flight) {:.1} s after the \
             restart",
            c - up
        ),
        None => println!("  did NOT catch up within the bound"),
    }
    println!("  engine report: {report:?}");
}
