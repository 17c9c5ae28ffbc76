//! The [`Channel`] trait, the configuration of every channel type, and the errors.
//!
//! Lifecycle: a `[alerts.channels.NAME]` section deserializes into a [`ChannelConfig`];
//! [`ChannelConfig::validate`] checks it without any I/O and returns a [`Validated`] config;
//! [`Validated::build`] does the I/O that building needs (reading a CA certificate file) and
//! returns an [`AnyChannel`]. Sending is blocking: the caller runs channels on a thread of their
//! own (or `spawn_blocking`), never on an async worker, and wraps `send` in
//! [`deliver_with_retry`](crate::deliver_with_retry).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::alertmanager::{AlertmanagerChannel, AlertmanagerConfig};
use crate::email::{EmailChannel, EmailConfig};
use crate::model::Notification;
use crate::template::TemplateError;
use crate::webhook::{WebhookChannel, WebhookConfig};

/// What a receiver answered to a successful delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The HTTP status (2xx) or the SMTP reply code (250).
    pub code: u16,
    /// The receiver's answer, shortened to a line (the HTTP reason or the SMTP reply text).
    pub detail: String,
}

/// Whether a failed send is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retry {
    /// The same request may succeed later: connection refused or reset, timeout, HTTP 5xx, 408,
    /// 429, SMTP 4xx.
    Retryable,
    /// Repeating it cannot help: HTTP 4xx, SMTP 5xx, an address or TLS certificate problem.
    Permanent,
}

/// A failed send, with its retry classification ([`SendError::retry`]).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The payload could not be encoded.
    #[error("failed to encode the payload")]
    Encode(#[source] serde_json::Error),
    /// No answer within the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection could not be opened or broke (refused, reset, DNS).
    #[error("connection to the receiver failed")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The receiver answered with a non-2xx HTTP status.
    #[error("receiver answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the response body (at most 512 bytes).
        body: String,
    },
    /// The SMTP server answered with a negative reply (4xx: transient, 5xx: permanent).
    #[error("smtp server answered {code}: {message}")]
    Smtp {
        /// The SMTP reply code.
        code: u16,
        /// The reply's text.
        message: String,
    },
    /// A TLS handshake or certificate error (an untrusted certificate does not fix itself).
    #[error("tls failed")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The message could not be built (an address or header the server would never accept).
    #[error("invalid message")]
    Message(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other transport error (protocol violations by the receiver), treated as retryable.
    #[error("transport error")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SendError {
    /// Whether repeating the send may help. Connect errors, timeouts, HTTP 5xx, 408 and 429,
    /// SMTP 4xx and protocol errors are retryable; HTTP 4xx, SMTP 5xx, TLS, encoding and message
    /// errors are permanent.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Timeout(_) | Self::Connect(_) | Self::Transport(_) => Retry::Retryable,
            Self::Http { status, .. } if *status >= 500 || *status == 408 || *status == 429 => {
                Retry::Retryable
            }
            Self::Smtp { code, .. } if (400..500).contains(code) => Retry::Retryable,
            Self::Http { .. }
            | Self::Smtp { .. }
            | Self::Encode(_)
            | Self::Tls(_)
            | Self::Message(_) => Retry::Permanent,
        }
    }

    /// The HTTP status or SMTP code the receiver answered, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            Self::Smtp { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A delivery channel. `send` is blocking and makes exactly one attempt (retries are the
/// caller's, through [`deliver_with_retry`](crate::deliver_with_retry)); it is safe to call from
/// several threads at once.
pub trait Channel: Send + Sync + fmt::Debug {
    /// `"webhook"`, `"email"` or `"alertmanager"`.
    fn kind(&self) -> &'static str;

    /// Delivers `n` once.
    fn send(&self, n: &Notification) -> Result<Delivery, SendError>;

    /// How often the caller must send a still-firing group again so the receiver does not
    /// resolve it by itself; `None` (the default) when the receiver keeps alerts until told.
    fn resend_interval(&self) -> Option<Duration> {
        None
    }
}

