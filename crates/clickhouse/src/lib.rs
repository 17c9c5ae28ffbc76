//! modelwatch-clickhouse: modelwatch's storage in ClickHouse.
//!
//! Versioned migrations ([`Store::migrate`]), a batched idempotent insert path ([`Writer`]) and
//! the reads that restore state on start. Runs against ClickHouse 18.16 (Debian's, the only
//! server packaged here) and current releases.
//!
//! # Exactly-once results on an at-least-once pipeline
//! Every table is a `ReplacingMergeTree` whose `ORDER BY` key is the row's identity, built only
//! from the input (model, version, pane or window bounds in event time, partition, feature...),
//! never from the wall clock. A replay after a crash therefore writes rows with the same keys
//! and the same values (apart from `written_at_ms`), and ClickHouse keeps one row per key.
//! Replacement happens at merge time, so **every read uses `FINAL`** (or `argMax` by the
//! version column): without it a replayed key can be counted twice until the next merge. All
//! reads of this crate do.
//!
//! The version column of every table is `written_at_ms UInt64` (wall-clock ms of the write):
//! of two rows with one key the later write wins. For derived rows (panes, windows, scores,
//! verdicts) both copies are equal anyway; for state rows (checkpoints, silences, reference
//! snapshots, counter series) the latest write is the current state. `schema_migrations`
//! uses `applied_at`. A table is partitioned, where it is, by a function of a key column, so
//! that copies of a row always land in the same partition (`FINAL` only merges within one).
//!
//! # Tables (database `modelwatch` by default)
//! Instants are stored exactly as `<name>_ms Int64` (ms since the epoch), and each also as a
//! `<name> DateTime` column `MATERIALIZED` from it (seconds) under the contract's name
//! (`pane_start`, `window_end`, `at`, ...) for dashboards. 18.16 has no `DateTime64`.
//!
//! | table | one row per (`ORDER BY`) | content |
//! |---|---|---|
//! | `pane_stats` | model, version, pane_start_ms, source_partition | requests, errors, statuses, latency and TTFT buckets, sums, extremes, tokens |
//! | `pane_bins` | model, version, pane_start_ms, source_partition, kind, feature | bin counts in the frozen layout |
//! | `window_stats` | model, version, window_end_ms | the contract's window columns (quantiles, rates, tokens) |
//! | `metric_stats` | model, version, name, window_end_ms | count, sum, min, max, last, p50, p99, rate |
//! | `drift_layouts` | model, kind, feature | frozen layout (JSON of the core's `BinLayout`), bin labels, frozen_at |
//! | `drift_references` | model, version, kind, feature | reference period bounds, complete flag, counts |
//! | `drift_scores` | model, version, reference, kind, feature, window_end_ms | kl, psi, js, chi2, dof, p_value, samples |
//! | `canary_verdicts` | model, baseline_version, canary_version, scope, window_end_ms, metric | classification, statistic, p_value, effect, n per arm, threshold, score, decision, evidence |
//! | `alerts` | fingerprint, seq, channel, attempt | the log of state changes (channel `''`) and delivery attempts |
//! | `silences` | id | matchers (JSON), starts/ends, author, comment |
//! | `checkpoints` | group, topic, partition | cutoff_ms, resume_offset, watermark_ms (delivery.md) |
//! | `counter_series` | model, version, name, host | last sample of each cumulative counter |
//! | `schema_migrations` | version | name, applied_at |
//!
//! The row types in [`rows`] list the columns with their types; [`schema::Table`] carries each
//! table's name, columns, key and version column.
//!
//! # Latency layout
//! `latency_bucket_us Array(UInt32)` holds the lowest value, in microseconds, of each non-empty
//! HDR bucket (3 significant digits by default, 1 us to 1 h, see `modelwatch_core::latency`),
//! increasing; `latency_bucket_counts Array(UInt64)` the requests in each. Bucket values are the
//! same in every pane, so panes from any partitions and spans merge by adding counts per bucket
//! value, which is `sumMap`; quantiles are read from the merged buckets. TTFT uses the same
//! layout. Feature bins are merged with `sumForEach` (arrays in the frozen layout's order).
//!
//! ```sql
//! -- requests, errors and merged latency buckets of a model since a time
//! SELECT model, version, sum(requests), sum(errors),
//!        sumMap(latency_bucket_us, latency_bucket_counts) AS latency
//! FROM modelwatch.pane_stats FINAL
//! WHERE model = 'fraud-detector' AND pane_start >= now() - 3600
//! GROUP BY model, version;
//!
//! -- p99 latency (ms) of that span, from the merged buckets (checked on 18.16)
//! SELECT version, l.1 AS bucket_us, arrayCumSum(l.2) AS cum,
//!        bucket_us[arrayFirstIndex(c -> c >= 0.99 * cum[-1], cum)] / 1000 AS p99_ms
//! FROM (SELECT version, sumMap(latency_bucket_us, latency_bucket_counts) AS l
//!       FROM modelwatch.pane_stats FINAL
//!       WHERE model = 'fraud-detector' AND pane_start >= now() - 3600 GROUP BY version);
//!
//! -- cumulative bin counts of a feature for drift over any span
//! SELECT version, sumForEach(bin_counts) FROM modelwatch.pane_bins FINAL
//! WHERE model = 'fraud-detector' AND feature = 'amount' GROUP BY version;
//!
//! -- latest checkpoint per partition (argMax form, equivalent to FINAL)
//! SELECT topic, partition, argMax(resume_offset, written_at_ms), argMax(cutoff_ms, written_at_ms)
//! FROM modelwatch.checkpoints WHERE `group` = 'modelwatch' GROUP BY topic, partition;
//! ```
//!
//! # Writing
//! [`Store::writer`] first compares each table's columns in `system.columns` (name and type, in
//! order) with its row layout and refuses to build a writer on a mismatch
//! ([`Error::ColumnMismatch`] names the table and column): the client's own row validation
//! needs `RowBinaryWithNamesAndTypes`, which 18.16 lacks, so it is off, and a layout mismatch
//! would otherwise corrupt data silently. [`Writer::insert`] sends RowBinary with LZ4, in
//! requests of [`WriterConfig::batch_rows`] rows, retries retryable errors
//! ([`ErrorClass::Retryable`]: network, timeouts, 5xx, `TOO_MANY_PARTS`...) with exponential
//! backoff and jitter, fails at once on permanent ones (unknown table or column, type
//! mismatch, bad request), and never drops a batch: on error the batch is still the caller's.
//!
//! # ClickHouse versions
//! The DDL is the same on every server, so one column check fits all. On 24.x one would
//! rather use `LowCardinality(String)` for model, version, kind, status and state columns,
//! `DateTime64(3)` instead of the `_ms` + `MATERIALIZED` pairs, `Map(String, UInt64)` for
//! statuses, column codecs (`Delta`, `ZSTD`), `TTL` for retention, and
//! `insert_deduplication_token` for retried inserts. Adopting them is a new migration step
//! gated on `SELECT version()` ([`Store::server_version`]), with the row layouts (whose
//! RowBinary encoding is the same for `LowCardinality(String)` and `String`) checked against
//! the types the step created. The schema check already uses `system.columns.position` where
//! the server has it.

//! # Tests
//! Integration tests run against a real server named by `MODELWATCH_TEST_CLICKHOUSE_URL`
//! (each test in its own random database); without it they print a note and pass, except with
//! `CI=true`, where they fail. `deploy/local/services.sh up` starts one (and `scripts/test.sh`
//! does it for the whole suite). The restart test starts a private server of its own with
//! `deploy/local/clickhouse-start.sh`, kills it with SIGKILL mid-stream and starts it again.

mod error;
pub mod migrations;
pub mod rows;
pub mod schema;
mod store;
mod writer;

pub use error::{Error, ErrorClass, classify, server_code};
pub use store::{BinTotals, DEFAULT_DATABASE, PaneTotals, Store, StoreConfig, now_ms};
pub use writer::{InsertReport, RetryPolicy, Writer, WriterConfig};
