//! The canary judge of `modelwatch run`: the pane rows of every canary pair's two versions
//! through [`PairJudge`], its verdicts to the `canary_verdicts` table, then on to the alert
//! worker (whose rules may fire on decisions).
//!
//! Data flow: the engine's sink task hands the rows of every flush ClickHouse acknowledged to
//! this worker (pane rows only of the models of `[[canary]]` pairs); the worker feeds the panes
//! to the pair's judge, and judges a window end once both versions closed it (or one version
//! moved past it without the other: no data for that side). Verdict rows are written, with
//! retries, before they are forwarded, so the HTTP gate, which reads ClickHouse, never sees a
//! decision the table does not have.
//!
//! State that survives a restart: the cumulative counts are sums of the pane rows in
//! ClickHouse, and the sequential tests' state is in the latest cumulative verdict's `overall`
//! row (`evidence.state`). On start, whenever a flush was dropped on the way here (the queue was
//! full), and when a pair's windows reach this instance for the first time since the start or
//! since its partition was revoked ([`WrittenWindows::released`]: another instance may have
//! judged it meanwhile), the pair is rebuilt from those: the judge is restored to its last
//! verdict, then every pane after it is read back from ClickHouse. Pane pieces are keyed by (version,
//! pane start, source partition), so a pane read back and received again counts once.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use modelwatch_clickhouse::rows::{CanaryVerdictRow, PaneBinsRow, PaneStatsRow};
use modelwatch_engine::WrittenWindows;
use modelwatch_judge::{Arm, ArmCounts, JudgeSpec, JudgeState, PairJudge, Scope, Verdict};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::alerting::retry_io;
use crate::api::OVERALL;

/// Flushes that may wait for the judge (one per `pipeline.flush_interval`).
pub const QUEUE_FLUSHES: usize = 64;

/// A canary pair as the judge sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedPair {
    /// The model.
    pub model: String,
    /// The baseline version.
    pub baseline: String,
    /// The canary version.
    pub canary: String,
    /// The canary's expected share of the model's requests, for the sample-ratio check.
    pub expected_share: Option<f64>,
}

impl JudgedPair {
    /// Whether a verdict row is of this pair (its model, baseline and canary).
    pub fn judged_in(&self, r: &CanaryVerdictRow) -> bool {
        r.model == self.model
            && r.baseline_version == self.baseline
            && r.canary_version == self.canary
    }
}

