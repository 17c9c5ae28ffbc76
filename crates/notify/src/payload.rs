//! Wire formats: Alertmanager's webhook payload (version 4), a Slack-style message, and
//! Alertmanager's API v2 postable alerts.
//!
//! Field names follow Alertmanager (`notify/webhook` and `api/v2/openapi.yaml`): camelCase, with
//! `externalURL` and `generatorURL` spelled as there. Times are RFC 3339 in UTC with
//! milliseconds; a firing alert's `endsAt` in the webhook payload is Go's zero time
//! `0001-01-01T00:00:00Z`, as Alertmanager writes it. Maps are sorted, so the same notification
//! always serializes to the same bytes (which the HMAC signature covers).

use serde::Serialize;

use crate::model::{Alert, Labels, Notification, Status, ZERO_TIME, annotation, label, rfc3339_ms};

/// Alertmanager's webhook payload, version 4.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookV4<'a> {
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: usize,
    status: Status,
    receiver: &'a str,
    group_labels: &'a Labels,
    common_labels: &'a Labels,
    common_annotations: &'a Labels,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    alerts: Vec<WebhookAlert<'a>>,
}

/// One alert of the webhook payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: Status,
    labels: &'a Labels,
    annotations: &'a Labels,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: &'a str,
}

/// The notification in Alertmanager's webhook format (version 4). With `max_alerts > 0` only
/// the first `max_alerts` alerts are included and `truncatedAlerts` counts the rest (0 means
/// no limit, as in Alertmanager).
pub fn alertmanager_webhook(
    n: &Notification,
    max_alerts: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    let keep = if max_alerts == 0 { n.alerts.len() } else { max_alerts.min(n.alerts.len()) };
    let body = WebhookV4 {
        version: "4",
        group_key: &n.group_key,
        truncated_alerts: n.alerts.len() - keep,
        status: n.status,
        receiver: &n.receiver,
        group_labels: &n.group_labels,
        common_labels: &n.common_labels,
        common_annotations: &n.common_annotations,
        external_url: &n.external_url,
        alerts: n.alerts[..keep]
            .iter()
            .map(|a| WebhookAlert {
                status: a.status,
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: rfc3339_ms(a.starts_at_ms),
                ends_at: match (a.status, a.ends_at_ms) {
                    (Status::Resolved, Some(end)) => rfc3339_ms(end),
                    _ => ZERO_TIME.to_owned(),
                },
                generator_url: &a.generator_url,
                fingerprint: &a.fingerprint,
            })
            .collect(),
    };
    serde_json::to_vec(&body)
}

/// A Slack incoming-webhook message.
#[derive(Debug, Serialize)]
struct SlackMessage {
    text: String,
    attachments: Vec<SlackAttachment>,
}

/// Slack's (legacy, still accepted) attachment: a coloured bar with a title and text.
#[derive(Debug, Serialize)]
struct SlackAttachment {
    color: &'static str,
    fallback: String,
    title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    title_link: String,
    text: String,
    mrkdwn_in: [&'static str; 1],
    footer: &'static str,
}

/// Red bar for firing, green for resolved (Slack's own "danger" and "good" colours).
const SLACK_FIRING: &str = "#d63232";
const SLACK_RESOLVED: &str = "#2eb886";

/// The notification as a Slack incoming-webhook message: `text` is the title
/// (`[FIRING:2] rule model version`), one attachment (red while firing, green when resolved)
/// lists every alert on a line of its own: status, rule, model, version, value, threshold,
/// start (and end) time, then its summary when it has one.
pub fn slack(n: &Notification) -> Result<Vec<u8>, serde_json::Error> {
    let title = n.title();
    let text = n.alerts.iter().map(slack_line).collect::<Vec<_>>().join("\n");
    let msg = SlackMessage {
        text: title.clone(),
        attachments: vec![SlackAttachment {
            color: match n.status {
                Status::Firing => SLACK_FIRING,
                Status::Resolved => SLACK_RESOLVED,
            },
            fallback: title.clone(),
            title,
            title_link: n.external_url.clone(),
            text,
            mrkdwn_in: ["text"],
            footer: "modelwatch",
        }],
    };
    serde_json::to_vec(&msg)
}

/// `*FIRING* rule · model `m` version `v` · value 3 (threshold 2) · since T — summary`
fn slack_line(a: &Alert) -> String {
    fn get<'a>(m: &'a Labels, k: &str) -> &'a str {
        m.get(k).map(String::as_str).unwrap_or("")
    }
    let mut line = format!(
        "*{}* {} · model `{}` version `{}`",
        a.status.as_str().to_uppercase(),
        get(&a.labels, label::ALERTNAME),
        get(&a.labels, label::MODEL),
        get(&a.labels, label::VERSION),
    );
    if let Some(v) = a.annotations.get(annotation::VALUE) {
        line.push_str(&format!(" · value {v}"));
        if let Some(t) = a.annotations.get(annotation::THRESHOLD) {
            line.push_str(&format!(" (threshold {t})"));
        }
    }
    line.push_str(&format!(" · since {}", rfc3339_ms(a.starts_at_ms)));
    if let (Status::Resolved, Some(end)) = (a.status, a.ends_at_ms) {
        line.push_str(&format!(", resolved {}", rfc3339_ms(end)));
    }
    if let Some(s) = a.annotations.get(annotation::SUMMARY) {
        line.push_str(&format!(" — {s}"));
    }
    line
}

