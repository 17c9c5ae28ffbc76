//! Integration tests against a real ClickHouse (`MODELWATCH_TEST_CLICKHOUSE_URL`); each test
//! uses its own random database.

// Helpers outside #[test] fns unwrap too: a panic there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use modelwatch_clickhouse::migrations::{MIGRATIONS, latest_version};
use modelwatch_clickhouse::rows::*;
use modelwatch_clickhouse::schema::Table;
use modelwatch_clickhouse::{Error, ErrorClass, RetryPolicy, Store, StoreConfig, Writer};
use modelwatch_core::bins::{BinLayout, FeatureKind, FrozenLayout};
use support::*;

macro_rules! url_or_skip {
    ($name:literal) => {
        match test_url($name) {
            Some(u) => u,
            None => return,
        }
    };
}

async fn migrated(url: &str) -> (Store, Writer) {
    let store = store(url);
    store.migrate().await.unwrap();
    let writer = store.writer().await.unwrap();
    (store, writer)
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let url = url_or_skip!("migrations_are_idempotent");
    let store = store(&url);
    let all: Vec<u32> = (1..=latest_version()).collect();
    assert_eq!(store.migrate().await.unwrap(), all);
    assert_eq!(store.migrate().await.unwrap(), Vec::<u32>::new());
    assert_eq!(store.applied_migrations().await.unwrap(), all);
    let n = count(
        &store,
        &format!("SELECT count() FROM `{}`.schema_migrations FINAL", store.database()),
    )
    .await;
    assert_eq!(n, u64::from(latest_version()));
    store.check_schema().await.unwrap();
    drop_db(&store).await;
}

#[tokio::test]
async fn upgrades_a_database_of_every_earlier_step() {
    let url = url_or_skip!("upgrades_a_database_of_every_earlier_step");
    for k in 1..latest_version() {
        let store = store(&url);
        assert_eq!(store.migrate_to(k).await.unwrap(), (1..=k).collect::<Vec<_>>());
        // The tables (or columns) of the next steps do not exist yet, so no writer.
        let w = store.writer().await;
        assert!(
            matches!(w, Err(Error::MissingTable { .. } | Error::ColumnMismatch { .. })),
            "step {k}"
        );
        assert_eq!(store.migrate().await.unwrap(), (k + 1..=latest_version()).collect::<Vec<_>>());
        store.check_schema().await.unwrap();
        assert_eq!(store.applied_migrations().await.unwrap().len(), MIGRATIONS.len());
        drop_db(&store).await;
    }
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_build() {
    let url = url_or_skip!("refuses_a_database_from_a_newer_build");
    let store = store(&url);
    store.migrate().await.unwrap();
    let db = store.database();
    exec(&store, &format!("INSERT INTO `{db}`.schema_migrations VALUES (999, 'future', now())"))
        .await;
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { found: 999, .. }), "{err}");
    drop_db(&store).await;
}

async fn round_trip<T: Table + Debug + PartialEq>(store: &Store, writer: &Writer, rows: Vec<T>) {
    let report = writer.insert(&rows).await.unwrap();
    assert_eq!(report.rows, rows.len());
    let back = store.read_all::<T>().await.unwrap();
    assert_eq!(back, rows, "table {}", T::TABLE);
}

