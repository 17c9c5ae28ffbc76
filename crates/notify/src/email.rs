//! The e-mail channel: one multipart message (plain text and HTML) per notification over SMTP
//! (lettre's blocking transport, rustls), a new connection per send.
//!
//! # TLS
//! - `tls = "none"`: plain SMTP (port 25 by default). Only for a relay on the same host.
//! - `tls = "starttls"` (default): connect in plain text, upgrade with STARTTLS before anything
//!   else is sent, fail when the server does not offer it (port 587 by default).
//! - `tls = "tls"`: TLS from the first byte ("SMTPS", port 465 by default).
//!
//! The server's certificate must chain to one of the Mozilla roots (webpki-roots) or to a
//! certificate in `ca_file`, and name `host` (a DNS name, or an IP address in its
//! subjectAltName). `ca_file` adds trust: a private CA, or a self-signed server certificate
//! itself, as the tests do with the certificate `deploy/local/smtp-start.sh` generates.
//!
//! # Identity of a message
//! The `Message-ID` is derived from the notification's idempotency key (`<hex>@modelwatch`), so a
//! repeated delivery of one notification carries the same id and mail clients can fold the
//! duplicate; the key itself is in the `X-Modelwatch-Idempotency-Key` header.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::channel::{
    BuildError, Channel, ConfigError, Delivery, Secret, SendError, Validated, check_positive,
};
use crate::model::{Notification, hex};
use crate::template::{Escape, Template};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// No encryption (credentials are refused with it).
    None,
    /// Plain connection upgraded with STARTTLS, required.
    #[default]
    Starttls,
    /// Implicit TLS from the first byte.
    Tls,
}

impl SmtpTls {
    /// The usual port: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::Starttls => 587,
            Self::Tls => 465,
        }
    }
}

/// `[alerts.channels.NAME]` with `type = "email"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name or IP address (also the name its certificate must carry).
    pub host: String,
    /// The SMTP port; default by `tls`: 25 (`none`), 587 (`starttls`), 465 (`tls`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `"none"` (plain SMTP), `"starttls"` (default: the plain connection is upgraded with
    /// STARTTLS, and refused if the server does not offer it) or `"tls"` (TLS from the first
    /// byte).
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of extra certificates to trust for the server (a private CA or the server's
    /// self-signed certificate), in addition to the Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user name (PLAIN or LOGIN, whichever the server offers); needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP AUTH password; needs `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, e.g. `"modelwatch <alerts@example.com>"`.
    pub from: String,
    /// The recipients (at least one).
    pub to: Vec<String>,
    /// The subject template (see [`crate::template`] for the placeholders).
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The plain-text body template.
    #[serde(default = "default_text_body")]
    pub text_body: String,
    /// The HTML body template; substituted values are HTML-escaped.
    #[serde(default = "default_html_body")]
    pub html_body: String,
    /// The name sent with EHLO; default `localhost`. Some relays want the sending host's
    /// fully qualified name here.
    #[serde(default)]
    pub hello_name: Option<String>,
    /// How long each SMTP command may take, e.g. `"30s"`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// The default subject: `[FIRING] Rule model version`.
pub fn default_subject() -> String {
    "[{{status_upper}}] {{rule}} {{model}} {{version}}".to_owned()
}

/// The default plain-text body.
pub fn default_text_body() -> String {
    "{{status_upper}}: {{rule}} on model {{model}} version {{version}}\n\
     value {{value}}, threshold {{threshold}}\n\
     {{summary}}\n\n\
     Alerts ({{count}}):\n\
     {{alerts}}\n\
     {{external_url}}\n"
        .to_owned()
}

/// The default HTML body.
pub fn default_html_body() -> String {
    "<html><body>\n\
     <p><b>{{status_upper}}</b>: {{rule}} on model <code>{{model}}</code> version <code>{{version}}</code></p>\n\
     <p>value <b>{{value}}</b>, threshold {{threshold}}</p>\n\
     <p>{{summary}}</p>\n\
     <p>Alerts ({{count}}):</p>\n\
     {{alerts}}\
     <p>{{external_url}}</p>\n\
     </body></html>\n"
        .to_owned()
}

/// The default `timeout`: 30 s.
pub fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The parsed parts of a config.
#[derive(Debug, Clone)]
struct Parsed {
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Template,
    text_body: Template,
    html_body: Template,
}

impl EmailConfig {
    /// A config with the given server, sender and recipients and every other field at its default.
    pub fn new(host: impl Into<String>, from: impl Into<String>, to: Vec<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            tls: SmtpTls::default(),
            ca_file: None,
            username: None,
            password: None,
            from: from.into(),
            to,
            subject: default_subject(),
            text_body: default_text_body(),
            html_body: default_html_body(),
            hello_name: None,
            timeout: default_timeout(),
        }
    }

    /// The port in use: `port`, or the default of `tls`.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.tls.default_port())
    }

    /// Checks every field (no I/O: `ca_file` is read when building).
    pub fn validate(self) -> Result<Validated<Self>, ConfigError> {
        self.check()?;
        Ok(Validated(self))
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.parse().map(|_| ())
    }

    fn parse(&self) -> Result<Parsed, ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::Empty { field: "host" });
        }
        if self.port == Some(0) {
            return Err(ConfigError::Invalid {
                field: "port",
                reason: "must be a TCP port (1-65535)",
            });
        }
        check_positive("timeout", self.timeout)?;
        if self
            .hello_name
            .as_ref()
            .is_some_and(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
        {
            return Err(ConfigError::Invalid {
                field: "hello_name",
                reason: "must be a host name without spaces",
            });
        }
        match (&self.username, &self.password) {
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::IncompleteCredentials),
            (Some(_), Some(_)) if self.tls == SmtpTls::None => {
                return Err(ConfigError::CredentialsWithoutTls);
            }
            _ => {}
        }
        if self.ca_file.is_some() && self.tls == SmtpTls::None {
            return Err(ConfigError::CaFileWithoutTls);
        }
        let mailbox = |field: &'static str, value: &str| {
            value.parse::<Mailbox>().map_err(|e| ConfigError::Address {
                field,
                value: value.to_owned(),
                reason: e.to_string(),
            })
        };
        if self.to.is_empty() {
            return Err(ConfigError::Empty { field: "to" });
        }
        let template = |field: &'static str, src: &str| {
            Template::parse(src).map_err(|source| ConfigError::Template { field, source })
        };
        Ok(Parsed {
            from: mailbox("from", &self.from)?,
            to: self.to.iter().map(|t| mailbox("to", t)).collect::<Result<_, _>>()?,
            subject: template("subject", &self.subject)?,
            text_body: template("text_body", &self.text_body)?,
            html_body: template("html_body", &self.html_body)?,
        })
    }
}

