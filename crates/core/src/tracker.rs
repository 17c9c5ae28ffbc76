//! The tracker: event-time panes and sliding windows per (model, version), with watermarks per
//! source partition.
//!
//! # Semantics
//! - **Panes.** Pane `p` is `[p * slide, (p + 1) * slide)` of event time. Every event goes to the
//!   pane of its `event_time` for its (model, version) and its source partition.
//! - **Watermark.** Per partition, `watermark = max event_time seen - allowed_lateness`. It depends
//!   only on the partition's event sequence, so a replay reproduces it. A pane of a partition
//!   closes (is handed to [`Output::pane_closed`]) once the partition's watermark reaches its end.
//! - **Late events.** An event whose pane has ended at or before the partition's watermark (or
//!   was closed by idleness) is counted as late and never merged into the closed pane.
//! - **Bad timestamps.** An event more than `max_future_skew` ahead of its Kafka record timestamp
//!   is rejected and does not move the watermark, so one bad clock cannot make every later
//!   event late.
//! - **Windows.** The window ending at `e` (a multiple of the slide) is the merge of the panes in
//!   `[e - window, e)`. A (model, version) seen in several partitions (input not keyed by model)
//!   is windowed over all of them: its window closes when every partition it was seen in has
//!   closed the window's last pane, so counts stay exact. A window is emitted for every slide
//!   while it holds data.
//! - **Idleness.** [`Tracker::tick`] takes the wall clock. A partition without events for
//!   `idle_timeout` of wall time closes its panes as if its event time had kept pace with the wall
//!   clock since its last event, so a quiet partition (or a stopped shipper) does not stall
//!   windows. This is the one decision that depends on the wall clock and so may differ in a
//!   replay.
//! - **Replay.** [`Tracker::restore_partition`] sets a partition's watermark and cutoff from a
//!   checkpoint: events in panes ending at or before the cutoff are skipped (but still move the
//!   watermark), so panes already durable are not rewritten with part of their events.
//!   [`Tracker::resume_point`] gives the offset and watermark to resume from (delivery.md).
//!   Windows ending before `cutoff + window` need skipped panes, so they are not emitted again:
//!   the caller's cutoff must therefore also stay before the first pane of any window that is
//!   not yet durable.
//! - **Caps.** New models past `max_models`, versions past `max_versions_per_model` and features
//!   past `max_features` are counted and dropped. A version silent for `idle_ttl` of event time
//!   is evicted once its last window is out.
//! - **Reference.** Each version's bin counts over its first `reference_period` (from its first
//!   pane) are its pinned reference; windows score drift against it once it is complete.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::bins::{FeatureKind, FrozenLayout, ModelBins};
use crate::config::CoreConfig;
use crate::drift::Epsilon;
use crate::event::{InferenceRecord, MetricKind, MetricRecord};
use crate::intern::Interner;
use crate::latency::{Quantizer, RunningLatency};
use crate::metrics::{CounterSeries, MetricAgg, counter_increase};
use crate::pane::{OpenPane, PaneStats, add_status};
use crate::view::{Output, PaneView, StatsView, WindowView};

/// Where an event came from: the tracker's dense partition id, the Kafka offset and the record
/// timestamp (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Dense partition id assigned by the caller (one per (topic, partition)).
    pub partition: u32,
    /// Offset of the Kafka record.
    pub offset: i64,
    /// Kafka record timestamp in ms since the epoch.
    pub record_ts_ms: i64,
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Recorded into its pane.
    Recorded,
    /// Its pane had already closed.
    Late,
    /// Its event time is further ahead of its record timestamp than `max_future_skew`.
    BadTimestamp,
    /// Replay: its pane is before the checkpoint's cutoff and already durable.
    Skipped,
    /// A new model past `limits.max_models`.
    OverModelCap,
    /// A new version past `limits.max_versions_per_model`.
    OverVersionCap,
}

/// Counters of the tracker's decisions, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Events recorded.
    pub recorded: u64,
    /// Late events dropped.
    pub late: u64,
    /// Events with a bad timestamp.
    pub bad_timestamp: u64,
    /// Replayed events skipped before the cutoff.
    pub skipped: u64,
    /// Events of models over the cap.
    pub over_model_cap: u64,
    /// Events of versions over the cap.
    pub over_version_cap: u64,
    /// Feature occurrences over the feature cap.
    pub over_feature_cap: u64,
    /// Non-finite feature or prediction values (not binned).
    pub non_finite_values: u64,
    /// Distinct statuses past the status cap (counted as `__other__`).
    pub over_status_cap: u64,
    /// Distinct metric names past the metric cap (counted as `__other__`).
    pub over_metric_cap: u64,
    /// Panes closed.
    pub panes_closed: u64,
    /// Windows emitted.
    pub windows_emitted: u64,
    /// Versions evicted after `idle_ttl`.
    pub keys_evicted: u64,
    /// Counter samples of new series past the series cap (their increase is not counted).
    pub over_counter_cap: u64,
}

