//! Once a decoder's record buffer is warm, decoding allocates nothing per record: the fast Avro
//! path (bare, single-object, Confluent) and JSON without escaped strings.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)
#![allow(unsafe_code)] // a counting global allocator is unsafe by nature

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::Arc,
};

use common::{Inf, Met, bare, confluent, single_object};
use modelwatch_codec::{
    DirResolver, Format, InferenceDecoder, MetricDecoder, inference_log_schema, metric_event_schema,
};

struct Counting;

// Per thread: the test harness's own threads allocate while a test runs (CI saw 4 stray
// allocations counted against 10,000 decodes when the counter was process-wide).
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

const N: usize = 10_000;

#[test]
fn warm_decoders_do_not_allocate() {
    // The counter counts.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
    // A cold decoder allocates (its record buffer grows), so the zero below means something.
    let mut cold = InferenceDecoder::new(Format::Json);
    let first = Inf::sample(9).json().into_bytes();
    assert!(allocations(|| assert!(cold.decode_one(&first).is_ok())) >= 1);

    let s = inference_log_schema();
    let resolver = Arc::new(DirResolver::builtin().with(Some(3), (*s).clone()).unwrap());
    let payloads: Vec<(&str, Format, Vec<u8>)> = vec![
        ("bare", Format::Avro, bare(&s, Inf::sample(0).value())),
        ("single-object", Format::Auto, single_object(&s, Inf::sample(1).value())),
        ("confluent", Format::AvroConfluent, confluent(3, &s, Inf::sample(2).value())),
        ("json", Format::Json, Inf::sample(3).json().into_bytes()),
        ("json-auto", Format::Auto, Inf::sample(4).json().into_bytes()),
        (
            "ndjson",
            Format::Json,
            format!(
                "{}\n\n{}\n{}\n",
                Inf::sample(5).json(),
                Inf::sample(6).json(),
                std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../schemas/examples/inference_rfc3339.json"
                ))
                .unwrap()
                .trim()
            )
            .into_bytes(),
        ),
    ];
    for (name, format, payload) in &payloads {
        let mut d = InferenceDecoder::with_resolver(*format, resolver.clone());
        let mut ok = 0usize;
        for _ in 0..10 {
            d.decode(payload, |r| ok += usize::from(r.is_ok()));
        }
        assert!(ok >= 10, "{name}: warm-up failed");
        let n = allocations(|| {
            for _ in 0..N {
                d.decode(payload, |r| ok += usize::from(r.is_ok()));
            }
        });
        assert_eq!(n, 0, "{name}: {n} allocations in {N} decodes");
        let n = allocations(|| {
            for _ in 0..N {
                std::hint::black_box(d.decode_one(payload).is_ok());
            }
        });
        if *name != "ndjson" {
            assert_eq!(n, 0, "{name} decode_one: {n} allocations in {N} decodes");
        }
    }

    let ms = metric_event_schema();
    let metric_payloads = [
        (Format::Avro, bare(&ms, Met::sample(0).value())),
        (Format::Auto, single_object(&ms, Met::sample(1).value())),
        (
            Format::Json,
            br#"{"event_time": "2026-05-18T09:30:00+02:00", "model": "m", "version": "v", "name": "gpu", "value": 0.5, "kind": "gauge", "attributes": {"host": "h"}}"#.to_vec(),
        ),
    ];
    for (format, payload) in &metric_payloads {
        let mut d = MetricDecoder::new(*format);
        for _ in 0..10 {
            d.decode_one(payload).unwrap();
        }
        let n = allocations(|| {
            for _ in 0..N {
                d.decode(payload, |r| assert!(r.is_ok()));
            }
        });
        assert_eq!(n, 0, "metric {format:?}: {n} allocations in {N} decodes");
    }
}
