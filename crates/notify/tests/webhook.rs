//! The webhook channel against a real HTTP receiver on 127.0.0.1 (started by the test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use modelwatch_notify::{
    AttemptOutcome, Channel, ChannelConfig, GiveUp, Outcome, Retry, RetryPolicy, Secret, SendError,
    WebhookChannel, WebhookConfig, WebhookFormat, ZERO_TIME, deliver_with_retry, rfc3339_ms,
    test_notification, thread_sleep, verify_signature,
};
use serde_json::json;
use sha2::Sha256;

use common::{Receiver, Reply, sample};

fn channel(url: &str, f: impl FnOnce(&mut WebhookConfig)) -> WebhookChannel {
    let mut c = WebhookConfig::new(url);
    f(&mut c);
    WebhookChannel::build(c.validate().unwrap())
}

fn fast_retries(max_attempts: u32) -> modelwatch_notify::Validated<RetryPolicy> {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(20),
    }
    .validate()
    .unwrap()
}

#[test]
fn alertmanager_format_headers_and_hmac() {
    let rx = Receiver::start(vec![]);
    // Built from the TOML a `[alerts.channels.ops]` section holds.
    let toml = format!(
        "type = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\ntimeout = \"5s\"\n\
         headers = {{ Authorization = \"Bearer t0k\", X-Team = \"ml-platform\" }}\n",
        rx.url
    );
    let config: ChannelConfig = toml::from_str(&toml).unwrap();
    let ch = config.validate().unwrap().build().unwrap();
    assert_eq!(ch.kind(), "webhook");
    let n = sample("ops");
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let d = ch.send(&n).unwrap();
    assert_eq!(d.code, 200);

    let req = rx.next(Duration::from_secs(5)).expect("the receiver got the notification");
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer t0k"));
    assert_eq!(req.header("x-team"), Some("ml-platform"));
    assert_eq!(req.header("idempotency-key"), Some(n.idempotency_key.as_str()));

    // The signature, recomputed here from the raw body: HMAC-SHA256(secret, "{ts}." ++ body).
    let ts = req.header("x-modelwatch-timestamp").unwrap();
    let ts_n: u64 = ts.parse().unwrap();
    assert!(ts_n >= before && ts_n <= before + 5, "timestamp {ts_n} vs {before}");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(req.header("x-modelwatch-signature"), Some(format!("sha256={expected}").as_str()));
    assert!(verify_signature(
        b"s3cret",
        ts,
        req.header("x-modelwatch-signature").unwrap(),
        &req.body,
        ts_n
    ));
    assert!(!verify_signature(
        b"wrong",
        ts,
        req.header("x-modelwatch-signature").unwrap(),
        &req.body,
        ts_n
    ));

    // Alertmanager's webhook payload, version 4, field by field.
    let v = req.json();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "alerts",
            "commonAnnotations",
            "commonLabels",
            "externalURL",
            "groupKey",
            "groupLabels",
            "receiver",
            "status",
            "truncatedAlerts",
            "version"
        ]
    );
    assert_eq!(v["version"], "4");
    assert_eq!(v["groupKey"], n.group_key);
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "ops");
    assert_eq!(v["truncatedAlerts"], 0);
    assert_eq!(v["groupLabels"], json!({"alertname": "LatencyP99High", "model": "fraud"}));
    assert_eq!(
        v["commonLabels"],
        json!({"alertname": "LatencyP99High", "model": "fraud", "severity": "critical"})
    );
    assert_eq!(v["commonAnnotations"], json!({"threshold": "300"}));
    assert_eq!(v["externalURL"], "http://modelwatch.test");
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    let a = alerts[0].as_object().unwrap();
    let mut akeys: Vec<&String> = a.keys().collect();
    akeys.sort();
    assert_eq!(
        akeys,
        ["annotations", "endsAt", "fingerprint", "generatorURL", "labels", "startsAt", "status"]
    );
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["version"], "v2");
    assert_eq!(a["annotations"]["value"], "412");
    assert_eq!(a["startsAt"], rfc3339_ms(n.alerts[0].starts_at_ms));
    assert_eq!(a["endsAt"], ZERO_TIME);
    assert_eq!(a["generatorURL"], "http://modelwatch.test/rules/LatencyP99High");
    assert_eq!(a["fingerprint"], n.alerts[0].fingerprint);
    assert_eq!(alerts[1]["status"], "resolved");
    assert_eq!(alerts[1]["endsAt"], rfc3339_ms(n.alerts[1].ends_at_ms.unwrap()));
    let starts = humantime::parse_rfc3339(alerts[1]["startsAt"].as_str().unwrap()).unwrap();
    assert!(starts < std::time::SystemTime::now());
}

