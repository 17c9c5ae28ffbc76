//! Decoding and recording allocate nothing per event once warm: Avro and JSON records are
//! decoded and recorded into the tracker across many pane boundaries, with pane closes and
//! window evaluation in between (those may allocate; they are not per event and not counted).

#![allow(unsafe_code, reason = "a counting global allocator needs `unsafe impl GlobalAlloc`")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use modelwatch_benches::{Workload, encode_avro, encode_json};
use modelwatch_codec::{Format, InferenceDecoder};
use modelwatch_core::event::InferenceRecord;
use modelwatch_core::{Admission, CoreConfig, Output, Source, Tracker};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
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
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Null;
impl Output for Null {}

fn allocations_of(format: Format) -> (usize, usize) {
    let start = 1_700_000_000_000;
    // 20 versions at 100 events/s: a pane boundary every 20,000 events.
    let mut work = Workload::new(20, 100, start, 3);
    let mut rec = InferenceRecord::default();
    let mut decoder = InferenceDecoder::new(format);
    let mut tracker = Tracker::new(CoreConfig::default());
    let mut payload = Vec::new();
    let mut counted = 0;
    let mut n = 0i64;
    // 100 s of event time: the first 40 s warm up (layouts freeze, pools fill), then six pane
    // boundaries are crossed while counting.
    while work.now_ms() < start + 100_000 {
        work.next(&mut rec);
        payload.clear();
        match format {
            Format::Json => encode_json(&rec, &mut payload),
            _ => encode_avro(&rec, &mut payload),
        }
        let warm = work.now_ms() > start + 40_000;
        COUNTING.with(|c| c.set(warm));
        let decoded = decoder.decode_one(&payload).expect("valid payload");
        let src = Source { partition: 0, offset: n, record_ts_ms: decoded.event_time_ms };
        assert_eq!(tracker.record_inference(src, decoded), Admission::Recorded);
        COUNTING.with(|c| c.set(false));
        counted += usize::from(warm);
        n += 1;
        if n % 1000 == 0 {
            tracker.advance(&mut Null);
            // As the engine does once a checkpoint is durable.
            let cp = tracker.checkpoint(0, n);
            tracker.release(0, &cp);
        }
    }
    (COUNT.with(Cell::get), counted)
}

#[test]
fn avro_decode_and_record_do_not_allocate_once_warm() {
    let (allocs, events) = allocations_of(Format::Avro);
    assert!(events > 100_000, "{events}");
    assert_eq!(allocs, 0, "allocations over {events} warm events");
}

#[test]
fn json_decode_and_record_do_not_allocate_once_warm() {
    let (allocs, events) = allocations_of(Format::Json);
    assert!(events > 100_000, "{events}");
    assert_eq!(allocs, 0, "allocations over {events} warm events");
}
