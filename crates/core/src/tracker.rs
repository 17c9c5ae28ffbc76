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
//!   `[e - window, e)`. A window closes when every partition of the tracker (every partition
//!   with an event, restored or [registered](Tracker::register_partition), idle ones aside)
//!   has closed its last pane, as Flink's operator watermark is the minimum over its inputs: a
//!   (model, version) seen in several partitions (input not keyed by model) is windowed over
//!   all of them with exact counts, even when one partition is read long after another. A
//!   window is emitted for every slide while it holds data.
//! - **Idleness.** [`Tracker::tick`] takes the wall clock. A partition without events for
//!   `idle_timeout` of wall time closes its panes as if its event time had kept pace with the wall
//!   clock since its last event, so a quiet partition (or a stopped shipper) does not stall
//!   windows; an idle partition (a registered one without any event included) no longer holds
//!   back the windows of versions it does not carry. A partition whose records wait in the
//!   broker ([`Tracker::set_backlog`]) is behind rather than quiet: it is idle only after
//!   `backlog_idle_timeout` of silence. This is the one decision that depends on the wall
//!   clock and so may differ in a replay.
//! - **Replay.** At each flush the caller takes [`Tracker::checkpoint`] of every partition
//!   (cutoff `C`, resume offset `R`, watermark `wm_R`; the formula is on that method), with
//!   [`Tracker::reference_snapshots_as_of`] those cutoffs and [`Tracker::counter_series_as_of`]
//!   each, persists them with the rows, and once durable calls [`Tracker::release`]. After a
//!   restart a fresh tracker gets the layouts ([`Tracker::restore_layout`]), the references and
//!   counter series ([`Tracker::preload_reference`], [`Tracker::preload_counter`]: installed
//!   when their version is first admitted, with its cap slots reserved until then) and
//!   [`Tracker::restore_partition`] for every partition, then replays each from `R`. Events in
//!   panes ending at or before `C` are skipped: they still move the watermark, admit their
//!   version and update counter series as in the first run (unless the first run found them
//!   late), but are not recorded, so panes already durable are not rewritten with part of their
//!   events. Windows ending before `C + window` need skipped panes, so they are not emitted
//!   again. Reference contributions of panes ending after `C` and counter updates from `R` on
//!   are left out of the persisted state because the replay makes them again; so the replay
//!   writes the same rows as an uninterrupted run. A restored layout counts a feature only
//!   after the event that froze it ([`FrozenLayout::frozen_at`]): the replay leaves out the
//!   edge samples the first run did not bin. Known differences: a pane closed by idleness, a
//!   layout frozen after the checkpoint (the replay samples its edges again, from the resume
//!   offset on), a version evicted between `R` and the checkpoint, and a version spread over
//!   several partitions (delivery.md).
//! - **Caps.** New models past `max_models`, versions past `max_versions_per_model` and features
//!   past `max_features` are counted and dropped. A version silent for `idle_ttl` of event time
//!   is evicted once its last window is out.
//! - **Reference.** Each version's bin counts over its first `reference_period` (from its first
//!   pane) are its pinned reference; windows ending at or after the end of that period score
//!   drift against it (it is complete by then, whatever the batching of events).

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

/// A partition's checkpoint (delivery.md): what a restart needs to rebuild exactly the panes and
/// windows that are not durable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    /// `C`: panes ending at or before it are durable and no future window needs them; a replay
    /// skips their events.
    pub cutoff_ms: i64,
    /// `R`: the offset to resume from.
    pub resume_offset: i64,
    /// `wm_R`: the partition's watermark just before the event at `R` was processed
    /// (`i64::MIN` before any event).
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

/// An event whose time was admitted.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    pane: i64,
    wm_before: i64,
    /// Replay: its pane ends at or before the cutoff, so it is not recorded; but it was in the
    /// first run, so it still admits its key and updates its counter series.
    skipped: bool,
}

impl Admitted {
    fn skipped(pane: i64) -> Self {
        Self { pane, wm_before: i64::MIN, skipped: true }
    }
}

const MAX_STATUSES: usize = 256;

/// A counter series: (key, metric name id, hash of the `host` attribute).
type SeriesKey = (u32, u32, u64);

/// The last sample of a counter series.
#[derive(Debug)]
struct LastSample {
    host: Box<str>,
    time_ms: i64,
    value: f64,
    /// The partition whose event set it (whose checkpoint carries it).
    partition: u32,
}

/// A counter update, kept until the checkpoint covering it is durable, so the counter state as
/// of a resume offset can be rebuilt.
#[derive(Debug, Clone, Copy)]
struct CounterUndo {
    offset: i64,
    series: SeriesKey,
    /// (time, value, partition) of the sample it replaced; `None` when it created the series.
    prev: Option<(i64, f64, u32)>,
}

/// The bin counts a closed pane of one partition added to a version's reference, kept until a
/// checkpoint past the pane is durable (a replay from an earlier one adds them again).
#[derive(Debug)]
struct Contribution {
    partition: u32,
    pane_end: i64,
    counts: PaneCounts,
}

/// A closed pane's bin counts, kept as u32 (half the memory of u64: a version keeps a window of
/// closed panes, and of unreleased reference contributions) unless one of them does not fit.
#[derive(Debug, Default)]
struct PaneCounts {
    narrow: Vec<u32>,
    /// The counts, when one exceeds `u32::MAX` (`narrow` is empty then).
    wide: Vec<u64>,
}

impl PaneCounts {
    fn set(&mut self, counts: &[u64]) {
        self.narrow.clear();
        self.wide.clear();
        self.add(counts);
    }

    /// Adds `counts` to these, all of them as u64 from the first sum that does not fit a u32.
    fn add(&mut self, counts: &[u64]) {
        let now = |i: usize| self.narrow.get(i).map_or(0, |&c| u64::from(c));
        let fits = self.wide.is_empty()
            && counts
                .iter()
                .enumerate()
                .all(|(i, &x)| u32::try_from(now(i).saturating_add(x)).is_ok());
        if fits {
            if self.narrow.len() < counts.len() {
                self.narrow.resize(counts.len(), 0);
            }
            for (a, &x) in self.narrow.iter_mut().zip(counts) {
                *a += x as u32;
            }
        } else {
            if self.wide.is_empty() {
                self.wide.extend(self.narrow.drain(..).map(u64::from));
            }
            if self.wide.len() < counts.len() {
                self.wide.resize(counts.len(), 0);
            }
            for (a, &x) in self.wide.iter_mut().zip(counts) {
                *a = a.saturating_add(x);
            }
        }
    }