/// Delivers notifications as e-mail over SMTP (see the module docs).
pub struct EmailChannel {
    parsed: Parsed,
    transport: SmtpTransport,
    /// The per-command timeout (reported in [`SendError::Timeout`]).
    timeout: Duration,
    summary: String,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel").field("server", &self.summary).finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// The channel for a validated config: reads `ca_file` and sets up TLS (no connection yet).
    pub fn build(config: Validated<EmailConfig>) -> Result<Self, BuildError> {
        let config = config.0;
        let parsed = config.parse().map_err(BuildError::Config)?;
        let port = config.effective_port();
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(config.host.clone());
                if let Some(path) = &config.ca_file {
                    let pem = std::fs::read(path).map_err(|source| BuildError::ReadCaFile {
                        path: path.display().to_string(),
                        source,
                    })?;
                    let invalid = || BuildError::InvalidCaFile { path: path.display().to_string() };
                    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                        return Err(invalid());
                    }
                    params = params
                        .add_root_certificate(Certificate::from_pem(&pem).map_err(|_| invalid())?);
                }
                let params = params.build_rustls().map_err(|e| BuildError::Tls(Box::new(e)))?;
                if mode == SmtpTls::Tls { Tls::Wrapper(params) } else { Tls::Required(params) }
            }
        };
        let mut builder = SmtpTransport::builder_dangerous(config.host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some(name) = &config.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let summary = format!("{}:{port} ({:?})", config.host, config.tls);
        Ok(Self { parsed, transport: builder.build(), timeout: config.timeout, summary })
    }

    /// The message this channel sends for `n` (subject, both parts, headers).
    pub fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let p = &self.parsed;
        let subject = p.subject.render(n, Escape::None).replace(['\r', '\n'], " ");
        let id = hex(&Sha256::digest(n.idempotency_key.as_bytes())[..16]);
        let mut b = Message::builder()
            .from(p.from.clone())
            .subject(subject.trim())
            .message_id(Some(format!("<{id}@modelwatch>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Modelwatch-Idempotency-Key"),
                n.idempotency_key.clone(),
            ));
        for to in &p.to {
            b = b.to(to.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(
            p.text_body.render(n, Escape::None),
            p.html_body.render(n, Escape::Html),
        ))
        .map_err(|e| SendError::Message(Box::new(e)))
    }
}

