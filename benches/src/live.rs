//! Helpers of the benchmarks that run against the real services (a Kafka broker and ClickHouse,
//! from `deploy/local/services.sh up`): names, topics, the preloaded workload, the engine on a
//! thread, its metrics, and the process's CPU time and resident memory.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modelwatch_clickhouse::{Store, StoreConfig};
use modelwatch_codec::Format;
use modelwatch_core::CoreConfig;
use modelwatch_engine::{
    CanaryPair, ClickHouseSink, EngineError, EngineMetrics, EngineOptions, NullSink,
    PipelineOptions, RunReport,
};
use modelwatch_kafka::scenario::{FeatureConfig, MetricsConfig, ModelConfig, NumericDist};
use modelwatch_kafka::{GenOptions, ScenarioConfig, SourceOptions};
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Models of the live workload; each has a baseline and a canary: 100 versions.
pub const MODELS: usize = 50;
/// Numeric features per record of the live workload.
pub const FEATURES: usize = 20;

/// Addresses of the services.
#[derive(Debug, Clone)]
pub struct Services {
    /// `MODELWATCH_TEST_BROKERS`.
    pub brokers: String,
    /// `MODELWATCH_TEST_CLICKHOUSE_URL`.
    pub clickhouse_url: String,
}

/// The services from the environment, or `None` after printing a skip note.
#[allow(clippy::print_stderr, reason = "the skip note")]
pub fn services(bench: &str) -> Option<Services> {
    let get = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    match (get("MODELWATCH_TEST_BROKERS"), get("MODELWATCH_TEST_CLICKHOUSE_URL")) {
        (Some(brokers), Some(clickhouse_url)) => Some(Services { brokers, clickhouse_url }),
        _ => {
            eprintln!(
                "note: skipping the {bench} benchmark: set MODELWATCH_TEST_BROKERS and \
                 MODELWATCH_TEST_CLICKHOUSE_URL (deploy/local/services.sh up, then \
                 `set -a; source ~/.cache/modelwatch/run/services.env; set +a`)"
            );
            None
        }
    }
}