    /// Adds these counts to `totals`, which grows to hold them.
    fn add_to(&self, totals: &mut Vec<u64>) {
        let n = self.narrow.len().max(self.wide.len());
        if totals.len() < n {
            totals.resize(n, 0);
        }
        for (a, &x) in totals.iter_mut().zip(&self.narrow) {
            *a = a.saturating_add(u64::from(x));
        }
        for (a, &x) in totals.iter_mut().zip(&self.wide) {
            *a = a.saturating_add(x);
        }
    }

    /// Takes these counts off `totals` (saturating).
    fn subtract_from(&self, totals: &mut [u64]) {
        for (a, &x) in totals.iter_mut().zip(&self.narrow) {
            *a = a.saturating_sub(u64::from(x));
        }
        for (a, &x) in totals.iter_mut().zip(&self.wide) {
            *a = a.saturating_sub(x);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.narrow.capacity() * 4 + self.wide.capacity() * 8
    }
}

fn sort_series(v: &mut [CounterSeries]) {
    v.sort_by(|a, b| {
        (&a.model, &a.version, &a.name, &a.host).cmp(&(&b.model, &b.version, &b.name, &b.host))
    });
}

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
    /// Keys by version name (as bytes).
    versions: FxHashMap<Box<[u8]>, u32>,
    bins: ModelBins,
}

#[derive(Debug)]
struct Reference {
    start_ms: i64,
    end_ms: i64,
    counts: Vec<u64>,
    complete: bool,
    /// Closed panes added to `counts`, until released.
    contributions: Vec<Contribution>,
}

/// A version's closed pane, merged over partitions: its statistics, whose bin counts are kept
/// apart in `bins`, narrow (a version keeps a window of these).
#[derive(Debug)]
struct ClosedPane {
    pane: i64,
    /// Everything but the bin counts (`stats.bins` stays empty).
    stats: PaneStats,
    bins: PaneCounts,
}

#[derive(Debug)]
struct KeyState {
    model: u32,
    version: Box<str>,
    open: Vec<OpenPane>,
    /// Closed panes merged over partitions, by increasing pane id.
    closed: VecDeque<ClosedPane>,
    /// Partitions the version was seen in, with the last pane seen there.
    partitions: Vec<(u32, i64)>,
    /// Partitions dropped from `partitions` whose last pane a pending window still holds: their
    /// checkpoints must keep that window rebuildable.
    departed: Vec<(u32, i64)>,
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
    /// Counter updates by this partition's events, by offset, until released.
    undo: VecDeque<CounterUndo>,
    /// Restored and no event since: [`Tracker::checkpoint`] returns the restored checkpoint.
    untouched_since_restore: bool,
    events_since_tick: u64,
    last_active_wall_ms: Option<i64>,
    idle: bool,
    /// The broker holds records of it that were not read yet (see [`Tracker::set_backlog`]).
    backlog: bool,
    /// Assigned to this tracker (registered, restored or seen): holds every window back until
    /// its watermark passed them, or it is idle without ever having had an event.
    active: bool,
}

impl PartitionState {
    fn new() -> Self {
        Self { closed_through_ms: i64::MIN, cutoff_ms: i64::MIN, ..Self::default() }
    }
    /// How far this partition lets windows close: its closed-through time, or no limit when
    /// it is not assigned or idle (an idle partition's own panes still close by wall clock,
    /// but its event time may lag far behind the others': it must not hold their windows).
    fn window_limit(&self) -> i64 {
        if !self.active || self.idle { i64::MAX } else { self.closed_through_ms }
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
    /// Model ids by name (as bytes: the hot path reads names as bytes).
    model_ids: FxHashMap<Box<[u8]>, u32>,
    keys: Vec<Option<KeyState>>,
    free_keys: Vec<u32>,
    partitions: Vec<PartitionState>,
    statuses: Interner,
    ok_status: u32,
    metric_names: Interner,
    counters: FxHashMap<SeriesKey, LastSample>,
    /// Preloaded references by model and version, installed when the version is admitted.
    preload_refs: FxHashMap<Box<str>, FxHashMap<Box<str>, ReferenceSnapshot>>,
    /// Models of `preload_refs` not admitted yet (their slots under `max_models` are reserved).
    reserved_models: usize,
    /// Preloaded counter series by model and version, installed when the version is admitted.
    preload_counters: FxHashMap<Box<str>, FxHashMap<Box<str>, Vec<CounterSeries>>>,
    pool: Vec<OpenPane>,
    count_pool: Vec<PaneCounts>,
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
            preload_refs: FxHashMap::default(),
            reserved_models: 0,
            preload_counters: FxHashMap::default(),
            pool: Vec::new(),
            count_pool: Vec::new(),
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

    /// Tells whether the broker holds records of a partition that were not read yet (the
    /// caller compares the partition's high watermark with its position). A silent partition
    /// with a backlog is not quiet, it is behind (a slow broker or consumer): it counts as idle
    /// only after `backlog_idle_timeout` instead of `idle_timeout`, so its panes are not
    /// closed by wall clock while its records are still on their way. An unknown partition is
    /// ignored.
    pub fn set_backlog(&mut self, partition: u32, backlog: bool) {
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            p.backlog = backlog;
        }
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
        let p = &mut self.partitions[i];
        p.active = true;
        p
    }

    /// Registers a partition assigned to this tracker before its first event: from now on it
    /// holds back every version's windows until its watermark passed them (or, without any
    /// event, until it was idle for `idle_timeout`), so a partition read later than the others
    /// cannot find the windows of its data already emitted. [`Tracker::forget_partition`]
    /// unregisters it.
    pub fn register_partition(&mut self, partition: u32) {
        self.partition_mut(partition);
        self.dirty = true;
    }

