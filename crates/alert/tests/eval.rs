//! The evaluator's state machine on event-time windows, baseline-relative rules, `absent`
//! and fingerprints.

// Tests may unwrap (clippy.toml allows it in #[test] functions only; helpers too here).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use modelwatch_alert::rule::{Compare, DriftReference, Op, RelativeTo};
use modelwatch_alert::{AlertEvent, AlertState, CanaryPair, Evaluator, WindowRows};
use modelwatch_clickhouse::rows::{CanaryVerdictRow, WindowStatsRow};

fn feed(ev: &mut Evaluator, windows: &[WindowStatsRow]) -> Vec<AlertEvent> {
    ev.observe(WindowRows { windows, ..WindowRows::default() })
}

/// (state, starts_at, ends_at, at) of each event.
fn summary(events: &[AlertEvent]) -> Vec<(AlertState, i64, Option<i64>, i64)> {
    events.iter().map(|e| (e.state, e.starts_at_ms, e.ends_at_ms, e.at_ms)).collect()
}

/// Feeds one window per p99 value, ends 10 s apart from `first_end`.
fn series(ev: &mut Evaluator, first_end: i64, p99s: &[f64]) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    for (i, &p) in p99s.iter().enumerate() {
        out.extend(feed(ev, &[window("m", "v1", first_end + i as i64 * SLIDE, 100, p)]));
    }
    out
}