#[tokio::test]
async fn every_table_round_trips_its_row_type() {
    let url = url_or_skip!("every_table_round_trips_its_row_type");
    let (store, w) = migrated(&url).await;
    round_trip(&store, &w, (0..3).map(|i| pane_stats(i, 0, 1)).collect()).await;
    round_trip(&store, &w, (0..3).map(|i| pane_bins(i, 1)).collect()).await;
    round_trip(&store, &w, (0..3).map(window_stats).collect()).await;
    round_trip(&store, &w, (0..3).map(metric_stats).collect()).await;
    round_trip(&store, &w, (0..3).map(drift_score).collect()).await;
    round_trip(&store, &w, (0..3).map(drift_layout).collect()).await;
    round_trip(&store, &w, (0..3).map(drift_reference).collect()).await;
    round_trip(&store, &w, (0..3).map(canary_verdict).collect()).await;
    round_trip(
        &store,
        &w,
        vec![
            alert("a", 1, "", "firing"),
            alert("a", 1, "email:ops", "firing"),
            alert("b", 2, "", "resolved"),
        ],
    )
    .await;
    round_trip(&store, &w, vec![checkpoint(0, 10, 1), checkpoint(1, 20, 1)]).await;
    round_trip(&store, &w, vec![silence("s1", 5, 1), silence("s2", 6, 1)]).await;
    round_trip(&store, &w, (0..3).map(counter_series).collect()).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn replayed_batch_leaves_one_row_per_key() {
    let url = url_or_skip!("replayed_batch_leaves_one_row_per_key");
    let (store, w) = migrated(&url).await;
    let first: Vec<_> = (0..3_000).map(|i| pane_stats(i, i % 4, 1)).collect();
    let replay: Vec<_> = (0..3_000).map(|i| pane_stats(i, i % 4, 2)).collect();
    let bins: Vec<_> = (0..3_000).map(|i| pane_bins(i, 1)).collect();
    w.insert(&first).await.unwrap();
    w.insert(&replay).await.unwrap();
    w.insert(&bins).await.unwrap();
    w.insert(&bins).await.unwrap();
    let db = store.database();
    // Without FINAL both copies may still be there; with it, one per key.
    let raw = count(&store, &format!("SELECT count() FROM `{db}`.pane_stats")).await;
    assert!(raw >= 3_000);
    let fin = count(&store, &format!("SELECT count() FROM `{db}`.pane_stats FINAL")).await;
    assert_eq!(fin, 3_000);
    let back = store.read_all::<PaneStatsRow>().await.unwrap();
    assert!(back.iter().all(|r| r.written_at_ms == 2), "the later copy wins");

    // The merges are not doubled either.
    let totals = store.pane_totals(Some("fraud-detector"), i64::MIN, i64::MAX).await.unwrap();
    assert_eq!(totals.len(), 3);
    let requests: u64 = totals.iter().map(|t| t.requests).sum();
    assert_eq!(requests, first.iter().map(|r| r.requests).sum::<u64>());
    let v0 = &totals[0];
    assert_eq!(v0.version, "v0");
    assert_eq!(v0.panes, 1_000);
    assert_eq!(v0.latency.0, vec![1000, 2048, 5120]);
    let expect: Vec<u64> = vec![
        5 * 1_000,
        first.iter().filter(|r| r.version == "v0").map(|r| r.latency_bucket_counts[1]).sum(),
        1_000,
    ];
    assert_eq!(v0.latency.1, expect);
    assert_eq!(v0.latency_max_ms, 5.125);
    assert!(v0.ttft.0.is_empty());

    let bt = store.bin_totals(None, i64::MIN, i64::MAX).await.unwrap();
    assert_eq!(bt.len(), 1);
    assert_eq!(bt[0].panes, 3_000);
    assert_eq!(bt[0].counts, vec![3_000, (0..3_000u64).sum(), 9_000]);
    drop_db(&store).await;
}

#[tokio::test]
async fn column_check_refuses_a_table_with_swapped_columns() {
    let url = url_or_skip!("column_check_refuses_a_table_with_swapped_columns");
    let store = store(&url);
    store.migrate().await.unwrap();
    let db = store.database();
    exec(&store, &format!("DROP TABLE `{db}`.checkpoints")).await;
    exec(
        &store,
        &format!(
            "CREATE TABLE `{db}`.checkpoints (`topic` String, `group` String, `partition` Int32, \
             `cutoff_ms` Int64, `resume_offset` Int64, `watermark_ms` Int64, `written_at_ms` UInt64) \
             ENGINE = ReplacingMergeTree(written_at_ms) ORDER BY (`group`, `topic`, `partition`)"
        ),
    )
    .await;
    let err = store.writer().await.unwrap_err();
    match &err {
        Error::ColumnMismatch { table, position, expected, found } => {
            assert_eq!((*table, *position), ("checkpoints", 1));
            assert_eq!(expected, "group String");
            assert_eq!(found, "topic String");
        }
        other => panic!("expected a column mismatch, got {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("checkpoints") && err.to_string().contains("group"));

    // A changed type is refused too.
    exec(&store, &format!("DROP TABLE `{db}`.checkpoints")).await;
    exec(
        &store,
        &format!(
            "CREATE TABLE `{db}`.checkpoints (`group` String, `topic` String, `partition` UInt32, \
             `cutoff_ms` Int64, `resume_offset` Int64, `watermark_ms` Int64, `written_at_ms` UInt64) \
             ENGINE = ReplacingMergeTree(written_at_ms) ORDER BY (`group`, `topic`, `partition`)"
        ),
    )
    .await;
    let err = store.check_table::<CheckpointRow>().await.unwrap_err();
    assert!(matches!(err, Error::ColumnMismatch { position: 3, .. }), "{err}");
    drop_db(&store).await;
}

#[tokio::test]
async fn a_permanent_error_is_reported_without_retrying() {
    let url = url_or_skip!("a_permanent_error_is_reported_without_retrying");
    // Slow retries: if the writer retried, the test would take minutes.
    let mut cfg = StoreConfig::new(&url).with_database(random_db());
    cfg.writer.retry = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_secs(5),
        max_backoff: Duration::from_secs(30),
    };
    let store = Store::new(cfg).unwrap();
    store.migrate_to(0).await.unwrap(); // the database, without tables
    let w = store.writer_unchecked();
    let rows = vec![pane_stats(0, 0, 1)];
    let started = Instant::now();
    let err = w.insert(&rows).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "retried: {:?}", started.elapsed());
    assert!(matches!(err, Error::InsertPermanent { table: "pane_stats", rows: 1, .. }), "{err}");
    assert!(!err.is_retryable());
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("Code: 60"), "{source}");
    // The batch is still ours.
    assert_eq!(rows.len(), 1);
    drop_db(&store).await;
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_bounded() {
    let _ = url_or_skip!("an_unreachable_server_is_retryable_and_bounded");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = StoreConfig::new(format!("http://127.0.0.1:{port}")).with_database(random_db());
    cfg.writer.retry = quick_retry();
    let store = Store::new(cfg).unwrap();
    let err = store.writer_unchecked().insert(&[pane_stats(0, 0, 1)]).await.unwrap_err();
    assert!(matches!(err, Error::InsertRetriesExhausted { attempts: 5, .. }), "{err}");
    assert!(err.is_retryable());
    assert!(store.migrate().await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn restore_reads() {
    let url = url_or_skip!("restore_reads");
    let (store, w) = migrated(&url).await;

    // Checkpoints: the latest write per partition wins.
    w.insert(&[checkpoint(0, 10, 1), checkpoint(1, 20, 1)]).await.unwrap();
    w.insert(&[checkpoint(0, 15, 2)]).await.unwrap();
    let cps = store.checkpoints("modelwatch").await.unwrap();
    assert_eq!(
        cps.iter().map(|c| (c.partition, c.resume_offset)).collect::<Vec<_>>(),
        vec![(0, 15), (1, 20)]
    );
    assert!(store.checkpoints("other").await.unwrap().is_empty());

    // Frozen layouts decode into the core's types.
    let frozen = FrozenLayout {
        feature: "amount".into(),
        kind: FeatureKind::Numeric,
        layout: BinLayout::Numeric { lower: 0.0, interior: vec![1.5, 7.25], upper: 10.0 },
        frozen_at_ms: 42,
        frozen_at: Some((3_000_001, 1234)),
    };
    w.insert(&[DriftLayoutRow::from_frozen("m", &frozen, 1)]).await.unwrap();
    assert_eq!(store.drift_layouts().await.unwrap(), vec![("m".to_owned(), frozen)]);

    // Reference snapshots: a later snapshot replaces the earlier one.
    let mut snap = modelwatch_core::tracker::ReferenceSnapshot {
        model: "m".into(),
        version: "v1".into(),
        start_ms: 0,
        end_ms: 1_800_000,
        complete: false,
        features: vec![("amount".into(), FeatureKind::Numeric, vec![1, 2, 3, 4, 0])],
    };
    w.insert(&DriftReferenceRow::from_snapshot(&snap, 1)).await.unwrap();
    snap.complete = true;
    snap.features[0].2 = vec![2, 4, 6, 8, 1];
    w.insert(&DriftReferenceRow::from_snapshot(&snap, 2)).await.unwrap();
    assert_eq!(store.drift_references().await.unwrap(), vec![snap]);

    // Alert log and latest state per fingerprint.
    w.insert(&[
        alert("a", 1, "", "pending"),
        alert("a", 2, "", "firing"),
        alert("a", 2, "email:ops", "firing"),
        alert("b", 1, "", "firing"),
        alert("b", 3, "", "resolved"),
    ])
    .await
    .unwrap();
    let log = store.alert_log(0).await.unwrap();
    assert_eq!(log.len(), 5);
    let latest = store.latest_alert_states().await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|a| (a.fingerprint.as_str(), a.seq, a.state.as_str()))
            .collect::<Vec<_>>(),
        vec![("a", 2, "firing"), ("b", 3, "resolved")]
    );
    assert_eq!(store.alert_log(3_500).await.unwrap().len(), 1);

    // Silences: expiring one rewrites it.
    w.insert(&[silence("s1", 10_000, 1), silence("s2", 10_000, 1)]).await.unwrap();
    w.insert(&[silence("s2", 100, 2)]).await.unwrap();
    let active = store.active_silences(500).await.unwrap();
    assert_eq!(active.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["s1"]);

    // Counter series.
    w.insert(&[counter_series(0)]).await.unwrap();
    let cs = store.counter_series().await.unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!((cs[0].host.as_str(), cs[0].value), ("host0", 1e6));

    // Pane totals over partitions and a span.
    w.insert(&[pane_stats(0, 0, 1), pane_stats(0, 1, 1), pane_stats(3, 0, 1)]).await.unwrap();
    let t = store.pane_totals(None, 1_700_000_000_000, 1_700_000_010_000).await.unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].panes, t[0].requests, t[0].errors), (2, 20, 4));
    assert_eq!(t[0].latency, (vec![1000, 2048, 5120], vec![10, 8, 2]));
    assert!(store.pane_totals(Some("nope"), i64::MIN, i64::MAX).await.unwrap().is_empty());
    drop_db(&store).await;
}
