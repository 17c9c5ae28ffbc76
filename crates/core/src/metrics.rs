//! Aggregates of metric events: gauges and cumulative counters.
//!
//! Each (model, version, metric name) gets per pane: count, sum, min, max, the last value (by
//! event time; on a tie the larger value, so merging is order-independent) and a relative-error
//! quantile sketch (DDSketch, 1% relative accuracy) of the values. For `kind = counter` the values
//! are cumulative per (model, version, `host` attribute): the increase since the previous sample of
//! the same series (by event time; an older sample adds nothing) is added to the pane, and a decrease is a reset, whose
//! increase is the new value itself (the counter restarted from zero). A window's rate is its
//! summed increase divided by the window length. The last value of every counter series outlives
//! windows: [`CounterSeries`] is persisted and restored so a restart does not lose a rate.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

use crate::event::MetricKind;

/// The aggregate of one metric over a pane or a window.
#[derive(Clone)]
pub struct MetricAgg {
    /// Gauge or counter (the kind of the first sample).
    pub kind: MetricKind,
    /// Samples.
    pub count: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Value of the latest sample by event time.
    pub last: f64,
    /// Event time of the latest sample.
    pub last_time_ms: i64,
    /// Counters only: summed increases (resets handled).
    pub increase: f64,
    sketch: DDSketch,
}

impl std::fmt::Debug for MetricAgg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricAgg")
            .field("kind", &self.kind)
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("last", &self.last)
            .field("increase", &self.increase)
            .finish_non_exhaustive()
    }
}

fn sketch() -> DDSketch {
    DDSketch::new(Config::defaults())
}

impl MetricAgg {
    pub(crate) fn new(kind: MetricKind) -> Self {
        Self {
            kind,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: 0.0,
            last_time_ms: i64::MIN,
            increase: 0.0,
            sketch: sketch(),
        }
    }

    pub(crate) fn record(&mut self, value: f64, time_ms: i64, increase: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if (time_ms, value.to_bits()) >= (self.last_time_ms, self.last.to_bits()) {
            self.last = value;
            self.last_time_ms = time_ms;
        }
        self.increase += increase;
        self.sketch.add(value);
    }

    /// Adds another aggregate of the same metric.
    pub fn merge(&mut self, o: &MetricAgg) {
        if o.count == 0 {
            return;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if (o.last_time_ms, o.last.to_bits()) > (self.last_time_ms, self.last.to_bits()) {
            self.last = o.last;
            self.last_time_ms = o.last_time_ms;
        }
        self.increase += o.increase;
        // Both sketches use the same configuration, so merging cannot fail.
        let _ = self.sketch.merge(&o.sketch);
    }

    /// A quantile of the values (1% relative error), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).ok().flatten()
    }

    /// Counters: increase per second over a span of `span_ms`.
    pub fn rate_per_s(&self, span_ms: i64) -> Option<f64> {
        (self.kind == MetricKind::Counter && span_ms > 0)
            .then(|| self.increase * 1000.0 / span_ms as f64)
    }
}

/// The last sample of one counter series, persisted across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterSeries {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Metric name.
    pub name: String,
    /// `host` attribute ("" when absent).
    pub host: String,
    /// Event time of the last sample.
    pub time_ms: i64,
    /// Its cumulative value.
    pub value: f64,
}

/// The increase a counter sample adds after `previous` (reset-aware).
///
/// ```
/// use modelwatch_core::metrics::counter_increase;
/// assert_eq!(counter_increase(None, 10.0), 0.0); // first sample: no baseline yet
/// assert_eq!(counter_increase(Some(10.0), 15.0), 5.0);
/// assert_eq!(counter_increase(Some(15.0), 3.0), 3.0); // reset: restarted from zero
/// ```
pub fn counter_increase(previous: Option<f64>, value: f64) -> f64 {
    match previous {
        None => 0.0,
        Some(p) if value >= p => value - p,
        Some(_) => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_recording_into_one() {
        let values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0];
        let mut one = MetricAgg::new(MetricKind::Gauge);
        let mut a = MetricAgg::new(MetricKind::Gauge);
        let mut b = MetricAgg::new(MetricKind::Gauge);
        for (i, &v) in values.iter().enumerate() {
            one.record(v, i as i64, 0.0);
            if i % 2 == 0 { a.record(v, i as i64, 0.0) } else { b.record(v, i as i64, 0.0) }
        }
        let mut ba = b.clone();
        ba.merge(&a);
        a.merge(&b);
        for m in [&a, &ba] {
            assert_eq!(m.count, one.count);
            assert_eq!(m.sum, one.sum);
            assert_eq!((m.min, m.max, m.last, m.last_time_ms), (1.0, 9.0, 5.0, 6));
            let q = m.quantile(0.5).expect("non-empty");
            assert!((q - 3.0).abs() / 3.0 < 0.02, "{q}");
        }
    }

    #[test]
    fn rates_only_for_counters() {
        let mut c = MetricAgg::new(MetricKind::Counter);
        c.record(100.0, 0, 30.0);
        assert_eq!(c.rate_per_s(10_000), Some(3.0));
        let g = MetricAgg::new(MetricKind::Gauge);
        assert_eq!(g.rate_per_s(10_000), None);
        assert_eq!(g.quantile(0.5), None);
    }
}
