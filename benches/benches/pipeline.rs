//! Criterion benchmarks of the hot path, at the load of issue 2: 1,000 active model versions,
//! 20 numeric and 2 categorical features per record, 100 events/s per version, default window
//! settings (5 m / 10 s / 5 s), measured in steady state: 5.5 minutes of event time recorded
//! first, so bin layouts are frozen, windows full and pools warm. Encoding the payloads is
//! outside the timed loop. `per_event` times, per event:
//! - `decode/*`: decoding alone;
//! - `decode_record/*`: decoding and recording, the figure of the target; the tracker's
//!   `advance` (pane closes and window evaluation) and checkpoints run between timed batches;
//! - `decode_record_advance/*`: the same with `advance` every 1,000 events and a checkpoint every
//!   100,000 timed too (one per second of this load, as the engine takes one per one-second
//!   flush): what the engine spends per event, window evaluation included.
//!
//! Run: `cargo bench -p modelwatch-benches --bench pipeline`.

use std::hint::black_box;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modelwatch_benches::{EngineFeed, Workload, confluent_frame, encode_avro, encode_json};
use modelwatch_codec::{DirResolver, Format, InferenceDecoder, inference_log_schema};
use modelwatch_core::config::DriftSpec;
use modelwatch_core::event::InferenceRecord;
use modelwatch_core::{CoreConfig, Output, WindowView};

const VERSIONS: usize = 1_000;

