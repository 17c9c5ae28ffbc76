//! The notification scheduler: grouping, intervals, resolved notifications, staleness,
//! silences and restart.

// Tests may unwrap (clippy.toml allows it in #[test] functions only; helpers too here).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use modelwatch_alert::rule::Op;
use modelwatch_alert::silence::{Matcher, Silence, Silences};
use modelwatch_alert::{
    AlertEvent, AlertState, Notification, NotificationStatus, Scheduler, SchedulerSpec, fingerprint,
};

const T0: i64 = 1_700_000_000_000;
const S: i64 = 1_000;
const MIN: i64 = 60 * S;

fn scheduler() -> Scheduler {
    let mut s = spec("slow", "latency_p99_ms", Op::Gt, 100.0);
    s.channels = vec!["pager".into(), "team-mail".into()];
    let other = spec("errors", "error_rate", Op::Gt, 0.1);
    let rules = vec![s.validate(0).unwrap(), other.validate(1).unwrap()];
    // Defaults: group_wait 30s, group_interval 5m, repeat_interval 4h, max age 15m.
    Scheduler::new(&SchedulerSpec::default(), &rules).unwrap()
}

fn event(
    rule: &str,
    version: &str,
    state: AlertState,
    starts: i64,
    at: i64,
    seq: u64,
) -> AlertEvent {
    let labels: BTreeMap<String, String> =
        [("alertname", rule), ("model", "m"), ("version", version), ("severity", "critical")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    AlertEvent {
        fingerprint: fingerprint(&labels),
        seq,
        rule: rule.into(),
        model: "m".into(),
        version: version.into(),
        severity: "critical".into(),
        state,
        value: Some(150.0),
        threshold: Some(100.0),
        starts_at_ms: starts,
        ends_at_ms: (state == AlertState::Resolved).then_some(at),
        at_ms: at,
        annotations: BTreeMap::from([("summary".to_owned(), format!("{version} is slow"))]),
        labels,
    }
}

fn firing(version: &str, at: i64) -> AlertEvent {
    event("slow", version, AlertState::Firing, at, at, 1)
}

/// Runs the scheduler from `from` to `to` in steps of `step`, collecting (time, notification).
fn run(
    s: &mut Scheduler,
    from: i64,
    to: i64,
    step: i64,
    silences: &Silences,
) -> Vec<(i64, Notification)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        out.extend(s.due(now, silences).into_iter().map(|n| (now, n)));
        now += step;
    }
    out
}

