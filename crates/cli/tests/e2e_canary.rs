//! End to end: the canary judge in `modelwatch run` on generated traffic (a 50% slower canary,
//! a healthy one, one with too little traffic), restarted half way, and the canary gate asked
//! through a second instance that consumes none of these models: the Argo endpoint and the
//! Flagger hooks answer from ClickHouse, with and without the bearer token.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Instance, Setup, free_port, services, tsv};
use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect, ModelConfig};
use modelwatch_kafka::{GenOptions, Pacing, ScenarioConfig};
use serde_json::{Value, json};

const TOKEN: &str = "e2e-canary-token-0123456789";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// An HTTP client that returns error statuses instead of failing on them.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// GET `path` of `base`, with the token when `token`: (status, JSON body or null).
fn get(base: &str, path: &str, token: bool) -> (u16, Value) {
    let mut req = agent().get(&format!("{base}{path}"));
    if token {
        req = req.header("Authorization", &format!("Bearer {TOKEN}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// POST a Flagger webhook payload: the status code.
fn hook(base: &str, kind: &str, payload: &Value) -> u16 {
    agent()
        .post(&format!("{base}/api/v1/flagger/{kind}"))
        .header("Content-Type", "application/json")
        .send(payload.to_string())
        .unwrap()
        .status()
        .as_u16()
}

fn flagger(name: &str, model: Option<&str>, token: Option<&str>) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(m) = model {
        metadata.insert("model".into(), json!(m));
    }
    if let Some(t) = token {
        metadata.insert("token".into(), json!(t));
    }
    json!({"name": name, "namespace": "prod", "phase": "Progressing", "metadata": metadata})
}

#[test]
fn the_judge_rolls_back_promotes_and_waits_and_any_instance_answers_the_gate() {
    let Some(svc) = services("e2e canary") else { return };
    let setup = Setup::new(&svc, "e2e_canary", 2);

    // 12 minutes of event time from 20 minutes ago, 30 times faster than wall time (24 s).
    let start = (now_ms() - 20 * 60_000) / 5_000 * 5_000;
    let minutes = 12;
    let mut fraud = ModelConfig::fraud_detector();
    fraud.canary_share = 0.3;
    let mut chat = ModelConfig::support_chat();
    chat.canary_share = 0.3;
    let mut ranker = ModelConfig::fraud_detector();
    ranker.name = "ranker".into();
    ranker.weight = 0.03;
    ranker.canary_share = 0.1;
    let scenario = ScenarioConfig {
        seed: 5,
        start_time_ms: Some(start),
        requests_per_second: 200.0,
        models: vec![fraud, chat, ranker],
        incidents: vec![Incident {
            model: "fraud-detector".into(),
            version: Some("v42".into()),
            from: EventTime::Millis(start),
            until: EventTime::Millis(start + minutes * 60_000),
            effect: IncidentEffect::LatencyShift { multiplier: 1.5 },
        }],
        ..ScenarioConfig::default()
    };
    let opts = GenOptions {
        brokers: svc.brokers.clone(),
        inference_topic: setup.inference.clone(),
        metric_topic: setup.metrics.clone(),
        count: None,
        duration: Some(Duration::from_secs(minutes as u64 * 60)),
        max_wall_time: Duration::from_secs(300),
        pacing: Pacing::RealTime { speedup: 30.0 },
        scenario,
        ..GenOptions::default()
    };
    let generator = std::thread::spawn(move || modelwatch_kafka::run(opts).unwrap());

    let port = free_port();
    let extra = format!(
        r#"
[http]
listen = "127.0.0.1:{port}"
auth_token = "{TOKEN}"

[[canary]]
model = "fraud-detector"
baseline = "v41"
canary = "v42"
expected_share = 0.3

[[canary]]
model = "support-chat"
baseline = "2024-05"
canary = "2024-06"

[[canary]]
model = "ranker"
baseline = "v41"
canary = "v42"

[judge]
min_duration = "3m"
"#
    );
    // The setup's [http] section is replaced by the one above.
    let config = setup.config(port, &extra).replacen(
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n\n"),
        "",
        1,
    );
    let mw = Instance::start("e2e_canary", &config, port);

    // The second instance: same database, other topics and group, no [[canary]] entries.
    let other = Setup { database: setup.database.clone(), ..Setup::new(&svc, "e2e_canary_b", 1) };
    let port_b = free_port();
    let config_b = other
        .config(
            port_b,
            &format!("[http]\nlisten = \"127.0.0.1:{port_b}\"\nauth_token = \"{TOKEN}\"\n"),
        )
        .replacen(&format!("[http]\nlisten = \"127.0.0.1:{port_b}\"\n\n"), "", 1);
    let b = Instance::start("e2e_canary_b", &config_b, port_b);
    let base = b.http.clone();

    // Restart the judging instance once its first cumulative verdicts are in: the judge is
    // rebuilt from ClickHouse and goes on from there.
    mw.wait_until("a first cumulative verdict", Duration::from_secs(120), |_| {
        get(&base, "/api/v1/canaries/support-chat", true).0 == 200
    });
    let status = mw.stop();
    assert!(status.success(), "modelwatch did not stop cleanly: {status:?}");
    let mw = Instance::start("e2e_canary", &config, port);
    assert!(mw.metric("modelwatch_canary_rebuilds") >= 3.0);

    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
    // Every pair judged up to the last window (idle_timeout closes the last panes).
    let last_end = start + minutes * 60_000 - 5_000;
    mw.wait_until("verdicts up to the end of the traffic", Duration::from_secs(180), |_| {
        let (s, v) = get(&base, "/api/v1/canaries", true);
        s == 200
            && v.as_array().is_some_and(|a| {
                a.len() == 3 && a.iter().all(|c| c["end_ms"].as_i64().unwrap_or(0) >= last_end)
            })
    });

    // The token is required on every route once configured.
    assert_eq!(get(&base, "/api/v1/canaries", false).0, 401);
    assert_eq!(get(&base, "/api/v1/canaries/fraud-detector", false).0, 401);
    assert_eq!(hook(&base, "rollback", &flagger("fraud-detector", None, None)), 401);
    assert_eq!(hook(&base, "rollback", &flagger("fraud-detector", None, Some("wrong"))), 401);
    assert_eq!(get(&base, "/api/v1/canaries/nope", true).0, 404);

    // The slow canary is rolled back, with its latency evidence.
    let (s, fraud) = get(&base, "/api/v1/canaries/fraud-detector", true);
    assert_eq!(s, 200);
    assert_eq!(fraud["decision"], "rollback", "{fraud:#}");
    assert_eq!((fraud["baseline"].as_str(), fraud["canary"].as_str()), (Some("v41"), Some("v42")));
    let latency = fraud["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "latency");
    assert_eq!(latency.unwrap()["classification"], "high", "{fraud:#}");
    assert_eq!(hook(&base, "rollback", &flagger("fraud-detector", None, Some(TOKEN))), 200);
    assert_eq!(
        hook(&base, "confirm-promotion", &flagger("fraud-detector", None, Some(TOKEN))),
        412
    );

    // The healthy canary is promoted (the model named in metadata, not by the Canary's name).
    let (_, chat) = get(&base, "/api/v1/canaries/support-chat", true);
    assert_eq!(chat["decision"], "promote", "{chat:#}");
    let chat_hook = flagger("chat-canary", Some("support-chat"), Some(TOKEN));
    assert_eq!(hook(&base, "confirm-promotion", &chat_hook), 200);
    assert_eq!(hook(&base, "rollback", &chat_hook), 412);

    // Too little traffic: continue, with the canary requests still needed.
    let (_, ranker) = get(&base, "/api/v1/canaries/ranker", true);
    assert_eq!(ranker["decision"], "continue", "{ranker:#}");
    assert!(ranker["samples_needed"].as_u64().unwrap_or(0) > 0, "{ranker:#}");
    let ranker_hook = flagger("ranker", None, Some(TOKEN));
    assert_eq!(hook(&base, "confirm-promotion", &ranker_hook), 412);
    assert_eq!(hook(&base, "rollback", &ranker_hook), 412);

    // The cumulative counts survived the restart: the last verdict counted exactly the canary
    // requests of the panes in ClickHouse since the canary's first pane.
    for (model, canary) in [("fraud-detector", "v42"), ("support-chat", "2024-06")] {
        let (_, v) = get(&base, &format!("/api/v1/canaries/{model}"), true);
        let end = v["end_ms"].as_i64().unwrap();
        let rows = tsv(&setup.sql(&format!(
            "SELECT sum(requests) FROM {{db}}.pane_stats FINAL \
             WHERE model = '{model}' AND version = '{canary}' AND pane_end_ms <= {end}"
        )));
        let in_clickhouse: u64 = rows[0][0].parse().unwrap();
        assert_eq!(v["n_canary"].as_u64(), Some(in_clickhouse), "{model}: {v:#}");
    }

    // Both scopes are in the table, every metric row with its decision.
    let rows = tsv(&setup.sql(
        "SELECT scope, count(), countIf(metric = 'overall') FROM {db}.canary_verdicts FINAL \
         GROUP BY scope ORDER BY scope",
    ));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[1][0].as_str()), ("cumulative", "window"));
    assert!(rows.iter().all(|r| r[2].parse::<u64>().unwrap() > 10), "{rows:?}");
    assert!(mw.metric("modelwatch_canary_verdicts_total{") > 0.0);

    // Silences through the API of the instance that does not consume: stored in ClickHouse,
    // where every instance's alert worker reads them.
    let post = |body: &Value, token: bool| {
        let mut req = agent().post(&format!("{base}/api/v1/silences"));
        if token {
            req = req.header("Authorization", &format!("Bearer {TOKEN}"));
        }
        let mut resp =
            req.header("Content-Type", "application/json").send(body.to_string()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
    };
    let silence = json!({
        "matchers": [{"name": "model", "value": "fraud-detector"}],
        "duration": "2h",
        "created_by": "e2e",
        "comment": "rolled back, looking into it",
    });
    assert_eq!(post(&silence, false).0, 401);
    assert_eq!(post(&json!({"matchers": [], "duration": "1h"}), true).0, 400);
    assert_eq!(post(&json!({"matchers": silence["matchers"]}), true).0, 400, "no end");
    let (s, created) = post(&silence, true);
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "active");
    let (s, list) = get(&base, "/api/v1/silences", true);
    assert_eq!(s, 200);
    assert!(list.as_array().unwrap().iter().any(|x| x["id"] == id.as_str()), "{list}");
    let rows = tsv(&setup
        .sql(&format!("SELECT created_by, comment FROM {{db}}.silences FINAL WHERE id = '{id}'")));
    assert_eq!(rows, [["e2e", "rolled back, looking into it"]]);
    let status = agent()
        .delete(&format!("{base}/api/v1/silences/{id}"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 204);
    let (_, list) = get(&base, "/api/v1/silences", true);
    assert!(!list.as_array().unwrap().iter().any(|x| x["id"] == id.as_str()), "{list}");

    for i in [mw, b] {
        let status = i.stop();
        assert!(status.success(), "{status:?}");
    }
}
