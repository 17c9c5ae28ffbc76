//! End to end: generated traffic with a latency regression of one canary through `modelwatch
//! run` (restarted while the alert fires) to a signed webhook received by the test on
//! 127.0.0.1, and the `alerts` table in ClickHouse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::Duration;

use common::{
    Instance, Receiver, Regression, Request, Setup, free_port, now_ms, regression_alerting,
    rfc3339_ms, services, tsv,
};
use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect, ModelConfig};
use modelwatch_kafka::{GenOptions, Pacing, ScenarioConfig};

const SECRET: &str = "e2e-webhook-secret";

#[test]
fn a_canary_latency_regression_fires_once_and_resolves_once_across_a_restart() {
    let Some(svc) = services("e2e alerts") else { return };
    let setup = Setup::new(&svc, "e2e_alerts", 1);
    let hook = Receiver::start();

    // Event time: 11 minutes from 15 minutes ago, 20 times faster than wall time (33 s), the
    // canary v42 of fraud-detector 4 times slower from minute 3 to minute 6.
    let traffic = Regression {
        start_ms: (now_ms() - 15 * 60_000) / 5_000 * 5_000,
        minutes: 11,
        from_minute: 3,
        until_minute: 6,
        speedup: 20.0,
        rate: 300.0,
        seed: 11,
        chat: true,
    };
    let (regressed_from, regressed_until) =
        (traffic.regressed_from_ms(), traffic.regressed_until_ms());
    let generator = traffic.spawn(&setup);

    let port = free_port();
    let extra = format!(
        r#"{alerting}
[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
secret = "{SECRET}"
"#,
        alerting = regression_alerting(&["hook"]),
        hook = hook.port
    );
    let config = setup.config(port, &extra);
    let mw = Instance::start("e2e_alerts", &config, port);
    let firing = |r: &Request| r.json()["status"] == "firing";
    mw.wait_until("the firing notification", Duration::from_secs(180), |_| {
        hook.notifications().iter().any(firing)
    });

    // Restart while the alert fires: the restored state and delivery rows keep the replayed
    // windows from notifying again.
    let status = mw.stop();
    assert!(status.success(), "modelwatch did not stop cleanly: {status:?}");
    let mw = Instance::start("e2e_alerts", &config, port);
    let resolved = |r: &Request| r.json()["status"] == "resolved";
    mw.wait_until("the resolved notification", Duration::from_secs(180), |_| {
        hook.notifications().iter().any(resolved)
    });
    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
    // Everything is consumed (idle_timeout closes the last windows); nothing more may arrive.
    std::thread::sleep(Duration::from_secs(8));

    let got = hook.notifications();
    let summary: Vec<String> = got
        .iter()
        .map(|r| {
            let j = r.json();
            format!("{} {}", j["status"], j["commonLabels"])
        })
        .collect();
    assert_eq!(got.len(), 2, "one firing and one resolved notification: {summary:#?}");
    let (fire, resolve) = (&got[0], &got[1]);
    assert!(firing(fire) && resolved(resolve), "{summary:#?}");

    for r in [fire, resolve] {
        assert_eq!(r.path, "/alerts");
        // The signature verifies against the exact body.
        let ts = &r.headers["x-modelwatch-timestamp"];
        let sig = &r.headers["x-modelwatch-signature"];
        let now_s = (now_ms() / 1000) as u64;
        assert!(
            modelwatch_notify::verify_signature(SECRET.as_bytes(), ts, sig, &r.body, now_s),
            "bad signature {sig} at {ts}"
        );
        assert!(!r.headers["idempotency-key"].is_empty());
        let j = r.json();
        assert_eq!(j["version"], "4");
        assert_eq!(j["receiver"], "hook");
        assert_eq!(j["externalURL"], "http://modelwatch.test/");
        assert_eq!(j["groupLabels"]["alertname"], "canary_p99_regression");
        assert_eq!(j["groupLabels"]["model"], "fraud-detector");
        let alerts = j["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{j}");
        let a = &alerts[0];
        assert_eq!(a["labels"]["alertname"], "canary_p99_regression");
        assert_eq!(a["labels"]["model"], "fraud-detector");
        assert_eq!(a["labels"]["version"], "v42");
        assert_eq!(a["labels"]["severity"], "critical");
        let starts = rfc3339_ms(a["startsAt"].as_str().unwrap());
        assert!(
            (regressed_from..regressed_from + 60_000).contains(&starts),
            "startsAt {starts} vs regression at {regressed_from}"
        );
    }
    assert_ne!(fire.headers["idempotency-key"], resolve.headers["idempotency-key"]);
    let a = &fire.json()["alerts"][0];
    let value: f64 = a["annotations"]["value"].as_str().unwrap().parse().unwrap();
    assert!((2.0..8.0).contains(&value), "p99 ratio {value} of a 4x regression");
    assert_eq!(a["annotations"]["threshold"], "1.5");
    let summary = a["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("fraud-detector v42: p99 ") && summary.ends_with("x v41"),
        "{summary}"
    );
    let r = &resolve.json()["alerts"][0];
    let ends = rfc3339_ms(r["endsAt"].as_str().unwrap());
    assert!(
        (regressed_until..regressed_until + 90_000).contains(&ends),
        "endsAt {ends} vs regression until {regressed_until}"
    );

    // The alerts table: the state rows of the episode and a delivery row per attempt.
    let rows = tsv(&setup.sql(
        "SELECT model, version, state, channel, delivery_status FROM {db}.alerts FINAL \
         ORDER BY fingerprint, seq, channel, attempt",
    ));
    let states: Vec<String> = rows
        .iter()
        .filter(|r| r[3].is_empty())
        .map(|r| format!("{}/{} {}", r[0], r[1], r[2]))
        .collect();
    let ours = |s: &str| states.iter().filter(|x| *x == &format!("fraud-detector/v42 {s}")).count();
    assert_eq!((ours("firing"), ours("resolved")), (1, 1), "{states:#?}");
    assert!(
        !states.iter().any(|s| !s.starts_with("fraud-detector/v42") && s.ends_with(" firing")),
        "a healthy version fired: {states:#?}"
    );
    let deliveries: Vec<String> = rows
        .iter()
        .filter(|r| !r[3].is_empty())
        .map(|r| format!("{}/{} {} {} {}", r[0], r[1], r[2], r[3], r[4]))
        .collect();
    assert_eq!(
        deliveries,
        [
            "fraud-detector/v42 firing webhook:hook sent",
            "fraud-detector/v42 resolved webhook:hook sent"
        ],
        "{rows:#?}"
    );
    // Metrics of the second run: it sent the resolution.
    assert!(mw.metric("modelwatch_notifications_total{channel=\"hook\",outcome=\"sent\"}") >= 1.0);
    let status = mw.stop();
    assert!(status.success(), "{status:?}");
}

/// Processing delay at real-time pacing (event time = wall time): from the moment a breaching
/// window can close (its end plus `allowed_lateness`: the first event that moves the watermark
/// past its end) to the webhook's arrival, with `for = "0s"` and `group_wait = "0s"`. Two
/// canaries regress at different times, so two groups give two measurements.
///
/// A closed window waits for the next flush (`[pipeline] flush_interval`, 1 s by default), then
/// for its ClickHouse insert, the `alerts` log row and the POST: measured 0.5 to 1.3 s with the
/// default flush interval, 0.4 s with `flush_interval = "250ms"`.
#[test]
fn processing_delay_from_window_close_to_webhook() {
    let Some(svc) = services("e2e alert delay") else { return };
    let setup = Setup::new(&svc, "e2e_alert_delay", 1);
    let hook = Receiver::start();

    const LATENESS_MS: i64 = 1_000;
    let t0 = now_ms();
    let mut fraud = ModelConfig::fraud_detector();
    fraud.canary_share = 0.5;
    let mut chat = ModelConfig::support_chat();
    chat.canary_share = 0.5;
    let regress = |model: &str, version: &str, from_s: i64| Incident {
        model: model.into(),
        version: Some(version.into()),
        from: EventTime::Millis(t0 + from_s * 1000),
        until: EventTime::Millis(t0 + 60_000),
        effect: IncidentEffect::LatencyShift { multiplier: 8.0 },
    };
    let scenario = ScenarioConfig {
        seed: 13,
        start_time_ms: None, // now: event time runs with the wall clock
        requests_per_second: 300.0,
        models: vec![fraud, chat],
        incidents: vec![
            regress("fraud-detector", "v42", 20),
            regress("support-chat", "2024-06", 28),
        ],
        ..ScenarioConfig::default()
    };
    let opts = GenOptions {
        brokers: svc.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: None,
        duration: Some(Duration::from_secs(40)),
        max_wall_time: Duration::from_secs(60),
        pacing: Pacing::RealTime { speedup: 1.0 },
        scenario,
        ..GenOptions::default()
    };
    let generator = std::thread::spawn(move || modelwatch_kafka::run(opts).unwrap());

    let port = free_port();
    let extra = format!(
        r#"
[windows]
window = "10s"
slide = "1s"
allowed_lateness = "1s"
idle_timeout = "5s"
backlog_idle_timeout = "5m"

[[canary]]
model = "fraud-detector"
baseline = "v41"
canary = "v42"

[[canary]]
model = "support-chat"
baseline = "2024-05"
canary = "2024-06"

[alerts]
group_wait = "0s"
group_interval = "1s"
repeat_interval = "1h"

[[alerts.rules]]
name = "canary_p99_regression"
metric = "latency_p99_ms"
relative_to = "baseline"
compare = "ratio"
op = ">"
threshold = 3.0
min_samples = 300
for = "0s"
channels = ["hook"]

[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
"#,
        hook = hook.port
    );
    let config = setup.config(port, &extra);
    let mw = Instance::start("e2e_alert_delay", &config, port);
    let firing_of = |model: &str| {
        hook.notifications()
            .into_iter()
            .find(|r| r.json()["status"] == "firing" && r.json()["groupLabels"]["model"] == model)
    };
    mw.wait_until("both firing notifications", Duration::from_secs(90), |_| {
        firing_of("fraud-detector").is_some() && firing_of("support-chat").is_some()
    });
    let mut delays = Vec::new();
    for (model, from_s) in [("fraud-detector", 20), ("support-chat", 28)] {
        let r = firing_of(model).unwrap();
        let a = &r.json()["alerts"][0];
        // With `for = 0` the alert starts at the end of the first breaching window.
        let window_end = rfc3339_ms(a["startsAt"].as_str().unwrap());
        let closable = window_end + LATENESS_MS;
        let delay = r.received_ms - closable;
        eprintln!(
            "processing delay {model}: window ending {} ms after the regression began, \
             closable at +{} ms, webhook at +{} ms: {delay} ms",
            window_end - (t0 + from_s * 1000),
            closable - t0,
            r.received_ms - t0
        );
        assert!(window_end > t0 + from_s * 1000, "breaching window before the regression");
        delays.push(delay);
    }
    eprintln!("processing delays (ms): {delays:?}");
    for d in &delays {
        assert!((0..=5_000).contains(d), "processing delay {d} ms (bound 5 s)");
    }
    let status = mw.stop();
    assert!(status.success(), "{status:?}");
    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
}