#[test]
fn a_burst_within_group_wait_is_one_notification() {
    let mut s = scheduler();
    let none = Silences::new();
    for i in 0..5 {
        let now = T0 + i * S;
        s.push(&firing(&format!("v{i}"), now - 15 * S), now);
        assert!(s.due(now, &none).is_empty());
    }
    assert_eq!(s.next_due(), Some(T0 + 30 * S));
    assert!(s.due(T0 + 30 * S - 1, &none).is_empty());
    let sent = s.due(T0 + 30 * S, &none);
    assert_eq!(sent.len(), 1);
    let n = &sent[0];
    assert_eq!(n.alerts.len(), 5);
    assert_eq!(n.status, NotificationStatus::Firing);
    assert_eq!((n.rule.as_str(), n.model.as_str()), ("slow", "m"));
    assert_eq!(n.group_key, r#"{}:{alertname="slow", model="m"}"#);
    assert_eq!(n.channels, ["pager", "team-mail"]);
    assert_eq!(n.seq, T0 as u64 * 1000 + 1);
    assert_eq!(n.idempotency_key(), format!("{}-0", &n.idempotency_key()[..16]));
    assert_eq!(n.common_labels.get("alertname").map(String::as_str), Some("slow"));
    assert!(!n.common_labels.contains_key("version"));
    assert!(n.common_annotations.is_empty());
    assert!(
        n.alerts.iter().all(|a| a.status == NotificationStatus::Firing && a.ends_at_ms.is_none())
    );
    assert_eq!(s.next_due(), Some(T0 + 30 * S + 5 * MIN));
    // Nothing changed: nothing more for hours (until repeat_interval).
    assert!(run(&mut s, T0 + 31 * S, T0 + 60 * MIN, 10 * S, &none).is_empty());
}

#[test]
fn groups_are_per_rule_and_model() {
    let mut s = scheduler();
    s.push(&firing("v1", T0), T0);
    s.push(&event("errors", "v1", AlertState::Firing, T0, T0, 1), T0);
    let sent = s.due(T0 + 30 * S, &Silences::new());
    let groups: Vec<(&str, usize)> =
        sent.iter().map(|n| (n.rule.as_str(), n.channels.len())).collect();
    assert_eq!(groups, vec![("errors", 0), ("slow", 2)]);
}

#[test]
fn flapping_input_sends_at_most_one_notification_per_group_interval() {
    let mut s = scheduler();
    let none = Silences::new();
    let mut sent = Vec::new();
    let mut seq = 0;
    let mut starts = T0;
    let mut fires = false;
    let mut lcg: u64 = 7;
    // The condition flips at random every few 10 s windows for 30 minutes.
    for k in 0..180 {
        let now = T0 + k * 10 * S;
        lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        if (lcg >> 33).is_multiple_of(2) {
            fires = !fires;
            seq += 1;
            let e = if fires {
                starts = now;
                event("slow", "v1", AlertState::Firing, starts, now, seq)
            } else {
                event("slow", "v1", AlertState::Resolved, starts, now, seq)
            };
            s.push(&e, now);
        }
        for t in [now, now + 5 * S] {
            sent.extend(s.due(t, &none).into_iter().map(|n| (t, n)));
        }
    }
    assert!(sent.len() >= 2, "the flapping alert is notified");
    assert!(sent.len() <= 7, "{} notifications in 30 minutes", sent.len());
    for w in sent.windows(2) {
        assert!(w[1].0 - w[0].0 >= 5 * MIN, "notifications {} ms apart", w[1].0 - w[0].0);
        assert!(w[1].1.seq > w[0].1.seq);
    }
}

#[test]
fn an_unchanged_firing_group_is_repeated_every_repeat_interval() {
    let mut s = scheduler();
    let none = Silences::new();
    s.push(&firing("v1", T0), T0);
    let mut times = Vec::new();
    let mut now = T0;
    while now <= T0 + 9 * 60 * MIN {
        // The evaluator keeps judging the alert on recent windows.
        s.refresh(&firing("v1", T0).fingerprint, now - 15 * S);
        times.extend(s.due(now, &none).into_iter().map(|_| now - T0));
        now += MIN / 2;
    }
    let h = 60 * MIN;
    assert_eq!(times, vec![30 * S, 4 * h + 30 * S, 8 * h + 30 * S]);
}

#[test]
fn a_resolved_alert_is_sent_once_and_then_forgotten() {
    let mut s = scheduler();
    let none = Silences::new();
    s.push(&firing("v1", T0), T0);
    s.push(&firing("v2", T0), T0);
    assert_eq!(s.due(T0 + 30 * S, &none).len(), 1);
    s.push(&event("slow", "v1", AlertState::Resolved, T0, T0 + MIN, 2), T0 + MIN);
    let sent = run(&mut s, T0 + MIN, T0 + 30 * MIN, 10 * S, &none);
    assert_eq!(sent.len(), 1);
    let (at, n) = &sent[0];
    assert_eq!(*at, T0 + 30 * S + 5 * MIN, "at the group's next tick");
    assert_eq!(n.status, NotificationStatus::Firing, "v2 still fires");
    let v1 = n.alerts.iter().find(|a| a.labels["version"] == "v1").unwrap();
    assert_eq!(
        (v1.status, v1.ends_at_ms, v1.state_seq),
        (NotificationStatus::Resolved, Some(T0 + MIN), 2)
    );
    // v2 resolves too: one all-resolved notification, then the group is gone.
    s.push(&event("slow", "v2", AlertState::Resolved, T0, T0 + 31 * MIN, 2), T0 + 31 * MIN);
    let sent = run(&mut s, T0 + 31 * MIN, T0 + 60 * MIN, 10 * S, &none);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status, NotificationStatus::Resolved);
    assert_eq!(sent[0].1.alerts.len(), 1);
    assert_eq!(s.next_due(), None);
}

#[test]
fn an_alert_resolved_before_it_was_notified_is_never_sent() {
    let mut s = scheduler();
    s.push(&firing("v1", T0), T0);
    s.push(&event("slow", "v1", AlertState::Resolved, T0, T0 + 10 * S, 2), T0 + 10 * S);
    // Pending and inactive events are not notifications.
    s.push(&event("slow", "v3", AlertState::Pending, T0, T0, 1), T0);
    assert!(run(&mut s, T0, T0 + 20 * MIN, 10 * S, &Silences::new()).is_empty());
    assert_eq!(s.next_due(), None);
}