/// Where a partition can resume from after a restart (see delivery.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Lowest offset of any recorded event of the partition in a pane ending after the cutoff.
    pub offset: i64,
    /// The partition's watermark just before that event was processed (`i64::MIN` if none).
    pub watermark_ms: i64,
}

/// A version's pinned reference distribution, persisted across restarts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReferenceSnapshot {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Start of the reference period (the version's first pane), ms since the epoch.
    pub start_ms: i64,
    /// End of the reference period.
    pub end_ms: i64,
    /// Whether the period is over and the counts final.
    pub complete: bool,
    /// Counts per frozen feature, in the feature's layout.
    pub features: Vec<(String, FeatureKind, Vec<u64>)>,
}

const MAX_STATUSES: usize = 256;

/// A counter series: (key, metric name id, hash of the `host` attribute).
type SeriesKey = (u32, u32, u64);
/// The last sample of a counter series: (host, event time, cumulative value).
type LastSample = (Box<str>, i64, f64);

fn host_hash(host: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(host)
}
const MAX_METRIC_NAMES: usize = 4_096;
/// Most counter series (version, metric, host) whose last sample is kept for rates.
const MAX_COUNTER_SERIES: usize = 100_000;
const OTHER: &str = "__other__";

#[derive(Debug)]
struct ModelState {
    name: Box<str>,
    versions: FxHashMap<Box<str>, u32>,
    bins: ModelBins,
}

#[derive(Debug)]
struct Reference {
    start_ms: i64,
    end_ms: i64,
    counts: Vec<u64>,
    complete: bool,
}

#[derive(Debug)]
struct KeyState {
    model: u32,
    version: Box<str>,
    open: Vec<OpenPane>,
    /// Closed panes merged over partitions, by increasing pane id.
    closed: VecDeque<(i64, PaneStats)>,
    /// Partitions the version was seen in, with the last pane seen there.
    partitions: Vec<(u32, i64)>,
    next_window_end: Option<i64>,
    last_emitted_end: i64,
    last_event_ms: i64,
    reference: Reference,
    /// Latency and TTFT buckets of the closed panes in `window_panes` (inclusive pane ids;
    /// empty when the first exceeds the second).
    window_latency: RunningLatency,
    window_ttft: RunningLatency,
    window_panes: (i64, i64),
}

impl KeyState {
    fn in_window(&self, pane: i64) -> bool {
        self.window_panes.0 <= pane && pane <= self.window_panes.1
    }

