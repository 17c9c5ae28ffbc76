//! The end-to-end harness: real broker and ClickHouse (deploy/local/services.sh), `modelwatch
//! run` as a child process, HTTP scrapes of /metrics, SQL over ClickHouse's HTTP interface.
//!
//! A test that needs the services skips (with a note) when `MODELWATCH_TEST_BROKERS` or
//! `MODELWATCH_TEST_CLICKHOUSE_URL` is unset, and fails under `CI=true`.
//!
//! For the alerting tests: a webhook [`Receiver`] run by the test, and private SMTP servers
//! ([`Smtp`]) and Alertmanagers ([`Alertmanager`]) started through `deploy/local/*-start.sh`
//! (which install what is missing); a test that cannot have them skips, or fails under `CI=true`.

#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Addresses of the services of the suite.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// Kafka bootstrap servers.
    pub(crate) brokers: String,
    /// ClickHouse HTTP URL.
    pub(crate) clickhouse: String,
    /// The test's own broker, stopped when the last clone is dropped.
    pub(crate) _broker: Option<Arc<PrivateBroker>>,
}

/// A tansu broker of one test, on a fresh SQLite database in a temporary directory and a free
/// port: tansu's SQLite engine slows down as data piles up (and stalled under the whole suite's
/// load on one shared broker), so every end-to-end test gets a small one of its own.
#[derive(Debug)]
pub(crate) struct PrivateBroker {
    dir: PathBuf,
}

impl PrivateBroker {
    fn script(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local").join(name)
    }

