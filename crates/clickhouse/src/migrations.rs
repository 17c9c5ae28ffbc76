//! Versioned schema migrations.
//!
//! Each [`Migration`] step is a list of DDL statements, applied once and in version order; the
//! step is recorded in `schema_migrations` (version, name, applied_at) after all of its
//! statements succeeded. Statements are idempotent (`CREATE ... IF NOT EXISTS`), so a crash
//! between a step's DDL and its record, or two instances migrating at once, only repeats
//! harmless statements. Steps are never edited once released: a schema change is a new step.
//!
//! The DDL runs on ClickHouse 18.16 (Debian's) and on current releases: only the MergeTree
//! family, `String`, `Array`, `Nullable`, integer and float types, `DateTime` and `MATERIALIZED`
//! columns. `{db}` in a statement is replaced by the back-quoted database name.

/// One migration step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, starting at 1, strictly increasing.
    pub version: u32,
    /// Short name, recorded with the version.
    pub name: &'static str,
    /// DDL statements, run one by one; each must be idempotent (`CREATE TABLE IF NOT EXISTS`).
    pub statements: &'static [&'static str],
    /// Columns added to existing tables, each only when missing (ClickHouse 18.16 has no
    /// `ADD COLUMN IF NOT EXISTS`), after the statements.
    pub columns: &'static [AddColumn],
}

/// A column added to an existing table by a migration.
#[derive(Debug, Clone, Copy)]
pub struct AddColumn {
    /// The table.
    pub table: &'static str,
    /// The new column.
    pub name: &'static str,
    /// Type and default, e.g. `Int64 DEFAULT -1`.
    pub definition: &'static str,
    /// The column it goes after (the order the row structs insert in).
    pub after: &'static str,
}

/// The table that records applied steps. Created before any step.
pub(crate) const SCHEMA_MIGRATIONS_DDL: &str =
    "CREATE TABLE IF NOT EXISTS {db}.`schema_migrations` (
    `version` UInt32,
    `name` String,
    `applied_at` DateTime
) ENGINE = ReplacingMergeTree(`applied_at`)
ORDER BY `version`";

