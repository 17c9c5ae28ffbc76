//! End to end on every channel type at once: generated traffic with a latency regression of one
//! canary through `modelwatch run` (restarted while the alert fires) to a signed webhook
//! received by the test, e-mail over STARTTLS to a real SMTP server (aiosmtpd, its self-signed
//! certificate trusted through `ca_file`) and a real Alertmanager (0.25, `resolve_timeout` 1 s),
//! all on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Alertmanager, Instance, Receiver, Regression, Request, Setup, Smtp, free_port, now_ms,
    parse_mail, regression_alerting, rfc3339_ms, services, tsv,
};

const SECRET: &str = "e2e-channels-secret";
const TEST: &str = "a_regression_is_notified_once_on_webhook_email_and_alertmanager";

/// The Alertmanager alert of fraud-detector v42, if it lists it.
fn am_alert(am: &Alertmanager) -> Option<serde_json::Value> {
    am.alerts().into_iter().find(|a| {
        a["labels"]["alertname"] == "canary_p99_regression" && a["labels"]["version"] == "v42"
    })
}

#[test]
fn a_regression_is_notified_once_on_webhook_email_and_alertmanager() {
    let Some(svc) = services("e2e channels") else { return };
    let Some(smtp) = Smtp::start(TEST) else { return };
    // A short resolve_timeout: an alert pushed without re-sends would be gone within seconds.
    let Some(am) = Alertmanager::start(TEST, "1s") else { return };
    let setup = Setup::new(&svc, "e2e_channels", 1);
    let hook = Receiver::start();
    let t_test = Instant::now();

    // Event time: 12 minutes from 15 minutes ago, 20 times faster than wall time (36 s), the
    // canary v42 of fraud-detector 4 times slower from minute 3 to minute 10 (21 s of wall
    // time: long enough for a restart and for Alertmanager's endsAt to pass several times).
    let traffic = Regression {
        start_ms: (now_ms() - 15 * 60_000) / 5_000 * 5_000,
        minutes: 12,
        from_minute: 3,
        until_minute: 10,
        speedup: 20.0,
        rate: 300.0,
        seed: 12,
        chat: true,
    };
    let (regressed_from, regressed_until) =
        (traffic.regressed_from_ms(), traffic.regressed_until_ms());
    let generator = traffic.spawn(&setup);

    let port = free_port();
    let extra = format!(
        r#"{alerting}
[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
secret = "{SECRET}"

[alerts.channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp}
tls = "starttls"
ca_file = "{ca}"
from = "modelwatch <alerts@modelwatch.test>"
to = ["oncall@example.test"]

[alerts.channels.am]
type = "alertmanager"
url = "{am}"
resend_interval = "1s"
resend_ahead = "8s"
"#,
        alerting = regression_alerting(&["hook", "mail", "am"]),
        hook = hook.port,
        smtp = smtp.port,
        ca = smtp.ca_file().display(),
        am = am.url,
    );
    let config = setup.config(port, &extra);
    let mw = Instance::start("e2e_channels", &config, port);
    let firing = |r: &Request| r.json()["status"] == "firing";
    let resolved = |r: &Request| r.json()["status"] == "resolved";
    mw.wait_until("the firing notification", Duration::from_secs(180), |_| {
        hook.notifications().iter().any(firing)
    });
    let fired_at = Instant::now();
    mw.wait_until("the alert in Alertmanager", Duration::from_secs(20), |_| {
        am_alert(&am).is_some()
    });
    let pushed = am_alert(&am).unwrap();
    assert_eq!(pushed["labels"]["model"], "fraud-detector", "{pushed}");
    assert_eq!(pushed["labels"]["severity"], "critical", "{pushed}");
    assert_eq!(pushed["annotations"]["threshold"], "1.5", "{pushed}");
    assert_eq!(
        pushed["generatorURL"].as_str().map(|u| u.starts_with("http://modelwatch.test/")),
        Some(true),
        "{pushed}"
    );
    let am_starts = rfc3339_ms(pushed["startsAt"].as_str().unwrap());

    // Watches Alertmanager until `until` holds: the alert must be listed at every look while
    // modelwatch holds it firing (no resolved state row in the `alerts` table yet).
    let resolved_in_log = || {
        setup
            .sql(
                "SELECT count() FROM {db}.alerts FINAL WHERE version = 'v42' \
                 AND channel = '' AND state = 'resolved'",
            )
            .trim()
            != "0"
    };
    let watch = |mw: &Instance, until: &dyn Fn() -> bool, looks: &mut u32| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !until() {
            assert!(Instant::now() < deadline, "timed out; log:\n{}", mw.log());
            if am_alert(&am).is_none() {
                assert!(
                    resolved_in_log(),
                    "Alertmanager dropped the alert {:?} after modelwatch fired it, while \
                     modelwatch still holds it firing",
                    fired_at.elapsed()
                );
                return;
            }
            *looks += 1;
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let mut looks = 0;
    // A few seconds of firing, then a restart while it fires.
    let t = Instant::now();
    watch(&mw, &|| t.elapsed() > Duration::from_secs(3), &mut looks);
    let status = mw.stop();
    assert!(status.success(), "modelwatch did not stop cleanly: {status:?}");
    let mw = Instance::start("e2e_channels", &config, port);
    watch(&mw, &|| hook.notifications().iter().any(resolved), &mut looks);
    let active_for = fired_at.elapsed();
    eprintln!(
        "Alertmanager listed the alert at each of {looks} looks over {active_for:?} \
         (resolve_timeout 1s, resend_ahead 8s, a restart in between)"
    );
    assert!(active_for > Duration::from_secs(10), "{active_for:?}");
    // Resolved in Alertmanager once modelwatch resolved it.
    mw.wait_until("the alert resolved in Alertmanager", Duration::from_secs(20), |_| {
        am_alert(&am).is_none()
    });
    mw.wait_until("the resolved e-mail", Duration::from_secs(30), |_| smtp.messages().len() >= 2);
    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
    // Everything is consumed (idle_timeout closes the last windows); nothing more may arrive.
    std::thread::sleep(Duration::from_secs(8));

    // The webhook: one firing and one resolved notification, signed, with the right labels.
    let got = hook.notifications();
    let summary: Vec<String> = got
        .iter()
        .map(|r| {
            let j = r.json();
            format!("{} {}", j["status"], j["commonLabels"])
        })
        .collect();
    assert_eq!(got.len(), 2, "one firing and one resolved notification: {summary:#?}");
    let (fire, resolve) = (&got[0], &got[1]);
    assert!(firing(fire) && resolved(resolve), "{summary:#?}");
    let mut starts = Vec::new();
    for r in [fire, resolve] {
        let now_s = (now_ms() / 1000) as u64;
        let (ts, sig) =
            (&r.headers["x-modelwatch-timestamp"], &r.headers["x-modelwatch-signature"]);
        assert!(
            modelwatch_notify::verify_signature(SECRET.as_bytes(), ts, sig, &r.body, now_s),
            "bad signature {sig} at {ts}"
        );
        let j = r.json();
        assert_eq!(j["receiver"], "hook");
        let alerts = j["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{j}");
        let a = &alerts[0];
        assert_eq!(a["labels"]["alertname"], "canary_p99_regression");
        assert_eq!(a["labels"]["model"], "fraud-detector");
        assert_eq!(a["labels"]["version"], "v42");
        assert_eq!(a["labels"]["severity"], "critical");
        starts.push(rfc3339_ms(a["startsAt"].as_str().unwrap()));
    }
    assert_eq!(starts[0], starts[1], "one episode");
    assert_eq!(am_starts, starts[0], "Alertmanager has the episode's startsAt");
    assert!(
        (regressed_from..regressed_from + 60_000).contains(&starts[0]),
        "startsAt {} vs regression at {regressed_from}",
        starts[0]
    );
    let a = &fire.json()["alerts"][0];
    let value: f64 = a["annotations"]["value"].as_str().unwrap().parse().unwrap();
    assert!((2.0..8.0).contains(&value), "p99 ratio {value} of a 4x regression");
    let ends = rfc3339_ms(resolve.json()["alerts"][0]["endsAt"].as_str().unwrap());
    assert!(
        (regressed_until..regressed_until + 90_000).contains(&ends),
        "endsAt {ends} vs regression until {regressed_until}"
    );

    // E-mail: two messages over STARTTLS naming the model and version, firing then resolved.
    let files = smtp.messages();
    assert_eq!(files.len(), 2, "one firing and one resolved e-mail: {files:?}");
    let mails: Vec<_> = files.iter().map(|f| parse_mail(f)).collect();
    for (m, status) in mails.iter().zip(["FIRING", "RESOLVED"]) {
        assert!(m.headers["X-Test-TLS"].starts_with("TLSv1."), "STARTTLS: {:?}", m.headers);
        assert_eq!(m.headers["X-Test-Envelope-To"], "oncall@example.test");
        assert_eq!(
            m.headers["Subject"],
            format!("[{status}] canary_p99_regression fraud-detector v42")
        );
        assert!(
            m.text.starts_with(&format!(
                "{status}: canary_p99_regression on model fraud-detector version v42\n"
            )),
            "{}",
            m.text
        );
        assert!(m.text.contains("threshold 1.5"), "{}", m.text);
        assert!(m.html.contains("<code>fraud-detector</code>"), "{}", m.html);
        assert!(m.html.contains("<code>v42</code>"), "{}", m.html);
    }
    assert!(
        mails[0].text.contains(&format!("value {}", a["annotations"]["value"].as_str().unwrap()))
    );

    // Alertmanager got the same alert: the same startsAt and labels (checked while it fired
    // through `am_alert`), gone from its alerts once resolved; modelwatch re-sent it.
    assert!(
        mw.metric("modelwatch_notifications_total{channel=\"am\",outcome=\"resent\"}") >= 1.0,
        "the second run re-sent the firing alert to Alertmanager"
    );

    // The alerts table: one episode of fraud-detector v42, nothing else firing, and exactly
    // one firing and one resolved delivery per channel (re-sends to Alertmanager are counted,
    // not logged).
    let rows = tsv(&setup.sql(
        "SELECT model, version, state, channel, delivery_status FROM {db}.alerts FINAL \
         ORDER BY fingerprint, seq, channel, attempt",
    ));
    let states: Vec<String> = rows
        .iter()
        .filter(|r| r[3].is_empty())
        .map(|r| format!("{}/{} {}", r[0], r[1], r[2]))
        .collect();
    let ours = |s: &str| states.iter().filter(|x| *x == &format!("fraud-detector/v42 {s}")).count();
    assert_eq!((ours("firing"), ours("resolved")), (1, 1), "{states:#?}");
    assert!(
        !states.iter().any(|s| !s.starts_with("fraud-detector/v42") && s.ends_with(" firing")),
        "a healthy version fired: {states:#?}"
    );
    let mut deliveries: Vec<String> = rows
        .iter()
        .filter(|r| !r[3].is_empty())
        .map(|r| format!("{}/{} {} {} {}", r[0], r[1], r[2], r[3], r[4]))
        .collect();
    deliveries.sort();
    assert_eq!(
        deliveries,
        [
            "fraud-detector/v42 firing alertmanager:am sent",
            "fraud-detector/v42 firing email:mail sent",
            "fraud-detector/v42 firing webhook:hook sent",
            "fraud-detector/v42 resolved alertmanager:am sent",
            "fraud-detector/v42 resolved email:mail sent",
            "fraud-detector/v42 resolved webhook:hook sent",
        ],
        "{rows:#?}"
    );
    let status = mw.stop();
    assert!(status.success(), "{status:?}");
    eprintln!("{TEST}: {:?} in all", t_test.elapsed());
}