/// One alert as `POST /api/v2/alerts` takes it (`postableAlert`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a Labels,
    annotations: &'a Labels,
    starts_at: String,
    ends_at: String,
    /// Alertmanager validates it as a URI: left out when empty.
    #[serde(rename = "generatorURL", skip_serializing_if = "str::is_empty")]
    generator_url: &'a str,
}

/// The notification's alerts as the body of Alertmanager's `POST /api/v2/alerts`. A firing
/// alert's `endsAt` is `now_ms + resend_ahead_ms` (so Alertmanager keeps it firing until then and
/// resolves it by itself if modelwatch stops re-sending); a resolved alert's is its real end (or
/// `now_ms` when it has none).
pub fn alertmanager_postable(
    n: &Notification,
    now_ms: i64,
    resend_ahead_ms: i64,
) -> Result<Vec<u8>, serde_json::Error> {
    let alerts: Vec<PostableAlert<'_>> = n
        .alerts
        .iter()
        .map(|a| PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339_ms(a.starts_at_ms),
            ends_at: rfc3339_ms(match a.status {
                Status::Firing => now_ms.saturating_add(resend_ahead_ms),
                Status::Resolved => a.ends_at_ms.unwrap_or(now_ms),
            }),
            generator_url: &a.generator_url,
        })
        .collect();
    serde_json::to_vec(&alerts)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::model::fingerprint;

    fn sample() -> Notification {
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let firing_labels = l(&[("alertname", "LatencyHigh"), ("model", "m"), ("version", "v2")]);
        let resolved_labels = l(&[("alertname", "LatencyHigh"), ("model", "m"), ("version", "v3")]);
        Notification::from_alerts(
            "ops",
            "{}:{alertname=\"LatencyHigh\", model=\"m\"}",
            l(&[("alertname", "LatencyHigh"), ("model", "m")]),
            vec![
                Alert {
                    status: Status::Firing,
                    fingerprint: fingerprint(&firing_labels),
                    labels: firing_labels,
                    annotations: l(&[
                        ("value", "412"),
                        ("threshold", "300"),
                        ("summary", "p99 up"),
                    ]),
                    starts_at_ms: 1_000_000_000_123,
                    ends_at_ms: None,
                    generator_url: "http://mw/rules/LatencyHigh".into(),
                },
                Alert {
                    status: Status::Resolved,
                    fingerprint: fingerprint(&resolved_labels),
                    labels: resolved_labels,
                    annotations: l(&[("value", "120"), ("threshold", "300")]),
                    starts_at_ms: 1_000_000_000_000,
                    ends_at_ms: Some(1_000_000_060_000),
                    generator_url: String::new(),
                },
            ],
            "http://mw:8080",
            "key-1",
        )
    }

    #[test]
    fn webhook_v4_fields() {
        let n = sample();
        let v: Value = serde_json::from_slice(&alertmanager_webhook(&n, 0).unwrap()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["commonLabels"], json!({"alertname": "LatencyHigh", "model": "m"}));
        assert_eq!(v["commonAnnotations"], json!({"threshold": "300"}));
        assert_eq!(v["alerts"][0]["startsAt"], "2001-09-09T01:46:40.123Z");
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(v["alerts"][0]["generatorURL"], "http://mw/rules/LatencyHigh");
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_eq!(v["alerts"][1]["endsAt"], "2001-09-09T01:47:40.000Z");
        assert_eq!(v["alerts"][1]["fingerprint"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn webhook_truncation() {
        let v: Value =
            serde_json::from_slice(&alertmanager_webhook(&sample(), 1).unwrap()).unwrap();
        assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(v["truncatedAlerts"], 1);
        // Same input, same bytes: the signature relies on it.
        assert_eq!(
            alertmanager_webhook(&sample(), 1).unwrap(),
            alertmanager_webhook(&sample(), 1).unwrap()
        );
    }

    #[test]
    fn slack_body() {
        let v: Value = serde_json::from_slice(&slack(&sample()).unwrap()).unwrap();
        assert_eq!(v["text"], "[FIRING:1] LatencyHigh m");
        let att = &v["attachments"][0];
        assert_eq!(att["color"], SLACK_FIRING);
        assert_eq!(att["title_link"], "http://mw:8080");
        let text = att["text"].as_str().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(
            "*FIRING* LatencyHigh · model `m` version `v2` · value 412 (threshold 300)"
        ));
        assert!(lines[0].ends_with("— p99 up"));
        assert!(lines[1].contains("resolved 2001-09-09T01:47:40.000Z"));
    }

    #[test]
    fn postable_alerts_ends_at() {
        let n = sample();
        let now = 2_000_000_000_000;
        let v: Value =
            serde_json::from_slice(&alertmanager_postable(&n, now, 180_000).unwrap()).unwrap();
        let alerts = v.as_array().unwrap();
        assert_eq!(alerts[0]["endsAt"], rfc3339_ms(now + 180_000));
        assert_eq!(alerts[0]["generatorURL"], "http://mw/rules/LatencyHigh");
        assert_eq!(alerts[1]["endsAt"], "2001-09-09T01:47:40.000Z");
        assert!(alerts[1].get("generatorURL").is_none());
        assert!(alerts[0].get("status").is_none(), "postable alerts carry no status");
    }
}