/// Every migration step, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "pane tables",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.`pane_stats` (
    `model` String,
    `version` String,
    `pane_start_ms` Int64,
    `source_partition` UInt32,
    `pane_end_ms` Int64,
    `requests` UInt64,
    `errors` UInt64,
    `status_names` Array(String),
    `status_counts` Array(UInt64),
    `latency_bucket_us` Array(UInt32),
    `latency_bucket_counts` Array(UInt64),
    `latency_sum_us` UInt64,
    `latency_min_ms` Float64,
    `latency_max_ms` Float64,
    `ttft_bucket_us` Array(UInt32),
    `ttft_bucket_counts` Array(UInt64),
    `ttft_max_ms` Float64,
    `token_requests` UInt64,
    `tokens_in` UInt64,
    `tokens_out` UInt64,
    `written_at_ms` UInt64,
    `pane_start` DateTime MATERIALIZED toDateTime(intDiv(`pane_start_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
PARTITION BY toYYYYMM(toDateTime(intDiv(`pane_start_ms`, 1000)))
ORDER BY (`model`, `version`, `pane_start_ms`, `source_partition`)",
            "CREATE TABLE IF NOT EXISTS {db}.`pane_bins` (
    `model` String,
    `version` String,
    `pane_start_ms` Int64,
    `source_partition` UInt32,
    `kind` String,
    `feature` String,
    `pane_end_ms` Int64,
    `bin_counts` Array(UInt64),
    `written_at_ms` UInt64,
    `pane_start` DateTime MATERIALIZED toDateTime(intDiv(`pane_start_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
PARTITION BY toYYYYMM(toDateTime(intDiv(`pane_start_ms`, 1000)))
ORDER BY (`model`, `version`, `pane_start_ms`, `source_partition`, `kind`, `feature`)",
        ],
        columns: &[],
    },
    Migration {
        version: 2,
        name: "window tables",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.`window_stats` (
    `model` String,
    `version` String,
    `window_end_ms` Int64,
    `window_start_ms` Int64,
    `requests` UInt64,
    `errors` UInt64,
    `timeouts` UInt64,
    `error_rate` Nullable(Float64),
    `throughput_rps` Float64,
    `latency_p50_ms` Nullable(Float64),
    `latency_p90_ms` Nullable(Float64),
    `latency_p99_ms` Nullable(Float64),
    `latency_p999_ms` Nullable(Float64),
    `latency_max_ms` Nullable(Float64),
    `tokens_in` UInt64,
    `tokens_out` UInt64,
    `ttft_p50_ms` Nullable(Float64),
    `ttft_p99_ms` Nullable(Float64),
    `written_at_ms` UInt64,
    `window_start` DateTime MATERIALIZED toDateTime(intDiv(`window_start_ms`, 1000)),
    `window_end` DateTime MATERIALIZED toDateTime(intDiv(`window_end_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
PARTITION BY toYYYYMM(toDateTime(intDiv(`window_end_ms`, 1000)))
ORDER BY (`model`, `version`, `window_end_ms`)",
            "CREATE TABLE IF NOT EXISTS {db}.`metric_stats` (
    `model` String,
    `version` String,
    `name` String,
    `window_end_ms` Int64,
    `window_start_ms` Int64,
    `kind` String,
    `count` UInt64,
    `sum` Float64,
    `min` Float64,
    `max` Float64,
    `last` Float64,
    `p50` Nullable(Float64),
    `p99` Nullable(Float64),
    `rate_per_s` Nullable(Float64),
    `written_at_ms` UInt64,
    `window_start` DateTime MATERIALIZED toDateTime(intDiv(`window_start_ms`, 1000)),
    `window_end` DateTime MATERIALIZED toDateTime(intDiv(`window_end_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
PARTITION BY toYYYYMM(toDateTime(intDiv(`window_end_ms`, 1000)))
ORDER BY (`model`, `version`, `name`, `window_end_ms`)",
        ],
        columns: &[],
    },
    Migration {
        version: 3,
        name: "drift tables",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.`drift_layouts` (
    `model` String,
    `kind` String,
    `feature` String,
    `layout` String,
    `bin_count` UInt32,
    `bin_labels` Array(String),
    `frozen_at_ms` Int64,
    `written_at_ms` UInt64,
    `frozen_at` DateTime MATERIALIZED toDateTime(intDiv(`frozen_at_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
ORDER BY (`model`, `kind`, `feature`)",
            "CREATE TABLE IF NOT EXISTS {db}.`drift_references` (
    `model` String,
    `version` String,
    `kind` String,
    `feature` String,
    `reference_start_ms` Int64,
    `reference_end_ms` Int64,
    `complete` UInt8,
    `counts` Array(UInt64),
    `written_at_ms` UInt64,
    `reference_start` DateTime MATERIALIZED toDateTime(intDiv(`reference_start_ms`, 1000)),
    `reference_end` DateTime MATERIALIZED toDateTime(intDiv(`reference_end_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
ORDER BY (`model`, `version`, `kind`, `feature`)",
            "CREATE TABLE IF NOT EXISTS {db}.`drift_scores` (
    `model` String,
    `version` String,
    `reference` String,
    `kind` String,
    `feature` String,
    `window_end_ms` Int64,
    `kl` Float64,
    `psi` Float64,
    `js` Float64,
    `chi2` Float64,
    `dof` UInt64,
    `p_value` Float64,
    `samples` UInt64,
    `reference_samples` UInt64,
    `written_at_ms` UInt64,
    `window_end` DateTime MATERIALIZED toDateTime(intDiv(`window_end_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
PARTITION BY toYYYYMM(toDateTime(intDiv(`window_end_ms`, 1000)))
ORDER BY (`model`, `version`, `reference`, `kind`, `feature`, `window_end_ms`)",
        ],
        columns: &[],
    },
    Migration {
        version: 4,
        name: "canary verdicts",
        statements: &["CREATE TABLE IF NOT EXISTS {db}.`canary_verdicts` (
    `model` String,
    `baseline_version` String,
    `canary_version` String,
    `scope` String,
    `window_end_ms` Int64,
    `metric` String,
    `classification` String,
    `statistic` Nullable(Float64),
    `p_value` Nullable(Float64),
    `effect` Nullable(Float64),
    `n_baseline` UInt64,
    `n_canary` UInt64,
    `threshold` Nullable(Float64),
    `score` Nullable(Float64),
    `decision` String,
    `evidence` String,
    `written_at_ms` UInt64,
    `window_end` DateTime MATERIALIZED toDateTime(intDiv(`window_end_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
PARTITION BY toYYYYMM(toDateTime(intDiv(`window_end_ms`, 1000)))
ORDER BY (`model`, `baseline_version`, `canary_version`, `scope`, `window_end_ms`, `metric`)"],
        columns: &[],
    },
    Migration {
        version: 5,
        name: "alerting",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.`alerts` (
    `fingerprint` String,
    `seq` UInt64,
    `channel` String,
    `attempt` UInt32,
    `rule` String,
    `model` String,
    `version` String,
    `severity` String,
    `state` String,
    `value` Nullable(Float64),
    `threshold` Nullable(Float64),
    `starts_at_ms` Int64,
    `ends_at_ms` Nullable(Int64),
    `delivery_status` String,
    `at_ms` Int64,
    `written_at_ms` UInt64,
    `starts_at` DateTime MATERIALIZED toDateTime(intDiv(`starts_at_ms`, 1000)),
    `ends_at` Nullable(DateTime) MATERIALIZED toDateTime(intDiv(`ends_at_ms`, 1000)),
    `at` DateTime MATERIALIZED toDateTime(intDiv(`at_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
ORDER BY (`fingerprint`, `seq`, `channel`, `attempt`)",
            "CREATE TABLE IF NOT EXISTS {db}.`silences` (
    `id` String,
    `matchers` String,
    `starts_at_ms` Int64,
    `ends_at_ms` Int64,
    `created_by` String,
    `comment` String,
    `written_at_ms` UInt64,
    `starts_at` DateTime MATERIALIZED toDateTime(intDiv(`starts_at_ms`, 1000)),
    `ends_at` DateTime MATERIALIZED toDateTime(intDiv(`ends_at_ms`, 1000)),
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
ORDER BY `id`",
        ],
        columns: &[],
    },
    Migration {
        version: 6,
        name: "consumer state",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {db}.`checkpoints` (
    `group` String,
    `topic` String,
    `partition` Int32,
    `cutoff_ms` Int64,
    `resume_offset` Int64,
    `watermark_ms` Int64,
    `written_at_ms` UInt64,
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
ORDER BY (`group`, `topic`, `partition`)",
            "CREATE TABLE IF NOT EXISTS {db}.`counter_series` (
    `model` String,
    `version` String,
    `name` String,
    `host` String,
    `time_ms` Int64,
    `value` Float64,
    `written_at_ms` UInt64,
    `written_at` DateTime MATERIALIZED toDateTime(intDiv(`written_at_ms`, 1000))
) ENGINE = ReplacingMergeTree(`written_at_ms`)
ORDER BY (`model`, `version`, `name`, `host`)",
        ],
        columns: &[],
    },
    Migration {
        version: 7,
        name: "layout freezing event",
        statements: &[],
        columns: &[
            AddColumn {
                table: "drift_layouts",
                name: "frozen_at_partition",
                definition: "Int64 DEFAULT -1",
                after: "frozen_at_ms",
            },
            AddColumn {
                table: "drift_layouts",
                name: "frozen_at_offset",
                definition: "Int64 DEFAULT -1",
                after: "frozen_at_partition",
            },
        ],
    },
];

/// The highest version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_increase_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(!m.statements.is_empty() || !m.columns.is_empty());
            for s in m.statements {
                assert!(s.starts_with("CREATE TABLE IF NOT EXISTS {db}."), "not idempotent: {s}");
            }
        }
    }
}
