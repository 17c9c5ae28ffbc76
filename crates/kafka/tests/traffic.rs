//! The traffic model: every incident shows up only in its time range and only for its
//! (model, version); metric counters are monotone except at a configured reset.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use modelwatch_kafka::{
    Event, Incident, IncidentEffect, Scenario, ScenarioConfig, ScenarioError,
    scenario::{
        CategoryConfig, ErrorClass, EventTime, FeatureConfig, MetricsConfig, ModelConfig,
        NumericDist,
    },
};

const START: i64 = 1_779_000_000_000;
const SECS: i64 = 300;

fn at(s: u64) -> EventTime {
    EventTime::Offset(Duration::from_secs(s))
}

fn incident(version: Option<&str>, from: u64, until: u64, effect: IncidentEffect) -> Incident {
    Incident {
        model: "m".into(),
        version: version.map(Into::into),
        from: at(from),
        until: at(until),
        effect,
    }
}

fn config() -> ScenarioConfig {
    let model = ModelConfig {
        name: "m".into(),
        baseline: "v1".into(),
        canary: Some("v2".into()),
        canary_share: 0.5,
        errors: vec![ErrorClass { status: "timeout".into(), rate: 0.002 }],
        features: vec![FeatureConfig {
            name: "x".into(),
            dist: NumericDist::Normal { mean: 10.0, std_dev: 2.0 },
        }],
        categories: vec![CategoryConfig {
            name: "c".into(),
            values: vec!["a".into(), "b".into(), "c".into()],
            weights: vec![],
        }],
        ..ModelConfig::default()
    };
    // A second model that no incident names.
    let other = ModelConfig { name: "other".into(), weight: 0.2, ..model.clone() };
    let v2 = Some("v2");
    ScenarioConfig {
        seed: 11,
        start_time_ms: Some(START),
        requests_per_second: 1_200.0,
        hosts_per_version: 2,
        metrics: MetricsConfig { enabled: true, interval: Duration::from_secs(10) },
        models: vec![model, other],
        incidents: vec![
            incident(
                v2,
                50,
                100,
                IncidentEffect::ErrorSpike { status: "timeout".into(), rate: 0.2 },
            ),
            incident(v2, 100, 200, IncidentEffect::TailLatencyShift { multiplier: 1.5 }),
            incident(v2, 100, 150, IncidentEffect::PredictionDrift { shift: 0.2, scale: 1.0 }),
            incident(
                v2,
                150,
                250,
                IncidentEffect::FeatureDrift { feature: "x".into(), shift: 3.0, scale: 1.0 },
            ),
            incident(v2, 200, 250, IncidentEffect::LatencyShift { multiplier: 2.0 }),
            incident(
                v2,
                200,
                300,
                IncidentEffect::CategoryDrift { feature: "c".into(), weights: vec![8.0, 1.0, 1.0] },
            ),
            incident(None, 250, 300, IncidentEffect::TrafficSplit { canary_share: 0.8 }),
            incident(v2, 120, 121, IncidentEffect::CounterReset),
        ],
        ..ScenarioConfig::default()
    }
}

/// What the tests read of a request.
#[derive(Debug, Clone)]
struct Req {
    second: i64,
    model: String,
    version: String,
    host: String,
    latency: f64,
    status: String,
    x: f64,
    c: String,
    score: f64,
}

#[derive(Debug, Clone)]
struct Sample {
    t: i64,
    model: String,
    version: String,
    host: String,
    name: &'static str,
    value: f64,
}

struct Data {
    reqs: Vec<Req>,
    metrics: Vec<Sample>,
}

/// One generation of the incident scenario, shared by the tests.
static DATA: LazyLock<Data> = LazyLock::new(|| {
    let s = Scenario::new(&config(), 0).unwrap();
    let (mut reqs, mut metrics) = (Vec::new(), Vec::new());
    let mut last = i64::MIN;
    for e in s.events() {
        let t = e.event_time_ms();
        assert!(t >= last, "event time went back from {last} to {t}");
        last = t;
        if t >= START + SECS * 1000 {
            break;
        }
        match e {
            Event::Inference(i) => reqs.push(Req {
                second: (i.event_time_ms - START) / 1000,
                model: i.model.into(),
                version: i.version.into(),
                host: i.attribute("host").unwrap().into(),
                latency: i.latency_ms,
                status: i.status.into(),
                x: i.feature("x").unwrap(),
                c: i.category("c").unwrap().into(),
                score: i.prediction.unwrap(),
            }),
            Event::Metric(m) => metrics.push(Sample {
                t: m.event_time_ms,
                model: m.model.into(),
                version: m.version.into(),
                host: m.attribute("host").unwrap().into(),
                name: m.name,
                value: m.value,
            }),
        }
    }
    Data { reqs, metrics }
});

/// Requests of model `m`, `version`, whose second is in one of the ranges.
fn select<'d>(version: &str, ranges: &[(i64, i64)]) -> Vec<&'d Req> {
    DATA.reqs
        .iter()
        .filter(|r| {
            r.model == "m"
                && r.version == version
                && ranges.iter().any(|&(a, b)| r.second >= a && r.second < b)
        })
        .collect()
}