/// Versions (default 1,000) and events per version in a row (default 1: round robin), from
/// `MODELWATCH_BENCH_VERSIONS` and `MODELWATCH_BENCH_RUNS`.
fn versions() -> usize {
    std::env::var("MODELWATCH_BENCH_VERSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(VERSIONS)
}
fn runs() -> u64 {
    std::env::var("MODELWATCH_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}
const RATE: u32 = 100;
/// Event time recorded before timing: a whole window (5 minutes) and then some, so that every
/// version holds a full window of closed panes, as in steady state.
const WARM_UP_S: i64 = 330;
const START_MS: i64 = 1_700_000_000_000;
/// Payloads per batch the encoding thread hands over (about 3 MB of Avro).
const BATCH: u64 = 5_000;

/// Computes every drift score a real sink would write (against the reference and against a
/// baseline count vector), so the window benchmark pays for it.
struct DriftSink {
    scores: usize,
}
impl Output for DriftSink {
    fn window_closed(&mut self, w: &WindowView<'_>) {
        for (_, s) in w.drift_vs_reference() {
            self.scores += usize::from(black_box(s).is_some());
        }
        let own = w.view().stats().bins();
        for (_, s) in w.drift_against(own) {
            self.scores += usize::from(black_box(s).is_some());
        }
        black_box(w.latency());
    }
}

/// What is timed after decoding.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    /// Nothing.
    DecodeOnly,
    /// Recording into the tracker (`EngineFeed::record_only`): the target's "decode plus
    /// record". Between timed batches of [`BATCH`] events, what the engine does besides is
    /// done untimed (`EngineFeed::maintain`).
    Record,
    /// Recording, plus what the engine does besides, as often as it does it
    /// (`EngineFeed::record`): `advance` after every 1,000 events, which closes panes and
    /// evaluates every version's window at each slide (the `per_version` benchmark times that
    /// alone), and a checkpoint every 100,000.
    AsTheEngine,
}

#[derive(Clone, Copy, PartialEq)]
enum Enc {
    AvroBare,
    AvroConfluent,
    Json,
}

/// A tracker warmed up by a workload recorded without encoding: layouts frozen, windows full,
/// pools warm.
struct Warm {
    work: Workload,
    rec: InferenceRecord,
    feed: EngineFeed,
}

impl Warm {
    fn new(cfg: CoreConfig, warm_s: i64) -> Self {
        let mut w = Self {
            work: Workload::new(versions(), RATE, START_MS, 42).with_runs(runs()),
            rec: InferenceRecord::default(),
            feed: EngineFeed::new(cfg),
        };
        let until = START_MS + warm_s * 1000;
        while w.work.now_ms() < until {
            w.work.next(&mut w.rec);
            black_box(w.feed.record(&w.rec));
        }
        w
    }
}

/// Batches of encoded payloads: the bytes and the end of each payload.
type Batch = (Vec<u8>, Vec<usize>);

/// Steady-state pipeline: a warm tracker and a decoder fed payloads that another thread encodes,
/// [`BATCH`] at a time, as a consumer's fetch thread fills the buffers the engine reads. The
/// timed thread asks for the next batch when it is done with one and waits for it (untimed):
/// encoding neither runs on its core nor sweeps its caches, and does not run while it is
/// timed either (on these 2-core machines a concurrent encoder made the figures swing by
/// 20%). Encoding on the timed thread before each timed batch of 50,000 made decode + record
/// 363 ns per event where the same build's pass timings gave 290-300.
struct Steady {
    feed: EngineFeed,
    decoder: InferenceDecoder,
    /// Spent batches to fill again (each one a request for the next).
    requests: mpsc::Sender<Batch>,
    batches: mpsc::Receiver<Batch>,
    batch: Batch,
    /// The next payload of `batch`.
    at: usize,
}

fn decoder(enc: Enc) -> InferenceDecoder {
    match enc {
        Enc::AvroBare => InferenceDecoder::new(Format::Avro),
        Enc::AvroConfluent => {
            let r = DirResolver::builtin().with(Some(1), (*inference_log_schema()).clone());
            InferenceDecoder::with_resolver(
                Format::AvroConfluent,
                Arc::new(r.expect("register the contract schema")),
            )
        }
        Enc::Json => InferenceDecoder::new(Format::Json),
    }
}

/// Fills each batch it is sent with the workload's next events and sends it back, until the
/// requests stop.
fn encode_batches(
    mut work: Workload,
    enc: Enc,
    requests: mpsc::Receiver<Batch>,
    batches: mpsc::Sender<Batch>,
) {
    let (mut rec, mut scratch) = (InferenceRecord::default(), Vec::new());
    for (mut bytes, mut ends) in requests {
        bytes.clear();
        ends.clear();
        for _ in 0..BATCH {
            work.next(&mut rec);
            match enc {
                Enc::AvroBare => encode_avro(&rec, &mut bytes),
                Enc::AvroConfluent => {
                    scratch.clear();
                    encode_avro(&rec, &mut scratch);
                    bytes.extend_from_slice(&confluent_frame(1, &scratch));
                }
                Enc::Json => encode_json(&rec, &mut bytes),
            }
            ends.push(bytes.len());
        }
        if batches.send((bytes, ends)).is_err() {
            return;
        }
    }
}

/// The CPUs this process may run on, as it started.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> &'static [usize] {
    static CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    CPUS.get_or_init(|| {
        #[allow(unsafe_code)]
        // SAFETY: an all-zero `cpu_set_t` is a valid empty set, and `sched_getaffinity` writes
        // at most `size_of::<cpu_set_t>()` bytes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
        }
    })
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it where it was).
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) {
    #[allow(unsafe_code)]
    // SAFETY: as in `allowed_cpus`; `sched_setaffinity` only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// With two CPUs or more, the timed thread (the caller) is pinned to the last one and the
/// encoding thread to the first: the scheduler no longer moves the timed thread to the other
/// core when it wakes from waiting for a batch, which left its private caches behind
/// (decode and record read 333-350 ns where the pass timings of `hotpath` under `taskset -c 1`
/// read 290-300). Returns the CPU for the encoding thread. Linux only; elsewhere nothing is
/// pinned.
#[cfg(target_os = "linux")]
fn pin_timed_thread() -> Option<usize> {
    match allowed_cpus() {
        [first, .., last] => {
            pin_to(*last);
            Some(*first)
        }
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_timed_thread() -> Option<usize> {
    None
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cpu: usize) {}

impl Steady {
    fn new(enc: Enc, cfg: CoreConfig, warm_s: i64) -> Self {
        let encoder_cpu = pin_timed_thread();
        let Warm { work, feed, .. } = Warm::new(cfg, warm_s);
        let (requests, requests_rx) = mpsc::channel();
        let (batches_tx, batches) = mpsc::channel();
        std::thread::spawn(move || {
            if let Some(cpu) = encoder_cpu {
                pin_to(cpu);
            }
            encode_batches(work, enc, requests_rx, batches_tx)
        });
        Self { feed, decoder: decoder(enc), requests, batches, batch: Batch::default(), at: 0 }
    }

    /// Decodes and records payloads `from..to` of the current batch.
    fn run(&mut self, from: usize, to: usize, record: Feed) {
        let (bytes, ends) = &self.batch;
        let mut start = from.checked_sub(1).map_or(0, |i| ends[i]);
        for &end in &ends[from..to] {
            let payload = &bytes[start..end];
            start = end;
            let rec = match self.decoder.decode_one(payload) {
                Ok(r) => r,
                Err(e) => panic!("benchmark payload failed to decode: {e}"),
            };
            match record {
                Feed::DecodeOnly => {
                    black_box(rec);
                }
                Feed::Record => {
                    black_box(self.feed.record_only(rec));
                }
                Feed::AsTheEngine => {
                    black_box(self.feed.record(rec));
                }
            }
        }
    }

    /// The time `iters` events take, the next batch taken (untimed) as one runs out.
    fn time(&mut self, iters: u64, record: Feed) -> Duration {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            if self.at == self.batch.1.len() {
                if record == Feed::Record {
                    // Untimed: panes close and windows are evaluated as they are due.
                    self.feed.maintain();
                }
                let spent = std::mem::take(&mut self.batch);
                self.requests.send(spent).expect("the encoding thread runs");
                self.batch = self.batches.recv().expect("the encoding thread runs");
                self.at = 0;
            }
            let n = (self.batch.1.len() - self.at).min((iters - done) as usize);
            let t = Instant::now();
            self.run(self.at, self.at + n, record);
            total += t.elapsed();
            self.at += n;
            done += n as u64;
        }
        total
    }
}

fn decode_and_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));
    for (name, enc) in
        [("avro_bare", Enc::AvroBare), ("avro_confluent", Enc::AvroConfluent), ("json", Enc::Json)]
    {
        // Decoding alone needs no warm tracker, and must not share one: the events it decodes
        // without recording would leave the tracker's windows behind by minutes.
        let mut s = Steady::new(enc, CoreConfig::default(), 0);
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter_custom(|n| s.time(n, Feed::DecodeOnly))
        });
        drop(s);
        let mut s = Steady::new(enc, CoreConfig::default(), WARM_UP_S);
        for (what, feed) in
            [("decode_record", Feed::Record), ("decode_record_advance", Feed::AsTheEngine)]
        {
            g.bench_function(format!("{what}/{name}"), |b| b.iter_custom(|n| s.time(n, feed)));
        }
    }
    // Recording alone: records built in memory (untimed), recorded in batches (timed).
    let mut s = Warm::new(CoreConfig::default(), WARM_UP_S);
    let mut batch: Vec<InferenceRecord> = Vec::new();
    g.bench_function("record", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(BATCH) as usize;
                batch.resize_with(n, InferenceRecord::default);
                for r in &mut batch {
                    s.work.next(r);
                }
                let t = Instant::now();
                for r in &batch {
                    black_box(s.feed.record(r));
                }
                total += t.elapsed();
                done += n as u64;
            }
            total
        })
    });
    g.finish();
}