/// What `modelwatch alerts test` sends: a clearly labelled test alert.
#[test]
fn the_test_notification() {
    let rx = Receiver::start(vec![]);
    let n = test_notification("ops", "http://modelwatch.test");
    channel(&rx.url, |_| {}).send(&n).unwrap();
    let v = rx.next(Duration::from_secs(5)).unwrap().json();
    assert_eq!(v["status"], "firing");
    assert_eq!(v["commonLabels"]["alertname"], "ModelwatchTestAlert");
    assert!(v["commonAnnotations"]["summary"].as_str().unwrap().starts_with("TEST:"));
    assert_eq!(v["alerts"][0]["labels"]["severity"], "info");
}

#[test]
fn unsigned_without_secret() {
    let rx = Receiver::start(vec![]);
    channel(&rx.url, |_| {}).send(&sample("ops")).unwrap();
    let req = rx.next(Duration::from_secs(5)).unwrap();
    assert!(req.header("x-modelwatch-signature").is_none());
    assert!(req.header("x-modelwatch-timestamp").is_none());
    assert!(req.header("idempotency-key").is_some());
}

#[test]
fn slack_body() {
    let rx = Receiver::start(vec![]);
    let ch = channel(&rx.url, |c| c.format = WebhookFormat::Slack);
    ch.send(&sample("ops")).unwrap();
    let v = rx.next(Duration::from_secs(5)).unwrap().json();
    assert_eq!(v["text"], "[FIRING:1] LatencyP99High fraud");
    let att = &v["attachments"][0];
    assert_eq!(att["color"], "#d63232");
    assert_eq!(att["title"], "[FIRING:1] LatencyP99High fraud");
    assert_eq!(att["title_link"], "http://modelwatch.test");
    let text = att["text"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("*FIRING* LatencyP99High · model `fraud` version `v2` · value 412 (threshold 300) · since "),
        "{text}"
    );
    assert!(lines[0].ends_with("— p99 latency of fraud v2 is 412 ms"), "{text}");
    assert!(
        lines[1].starts_with("*RESOLVED* LatencyP99High · model `fraud` version `v1` · value 180"),
        "{text}"
    );
    assert!(lines[1].contains(", resolved "), "{text}");
}

#[test]
fn two_500s_then_200_is_delivered_on_the_third_attempt() {
    let rx = Receiver::start(vec![Reply::Status(500), Reply::Status(500)]);
    let ch = channel(&rx.url, |c| c.secret = Some(Secret::new("k")));
    let n = sample("ops");
    let report = deliver_with_retry(&ch, &n, &fast_retries(5), thread_sleep);
    assert!(report.delivered(), "{report:?}");
    assert_eq!(report.attempts.len(), 3);
    assert_eq!(
        report.attempts.iter().map(|a| a.status()).collect::<Vec<_>>(),
        ["retryable", "retryable", "delivered"]
    );
    for a in &report.attempts[..2] {
        match &a.outcome {
            AttemptOutcome::Failed { retry, code, error } => {
                assert_eq!(*retry, Retry::Retryable);
                assert_eq!(*code, Some(500));
                assert_eq!(error, "receiver answered HTTP 500: status 500");
            }
            o => panic!("{o:?}"),
        }
    }
    assert!(matches!(&report.attempts[2].outcome, AttemptOutcome::Delivered(d) if d.code == 200));
    // Three requests, one idempotency key, each signed validly.
    for _ in 0..3 {
        let req = rx.next(Duration::from_secs(5)).unwrap();
        assert_eq!(req.header("idempotency-key"), Some(n.idempotency_key.as_str()));
        let ts = req.header("x-modelwatch-timestamp").unwrap();
        assert!(verify_signature(
            b"k",
            ts,
            req.header("x-modelwatch-signature").unwrap(),
            &req.body,
            ts.parse().unwrap()
        ));
    }
    assert!(rx.next(Duration::from_millis(100)).is_none());
}