    /// Checks time: returns the pane and the watermark before the event, or why not.
    #[inline]
    fn admit(&mut self, src: Source, t: i64) -> Result<Admitted, Admission> {
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
        p.untouched_since_restore = false;
        p.max_event_ms = Some(p.max_event_ms.map_or(t, |m| m.max(t)));
        let late = end <= wm_before.max(p.closed_through_ms);
        if end <= p.cutoff_ms {
            self.stats.skipped += 1;
            // A late event reached no key and no counter in the first run either.
            return if late { Err(Admission::Skipped) } else { Ok(Admitted::skipped(pane)) };
        }
        if late {
            self.stats.late += 1;
            return Err(Admission::Late);
        }
        Ok(Admitted { pane, wm_before, skipped: false })
    }

    fn note_offset(&mut self, src: Source, pane: i64, wm_before: i64) {
        let p = &mut self.partitions[src.partition as usize];
        if let Err(i) = p.first_events.binary_search_by_key(&pane, |e| e.0) {
            p.first_events.insert(i, (pane, src.offset, wm_before));
        }
    }

    /// Admits an event's time and finds its key. A skipped event still finds (or admits) its
    /// key, as it did in the first run, so the key's counters and caps repeat.
    #[inline]
    fn admit_key(
        &mut self,
        src: Source,
        t: i64,
        model: &[u8],
        version: &[u8],
    ) -> Result<(u32, Admitted), Admission> {
        let a = self.admit(src, t)?;
        match self.key_for(model, version, a.pane, src.partition) {
            Ok(kid) => Ok((kid, a)),
            Err(_) if a.skipped => Err(Admission::Skipped),
            Err(e) => Err(e),
        }
    }

    /// A new model (admitting it when under the cap): its id.
    fn new_model(&mut self, model: &str) -> Option<u32> {
        self.new_model_keyed(model, model.as_bytes())
    }

    /// [`Tracker::new_model`] under the map key `key` (the bytes `model` was read from).
    fn new_model_keyed(&mut self, model: &str, key: &[u8]) -> Option<u32> {
        let reserved = self.preload_refs.contains_key(model);
        // Slots of preloaded models not seen yet are theirs.
        let taken = self.model_ids.len() + self.reserved_models;
        if !reserved && taken >= self.cfg.limits.max_models() as usize {
            return None;
        }
        if reserved {
            self.reserved_models -= 1;
        }
        let id = self.models.len() as u32;
        self.models.push(ModelState {
            name: model.into(),
            versions: FxHashMap::default(),
            bins: ModelBins::new(),
        });
        self.model_ids.insert(key.into(), id);
        Some(id)
    }

    /// Finds or admits the key of (model, version) for an event of `partition`.
    #[inline]
    fn key_for(
        &mut self,
        model: &[u8],
        version: &[u8],
        pane: i64,
        partition: u32,
    ) -> Result<u32, Admission> {
        // The maps are keyed by the bytes as read and `drop_key` removes by the stored name:
        // the two agree because records reach here validated.
        debug_assert!(std::str::from_utf8(model).is_ok() && std::str::from_utf8(version).is_ok());
        let mid = match self.model_ids.get(model) {
            Some(&m) => m,
            // A record's text is valid UTF-8 (see `InferenceRecord::finish_raw`); keyed by the
            // bytes as read all the same, so that a name is admitted once.
            None => match self.new_model_keyed(&String::from_utf8_lossy(model), model) {
                Some(m) => m,
                None => {
                    self.stats.over_model_cap += 1;
                    return Err(Admission::OverModelCap);
                }
            },
        };
        if let Some(&k) = self.models[mid as usize].versions.get(version) {
            return Ok(k);
        }
        self.new_key(mid, model, version, pane, partition)
    }