/// What the worker reads from and writes to.
pub trait VerdictStore: Send + Sync + 'static {
    /// Appends verdict rows.
    fn write(&self, rows: &[CanaryVerdictRow]) -> anyhow::Result<()>;
    /// The rows of the pair's latest cumulative verdict (empty when it has none).
    fn latest(&self, pair: &JudgedPair) -> anyhow::Result<Vec<CanaryVerdictRow>>;
    /// The sum of one version's panes starting in `[since_ms, until_ms)`.
    fn totals(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> anyhow::Result<ArmCounts>;
    /// One version's pane rows (and their bins) with panes starting in `[since_ms, until_ms)`.
    fn panes(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> anyhow::Result<(Vec<PaneStatsRow>, Vec<PaneBinsRow>)>;
}

/// The ClickHouse tables through the store of `modelwatch run`.
#[derive(Debug, Clone)]
pub struct ClickHouseVerdictStore {
    store: modelwatch_clickhouse::Store,
    writer: modelwatch_clickhouse::Writer,
    rt: tokio::runtime::Handle,
}

impl ClickHouseVerdictStore {
    /// Queries run on `rt` (blocking the calling thread, never a runtime worker).
    pub fn new(
        store: modelwatch_clickhouse::Store,
        writer: modelwatch_clickhouse::Writer,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Self { store, writer, rt }
    }
}

impl VerdictStore for ClickHouseVerdictStore {
    fn write(&self, rows: &[CanaryVerdictRow]) -> anyhow::Result<()> {
        self.rt.block_on(self.writer.insert(rows)).context("writing canary verdicts")?;
        Ok(())
    }
    fn latest(&self, pair: &JudgedPair) -> anyhow::Result<Vec<CanaryVerdictRow>> {
        let rows = self.rt.block_on(self.store.latest_canary_verdicts(Some(&pair.model)))?;
        Ok(rows.into_iter().filter(|r| pair.judged_in(r)).collect())
    }
    fn totals(
        &self,
        model: &str,
        version: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> anyhow::Result<ArmCounts> {
        let panes = self.rt.block_on(self.store.pane_totals(Some(model), since_ms, until_ms))?;
        let bins = self.rt.block_on(self.store.bin_totals(Some(model), since_ms, until_ms))?;
        let mut c = ArmCounts::default();
        if let Some(p) = panes.iter().find(|p| p.version == version) {
            c.requests = p.requests;
            c.errors = p.errors;
            c.latency = p.latency.0.iter().copied().zip(p.latency.1.iter().copied()).collect();
        }
        for b in bins.into_iter().filter(|b| b.version == version) {
            c.bins.insert((b.kind, b.feature), b.counts);
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
        let stats = self.rt.block_on(self.store.pane_stats(model, version, since_ms, until_ms))?;
        let bins = self.rt.block_on(self.store.pane_bins(model, version, since_ms, until_ms))?;
        Ok((stats, bins))
    }
}

/// The judge's metrics.
#[derive(Debug, Default)]
pub struct JudgeMetrics {
    verdicts: Family<DecisionLabels, Counter>,
    rebuilds: Counter,
    forward_dropped: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DecisionLabels {
    model: String,
    scope: &'static str,
    decision: &'static str,
}

impl JudgeMetrics {
    /// Registers the metrics.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "modelwatch_canary_verdicts",
            "Canary verdicts written, per model, scope and decision",
            self.verdicts.clone(),
        );
        r.register(
            "modelwatch_canary_rebuilds",
            "Canary judges rebuilt from ClickHouse (on start, and after a dropped flush)",
            self.rebuilds.clone(),
        );
        r.register(
            "modelwatch_canary_forward_dropped",
            "Flushes the canary judge could not hand on to the alert worker (its queue was full)",
            self.forward_dropped.clone(),
        );
    }
}

/// What the worker needs besides the pairs.
pub struct JudgeContext {
    /// The judge settings.
    pub spec: Arc<JudgeSpec>,
    /// The window length in ms.
    pub window_ms: i64,
    /// Where verdicts go.
    pub store: Arc<dyn VerdictStore>,
    /// The alert worker's queue, if alerting is on: every flush is forwarded with the verdicts.
    pub forward: Option<SyncSender<WrittenWindows>>,
    /// Flushes the engine dropped because this worker's queue was full (a counter).
    pub dropped: Box<dyn Fn() -> u64 + Send>,
    /// Metrics.
    pub metrics: Arc<JudgeMetrics>,
    /// Set on shutdown: writes stop retrying.
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for JudgeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeContext")
            .field("spec", &self.spec)
            .field("window_ms", &self.window_ms)
            .field("forward", &self.forward.is_some())
            .finish_non_exhaustive()
    }
}

/// The running judge thread.
#[derive(Debug)]
pub struct JudgeWorker {
    thread: JoinHandle<()>,
}

impl JudgeWorker {
    /// Waits until the worker has judged and written what it was handed.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the canary judge panicked");
        }
    }
}

/// Starts the worker, rebuilding every pair from ClickHouse first; returns the queue the
/// engine hands written flushes to.
pub fn start(
    pairs: &[JudgedPair],
    ctx: JudgeContext,
) -> anyhow::Result<(SyncSender<WrittenWindows>, JudgeWorker)> {
    let mut worker = Worker {
        pairs: pairs
            .iter()
            .map(|p| PairState::new(p.clone(), Arc::clone(&ctx.spec), ctx.window_ms))
            .collect(),
        owned: vec![false; pairs.len()],
        last_dropped: (ctx.dropped)(),
        ctx,
    };
    worker.rebuild_all()?;
    let (tx, rx) = mpsc::sync_channel::<WrittenWindows>(QUEUE_FLUSHES);
    let thread = std::thread::Builder::new()
        .name("modelwatch-judge".into())
        .spawn(move || worker.run(rx))
        .context("starting the canary judge")?;
    Ok((tx, JudgeWorker { thread }))
}

