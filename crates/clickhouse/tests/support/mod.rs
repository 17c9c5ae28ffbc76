//! Shared helpers of the integration tests: the server URL gate, random databases, sample rows
//! and a private ClickHouse server for the restart test.
// Helpers of tests: a panic here is a test failure with its message, which is what we want.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modelwatch_clickhouse::rows::*;
use modelwatch_clickhouse::{RetryPolicy, Store, StoreConfig};

/// The environment variable naming the ClickHouse HTTP endpoint of the integration tests.
pub const URL_VAR: &str = "MODELWATCH_TEST_CLICKHOUSE_URL";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The test server's URL; `None` (with a printed note) when unset, a panic when unset in CI.
#[allow(clippy::print_stderr)]
pub fn test_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => panic!("{URL_VAR} must be set when CI=true ({test})"),
        _ => {
            eprintln!(
                "note: skipping {test}: set {URL_VAR} (e.g. http://127.0.0.1:18123, started by \
                 deploy/local/services.sh up)"
            );
            None
        }
    }
}

/// A fresh database name, unique per test run.
pub fn random_db() -> String {
    format!("mw_test_{}_{:016x}", std::process::id(), fastrand::u64(..))
}

/// Fast retries, so error-path tests stay short.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

/// A store on a new random database (not created yet).
pub fn store(url: &str) -> Store {
    let mut cfg = StoreConfig::new(url).with_database(random_db());
    cfg.writer.retry = quick_retry();
    Store::new(cfg).unwrap()
}

/// Drops the test's database.
pub async fn drop_db(store: &Store) {
    let sql = format!("DROP DATABASE IF EXISTS `{}`", store.database());
    store.client().query(&sql).execute().await.unwrap();
}

/// Runs a statement.
pub async fn exec(store: &Store, sql: &str) {
    store.client().query_raw(sql).execute().await.unwrap();
}

/// Counts rows with an arbitrary query returning one UInt64.
pub async fn count(store: &Store, sql: &str) -> u64 {
    store.client().query_raw(sql).fetch_one::<u64>().await.unwrap()
}

// ---- sample rows (keys increase with `i`, so they come back in key order) ----

pub fn pane_stats(i: u32, partition: u32, written_at_ms: u64) -> PaneStatsRow {
    PaneStatsRow {
        model: "fraud-detector".into(),
        version: format!("v{}", i % 3),
        pane_start_ms: 1_700_000_000_000 + i64::from(i) * 10_000,
        source_partition: partition,
        pane_end_ms: 1_700_000_010_000 + i64::from(i) * 10_000,
        requests: 10 + u64::from(i),
        errors: 2,
        status_names: vec!["error".into(), "ok".into()],
        status_counts: vec![2, 8 + u64::from(i)],
        latency_bucket_us: vec![1000, 2048, 5120],
        latency_bucket_counts: vec![5, 4 + u64::from(i), 1],
        latency_sum_us: 25_000 + u64::from(i),
        latency_min_ms: 1.0,
        latency_max_ms: 5.125,
        ttft_bucket_us: vec![],
        ttft_bucket_counts: vec![],
        ttft_max_ms: f64::NEG_INFINITY,
        token_requests: 0,
        tokens_in: 0,
        tokens_out: u64::from(i),
        written_at_ms,
    }
}

pub fn pane_bins(i: u32, written_at_ms: u64) -> PaneBinsRow {
    PaneBinsRow {
        model: "m".into(),
        version: "v1".into(),
        pane_start_ms: 1_000 * i64::from(i),
        source_partition: 0,
        kind: "numeric".into(),
        feature: "amount".into(),
        pane_end_ms: 1_000 * i64::from(i) + 1_000,
        bin_counts: vec![1, u64::from(i), 3],
        written_at_ms,
    }
}

pub fn window_stats(i: u32) -> WindowStatsRow {
    WindowStatsRow {
        model: "m".into(),
        version: "v1".into(),
        window_end_ms: 300_000 + 10_000 * i64::from(i),
        window_start_ms: 10_000 * i64::from(i),
        requests: 100,
        errors: 3,
        timeouts: 1,
        error_rate: if i == 0 { None } else { Some(0.03) },
        throughput_rps: 0.333,
        latency_p50_ms: Some(12.5),
        latency_p90_ms: Some(20.0),
        latency_p99_ms: Some(80.25),
        latency_p999_ms: None,
        latency_max_ms: Some(99.0),
        tokens_in: 7,
        tokens_out: 9,
        ttft_p50_ms: None,
        ttft_p99_ms: Some(1.5),
        written_at_ms: 1,
    }
}

pub fn metric_stats(i: u32) -> MetricStatsRow {
    MetricStatsRow {
        model: "m".into(),
        version: "v1".into(),
        name: format!("gpu_{i}"),
        window_end_ms: 300_000,
        window_start_ms: 0,
        kind: "gauge".into(),
        count: 4,
        sum: 2.0,
        min: 0.25,
        max: 0.75,
        last: 0.5,
        p50: Some(0.5),
        p99: Some(0.75),
        rate_per_s: None,
        written_at_ms: 1,
    }
}

pub fn drift_score(i: u32) -> DriftScoreRow {
    DriftScoreRow {
        model: "m".into(),
        version: "v2".into(),
        reference: "period".into(),
        kind: "numeric".into(),
        feature: format!("f{i}"),
        window_end_ms: 300_000,
        kl: 0.01,
        psi: 0.02,
        js: 0.005,
        chi2: 3.5,
        dof: 4,
        p_value: 0.47,
        samples: 1000,
        reference_samples: 5000,
        written_at_ms: 1,
    }
}