    /// Adds a pane's latency and TTFT buckets to the running window, or removes them.
    fn apply_to_window(&mut self, s: &PaneStats, add: bool, scratch: &mut Vec<(u32, u32)>) {
        self.window_latency.apply(&s.latency, add, scratch);
        self.window_ttft.apply(&s.ttft, add, scratch);
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    max_event_ms: Option<i64>,
    closed_through_ms: i64,
    cutoff_ms: i64,
    /// (pane, first offset, watermark before it), by pane.
    first_events: Vec<(i64, i64, i64)>,
    events_since_tick: u64,
    last_active_wall_ms: Option<i64>,
    idle: bool,
}

impl PartitionState {
    fn new() -> Self {
        Self { closed_through_ms: i64::MIN, cutoff_ms: i64::MIN, ..Self::default() }
    }
    fn watermark(&self, lateness: i64) -> i64 {
        self.max_event_ms.map_or(i64::MIN, |m| m.saturating_sub(lateness))
    }
}

/// Per-(model, version) event-time state of the partitions one worker owns.
#[derive(Debug)]
pub struct Tracker {
    cfg: CoreConfig,
    epsilon: Epsilon,
    quantizer: Quantizer,
    models: Vec<ModelState>,
    model_ids: FxHashMap<Box<str>, u32>,
    keys: Vec<Option<KeyState>>,
    free_keys: Vec<u32>,
    partitions: Vec<PartitionState>,
    statuses: Interner,
    ok_status: u32,
    metric_names: Interner,
    counters: FxHashMap<SeriesKey, LastSample>,
    pool: Vec<OpenPane>,
    stats_pool: Vec<PaneStats>,
    scratch: PaneStats,
    merge_scratch: Vec<(u32, u32)>,
    stats: TrackerStats,
    dirty: bool,
}

impl Tracker {
    /// A tracker with the given (validated) configuration.
    pub fn new(cfg: CoreConfig) -> Self {
        let mut statuses = Interner::new(MAX_STATUSES, OTHER);
        let ok_status = statuses.intern("ok");
        // Validated by DriftSpec already; the fallback is never taken.
        let epsilon = Epsilon::new(cfg.drift.epsilon()).unwrap_or(Epsilon::DEFAULT);
        Self {
            epsilon,
            quantizer: Quantizer::new(cfg.latency),
            models: Vec::new(),
            model_ids: FxHashMap::default(),
            keys: Vec::new(),
            free_keys: Vec::new(),
            partitions: Vec::new(),
            statuses,
            ok_status,
            metric_names: Interner::new(MAX_METRIC_NAMES, OTHER),
            counters: FxHashMap::default(),
            pool: Vec::new(),
            stats_pool: Vec::new(),
            scratch: PaneStats::empty(),
            merge_scratch: Vec::new(),
            stats: TrackerStats::default(),
            dirty: false,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Counters of decisions so far.
    pub fn stats(&self) -> TrackerStats {
        let mut s = self.stats;
        s.over_feature_cap = self.models.iter().map(|m| m.bins.drops.over_feature_cap).sum();
        s.non_finite_values = self.models.iter().map(|m| m.bins.drops.non_finite).sum();
        s.over_status_cap = self.statuses.overflowed;
        s.over_metric_cap = self.metric_names.overflowed;
        s
    }

    /// Versions currently tracked.
    pub fn active_keys(&self) -> usize {
        self.keys.iter().flatten().count()
    }

    /// The watermark of a partition (`None` before its first event).
    pub fn watermark(&self, partition: u32) -> Option<i64> {
        let p = self.partitions.get(partition as usize)?;
        p.max_event_ms.map(|_| p.watermark(self.cfg.windows.lateness_ms()))
    }

    /// Whether a partition was judged idle at the last tick.
    pub fn is_idle(&self, partition: u32) -> bool {
        self.partitions.get(partition as usize).is_some_and(|p| p.idle)
    }

    fn partition_mut(&mut self, partition: u32) -> &mut PartitionState {
        let i = partition as usize;
        if self.partitions.len() <= i {
            // Room for a window's panes of resume bookkeeping, so that recording does not
            // allocate while the caller releases it at each checkpoint.
            let room = self.cfg.windows.panes_per_window() as usize + 8;
            self.partitions.resize_with(i + 1, || {
                let mut p = PartitionState::new();
                p.first_events.reserve(room);
                p
            });
        }
        &mut self.partitions[i]
    }

    /// Checks time: returns the pane and the watermark before the event, or why not.
    #[inline]
    fn admit(&mut self, src: Source, t: i64) -> Result<(i64, i64), Admission> {
        let w = self.cfg.windows;
        if t > src.record_ts_ms.saturating_add(w.max_future_skew_ms()) {
            self.stats.bad_timestamp += 1;
            return Err(Admission::BadTimestamp);
        }
        let pane = w.pane_of(t);
        let end = w.pane_end(pane);
        let p = self.partition_mut(src.partition);
        let wm_before = p.watermark(w.lateness_ms());
        p.events_since_tick += 1;
        p.max_event_ms = Some(p.max_event_ms.map_or(t, |m| m.max(t)));
        if end <= p.cutoff_ms {
            self.stats.skipped += 1;
            return Err(Admission::Skipped);
        }
        if end <= wm_before.max(p.closed_through_ms) {
            self.stats.late += 1;
            return Err(Admission::Late);
        }
        Ok((pane, wm_before))
    }

    fn note_offset(&mut self, src: Source, pane: i64, wm_before: i64) {
        let p = &mut self.partitions[src.partition as usize];
        if let Err(i) = p.first_events.binary_search_by_key(&pane, |e| e.0) {
            p.first_events.insert(i, (pane, src.offset, wm_before));
        }
    }

    /// Admits an event's time and finds its key: (key, pane, watermark before the event).
    #[inline]
    fn admit_key(
        &mut self,
        src: Source,
        t: i64,
        model: &str,
        version: &str,
    ) -> Result<(u32, i64, i64), Admission> {
        let (pane, wm_before) = self.admit(src, t)?;
        let kid = self.key_for(model, version, pane)?;
        Ok((kid, pane, wm_before))
    }

    /// Finds or admits the key of (model, version).
    #[inline]
    fn key_for(&mut self, model: &str, version: &str, pane: i64) -> Result<u32, Admission> {
        let mid = match self.model_ids.get(model) {
            Some(&m) => m,
            None => {
                if self.model_ids.len() >= self.cfg.limits.max_models() as usize {
                    self.stats.over_model_cap += 1;
                    return Err(Admission::OverModelCap);
                }
                let id = self.models.len() as u32;
                self.models.push(ModelState {
                    name: model.into(),
                    versions: FxHashMap::default(),
                    bins: ModelBins::new(),
                });
                self.model_ids.insert(model.into(), id);
                id
            }
        };
        let m = &mut self.models[mid as usize];
        if let Some(&k) = m.versions.get(version) {
            return Ok(k);
        }
        if m.versions.len() >= self.cfg.limits.max_versions_per_model() as usize {
            self.stats.over_version_cap += 1;
            return Err(Admission::OverVersionCap);
        }
        let start = self.cfg.windows.pane_start(pane);
        let state = KeyState {
            model: mid,
            version: version.into(),
            open: Vec::new(),
            closed: VecDeque::new(),
            partitions: Vec::new(),
            next_window_end: None,
            last_emitted_end: i64::MIN,
            last_event_ms: i64::MIN,
            reference: Reference {
                start_ms: start,
                end_ms: start.saturating_add(self.cfg.drift.reference_period_ms()),
                counts: Vec::new(),
                complete: false,
            },
            window_latency: RunningLatency::default(),
            window_ttft: RunningLatency::default(),
            window_panes: (i64::MAX, i64::MIN),
        };
        let id = match self.free_keys.pop() {
            Some(id) => {
                self.keys[id as usize] = Some(state);
                id
            }
            None => {
                self.keys.push(Some(state));
                (self.keys.len() - 1) as u32
            }
        };
        m.versions.insert(version.into(), id);
        Ok(id)
    }

    /// The open pane of a key for (pane, partition), created from the pool when missing.
    #[inline]
    fn open_pane<'a>(
        key: &'a mut KeyState,
        pool: &mut Vec<OpenPane>,
        pane: i64,
        partition: u32,
        slide: i64,
    ) -> &'a mut OpenPane {
        let i = match key.open.iter().position(|o| o.pane == pane && o.partition == partition) {
            Some(i) => i,
            None => {
                let mut o = pool.pop().unwrap_or_default();
                o.reset(pane, partition);
                key.open.push(o);
                match key.partitions.iter_mut().find(|(p, _)| *p == partition) {
                    Some(e) => e.1 = e.1.max(pane),
                    None => key.partitions.push((partition, pane)),
                }
                if key.next_window_end.is_none() {
                    let end = pane.saturating_add(1).saturating_mul(slide);
                    key.next_window_end = Some(end.max(key.last_emitted_end.saturating_add(slide)));
                }
                key.open.len() - 1
            }
        };
        &mut key.open[i]
    }

