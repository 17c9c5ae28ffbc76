//! Panes: everything recorded for one (model, version, source partition) during one slide.
//!
//! A pane is mergeable: [`PaneStats::merge`] is commutative and associative (integer counts and
//! sums, min/max, set unions of buckets; only float sums of metric values are subject to
//! rounding), and merging the panes of a window gives the same result as recording every event of
//! the window into one pane. That is what lets panes from several partitions form one window, and
//! what lets ClickHouse recompute any window from pane rows.

use crate::latency::{LatencyBuckets, LatencyRecorder};
use crate::metrics::MetricAgg;

/// The statistics of a closed pane (or of a window: the merge of its panes).
#[derive(Debug, Clone, Default)]
pub struct PaneStats {
    /// Inference requests.
    pub requests: u64,
    /// Requests per interned status (including `ok`), sorted by status id.
    pub(crate) statuses: Vec<(u32, u64)>,
    /// Latency buckets (see [`crate::latency`] for the layout).
    pub latency: LatencyBuckets,
    /// Sum of latencies in whole microseconds (exact, so merges are associative).
    pub latency_sum_us: u64,
    /// Smallest latency in ms (`+inf` when empty).
    pub latency_min_ms: f64,
    /// Largest latency in ms (`-inf` when empty).
    pub latency_max_ms: f64,
    /// Time-to-first-token buckets, same layout.
    pub ttft: LatencyBuckets,
    /// Largest time to first token in ms (`-inf` when none).
    pub ttft_max_ms: f64,
    /// Requests that reported token counts.
    pub token_requests: u64,
    /// Summed prompt tokens.
    pub tokens_in: u64,
    /// Summed generated tokens.
    pub tokens_out: u64,
    /// Flat bin counts in the model's layout order (see [`crate::bins`]).
    pub(crate) bins: Vec<u64>,
    /// Metric aggregates per interned metric name, sorted by id.
    pub(crate) metrics: Vec<(u32, MetricAgg)>,
    /// Requests whose `route` attribute was `stable`.
    pub route_stable: u64,
    /// Requests whose `route` attribute was `canary`.
    pub route_canary: u64,
}

impl PaneStats {
    pub(crate) fn empty() -> Self {
        Self {
            latency_min_ms: f64::INFINITY,
            latency_max_ms: f64::NEG_INFINITY,
            ttft_max_ms: f64::NEG_INFINITY,
            ..Self::default()
        }
    }

    /// Forgets the content, keeps the capacity.
    pub(crate) fn reset(&mut self) {
        self.requests = 0;
        self.statuses.clear();
        self.latency.clear();
        self.latency_sum_us = 0;
        self.latency_min_ms = f64::INFINITY;
        self.latency_max_ms = f64::NEG_INFINITY;
        self.ttft.clear();
        self.ttft_max_ms = f64::NEG_INFINITY;
        self.token_requests = 0;
        self.tokens_in = 0;
        self.tokens_out = 0;
        self.bins.clear();
        self.metrics.clear();
        self.route_stable = 0;
        self.route_canary = 0;
    }

    /// Whether nothing at all was recorded.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.metrics.is_empty()
    }

    /// Adds another pane (or window) into this one.
    pub fn merge(&mut self, o: &PaneStats) {
        self.merge_without_bins(o);
        if self.bins.len() < o.bins.len() {
            self.bins.resize(o.bins.len(), 0);
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a += b;
        }
    }

    /// Adds everything but the bin counts (which a closed pane keeps narrow, apart).
    pub(crate) fn merge_without_bins(&mut self, o: &PaneStats) {
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
        self.merge_counters(o);
    }

    /// Adds everything but the latency buckets and the bin counts.
    pub(crate) fn merge_counters(&mut self, o: &PaneStats) {
        self.requests = self.requests.saturating_add(o.requests);
        for &(s, c) in &o.statuses {
            add_status(&mut self.statuses, s, c);
        }
        self.latency_sum_us = self.latency_sum_us.saturating_add(o.latency_sum_us);
        self.latency_min_ms = self.latency_min_ms.min(o.latency_min_ms);
        self.latency_max_ms = self.latency_max_ms.max(o.latency_max_ms);
        self.ttft_max_ms = self.ttft_max_ms.max(o.ttft_max_ms);
        self.token_requests = self.token_requests.saturating_add(o.token_requests);
        self.tokens_in = self.tokens_in.saturating_add(o.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(o.tokens_out);
        self.route_stable = self.route_stable.saturating_add(o.route_stable);
        self.route_canary = self.route_canary.saturating_add(o.route_canary);
        for (id, agg) in &o.metrics {
            match self.metrics.binary_search_by_key(id, |(i, _)| *i) {
                Ok(i) => self.metrics[i].1.merge(agg),
                Err(i) => self.metrics.insert(i, (*id, agg.clone())),
            }
        }
    }

    /// Requests per status id.
    pub(crate) fn status_counts(&self) -> &[(u32, u64)] {
        &self.statuses
    }

    /// The flat bin counts.
    pub fn bins(&self) -> &[u64] {
        &self.bins
    }

    /// Heap bytes held (capacity), for memory accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.statuses.capacity() * 16
            + self.latency.heap_bytes()
            + self.ttft.heap_bytes()
            + self.bins.capacity() * 8
            + self.metrics.capacity() * size_of::<(u32, MetricAgg)>()
    }
}

