//! Where `modelwatch run` keeps what it computes: ClickHouse (the history, shared by every
//! instance), or, where no ClickHouse can be had (`modelwatch demo` on a bare machine), the
//! process's memory.
//!
//! [`MemoryHistory`] stands in for the tables the running pipeline reads back: the latest
//! window and drift rows of every version (the demo's progress view), the pane rows of the
//! models of `[[canary]]` pairs (the judge's rebuild after a dropped hand-over), the latest
//! cumulative verdicts (the canary API and the judge), the `alerts` log and the silences. It
//! reads like the tables with `FINAL`: a row written again under the same key replaces the
//! earlier one. Nothing survives the process: no checkpoints, layouts or references are kept,
//! so a restart begins afresh from the consumer group's committed offsets.
//!
//! Memory is bounded: pane rows are kept for [`PANE_RETENTION_MS`] of event time behind the
//! newest pane, and the alert log for its newest [`ALERT_ROWS`] rows.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use modelwatch_clickhouse::rows::{
    AlertRow, CanaryVerdictRow, DriftScoreRow, PaneBinsRow, PaneStatsRow, SilenceRow,
    WindowStatsRow,
};
use modelwatch_clickhouse::{Store, Writer};
use modelwatch_engine::{Flush, Sink, SinkError};
use modelwatch_judge::ArmCounts;

use crate::alerting::AlertStore;
use crate::judging::{JudgedPair, VerdictStore};

/// Pane rows older than this much event time behind the newest pane are forgotten.
pub const PANE_RETENTION_MS: i64 = 24 * 3_600_000;
/// Rows of the alert log kept (the oldest go first).
pub const ALERT_ROWS: usize = 100_000;

/// The store behind the API's reads and writes.
#[allow(clippy::large_enum_variant, reason = "one per process, cloned rarely")]
#[derive(Debug, Clone)]
pub enum History {
    /// The ClickHouse tables.
    ClickHouse {
        /// Queries.
        store: Store,
        /// Inserts.
        writer: Writer,
    },
    /// No ClickHouse: this process's memory.
    Memory(Arc<MemoryHistory>),
}

impl History {
    /// The rows of the latest cumulative verdict of every pair (optionally of one model), as
    /// [`Store::latest_canary_verdicts`] returns them.
    pub async fn latest_canary_verdicts(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<CanaryVerdictRow>, modelwatch_clickhouse::Error> {
        match self {
            Self::ClickHouse { store, .. } => store.latest_canary_verdicts(model).await,
            Self::Memory(m) => Ok(m.latest_verdicts(model)),
        }
    }

    /// Writes silence rows.
    pub async fn write_silences(
        &self,
        rows: &[SilenceRow],
    ) -> Result<(), modelwatch_clickhouse::Error> {
        match self {
            Self::ClickHouse { writer, .. } => writer.insert(rows).await.map(drop),
            Self::Memory(m) => {
                m.add_silences(rows);
                Ok(())
            }
        }
    }

    /// Every silence row (the latest of each id).
    pub async fn silences(&self) -> Result<Vec<SilenceRow>, modelwatch_clickhouse::Error> {
        match self {
            Self::ClickHouse { store, .. } => store.read_all::<SilenceRow>().await,
            Self::Memory(m) => Ok(m.lock().silences.values().cloned().collect()),
        }
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::ClickHouse { .. } => "ClickHouse",
            Self::Memory(_) => "memory (no history is kept)",
        }
    }
}

type VersionKey = (String, String);
/// (model, version, pane start, source partition).
type PaneKey = (String, String, i64, u32);

/// The tables the running pipeline reads back, in memory. See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    tables: Mutex<Tables>,
    /// Models whose pane rows are kept (those of `[[canary]]` pairs).
    pane_models: HashSet<String>,
}

#[derive(Debug, Default)]
struct Tables {
    /// Requests of every pane row written (the progress view's total).
    requests: u64,
    windows: BTreeMap<VersionKey, WindowStatsRow>,
    /// The latest row of every (model, version, reference, kind, feature).
    drift: BTreeMap<(String, String, String, String, String), DriftScoreRow>,
    pane_stats: BTreeMap<PaneKey, PaneStatsRow>,
    /// Keyed by the pane and then (kind, feature).
    pane_bins: BTreeMap<(PaneKey, String, String), PaneBinsRow>,
    newest_pane_ms: i64,
    /// Cumulative verdict rows by (model, baseline, canary, window end, metric).
    verdicts: BTreeMap<(String, String, String, i64, String), CanaryVerdictRow>,
    /// Keyed like the table: (fingerprint, seq, channel, attempt).
    alerts: BTreeMap<(String, u64, String, u32), AlertRow>,
    silences: BTreeMap<String, SilenceRow>,
}

