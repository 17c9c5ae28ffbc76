//! Prometheus metrics of the engine (served on `/metrics` by the binary).
//!
//! The hot path never touches these: the pipeline keeps plain counters, and the run loop
//! publishes their growth once per batch ([`EngineMetrics::publish`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::{RejectKind, TopicCounts};
use crate::topics::Topics;
use modelwatch_core::tracker::TrackerStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicReason {
    topic: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    model: String,
    version: String,
}

/// Adds to `counter` what a running `total` grew by since the last call (`seen` keeps it).
fn grow_to(counter: &Counter, seen: &AtomicU64, total: u64) {
    let before = seen.swap(total, Ordering::Relaxed);
    if total > before {
        counter.inc_by(total - before);
    }
}

fn insert_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// One partition's latest lag sample, for [`EngineMetrics::caught_up`].
#[derive(Debug, Clone, Copy)]
struct LagSample {
    /// The broker's high watermark.
    high: i64,
    /// Consecutive samples (this one included) at lag 0 or past the previous sample's high
    /// watermark.
    streak: u32,
}

/// The engine's metrics and health flags.
#[derive(Debug)]
pub struct EngineMetrics {
    records: Family<TopicLabel, Counter>,
    events: Family<TopicLabel, Counter>,
    recorded: Family<TopicLabel, Counter>,
    skipped: Family<TopicLabel, Counter>,
    rejected: Family<TopicReason, Counter>,
    dead_letters: Counter,
    dead_letter_failures: Counter,
    lag: Family<PartitionLabel, Gauge>,
    panes_closed: Counter,
    windows_emitted: Counter,
    keys_evicted: Counter,
    resume_gaps: Counter,
    resume_gaps_seen: AtomicU64,
    consumer_errors: Counter,
    consumer_errors_seen: AtomicU64,
    over_feature_cap: Counter,
    active_versions: Gauge,
    several_partitions: Gauge,
    several_partition_keys: Family<KeyLabel, Gauge>,
    checkpoint_age: Gauge<f64, AtomicU64>,
    checkpoints_written: Counter,
    flushes_in_flight: Gauge,
    paused: Gauge,
    insert_seconds: Family<TableLabel, Histogram, fn() -> Histogram>,
    insert_rows: Family<TableLabel, Counter>,
    insert_failures: Family<TableLabel, Counter>,
    last: std::sync::Mutex<(Vec<TopicCounts>, TrackerStats)>,
    last_checkpoint_ms: AtomicI64,
    /// The latest lag sample of every assigned partition, for [`EngineMetrics::caught_up`].
    lags: std::sync::Mutex<std::collections::HashMap<(String, i32), LagSample>>,
    windows_dropped: Counter,
    /// Set once the engine consumes (state restored, consumer started).
    pub running: AtomicBool,
    /// Set while the last flush reached the sink (cleared while it fails).
    pub sink_ok: AtomicBool,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            records: Family::default(),
            events: Family::default(),
            recorded: Family::default(),
            skipped: Family::default(),
            rejected: Family::default(),
            dead_letters: Counter::default(),
            dead_letter_failures: Counter::default(),
            lag: Family::default(),
            panes_closed: Counter::default(),
            windows_emitted: Counter::default(),
            keys_evicted: Counter::default(),
            resume_gaps: Counter::default(),
            resume_gaps_seen: AtomicU64::new(0),
            consumer_errors: Counter::default(),
            consumer_errors_seen: AtomicU64::new(0),
            over_feature_cap: Counter::default(),
            active_versions: Gauge::default(),
            several_partitions: Gauge::default(),
            several_partition_keys: Family::default(),
            checkpoint_age: Gauge::default(),
            checkpoints_written: Counter::default(),
            flushes_in_flight: Gauge::default(),
            paused: Gauge::default(),
            insert_seconds: Family::new_with_constructor(insert_buckets),
            insert_rows: Family::default(),
            insert_failures: Family::default(),
            last: std::sync::Mutex::new((Vec::new(), TrackerStats::default())),
            last_checkpoint_ms: AtomicI64::new(0),
            lags: std::sync::Mutex::default(),
            windows_dropped: Counter::default(),
            running: AtomicBool::new(false),
            sink_ok: AtomicBool::new(true),
        }
    }
}

