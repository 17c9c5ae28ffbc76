//! `modelwatch demo`: the whole pipeline on generated traffic, in one command.
//!
//! It starts what it needs (an embedded Kafka broker: librdkafka's mock cluster, or the local
//! tansu of `deploy/local` with `--broker local`; ClickHouse from `deploy/local`, installed
//! when missing and possible), generates baseline and canary traffic for two models with a
//! canary regression from about a minute in, and runs `modelwatch run` on it with the canary
//! judge and two alert rules delivering to a webhook receiver of its own on 127.0.0.1. The
//! terminal shows events/s, per version p99 latency, error rate and top drift score, the canary
//! decisions and every alert as it arrives; at the end it prints SQL to explore the history.
//! `--duration` runs unattended and exits; Ctrl-C stops everything it started.
//!
//! Where no ClickHouse can be had (none installed and no root to install it, or the one given
//! is unreachable), or with `--no-clickhouse`, it says so and runs everything else with the
//! results in memory ([`MemoryHistory`]): the view, the judge, the alerts and the API work, and
//! nothing is kept after the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect, ModelConfig};
use modelwatch_kafka::{GenOptions, Pacing, ScenarioConfig};

use crate::config::{Config, Environment};
use crate::history::MemoryHistory;

/// Which Kafka-compatible broker the demo uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoBroker {
    /// librdkafka's in-process mock cluster (about 2,000 messages/s consumed: enough here).
    Mock,
    /// The local tansu of `deploy/local`, started on 127.0.0.1:19192 and stopped at the end.
    Local,
    /// An existing broker: its bootstrap servers (the topics are created if missing).
    External(String),
}

/// Options of `modelwatch demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this much wall time; none: run until Ctrl-C.
    pub duration: Option<Duration>,
    /// The broker.
    pub broker: DemoBroker,
    /// An existing ClickHouse HTTP URL; none: start the one of `deploy/local`.
    pub clickhouse: Option<String>,
    /// The database (dropped and recreated at start).
    pub database: String,
    /// Where /metrics and the API listen.
    pub listen: SocketAddr,
    /// Event time runs this many times faster than wall time.
    pub speedup: f64,
    /// Requests per second of event time, over both models.
    pub rate: f64,
    /// Leave the ClickHouse the demo started running at the end (to explore the history).
    pub keep: bool,
    /// Do not use ClickHouse: keep the results in memory (no history).
    pub no_clickhouse: bool,
}

const INFERENCE_TOPIC: &str = "modelwatch-demo.inference";
const METRIC_TOPIC: &str = "modelwatch-demo.metrics";
const DEAD_LETTER_TOPIC: &str = "modelwatch-demo.dead-letters";
const WEBHOOK_SECRET: &str = "modelwatch-demo-webhook-secret";
const LOCAL_BROKER_PORT: u16 = 19192;
const CH_HTTP_PORT: u16 = 18124;
const CH_TCP_PORT: u16 = 19124;

/// The repository's `deploy/local` scripts, if this binary runs from a checkout.
fn local_scripts() -> Option<PathBuf> {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local"),
        PathBuf::from("deploy/local"),
    ];
    candidates.into_iter().find(|p| p.join("clickhouse-start.sh").is_file())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("MODELWATCH_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache/modelwatch")
    })
}