    /// Admits a new key (model `mid` is admitted), when under the caps.
    #[cold]
    #[inline(never)]
    fn new_key(
        &mut self,
        mid: u32,
        model: &[u8],
        version: &[u8],
        pane: i64,
        partition: u32,
    ) -> Result<u32, Admission> {
        // Names reach the tracker from validated records; keyed by the bytes as read.
        let version_key = version;
        let (model, version) = (String::from_utf8_lossy(model), String::from_utf8_lossy(version));
        let (model, version) = (model.as_ref(), version.as_ref());
        let m = &mut self.models[mid as usize];
        // Versions with a preloaded reference were admitted before: their slots are reserved.
        let preloaded = self.preload_refs.get(model);
        let reserved = preloaded.map_or(0, |v| v.len());
        let is_reserved = preloaded.is_some_and(|v| v.contains_key(version));
        if !is_reserved
            && m.versions.len() + reserved >= self.cfg.limits.max_versions_per_model() as usize
        {
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
            departed: Vec::new(),
            next_window_end: None,
            last_emitted_end: i64::MIN,
            last_event_ms: i64::MIN,
            reference: Reference {
                start_ms: start,
                end_ms: start.saturating_add(self.cfg.drift.reference_period_ms()),
                counts: Vec::new(),
                complete: false,
                contributions: Vec::new(),
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
        m.versions.insert(version_key.into(), id);
        self.install_preloads(id, model, version, partition);
        Ok(id)
    }

    /// Installs the preloaded reference and counter series of a key just admitted; its counter
    /// series are carried by the checkpoints of `partition` (the admitting event's).
    #[cold]
    fn install_preloads(&mut self, kid: u32, model: &str, version: &str, partition: u32) {
        let snap = self.preload_refs.get_mut(model).and_then(|v| v.remove(version));
        if self.preload_refs.get(model).is_some_and(|v| v.is_empty()) {
            self.preload_refs.remove(model);
        }
        let counters = self.preload_counters.get_mut(model).and_then(|v| v.remove(version));
        if self.preload_counters.get(model).is_some_and(|v| v.is_empty()) {
            self.preload_counters.remove(model);
        }
        let Some(key) = self.keys[kid as usize].as_mut() else { return };
        if let Some(snap) = snap {
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
        }
        for c in counters.into_iter().flatten() {
            if self.counters.len() >= MAX_COUNTER_SERIES {
                self.stats.over_counter_cap += 1;
                continue;
            }
            let mid = self.metric_names.intern(&c.name);
            self.counters.insert(
                (kid, mid, host_hash(&c.host)),
                LastSample { host: c.host.into(), time_ms: c.time_ms, value: c.value, partition },
            );
        }
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
        let (kid, Admitted { pane, wm_before, skipped }) =
            match self.admit_key(src, t, rec.model_bytes(), rec.version_bytes()) {
                Ok(x) => x,
                Err(a) => return a,
            };
        if skipped {
            self.note_skipped(kid, src.partition, pane, t);
            return Admission::Skipped;
        }
        let status = match rec.status_bytes() {
            b"ok" => self.ok_status,
            _ => self.statuses.intern(rec.status()),
        };
        let slide = self.cfg.windows.slide_ms();
        let Some(key) = self.keys[kid as usize].as_mut() else { unreachable!("live key") };
        key.last_event_ms = key.last_event_ms.max(t);
        let model = &mut self.models[key.model as usize];
        let op = Self::open_pane(key, &mut self.pool, pane, src.partition, slide);
        let s = &mut op.stats;
        s.requests += 1;
        add_status(&mut s.statuses, status, 1);
        match rec.attribute_bytes(b"route") {
            Some(b"stable") => s.route_stable += 1,
            Some(b"canary") => s.route_canary += 1,
            _ => {}
        }
        let lat = rec.latency_ms;
        let lat_us = crate::latency::micros(lat);
        op.latency.record(self.quantizer.bucket_us(lat_us));
        s.latency_sum_us = s.latency_sum_us.saturating_add(lat_us);
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
        let at = (src.partition, src.offset);
        model.bins.record(rec, &mut op.bins, &self.cfg.drift, self.cfg.limits.max_features(), at);
        self.note_offset(src, pane, wm_before);
        self.stats.recorded += 1;
        Admission::Recorded
    }

    /// Records one metric event.
    pub fn record_metric(&mut self, src: Source, rec: &MetricRecord) -> Admission {
        let t = rec.event_time_ms;
        let (kid, Admitted { pane, wm_before, skipped }) =
            match self.admit_key(src, t, rec.model().as_bytes(), rec.version().as_bytes()) {
                Ok(x) => x,
                Err(a) => return a,
            };
        let mid = self.metric_names.intern(rec.name());
        let increase = if rec.kind == MetricKind::Counter {
            self.update_counter(src, (kid, mid), t, rec)
        } else {
            0.0
        };
        if skipped {
            self.note_skipped(kid, src.partition, pane, t);
            return Admission::Skipped;
        }
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

    /// A skipped event was recorded in the first run: its key saw its time and its partition
    /// (so the key's windows wait for that partition, and its reference for them, as then).
    #[cold]
    fn note_skipped(&mut self, kid: u32, partition: u32, pane: i64, t: i64) {
        let Some(key) = self.keys[kid as usize].as_mut() else { return };
        key.last_event_ms = key.last_event_ms.max(t);
        match key.partitions.iter_mut().find(|(p, _)| *p == partition) {
            Some(e) => e.1 = e.1.max(pane),
            None => key.partitions.push((partition, pane)),
        }
    }

    /// Takes a counter sample into its series: returns its increase, and logs the update for
    /// [`Tracker::counter_series_as_of`].
    #[inline]
    fn update_counter(
        &mut self,
        src: Source,
        (kid, mid): (u32, u32),
        t: i64,
        rec: &MetricRecord,
    ) -> f64 {
        // Series are found by the hash of their host, so a known series costs no allocation.
        let host = rec.attribute("host").unwrap_or("");
        let series = (kid, mid, host_hash(host));
        let undo = &mut self.partitions[src.partition as usize].undo;
        let full = self.counters.len() >= MAX_COUNTER_SERIES;
        match self.counters.get_mut(&series) {
            Some(c) if t >= c.time_ms => {
                let inc = counter_increase(Some(c.value), rec.value);
                undo.push_back(CounterUndo {
                    offset: src.offset,
                    series,
                    prev: Some((c.time_ms, c.value, c.partition)),
                });
                (c.time_ms, c.value, c.partition) = (t, rec.value, src.partition);
                inc
            }
            Some(_) => 0.0, // out of order: no increase
            None if full => {
                self.stats.over_counter_cap += 1;
                0.0
            }
            None => {
                undo.push_back(CounterUndo { offset: src.offset, series, prev: None });
                let s = LastSample {
                    host: host.into(),
                    time_ms: t,
                    value: rec.value,
                    partition: src.partition,
                };
                self.counters.insert(series, s);
                counter_increase(None, rec.value)
            }
        }
    }

    /// Wall-clock tick: judges idleness, then closes what is due (see the module docs).
    pub fn tick<O: Output + ?Sized>(&mut self, now_wall_ms: i64, out: &mut O) {
        let w = self.cfg.windows;
        for p in &mut self.partitions {
            if p.events_since_tick > 0 || p.last_active_wall_ms.is_none() {
                p.events_since_tick = 0;
                p.idle = false;
                if p.active {
                    p.last_active_wall_ms = Some(now_wall_ms);
                }
                continue;
            }
            let Some(last) = p.last_active_wall_ms else { continue };
            let quiet = now_wall_ms.saturating_sub(last);
            let timeout = if p.backlog { w.backlog_idle_timeout_ms() } else { w.idle_timeout_ms() };
            let Some(max) = p.max_event_ms else {
                // Assigned, never an event: after the timeout it no longer holds windows back.
                if quiet >= timeout && !p.idle {
                    p.idle = true;
                    self.dirty = true;
                }
                continue;
            };
            if quiet >= timeout {
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
        let limit = self.partitions.iter().map(PartitionState::window_limit).min();
        let limit = limit.unwrap_or(i64::MAX);
        for kid in 0..self.keys.len() {
            self.process_key(kid, limit, out);
        }
    }

    /// `limit`: windows ending after it wait (the smallest closed-through time of the assigned
    /// partitions, see [`Tracker::register_partition`]).
    fn process_key<O: Output + ?Sized>(&mut self, kid: usize, limit: i64, out: &mut O) {
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
                let mut counts = self.count_pool.pop().unwrap_or_default();
                counts.set(b);
                let pane_end = start.saturating_add(slide);
                r.contributions.push(Contribution { partition: o.partition, pane_end, counts });
            }
            if key.in_window(o.pane) {
                key.apply_to_window(&o.stats, true, &mut self.merge_scratch);
            }
            let j = match key.closed.binary_search_by_key(&o.pane, |c| c.pane) {
                Ok(j) => j,
                Err(j) => {
                    let mut stats = self.stats_pool.pop().unwrap_or_else(PaneStats::empty);
                    stats.reset();
                    let mut bins = self.count_pool.pop().unwrap_or_default();
                    bins.set(&[]);
                    key.closed.insert(j, ClosedPane { pane: o.pane, stats, bins });
                    j
                }
            };
            let c = &mut key.closed[j];
            c.stats.merge_without_bins(&o.stats);
            c.bins.add(o.stats.bins());
            self.pool.push(o);
        }

        // 2. Forget partitions the version left a window ago (but remember them while a
        // pending window holds their last pane, for their checkpoints).
        key.partitions.retain(|&(q, last)| {
            let stay = key.open.iter().any(|o| o.partition == q)
                || w.pane_end(last).saturating_add(w.window_ms()) > closed_through(q);
            if !stay {
                key.departed.push((q, last));
            }
            stay
        });

        // 3. Emit complete windows.
        // Once the version has left every partition, all it has is closed.
        let ready = key.partitions.iter().map(|&(q, _)| closed_through(q)).min();
        let frontier = ready.unwrap_or_else(|| {
            partitions.iter().map(|p| p.closed_through_ms).max().unwrap_or(i64::MIN)
        });
        let ready = ready.unwrap_or(i64::MAX).min(limit);
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
            let earliest = key.closed.front().map(|c| c.pane).into_iter();
            if let Some(p0) = earliest.chain(key.open.iter().map(|o| o.pane)).min() {
                let first_end = w.pane_end(p0);
                if end < first_end {
                    key.next_window_end = Some(first_end);
                    continue;
                }
            }
            let last_pane = w.pane_of(end) - 1;
            // Bring the running latency window to panes [first_pane, last_pane].
            for c in &key.closed {
                let was = key.in_window(c.pane);
                let now = first_pane <= c.pane && c.pane <= last_pane;
                if was != now {
                    key.window_latency.apply(&c.stats.latency, now, &mut self.merge_scratch);
                    key.window_ttft.apply(&c.stats.ttft, now, &mut self.merge_scratch);
                }
            }
            key.window_panes = (first_pane, last_pane);
            let window = key.closed.iter().filter(|c| c.pane >= first_pane && c.pane <= last_pane);
            self.scratch.reset();
            let mut any = false;
            for c in window {
                any = true;
                self.scratch.merge_counters(&c.stats);
                c.bins.add_to(&mut self.scratch.bins);
            }
            // After a restore, windows that need panes before a partition's cutoff cannot be
            // rebuilt whole: the first run wrote them, so they are not emitted again.
            let rebuildable = key.partitions.iter().all(|&(q, _)| {
                partitions
                    .get(q as usize)
                    .is_none_or(|p| end >= p.cutoff_ms.saturating_add(w.window_ms()))
            });
            if any && rebuildable && !self.scratch.is_empty() {
                // Only windows ending at or after the reference period's end score against it:
                // whether an earlier window was emitted before or after the reference completed
                // depends on how events were batched between advances (a replay batches them
                // otherwise). A reference without counts is none, however it is stored (a
                // preloaded one holds zeros).
                let r = &key.reference;
                let reference = (r.complete && end >= r.end_ms && r.counts.iter().any(|&c| c > 0))
                    .then_some(r.counts.as_slice());
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
            while key.closed.front().is_some_and(|c| c.pane < next_first) {
                if let Some(c) = key.closed.pop_front() {
                    if key.in_window(c.pane) {
                        key.apply_to_window(&c.stats, false, &mut self.merge_scratch);
                    }
                    self.stats_pool.push(c.stats);
                    self.count_pool.push(c.bins);
                }
            }
            key.window_panes.0 = key.window_panes.0.max(next_first);
            key.next_window_end = (!key.closed.is_empty() || !key.open.is_empty())
                .then_some(end.saturating_add(slide));
        }
        let next = key.next_window_end;
        key.departed.retain(|&(_, last)| {
            next.is_some_and(|e| w.pane_end(last) > e.saturating_sub(w.window_ms()))
        });

        // 4. Evict a version silent for idle_ttl with nothing left to emit.
        if key.open.is_empty()
            && key.closed.is_empty()
            && key.last_event_ms.saturating_add(self.cfg.limits.idle_ttl_ms()) < frontier
        {
            let model = &self.models[key.model as usize];
            out.key_evicted(&model.name, &key.version);
            self.drop_key(kid);
            self.stats.keys_evicted += 1;
        }
    }

    /// Sets a partition's state from a checkpoint before its first replayed event: its
    /// watermark (`wm_R`) and its cutoff (`C`): events in panes ending at or before the cutoff
    /// are skipped.
    ///
    /// What the partition added since its last [release](Tracker::release) that a replay adds
    /// again is rolled back first: its counter updates (so a tracker that keeps running gets the
    /// counter state as of the released resume offset back) and its reference contributions of
    /// panes ending after `cutoff_ms`. In a fresh tracker there is nothing to roll back: the
    /// state comes from [`Tracker::preload_reference`] and [`Tracker::preload_counter`].
    pub fn restore_partition(&mut self, partition: u32, watermark_ms: i64, cutoff_ms: i64) {
        self.roll_back(partition, cutoff_ms);
        // Replayed from here: its versions are not released.
        let _replayed = self.forget_partition(partition);
        let lateness = self.cfg.windows.lateness_ms();
        let p = self.partition_mut(partition);
        p.max_event_ms = (watermark_ms != i64::MIN).then(|| watermark_ms.saturating_add(lateness));
        p.cutoff_ms = cutoff_ms;
        p.first_events.clear();
        p.untouched_since_restore = true;
    }

    /// Undoes every logged counter update of `partition` and its reference contributions of
    /// panes ending after `cutoff_ms`, and forgets both logs.
    fn roll_back(&mut self, partition: u32, cutoff_ms: i64) {
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            while let Some(u) = p.undo.pop_back() {
                match u.prev {
                    None => {
                        self.counters.remove(&u.series);
                    }
                    Some((time_ms, value, q)) => {
                        if let Some(c) = self.counters.get_mut(&u.series) {
                            (c.time_ms, c.value, c.partition) = (time_ms, value, q);
                        }
                    }
                }
            }
        }
        for key in self.keys.iter_mut().flatten() {
            let r = &mut key.reference;
            let mut i = 0;
            while i < r.contributions.len() {
                let c = &r.contributions[i];
                if c.partition != partition {
                    i += 1;
                    continue;
                }
                if c.pane_end > cutoff_ms {
                    c.counts.subtract_from(&mut r.counts);
                    r.complete = false;
                }
                self.count_pool.push(r.contributions.swap_remove(i).counts);
            }
        }
    }

    /// Drops everything a partition contributed that is not closed yet (its open panes in every
    /// version), unregisters it and resets its watermark, idleness and cutoff: for a partition
    /// that was revoked, or before replaying it. A version that lived only in this partition is
    /// dropped whole (closed panes, pending windows, reference, counter series): its windows
    /// belong to the partition's next owner or to the replay, which preload its persisted state;
    /// emitting them here would write partial windows. Versions also seen elsewhere keep their
    /// closed panes, and the partition keeps its counter undo log and reference contributions
    /// (for [`Tracker::restore_partition`]). Layouts the partition froze count again only past
    /// their freezing event, as after a restart.
    ///
    /// Returns the (model, version) of the versions dropped whole: for a revoked partition,
    /// those now owned elsewhere.
    pub fn forget_partition(&mut self, partition: u32) -> Vec<(String, String)> {
        // If it is read again, it is from an earlier offset: the layouts it froze count after
        // their freezing event again (see `FrozenLayout::frozen_at`).
        for m in &mut self.models {
            m.bins.rearm(partition);
        }
        let mut orphans = Vec::new();
        for (kid, key) in self.keys.iter_mut().enumerate() {
            let Some(key) = key else { continue };
            let mut i = 0;
            let mut had = false;
            while i < key.open.len() {
                if key.open[i].partition == partition {
                    self.pool.push(key.open.swap_remove(i));
                    had = true;
                } else {
                    i += 1;
                }
            }
            had |= key.partitions.iter().chain(&key.departed).any(|&(q, _)| q == partition);
            key.partitions.retain(|&(q, _)| q != partition);
            key.departed.retain(|&(q, _)| q != partition);
            if had && key.partitions.is_empty() && key.departed.is_empty() {
                orphans.push(kid);
            }
        }
        // A version that lived only in this partition belongs to its next owner (or to the
        // replay): its closed panes and pending windows are dropped, never emitted partially.
        let mut released = Vec::with_capacity(orphans.len());
        for kid in orphans {
            if let Some(key) = &self.keys[kid] {
                let model = &self.models[key.model as usize].name;
                released.push((model.to_string(), key.version.to_string()));
            }
            self.drop_key(kid);
        }
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            let room = p.first_events.capacity();
            let undo = std::mem::take(&mut p.undo);
            *p = PartitionState::new();
            p.first_events.reserve(room);
            p.undo = undo;
        }
        self.dirty = true;
        released
    }

    /// Forgets a version entirely (its state, counter series and undo entries).
    fn drop_key(&mut self, kid: usize) {
        let Some(key) = self.keys[kid].take() else { return };
        self.models[key.model as usize].versions.remove(key.version.as_bytes());
        for o in key.open {
            self.pool.push(o);
        }
        for c in key.closed {
            self.stats_pool.push(c.stats);
            self.count_pool.push(c.bins);
        }
        self.free_keys.push(kid as u32);
        self.counters.retain(|c, _| c.0 != kid as u32);
        for p in &mut self.partitions {
            p.undo.retain(|u| u.series.0 != kid as u32);
        }
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

    /// The checkpoint of `partition` if taken now; `next_offset` is the last consumed offset
    /// plus one.
    ///
    /// The cutoff is
    ///
    /// ```text
    /// C = min( watermark - window,
    ///          start of the oldest open pane of the partition,
    ///          next_window_end - window  for every version seen in the partition
    ///                                    whose next window is not emitted yet )
    /// ```
    ///
    /// (saturating; `i64::MIN` before the partition's first event), and never below the cutoff
    /// the partition was restored with (panes durable then still are). Open panes must be
    /// rebuilt whole, hence the second term. The third keeps every pending window rebuildable:
    /// a replay emits only windows ending at or after `C + window`, and a window of a version
    /// spread over several partitions can be pending here long after this partition closed its
    /// panes (waiting for a slower partition), so `watermark - window` alone would make the
    /// replay drop this partition's part of it. The resume offset and its watermark are
    /// [`Tracker::resume_point`]`(partition, C)`, or `next_offset` and the current watermark
    /// when no recorded event is in a pane ending after `C`. A restored partition without an
    /// event since gives its restored cutoff and watermark back (with `next_offset`, where it
    /// resumes, as the resume offset).
    ///
    /// ```
    /// use modelwatch_core::event::InferenceRecord;
    /// use modelwatch_core::{CoreConfig, PartitionCheckpoint, Source, Tracker};
    ///
    /// let mut tr = Tracker::new(CoreConfig::default());
    /// let start = PartitionCheckpoint {
    ///     cutoff_ms: i64::MIN,
    ///     resume_offset: 0,
    ///     watermark_ms: i64::MIN,
    /// };
    /// assert_eq!(tr.checkpoint(0, 0), start);
    /// let mut r = InferenceRecord::default();
    /// r.event_time_ms = 600_000;
    /// r.set_model("m");
    /// r.set_version("v1");
    /// tr.record_inference(Source { partition: 0, offset: 7, record_ts_ms: 600_000 }, &r);
    /// // Its pane is open: a replay starts at it, with the watermark before it.
    /// let cp = tr.checkpoint(0, 8);
    /// assert_eq!((cp.resume_offset, cp.watermark_ms), (7, i64::MIN));
    /// assert!(cp.cutoff_ms < 600_000);
    /// ```
    pub fn checkpoint(&self, partition: u32, next_offset: i64) -> PartitionCheckpoint {
        let w = self.cfg.windows;
        let Some(p) = self.partitions.get(partition as usize) else {
            return PartitionCheckpoint {
                cutoff_ms: i64::MIN,
                resume_offset: next_offset,
                watermark_ms: i64::MIN,
            };
        };
        let wm = p.watermark(w.lateness_ms());
        let cutoff = if p.untouched_since_restore {
            p.cutoff_ms
        } else {
            let mut cutoff = wm.saturating_sub(w.window_ms());
            for key in self.keys.iter().flatten() {
                for o in key.open.iter().filter(|o| o.partition == partition) {
                    cutoff = cutoff.min(w.pane_start(o.pane));
                }
                let mut seen = key.partitions.iter().chain(&key.departed);
                if let Some(end) = key.next_window_end
                    && seen.any(|&(q, _)| q == partition)
                {
                    cutoff = cutoff.min(end.saturating_sub(w.window_ms()));
                }
            }
            cutoff.max(p.cutoff_ms)
        };
        let (resume_offset, watermark_ms) = match self.resume_point(partition, cutoff) {
            Some(r) => (r.offset, r.watermark_ms),
            None => (next_offset, wm),
        };
        PartitionCheckpoint { cutoff_ms: cutoff, resume_offset, watermark_ms }
    }

    /// After the checkpoint `cp` of `partition` is durable: forgets the bookkeeping it no longer
    /// needs: resume bookkeeping of panes ending at or before the cutoff, counter updates
    /// before the resume offset, and reference contributions of panes ending at or before the
    /// cutoff. Call it at every checkpoint: until then this bookkeeping grows with the input.
    pub fn release(&mut self, partition: u32, cp: &PartitionCheckpoint) {
        let w = self.cfg.windows;
        if let Some(p) = self.partitions.get_mut(partition as usize) {
            p.first_events.retain(|e| w.pane_end(e.0) > cp.cutoff_ms);
            while p.undo.front().is_some_and(|u| u.offset < cp.resume_offset) {
                p.undo.pop_front();
            }
        }
        for key in self.keys.iter_mut().flatten() {
            let cs = &mut key.reference.contributions;
            let mut i = 0;
            while i < cs.len() {
                if cs[i].partition == partition && cs[i].pane_end <= cp.cutoff_ms {
                    self.count_pool.push(cs.swap_remove(i).counts);
                } else {
                    i += 1;
                }
            }
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
        let mid = match self.model_ids.get(model.as_bytes()) {
            Some(&m) => m,
            None => match self.new_model(model) {
                Some(m) => m,
                None => return false,
            },
        };
        self.models[mid as usize].bins.restore(layout, self.cfg.limits.max_features())
    }

    /// A version's reference snapshot with the given counts.
    fn snapshot(&self, k: &KeyState, counts: &[u64], complete: bool) -> ReferenceSnapshot {
        let m = &self.models[k.model as usize];
        let r = &k.reference;
        ReferenceSnapshot {
            model: m.name.to_string(),
            version: k.version.to_string(),
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            complete,
            features: m
                .bins
                .frozen()
                .map(|f| {
                    let mut c = f.slice(counts).to_vec();
                    c.resize(f.layout.bin_count(), 0);
                    (f.name.to_owned(), f.kind, c)
                })
                .collect(),
        }
    }

    /// Every version's reference as it stands, for persistence.
    pub fn reference_snapshots(&self) -> Vec<ReferenceSnapshot> {
        self.keys
            .iter()
            .flatten()
            .map(|k| self.snapshot(k, &k.reference.counts, k.reference.complete))
            .collect()
    }

    /// Every version's reference as of the given cutoffs, for a checkpoint: contributions of
    /// panes ending after `cutoff_of(partition)` are left out (and a reference with such
    /// contributions is reported not complete), because a replay from that checkpoint adds them
    /// again. `cutoff_of` must answer for every partition the tracker has seen, a revoked one
    /// included (with the cutoff of its last durable checkpoint). References preloaded but not
    /// installed yet (their version has no event since the restart) are not reported: the store
    /// still holds them.
    pub fn reference_snapshots_as_of(
        &self,
        cutoff_of: &dyn Fn(u32) -> i64,
    ) -> Vec<ReferenceSnapshot> {
        let mut counts = Vec::new();
        self.keys
            .iter()
            .flatten()
            .map(|k| {
                let r = &k.reference;
                counts.clear();
                counts.extend_from_slice(&r.counts);
                let mut complete = r.complete;
                for c in r.contributions.iter().filter(|c| c.pane_end > cutoff_of(c.partition)) {
                    c.counts.subtract_from(&mut counts);
                    complete = false;
                }
                self.snapshot(k, &counts, complete)
            })
            .collect()
    }

    /// Before consuming: a persisted reference, installed (layouts first) when its version is
    /// first admitted by an event. Its version was admitted before, so it keeps its place under
    /// `max_versions_per_model` (and its model under `max_models`): those slots are reserved
    /// until it comes, so a replay admits the same versions as the first run. A second preload
    /// of the same version replaces the first.
    pub fn preload_reference(&mut self, snap: ReferenceSnapshot) {
        if let Some(&mid) = self.model_ids.get(snap.model.as_bytes())
            && self.models[mid as usize].versions.contains_key(snap.version.as_bytes())
        {
            return; // admitted already: too late to install
        }
        if !self.preload_refs.contains_key(snap.model.as_str())
            && !self.model_ids.contains_key(snap.model.as_bytes())
        {
            self.reserved_models += 1;
        }
        let model: Box<str> = snap.model.as_str().into();
        let version: Box<str> = snap.version.as_str().into();
        self.preload_refs.entry(model).or_default().insert(version, snap);
    }

    /// Before consuming: the persisted last sample of a counter series, installed when its
    /// version is first admitted by an event (no slot is reserved for it). Its series is then
    /// carried by the checkpoints of the admitting event's partition.
    pub fn preload_counter(&mut self, c: CounterSeries) {
        let model: Box<str> = c.model.as_str().into();
        let version: Box<str> = c.version.as_str().into();
        let series = self.preload_counters.entry(model).or_default().entry(version).or_default();
        match series.iter_mut().find(|s| s.name == c.name && s.host == c.host) {
            Some(s) => *s = c,
            None => series.push(c),
        }
    }

    /// Installs a persisted reference: the same as [`Tracker::preload_reference`] (kept for
    /// callers of the older API). Always `true`: caps apply when the version is admitted.
    pub fn restore_reference(&mut self, snap: &ReferenceSnapshot) -> bool {
        self.preload_reference(snap.clone());
        true
    }

    /// The last sample of every counter series, for persistence.
    pub fn counter_series(&self) -> Vec<CounterSeries> {
        let mut v: Vec<CounterSeries> = self
            .counters
            .iter()
            .filter_map(|(&series, s)| self.series(series, &s.host, s.time_ms, s.value))
            .collect();
        sort_series(&mut v);
        v
    }

    fn series(
        &self,
        (kid, mid, _): SeriesKey,
        host: &str,
        time_ms: i64,
        value: f64,
    ) -> Option<CounterSeries> {
        let k = self.keys.get(kid as usize)?.as_ref()?;
        Some(CounterSeries {
            model: self.models[k.model as usize].name.to_string(),
            version: k.version.to_string(),
            name: self.metric_names.name(mid).to_owned(),
            host: host.to_owned(),
            time_ms,
            value,
        })
    }

    /// The counter series as they stood just before the event at `cp.resume_offset` of
    /// `partition` was processed: the series whose last sample came from this partition, with
    /// its updates at offsets from the resume offset on undone (a replay from the checkpoint
    /// makes them again). A version spread over several partitions has series updated by
    /// several: each series goes with the partition of its last sample. Series preloaded but
    /// not installed yet are not reported: the store still holds them.
    pub fn counter_series_as_of(
        &self,
        partition: u32,
        cp: &PartitionCheckpoint,
    ) -> Vec<CounterSeries> {
        let mut state: FxHashMap<SeriesKey, (i64, f64, u32)> = self
            .counters
            .iter()
            .filter(|(_, s)| s.partition == partition)
            .map(|(&k, s)| (k, (s.time_ms, s.value, s.partition)))
            .collect();
        if let Some(p) = self.partitions.get(partition as usize) {
            for u in p.undo.iter().rev().take_while(|u| u.offset >= cp.resume_offset) {
                match u.prev {
                    None => {
                        state.remove(&u.series);
                    }
                    Some(prev) => {
                        if let Some(s) = state.get_mut(&u.series) {
                            *s = prev;
                        }
                    }
                }
            }
        }
        let mut v: Vec<CounterSeries> = state
            .into_iter()
            .filter(|(_, s)| s.2 == partition)
            .filter_map(|(k, (time_ms, value, _))| {
                self.series(k, &self.counters.get(&k)?.host, time_ms, value)
            })
            .collect();
        sort_series(&mut v);
        v
    }

    /// Restores the last sample of a counter series: the same as [`Tracker::preload_counter`]
    /// (kept for callers of the older API). Always `true`: caps apply when the version is
    /// admitted.
    pub fn restore_counter(&mut self, c: &CounterSeries) -> bool {
        self.preload_counter(c.clone());
        true
    }

    /// Approximate heap bytes of the per-version state (open and closed panes, references and
    /// their unreleased contributions) and of the unreleased counter undo logs, for
    /// memory accounting in benchmarks.
    pub fn state_heap_bytes(&self) -> usize {
        self.keys
            .iter()
            .flatten()
            .map(|k| {
                k.open.iter().map(|o| o.heap_bytes()).sum::<usize>()
                    + k.closed
                        .iter()
                        .map(|c| c.stats.heap_bytes() + c.bins.heap_bytes())
                        .sum::<usize>()
                    + k.reference.counts.capacity() * 8
                    + k.reference.contributions.iter().map(|c| c.counts.heap_bytes()).sum::<usize>()
                    + k.window_latency.heap_bytes()
                    + k.window_ttft.heap_bytes()
            })
            .sum::<usize>()
            + self.models.iter().map(|m| m.bins.heap_bytes()).sum::<usize>()
            + self
                .partitions
                .iter()
                .map(|p| p.undo.capacity() * size_of::<CounterUndo>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::PaneCounts;

    #[test]
    fn pane_counts_subtract_exactly_narrow_or_wide() {
        let mut c = PaneCounts::default();
        c.set(&[3, 0, u64::from(u32::MAX)]);
        let mut totals = vec![10, 5, u64::from(u32::MAX) + 7];
        c.subtract_from(&mut totals);
        assert_eq!(totals, [7, 5, 7]);
        assert_eq!(c.heap_bytes(), c.narrow.capacity() * 4);
        // One count past u32: all of them kept wide, none truncated.
        c.set(&[1, u64::from(u32::MAX) + 1]);
        let mut totals = vec![1, u64::from(u32::MAX) + 3];
        c.subtract_from(&mut totals);
        assert_eq!(totals, [0, 2]);
        assert!(c.narrow.is_empty());
    }

    #[test]
    fn pane_counts_add_up_narrow_and_widen_when_a_sum_does_not_fit() {
        let max = u64::from(u32::MAX);
        let mut c = PaneCounts::default();
        c.set(&[]);
        c.add(&[1, 2]);
        c.add(&[3, 4, max - 5]);
        assert_eq!((c.narrow.as_slice(), c.wide.len()), (&[4, 6, u32::MAX - 5][..], 0));
        let mut totals = vec![100];
        c.add_to(&mut totals);
        assert_eq!(totals, [104, 6, max - 5]);
        // The third sum passes u32::MAX: every count goes wide, none is truncated or lost.
        c.add(&[0, 1, 6]);
        assert!(c.narrow.is_empty());
        assert_eq!(c.wide, [4, 7, max + 1]);
        c.add(&[1]);
        let mut totals = Vec::new();
        c.add_to(&mut totals);
        assert_eq!(totals, [5, 7, max + 1]);
        let mut back = totals.clone();
        c.subtract_from(&mut back);
        assert_eq!(back, [0, 0, 0]);
        // Counts near u64::MAX saturate, as everywhere else, instead of overflowing.
        let mut huge = PaneCounts::default();
        huge.set(&[5, 7]);
        huge.add(&[1, u64::MAX]);
        assert_eq!(huge.wide, [6, u64::MAX]);
    }
}
