//! The synchronous heart of the engine: Kafka records in, rows and checkpoints out.
//!
//! A [`Pipeline`] decodes each record's value, feeds the events to the core
//! [`Tracker`], closes panes and windows on the watermarks, and collects the resulting rows.
//! [`Pipeline::take_flush`] hands everything collected so far to the sink together with the
//! checkpoint of every partition (delivery.md) and the state that outlives a window: new bin
//! layouts, references (as of each partition's cutoff) and counter series (as of each
//! partition's resume offset). No I/O, no clock: the run loop gives it the time.
//!
//! A record is rejected (and, if configured, dead-lettered by the run loop with the reason)
//! when it has no value, does not decode, has a bad timestamp, is late, or belongs to a model
//! or version over its cap. A newline-delimited JSON message with several records is
//! rejected with the first problem found, after its other records were counted.

use std::fmt;

use modelwatch_clickhouse::rows::{
    CheckpointRow, CounterSeriesRow, DriftLayoutRow, DriftReferenceRow,
};
use modelwatch_codec::{Format, InferenceDecoder, MetricDecoder, SchemaResolver};
use modelwatch_core::bins::FrozenLayout;
use modelwatch_core::tracker::{PartitionCheckpoint, ReferenceSnapshot, TrackerStats};
use modelwatch_core::{Admission, CoreConfig, Source, Tracker, metrics::CounterSeries};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use crate::collect::{CanaryPair, Collector, Rows};
use crate::topics::{TopicKind, Topics};

/// A Kafka record as the pipeline sees it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Topic index (see [`Topics`]).
    pub topic: u32,
    /// Kafka partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// The value (`None`: a tombstone).
    pub payload: Option<&'a [u8]>,
}

/// Why a record was not (entirely) counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// No value.
    Tombstone,
    /// The value does not decode.
    Malformed,
    /// Event time too far ahead of the record timestamp.
    BadTimestamp,
    /// Its pane had closed.
    Late,
    /// A new model over `max_models`.
    OverModelCap,
    /// A new version over `max_versions_per_model`.
    OverVersionCap,
}

impl RejectKind {
    /// Every kind, for metrics.
    pub const ALL: [RejectKind; 6] = [
        Self::Tombstone,
        Self::Malformed,
        Self::BadTimestamp,
        Self::Late,
        Self::OverModelCap,
        Self::OverVersionCap,
    ];

    /// The label used in metrics and dead-letter reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tombstone => "tombstone",
            Self::Malformed => "malformed",
            Self::BadTimestamp => "bad_timestamp",
            Self::Late => "late",
            Self::OverModelCap => "over_model_cap",
            Self::OverVersionCap => "over_version_cap",
        }
    }

    fn of(a: Admission) -> Option<Self> {
        match a {
            Admission::Recorded | Admission::Skipped => None,
            Admission::Late => Some(Self::Late),
            Admission::BadTimestamp => Some(Self::BadTimestamp),
            Admission::OverModelCap => Some(Self::OverModelCap),
            Admission::OverVersionCap => Some(Self::OverVersionCap),
        }
    }
}

/// A rejected record: the kind and a human-readable reason (for the dead-letter header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind.
    pub kind: RejectKind,
    /// The reason, for people.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.reason)
    }
}

/// Counts per topic, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounts {
    /// Records read.
    pub records: u64,
    /// Events decoded (a JSON record may hold several).
    pub events: u64,
    /// Events recorded into panes.
    pub recorded: u64,
    /// Replayed events skipped before a checkpoint's cutoff.
    pub skipped: u64,
    /// Rejected events (or records, for tombstones and undecodable values) by kind, in the
    /// order of [`RejectKind::ALL`].
    pub rejected: [u64; 6],
}

/// One partition's checkpoint, ready for the sink and for the commit after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCommit {
    /// Tracker id.
    pub tracker_id: u32,
    /// Topic name.
    pub topic: Arc<str>,
    /// Kafka partition.
    pub partition: i32,
    /// The checkpoint.
    pub checkpoint: PartitionCheckpoint,
}

/// Everything for one trip to the sink: rows first, then state, then checkpoints.
#[derive(Debug, Default)]
pub struct Flush {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Data rows.
    pub rows: Rows,
    /// Bin layouts frozen since the last flush (first write wins: never rewritten).
    pub layouts: Vec<DriftLayoutRow>,
    /// Reference snapshots as of the checkpoints' cutoffs.
    pub references: Vec<DriftReferenceRow>,
    /// Counter series as of the checkpoints' resume offsets.
    pub counters: Vec<CounterSeriesRow>,
    /// Checkpoint rows, written last.
    pub checkpoints: Vec<CheckpointRow>,
    /// The checkpoints, for the commit and the release after the sink acknowledged.
    pub commits: Vec<PartitionCommit>,
}

