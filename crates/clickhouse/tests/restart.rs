//! The writer survives a ClickHouse crash and restart mid-stream: after retries every row is
//! there exactly once (after FINAL). Uses a private server the test starts, kills and restarts
//! (`clickhouse-server` on PATH or `MODELWATCH_TEST_CLICKHOUSE_SERVER`); runs when
//! `MODELWATCH_TEST_CLICKHOUSE_URL` is set, i.e. when integration tests are enabled.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use modelwatch_clickhouse::{RetryPolicy, Store, StoreConfig};
use support::*;

const BATCHES: u32 = 60;
const ROWS_PER_BATCH: u32 = 2_000;
const KILL_AFTER_BATCHES: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)]
async fn writer_survives_a_clickhouse_restart_mid_batch() {
    if test_url("writer_survives_a_clickhouse_restart_mid_batch").is_none() {
        return;
    }
    if !PrivateServer::available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "clickhouse-server not found and CI=true"
        );
        eprintln!("note: skipping the restart test: no clickhouse-server binary");
        return;
    }
    let mut server = PrivateServer::new();
    server.start().await;

    let mut cfg = StoreConfig::new(server.url()).with_database(random_db());
    cfg.writer.retry = RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    cfg.writer.send_timeout = Duration::from_secs(10);
    cfg.writer.end_timeout = Duration::from_secs(10);
    cfg.writer.batch_rows = 1_000; // two requests per batch: a crash can split a batch
    let store = Store::new(cfg).unwrap();
    store.migrate().await.unwrap();
    let writer = store.writer().await.unwrap();

    let done = Arc::new(AtomicU32::new(0));
    let retries = Arc::new(AtomicU32::new(0));
    let caller_retries = Arc::new(AtomicU32::new(0));
    let task = {
        let (done, retries, caller_retries) =
            (done.clone(), retries.clone(), caller_retries.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            for b in 0..BATCHES {
                let rows: Vec<_> = (0..ROWS_PER_BATCH)
                    .map(|j| pane_stats(b * ROWS_PER_BATCH + j, b % 4, 1))
                    .collect();
                // The batch stays ours on error: insert it again until it is acknowledged.
                loop {
                    match writer.insert(&rows).await {
                        Ok(report) => {
                            retries.fetch_add(report.retries, Ordering::Relaxed);
                            break;
                        }
                        Err(e) if e.is_retryable() && Instant::now() < deadline => {
                            caller_retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("batch {b} failed: {e:#?}"),
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let wait_until = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < KILL_AFTER_BATCHES {
        assert!(Instant::now() < wait_until, "the writer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let killed_at = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start().await;
    tokio::time::timeout(Duration::from_secs(240), task).await.unwrap().unwrap();

    let total = u64::from(BATCHES * ROWS_PER_BATCH);
    let db = store.database();
    let fin = count(&store, &format!("SELECT count() FROM `{db}`.pane_stats FINAL")).await;
    let keys = count(
        &store,
        &format!(
            "SELECT uniqExact(model, version, pane_start_ms, source_partition) \
             FROM `{db}`.pane_stats FINAL"
        ),
    )
    .await;
    let raw = count(&store, &format!("SELECT count() FROM `{db}`.pane_stats")).await;
    eprintln!(
        "killed after {killed_at} batches; writer retries {}, caller retries {}; rows raw {raw}, \
         after FINAL {fin}",
        retries.load(Ordering::Relaxed),
        caller_retries.load(Ordering::Relaxed)
    );
    assert!(killed_at < BATCHES, "the server was killed after the last batch");
    assert!(
        retries.load(Ordering::Relaxed) + caller_retries.load(Ordering::Relaxed) > 0,
        "the restart did not hit an insert"
    );
    assert_eq!(fin, total, "every row exactly once after FINAL");
    assert_eq!(keys, total);
    drop_db(&store).await;
}