impl EngineMetrics {
    /// Registers every metric under `modelwatch_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("modelwatch");
        r.register("records_consumed", "Kafka records read, per topic", self.records.clone());
        r.register("events_decoded", "Events decoded, per topic", self.events.clone());
        r.register("events_recorded", "Events recorded into panes", self.recorded.clone());
        r.register(
            "events_skipped",
            "Replayed events skipped before a checkpoint's cutoff",
            self.skipped.clone(),
        );
        r.register(
            "events_rejected",
            "Events (or undecodable records) not counted, per topic and reason: malformed, \
             tombstone, bad_timestamp, late, over_model_cap, over_version_cap",
            self.rejected.clone(),
        );
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic",
            self.dead_letters.clone(),
        );
        r.register(
            "dead_letter_failures",
            "Records the dead-letter producer could not enqueue",
            self.dead_letter_failures.clone(),
        );
        r.register("consumer_lag", "Records behind the partition's end", self.lag.clone());
        r.register(
            "alert_flushes_dropped",
            "Flushes whose window rows the alert worker's full queue could not take (not \
             evaluated by the alert rules)",
            self.windows_dropped.clone(),
        );
        r.register("panes_closed", "Panes closed", self.panes_closed.clone());
        r.register("windows_emitted", "Windows emitted", self.windows_emitted.clone());
        r.register(
            "versions_evicted",
            "Versions evicted after idle_ttl",
            self.keys_evicted.clone(),
        );
        r.register(
            "resume_gaps",
            "Restored partitions whose first record came after the checkpoint's resume offset \
             (records not delivered by the broker: panes rebuilt without them)",
            self.resume_gaps.clone(),
        );
        r.register(
            "kafka_consumer_errors",
            "Errors the Kafka consumer reported (failed fetches, which librdkafka retries; a \
             steady rise with a growing lag is a partition that does not advance: see the log)",
            self.consumer_errors.clone(),
        );
        r.register(
            "features_over_cap",
            "Feature values dropped over limits.max_features",
            self.over_feature_cap.clone(),
        );
        r.register(
            "active_versions",
            "(model, version) keys tracked",
            self.active_versions.clone(),
        );
        r.register(
            "keys_in_several_partitions",
            "Versions seen in more than one partition (input not keyed by model)",
            self.several_partitions.clone(),
        );
        r.register(
            "key_in_several_partitions",
            "1 for each version seen in more than one partition (the first 100)",
            self.several_partition_keys.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Seconds since the last checkpoint was durable",
            self.checkpoint_age.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints written (one per flush)",
            self.checkpoints_written.clone(),
        );
        r.register(
            "flushes_in_flight",
            "Flushes handed to the sink and not yet written",
            self.flushes_in_flight.clone(),
        );
        r.register("paused", "1 while consumption is paused for backpressure", self.paused.clone());
        r.register(
            "clickhouse_insert_seconds",
            "Duration of ClickHouse inserts, retries included, per table",
            self.insert_seconds.clone(),
        );
        r.register(
            "clickhouse_rows",
            "Rows written to ClickHouse, per table",
            self.insert_rows.clone(),
        );
        r.register(
            "clickhouse_insert_failures",
            "ClickHouse inserts that failed (after the writer's own retries) or needed retries, \
             per table",
            self.insert_failures.clone(),
        );
    }

    pub(crate) fn insert_seconds(
        &self,
        table: &str,
    ) -> impl std::ops::Deref<Target = Histogram> + '_ {
        self.insert_seconds.get_or_create(&TableLabel { table: table.to_owned() })
    }

    pub(crate) fn insert_rows(&self, table: &str) -> impl std::ops::Deref<Target = Counter> + '_ {
        self.insert_rows.get_or_create(&TableLabel { table: table.to_owned() })
    }

    pub(crate) fn insert_failures(
        &self,
        table: &str,
    ) -> impl std::ops::Deref<Target = Counter> + '_ {
        self.insert_failures.get_or_create(&TableLabel { table: table.to_owned() })
    }

    /// Publishes the growth of the pipeline's counters since the last call.
    pub fn publish(
        &self,
        topics: &Topics,
        counts: &[TopicCounts],
        stats: TrackerStats,
        active: usize,
    ) {
        let Ok(mut last) = self.last.lock() else { return };
        let (prev, prev_stats) = &mut *last;
        prev.resize(counts.len(), TopicCounts::default());
        for (t, (now, before)) in counts.iter().zip(prev.iter()).enumerate() {
            if now == before {
                continue;
            }
            let topic = topics.topic(t as u32).name.to_string();
            let l = TopicLabel { topic: topic.clone() };
            self.records.get_or_create(&l).inc_by(now.records - before.records);
            self.events.get_or_create(&l).inc_by(now.events - before.events);
            self.recorded.get_or_create(&l).inc_by(now.recorded - before.recorded);
            self.skipped.get_or_create(&l).inc_by(now.skipped - before.skipped);
            for (i, k) in RejectKind::ALL.iter().enumerate() {
                let d = now.rejected[i] - before.rejected[i];
                if d > 0 {
                    let l = TopicReason { topic: topic.clone(), reason: k.as_str().to_owned() };
                    self.rejected.get_or_create(&l).inc_by(d);
                }
            }
        }
        prev.copy_from_slice(counts);
        self.panes_closed.inc_by(stats.panes_closed - prev_stats.panes_closed);
        self.windows_emitted.inc_by(stats.windows_emitted - prev_stats.windows_emitted);
        self.keys_evicted.inc_by(stats.keys_evicted - prev_stats.keys_evicted);
        self.over_feature_cap.inc_by(stats.over_feature_cap - prev_stats.over_feature_cap);
        *prev_stats = stats;
        self.active_versions.set(active as i64);
    }

    /// Publishes the pipeline's total of restored partitions whose first record came after the
    /// checkpoint's resume offset.
    pub fn publish_resume_gaps(&self, total: u64) {
        grow_to(&self.resume_gaps, &self.resume_gaps_seen, total);
    }

    /// Publishes the source's total of consumer errors.
    pub fn publish_consumer_errors(&self, total: u64) {
        grow_to(&self.consumer_errors, &self.consumer_errors_seen, total);
    }

    /// Versions seen in several partitions (the first 100 are listed by label).
    pub fn set_several_partitions(&self, keys: &[(String, String, Vec<u32>)]) {
        self.several_partitions.set(keys.len() as i64);
        self.several_partition_keys.clear();
        for (m, v, _) in keys.iter().take(100) {
            self.several_partition_keys
                .get_or_create(&KeyLabel { model: m.clone(), version: v.clone() })
                .set(1);
        }
    }

    /// A lag sample of one partition: the broker's high watermark and the consumer's next
    /// offset (the lag is their difference).
    pub fn set_lag(&self, topic: &str, partition: i32, high: i64, next_offset: i64) {
        let lag = (high - next_offset).max(0);
        let l = PartitionLabel { topic: topic.to_owned(), partition: partition.to_string() };
        self.lag.get_or_create(&l).set(lag);
        if let Ok(mut lags) = self.lags.lock() {
            let key = (topic.to_owned(), partition);
            let prev = lags.get(&key).copied();
            let now_ok = lag == 0 || prev.is_some_and(|p| next_offset >= p.high);
            let streak = if now_ok { prev.map_or(1, |p| p.streak.saturating_add(1)) } else { 0 };
            lags.insert(key, LagSample { high, streak });
        }
    }

    /// Forgets the lag of a partition that left.
    pub fn remove_lag(&self, topic: &str, partition: i32) {
        let l = PartitionLabel { topic: topic.to_owned(), partition: partition.to_string() };
        self.lag.remove(&l);
        if let Ok(mut lags) = self.lags.lock() {
            lags.remove(&(topic.to_owned(), partition));
        }
    }

    /// Whether the consumer is caught up: at least one partition's lag was sampled, and at the
    /// latest two samples every partition with a sample had no lag or had read past the high
    /// watermark of the sample before (one `lag_interval` earlier): it is less than a lag
    /// interval behind, and was already a lag interval ago. (A live stream is rarely at lag 0
    /// exactly: records keep arriving while the consumer fetches. The second sample gives the
    /// windows of a backlog just read the time to be written and evaluated.) A partition
    /// assigned since the last sample is not known yet. `absent` alert rules are judged only
    /// then, so a backlog is not taken for silence.
    pub fn caught_up(&self) -> bool {
        self.lags.lock().is_ok_and(|l| !l.is_empty() && l.values().all(|s| s.streak >= 2))
    }

    /// The window rows of a flush could not be handed to the alert worker (its queue was full):
    /// those windows are not evaluated by the alert rules.
    pub fn alert_windows_dropped(&self) {
        self.windows_dropped.inc();
    }

    /// Flushes dropped so far because the queue after the sink was full.
    pub fn alert_windows_dropped_total(&self) -> u64 {
        self.windows_dropped.get()
    }

    /// Records sent to the dead-letter topic, and those that could not be.
    pub fn dead_lettered(&self, sent: u64, failed: u64) {
        self.dead_letters.inc_by(sent);
        self.dead_letter_failures.inc_by(failed);
    }

    /// A checkpoint became durable at `now_ms`.
    pub fn checkpoint_written(&self, now_ms: i64) {
        self.checkpoints_written.inc();
        self.last_checkpoint_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Updates the checkpoint age from the wall clock.
    pub fn update_checkpoint_age(&self, now_ms: i64) {
        let last = self.last_checkpoint_ms.load(Ordering::Relaxed);
        if last > 0 {
            self.checkpoint_age.set((now_ms - last).max(0) as f64 / 1000.0);
        }
    }

    /// Seconds since the last durable checkpoint (0 before the first).
    pub fn checkpoint_age_seconds(&self) -> f64 {
        self.checkpoint_age.get()
    }

    /// Flushes in flight and whether consumption is paused.
    pub fn set_flow(&self, in_flight: usize, paused: bool) {
        self.flushes_in_flight.set(in_flight as i64);
        self.paused.set(i64::from(paused));
    }
}