#[test]
fn alerts_from_old_data_are_not_notified_until_evaluated_on_recent_data() {
    let mut s = scheduler();
    let none = Silences::new();
    // Catching up: the alert fired on a window of an hour ago.
    let old = firing("v1", T0 - 60 * MIN);
    s.push(&old, T0);
    // v2 fired and resolved in old data, never notified.
    s.push(&firing("v2", T0 - 50 * MIN), T0);
    s.push(&event("slow", "v2", AlertState::Resolved, T0 - 50 * MIN, T0 - 40 * MIN, 2), T0);
    assert!(run(&mut s, T0, T0 + 10 * MIN, 10 * S, &none).is_empty());
    // Caught up: v1 is still firing on recent windows.
    s.refresh(&old.fingerprint, T0 + 10 * MIN);
    let sent = run(&mut s, T0 + 10 * MIN, T0 + 20 * MIN, 10 * S, &none);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.alerts.len(), 1);
    assert_eq!(sent[0].1.alerts[0].fingerprint, old.fingerprint);
    // Its resolution is sent even when it comes from old data (a restart's catch-up).
    s.push(
        &event("slow", "v1", AlertState::Resolved, T0 - 60 * MIN, T0 - 30 * MIN, 2),
        T0 + 21 * MIN,
    );
    let sent = run(&mut s, T0 + 21 * MIN, T0 + 40 * MIN, 10 * S, &none);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status, NotificationStatus::Resolved);
}

#[test]
fn silenced_alerts_are_held_back_until_the_silence_ends() {
    let mut s = scheduler();
    let mut silences = Silences::new();
    let m = |name: &str, value: &str| Matcher {
        name: name.into(),
        value: value.into(),
        is_regex: false,
        is_equal: true,
    };
    silences.upsert(
        Silence::new("s1", vec![m("version", "v1")], T0, T0 + 20 * MIN, "ops", "deploy").unwrap(),
    );
    s.push(&firing("v1", T0), T0);
    s.push(&firing("v2", T0), T0);
    let sent = s.due(T0 + 30 * S, &silences);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].alerts.len(), 1, "v1 is silenced");
    assert_eq!(sent[0].alerts[0].labels["version"], "v2");
    // While the silence lasts nothing more; when it ends, v1 goes out at the next tick.
    let mut now = T0 + 31 * S;
    let mut later = Vec::new();
    while now <= T0 + 40 * MIN {
        s.refresh(&firing("v1", T0).fingerprint, now);
        s.refresh(&firing("v2", T0).fingerprint, now);
        later.extend(s.due(now, &silences).into_iter().map(|n| (now, n)));
        now += 10 * S;
    }
    assert_eq!(later.len(), 1);
    assert!(later[0].0 >= T0 + 20 * MIN);
    let versions: Vec<&str> =
        later[0].1.alerts.iter().map(|a| a.labels["version"].as_str()).collect();
    assert_eq!(versions.len(), 2);
    assert!(versions.contains(&"v1"));
}

#[test]
fn a_restarted_scheduler_does_not_notify_again() {
    let mut a = scheduler();
    let none = Silences::new();
    let e = firing("v1", T0);
    a.push(&e, T0);
    let sent = a.due(T0 + 30 * S, &none);
    // The delivery rows the notifier writes for it.
    let n = &sent[0];
    let deliveries: Vec<_> = n
        .alerts
        .iter()
        .map(|al| al.delivery_row(n, "webhook:pager", 1, "sent", T0 + 30 * S, 0))
        .collect();
    assert_eq!(
        (deliveries[0].seq, deliveries[0].state.as_str(), deliveries[0].version.as_str()),
        (1, "firing", "v1")
    );
    // Restart 2 minutes later.
    let mut b = scheduler();
    b.restore(std::slice::from_ref(&e), &deliveries, T0 + 2 * MIN);
    b.refresh(&e.fingerprint, T0 + 2 * MIN);
    assert!(run(&mut b, T0 + 2 * MIN, T0 + 30 * MIN, 10 * S, &none).is_empty());
    // Resolved after the restart: the resolved notification goes out.
    b.push(&event("slow", "v1", AlertState::Resolved, T0, T0 + 31 * MIN, 2), T0 + 31 * MIN);
    let sent = run(&mut b, T0 + 31 * MIN, T0 + 40 * MIN, 10 * S, &none);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status, NotificationStatus::Resolved);
    assert!(sent[0].1.seq > T0 as u64 * 1000 + 1, "a new seq after the restart");
    // Without deliveries, a restored firing alert is notified (it may never have been): a
    // crash between sending and recording. The repeat has the key of the original.
    let mut c = scheduler();
    c.restore(std::slice::from_ref(&e), &[], T0 + 2 * MIN);
    c.refresh(&e.fingerprint, T0 + 2 * MIN);
    let again = run(&mut c, T0 + 2 * MIN, T0 + 3 * MIN, 10 * S, &none);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].1.seq, n.seq);
    assert_eq!(again[0].1.idempotency_key(), n.idempotency_key(), "a receiver can drop it");
    // Restored the same way, it resolves before the repeat was due: the resolution goes out
    // all the same (the receiver may have the firing notification).
    let mut d = scheduler();
    d.restore(std::slice::from_ref(&e), &[], T0 + 2 * MIN);
    d.push(&event("slow", "v1", AlertState::Resolved, T0, T0 + 2 * MIN, 2), T0 + 2 * MIN);
    let sent = run(&mut d, T0 + 2 * MIN, T0 + 3 * MIN, 10 * S, &none);
    let statuses: Vec<NotificationStatus> = sent.iter().map(|(_, n)| n.status).collect();
    assert_eq!(statuses, [NotificationStatus::Resolved]);
}

