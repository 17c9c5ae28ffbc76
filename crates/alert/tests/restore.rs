//! Properties: an evaluator restored from the `alerts` log behaves exactly like one that was
//! never interrupted, also when the engine replays windows it had already evaluated; and a
//! model handed from one instance to another (released by one, restored by the other from the
//! log) is evaluated as if it had never moved.

// Tests may unwrap (clippy.toml allows it in #[test] functions only; helpers too here).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use modelwatch_alert::rule::{Compare, Op, RelativeTo};
use modelwatch_alert::{AlertEvent, CanaryPair, Evaluator, Rule, WindowRows};
use modelwatch_clickhouse::rows::WindowStatsRow;
use proptest::prelude::*;

/// Series fed every window: (model, version).
const SERIES: [(&str, &str); 3] = [("m", "v1"), ("m", "v2"), ("n", "v1")];

/// One window end: per series, no row or (requests, p99).
type Step = Vec<Option<(u64, f64)>>;

fn rules(timing: &[(u64, u64); 3]) -> Vec<Rule> {
    let secs = |n: u64| Duration::from_secs(n * 10);
    let mut slow = spec("slow", "latency_p99_ms", Op::Gt, 120.0);
    slow.min_samples = 10;
    let mut quiet = spec("quiet", "requests", Op::Lt, 20.0);
    quiet.labels.insert("team".into(), "{{model}}-ops".into());
    let mut canary = spec("canary_slow", "latency_p99_ms", Op::Gt, 1.3);
    canary.relative_to = Some(RelativeTo::Baseline);
    canary.compare = Some(Compare::Ratio);
    canary.min_samples = 5;
    let mut out = Vec::new();
    for (i, (mut s, &(f, k))) in [slow, quiet, canary].into_iter().zip(timing).enumerate() {
        s.for_ = secs(f);
        s.keep_firing_for = secs(k);
        out.push(s.validate(i).unwrap());
    }
    out
}

fn evaluator(timing: &[(u64, u64); 3]) -> Evaluator {
    let mut ev = Evaluator::new(rules(timing));
    ev.set_canary_pairs(vec![CanaryPair {
        model: "m".into(),
        baseline: "v1".into(),
        canary: "v2".into(),
    }]);
    ev
}

fn rows(i: usize, step: &Step) -> Vec<WindowStatsRow> {
    let end = (i as i64 + 1) * SLIDE;
    SERIES
        .iter()
        .zip(step)
        .filter_map(|(&(m, v), s)| s.map(|(req, p99)| window(m, v, end, req, p99)))
        .collect()
}

