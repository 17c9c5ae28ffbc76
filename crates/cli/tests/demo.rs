//! The README's demo command, run to its end with `--duration` on the embedded broker and the
//! test ClickHouse: it exits 0, ClickHouse received the rows, the canary regression raised an
//! alert (delivered to the demo's own webhook receiver), the judge rolled the bad canary back,
//! and every query of the Grafana dashboard returns rows over the demo's tables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

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
