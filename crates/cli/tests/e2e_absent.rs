//! End to end: an `absent` rule through `modelwatch run` to a webhook received by the test.
//!
//! Old data first (half an hour old, produced before modelwatch starts, with a canary that goes
//! silent for two minutes and another canary's latency regression): caught up on, recorded,
//! never notified (`max_notification_age` 1 m). Then live traffic at real-time pacing: the
//! canary v42 of fraud-detector stops sending for 25 s while everything else keeps sending
//! (one firing notification), comes back (one resolved notification); then every input stops
//! (every version fires, judged on the wall clock while the consumer is caught up).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Instance, Receiver, Request, Setup, free_port, now_ms, rfc3339_ms, services, tsv};
use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect, ModelConfig};
use modelwatch_kafka::{GenOptions, Pacing, ScenarioConfig};

/// The two models, each with a canary taking 30% of its traffic.
fn models() -> Vec<ModelConfig> {
    let mut fraud = ModelConfig::fraud_detector();
    fraud.canary_share = 0.3;
    let mut chat = ModelConfig::support_chat();
    chat.canary_share = 0.3;
    vec![fraud, chat]
}

/// fraud-detector's canary gets no traffic from `from` to `until` (offsets from the start).
fn silent_v42(from: Duration, until: Duration) -> Incident {
    Incident {
        model: "fraud-detector".into(),
        version: None,
        from: EventTime::Offset(from),
        until: EventTime::Offset(until),
        effect: IncidentEffect::TrafficSplit { canary_share: 0.0 },
    }
}

/// (rule, status, [(version, startsAt ms)]) of a notification.
fn describe(r: &Request) -> (String, String, Vec<(String, i64)>) {
    let j = r.json();
    let alerts = j["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let v = a["labels"]["version"].as_str().unwrap().to_owned();
            (v, rfc3339_ms(a["startsAt"].as_str().unwrap()))
        })
        .collect();
    (
        j["groupLabels"]["alertname"].as_str().unwrap().to_owned(),
        j["status"].as_str().unwrap().to_owned(),
        alerts,
    )
}

