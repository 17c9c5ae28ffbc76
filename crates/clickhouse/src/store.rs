//! The store: connection settings, migrations, the schema check, and the reads that restore
//! state on start.

use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::{Client, Compression, Row};
use modelwatch_core::bins::FrozenLayout;
use modelwatch_core::metrics::CounterSeries;
use modelwatch_core::tracker::ReferenceSnapshot;
use serde::Deserialize;

use crate::Error;
use crate::migrations::{MIGRATIONS, SCHEMA_MIGRATIONS_DDL, latest_version};
use crate::rows::{
    AlertRow, CanaryVerdictRow, CheckpointRow, CounterSeriesRow, DriftLayoutRow, DriftReferenceRow,
    DriftScoreRow, MetricStatsRow, MigrationRow, PaneBinsRow, PaneStatsRow, SilenceRow,
    WindowStatsRow,
};
use crate::schema::{Table, compare_columns};
use crate::writer::{Writer, WriterConfig};

/// Where and how to connect. Its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding the tables (created by [`Store::migrate`] if missing). Default
    /// `modelwatch`.
    pub database: String,
    /// User; the server's default user when `None`.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// The insert path.
    pub writer: WriterConfig,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("writer", &self.writer)
            .finish()
    }
}

/// The default database name.
pub const DEFAULT_DATABASE: &str = "modelwatch";

impl StoreConfig {
    /// Settings for `url` with the default database and writer.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: DEFAULT_DATABASE.to_owned(),
            user: None,
            password: None,
            writer: WriterConfig::default(),
        }
    }

    /// Replaces the database name.
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Checks the settings without connecting.
    pub fn validate(&self) -> Result<(), Error> {
        let d = &self.database;
        let ok = !d.is_empty()
            && d.len() <= 64
            && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !d.as_bytes()[0].is_ascii_digit();
        if ok { Ok(()) } else { Err(Error::InvalidDatabaseName { name: d.clone() }) }
    }
}

/// A ClickHouse database holding modelwatch's tables.
#[derive(Clone)]
pub struct Store {
    client: Client,
    config: StoreConfig,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.config.url)
            .field("database", &self.config.database)
            .finish_non_exhaustive()
    }
}

/// Totals of `pane_stats` per (model, version) over a span: the cumulative merge of its panes.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct PaneTotals {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Pane rows merged (over partitions too).
    pub panes: u64,
    /// Earliest pane start, ms since the epoch.
    pub first_pane_start_ms: i64,
    /// Latest pane end, ms since the epoch.
    pub last_pane_end_ms: i64,
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Latency buckets `(bucket lowest value in us, count)` as two parallel arrays (`sumMap`).
    pub latency: (Vec<u32>, Vec<u64>),
    /// Sum of latencies in us.
    pub latency_sum_us: u64,
    /// Smallest latency in ms.
    pub latency_min_ms: f64,
    /// Largest latency in ms.
    pub latency_max_ms: f64,
    /// Time-to-first-token buckets, same layout.
    pub ttft: (Vec<u32>, Vec<u64>),
    /// Requests that reported tokens.
    pub token_requests: u64,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Generated tokens.
    pub tokens_out: u64,
}

/// Summed bin counts of one feature of one (model, version) over a span.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct BinTotals {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// `numeric`, `categorical`, `prediction` or `label`.
    pub kind: String,
    /// Feature name.
    pub feature: String,
    /// Pane rows summed.
    pub panes: u64,
    /// Counts per bin (`sumForEach`: shorter arrays count as zeros past their end).
    pub counts: Vec<u64>,
}