pub fn drift_layout(i: u32) -> DriftLayoutRow {
    DriftLayoutRow {
        model: "m".into(),
        kind: "categorical".into(),
        feature: format!("country{i}"),
        layout: r#"{"type":"categorical","values":["de","fr"]}"#.into(),
        bin_count: 3,
        bin_labels: vec!["de".into(), "fr".into(), "other".into()],
        frozen_at_ms: 123,
        frozen_at_partition: 2,
        frozen_at_offset: 77,
        written_at_ms: 1,
    }
}

pub fn drift_reference(i: u32) -> DriftReferenceRow {
    DriftReferenceRow {
        model: "m".into(),
        version: "v1".into(),
        kind: "numeric".into(),
        feature: format!("f{i}"),
        reference_start_ms: 0,
        reference_end_ms: 1_800_000,
        complete: 1,
        counts: vec![0, 5, 7, 0],
        written_at_ms: 1,
    }
}

pub fn canary_verdict(i: u32) -> CanaryVerdictRow {
    CanaryVerdictRow {
        model: "m".into(),
        baseline_version: "v1".into(),
        canary_version: "v2".into(),
        scope: "window".into(),
        window_end_ms: 300_000 + i64::from(i),
        metric: "latency".into(),
        classification: "pass".into(),
        statistic: Some(1234.5),
        p_value: Some(0.2),
        effect: None,
        n_baseline: 900,
        n_canary: 100,
        threshold: Some(0.01),
        score: Some(95.0),
        decision: "continue".into(),
        evidence: "{}".into(),
        written_at_ms: 1,
    }
}

pub fn alert(fingerprint: &str, seq: u64, channel: &str, state: &str) -> AlertRow {
    AlertRow {
        fingerprint: fingerprint.into(),
        seq,
        channel: channel.into(),
        attempt: u32::from(!channel.is_empty()),
        rule: "high_error_rate".into(),
        model: "m".into(),
        version: "v1".into(),
        severity: "page".into(),
        state: state.into(),
        value: Some(0.2),
        threshold: Some(0.05),
        starts_at_ms: 1_000,
        ends_at_ms: (state == "resolved").then_some(9_000),
        delivery_status: if channel.is_empty() { String::new() } else { "sent".into() },
        at_ms: 1_000 + 1_000 * seq as i64,
        written_at_ms: 1,
    }
}

pub fn checkpoint(partition: i32, resume_offset: i64, written_at_ms: u64) -> CheckpointRow {
    CheckpointRow {
        group: "modelwatch".into(),
        topic: "inference".into(),
        partition,
        cutoff_ms: 1_000,
        resume_offset,
        watermark_ms: i64::MIN,
        written_at_ms,
    }
}

pub fn silence(id: &str, ends_at_ms: i64, written_at_ms: u64) -> SilenceRow {
    SilenceRow {
        id: id.into(),
        matchers: r#"[{"name":"model","value":"m","is_regex":false,"is_equal":true}]"#.into(),
        starts_at_ms: 0,
        ends_at_ms,
        created_by: "ops".into(),
        comment: "maintenance".into(),
        written_at_ms,
    }
}

pub fn counter_series(i: u32) -> CounterSeriesRow {
    CounterSeriesRow {
        model: "m".into(),
        version: "v1".into(),
        name: "requests_total".into(),
        host: format!("host{i}"),
        time_ms: 5_000,
        value: 1e6,
        written_at_ms: 1,
    }
}

// ---- a private server the restart test can stop and start ----

/// A ClickHouse server of the test's own, started by `deploy/local/clickhouse-start.sh` (its own
/// generated config, data dir and loopback ports), killed with SIGKILL to simulate a crash.
pub struct PrivateServer {
    pub dir: PathBuf,
    pub http_port: u16,
    tcp_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local").join(name)
}

impl PrivateServer {
    /// Whether a server can be started here: `clickhouse-server` is installed (the script
    /// installs it only as root, and the suite's runner has already done so).
    pub fn available() -> bool {
        Command::new("sh")
            .args(["-c", "command -v clickhouse-server || test -x /usr/sbin/clickhouse-server"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mw-ch-restart-{:016x}", fastrand::u64(..)));
        Self { dir, http_port: free_port(), tcp_port: free_port() }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server; the script returns once `/ping` answers (or fails with the log tail).
    pub async fn start(&mut self) {
        let status = tokio::process::Command::new(script("clickhouse-start.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--http-port", &self.http_port.to_string()])
            .args(["--tcp-port", &self.tcp_port.to_string()])
            .stdout(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "clickhouse-start.sh failed for {:?}", self.dir);
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("clickhouse.pid")) else { return };
        let pid = pid.trim().to_owned();
        let _ = Command::new("kill").args(["-9", &pid]).status();
        let proc_dir = PathBuf::from("/proc").join(&pid);
        let deadline = Instant::now() + Duration::from_secs(20);
        while proc_dir.exists() && Instant::now() < deadline {
            // A zombie until its parent (init, as the script detaches it) reaps it.
            let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            if state.split_whitespace().nth(2) == Some("Z") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new(script("clickhouse-stop.sh")).arg("--dir").arg(&self.dir).status();
        // Keep the logs of a failed test.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
