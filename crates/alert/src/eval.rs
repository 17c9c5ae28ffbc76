//! Rule evaluation: one state machine per (rule, model, version), driven by closed windows.
//!
//! ## States
//! `inactive -> pending -> firing -> resolved (= inactive again)`:
//! - An inactive alert whose condition holds in a window becomes **pending**, with
//!   `starts_at` = that window's end (with `for = 0` it fires at once instead).
//! - A pending alert **fires** at the first evaluated window whose end is at least `for` after
//!   `starts_at`, if the condition still holds; if the condition stops holding first, the alert
//!   goes back to **inactive** (an `inactive` event, never notified).
//! - A firing alert whose condition stops holding is **resolved** once it has not held for
//!   `keep_firing_for` (at once when that is 0). While that countdown runs the alert is still
//!   firing; the moment the countdown starts is itself an event (`firing` with `ends_at` set to
//!   the projected resolution), and so is its cancellation (`firing` with `ends_at` null), so
//!   the `alerts` log holds the complete state and a restore resumes exactly.
//!
//! Time is **event time**: the `window_end_ms` of the rows. Windows whose end is not after the
//! last evaluated end of a state machine are ignored, so a replay after a restart (see
//! [`Evaluator::restore`]) produces no duplicate transition. A window that is not evaluated
//! (`min_samples` not met, a missing value such as a latency quantile of an empty window, a
//! zero baseline of a ratio) leaves the state unchanged.
//!
//! `absent` rules are the exception: they are judged by [`Evaluator::tick`] on wall-clock time
//! (their `for` and `keep_firing_for` too), because a version that stops sending produces no
//! window to evaluate.
//!
//! ## Sequence numbers
//! Each fingerprint's events are numbered 1, 2, ... (`seq`), continuing across episodes and
//! across a restore.

use std::collections::BTreeMap;

use modelwatch_clickhouse::rows::{
    AlertRow, CanaryVerdictRow, DriftScoreRow, MetricStatsRow, WindowStatsRow,
};

use crate::fingerprint::fingerprint;
use crate::rule::{DriftReference, FeatureSel, Metric, Rule};

/// A canary version and its baseline, as the engine knows them (from `[[canary]]` entries or
/// inferred from the `route` attribute).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CanaryPair {
    /// The model.
    pub model: String,
    /// The baseline version.
    pub baseline: String,
    /// The canary version.
    pub canary: String,
}

/// The rows of closed windows handed over by one flush of the engine.
///
/// Contract: every row of one (model, version, window end) is in the same `WindowRows` (the
/// engine emits a closed window's rows together), in any order. The two sides of a canary pair
/// may arrive in different calls; they are matched by window end.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowRows<'a> {
    /// `window_stats` rows.
    pub windows: &'a [WindowStatsRow],
    /// `metric_stats` rows.
    pub metrics: &'a [MetricStatsRow],
    /// `drift_scores` rows.
    pub drift: &'a [DriftScoreRow],
    /// `canary_verdicts` rows (the `overall` rows of cumulative verdicts are evaluated).
    pub verdicts: &'a [CanaryVerdictRow],
}

/// The state an [`AlertEvent`] moves an alert into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    /// The condition holds, for less than `for`.
    Pending,
    /// The alert fires (also while a `keep_firing_for` countdown runs).
    Firing,
    /// A firing alert stopped: its condition did not hold for `keep_firing_for`.
    Resolved,
    /// A pending alert whose condition stopped holding before it fired.
    Inactive,
}

impl AlertState {
    /// The `alerts.state` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Inactive => "inactive",
        }
    }

    /// Parses an `alerts.state` column value.
    pub fn parse(s: &str) -> Option<AlertState> {
        Some(match s {
            "pending" => AlertState::Pending,
            "firing" => AlertState::Firing,
            "resolved" => AlertState::Resolved,
            "inactive" => AlertState::Inactive,
            _ => return None,
        })
    }
}