/// Key of one piece of a pane: (arm, pane start, source partition).
type PieceKey = (u8, i64, u32);

struct PairState {
    pair: JudgedPair,
    judge: PairJudge,
    /// Window ends each arm closed that are not judged yet.
    ends: [BTreeSet<i64>; 2],
    /// The latest window end each arm closed.
    max_end: [Option<i64>; 2],
    /// Pane pieces added since the last judged end.
    seen: HashSet<PieceKey>,
    spec: Arc<JudgeSpec>,
    window_ms: i64,
}

fn arm_index(arm: Arm) -> usize {
    match arm {
        Arm::Baseline => 0,
        Arm::Canary => 1,
    }
}

impl PairState {
    fn new(pair: JudgedPair, spec: Arc<JudgeSpec>, window_ms: i64) -> Self {
        Self {
            judge: PairJudge::new(Arc::clone(&spec), pair.expected_share, window_ms),
            pair,
            ends: [BTreeSet::new(), BTreeSet::new()],
            max_end: [None, None],
            seen: HashSet::new(),
            spec,
            window_ms,
        }
    }

    fn arm_of(&self, model: &str, version: &str) -> Option<Arm> {
        if model != self.pair.model {
            None
        } else if version == self.pair.baseline {
            Some(Arm::Baseline)
        } else if version == self.pair.canary {
            Some(Arm::Canary)
        } else {
            None
        }
    }

    fn version(&self, arm: Arm) -> &str {
        match arm {
            Arm::Baseline => &self.pair.baseline,
            Arm::Canary => &self.pair.canary,
        }
    }

    /// Adds pane rows of this pair (others are ignored), each piece once.
    fn add_panes(&mut self, stats: &[PaneStatsRow], bins: &[PaneBinsRow]) {
        let mut bins_of: BTreeMap<(&str, i64, u32), Vec<&PaneBinsRow>> = BTreeMap::new();
        for b in bins {
            bins_of.entry((&b.version, b.pane_start_ms, b.source_partition)).or_default().push(b);
        }
        for s in stats {
            let Some(arm) = self.arm_of(&s.model, &s.version) else { continue };
            if self.judge.last_end_ms().is_some_and(|last| s.pane_end_ms <= last) {
                continue;
            }
            let key = (arm_index(arm) as u8, s.pane_start_ms, s.source_partition);
            if !self.seen.insert(key) {
                continue;
            }
            let c = counts_of(
                s,
                bins_of
                    .get(&(s.version.as_str(), s.pane_start_ms, s.source_partition))
                    .into_iter()
                    .flatten()
                    .copied(),
            );
            self.judge.add_pane(arm, s.pane_start_ms, s.pane_end_ms, &c);
        }
    }

    fn window_closed(&mut self, arm: Arm, end_ms: i64) {
        if self.judge.last_end_ms().is_some_and(|last| end_ms <= last) {
            return;
        }
        let i = arm_index(arm);
        self.ends[i].insert(end_ms);
        self.max_end[i] = self.max_end[i].max(Some(end_ms));
    }

