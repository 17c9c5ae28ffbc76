//! End to end: a crash between sending a notification and recording its delivery, forced at
//! exactly that point by the test-only fail point (`MODELWATCH_TEST_FAILPOINT=abort-after-send`,
//! the process aborts right after the webhook answered 200). The restarted instance repeats
//! that one notification, with the same `Idempotency-Key` (a receiver can drop it), and nothing
//! else: the resolution goes out once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Instance, Receiver, Regression, Request, Setup, free_port, now_ms, regression_alerting,
    services, tsv,
};

#[test]
fn a_crash_between_sending_and_recording_repeats_one_notification_with_its_key() {
    let Some(svc) = services("e2e crash") else { return };
    let setup = Setup::new(&svc, "e2e_crash", 1);
    let hook = Receiver::start();

    // 12 minutes of event time from 15 minutes ago, 10 times faster than real time; the
    // canary v42 of fraud-detector 4 times slower from minute 3 to minute 9 (the restart,
    // 12 s of wall time after the crash, comes while it still fires).
    let traffic = Regression {
        start_ms: (now_ms() - 15 * 60_000) / 5_000 * 5_000,
        minutes: 12,
        from_minute: 3,
        until_minute: 9,
        speedup: 10.0,
        rate: 200.0,
        seed: 5,
        chat: false,
    };
    let generator = traffic.spawn(&setup);

    let port = free_port();
    let extra = format!(
        r#"{alerting}
[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"

# A short session, so the aborted member leaves the group in seconds.
[kafka.properties]
"session.timeout.ms" = "10000"
"heartbeat.interval.ms" = "1000"
"max.poll.interval.ms" = "15000"
"#,
        alerting = regression_alerting(&["hook"]),
        hook = hook.port
    );
    let config = setup.config(port, &extra);
    let status_of = |r: &Request| r.json()["status"].as_str().unwrap_or_default().to_owned();
    let count =
        |status: &str| hook.notifications().iter().filter(|r| status_of(r) == status).count();

    // Armed: the first notification is sent, then the process aborts before recording it.
    let mw = Instance::start_with_env(
        "e2e_crash",
        &config,
        port,
        &[("MODELWATCH_TEST_FAILPOINT", modelwatch::alerting::ABORT_AFTER_SEND)],
    );
    mw.wait_until("the firing notification", Duration::from_secs(180), |_| count("firing") > 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mw.is_running() {
        assert!(Instant::now() < deadline, "the fail point did not abort the process");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mw.log().contains("fail point abort-after-send"), "{}", mw.log());
    mw.kill(); // reaps it
    // tansu does not finish a rebalance that a member joins before the dead member's session
    // (10 s) expired: wait that out.
    std::thread::sleep(Duration::from_secs(12));
    let delivered = |state: &str| {
        tsv(&setup.sql(&format!(
            "SELECT count() FROM {{db}}.alerts FINAL WHERE channel != '' AND state = '{state}' \
             AND delivery_status = 'sent'"
        )))[0][0]
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(delivered("firing"), 0, "the delivery was recorded before the crash");

    // Restarted: the firing notification is repeated once, then the resolution.
    let mw = Instance::start("e2e_crash_restarted", &config, port);
    mw.wait_until("the resolved notification", Duration::from_secs(180), |_| count("resolved") > 0);
    let report = generator.join().unwrap();
    assert_eq!(report.failed, 0);
    std::thread::sleep(Duration::from_secs(8));

    let got = hook.notifications();
    let summary: Vec<String> =
        got.iter().map(|r| format!("{} {}", status_of(r), r.headers["idempotency-key"])).collect();
    assert_eq!(got.len(), 3, "the firing notification twice, the resolution once: {summary:#?}");
    assert_eq!(
        got.iter().map(status_of).collect::<Vec<_>>(),
        ["firing", "firing", "resolved"],
        "{summary:#?}"
    );
    assert_eq!(
        got[0].headers["idempotency-key"], got[1].headers["idempotency-key"],
        "the repeat carries the original's key: {summary:#?}"
    );
    assert_ne!(got[1].headers["idempotency-key"], got[2].headers["idempotency-key"]);
    assert_eq!(
        got[0].json()["alerts"],
        got[1].json()["alerts"],
        "the same alert, the same episode"
    );
    assert_eq!((delivered("firing"), delivered("resolved")), (1, 1));
    let status = mw.stop();
    assert!(status.success(), "{status:?}");
}