impl Channel for EmailChannel {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send(&self, n: &Notification) -> Result<Delivery, SendError> {
        let msg = self.message(n)?;
        let resp = self.transport.send(&msg).map_err(|e| classify(e, self.timeout))?;
        Ok(Delivery {
            code: u16::from(resp.code()),
            detail: resp.message().collect::<Vec<_>>().join(" "),
        })
    }
}

/// Maps lettre's SMTP error onto [`SendError`]: 4xx and 5xx replies keep their code (4xx
/// retryable, 5xx permanent); timeouts (including a socket read timeout) and connection or
/// network errors are retryable; TLS errors (including a handshake that rejects the
/// certificate) and client errors (e.g. the server offers no STARTTLS) are permanent.
fn classify(e: lettre::transport::smtp::Error, timeout: Duration) -> SendError {
    if let Some(code) = e.status() {
        let message = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
        return SendError::Smtp { code: u16::from(code), message };
    }
    // A socket read timeout is WouldBlock on Unix, which lettre's is_timeout does not count.
    if e.is_timeout() || has_io_kind(&e, std::io::ErrorKind::WouldBlock) {
        return SendError::Timeout(timeout);
    }
    // A failed TLS handshake (an untrusted or mismatched certificate) surfaces as a network
    // error whose io::Error is InvalidData: it will fail the same way on every retry.
    if e.is_tls() || e.is_client() || has_io_kind(&e, std::io::ErrorKind::InvalidData) {
        return SendError::Tls(Box::new(e));
    }
    if e.is_response() {
        return SendError::Transport(Box::new(e));
    }
    SendError::Connect(Box::new(e))
}

/// Whether an `io::Error` of `kind` is in `e`'s source chain.
fn has_io_kind(e: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == kind
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_notification;

    fn config() -> EmailConfig {
        EmailConfig::new("127.0.0.1", "modelwatch <mw@example.com>", vec!["ops@example.com".into()])
    }

    #[test]
    fn validation_names_fields() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.to.clear();
        assert_eq!(c.validate().unwrap_err(), ConfigError::Empty { field: "to" });
        let mut c = config();
        c.to.push("not an address".into());
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::Address { field: "to", .. }), "{err}");
        let mut c = config();
        c.username = Some("u".into());
        assert_eq!(c.validate().unwrap_err(), ConfigError::IncompleteCredentials);
        let mut c = config();
        c.tls = SmtpTls::None;
        c.username = Some("u".into());
        c.password = Some(Secret::new("p"));
        assert_eq!(c.validate().unwrap_err(), ConfigError::CredentialsWithoutTls);
        let mut c = config();
        c.tls = SmtpTls::None;
        c.ca_file = Some("/x.pem".into());
        assert_eq!(c.validate().unwrap_err(), ConfigError::CaFileWithoutTls);
        let mut c = config();
        c.hello_name = Some("my host".into());
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "`hello_name` must be a host name without spaces"
        );
        let mut c = config();
        c.port = Some(0);
        assert!(matches!(c.validate().unwrap_err(), ConfigError::Invalid { field: "port", .. }));
        let mut c = config();
        c.subject = "{{modle}}".into();
        assert_eq!(c.validate().unwrap_err().to_string(), "`subject`: invalid template");
    }

    #[test]
    fn ports_by_tls() {
        let mut c = config();
        assert_eq!(c.effective_port(), 587);
        c.tls = SmtpTls::Tls;
        assert_eq!(c.effective_port(), 465);
        c.port = Some(2525);
        assert_eq!(c.effective_port(), 2525);
    }

    #[test]
    fn build_reads_ca_file() {
        let mut c = config();
        c.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            EmailChannel::build(c.validate().unwrap()),
            Err(BuildError::ReadCaFile { .. })
        ));
        let dir = std::env::temp_dir().join(format!("mw-notify-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let mut c = config();
        c.ca_file = Some(bad);
        assert!(matches!(
            EmailChannel::build(c.validate().unwrap()),
            Err(BuildError::InvalidCaFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn message_has_both_parts_and_a_stable_id() {
        let ch = EmailChannel::build(config().validate().unwrap()).unwrap();
        let n = test_notification("ops", "http://mw");
        let raw = String::from_utf8(ch.message(&n).unwrap().formatted()).unwrap();
        assert!(
            raw.contains("Subject: [FIRING] ModelwatchTestAlert modelwatch-test test"),
            "{raw}"
        );
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");
        assert!(raw.contains("Content-Type: text/html"), "{raw}");
        let again = String::from_utf8(ch.message(&n).unwrap().formatted()).unwrap();
        let id = |s: &str| s.lines().find(|l| l.starts_with("Message-ID:")).unwrap().to_owned();
        assert_eq!(id(&raw), id(&again));
    }
}