fn feed(ev: &mut Evaluator, i: usize, step: &Step) -> Vec<AlertEvent> {
    let windows = rows(i, step);
    ev.observe(WindowRows { windows: &windows, ..WindowRows::default() })
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let series = prop_oneof![
        1 => Just(None),
        6 => (0u64..60, prop_oneof![Just(80.0), Just(100.0), Just(150.0), Just(200.0)]).prop_map(Some),
    ];
    proptest::collection::vec(series, SERIES.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn restore_then_replay_continues_exactly(
        steps in proptest::collection::vec(step_strategy(), 1..80),
        timing in proptest::array::uniform3((0u64..4, 0u64..4)),
        restart in any::<proptest::sample::Index>(),
        replay in 0usize..6,
    ) {
        // Uninterrupted, remembering which step produced each event.
        let mut a = evaluator(&timing);
        let per_step: Vec<Vec<AlertEvent>> =
            steps.iter().enumerate().map(|(i, s)| feed(&mut a, i, s)).collect();
        let r = restart.index(steps.len() + 1);

        // Interrupted after step r - 1: the log is every event so far.
        let mut first = evaluator(&timing);
        let mut log = Vec::new();
        for (i, s) in steps.iter().enumerate().take(r) {
            log.extend(feed(&mut first, i, s).iter().map(|e| e.to_row(i as u64)));
        }
        prop_assert_eq!(first.snapshot().len(), {
            let mut fps: Vec<_> = log.iter().map(|r| r.fingerprint.clone()).collect();
            fps.sort();
            fps.dedup();
            fps.len()
        });
        let mut b = evaluator(&timing);
        b.restore(&log);
        prop_assert_eq!(b.snapshot(), first.snapshot());
        // The engine resumes from a checkpoint up to `replay` windows before the restart.
        let from = r.saturating_sub(replay);
        let after: Vec<AlertEvent> =
            steps.iter().enumerate().skip(from).flat_map(|(i, s)| feed(&mut b, i, s)).collect();
        let expected: Vec<AlertEvent> = per_step[r..].iter().flatten().cloned().collect();
        prop_assert_eq!(&after, &expected);
        prop_assert_eq!(b.snapshot(), a.snapshot());
        // Sequence numbers never repeat within a fingerprint.
        let mut keys: Vec<(String, u64)> = log
            .iter()
            .map(|r| (r.fingerprint.clone(), r.seq))
            .chain(after.iter().map(|e| (e.fingerprint.clone(), e.seq)))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len(), n);
    }

    #[test]
    fn a_model_handed_to_another_instance_continues_exactly(
        steps in proptest::collection::vec(step_strategy(), 1..80),
        timing in proptest::array::uniform3((0u64..4, 0u64..4)),
        handover in any::<proptest::sample::Index>(),
        replay in 0usize..6,
    ) {
        let mut whole = evaluator(&timing);
        let per_step: Vec<Vec<AlertEvent>> =
            steps.iter().enumerate().map(|(i, s)| feed(&mut whole, i, s)).collect();
        let r = handover.index(steps.len() + 1);
        // Only the series of model "m" (`true`) or of the others (`false`).
        let only = |step: &Step, m: bool| -> Step {
            SERIES.iter().zip(step).map(|(&(model, _), s)| if (model == "m") == m { *s } else { None }).collect()
        };

        // Instance A evaluates everything before the handover, logging every event.
        let mut a = evaluator(&timing);
        let mut log = Vec::new();
        for (i, s) in steps.iter().enumerate().take(r) {
            log.extend(feed(&mut a, i, s).iter().map(|e| e.to_row(i as u64)));
        }
        // Model m's partition moves to instance B: A forgets its versions without an event.
        let mut gone = a.release("m", "v1");
        gone.extend(a.release("m", "v2"));
        prop_assert!(a.snapshot().iter().all(|r| r.model != "m"));
        let mut logged: Vec<&str> =
            log.iter().filter(|r| r.model == "m").map(|r| r.fingerprint.as_str()).collect();
        logged.sort_unstable();
        logged.dedup();
        for f in &logged {
            prop_assert!(gone.iter().any(|g| g == f), "{} not released", f);
        }

        // B (running all along without model m) restores m's rows of the log, then replays
        // from up to `replay` windows before the handover.
        let mut b = evaluator(&timing);
        let rows_m: Vec<_> = log.iter().filter(|r| r.model == "m").cloned().collect();
        b.restore(&rows_m);
        let from = r.saturating_sub(replay);
        let after_b: Vec<AlertEvent> =
            (from..steps.len()).flat_map(|i| feed(&mut b, i, &only(&steps[i], true))).collect();
        let expected_m: Vec<AlertEvent> =
            per_step[r..].iter().flatten().filter(|e| e.model == "m").cloned().collect();
        prop_assert_eq!(&after_b, &expected_m);
        // A goes on with the others, as if nothing happened.
        let after_a: Vec<AlertEvent> =
            (r..steps.len()).flat_map(|i| feed(&mut a, i, &only(&steps[i], false))).collect();
        let expected_rest: Vec<AlertEvent> =
            per_step[r..].iter().flatten().filter(|e| e.model != "m").cloned().collect();
        prop_assert_eq!(&after_a, &expected_rest);
    }
}