impl Flush {
    /// Rows in all tables.
    pub fn row_count(&self) -> usize {
        self.rows.len()
            + self.layouts.len()
            + self.references.len()
            + self.counters.len()
            + self.checkpoints.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct PartState {
    /// Last consumed offset + 1 (`None` before the first record, without a checkpoint).
    next_offset: Option<i64>,
    assigned: bool,
    /// Restored from a checkpoint and no record since: its resume offset `R`.
    resumed_at: Option<i64>,
}

/// Settings of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Windows, drift, limits and latency.
    pub core: CoreConfig,
    /// The consumer group (the checkpoints' key).
    pub group: String,
    /// Value framing.
    pub format: Format,
    /// Writer schemas for ids and fingerprints (`None`: the contract's own only).
    pub resolver: Option<Arc<dyn SchemaResolver>>,
    /// Canary pairs scored against their baselines.
    pub canaries: Vec<CanaryPair>,
}

/// The synchronous pipeline; see the module docs.
#[derive(Debug)]
pub struct Pipeline {
    topics: Topics,
    group: String,
    /// The tracker of the inference topics (index 0) and of the metric topics (index 1): the
    /// two streams are windowed apart, so a version's inference logs and metric events may sit
    /// in partitions that progress independently (or belong to different instances) without
    /// holding back or cutting short each other's windows.
    trackers: [Tracker; 2],
    inference: InferenceDecoder,
    metric: MetricDecoder,
    collector: Collector,
    parts: Vec<PartState>,
    counts: Vec<TopicCounts>,
    written_layouts: FxHashSet<(String, String, String)>,
    complete_references: FxHashSet<(String, String)>,
    /// The cutoff of the last durable checkpoint of every partition ever checkpointed.
    durable_cutoffs: FxHashMap<u32, i64>,
    resume_gaps: u64,
    seq: u64,
}

impl Pipeline {
    /// A pipeline over the given topics.
    pub fn new(topics: Topics, opts: PipelineOptions) -> Self {
        let (inference, metric) = match &opts.resolver {
            Some(r) => (
                InferenceDecoder::with_resolver(opts.format, Arc::clone(r)),
                MetricDecoder::with_resolver(opts.format, Arc::clone(r)),
            ),
            None => (InferenceDecoder::new(opts.format), MetricDecoder::new(opts.format)),
        };
        let counts = vec![TopicCounts::default(); topics.all().len()];
        Self {
            topics,
            group: opts.group,
            trackers: [Tracker::new(opts.core), Tracker::new(opts.core)],
            inference,
            metric,
            collector: Collector::new(opts.canaries),
            parts: Vec::new(),
            counts,
            written_layouts: FxHashSet::default(),
            complete_references: FxHashSet::default(),
            durable_cutoffs: FxHashMap::default(),
            resume_gaps: 0,
            seq: 0,
        }
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The tracker of inference or metric topics (read-only).
    pub fn tracker(&self, kind: TopicKind) -> &Tracker {
        &self.trackers[kind as usize]
    }

    fn tracker_of(&mut self, id: u32) -> &mut Tracker {
        let (t, _) = self.topics.partition_of(id);
        let kind = self.topics.topic(t).kind;
        &mut self.trackers[kind as usize]
    }

    /// Versions tracked, over both streams.
    pub fn active_keys(&self) -> usize {
        self.trackers.iter().map(Tracker::active_keys).sum()
    }

    /// Counts per topic, by topic index.
    pub fn counts(&self) -> &[TopicCounts] {
        &self.counts
    }

    /// The tracker's counters.
    pub fn tracker_stats(&self) -> TrackerStats {
        let [a, b] = [self.trackers[0].stats(), self.trackers[1].stats()];
        TrackerStats {
            recorded: a.recorded + b.recorded,
            late: a.late + b.late,
            bad_timestamp: a.bad_timestamp + b.bad_timestamp,
            skipped: a.skipped + b.skipped,
            over_model_cap: a.over_model_cap + b.over_model_cap,
            over_version_cap: a.over_version_cap + b.over_version_cap,
            over_feature_cap: a.over_feature_cap + b.over_feature_cap,
            non_finite_values: a.non_finite_values + b.non_finite_values,
            over_status_cap: a.over_status_cap + b.over_status_cap,
            over_metric_cap: a.over_metric_cap + b.over_metric_cap,
            panes_closed: a.panes_closed + b.panes_closed,
            windows_emitted: a.windows_emitted + b.windows_emitted,
            keys_evicted: a.keys_evicted + b.keys_evicted,
            over_counter_cap: a.over_counter_cap + b.over_counter_cap,
        }
    }

    /// Rows collected and not yet flushed.
    pub fn pending_rows(&self) -> usize {
        self.collector.rows.len()
    }

    /// Sets the wall-clock `written_at_ms` of rows built from now on.
    pub fn set_written_at(&mut self, ms: u64) {
        self.collector.set_written_at(ms);
    }

    /// Installs persisted state before consuming: layouts (marked as written), references and
    /// counter series (installed when their version is first seen).
    pub fn preload(
        &mut self,
        layouts: &[(String, FrozenLayout)],
        references: Vec<ReferenceSnapshot>,
        counters: Vec<CounterSeries>,
    ) {
        for (model, layout) in layouts {
            let row = DriftLayoutRow::from_frozen(model, layout, 0);
            // Persisted with the stable source partition; the tracker wants its own id.
            let mut layout = layout.clone();
            layout.frozen_at = layout
                .frozen_at
                .and_then(|(s, o)| self.topics.tracker_id_of_source(s).map(|id| (id, o)));
            self.trackers[0].restore_layout(model, &layout);
            self.written_layouts.insert((row.model, row.kind, row.feature));
        }
        for r in references {
            if r.complete {
                self.complete_references.insert((r.model.clone(), r.version.clone()));
            }
            self.trackers[0].preload_reference(r);
        }
        for c in counters {
            self.trackers[1].preload_counter(c);
        }
    }

    fn part(&mut self, id: u32) -> &mut PartState {
        let i = id as usize;
        if self.parts.len() <= i {
            self.parts
                .resize(i + 1, PartState { next_offset: None, assigned: false, resumed_at: None });
            self.collector.source_ids.resize(i + 1, 0);
            for (j, s) in self.collector.source_ids.iter_mut().enumerate() {
                *s = self.topics.source_partition(j as u32);
            }
        }
        &mut self.parts[i]
    }

    /// Starts (or restarts) a partition: from a checkpoint (its watermark and cutoff; the
    /// caller seeks to its resume offset), or from scratch.
    pub fn assign(&mut self, topic: u32, partition: i32, checkpoint: Option<PartitionCheckpoint>) {
        let id = self.topics.tracker_id(topic, partition);
        match checkpoint {
            Some(cp) => self.tracker_of(id).restore_partition(id, cp.watermark_ms, cp.cutoff_ms),
            None => {
                let t = self.tracker_of(id);
                // Read from scratch by us: nothing is released.
                let _fresh = t.forget_partition(id);
                t.register_partition(id);
            }
        }
        let p = self.part(id);
        p.assigned = true;
        p.next_offset = checkpoint.map(|c| c.resume_offset);
        p.resumed_at = p.next_offset;
    }

    /// Partitions whose first record after a restore came after the checkpoint's resume offset:
    /// the records in between were not delivered (deleted by retention, or a broker that
    /// answers a fetch from inside a record batch with the next batch), so the panes they
    /// belonged to were rebuilt without them.
    pub fn resume_gaps(&self) -> u64 {
        self.resume_gaps
    }

    /// Whether a partition is assigned.
    pub fn is_assigned(&self, topic: u32, partition: i32) -> bool {
        self.topics
            .existing_id(topic, partition)
            .and_then(|id| self.parts.get(id as usize))
            .is_some_and(|p| p.assigned)
    }

    /// Lets a partition go (revoked): drops its open panes; closed state stays. Returns the
    /// (model, version) that lived only in it (now its next owner's).
    pub fn revoke(&mut self, topic: u32, partition: i32) -> Vec<(String, String)> {
        let Some(id) = self.topics.existing_id(topic, partition) else { return Vec::new() };
        let released = self.tracker_of(id).forget_partition(id);
        let p = self.part(id);
        p.assigned = false;
        p.next_offset = None;
        p.resumed_at = None;
        released
    }

    /// The next offset to read of every assigned partition that has one, as
    /// (topic index, partition, offset).
    pub fn positions(&self) -> Vec<(u32, i32, i64)> {
        self.parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.assigned)
            .filter_map(|(id, p)| {
                let (t, k) = self.topics.partition_of(id as u32);
                p.next_offset.map(|o| (t, k, o))
            })
            .collect()
    }