/// Wall-clock milliseconds since the epoch, for `written_at_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Validates the settings and builds the client. Does not connect.
    pub fn new(config: StoreConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut client = Client::default()
            .with_url(config.url.clone())
            .with_compression(Compression::Lz4)
            // 18.16 lacks RowBinaryWithNamesAndTypes; `check_schema` replaces the validation.
            .with_validation(false);
        if let Some(u) = &config.user {
            client = client.with_user(u.clone());
        }
        if let Some(p) = &config.password {
            client = client.with_password(p.clone());
        }
        Ok(Self { client, config })
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.config.database
    }

    /// The underlying client (no default database: qualify table names).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn ddl(&self, statement: &str) -> String {
        statement.replace("{db}", &format!("`{}`", self.config.database))
    }

    fn table(&self, table: &str) -> String {
        format!("`{}`.`{}`", self.config.database, table)
    }

    /// The server's version string (`SELECT version()`), e.g. `18.16.1`.
    pub async fn server_version(&self) -> Result<String, Error> {
        self.client
            .query("SELECT version()")
            .fetch_one::<String>()
            .await
            .map_err(|e| Error::query("reading the server version", e))
    }

    /// Versions recorded in `schema_migrations`, increasing; empty for a new database.
    pub async fn applied_migrations(&self) -> Result<Vec<u32>, Error> {
        let exists = self
            .client
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
            .bind(&self.config.database)
            .bind(MigrationRow::TABLE)
            .fetch_one::<u64>()
            .await
            .map_err(|e| Error::query("looking up schema_migrations", e))?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT DISTINCT version FROM {} FINAL ORDER BY version",
            self.table(MigrationRow::TABLE)
        );
        self.client
            .query(&sql)
            .fetch_all::<u32>()
            .await
            .map_err(|e| Error::query("reading schema_migrations", e))
    }

    /// Applies every pending migration step; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<u32>, Error> {
        self.migrate_to(latest_version()).await
    }

    /// Applies the pending steps up to `target` (inclusive), in order, each recorded after it
    /// succeeded. Refuses a database migrated by a newer build.
    pub async fn migrate_to(&self, target: u32) -> Result<Vec<u32>, Error> {
        let create_db = format!("CREATE DATABASE IF NOT EXISTS `{}`", self.config.database);
        self.client
            .query(&create_db)
            .execute()
            .await
            .map_err(|e| Error::query("creating the database", e))?;
        self.client
            .query(&self.ddl(SCHEMA_MIGRATIONS_DDL))
            .execute()
            .await
            .map_err(|e| Error::query("creating schema_migrations", e))?;
        let applied = self.applied_migrations().await?;
        let known = latest_version();
        if let Some(&found) = applied.last().filter(|&&v| v > known) {
            return Err(Error::SchemaTooNew { found, known });
        }
        let mut done = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| m.version <= target) {
            if applied.contains(&m.version) {
                continue;
            }
            let fail = |source| Error::Migration {
                version: m.version,
                name: m.name,
                class: crate::error::classify(&source),
                source,
            };
            for statement in m.statements {
                // `query_raw`: DDL text is sent as is (no `?` binding).
                self.client.query_raw(&self.ddl(statement)).execute().await.map_err(fail)?;
            }
            for c in m.columns {
                if self.has_column(c.table, c.name).await? {
                    continue;
                }
                let alter = format!(
                    "ALTER TABLE {} ADD COLUMN `{}` {} AFTER `{}`",
                    self.table(c.table),
                    c.name,
                    c.definition,
                    c.after
                );
                if let Err(e) = self.client.query_raw(&alter).execute().await {
                    // Another instance may have added it in the meantime.
                    if !self.has_column(c.table, c.name).await? {
                        return Err(fail(e));
                    }
                }
            }
            let row = MigrationRow {
                version: m.version,
                name: m.name.to_owned(),
                applied_at: (now_ms() / 1000) as u32,
            };
            let mut insert = self
                .client
                .insert_unescaped::<MigrationRow>(&self.table(MigrationRow::TABLE))
                .await
                .map_err(fail)?;
            insert.write(&row).await.map_err(fail)?;
            insert.end().await.map_err(fail)?;
            tracing::info!(database = %self.config.database, version = m.version, name = m.name, "applied migration");
            done.push(m.version);
        }
        Ok(done)
    }

    /// Checks that `T`'s table has exactly `T::COLUMNS` (name and type, in order) among its
    /// inserted columns (materialized and alias columns are not inserted and not compared).
    pub async fn check_table<T: Table>(&self) -> Result<(), Error> {
        // `system.columns.position` (ClickHouse 20.x+) gives the order explicitly; older servers
        // list a table's columns in table order, ordinary columns first.
        let has_position = self
            .client
            .query(
                "SELECT count() FROM system.columns \
                 WHERE database = 'system' AND table = 'columns' AND name = 'position'",
            )
            .fetch_one::<u64>()
            .await
            .map_err(|e| Error::query("reading system.columns", e))?
            > 0;
        let order = if has_position { " ORDER BY position" } else { "" };
        let sql = format!(
            "SELECT name, type FROM system.columns WHERE database = ? AND table = ? \
             AND default_kind NOT IN ('MATERIALIZED', 'ALIAS'){order}"
        );
        let found = self
            .client
            .query(&sql)
            .bind(&self.config.database)
            .bind(T::TABLE)
            .fetch_all::<(String, String)>()
            .await
            .map_err(|e| Error::query("reading system.columns", e))?;
        if found.is_empty() {
            return Err(Error::MissingTable {
                database: self.config.database.clone(),
                table: T::TABLE,
            });
        }
        compare_columns(T::TABLE, T::COLUMNS, &found)
    }

    /// Whether a table of this database has a column.
    async fn has_column(&self, table: &str, column: &str) -> Result<bool, Error> {
        let n = self
            .client
            .query(
                "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(&self.config.database)
            .bind(table)
            .bind(column)
            .fetch_one::<u64>()
            .await
            .map_err(|e| Error::query("reading system.columns", e))?;
        Ok(n > 0)
    }

    /// Checks every table of the output contract (see [`Store::check_table`]).
    pub async fn check_schema(&self) -> Result<(), Error> {
        self.check_table::<PaneStatsRow>().await?;
        self.check_table::<PaneBinsRow>().await?;
        self.check_table::<WindowStatsRow>().await?;
        self.check_table::<MetricStatsRow>().await?;
        self.check_table::<DriftLayoutRow>().await?;
        self.check_table::<DriftReferenceRow>().await?;
        self.check_table::<DriftScoreRow>().await?;
        self.check_table::<CanaryVerdictRow>().await?;
        self.check_table::<AlertRow>().await?;
        self.check_table::<SilenceRow>().await?;
        self.check_table::<CheckpointRow>().await?;
        self.check_table::<CounterSeriesRow>().await?;
        Ok(())
    }

    /// A writer, after [`Store::check_schema`] passed: it refuses to exist on a mismatch.
    pub async fn writer(&self) -> Result<Writer, Error> {
        self.check_schema().await?;
        Ok(self.writer_unchecked())
    }

    /// A writer without the schema check (for tests of the check itself and of error paths).
    #[doc(hidden)]
    pub fn writer_unchecked(&self) -> Writer {
        Writer {
            client: self.client.clone(),
            database: self.config.database.clone(),
            config: self.config.writer,
        }
    }

    /// Every row of `T`'s table after `FINAL` (one per key), ordered by the key.
    pub async fn read_all<T: Table>(&self) -> Result<Vec<T>, Error> {
        let order = T::ORDER_BY.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT ?fields FROM {} FINAL ORDER BY {order}", self.table(T::TABLE));
        self.client.query(&sql).fetch_all::<T>().await.map_err(|e| Error::query("reading rows", e))
    }

    /// The latest checkpoint of every (topic, partition) of a consumer group.
    pub async fn checkpoints(&self, group: &str) -> Result<Vec<CheckpointRow>, Error> {
        let sql = format!(
            "SELECT ?fields FROM {} FINAL WHERE `group` = ? ORDER BY `topic`, `partition`",
            self.table(CheckpointRow::TABLE)
        );
        self.client
            .query(&sql)
            .bind(group)
            .fetch_all()
            .await
            .map_err(|e| Error::query("reading checkpoints", e))
    }

    /// Every frozen bin layout: (model, layout).
    pub async fn drift_layouts(&self) -> Result<Vec<(String, FrozenLayout)>, Error> {
        let rows = self.read_all::<DriftLayoutRow>().await?;
        rows.iter().map(DriftLayoutRow::to_frozen).collect()
    }

    /// Every pinned reference distribution, grouped per (model, version).
    pub async fn drift_references(&self) -> Result<Vec<ReferenceSnapshot>, Error> {
        DriftReferenceRow::into_snapshots(self.read_all::<DriftReferenceRow>().await?)
    }

    /// The last sample of every counter series.
    pub async fn counter_series(&self) -> Result<Vec<CounterSeries>, Error> {
        Ok(self.read_all::<CounterSeriesRow>().await?.iter().map(|r| r.to_series()).collect())
    }

    /// The alert log since `since_ms` (by `at_ms`), ordered by (fingerprint, seq, channel,
    /// attempt).
    pub async fn alert_log(&self, since_ms: i64) -> Result<Vec<AlertRow>, Error> {
        let sql = format!(
            "SELECT ?fields FROM {} FINAL WHERE `at_ms` >= ? \
             ORDER BY `fingerprint`, `seq`, `channel`, `attempt`",
            self.table(AlertRow::TABLE)
        );
        self.client
            .query(&sql)
            .bind(since_ms)
            .fetch_all()
            .await
            .map_err(|e| Error::query("reading the alert log", e))
    }

    /// The latest state row (highest `seq`, `channel` empty) of every fingerprint: what an
    /// instance restores its alert state machines from.
    pub async fn latest_alert_states(&self) -> Result<Vec<AlertRow>, Error> {
        let t = self.table(AlertRow::TABLE);
        let sql = format!(
            "SELECT ?fields FROM {t} FINAL WHERE `channel` = '' AND (`fingerprint`, `seq`) IN \
             (SELECT `fingerprint`, max(`seq`) FROM {t} FINAL WHERE `channel` = '' \
             GROUP BY `fingerprint`) ORDER BY `fingerprint`"
        );
        self.client
            .query(&sql)
            .fetch_all()
            .await
            .map_err(|e| Error::query("reading alert states", e))
    }

    /// Silences active at `now_ms`.
    pub async fn active_silences(&self, now_ms: i64) -> Result<Vec<SilenceRow>, Error> {
        let sql = format!(
            "SELECT ?fields FROM {} FINAL WHERE `starts_at_ms` <= ? AND `ends_at_ms` > ? \
             ORDER BY `id`",
            self.table(SilenceRow::TABLE)
        );
        self.client
            .query(&sql)
            .bind(now_ms)
            .bind(now_ms)
            .fetch_all()
            .await
            .map_err(|e| Error::query("reading silences", e))
    }

    /// The rows of the latest `cumulative` verdict of every canary pair (one `overall` row and
    /// one row per judged metric), optionally of one model, ordered by (model, baseline,
    /// canary, metric). Several pairs of one model (an older canary) all come back; callers
    /// pick by `window_end_ms`.
    pub async fn latest_canary_verdicts(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<CanaryVerdictRow>, Error> {
        let t = self.table(CanaryVerdictRow::TABLE);
        let sql = format!(
            "SELECT ?fields FROM {t} FINAL WHERE `scope` = 'cumulative' \
             AND (? = 0 OR `model` = ?) \
             AND (`model`, `baseline_version`, `canary_version`, `window_end_ms`) IN \
             (SELECT `model`, `baseline_version`, `canary_version`, max(`window_end_ms`) \
              FROM {t} FINAL WHERE `scope` = 'cumulative' AND `metric` = 'overall' \
              AND (? = 0 OR `model` = ?) \
              GROUP BY `model`, `baseline_version`, `canary_version`) \
             ORDER BY `model`, `baseline_version`, `canary_version`, `metric`"
        );
        let flag = u8::from(model.is_some());
        let m = model.unwrap_or("");
        self.client
            .query(&sql)
            .bind(flag)
            .bind(m)
            .bind(flag)
            .bind(m)
            .fetch_all()
            .await
            .map_err(|e| Error::query("reading canary verdicts", e))
    }

    /// `pane_stats` rows of one (model, version) with panes starting in `[since_ms, until_ms)`,
    /// ordered by pane start and partition.
    pub async fn pane_stats(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<PaneStatsRow>, Error> {
        self.panes_of(model, version, since_ms, until_ms, "reading pane_stats").await
    }

    /// `pane_bins` rows of one (model, version) with panes starting in `[since_ms, until_ms)`,
    /// ordered by pane start, partition, kind and feature.
    pub async fn pane_bins(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<PaneBinsRow>, Error> {
        self.panes_of(model, version, since_ms, until_ms, "reading pane_bins").await
    }

    async fn panes_of<T: Table>(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
        what: &'static str,
    ) -> Result<Vec<T>, Error> {
        let order = T::ORDER_BY.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT ?fields FROM {} FINAL WHERE `model` = ? AND `version` = ? \
             AND `pane_start_ms` >= ? AND `pane_start_ms` < ? ORDER BY {order}",
            self.table(T::TABLE)
        );
        self.client
            .query(&sql)
            .bind(model)
            .bind(version)
            .bind(since_ms)
            .bind(until_ms)
            .fetch_all()
            .await
            .map_err(|e| Error::query(what, e))
    }

    /// Cumulative merge of `pane_stats` per (model, version) over panes starting in
    /// `[since_ms, until_ms)`, optionally for one model: requests, errors, `sumMap` of the
    /// latency and time-to-first-token buckets, sums and extremes.
    pub async fn pane_totals(
        &self,
        model: Option<&str>,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<PaneTotals>, Error> {
        let sql = format!(
            "SELECT `model`, `version`, count() AS panes, min(`pane_start_ms`), \
             max(`pane_end_ms`), sum(`requests`), sum(`errors`), \
             sumMap(`latency_bucket_us`, `latency_bucket_counts`), sum(`latency_sum_us`), \
             min(`latency_min_ms`), max(`latency_max_ms`), \
             sumMap(`ttft_bucket_us`, `ttft_bucket_counts`), sum(`token_requests`), \
             sum(`tokens_in`), sum(`tokens_out`) \
             FROM {} FINAL \
             WHERE `pane_start_ms` >= ? AND `pane_start_ms` < ? AND (? = 0 OR `model` = ?) \
             GROUP BY `model`, `version` ORDER BY `model`, `version`",
            self.table(PaneStatsRow::TABLE)
        );
        self.client
            .query(&sql)
            .bind(since_ms)
            .bind(until_ms)
            .bind(u8::from(model.is_some()))
            .bind(model.unwrap_or(""))
            .fetch_all()
            .await
            .map_err(|e| Error::query("merging pane_stats", e))
    }

    /// Summed bin counts per (model, version, kind, feature) over panes starting in
    /// `[since_ms, until_ms)`, optionally for one model.
    pub async fn bin_totals(
        &self,
        model: Option<&str>,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<BinTotals>, Error> {
        let sql = format!(
            "SELECT `model`, `version`, `kind`, `feature`, count() AS panes, \
             sumForEach(`bin_counts`) \
             FROM {} FINAL \
             WHERE `pane_start_ms` >= ? AND `pane_start_ms` < ? AND (? = 0 OR `model` = ?) \
             GROUP BY `model`, `version`, `kind`, `feature` \
             ORDER BY `model`, `version`, `kind`, `feature`",
            self.table(PaneBinsRow::TABLE)
        );
        self.client
            .query(&sql)
            .bind(since_ms)
            .bind(until_ms)
            .bind(u8::from(model.is_some()))
            .bind(model.unwrap_or(""))
            .fetch_all()
            .await
            .map_err(|e| Error::query("merging pane_bins", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        for ok in ["modelwatch", "mw_test_123", "_x"] {
            assert!(StoreConfig::new("http://x").with_database(ok).validate().is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "a.b", "a`b", "ä"] {
            assert!(StoreConfig::new("http://x").with_database(bad).validate().is_err(), "{bad}");
        }
    }
}
