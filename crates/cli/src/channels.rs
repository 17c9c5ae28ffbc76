//! The delivery channels of `[alerts.channels.NAME]` (the `modelwatch-notify` crate) behind the
//! alert worker's [`Deliverer`], and `modelwatch alerts test`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use modelwatch_alert::{Notification, NotificationStatus};
use modelwatch_notify::{
    AnyChannel, Channel as _, ChannelConfig, DeliveryReport, Outcome, RetryPolicy, Validated,
    deliver_with_retry,
};

use crate::alerting::{AttemptRecord, Deliverer};
use crate::config::{AlertsConfig, ConfigError};

/// Reads and checks one `[alerts.channels.NAME]` table (no I/O).
pub(crate) fn validate(
    name: &str,
    table: toml::Table,
) -> Result<Validated<ChannelConfig>, ConfigError> {
    let key = format!("alerts.channels.{name}");
    let config: ChannelConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            ConfigError::Invalid {
                key: if path == "." { key.clone() } else { format!("{key}.{path}") },
                message,
            }
        })?;
    config.validate().map_err(|source| ConfigError::Channel { key, source })
}

/// Reads and checks `[alerts.retry]` (no I/O).
pub(crate) fn retry_policy(table: toml::Table) -> Result<Validated<RetryPolicy>, ConfigError> {
    let key = "alerts.retry";
    let policy: RetryPolicy =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            ConfigError::Invalid {
                key: if path == "." { key.to_owned() } else { format!("{key}.{path}") },
                message,
            }
        })?;
    policy.validate().map_err(|source| ConfigError::Channel { key: key.to_owned(), source })
}

/// A built channel with the retry policy.
#[derive(Debug)]
pub struct NotifyDeliverer {
    channel: AnyChannel,
    policy: Validated<RetryPolicy>,
}

impl Deliverer for NotifyDeliverer {
    fn kind(&self) -> &'static str {
        self.channel.kind()
    }

    fn deliver(
        &self,
        n: &Notification,
        receiver: &str,
        external_url: &str,
        stop: &AtomicBool,
    ) -> Vec<AttemptRecord> {
        let n = to_notify(n, receiver, external_url);
        let report = deliver_with_retry(&self.channel, &n, &self.policy, |d| {
            // Sleep in slices so a shutdown ends the wait; no retry starts once stopping.
            let deadline = std::time::Instant::now() + d;
            while std::time::Instant::now() < deadline {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50).min(d));
            }
            !stop.load(Ordering::Relaxed)
        });
        attempts(&report)
    }

    fn resend_interval(&self) -> Option<Duration> {
        self.channel.resend_interval()
    }
}

/// The attempts of a delivery as the alert log records them (`sent` or `failed`).
fn attempts(report: &DeliveryReport) -> Vec<AttemptRecord> {
    report
        .attempts
        .iter()
        .map(|a| {
            let (status, error) = match &a.outcome {
                modelwatch_notify::AttemptOutcome::Delivered(_) => ("sent", None),
                modelwatch_notify::AttemptOutcome::Failed { error, .. } => {
                    ("failed", Some(error.clone()))
                }
            };
            AttemptRecord { number: a.number, status, started_at_ms: a.started_at_ms, error }
        })
        .collect()
}

/// A scheduler notification in the delivery crate's shape, for one receiver. The value and the
/// threshold are added as the `value` and `threshold` annotations unless the rule sets them.
pub fn to_notify(
    n: &Notification,
    receiver: &str,
    external_url: &str,
) -> modelwatch_notify::Notification {
    let alerts = n
        .alerts
        .iter()
        .map(|a| {
            let mut annotations = a.annotations.clone();
            if let Some(v) = a.value {
                annotations.entry("value".to_owned()).or_insert_with(|| v.to_string());
            }
            if let Some(t) = a.threshold {
                annotations.entry("threshold".to_owned()).or_insert_with(|| t.to_string());
            }
            modelwatch_notify::Alert {
                status: match a.status {
                    NotificationStatus::Firing => modelwatch_notify::Status::Firing,
                    NotificationStatus::Resolved => modelwatch_notify::Status::Resolved,
                },
                labels: a.labels.clone(),
                annotations,
                starts_at_ms: a.starts_at_ms,
                ends_at_ms: a.ends_at_ms,
                fingerprint: a.fingerprint.clone(),
                generator_url: external_url.to_owned(),
            }
        })
        .collect();
    let group_labels = [("alertname", &n.rule), ("model", &n.model)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    modelwatch_notify::Notification::from_alerts(
        receiver,
        n.group_key.clone(),
        group_labels,
        alerts,
        external_url,
        n.idempotency_key(),
    )
}

/// Builds every configured channel (the e-mail channel reads its `ca_file` here).
pub fn build(config: &AlertsConfig) -> anyhow::Result<BTreeMap<String, Arc<dyn Deliverer>>> {
    let mut out: BTreeMap<String, Arc<dyn Deliverer>> = BTreeMap::new();
    for (name, c) in &config.channels {
        let channel = c
            .clone()
            .build()
            .with_context(|| format!("building channel alerts.channels.{name}"))?;
        if let Some(every) = channel.resend_interval()
            && every < config.scheduler.repeat_interval
        {
            tracing::warn!(
                channel = %name,
                resend_interval = %humantime::format_duration(every),
                repeat_interval = %humantime::format_duration(config.scheduler.repeat_interval),
                "the receiver forgets a firing alert sooner than alerts.repeat_interval re-sends it"
            );
        }
        out.insert(
            name.clone(),
            Arc::new(NotifyDeliverer { channel, policy: config.retry.clone() }),
        );
    }
    Ok(out)
}

/// The outcome of `modelwatch alerts test` for one channel.
#[derive(Debug)]
pub struct TestOutcome {
    /// The channel's name.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// What happened (attempts and outcome), or why the channel could not be built.
    pub result: Result<DeliveryReport, String>,
}

impl TestOutcome {
    /// Whether the test notification was delivered.
    pub fn delivered(&self) -> bool {
        self.result.as_ref().is_ok_and(DeliveryReport::delivered)
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        match &self.result {
            Err(e) => format!("{} ({}): not built: {e}", self.name, self.kind),
            Ok(r) => {
                let n = r.attempts.len();
                match &r.outcome {
                    Outcome::Delivered(d) => format!(
                        "{} ({}): delivered after {n} attempt(s): {} {}",
                        self.name, self.kind, d.code, d.detail
                    ),
                    Outcome::Failed { reason, error } => format!(
                        "{} ({}): FAILED after {n} attempt(s) ({reason:?}): {}",
                        self.name,
                        self.kind,
                        modelwatch_notify::error_chain(error)
                    ),
                }
            }
        }
    }
}

/// Sends `test_notification()` through every configured channel, one after the other, with
/// the configured retries.
pub fn test_all(config: &AlertsConfig) -> Vec<TestOutcome> {
    let mut out = Vec::new();
    for (name, c) in &config.channels {
        let kind = match &**c {
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Alertmanager(_) => "alertmanager",
        };
        let result =
            c.clone().build().map_err(|e| format!("{:#}", anyhow::Error::new(e))).map(|channel| {
                let n = modelwatch_notify::test_notification(name, &config.external_url);
                deliver_with_retry(&channel, &n, &config.retry, modelwatch_notify::thread_sleep)
            });
        out.push(TestOutcome { name: name.clone(), kind, result });
    }
    out
}
