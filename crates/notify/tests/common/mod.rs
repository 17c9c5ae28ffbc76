//! Real servers on 127.0.0.1 for the channel tests: an HTTP receiver run by the test itself
//! (std `TcpListener`, one request per connection, scripted answers), and private SMTP servers
//! and Alertmanagers started through `deploy/local/*-start.sh` and stopped on drop.
//!
//! A test that needs a service the scripts cannot start skips with a note, and fails under
//! `CI=true`.

#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modelwatch_notify::{Alert, Labels, Notification, Status, fingerprint};

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reply {
    /// This status with a short body.
    Status(u16),
    /// Read the request, never answer (hold the connection for up to 30 s).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names lowercased, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) received: Instant,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP receiver on 127.0.0.1: answers each request with the next scripted [`Reply`], then
/// 200, and hands every request to the test.
pub(crate) struct Receiver {
    pub(crate) url: String,
    requests: mpsc::Receiver<Request>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Receiver {
    pub(crate) fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let stop2 = Arc::clone(&stop);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let script = Arc::clone(&script);
                let stop3 = Arc::clone(&stop2);
                thread::spawn(move || serve(conn, &tx, &script, &stop3));
            }
        });
        Self { url: format!("http://127.0.0.1:{port}/hook"), requests: rx, stop, port }
    }

    /// The next request, waiting up to `timeout`.
    pub(crate) fn next(&self, timeout: Duration) -> Option<Request> {
        self.requests.recv_timeout(timeout).ok()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    conn: TcpStream,
    tx: &mpsc::Sender<Request>,
    script: &Mutex<VecDeque<Reply>>,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let received = Instant::now();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        if k == "content-length" {
            length = v.parse().unwrap();
        }
        headers.push((k, v));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
    let _ = tx.send(Request { method, path, headers, body, received });
    let mut conn = conn;
    match reply {
        Reply::Status(status) => {
            let body = format!("status {status}");
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Reply::Hang => {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) && !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `path` in the repository's `deploy/local`.
pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local").join(name)
}

/// A free TCP port on 127.0.0.1 (free when asked).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh directory under the system temp dir.
pub(crate) fn fresh_dir(prefix: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    ))
}

/// Skips the test (with a note) when a service cannot be had, or fails under `CI=true`.
pub(crate) fn skip_or_fail(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why} (CI=true: the service must be available)"
    );
    eprintln!("note: skipping {test}: {why}");
}

/// A private SMTP server (deploy/local/smtp-start.sh) in a fresh directory, stopped and wiped
/// on drop: plain SMTP with STARTTLS on `port`, implicit TLS on `tls_port`.
pub(crate) struct Smtp {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) tls_port: u16,
}

impl Smtp {
    /// Starts one, or `None` after [`skip_or_fail`] when the script fails.
    pub(crate) fn start(test: &str, auth: Option<&str>) -> Option<Self> {
        let dir = fresh_dir("mw-smtp");
        let (port, tls_port) = (free_port(), free_port());
        match Self::start_at(&dir, port, tls_port, auth) {
            Ok(()) => Some(Self { dir, port, tls_port }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                skip_or_fail(test, &format!("the SMTP server did not start: {e}"));
                None
            }
        }
    }

    /// Runs smtp-start.sh for `dir` and ports.
    pub(crate) fn start_at(
        dir: &Path,
        port: u16,
        tls_port: u16,
        auth: Option<&str>,
    ) -> Result<(), String> {
        let mut cmd = Command::new(script("smtp-start.sh"));
        cmd.args([
            "--dir",
            dir.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--tls-port",
            &tls_port.to_string(),
        ]);
        if let Some(a) = auth {
            cmd.args(["--auth", a]);
        }
        let out = cmd.stderr(Stdio::inherit()).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("smtp-start.sh exited with {}", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().next(), Some(format!("127.0.0.1:{port}").as_str()));
        Ok(())
    }

    /// The self-signed certificate the server presents (a client's CA file).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }

    /// Waits until `n` messages are stored (up to `timeout`); their paths, oldest first.
    pub(crate) fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<PathBuf> {
        wait_messages(&self.dir, n, timeout)
    }
}

