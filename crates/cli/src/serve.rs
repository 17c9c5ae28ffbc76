//! `modelwatch run`: the pipeline wired from the configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use modelwatch_clickhouse::{RetryPolicy, Store, StoreConfig};
use modelwatch_codec::{DirResolver, SchemaResolver};
use modelwatch_engine::{
    CanaryPair, ClickHouseSink, EngineMetrics, EngineOptions, PipelineOptions,
};
use modelwatch_kafka::{DeadLetterOptions, OffsetReset, SourceOptions};
use prometheus_client::registry::Registry;

use crate::alerting::{self, AlertMetrics, AlertStore, ClickHouseAlertStore, WorkerContext};
use crate::config::{self, Config};
use crate::history::{History, MemoryHistory, MemorySink};
use crate::http::{self, AppState};
use crate::judging::{
    self, ClickHouseVerdictStore, JudgeContext, JudgeMetrics, JudgedPair, VerdictStore,
};

/// The store of the configured ClickHouse.
pub fn store(config: &Config) -> anyhow::Result<Store> {
    let ch = config.clickhouse();
    let mut store_config =
        StoreConfig::new(ch.url.as_str().trim_end_matches('/')).with_database(&ch.database);
    store_config.user = Some(ch.user.clone());
    let password = ch.password.expose();
    store_config.password = (!password.is_empty()).then(|| password.to_owned());
    // Few attempts inside one insert: the engine retries a failed flush forever with its own
    // backoff, and an outage shows on /readyz and in the metrics within seconds, not after a
    // long retry budget.
    store_config.writer.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    Store::new(store_config).context("clickhouse settings")
}

/// The engine's options from the configuration.
pub fn engine_options(config: &Config) -> anyhow::Result<EngineOptions> {
    let k = config.kafka();
    let brokers = k.brokers.join(",");
    let mut source = SourceOptions::new(&brokers, &k.group_id, ["placeholder"]);
    source.auto_offset_reset = match k.auto_offset_reset {
        config::OffsetReset::Earliest => OffsetReset::Earliest,
        config::OffsetReset::Latest => OffsetReset::Latest,
    };
    source.properties = k.properties.clone();
    // A revocation must be acknowledged before the group gives up on this member.
    if let Some(ms) = k.properties.get("max.poll.interval.ms").and_then(|v| v.parse::<u64>().ok()) {
        source.revoke_timeout = source.revoke_timeout.min(Duration::from_millis(ms * 4 / 5));
    }
    let resolver: Option<Arc<dyn SchemaResolver>> = match (&k.schema_registry_url, &k.schema_dir) {
        (Some(url), _) => Some(Arc::new(modelwatch_codec::RegistryResolver::new(
            url.as_str(),
            Duration::from_secs(10),
        ))),
        (None, Some(dir)) => Some(Arc::new(
            DirResolver::load(dir)
                .with_context(|| format!("loading schemas from {}", dir.display()))?,
        )),
        (None, None) => None,
    };
    let pipeline = PipelineOptions {
        core: *config.core(),
        group: k.group_id.clone(),
        format: k.format,
        resolver,
        canaries: config
            .canaries()
            .iter()
            .map(|c| CanaryPair {
                model: c.model.clone(),
                baseline: c.baseline.clone(),
                canary: c.canary.clone(),
            })
            .collect(),
    };
    let mut o =
        EngineOptions::new(source, k.inference_topics.clone(), k.metric_topics.clone(), pipeline);
    let p = config.pipeline();
    o.flush_interval = p.flush_interval;
    o.flush_rows = p.flush_rows;
    o.max_in_flight = p.max_in_flight;
    o.dead_letter = k.dead_letter_topic.as_ref().map(|t| {
        let mut d = DeadLetterOptions::new(&brokers, t);
        d.properties = k.properties.clone();
        d
    });
    Ok(o)
}

/// Runs until SIGINT or SIGTERM (then flushes, checkpoints, commits and returns).
pub fn run(config: &Config) -> anyhow::Result<()> {
    run_until(config, Arc::new(AtomicBool::new(false)))
}

/// [`run`], also stopping once `stop` is set (SIGINT and SIGTERM set it too).
pub fn run_until(config: &Config, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    run_with(config, stop, None)
}