fn quantile(reqs: &[&Req], q: f64) -> f64 {
    let mut v: Vec<f64> = reqs.iter().map(|r| r.latency).collect();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn mean(reqs: &[&Req], f: impl Fn(&Req) -> f64) -> f64 {
    reqs.iter().map(|r| f(r)).sum::<f64>() / reqs.len() as f64
}

fn share(reqs: &[&Req], f: impl Fn(&Req) -> bool) -> f64 {
    reqs.iter().filter(|r| f(r)).count() as f64 / reqs.len() as f64
}

fn close(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!((got - want).abs() <= tolerance, "{what}: got {got}, want {want} +- {tolerance}");
}

/// Outside every latency incident.
const CALM: &[(i64, i64)] = &[(0, 100), (250, 300)];

#[test]
fn tail_shift_moves_the_canary_p99_in_its_window_and_leaves_the_median() {
    let inside = select("v2", &[(100, 200)]);
    let outside = select("v2", CALM);
    assert!(inside.len() > 40_000 && outside.len() > 50_000);
    close("canary p99 ratio", quantile(&inside, 0.99) / quantile(&outside, 0.99), 1.5, 0.12);
    close("canary p50 ratio", quantile(&inside, 0.5) / quantile(&outside, 0.5), 1.0, 0.03);
    // The baseline in the same window is untouched.
    let base_in = select("v1", &[(100, 200)]);
    let base_out = select("v1", CALM);
    close("baseline p99 ratio", quantile(&base_in, 0.99) / quantile(&base_out, 0.99), 1.0, 0.1);
    // And the canary outside its window looks like the baseline.
    close("canary vs baseline p99", quantile(&outside, 0.99) / quantile(&base_out, 0.99), 1.0, 0.1);
}

#[test]
fn latency_shift_moves_the_whole_canary_distribution() {
    let inside = select("v2", &[(200, 250)]);
    let outside = select("v2", CALM);
    close("p50 ratio", quantile(&inside, 0.5) / quantile(&outside, 0.5), 2.0, 0.08);
    close("p10 ratio", quantile(&inside, 0.1) / quantile(&outside, 0.1), 2.0, 0.08);
    let base = select("v1", &[(200, 250)]);
    close(
        "baseline p50 ratio",
        quantile(&base, 0.5) / quantile(&select("v1", CALM), 0.5),
        1.0,
        0.03,
    );
}

#[test]
fn error_spike_raises_the_canary_error_rate_only_in_its_window() {
    let timeout = |r: &Req| r.status == "timeout";
    close("inside", share(&select("v2", &[(50, 100)]), timeout), 0.2 + 0.8 * 0.002, 0.015);
    close("outside", share(&select("v2", &[(0, 50), (100, 300)]), timeout), 0.002, 0.0015);
    close("baseline inside", share(&select("v1", &[(50, 100)]), timeout), 0.002, 0.002);
}

#[test]
fn feature_and_category_drift_only_for_the_canary_in_the_window() {
    let x = |r: &Req| r.x;
    close("canary x inside", mean(&select("v2", &[(150, 250)]), x), 13.0, 0.08);
    close("canary x outside", mean(&select("v2", &[(0, 150), (250, 300)]), x), 10.0, 0.05);
    close("baseline x inside", mean(&select("v1", &[(150, 250)]), x), 10.0, 0.08);
    let a = |r: &Req| r.c == "a";
    close("canary a inside", share(&select("v2", &[(200, 300)]), a), 0.8, 0.02);
    close("canary a outside", share(&select("v2", &[(0, 200)]), a), 1.0 / 3.0, 0.02);
    close("baseline a inside", share(&select("v1", &[(200, 300)]), a), 1.0 / 3.0, 0.02);
}

#[test]
fn prediction_drift_shifts_the_canary_scores_in_the_window() {
    let score = |r: &Req| r.score;
    // Beta(2, 8) has mean 0.2.
    close("inside", mean(&select("v2", &[(100, 150)]), score), 0.4, 0.01);
    close("outside", mean(&select("v2", &[(0, 100), (150, 300)]), score), 0.2, 0.01);
    close("baseline", mean(&select("v1", &[(100, 150)]), score), 0.2, 0.01);
    let fraud = |r: &Req| r.score >= 0.5;
    assert!(
        share(&select("v2", &[(100, 150)]), fraud) > 3.0 * share(&select("v2", &[(0, 100)]), fraud)
    );
}

#[test]
fn traffic_split_change_is_visible_in_the_counts() {
    let canary_share = |from, until| {
        let v2 = select("v2", &[(from, until)]).len() as f64;
        let v1 = select("v1", &[(from, until)]).len() as f64;
        v2 / (v1 + v2)
    };
    close("inside", canary_share(250, 300), 0.8, 0.01);
    close("outside", canary_share(0, 250), 0.5, 0.01);
    // The other model keeps its split.
    let other = |v: &str| {
        DATA.reqs.iter().filter(|r| r.model == "other" && r.version == v && r.second >= 250).count()
            as f64
    };
    close("other model", other("v2") / (other("v1") + other("v2")), 0.5, 0.05);
}

#[test]
fn request_counters_are_monotone_except_at_the_configured_reset_and_match_the_traffic() {
    type Key<'d> = (&'d str, &'d str, &'d str);
    let mut series: HashMap<Key<'_>, Vec<(i64, f64)>> = HashMap::new();
    for m in DATA.metrics.iter().filter(|m| m.name == "requests_total") {
        series.entry((&m.model, &m.version, &m.host)).or_default().push((m.t, m.value));
    }
    // 2 models x 2 versions x 2 hosts, one sample every 10 s.
    assert_eq!(series.len(), 8);
    let reset_tick = START + 120_000;
    for (key, samples) in &series {
        // Ticks at 10 s, 20 s, ..., 290 s.
        assert_eq!(samples.len(), (SECS / 10 - 1) as usize, "{key:?}");
        for w in samples.windows(2) {
            let ((_, a), (t, b)) = (w[0], w[1]);
            if *key.0 == *"m" && *key.1 == *"v2" && t == reset_tick {
                assert!(b < a / 5.0, "{key:?} did not reset at {t}: {a} -> {b}");
            } else {
                assert!(b >= a, "{key:?} went down at {t}: {a} -> {b}");
            }
        }
        // Without a reset the counter equals the requests the stream gave that host.
        if *key.1 == *"v1" {
            for &(t, value) in samples {
                let served = DATA
                    .reqs
                    .iter()
                    .filter(|r| r.model == key.0 && r.host == key.2 && START + r.second * 1000 < t)
                    .count();
                // Requests are bucketed by second above; compare with a second's slack.
                let slack = DATA
                    .reqs
                    .iter()
                    .filter(|r| r.model == key.0 && r.host == key.2)
                    .filter(|r| START + r.second * 1000 >= t - 1000 && START + r.second * 1000 < t)
                    .count();
                assert!(
                    value >= served as f64 && value <= (served + slack) as f64,
                    "{key:?} at {t}: counter {value}, served {served} (+{slack})"
                );
            }
        }
    }
    // Gauges exist for every series and stay in range.
    for m in DATA.metrics.iter().filter(|m| m.name == "gpu_utilization") {
        assert!((0.0..=100.0).contains(&m.value));
    }
    assert!(DATA.metrics.iter().any(|m| m.name == "queue_depth"));
    assert!(DATA.metrics.iter().any(|m| m.name == "memory_bytes" && m.value > 1e9));
}