#[test]
fn a_receiver_that_never_answers_times_out_retryably() {
    let rx = Receiver::start(vec![Reply::Hang, Reply::Hang]);
    let ch = channel(&rx.url, |c| c.timeout = Duration::from_millis(400));
    let t0 = Instant::now();
    let err = ch.send(&sample("ops")).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, SendError::Timeout(d) if d == Duration::from_millis(400)), "{err:?}");
    assert_eq!(err.retry(), Retry::Retryable);
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(3), "{took:?}");
    assert!(rx.next(Duration::from_secs(1)).is_some(), "the request did arrive");

    // With retries: a hang, then 200.
    let report = deliver_with_retry(&ch, &sample("ops"), &fast_retries(3), thread_sleep);
    assert!(report.delivered(), "{report:?}");
    assert_eq!(report.attempts.len(), 2);
    assert!(
        matches!(&report.attempts[0].outcome, AttemptOutcome::Failed { error, .. } if error.starts_with("timed out after"))
    );
}

#[test]
fn client_errors_are_permanent_and_not_retried() {
    let rx = Receiver::start(vec![Reply::Status(400), Reply::Status(200)]);
    let ch = channel(&rx.url, |_| {});
    let report =
        deliver_with_retry(&ch, &sample("ops"), &fast_retries(5), |_| panic!("no retry of a 400"));
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(report.attempts[0].status(), "permanent");
    assert!(matches!(
        report.outcome,
        Outcome::Failed { reason: GiveUp::Permanent, error: SendError::Http { status: 400, .. } }
    ));

    // 429 is retryable.
    let rx = Receiver::start(vec![Reply::Status(429)]);
    let report = deliver_with_retry(
        &channel(&rx.url, |_| {}),
        &sample("ops"),
        &fast_retries(5),
        thread_sleep,
    );
    assert_eq!(
        report.attempts.iter().map(|a| a.status()).collect::<Vec<_>>(),
        ["retryable", "delivered"]
    );
}

#[test]
fn connection_refused_is_retryable_and_gives_up_after_max_attempts() {
    let port = common::free_port(); // nothing listens there
    let ch = channel(&format!("http://127.0.0.1:{port}/hook"), |_| {});
    let report = deliver_with_retry(&ch, &sample("ops"), &fast_retries(3), thread_sleep);
    assert_eq!(report.attempts.len(), 3);
    assert!(report.attempts.iter().all(|a| a.status() == "retryable"), "{report:?}");
    assert!(matches!(
        report.outcome,
        Outcome::Failed { reason: GiveUp::MaxAttempts, error: SendError::Connect(_) }
    ));
}

/// Delivery latency to the local receiver: from the call to the request's arrival, and the full
/// round trip of `send`; printed for the report.
#[test]
fn delivery_latency_to_a_local_receiver() {
    let rx = Receiver::start(vec![]);
    let ch = channel(&rx.url, |c| c.secret = Some(Secret::new("k")));
    let n = sample("ops");
    let (mut arrival, mut round_trip) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let t0 = Instant::now();
        ch.send(&n).unwrap();
        round_trip.push(t0.elapsed());
        arrival.push(rx.next(Duration::from_secs(5)).unwrap().received - t0);
    }
    arrival.sort();
    round_trip.sort();
    eprintln!(
        "webhook delivery latency over 50 sends: arrival p50 {:?} max {:?}; send round trip p50 {:?} max {:?}",
        arrival[25], arrival[49], round_trip[25], round_trip[49]
    );
    assert!(round_trip[25] < Duration::from_millis(500), "{:?}", round_trip[25]);
}