/// The stored messages of an SMTP server directory once there are `n` (or after `timeout`).
pub(crate) fn wait_messages(dir: &Path, n: usize, timeout: Duration) -> Vec<PathBuf> {
    let t0 = Instant::now();
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("messages"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        if files.len() >= n || t0.elapsed() > timeout {
            return files;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the SMTP server of `dir` and deletes the directory.
pub(crate) fn stop_smtp(dir: &Path) {
    let _ = Command::new(script("smtp-stop.sh"))
        .args(["--dir", dir.to_str().unwrap_or_default(), "--wipe"])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Smtp {
    fn drop(&mut self) {
        stop_smtp(&self.dir);
    }
}

/// A stored message, parsed by Python's `email` package (a real MIME parser) from the venv the
/// SMTP server runs in.
#[derive(Debug)]
pub(crate) struct Mail {
    /// Header name (as written) -> value; repeated headers joined by ", ".
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    /// The decoded text/plain part.
    pub(crate) text: String,
    /// The decoded text/html part.
    pub(crate) html: String,
    /// The top-level content type.
    pub(crate) content_type: String,
}

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
print(json.dumps({'headers': h, 'text': text.get_content() if text else '', 'html': html.get_content() if html else '', 'content_type': m.get_content_type()}))
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
        // Line ends as written on the wire are CRLF; the tests compare with \n.
        text: v["text"].as_str().unwrap().replace("\r\n", "\n"),
        html: v["html"].as_str().unwrap().replace("\r\n", "\n"),
        content_type: v["content_type"].as_str().unwrap().to_owned(),
    }
}

/// A private Alertmanager (deploy/local/alertmanager-start.sh), stopped and wiped on drop.
pub(crate) struct Alertmanager {
    pub(crate) dir: PathBuf,
    pub(crate) url: String,
}

impl Alertmanager {
    /// Starts one, or `None` after [`skip_or_fail`] when the script fails.
    pub(crate) fn start(test: &str, resolve_timeout: &str) -> Option<Self> {
        let dir = fresh_dir("mw-am");
        let port = free_port().to_string();
        let out = Command::new(script("alertmanager-start.sh"))
            .args([
                "--dir",
                dir.to_str().unwrap(),
                "--port",
                &port,
                "--resolve-timeout",
                resolve_timeout,
            ])
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

    /// `GET /api/v2/alerts` (active, silenced and inhibited alerts, as Alertmanager filters).
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

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A group of two alerts of rule `LatencyP99High` on model `fraud`: version `v2` firing
/// (value 412, threshold 300) and version `v1` resolved.
pub(crate) fn sample(receiver: &str) -> Notification {
    let now = now_ms();
    let firing = labels(&[
        ("alertname", "LatencyP99High"),
        ("model", "fraud"),
        ("version", "v2"),
        ("severity", "critical"),
    ]);
    let resolved = labels(&[
        ("alertname", "LatencyP99High"),
        ("model", "fraud"),
        ("version", "v1"),
        ("severity", "critical"),
    ]);
    Notification::from_alerts(
        receiver,
        "{}:{alertname=\"LatencyP99High\", model=\"fraud\"}",
        labels(&[("alertname", "LatencyP99High"), ("model", "fraud")]),
        vec![
            Alert {
                status: Status::Firing,
                fingerprint: fingerprint(&firing),
                labels: firing,
                annotations: labels(&[
                    ("value", "412"),
                    ("threshold", "300"),
                    ("summary", "p99 latency of fraud v2 is 412 ms"),
                ]),
                starts_at_ms: now - 120_000,
                ends_at_ms: None,
                generator_url: "http://modelwatch.test/rules/LatencyP99High".into(),
            },
            Alert {
                status: Status::Resolved,
                fingerprint: fingerprint(&resolved),
                labels: resolved,
                annotations: labels(&[("value", "180"), ("threshold", "300")]),
                starts_at_ms: now - 600_000,
                ends_at_ms: Some(now - 60_000),
                generator_url: String::new(),
            },
        ],
        "http://modelwatch.test",
        format!("fp-{}-firing-{now}-1", receiver),
    )
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}
