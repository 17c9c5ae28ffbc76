//! Turns what the tracker closes into rows of the output tables.
//!
//! Panes become `pane_stats` and `pane_bins` rows (with the stable source partition of
//! [`crate::topics`]); windows become `window_stats` and `metric_stats` rows, drift of every
//! version against its pinned reference period (`reference = 'period'`), and drift of each
//! configured canary against its baseline's window with the same end
//! (`reference = 'version:<baseline>'`, scored on the canary's side: D(canary || baseline)).
//! Rows are built when a pane or window closes, never per event. Panes and windows without
//! requests (metric events only) give no `pane_stats`, `pane_bins` or `window_stats` rows:
//! a version's metric events and inference logs may come from partitions owned by different
//! instances, and each table then has exactly one writer per key.

use std::collections::BTreeMap;

use modelwatch_clickhouse::rows::{
    DriftScoreRow, MetricStatsRow, PaneBinsRow, PaneStatsRow, WindowStatsRow,
};
use modelwatch_core::view::drift_between;
use modelwatch_core::{Output, PaneView, WindowView};

/// The `reference` column of drift against the pinned reference period.
pub const REFERENCE_PERIOD: &str = "period";

/// Rows of the data tables waiting for the sink.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    /// `pane_stats`.
    pub pane_stats: Vec<PaneStatsRow>,
    /// `pane_bins`.
    pub pane_bins: Vec<PaneBinsRow>,
    /// `window_stats`.
    pub window_stats: Vec<WindowStatsRow>,
    /// `drift_scores`.
    pub drift_scores: Vec<DriftScoreRow>,
    /// `metric_stats`.
    pub metric_stats: Vec<MetricStatsRow>,
    /// (model, version) evicted after `limits.idle_ttl` (no table: handed to the alert worker,
    /// which ends their alerts).
    pub evicted: Vec<(String, String)>,
    /// The routes of the requests of each window closed (no table: handed to the alert
    /// worker, which infers canary pairs from them for models without a `[[canary]]` entry).
    pub routes: Vec<RouteCount>,
}

/// How many of a version's requests in one window carried `route = stable` and
/// `route = canary` (windows without either are not reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCount {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// The window's end, ms.
    pub window_end_ms: i64,
    /// Requests routed `stable`.
    pub stable: u64,
    /// Requests routed `canary`.
    pub canary: u64,
}

impl Rows {
    /// Rows in all tables.
    pub fn len(&self) -> usize {
        self.pane_stats.len()
            + self.pane_bins.len()
            + self.window_stats.len()
            + self.drift_scores.len()
            + self.metric_stats.len()
    }

    /// No rows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other`'s rows.
    pub fn append(&mut self, other: &mut Rows) {
        self.pane_stats.append(&mut other.pane_stats);
        self.pane_bins.append(&mut other.pane_bins);
        self.window_stats.append(&mut other.window_stats);
        self.drift_scores.append(&mut other.drift_scores);
        self.metric_stats.append(&mut other.metric_stats);
        self.evicted.append(&mut other.evicted);
        self.routes.append(&mut other.routes);
    }
}

/// A canary and its baseline (from the `[[canary]]` configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryPair {
    /// The model.
    pub model: String,
    /// The baseline version.
    pub baseline: String,
    /// The canary version.
    pub canary: String,
}

/// Windows of one side of a pair kept at most until the other side's window with the same end
/// closes (a side far behind the other, in another partition, makes them pile up).
const PAIR_WINDOWS_KEPT: usize = 4_096;

#[derive(Debug)]
struct PairState {
    pair: CanaryPair,
    reference: String,
    /// Per side (0: baseline, 1: canary): flat bin counts of windows waiting for the other
    /// side's window with the same end, by end.
    pending: [BTreeMap<i64, Vec<u64>>; 2],
    /// Per side: the end of its last window (windows of one version close in end order).
    last_end: [i64; 2],
}

/// The [`Output`] of the engine: rows for the sink.
#[derive(Debug)]
pub struct Collector {
    /// Rows collected since the last [`Collector::take`].
    pub rows: Rows,
    /// Stable source partition by tracker id.
    pub(crate) source_ids: Vec<u32>,
    pairs: Vec<PairState>,
    written_at_ms: u64,
}

impl Collector {
    /// A collector that scores the given canary pairs.
    pub fn new(pairs: Vec<CanaryPair>) -> Self {
        Self {
            rows: Rows::default(),
            source_ids: Vec::new(),
            pairs: pairs
                .into_iter()
                .map(|pair| PairState {
                    reference: format!("version:{}", pair.baseline),
                    pair,
                    pending: [BTreeMap::new(), BTreeMap::new()],
                    last_end: [i64::MIN; 2],
                })
                .collect(),
            written_at_ms: 0,
        }
    }