#[test]
fn invalid_scenarios_fail_with_named_errors() {
    let with = |f: &dyn Fn(&mut ScenarioConfig)| {
        let mut c = config();
        f(&mut c);
        Scenario::new(&c, 0).unwrap_err()
    };
    assert!(matches!(
        with(&|c| c.incidents[0].model = "nope".into()),
        ScenarioError::UnknownModel { incident: 0, .. }
    ));
    assert!(matches!(
        with(&|c| c.incidents[1].version = Some("v9".into())),
        ScenarioError::UnknownVersion { incident: 1, .. }
    ));
    assert!(matches!(
        with(&|c| c.incidents[3].effect =
            IncidentEffect::FeatureDrift { feature: "c".into(), shift: 1.0, scale: 1.0 }),
        ScenarioError::UnknownFeature { incident: 3, .. }
    ));
    assert!(matches!(
        with(&|c| c.incidents[0].until = at(10)),
        ScenarioError::EmptyWindow { incident: 0, .. }
    ));
    assert!(matches!(
        with(&|c| c.models[0].categories[0].weights = vec![1.0]),
        ScenarioError::WeightsMismatch { weights: 1, values: 3, .. }
    ));
    assert!(matches!(
        with(&|c| c.models[0].prediction.label_edges = vec![0.3, 0.6]),
        ScenarioError::LabelEdges { labels: 2, edges: 2, .. }
    ));
    assert!(matches!(
        with(&|c| c.models[0].latency.sigma = -1.0),
        ScenarioError::OutOfRange { .. }
    ));
    assert!(matches!(with(&|c| c.models[1].name = "m".into()), ScenarioError::DuplicateModel(_)));
    assert!(matches!(
        with(&|c| {
            c.models[0].canary = None;
            c.incidents.retain(|i| i.version.is_none());
        }),
        ScenarioError::NoCanary { .. }
    ));
    // The error names the field.
    let e = with(&|c| c.models[0].canary_share = 1.5);
    assert_eq!(e.to_string(), "model `m` canary_share = 1.5 is out of range: in [0, 1]");
}

#[test]
fn the_default_scenario_is_valid_and_keys_by_model() {
    let s = Scenario::new(&ScenarioConfig::default(), START).unwrap();
    let names: Vec<_> = s.events().take(3_000).map(|e| e.model().to_owned()).collect();
    assert!(
        names.iter().any(|n| n == "fraud-detector") && names.iter().any(|n| n == "support-chat")
    );
}
