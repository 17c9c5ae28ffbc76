//! End to end: failing receivers through `modelwatch run`. A webhook receiver answers 500 three
//! times and then 200; the SMTP server is down when the alert fires and comes up 10 seconds
//! later. Both get the notification on a retry, every attempt is a row of the `alerts` table,
//! and meanwhile the pipeline keeps writing to ClickHouse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Instance, Receiver, Regression, Setup, Smtp, free_port, now_ms, parse_mail,
    regression_alerting, services, tsv,
};

#[test]
fn a_failing_webhook_and_a_late_smtp_server_get_the_alert_while_events_flow() {
    let Some(svc) = services("e2e retry") else { return };
    let Some(smtp) = Smtp::start("e2e retry") else { return };
    smtp.stop(); // down when the alert fires
    let setup = Setup::new(&svc, "e2e_retry", 1);
    let hook = Receiver::start_failing(3);

    // 12 minutes of event time from 15 minutes ago at 10 times real time (72 s); the canary
    // v42 of fraud-detector 4 times slower from minute 2 on.
    let traffic = Regression {
        start_ms: (now_ms() - 15 * 60_000) / 5_000 * 5_000,
        minutes: 12,
        from_minute: 2,
        until_minute: 60,
        speedup: 10.0,
        rate: 200.0,
        seed: 9,
        chat: false,
    };
    let generator = traffic.spawn(&setup);

    let port = free_port();
    let extra = format!(
        r#"{alerting}
[alerts.retry]
max_attempts = 30
initial_backoff = "500ms"
max_backoff = "2s"
max_elapsed = "2m"

[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"

[alerts.channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "modelwatch <alerts@modelwatch.test>"
to = ["oncall@example.test"]
"#,
        alerting = regression_alerting(&["hook", "mail"]),
        hook = hook.port,
        smtp = smtp.port,
    );
    let config = setup.config(port, &extra);
    let mw = Instance::start("e2e_retry", &config, port);
    let panes =
        || tsv(&setup.sql("SELECT count() FROM {db}.pane_stats"))[0][0].parse::<u64>().unwrap();

    // The first (failing) webhook attempt: the alert fired.
    mw.wait_until("the first webhook attempt", Duration::from_secs(120), |_| {
        !hook.notifications().is_empty()
    });
    let fired = Instant::now();
    let panes_at_fire = panes();
    mw.wait_until("the webhook's fourth attempt", Duration::from_secs(30), |_| {
        hook.notifications().len() >= 4
    });
    // The SMTP server stays down for 10 s; events keep flowing meanwhile.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(fired.elapsed()));
    let panes_during = panes();
    assert!(
        panes_during > panes_at_fire,
        "no pane written while the receivers failed: {panes_at_fire} -> {panes_during}"
    );
    assert!(smtp.messages().is_empty());
    smtp.start_again();
    mw.wait_until("the e-mail", Duration::from_secs(30), |_| !smtp.messages().is_empty());
    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
    assert!(panes() > panes_during, "the pipeline went on");

    // The webhook: three 500s, then the 200; one notification, so one idempotency key.
    let got = hook.notifications();
    assert_eq!(got.len(), 4, "nothing after the delivered attempt (the alert still fires)");
    let key = &got[0].headers["idempotency-key"];
    assert!(got.iter().all(|r| &r.headers["idempotency-key"] == key));
    assert!(got.iter().all(|r| r.json()["status"] == "firing"));
    // The e-mail: one message, about the regression.
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = parse_mail(&mails[0]);
    let subject = &mail.headers["Subject"];
    assert!(subject.contains("fraud-detector") && subject.contains("v42"), "{mail:?}");

    // Every attempt is a row: webhook 1-3 failed, 4 sent; e-mail failed until it was sent.
    let rows = tsv(&setup.sql(
        "SELECT channel, attempt, delivery_status FROM {db}.alerts FINAL \
         WHERE channel != '' ORDER BY channel, attempt",
    ));
    let of = |c: &str| -> Vec<(u32, String)> {
        rows.iter().filter(|r| r[0] == c).map(|r| (r[1].parse().unwrap(), r[2].clone())).collect()
    };
    let hook_rows = of("webhook:hook");
    assert_eq!(
        hook_rows,
        [(1, "failed".into()), (2, "failed".into()), (3, "failed".into()), (4, "sent".into())]
    );
    let mail_rows = of("email:mail");
    assert!(mail_rows.len() >= 3, "several attempts while the server was down: {mail_rows:?}");
    let (last, failed) = mail_rows.split_last().unwrap();
    assert_eq!(last.1, "sent", "{mail_rows:?}");
    assert!(failed.iter().all(|r| r.1 == "failed"), "{mail_rows:?}");
    assert!(
        mw.metric("modelwatch_notification_attempts_total{channel=\"mail\",outcome=\"failed\"}")
            >= 2.0
    );
    let status = mw.stop();
    assert!(status.success(), "{status:?}");
}