    /// Processes one record; `None` when every event of it was counted (or skipped in a
    /// replay). A partition seen for the first time is assigned from scratch.
    pub fn process(&mut self, input: Input<'_>) -> Option<Rejection> {
        let id = self.topics.tracker_id(input.topic, input.partition);
        let p = self.part(id);
        if !p.assigned {
            p.assigned = true;
        }
        if let Some(r) = p.resumed_at.take()
            && input.offset > r
        {
            self.resume_gaps += 1;
            let (topic, partition) = (self.topics.topic(input.topic).name.clone(), input.partition);
            tracing::warn!(
                %topic,
                partition,
                resume_offset = r,
                first_offset = input.offset,
                "the first record after the restore is past the checkpoint's resume offset: \
                 records were not delivered, panes rebuilt from the checkpoint may miss events"
            );
        }
        let p = self.part(id);
        p.next_offset = Some(input.offset.saturating_add(1));
        let counts = &mut self.counts[input.topic as usize];
        counts.records += 1;
        let Some(payload) = input.payload else {
            counts.rejected[0] += 1;
            return Some(Rejection { kind: RejectKind::Tombstone, reason: "no value".into() });
        };
        let src = Source {
            partition: id,
            offset: input.offset,
            record_ts_ms: input.timestamp.unwrap_or(i64::MAX),
        };
        let kind = self.topics.topic(input.topic).kind;
        let tracker = &mut self.trackers[kind as usize];
        let mut first: Option<Rejection> = None;
        let mut note = |counts: &mut TopicCounts, a: Result<Admission, String>| {
            let kind = match a {
                Ok(a) => {
                    counts.events += 1;
                    match a {
                        Admission::Recorded => counts.recorded += 1,
                        Admission::Skipped => counts.skipped += 1,
                        _ => {}
                    }
                    RejectKind::of(a).map(|k| (k, String::new()))
                }
                Err(e) => Some((RejectKind::Malformed, e)),
            };
            if let Some((k, reason)) = kind {
                counts.rejected[RejectKind::ALL.iter().position(|x| *x == k).unwrap_or(0)] += 1;
                if first.is_none() {
                    let reason = if reason.is_empty() { describe(k, &src) } else { reason };
                    first = Some(Rejection { kind: k, reason });
                }
            }
        };
        match kind {
            TopicKind::Inference => self.inference.decode(payload, |r| {
                note(counts, r.map(|r| tracker.record_inference(src, r)).map_err(|e| e.to_string()))
            }),
            TopicKind::Metric => self.metric.decode(payload, |r| {
                note(counts, r.map(|r| tracker.record_metric(src, r)).map_err(|e| e.to_string()))
            }),
        }
        first
    }