    /// Records one inference event.
    pub fn record_inference(&mut self, src: Source, rec: &InferenceRecord) -> Admission {
        let t = rec.event_time_ms;
        let (kid, pane, wm_before) = match self.admit_key(src, t, rec.model(), rec.version()) {
            Ok(x) => x,
            Err(a) => return a,
        };
        let status = match rec.status() {
            "ok" => self.ok_status,
            s => self.statuses.intern(s),
        };
        let slide = self.cfg.windows.slide_ms();
        let Some(key) = self.keys[kid as usize].as_mut() else { unreachable!("live key") };
        key.last_event_ms = key.last_event_ms.max(t);
        let model = &mut self.models[key.model as usize];
        let op = Self::open_pane(key, &mut self.pool, pane, src.partition, slide);
        let s = &mut op.stats;
        s.requests += 1;
        add_status(&mut s.statuses, status, 1);
        let lat = rec.latency_ms;
        op.latency.record(self.quantizer.bucket(lat));
        let lat_us =
            (lat.max(0.0) * 1000.0).round().min(crate::latency::HIGHEST_TRACKABLE_US as f64);
        s.latency_sum_us = s.latency_sum_us.saturating_add(lat_us as u64);
        s.latency_min_ms = s.latency_min_ms.min(lat);
        s.latency_max_ms = s.latency_max_ms.max(lat);
        if let Some(tt) = rec.ttft_ms {
            op.ttft.record(self.quantizer.bucket(tt));
            s.ttft_max_ms = s.ttft_max_ms.max(tt);
        }
        if rec.tokens_in.is_some() || rec.tokens_out.is_some() {
            s.token_requests += 1;
            s.tokens_in = s.tokens_in.saturating_add(rec.tokens_in.unwrap_or(0).max(0) as u64);
            s.tokens_out = s.tokens_out.saturating_add(rec.tokens_out.unwrap_or(0).max(0) as u64);
        }
        model.bins.record(rec, &mut op.bins, &self.cfg.drift, self.cfg.limits.max_features());
        self.note_offset(src, pane, wm_before);
        self.stats.recorded += 1;
        Admission::Recorded
    }

