//! End to end on the real broker and ClickHouse: generated traffic for 3 models x 2 versions over
//! 4 partitions through `modelwatch run`, checked against the same events regenerated in-process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Instance, Setup, free_port, services, tsv};
use modelwatch_kafka::scenario::{Incident, IncidentEffect, ModelConfig};
use modelwatch_kafka::{Event, GenOptions, Scenario, ScenarioConfig};

const WINDOW_MS: i64 = 30_000;
const SLIDE_MS: i64 = 5_000;
const COUNT: u64 = 200_000;

fn scenario(start_ms: i64, incident_at_ms: i64) -> ScenarioConfig {
    let mut ranker = ModelConfig::fraud_detector();
    ranker.name = "ranker".into();
    ranker.baseline = "r1".into();
    ranker.canary = Some("r2".into());
    let mut fraud = ModelConfig::fraud_detector();
    fraud.canary_share = 0.3;
    ScenarioConfig {
        seed: 7,
        start_time_ms: Some(start_ms),
        requests_per_second: 300.0,
        models: vec![fraud, ModelConfig::support_chat(), ranker],
        incidents: vec![Incident {
            model: "fraud-detector".into(),
            version: Some("v42".into()),
            from: modelwatch_kafka::scenario::EventTime::Millis(incident_at_ms),
            until: modelwatch_kafka::scenario::EventTime::Millis(start_ms + 24 * 3_600_000),
            effect: IncidentEffect::FeatureDrift {
                feature: "amount".into(),
                shift: 0.0,
                scale: 4.0,
            },
        }],
        ..ScenarioConfig::default()
    }
}

#[derive(Default)]
struct Truth {
    /// (model, version) -> (requests, errors)
    counts: BTreeMap<(String, String), (u64, u64)>,
    /// (model, version) -> (event time, latency)
    latencies: BTreeMap<(String, String), Vec<(i64, f64)>>,
    /// (model, version, name) -> (event time, value)
    metrics: BTreeMap<(String, String, String), Vec<(i64, f64)>>,
    last_event_ms: i64,
    inference_messages: u64,
}

fn truth(cfg: &ScenarioConfig) -> Truth {
    let s = Scenario::new(cfg, 0).unwrap();
    let mut t = Truth::default();
    for e in s.events().take(COUNT as usize) {
        t.last_event_ms = t.last_event_ms.max(e.event_time_ms());
        match e {
            Event::Inference(i) => {
                t.inference_messages += 1;
                let k = (i.model.to_owned(), i.version.to_owned());
                let c = t.counts.entry(k.clone()).or_default();
                c.0 += 1;
                c.1 += u64::from(i.status != "ok");
                t.latencies.entry(k).or_default().push((i.event_time_ms, i.latency_ms));
            }
            Event::Metric(m) => {
                let k = (m.model.to_owned(), m.version.to_owned(), m.name.to_owned());
                t.metrics.entry(k).or_default().push((m.event_time_ms, m.value));
            }
        }
    }
    t
}

