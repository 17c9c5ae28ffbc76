//! A quick timing sanity check, not a benchmark (the criterion benches live in `benches/`).
//! Run in release: `cargo test --release -p modelwatch-codec --test timing -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)
#![allow(clippy::print_stderr)]

mod common;

use std::time::Instant;

use common::{Inf, bare};
use modelwatch_codec::{Format, InferenceDecoder, inference_log_schema};

fn per_record(d: &mut InferenceDecoder, payload: &[u8], n: u32) -> f64 {
    for _ in 0..1000 {
        std::hint::black_box(d.decode_one(payload).is_ok());
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(d.decode_one(std::hint::black_box(payload)).is_ok());
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn decode_timing() {
    let avro = bare(&inference_log_schema(), Inf::sample(0).value());
    let json = Inf::sample(0).json().into_bytes();
    let mut fast = InferenceDecoder::new(Format::Avro);
    let mut generic = InferenceDecoder::new(Format::Avro);
    generic.set_fast_path(false);
    let mut js = InferenceDecoder::new(Format::Json);
    let mut auto = InferenceDecoder::new(Format::Auto);
    eprintln!("avro {} bytes, json {} bytes", avro.len(), json.len());
    // TIMING_ONLY=fast|json: profile one path alone (perf record).
    match std::env::var("TIMING_ONLY").as_deref() {
        Ok("fast") => return eprintln!("{}", per_record(&mut fast, &avro, 20_000_000)),
        Ok("json") => return eprintln!("{}", per_record(&mut js, &json, 5_000_000)),
        _ => {}
    }
    eprintln!("avro fast path   {:8.1} ns/record", per_record(&mut fast, &avro, 1_000_000));
    eprintln!("avro auto (fast) {:8.1} ns/record", per_record(&mut auto, &avro, 1_000_000));
    eprintln!("avro generic     {:8.1} ns/record", per_record(&mut generic, &avro, 50_000));
    eprintln!("json             {:8.1} ns/record", per_record(&mut js, &json, 500_000));
    eprintln!("json auto        {:8.1} ns/record", per_record(&mut auto, &json, 500_000));
    // Reference points for this machine: serde_json skipping the same object, and copying it.
    let t = Instant::now();
    for _ in 0..500_000 {
        let v: serde::de::IgnoredAny = serde_json::from_slice(std::hint::black_box(&json)).unwrap();
        std::hint::black_box(v);
    }
    eprintln!(
        "ref: serde_json IgnoredAny {:8.1} ns/record",
        t.elapsed().as_nanos() as f64 / 500_000.0
    );
    let mut buf = String::with_capacity(2048);
    let t = Instant::now();
    for _ in 0..1_000_000 {
        buf.clear();
        buf.push_str(std::str::from_utf8(std::hint::black_box(&avro)).unwrap_or(""));
        std::hint::black_box(&buf);
    }
    eprintln!(
        "ref: utf-8 check + copy of the avro bytes {:8.1} ns",
        t.elapsed().as_nanos() as f64 / 1e6
    );
}
