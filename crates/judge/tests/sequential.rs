//! The false-rollback guarantee by simulation, and restore after a restart, on synthetic panes
//! (fast: no generator, no tracker).

use std::sync::Arc;

use modelwatch_judge::{
    Arm, ArmCounts, Decision, ERROR_RATE, JudgeSpec, JudgeState, LATENCY, LATENCY_TAIL, PairJudge,
    Verdict,
};

const SLIDE: i64 = 10_000;
const WINDOW: i64 = 300_000;

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(1e-300);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `n` requests with a 1% error rate and log-normal latencies (median 20 ms, 2% buckets).
fn pane(rng: &mut fastrand::Rng, n: u64, error_rate: f64, latency_factor: f64) -> ArmCounts {
    let mut c = ArmCounts { requests: n, ..ArmCounts::default() };
    let mut buckets = std::collections::BTreeMap::new();
    for _ in 0..n {
        if rng.f64() < error_rate {
            c.errors += 1;
        }
        let ms = 20.0 * (0.35 * normal(rng)).exp() * latency_factor;
        let b = (ms.ln() / 0.02).round();
        let us = ((b * 0.02).exp() * 1000.0).round() as u32;
        *buckets.entry(us).or_insert(0u64) += 1;
    }
    c.latency = buckets.into_iter().collect();
    c
}

fn judge() -> PairJudge {
    PairJudge::new(Arc::new(JudgeSpec::default()), Some(0.2), WINDOW)
}

/// 300 healthy canaries judged at every slide for 30 minutes (180 looks each): the cumulative
/// (always-valid) decision rolls back at most `alpha` of them, while acting on fixed-horizon
/// tests at every slide (windows, or the cumulative span) would roll back many more.
#[test]
fn false_rollbacks_stay_below_alpha_over_all_looks() {
    let spec = JudgeSpec::default();
    let alpha_m = spec.metric_alpha();
    let runs = 300;
    let (mut sequential, mut windows, mut naive_cumulative) = (0, 0, 0);
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..runs {
        let mut j = judge();
        let (mut s, mut w, mut n) = (false, false, false);
        for k in 0..180i64 {
            let (start, end) = (k * SLIDE, (k + 1) * SLIDE);
            j.add_pane(Arm::Baseline, start, end, &pane(&mut rng, 40, 0.01, 1.0));
            j.add_pane(Arm::Canary, start, end, &pane(&mut rng, 10, 0.01, 1.0));
            let v = j.evaluate(end);
            s |= v[1].decision == Decision::Rollback;
            w |= v[0].decision == Decision::Rollback;
            n |= v[1].metrics.iter().filter(|m| m.critical).any(|m| {
                let p = m.evidence.get("p_fixed_horizon").and_then(serde_json::Value::as_f64);
                let worse = m.statistic.is_some_and(|z| z > 0.0);
                [LATENCY, LATENCY_TAIL, ERROR_RATE].contains(&m.metric.as_str())
                    && worse
                    && p.is_some_and(|p| p < alpha_m)
            });
        }
        sequential += usize::from(s);
        windows += usize::from(w);
        naive_cumulative += usize::from(n);
    }
    let rate = sequential as f64 / runs as f64;
    // Reported by `cargo test -- --nocapture`.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "healthy canaries rolled back, of {runs}: sequential {sequential}, any window {windows}, \
             fixed-horizon cumulative {naive_cumulative}"
        );
    }
    assert!(rate <= spec.alpha, "sequential false-rollback rate {rate}");
    // The contrast that motivates the sequential test.
    assert!(windows > 2 * sequential + 10, "windows {windows}, sequential {sequential}");
    assert!(naive_cumulative > sequential, "naive {naive_cumulative}, sequential {sequential}");
}

/// A canary whose latencies are all 10% higher (the default minimum effect) is caught.
#[test]
fn minimum_latency_effect_is_caught() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut caught = 0;
    for _ in 0..20 {
        let mut j = judge();
        for k in 0..180i64 {
            let (start, end) = (k * SLIDE, (k + 1) * SLIDE);
            j.add_pane(Arm::Baseline, start, end, &pane(&mut rng, 40, 0.01, 1.0));
            j.add_pane(Arm::Canary, start, end, &pane(&mut rng, 10, 0.01, 1.1));
            if j.evaluate(end)[1].decision == Decision::Rollback {
                caught += 1;
                break;
            }
        }
    }
    assert!(caught >= 18, "caught {caught} of 20");
}

/// A judge restored from its state (through JSON), the cumulative counts and the last
/// window's panes gives the same verdicts as one that never stopped; replayed panes are
/// ignored.
#[test]
fn restore_continues_identically() {
    let mut rng = fastrand::Rng::with_seed(3);
    let panes: Vec<(Arm, i64, i64, ArmCounts)> = (0..120i64)
        .flat_map(|k| {
            let (s, e) = (k * SLIDE, (k + 1) * SLIDE);
            // Baseline before the canary starts (only in windows), and a pane in two pieces.
            let mut v = vec![(Arm::Baseline, s, e, pane(&mut rng, 20, 0.01, 1.0))];
            v.push((Arm::Baseline, s, e, pane(&mut rng, 20, 0.01, 1.0)));
            if k >= 5 {
                v.push((Arm::Canary, s, e, pane(&mut rng, 10, 0.02, 1.05)));
            }
            v
        })
        .collect();
    let feed = |j: &mut PairJudge, k: i64| -> Vec<Verdict> {
        for p in panes.iter().filter(|p| p.2 == (k + 1) * SLIDE) {
            j.add_pane(p.0, p.1, p.2, &p.3);
        }
        j.evaluate((k + 1) * SLIDE)
    };
    let mut a = judge();
    let mut expected = Vec::new();
    for k in 0..120 {
        expected.push(feed(&mut a, k));
    }
    let mut b = judge();
    for k in 0..60 {
        feed(&mut b, k);
    }
    let cut = 60 * SLIDE;
    assert_eq!(b.first_pane_ms(), Some(5 * SLIDE));
    let json = serde_json::to_string(&b.state()).expect("serializable");
    let state: JudgeState = serde_json::from_str(&json).expect("deserializable");
    assert_eq!(state, b.state());
    // Rebuild the cumulative counts from the panes, as from ClickHouse.
    let first = state.first_pane_ms.expect("canary started");
    let mut cum = [ArmCounts::default(), ArmCounts::default()];
    for p in panes.iter().filter(|p| p.1 >= first && p.2 <= cut) {
        cum[usize::from(p.0 == Arm::Canary)].add(&p.3);
    }
    assert_eq!(&cum[0], b.cumulative(Arm::Baseline));
    assert_eq!(&cum[1], b.cumulative(Arm::Canary));
    let recent = panes.iter().filter(|p| p.1 >= cut - WINDOW && p.2 <= cut).cloned().collect();
    let mut c = judge();
    let [cb, cc] = cum;
    c.restore(state, cb, cc, recent);
    assert_eq!(c.last_end_ms(), Some(cut));
    // A replayed pane is ignored.
    c.add_pane(Arm::Canary, cut - SLIDE, cut, &pane(&mut rng, 1000, 1.0, 3.0));
    for k in 60..120 {
        assert_eq!(feed(&mut c, k), expected[k as usize], "at slide {k}");
    }
    assert!(c.evaluate(cut).is_empty(), "an old end returns nothing");
}