#[test]
fn pending_firing_and_resolved_follow_for_and_keep_firing_for_in_event_time() {
    let mut ev = Evaluator::new(vec![rule("slow", "latency_p99_ms", 100.0, 30, 20)]);
    // Ends 10k, 20k, ... 110k.
    let events =
        series(&mut ev, 10_000, &[50., 150., 150., 150., 150., 50., 150., 50., 50., 50., 50.]);
    use AlertState::*;
    assert_eq!(
        summary(&events),
        vec![
            (Pending, 20_000, None, 20_000),
            // Held from 20k to 50k: 30 s of event time.
            (Firing, 20_000, None, 50_000),
            // Condition gone at 60k: still firing, resolution projected at 80k.
            (Firing, 20_000, Some(80_000), 60_000),
            // Back at 70k: the countdown is cancelled.
            (Firing, 20_000, None, 70_000),
            (Firing, 20_000, Some(100_000), 80_000),
            // Gone since 80k for 20 s.
            (Resolved, 20_000, Some(100_000), 100_000),
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(events.iter().all(|e| e.fingerprint == events[0].fingerprint));
    assert_eq!(events[1].value, Some(150.0));
    assert_eq!(events[1].threshold, Some(100.0));
    assert_eq!(events[5].value, Some(50.0));
    // A new episode continues the sequence.
    let more = series(&mut ev, 120_000, &[150.0]);
    assert_eq!(summary(&more), vec![(Pending, 120_000, None, 120_000)]);
    assert_eq!(more[0].seq, 7);
}

#[test]
fn a_pending_alert_whose_condition_stops_goes_back_to_inactive() {
    let mut ev = Evaluator::new(vec![rule("slow", "latency_p99_ms", 100.0, 60, 0)]);
    let events = series(&mut ev, 10_000, &[150., 150., 50., 50.]);
    assert_eq!(
        summary(&events),
        vec![
            (AlertState::Pending, 10_000, None, 10_000),
            (AlertState::Inactive, 10_000, Some(30_000), 30_000)
        ]
    );
}

#[test]
fn without_for_and_keep_firing_for_alerts_fire_and_resolve_at_once() {
    let mut ev = Evaluator::new(vec![rule("slow", "latency_p99_ms", 100.0, 0, 0)]);
    let events = series(&mut ev, 10_000, &[150., 150., 50.]);
    assert_eq!(
        summary(&events),
        vec![
            (AlertState::Firing, 10_000, None, 10_000),
            (AlertState::Resolved, 10_000, Some(30_000), 30_000)
        ]
    );
}

#[test]
fn windows_below_min_samples_leave_the_state_unchanged() {
    let mut s = spec("slow", "latency_p99_ms", Op::Gt, 100.0);
    s.min_samples = 50;
    s.for_ = Duration::from_secs(20);
    let mut ev = Evaluator::new(vec![s.validate(0).unwrap()]);
    // A thin window breaching: nothing.
    assert!(feed(&mut ev, &[window("m", "v1", 10_000, 49, 500.0)]).is_empty());
    // Pending at 20k; a thin healthy window at 30k does not cancel it; fires at 40k.
    assert_eq!(
        feed(&mut ev, &[window("m", "v1", 20_000, 50, 500.0)])[0].state,
        AlertState::Pending
    );
    assert!(feed(&mut ev, &[window("m", "v1", 30_000, 3, 1.0)]).is_empty());
    let fired = feed(&mut ev, &[window("m", "v1", 40_000, 80, 500.0)]);
    assert_eq!(summary(&fired), vec![(AlertState::Firing, 20_000, None, 40_000)]);
    // A thin healthy window does not resolve it either.
    assert!(feed(&mut ev, &[window("m", "v1", 50_000, 1, 1.0)]).is_empty());
    assert_eq!(feed(&mut ev, &[window("m", "v1", 60_000, 50, 1.0)])[0].state, AlertState::Resolved);
}

#[test]
fn replayed_and_out_of_order_windows_are_ignored() {
    let mut ev = Evaluator::new(vec![rule("slow", "latency_p99_ms", 100.0, 0, 0)]);
    assert_eq!(series(&mut ev, 10_000, &[150.0]).len(), 1);
    assert!(feed(&mut ev, &[window("m", "v1", 10_000, 100, 150.0)]).is_empty());
    assert!(feed(&mut ev, &[window("m", "v1", 5_000, 100, 1.0)]).is_empty());
}

#[test]
fn rows_of_one_flush_are_evaluated_in_window_order() {
    let mut ev = Evaluator::new(vec![rule("slow", "latency_p99_ms", 100.0, 0, 0)]);
    let rows = [window("m", "v1", 30_000, 100, 50.0), window("m", "v1", 20_000, 100, 150.0)];
    let events = feed(&mut ev, &rows);
    assert_eq!(
        summary(&events),
        vec![
            (AlertState::Firing, 20_000, None, 20_000),
            (AlertState::Resolved, 20_000, Some(30_000), 30_000)
        ]
    );
}

#[test]
fn the_fingerprint_is_pinned() {
    let mut s = spec("high_latency", "latency_p99_ms", Op::Gt, 100.0);
    s.labels.insert("team".into(), "ml".into());
    let mut ev = Evaluator::new(vec![s.validate(0).unwrap()]);
    let e = feed(&mut ev, &[window("fraud", "v2", 10_000, 100, 150.0)]);
    let want: BTreeMap<String, String> = [
        ("alertname", "high_latency"),
        ("model", "fraud"),
        ("severity", "critical"),
        ("team", "ml"),
        ("version", "v2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(e[0].labels, want);
    // 64-bit FNV-1a over the sorted labels (name 0xFE value 0xFF ...), computed independently.
    assert_eq!(e[0].fingerprint, "b4a23948e4f547a1");
    let row = e[0].to_row(42);
    assert_eq!(
        (row.fingerprint.as_str(), row.seq, row.state.as_str()),
        ("b4a23948e4f547a1", 1, "firing")
    );
    assert_eq!((row.channel.as_str(), row.attempt, row.written_at_ms), ("", 0, 42));
}

#[test]
fn scope_and_per_model_thresholds() {
    let mut s = spec("errors", "error_rate", Op::Ge, 0.5);
    s.model = "fraud-*".into();
    s.thresholds.insert("fraud-eu".into(), 0.05);
    s.annotations
        .insert("summary".into(), "{{model}}/{{version}} {{value}} >= {{threshold}}".into());
    let mut ev = Evaluator::new(vec![s.validate(0).unwrap()]);
    // error_rate is 0.1 in every test window.
    let events = feed(
        &mut ev,
        &[
            window("fraud-us", "v1", 10_000, 100, 1.0),
            window("fraud-eu", "v1", 10_000, 100, 1.0),
            window("ranker", "v1", 10_000, 100, 1.0),
        ],
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].model, "fraud-eu");
    assert_eq!(events[0].threshold, Some(0.05));
    assert_eq!(events[0].annotations["summary"], "fraud-eu/v1 0.1 >= 0.05");
}

#[test]
fn metric_aggregates_and_drift_scores() {
    let mut d = spec("drift", "drift:kl:max", Op::Gt, 0.5);
    d.drift_reference = Some(DriftReference::Reference);
    let mut db = spec("drift_vs_baseline", "drift:psi:age", Op::Gt, 0.5);
    db.drift_reference = Some(DriftReference::Baseline);
    db.annotations.insert("b".into(), "{{baseline}}".into());
    let gpu = spec("gpu", "metric:gpu_util:avg", Op::Gt, 90.0);
    let rules = vec![d.validate(0).unwrap(), db.validate(1).unwrap(), gpu.validate(2).unwrap()];
    let mut ev = Evaluator::new(rules);
    let drift_rows = [
        drift("m", "v2", "period", "age", 10_000, 0.2),
        drift("m", "v2", "period", "income", 10_000, 0.7),
        // psi = 2 * kl.
        drift("m", "v2", "version:v1", "age", 10_000, 0.3),
        drift("m", "v2", "version:v1", "income", 10_000, 0.1),
    ];
    let metric_rows = [
        metric("m", "v2", "gpu_util", 10_000, 10, 95.0),
        metric("m", "v2", "other", 10_000, 10, 99.0),
    ];
    let events = ev.observe(WindowRows {
        windows: &[],
        metrics: &metric_rows,
        drift: &drift_rows,
        verdicts: &[],
    });
    let got: Vec<(&str, Option<f64>)> = events.iter().map(|e| (e.rule.as_str(), e.value)).collect();
    assert_eq!(
        got,
        vec![("drift", Some(0.7)), ("drift_vs_baseline", Some(0.6)), ("gpu", Some(95.0))]
    );
    assert_eq!(events[1].annotations["b"], "v1", "the baseline named by the drift rows");
}

fn relative_rule(compare: Compare, threshold: f64) -> modelwatch_alert::Rule {
    let mut s = spec("canary_slow", "latency_p99_ms", Op::Gt, threshold);
    s.relative_to = Some(RelativeTo::Baseline);
    s.compare = Some(compare);
    s.min_samples = 10;
    s.annotations.insert("vs".into(), "{{version}} vs {{baseline}}: {{value}}".into());
    s.validate(0).unwrap()
}

fn pair() -> CanaryPair {
    CanaryPair { model: "m".into(), baseline: "v1".into(), canary: "v2".into() }
}

#[test]
fn baseline_relative_rules_wait_for_both_sides_of_a_window() {
    let mut ev = Evaluator::new(vec![relative_rule(Compare::Ratio, 1.5)]);
    ev.set_canary_pairs(vec![pair()]);
    // The canary's window first: nothing to compare with yet.
    assert!(feed(&mut ev, &[window("m", "v2", 10_000, 100, 300.0)]).is_empty());
    // The baseline's, in the next flush (and in any order with the next window).
    let events = feed(
        &mut ev,
        &[
            window("m", "v2", 20_000, 100, 100.0),
            window("m", "v1", 20_000, 100, 100.0),
            window("m", "v1", 10_000, 100, 100.0),
        ],
    );
    assert_eq!(
        summary(&events),
        vec![
            (AlertState::Firing, 10_000, None, 10_000),
            (AlertState::Resolved, 10_000, Some(20_000), 20_000)
        ]
    );
    assert_eq!(events[0].version, "v2");
    assert_eq!(events[0].value, Some(3.0));
    assert_eq!(events[0].annotations["vs"], "v2 vs v1: 3");
    // The baseline skips 30k (no row) and sends 40k: the canary's 30k is dropped.
    assert!(feed(&mut ev, &[window("m", "v2", 30_000, 100, 300.0)]).is_empty());
    assert!(feed(&mut ev, &[window("m", "v1", 40_000, 100, 100.0)]).is_empty());
    let e = feed(&mut ev, &[window("m", "v2", 40_000, 100, 200.0)]);
    assert_eq!(summary(&e), vec![(AlertState::Firing, 40_000, None, 40_000)]);
    assert_eq!(e[0].value, Some(2.0));
    // A zero baseline makes a ratio undefined, and thin windows are skipped: unchanged.
    let mut zero = window("m", "v1", 50_000, 100, 100.0);
    zero.latency_p99_ms = Some(0.0);
    assert!(feed(&mut ev, &[zero, window("m", "v2", 50_000, 100, 1.0)]).is_empty());
    assert!(
        feed(&mut ev, &[window("m", "v1", 60_000, 9, 100.0), window("m", "v2", 60_000, 100, 1.0)])
            .is_empty()
    );
    // The baseline itself is never judged by a relative rule.
    let e = feed(
        &mut ev,
        &[window("m", "v1", 70_000, 100, 100.0), window("m", "v2", 70_000, 100, 100.0)],
    );
    assert_eq!(summary(&e), vec![(AlertState::Resolved, 40_000, Some(70_000), 70_000)]);
    assert!(e.iter().all(|e| e.version == "v2"));
}

#[test]
fn baseline_relative_difference() {
    let mut ev = Evaluator::new(vec![relative_rule(Compare::Difference, 50.0)]);
    ev.set_canary_pairs(vec![pair()]);
    let e = feed(
        &mut ev,
        &[window("m", "v1", 10_000, 100, 100.0), window("m", "v2", 10_000, 100, 160.0)],
    );
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].value, Some(60.0));
    let e = feed(
        &mut ev,
        &[window("m", "v1", 20_000, 100, 100.0), window("m", "v2", 20_000, 100, 140.0)],
    );
    assert_eq!(e[0].state, AlertState::Resolved);
    // Versions outside any pair are ignored.
    assert!(feed(&mut ev, &[window("m", "v9", 30_000, 100, 900.0)]).is_empty());
}

fn absent_rule(after_s: u64) -> modelwatch_alert::Rule {
    let mut s = spec("silent", "absent", Op::Gt, 0.0);
    s.op = None;
    s.threshold = None;
    s.absent_for = Some(Duration::from_secs(after_s));
    s.validate(0).unwrap()
}

#[test]
fn absent_fires_on_wall_clock_silence_only_while_caught_up() {
    let mut ev = Evaluator::new(vec![absent_rule(60)]);
    // Nothing seen yet: nothing to judge.
    assert!(ev.tick(1_000_000, true).is_empty());
    assert!(feed(&mut ev, &[window("m", "v1", 100_000, 5, 1.0)]).is_empty());
    // A window without requests is not a sign of life.
    feed(&mut ev, &[window("m", "v1", 140_000, 0, 1.0)]);
    assert!(ev.tick(150_000, true).is_empty(), "50 s of silence");
    assert!(ev.tick(170_000, false).is_empty(), "70 s, but reading a backlog");
    let fired = ev.tick(171_000, true);
    assert_eq!(summary(&fired), vec![(AlertState::Firing, 171_000, None, 171_000)]);
    assert_eq!(fired[0].value, Some(71.0));
    assert_eq!(fired[0].threshold, Some(60.0));
    assert!(ev.tick(200_000, true).is_empty(), "still firing, no new event");
    assert_eq!(ev.firing().collect::<Vec<_>>(), vec![(fired[0].fingerprint.as_str(), 200_000)]);
    // The version sends again: resolved at the next tick, caught up or not.
    feed(&mut ev, &[window("m", "v1", 210_000, 3, 1.0)]);
    let resolved = ev.tick(215_000, false);
    assert_eq!(summary(&resolved), vec![(AlertState::Resolved, 171_000, Some(215_000), 215_000)]);
}

#[test]
fn a_restored_evaluator_resumes_where_the_log_left_off() {
    let rules = || vec![rule("slow", "latency_p99_ms", 100.0, 20, 20)];
    let mut a = Evaluator::new(rules());
    let mut log = series(&mut a, 10_000, &[150., 150., 150., 50.]);
    assert_eq!(
        log.last().map(|e| (e.state, e.ends_at_ms)),
        Some((AlertState::Firing, Some(60_000)))
    );
    let rows: Vec<_> = log.iter().map(|e| e.to_row(1)).collect();
    assert_eq!(a.snapshot(), vec![log.last().unwrap().to_row(0)]);
    let mut b = Evaluator::new(rules());
    let restored = b.restore(&rows);
    assert_eq!(restored, vec![log.pop().unwrap()]);
    // Replayed windows change nothing; the countdown started at 40k resolves at 60k in both.
    let tail = [150.0, 150.0, 150.0, 50.0, 50.0, 50.0, 150.0];
    assert!(series(&mut b, 10_000, &[150., 150., 150., 50.]).is_empty());
    let (ra, rb) = (series(&mut a, 50_000, &tail[3..]), series(&mut b, 50_000, &tail[3..]));
    assert_eq!(ra, rb);
    assert_eq!(summary(&ra)[0], (AlertState::Resolved, 10_000, Some(60_000), 60_000));
    assert_eq!(b.snapshot(), a.snapshot());
}

#[test]
fn retiring_a_version_ends_its_alerts_but_not_its_absent_alerts_unless_asked() {
    let rules = vec![rule("slow", "latency_p99_ms", 100.0, 0, 60), absent_rule(60)];
    let mut ev = Evaluator::new(rules);
    feed(&mut ev, &[window("m", "v1", 10_000, 100, 150.0), window("m", "v2", 10_000, 100, 150.0)]);
    assert_eq!(ev.tick(100_000, true).len(), 2, "both versions absent");
    let ended = ev.retire("m", "v1", 20_000, false);
    assert_eq!(summary(&ended), vec![(AlertState::Resolved, 10_000, Some(20_000), 20_000)]);
    assert_eq!((ended[0].rule.as_str(), ended[0].seq), ("slow", 2));
    // v1 still reports as absent; with include_absent its absent alert ends too.
    assert!(ev.tick(110_000, true).is_empty());
    let ended = ev.retire("m", "v1", 120_000, true);
    assert_eq!(ended.len(), 1);
    assert_eq!((ended[0].rule.as_str(), ended[0].state), ("silent", AlertState::Resolved));
    assert!(ev.tick(200_000, true).is_empty(), "no longer judged");
    assert!(ev.retire("m", "v1", 130_000, true).is_empty(), "nothing left to end");
    // The version returns: its sequence continues.
    let back = feed(&mut ev, &[window("m", "v1", 140_000, 100, 150.0)]);
    assert_eq!((back[0].state, back[0].seq), (AlertState::Firing, 3));
}

fn verdict(metric: &str, scope: &str, end: i64, decision: &str) -> CanaryVerdictRow {
    CanaryVerdictRow {
        model: "m".into(),
        baseline_version: "v1".into(),
        canary_version: "v2".into(),
        scope: scope.into(),
        window_end_ms: end,
        metric: metric.into(),
        classification: String::new(),
        statistic: None,
        p_value: None,
        effect: None,
        n_baseline: 5_000,
        n_canary: 500,
        threshold: None,
        score: Some(if decision == "rollback" { 20.0 } else { 100.0 }),
        decision: decision.into(),
        evidence: "{}".into(),
        written_at_ms: 0,
    }
}

#[test]
fn canary_rules_fire_on_the_cumulative_decision_of_the_canary_version() {
    let mut s = spec("canary_rollback", "canary:rollback", Op::Ge, 1.0);
    s.annotations.insert("b".into(), "{{baseline}}".into());
    let score = spec("canary_score", "canary:score", Op::Lt, 50.0);
    let mut ev = Evaluator::new(vec![s.validate(0).unwrap(), score.validate(1).unwrap()]);
    let rows = [
        // Window-scope rows and per-metric rows are not the decision: ignored.
        verdict("overall", "window", 10_000, "rollback"),
        verdict("latency", "cumulative", 10_000, "rollback"),
        verdict("overall", "cumulative", 10_000, "continue"),
    ];
    let events = ev.observe(WindowRows { verdicts: &rows, ..WindowRows::default() });
    assert!(events.is_empty(), "{events:?}");
    let rows = [verdict("overall", "cumulative", 20_000, "rollback")];
    let events = ev.observe(WindowRows { verdicts: &rows, ..WindowRows::default() });
    let got: Vec<(&str, AlertState, &str, Option<f64>)> =
        events.iter().map(|e| (e.rule.as_str(), e.state, e.version.as_str(), e.value)).collect();
    assert_eq!(
        got,
        vec![
            ("canary_rollback", AlertState::Firing, "v2", Some(1.0)),
            ("canary_score", AlertState::Firing, "v2", Some(20.0)),
        ]
    );
    assert_eq!(events[0].annotations["b"], "v1");
    // Not with a baseline-relative comparison: verdicts already compare with the baseline.
    let mut bad = spec("x", "canary:score", Op::Lt, 50.0);
    bad.relative_to = Some(RelativeTo::Baseline);
    assert!(bad.validate(0).unwrap_err().to_string().contains("relative_to"));
    assert!(spec("x", "canary:verdict", Op::Lt, 1.0).validate(0).is_err());
}
