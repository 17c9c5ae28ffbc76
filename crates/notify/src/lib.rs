//! Alert delivery channels of modelwatch: webhook, e-mail and Alertmanager.
//!
//! The rule engine groups alerts into a [`Notification`] and records its idempotency key in the
//! alert log; this crate delivers it. Contract:
//! - [`Channel::send`] makes one blocking attempt and classifies a failure as retryable or
//!   permanent ([`SendError::retry`]); run it on a thread of its own, never on an async worker.
//! - [`deliver_with_retry`] retries with exponential backoff and full jitter within an attempt
//!   and time budget and returns every attempt, for the alert log.
//! - Delivery is at least once: a retry after a lost answer, or a crash between sending and
//!   recording, can deliver a notification twice. Every channel passes the idempotency key on
//!   (`Idempotency-Key` header, e-mail `Message-ID`) so receivers can drop the duplicate.
//! - Channels that need firing alerts re-sent (Alertmanager) say how often through
//!   [`Channel::resend_interval`]; re-sending is the caller's job.
//!
//! Configuration: `[alerts.channels.NAME]` deserializes into [`ChannelConfig`];
//! [`ChannelConfig::validate`] checks it without I/O, [`Validated::build`] makes the channel.

mod alertmanager;
mod channel;
mod email;
mod http;
mod model;
pub mod payload;
mod retry;
pub mod template;
mod webhook;

pub use alertmanager::{AlertmanagerChannel, AlertmanagerConfig, default_resend_interval};
pub use channel::{
    AnyChannel, BuildError, Channel, ChannelConfig, ConfigError, Delivery, Retry, Secret,
    SendError, Validated,
};
pub use email::{
    EmailChannel, EmailConfig, SmtpTls, default_html_body, default_subject, default_text_body,
    default_timeout as default_email_timeout,
};
pub use model::{
    Alert, Labels, Notification, Status, ZERO_TIME, annotation, fingerprint, label, rfc3339_ms,
    test_notification,
};
pub use retry::{
    Attempt, AttemptOutcome, DeliveryReport, GiveUp, Outcome, RetryPolicy, deliver_with_retry,
    error_chain, thread_sleep,
};
pub use webhook::{
    SIGNATURE_HEADER, SIGNATURE_TOLERANCE, TIMESTAMP_HEADER, WebhookChannel, WebhookConfig,
    WebhookFormat, default_timeout as default_webhook_timeout, sign, verify_signature,
};
