//! The Alertmanager channel: pushes alerts to an existing Alertmanager's `POST /api/v2/alerts`,
//! so teams keep their routing, inhibition and silences there.
//!
//! Alertmanager resolves an alert by itself once its `endsAt` has passed (or `resolve_timeout`
//! after the last push when it has none). So, as Prometheus does, a firing alert is pushed with
//! `endsAt = now + resend_ahead` and the caller re-sends every still-firing group every
//! [`resend_interval`](Channel::resend_interval); `resend_ahead` (default 3 x `resend_interval`)
//! leaves room for two lost re-sends before Alertmanager would resolve it. A resolved alert is
//! pushed with its real end, which resolves it at once. If modelwatch stops for good, its firing
//! alerts resolve in Alertmanager `resend_ahead` after the last push.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::channel::{
    Channel, ConfigError, Delivery, SendError, Validated, check_http_url, check_positive,
};
use crate::http::{HttpClient, check_headers};
use crate::model::{Notification, now_ms};
use crate::payload;

/// `[alerts.channels.NAME]` with `type = "alertmanager"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The Alertmanager's base URL, e.g. `"http://127.0.0.1:9093"` (alerts go to
    /// `{url}/api/v2/alerts`; a trailing `/` is ignored).
    pub url: String,
    /// Extra request headers, e.g. `{ Authorization = "Basic ..." }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long one request may take in all, e.g. `"10s"`.
    #[serde(default = "crate::webhook::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the caller re-sends a still-firing group, e.g. `"1m"` (Prometheus' default).
    #[serde(default = "default_resend_interval", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// How far ahead of now a firing alert's `endsAt` is set; must exceed `resend_interval`.
    /// Default: 3 x `resend_interval`.
    #[serde(default, with = "humantime_serde")]
    pub resend_ahead: Option<Duration>,
}

/// The default `resend_interval`: 1 minute.
pub fn default_resend_interval() -> Duration {
    Duration::from_secs(60)
}

impl AlertmanagerConfig {
    /// A config for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: BTreeMap::new(),
            timeout: crate::webhook::default_timeout(),
            resend_interval: default_resend_interval(),
            resend_ahead: None,
        }
    }

    /// `resend_ahead`, or its default of 3 x `resend_interval`.
    pub fn effective_resend_ahead(&self) -> Duration {
        self.resend_ahead.unwrap_or(self.resend_interval.saturating_mul(3))
    }

    /// Checks every field (no I/O).
    pub fn validate(self) -> Result<Validated<Self>, ConfigError> {
        self.check()?;
        Ok(Validated(self))
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        check_http_url("url", &self.url)?;
        check_headers(&self.headers)?;
        check_positive("timeout", self.timeout)?;
        check_positive("resend_interval", self.resend_interval)?;
        let ahead = self.effective_resend_ahead();
        if ahead <= self.resend_interval {
            return Err(ConfigError::ResendAheadTooShort {
                resend_ahead: ahead,
                resend_interval: self.resend_interval,
            });
        }
        Ok(())
    }
}

/// Pushes alerts to an Alertmanager (see the module docs for `endsAt`).
#[derive(Debug)]
pub struct AlertmanagerChannel {
    config: AlertmanagerConfig,
    endpoint: String,
    client: HttpClient,
}

impl AlertmanagerChannel {
    /// The channel for a validated config (no I/O).
    pub fn build(config: Validated<AlertmanagerConfig>) -> Self {
        let config = config.0;
        let endpoint = format!("{}/api/v2/alerts", config.url.trim_end_matches('/'));
        Self { client: HttpClient::new(config.timeout), endpoint, config }
    }

    /// The URL alerts are posted to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Channel for AlertmanagerChannel {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn send(&self, n: &Notification) -> Result<Delivery, SendError> {
        let ahead_ms =
            i64::try_from(self.config.effective_resend_ahead().as_millis()).unwrap_or(i64::MAX);
        let body =
            payload::alertmanager_postable(n, now_ms(), ahead_ms).map_err(SendError::Encode)?;
        let headers: Vec<(&str, &str)> = self
            .config
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("idempotency-key", n.idempotency_key.as_str())])
            .collect();
        self.client.post_json(&self.endpoint, &headers, &body)
    }

    fn resend_interval(&self) -> Option<Duration> {
        Some(self.config.resend_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = AlertmanagerConfig::new("http://127.0.0.1:9093/");
        assert_eq!(c.effective_resend_ahead(), Duration::from_secs(180));
        let ch = AlertmanagerChannel::build(c.validate().unwrap());
        assert_eq!(ch.endpoint(), "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(ch.resend_interval(), Some(Duration::from_secs(60)));
        let mut c = AlertmanagerConfig::new("http://am:9093");
        c.resend_ahead = Some(Duration::from_secs(60));
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "`resend_ahead` (60s) must be longer than `resend_interval` (60s)"
        );
        let c: AlertmanagerConfig =
            toml::from_str("url = \"http://am:9093\"\nresend_interval = \"10s\"\n").unwrap();
        assert_eq!(c.effective_resend_ahead(), Duration::from_secs(30));
    }
}
