//! The webhook channel: an HTTP POST of JSON, by default in Alertmanager's webhook format
//! (version 4) so existing Alertmanager receivers work unchanged, or a Slack-style message.
//!
//! # Headers
//! - `Content-Type: application/json`.
//! - `Idempotency-Key: <key>`: the notification's idempotency key, the same on every retry of one
//!   notification, so a receiver can drop the duplicate a retry or a crash may cause.
//! - With a `secret`: `X-Modelwatch-Timestamp` and `X-Modelwatch-Signature` (below).
//! - The configured `headers` (e.g. `Authorization`).
//!
//! # Signature
//! `X-Modelwatch-Timestamp` is the Unix time of the attempt in whole seconds (decimal).
//! `X-Modelwatch-Signature` is `sha256=` followed by the lowercase hex HMAC-SHA256, keyed with the
//! secret's UTF-8 bytes, of the timestamp's decimal digits, one `.` byte, then the exact body
//! bytes: `HMAC(secret, "1795430011." ++ body)`. A receiver recomputes it over the raw body it
//! received (before any JSON parsing), compares in constant time, and rejects a timestamp more
//! than a few minutes from its own clock (5 minutes in [`verify_signature`]): a captured request
//! replayed later then fails, and the timestamp cannot be changed without breaking the signature.
//! Each retry is signed afresh with its own timestamp.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::channel::{
    Channel, ConfigError, Delivery, Secret, SendError, Validated, check_http_url, check_positive,
};
use crate::http::{HttpClient, check_headers};
use crate::model::{Notification, hex};
use crate::payload;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-modelwatch-signature";
/// The timestamp header (Unix seconds) covered by the signature.
pub const TIMESTAMP_HEADER: &str = "x-modelwatch-timestamp";
/// How far a signed timestamp may be from the receiver's clock in [`verify_signature`].
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

/// The JSON body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Alertmanager's webhook payload, version 4.
    #[default]
    Alertmanager,
    /// A Slack incoming-webhook message (`text` and a coloured attachment listing the alerts).
    Slack,
}

/// `[alerts.channels.NAME]` with `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST: an `http://` or `https://` URL.
    pub url: String,
    /// The body format: `"alertmanager"` (default, Alertmanager's webhook format version 4) or
    /// `"slack"`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra request headers, e.g. `{ Authorization = "Bearer ..." }`. `Content-Type`,
    /// `Idempotency-Key` and the signature headers are set by the channel and cannot be set here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long one request may take in all (connect, send, answer), e.g. `"10s"`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// When set, every request is signed: `X-Modelwatch-Timestamp` carries the Unix time in
    /// seconds and `X-Modelwatch-Signature: sha256=<hex>` the HMAC-SHA256, keyed with this
    /// secret, of the timestamp, a dot and the exact body bytes.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// At most this many alerts per request (the rest are counted in `truncatedAlerts`);
    /// 0 = no limit. Only the Alertmanager format truncates.
    #[serde(default)]
    pub max_alerts: usize,
}

/// The default `timeout`: 10 s.
pub fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebhookConfig {
    /// A config for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            format: WebhookFormat::default(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            secret: None,
            max_alerts: 0,
        }
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
        if self.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return Err(ConfigError::Empty { field: "secret" });
        }
        Ok(())
    }
}

/// Delivers notifications by HTTP POST (see the module docs for headers and signature).
#[derive(Debug)]
pub struct WebhookChannel {
    config: WebhookConfig,
    client: HttpClient,
}

impl WebhookChannel {
    /// The channel for a validated config (no I/O: connections are opened per send).
    pub fn build(config: Validated<WebhookConfig>) -> Self {
        let config = config.0;
        Self { client: HttpClient::new(config.timeout), config }
    }

    /// The body this channel sends for `n`.
    pub fn body(&self, n: &Notification) -> Result<Vec<u8>, SendError> {
        match self.config.format {
            WebhookFormat::Alertmanager => payload::alertmanager_webhook(n, self.config.max_alerts),
            WebhookFormat::Slack => payload::slack(n),
        }
        .map_err(SendError::Encode)
    }
}

impl Channel for WebhookChannel {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send(&self, n: &Notification) -> Result<Delivery, SendError> {
        let body = self.body(n)?;
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(self.config.headers.len() + 3);
        headers.extend(self.config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        headers.push(("idempotency-key", &n.idempotency_key));
        let signed;
        if let Some(secret) = &self.config.secret {
            let ts = unix_seconds();
            signed = (ts.to_string(), sign(secret.expose().as_bytes(), ts, &body));
            headers.push((TIMESTAMP_HEADER, &signed.0));
            headers.push((SIGNATURE_HEADER, &signed.1));
        }
        self.client.post_json(&self.config.url, &headers, &body)
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Modelwatch-Signature` value for `body` sent at `timestamp` (Unix seconds):
/// `sha256=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed with `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("sha256={}", hex(&mac(secret, &timestamp.to_string(), body).finalize().into_bytes()))
}

/// Checks a received request: `signature` must be `sha256=<hex>` matching `timestamp` and the raw
/// `body` (compared in constant time), and `timestamp` within [`SIGNATURE_TOLERANCE`] of
/// `now_unix_seconds`. For receivers written in Rust, and the tests.
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_unix_seconds: u64,
) -> bool {
    let Ok(ts) = timestamp.parse::<u64>() else { return false };
    if ts.abs_diff(now_unix_seconds) > SIGNATURE_TOLERANCE.as_secs() {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("sha256=") else { return false };
    let Some(bytes) = unhex(hex_sig) else { return false };
    mac(secret, timestamp, body).verify_slice(&bytes).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip_and_replay_window() {
        let body = br#"{"a":1}"#;
        let sig = sign(b"k", 1_000_000, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify_signature(b"k", "1000000", &sig, body, 1_000_100));
        assert!(!verify_signature(b"k", "1000000", &sig, body, 1_000_000 + 301), "too old");
        assert!(!verify_signature(b"k", "1000001", &sig, body, 1_000_000), "timestamp changed");
        assert!(!verify_signature(b"x", "1000000", &sig, body, 1_000_000), "other key");
        assert!(!verify_signature(b"k", "1000000", &sig, br#"{"a":2}"#, 1_000_000), "body changed");
        assert!(!verify_signature(b"k", "1000000", "sha256=zz", body, 1_000_000));
    }

    /// The HMAC-SHA256 in use matches RFC 4231's test case 2.
    #[test]
    fn hmac_matches_rfc4231() {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn validation_names_fields() {
        assert!(WebhookConfig::new("http://127.0.0.1:9/hook").validate().is_ok());
        let err = WebhookConfig::new("127.0.0.1:9").validate().unwrap_err();
        assert_eq!(err.to_string(), "`url`: '127.0.0.1:9' is not an http(s) URL with a host");
        let mut c = WebhookConfig::new("http://h/");
        c.timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err(), ConfigError::ZeroDuration { field: "timeout" });
        let mut c = WebhookConfig::new("http://h/");
        c.secret = Some(Secret::new(""));
        assert_eq!(c.validate().unwrap_err(), ConfigError::Empty { field: "secret" });
    }

    #[test]
    fn from_toml() {
        let c: WebhookConfig = toml::from_str(
            "url = \"http://h/\"\nformat = \"slack\"\ntimeout = \"2s\"\nsecret = \"s\"\nheaders = { Authorization = \"Bearer t\" }\n",
        )
        .unwrap();
        assert_eq!(c.format, WebhookFormat::Slack);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.headers["Authorization"], "Bearer t");
        assert!(!format!("{c:?}").contains("\"s\""));
    }
}
