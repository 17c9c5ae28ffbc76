//! Memory per active model version, measured with a counting allocator: 1,000 versions,
//! 20 numeric and 2 categorical features, 100 events/s per version, default windows, after
//! 5.5 minutes of event time (a full 5-minute window of panes held, layouts frozen).
//!
//! Run: `cargo bench -p modelwatch-benches --bench memory`. Prints bytes per version.

#![allow(unsafe_code, reason = "a counting global allocator needs `unsafe impl GlobalAlloc`")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Instant;

use modelwatch_benches::{EngineFeed, Workload};
use modelwatch_core::CoreConfig;
use modelwatch_core::event::InferenceRecord;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now =
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now.max(0) as usize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let d = new_size as isize - layout.size() as isize;
        let now = LIVE.fetch_add(d, Ordering::Relaxed) + d;
        PEAK.fetch_max(now.max(0) as usize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    const VERSIONS: usize = 1_000;
    let start = 1_700_000_000_000;
    let mut work = Workload::new(VERSIONS, 100, start, 42);
    let mut rec = InferenceRecord::default();
    let before = LIVE.load(Ordering::Relaxed);
    let mut feed = EngineFeed::new(CoreConfig::default());
    let t0 = Instant::now();
    while work.now_ms() < start + 330_000 {
        work.next(&mut rec);
        feed.record(&rec);
    }
    let (n, tracker) = (feed.offset, &feed.tracker);
    let elapsed = t0.elapsed();
    let live = (LIVE.load(Ordering::Relaxed) - before) as f64;
    let keys = tracker.active_keys();
    println!(
        "events: {n} in {elapsed:.2?} (generating the records included; see the pipeline bench for timings)"
    );
    println!("active versions: {keys}");
    println!("live heap of the tracker: {:.1} MiB", live / 1048576.0);
    println!(
        "memory per active version: {:.1} KiB (target <= 256 KiB)",
        live / keys as f64 / 1024.0
    );
    println!(
        "  of which pane and reference state (estimate): {:.1} KiB",
        tracker.state_heap_bytes() as f64 / keys as f64 / 1024.0
    );
    println!(
        "peak heap of the process: {:.1} MiB",
        PEAK.load(Ordering::Relaxed) as f64 / 1048576.0
    );
}