    /// Judges every end that can be judged now, in order; each cumulative verdict comes with
    /// the judge's state right after it.
    fn judge_ready(&mut self) -> Vec<(Verdict, Option<JudgeState>)> {
        let mut out = Vec::new();
        let candidates: BTreeSet<i64> = self.ends[0].union(&self.ends[1]).copied().collect();
        for end in candidates {
            let have = [self.ends[0].contains(&end), self.ends[1].contains(&end)];
            let ready = match have {
                [true, true] => true,
                [true, false] | [false, true] => {
                    let other = usize::from(have[0]);
                    match self.max_end[other] {
                        // The other side moved past this end without closing it, or has been
                        // silent for a whole window: no data on that side.
                        Some(m) => m > end || end > m + self.window_ms,
                        // A canary never seen: nothing to judge yet.
                        None => other == 0,
                    }
                }
                [false, false] => false,
            };
            if !ready {
                if self.max_end[1].is_none() {
                    self.ends[0].remove(&end);
                    continue;
                }
                break;
            }
            for v in self.judge.evaluate(end) {
                let state = (v.scope == Scope::Cumulative).then(|| self.judge.state());
                out.push((v, state));
            }
            self.ends[0].remove(&end);
            self.ends[1].remove(&end);
            // Pieces of panes up to the judged end are ignored from now on by their end.
            self.seen.retain(|&(_, start, _)| start >= end);
        }
        out
    }

    /// The rows of a verdict: one per metric and an `overall` row carrying the decision, the
    /// reason and, for the cumulative scope, the judge's state.
    fn rows(
        &self,
        v: &Verdict,
        state: Option<&JudgeState>,
        written_at_ms: u64,
    ) -> Vec<CanaryVerdictRow> {
        let scope = v.scope.as_str().to_owned();
        let decision = v.decision.as_str().to_owned();
        let base = |metric: &str| CanaryVerdictRow {
            model: self.pair.model.clone(),
            baseline_version: self.pair.baseline.clone(),
            canary_version: self.pair.canary.clone(),
            scope: scope.clone(),
            window_end_ms: v.end_ms,
            metric: metric.to_owned(),
            classification: String::new(),
            statistic: None,
            p_value: None,
            effect: None,
            n_baseline: 0,
            n_canary: 0,
            threshold: None,
            score: Some(v.score),
            decision: decision.clone(),
            evidence: "{}".to_owned(),
            written_at_ms,
        };
        let mut rows: Vec<CanaryVerdictRow> = v
            .metrics
            .iter()
            .map(|m| CanaryVerdictRow {
                classification: m.classification.as_str().to_owned(),
                statistic: m.statistic.filter(|x| x.is_finite()),
                p_value: m.p_value.filter(|x| x.is_finite()),
                effect: m.effect.filter(|x| x.is_finite()),
                n_baseline: m.n_baseline,
                n_canary: m.n_canary,
                threshold: m.threshold.filter(|x| x.is_finite()),
                evidence: json!({"critical": m.critical, "weight": m.weight, "detail": m.evidence})
                    .to_string(),
                ..base(&m.metric)
            })
            .collect();
        let n = |arm: Arm| {
            v.metrics
                .iter()
                .map(|m| if arm == Arm::Baseline { m.n_baseline } else { m.n_canary })
                .max()
                .unwrap_or(0)
        };
        let mut evidence = json!({
            "reason": v.reason,
            "samples_needed": v.samples_needed,
            "start_ms": v.start_ms,
        });
        if let Some(state) = state {
            evidence["state"] = serde_json::to_value(state).unwrap_or_default();
        }
        rows.push(CanaryVerdictRow {
            classification: String::new(),
            n_baseline: n(Arm::Baseline),
            n_canary: n(Arm::Canary),
            evidence: evidence.to_string(),
            ..base(OVERALL)
        });
        rows
    }

