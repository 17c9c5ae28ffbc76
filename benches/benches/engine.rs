//! Criterion benchmark of the engine's synchronous pipeline on one core: pre-encoded records
//! fed from memory through `Pipeline::process`, `advance` after every batch of 2,048 records
//! (the consumer's `max_batch`), and `take_flush` + `release` every 100,000 records, the rows
//! dropped. That is everything the engine thread does per record except the Kafka poll and the
//! ClickHouse insert: decode, record, pane closes, window evaluation with drift against the
//! reference and canary-vs-baseline drift, row building, checkpoints.
//!
//! Load: 100 model versions (10 models x 10 versions, the tenth of each model a canary scored
//! against the first), 20 numeric and 2 categorical features, log-normal latencies with a 1%
//! tail, 1% errors, 100 events/s per version of event time (so 1 M events are 100 s of event
//! time: 20 slides, 2,000 window rows and their drift rows), 4 partitions keyed by model.
//! Default windows (5 m, 10 s slide) and drift settings, except a one-minute reference period
//! (default 30 minutes) so that the steady state of a long run, where every window of every
//! version is scored against its pinned reference as well, is reached within the warm-up:
//! 5.5 minutes of event time are processed before timing, so windows are full, layouts frozen
//! and references complete. Encoding is untimed; everything else, including dropping the
//! flushed rows, is timed.
//!
//! Run: `cargo bench -p modelwatch-benches --bench engine`. `MODELWATCH_BENCH_VERSIONS`
//! (default 100) and `MODELWATCH_BENCH_RUNS` (events per version in a row, default 1: round
//! robin, the worst case for caches; ~20 is typical of a keyed producer) change the load, and
//! `MODELWATCH_BENCH_REFERENCE_S` the reference period (default 60; 1800 is the default of
//! the configuration, under which no window is scored against a reference during the run).
//! `MODELWATCH_BENCH_ONLY=avro_bare` (or `json`) skips the other variant's warm-up too, e.g.
//! for a profile: `perf record -g -- <bench binary> --bench avro_bare --profile-time 20`.

#![allow(clippy::print_stderr, reason = "a benchmark reports a summary of what it built")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modelwatch_benches::{Workload, encode_avro, encode_json};
use modelwatch_codec::Format;
use modelwatch_core::CoreConfig;
use modelwatch_core::config::DriftSpec;
use modelwatch_core::event::InferenceRecord;
use modelwatch_engine::{CanaryPair, Input, Pipeline, PipelineOptions, Topics};

const RATE: u32 = 100;
const START_MS: i64 = 1_700_000_000_000;
/// Records encoded per untimed preparation.
const BATCH: u64 = 50_000;
/// Records per `advance` (the consumer's default `max_batch`).
const ADVANCE_EVERY: u64 = 2_048;
/// Records per `take_flush`: the run loop flushes every second or every 100,000 rows; at
/// ~1 M events/s this is ten flushes per second, so it overstates the per-flush cost.
const FLUSH_EVERY: u64 = 100_000;
const PARTITIONS: u64 = 4;

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One canary per model: `v49` (route `canary` in the workload) against `v40`.
fn canaries(versions: usize) -> Vec<CanaryPair> {
    (0..versions.div_ceil(10))
        .filter(|m| (m + 1) * 10 <= versions)
        .map(|m| CanaryPair {
            model: format!("model-{m:03}"),
            baseline: "v40".into(),
            canary: "v49".into(),
        })
        .collect()
}

#[derive(Default, Debug, Clone, Copy)]
struct Built {
    events: u64,
    flushes: u64,
    rows: u64,
    pane_stats: u64,
    window_stats: u64,
    drift_scores: u64,
}

struct Steady {
    work: Workload,
    rec: InferenceRecord,
    pipeline: Pipeline,
    format: Format,
    bytes: Vec<u8>,
    /// (end of payload in `bytes`, partition, event time).
    meta: Vec<(usize, i32, i64)>,
    offsets: [i64; PARTITIONS as usize],
    n: u64,
    built: Built,
}