/// A secret string (HMAC key, SMTP password): its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configuration error; `field` names the config key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required value is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// The key.
        field: &'static str,
    },
    /// A value outside what the field accepts.
    #[error("`{field}` {reason}")]
    Invalid {
        /// The key.
        field: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// A URL that is not `http://` or `https://` with a host.
    #[error("`{field}`: '{value}' is not an http(s) URL with a host")]
    Url {
        /// The key.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A duration that must be positive is zero.
    #[error("`{field}` must be longer than zero")]
    ZeroDuration {
        /// The key.
        field: &'static str,
    },
    /// A header name or value HTTP does not allow.
    #[error("`headers`: invalid header '{name}': {reason}")]
    Header {
        /// The header's name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A header the channel sets itself (content type, signature, idempotency key).
    #[error("`headers`: '{name}' is set by the channel and cannot be configured")]
    ReservedHeader {
        /// The header's name.
        name: String,
    },
    /// An e-mail address that does not parse.
    #[error("`{field}`: invalid address '{value}': {reason}")]
    Address {
        /// The key (`from` or `to`).
        field: &'static str,
        /// The value given.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A template that does not parse.
    #[error("`{field}`: invalid template")]
    Template {
        /// The key.
        field: &'static str,
        /// The template error.
        #[source]
        source: TemplateError,
    },
    /// `username` without `password` or the other way round.
    #[error("`username` and `password` must be set together")]
    IncompleteCredentials,
    /// Credentials over an unencrypted connection would travel in the clear.
    #[error(
        "`username`/`password` need `tls = \"starttls\"` or `\"tls\"` (they would travel in the clear)"
    )]
    CredentialsWithoutTls,
    /// `ca_file` with `tls = "none"` would never be used.
    #[error("`ca_file` is set but `tls = \"none\"`")]
    CaFileWithoutTls,
    /// `resend_ahead` must exceed `resend_interval`, or a firing alert expires between re-sends.
    #[error(
        "`resend_ahead` ({resend_ahead:?}) must be longer than `resend_interval` ({resend_interval:?})"
    )]
    ResendAheadTooShort {
        /// The configured `resend_ahead`.
        resend_ahead: Duration,
        /// The configured `resend_interval`.
        resend_interval: Duration,
    },
    /// A retry policy whose backoff bounds are inverted.
    #[error("`max_backoff` ({max:?}) must not be shorter than `initial_backoff` ({initial:?})")]
    BackoffBounds {
        /// `initial_backoff`.
        initial: Duration,
        /// `max_backoff`.
        max: Duration,
    },
}

/// An error building a validated channel (I/O at build time).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config is invalid (only when it was changed after validation).
    #[error("invalid channel config")]
    Config(#[source] ConfigError),
    /// The CA certificate file could not be read.
    #[error("`ca_file`: cannot read {path}")]
    ReadCaFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA certificate file holds no usable PEM certificate.
    #[error("`ca_file`: {path} holds no valid PEM certificate")]
    InvalidCaFile {
        /// The file.
        path: String,
    },
    /// The TLS configuration could not be built.
    #[error("cannot build the tls configuration")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A config that passed validation: only [`ChannelConfig::validate`] (and the per-type
/// `validate` functions) make one, so a channel is never built from an unchecked config.
#[derive(Debug, Clone)]
pub struct Validated<T>(pub(crate) T);

impl<T> std::ops::Deref for Validated<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One `[alerts.channels.NAME]` section: `type = "webhook" | "email" | "alertmanager"` and that
/// type's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChannelConfig {
    /// HTTP POST of JSON ([`WebhookConfig`]).
    Webhook(WebhookConfig),
    /// E-mail over SMTP ([`EmailConfig`]).
    Email(EmailConfig),
    /// Push to an Alertmanager's `/api/v2/alerts` ([`AlertmanagerConfig`]).
    Alertmanager(AlertmanagerConfig),
}