    /// Records one metric event.
    pub fn record_metric(&mut self, src: Source, rec: &MetricRecord) -> Admission {
        let t = rec.event_time_ms;
        let (kid, pane, wm_before) = match self.admit_key(src, t, rec.model(), rec.version()) {
            Ok(x) => x,
            Err(a) => return a,
        };
        let mid = self.metric_names.intern(rec.name());
        let increase = if rec.kind == MetricKind::Counter {
            // Series are found by the hash of their host, so a known series costs no allocation.
            let host = rec.attribute("host").unwrap_or("");
            let series = (kid, mid, host_hash(host));
            let prev = self.counters.get(&series).map(|c| (c.1, c.2));
            let inc = match prev {
                Some((pt, _)) if t < pt => 0.0, // out of order: no increase
                _ => counter_increase(prev.map(|p| p.1), rec.value),
            };
            let full = self.counters.len() >= MAX_COUNTER_SERIES;
            match self.counters.get_mut(&series) {
                Some(c) if t >= c.1 => (c.1, c.2) = (t, rec.value),
                Some(_) => {}
                None if full => self.stats.over_counter_cap += 1,
                None => {
                    self.counters.insert(series, (host.into(), t, rec.value));
                }
            }
            inc
        } else {
            0.0
        };
        let slide = self.cfg.windows.slide_ms();
        let Some(key) = self.keys[kid as usize].as_mut() else { unreachable!("live key") };
        key.last_event_ms = key.last_event_ms.max(t);
        let op = Self::open_pane(key, &mut self.pool, pane, src.partition, slide);
        let metrics = &mut op.stats.metrics;
        let i = match metrics.binary_search_by_key(&mid, |(i, _)| *i) {
            Ok(i) => i,
            Err(i) => {
                metrics.insert(i, (mid, MetricAgg::new(rec.kind)));
                i
            }
        };
        metrics[i].1.record(rec.value, t, increase);
        self.note_offset(src, pane, wm_before);
        self.stats.recorded += 1;
        Admission::Recorded
    }

    /// Wall-clock tick: judges idleness, then closes what is due (see the module docs).
    pub fn tick<O: Output + ?Sized>(&mut self, now_wall_ms: i64, out: &mut O) {
        let w = self.cfg.windows;
        for p in &mut self.partitions {
            if p.events_since_tick > 0 || p.last_active_wall_ms.is_none() {
                p.events_since_tick = 0;
                p.idle = false;
                if p.max_event_ms.is_some() {
                    p.last_active_wall_ms = Some(now_wall_ms);
                }
                continue;
            }
            let (Some(last), Some(max)) = (p.last_active_wall_ms, p.max_event_ms) else { continue };
            let quiet = now_wall_ms.saturating_sub(last);
            if quiet >= w.idle_timeout_ms() {
                p.idle = true;
                let wm = max.saturating_add(quiet).saturating_sub(w.lateness_ms());
                let through = wm.div_euclid(w.slide_ms()).saturating_mul(w.slide_ms());
                if through > p.closed_through_ms {
                    p.closed_through_ms = through;
                    self.dirty = true;
                }
            }
        }
        self.advance(out);
    }

    /// Closes every pane whose partition's watermark passed its end and every window that is
    /// complete, handing them to `out`. Call it after each batch of events.
    pub fn advance<O: Output + ?Sized>(&mut self, out: &mut O) {
        let w = self.cfg.windows;
        for p in &mut self.partitions {
            let wm = p.watermark(w.lateness_ms());
            if wm == i64::MIN {
                continue;
            }
            let through = wm.div_euclid(w.slide_ms()).saturating_mul(w.slide_ms());
            if through > p.closed_through_ms {
                p.closed_through_ms = through;
                self.dirty = true;
            }
        }
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        for kid in 0..self.keys.len() {
            self.process_key(kid, out);
        }
    }

