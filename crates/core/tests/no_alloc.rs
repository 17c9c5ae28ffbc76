//! In steady state, recording an event allocates nothing, counter series (and their undo log for
//! checkpoints) included, as long as the caller releases every durable checkpoint.
#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)
#![allow(unsafe_code)] // a counting global allocator is unsafe by nature

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use modelwatch_core::config::{DriftSpec, Limits, WindowSpec};
use modelwatch_core::event::{InferenceRecord, MetricKind, MetricRecord};
use modelwatch_core::latency::LatencySpec;
use modelwatch_core::{CoreConfig, Output, Source, Tracker};

struct Counting;

// Per thread: the test harness's own threads may allocate while a test runs.
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

struct Discard;
impl Output for Discard {}

#[test]
fn recording_allocates_nothing_once_warm_with_checkpoints_released() {
    let s = Duration::from_secs;
    let cfg = CoreConfig {
        windows: WindowSpec::new(s(30), s(10), s(0), s(60), s(30)).unwrap(),
        drift: DriftSpec::new(10, s(60), 4, 3, 1e-4).unwrap(),
        limits: Limits::default(),
        latency: LatencySpec::default(),
    };
    let mut tr = Tracker::new(cfg);
    let mut inf = InferenceRecord::default();
    let mut met = MetricRecord::default();
    let mut offset = 0i64;
    let mut counted = 0;
    // One pane per cycle: its first events (which open the pane and its metric aggregates) are
    // not counted, the next 200 are; then advance, checkpoint and release as the engine does.
    for pane in 0..40i64 {
        for i in 0..208i64 {
            let t = pane * 10_000 + i * 40;
            let src = Source { partition: 0, offset, record_ts_ms: t };
            offset += 1;
            let record = |tr: &mut Tracker, inf: &mut InferenceRecord, met: &mut MetricRecord| {
                if i % 2 == 0 {
                    inf.clear();
                    inf.event_time_ms = t;
                    inf.set_model("m");
                    inf.set_version("v1");
                    inf.latency_ms = 1.0 + (i % 17) as f64;
                    inf.set_status("ok");
                    inf.push_feature("x", (i % 13) as f64);
                    inf.push_category("c", ["a", "b", "c"][(i % 3) as usize]);
                    tr.record_inference(src, inf);
                } else {
                    met.clear();
                    met.event_time_ms = t;
                    met.set_model("m");
                    met.set_version("v1");
                    met.set_name("requests_total");
                    met.kind = MetricKind::Counter;
                    // Per host: 100, 101, 100 (a reset), ... Two values, so that the pane's
                    // quantile sketch, which grows with the range of values, stays warm.
                    met.value = if i / 4 % 2 == 0 { 100.0 } else { 101.0 };
                    met.push_attribute("host", ["h0", "h1"][(i / 2 % 2) as usize]);
                    tr.record_metric(src, met);
                }
            };
            if pane < 5 || i < 8 {
                record(&mut tr, &mut inf, &mut met);
            } else {
                ALLOCATIONS.with(|c| c.set(0));
                COUNTING.with(|c| c.set(true));
                record(&mut tr, &mut inf, &mut met);
                COUNTING.with(|c| c.set(false));
                let n = ALLOCATIONS.with(Cell::get);
                assert_eq!(n, 0, "pane {pane}, event {i} allocated {n} times");
                counted += 1;
            }
        }
        tr.advance(&mut Discard);
        let cp = tr.checkpoint(0, offset);
        let _ = tr.reference_snapshots_as_of(&|_| cp.cutoff_ms);
        let _ = tr.counter_series_as_of(0, &cp);
        tr.release(0, &cp);
    }
    assert_eq!(counted, 35 * 200);
}
