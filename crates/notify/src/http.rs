//! The HTTP client the webhook and Alertmanager channels share: one ureq agent per channel, a
//! global timeout per request, no redirects, statuses classified by the caller's rules.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use ureq::http::{HeaderName, HeaderValue};

use crate::channel::{ConfigError, Delivery, SendError};

/// Headers a channel sets itself and a config may not override.
pub(crate) const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "idempotency-key",
    crate::webhook::SIGNATURE_HEADER,
    crate::webhook::TIMESTAMP_HEADER,
];

/// Checks configured headers: valid HTTP names and values, none of the reserved ones.
pub(crate) fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::Header {
                name: name.clone(),
                reason: "not a valid header name",
            });
        }
        if HeaderValue::from_str(value).is_err() {
            return Err(ConfigError::Header {
                name: name.clone(),
                reason: "value has characters HTTP does not allow",
            });
        }
        if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(ConfigError::ReservedHeader { name: name.clone() });
        }
    }
    Ok(())
}

/// A blocking HTTP client with a fixed per-request timeout.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    agent: ureq::Agent,
    timeout: Duration,
}

/// How much of an error response's body is kept for the error message.
const ERROR_BODY_LIMIT: usize = 512;

impl HttpClient {
    /// A client whose every request (connect, send, wait, read) ends after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("modelwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { agent, timeout }
    }

    /// POSTs `body` as JSON with `headers`; 2xx is a [`Delivery`], any other status an
    /// [`SendError::Http`].
    pub(crate) fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Delivery, SendError> {
        let mut req = self.agent.post(url).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).map_err(|e| self.error(e))?;
        let status = resp.status();
        // Read (a bounded part of) the body either way, so the connection can be reused.
        let text =
            resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        if status.is_success() {
            return Ok(Delivery {
                code: status.as_u16(),
                detail: status.canonical_reason().unwrap_or("").to_owned(),
            });
        }
        let mut body = text;
        if body.len() > ERROR_BODY_LIMIT {
            let mut cut = ERROR_BODY_LIMIT;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        Err(SendError::Http { status: status.as_u16(), body: body.trim().to_owned() })
    }

    fn error(&self, e: ureq::Error) -> SendError {
        match e {
            ureq::Error::Timeout(_) => SendError::Timeout(self.timeout),
            ureq::Error::Io(io)
                if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) =>
            {
                SendError::Timeout(self.timeout)
            }
            ureq::Error::Io(io) => SendError::Connect(Box::new(io)),
            e @ (ureq::Error::HostNotFound | ureq::Error::ConnectionFailed) => {
                SendError::Connect(Box::new(e))
            }
            e @ (ureq::Error::Tls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::TlsRequired) => SendError::Tls(Box::new(e)),
            e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_)) => SendError::Message(Box::new(e)),
            e => SendError::Transport(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let h = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(check_headers(&h("Authorization", "Bearer x")).is_ok());
        assert!(matches!(check_headers(&h("bad name", "x")), Err(ConfigError::Header { .. })));
        assert!(matches!(check_headers(&h("X-A", "line\nbreak")), Err(ConfigError::Header { .. })));
        assert_eq!(
            check_headers(&h("Content-Type", "text/plain")),
            Err(ConfigError::ReservedHeader { name: "Content-Type".into() })
        );
        assert!(matches!(
            check_headers(&h("x-modelwatch-signature", "x")),
            Err(ConfigError::ReservedHeader { .. })
        ));
    }
}