    /// Rebuilds the judge from ClickHouse: restored to the last cumulative verdict, then every
    /// pane after it read back.
    fn rebuild(&mut self, store: &dyn VerdictStore) -> anyhow::Result<()> {
        let mut fresh = PairState::new(self.pair.clone(), Arc::clone(&self.spec), self.window_ms);
        let latest = store.latest(&self.pair)?;
        let overall = latest.iter().find(|r| r.metric == OVERALL);
        let mut since = i64::MIN / 2;
        if let Some(o) = overall {
            let evidence: serde_json::Value =
                serde_json::from_str(&o.evidence).context("the last verdict's evidence")?;
            let state: JudgeState = serde_json::from_value(evidence["state"].clone())
                .context("the last verdict's judge state")?;
            let end = o.window_end_ms;
            // The cumulative span starts at the canary's first pane (the baseline's panes
            // before it only ever fed windows).
            let start = state.first_pane_ms.unwrap_or(end);
            let b = store.totals(&self.pair.model, &self.pair.baseline, start, end)?;
            let c = store.totals(&self.pair.model, &self.pair.canary, start, end)?;
            let mut recent = Vec::new();
            for arm in [Arm::Baseline, Arm::Canary] {
                let (stats, bins) =
                    store.panes(&self.pair.model, fresh.version(arm), end - self.window_ms, end)?;
                recent.extend(pieces(&fresh, arm, &stats, &bins));
            }
            fresh.judge.restore(state, b, c, recent);
            since = end;
        }
        // The panes after the last verdict (without one: the canary's whole history, and the
        // baseline's from the canary's first pane on).
        let (stats, bins) = store.panes(&self.pair.model, &self.pair.canary, since, i64::MAX)?;
        if overall.is_none() {
            since = stats.iter().map(|s| s.pane_start_ms).min().unwrap_or(i64::MAX);
        }
        fresh.add_panes(&stats, &bins);
        let (stats, bins) = store.panes(&self.pair.model, &self.pair.baseline, since, i64::MAX)?;
        fresh.add_panes(&stats, &bins);
        // Window ends already seen stay pending; those judged by the restored state are dropped.
        for i in 0..2 {
            for &e in &self.ends[i] {
                fresh.window_closed(if i == 0 { Arm::Baseline } else { Arm::Canary }, e);
            }
            fresh.max_end[i] = fresh.max_end[i].max(self.max_end[i]);
        }
        *self = fresh;
        Ok(())
    }
}

/// The counts of one pane piece: its `pane_stats` row and its `pane_bins` rows.
pub(crate) fn counts_of<'a>(
    s: &PaneStatsRow,
    bins: impl Iterator<Item = &'a PaneBinsRow>,
) -> ArmCounts {
    ArmCounts {
        requests: s.requests,
        errors: s.errors,
        latency: s
            .latency_bucket_us
            .iter()
            .copied()
            .zip(s.latency_bucket_counts.iter().copied())
            .collect(),
        bins: bins.map(|b| ((b.kind.clone(), b.feature.clone()), b.bin_counts.clone())).collect(),
    }
}

/// Pane pieces of one arm as `restore` takes them: (arm, start, end, counts), one per pane
/// (partitions summed).
fn pieces(
    state: &PairState,
    arm: Arm,
    stats: &[PaneStatsRow],
    bins: &[PaneBinsRow],
) -> Vec<(Arm, i64, i64, ArmCounts)> {
    let mut by_pane: BTreeMap<i64, (i64, ArmCounts)> = BTreeMap::new();
    for s in stats.iter().filter(|s| state.arm_of(&s.model, &s.version) == Some(arm)) {
        let e =
            by_pane.entry(s.pane_start_ms).or_insert_with(|| (s.pane_end_ms, ArmCounts::default()));
        let c = counts_of(
            s,
            bins.iter().filter(|b| {
                b.version == s.version
                    && b.pane_start_ms == s.pane_start_ms
                    && b.source_partition == s.source_partition
            }),
        );
        e.1.add(&c);
    }
    by_pane.into_iter().map(|(start, (end, c))| (arm, start, end, c)).collect()
}

struct Worker {
    pairs: Vec<PairState>,
    /// Per pair: whether its versions' windows came here since the pair was last rebuilt.
    /// A pair whose partition moved to another instance (released) is rebuilt from the store
    /// when its windows come back, and so is every pair at its first windows after the start
    /// (another instance may have judged it since this one started).
    owned: Vec<bool>,
    last_dropped: u64,
    ctx: JudgeContext,
}

impl Worker {
    fn rebuild_all(&mut self) -> anyhow::Result<()> {
        let store = Arc::clone(&self.ctx.store);
        for p in &mut self.pairs {
            retry_io("rebuilding a canary judge from ClickHouse", &self.ctx.stop, || {
                p.rebuild(store.as_ref())
            })?;
            self.ctx.metrics.rebuilds.inc();
            tracing::info!(
                model = p.pair.model,
                canary = p.pair.canary,
                last_end_ms = p.judge.last_end_ms(),
                "canary judge restored"
            );
        }
        Ok(())
    }

