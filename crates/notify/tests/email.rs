//! The e-mail channel against a real SMTP server (aiosmtpd through deploy/local/smtp-start.sh)
//! on 127.0.0.1: STARTTLS with a self-signed certificate trusted through `ca_file`, plain SMTP,
//! implicit TLS, AUTH, reply-code classification, and a server that comes up late.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use modelwatch_notify::{
    Channel, ChannelConfig, EmailChannel, EmailConfig, GiveUp, Outcome, Retry, RetryPolicy, Secret,
    SendError, SmtpTls, deliver_with_retry, thread_sleep,
};

use common::{Smtp, parse_mail, sample};

fn config(smtp: &Smtp, tls: SmtpTls) -> EmailConfig {
    let mut c = EmailConfig::new(
        "127.0.0.1",
        "modelwatch alerts <alerts@modelwatch.test>",
        vec!["oncall@example.test".into(), "ML Team <ml@example.test>".into()],
    );
    c.tls = tls;
    c.port = Some(if tls == SmtpTls::Tls { smtp.tls_port } else { smtp.port });
    c.timeout = Duration::from_secs(10);
    if tls != SmtpTls::None {
        c.ca_file = Some(smtp.ca_file());
    }
    c
}

fn build(c: EmailConfig) -> EmailChannel {
    EmailChannel::build(c.validate().unwrap()).unwrap()
}

#[test]
fn starttls_delivers_multipart_with_rendered_values() {
    let Some(smtp) = Smtp::start("starttls_delivers_multipart_with_rendered_values", None) else {
        return;
    };
    // Through the TOML a `[alerts.channels.mail]` section holds.
    let toml = format!(
        "type = \"email\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
         from = \"modelwatch alerts <alerts@modelwatch.test>\"\n\
         to = [\"oncall@example.test\", \"ML Team <ml@example.test>\"]\n\
         subject = \"[{{{{status_upper}}}}] {{{{rule}}}}: {{{{model}}}} {{{{version}}}}\"\n",
        smtp.port,
        smtp.ca_file().display()
    );
    let ch = toml::from_str::<ChannelConfig>(&toml).unwrap().validate().unwrap().build().unwrap();
    assert_eq!(ch.kind(), "email");
    let n = sample("mail");
    let t0 = Instant::now();
    let d = ch.send(&n).unwrap();
    eprintln!("email over STARTTLS to the local server: send took {:?}", t0.elapsed());
    assert_eq!(d.code, 250);
    assert!(d.detail.contains("stored as"), "{d:?}");

    let files = smtp.wait_messages(1, Duration::from_secs(5));
    assert_eq!(files.len(), 1);
    let m = parse_mail(&files[0]);
    assert!(m.headers["X-Test-TLS"].starts_with("TLSv1."), "STARTTLS was used: {:?}", m.headers);
    assert_eq!(m.headers["X-Test-Envelope-From"], "alerts@modelwatch.test");
    assert_eq!(m.headers["X-Test-Envelope-To"], "oncall@example.test, ml@example.test");
    // The group has v2 firing and v1 resolved: `{{version}}` lists both.
    assert_eq!(m.headers["Subject"], "[FIRING] LatencyP99High: fraud v2, v1");
    assert_eq!(m.headers["From"], "modelwatch alerts <alerts@modelwatch.test>");
    assert_eq!(m.headers["To"], "oncall@example.test, ML Team <ml@example.test>");
    assert_eq!(m.headers["X-Modelwatch-Idempotency-Key"], n.idempotency_key);
    assert!(m.headers["Message-ID"].ends_with("@modelwatch>"), "{:?}", m.headers);
    assert_eq!(m.content_type, "multipart/alternative");

    // Plain-text part (default template).
    assert!(
        m.text.starts_with("FIRING: LatencyP99High on model fraud version v2, v1\n"),
        "{}",
        m.text
    );
    assert!(m.text.contains("value 412, 180, threshold 300\n"), "{}", m.text);
    assert!(m.text.contains("Alerts (2):\n- [FIRING] LatencyP99High model=fraud version=v2 value=412 threshold=300 severity=critical since="), "{}", m.text);
    assert!(m.text.contains("summary=p99 latency of fraud v2 is 412 ms\n"), "{}", m.text);
    assert!(
        m.text.contains("- [RESOLVED] LatencyP99High model=fraud version=v1 value=180"),
        "{}",
        m.text
    );
    assert!(m.text.contains("http://modelwatch.test"), "{}", m.text);
    // HTML part.
    assert!(m.html.contains("<p><b>FIRING</b>: LatencyP99High on model <code>fraud</code> version <code>v2, v1</code></p>"), "{}", m.html);
    assert!(m.html.contains("<li><b>FIRING</b> LatencyP99High: model=<code>fraud</code>, version=<code>v2</code>, value=<code>412</code>"), "{}", m.html);
    assert!(m.html.contains("<li><b>RESOLVED</b> LatencyP99High"), "{}", m.html);
}

#[test]
fn plain_smtp_and_implicit_tls() {
    let Some(smtp) = Smtp::start("plain_smtp_and_implicit_tls", None) else { return };
    let mut plain = config(&smtp, SmtpTls::None);
    plain.hello_name = Some("mw-host.example.test".into());
    build(plain).send(&sample("mail")).unwrap();
    build(config(&smtp, SmtpTls::Tls)).send(&sample("mail")).unwrap();
    let files = smtp.wait_messages(2, Duration::from_secs(5));
    assert_eq!(files.len(), 2);
    let tls: Vec<String> =
        files.iter().map(|f| parse_mail(f).headers["X-Test-TLS"].clone()).collect();
    assert_eq!(tls[0], "no");
    assert!(tls[1].starts_with("TLSv1."), "{tls:?}");
}