/// A topic, group or database name no other run uses (letters, digits and `_`).
pub fn fresh(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Wall-clock ms since the epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Creates a topic of `partitions` partitions.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let new = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(&new, &opts))
        .map_err(|e| format!("create topics: {e}"))?;
    for r in results {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes a topic (best effort: the benchmarks' topics are large).
pub fn delete_topic(brokers: &str, topic: &str) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let _ = futures_executor::block_on(admin.delete_topics(&[topic], &opts));
}

/// The live workload: 50 models x (baseline + 10% canary) = 100 versions, 20 numeric and 2
/// categorical features, log-normal latencies with a 3% tail, the default error classes,
/// `rps` requests per second of event time in all (a Poisson process), no metric events.
/// Event time starts at `start_ms`.
pub fn scenario(rps: f64, start_ms: i64) -> ScenarioConfig {
    let models = (0..MODELS)
        .map(|m| {
            let mut c = ModelConfig::fraud_detector();
            c.name = format!("model-{m:03}");
            c.weight = 1.0;
            c.features = (0..FEATURES)
                .map(|i| FeatureConfig {
                    name: format!("txn_feature_{i:02}"),
                    dist: match i % 4 {
                        0 => NumericDist::LogNormal { median: 45.0, sigma: 1.1 },
                        1 => NumericDist::Exponential { mean: 400.0 },
                        2 => NumericDist::Normal { mean: i as f64, std_dev: 1.0 + i as f64 },
                        _ => NumericDist::Uniform { low: 0.0, high: 24.0 },
                    },
                })
                .collect();
            c
        })
        .collect();
    ScenarioConfig {
        seed: 7,
        start_time_ms: Some(start_ms),
        requests_per_second: rps,
        metrics: MetricsConfig { enabled: false, ..MetricsConfig::default() },
        models,
        ..ScenarioConfig::default()
    }
}

/// The canary pairs of [`scenario`].
pub fn canaries() -> Vec<CanaryPair> {
    let m = ModelConfig::fraud_detector();
    (0..MODELS)
        .map(|i| CanaryPair {
            model: format!("model-{i:03}"),
            baseline: m.baseline.clone(),
            canary: m.canary.clone().unwrap_or_default(),
        })
        .collect()
}

/// Generator options for `count` bare-Avro records of [`scenario`] into `topic`.
pub fn gen_options(brokers: &str, topic: &str, count: u64, rps: f64, start_ms: i64) -> GenOptions {
    GenOptions {
        brokers: brokers.to_owned(),
        inference_topic: topic.to_owned(),
        metric_topic: format!("{topic}_metrics_unused"),
        count: Some(count),
        scenario: scenario(rps, start_ms),
        // The local broker (tansu on SQLite) acknowledges a few thousand records per second:
        // a long backlog must not time out in the producer's queue.
        delivery_timeout: Duration::from_secs(600),
        max_wall_time: Duration::from_secs(1_200),
        ..GenOptions::default()
    }
}

/// The CPU seconds (user + system) this process used so far, from `/proc/self/stat` (10 ms
/// resolution).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses: state is field 3,
    // utime field 14, stime field 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux ABI this runs on.
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// The CPU seconds (user + system) process `pid` used so far (0 when it cannot be read).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Other processes to account CPU to, from `MODELWATCH_BENCH_WATCH_PIDS`
/// (`name=pid,name=pid`, e.g. `broker=123,clickhouse=456`).
pub fn watched_pids() -> Vec<(String, u32)> {
    std::env::var("MODELWATCH_BENCH_WATCH_PIDS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The process's resident set (VmRSS) in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The engine's metrics, registered so they can be read back as text.
#[derive(Debug)]
pub struct Metrics {
    /// What the engine updates.
    pub engine: Arc<EngineMetrics>,
    registry: Registry,
}

/// What the metrics say at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    /// `modelwatch_records_consumed_total`, over topics.
    pub records: u64,
    /// `modelwatch_paused`.
    pub paused: bool,
    /// `modelwatch_flushes_in_flight`.
    pub in_flight: u64,
    /// `modelwatch_checkpoints_total`.
    pub checkpoints: u64,
    /// `modelwatch_clickhouse_insert_failures_total`, over tables.
    pub insert_failures: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let engine = Arc::new(EngineMetrics::default());
        let mut registry = Registry::default();
        engine.register(&mut registry);
        Self { engine, registry }
    }
}

impl Metrics {
    /// Reads the metrics (published by the run loop every 250 ms).
    pub fn snapshot(&self) -> Snapshot {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return Snapshot::default();
        }
        let mut s = Snapshot::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let v: f64 = value.parse().unwrap_or(0.0);
            let base = name.split('{').next().unwrap_or(name);
            match base {
                "modelwatch_records_consumed_total" => s.records += v as u64,
                "modelwatch_paused" => s.paused = v > 0.0,
                "modelwatch_flushes_in_flight" => s.in_flight = v as u64,
                "modelwatch_checkpoints_total" => s.checkpoints = v as u64,
                "modelwatch_clickhouse_insert_failures_total" => s.insert_failures += v as u64,
                _ => {}
            }
        }
        s
    }
}

/// A runtime like the binary's: two I/O worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("modelwatch-io")
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// A store on a fresh database of `url`, migrated; and a checked writer.
pub fn store(
    rt: &tokio::runtime::Runtime,
    url: &str,
    database: &str,
) -> Result<(Store, modelwatch_clickhouse::Writer), modelwatch_clickhouse::Error> {
    let store = Store::new(StoreConfig::new(url).with_database(database))?;
    rt.block_on(async {
        store.migrate().await?;
        let w = store.writer().await?;
        Ok((store, w))
    })
}

/// The engine consuming `topic` from the start with a fresh group, on its own thread.
#[derive(Debug)]
pub struct Engine {
    /// Set to stop it (it flushes, checkpoints and returns).
    pub stop: Arc<AtomicBool>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    thread: Option<JoinHandle<Result<RunReport, EngineError>>>,
}