fn pane_key(model: &str, version: &str, start: i64, partition: u32) -> PaneKey {
    (model.to_owned(), version.to_owned(), start, partition)
}

impl MemoryHistory {
    /// An empty history that keeps the pane rows of `pane_models` (the judged models).
    pub fn new(pane_models: impl IntoIterator<Item = String>) -> Self {
        Self { tables: Mutex::default(), pane_models: pane_models.into_iter().collect() }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the data rows of a flush (checkpoints, layouts, references and counter series
    /// are not kept).
    pub fn add_flush(&self, f: &Flush) {
        let mut t = self.lock();
        t.requests += f.rows.pane_stats.iter().map(|p| p.requests).sum::<u64>();
        for w in &f.rows.window_stats {
            let key = (w.model.clone(), w.version.clone());
            if t.windows.get(&key).is_none_or(|old| old.window_end_ms <= w.window_end_ms) {
                t.windows.insert(key, w.clone());
            }
        }
        for d in &f.rows.drift_scores {
            let key = (
                d.model.clone(),
                d.version.clone(),
                d.reference.clone(),
                d.kind.clone(),
                d.feature.clone(),
            );
            if t.drift.get(&key).is_none_or(|old| old.window_end_ms <= d.window_end_ms) {
                t.drift.insert(key, d.clone());
            }
        }
        drop(t);
        self.add_panes(
            f.rows.pane_stats.iter().filter(|p| self.pane_models.contains(&p.model)),
            f.rows.pane_bins.iter().filter(|b| self.pane_models.contains(&b.model)),
        );
    }

    /// Keeps pane rows (of any model), forgetting those past the retention.
    pub fn add_panes<'a>(
        &self,
        stats: impl IntoIterator<Item = &'a PaneStatsRow>,
        bins: impl IntoIterator<Item = &'a PaneBinsRow>,
    ) {
        let mut t = self.lock();
        for s in stats {
            t.newest_pane_ms = t.newest_pane_ms.max(s.pane_start_ms);
            let key = pane_key(&s.model, &s.version, s.pane_start_ms, s.source_partition);
            t.pane_stats.insert(key, s.clone());
        }
        for b in bins {
            let key = pane_key(&b.model, &b.version, b.pane_start_ms, b.source_partition);
            t.pane_bins.insert((key, b.kind.clone(), b.feature.clone()), b.clone());
        }
        let horizon = t.newest_pane_ms.saturating_sub(PANE_RETENTION_MS);
        t.pane_stats.retain(|k, _| k.2 >= horizon);
        t.pane_bins.retain(|k, _| k.0.2 >= horizon);
    }

    /// Requests of every pane written so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The latest window row of every version, by (model, version).
    pub fn latest_windows(&self) -> Vec<WindowStatsRow> {
        self.lock().windows.values().cloned().collect()
    }

    /// The drift rows of every version's latest window (all references, kinds and features).
    pub fn latest_drift(&self) -> Vec<DriftScoreRow> {
        let t = self.lock();
        let mut newest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for d in t.drift.values() {
            let e = newest.entry((&d.model, &d.version)).or_insert(d.window_end_ms);
            *e = (*e).max(d.window_end_ms);
        }
        t.drift
            .values()
            .filter(|d| {
                newest.get(&(d.model.as_str(), d.version.as_str())) == Some(&d.window_end_ms)
            })
            .cloned()
            .collect()
    }

    /// Every cumulative verdict row kept, oldest window first.
    pub fn verdicts(&self) -> Vec<CanaryVerdictRow> {
        self.lock().verdicts.values().cloned().collect()
    }

    /// The rows of the latest cumulative verdict of every pair, optionally of one model,
    /// ordered like [`Store::latest_canary_verdicts`].
    pub fn latest_verdicts(&self, model: Option<&str>) -> Vec<CanaryVerdictRow> {
        let t = self.lock();
        // The newest window end with an `overall` row, per pair.
        let mut newest: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        for r in t.verdicts.values().filter(|r| r.metric == crate::api::OVERALL) {
            let e = newest.entry((&r.model, &r.baseline_version, &r.canary_version)).or_default();
            *e = (*e).max(r.window_end_ms);
        }
        let mut rows: Vec<CanaryVerdictRow> = t
            .verdicts
            .values()
            .filter(|r| model.is_none_or(|m| r.model == m))
            .filter(|r| {
                newest.get(&(
                    r.model.as_str(),
                    r.baseline_version.as_str(),
                    r.canary_version.as_str(),
                )) == Some(&r.window_end_ms)
            })
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            (&a.model, &a.baseline_version, &a.canary_version, &a.metric).cmp(&(
                &b.model,
                &b.baseline_version,
                &b.canary_version,
                &b.metric,
            ))
        });
        rows
    }

    /// Every row of the alert log kept, in key order.
    pub fn alert_rows(&self) -> Vec<AlertRow> {
        self.lock().alerts.values().cloned().collect()
    }

    fn add_silences(&self, rows: &[SilenceRow]) {
        let mut t = self.lock();
        for r in rows {
            t.silences.insert(r.id.clone(), r.clone());
        }
    }
}