fn nearest_rank(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[test]
fn generated_traffic_is_counted_exactly_with_accurate_quantiles_drift_and_metrics() {
    let Some(svc) = services("e2e pipeline") else { return };
    let setup = Setup::new(&svc, "e2e_pipe", 4);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // Event time starts three hours ago; the record timestamps equal the event times.
    let start = (now - 3 * 3_600_000) / 60_000 * 60_000;
    let incident_at = start + 6 * 60_000;
    let cfg = scenario(start, incident_at);
    let truth = truth(&cfg);

    let opts = GenOptions {
        brokers: svc.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: Some(COUNT),
        scenario: cfg.clone(),
        ..GenOptions::default()
    };
    let report = modelwatch_kafka::run(opts).unwrap();
    assert_eq!((report.delivered, report.failed), (COUNT, 0));
    assert_eq!(report.inference_messages, truth.inference_messages);

    let port = free_port();
    let extra = "[drift]\nedge_samples = 500\nreference_period = \"2m\"\n\n\
                 [[canary]]\nmodel = \"fraud-detector\"\nbaseline = \"v41\"\ncanary = \"v42\"\n";
    let mw = Instance::start("e2e_pipe", &setup.config(port, extra), port);
    let expected_requests: u64 = truth.counts.values().map(|c| c.0).sum();
    let total = || {
        let t = setup.sql("SELECT sum(requests) FROM {db}.pane_stats FINAL");
        t.trim().parse::<u64>().unwrap_or(0)
    };
    mw.wait_until("every pane is written", Duration::from_secs(240), |_| {
        total() >= expected_requests
    });
    // Let a few more flushes pass: nothing may be added twice.
    std::thread::sleep(Duration::from_secs(3));

    // Requests and errors per (model, version), exactly.
    let rows = tsv(&setup.sql(
        "SELECT model, version, sum(requests), sum(errors) FROM {db}.pane_stats FINAL \
         GROUP BY model, version ORDER BY model, version",
    ));
    let got: BTreeMap<(String, String), (u64, u64)> = rows
        .iter()
        .map(|r| ((r[0].clone(), r[1].clone()), (r[2].parse().unwrap(), r[3].parse().unwrap())))
        .collect();
    assert_eq!(got, truth.counts, "pane_stats totals differ from what was produced");
    assert_eq!(truth.counts.len(), 6, "3 models x 2 versions");

    // p99 of a full window within 1% of the exact p99, for every version.
    let end = (start + 5 * 60_000) / SLIDE_MS * SLIDE_MS;
    for ((model, version), lat) in &truth.latencies {
        let in_window: Vec<f64> = lat
            .iter()
            .filter(|(t, _)| *t >= end - WINDOW_MS && *t < end)
            .map(|(_, l)| *l)
            .collect();
        if in_window.len() < 100 {
            continue;
        }
        let exact = nearest_rank(in_window.clone(), 0.99);
        let row = setup.sql(&format!(
            "SELECT latency_p99_ms, requests FROM {{db}}.window_stats FINAL \
             WHERE model = '{model}' AND version = '{version}' AND window_end_ms = {end}"
        ));
        let r = tsv(&row);
        assert_eq!(r.len(), 1, "window {end} of {model}/{version} missing");
        let p99: f64 = r[0][0].parse().unwrap();
        let n: usize = r[0][1].parse().unwrap();
        assert_eq!(n, in_window.len(), "{model}/{version} window requests");
        assert!(
            (p99 - exact).abs() <= 0.01 * exact,
            "{model}/{version}: p99 {p99} vs exact {exact} over {n} requests"
        );
    }

    // The canary's `amount` drift against its baseline rises at least tenfold after the incident.
    let kl = |from: i64, to: i64| -> f64 {
        let t = setup.sql(&format!(
            "SELECT avg(kl) FROM {{db}}.drift_scores FINAL WHERE model = 'fraud-detector' \
             AND version = 'v42' AND reference = 'version:v41' AND feature = 'amount' \
             AND window_end_ms > {from} AND window_end_ms <= {to}"
        ));
        t.trim().parse::<f64>().unwrap_or(f64::NAN)
    };
    let before = kl(start + 2 * 60_000, incident_at);
    let after = kl(incident_at + WINDOW_MS, truth.last_event_ms - 60_000);
    assert!(before.is_finite() && after.is_finite(), "no drift rows: {before} {after}");
    assert!(after >= 10.0 * before, "KL before {before}, after {after}");

    // Metric events: counts, minima and maxima per window.
    let checked = tsv(&setup.sql(
        "SELECT model, version, name, window_end_ms, count, min, max FROM {db}.metric_stats FINAL \
         WHERE window_end_ms % 60000 = 0 ORDER BY model, version, name, window_end_ms",
    ));
    assert!(checked.len() > 50, "too few metric_stats rows: {}", checked.len());
    for r in &checked {
        let key = (r[0].clone(), r[1].clone(), r[2].clone());
        let end: i64 = r[3].parse().unwrap();
        let vals: Vec<f64> = truth.metrics[&key]
            .iter()
            .filter(|(t, _)| *t >= end - WINDOW_MS && *t < end)
            .map(|(_, v)| *v)
            .collect();
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(r[4].parse::<usize>().unwrap(), vals.len(), "{r:?}");
        assert_eq!(r[5].parse::<f64>().unwrap(), min, "{r:?}");
        assert_eq!(r[6].parse::<f64>().unwrap(), max, "{r:?}");
    }
    let status = mw.stop();
    assert!(status.success(), "exit status {status:?}");
}