/// Runs a `deploy/local` script; its stdout (the address it prints) trimmed.
fn script(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("bash")
        .arg(dir.join(name))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running deploy/local/{name}"))?;
    if !out.status.success() {
        bail!("deploy/local/{name} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Something the demo started and stops at the end.
struct Started {
    what: &'static str,
    stop: Box<dyn FnOnce() -> anyhow::Result<()>>,
}

/// A line on the terminal (stdout is the demo's view; logs go to stderr).
fn say(line: &str) {
    use std::io::Write as _;
    // Nothing useful is left to do if stdout is gone.
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The configuration `modelwatch run` gets (through the real parser and validation).
fn demo_config(
    o: &DemoOptions,
    brokers: &str,
    clickhouse: Option<&str>,
    hook: SocketAddr,
) -> anyhow::Result<Config> {
    // Without ClickHouse the section is required by validation but never used.
    let clickhouse = clickhouse.unwrap_or("http://127.0.0.1:8123");
    let text = format!(
        r#"
[kafka]
brokers = ["{brokers}"]
group_id = "modelwatch-demo"
inference_topics = ["{INFERENCE_TOPIC}"]
metric_topics = ["{METRIC_TOPIC}"]
dead_letter_topic = "{DEAD_LETTER_TOPIC}"

[clickhouse]
url = "{clickhouse}"
database = "{db}"

[windows]
window = "1m"
slide = "5s"
allowed_lateness = "2s"
idle_timeout = "5s"
backlog_idle_timeout = "1m"

[drift]
edge_samples = 500
reference_period = "1m"

[http]
listen = "{listen}"

[[canary]]
model = "fraud-detector"
baseline = "v41"
canary = "v42"
expected_share = 0.3

[[canary]]
model = "support-chat"
baseline = "2024-05"
canary = "2024-06"
expected_share = 0.3

[judge]
min_duration = "3m"

[alerts]
group_wait = "1s"
group_interval = "5s"
repeat_interval = "1h"
max_notification_age = "1h"

[[alerts.rules]]
name = "canary_p99_regression"
model = "fraud-detector"
metric = "latency_p99_ms"
relative_to = "baseline"
compare = "ratio"
op = ">"
threshold = 1.5
min_samples = 500
for = "30s"
severity = "warning"
channels = ["demo"]
annotations = {{ summary = "{{{{model}}}} {{{{version}}}}: p99 {{{{value}}}}x its baseline {{{{baseline}}}}" }}

[[alerts.rules]]
name = "canary_rollback"
metric = "canary:rollback"
op = ">="
threshold = 1.0
severity = "critical"
channels = ["demo"]
annotations = {{ summary = "the judge says roll back {{{{model}}}} {{{{version}}}}" }}

[alerts.channels.demo]
type = "webhook"
url = "http://{hook}/alerts"
secret = "{WEBHOOK_SECRET}"
"#,
        db = o.database,
        listen = o.listen,
    );
    Config::from_toml_str(&text, &Environment::default()).context("the demo configuration")
}

/// Two models with canaries: fraud-detector's canary gets slower, fails more and sees a
/// shifted `amount` from `regress_at` on; support-chat's canary is healthy.
fn scenario(start_ms: i64, regress_at_ms: i64, rate: f64) -> ScenarioConfig {
    let mut fraud = ModelConfig::fraud_detector();
    fraud.canary_share = 0.3;
    let mut chat = ModelConfig::support_chat();
    chat.canary_share = 0.3;
    let canary = |effect| Incident {
        model: "fraud-detector".into(),
        version: Some("v42".into()),
        from: EventTime::Millis(regress_at_ms),
        until: EventTime::Millis(i64::MAX / 2),
        effect,
    };
    ScenarioConfig {
        seed: 7,
        start_time_ms: Some(start_ms),
        requests_per_second: rate,
        models: vec![fraud, chat],
        incidents: vec![
            canary(IncidentEffect::LatencyShift { multiplier: 1.6 }),
            canary(IncidentEffect::ErrorSpike { status: "error".into(), rate: 0.03 }),
            canary(IncidentEffect::FeatureDrift {
                feature: "amount".into(),
                shift: 0.0,
                scale: 1.5,
            }),
        ],
        ..ScenarioConfig::default()
    }
}

/// Runs the demo.
pub fn run(o: &DemoOptions) -> anyhow::Result<()> {
    let mut started: Vec<Started> = Vec::new();
    let result = run_inner(o, &mut started);
    for s in started.into_iter().rev() {
        if let Err(e) = (s.stop)() {
            tracing::warn!(error = %format!("{e:#}"), "stopping {} failed", s.what);
        }
    }
    result
}

fn run_inner(o: &DemoOptions, started: &mut Vec<Started>) -> anyhow::Result<()> {
    let scripts = local_scripts();
    let demo_dir = cache_dir().join("demo");
    // Multi-threaded: the progress view blocks on queries from its own thread, which only a
    // runtime with a worker of its own drives.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("modelwatch-demo-io")
        .enable_all()
        .build()
        .context("starting the demo's runtime")?;

    // The broker.
    let mut mock = None;
    let brokers = match &o.broker {
        DemoBroker::Mock => {
            let cluster =
                rdkafka::mocking::MockCluster::new(1).context("starting the mock broker")?;
            for (t, p) in [(INFERENCE_TOPIC, 4), (METRIC_TOPIC, 2), (DEAD_LETTER_TOPIC, 1)] {
                cluster.create_topic(t, p, 1).with_context(|| format!("creating topic {t}"))?;
            }
            let b = cluster.bootstrap_servers();
            mock = Some(cluster);
            say(&format!("broker: embedded (librdkafka mock cluster) at {b}"));
            b
        }
        DemoBroker::Local => {
            let dir = scripts.as_deref().context(
                "--broker local needs the deploy/local scripts (run the demo from a checkout)",
            )?;
            let bdir = demo_dir.join("broker");
            let bdir_s = bdir.to_string_lossy().into_owned();
            let port = LOCAL_BROKER_PORT.to_string();
            let addr = script(dir, "broker-start.sh", &["--dir", &bdir_s, "--port", &port])?;
            let d = dir.to_path_buf();
            started.push(Started {
                what: "the broker",
                stop: Box::new(move || {
                    script(&d, "broker-stop.sh", &["--dir", &bdir_s, "--wipe"]).map(drop)
                }),
            });
            for (t, p) in [(INFERENCE_TOPIC, "4"), (METRIC_TOPIC, "2"), (DEAD_LETTER_TOPIC, "1")] {
                script(dir, "broker-topic.sh", &["create", t, "--partitions", p, "--port", &port])?;
            }
            say(&format!("broker: tansu (deploy/local) at {addr}"));
            addr
        }
        DemoBroker::External(b) => {
            say(&format!("broker: {b} (topics {INFERENCE_TOPIC}, {METRIC_TOPIC} must exist)"));
            b.clone()
        }
    };

    // ClickHouse, or memory where none can be had.
    let clickhouse = if o.no_clickhouse {
        None
    } else {
        match connect_clickhouse(o, scripts.as_deref(), &demo_dir, started, &rt) {
            Ok(c) => Some(c),
            Err(e) => {
                say(&format!("clickhouse: not available: {e:#}"));
                None
            }
        }
    };
    match &clickhouse {
        Some((url, _)) => {
            say(&format!("clickhouse: {url}, database {} (recreated)", o.database));
        }
        None => say(
            "HISTORY IS NOT BEING KEPT: without ClickHouse, windows, verdicts and alerts live in \
             this process's memory and are gone when it stops. Everything else runs. For the \
             history: deploy/local/install-clickhouse.sh (root and apt), or --clickhouse URL.",
        ),
    }

    // The webhook receiver.
    let alerts_seen = Arc::new(AtomicU64::new(0));
    let hook = start_receiver(&rt, Arc::clone(&alerts_seen))?;
    say(&format!("alerts: webhook receiver on http://{hook}/alerts (signed, verified)"));

    let config = demo_config(o, &brokers, clickhouse.as_ref().map(|c| c.0.as_str()), hook)?;
    let (source, memory) = match &clickhouse {
        Some((_, store)) => (Progress::ClickHouse(store.clone()), None),
        None => {
            let m = Arc::new(MemoryHistory::new(config.canaries().iter().map(|c| c.model.clone())));
            (Progress::Memory(Arc::clone(&m)), Some(m))
        }
    };

    // The traffic: event time behind the wall clock all along (a record's event time may not
    // lead its Kafka timestamp), the regression about a minute of wall time in.
    let wall = o.duration.unwrap_or(Duration::from_secs(3600));
    let event_span = Duration::from_secs_f64(wall.as_secs_f64() * o.speedup);
    let now = wall_ms();
    let start_ms = (now - event_span.as_millis() as i64 - 60_000) / 5_000 * 5_000;
    let regress_at = start_ms + (60_000.0 * o.speedup) as i64;
    let traffic = GenOptions {
        brokers: brokers.clone(),
        inference_topic: INFERENCE_TOPIC.into(),
        metric_topic: METRIC_TOPIC.into(),
        count: None,
        duration: Some(event_span),
        max_wall_time: wall + Duration::from_secs(60),
        pacing: Pacing::RealTime { speedup: o.speedup },
        scenario: scenario(start_ms, regress_at, o.rate),
        ..GenOptions::default()
    };
    say(&format!(
        "traffic: {} req/s of event time, {}x real time; fraud-detector's canary v42 regresses \
         about a minute in (slower, more errors, `amount` drifts); support-chat's canary is healthy",
        o.rate, o.speedup
    ));
    say(&format!(
        "api: http://{}/api/v1/canaries   metrics: http://{}/metrics",
        o.listen, o.listen
    ));
    let generator = std::thread::Builder::new()
        .name("modelwatch-demo-gen".into())
        .spawn(move || modelwatch_kafka::run(traffic))
        .context("starting the generator")?;

    let stop = Arc::new(AtomicBool::new(false));
    if let Some(d) = o.duration {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let end = Instant::now() + d;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let display = {
        let stop = Arc::clone(&stop);
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("modelwatch-demo-view".into())
            .spawn(move || show_progress(&handle, &source, &stop, regress_at))
            .context("starting the progress view")?
    };
    say("running (Ctrl-C to stop)\n");
    let result = crate::serve::run_with(&config, Arc::clone(&stop), memory);
    stop.store(true, Ordering::Relaxed);
    let _ = display.join();
    drop(generator);
    drop(mock);
    result?;
    say(&format!(
        "\nstopped: {} alert notification(s) received.",
        alerts_seen.load(Ordering::Relaxed)
    ));
    match &clickhouse {
        Some((url, _)) => print_sql(o, url, started.iter().any(|s| s.what == "ClickHouse")),
        None => say(
            "No history was kept (no ClickHouse). With one, every window, drift score, verdict \
             and alert stays queryable: deploy/local/install-clickhouse.sh, or --clickhouse URL.",
        ),
    }
    Ok(())
}

/// Starts (or checks) ClickHouse and resets the demo database: its URL and a store over it.
fn connect_clickhouse(
    o: &DemoOptions,
    scripts: Option<&Path>,
    demo_dir: &Path,
    started: &mut Vec<Started>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(String, modelwatch_clickhouse::Store)> {
    let clickhouse = match &o.clickhouse {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let dir = scripts.context(
                "the deploy/local scripts are not here (run the demo from a checkout, or give \
                 --clickhouse http://HOST:8123)",
            )?;
            let cdir = demo_dir.join("clickhouse");
            let cdir_s = cdir.to_string_lossy().into_owned();
            let url = script(
                dir,
                "clickhouse-start.sh",
                &[
                    "--dir",
                    &cdir_s,
                    "--http-port",
                    &CH_HTTP_PORT.to_string(),
                    "--tcp-port",
                    &CH_TCP_PORT.to_string(),
                ],
            )
            .context(
                "it could not be started (deploy/local/install-clickhouse.sh needs root and apt)",
            )?;
            if !o.keep {
                let d = dir.to_path_buf();
                started.push(Started {
                    what: "ClickHouse",
                    stop: Box::new(move || {
                        script(&d, "clickhouse-stop.sh", &["--dir", &cdir_s]).map(drop)
                    }),
                });
            }
            url
        }
    };
    let store = crate::serve::store(&Config::from_toml_str(
        &format!(
            "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\ninference_topics = [\"x\"]\n[clickhouse]\nurl = \"{clickhouse}\"\ndatabase = \"{}\"\n",
            o.database
        ),
        &Environment::default(),
    )?)?;
    rt.block_on(
        store.client().query(&format!("DROP DATABASE IF EXISTS `{}`", o.database)).execute(),
    )
    .with_context(|| format!("{clickhouse} does not answer"))?;
    Ok((clickhouse, store))
}

/// A webhook receiver on 127.0.0.1 that verifies the signature and prints each alert.
fn start_receiver(
    rt: &tokio::runtime::Runtime,
    seen: Arc<AtomicU64>,
) -> anyhow::Result<SocketAddr> {
    use axum::http::HeaderMap;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding the webhook receiver")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = Arc::clone(&seen);
            async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
                let now_s = (wall_ms() / 1000) as u64;
                let signed = modelwatch_notify::verify_signature(
                    WEBHOOK_SECRET.as_bytes(),
                    h("x-modelwatch-timestamp"),
                    h("x-modelwatch-signature"),
                    &body,
                    now_s,
                );
                let j: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                for a in j["alerts"].as_array().into_iter().flatten() {
                    seen.fetch_add(1, Ordering::Relaxed);
                    say(&format!(
                        "  ALERT {:<8} {} {}/{}: {}{}",
                        a["status"].as_str().unwrap_or("?").to_uppercase(),
                        a["labels"]["alertname"].as_str().unwrap_or("?"),
                        a["labels"]["model"].as_str().unwrap_or("?"),
                        a["labels"]["version"].as_str().unwrap_or("?"),
                        a["annotations"]["summary"].as_str().unwrap_or(""),
                        if signed { "" } else { "  (BAD SIGNATURE)" },
                    ));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    std::thread::Builder::new().name("modelwatch-demo-hook".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            let listener = listener.into_std().and_then(|l| {
                let _g = rt.enter();
                tokio::net::TcpListener::from_std(l)
            });
            if let Ok(l) = listener {
                let _ = rt.block_on(axum::serve(l, app).into_future());
            }
        }
    })?;
    Ok(addr)
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct VersionLine {
    model: String,
    version: String,
    p99_ms: Option<f64>,
    error_rate: Option<f64>,
    end_ms: i64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DriftLine {
    model: String,
    version: String,
    top_feature: String,
    max_psi: f64,
}

/// Where the progress view reads from.
#[allow(clippy::large_enum_variant, reason = "one per process")]
enum Progress {
    /// The demo's database.
    ClickHouse(modelwatch_clickhouse::Store),
    /// The run's memory (no ClickHouse).
    Memory(Arc<MemoryHistory>),
}

/// What one refresh of the view shows.
struct Snapshot {
    /// Requests in every pane written so far.
    total: u64,
    versions: Vec<VersionLine>,
    drift: Vec<DriftLine>,
    /// [`crate::api::verdicts_json`] of the latest verdicts.
    verdicts: Vec<serde_json::Value>,
}

impl Progress {
    fn snapshot(&self, rt: &tokio::runtime::Handle) -> Snapshot {
        match self {
            Self::ClickHouse(store) => Self::query(store, rt),
            Self::Memory(m) => {
                let versions = m
                    .latest_windows()
                    .into_iter()
                    .map(|w| VersionLine {
                        model: w.model,
                        version: w.version,
                        p99_ms: w.latency_p99_ms,
                        error_rate: w.error_rate,
                        end_ms: w.window_end_ms,
                    })
                    .collect();
                let mut drift: BTreeMap<(String, String), DriftLine> = BTreeMap::new();
                for d in
                    m.latest_drift().into_iter().filter(|d| d.reference.starts_with("version:"))
                {
                    let line =
                        drift.entry((d.model.clone(), d.version.clone())).or_insert(DriftLine {
                            model: d.model,
                            version: d.version,
                            top_feature: String::new(),
                            max_psi: f64::NEG_INFINITY,
                        });
                    if d.psi > line.max_psi {
                        line.max_psi = d.psi;
                        line.top_feature = d.feature;
                    }
                }
                Snapshot {
                    total: m.requests(),
                    versions,
                    drift: drift.into_values().collect(),
                    verdicts: crate::api::verdicts_json(m.latest_verdicts(None)),
                }
            }
        }
    }

    fn query(store: &modelwatch_clickhouse::Store, rt: &tokio::runtime::Handle) -> Snapshot {
        let db = store.database();
        let q = |sql: String| store.client().query(&sql);
        let total: u64 = rt
            .block_on(
                q(format!("SELECT toUInt64(sum(requests)) FROM `{db}`.pane_stats")).fetch_one(),
            )
            .unwrap_or(0);
        let versions: Vec<VersionLine> = rt
            .block_on(
                q(format!(
                    "SELECT model, version, argMax(latency_p99_ms, window_end_ms) AS p99_ms, \
                     argMax(error_rate, window_end_ms) AS error_rate, \
                     max(window_end_ms) AS end_ms \
                     FROM `{db}`.window_stats FINAL GROUP BY model, version ORDER BY model, version"
                ))
                .fetch_all(),
            )
            .unwrap_or_default();
        let drift: Vec<DriftLine> = rt
            .block_on(
                q(format!(
                    "SELECT model, version, argMax(feature, psi) AS top_feature, max(psi) AS max_psi \
                     FROM `{db}`.drift_scores FINAL WHERE reference LIKE 'version:%' \
                     AND (model, version, window_end_ms) IN (SELECT model, version, \
                     max(window_end_ms) FROM `{db}`.drift_scores GROUP BY model, version) \
                     GROUP BY model, version"
                ))
                .fetch_all(),
            )
            .unwrap_or_default();
        let verdicts = rt
            .block_on(store.latest_canary_verdicts(None))
            .map(crate::api::verdicts_json)
            .unwrap_or_default();
        Snapshot { total, versions, drift, verdicts }
    }
}

/// Every few seconds: events/s, per version p99, error rate, top drift, canary decisions.
fn show_progress(
    rt: &tokio::runtime::Handle,
    source: &Progress,
    stop: &AtomicBool,
    regress_at_ms: i64,
) {
    let started = Instant::now();
    let mut last: Option<(Instant, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..30 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let Snapshot { total, versions, drift, verdicts } = source.snapshot(rt);
        let now = Instant::now();
        let rate = last.map_or(0.0, |(t, n)| {
            total.saturating_sub(n) as f64 / now.duration_since(t).as_secs_f64().max(0.001)
        });
        last = Some((now, total));
        let event_time = versions.iter().map(|v| v.end_ms).max();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "[{:>4}s] {:>6.0} events/s written, {total} in all{}",
            started.elapsed().as_secs(),
            rate,
            event_time.map_or(String::new(), |t| {
                let rel = (t - regress_at_ms) / 1000;
                if rel < 0 {
                    format!("; regression in {}s of event time", -rel)
                } else {
                    format!("; regression running for {rel}s of event time")
                }
            }),
        );
        let drift_of: BTreeMap<(&str, &str), &DriftLine> =
            drift.iter().map(|d| ((d.model.as_str(), d.version.as_str()), d)).collect();
        for v in &versions {
            let canary = verdicts
                .iter()
                .find(|c| c["model"] == v.model.as_str() && c["canary"] == v.version.as_str());
            let d =
                drift_of.get(&(v.model.as_str(), v.version.as_str())).map_or(String::new(), |d| {
                    format!("drift psi {:.2} ({})", d.max_psi, d.top_feature)
                });
            let _ = write!(
                out,
                "  {:<15} {:<12} p99 {:>7} err {:>6} {:<28}",
                v.model,
                if canary.is_some() { format!("{} canary", v.version) } else { v.version.clone() },
                v.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms")),
                v.error_rate.map_or("-".into(), |e| format!("{:.2}%", e * 100.0)),
                d,
            );
            if let Some(c) = canary {
                let decision = c["decision"].as_str().unwrap_or("?").to_uppercase();
                let extra = match c["samples_needed"].as_u64() {
                    Some(n) => format!(" ({n} more canary requests needed)"),
                    None => String::new(),
                };
                let _ = write!(out, " -> {decision}{extra}");
            }
            out.push('\n');
        }
        say(out.trim_end());
    }
}

fn print_sql(o: &DemoOptions, clickhouse: &str, stopped_clickhouse: bool) {
    let db = &o.database;
    let mut s = String::new();
    let _ = writeln!(s, "\nThe history is in ClickHouse, database `{db}`.");
    if stopped_clickhouse {
        let _ = writeln!(
            s,
            "The demo stopped the ClickHouse it started; its data stays. To explore it, start it \
             again (or run the demo with --keep):\n  deploy/local/clickhouse-start.sh --dir {} \
             --http-port {CH_HTTP_PORT} --tcp-port {CH_TCP_PORT}",
            cache_dir().join("demo/clickhouse").display()
        );
    }
    let queries = [
        (
            "p99 latency and error rate per version, minute by minute",
            format!(
                "SELECT model, version, toStartOfMinute(window_end) AS minute, \
                 round(max(latency_p99_ms), 1) AS p99_ms, round(avg(error_rate) * 100, 2) AS err_pct \
                 FROM {db}.window_stats FINAL GROUP BY model, version, minute ORDER BY model, version, minute"
            ),
        ),
        (
            "the canary decisions over time",
            format!(
                "SELECT model, canary_version, window_end, decision, round(score) AS score \
                 FROM {db}.canary_verdicts FINAL WHERE scope = 'cumulative' AND metric = 'overall' \
                 ORDER BY model, window_end DESC LIMIT 20"
            ),
        ),
        (
            "the evidence of the latest verdict per model",
            format!(
                "SELECT model, metric, classification, p_value, effect, n_baseline, n_canary \
                 FROM {db}.canary_verdicts FINAL WHERE scope = 'cumulative' AND (model, window_end_ms) IN \
                 (SELECT model, max(window_end_ms) FROM {db}.canary_verdicts GROUP BY model) ORDER BY model, metric"
            ),
        ),
        (
            "drift of the canaries against their baselines",
            format!(
                "SELECT model, version, feature, round(max(psi), 3) AS max_psi FROM {db}.drift_scores FINAL \
                 WHERE reference LIKE 'version:%' GROUP BY model, version, feature ORDER BY max_psi DESC LIMIT 10"
            ),
        ),
        (
            "the alerts and their deliveries",
            format!(
                "SELECT toDateTime(intDiv(at_ms, 1000)) AS at, rule, model, version, state, channel, \
                 delivery_status FROM {db}.alerts FINAL ORDER BY at_ms"
            ),
        ),
    ];
    for (what, sql) in queries {
        let _ = writeln!(s, "\n-- {what}\ncurl -s {clickhouse} --data-binary \"{sql}\"");
    }
    say(&s);
}