impl Steady {
    fn new(format: Format, warm_s: i64) -> Self {
        let versions = env_or("MODELWATCH_BENCH_VERSIONS", 100usize);
        let runs = env_or("MODELWATCH_BENCH_RUNS", 1u64);
        let d = CoreConfig::default().drift;
        let reference = Duration::from_secs(env_or("MODELWATCH_BENCH_REFERENCE_S", 60));
        let drift = DriftSpec::new(d.edge_samples(), reference, d.bins(), d.top_k(), d.epsilon())
            .unwrap_or_else(|e| panic!("drift settings: {e}"));
        let opts = PipelineOptions {
            core: CoreConfig { drift, ..CoreConfig::default() },
            group: "bench".into(),
            format,
            resolver: None,
            canaries: canaries(versions),
        };
        let mut s = Self {
            work: Workload::new(versions, RATE, START_MS, 42).with_runs(runs),
            rec: InferenceRecord::default(),
            pipeline: Pipeline::new(Topics::new(["inference"], []), opts),
            format,
            bytes: Vec::new(),
            meta: Vec::new(),
            offsets: [0; PARTITIONS as usize],
            n: 0,
            built: Built::default(),
        };
        let until = START_MS + warm_s * 1000;
        while s.work.now_ms() < until {
            s.prepare(BATCH);
            s.run();
        }
        assert_eq!(s.pipeline.counts()[0].recorded, s.n, "every warm-up event recorded");
        s.built = Built::default();
        s
    }

    /// Encodes the next `n` events (untimed).
    fn prepare(&mut self, n: u64) {
        self.bytes.clear();
        self.meta.clear();
        for _ in 0..n {
            self.work.next(&mut self.rec);
            match self.format {
                Format::Json => encode_json(&self.rec, &mut self.bytes),
                _ => encode_avro(&self.rec, &mut self.bytes),
            }
            // Keyed by model: a model's versions share a partition.
            let model: u64 = self.rec.model()[6..].parse().unwrap_or(0);
            self.meta.push((self.bytes.len(), (model % PARTITIONS) as i32, self.rec.event_time_ms));
        }
    }

    /// Processes what `prepare` encoded, as the run loop would (timed).
    fn run(&mut self) {
        let mut start = 0;
        for i in 0..self.meta.len() {
            let (end, partition, ts) = self.meta[i];
            let offset = &mut self.offsets[partition as usize];
            let input = Input {
                topic: 0,
                partition,
                offset: *offset,
                timestamp: Some(ts),
                payload: Some(&self.bytes[start..end]),
            };
            *offset += 1;
            start = end;
            if let Some(r) = self.pipeline.process(input) {
                panic!("benchmark record rejected: {r}");
            }
            self.n += 1;
            if self.n.is_multiple_of(ADVANCE_EVERY) {
                self.pipeline.advance();
            }
            if self.n.is_multiple_of(FLUSH_EVERY) {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let f = self.pipeline.take_flush(1);
        let b = &mut self.built;
        b.flushes += 1;
        b.rows += f.row_count() as u64;
        b.pane_stats += f.rows.pane_stats.len() as u64;
        b.window_stats += f.rows.window_stats.len() as u64;
        b.drift_scores += f.rows.drift_scores.len() as u64;
        // The sink acknowledged it: forget what the checkpoints cover.
        self.pipeline.release(&f.commits);
        drop(black_box(f));
    }

    fn time(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = (iters - done).min(BATCH);
            self.prepare(n);
            let t = Instant::now();
            self.run();
            total += t.elapsed();
            done += n;
        }
        self.built.events += iters;
        total
    }
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    let only = std::env::var("MODELWATCH_BENCH_ONLY").unwrap_or_default();
    for (name, format) in [("avro_bare", Format::Avro), ("json", Format::Json)] {
        if !name.contains(only.as_str()) {
            continue;
        }
        let mut s = Steady::new(format, 330);
        g.bench_function(format!("process_advance_flush/{name}"), |b| b.iter_custom(|n| s.time(n)));
        let b = s.built;
        if b.events == 0 {
            continue; // filtered out on the command line
        }
        assert!(b.window_stats > 0 && b.drift_scores > 0, "windows closed and rows built: {b:?}");
        let per_m = |x: u64| x as f64 * 1e6 / b.events.max(1) as f64;
        eprintln!(
            "{name}: {} events timed, {} flushes, per million events: {:.0} rows \
             ({:.0} pane_stats, {:.0} window_stats, {:.0} drift_scores)",
            b.events,
            b.flushes,
            per_m(b.rows),
            per_m(b.pane_stats),
            per_m(b.window_stats),
            per_m(b.drift_scores),
        );
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