#[cfg(test)]
mod tests {
    use super::EngineMetrics;

    #[test]
    fn caught_up_means_less_than_one_lag_sample_behind() {
        let m = EngineMetrics::default();
        assert!(!m.caught_up(), "no sample yet");
        // A backlog: 1,000 behind, and still behind the previous high watermark next time.
        m.set_lag("t", 0, 1_000, 0);
        assert!(!m.caught_up());
        m.set_lag("t", 0, 1_100, 600);
        assert!(!m.caught_up());
        // A live stream: a few records behind, but past the previous sample's high watermark;
        // caught up from the second such sample on.
        m.set_lag("t", 0, 1_200, 1_190);
        assert!(!m.caught_up(), "one sample past the backlog");
        m.set_lag("t", 0, 1_300, 1_295);
        assert!(m.caught_up());
        m.set_lag("u", 3, 50, 50);
        assert!(!m.caught_up(), "a new partition: one sample");
        m.set_lag("u", 3, 50, 50);
        assert!(m.caught_up(), "lag 0 twice");
        // A burst arrives: 440 behind, but past the previous high watermark (50): still caught
        // up; the next sample finds it behind the burst's end (500): not caught up.
        m.set_lag("u", 3, 500, 60);
        assert!(m.caught_up());
        m.set_lag("u", 3, 900, 400);
        assert!(!m.caught_up());
        m.remove_lag("u", 3);
        assert!(m.caught_up());
    }
}