    fn run(mut self, rx: Receiver<WrittenWindows>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(mut w) => {
                    let rows = self.process(&w);
                    if !rows.is_empty() {
                        let store = Arc::clone(&self.ctx.store);
                        if let Err(e) = retry_io("writing canary verdicts", &self.ctx.stop, || {
                            store.write(&rows)
                        }) {
                            tracing::error!(error = %format!("{e:#}"), "canary verdicts not written");
                        }
                    }
                    w.canary_verdicts = rows;
                    self.forward(w);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::info!("canary judge stopped");
    }

    /// A flush handed over: rebuilds first if flushes were dropped on the way here, then
    /// judges it.
    fn process(&mut self, w: &WrittenWindows) -> Vec<CanaryVerdictRow> {
        let dropped = (self.ctx.dropped)();
        if dropped != self.last_dropped {
            self.last_dropped = dropped;
            tracing::warn!("flushes were dropped before the canary judge: rebuilding");
            if let Err(e) = self.rebuild_all() {
                tracing::error!(error = %format!("{e:#}"), "rebuilding canary judges failed");
            }
        }
        for (i, p) in self.pairs.iter_mut().enumerate() {
            if w.released.iter().any(|(m, v)| p.arm_of(m, v).is_some()) {
                self.owned[i] = false;
            }
            let arrived = w.window_stats.iter().any(|r| p.arm_of(&r.model, &r.version).is_some())
                || w.pane_stats.iter().any(|r| p.arm_of(&r.model, &r.version).is_some());
            if arrived && !self.owned[i] {
                self.owned[i] = true;
                let store = Arc::clone(&self.ctx.store);
                let rebuilt =
                    retry_io("rebuilding a canary judge from ClickHouse", &self.ctx.stop, || {
                        p.rebuild(store.as_ref())
                    });
                match rebuilt {
                    Ok(()) => {
                        self.ctx.metrics.rebuilds.inc();
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "rebuilding a canary judge failed")
                    }
                }
            }
        }
        self.observe(w)
    }

    /// Feeds a flush to the pairs and returns the rows of the verdicts it made possible.
    fn observe(&mut self, w: &WrittenWindows) -> Vec<CanaryVerdictRow> {
        let now = modelwatch_clickhouse::now_ms();
        let mut rows = Vec::new();
        for p in &mut self.pairs {
            p.add_panes(&w.pane_stats, &w.pane_bins);
            for ws in &w.window_stats {
                if let Some(arm) = p.arm_of(&ws.model, &ws.version) {
                    p.window_closed(arm, ws.window_end_ms);
                }
            }
            for (v, state) in p.judge_ready() {
                self.ctx
                    .metrics
                    .verdicts
                    .get_or_create(&DecisionLabels {
                        model: p.pair.model.clone(),
                        scope: v.scope.as_str(),
                        decision: v.decision.as_str(),
                    })
                    .inc();
                if v.scope == Scope::Cumulative {
                    tracing::debug!(
                        model = p.pair.model,
                        decision = v.decision.as_str(),
                        end_ms = v.end_ms,
                        "canary verdict"
                    );
                }
                rows.extend(p.rows(&v, state.as_ref(), now));
            }
        }
        rows
    }

