//! Row types of every table, and their construction from the core's pane and window views.
//!
//! Instants are stored exactly as `<name>_ms Int64` (milliseconds since the epoch); each table
//! also has a `<name> DateTime` column `MATERIALIZED` from it (second precision, for dashboards
//! and ad-hoc SQL). Materialized columns are computed by the server, never inserted, and not
//! part of the row types. `written_at_ms UInt64` is the wall-clock time of the write and the
//! `ReplacingMergeTree` version of every table: rows rewritten by a replay are identical apart
//! from it, so the latest copy survives.

use modelwatch_core::bins::{FeatureKind, FrozenLayout};
use modelwatch_core::drift::DriftScores;
use modelwatch_core::event::MetricKind;
use modelwatch_core::metrics::CounterSeries;
use modelwatch_core::tracker::ReferenceSnapshot;
use modelwatch_core::view::{PaneView, WindowView};

use crate::Error;
use crate::schema::table_row;

table_row! {
    /// A closed pane of one (model, version, source partition): counts, latency buckets in the
    /// core's layout (bucket lowest value in microseconds, count; merge with `sumMap`), sums and
    /// extremes.
    pub struct PaneStatsRow {
        table: "pane_stats",
        order_by: ["model", "version", "pane_start_ms", "source_partition"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Model version.
            version: String => "String",
            /// Pane start, ms since the epoch (inclusive).
            pane_start_ms: i64 => "Int64",
            /// The partition the pane's events came from (the engine's partition id). Rows of
            /// different partitions never replace each other; queries sum over it.
            source_partition: u32 => "UInt32",
            /// Pane end, ms since the epoch (exclusive).
            pane_end_ms: i64 => "Int64",
            /// Requests.
            requests: u64 => "UInt64",
            /// Requests whose status is not `ok`.
            errors: u64 => "UInt64",
            /// Status names (`ok` included), sorted, parallel to `status_counts`.
            status_names: Vec<String> => "Array(String)",
            /// Requests per status, parallel to `status_names`.
            status_counts: Vec<u64> => "Array(UInt64)",
            /// Latency bucket lowest values in microseconds, increasing, parallel to
            /// `latency_bucket_counts`.
            latency_bucket_us: Vec<u32> => "Array(UInt32)",
            /// Requests per latency bucket.
            latency_bucket_counts: Vec<u64> => "Array(UInt64)",
            /// Sum of latencies in whole microseconds.
            latency_sum_us: u64 => "UInt64",
            /// Smallest latency in ms (`inf` without requests).
            latency_min_ms: f64 => "Float64",
            /// Largest latency in ms (`-inf` without requests).
            latency_max_ms: f64 => "Float64",
            /// Time-to-first-token buckets, same layout as latency.
            ttft_bucket_us: Vec<u32> => "Array(UInt32)",
            /// Requests per time-to-first-token bucket.
            ttft_bucket_counts: Vec<u64> => "Array(UInt64)",
            /// Largest time to first token in ms (`-inf` when none).
            ttft_max_ms: f64 => "Float64",
            /// Requests that reported token counts.
            token_requests: u64 => "UInt64",
            /// Summed prompt tokens.
            tokens_in: u64 => "UInt64",
            /// Summed generated tokens.
            tokens_out: u64 => "UInt64",
            /// Wall-clock write time, ms since the epoch (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

fn split_buckets(pairs: impl Iterator<Item = (u32, u32)>) -> (Vec<u32>, Vec<u64>) {
    pairs.map(|(b, c)| (b, u64::from(c))).unzip()
}

impl PaneStatsRow {
    /// The row of a closed pane.
    pub fn from_pane(pane: &PaneView<'_>, written_at_ms: u64) -> Self {
        let v = pane.view();
        let s = v.stats();
        // By name: the order in which a process first met each status must not show in rows
        // that a replay (another process) rewrites.
        let mut statuses: Vec<(String, u64)> =
            v.statuses().map(|(n, c)| (n.to_owned(), c)).collect();
        statuses.sort_unstable();
        let (status_names, status_counts) = statuses.into_iter().unzip();
        let (latency_bucket_us, latency_bucket_counts) = split_buckets(s.latency.iter());
        let (ttft_bucket_us, ttft_bucket_counts) = split_buckets(s.ttft.iter());
        Self {
            model: v.model().to_owned(),
            version: v.version().to_owned(),
            pane_start_ms: pane.start_ms(),
            source_partition: pane.partition(),
            pane_end_ms: pane.end_ms(),
            requests: v.requests(),
            errors: v.errors(),
            status_names,
            status_counts,
            latency_bucket_us,
            latency_bucket_counts,
            latency_sum_us: s.latency_sum_us,
            latency_min_ms: s.latency_min_ms,
            latency_max_ms: s.latency_max_ms,
            ttft_bucket_us,
            ttft_bucket_counts,
            ttft_max_ms: s.ttft_max_ms,
            token_requests: s.token_requests,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            written_at_ms,
        }
    }
}

table_row! {
    /// The bin counts of one feature (or of `prediction` / `predicted_label`) in one pane, in
    /// the model's frozen layout (`drift_layouts`). Sum them with `sumForEach` over any span.
    pub struct PaneBinsRow {
        table: "pane_bins",
        order_by: ["model", "version", "pane_start_ms", "source_partition", "kind", "feature"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Model version.
            version: String => "String",
            /// Pane start, ms since the epoch.
            pane_start_ms: i64 => "Int64",
            /// Source partition (see `pane_stats`).
            source_partition: u32 => "UInt32",
            /// `numeric`, `categorical`, `prediction` or `label`.
            kind: String => "String",
            /// Feature name.
            feature: String => "String",
            /// Pane end, ms since the epoch.
            pane_end_ms: i64 => "Int64",
            /// Counts per bin; may be shorter than the layout (missing bins are zero).
            bin_counts: Vec<u64> => "Array(UInt64)",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

impl PaneBinsRow {
    /// The rows of a closed pane: one per frozen feature with at least one count.
    pub fn from_pane(pane: &PaneView<'_>, written_at_ms: u64) -> Vec<Self> {
        let v = pane.view();
        v.features()
            .filter(|(_, counts)| counts.iter().any(|&c| c > 0))
            .map(|(f, counts)| Self {
                model: v.model().to_owned(),
                version: v.version().to_owned(),
                pane_start_ms: pane.start_ms(),
                source_partition: pane.partition(),
                kind: f.kind.as_str().to_owned(),
                feature: f.name.to_owned(),
                pane_end_ms: pane.end_ms(),
                bin_counts: counts.to_vec(),
                written_at_ms,
            })
            .collect()
    }
}

table_row! {
    /// The statistics of one sliding window of one (model, version).
    pub struct WindowStatsRow {
        table: "window_stats",
        order_by: ["model", "version", "window_end_ms"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Model version.
            version: String => "String",
            /// Window end, ms since the epoch (exclusive).
            window_end_ms: i64 => "Int64",
            /// Window start, ms since the epoch.
            window_start_ms: i64 => "Int64",
            /// Requests.
            requests: u64 => "UInt64",
            /// Requests whose status is not `ok`.
            errors: u64 => "UInt64",
            /// Requests whose status is `timeout`.
            timeouts: u64 => "UInt64",
            /// errors / requests; null without requests.
            error_rate: Option<f64> => "Nullable(Float64)",
            /// Requests per second over the window length.
            throughput_rps: f64 => "Float64",
            /// Latency median in ms; null without requests.
            latency_p50_ms: Option<f64> => "Nullable(Float64)",
            /// Latency p90 in ms.
            latency_p90_ms: Option<f64> => "Nullable(Float64)",
            /// Latency p99 in ms.
            latency_p99_ms: Option<f64> => "Nullable(Float64)",
            /// Latency p99.9 in ms.
            latency_p999_ms: Option<f64> => "Nullable(Float64)",
            /// Largest latency in ms (exact).
            latency_max_ms: Option<f64> => "Nullable(Float64)",
            /// Summed prompt tokens.
            tokens_in: u64 => "UInt64",
            /// Summed generated tokens.
            tokens_out: u64 => "UInt64",
            /// Time-to-first-token median in ms; null when no request reported one.
            ttft_p50_ms: Option<f64> => "Nullable(Float64)",
            /// Time-to-first-token p99 in ms.
            ttft_p99_ms: Option<f64> => "Nullable(Float64)",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

impl WindowStatsRow {
    /// The row of a closed window.
    pub fn from_window(w: &WindowView<'_>, written_at_ms: u64) -> Self {
        let v = w.view();
        let lat = w.latency();
        let ttft = w.ttft();
        Self {
            model: v.model().to_owned(),
            version: v.version().to_owned(),
            window_end_ms: w.end_ms(),
            window_start_ms: w.start_ms(),
            requests: v.requests(),
            errors: v.errors(),
            timeouts: v.timeouts(),
            error_rate: w.error_rate(),
            throughput_rps: w.throughput_rps(),
            latency_p50_ms: lat.map(|l| l.p50_ms),
            latency_p90_ms: lat.map(|l| l.p90_ms),
            latency_p99_ms: lat.map(|l| l.p99_ms),
            latency_p999_ms: lat.map(|l| l.p999_ms),
            latency_max_ms: w.latency_max_ms(),
            tokens_in: v.stats().tokens_in,
            tokens_out: v.stats().tokens_out,
            ttft_p50_ms: ttft.map(|l| l.p50_ms),
            ttft_p99_ms: ttft.map(|l| l.p99_ms),
            written_at_ms,
        }
    }
}

table_row! {
    /// The aggregate of one metric (`MetricEvent.name`) over one window.
    pub struct MetricStatsRow {
        table: "metric_stats",
        order_by: ["model", "version", "name", "window_end_ms"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Model version.
            version: String => "String",
            /// Metric name.
            name: String => "String",
            /// Window end, ms since the epoch.
            window_end_ms: i64 => "Int64",
            /// Window start, ms since the epoch.
            window_start_ms: i64 => "Int64",
            /// `gauge` or `counter`.
            kind: String => "String",
            /// Samples.
            count: u64 => "UInt64",
            /// Sum of the values.
            sum: f64 => "Float64",
            /// Smallest value.
            min: f64 => "Float64",
            /// Largest value.
            max: f64 => "Float64",
            /// Value of the latest sample by event time.
            last: f64 => "Float64",
            /// Median (1% relative error).
            p50: Option<f64> => "Nullable(Float64)",
            /// 99th percentile (1% relative error).
            p99: Option<f64> => "Nullable(Float64)",
            /// Counters: increase per second over the window; null for gauges.
            rate_per_s: Option<f64> => "Nullable(Float64)",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

impl MetricStatsRow {
    /// The rows of a closed window: one per metric.
    pub fn from_window(w: &WindowView<'_>, written_at_ms: u64) -> Vec<Self> {
        let v = w.view();
        let span = w.end_ms() - w.start_ms();
        v.metrics()
            .filter(|(_, m)| m.count > 0)
            .map(|(name, m)| Self {
                model: v.model().to_owned(),
                version: v.version().to_owned(),
                name: name.to_owned(),
                window_end_ms: w.end_ms(),
                window_start_ms: w.start_ms(),
                kind: match m.kind {
                    MetricKind::Gauge => "gauge",
                    MetricKind::Counter => "counter",
                }
                .to_owned(),
                count: m.count,
                sum: m.sum,
                min: m.min,
                max: m.max,
                last: m.last,
                p50: m.quantile(0.5),
                p99: m.quantile(0.99),
                rate_per_s: m.rate_per_s(span),
                written_at_ms,
            })
            .collect()
    }
}

table_row! {
    /// Drift of one feature of one window against one reference.
    pub struct DriftScoreRow {
        table: "drift_scores",
        order_by: ["model", "version", "reference", "kind", "feature", "window_end_ms"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// The version whose window is scored.
            version: String => "String",
            /// What it is compared with: `period` (the version's pinned reference period) or
            /// `version:<baseline>` (the baseline version's window with the same end).
            reference: String => "String",
            /// `numeric`, `categorical`, `prediction` or `label`.
            kind: String => "String",
            /// Feature name.
            feature: String => "String",
            /// Window end, ms since the epoch.
            window_end_ms: i64 => "Int64",
            /// KL divergence D(current || reference), nats.
            kl: f64 => "Float64",
            /// Population stability index, nats.
            psi: f64 => "Float64",
            /// Jensen-Shannon divergence (not distance), nats.
            js: f64 => "Float64",
            /// Chi-square statistic of the homogeneity test.
            chi2: f64 => "Float64",
            /// Its degrees of freedom.
            dof: u64 => "UInt64",
            /// Its p-value.
            p_value: f64 => "Float64",
            /// Current observations.
            samples: u64 => "UInt64",
            /// Reference observations.
            reference_samples: u64 => "UInt64",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

impl DriftScoreRow {
    /// The row of one feature's scores.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &str,
        version: &str,
        reference: &str,
        kind: FeatureKind,
        feature: &str,
        window_end_ms: i64,
        s: &DriftScores,
        written_at_ms: u64,
    ) -> Self {
        Self {
            model: model.to_owned(),
            version: version.to_owned(),
            reference: reference.to_owned(),
            kind: kind.as_str().to_owned(),
            feature: feature.to_owned(),
            window_end_ms,
            kl: s.kl,
            psi: s.psi,
            js: s.js,
            chi2: s.chi2,
            dof: s.dof,
            p_value: s.p_value,
            samples: s.samples,
            reference_samples: s.reference_samples,
            written_at_ms,
        }
    }
}

table_row! {
    /// The frozen bin layout of one (model, feature), shared by every version of the model.
    /// Written once when frozen, reloaded on start so that a replay bins identically.
    pub struct DriftLayoutRow {
        table: "drift_layouts",
        order_by: ["model", "kind", "feature"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// `numeric`, `categorical`, `prediction` or `label`.
            kind: String => "String",
            /// Feature name.
            feature: String => "String",
            /// The layout as JSON (the core's `BinLayout`: `{"type":"numeric","lower":..,
            /// "interior":[..],"upper":..}` or `{"type":"categorical","values":[..]}`).
            layout: String => "String",
            /// Number of bins (underflow/overflow or "other" included).
            bin_count: u32 => "UInt32",
            /// Human-readable bin labels, in bin order.
            bin_labels: Vec<String> => "Array(String)",
            /// Event time at which the layout froze, ms since the epoch.
            frozen_at_ms: i64 => "Int64",
            /// Source partition (`topic index * 1,000,000 + partition`) of the event that
            /// completed the sample; -1 when unknown. A replay does not bin that partition's
            /// events up to it (edge samples in the first run), so it writes the same bins.
            frozen_at_partition: i64 => "Int64",
            /// Offset of that event; -1 when unknown.
            frozen_at_offset: i64 => "Int64",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

/// Parses the `kind` column.
pub(crate) fn parse_kind(table: &'static str, s: &str) -> Result<FeatureKind, Error> {
    Ok(match s {
        "numeric" => FeatureKind::Numeric,
        "categorical" => FeatureKind::Categorical,
        "prediction" => FeatureKind::Prediction,
        "label" => FeatureKind::Label,
        _ => {
            return Err(Error::StoredValue { table, column: "kind", value: s.to_owned() });
        }
    })
}

impl DriftLayoutRow {
    /// The row of a frozen layout. `f.frozen_at` must already name the stable source
    /// partition (the tracker's own partition ids are not persisted).
    pub fn from_frozen(model: &str, f: &FrozenLayout, written_at_ms: u64) -> Self {
        // Serialising a plain enum of numbers and strings cannot fail.
        let layout = serde_json::to_string(&f.layout).unwrap_or_default();
        Self {
            model: model.to_owned(),
            kind: f.kind.as_str().to_owned(),
            feature: f.feature.clone(),
            layout,
            bin_count: f.layout.bin_count() as u32,
            bin_labels: f.layout.bin_labels(),
            frozen_at_ms: f.frozen_at_ms,
            frozen_at_partition: f.frozen_at.map_or(-1, |(p, _)| i64::from(p)),
            frozen_at_offset: f.frozen_at.map_or(-1, |(_, o)| o),
            written_at_ms,
        }
    }

    /// Decodes the stored layout: (model, layout).
    pub fn to_frozen(&self) -> Result<(String, FrozenLayout), Error> {
        let kind = parse_kind("drift_layouts", &self.kind)?;
        let layout = serde_json::from_str(&self.layout).map_err(|source| Error::StoredJson {
            table: "drift_layouts",
            key: format!("{}/{}/{}", self.model, self.kind, self.feature),
            source,
        })?;
        Ok((
            self.model.clone(),
            FrozenLayout {
                feature: self.feature.clone(),
                kind,
                layout,
                frozen_at_ms: self.frozen_at_ms,
                frozen_at: u32::try_from(self.frozen_at_partition)
                    .ok()
                    .filter(|_| self.frozen_at_offset >= 0)
                    .map(|p| (p, self.frozen_at_offset)),
            },
        ))
    }
}

table_row! {
    /// A version's pinned reference distribution of one feature: counts in the model's frozen
    /// layout (`drift_layouts`), accumulated over the reference period.
    pub struct DriftReferenceRow {
        table: "drift_references",
        order_by: ["model", "version", "kind", "feature"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Version.
            version: String => "String",
            /// `numeric`, `categorical`, `prediction` or `label`.
            kind: String => "String",
            /// Feature name.
            feature: String => "String",
            /// Reference period start, ms since the epoch.
            reference_start_ms: i64 => "Int64",
            /// Reference period end, ms since the epoch.
            reference_end_ms: i64 => "Int64",
            /// 1 when the period is over and the counts are final.
            complete: u8 => "UInt8",
            /// Counts per bin, in the layout's order.
            counts: Vec<u64> => "Array(UInt64)",
            /// Wall-clock write time (the version column: a later snapshot replaces an
            /// earlier one).
            written_at_ms: u64 => "UInt64",
        }
    }
}

impl DriftReferenceRow {
    /// The rows of a reference snapshot: one per feature.
    pub fn from_snapshot(s: &ReferenceSnapshot, written_at_ms: u64) -> Vec<Self> {
        s.features
            .iter()
            .map(|(feature, kind, counts)| Self {
                model: s.model.clone(),
                version: s.version.clone(),
                kind: kind.as_str().to_owned(),
                feature: feature.clone(),
                reference_start_ms: s.start_ms,
                reference_end_ms: s.end_ms,
                complete: u8::from(s.complete),
                counts: counts.clone(),
                written_at_ms,
            })
            .collect()
    }

    /// Groups rows (ordered by model and version, as [`crate::Store::drift_references`]
    /// returns them) into snapshots.
    pub fn into_snapshots(rows: Vec<Self>) -> Result<Vec<ReferenceSnapshot>, Error> {
        let mut out: Vec<ReferenceSnapshot> = Vec::new();
        for r in rows {
            let kind = parse_kind("drift_references", &r.kind)?;
            match out.last_mut() {
                Some(s) if s.model == r.model && s.version == r.version => {
                    s.features.push((r.feature, kind, r.counts));
                }
                _ => out.push(ReferenceSnapshot {
                    model: r.model,
                    version: r.version,
                    start_ms: r.reference_start_ms,
                    end_ms: r.reference_end_ms,
                    complete: r.complete != 0,
                    features: vec![(r.feature, kind, r.counts)],
                }),
            }
        }
        Ok(out)
    }
}

table_row! {
    /// One metric's judgement of a canary against its baseline, with the evidence.
    pub struct CanaryVerdictRow {
        table: "canary_verdicts",
        order_by: ["model", "baseline_version", "canary_version", "scope", "window_end_ms", "metric"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Baseline version.
            baseline_version: String => "String",
            /// Canary version.
            canary_version: String => "String",
            /// `window` or `cumulative`.
            scope: String => "String",
            /// End of the judged window (or of the cumulative span), ms since the epoch.
            window_end_ms: i64 => "Int64",
            /// What was compared: `latency`, `latency_tail`, `error_rate`, `drift:<feature>`,
            /// `sample_ratio`, or `overall`.
            metric: String => "String",
            /// `pass`, `high`, `low` or `nodata`.
            classification: String => "String",
            /// Test statistic.
            statistic: Option<f64> => "Nullable(Float64)",
            /// P-value.
            p_value: Option<f64> => "Nullable(Float64)",
            /// Effect size.
            effect: Option<f64> => "Nullable(Float64)",
            /// Baseline observations.
            n_baseline: u64 => "UInt64",
            /// Canary observations.
            n_canary: u64 => "UInt64",
            /// The threshold applied.
            threshold: Option<f64> => "Nullable(Float64)",
            /// Overall score of the verdict.
            score: Option<f64> => "Nullable(Float64)",
            /// `promote`, `continue` or `rollback`.
            decision: String => "String",
            /// Further evidence as JSON (free form; `{}` when none).
            evidence: String => "String",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

table_row! {
    /// The alert log: one row per state change (`channel` empty, `attempt` 0) and per
    /// notification delivery attempt (`channel` set).
    pub struct AlertRow {
        table: "alerts",
        order_by: ["fingerprint", "seq", "channel", "attempt"],
        version: "written_at_ms",
        columns: {
            /// Stable fingerprint of (rule, labels).
            fingerprint: String => "String",
            /// Sequence number of the state change or repeat notification within the
            /// fingerprint; with the fingerprint, the notification's idempotency key.
            seq: u64 => "UInt64",
            /// Delivery channel (`email:<name>`, `webhook:<name>`, ...); empty for state rows.
            channel: String => "String",
            /// Delivery attempt (1, 2, ...); 0 for state rows.
            attempt: u32 => "UInt32",
            /// Rule name.
            rule: String => "String",
            /// Model name.
            model: String => "String",
            /// Model version.
            version: String => "String",
            /// Severity.
            severity: String => "String",
            /// `pending`, `firing` or `resolved`.
            state: String => "String",
            /// The evaluated value.
            value: Option<f64> => "Nullable(Float64)",
            /// The rule's threshold.
            threshold: Option<f64> => "Nullable(Float64)",
            /// When the alert started (entered pending), ms since the epoch.
            starts_at_ms: i64 => "Int64",
            /// When it resolved; null while active.
            ends_at_ms: Option<i64> => "Nullable(Int64)",
            /// Delivery rows: `sent`, `failed`, `suppressed`; empty for state rows.
            delivery_status: String => "String",
            /// When this row's event happened (event time of the evaluation, or wall-clock
            /// time of the delivery), ms since the epoch.
            at_ms: i64 => "Int64",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

table_row! {
    /// A consumer checkpoint of one (group, topic, partition); see delivery.md.
    pub struct CheckpointRow {
        table: "checkpoints",
        order_by: ["group", "topic", "partition"],
        version: "written_at_ms",
        columns: {
            /// Consumer group.
            group: String => "String",
            /// Topic.
            topic: String => "String",
            /// Kafka partition.
            partition: i32 => "Int32",
            /// Cutoff C: panes ending at or before it are durable and no longer needed.
            cutoff_ms: i64 => "Int64",
            /// Resume offset R.
            resume_offset: i64 => "Int64",
            /// Watermark in force just before the event at R (`i64::MIN` when none).
            watermark_ms: i64 => "Int64",
            /// Wall-clock write time (the version column: the latest checkpoint wins).
            written_at_ms: u64 => "UInt64",
        }
    }
}

table_row! {
    /// A silence, shared by every instance. Expiring a silence rewrites it with a new
    /// `ends_at_ms`.
    pub struct SilenceRow {
        table: "silences",
        order_by: ["id"],
        version: "written_at_ms",
        columns: {
            /// Silence id.
            id: String => "String",
            /// Matchers as JSON: `[{"name":..,"value":..,"is_regex":..,"is_equal":..}]`.
            matchers: String => "String",
            /// Start, ms since the epoch.
            starts_at_ms: i64 => "Int64",
            /// End, ms since the epoch.
            ends_at_ms: i64 => "Int64",
            /// Author.
            created_by: String => "String",
            /// Comment.
            comment: String => "String",
            /// Wall-clock write time (the version column: the latest edit wins).
            written_at_ms: u64 => "UInt64",
        }
    }
}

table_row! {
    /// The last sample of a cumulative counter series, so rates survive a restart.
    pub struct CounterSeriesRow {
        table: "counter_series",
        order_by: ["model", "version", "name", "host"],
        version: "written_at_ms",
        columns: {
            /// Model name.
            model: String => "String",
            /// Version.
            version: String => "String",
            /// Metric name.
            name: String => "String",
            /// `host` attribute (empty when absent).
            host: String => "String",
            /// Event time of the last sample, ms since the epoch.
            time_ms: i64 => "Int64",
            /// Its cumulative value.
            value: f64 => "Float64",
            /// Wall-clock write time (the version column).
            written_at_ms: u64 => "UInt64",
        }
    }
}

impl CounterSeriesRow {
    /// The row of a counter series.
    pub fn from_series(c: &CounterSeries, written_at_ms: u64) -> Self {
        Self {
            model: c.model.clone(),
            version: c.version.clone(),
            name: c.name.clone(),
            host: c.host.clone(),
            time_ms: c.time_ms,
            value: c.value,
            written_at_ms,
        }
    }

    /// The core's counter series.
    pub fn to_series(&self) -> CounterSeries {
        CounterSeries {
            model: self.model.clone(),
            version: self.version.clone(),
            name: self.name.clone(),
            host: self.host.clone(),
            time_ms: self.time_ms,
            value: self.value,
        }
    }
}

table_row! {
    /// One applied migration step.
    pub struct MigrationRow {
        table: "schema_migrations",
        order_by: ["version"],
        version: "applied_at",
        columns: {
            /// Step version.
            version: u32 => "UInt32",
            /// Step name.
            name: String => "String",
            /// When it was applied (seconds since the epoch).
            applied_at: u32 => "DateTime",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;
    use clickhouse::Row;

    fn same_names<T: Table>() {
        let names: Vec<&str> = T::COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(names, <T as Row>::COLUMN_NAMES, "{}", T::TABLE);
        for k in T::ORDER_BY.iter().chain([&T::VERSION_COLUMN]) {
            assert!(names.contains(k), "{}: key column {k} is not a column", T::TABLE);
        }
    }

    #[test]
    fn layouts_name_the_struct_fields_in_order() {
        same_names::<PaneStatsRow>();
        same_names::<PaneBinsRow>();
        same_names::<WindowStatsRow>();
        same_names::<MetricStatsRow>();
        same_names::<DriftScoreRow>();
        same_names::<DriftLayoutRow>();
        same_names::<DriftReferenceRow>();
        same_names::<CanaryVerdictRow>();
        same_names::<AlertRow>();
        same_names::<CheckpointRow>();
        same_names::<SilenceRow>();
        same_names::<CounterSeriesRow>();
        same_names::<MigrationRow>();
    }

    #[test]
    fn snapshots_round_trip_through_rows() {
        let s = ReferenceSnapshot {
            model: "m".into(),
            version: "v1".into(),
            start_ms: 10,
            end_ms: 20,
            complete: true,
            features: vec![
                ("a".into(), FeatureKind::Numeric, vec![1, 2, 3]),
                ("prediction".into(), FeatureKind::Prediction, vec![4]),
            ],
        };
        let rows = DriftReferenceRow::from_snapshot(&s, 1);
        assert_eq!(DriftReferenceRow::into_snapshots(rows).unwrap(), vec![s]);
    }
}