    /// Starts one; the bootstrap address. A port that was free when asked can be taken before
    /// the broker binds it (CI saw one broker exit at startup), so up to three ports are tried.
    fn start(name: &str) -> (Self, String) {
        for attempt in 1..=3 {
            let dir = std::env::temp_dir().join(fresh(&format!("mw-broker-{name}")));
            let port = free_port().to_string();
            let out = Command::new(Self::script("broker-start.sh"))
                .args(["--dir", dir.to_str().unwrap(), "--port", &port])
                .stderr(Stdio::inherit())
                .output()
                .expect("run broker-start.sh");
            let me = Self { dir };
            if out.status.success() {
                return (me, String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            eprintln!("private broker on port {port} did not start (attempt {attempt} of 3)");
            drop(me);
        }
        panic!("private broker did not start on three ports");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(Self::script("broker-stop.sh"))
            .args(["--dir", self.dir.to_str().unwrap_or_default()])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The services, or `None` (with a note) outside CI when they are not configured. With
/// `MODELWATCH_TANSU_BIN` set (deploy/local/services.sh writes it), the test gets a private
/// broker; otherwise it uses `MODELWATCH_TEST_BROKERS`.
pub(crate) fn services(test: &str) -> Option<Services> {
    let get = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    match (get("MODELWATCH_TEST_BROKERS"), get("MODELWATCH_TEST_CLICKHOUSE_URL")) {
        (Some(brokers), Some(clickhouse)) => {
            if get("MODELWATCH_TANSU_BIN").is_some() {
                let name: String = test.chars().filter(char::is_ascii_alphanumeric).collect();
                let (broker, brokers) = PrivateBroker::start(&name);
                let _broker = Some(Arc::new(broker));
                return Some(Services { brokers, clickhouse, _broker });
            }
            Some(Services { brokers, clickhouse, _broker: None })
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "MODELWATCH_TEST_BROKERS and MODELWATCH_TEST_CLICKHOUSE_URL must be set when \
                 CI=true (deploy/local/services.sh up)"
            );
            eprintln!("note: skipping {test}: the test services are not configured");
            None
        }
    }
}

/// A name no other run uses: lowercase letters, digits and underscores (valid for topics,
/// groups and ClickHouse databases).
pub(crate) fn fresh(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Creates topics of `partitions` partitions each.
pub(crate) fn create_topics(brokers: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in futures_executor::block_on(admin.create_topics(&new, &opts)).unwrap() {
        r.unwrap();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs SQL over ClickHouse's HTTP interface; the answer's text (TSV unless asked otherwise).
pub(crate) fn sql(clickhouse: &str, query: &str) -> String {
    let mut resp = ureq::post(clickhouse)
        .send(query)
        .unwrap_or_else(|e| panic!("clickhouse query failed: {e}\n{query}"));
    resp.body_mut().read_to_string().unwrap()
}

/// Rows of a TSV answer, split into fields.
pub(crate) fn tsv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// One scenario's names: topics, group, database.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The services.
    pub(crate) services: Services,
    /// Inference topic.
    pub(crate) inference: String,
    /// Metric topic.
    pub(crate) metrics: String,
    /// Dead-letter topic.
    pub(crate) dead_letters: String,
    /// Consumer group.
    pub(crate) group: String,
    /// ClickHouse database.
    pub(crate) database: String,
}

impl Setup {
    /// Fresh names; creates the topics (`partitions` for inference and metrics, 1 for dead
    /// letters).
    pub(crate) fn new(services: &Services, name: &str, partitions: i32) -> Self {
        let base = fresh(name);
        let s = Self {
            services: services.clone(),
            inference: format!("{base}_inf"),
            metrics: format!("{base}_met"),
            dead_letters: format!("{base}_dlq"),
            group: format!("{base}_g"),
            database: format!("{base}_db"),
        };
        create_topics(&services.brokers, &[&s.inference, &s.metrics], partitions);
        create_topics(&services.brokers, &[&s.dead_letters], 1);
        s
    }

    /// A configuration for these names, listening on `http_port`, with test-friendly windows
    /// unless `extra` (appended TOML sections) says otherwise: 30 s windows of 5 s slides, 2 s
    /// lateness, 5 s idle timeout, and 5 min of backlog idle timeout (tansu serves one large
    /// partition at a time and can starve the others for more than the default 2 minutes: a
    /// starved partition with a known backlog must hold windows back, not close them).
    pub(crate) fn config(&self, http_port: u16, extra: &str) -> String {
        let mut text = format!(
            "[kafka]\nbrokers = [\"{b}\"]\ngroup_id = \"{g}\"\ninference_topics = [\"{i}\"]\n\
             metric_topics = [\"{m}\"]\ndead_letter_topic = \"{d}\"\n\n\
             [clickhouse]\nurl = \"{c}\"\ndatabase = \"{db}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n",
            b = self.services.brokers,
            g = self.group,
            i = self.inference,
            m = self.metrics,
            d = self.dead_letters,
            c = self.services.clickhouse,
            db = self.database,
        );
        if !extra.contains("[windows]") {
            text.push_str(
                "[windows]\nwindow = \"30s\"\nslide = \"5s\"\nallowed_lateness = \"2s\"\n\
                 idle_timeout = \"5s\"\nbacklog_idle_timeout = \"5m\"\n\n",
            );
        }
        text.push_str(extra);
        text
    }

    /// `SELECT ...` against this setup's database: `{db}` in the query is replaced.
    pub(crate) fn sql(&self, query: &str) -> String {
        sql(&self.services.clickhouse, &query.replace("{db}", &self.database))
    }

    /// The same topics with a fresh consumer group and database (a second run over the same
    /// input).
    pub(crate) fn sibling(&self, name: &str) -> Self {
        let base = fresh(name);
        Self { group: format!("{base}_g"), database: format!("{base}_db"), ..self.clone() }
    }

    /// Every row of `table` read with FINAL, every column but the wall-clock ones, as sorted
    /// TSV lines (columns in the order `columns` gives; see [`Setup::columns`]).
    pub(crate) fn dump(&self, table: &str, columns: &[String]) -> Vec<String> {
        let cols = columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
        let text =
            self.sql(&format!("SELECT {cols} FROM {{db}}.`{table}` FINAL FORMAT TabSeparated"));
        let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
        rows.sort();
        rows
    }

    /// The columns of `table` except the wall-clock ones (`written_at_ms` and the `written_at`
    /// derived from it): key columns first, then by name.
    pub(crate) fn columns(&self, table: &str) -> Vec<String> {
        let text = self.sql(&format!(
            "SELECT name FROM system.columns WHERE database = '{}' AND table = '{table}' \
             ORDER BY name FORMAT TabSeparated",
            self.database
        ));
        // Key columns first, so that a diff reads as "which row", then the rest by name.
        const KEYS: [&str; 12] = [
            "model",
            "version",
            "name",
            "reference",
            "kind",
            "feature",
            "pane_start_ms",
            "window_end_ms",
            "source_partition",
            "requests",
            "count",
            "samples",
        ];
        let rank = |c: &str| KEYS.iter().position(|k| *k == c).unwrap_or(KEYS.len());
        let mut cols: Vec<String> = text
            .lines()
            .filter(|c| !c.is_empty() && !matches!(*c, "written_at_ms" | "written_at"))
            .map(str::to_owned)
            .collect();
        cols.sort_by_key(|c| rank(c));
        cols
    }

    /// A fingerprint of what is written: per table, the row count after FINAL and the
    /// latest `written_at_ms`. Unchanged over a few seconds: nothing is being written.
    pub(crate) fn fingerprint(&self, tables: &[&str]) -> String {
        tables
            .iter()
            .map(|t| {
                self.sql(&format!(
                    "SELECT (SELECT count() FROM {{db}}.`{t}` FINAL), \
                     (SELECT max(written_at_ms) FROM {{db}}.`{t}`)"
                ))
                .trim()
                .to_owned()
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// Compares the dumps of `tables` (see [`Setup::dump`]) of two runs; `None` when identical,
/// otherwise a report with the first differing rows of each table.
pub(crate) fn compare_tables(a: &Setup, b: &Setup, tables: &[&str]) -> Option<String> {
    use std::collections::BTreeSet;
    let mut report = String::new();
    for t in tables {
        let cols = a.columns(t);
        let (ra, rb) = (a.dump(t, &cols), b.dump(t, &cols));
        if ra == rb {
            continue;
        }
        let (sa, sb): (BTreeSet<&String>, BTreeSet<&String>) =
            (ra.iter().collect(), rb.iter().collect());
        let only_a: Vec<&&String> = sa.difference(&sb).collect();
        let only_b: Vec<&&String> = sb.difference(&sa).collect();
        report.push_str(&format!(
            "table {t}: {} rows in A, {} in B; {} only in A, {} only in B\ncolumns: {}\n",
            ra.len(),
            rb.len(),
            only_a.len(),
            only_b.len(),
            cols.join("\t")
        ));
        let cut = |r: &str| r.chars().take(400).collect::<String>();
        for r in only_a.iter().take(5) {
            report.push_str(&format!("  A only: {}\n", cut(r)));
        }
        for r in only_b.iter().take(5) {
            report.push_str(&format!("  B only: {}\n", cut(r)));
        }
    }
    (!report.is_empty()).then_some(report)
}

/// A ClickHouse server of a test's own (its own data directory and loopback ports), started
/// and stopped by deploy/local/clickhouse-start.sh and clickhouse-stop.sh, as the clickhouse
/// crate's restart test does.
#[derive(Debug)]
pub(crate) struct PrivateClickHouse {
    /// Its data directory.
    pub(crate) dir: PathBuf,
    /// Its HTTP port.
    pub(crate) http_port: u16,
    tcp_port: u16,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local").join(name)
}

impl PrivateClickHouse {
    /// Whether `clickhouse-server` is installed here.
    pub(crate) fn available() -> bool {
        Command::new("sh")
            .args(["-c", "command -v clickhouse-server || test -x /usr/sbin/clickhouse-server"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A server (not started yet) on free ports, with a fresh data directory.
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(fresh(&format!("mw-ch-{name}")));
        Self { dir, http_port: free_port(), tcp_port: free_port() }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts it; returns once `/ping` answers.
    pub(crate) fn start(&self) {
        let status = Command::new(script("clickhouse-start.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--http-port", &self.http_port.to_string()])
            .args(["--tcp-port", &self.tcp_port.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "clickhouse-start.sh failed for {:?}", self.dir);
    }

    /// Stops it (SIGTERM, as an operator would) and waits for the exit.
    pub(crate) fn stop(&self) {
        let status = Command::new(script("clickhouse-stop.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "clickhouse-stop.sh failed for {:?}", self.dir);
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        let _ = Command::new(script("clickhouse-stop.sh")).arg("--dir").arg(&self.dir).status();
        // Keep the logs of a failed test.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `modelwatch run` child process.
#[derive(Debug)]
pub(crate) struct Instance {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub(crate) http: String,
    /// Where its log (stderr) goes.
    pub(crate) log: PathBuf,
}

impl Instance {
    /// Starts `modelwatch run` with the configuration `text` (which must listen on `http_port`)
    /// and waits until /healthz answers.
    pub(crate) fn start(name: &str, text: &str, http_port: u16) -> Self {
        Self::start_with_env(name, text, http_port, &[])
    }

    /// [`Instance::start`] with extra environment variables (e.g. a test fail point).
    pub(crate) fn start_with_env(
        name: &str,
        text: &str,
        http_port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env_clear()
            // MODELWATCH_TEST_LOG sets a more verbose filter for a run under investigation.
            .env("RUST_LOG", std::env::var("MODELWATCH_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start modelwatch run");
        let me = Self { child: Some(child), http: format!("http://127.0.0.1:{http_port}"), log };
        me.wait_until("/healthz answers", Duration::from_secs(60), |i| i.get("/healthz").is_some());
        me
    }

    /// The body of a GET, `None` when it fails or answers an error status.
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        let mut resp = ureq::get(&format!("{}{path}", self.http)).call().ok()?;
        resp.body_mut().read_to_string().ok()
    }

    /// The process id of the child (`None` once stopped).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `kB` field of the child's `/proc/PID/status`, e.g. `VmHWM` (peak resident set) or
    /// `VmRSS`; `None` when the process is gone or the field is missing.
    pub(crate) fn proc_status_kb(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line =
            text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
        line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// The status code of a GET (0 when the connection fails).
    pub(crate) fn status(&self, path: &str) -> u16 {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(&format!("{}{path}", self.http)).call().map_or(0, |r| r.status().as_u16())
    }

    /// The sum of every sample of `/metrics` whose name (with labels) starts with `prefix`,
    /// e.g. `modelwatch_events_rejected_total{topic="t",reason="late"`.
    pub(crate) fn metric(&self, prefix: &str) -> f64 {
        let text = self.get("/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `cond` every 200 ms until it holds; panics with the log after `timeout`.
    pub(crate) fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return;
            }
            assert!(
                self.is_running(),
                "modelwatch exited while waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let metrics: String = self
            .get("/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        panic!(
            "timed out after {timeout:?} waiting for {what}; metrics:\n{metrics}\nlog:\n{}",
            self.log()
        );
    }

    /// Whether the process still runs.
    pub(crate) fn is_running(&self) -> bool {
        // `try_wait` needs `&mut`; a signal 0 probe does not.
        let Some(c) = &self.child else { return false };
        Command::new("kill").args(["-0", &c.id().to_string()]).status().is_ok_and(|s| s.success())
            && !std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
                .unwrap_or_default()
                .contains(") Z ")
    }

    /// The log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (at most 60 s).
    pub(crate) fn stop(mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL, then reaps the process.
    pub(crate) fn kill(mut self) {
        self.signal("-KILL");
        self.wait(Duration::from_secs(10));
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("modelwatch did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Milliseconds since the epoch, wall clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// An RFC 3339 time as milliseconds since the epoch.
pub(crate) fn rfc3339_ms(s: &str) -> i64 {
    humantime::parse_rfc3339_weak(s).unwrap().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The request path.
    pub(crate) path: String,
    /// Lower-case names.
    pub(crate) headers: BTreeMap<String, String>,
    /// The body bytes.
    pub(crate) body: Vec<u8>,
    /// Wall clock (ms since the epoch) when the request line arrived.
    pub(crate) received_ms: i64,
}

impl Request {
    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: records every request, answers 200.
pub(crate) struct Receiver {
    /// Its port.
    pub(crate) port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Starts one on a free port.
    pub(crate) fn start() -> Self {
        Self::start_failing(0)
    }

    /// Starts one that answers 500 to its first `failures` requests (recording them too).
    pub(crate) fn start_failing(failures: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        if let Some(req) = read_request(&stream) {
                            let n = {
                                let mut all = r.lock().unwrap();
                                all.push(req);
                                all.len()
                            };
                            let status: &[u8] = if n <= failures {
                                b"HTTP/1.1 500 Internal Server Error"
                            } else {
                                b"HTTP/1.1 200 OK"
                            };
                            let mut w = &stream;
                            let _ = w.write_all(status);
                            let _ =
                                w.write_all(b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        }
                    }
                    // Polled every 5 ms, so arrival times are exact to a few ms.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, requests, stop }
    }

    /// Every request so far, in arrival order.
    pub(crate) fn notifications(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let received_ms = now_ms();
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request { path, headers, body, received_ms })
}

/// Skips the test (with a note) when a service cannot be had, or fails under `CI=true`.
pub(crate) fn skip_or_fail(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why} (CI=true: the service must be available)"
    );
    eprintln!("note: skipping {test}: {why}");
}

/// A private SMTP server (deploy/local/smtp-start.sh: aiosmtpd, STARTTLS offered with a
/// self-signed certificate) in a fresh directory, stopped and wiped on drop.
pub(crate) struct Smtp {
    /// Its directory (messages/, tls/).
    pub(crate) dir: PathBuf,
    /// Its port (plain SMTP with STARTTLS).
    pub(crate) port: u16,
}

impl Smtp {
    /// Starts one, or `None` after [`skip_or_fail`] when the script fails.
    pub(crate) fn start(test: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(fresh("mw-smtp"));
        let port = free_port();
        let out = Command::new(script("smtp-start.sh"))
            .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string()])
            .stderr(Stdio::inherit())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir, port }),
            other => {
                let _ = std::fs::remove_dir_all(&dir);
                skip_or_fail(test, &format!("the SMTP server did not start: {other:?}"));
                None
            }
        }
    }

    /// Stops the server (its directory, port and certificate stay for [`Smtp::start_again`]).
    pub(crate) fn stop(&self) {
        let status = Command::new(script("smtp-stop.sh"))
            .args(["--dir", self.dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "smtp-stop.sh failed");
    }

    /// Starts the stopped server again on its port.
    pub(crate) fn start_again(&self) {
        let status = Command::new(script("smtp-start.sh"))
            .args(["--dir", self.dir.to_str().unwrap(), "--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "smtp-start.sh failed");
    }

    /// The self-signed certificate the server presents (the client's `ca_file`).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }

    /// The stored messages, oldest first.
    pub(crate) fn messages(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("messages"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = Command::new(script("smtp-stop.sh"))
            .args(["--dir", self.dir.to_str().unwrap_or_default(), "--wipe"])
            .stderr(Stdio::null())
            .status();
    }
}

/// A stored message, parsed by Python's `email` package from the venv the SMTP server runs in.
#[derive(Debug)]
pub(crate) struct Mail {
    /// Header name (as written) -> value; repeated headers joined by ", ".
    pub(crate) headers: BTreeMap<String, String>,
    /// The decoded text/plain part.
    pub(crate) text: String,
    /// The decoded text/html part.
    pub(crate) html: String,
}

/// Parses a message the [`Smtp`] server stored.
pub(crate) fn parse_mail(path: &Path) -> Mail {
    let venv = std::env::var("MODELWATCH_PYVENV").ok().map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var("MODELWATCH_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/modelwatch")
        });
        cache.join("pyvenv")
    });
    let code = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
h = {}
for k, v in m.items():
    h[k] = (h[k] + ', ' + str(v)) if k in h else str(v)
body = lambda t: (m.get_body(preferencelist=(t,)) or None)
text = body('plain'); html = body('html')
print(json.dumps({'headers': h, 'text': text.get_content() if text else '', 'html': html.get_content() if html else ''}))
"#;
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", code, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Mail {
        headers: v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect(),
        text: v["text"].as_str().unwrap().replace("\r\n", "\n"),
        html: v["html"].as_str().unwrap().replace("\r\n", "\n"),
    }
}

/// A private Alertmanager (deploy/local/alertmanager-start.sh: Debian's 0.25, clustering off),
/// stopped and wiped on drop.
pub(crate) struct Alertmanager {
    /// Its directory.
    pub(crate) dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl Alertmanager {
    /// Starts one with this `resolve_timeout`, or `None` after [`skip_or_fail`].
    pub(crate) fn start(test: &str, resolve_timeout: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(fresh("mw-am"));
        let port = free_port().to_string();
        let out = Command::new(script("alertmanager-start.sh"))
            .args(["--dir", dir.to_str().unwrap(), "--port", &port])
            .args(["--resolve-timeout", resolve_timeout])
            .stderr(Stdio::inherit())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                Some(Self { dir, url: String::from_utf8_lossy(&o.stdout).trim().to_owned() })
            }
            other => {
                let _ = std::fs::remove_dir_all(&dir);
                skip_or_fail(test, &format!("Alertmanager did not start: {other:?}"));
                None
            }
        }
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds unresolved (active, silenced or
    /// inhibited).
    pub(crate) fn alerts(&self) -> Vec<serde_json::Value> {
        let mut resp = ureq::get(format!("{}/api/v2/alerts", self.url)).call().unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        v.as_array().unwrap().clone()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = Command::new(script("alertmanager-stop.sh"))
            .args(["--dir", self.dir.to_str().unwrap_or_default(), "--wipe"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Generated traffic of the alerting tests: fraud-detector (and support-chat with `chat`),
/// each model's canary taking 30% of its requests, and fraud-detector's canary v42 four times
/// slower from `from_minute` to `until_minute` of event time, which starts at `start_ms`.
#[derive(Debug, Clone)]
pub(crate) struct Regression {
    /// Event time of the first request, ms.
    pub(crate) start_ms: i64,
    /// Minutes of event time generated.
    pub(crate) minutes: u64,
    /// The regression's start, in minutes from `start_ms`.
    pub(crate) from_minute: i64,
    /// The regression's end, in minutes from `start_ms`.
    pub(crate) until_minute: i64,
    /// Event time per wall time.
    pub(crate) speedup: f64,
    /// Requests per second of event time over all models.
    pub(crate) rate: f64,
    /// The generator's seed.
    pub(crate) seed: u64,
    /// Whether support-chat (healthy) is generated too.
    pub(crate) chat: bool,
}

impl Regression {
    /// Event time of the regression's start, ms.
    pub(crate) fn regressed_from_ms(&self) -> i64 {
        self.start_ms + self.from_minute * 60_000
    }

    /// Event time of the regression's end, ms.
    pub(crate) fn regressed_until_ms(&self) -> i64 {
        self.start_ms + self.until_minute * 60_000
    }

    /// Produces it into `setup`'s topics at real-time pacing on a thread of its own.
    pub(crate) fn spawn(
        &self,
        setup: &Setup,
    ) -> std::thread::JoinHandle<modelwatch_kafka::GenReport> {
        use modelwatch_kafka::scenario::{EventTime, Incident, IncidentEffect, ModelConfig};
        let mut fraud = ModelConfig::fraud_detector();
        fraud.canary_share = 0.3;
        let mut models = vec![fraud];
        if self.chat {
            let mut chat = ModelConfig::support_chat();
            chat.canary_share = 0.3;
            models.push(chat);
        }
        let scenario = modelwatch_kafka::ScenarioConfig {
            seed: self.seed,
            start_time_ms: Some(self.start_ms),
            requests_per_second: self.rate,
            models,
            incidents: vec![Incident {
                model: "fraud-detector".into(),
                version: Some("v42".into()),
                from: EventTime::Millis(self.regressed_from_ms()),
                until: EventTime::Millis(self.regressed_until_ms()),
                effect: IncidentEffect::LatencyShift { multiplier: 4.0 },
            }],
            ..modelwatch_kafka::ScenarioConfig::default()
        };
        let opts = modelwatch_kafka::GenOptions {
            brokers: setup.services.brokers.clone(),
            inference_topic: setup.inference.clone(),
            metric_topic: setup.metrics.clone(),
            count: None,
            duration: Some(Duration::from_secs(self.minutes * 60)),
            max_wall_time: Duration::from_secs(300),
            pacing: modelwatch_kafka::Pacing::RealTime { speedup: self.speedup },
            scenario,
            ..modelwatch_kafka::GenOptions::default()
        };
        std::thread::spawn(move || modelwatch_kafka::run(opts).unwrap())
    }
}

/// The alerting configuration of the regression tests: the `[[canary]]` pairs of both
/// generated models, notifications grouped for 1 s and repeated or aged out only after an
/// hour, and the rule `canary_p99_regression` (a canary's p99 over 1.5 times its baseline's,
/// 100 requests each, for 10 s; severity critical) delivering to `channels`, whose
/// `[alerts.channels.*]` tables the test appends.
pub(crate) fn regression_alerting(channels: &[&str]) -> String {
    let channels = channels.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
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
max_notification_age = "1h"
external_url = "http://modelwatch.test/"

[[alerts.rules]]
name = "canary_p99_regression"
metric = "latency_p99_ms"
relative_to = "baseline"
compare = "ratio"
op = ">"
threshold = 1.5
min_samples = 100
for = "10s"
severity = "critical"
channels = [{channels}]
annotations = {{ summary = "{{{{model}}}} {{{{version}}}}: p99 {{{{value}}}}x {{{{baseline}}}}" }}
"#
    )
}
