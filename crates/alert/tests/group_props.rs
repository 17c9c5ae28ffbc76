//! Properties of the scheduler under random firing/resolving input.

// Tests may unwrap (clippy.toml allows it in #[test] functions only; helpers too here).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use modelwatch_alert::rule::Op;
use modelwatch_alert::{
    AlertEvent, AlertState, NotificationStatus, Scheduler, SchedulerSpec, Silences, fingerprint,
};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 10_000;
const WAIT: i64 = 30_000;
const INTERVAL: i64 = 120_000;

fn labels(version: &str) -> BTreeMap<String, String> {
    [("alertname", "slow"), ("model", "m"), ("version", version), ("severity", "critical")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn event(version: &str, state: AlertState, starts: i64, at: i64, seq: u64) -> AlertEvent {
    let labels = labels(version);
    AlertEvent {
        fingerprint: fingerprint(&labels),
        seq,
        rule: "slow".into(),
        model: "m".into(),
        version: version.into(),
        severity: "critical".into(),
        state,
        value: Some(1.0),
        threshold: Some(0.5),
        starts_at_ms: starts,
        ends_at_ms: (state == AlertState::Resolved).then_some(at),
        at_ms: at,
        labels,
        annotations: BTreeMap::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Per step and version: does the condition flip?
    #[test]
    fn notifications_are_spaced_complete_and_resolve_once(
        flips in proptest::collection::vec(proptest::collection::vec(proptest::bool::weighted(0.08), 3), 50..400),
    ) {
        let rules = vec![spec("slow", "latency_p99_ms", Op::Gt, 1.0).validate(0).unwrap()];
        let timing = SchedulerSpec {
            group_wait: Duration::from_millis(WAIT as u64),
            group_interval: Duration::from_millis(INTERVAL as u64),
            repeat_interval: Duration::from_secs(1800),
            max_notification_age: Duration::from_secs(900),
        };
        let mut s = Scheduler::new(&timing, &rules).unwrap();
        let none = Silences::new();
        let versions = ["v1", "v2", "v3"];
        // Per version: Some(starts_at) while firing; the seq of its last event.
        let mut firing: [Option<i64>; 3] = [None; 3];
        let mut seqs = [0u64; 3];
        let mut sent = Vec::new();
        for (k, step) in flips.iter().enumerate() {
            let now = T0 + k as i64 * STEP;
            for (i, &flip) in step.iter().enumerate() {
                if !flip {
                    continue;
                }
                seqs[i] += 1;
                let e = match firing[i] {
                    None => {
                        firing[i] = Some(now);
                        event(versions[i], AlertState::Firing, now, now, seqs[i])
                    }
                    Some(starts) => {
                        firing[i] = None;
                        event(versions[i], AlertState::Resolved, starts, now, seqs[i])
                    }
                };
                s.push(&e, now);
            }
            for (i, f) in firing.iter().enumerate() {
                if f.is_some() {
                    s.refresh(&fingerprint(&labels(versions[i])), now);
                }
            }
            if let Some(due) = s.next_due() {
                prop_assert!(due > now - STEP, "a tick was missed: due {due}, now {now}");
            }
            sent.extend(s.due(now, &none).into_iter().map(|n| (now, n)));
            // Liveness: a version firing in one episode for group_wait + group_interval (plus
            // one step of polling) has been notified in that episode.
            for (i, f) in firing.iter().enumerate() {
                let Some(starts) = *f else { continue };
                if now - starts >= WAIT + INTERVAL + STEP {
                    let fp = fingerprint(&labels(versions[i]));
                    prop_assert!(sent.iter().any(|(_, n)| n.alerts.iter().any(|a| {
                        a.fingerprint == fp && a.starts_at_ms == starts
                    })), "{} firing since {} not notified by {}", versions[i], starts, now);
                }
            }
        }
        // Quiet afterwards: every change reaches the receivers within a group_wait and two
        // group intervals.
        let end = T0 + flips.len() as i64 * STEP;
        let mut now = end;
        while now <= end + WAIT + 2 * INTERVAL {
            for (i, f) in firing.iter().enumerate() {
                if f.is_some() {
                    s.refresh(&fingerprint(&labels(versions[i])), now);
                }
            }
            sent.extend(s.due(now, &none).into_iter().map(|n| (now, n)));
            now += STEP;
        }
        // Per fingerprint: whether receivers were last told it fires.
        let mut open: BTreeMap<String, bool> = BTreeMap::new();
        for w in sent.windows(2) {
            prop_assert!(w[1].0 - w[0].0 >= INTERVAL, "two notifications {} ms apart", w[1].0 - w[0].0);
            prop_assert!(w[1].1.seq > w[0].1.seq);
        }
        for (_, n) in &sent {
            let any_firing = n.alerts.iter().any(|a| a.status == NotificationStatus::Firing);
            prop_assert_eq!(n.status == NotificationStatus::Firing, any_firing);
            for a in &n.alerts {
                let firing = a.status == NotificationStatus::Firing;
                let was_open = open.insert(a.fingerprint.clone(), firing);
                if !firing {
                    prop_assert_eq!(was_open, Some(true), "resolved without an open firing");
                }
            }
        }
        for (i, f) in firing.iter().enumerate() {
            let fp = fingerprint(&labels(versions[i]));
            let told = open.get(&fp).copied().unwrap_or(false);
            prop_assert_eq!(told, f.is_some(), "receivers disagree about {}", versions[i]);
        }
    }
}