#[test]
fn an_absent_rule_fires_when_a_version_or_every_input_stops_and_never_on_old_data() {
    let Some(svc) = services("e2e absent") else { return };
    let setup = Setup::new(&svc, "e2e_absent", 1);
    let hook = Receiver::start();
    let t_test = Instant::now();

    // Old data, produced before modelwatch starts: 6 minutes from 30 minutes ago (at 4 times
    // the live rate, so that the canaries' windows hold enough requests for the latency rule,
    // which live traffic never meets), v42 silent
    // from minute 2 to minute 4, support-chat's canary 8 times slower from minute 1 to 3.
    let old = GenOptions {
        brokers: svc.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: None,
        duration: Some(Duration::from_secs(6 * 60)),
        max_wall_time: Duration::from_secs(120),
        pacing: Pacing::AsFastAsPossible,
        scenario: ScenarioConfig {
            seed: 21,
            start_time_ms: Some((now_ms() - 30 * 60_000) / 1000 * 1000),
            requests_per_second: 400.0,
            models: models(),
            incidents: vec![
                silent_v42(Duration::from_secs(120), Duration::from_secs(240)),
                Incident {
                    model: "support-chat".into(),
                    version: Some("2024-06".into()),
                    from: EventTime::Offset(Duration::from_secs(60)),
                    until: EventTime::Offset(Duration::from_secs(180)),
                    effect: IncidentEffect::LatencyShift { multiplier: 8.0 },
                },
            ],
            ..ScenarioConfig::default()
        },
        ..GenOptions::default()
    };
    let report = modelwatch_kafka::run(old).unwrap();
    assert_eq!(report.failed, 0);
    eprintln!("old data: {} messages in {:?}", report.delivered, report.elapsed);

    let port = free_port();
    let extra = format!(
        r#"
[windows]
window = "5s"
slide = "1s"
allowed_lateness = "1s"
idle_timeout = "3s"
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
group_wait = "1s"
group_interval = "1s"
repeat_interval = "1h"
max_notification_age = "1m"

[[alerts.rules]]
name = "version_silent"
metric = "absent"
absent_for = "6s"
channels = ["hook"]
annotations = {{ summary = "{{{{model}}}} {{{{version}}}} silent for {{{{value}}}} s" }}

[[alerts.rules]]
name = "canary_p99_regression"
model = "support-chat"
metric = "latency_p99_ms"
relative_to = "baseline"
compare = "ratio"
op = ">"
threshold = 3.0
min_samples = 100
channels = ["hook"]

[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
"#,
        hook = hook.port
    );
    let config = setup.config(port, &extra);
    let mw = Instance::start("e2e_absent", &config, port);

    // Live traffic: 50 s from now at real time, v42 silent from 10 s to 35 s.
    let live_start = now_ms();
    let live = GenOptions {
        brokers: svc.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: None,
        duration: Some(Duration::from_secs(50)),
        max_wall_time: Duration::from_secs(70),
        pacing: Pacing::RealTime { speedup: 1.0 },
        scenario: ScenarioConfig {
            seed: 22,
            start_time_ms: None,
            requests_per_second: 100.0,
            models: models(),
            incidents: vec![silent_v42(Duration::from_secs(10), Duration::from_secs(35))],
            ..ScenarioConfig::default()
        },
        ..GenOptions::default()
    };
    let generator = std::thread::spawn(move || modelwatch_kafka::run(live).unwrap());
    let (silent_from, back_at) = (live_start + 10_000, live_start + 35_000);

    let absent = |status: &str| {
        let status = status.to_owned();
        move |r: &Request| {
            let (rule, s, _) = describe(r);
            rule == "version_silent" && s == status
        }
    };
    mw.wait_until("v42 reported absent", Duration::from_secs(60), |_| {
        hook.notifications().iter().any(absent("firing"))
    });
    let fired = hook.notifications().into_iter().find(absent("firing")).unwrap();
    eprintln!(
        "v42 silent from +10 s: absent notification at +{:.1} s",
        (fired.received_ms - live_start) as f64 / 1000.0
    );
    mw.wait_until("v42 back", Duration::from_secs(60), |_| {
        hook.notifications().iter().any(absent("resolved"))
    });
    let back = hook.notifications().into_iter().find(absent("resolved")).unwrap();
    eprintln!(
        "v42 back at +35 s: resolved notification at +{:.1} s",
        (back.received_ms - live_start) as f64 / 1000.0
    );
    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
    let stopped_at = live_start + 50_000;

    // Every input stopped: every version is absent in the end.
    let versions_firing_after = |t: i64| -> BTreeSet<String> {
        hook.notifications()
            .iter()
            .map(describe)
            .filter(|(rule, s, _)| rule == "version_silent" && s == "firing")
            .flat_map(|(_, _, a)| a)
            .filter(|(_, starts)| *starts > t)
            .map(|(v, _)| v)
            .collect()
    };
    let all: BTreeSet<String> =
        ["v41", "v42", "2024-05", "2024-06"].into_iter().map(str::to_owned).collect();
    mw.wait_until("every version absent", Duration::from_secs(60), |_| {
        versions_firing_after(stopped_at) == all
    });
    eprintln!(
        "every input stopped at +50 s: all absent by +{:.1} s",
        (now_ms() - live_start) as f64 / 1000.0
    );
    // Nothing more may arrive (no repeat within repeat_interval).
    std::thread::sleep(Duration::from_secs(3));

    let got = hook.notifications();
    let summary: Vec<_> = got.iter().map(describe).collect();
    // No notification of the old data: neither its regression nor its silence.
    assert!(
        summary.iter().all(|(rule, _, _)| rule == "version_silent"),
        "the old data's regression was notified: {summary:#?}"
    );
    // v42's silence: one firing and one resolved notification, of v42 alone.
    let episode: Vec<_> = summary
        .iter()
        .filter(|(_, _, a)| a.iter().any(|(_, s)| *s <= stopped_at))
        .cloned()
        .collect();
    assert_eq!(episode.len(), 2, "one firing and one resolved notification: {summary:#?}");
    for ((_, status, alerts), want) in episode.iter().zip(["firing", "resolved"]) {
        assert_eq!(status, want, "{summary:#?}");
        assert_eq!(alerts.len(), 1, "{summary:#?}");
        let (version, starts) = &alerts[0];
        assert_eq!(version, "v42", "{summary:#?}");
        // It fires once its latest window (5 s) is `absent_for` (6 s) old, judged every 5 s.
        assert!(
            (silent_from + 6_000..back_at).contains(starts),
            "startsAt +{} ms, v42 silent from +10 s to +35 s",
            starts - live_start
        );
    }
    let j = fired.json();
    let a = &j["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "version_silent");
    assert_eq!(a["labels"]["model"], "fraud-detector");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["annotations"]["threshold"], "6");
    let silent_s: f64 = a["annotations"]["value"].as_str().unwrap().parse().unwrap();
    assert!(silent_s > 6.0 && silent_s < 30.0, "silent for {silent_s} s");
    let ends = rfc3339_ms(back.json()["alerts"][0]["endsAt"].as_str().unwrap());
    assert!(ends > back_at, "resolved at +{} ms, before v42 came back", ends - live_start);
    // After the stop: every version fired (in one or two notifications per model, as the
    // ticks found them: a group's second notification lists its first alert again, as
    // Alertmanager's do), nothing resolved.
    let after: Vec<_> = summary.iter().filter(|e| !episode.contains(e)).collect();
    assert!(after.iter().all(|(_, s, _)| s == "firing"), "{summary:#?}");
    let mut fired_versions: Vec<&String> =
        after.iter().flat_map(|(_, _, a)| a.iter().map(|(v, _)| v)).collect();
    fired_versions.sort();
    fired_versions.dedup();
    assert_eq!(fired_versions, ["2024-05", "2024-06", "v41", "v42"], "{summary:#?}");
    // Each version's alert fired once: one firing state row per episode in the log.
    let firing_rows = tsv(&setup.sql(
        "SELECT version, count() FROM {db}.alerts FINAL WHERE rule = 'version_silent' \
         AND channel = '' AND state = 'firing' GROUP BY version ORDER BY version",
    ));
    assert_eq!(
        firing_rows,
        [["2024-05", "1"], ["2024-06", "1"], ["v41", "1"], ["v42", "2"]],
        "v42 twice (silent in the middle, then with every input), the others once"
    );

    // The old regression was evaluated and recorded, just not notified.
    let rows = tsv(&setup.sql(
        "SELECT rule, model, version, state, channel FROM {db}.alerts FINAL \
         ORDER BY fingerprint, seq, channel, attempt",
    ));
    let old_states: Vec<String> = rows
        .iter()
        .filter(|r| r[0] == "canary_p99_regression")
        .map(|r| format!("{}/{} {} {}", r[1], r[2], r[3], r[4]))
        .collect();
    assert_eq!(
        old_states,
        ["support-chat/2024-06 firing ", "support-chat/2024-06 resolved "],
        "{rows:#?}"
    );
    let status = mw.stop();
    assert!(status.success(), "{status:?}");
    eprintln!("absent test: {:?} in all", t_test.elapsed());
}