impl AlertStore for MemoryHistory {
    fn write(&self, rows: &[AlertRow]) -> anyhow::Result<()> {
        let mut t = self.lock();
        for r in rows {
            let key = (r.fingerprint.clone(), r.seq, r.channel.clone(), r.attempt);
            t.alerts.insert(key, r.clone());
        }
        while t.alerts.len() > ALERT_ROWS {
            let oldest = t
                .alerts
                .values()
                .min_by_key(|r| r.at_ms)
                .map(|r| (r.fingerprint.clone(), r.seq, r.channel.clone(), r.attempt));
            if let Some(k) = oldest {
                t.alerts.remove(&k);
            }
        }
        Ok(())
    }

    fn latest_states(&self) -> anyhow::Result<Vec<AlertRow>> {
        let t = self.lock();
        let mut latest: BTreeMap<&str, &AlertRow> = BTreeMap::new();
        for r in t.alerts.values().filter(|r| r.channel.is_empty()) {
            if latest.get(r.fingerprint.as_str()).is_none_or(|l| l.seq < r.seq) {
                latest.insert(&r.fingerprint, r);
            }
        }
        Ok(latest.into_values().cloned().collect())
    }

    fn log_since(&self, since_ms: i64) -> anyhow::Result<Vec<AlertRow>> {
        Ok(self.lock().alerts.values().filter(|r| r.at_ms >= since_ms).cloned().collect())
    }

    fn active_silences(&self, now_ms: i64) -> anyhow::Result<Vec<SilenceRow>> {
        Ok(self
            .lock()
            .silences
            .values()
            .filter(|s| s.starts_at_ms <= now_ms && s.ends_at_ms > now_ms)
            .cloned()
            .collect())
    }
}

impl VerdictStore for MemoryHistory {
    fn write(&self, rows: &[CanaryVerdictRow]) -> anyhow::Result<()> {
        let mut t = self.lock();
        for r in rows.iter().filter(|r| r.scope == "cumulative") {
            let key = (
                r.model.clone(),
                r.baseline_version.clone(),
                r.canary_version.clone(),
                r.window_end_ms,
                r.metric.clone(),
            );
            t.verdicts.insert(key, r.clone());
        }
        // Only the latest verdict of a pair is ever read back.
        let mut newest: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for k in t.verdicts.keys() {
            let e = newest.entry((k.0.clone(), k.1.clone(), k.2.clone())).or_insert(k.3);
            *e = (*e).max(k.3);
        }
        t.verdicts
            .retain(|k, _| newest.get(&(k.0.clone(), k.1.clone(), k.2.clone())) == Some(&k.3));
        Ok(())
    }

    fn latest(&self, pair: &JudgedPair) -> anyhow::Result<Vec<CanaryVerdictRow>> {
        Ok(self
            .latest_verdicts(Some(&pair.model))
            .into_iter()
            .filter(|r| pair.judged_in(r))
            .collect())
    }

