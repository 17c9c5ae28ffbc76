//! End to end: two `modelwatch run` instances in one consumer group over a topic of two
//! partitions (messages keyed by model). A canary latency regression fires on instance A while
//! it is alone; B joins and A leaves, so the firing alert moves to B with its partition: B
//! neither notifies it again nor forgets it, and sends its resolution. A silence created
//! through A's API is honoured by B.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Instance, Receiver, Request, Setup, free_port, now_ms, regression_alerting, rfc3339_ms,
    services, tsv,
};
use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect, ModelConfig};
use modelwatch_kafka::{GenOptions, Pacing, ScenarioConfig};

const MINUTE: i64 = 60_000;
/// The regression's notification group.
const FRAUD: &str = "canary_p99_regression/fraud-detector";

/// Event time of the scenario: fraud-detector's canary v42 is 4 times slower from minute 3 to
/// minute 6; support-chat's canary fails a fifth of its requests from minute 7 to minute 10.
fn scenario(start: i64, seed: u64, from_minute: i64) -> ScenarioConfig {
    let mut fraud = ModelConfig::fraud_detector();
    fraud.canary_share = 0.3;
    let mut chat = ModelConfig::support_chat();
    chat.canary_share = 0.3;
    let incident = |model: &str, version: &str, from: i64, until: i64, effect| Incident {
        model: model.into(),
        version: Some(version.into()),
        from: EventTime::Millis(start + from * MINUTE),
        until: EventTime::Millis(start + until * MINUTE),
        effect,
    };
    ScenarioConfig {
        seed,
        start_time_ms: Some(start + from_minute * MINUTE),
        requests_per_second: 200.0,
        models: vec![fraud, chat],
        incidents: vec![
            incident(
                "fraud-detector",
                "v42",
                3,
                6,
                IncidentEffect::LatencyShift { multiplier: 4.0 },
            ),
            incident(
                "support-chat",
                "2024-06",
                7,
                10,
                IncidentEffect::ErrorSpike { status: "error".into(), rate: 0.2 },
            ),
        ],
        ..ScenarioConfig::default()
    }
}

/// Produces `minutes` of event time from `from_minute` on, 20 times faster than real time (a
/// live stream: a backlog produced all at once is served by tansu one partition at a time, and
/// a starved partition with a backlog holds the windows back for `backlog_idle_timeout`).
fn produce(setup: &Setup, start: i64, seed: u64, from_minute: i64, minutes: u64) {
    let opts = GenOptions {
        brokers: setup.services.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: None,
        duration: Some(Duration::from_secs(minutes * 60)),
        max_wall_time: Duration::from_secs(120),
        pacing: Pacing::RealTime { speedup: 20.0 },
        scenario: scenario(start, seed, from_minute),
        ..GenOptions::default()
    };
    let report = modelwatch_kafka::run(opts).unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.stopped_by, modelwatch_kafka::StopReason::Duration, "{report:?}");
}

/// `alertname/model` of a notification's group.
fn group_of(r: &Request) -> String {
    let j = r.json();
    let g = &j["groupLabels"];
    format!("{}/{}", g["alertname"].as_str().unwrap_or("?"), g["model"].as_str().unwrap_or("?"))
}

