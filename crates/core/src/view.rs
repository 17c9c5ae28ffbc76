//! Read-only views of closed panes and windows, handed to an [`Output`].

use crate::bins::{FeatureRef, ModelBins};
use crate::drift::{AlignedCounts, DriftScores, Epsilon, scores};
use crate::intern::Interner;
use crate::latency::{LatencyBuckets, LatencySummary};
use crate::metrics::MetricAgg;
use crate::pane::PaneStats;

/// Receives what the tracker closes. Driven by [`crate::tracker::Tracker::advance`] and
/// [`crate::tracker::Tracker::tick`], in a deterministic order: keys by first appearance, and for
/// each key its panes by (pane, partition) before the windows they complete.
pub trait Output {
    /// A pane of one (model, version, partition) closed: its watermark passed the pane's end.
    fn pane_closed(&mut self, _pane: &PaneView<'_>) {}
    /// A window of one (model, version) closed: every partition it was seen in has closed the
    /// window's last pane.
    fn window_closed(&mut self, _window: &WindowView<'_>) {}
    /// A version was silent for `limits.idle_ttl` and its state was dropped.
    fn key_evicted(&mut self, _model: &str, _version: &str) {}
}

/// The statistics of a pane or window with the names needed to read them.
#[derive(Debug, Clone, Copy)]
pub struct StatsView<'a> {
    pub(crate) model: &'a str,
    pub(crate) version: &'a str,
    pub(crate) stats: &'a PaneStats,
    pub(crate) statuses: &'a Interner,
    pub(crate) metric_names: &'a Interner,
    pub(crate) bins: &'a ModelBins,
}

impl<'a> StatsView<'a> {
    /// Model name.
    pub fn model(&self) -> &'a str {
        self.model
    }
    /// Version.
    pub fn version(&self) -> &'a str {
        self.version
    }
    /// The raw statistics.
    pub fn stats(&self) -> &'a PaneStats {
        self.stats
    }
    /// Requests.
    pub fn requests(&self) -> u64 {
        self.stats.requests
    }
    /// Requests per status (`ok` included), by status name.
    pub fn statuses(&self) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let names = self.statuses;
        self.stats.status_counts().iter().map(move |&(s, c)| (names.name(s), c))
    }
    /// Requests whose status is not `ok`.
    pub fn errors(&self) -> u64 {
        let ok = self.statuses.get("ok");
        self.stats.requests
            - self
                .stats
                .status_counts()
                .iter()
                .filter(|(s, _)| Some(*s) == ok)
                .map(|(_, c)| c)
                .sum::<u64>()
    }
    /// Requests whose status is `timeout`.
    pub fn timeouts(&self) -> u64 {
        let t = self.statuses.get("timeout");
        self.stats.status_counts().iter().filter(|(s, _)| Some(*s) == t).map(|(_, c)| c).sum()
    }
    /// Latency buckets (microsecond layout of [`crate::latency`]); empty for a window, whose
    /// quantiles are in [`WindowView::latency`].
    pub fn latency_buckets(&self) -> &'a LatencyBuckets {
        &self.stats.latency
    }
    /// Every frozen feature with its counts in this pane or window (the slice may be shorter
    /// than the layout, or empty, when the feature froze after these counts were taken).
    pub fn features(&self) -> impl Iterator<Item = (FeatureRef<'a>, &'a [u64])> + 'a {
        let flat = self.stats.bins();
        self.bins.frozen().map(move |f| (f, f.slice(flat)))
    }
    /// Metric aggregates by metric name.
    pub fn metrics(&self) -> impl Iterator<Item = (&'a str, &'a MetricAgg)> + 'a {
        let names = self.metric_names;
        self.stats.metrics.iter().map(move |(id, m)| (names.name(*id), m))
    }
}

/// A closed pane of one (model, version, source partition).
#[derive(Debug, Clone, Copy)]
pub struct PaneView<'a> {
    pub(crate) view: StatsView<'a>,
    pub(crate) partition: u32,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
}

impl<'a> PaneView<'a> {
    /// The statistics and their names.
    pub fn view(&self) -> &StatsView<'a> {
        &self.view
    }
    /// The source partition (the tracker's dense partition id).
    pub fn partition(&self) -> u32 {
        self.partition
    }
    /// Pane start, ms since the epoch.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }
    /// Pane end (exclusive), ms since the epoch.
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }
}