    fn process_key<O: Output + ?Sized>(&mut self, kid: usize, out: &mut O) {
        let w = self.cfg.windows;
        let slide = w.slide_ms();
        let Some(key) = self.keys[kid].as_mut() else { return };
        let model = &self.models[key.model as usize];
        let partitions = &self.partitions;
        let closed_through =
            |q: u32| partitions.get(q as usize).map_or(i64::MIN, |p| p.closed_through_ms);

        // 1. Close due panes, by (pane, partition).
        key.open.sort_unstable_by_key(|o| (o.pane, o.partition));
        let mut i = 0;
        while i < key.open.len() {
            let o = &key.open[i];
            if w.pane_end(o.pane) > closed_through(o.partition) {
                i += 1;
                continue;
            }
            let mut o = key.open.remove(i);
            o.seal();
            let start = w.pane_start(o.pane);
            out.pane_closed(&PaneView {
                view: StatsView {
                    model: &model.name,
                    version: &key.version,
                    stats: &o.stats,
                    statuses: &self.statuses,
                    metric_names: &self.metric_names,
                    bins: &model.bins,
                },
                partition: o.partition,
                start_ms: start,
                end_ms: start + slide,
            });
            self.stats.panes_closed += 1;
            let r = &mut key.reference;
            if !r.complete && start < r.end_ms {
                let b = o.stats.bins();
                if r.counts.len() < b.len() {
                    r.counts.resize(b.len(), 0);
                }
                for (a, x) in r.counts.iter_mut().zip(b) {
                    *a += x;
                }
            }
            if key.in_window(o.pane) {
                key.apply_to_window(&o.stats, true, &mut self.merge_scratch);
            }
            match key.closed.binary_search_by_key(&o.pane, |c| c.0) {
                Ok(j) => key.closed[j].1.merge(&o.stats),
                Err(j) => {
                    let mut s = self.stats_pool.pop().unwrap_or_else(PaneStats::empty);
                    s.reset();
                    s.merge(&o.stats);
                    key.closed.insert(j, (o.pane, s));
                }
            }
            self.pool.push(o);
        }

        // 2. Forget partitions the version left a window ago.
        key.partitions.retain(|&(q, last)| {
            key.open.iter().any(|o| o.partition == q)
                || w.pane_end(last).saturating_add(w.window_ms()) > closed_through(q)
        });

        // 3. Emit complete windows.
        // Once the version has left every partition, all it has is closed.
        let ready = key.partitions.iter().map(|&(q, _)| closed_through(q)).min();
        let frontier = ready.unwrap_or_else(|| {
            partitions.iter().map(|p| p.closed_through_ms).max().unwrap_or(i64::MIN)
        });
        let ready = ready.unwrap_or(i64::MAX);
        if !key.reference.complete && ready >= key.reference.end_ms {
            key.reference.complete = true;
        }
        while let Some(end) = key.next_window_end {
            if end > ready {
                break;
            }
            let first_pane = w.pane_of(end.saturating_sub(w.window_ms()));
            // Jump over empty stretches straight to the first window holding data, closed or
            // still open (a lone old event must not make this loop walk every slide since).
            let earliest = key.closed.front().map(|c| c.0).into_iter();
            if let Some(p0) = earliest.chain(key.open.iter().map(|o| o.pane)).min() {
                let first_end = w.pane_end(p0);
                if end < first_end {
                    key.next_window_end = Some(first_end);
                    continue;
                }
            }
            let last_pane = w.pane_of(end) - 1;
            // Bring the running latency window to panes [first_pane, last_pane].
            for (p, s) in &key.closed {
                let was = key.in_window(*p);
                let now = first_pane <= *p && *p <= last_pane;
                if was != now {
                    key.window_latency.apply(&s.latency, now, &mut self.merge_scratch);
                    key.window_ttft.apply(&s.ttft, now, &mut self.merge_scratch);
                }
            }
            key.window_panes = (first_pane, last_pane);
            let window = key.closed.iter().filter(|(p, _)| *p >= first_pane && *p <= last_pane);
            self.scratch.reset();
            let mut any = false;
            for (_, s) in window {
                any = true;
                self.scratch.merge_scalars(s);
            }
            // After a restore, windows that need panes before a partition's cutoff cannot be
            // rebuilt whole: the first run wrote them, so they are not emitted again.
            let rebuildable = key.partitions.iter().all(|&(q, _)| {
                partitions
                    .get(q as usize)
                    .is_none_or(|p| end >= p.cutoff_ms.saturating_add(w.window_ms()))
            });
            if any && rebuildable && !self.scratch.is_empty() {
                let reference = (key.reference.complete && !key.reference.counts.is_empty())
                    .then_some(key.reference.counts.as_slice());
                out.window_closed(&WindowView {
                    view: StatsView {
                        model: &model.name,
                        version: &key.version,
                        stats: &self.scratch,
                        statuses: &self.statuses,
                        metric_names: &self.metric_names,
                        bins: &model.bins,
                    },
                    start_ms: end.saturating_sub(w.window_ms()),
                    end_ms: end,
                    latency: key.window_latency.summary(&self.quantizer),
                    ttft: key.window_ttft.summary(&self.quantizer),
                    reference,
                    epsilon: self.epsilon,
                });
                self.stats.windows_emitted += 1;
            }
            key.last_emitted_end = end;
            // Drop panes no later window needs.
            let next_first = w.pane_of(end.saturating_add(slide).saturating_sub(w.window_ms()));
            while key.closed.front().is_some_and(|(p, _)| *p < next_first) {
                if let Some((p, s)) = key.closed.pop_front() {
                    if key.in_window(p) {
                        key.apply_to_window(&s, false, &mut self.merge_scratch);
                    }
                    self.stats_pool.push(s);
                }
            }
            key.window_panes.0 = key.window_panes.0.max(next_first);
            key.next_window_end = (!key.closed.is_empty() || !key.open.is_empty())
                .then_some(end.saturating_add(slide));
        }

        // 4. Evict a version silent for idle_ttl with nothing left to emit.
        if key.open.is_empty()
            && key.closed.is_empty()
            && key.last_event_ms.saturating_add(self.cfg.limits.idle_ttl_ms()) < frontier
        {
            let model = &mut self.models[key.model as usize];
            model.versions.remove(&key.version);
            out.key_evicted(&model.name, &key.version);
            self.keys[kid] = None;
            self.free_keys.push(kid as u32);
            self.counters.retain(|c, _| c.0 != kid as u32);
            self.stats.keys_evicted += 1;
        }
    }