impl ChannelConfig {
    /// Checks every field without I/O.
    pub fn validate(self) -> Result<Validated<Self>, ConfigError> {
        match &self {
            Self::Webhook(c) => c.check()?,
            Self::Email(c) => c.check()?,
            Self::Alertmanager(c) => c.check()?,
        }
        Ok(Validated(self))
    }
}

impl Validated<ChannelConfig> {
    /// Builds the channel (the e-mail channel reads its `ca_file` here).
    pub fn build(self) -> Result<AnyChannel, BuildError> {
        Ok(match self.0 {
            ChannelConfig::Webhook(c) => AnyChannel::Webhook(WebhookChannel::build(Validated(c))),
            ChannelConfig::Email(c) => AnyChannel::Email(EmailChannel::build(Validated(c))?),
            ChannelConfig::Alertmanager(c) => {
                AnyChannel::Alertmanager(AlertmanagerChannel::build(Validated(c)))
            }
        })
    }
}

/// Any of the channel types.
#[derive(Debug)]
pub enum AnyChannel {
    /// A webhook.
    Webhook(WebhookChannel),
    /// E-mail.
    Email(EmailChannel),
    /// An Alertmanager.
    Alertmanager(AlertmanagerChannel),
}

impl AnyChannel {
    fn inner(&self) -> &dyn Channel {
        match self {
            Self::Webhook(c) => c,
            Self::Email(c) => c,
            Self::Alertmanager(c) => c,
        }
    }
}

impl Channel for AnyChannel {
    fn kind(&self) -> &'static str {
        self.inner().kind()
    }

    fn send(&self, n: &Notification) -> Result<Delivery, SendError> {
        self.inner().send(n)
    }

    fn resend_interval(&self) -> Option<Duration> {
        self.inner().resend_interval()
    }
}

/// Checks that `value` is an `http://` or `https://` URL with a host.
pub(crate) fn check_http_url(field: &'static str, value: &str) -> Result<(), ConfigError> {
    let err = || ConfigError::Url { field, value: value.to_owned() };
    let rest =
        value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")).ok_or_else(err)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || value.chars().any(char::is_whitespace) {
        return Err(err());
    }
    Ok(())
}

/// Checks a zero duration.
pub(crate) fn check_positive(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() { Err(ConfigError::ZeroDuration { field }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification() {
        let http = |status| SendError::Http { status, body: String::new() };
        let smtp = |code| SendError::Smtp { code, message: String::new() };
        assert_eq!(http(500).retry(), Retry::Retryable);
        assert_eq!(http(503).retry(), Retry::Retryable);
        assert_eq!(http(429).retry(), Retry::Retryable);
        assert_eq!(http(408).retry(), Retry::Retryable);
        assert_eq!(http(400).retry(), Retry::Permanent);
        assert_eq!(http(404).retry(), Retry::Permanent);
        assert_eq!(smtp(451).retry(), Retry::Retryable);
        assert_eq!(smtp(550).retry(), Retry::Permanent);
        assert_eq!(SendError::Timeout(Duration::from_secs(1)).retry(), Retry::Retryable);
        assert_eq!(http(502).code(), Some(502));
    }

    #[test]
    fn urls() {
        assert!(check_http_url("url", "http://127.0.0.1:9093").is_ok());
        assert!(check_http_url("url", "https://user:pw@hooks.example/x?y").is_ok());
        for bad in ["", "ftp://x", "http://", "http:///path", "http://:80/", "http://a b/"] {
            assert_eq!(
                check_http_url("url", bad),
                Err(ConfigError::Url { field: "url", value: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_debug_hides_it() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn config_from_toml_by_type() {
        let c: ChannelConfig =
            toml::from_str("type = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n").unwrap();
        assert!(matches!(c, ChannelConfig::Webhook(_)));
        let err =
            toml::from_str::<ChannelConfig>("type = \"webhook\"\nurl = \"http://x/\"\nurll = 1\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `urll`"), "{err}");
        let err = toml::from_str::<ChannelConfig>("type = \"pager\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown variant `pager`"), "{err}");
    }
}
