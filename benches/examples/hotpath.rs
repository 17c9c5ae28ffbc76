//! Pass timings of the hot path, for profiling: decode (and record) of pre-encoded records of the
//! `pipeline` benchmark's load, without criterion.
//!
//! A 30 s event-time warm-up freezes the bin layouts; then passes of records (six of 300,000 by
//! default), encoded before the first pass, are decoded and recorded, fed to the tracker as the
//! engine feeds it (`EngineFeed`, as in `pipeline`). It prints the time per event of each pass,
//! the best and the median. The start of the passes goes to stderr, so that a profile can leave
//! out the warm-up and the encoding:
//!
//! ```sh
//! cargo build --release -p modelwatch-benches --example hotpath
//! taskset -c 1 target/release/examples/hotpath     # "passes start at N ms" on stderr
//! perf record -D <N + 300> -g target/release/examples/hotpath
//! ```
//!
//! Pin it to one CPU (`taskset`): a thread the scheduler moves leaves its caches behind.
//!
//! Knobs (environment): `HOTPATH_JSON` (JSON instead of bare Avro), `HOTPATH_DECODE_ONLY`
//! (decode, do not record), `HOTPATH_VERSIONS` (1,000; 100 keeps everything in cache),
//! `HOTPATH_RUNS` (events of one version in a row: 1, strict round robin as in `pipeline`; a
//! keyed producer's batches give runs of about 20), `HOTPATH_PASSES` and `HOTPATH_PER_PASS`
//! (on a noisy machine, many short passes give a steadier best: 40 of 50,000),
//! `HOTPATH_WARMUP_S` (seconds of event time before the passes, 30).
//!
//! Instructions per event, which do not depend on what else the machine is doing (valgrind
//! counts them; `benches/instructions.sh` runs this and divides):
//!
//! ```sh
//! HOTPATH_PASSES=1 HOTPATH_PER_PASS=100000 valgrind --tool=callgrind \
//!     --toggle-collect='hotpath::pass' target/release/examples/hotpath
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example reports on stdout")]

use std::time::Instant;

use modelwatch_benches::{EngineFeed, Workload, encode_avro, encode_json};
use modelwatch_codec::{Format, InferenceDecoder};
use modelwatch_core::CoreConfig;
use modelwatch_core::event::InferenceRecord;

const START_MS: i64 = 1_700_000_000_000;

fn main() {
    let t0 = Instant::now();
    let json = std::env::var_os("HOTPATH_JSON").is_some();
    let decode_only = std::env::var_os("HOTPATH_DECODE_ONLY").is_some();
    let knob = |name: &str, default: u64| {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let versions = knob("HOTPATH_VERSIONS", 1000) as usize;
    let (passes, per_pass) = (knob("HOTPATH_PASSES", 6), knob("HOTPATH_PER_PASS", 300_000));
    let mut work = Workload::new(versions, 100, START_MS, 42).with_runs(knob("HOTPATH_RUNS", 1));
    let mut rec = InferenceRecord::default();
    let mut feed = EngineFeed::new(CoreConfig::default());
    let warm_up_ms = knob("HOTPATH_WARMUP_S", 30) as i64 * 1000;
    while work.now_ms() < START_MS + warm_up_ms {
        work.next(&mut rec);
        feed.record(&rec);
    }
    let passes: Vec<(Vec<u8>, Vec<usize>)> = (0..passes)
        .map(|_| {
            let (mut bytes, mut ends) = (Vec::new(), Vec::new());
            for _ in 0..per_pass {
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
    let payload_bytes: usize = passes.iter().map(|(bytes, _)| bytes.len()).sum();
    let payloads: usize = passes.iter().map(|(_, ends)| ends.len()).sum();
    eprintln!("payloads of {} bytes on average", payload_bytes / payloads.max(1));
    eprintln!("passes start at {} ms", t0.elapsed().as_millis());
    let mut times = Vec::new();
    for (bytes, ends) in &passes {
        let t = Instant::now();
        pass(&mut decoder, &mut feed, bytes, ends, decode_only);
        times.push(t.elapsed().as_nanos() as f64 / per_pass as f64);
    }
    let all: Vec<String> = times.iter().map(|ns| format!("{ns:.0}")).collect();
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    println!("best {best:.0} ns/event, median {median:.0}, passes [{}]", all.join(" "));
    eprintln!("passes end at {} ms", t0.elapsed().as_millis());
    // Dropping the tracker returns its memory to the system, which a profile would see.
    std::process::exit(0);
}

/// One timed pass: decodes (and records) the pre-encoded records. Kept out of line so that
/// `valgrind --tool=callgrind --toggle-collect='hotpath::pass'` counts exactly its
/// instructions (see the module doc).
#[inline(never)]
fn pass(
    decoder: &mut InferenceDecoder,
    feed: &mut EngineFeed,
    bytes: &[u8],
    ends: &[usize],
    decode_only: bool,
) {
    let mut start = 0;
    for &end in ends {
        let r = decoder.decode_one(&bytes[start..end]).expect("the workload's records decode");
        start = end;
        if decode_only {
            std::hint::black_box(r);
        } else {
            std::hint::black_box(feed.record(r));
        }
    }
}