    /// Sets a partition's state from a checkpoint before its first replayed event: its
    /// watermark (`wm_R`) and its cutoff (`C`): events in panes ending at or before the cutoff
    /// are skipped.
    pub fn restore_partition(&mut self, partition: u32, watermark_ms: i64, cutoff_ms: i64) {
        self.forget_partition(partition);
        let lateness = self.cfg.windows.lateness_ms();
        let p = self.partition_mut(partition);
        p.max_event_ms = (watermark_ms != i64::MIN).then(|| watermark_ms.saturating_add(lateness));
        p.cutoff_ms = cutoff_ms;
        p.first_events.clear();
    }

    /// Drops everything a partition contributed that is not closed yet (its open panes in every
    /// version) and resets its watermark, idleness and cutoff: for a partition that was revoked,
    /// or before replaying it. Closed panes already merged into windows stay.
    pub fn forget_partition(&mut self, partition: u32) {
        for key in self.keys.iter_mut().flatten() {
            let mut i = 0;
            while i < key.open.len() {
                if key.open[i].partition == partition {
                    self.pool.push(key.open.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            key.partitions.retain(|&(q, _)| q != partition);
        }
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            let room = p.first_events.capacity();
            *p = PartitionState::new();
            p.first_events.reserve(room);
        }
        self.dirty = true;
    }

    /// The lowest offset (with the watermark before it) of any recorded event of `partition`
    /// in a pane ending after `cutoff_ms`; `None` when there is none.
    pub fn resume_point(&self, partition: u32, cutoff_ms: i64) -> Option<ResumePoint> {
        let w = self.cfg.windows;
        self.partitions
            .get(partition as usize)?
            .first_events
            .iter()
            .filter(|e| w.pane_end(e.0) > cutoff_ms)
            .min_by_key(|e| e.1)
            .map(|e| ResumePoint { offset: e.1, watermark_ms: e.2 })
    }

    /// Forgets resume bookkeeping for panes ending at or before `cutoff_ms` (after a checkpoint
    /// covering them is durable).
    pub fn release(&mut self, partition: u32, cutoff_ms: i64) {
        let w = self.cfg.windows;
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            p.first_events.retain(|e| w.pane_end(e.0) > cutoff_ms);
        }
    }

    /// (model, version, partitions) of every version seen in more than one partition: input
    /// that is not keyed by model (see delivery.md).
    pub fn keys_in_several_partitions(&self) -> Vec<(&str, &str, Vec<u32>)> {
        self.keys
            .iter()
            .flatten()
            .filter(|k| k.partitions.len() > 1)
            .map(|k| {
                let mut ps: Vec<u32> = k.partitions.iter().map(|p| p.0).collect();
                ps.sort_unstable();
                (&*self.models[k.model as usize].name, &*k.version, ps)
            })
            .collect()
    }

    /// Every frozen bin layout, by model, for persistence.
    pub fn frozen_layouts(&self) -> Vec<(String, FrozenLayout)> {
        self.models
            .iter()
            .flat_map(|m| m.bins.frozen_layouts().into_iter().map(|l| (m.name.to_string(), l)))
            .collect()
    }

    /// Installs a persisted layout; `false` when the feature is already frozen or over a cap.
    pub fn restore_layout(&mut self, model: &str, layout: &FrozenLayout) -> bool {
        let mid = match self.model_ids.get(model) {
            Some(&m) => m,
            None => {
                if self.model_ids.len() >= self.cfg.limits.max_models() as usize {
                    return false;
                }
                let id = self.models.len() as u32;
                self.models.push(ModelState {
                    name: model.into(),
                    versions: FxHashMap::default(),
                    bins: ModelBins::new(),
                });
                self.model_ids.insert(model.into(), id);
                id
            }
        };
        self.models[mid as usize].bins.restore(layout, self.cfg.limits.max_features())
    }

    /// Every version's reference, for persistence.
    pub fn reference_snapshots(&self) -> Vec<ReferenceSnapshot> {
        self.keys
            .iter()
            .flatten()
            .map(|k| {
                let m = &self.models[k.model as usize];
                let r = &k.reference;
                ReferenceSnapshot {
                    model: m.name.to_string(),
                    version: k.version.to_string(),
                    start_ms: r.start_ms,
                    end_ms: r.end_ms,
                    complete: r.complete,
                    features: m
                        .bins
                        .frozen()
                        .map(|f| {
                            let mut c = f.slice(&r.counts).to_vec();
                            c.resize(f.layout.bin_count(), 0);
                            (f.name.to_owned(), f.kind, c)
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Installs a persisted reference (layouts first). Admits the version like an event would;
    /// `false` when over a cap.
    pub fn restore_reference(&mut self, snap: &ReferenceSnapshot) -> bool {
        let pane = self.cfg.windows.pane_of(snap.start_ms);
        let Ok(kid) = self.key_for(&snap.model, &snap.version, pane) else { return false };
        let Some(key) = self.keys[kid as usize].as_mut() else { return false };
        let m = &self.models[key.model as usize];
        let r = &mut key.reference;
        r.start_ms = snap.start_ms;
        r.end_ms = snap.end_ms;
        r.complete = snap.complete;
        r.counts.clear();
        r.counts.resize(m.bins.total_bins(), 0);
        for f in m.bins.frozen() {
            if let Some((_, _, c)) =
                snap.features.iter().find(|(n, k, _)| n == f.name && *k == f.kind)
            {
                for (dst, src) in r.counts[f.offset..].iter_mut().zip(c) {
                    *dst = *src;
                }
            }
        }
        true
    }

    /// The last sample of every counter series, for persistence.
    pub fn counter_series(&self) -> Vec<CounterSeries> {
        let mut v: Vec<CounterSeries> = self
            .counters
            .iter()
            .filter_map(|((kid, mid, _), (host, time_ms, value))| {
                let k = self.keys.get(*kid as usize)?.as_ref()?;
                Some(CounterSeries {
                    model: self.models[k.model as usize].name.to_string(),
                    version: k.version.to_string(),
                    name: self.metric_names.name(*mid).to_owned(),
                    host: host.to_string(),
                    time_ms: *time_ms,
                    value: *value,
                })
            })
            .collect();
        v.sort_by(|a, b| {
            (&a.model, &a.version, &a.name, &a.host).cmp(&(&b.model, &b.version, &b.name, &b.host))
        });
        v
    }

    /// Restores the last sample of a counter series; `false` when over a cap.
    pub fn restore_counter(&mut self, c: &CounterSeries) -> bool {
        let pane = self.cfg.windows.pane_of(c.time_ms);
        let Ok(kid) = self.key_for(&c.model, &c.version, pane) else { return false };
        let mid = self.metric_names.intern(&c.name);
        self.counters
            .insert((kid, mid, host_hash(&c.host)), (c.host.as_str().into(), c.time_ms, c.value));
        true
    }

    /// Approximate heap bytes of the per-version state (open and closed panes, references), for
    /// memory accounting in benchmarks.
    pub fn state_heap_bytes(&self) -> usize {
        self.keys
            .iter()
            .flatten()
            .map(|k| {
                k.open.iter().map(|o| o.heap_bytes()).sum::<usize>()
                    + k.closed.iter().map(|(_, s)| s.heap_bytes()).sum::<usize>()
                    + k.reference.counts.capacity() * 8
                    + k.window_latency.heap_bytes()
                    + k.window_ttft.heap_bytes()
            })
            .sum::<usize>()
            + self.models.iter().map(|m| m.bins.heap_bytes()).sum::<usize>()
    }
}
