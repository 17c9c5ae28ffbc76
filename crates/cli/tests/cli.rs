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
fn unfinished_subcommands_fail_clearly() {
    let path = config_file("run", VALID);
    let path = path.to_str().unwrap();
    let env = [("CH_PASSWORD", "x")];
    for args in [&["run", "--config", path][..], &["gen", "--rate", "10"]] {
        let out = modelwatch(args, &env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("not yet available in this build"), "{}", stderr(&out));
    }
    let out = modelwatch(&["migrate", "--config", path], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not linked"), "{}", stderr(&out));
    // migrate validates first: a bad config is exit 2.
    let out = modelwatch(&["migrate", "--config", path], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let out = modelwatch(&["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = modelwatch(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
