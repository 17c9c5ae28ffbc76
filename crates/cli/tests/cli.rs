//! The `modelwatch` binary: subcommands and exit codes. Each test writes its own config file and
//! runs the binary with a cleared environment, so tests run in parallel and ignore the caller's
//! `MODELWATCH_*` variables.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

const VALID: &str = r#"
[kafka]
brokers = ["localhost:9092"]
inference_topics = ["inference"]

[clickhouse]
url = "http://localhost:8123"
password = "${CH_PASSWORD}"
"#;

fn config_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}.toml"));
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn modelwatch(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the modelwatch binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_accepts_a_valid_file_and_prints_a_summary() {
    let path = config_file("valid", VALID);
    let out = modelwatch(
        &["check-config", "--config", path.to_str().unwrap()],
        &[("CH_PASSWORD", "hunter2-hunter2")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(": ok"), "{text}");
    assert!(text.contains("windows: 5m every 10s (30 panes)"), "{text}");
    assert!(!text.contains("hunter2") && !stderr(&out).contains("hunter2"));
}

#[test]
fn check_config_exits_2_naming_the_key() {
    let path = config_file("bad-slide", &format!("{VALID}\n[windows]\nslide = \"7s\"\n"));
    let out =
        modelwatch(&["check-config", "--config", path.to_str().unwrap()], &[("CH_PASSWORD", "x")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`windows.slide`"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn check_config_exits_2_on_a_missing_variable_or_a_bad_override() {
    let path = config_file("missing-var", VALID);
    let out = modelwatch(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("`CH_PASSWORD`") && err.contains("`clickhouse.password`"), "{err}");

    let out = modelwatch(
        &["check-config", "--config", path.to_str().unwrap()],
        &[("CH_PASSWORD", "x"), ("MODELWATCH_DRIFT_BINS", "1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`drift.bins`"), "{}", stderr(&out));

    let out = modelwatch(
        &["check-config", "--config", path.to_str().unwrap()],
        &[("CH_PASSWORD", "x"), ("MODELWATCH_WINDOWS_SLIDE", "5s")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("5m every 5s"), "{}", stdout(&out));
}

#[test]
fn check_config_exits_2_on_an_unreadable_file_and_on_bad_toml() {
    let out = modelwatch(&["check-config", "--config", "/nonexistent/modelwatch.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("failed to read"), "{}", stderr(&out));
    let path = config_file("syntax", "[kafka\n");
    let out = modelwatch(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid toml"), "{}", stderr(&out));
}

#[test]
fn the_example_config_checks() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/modelwatch.example.toml");
    let out = modelwatch(&["check-config", "-c", example], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn run_and_migrate_validate_first() {
    let path = config_file("run", VALID);
    let path = path.to_str().unwrap();
    // A bad config (missing CH_PASSWORD) is exit 2 before any connection is tried.
    for cmd in ["run", "migrate"] {
        let out = modelwatch(&[cmd, "--config", path], &[]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("CH_PASSWORD"), "{cmd}: {}", stderr(&out));
    }
}

/// A service address from the environment of the test suite (deploy/local/services.sh); `None`
/// (with a note) on a laptop without it, a failure under `CI=true`.
#[allow(clippy::print_stderr, reason = "a skipped test says why")]
fn service(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{var} must be set when CI=true");
            eprintln!("note: skipping {test}: {var} is not set (deploy/local/services.sh up)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

#[test]
fn migrate_creates_the_schema_on_a_real_clickhouse_and_is_idempotent() {
    let Some(url) = service("MODELWATCH_TEST_CLICKHOUSE_URL", "migrate") else { return };
    let db = unique("mw_cli");
    let text = format!(
        "[kafka]\nbrokers = [\"localhost:9092\"]\ninference_topics = [\"i\"]\n\n\
         [clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\n"
    );
    let path = config_file(&db, &text);
    let path = path.to_str().unwrap();
    let first = modelwatch(&["migrate", "--config", path], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(stdout(&first).contains("every table matches"), "{}", stdout(&first));
    assert!(!stdout(&first).contains(" 0 migration(s) applied"), "{}", stdout(&first));
    let again = modelwatch(&["migrate", "--config", path], &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(stdout(&again).contains(" 0 migration(s) applied"), "{}", stdout(&again));
    // An unreachable server is a runtime failure (exit 1), not a configuration error.
    let text = text.replace(&url, "http://127.0.0.1:9");
    let bad = config_file(&format!("{db}_bad"), &text);
    let out = modelwatch(&["migrate", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn gen_produces_to_a_real_broker() {
    let Some(brokers) = service("MODELWATCH_TEST_BROKERS", "gen") else { return };
    let port = brokers.rsplit(':').next().unwrap().to_owned();
    let topic = unique("mw_cli_gen");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/broker-topic.sh");
    for t in [topic.clone(), format!("{topic}_m")] {
        let st = Command::new(&script)
            .args(["create", &t, "--partitions", "2", "--port", &port])
            .status()
            .expect("run broker-topic.sh");
        assert!(st.success());
    }
    let metric_topic = format!("{topic}_m");
    let args = [
        "gen",
        "--brokers",
        &brokers,
        "--inference-topic",
        &topic,
        "--metric-topic",
        &metric_topic,
        "--count",
        "2000",
        "--seed",
        "7",
        "--encoding",
        "json",
    ];
    let out = modelwatch(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("produced") && text.contains(" 0 failed"), "{text}");
    let out = modelwatch(&["gen", "--brokers", &brokers, "--encoding", "yaml"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let out = modelwatch(&["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = modelwatch(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// An HTTP receiver on 127.0.0.1 answering every request with `status`; returns its port and the
/// request bodies it got.
fn receiver(status: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
    let port = listener.local_addr().expect("its address").port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(&stream);
            let mut len = 0;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                got.lock().expect("bodies").push(String::from_utf8_lossy(&body).into_owned());
            }
            let mut w = &stream;
            let _ =
                write!(w, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn alerts_test_sends_a_test_notification_through_every_channel() {
    let (ok_port, ok_bodies) = receiver(200);
    let (bad_port, _) = receiver(400);
    let channels = |bad: bool| {
        let mut text = format!(
            "{VALID}\n[alerts.channels.good]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{ok_port}/h\"\n"
        );
        if bad {
            text.push_str(&format!(
                "\n[alerts.channels.broken]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{bad_port}/h\"\n"
            ));
        }
        text
    };
    let env = [("CH_PASSWORD", "x")];
    let path = config_file("alerts-test-ok", &channels(false));
    let out = modelwatch(&["alerts", "test", "--config", path.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("good (webhook): delivered after 1 attempt(s): 200"),
        "{}",
        stdout(&out)
    );
    let bodies = ok_bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].contains("ModelwatchTestAlert"), "{}", bodies[0]);

    // A receiver answering 400 fails permanently: reported, exit 1, the good one still sent.
    let path = config_file("alerts-test-bad", &channels(true));
    let out = modelwatch(&["alerts", "test", "--config", path.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("broken (webhook): FAILED after 1 attempt(s)"), "{text}");
    assert!(text.contains("good (webhook): delivered"), "{text}");
    assert!(stderr(&out).contains("1 of 2 channel(s) failed"), "{}", stderr(&out));

    // No channel at all: nothing to test is an error too.
    let path = config_file("alerts-test-none", VALID);
    let out = modelwatch(&["alerts", "test", "--config", path.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no channel is configured"), "{}", stderr(&out));
}
