//! The Alertmanager channel against a real Alertmanager (Debian's 0.25, started through
//! deploy/local/alertmanager-start.sh) on 127.0.0.1, and its payload against the HTTP receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use modelwatch_notify::{
    AlertmanagerChannel, AlertmanagerConfig, Channel, Notification, Status, rfc3339_ms,
};
use serde_json::Value;

use common::{Alertmanager, Receiver, labels, now_ms, sample};

fn channel(
    url: &str,
    resend_interval: Duration,
    resend_ahead: Option<Duration>,
) -> AlertmanagerChannel {
    let mut c = AlertmanagerConfig::new(url);
    c.resend_interval = resend_interval;
    c.resend_ahead = resend_ahead;
    AlertmanagerChannel::build(c.validate().unwrap())
}

/// The alert of `am` whose labels have `version`, if Alertmanager lists it.
fn find(am: &Alertmanager, alertname: &str, version: &str) -> Option<Value> {
    am.alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == alertname && a["labels"]["version"] == version)
}

fn parse_time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339_weak(v.as_str().unwrap()).unwrap()
}

#[test]
fn push_body_against_the_receiver() {
    let rx = Receiver::start(vec![]);
    let base = rx.url.trim_end_matches("/hook").to_owned();
    let ch = channel(&base, Duration::from_secs(60), None);
    let n = sample("am");
    let before = now_ms();
    ch.send(&n).unwrap();
    let after = now_ms();
    let req = rx.next(Duration::from_secs(5)).unwrap();
    assert_eq!(req.path, "/api/v2/alerts");
    assert_eq!(req.header("idempotency-key"), Some(n.idempotency_key.as_str()));
    let v = req.json();
    let alerts = v.as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    let firing = &alerts[0];
    let mut keys: Vec<&String> = firing.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["annotations", "endsAt", "generatorURL", "labels", "startsAt"]);
    assert_eq!(firing["labels"]["version"], "v2");
    assert_eq!(firing["startsAt"], rfc3339_ms(n.alerts[0].starts_at_ms));
    // Firing: endsAt = now + resend_ahead (3 x 60 s).
    let ends =
        parse_time(&firing["endsAt"]).duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    assert!(ends >= before + 180_000 && ends <= after + 180_000, "{ends} vs {before}..{after}");
    // Resolved: its real end; no generatorURL when it has none.
    assert_eq!(alerts[1]["endsAt"], rfc3339_ms(n.alerts[1].ends_at_ms.unwrap()));
    assert!(alerts[1].get("generatorURL").is_none());
}

/// Pushes a firing alert, reads it back active with the pushed labels, annotations and times;
/// then pushes it resolved and sees Alertmanager drop it from the active alerts.
#[test]
fn a_pushed_alert_fires_in_alertmanager_and_resolves() {
    let Some(am) = Alertmanager::start("a_pushed_alert_fires_in_alertmanager_and_resolves", "5m")
    else {
        return;
    };
    let ch = channel(&am.url, Duration::from_secs(60), None);
    let mut n = sample("am");
    n.alerts.truncate(1); // the firing one (v2)
    ch.send(&n).unwrap();
    let got = find(&am, "LatencyP99High", "v2").expect("Alertmanager lists the pushed alert");
    assert_eq!(got["status"]["state"], "active");
    assert_eq!(got["labels"], serde_json::to_value(&n.alerts[0].labels).unwrap());
    assert_eq!(got["annotations"]["value"], "412");
    assert_eq!(got["annotations"]["summary"], "p99 latency of fraud v2 is 412 ms");
    assert_eq!(got["generatorURL"], "http://modelwatch.test/rules/LatencyP99High");
    assert_eq!(
        parse_time(&got["startsAt"]),
        parse_time(&Value::from(rfc3339_ms(n.alerts[0].starts_at_ms)))
    );
    let ends = parse_time(&got["endsAt"]);
    let ahead = ends.duration_since(SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(170) && ahead <= Duration::from_secs(180), "{ahead:?}");

    // Resolve it.
    let mut resolved: Notification = n.clone();
    resolved.alerts[0].status = Status::Resolved;
    resolved.alerts[0].ends_at_ms = Some(now_ms() - 1_000);
    resolved.status = Status::Resolved;
    ch.send(&resolved).unwrap();
    assert!(
        find(&am, "LatencyP99High", "v2").is_none(),
        "resolved alerts are not listed as active"
    );
}

/// With `resend_interval` 1 s and `resend_ahead` 2 s (and Alertmanager's `resolve_timeout` of
/// 1 s): re-sent every second for 4 s, the alert stays active past its first `endsAt`; once the
/// re-sends stop, Alertmanager resolves it by itself about `resend_ahead` later.
#[test]
fn re_sent_firing_alerts_stay_active_and_expire_when_re_sends_stop() {
    let Some(am) = Alertmanager::start(
        "re_sent_firing_alerts_stay_active_and_expire_when_re_sends_stop",
        "1s",
    ) else {
        return;
    };
    let ch = channel(&am.url, Duration::from_secs(1), Some(Duration::from_secs(2)));
    let interval = ch.resend_interval().unwrap();
    let mut n = sample("am");
    n.alerts.truncate(1);
    n.alerts[0].labels =
        labels(&[("alertname", "ResendTest"), ("model", "fraud"), ("version", "v9")]);
    let t0 = Instant::now();
    let mut last_push = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        // Taken before the push: endsAt = (the push's now) + 2 s is after last_push + 2 s.
        last_push = Instant::now();
        ch.send(&n).unwrap();
        std::thread::sleep(interval);
        assert!(find(&am, "ResendTest", "v9").is_some(), "active at {:?}", t0.elapsed());
    }
    // 4 s after the first push (2 s past the first endsAt) it is still active.
    assert!(find(&am, "ResendTest", "v9").is_some());
    // No more re-sends: gone about 2 s after the last push.
    let deadline = last_push + Duration::from_secs(6);
    while find(&am, "ResendTest", "v9").is_some() {
        assert!(Instant::now() < deadline, "still active 6 s after the last push");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone_after = last_push.elapsed();
    assert!(gone_after >= Duration::from_millis(1800), "resolved too early: {gone_after:?}");
    eprintln!(
        "alertmanager: the alert resolved by itself {gone_after:?} after the last push (resend_ahead 2 s)"
    );
}