    fn totals(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> anyhow::Result<ArmCounts> {
        let (stats, bins) = self.panes(model, version, since_ms, until_ms)?;
        let mut c = ArmCounts::default();
        for s in &stats {
            let of_pane = bins.iter().filter(|b| {
                (b.pane_start_ms, b.source_partition) == (s.pane_start_ms, s.source_partition)
            });
            c.add(&crate::judging::counts_of(s, of_pane));
        }
        Ok(c)
    }

    fn panes(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> anyhow::Result<(Vec<PaneStatsRow>, Vec<PaneBinsRow>)> {
        let t = self.lock();
        let (from, to) = (since_ms.max(i64::MIN + 1), until_ms.max(since_ms));
        let range = pane_key(model, version, from, 0)..pane_key(model, version, to, 0);
        let stats: Vec<PaneStatsRow> =
            t.pane_stats.range(range.clone()).map(|(_, s)| s.clone()).collect();
        let bins: Vec<PaneBinsRow> = t
            .pane_bins
            .range(
                (range.start, String::new(), String::new())
                    ..(range.end, String::new(), String::new()),
            )
            .map(|(_, b)| b.clone())
            .collect();
        Ok((stats, bins))
    }
}

/// The engine's sink when there is no ClickHouse: every flush into a [`MemoryHistory`].
#[derive(Debug, Clone)]
pub struct MemorySink(pub Arc<MemoryHistory>);

impl Sink for MemorySink {
    async fn write(&mut self, flush: &Flush) -> Result<(), SinkError> {
        self.0.add_flush(flush);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::api::OVERALL;
    use crate::api::tests::row;
    use crate::judging::tests::pane;

    #[test]
    fn the_latest_verdict_of_each_pair_is_read_back_and_older_ones_forgotten() {
        let m = MemoryHistory::default();
        VerdictStore::write(&m, &[row("a", "v2", 1000, "latency", "continue")]).unwrap();
        VerdictStore::write(&m, &[row("a", "v2", 1000, OVERALL, "continue")]).unwrap();
        VerdictStore::write(
            &m,
            &[
                row("a", "v2", 2000, "latency", "rollback"),
                row("a", "v2", 2000, OVERALL, "rollback"),
            ],
        )
        .unwrap();
        VerdictStore::write(&m, &[row("b", "v7", 500, OVERALL, "promote")]).unwrap();
        let all = m.latest_verdicts(None);
        let got: Vec<(&str, i64, &str)> =
            all.iter().map(|r| (r.model.as_str(), r.window_end_ms, r.metric.as_str())).collect();
        assert_eq!(got, [("a", 2000, "latency"), ("a", 2000, OVERALL), ("b", 500, OVERALL)]);
        assert_eq!(m.latest_verdicts(Some("b")).len(), 1);
        assert_eq!(m.verdicts().len(), 3, "the window of 1000 is no longer kept");
        let pair = JudgedPair {
            model: "a".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            expected_share: None,
        };
        assert_eq!(VerdictStore::latest(&m, &pair).unwrap().len(), 2);
        let other = JudgedPair { canary: "v3".into(), ..pair };
        assert!(VerdictStore::latest(&m, &other).unwrap().is_empty());
    }

    #[test]
    fn panes_are_read_by_range_once_per_key_and_forgotten_past_the_retention() {
        let m = MemoryHistory::default();
        let rows: Vec<PaneStatsRow> =
            (0..4).flat_map(|i| (0..2).map(move |p| pane("v1", i * 5_000, p, 10, false))).collect();
        m.add_panes(&rows, []);
        m.add_panes(&rows[2..4], []); // written again: replaces, never adds
        let (stats, _) = m.panes("m", "v1", 5_000, 15_000).unwrap();
        assert_eq!(stats.len(), 4);
        assert_eq!(m.totals("m", "v1", 0, i64::MAX).unwrap().requests, 80);
        assert_eq!(m.totals("m", "v2", 0, i64::MAX).unwrap().requests, 0);
        assert!(m.panes("m", "v1", 20_000, 0).unwrap().0.is_empty());
        // A pane a day later: the old ones go.
        m.add_panes(&[pane("v1", PANE_RETENTION_MS + 15_000, 0, 1, false)], []);
        assert_eq!(m.totals("m", "v1", 0, i64::MAX).unwrap().requests, 21, "15,000 is kept");
        m.add_panes(&[pane("v1", PANE_RETENTION_MS + 20_000, 0, 1, false)], []);
        assert_eq!(m.totals("m", "v1", 0, i64::MAX).unwrap().requests, 2);
    }

    #[test]
    fn alert_states_and_silences_read_like_the_tables() {
        let m = MemoryHistory::default();
        let api = History::Memory(Arc::new(MemoryHistory::default()));
        let silence = SilenceRow {
            id: "s1".into(),
            matchers: "{}".into(),
            starts_at_ms: 100,
            ends_at_ms: 200,
            created_by: "t".into(),
            comment: String::new(),
            written_at_ms: 1,
        };
        futures_executor::block_on(api.write_silences(std::slice::from_ref(&silence))).unwrap();
        let ended = SilenceRow { ends_at_ms: 150, written_at_ms: 2, ..silence.clone() };
        futures_executor::block_on(api.write_silences(&[ended])).unwrap();
        let all = futures_executor::block_on(api.silences()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].ends_at_ms, 150, "the latest row of an id wins");
        m.add_silences(&[silence]);
        assert_eq!(m.active_silences(150).unwrap().len(), 1);
        assert!(m.active_silences(200).unwrap().is_empty());
        assert!(m.active_silences(99).unwrap().is_empty());
    }
}