#[test]
fn deliberate_repeats_and_new_states_get_new_idempotency_keys() {
    const HOUR: i64 = 60 * MIN;
    let mut s = scheduler();
    let none = Silences::new();
    let e = firing("v1", T0);
    s.push(&e, T0);
    let mut keys: Vec<String> = Vec::new();
    let mut now = T0;
    while now <= T0 + 4 * HOUR + MIN {
        // The evaluator keeps judging the alert on recent windows.
        s.refresh(&e.fingerprint, now - 15 * S);
        keys.extend(s.due(now, &none).iter().map(Notification::idempotency_key));
        now += MIN / 2;
    }
    assert_eq!(keys.len(), 2, "the notification and its repeat after repeat_interval");
    assert!(keys[0].ends_with("-0") && keys[1].ends_with("-1"), "{keys:?}");
    assert_eq!(keys[0][..16], keys[1][..16], "the same content");
    s.push(&event("slow", "v1", AlertState::Resolved, T0, T0 + 5 * HOUR, 2), T0 + 5 * HOUR);
    let resolved = run(&mut s, T0 + 5 * HOUR, T0 + 5 * HOUR + MIN, 10 * S, &none);
    assert_eq!(resolved.len(), 1);
    let key = resolved[0].1.idempotency_key();
    assert!(!keys.contains(&key), "{key} repeats a firing key");
}

#[test]
fn a_restored_group_lists_the_firing_alerts_receivers_were_told_of() {
    let mut a = scheduler();
    let none = Silences::new();
    let (e1, e2) = (firing("v1", T0), firing("v2", T0));
    a.push(&e1, T0);
    a.push(&e2, T0);
    assert!(a.notified_firing().is_empty(), "nothing notified yet");
    let sent = a.due(T0 + 30 * S, &none);
    assert_eq!(a.notified_firing(), sent, "the notification just sent");
    // v1 was notified firing; v2's delivery is not in the log (it failed); v3 fires since.
    let n = &sent[0];
    let deliveries = vec![n.alerts[0].delivery_row(n, "alertmanager:am", 1, "sent", T0, 0)];
    let e3 = firing("v3", T0 + MIN);
    let mut b = scheduler();
    b.restore(&[e1.clone(), e2, e3], &deliveries, T0 + 2 * MIN);
    let again = b.notified_firing();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].status, NotificationStatus::Firing);
    assert_eq!(again[0].channels, ["pager", "team-mail"]);
    let fps: Vec<&str> = again[0].alerts.iter().map(|a| a.fingerprint.as_str()).collect();
    assert_eq!(fps, [e1.fingerprint.as_str()]);
}

#[test]
fn timings_are_validated() {
    let spec = SchedulerSpec {
        group_interval: std::time::Duration::from_millis(500),
        ..SchedulerSpec::default()
    };
    let e = Scheduler::new(&spec, &[]).unwrap_err();
    assert_eq!(e.to_string(), "`alerts.group_interval` is \"500ms\"; expected at least 1s");
}

#[test]
fn a_silence_does_not_hold_back_the_resolution_of_an_announced_alert() {
    let mut s = scheduler();
    let mut silences = Silences::new();
    s.push(&firing("v1", T0), T0);
    assert_eq!(s.due(T0 + 30 * S, &silences).len(), 1);
    let all =
        Matcher { name: "alertname".into(), value: "slow".into(), is_regex: false, is_equal: true };
    silences.upsert(
        Silence::new("maintenance", vec![all], T0 + MIN, T0 + 60 * MIN, "ops", "").unwrap(),
    );
    // A new alert under the silence is held back; the resolution of v1 is not.
    s.push(&firing("v2", T0 + 2 * MIN), T0 + 2 * MIN);
    s.push(&event("slow", "v1", AlertState::Resolved, T0, T0 + 3 * MIN, 2), T0 + 3 * MIN);
    let mut sent = Vec::new();
    let mut now = T0 + 2 * MIN;
    while now <= T0 + 30 * MIN {
        s.refresh(&firing("v2", T0).fingerprint, now);
        sent.extend(s.due(now, &silences));
        now += 10 * S;
    }
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, NotificationStatus::Resolved);
    let versions: Vec<&str> = sent[0].alerts.iter().map(|a| a.labels["version"].as_str()).collect();
    assert_eq!(versions, ["v1"]);
}