impl Engine {
    /// Starts `modelwatch_engine::run` with the binary's defaults (but its counters published
    /// every 10 ms) and the ClickHouse sink over
    /// `writer` (`None`: the null sink; the store is still read for state and checkpoints).
    pub fn start(
        brokers: &str,
        topic: &str,
        group: &str,
        store: Store,
        writer: Option<modelwatch_clickhouse::Writer>,
        rt: &tokio::runtime::Runtime,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let pipeline = PipelineOptions {
            core: CoreConfig::default(),
            group: group.to_owned(),
            format: Format::Avro,
            resolver: None,
            canaries: canaries(),
        };
        let source = SourceOptions::new(brokers, group, [topic]);
        let mut opts = EngineOptions::new(source, vec![topic.to_owned()], vec![], pipeline);
        // The counters every 10 ms, not every 250: the benchmarks time the engine's progress
        // by them (the consume-only client is timed every 1,024 records), and a 250 ms step
        // made the engine's last record look up to a quarter of a second late.
        opts.metrics_interval = Duration::from_millis(10);
        let stop = Arc::new(AtomicBool::new(false));
        let (s, m, h) = (Arc::clone(&stop), Arc::clone(&metrics.engine), rt.handle().clone());
        let thread = std::thread::Builder::new().name("modelwatch-engine".into());
        let thread = match writer {
            Some(w) => {
                let sink = ClickHouseSink::new(w, Arc::clone(&metrics.engine));
                thread.spawn(move || modelwatch_engine::run(opts, Some(store), sink, m, h, s))
            }
            None => {
                thread.spawn(move || modelwatch_engine::run(opts, Some(store), NullSink, m, h, s))
            }
        }
        .unwrap_or_else(|e| panic!("engine thread: {e}"));
        Self { stop, metrics, thread: Some(thread) }
    }

    /// Stops it and waits for its report.
    pub fn stop(mut self) -> Result<RunReport, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(|e| format!("engine: {e:?}")),
            _ => Err("the engine thread panicked".into()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Progress of a consumer: the time and count of each change seen, so rates can be measured
/// from the first record to the last without the group join.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    started: Option<Instant>,
    first: Option<(Instant, u64)>,
    last: Option<(Instant, u64)>,
}

impl Progress {
    /// Starts the wall clock (before the consumer joins its group).
    pub fn start() -> Self {
        Self { started: Some(Instant::now()), ..Self::default() }
    }
    /// Notes the count seen now, if it changed.
    pub fn note(&mut self, count: u64) {
        let now = Instant::now();
        if count == 0 || self.last.is_some_and(|(_, c)| c == count) {
            return;
        }
        if self.first.is_none() {
            self.first = Some((now, count));
        }
        self.last = Some((now, count));
    }
    /// Records per second from the first observed record to the last.
    pub fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
    /// Seconds from the start to the last record (group join included).
    pub fn total_seconds(&self) -> f64 {
        match (self.started, self.last) {
            (Some(s), Some((t, _))) => (t - s).as_secs_f64(),
            _ => 0.0,
        }
    }
    /// Seconds from the start to the first record (group join, assignment, first fetch).
    pub fn join_seconds(&self) -> f64 {
        match (self.started, self.first) {
            (Some(s), Some((t, _))) => (t - s).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// The path of a script in `deploy/local`.
pub fn deploy_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local").join(name)
}

/// A private ClickHouse server (its own data dir and loopback ports) that a benchmark can stop
/// and start, through `deploy/local/clickhouse-start.sh` and `clickhouse-stop.sh`.
#[derive(Debug)]
pub struct PrivateClickHouse {
    /// Data, config and logs.
    pub dir: PathBuf,
    /// HTTP port.
    pub http_port: u16,
    tcp_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

impl PrivateClickHouse {
    /// A server in a fresh temporary directory (not started).
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(fresh("mw-bench-ch"));
        Self { dir, http_port: free_port(), tcp_port: free_port() }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts it (returns once `/ping` answers).
    pub fn start(&self) -> Result<(), String> {
        let status = Command::new(deploy_script("clickhouse-start.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--http-port", &self.http_port.to_string()])
            .args(["--tcp-port", &self.tcp_port.to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("clickhouse-start.sh: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("clickhouse-start.sh: {status}")) }
    }

    /// Kills it (SIGKILL: a crash; connections are refused at once) and waits until it is gone.
    pub fn kill(&self) -> Result<(), String> {
        let pid = std::fs::read_to_string(self.dir.join("clickhouse.pid"))
            .map_err(|e| format!("clickhouse.pid: {e}"))?;
        let pid = pid.trim().to_owned();
        let status =
            Command::new("kill").args(["-9", &pid]).status().map_err(|e| format!("kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -9 {pid}: {status}"));
        }
        let proc_dir = PathBuf::from("/proc").join(&pid);
        let deadline = Instant::now() + Duration::from_secs(20);
        while proc_dir.exists() && Instant::now() < deadline {
            // A zombie until init reaps it (the script detaches the server).
            let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            if stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) == Some("Z") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it (clean shutdown by the script; may take many seconds).
    pub fn stop(&self) -> Result<(), String> {
        let status = Command::new(deploy_script("clickhouse-stop.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("clickhouse-stop.sh: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("clickhouse-stop.sh: {status}")) }
    }
}

impl Default for PrivateClickHouse {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
