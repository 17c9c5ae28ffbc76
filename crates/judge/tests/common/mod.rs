//! Drives the real traffic generator through a real tracker into a `PairJudge`, in simulated
//! event time (no wall clock), evaluating at every window close.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::sync::Arc;

use modelwatch_core::event::InferenceRecord;
use modelwatch_core::{CoreConfig, Output, PaneView, Source, Tracker, WindowView};
use modelwatch_judge::{Arm, ArmCounts, Decision, JudgeSpec, PairJudge, Verdict};
use modelwatch_kafka::scenario::ModelConfig;
use modelwatch_kafka::{Event, Incident, IncidentEffect, Scenario, ScenarioConfig};

/// Scenario start (the generator's default start time).
pub const START_MS: i64 = modelwatch_kafka::scenario::DEFAULT_START_TIME_MS;

/// The pane_bins kind as the judge reports it.
fn kind(k: modelwatch_core::bins::FeatureKind) -> &'static str {
    use modelwatch_core::bins::FeatureKind::*;
    match k {
        Numeric | Categorical => "feature",
        Prediction | Label => "prediction",
    }
}

/// A `PaneView` as `ArmCounts` (the same numbers the engine writes to `pane_stats` and
/// `pane_bins`).
pub fn arm_counts(p: &PaneView<'_>) -> ArmCounts {
    let v = p.view();
    let mut c = ArmCounts {
        requests: v.requests(),
        errors: v.errors(),
        latency: v.latency_buckets().iter().map(|(b, n)| (b, u64::from(n))).collect(),
        ..ArmCounts::default()
    };
    for (f, counts) in v.features() {
        if counts.iter().any(|&x| x > 0) {
            c.bins.insert((kind(f.kind).to_owned(), f.name.to_owned()), counts.to_vec());
        }
    }
    c
}

struct Collect {
    baseline: String,
    canary: String,
    panes: Vec<(Arm, i64, i64, ArmCounts)>,
    ends: BTreeSet<i64>,
}

impl Output for Collect {
    fn pane_closed(&mut self, p: &PaneView<'_>) {
        let v = p.view().version();
        let arm = if v == self.canary {
            Arm::Canary
        } else if v == self.baseline {
            Arm::Baseline
        } else {
            return;
        };
        if p.view().requests() > 0 {
            self.panes.push((arm, p.start_ms(), p.end_ms(), arm_counts(p)));
        }
    }
    fn window_closed(&mut self, w: &WindowView<'_>) {
        self.ends.insert(w.end_ms());
    }
}

/// One model (the generator's fraud detector: 7 features, a prediction and a label) with a
/// canary, metrics off.
pub fn config(seed: u64, rps: f64, share: f64, incidents: Vec<IncidentEffect>) -> ScenarioConfig {
    let model = ModelConfig { canary_share: share, ..ModelConfig::fraud_detector() };
    ScenarioConfig {
        seed,
        start_time_ms: Some(START_MS),
        requests_per_second: rps,
        metrics: modelwatch_kafka::scenario::MetricsConfig { enabled: false, ..Default::default() },
        incidents: incidents
            .into_iter()
            .map(|effect| Incident {
                model: model.name.clone(),
                version: model.canary.clone(),
                from: modelwatch_kafka::scenario::EventTime::Millis(START_MS),
                until: modelwatch_kafka::scenario::EventTime::Millis(START_MS + 86_400_000),
                effect,
            })
            .collect(),
        models: vec![model],
        ..ScenarioConfig::default()
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    /// Every (window, cumulative) pair, in order.
    pub verdicts: Vec<[Verdict; 2]>,
    /// The judge at the end.
    pub judge: PairJudge,
}

impl Run {
    /// Cumulative verdicts in order.
    pub fn cumulative(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().map(|v| &v[1])
    }
    /// The first cumulative verdict with this decision.
    pub fn first(&self, d: Decision) -> Option<&Verdict> {
        self.cumulative().find(|v| v.decision == d)
    }
    /// The last cumulative verdict.
    pub fn last(&self) -> &Verdict {
        &self.verdicts.last().expect("at least one evaluation")[1]
    }
}

/// Runs `cfg` for `duration_ms` of event time (or until `stop` says so after an evaluation).
pub fn run(
    cfg: &ScenarioConfig,
    duration_ms: i64,
    spec: JudgeSpec,
    expected_share: Option<f64>,
    mut stop: impl FnMut(&[Verdict; 2]) -> bool,
) -> Run {
    let scenario = Scenario::new(cfg, START_MS).expect("valid scenario");
    let core = CoreConfig::default();
    let window_ms = core.windows.window_ms();
    let mut tracker = Tracker::new(core);
    let model = &cfg.models[0];
    let mut out = Collect {
        baseline: model.baseline.clone(),
        canary: model.canary.clone().expect("a canary"),
        panes: Vec::new(),
        ends: BTreeSet::new(),
    };
    let mut judge = PairJudge::new(Arc::new(spec), expected_share, window_ms);
    let mut rec = InferenceRecord::default();
    let mut verdicts = Vec::new();
    for (offset, ev) in scenario.events().enumerate() {
        if ev.event_time_ms() >= START_MS + duration_ms {
            break;
        }
        let Event::Inference(i) = ev else { continue };
        i.fill(&mut rec);
        let src = Source { partition: 0, offset: offset as i64, record_ts_ms: i.event_time_ms };
        tracker.record_inference(src, &rec);
        tracker.advance(&mut out);
        if out.ends.is_empty() {
            continue;
        }
        for (arm, s, e, c) in out.panes.drain(..) {
            judge.add_pane(arm, s, e, &c);
        }
        let ends = std::mem::take(&mut out.ends);
        for end in ends {
            let v = judge.evaluate(end);
            let pair: [Verdict; 2] = v.try_into().expect("window and cumulative verdicts");
            let done = stop(&pair);
            verdicts.push(pair);
            if done {
                return Run { verdicts, judge };
            }
        }
    }
    Run { verdicts, judge }
}

/// Minutes from the scenario start.
pub fn minutes(v: &Verdict) -> f64 {
    (v.end_ms - START_MS) as f64 / 60_000.0
}

/// The metric of a verdict.
pub fn metric<'a>(v: &'a Verdict, name: &str) -> &'a modelwatch_judge::MetricVerdict {
    v.metrics.iter().find(|m| m.metric == name).unwrap_or_else(|| panic!("no metric {name}"))
}

/// A shared spec.
pub fn spec() -> JudgeSpec {
    JudgeSpec::default()
}
