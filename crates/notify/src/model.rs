//! The notification a channel delivers: one group of alerts, as Alertmanager groups them.
//!
//! A [`Notification`] is what the rule engine hands over after grouping: the alerts of one group
//! (for example one rule on one model), their common labels and annotations, and an idempotency
//! key. The key is recorded in the alert log *before* sending; a channel passes it on to the
//! receiver (`Idempotency-Key` header, e-mail `Message-ID`) so a receiver can drop the duplicate
//! that a crash between sending and recording can cause.
//!
//! Times are milliseconds since the Unix epoch (UTC). The label and annotation names that the
//! templates and the Slack body know are in [`label`] and [`annotation`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Label and annotation maps: sorted, so every serialization is byte-for-byte stable.
pub type Labels = BTreeMap<String, String>;

/// Label names with a meaning to the channels (templates, Slack body, test notification).
pub mod label {
    /// The rule's name (Alertmanager's convention for the alert's name).
    pub const ALERTNAME: &str = "alertname";
    /// The model the alert is about.
    pub const MODEL: &str = "model";
    /// The model version the alert is about.
    pub const VERSION: &str = "version";
    /// `info`, `warning`, `critical`, ...
    pub const SEVERITY: &str = "severity";
}

/// Annotation names with a meaning to the channels.
pub mod annotation {
    /// The observed value that breached (or no longer breaches) the threshold.
    pub const VALUE: &str = "value";
    /// The rule's threshold.
    pub const THRESHOLD: &str = "threshold";
    /// One line for humans.
    pub const SUMMARY: &str = "summary";
    /// A longer text for humans.
    pub const DESCRIPTION: &str = "description";
}

/// Whether an alert (or a group) is firing or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The condition holds.
    Firing,
    /// The condition no longer holds; the alert has an end time.
    Resolved,
}

impl Status {
    /// `"firing"` or `"resolved"`, as in Alertmanager's payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert of a group: one rule on one (model, version), identified by its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Firing or resolved.
    pub status: Status,
    /// Identifying labels (`alertname`, `model`, `version`, `severity`, the rule's own labels).
    pub labels: Labels,
    /// Non-identifying information (`value`, `threshold`, `summary`, `description`, ...).
    pub annotations: Labels,
    /// When the alert started firing, ms since the epoch.
    pub starts_at_ms: i64,
    /// When it resolved (ms since the epoch); `None` while firing.
    pub ends_at_ms: Option<i64>,
    /// A stable identifier of the alert (the same labels give the same fingerprint).
    pub fingerprint: String,
    /// A link to where the alert comes from (dashboard, query); may be empty.
    pub generator_url: String,
}

/// One notification: a group of alerts for one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The receiving channel's name (`[alerts.channels.NAME]`).
    pub receiver: String,
    /// `Firing` when at least one alert fires, else `Resolved` (as Alertmanager does).
    pub status: Status,
    /// Identifies the group (stable across notifications of the same group).
    pub group_key: String,
    /// The labels the group is formed by (e.g. `alertname` and `model`).
    pub group_labels: Labels,
    /// The labels every alert of the group has with the same value.
    pub common_labels: Labels,
    /// The annotations every alert of the group has with the same value.
    pub common_annotations: Labels,
    /// A link back to modelwatch (may be empty).
    pub external_url: String,
    /// The alerts, firing and resolved.
    pub alerts: Vec<Alert>,
    /// Recorded in the alert log before sending; the same for every retry of one notification.
    pub idempotency_key: String,
}

impl Notification {
    /// A notification for `alerts`, with its status and common labels and annotations computed
    /// from them: `Firing` when any alert fires; common = the pairs every alert has.
    pub fn from_alerts(
        receiver: impl Into<String>,
        group_key: impl Into<String>,
        group_labels: Labels,
        alerts: Vec<Alert>,
        external_url: impl Into<String>,
        idempotency_key: impl Into<String>,
    ) -> Self {
        let status = if alerts.iter().any(|a| a.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        };
        let common_labels = common(alerts.iter().map(|a| &a.labels));
        let common_annotations = common(alerts.iter().map(|a| &a.annotations));
        Self {
            receiver: receiver.into(),
            status,
            group_key: group_key.into(),
            group_labels,
            common_labels,
            common_annotations,
            external_url: external_url.into(),
            alerts,
            idempotency_key: idempotency_key.into(),
        }
    }

    /// The alerts with the given status.
    pub fn alerts_with(&self, status: Status) -> impl Iterator<Item = &Alert> {
        self.alerts.iter().filter(move |a| a.status == status)
    }

    /// The values of label or annotation `name` for this group: the common label, else the common
    /// annotation, else the distinct values the alerts have (labels first), in alert order.
    /// Empty when no alert has it.
    pub fn values_of(&self, name: &str) -> Vec<&str> {
        if let Some(v) = self.common_labels.get(name).or_else(|| self.common_annotations.get(name))
        {
            return vec![v.as_str()];
        }
        let mut out: Vec<&str> = Vec::new();
        for a in &self.alerts {
            if let Some(v) = a.labels.get(name).or_else(|| a.annotations.get(name))
                && !out.contains(&v.as_str())
            {
                out.push(v);
            }
        }
        out
    }