    /// Closes what the watermarks allow (after each batch of records).
    pub fn advance(&mut self) {
        for t in &mut self.trackers {
            t.advance(&mut self.collector);
        }
    }

    /// Tells the trackers which assigned partitions have a backlog: `high(topic, partition)`
    /// is the partition's last known high watermark (`None`: unknown). A partition whose
    /// position is below it is behind, not quiet (see [`Tracker::set_backlog`]).
    pub fn set_backlogs(&mut self, high: impl Fn(u32, i32) -> Option<i64>) {
        for id in 0..self.parts.len() as u32 {
            let p = &self.parts[id as usize];
            if !p.assigned {
                continue;
            }
            let (t, partition) = self.topics.partition_of(id);
            let backlog = match (p.next_offset, high(t, partition)) {
                (Some(next), Some(h)) => h > next,
                _ => false,
            };
            self.tracker_of(id).set_backlog(id, backlog);
        }
    }

    /// Wall-clock tick: idleness, then closes what is due.
    pub fn tick(&mut self, now_ms: i64) {
        for t in &mut self.trackers {
            t.tick(now_ms, &mut self.collector);
        }
    }

    /// The checkpoint of every assigned partition that has a position.
    pub fn checkpoints(&self) -> Vec<PartitionCommit> {
        let mut out = Vec::new();
        for (id, p) in self.parts.iter().enumerate() {
            let (true, Some(next)) = (p.assigned, p.next_offset) else { continue };
            let id = id as u32;
            let (t, partition) = self.topics.partition_of(id);
            let topic = self.topics.topic(t);
            out.push(PartitionCommit {
                tracker_id: id,
                topic: Arc::clone(&topic.name),
                partition,
                checkpoint: self.trackers[topic.kind as usize].checkpoint(id, next),
            });
        }
        out
    }