    /// Sets the wall-clock `written_at_ms` of the rows built from now on.
    pub fn set_written_at(&mut self, ms: u64) {
        self.written_at_ms = ms;
    }

    /// The rows collected so far, leaving none.
    pub fn take(&mut self) -> Rows {
        std::mem::take(&mut self.rows)
    }

    fn source_partition(&self, tracker_id: u32) -> u32 {
        self.source_ids.get(tracker_id as usize).copied().unwrap_or(tracker_id)
    }

    fn pair_drift(&mut self, w: &WindowView<'_>) {
        let v = w.view();
        let (model, version, end) = (v.model(), v.version(), w.end_ms());
        let flat = v.stats().bins();
        for st in &mut self.pairs {
            if st.pair.model != model {
                continue;
            }
            let side = if st.pair.canary == version {
                1
            } else if st.pair.baseline == version {
                0
            } else {
                continue;
            };
            let other = 1 - side;
            st.last_end[side] = end;
            // The other side's windows before this end never find theirs (none was emitted).
            while st.pending[other].first_key_value().is_some_and(|(e, _)| *e < end) {
                st.pending[other].pop_first();
            }
            let Some(other_flat) = st.pending[other].remove(&end) else {
                if st.last_end[other] < end {
                    if st.pending[side].len() >= PAIR_WINDOWS_KEPT {
                        st.pending[side].pop_first();
                    }
                    st.pending[side].insert(end, flat.to_vec());
                }
                continue;
            };
            let (canary, baseline) = if side == 1 {
                (flat, other_flat.as_slice())
            } else {
                (other_flat.as_slice(), flat)
            };
            for (f, s) in drift_between(v, canary, baseline, w.epsilon()) {
                let Some(s) = s else { continue };
                self.rows.drift_scores.push(DriftScoreRow::new(
                    model,
                    &st.pair.canary,
                    &st.reference,
                    f.kind,
                    f.name,
                    end,
                    &s,
                    self.written_at_ms,
                ));
            }
        }
    }
}

impl Output for Collector {
    fn pane_closed(&mut self, pane: &PaneView<'_>) {
        // A pane of metric events only has nothing for these tables.
        if pane.view().requests() == 0 {
            return;
        }
        let sp = self.source_partition(pane.partition());
        let mut row = PaneStatsRow::from_pane(pane, self.written_at_ms);
        row.source_partition = sp;
        self.rows.pane_stats.push(row);
        let start = self.rows.pane_bins.len();
        self.rows.pane_bins.extend(PaneBinsRow::from_pane(pane, self.written_at_ms));
        for r in &mut self.rows.pane_bins[start..] {
            r.source_partition = sp;
        }
    }

    fn window_closed(&mut self, w: &WindowView<'_>) {
        let v = w.view();
        self.rows.metric_stats.extend(MetricStatsRow::from_window(w, self.written_at_ms));
        // Without requests a window has only metric events: no `window_stats` or drift rows,
        // so an instance that owns a version's metric partition but not its inference partition
        // never replaces the other instance's rows, and canary pairs match inference windows.
        if v.requests() == 0 {
            return;
        }
        self.rows.window_stats.push(WindowStatsRow::from_window(w, self.written_at_ms));
        let st = v.stats();
        if st.route_stable + st.route_canary > 0 {
            self.rows.routes.push(RouteCount {
                model: v.model().to_owned(),
                version: v.version().to_owned(),
                window_end_ms: w.end_ms(),
                stable: st.route_stable,
                canary: st.route_canary,
            });
        }
        for (f, s) in w.drift_vs_reference() {
            let Some(s) = s else { continue };
            self.rows.drift_scores.push(DriftScoreRow::new(
                v.model(),
                v.version(),
                REFERENCE_PERIOD,
                f.kind,
                f.name,
                w.end_ms(),
                &s,
                self.written_at_ms,
            ));
        }
        if !self.pairs.is_empty() {
            self.pair_drift(w);
        }
    }

    fn key_evicted(&mut self, model: &str, version: &str) {
        self.rows.evicted.push((model.to_owned(), version.to_owned()));
        for st in &mut self.pairs {
            if st.pair.model != model {
                continue;
            }
            for (side, v) in [(0, &st.pair.baseline), (1, &st.pair.canary)] {
                if v == version {
                    st.pending[side].clear();
                    st.last_end[side] = i64::MIN;
                }
            }
        }
    }
}
