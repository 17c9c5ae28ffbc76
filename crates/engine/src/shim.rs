//! TEMPORARY: stand-ins for the core checkpoint API being written on another branch.
#![allow(missing_docs, unreachable_pub, dead_code)]
use modelwatch_core::Tracker;
use modelwatch_core::metrics::CounterSeries;
use modelwatch_core::tracker::ReferenceSnapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    pub cutoff_ms: i64,
    pub resume_offset: i64,
    pub watermark_ms: i64,
}

pub trait Shim {
    fn checkpoint(&self, partition: u32, next_offset: i64) -> PartitionCheckpoint;
    fn counter_series_as_of(&self, partition: u32, cp: &PartitionCheckpoint) -> Vec<CounterSeries>;
    fn reference_snapshots_as_of(&self, cutoff_of: &dyn Fn(u32) -> i64) -> Vec<ReferenceSnapshot>;
    fn preload_reference(&mut self, snap: ReferenceSnapshot);
    fn preload_counter(&mut self, c: CounterSeries);
    fn release2(&mut self, partition: u32, cp: &PartitionCheckpoint);
}
impl Shim for Tracker {
    fn checkpoint(&self, partition: u32, next_offset: i64) -> PartitionCheckpoint {
        let w = self.config().windows;
        let wm = self.watermark(partition).unwrap_or(i64::MIN);
        let cutoff = wm.saturating_sub(w.window_ms());
        match self.resume_point(partition, cutoff) {
            Some(r) => PartitionCheckpoint {
                cutoff_ms: cutoff,
                resume_offset: r.offset,
                watermark_ms: r.watermark_ms,
            },
            None => PartitionCheckpoint {
                cutoff_ms: cutoff,
                resume_offset: next_offset,
                watermark_ms: wm,
            },
        }
    }
    fn counter_series_as_of(&self, _p: u32, _cp: &PartitionCheckpoint) -> Vec<CounterSeries> {
        self.counter_series()
    }
    fn reference_snapshots_as_of(&self, _c: &dyn Fn(u32) -> i64) -> Vec<ReferenceSnapshot> {
        self.reference_snapshots()
    }
    fn preload_reference(&mut self, snap: ReferenceSnapshot) {
        self.restore_reference(&snap);
    }
    fn preload_counter(&mut self, c: CounterSeries) {
        self.restore_counter(&c);
    }
    fn release2(&mut self, partition: u32, cp: &PartitionCheckpoint) {
        self.release(partition, cp.cutoff_ms)
    }
}