    fn forward(&self, w: WrittenWindows) {
        let Some(tx) = &self.ctx.forward else { return };
        match tx.try_send(w) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.ctx.metrics.forward_dropped.inc();
                tracing::warn!(
                    "the alert worker is behind: the windows of this flush are not evaluated"
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use modelwatch_clickhouse::rows::WindowStatsRow;

    use super::*;

    const SLIDE: i64 = 5_000;
    const WINDOW: i64 = 30_000;

    /// Every verdict row written, in order (to count how often an end was judged), over the
    /// in-memory tables the judge reads back.
    #[derive(Default)]
    struct MemStore {
        verdicts: Mutex<Vec<CanaryVerdictRow>>,
        tables: crate::history::MemoryHistory,
    }

    impl VerdictStore for MemStore {
        fn write(&self, rows: &[CanaryVerdictRow]) -> anyhow::Result<()> {
            self.verdicts.lock().unwrap().extend_from_slice(rows);
            self.tables.write(rows)
        }
        fn latest(&self, pair: &JudgedPair) -> anyhow::Result<Vec<CanaryVerdictRow>> {
            self.tables.latest(pair)
        }
        fn totals(
            &self,
            model: &str,
            version: &str,
            since_ms: i64,
            until_ms: i64,
        ) -> anyhow::Result<ArmCounts> {
            self.tables.totals(model, version, since_ms, until_ms)
        }
        fn panes(
            &self,
            model: &str,
            version: &str,
            since_ms: i64,
            until_ms: i64,
        ) -> anyhow::Result<(Vec<PaneStatsRow>, Vec<PaneBinsRow>)> {
            self.tables.panes(model, version, since_ms, until_ms)
        }
    }

    pub(crate) fn pane(
        version: &str,
        start: i64,
        partition: u32,
        requests: u64,
        slow: bool,
    ) -> PaneStatsRow {
        let bucket = if slow { 30_000 } else { 20_000 };
        PaneStatsRow {
            model: "m".into(),
            version: version.into(),
            pane_start_ms: start,
            source_partition: partition,
            pane_end_ms: start + SLIDE,
            requests,
            errors: 0,
            status_names: vec!["ok".into()],
            status_counts: vec![requests],
            latency_bucket_us: vec![bucket - 1_000, bucket, bucket + 1_000],
            latency_bucket_counts: vec![
                requests / 4,
                requests / 2,
                requests - requests / 4 - requests / 2,
            ],
            latency_sum_us: requests * u64::from(bucket),
            latency_min_ms: 19.0,
            latency_max_ms: 31.0,
            ttft_bucket_us: Vec::new(),
            ttft_bucket_counts: Vec::new(),
            ttft_max_ms: 0.0,
            token_requests: 0,
            tokens_in: 0,
            tokens_out: 0,
            written_at_ms: 0,
        }
    }

    fn window(version: &str, end: i64) -> WindowStatsRow {
        WindowStatsRow {
            model: "m".into(),
            version: version.into(),
            window_end_ms: end,
            window_start_ms: end - WINDOW,
            requests: 1,
            errors: 0,
            timeouts: 0,
            error_rate: Some(0.0),
            throughput_rps: 1.0,
            latency_p50_ms: None,
            latency_p90_ms: None,
            latency_p99_ms: None,
            latency_p999_ms: None,
            latency_max_ms: None,
            tokens_in: 0,
            tokens_out: 0,
            ttft_p50_ms: None,
            ttft_p99_ms: None,
            written_at_ms: 0,
        }
    }

    /// The flush that closes pane `i` (both versions, two partitions) and its windows; the
    /// store gets the rows first, as the sink writes before handing over.
    fn flush(store: &MemStore, i: i64, slow: bool) -> WrittenWindows {
        let start = i * SLIDE;
        let mut w = WrittenWindows::default();
        for p in 0..2 {
            w.pane_stats.push(pane("v1", start, p, 400, false));
            w.pane_stats.push(pane("v2", start, p, 100, slow));
        }
        w.window_stats = vec![window("v1", start + SLIDE), window("v2", start + SLIDE)];
        store.tables.add_panes(&w.pane_stats, []);
        w
    }

    fn worker(store: &Arc<MemStore>, dropped: &Arc<AtomicU64>) -> Worker {
        let pair = JudgedPair {
            model: "m".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            expected_share: None,
        };
        let d = Arc::clone(dropped);
        let ctx = JudgeContext {
            spec: Arc::new(JudgeSpec::default()),
            window_ms: WINDOW,
            store: Arc::clone(store) as Arc<dyn VerdictStore>,
            forward: None,
            dropped: Box::new(move || d.load(std::sync::atomic::Ordering::Relaxed)),
            metrics: Arc::new(JudgeMetrics::default()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut w = Worker {
            pairs: vec![PairState::new(pair, Arc::clone(&ctx.spec), WINDOW)],
            owned: vec![false],
            last_dropped: (ctx.dropped)(),
            ctx,
        };
        w.rebuild_all().unwrap();
        w
    }

    /// The `overall` cumulative row of the latest verdict: (end, n_canary, decision).
    fn latest(store: &MemStore) -> (i64, u64, String) {
        let v = store.verdicts.lock().unwrap();
        let r = v
            .iter()
            .filter(|r| r.scope == "cumulative" && r.metric == OVERALL)
            .max_by_key(|r| r.window_end_ms)
            .unwrap();
        (r.window_end_ms, r.n_canary, r.decision.clone())
    }

    fn feed(w: &mut Worker, store: &MemStore, flushes: impl IntoIterator<Item = WrittenWindows>) {
        for f in flushes {
            let rows = w.process(&f);
            store.write(&rows).unwrap();
        }
    }

    #[test]
    fn a_restart_and_a_replay_count_every_pane_once() {
        let store = Arc::new(MemStore::default());
        let dropped = Arc::new(AtomicU64::new(0));
        let mut w = worker(&store, &dropped);
        feed(&mut w, &store, (0..20).map(|i| flush(&store, i, false)));
        assert_eq!(latest(&store), (20 * SLIDE, 20 * 200, "continue".into()));

        // A restart: rebuilt from the store, then the replay hands over the last six panes
        // again (already written, and some already judged) before new ones.
        let mut w = worker(&store, &dropped);
        let replay: Vec<WrittenWindows> = (14..26).map(|i| flush(&store, i, false)).collect();
        // The store got the replayed rows twice and keeps one, as ClickHouse does.
        feed(&mut w, &store, replay);
        assert_eq!(latest(&store), (26 * SLIDE, 26 * 200, "continue".into()));

        // A flush dropped on the way (the engine counts it): the next flush triggers a rebuild,
        // which reads the missed panes back.
        let missed = flush(&store, 26, false);
        drop(missed);
        dropped.store(1, std::sync::atomic::Ordering::Relaxed);
        feed(&mut w, &store, [flush(&store, 27, false)]);
        assert_eq!(latest(&store), (28 * SLIDE, 28 * 200, "continue".into()));
        // Every end judged at most once; the end whose window rows were dropped is not judged
        // (its panes count in the next verdict).
        let v = store.verdicts.lock().unwrap();
        let mut ends: Vec<i64> = v
            .iter()
            .filter(|r| r.metric == OVERALL && r.scope == "cumulative")
            .map(|r| r.window_end_ms)
            .collect();
        let n = ends.len();
        ends.dedup();
        assert_eq!(n, ends.len());
        let expected: Vec<i64> = (1..=28).filter(|&i| i != 27).map(|i| i * SLIDE).collect();
        assert_eq!(ends, expected);
    }

    #[test]
    fn a_slower_canary_is_rolled_back_and_a_silent_canary_is_not_judged() {
        let store = Arc::new(MemStore::default());
        let dropped = Arc::new(AtomicU64::new(0));
        let mut w = worker(&store, &dropped);
        // Only the baseline: no verdicts at all.
        let only_baseline = |i: i64| {
            let mut f = flush(&store, i, false);
            f.pane_stats.retain(|p| p.version == "v1");
            f.window_stats.retain(|p| p.version == "v1");
            f
        };
        feed(&mut w, &store, (0..5).map(only_baseline));
        assert!(store.verdicts.lock().unwrap().is_empty());
        feed(&mut w, &store, (5..40).map(|i| flush(&store, i, true)));
        let (end, _, decision) = latest(&store);
        assert_eq!((end, decision.as_str()), (40 * SLIDE, "rollback"));
    }
}