#[inline]
pub(crate) fn add_status(statuses: &mut Vec<(u32, u64)>, s: u32, c: u64) {
    match statuses.binary_search_by_key(&s, |(i, _)| *i) {
        Ok(i) => statuses[i].1 += c,
        Err(i) => statuses.insert(i, (s, c)),
    }
}

/// Bin counts of an open pane: one-byte counters (an eighth of the cache lines an event touches
/// with `u64`s: with many versions, the pane's counters are what an event mostly waits for),
/// each spilling into a `u64` counter when it fills up.
#[derive(Debug, Default)]
pub(crate) struct BinCounts {
    narrow: Vec<Narrow>,
    wide: Vec<u64>,
}

/// An open pane's counter before it spills.
type Narrow = u8;

impl BinCounts {
    /// Counts one value in bin `i`; `len` is the model's current flat length (> `i`).
    #[inline]
    pub(crate) fn incr(&mut self, i: usize, len: usize) {
        match self.narrow.get_mut(i) {
            Some(c) if *c < Narrow::MAX => *c += 1,
            _ => self.incr_cold(i, len),
        }
    }

    /// [`BinCounts::incr`] of a bin past the end, or of one that spills into `wide`.
    #[cold]
    #[inline(never)]
    fn incr_cold(&mut self, i: usize, len: usize) {
        if i >= self.narrow.len() {
            self.narrow.resize(len.max(i + 1), 0);
        }
        let c = &mut self.narrow[i];
        if *c == Narrow::MAX {
            if i >= self.wide.len() {
                self.wide.resize(len.max(i + 1), 0);
            }
            self.wide[i] += u64::from(Narrow::MAX);
            *c = 0;
        }
        *c += 1;
    }

    pub(crate) fn drain_into(&mut self, out: &mut Vec<u64>) {
        out.clear();
        out.resize(self.narrow.len().max(self.wide.len()), 0);
        for (o, &n) in out.iter_mut().zip(&self.narrow) {
            *o = u64::from(n);
        }
        for (o, &w) in out.iter_mut().zip(&self.wide) {
            *o += w;
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.narrow.clear();
        self.wide.clear();
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.narrow.iter().map(|&n| u64::from(n)).sum::<u64>() + self.wide.iter().sum::<u64>()
    }

    fn heap_bytes(&self) -> usize {
        self.narrow.capacity() * size_of::<Narrow>() + self.wide.capacity() * 8
    }
}

/// A pane still receiving events.
#[derive(Debug, Default)]
pub(crate) struct OpenPane {
    pub(crate) pane: i64,
    pub(crate) partition: u32,
    pub(crate) stats: PaneStats,
    pub(crate) bins: BinCounts,
    pub(crate) latency: LatencyRecorder,
    pub(crate) ttft: LatencyRecorder,
}

impl OpenPane {
    pub(crate) fn reset(&mut self, pane: i64, partition: u32) {
        self.pane = pane;
        self.partition = partition;
        self.stats.reset();
        self.bins.clear();
        self.latency.clear();
        self.ttft.clear();
    }

    /// Moves the recorded content into `stats` form, leaving the recorders empty.
    pub(crate) fn seal(&mut self) {
        self.latency.drain_into(&mut self.stats.latency);
        self.ttft.drain_into(&mut self.stats.ttft);
        self.bins.drain_into(&mut self.stats.bins);
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.stats.heap_bytes()
            + self.bins.heap_bytes()
            + self.latency.heap_bytes()
            + self.ttft.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_counters_spill_without_losing_counts() {
        let mut b = BinCounts::default();
        for _ in 0..200_000 {
            b.incr(3, 5);
        }
        b.incr(0, 5);
        let mut out = Vec::new();
        b.drain_into(&mut out);
        assert_eq!(out, vec![1, 0, 0, 200_000, 0]);
        assert_eq!(b.total(), 0);
    }
}