    /// Everything collected since the last flush, with the checkpoints and the state that
    /// goes with them.
    pub fn take_flush(&mut self, written_at_ms: u64) -> Flush {
        self.seq += 1;
        let commits = self.checkpoints();
        let rows = self.collector.take();

        let mut layouts = Vec::new();
        for (model, mut f) in self.trackers[0].frozen_layouts() {
            f.frozen_at = f.frozen_at.map(|(id, o)| (self.topics.source_partition(id), o));
            let row = DriftLayoutRow::from_frozen(&model, &f, written_at_ms);
            let key = (row.model.clone(), row.kind.clone(), row.feature.clone());
            if self.written_layouts.insert(key) {
                layouts.push(row);
            }
        }

        // Partitions checkpointed now: their new cutoff (durable with these rows); others (revoked)
        // their last durable one, so what the next owner replays is left out.
        let mut cutoffs = self.durable_cutoffs.clone();
        cutoffs.extend(commits.iter().map(|c| (c.tracker_id, c.checkpoint.cutoff_ms)));
        let cutoff_of = |p: u32| cutoffs.get(&p).copied().unwrap_or(i64::MIN);
        let mut references = Vec::new();
        for s in self.trackers[0].reference_snapshots_as_of(&cutoff_of) {
            let key = (s.model.clone(), s.version.clone());
            if self.complete_references.contains(&key) {
                continue;
            }
            if s.complete {
                self.complete_references.insert(key);
            }
            references.extend(DriftReferenceRow::from_snapshot(&s, written_at_ms));
        }

        let mut counters = Vec::new();
        for c in &commits {
            let (t, _) = self.topics.partition_of(c.tracker_id);
            if self.topics.topic(t).kind != TopicKind::Metric {
                continue;
            }
            for s in self.trackers[1].counter_series_as_of(c.tracker_id, &c.checkpoint) {
                counters.push(CounterSeriesRow::from_series(&s, written_at_ms));
            }
        }

        let checkpoints = commits
            .iter()
            .map(|c| CheckpointRow {
                group: self.group.clone(),
                topic: c.topic.to_string(),
                partition: c.partition,
                cutoff_ms: c.checkpoint.cutoff_ms,
                resume_offset: c.checkpoint.resume_offset,
                watermark_ms: c.checkpoint.watermark_ms,
                written_at_ms,
            })
            .collect();
        Flush { seq: self.seq, rows, layouts, references, counters, checkpoints, commits }
    }

    /// After the sink acknowledged a flush: forgets what its checkpoints made unnecessary.
    pub fn release(&mut self, commits: &[PartitionCommit]) {
        for c in commits {
            self.durable_cutoffs.insert(c.tracker_id, c.checkpoint.cutoff_ms);
            if self.parts.get(c.tracker_id as usize).is_some_and(|p| p.assigned) {
                self.tracker_of(c.tracker_id).release(c.tracker_id, &c.checkpoint);
            }
        }
    }

    /// (model, version, source partitions) of versions seen in several partitions of one
    /// topic: input not keyed by model (delivery.md). A version's inference logs and metric
    /// events come from different topics by design and are not reported.
    pub fn keys_in_several_partitions(&self) -> Vec<(String, String, Vec<u32>)> {
        let mut out = Vec::new();
        for (m, v, ps) in self.trackers.iter().flat_map(Tracker::keys_in_several_partitions) {
            let mut topics: Vec<u32> = ps.iter().map(|&p| self.topics.partition_of(p).0).collect();
            topics.sort_unstable();
            if topics.windows(2).any(|w| w[0] == w[1]) {
                let ps = ps.into_iter().map(|p| self.topics.source_partition(p)).collect();
                out.push((m.to_owned(), v.to_owned(), ps));
            }
        }
        out
    }
}

fn describe(kind: RejectKind, src: &Source) -> String {
    match kind {
        RejectKind::BadTimestamp => {
            format!("event_time too far ahead of the record timestamp {}", src.record_ts_ms)
        }
        RejectKind::Late => "its pane had already closed (older than the allowed lateness)".into(),
        RejectKind::OverModelCap => "a new model over limits.max_models".into(),
        RejectKind::OverVersionCap => "a new version over limits.max_versions_per_model".into(),
        RejectKind::Tombstone | RejectKind::Malformed => kind.as_str().into(),
    }
}
