//! The README's demo command, run to its end with `--duration` on the embedded broker and the
//! test ClickHouse: it exits 0, ClickHouse received the rows, the canary regression raised an
//! alert (delivered to the demo's own webhook receiver), the judge rolled the bad canary back,
//! and every query of the Grafana dashboard returns rows over the demo's tables. And the same
//! demo where no ClickHouse can be had: it says that no history is kept and shows, judges,
//! alerts and serves the API all the same.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, fresh, services, sql, tsv};

#[test]
fn the_demo_runs_to_its_end_and_catches_the_bad_canary() {
    let Some(svc) = services("demo") else { return };
    let database = format!("{}_demo", fresh("demo"));
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args([
            "demo",
            "--duration",
            "80s",
            "--clickhouse",
            &svc.clickhouse,
            "--database",
            &database,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("run modelwatch demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {:?}\n{stdout}\n{stderr}", out.status);

    // The terminal showed progress, the versions, the decision, the alert and the SQL.
    for expected in [
        "events/s written",
        "fraud-detector  v42 canary",
        "-> ROLLBACK",
        "ALERT FIRING   canary_rollback fraud-detector/v42",
        "The history is in ClickHouse",
        "curl -s",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}\n{stderr}");
    }
    assert!(!stdout.contains("BAD SIGNATURE"), "{stdout}");

    let q = |query: &str| tsv(&sql(&svc.clickhouse, &query.replace("{db}", &database)));
    let windows = q("SELECT count() FROM {db}.window_stats FINAL");
    assert!(windows[0][0].parse::<u64>().unwrap() > 50, "{windows:?}");
    let fired = q("SELECT count() FROM {db}.alerts FINAL WHERE model = 'fraud-detector' \
                   AND version = 'v42' AND state = 'firing' AND delivery_status = 'sent'");
    assert!(fired[0][0].parse::<u64>().unwrap() >= 1, "no delivered alert: {fired:?}");
    let healthy = q("SELECT count() FROM {db}.alerts FINAL WHERE model = 'support-chat' \
                     AND state = 'firing'");
    assert_eq!(healthy[0][0], "0", "the healthy canary raised an alert");
    let decision = q("SELECT decision FROM {db}.canary_verdicts FINAL WHERE scope = 'cumulative' \
                      AND metric = 'overall' AND model = 'fraud-detector' \
                      ORDER BY window_end_ms DESC LIMIT 1");
    assert_eq!(decision[0][0], "rollback");

    // Every dashboard query runs and returns rows over the demo's tables.
    let check = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/check_queries.py"))
        .arg("--require-rows")
        .env("MODELWATCH_TEST_CLICKHOUSE_URL", &svc.clickhouse)
        .env("MODELWATCH_TEST_CLICKHOUSE_DB", &database)
        .output()
        .expect("run check_queries.py");
    assert!(
        check.status.success(),
        "dashboard queries:\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = sql(&svc.clickhouse, &format!("DROP DATABASE IF EXISTS {database}"));
}

/// Needs no services: the broker is the embedded mock, and the ClickHouse it is pointed at does
/// not answer.
#[test]
fn without_clickhouse_the_demo_says_no_history_is_kept_and_runs_everything_else() {
    let port = free_port();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["demo", "--duration", "80s", "--clickhouse", &nowhere])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run modelwatch demo");

    // While it runs, the API answers from memory: the bad canary's decision turns to rollback.
    let api = format!("http://127.0.0.1:{port}/api/v1/canaries/fraud-detector");
    let deadline = Instant::now() + Duration::from_secs(100);
    let mut last = String::new();
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(mut resp) = ureq::get(&api).call() else { continue };
        last = resp.body_mut().read_to_string().unwrap();
        let v: serde_json::Value = serde_json::from_str(&last).unwrap();
        if v["decision"] == "rollback" {
            break;
        }
    }
    assert!(last.contains("\"decision\":\"rollback\""), "the API never said rollback: {last}");
    let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(metrics.contains("modelwatch_canary_verdicts_total"), "{metrics}");

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {:?}\n{stdout}\n{stderr}", out.status);
    for expected in [
        "clickhouse: not available",
        "HISTORY IS NOT BEING KEPT",
        "events/s written",
        "fraud-detector  v42 canary",
        "-> ROLLBACK",
        "ALERT FIRING   canary_rollback fraud-detector/v42",
        "No history was kept",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}\n{stderr}");
    }
    assert!(!stdout.contains("support-chat/2024-06"), "the healthy canary alerted:\n{stdout}");
    assert!(!stdout.contains("curl -s"), "SQL offered without a history:\n{stdout}");
}