#[test]
fn auth_over_starttls() {
    let Some(smtp) = Smtp::start("auth_over_starttls", Some("mw:pa55")) else { return };
    let mut c = config(&smtp, SmtpTls::Starttls);
    c.username = Some("mw".into());
    c.password = Some(Secret::new("pa55"));
    build(c.clone()).send(&sample("mail")).unwrap();
    let files = smtp.wait_messages(1, Duration::from_secs(5));
    assert_eq!(parse_mail(&files[0]).headers["X-Test-Auth"], "mw");

    c.password = Some(Secret::new("wrong"));
    let err = build(c).send(&sample("mail")).unwrap_err();
    assert!(matches!(err, SendError::Smtp { code: 535, .. }), "{err:?}");
    assert_eq!(err.retry(), Retry::Permanent);

    // The server requires AUTH: without credentials MAIL is refused permanently.
    let err = build(config(&smtp, SmtpTls::Starttls)).send(&sample("mail")).unwrap_err();
    assert!(matches!(err, SendError::Smtp { code: 530, .. }), "{err:?}");
}

#[test]
fn an_untrusted_certificate_is_a_permanent_tls_error() {
    let Some(smtp) = Smtp::start("an_untrusted_certificate_is_a_permanent_tls_error", None) else {
        return;
    };
    let mut c = config(&smtp, SmtpTls::Starttls);
    c.ca_file = None;
    let err = build(c).send(&sample("mail")).unwrap_err();
    assert!(matches!(err, SendError::Tls(_)), "{err:?}");
    assert_eq!(err.retry(), Retry::Permanent);
    assert!(smtp.wait_messages(1, Duration::from_millis(200)).is_empty());
}

#[test]
fn smtp_reply_codes_are_classified() {
    let Some(smtp) = Smtp::start("smtp_reply_codes_are_classified", None) else { return };
    let mut c = config(&smtp, SmtpTls::Starttls);
    c.to = vec!["defer-me@example.test".into()];
    let err = build(c.clone()).send(&sample("mail")).unwrap_err();
    assert!(
        matches!(&err, SendError::Smtp { code: 451, message } if message.contains("try again later")),
        "{err:?}"
    );
    assert_eq!(err.retry(), Retry::Retryable);

    c.to = vec!["reject-me@example.test".into()];
    let policy = RetryPolicy::default().validate().unwrap();
    let report =
        deliver_with_retry(&build(c), &sample("mail"), &policy, |_| panic!("no retry of a 550"));
    assert!(
        matches!(
            report.outcome,
            Outcome::Failed { reason: GiveUp::Permanent, error: SendError::Smtp { code: 550, .. } }
        ),
        "{report:?}"
    );
    assert_eq!(report.attempts[0].status(), "permanent");
}

/// The server is down at first; a thread starts it 1.5 s later; the retries deliver the email.
#[test]
fn a_server_that_comes_up_later_gets_the_email_after_retries() {
    let dir = common::fresh_dir("mw-smtp-late");
    let (port, tls_port) = (common::free_port(), common::free_port());
    let mut c =
        EmailConfig::new("127.0.0.1", "alerts@modelwatch.test", vec!["oncall@example.test".into()]);
    c.tls = SmtpTls::None; // the certificate does not exist until the server starts
    c.port = Some(port);
    let ch = build(c);
    let starter = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            Smtp::start_at(&dir, port, tls_port, None)
        })
    };
    // Bounded by time, not attempts: the first start on a new machine installs aiosmtpd.
    let policy = RetryPolicy {
        max_attempts: 1_000,
        initial_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_millis(600),
        max_elapsed: Duration::from_secs(60),
    }
    .validate()
    .unwrap();
    let t0 = Instant::now();
    let report = deliver_with_retry(&ch, &sample("mail"), &policy, thread_sleep);
    let started = starter.join().unwrap();
    if let Err(e) = started {
        common::stop_smtp(&dir);
        common::skip_or_fail("a_server_that_comes_up_later_gets_the_email_after_retries", &e);
        return;
    }
    let files = common::wait_messages(&dir, 1, Duration::from_secs(5));
    common::stop_smtp(&dir);
    assert!(report.delivered(), "{report:?}");
    assert!(report.attempts.len() >= 2, "{report:?}");
    assert_eq!(report.attempts[0].status(), "retryable");
    assert!(report.attempts[..report.attempts.len() - 1].iter().all(|a| a.status() == "retryable"));
    assert_eq!(files.len(), 1);
    eprintln!(
        "smtp down then up: delivered on attempt {} after {:?}",
        report.attempts.len(),
        t0.elapsed()
    );
}

/// A server that accepts the connection but never greets: the channel's timeout ends the
/// attempt, and the error is a retryable timeout.
#[test]
fn a_silent_server_times_out_retryably() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let mut c =
        EmailConfig::new("127.0.0.1", "alerts@modelwatch.test", vec!["oncall@example.test".into()]);
    c.tls = SmtpTls::None;
    c.port = Some(port);
    c.timeout = Duration::from_millis(500);
    let t0 = Instant::now();
    let err = build(c).send(&sample("mail")).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, SendError::Timeout(d) if d == Duration::from_millis(500)), "{err:?}");
    assert_eq!(err.retry(), Retry::Retryable);
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(2500), "{took:?}");
    holder.join().unwrap();
}