/// One state change of one alert: a state row of the `alerts` log ([`AlertEvent::to_row`]),
/// plus the labels and annotations the notifications need.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// Stable fingerprint of the alert's labels.
    pub fingerprint: String,
    /// Per-fingerprint sequence number, from 1.
    pub seq: u64,
    /// Rule name.
    pub rule: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Severity.
    pub severity: String,
    /// The new state.
    pub state: AlertState,
    /// The evaluated value (seconds of silence for `absent`).
    pub value: Option<f64>,
    /// The threshold in force (`absent_for` in seconds for `absent`).
    pub threshold: Option<f64>,
    /// When the episode started: the end of the first window whose condition held.
    pub starts_at_ms: i64,
    /// Resolved and inactive: when it ended; firing: the projected resolution while a
    /// `keep_firing_for` countdown runs; otherwise `None`.
    pub ends_at_ms: Option<i64>,
    /// The evaluation that caused the change: a window end (event time), or the wall-clock tick
    /// of an `absent` rule.
    pub at_ms: i64,
    /// The alert's labels: `alertname`, `model`, `version`, `severity` and the rule's labels.
    pub labels: BTreeMap<String, String>,
    /// The rule's annotations rendered with this evaluation's value.
    pub annotations: BTreeMap<String, String>,
}