/// [`run_until`], keeping the results in `memory` instead of the configured ClickHouse when
/// given (`modelwatch demo` where no ClickHouse can be had): the `[clickhouse]` section is not
/// used, and nothing outlives the process (see [`MemoryHistory`]).
pub fn run_with(
    config: &Config,
    stop: Arc<AtomicBool>,
    memory: Option<Arc<MemoryHistory>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("modelwatch-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let history = match memory {
        Some(m) => History::Memory(m),
        None => {
            let store = store(config)?;
            let writer = runtime.block_on(async {
                let applied = store.migrate().await.context("applying migrations")?;
                if !applied.is_empty() {
                    tracing::info!(applied = ?applied, "migrations applied");
                }
                store.writer().await.context("checking the tables")
            })?;
            History::ClickHouse { store, writer }
        }
    };
    let alert_store: Arc<dyn AlertStore> = match &history {
        History::ClickHouse { store, writer } => Arc::new(ClickHouseAlertStore::new(
            store.clone(),
            writer.clone(),
            runtime.handle().clone(),
        )),
        History::Memory(m) => Arc::clone(m) as Arc<dyn AlertStore>,
    };
    let verdict_store: Arc<dyn VerdictStore> = match &history {
        History::ClickHouse { store, writer } => Arc::new(ClickHouseVerdictStore::new(
            store.clone(),
            writer.clone(),
            runtime.handle().clone(),
        )),
        History::Memory(m) => Arc::clone(m) as Arc<dyn VerdictStore>,
    };

    let metrics = Arc::new(EngineMetrics::default());
    let alert_metrics = Arc::new(AlertMetrics::default());
    let judge_metrics = Arc::new(JudgeMetrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    alert_metrics.register(&mut registry);
    judge_metrics.register(&mut registry);

    // Alerting: restored from the alerts log before the engine hands over its first windows.
    let mut opts = engine_options(config)?;
    let alert_worker = if config.alerts().enabled() {
        let ctx = WorkerContext {
            store: alert_store,
            channels: crate::channels::build(config.alerts())?,
            canaries: opts
                .pipeline
                .canaries
                .iter()
                .map(|c| modelwatch_alert::CanaryPair {
                    model: c.model.clone(),
                    baseline: c.baseline.clone(),
                    canary: c.canary.clone(),
                })
                .collect(),
            caught_up: {
                let m = Arc::clone(&metrics);
                Box::new(move || m.caught_up())
            },
            metrics: Arc::clone(&alert_metrics),
            stop: Arc::clone(&stop),
        };
        let (tx, worker) = alerting::start(config.alerts(), ctx)?;
        opts.written = Some(tx);
        tracing::info!(rules = config.alerts().rules.len(), "alerting enabled");
        Some(worker)
    } else {
        None
    };

    // The canary judge sits between the engine and the alert worker: it judges every flush's
    // panes and hands the flush on with its verdicts (alert rules may fire on decisions).
    let judge_worker = if config.canaries().is_empty() {
        None
    } else {
        let pairs: Vec<JudgedPair> = config
            .canaries()
            .iter()
            .map(|c| JudgedPair {
                model: c.model.clone(),
                baseline: c.baseline.clone(),
                canary: c.canary.clone(),
                expected_share: c.expected_share,
            })
            .collect();
        let dropped_metrics = Arc::clone(&metrics);
        let ctx = JudgeContext {
            spec: Arc::new(config.judge().clone()),
            window_ms: config.core().windows.window_ms(),
            store: verdict_store,
            forward: opts.written.take(),
            dropped: Box::new(move || dropped_metrics.alert_windows_dropped_total()),
            metrics: Arc::clone(&judge_metrics),
            stop: Arc::clone(&stop),
        };
        let (tx, worker) = judging::start(&pairs, ctx)?;
        opts.written = Some(tx);
        opts.written_pane_models = pairs.iter().map(|p| p.model.clone()).collect();
        tracing::info!(pairs = pairs.len(), "canary judge enabled");
        Some(worker)
    };

    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http_task = if config.http().enabled {
        let state = AppState {
            registry: Arc::new(registry),
            engine: Arc::clone(&metrics),
            canaries: Some(crate::api::Api {
                history: history.clone(),
                auth_token: config.http().auth_token.as_ref().map(|t| t.expose().to_owned()),
            }),
        };
        let addr = config.http().listen;
        let shutdown = async move {
            let _ = http_stop_rx.await;
        };
        Some(runtime.spawn(async move { http::serve(addr, state, shutdown).await }))
    } else {
        None
    };
    {
        let stop = Arc::clone(&stop);
        runtime.spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: finishing handed-off batches, checkpointing");
            stop.store(true, Ordering::Relaxed);
        });
    }

    let handle = runtime.handle().clone();
    let engine_stop = Arc::clone(&stop);
    let engine_metrics = Arc::clone(&metrics);
    let engine = std::thread::Builder::new().name("modelwatch-engine".into());
    let engine = match history {
        History::ClickHouse { store, writer } => {
            let sink = ClickHouseSink::new(writer, Arc::clone(&metrics));
            engine.spawn(move || {
                modelwatch_engine::run(opts, Some(store), sink, engine_metrics, handle, engine_stop)
            })
        }
        History::Memory(m) => engine.spawn(move || {
            modelwatch_engine::run(opts, None, MemorySink(m), engine_metrics, handle, engine_stop)
        }),
    }
    .context("starting the engine thread")?;
    let result = engine.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    // The engine is gone, and with it the queue: the judge writes its last verdicts and closes
    // the alert worker's queue by stopping.
    if let Some(j) = judge_worker {
        j.join();
    }
    // The alert worker evaluates what is left, delivers
    // what is due and writes every pending log row (bounded: deliveries no longer retry once
    // stopping, but a receiver may take its whole timeout).
    if let Some(w) = alert_worker {
        w.join_timeout(Duration::from_secs(60));
    }
    let _ = http_stop_tx.send(());
    if let Some(t) = http_task {
        match runtime.block_on(t) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "http server failed"),
            Err(e) => tracing::warn!(error = %e, "http task failed"),
        }
    }
    let report = result.context("engine")?;
    tracing::info!(
        records = report.records,
        flushes = report.flushes,
        dead_letters = report.dead_letters,
        "stopped cleanly"
    );
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
