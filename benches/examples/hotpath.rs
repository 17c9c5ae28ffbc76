//! Pass timings of the hot path, for profiling: decode (and record) of pre-encoded records of the
//! `pipeline` benchmark's load, without criterion.
//!
//! A 30 s event-time warm-up freezes the bin layouts; then six passes of 300,000 records each,
//! encoded before the first pass, are decoded and recorded, with the tracker's `advance`,
//! `checkpoint` and `release` every 1,000 events as in `pipeline`. It prints the time per event
//! of each pass and the best. The start of the passes goes to stderr, so that a profile can
//! leave out the warm-up and the encoding:
//!
//! ```sh
//! cargo build --release -p modelwatch-benches --example hotpath
//! target/release/examples/hotpath                  # "passes start at N ms" on stderr
//! perf record -D <N + 300> -g target/release/examples/hotpath
//! ```
//!
//! Knobs (environment): `HOTPATH_JSON` (JSON instead of bare Avro), `HOTPATH_DECODE_ONLY`
//! (decode, do not record), `HOTPATH_VERSIONS` (1,000; 100 keeps everything in cache),
//! `HOTPATH_RUNS` (events of one version in a row: 1, strict round robin as in `pipeline`; a
//! keyed producer's batches give runs of about 20).

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example reports on stdout")]

use std::time::Instant;

use modelwatch_benches::{Workload, encode_avro, encode_json};
use modelwatch_codec::{Format, InferenceDecoder};
use modelwatch_core::event::InferenceRecord;
use modelwatch_core::{CoreConfig, Output, Source, Tracker};

const PASSES: usize = 6;
const PER_PASS: u64 = 300_000;
const START_MS: i64 = 1_700_000_000_000;

struct Discard;
impl Output for Discard {}

/// The tracker fed as the `pipeline` benchmark feeds it.
struct Feed {
    tracker: Tracker,
    offset: i64,
}

impl Feed {
    fn record(&mut self, r: &InferenceRecord) {
        let src = Source { partition: 0, offset: self.offset, record_ts_ms: r.event_time_ms };
        self.offset += 1;
        std::hint::black_box(self.tracker.record_inference(src, r));
        if self.offset % 1000 == 0 {
            self.tracker.advance(&mut Discard);
            let cp = self.tracker.checkpoint(0, self.offset);
            self.tracker.release(0, &cp);
        }
    }
}

fn main() {
    let t0 = Instant::now();
    let json = std::env::var_os("HOTPATH_JSON").is_some();
    let decode_only = std::env::var_os("HOTPATH_DECODE_ONLY").is_some();
    let knob = |name: &str, default: u64| {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let versions = knob("HOTPATH_VERSIONS", 1000) as usize;
    let mut work = Workload::new(versions, 100, START_MS, 42).with_runs(knob("HOTPATH_RUNS", 1));
    let mut rec = InferenceRecord::default();
    let mut feed = Feed { tracker: Tracker::new(CoreConfig::default()), offset: 0 };
    while work.now_ms() < START_MS + 30_000 {
        work.next(&mut rec);
        feed.record(&rec);
    }
    let passes: Vec<(Vec<u8>, Vec<usize>)> = (0..PASSES)
        .map(|_| {
            let (mut bytes, mut ends) = (Vec::new(), Vec::new());
            for _ in 0..PER_PASS {
                work.next(&mut rec);
                if json {
                    encode_json(&rec, &mut bytes)
                } else {
                    encode_avro(&rec, &mut bytes)
                }
                ends.push(bytes.len());
            }
            (bytes, ends)
        })
        .collect();
    let mut decoder = InferenceDecoder::new(if json { Format::Json } else { Format::Avro });
    eprintln!("passes start at {} ms", t0.elapsed().as_millis());
    let mut times = Vec::new();
    for (bytes, ends) in &passes {
        let t = Instant::now();
        let mut start = 0;
        for &end in ends {
            let r = decoder.decode_one(&bytes[start..end]).expect("the workload's records decode");
            start = end;
            if decode_only {
                std::hint::black_box(r);
            } else {
                feed.record(r);
            }
        }
        times.push(t.elapsed().as_nanos() as f64 / PER_PASS as f64);
    }
    let best = times.iter().copied().fold(f64::MAX, f64::min);
    let all: Vec<String> = times.iter().map(|ns| format!("{ns:.0}")).collect();
    println!("best {best:.0} ns/event, passes [{}]", all.join(" "));
}