    /// A one-line title: `[FIRING:2] rule model version` (the label values that are common).
    pub fn title(&self) -> String {
        let mut title = format!(
            "[{}:{}] {}",
            self.status.as_str().to_uppercase(),
            self.alerts_with(self.status).count(),
            self.values_of(label::ALERTNAME).join(", ")
        );
        for name in [label::MODEL, label::VERSION] {
            if let Some(v) = self.common_labels.get(name) {
                title.push(' ');
                title.push_str(v);
            }
        }
        title
    }
}

/// The label pairs every map has (empty for no maps).
fn common<'a>(mut maps: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = maps.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// A fingerprint of a label set: 16 hex digits of SHA-256 over the sorted `name=value` pairs
/// (each name and value followed by a 0xff byte, which no UTF-8 text contains). The same labels
/// always give the same fingerprint.
pub fn fingerprint(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    hex(&h.finalize()[..8])
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The current time in ms since the epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Go's zero time, which Alertmanager writes as `endsAt` of an alert that has no end.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 in UTC with milliseconds (`2026-11-22T10:33:31.123Z`); times before the epoch are
/// written as the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A clearly labelled test notification, for `modelwatch alerts test`: one firing alert
/// `ModelwatchTestAlert` on model `modelwatch-test`, version `test`, severity `info`, with a
/// summary saying it is a test and can be ignored. The idempotency key is unique per call.
pub fn test_notification(receiver: &str, external_url: &str) -> Notification {
    let now = now_ms();
    let labels: Labels = [
        (label::ALERTNAME, "ModelwatchTestAlert"),
        (label::MODEL, "modelwatch-test"),
        (label::VERSION, "test"),
        (label::SEVERITY, "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let annotations: Labels = [
        (
            annotation::SUMMARY,
            "TEST: a test notification sent by `modelwatch alerts test`; no action is needed",
        ),
        (annotation::VALUE, "1"),
        (annotation::THRESHOLD, "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let alert = Alert {
        status: Status::Firing,
        fingerprint: fingerprint(&labels),
        labels: labels.clone(),
        annotations,
        starts_at_ms: now,
        ends_at_ms: None,
        generator_url: external_url.to_owned(),
    };
    let group_labels: Labels = labels
        .iter()
        .filter(|(k, _)| *k == label::ALERTNAME)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Notification::from_alerts(
        receiver,
        format!("{{}}:{{alertname=\"ModelwatchTestAlert\"}}/{receiver}"),
        group_labels,
        vec![alert],
        external_url,
        format!("test-{receiver}-{now}-{:08x}", fastrand::u32(..)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn alert(status: Status, l: &[(&str, &str)], a: &[(&str, &str)]) -> Alert {
        Alert {
            status,
            labels: labels(l),
            annotations: labels(a),
            starts_at_ms: 1_000,
            ends_at_ms: None,
            fingerprint: fingerprint(&labels(l)),
            generator_url: String::new(),
        }
    }

    #[test]
    fn group_status_and_common_pairs() {
        let n = Notification::from_alerts(
            "r",
            "g",
            Labels::new(),
            vec![
                alert(
                    Status::Resolved,
                    &[("alertname", "x"), ("version", "v1")],
                    &[("value", "1")],
                ),
                alert(Status::Firing, &[("alertname", "x"), ("version", "v2")], &[("value", "2")]),
            ],
            "",
            "k",
        );
        assert_eq!(n.status, Status::Firing);
        assert_eq!(n.common_labels, labels(&[("alertname", "x")]));
        assert!(n.common_annotations.is_empty());
        assert_eq!(n.values_of("version"), vec!["v1", "v2"]);
        assert_eq!(n.values_of("alertname"), vec!["x"]);
        assert!(n.values_of("nope").is_empty());
        assert_eq!(n.title(), "[FIRING:1] x");
        let all_resolved = Notification::from_alerts(
            "r",
            "g",
            Labels::new(),
            vec![alert(Status::Resolved, &[("a", "1")], &[])],
            "",
            "k",
        );
        assert_eq!(all_resolved.status, Status::Resolved);
    }

    #[test]
    fn fingerprint_is_stable_and_label_sensitive() {
        let a = fingerprint(&labels(&[("a", "1"), ("b", "2")]));
        assert_eq!(a.len(), 16);
        assert_eq!(a, fingerprint(&labels(&[("b", "2"), ("a", "1")])));
        assert_ne!(a, fingerprint(&labels(&[("a", "12")])));
        // The separator keeps "a"+"b1" apart from "ab"+"1".
        assert_ne!(fingerprint(&labels(&[("a", "b1")])), fingerprint(&labels(&[("ab", "1")])));
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_430_011_123), "2026-11-23T10:33:31.123Z");
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn test_notification_is_labelled_as_a_test() {
        let n = test_notification("ops", "http://mw:8080");
        assert_eq!(n.status, Status::Firing);
        assert_eq!(n.alerts.len(), 1);
        assert_eq!(n.common_labels["alertname"], "ModelwatchTestAlert");
        assert!(n.common_annotations["summary"].starts_with("TEST:"));
        assert_ne!(n.idempotency_key, test_notification("ops", "").idempotency_key);
    }
}