/// Closing one pane per version and evaluating its window (latency quantiles, and drift of all
/// 24 distributions against the reference and against another window), per version.
fn pane_close_and_window(c: &mut Criterion) {
    // A one-minute reference, so that the reference drift is computed within the run.
    let cfg = CoreConfig {
        drift: DriftSpec::new(2_000, Duration::from_secs(60), 10, 10, 1e-4).expect("valid"),
        ..CoreConfig::default()
    };
    let mut s = Warm::new(cfg, WARM_UP_S);
    let mut g = c.benchmark_group("per_version");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(versions() as u64));
    g.bench_function("pane_close_window_drift", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut sink = DriftSink { scores: 0 };
            for _ in 0..iters {
                // One slide of events (untimed), recorded without closing anything...
                let until = s.work.now_ms() + 10_000;
                while s.work.now_ms() < until {
                    s.work.next(&mut s.rec);
                    s.feed.record_only(&s.rec);
                }
                // ...then the close of that slide's panes and windows, timed.
                let t = Instant::now();
                s.feed.tracker.advance(&mut sink);
                total += t.elapsed();
            }
            assert!(sink.scores > 0, "drift was computed");
            total
        })
    });
    g.finish();
}

criterion_group!(benches, decode_and_record, pane_close_and_window);
criterion_main!(benches);
