//! Latency histograms: HDR resolution per pane at a fraction of HDR's memory.
//!
//! Latencies are quantised to the buckets of an [`hdrhistogram`] histogram tracking 1 us to 1 h
//! with [`LatencySpec::significant_digits`] digits (3 by default: every bucket is at most 0.1%
//! wide relative to its values). A bucket is named by its **lowest value in microseconds**: that is
//! the fixed, documented layout in which panes are exported (`latency_bucket_us` and
//! `latency_bucket_counts` arrays), so panes from any number of partitions and of any span merge
//! by adding counts per bucket value (`sumMap` in ClickHouse) and quantiles can be recomputed.
//! Values above 1 h are counted in the bucket of 1 h.
//!
//! A dense 3-digit HDR histogram is about 184 KiB, far too much per pane. An open pane therefore
//! appends one `u32` bucket value per event and compacts to sorted (bucket, count) runs when the
//! buffer grows, so memory is bounded by the number of distinct buckets (at most about 23,500 for
//! 3 digits) whatever the rate. A closed pane is encoded as LEB128 varints of bucket deltas and
//! counts: about 3 bytes per distinct bucket. Each version keeps its window's buckets up to
//! date as panes enter and leave it (a merge of two sparse lists per slide), and window
//! quantiles follow HDR's rule (`value_at_quantile`, reported at the bucket's middle);
//! [`WindowLatency`] replays panes into a scratch HDR histogram and gives the same answer.

use hdrhistogram::Histogram;

use crate::config::ConfigError;

/// Highest latency tracked with full resolution: one hour, in microseconds.
pub const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;

/// Resolution of the latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySpec {
    significant_digits: u8,
}

impl LatencySpec {
    /// Checks and builds the resolution: 1 to 5 significant decimal digits.
    pub fn new(significant_digits: u8) -> Result<Self, ConfigError> {
        if !(1..=5).contains(&significant_digits) {
            return Err(ConfigError::OutOfRange {
                key: "latency.significant_digits",
                value: f64::from(significant_digits),
                min: 1.0,
                max: 5.0,
            });
        }
        Ok(Self { significant_digits })
    }
    /// Significant decimal digits kept by the histograms.
    pub fn significant_digits(&self) -> u8 {
        self.significant_digits
    }
    fn histogram(&self) -> Histogram<u64> {
        // Bounds are constants that hdrhistogram accepts for every digit count 1..=5.
        match Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_US, self.significant_digits) {
            Ok(h) => h,
            Err(e) => unreachable!("valid histogram bounds rejected: {e:?}"),
        }
    }
}

impl Default for LatencySpec {
    fn default() -> Self {
        Self { significant_digits: 3 }
    }
}

/// Maps a latency to the lowest value of its HDR bucket.
#[derive(Debug, Clone)]
pub(crate) struct Quantizer {
    template: Histogram<u64>,
}

impl Quantizer {
    pub(crate) fn new(spec: LatencySpec) -> Self {
        Self { template: spec.histogram() }
    }

    /// The bucket of a latency in milliseconds (finite, >= 0; callers validate).
    #[inline]
    pub(crate) fn bucket(&self, latency_ms: f64) -> u32 {
        self.bucket_us(micros(latency_ms))
    }

    /// The bucket of a latency in whole microseconds (see [`micros`]).
    #[inline]
    pub(crate) fn bucket_us(&self, us: u64) -> u32 {
        self.template.lowest_equivalent(us) as u32
    }
}

/// A latency in milliseconds as whole microseconds rounded half away from zero (as
/// `f64::round` does), 0 for NaN and negative values, at most [`HIGHEST_TRACKABLE_US`].
///
/// Without a call to `round` (a library call on baseline x86-64): the whole part truncated,
/// plus one when the fraction is at least a half. The fraction is exact: `whole <= us < whole
/// + 1` and `us < 2^52`, so the subtraction loses nothing (Sterbenz).
#[inline]
pub(crate) fn micros(latency_ms: f64) -> u64 {
    let us = latency_ms * 1000.0;
    if us.is_nan() || us < 0.0 {
        return 0;
    }
    if us >= HIGHEST_TRACKABLE_US as f64 {
        return HIGHEST_TRACKABLE_US;
    }
    // Through i64: one instruction each way on baseline x86-64 (u64 takes several).
    let whole = us as i64;
    (whole + i64::from(us - whole as f64 >= 0.5)) as u64
}