impl AlertEvent {
    /// The event's state row of the `alerts` log (no channel, attempt 0).
    pub fn to_row(&self, written_at_ms: u64) -> AlertRow {
        AlertRow {
            fingerprint: self.fingerprint.clone(),
            seq: self.seq,
            channel: String::new(),
            attempt: 0,
            rule: self.rule.clone(),
            model: self.model.clone(),
            version: self.version.clone(),
            severity: self.severity.clone(),
            state: self.state.as_str().to_owned(),
            value: self.value,
            threshold: self.threshold,
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            delivery_status: String::new(),
            at_ms: self.at_ms,
            written_at_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Inactive,
    Pending { since: i64 },
    Firing { since: i64, clear_since: Option<i64> },
}

/// The state machine of one (rule, model, version).
#[derive(Debug, Clone)]
struct Machine {
    baseline: String,
    fingerprint: String,
    labels: BTreeMap<String, String>,
    phase: Phase,
    seq: u64,
    last_eval_ms: i64,
    /// The latest event (the `alerts` log's latest state row of this fingerprint).
    last: Option<AlertEvent>,
}

impl Machine {
    fn new(rule: &Rule, model: &str, version: &str, baseline: &str) -> Self {
        let labels = rule.labels(model, version, baseline);
        Self {
            baseline: baseline.to_owned(),
            fingerprint: fingerprint(&labels),
            labels,
            phase: Phase::Inactive,
            seq: 0,
            last_eval_ms: i64::MIN,
            last: None,
        }
    }

    /// Advances the machine with the evaluation at `at` (`holds`: the condition's outcome).
    fn step(
        &mut self,
        rule: &Rule,
        key: &Key,
        at: i64,
        value: Option<f64>,
        holds: bool,
    ) -> Option<AlertEvent> {
        if at <= self.last_eval_ms {
            return None;
        }
        self.last_eval_ms = at;
        let kff = rule.keep_firing_for_ms();
        let (phase, state, starts, ends) = match (self.phase, holds) {
            (Phase::Inactive, false) => return None,
            (Phase::Inactive, true) if rule.for_ms() == 0 => {
                (Phase::Firing { since: at, clear_since: None }, AlertState::Firing, at, None)
            }
            (Phase::Inactive, true) => {
                (Phase::Pending { since: at }, AlertState::Pending, at, None)
            }
            (Phase::Pending { since }, true) => {
                if at - since < rule.for_ms() {
                    return None;
                }
                (Phase::Firing { since, clear_since: None }, AlertState::Firing, since, None)
            }
            (Phase::Pending { since }, false) => {
                (Phase::Inactive, AlertState::Inactive, since, Some(at))
            }
            (Phase::Firing { clear_since: None, .. }, true) => return None,
            (Phase::Firing { since, clear_since: Some(_) }, true) => {
                (Phase::Firing { since, clear_since: None }, AlertState::Firing, since, None)
            }
            (Phase::Firing { since, clear_since }, false) => {
                let cleared = clear_since.unwrap_or(at);
                if at - cleared >= kff {
                    (Phase::Inactive, AlertState::Resolved, since, Some(at))
                } else if clear_since.is_some() {
                    return None;
                } else {
                    let phase = Phase::Firing { since, clear_since: Some(at) };
                    (phase, AlertState::Firing, since, Some(at + kff))
                }
            }
        };
        self.phase = phase;
        self.seq += 1;
        let event = AlertEvent {
            fingerprint: self.fingerprint.clone(),
            seq: self.seq,
            rule: rule.name().to_owned(),
            model: key.1.clone(),
            version: key.2.clone(),
            severity: rule.severity().to_owned(),
            state,
            value,
            threshold: Some(rule.threshold_for(&key.1)),
            starts_at_ms: starts,
            ends_at_ms: ends,
            at_ms: at,
            labels: self.labels.clone(),
            annotations: rule.annotations(&key.1, &key.2, &self.baseline, value),
        };
        self.last = Some(event.clone());
        Some(event)
    }
}

/// (rule index, model, version).
type Key = (usize, String, String);

/// The rows of one side of a canary pair for one window end.
#[derive(Debug, Clone, Default)]
struct Side {
    window: Option<WindowStatsRow>,
    metrics: Vec<MetricStatsRow>,
}

/// Windows of one pair waiting for the other side. Per side (0: baseline, 1: canary): rows by
/// window end, and the latest end seen (windows of one version close in end order).
#[derive(Debug, Clone)]
struct PairBuffer {
    sides: [BTreeMap<i64, Side>; 2],
    last_end: [i64; 2],
}

impl Default for PairBuffer {
    fn default() -> Self {
        Self { sides: [BTreeMap::new(), BTreeMap::new()], last_end: [i64::MIN; 2] }
    }
}

/// Windows of one side kept at most while waiting for the other side.
const PAIR_WINDOWS_KEPT: usize = 64;

/// One evaluation to apply.
#[derive(Debug)]
struct Input {
    at: i64,
    rule: usize,
    model: String,
    version: String,
    baseline: String,
    value: f64,
}

/// Evaluates the rules on closed windows; see the module documentation for the semantics.
///
/// Driving it: call [`observe`](Self::observe) with the rows of every flush, and
/// [`tick`](Self::tick) periodically (e.g. every few seconds) with the wall clock and whether
/// the consumer is caught up. Write every returned event to the `alerts` log and push it into
/// the [`Scheduler`](crate::Scheduler).
#[derive(Debug, Clone)]
pub struct Evaluator {
    rules: Vec<Rule>,
    pairs: Vec<CanaryPair>,
    machines: BTreeMap<Key, Machine>,
    buffers: BTreeMap<CanaryPair, PairBuffer>,
    /// Per (model, version): the end of the latest window with requests.
    last_seen: BTreeMap<(String, String), i64>,
}

impl Evaluator {
    /// An evaluator of validated rules (see [`crate::validate_rules`]).
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            pairs: Vec::new(),
            machines: BTreeMap::new(),
            buffers: BTreeMap::new(),
            last_seen: BTreeMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Sets the canary pairs that baseline-relative rules (and `{{baseline}}`) use. Windows
    /// buffered for a pair that is no longer configured are dropped.
    pub fn set_canary_pairs(&mut self, pairs: Vec<CanaryPair>) {
        self.buffers.retain(|p, _| pairs.contains(p));
        self.pairs = pairs;
    }

    /// The baseline of a canary version, if it is one.
    fn baseline_of(&self, model: &str, version: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|p| p.model == model && p.canary == version)
            .map(|p| p.baseline.as_str())
    }

    /// Evaluates every rule on the rows of closed windows and returns the transitions, ordered
    /// by window end, then rule (configuration order), model and version.
    pub fn observe(&mut self, rows: WindowRows<'_>) -> Vec<AlertEvent> {
        let mut inputs = Vec::new();
        for w in rows.windows {
            if w.requests > 0 {
                let seen =
                    self.last_seen.entry((w.model.clone(), w.version.clone())).or_insert(i64::MIN);
                *seen = (*seen).max(w.window_end_ms);
            }
        }
        for (ri, rule) in self.rules.iter().enumerate() {
            if rule.relative().is_some() {
                continue;
            }
            match rule.metric() {
                Metric::Window(m) => {
                    let evaluated = rows.windows.iter().filter(|w| {
                        rule.applies_to(&w.model, &w.version) && w.requests >= rule.min_samples()
                    });
                    for w in evaluated {
                        if let Some(value) = m.of(w) {
                            inputs.push(self.input(
                                ri,
                                &w.model,
                                &w.version,
                                w.window_end_ms,
                                value,
                            ));
                        }
                    }
                }
                Metric::MetricEvent { name, agg } => {
                    let evaluated = rows.metrics.iter().filter(|r| {
                        r.name == *name
                            && rule.applies_to(&r.model, &r.version)
                            && r.count >= rule.min_samples()
                    });
                    for r in evaluated {
                        if let Some(value) = agg.of(r) {
                            inputs.push(self.input(
                                ri,
                                &r.model,
                                &r.version,
                                r.window_end_ms,
                                value,
                            ));
                        }
                    }
                }
                Metric::Drift { kind, feature, reference } => {
                    // The largest matching score per (model, version, window end, baseline).
                    let mut best: BTreeMap<(&str, &str, i64, &str), f64> = BTreeMap::new();
                    for r in rows.drift {
                        let baseline = match (reference, r.reference.strip_prefix("version:")) {
                            (DriftReference::Reference, None) if r.reference == "period" => "",
                            (DriftReference::Baseline, Some(b)) => b,
                            _ => continue,
                        };
                        let wanted = match feature {
                            FeatureSel::Max => true,
                            FeatureSel::Named(f) => r.feature == *f,
                        };
                        if !wanted
                            || r.samples < rule.min_samples()
                            || !rule.applies_to(&r.model, &r.version)
                        {
                            continue;
                        }
                        if let Some(v) = kind.of(r) {
                            let e = best
                                .entry((&r.model, &r.version, r.window_end_ms, baseline))
                                .or_insert(v);
                            *e = e.max(v);
                        }
                    }
                    for ((model, version, at, baseline), value) in best {
                        inputs.push(Input {
                            at,
                            rule: ri,
                            model: model.to_owned(),
                            version: version.to_owned(),
                            baseline: baseline.to_owned(),
                            value,
                        });
                    }
                }
                Metric::Canary(m) => {
                    let evaluated = rows.verdicts.iter().filter(|r| {
                        r.metric == "overall"
                            && r.scope == "cumulative"
                            && rule.applies_to(&r.model, &r.canary_version)
                            && r.n_canary >= rule.min_samples()
                    });
                    for r in evaluated {
                        if let Some(value) = m.of(r) {
                            inputs.push(Input {
                                at: r.window_end_ms,
                                rule: ri,
                                model: r.model.clone(),
                                version: r.canary_version.clone(),
                                baseline: r.baseline_version.clone(),
                                value,
                            });
                        }
                    }
                }
                Metric::Absent { .. } => {}
            }
        }
        self.buffer_pairs(rows);
        self.relative_inputs(&mut inputs);
        inputs.sort_by(|a, b| {
            (a.at, a.rule, &a.model, &a.version).cmp(&(b.at, b.rule, &b.model, &b.version))
        });
        let mut events = Vec::new();
        for i in inputs {
            let rule = &self.rules[i.rule];
            let holds = rule.op().holds(i.value, rule.threshold_for(&i.model));
            let key = (i.rule, i.model, i.version);
            let m = self
                .machines
                .entry(key.clone())
                .or_insert_with(|| Machine::new(rule, &key.1, &key.2, &i.baseline));
            events.extend(m.step(rule, &key, i.at, Some(i.value), holds));
        }
        events
    }

    fn input(&self, rule: usize, model: &str, version: &str, at: i64, value: f64) -> Input {
        Input {
            at,
            rule,
            model: model.to_owned(),
            version: version.to_owned(),
            baseline: self.baseline_of(model, version).unwrap_or("").to_owned(),
            value,
        }
    }

    /// Files the rows of every version that is a side of a canary pair (only when a
    /// baseline-relative rule exists).
    fn buffer_pairs(&mut self, rows: WindowRows<'_>) {
        if !self.rules.iter().any(|r| r.relative().is_some()) {
            return;
        }
        for pair in &self.pairs {
            let sides = [&pair.baseline, &pair.canary];
            for (s, version) in sides.into_iter().enumerate() {
                let ours = |model: &str, v: &str| model == pair.model && v == version.as_str();
                let mut filed = false;
                let buf = self.buffers.entry(pair.clone()).or_default();
                for w in rows.windows.iter().filter(|w| ours(&w.model, &w.version)) {
                    buf.sides[s].entry(w.window_end_ms).or_default().window = Some(w.clone());
                    buf.last_end[s] = buf.last_end[s].max(w.window_end_ms);
                    filed = true;
                }
                for r in rows.metrics.iter().filter(|r| ours(&r.model, &r.version)) {
                    buf.sides[s].entry(r.window_end_ms).or_default().metrics.push(r.clone());
                    buf.last_end[s] = buf.last_end[s].max(r.window_end_ms);
                    filed = true;
                }
                if filed {
                    while buf.sides[s].len() > PAIR_WINDOWS_KEPT {
                        buf.sides[s].pop_first();
                    }
                }
            }
        }
    }

    /// Evaluations of baseline-relative rules for every window end that both sides of a pair
    /// have; drops window ends that one side will never have (it already sent a later one).
    fn relative_inputs(&mut self, inputs: &mut Vec<Input>) {
        for (pair, buf) in &mut self.buffers {
            let mut ends: Vec<i64> =
                buf.sides[0].keys().chain(buf.sides[1].keys()).copied().collect();
            ends.sort_unstable();
            ends.dedup();
            for end in ends {
                match (buf.sides[0].get(&end), buf.sides[1].get(&end)) {
                    (Some(base), Some(can)) => {
                        relative_values(&self.rules, pair, base, can, end, inputs);
                        buf.sides[0].remove(&end);
                        buf.sides[1].remove(&end);
                    }
                    (Some(_), None) if buf.last_end[1] > end => {
                        buf.sides[0].remove(&end);
                    }
                    (None, Some(_)) if buf.last_end[0] > end => {
                        buf.sides[1].remove(&end);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Judges `absent` rules at wall-clock `now_wall_ms`: the condition holds for a (model,
    /// version) whose latest window with requests ended more than `absent_for` before now.
    ///
    /// Only versions seen in a window with requests since this evaluator started are judged.
    /// While `caught_up` is false (the consumer is reading a backlog, so window ends lag the
    /// wall clock and prove nothing), a holding condition is not evaluated at all; a
    /// condition that does not hold (the version sent again) is, so an `absent` alert resolves
    /// when its version returns, caught up or not.
    ///
    /// The end of a sliding window can be up to one window length after the version's last
    /// request (the window still contains it), so the alert fires up to `window` later than
    /// `absent_for` after the last request.
    pub fn tick(&mut self, now_wall_ms: i64, caught_up: bool) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            let Metric::Absent { after_ms } = *rule.metric() else { continue };
            for ((model, version), &seen) in &self.last_seen {
                if !rule.applies_to(model, version) {
                    continue;
                }
                let silence = now_wall_ms.saturating_sub(seen);
                let holds = silence > after_ms;
                if holds && !caught_up {
                    continue;
                }
                let key = (ri, model.clone(), version.clone());
                let baseline =
                    self.pairs.iter().find(|p| p.model == *model && p.canary == *version);
                let m = self.machines.entry(key.clone()).or_insert_with(|| {
                    let b = baseline.map_or("", |p| p.baseline.as_str());
                    Machine::new(rule, model, version, b)
                });
                let value = silence.max(0) as f64 / 1000.0;
                events.extend(m.step(rule, &key, now_wall_ms, Some(value), holds));
            }
        }
        events
    }

    /// Ends the alerts of a version that the engine stopped tracking (evicted after
    /// `idle_ttl`, or a canary pair removed), which would otherwise never be evaluated again:
    /// firing alerts resolve and pending ones go back to inactive, at `at_ms` (the event time
    /// of the eviction), whatever `keep_firing_for`. The state machines stay (inactive) so
    /// that sequence numbers continue if the version returns.
    ///
    /// `absent` rules are left alone unless `include_absent`: a version that stopped sending
    /// is exactly what they report, and its last-seen time is kept for them. With
    /// `include_absent`, their alerts end too (at `at_ms` as well, although `absent` rules
    /// otherwise count wall-clock time) and the version is no longer judged by them.
    pub fn retire(
        &mut self,
        model: &str,
        version: &str,
        at_ms: i64,
        include_absent: bool,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (key, m) in &mut self.machines {
            if key.1 != model || key.2 != version {
                continue;
            }
            let rule = &self.rules[key.0];
            let absent = matches!(rule.metric(), Metric::Absent { .. });
            if absent && !include_absent {
                continue;
            }
            let (state, since) = match m.phase {
                Phase::Inactive => continue,
                Phase::Pending { since } => (AlertState::Inactive, since),
                Phase::Firing { since, .. } => (AlertState::Resolved, since),
            };
            let at = at_ms.max(m.last_eval_ms.saturating_add(1));
            m.phase = Phase::Inactive;
            m.last_eval_ms = at;
            m.seq += 1;
            let value = m.last.as_ref().and_then(|e| e.value);
            let event = AlertEvent {
                fingerprint: m.fingerprint.clone(),
                seq: m.seq,
                rule: rule.name().to_owned(),
                model: model.to_owned(),
                version: version.to_owned(),
                severity: rule.severity().to_owned(),
                state,
                value,
                threshold: m.last.as_ref().and_then(|e| e.threshold),
                starts_at_ms: since,
                ends_at_ms: Some(at),
                at_ms: at,
                labels: m.labels.clone(),
                annotations: rule.annotations(model, version, &m.baseline, value),
            };
            m.last = Some(event.clone());
            events.push(event);
        }
        if include_absent {
            self.last_seen.remove(&(model.to_owned(), version.to_owned()));
        }
        events
    }

    /// Forgets a version whose windows are another instance's from now on (its partitions
    /// were revoked): its state machines, its last-seen time and its pairs' buffered windows
    /// go, without any event; the next owner restores them from the `alerts` log, and so does
    /// this evaluator ([`restore`](Self::restore)) if the version comes back. Returns the
    /// fingerprints dropped, for [`Scheduler::forget`](crate::Scheduler::forget).
    pub fn release(&mut self, model: &str, version: &str) -> Vec<String> {
        let mut gone = Vec::new();
        self.machines.retain(|k, m| {
            let mine = k.1 == model && k.2 == version;
            if mine {
                gone.push(m.fingerprint.clone());
            }
            !mine
        });
        self.last_seen.remove(&(model.to_owned(), version.to_owned()));
        self.buffers
            .retain(|p, _| !(p.model == model && (p.canary == version || p.baseline == version)));
        gone
    }

    /// The firing alerts with the time of their latest evaluation (window end, or tick for
    /// `absent`): feed them to [`Scheduler::refresh`](crate::Scheduler::refresh) after every
    /// [`observe`](Self::observe) and [`tick`](Self::tick), so an alert that fired on old
    /// data while catching up is notified once its evaluations are recent.
    pub fn firing(&self) -> impl Iterator<Item = (&str, i64)> {
        self.machines
            .values()
            .filter(|m| matches!(m.phase, Phase::Firing { .. }))
            .map(|m| (m.fingerprint.as_str(), m.last_eval_ms))
    }

    /// The latest state row of every fingerprint this evaluator has an event for (what
    /// [`restore`](Self::restore) needs; `written_at_ms` is 0).
    pub fn snapshot(&self) -> Vec<AlertRow> {
        self.machines.values().filter_map(|m| m.last.as_ref()).map(|e| e.to_row(0)).collect()
    }

    /// Restores state machines from `alerts` rows: for each fingerprint the state row
    /// (`channel` empty) with the highest `seq` is used; delivery rows are ignored, so the
    /// whole log (or its latest rows per fingerprint) may be passed. Returns the restored
    /// latest event of every fingerprint (for [`Scheduler::restore`](crate::Scheduler::restore)).
    ///
    /// A restored alert resumes exactly where the log left it: its phase, `starts_at`, the
    /// start of a `keep_firing_for` countdown, its `seq`, and its last evaluated window end,
    /// so replayed windows up to that end are ignored. Rows of rules no longer configured, of
    /// unknown states, or whose fingerprint no longer matches the rule's labels (the rule's
    /// labels changed) are skipped. Rows older than the machine already held are ignored.
    ///
    /// Not restored: the buffered windows of canary pairs and the last-seen times of `absent`
    /// rules (an `absent` alert restored as firing stays firing until its version sends
    /// again; one that never sends again is never re-judged).
    pub fn restore(&mut self, rows: &[AlertRow]) -> Vec<AlertEvent> {
        let mut latest: BTreeMap<&str, &AlertRow> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.channel.is_empty()) {
            let e = latest.entry(r.fingerprint.as_str()).or_insert(r);
            if r.seq > e.seq {
                *e = r;
            }
        }
        let mut restored = Vec::new();
        for row in latest.into_values() {
            let Some(ri) = self.rules.iter().position(|r| r.name() == row.rule) else { continue };
            let Some(state) = AlertState::parse(&row.state) else { continue };
            let rule = &self.rules[ri];
            let baseline = self.baseline_of(&row.model, &row.version).unwrap_or("").to_owned();
            let key = (ri, row.model.clone(), row.version.clone());
            let mut m = Machine::new(rule, &row.model, &row.version, &baseline);
            if m.fingerprint != row.fingerprint {
                continue;
            }
            if self.machines.get(&key).is_some_and(|old| old.seq >= row.seq) {
                continue;
            }
            m.phase = match state {
                AlertState::Pending => Phase::Pending { since: row.starts_at_ms },
                AlertState::Firing => Phase::Firing {
                    since: row.starts_at_ms,
                    clear_since: row.ends_at_ms.map(|_| row.at_ms),
                },
                AlertState::Resolved | AlertState::Inactive => Phase::Inactive,
            };
            m.seq = row.seq;
            m.last_eval_ms = row.at_ms;
            let event = AlertEvent {
                fingerprint: row.fingerprint.clone(),
                seq: row.seq,
                rule: row.rule.clone(),
                model: row.model.clone(),
                version: row.version.clone(),
                severity: row.severity.clone(),
                state,
                value: row.value,
                threshold: row.threshold,
                starts_at_ms: row.starts_at_ms,
                ends_at_ms: row.ends_at_ms,
                at_ms: row.at_ms,
                labels: m.labels.clone(),
                annotations: rule.annotations(&row.model, &row.version, &baseline, row.value),
            };
            m.last = Some(event.clone());
            self.machines.insert(key, m);
            restored.push(event);
        }
        restored
    }
}

/// Evaluations of every baseline-relative rule on one window end of a pair.
fn relative_values(
    rules: &[Rule],
    pair: &CanaryPair,
    base: &Side,
    can: &Side,
    end: i64,
    inputs: &mut Vec<Input>,
) {
    for (ri, rule) in rules.iter().enumerate() {
        let Some(compare) = rule.relative() else { continue };
        if !rule.applies_to(&pair.model, &pair.canary) {
            continue;
        }
        let min = rule.min_samples();
        let sides = match rule.metric() {
            Metric::Window(m) => match (&base.window, &can.window) {
                (Some(b), Some(c)) if b.requests >= min && c.requests >= min => {
                    m.of(b).zip(m.of(c))
                }
                _ => None,
            },
            Metric::MetricEvent { name, agg } => {
                let find = |s: &Side| s.metrics.iter().find(|r| r.name == *name).cloned();
                match (find(base), find(can)) {
                    (Some(b), Some(c)) if b.count >= min && c.count >= min => {
                        agg.of(&b).zip(agg.of(&c))
                    }
                    _ => None,
                }
            }
            // Refused by validation.
            Metric::Drift { .. } | Metric::Canary(_) | Metric::Absent { .. } => None,
        };
        if let Some(value) = sides.and_then(|(b, c)| compare.apply(c, b)) {
            inputs.push(Input {
                at: end,
                rule: ri,
                model: pair.model.clone(),
                version: pair.canary.clone(),
                baseline: pair.baseline.clone(),
                value,
            });
        }
    }
}