#[test]
fn a_firing_alert_moves_with_its_partition_and_a_silence_holds_on_every_instance() {
    let Some(svc) = services("e2e instances") else { return };
    let setup = Setup::new(&svc, "e2e_instances", 2);
    let hook = Receiver::start();
    let start = (now_ms() - 20 * MINUTE) / 5_000 * 5_000;
    let extra = format!(
        r#"{alerting}
[[alerts.rules]]
name = "chat_errors"
model = "support-chat"
metric = "error_rate"
op = ">"
threshold = 0.1
min_samples = 50
channels = ["hook"]

[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
"#,
        alerting = regression_alerting(&["hook"]),
        hook = hook.port
    );
    let (port_a, port_b) = (free_port(), free_port());
    let config_a = setup.config(port_a, &extra);
    let config_b = setup.config(port_b, &extra);

    // A alone: minutes 0 to 5, the regression fires.
    let a = Instance::start("e2e_instances_a", &config_a, port_a);
    produce(&setup, start, 1, 0, 5);
    let of = |name: &str, status: &str| {
        hook.notifications()
            .into_iter()
            .filter(|r| group_of(r) == name && r.json()["status"] == status)
            .count()
    };
    a.wait_until("the firing notification", Duration::from_secs(120), |_| of(FRAUD, "firing") > 0);

    // B joins; a silence of support-chat's alerts is created through A.
    let b = Instance::start("e2e_instances_b", &config_b, port_b);
    b.wait_until("B consumes", Duration::from_secs(60), |i| i.status("/readyz") == 200);
    let silence = serde_json::json!({
        "matchers": [{"name": "model", "value": "support-chat"}],
        "duration": "2h",
        "created_by": "e2e",
    });
    let created = Instant::now();
    let status = ureq::post(&format!("{}/api/v1/silences", a.http))
        .header("Content-Type", "application/json")
        .send(silence.to_string())
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 201);

    // A leaves: every partition is B's. B reloads silences every 30 s: the chat errors start
    // only after that.
    let status = a.stop();
    assert!(status.success(), "A did not stop cleanly: {status:?}");
    std::thread::sleep(Duration::from_secs(31).saturating_sub(created.elapsed()));
    produce(&setup, start, 2, 5, 6);
    b.wait_until("the resolved notification", Duration::from_secs(120), |_| {
        of(FRAUD, "resolved") > 0
    });
    let fired_chat = || {
        tsv(&setup.sql(
            "SELECT count() FROM {db}.alerts FINAL WHERE rule = 'chat_errors' \
             AND model = 'support-chat' AND state = 'firing' AND channel = ''",
        ))[0][0]
            .parse::<u64>()
            .unwrap()
    };
    b.wait_until("chat_errors fires (silenced)", Duration::from_secs(60), |_| fired_chat() > 0);
    std::thread::sleep(Duration::from_secs(5));

    // The regression: one firing notification (A's), one resolution (B's), of one episode.
    let got: Vec<Request> =
        hook.notifications().into_iter().filter(|r| group_of(r) == FRAUD).collect();
    let summary: Vec<String> = got
        .iter()
        .map(|r| format!("{} {}", r.json()["status"], r.json()["commonLabels"]))
        .collect();
    assert_eq!(got.len(), 2, "one firing and one resolved notification: {summary:#?}");
    assert_eq!(
        (got[0].json()["status"].as_str(), got[1].json()["status"].as_str()),
        (Some("firing"), Some("resolved"))
    );
    let starts = |r: &Request| rfc3339_ms(r.json()["alerts"][0]["startsAt"].as_str().unwrap());
    assert_eq!(starts(&got[0]), starts(&got[1]), "{summary:#?}");
    assert!((start + 3 * MINUTE..start + 4 * MINUTE).contains(&starts(&got[0])));
    for r in &got {
        assert_eq!(r.json()["alerts"][0]["labels"]["version"], "v42");
    }
    // The silence held on B: chat_errors fired there and was not notified.
    assert_eq!(
        of("chat_errors/support-chat", "firing"),
        0,
        "the silence set through A was not honoured by B"
    );
    let states = tsv(&setup.sql(
        "SELECT state, count() FROM {db}.alerts FINAL WHERE rule = 'canary_p99_regression' \
         AND model = 'fraud-detector' AND channel = '' AND state IN ('firing', 'resolved') \
         GROUP BY state ORDER BY state",
    ));
    assert_eq!(states, [["firing", "1"], ["resolved", "1"]], "one episode in the log");
    // B took the state over from the log (not from a restart of its own).
    assert!(b.log().contains("alert state restored"), "{}", b.log());
    let status = b.stop();
    assert!(status.success(), "{status:?}");
}