/// Compaction threshold of an open pane's raw buffer.
const RAW_COMPACT_AT: usize = 8_192;

/// The latency buckets of an open pane.
#[derive(Debug, Default, Clone)]
pub(crate) struct LatencyRecorder {
    raw: Vec<u32>,
    runs: Vec<(u32, u32)>,
    merge_buf: Vec<(u32, u32)>,
}

impl LatencyRecorder {
    #[inline]
    pub(crate) fn record(&mut self, bucket: u32) {
        self.raw.push(bucket);
        if self.raw.len() >= RAW_COMPACT_AT {
            self.compact();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.raw.clear();
        self.runs.clear();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.raw.capacity() * 4 + (self.runs.capacity() + self.merge_buf.capacity()) * 8
    }

    /// Folds the raw buffer into the sorted runs.
    fn compact(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        self.raw.sort_unstable();
        self.merge_buf.clear();
        let mut a = self.runs.iter().copied().peekable();
        let mut b = self.raw.chunk_by(|x, y| x == y).map(|c| (c[0], c.len() as u32)).peekable();
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&x), Some(&y)) if x.0 == y.0 => {
                    a.next();
                    b.next();
                    (x.0, x.1.saturating_add(y.1))
                }
                (Some(&x), Some(&y)) => {
                    if x.0 < y.0 {
                        a.next();
                        x
                    } else {
                        b.next();
                        y
                    }
                }
                (Some(&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&y)) => {
                    b.next();
                    y
                }
                (None, None) => break,
            };
            self.merge_buf.push(next);
        }
        std::mem::swap(&mut self.runs, &mut self.merge_buf);
        self.raw.clear();
    }

    /// Encodes the recorded buckets into `out` (cleared first) and clears the recorder.
    pub(crate) fn drain_into(&mut self, out: &mut LatencyBuckets) {
        self.compact();
        out.set_runs(&self.runs);
        self.clear();
    }
}