/// A closed sliding window of one (model, version): the merge of its panes.
#[derive(Debug, Clone, Copy)]
pub struct WindowView<'a> {
    pub(crate) view: StatsView<'a>,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    pub(crate) latency: Option<LatencySummary>,
    pub(crate) ttft: Option<LatencySummary>,
    pub(crate) reference: Option<&'a [u64]>,
    pub(crate) epsilon: Epsilon,
}

impl<'a> WindowView<'a> {
    /// The statistics and their names.
    pub fn view(&self) -> &StatsView<'a> {
        &self.view
    }
    /// Window start, ms since the epoch.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }
    /// Window end (exclusive), ms since the epoch.
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }
    /// Errors / requests, `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        let r = self.view.requests();
        (r > 0).then(|| self.view.errors() as f64 / r as f64)
    }
    /// Requests per second over the window length.
    pub fn throughput_rps(&self) -> f64 {
        self.view.requests() as f64 * 1000.0 / (self.end_ms - self.start_ms) as f64
    }
    /// Latency quantiles, `None` without requests.
    pub fn latency(&self) -> Option<LatencySummary> {
        self.latency
    }
    /// Largest latency in ms (exact), `None` without requests.
    pub fn latency_max_ms(&self) -> Option<f64> {
        (self.view.requests() > 0).then_some(self.view.stats.latency_max_ms)
    }
    /// Time-to-first-token quantiles, `None` when no request reported one.
    pub fn ttft(&self) -> Option<LatencySummary> {
        self.ttft
    }
    /// The additive smoothing of drift scores.
    pub fn epsilon(&self) -> Epsilon {
        self.epsilon
    }
    /// Whether the version's pinned reference period is complete (drift against it exists).
    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }
    /// Drift of every frozen feature of this window against the version's pinned reference;
    /// `None` scores where either side has no counts. Empty until the reference is complete.
    pub fn drift_vs_reference(
        &self,
    ) -> impl Iterator<Item = (FeatureRef<'a>, Option<DriftScores>)> + 'a {
        let reference = self.reference.unwrap_or(&[]);
        let eps = self.epsilon;
        let has = self.reference.is_some();
        self.view.features().filter(move |_| has).map(move |(f, cur)| {
            let r = f.slice(reference);
            (f, drift_of(f, cur, r, eps))
        })
    }
    /// Drift of this window against another count vector of the same model (for example the
    /// baseline version's window with the same end), feature by feature.
    pub fn drift_against(
        &self,
        other_flat: &'a [u64],
    ) -> impl Iterator<Item = (FeatureRef<'a>, Option<DriftScores>)> + 'a {
        let eps = self.epsilon;
        self.view.features().map(move |(f, cur)| (f, drift_of(f, cur, f.slice(other_flat), eps)))
    }
}

/// Drift between two count vectors of the same model (flat, in the model's layout), feature
/// by feature over the features frozen when `view` was taken: for example a canary's window
/// against its baseline's window with the same end. `None` scores where either side has no
/// counts.
pub fn drift_between<'a, 'b>(
    view: &StatsView<'a>,
    current: &'b [u64],
    reference: &'b [u64],
    epsilon: Epsilon,
) -> impl Iterator<Item = (FeatureRef<'a>, Option<DriftScores>)> + use<'a, 'b> {
    view.bins.frozen().map(move |f| (f, drift_of(f, f.slice(current), f.slice(reference), epsilon)))
}

/// Scores two feature slices, padding a short one with zeros to the layout's length.
fn drift_of(
    f: FeatureRef<'_>,
    cur: &[u64],
    reference: &[u64],
    eps: Epsilon,
) -> Option<DriftScores> {
    let n = f.layout.bin_count();
    if cur.len() == n && reference.len() == n {
        return scores(&AlignedCounts::new(cur, reference).ok()?, eps);
    }
    let mut a = vec![0u64; n];
    let mut b = vec![0u64; n];
    a[..cur.len()].copy_from_slice(cur);
    b[..reference.len()].copy_from_slice(reference);
    scores(&AlignedCounts::new(&a, &b).ok()?, eps)
}