/// The latency buckets of a closed pane or window: sorted (bucket lowest value in us, count)
/// pairs, stored compactly.
///
/// ```
/// use modelwatch_core::latency::LatencyBuckets;
///
/// let a = LatencyBuckets::from_pairs(&[(1000, 2), (5000, 1)]);
/// let b = LatencyBuckets::from_pairs(&[(1000, 1), (2000, 4)]);
/// let mut m = a.clone();
/// m.merge(&b);
/// assert_eq!(m.iter().collect::<Vec<_>>(), vec![(1000, 3), (2000, 4), (5000, 1)]);
/// assert_eq!(m.count(), 8);
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LatencyBuckets {
    bytes: Vec<u8>,
    count: u64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> u32 {
    let mut v = 0u32;
    let mut shift = 0;
    while let Some(&b) = bytes.get(*pos) {
        *pos += 1;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

impl LatencyBuckets {
    /// Builds buckets from (bucket value, count) pairs in any order; equal buckets add up.
    pub fn from_pairs(pairs: &[(u32, u32)]) -> Self {
        let mut v = pairs.to_vec();
        v.sort_unstable();
        let mut runs: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (b, c) in v {
            match runs.last_mut() {
                Some(last) if last.0 == b => last.1 = last.1.saturating_add(c),
                _ => runs.push((b, c)),
            }
        }
        let mut out = Self::default();
        out.set_runs(&runs);
        out
    }

    /// Replaces the content with sorted, distinct runs.
    fn set_runs(&mut self, runs: &[(u32, u32)]) {
        self.bytes.clear();
        self.count = 0;
        let mut prev = 0u32;
        for &(b, c) in runs {
            if c == 0 {
                continue;
            }
            put_varint(&mut self.bytes, b - prev);
            put_varint(&mut self.bytes, c);
            prev = b;
            self.count += u64::from(c);
        }
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes used by the encoding.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// (bucket lowest value in microseconds, count), by increasing bucket.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut pos = 0;
        let mut prev = 0u32;
        std::iter::from_fn(move || {
            if pos >= self.bytes.len() {
                return None;
            }
            prev = prev.wrapping_add(get_varint(&self.bytes, &mut pos));
            let c = get_varint(&self.bytes, &mut pos);
            Some((prev, c))
        })
    }

    /// Adds another set of buckets into this one.
    pub fn merge(&mut self, other: &LatencyBuckets) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.clone_from(other);
            return;
        }
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut a = self.iter().peekable();
        let mut b = other.iter().peekable();
        loop {
            let next = match (a.peek().copied(), b.peek().copied()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    a.next();
                    b.next();
                    (x.0, x.1.saturating_add(y.1))
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    a.next();
                    x
                }
                (_, Some(y)) => {
                    b.next();
                    y
                }
                (Some(x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            runs.push(next);
        }
        drop(a);
        self.set_runs(&runs);
    }

    /// Forgets the content, keeps the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

/// The latency buckets of a sliding window, kept up to date as panes enter and leave it, so a
/// slide costs a merge of two panes instead of a replay of the whole window.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunningLatency {
    runs: Vec<(u32, u32)>,
    count: u64,
}

impl RunningLatency {
    /// Adds (`add`) or removes a pane's buckets. Removing only what was added before is the
    /// caller's contract; counts saturate at zero otherwise.
    ///
    /// A pane's buckets are mostly in the window already: they are counted in place, in one
    /// walk along the window's buckets that steps on until it reaches the pane's next bucket (a
    /// merge into a new vector stored every bucket and took branches a CPU cannot predict:
    /// about half of a slide's time in a profile). The pane's new buckets are then merged in
    /// from the back, moving only the buckets after the first new one; emptied buckets are
    /// dropped.
    pub(crate) fn apply(&mut self, b: &LatencyBuckets, add: bool, scratch: &mut Vec<(u32, u32)>) {
        if b.is_empty() {
            return;
        }
        scratch.clear();
        let runs = &mut self.runs;
        let mut at = 0;
        let mut emptied = false;
        for (bucket, c) in b.iter() {
            while runs.get(at).is_some_and(|r| r.0 < bucket) {
                at += 1;
            }
            match runs.get_mut(at) {
                Some(r) if r.0 == bucket => {
                    r.1 = if add { r.1.saturating_add(c) } else { r.1.saturating_sub(c) };
                    emptied |= r.1 == 0;
                }
                _ if add && c > 0 => scratch.push((bucket, c)),
                _ => {}
            }
        }
        if emptied {
            runs.retain(|r| r.1 > 0);
        }
        if !scratch.is_empty() {
            // Both sorted, no bucket in both: merge from the back into the grown vector.
            let old = runs.len();
            runs.resize(old + scratch.len(), (0, 0));
            let (mut i, mut j, mut k) = (old, scratch.len(), runs.len());
            while j > 0 {
                k -= 1;
                if i > 0 && runs[i - 1].0 > scratch[j - 1].0 {
                    i -= 1;
                    runs[k] = runs[i];
                } else {
                    j -= 1;
                    runs[k] = scratch[j];
                }
            }
        }
        self.count = runs.iter().map(|r| u64::from(r.1)).sum();
    }

    /// Quantiles by HDR's rule (see [`WindowLatency::summary`]), `None` when empty.
    pub(crate) fn summary(&self, q: &Quantizer) -> Option<LatencySummary> {
        if self.count == 0 {
            return None;
        }
        let runs = self.runs.iter().map(|&(b, c)| (u64::from(b), u64::from(c)));
        Some(summarize(self.count, runs, &q.template))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.runs.capacity() * 8
    }
}

/// Latency quantiles of a window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Number of latencies.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Quantiles by HDR's rule (`Histogram::value_at_quantile`): the first bucket whose cumulative
/// count reaches `ceil(q * n)` (at least 1), reported as the middle of that bucket; all four in
/// one pass over (any value of the bucket, count) pairs in increasing order.
fn summarize(
    n: u64,
    buckets: impl Iterator<Item = (u64, u64)>,
    layout: &Histogram<u64>,
) -> LatencySummary {
    let ranks = [0.5, 0.9, 0.99, 0.999].map(|q: f64| ((q * n as f64).ceil() as u64).max(1));
    let mut found = [0u64; 4];
    let mut k = 0;
    let mut cumulative = 0u64;
    for (value, count) in buckets {
        cumulative += count;
        while k < 4 && cumulative >= ranks[k] {
            found[k] = layout.median_equivalent(value);
            k += 1;
        }
        if k == 4 {
            break;
        }
    }
    let ms = |v: u64| v as f64 / 1000.0;
    LatencySummary {
        count: n,
        p50_ms: ms(found[0]),
        p90_ms: ms(found[1]),
        p99_ms: ms(found[2]),
        p999_ms: ms(found[3]),
    }
}

/// A scratch HDR histogram into which a window's panes are replayed to read quantiles.
#[derive(Debug, Clone)]
pub struct WindowLatency {
    hist: Histogram<u64>,
}

impl WindowLatency {
    /// A scratch histogram at the given resolution.
    pub fn new(spec: LatencySpec) -> Self {
        Self { hist: spec.histogram() }
    }

    /// Empties the histogram (free when it is already empty).
    pub fn reset(&mut self) {
        if !self.hist.is_empty() {
            self.hist.reset();
        }
    }

    /// Adds a pane's buckets.
    pub fn add(&mut self, buckets: &LatencyBuckets) {
        for (b, c) in buckets.iter() {
            self.hist.saturating_record_n(u64::from(b), u64::from(c));
        }
    }

    /// Quantiles of what was added, `None` when nothing was. A quantile is reported as the middle
    /// of its HDR bucket, so its relative error is at most half a bucket (0.05% at 3 digits).
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        let buckets =
            self.hist.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value()));
        Some(summarize(self.hist.len(), buckets, &self.hist))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quantile_exact(v: &mut [f64], q: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).max(1);
        v[rank - 1]
    }

    #[test]
    fn quantiles_are_within_a_tenth_of_a_percent() {
        let spec = LatencySpec::default();
        let qz = Quantizer::new(spec);
        let mut rec = LatencyRecorder::default();
        let mut values = Vec::new();
        // A deterministic log-normal-ish spread from 0.5 ms to 2 s.
        let mut x = 0.123_f64;
        for _ in 0..50_000 {
            x = (x * 997.0 + 0.618).fract();
            let v = 0.5 * (x * 8.3).exp();
            values.push(v);
            rec.record(qz.bucket(v));
        }
        let mut b = LatencyBuckets::default();
        rec.drain_into(&mut b);
        assert_eq!(b.count(), 50_000);
        let mut w = WindowLatency::new(spec);
        w.add(&b);
        let s = w.summary().expect("non-empty");
        for (q, got) in [(0.5, s.p50_ms), (0.9, s.p90_ms), (0.99, s.p99_ms), (0.999, s.p999_ms)] {
            let exact = quantile_exact(&mut values, q);
            assert!((got - exact).abs() / exact < 0.001, "q{q}: {got} vs {exact}");
        }
    }

    #[test]
    fn one_pass_quantiles_equal_hdr_value_at_quantile() {
        let spec = LatencySpec::default();
        let mut w = WindowLatency::new(spec);
        let mut x = 0.77_f64;
        for _ in 0..5_000 {
            x = (x * 991.0 + 0.31).fract();
            w.hist.saturating_record((1000.0 * (x * 9.0).exp()) as u64);
        }
        let s = w.summary().expect("non-empty");
        for (q, got) in [(0.5, s.p50_ms), (0.9, s.p90_ms), (0.99, s.p99_ms), (0.999, s.p999_ms)] {
            let want = w.hist.median_equivalent(w.hist.value_at_quantile(q)) as f64 / 1000.0;
            assert_eq!(got, want, "q{q}");
        }
    }

    #[test]
    fn empty_window_has_no_summary() {
        assert_eq!(WindowLatency::new(LatencySpec::default()).summary(), None);
    }

    #[test]
    fn huge_and_negative_values_are_clamped() {
        let qz = Quantizer::new(LatencySpec::default());
        assert_eq!(qz.bucket(-3.0), 0);
        assert_eq!(qz.bucket(f64::NAN), 0);
        let top = qz.bucket(1e12);
        assert!(
            u64::from(top) <= HIGHEST_TRACKABLE_US && u64::from(top) > HIGHEST_TRACKABLE_US / 2
        );
    }

    #[test]
    fn bad_digits_are_rejected() {
        assert!(LatencySpec::new(0).is_err());
        assert!(LatencySpec::new(6).is_err());
        assert!(LatencySpec::new(2).is_ok());
    }

    proptest! {
        #[test]
        fn running_window_equals_a_replay(
            panes in prop::collection::vec(prop::collection::vec(0.0f64..3_000.0, 0..300), 1..12),
            drop_first in 0usize..6,
        ) {
            let spec = LatencySpec::default();
            let qz = Quantizer::new(spec);
            let encoded: Vec<LatencyBuckets> = panes.iter().map(|vs| {
                let mut r = LatencyRecorder::default();
                for &v in vs { r.record(qz.bucket(v)); }
                let mut b = LatencyBuckets::default();
                r.drain_into(&mut b);
                b
            }).collect();
            let mut running = RunningLatency::default();
            let mut scratch = Vec::new();
            for b in &encoded { running.apply(b, true, &mut scratch); }
            let cut = drop_first.min(encoded.len());
            for b in &encoded[..cut] { running.apply(b, false, &mut scratch); }
            let mut replay = WindowLatency::new(spec);
            for b in &encoded[cut..] { replay.add(b); }
            prop_assert_eq!(running.summary(&qz), replay.summary());
        }

        #[test]
        fn running_window_holds_the_counts_of_its_panes(
            panes in prop::collection::vec(
                prop::collection::vec((0u32..2_000, 1u32..50), 0..120), 1..10),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let encoded: Vec<LatencyBuckets> =
                panes.iter().map(|p| LatencyBuckets::from_pairs(p)).collect();
            let mut running = RunningLatency::default();
            let mut scratch = Vec::new();
            let mut inside: Vec<usize> = (0..encoded.len()).collect();
            for b in &encoded { running.apply(b, true, &mut scratch); }
            // Panes leave in any order, each at most once.
            for r in removed {
                if inside.is_empty() { break; }
                let i = inside.swap_remove(r.index(inside.len()));
                running.apply(&encoded[i], false, &mut scratch);
            }
            let mut want = std::collections::BTreeMap::<u32, u32>::new();
            for &i in &inside {
                for (bucket, c) in encoded[i].iter() { *want.entry(bucket).or_default() += c; }
            }
            let want: Vec<(u32, u32)> = want.into_iter().collect();
            prop_assert_eq!(&running.runs, &want);
            prop_assert_eq!(running.count, want.iter().map(|r| u64::from(r.1)).sum::<u64>());
        }

        #[test]
        fn micros_rounds_as_f64_round_does(
            ms in prop_oneof![
                -1e3f64..1e7,
                // halves of a microsecond and their neighbours
                (0u64..10_000_000).prop_map(|h| h as f64 * 0.0005),
                (0u64..10_000_000).prop_map(|h| (h as f64 * 0.0005).next_up()),
                (0u64..10_000_000).prop_map(|h| (h as f64 * 0.0005).next_down()),
                Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(3.6e6 - 0.0004),
                Just(3.6e6 - 0.0005), Just(3.6e6 - 0.0006), Just(f64::MAX),
            ],
        ) {
            let r = (ms * 1000.0).round();
            let expected = if r.is_nan() || r < 0.0 {
                0
            } else if r >= HIGHEST_TRACKABLE_US as f64 {
                HIGHEST_TRACKABLE_US
            } else {
                r as u64
            };
            prop_assert_eq!(micros(ms), expected, "ms = {}", ms);
        }

        #[test]
        fn recorder_equals_direct_counting(values in prop::collection::vec(0.0f64..5_000.0, 0..20_000)) {
            let qz = Quantizer::new(LatencySpec::default());
            let mut rec = LatencyRecorder::default();
            let mut direct = std::collections::BTreeMap::<u32, u32>::new();
            for &v in &values {
                let b = qz.bucket(v);
                rec.record(b);
                *direct.entry(b).or_default() += 1;
            }
            let mut out = LatencyBuckets::default();
            rec.drain_into(&mut out);
            prop_assert_eq!(out.iter().collect::<Vec<_>>(), direct.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn merge_is_commutative_and_associative(
            a in prop::collection::vec((0u32..100_000, 1u32..50), 0..200),
            b in prop::collection::vec((0u32..100_000, 1u32..50), 0..200),
            c in prop::collection::vec((0u32..100_000, 1u32..50), 0..200),
        ) {
            let (a, b, c) = (LatencyBuckets::from_pairs(&a), LatencyBuckets::from_pairs(&b), LatencyBuckets::from_pairs(&c));
            let mut ab_c = a.clone(); ab_c.merge(&b); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            let mut ba = b.clone(); ba.merge(&a);
            let mut ab = a.clone(); ab.merge(&b);
            prop_assert_eq!(&ab_c, &a_bc);
            prop_assert_eq!(ab, ba);
            prop_assert_eq!(ab_c.count(), a.count() + b.count() + c.count());
        }
    }
}
