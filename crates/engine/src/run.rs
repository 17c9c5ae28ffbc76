//! The run loop: Kafka records through the [`Pipeline`] into a [`Sink`], with the checkpoint
//! protocol of delivery.md.
//!
//! Threads: librdkafka's poll thread ([`Source`]) hands batches over a bounded channel to the
//! engine thread (the caller of [`run`]), which decodes, records, closes panes and windows and
//! every `flush_interval` hands a [`Flush`] (rows, state, checkpoints) to the sink task on the
//! tokio runtime. After the sink wrote a flush, the engine thread commits its resume offsets to
//! Kafka (for lag monitoring; the checkpoint table is the truth) and releases the bookkeeping
//! the checkpoints made unnecessary. A small thread samples consumer lag.
//!
//! - **Backpressure.** At most `max_in_flight` flushes wait for the sink. When a flush is due
//!   and none can be handed over (ClickHouse is down or slow), every assigned partition is
//!   paused: the consumer keeps polling and stays in its group, prefetch stays bounded, and
//!   memory holds at most the flushes in flight plus the batches already in the channel. A
//!   failed flush is retried whole, with backoff, forever (a permanent error stops the engine).
//!   While paused, the idleness clock stands still, so pausing does not make partitions idle.
//! - **Assignment.** The resume callback reads the partition's checkpoint from the store (with
//!   retries: without it replay would not be exact) and the engine thread restores the
//!   watermark and cutoff before the partition's first record.
//! - **Revocation and shutdown.** Everything consumed is flushed, the engine waits until the
//!   sink wrote it (checkpoints included) and commits, then lets the partitions go. No pane is
//!   closed early: the next owner rebuilds open panes from the checkpoint.
//! - **Dead letters.** Rejected records go to the dead-letter topic when configured; the
//!   producer is flushed before a checkpoint that covers them is handed to the sink, so a
//!   record is never committed past before its dead letter is acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelwatch_clickhouse::Store;
use modelwatch_clickhouse::rows::{
    CanaryVerdictRow, DriftScoreRow, MetricStatsRow, PaneBinsRow, PaneStatsRow, WindowStatsRow,
};
use modelwatch_core::bins::FrozenLayout;
use modelwatch_core::metrics::CounterSeries;
use modelwatch_core::tracker::{PartitionCheckpoint, ReferenceSnapshot};
use modelwatch_kafka::{
    Batch, DeadLetterOptions, DeadLetterProducer, Source, SourceError, SourceEvent, SourceOptions,
    WatermarkProbe,
};
use tokio::runtime::Handle;

use crate::metrics::EngineMetrics;
use crate::pipeline::{Flush, Input, PartitionCommit, Pipeline, PipelineOptions};
use crate::sink::{Sink, SinkError};
use crate::topics::Topics;

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The consumer (its topics are set from the two lists below).
    pub source: SourceOptions,
    /// Inference-log topics.
    pub inference_topics: Vec<String>,
    /// Metric-event topics.
    pub metric_topics: Vec<String>,
    /// The pipeline.
    pub pipeline: PipelineOptions,
    /// The dead-letter producer, if any.
    pub dead_letter: Option<DeadLetterOptions>,
    /// Longest time between flushes (and checkpoints).
    pub flush_interval: Duration,
    /// A flush is handed over early once this many rows wait.
    pub flush_rows: usize,
    /// Flushes handed to the sink and not yet written, at most; beyond, consumption pauses.
    pub max_in_flight: usize,
    /// How often idleness is judged.
    pub tick_interval: Duration,
    /// How often consumer lag is sampled.
    pub lag_interval: Duration,
    /// How often the consumption counters are published to the metrics (default 250 ms).
    pub metrics_interval: Duration,
    /// Where the window rows of every written flush go (the alert worker), if anywhere. Bounded:
    /// when it is full the rows of that flush are dropped and counted
    /// (`modelwatch_alert_flushes_dropped`), so a stuck consumer never stalls the pipeline.
    pub written: Option<SyncSender<WrittenWindows>>,
    /// Models whose pane rows are handed over with the window rows (the canary judge's
    /// models); the pane rows of other models are not.
    pub written_pane_models: Vec<String>,
}

/// The rows of closed windows (and of the closed panes of the models asked for) of one flush,
/// handed over after the sink wrote them durably.
#[derive(Debug, Clone, Default)]
pub struct WrittenWindows {
    /// `window_stats` rows.
    pub window_stats: Vec<WindowStatsRow>,
    /// `metric_stats` rows.
    pub metric_stats: Vec<MetricStatsRow>,
    /// `drift_scores` rows.
    pub drift_scores: Vec<DriftScoreRow>,
    /// `pane_stats` rows of [`EngineOptions::written_pane_models`].
    pub pane_stats: Vec<PaneStatsRow>,
    /// `pane_bins` rows of [`EngineOptions::written_pane_models`].
    pub pane_bins: Vec<PaneBinsRow>,
    /// `canary_verdicts` rows made from this flush (empty from the engine; the binary's canary
    /// judge fills them in before the alert worker sees the flush).
    pub canary_verdicts: Vec<CanaryVerdictRow>,
    /// (model, version) evicted after `limits.idle_ttl` since the last flush.
    pub evicted: Vec<(String, String)>,
    /// The routes of the windows' requests (see [`crate::RouteCount`]).
    pub routes: Vec<crate::RouteCount>,
    /// (model, version) that lived only in partitions revoked from this instance: their
    /// windows are another instance's from now on (sent alone, after the revoked partitions'
    /// last flush; if they come back, their state is to be read again from the store).
    pub released: Vec<(String, String)>,
}

impl EngineOptions {
    /// Options with the defaults: a flush every second or 100,000 rows, 4 in flight.
    pub fn new(
        source: SourceOptions,
        inference_topics: Vec<String>,
        metric_topics: Vec<String>,
        pipeline: PipelineOptions,
    ) -> Self {
        Self {
            source,
            inference_topics,
            metric_topics,
            pipeline,
            dead_letter: None,
            flush_interval: Duration::from_secs(1),
            flush_rows: 100_000,
            max_in_flight: 4,
            tick_interval: Duration::from_millis(200),
            lag_interval: Duration::from_secs(5),
            metrics_interval: Duration::from_millis(250),
            written: None,
            written_pane_models: Vec::new(),
        }
    }
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The consumer failed.
    #[error("kafka consumer")]
    Source(#[from] SourceError),
    /// The dead-letter producer could not be created.
    #[error("dead-letter producer")]
    DeadLetter(#[from] modelwatch_kafka::DeadLetterError),
    /// The sink refused a flush for good.
    #[error("writing to the sink failed permanently")]
    Sink(#[source] SinkError),
    /// The sink task is gone.
    #[error("the sink task stopped")]
    SinkGone,
    /// Reading persisted state failed for good.
    #[error("restoring state")]
    Restore(#[source] modelwatch_clickhouse::Error),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Records processed.
    pub records: u64,
    /// Flushes written.
    pub flushes: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
}

struct Ack {
    result: Result<Vec<PartitionCommit>, SinkError>,
}

/// The next offset of every assigned partition, for the lag sampler.
type Positions = Arc<Mutex<Vec<(Arc<str>, i32, i64)>>>;

/// The high watermark of every assigned partition as the lag sampler last read it, by
/// (topic, partition): a partition whose position is below it has a backlog.
type HighWatermarks = Arc<Mutex<HashMap<(Arc<str>, i32), i64>>>;

/// Persisted state that outlives a window: layouts, references, counter series.
type State = (Vec<(String, FrozenLayout)>, Vec<ReferenceSnapshot>, Vec<CounterSeries>);

/// What the resume callback read for the engine thread: the checkpoints of newly assigned
/// partitions, and the state the versions of those partitions need (read again at every
/// assignment: the previous owner wrote it).
#[derive(Default)]
struct Pending {
    checkpoints: HashMap<(String, i32), Option<PartitionCheckpoint>>,
    state: Option<State>,
}

type Restores = Arc<Mutex<Pending>>;

fn read_state(store: Option<&Store>, rt: &Handle, stop: &AtomicBool) -> Result<State, EngineError> {
    let Some(store) = store else { return Ok(State::default()) };
    let layouts = retry("reading drift layouts", stop, || rt.block_on(store.drift_layouts()))
        .map_err(EngineError::Restore)?;
    let references =
        retry("reading drift references", stop, || rt.block_on(store.drift_references()))
            .map_err(EngineError::Restore)?;
    let counters = retry("reading counter series", stop, || rt.block_on(store.counter_series()))
        .map_err(EngineError::Restore)?;
    Ok((layouts, references, counters))
}

/// Calls `f` until it succeeds, backing off up to 10 s, until `stop` is set.
fn retry<T>(
    what: &str,
    stop: &AtomicBool,
    mut f: impl FnMut() -> Result<T, modelwatch_clickhouse::Error>,
) -> Result<T, modelwatch_clickhouse::Error> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_retryable() || stop.load(Ordering::Relaxed) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Runs the pipeline until `stop` is set (then flushes, checkpoints, commits and returns) or a
/// permanent error. Blocking: call it on a dedicated thread; `rt` runs the sink task and the
/// store's queries.
///
/// `store` is where checkpoints and the state that outlives a window are read back from (on
/// start and at every partition assignment). Without one (no ClickHouse: `modelwatch demo` on
/// a bare machine) nothing is read back: every partition starts at the consumer group's
/// committed offset (or `auto.offset.reset`) with fresh layouts, references and counters.
pub fn run<S: Sink>(
    opts: EngineOptions,
    store: Option<Store>,
    sink: S,
    metrics: Arc<EngineMetrics>,
    rt: Handle,
    stop: Arc<AtomicBool>,
) -> Result<RunReport, EngineError> {
    let topics = Topics::new(
        opts.inference_topics.iter().map(String::as_str),
        opts.metric_topics.iter().map(String::as_str),
    );
    let group = opts.pipeline.group.clone();
    let mut pipeline = Pipeline::new(topics.clone(), opts.pipeline.clone());

    // State that outlives a window, before any record.
    let (layouts, references, counters) = read_state(store.as_ref(), &rt, &stop)?;
    tracing::info!(
        layouts = layouts.len(),
        references = references.len(),
        counters = counters.len(),
        "restored state"
    );
    pipeline.preload(&layouts, references, counters);

    let restores: Restores = Arc::default();
    let resume = {
        let (store, rt, restores, stop, group) =
            (store.clone(), rt.clone(), Arc::clone(&restores), Arc::clone(&stop), group.clone());
        move |topic: &str, partition: i32| -> Option<i64> {
            let rows = match &store {
                Some(store) => {
                    retry("reading checkpoints", &stop, || rt.block_on(store.checkpoints(&group)))
                }
                None => Ok(Vec::new()),
            };
            let cp = match rows {
                Ok(rows) => {
                    rows.iter().find(|c| c.topic == topic && c.partition == partition).map(|c| {
                        PartitionCheckpoint {
                            cutoff_ms: c.cutoff_ms,
                            resume_offset: c.resume_offset,
                            watermark_ms: c.watermark_ms,
                        }
                    })
                }
                Err(e) => {
                    tracing::error!(error = %e, topic, partition, "no checkpoint could be read");
                    None
                }
            };
            tracing::info!(topic, partition, checkpoint = ?cp, "partition assigned");
            let need_state = restores.lock().is_ok_and(|r| r.state.is_none());
            let state = if need_state {
                match read_state(store.as_ref(), &rt, &stop) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(error = %e, "persisted state could not be read");
                        None
                    }
                }
            } else {
                None
            };
            if let Ok(mut r) = restores.lock() {
                r.checkpoints.insert((topic.to_owned(), partition), cp);
                if state.is_some() {
                    r.state = state;
                }
            }
            cp.map(|c| c.resume_offset)
        }
    };
    let mut source_opts = opts.source.clone();
    source_opts.topics = topics.all().iter().map(|t| t.name.to_string()).collect();
    let source = Source::start(&source_opts, resume)?;
    let mut dead_letter = opts.dead_letter.as_ref().map(DeadLetterProducer::new).transpose()?;

    let (flush_tx, flush_rx) = tokio::sync::mpsc::channel::<Flush>(opts.max_in_flight.max(1));
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>();
    let written = opts.written.clone().map(|tx| (tx, Arc::new(opts.written_pane_models.clone())));
    rt.spawn(sink_task(sink, flush_rx, ack_tx, Arc::clone(&metrics), written));

    let positions: Positions = Arc::default();
    let highs: HighWatermarks = Arc::default();
    let lag_stop = Arc::new(AtomicBool::new(false));
    let lag_thread = spawn_lag_sampler(
        source.watermark_probe(),
        Arc::clone(&positions),
        Arc::clone(&highs),
        Arc::clone(&metrics),
        opts.lag_interval,
        Arc::clone(&lag_stop),
    );

    metrics.running.store(true, Ordering::Relaxed);
    pipeline.set_written_at(wall_ms() as u64);
    let mut engine = Loop {
        opts: &opts,
        pipeline,
        source: &source,
        dead_letter: dead_letter.as_mut(),
        restores,
        flush_tx,
        ack_rx,
        metrics: Arc::clone(&metrics),
        in_flight: 0,
        paused: false,
        paused_since: None,
        paused_total: Duration::ZERO,
        last_flush: Instant::now(),
        last_commits: Vec::new(),
        dead_letters_pending: false,
        dead_letters_waiting: None,
        report: RunReport::default(),
        positions,
        highs,
        topic_names: topics.all().iter().map(|t| Arc::clone(&t.name)).collect(),
        last_publish: Instant::now(),
        last_several: Instant::now(),
        several_reported: 0,
    };
    let result = engine.run(&stop);
    let result = result.and_then(|()| engine.drain());
    metrics.running.store(false, Ordering::Relaxed);
    let report = engine.report.clone();
    drop(engine);
    lag_stop.store(true, Ordering::Relaxed);
    let _ = lag_thread.join();
    if let Some(d) = dead_letter.as_mut() {
        let _ = d.flush(Duration::from_secs(10));
    }
    source.close()?;
    result.map(|()| report)
}

async fn sink_task<S: Sink>(
    mut sink: S,
    mut flushes: tokio::sync::mpsc::Receiver<Flush>,
    acks: Sender<Ack>,
    metrics: Arc<EngineMetrics>,
    written: Option<(SyncSender<WrittenWindows>, Arc<Vec<String>>)>,
) {
    while let Some(flush) = flushes.recv().await {
        let mut backoff = Duration::from_millis(200);
        let result = loop {
            match sink.write(&flush).await {
                Ok(()) => {
                    metrics.sink_ok.store(true, Ordering::Relaxed);
                    break Ok(());
                }
                Err(e @ SinkError::Permanent(_)) => break Err(e),
                Err(e) => {
                    metrics.sink_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, seq = flush.seq, "flush failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        let Flush { rows, commits, .. } = flush;
        if result.is_ok()
            && let Some((tx, pane_models)) = &written
        {
            hand_over_windows(tx, rows, pane_models, &metrics);
        }
        let result = result.map(|()| commits);
        let failed = result.is_err();
        if acks.send(Ack { result }).is_err() || failed {
            return;
        }
    }
}

/// Gives the window rows of a written flush to the alert worker without waiting.
fn hand_over_windows(
    tx: &SyncSender<WrittenWindows>,
    rows: crate::collect::Rows,
    pane_models: &[String],
    metrics: &EngineMetrics,
) {
    let wanted = |model: &String| pane_models.contains(model);
    let mut w = WrittenWindows {
        window_stats: rows.window_stats,
        metric_stats: rows.metric_stats,
        drift_scores: rows.drift_scores,
        pane_stats: Vec::new(),
        pane_bins: Vec::new(),
        canary_verdicts: Vec::new(),
        evicted: rows.evicted,
        routes: rows.routes,
        released: Vec::new(),
    };
    if !pane_models.is_empty() {
        w.pane_stats = rows.pane_stats.into_iter().filter(|r| wanted(&r.model)).collect();
        w.pane_bins = rows.pane_bins.into_iter().filter(|r| wanted(&r.model)).collect();
    }
    if w.window_stats.is_empty()
        && w.metric_stats.is_empty()
        && w.drift_scores.is_empty()
        && w.pane_stats.is_empty()
        && w.evicted.is_empty()
    {
        return;
    }
    match tx.try_send(w) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(w)) => {
            metrics.alert_windows_dropped();
            tracing::warn!(
                windows = w.window_stats.len(),
                "the alert worker is behind: the windows of this flush are not evaluated"
            );
        }
    }
}

fn spawn_lag_sampler(
    probe: WatermarkProbe,
    positions: Positions,
    highs: HighWatermarks,
    metrics: Arc<EngineMetrics>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modelwatch-lag".into())
        .spawn(move || {
            let mut known: Vec<(Arc<str>, i32)> = Vec::new();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                next = Instant::now() + every;
                let now = positions.lock().map(|p| p.clone()).unwrap_or_default();
                for (t, p) in &known {
                    if !now.iter().any(|(t2, p2, _)| t2 == t && p2 == p) {
                        metrics.remove_lag(t, *p);
                        if let Ok(mut h) = highs.lock() {
                            h.remove(&(Arc::clone(t), *p));
                        }
                    }
                }
                known = now.iter().map(|(t, p, _)| (Arc::clone(t), *p)).collect();
                for (topic, partition, next_offset) in now {
                    if let Ok(high) =
                        probe.high_watermark(&topic, partition, Duration::from_secs(10))
                    {
                        metrics.set_lag(&topic, partition, high, next_offset);
                        if let Ok(mut h) = highs.lock() {
                            h.insert((topic, partition), high);
                        }
                    }
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the lag thread: {e}"))
}

struct Loop<'a> {
    opts: &'a EngineOptions,
    pipeline: Pipeline,
    source: &'a Source,
    dead_letter: Option<&'a mut DeadLetterProducer>,
    restores: Restores,
    flush_tx: tokio::sync::mpsc::Sender<Flush>,
    ack_rx: Receiver<Ack>,
    metrics: Arc<EngineMetrics>,
    in_flight: usize,
    paused: bool,
    paused_since: Option<Instant>,
    paused_total: Duration,
    last_flush: Instant,
    last_commits: Vec<PartitionCommit>,
    dead_letters_pending: bool,
    /// Since when the hand-off waits for dead letters (for a warning every 30 s).
    dead_letters_waiting: Option<Instant>,
    report: RunReport,
    positions: Positions,
    highs: HighWatermarks,
    /// Topic names by topic index.
    topic_names: Vec<Arc<str>>,
    last_publish: Instant,
    last_several: Instant,
    several_reported: usize,
}

fn wall_ms() -> i64 {
    modelwatch_clickhouse::now_ms() as i64
}

impl Loop<'_> {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), EngineError> {
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.apply_assignments();
            match self.source.recv_timeout(self.opts.tick_interval)? {
                Some(SourceEvent::Batch(records)) => {
                    self.process(&records);
                    // Nothing keeps a record past `process`: the batch goes back to the poll
                    // thread, which refills it instead of allocating.
                    self.source.recycle(records);
                    self.pipeline.advance();
                }
                Some(SourceEvent::Revoked(rv)) => {
                    tracing::info!(partitions = ?rv.partitions, "partitions revoked");
                    self.drain()?;
                    let mut released = Vec::new();
                    for (topic, partition) in &rv.partitions {
                        if let Some(t) = self.pipeline.topics().by_name(topic).map(|t| t.index) {
                            released.extend(self.pipeline.revoke(t, *partition));
                        }
                        self.metrics.remove_lag(topic, *partition);
                    }
                    self.hand_over_released(released);
                    rv.ack();
                    self.paused = false; // pauses do not survive a rebalance
                    self.paused_since = None;
                }
                None => {}
            }
            if !self.paused && last_tick.elapsed() >= self.opts.tick_interval {
                last_tick = Instant::now();
                let active_now = wall_ms() - self.paused_total.as_millis() as i64;
                self.judge_backlogs();
                self.pipeline.tick(active_now);
            }
            self.take_acks(false)?;
            if self.flush_due() {
                if self.in_flight < self.opts.max_in_flight {
                    let handed = self.hand_off(false)?;
                    if !handed && self.pipeline.pending_rows() >= self.opts.flush_rows {
                        // Dead letters still unacknowledged hold the checkpoint back: stop
                        // reading until they are, so rows do not pile up.
                        self.pause()?;
                    }
                } else {
                    self.pause()?;
                }
            }
            if self.paused && self.in_flight < self.opts.max_in_flight && !self.dead_letters_pending
            {
                self.resume()?;
            }
            self.publish();
        }
        Ok(())
    }

    /// Starts the partitions the resume callback announced (with their checkpoints), also
    /// those that have no record yet: an assigned partition holds windows back until it has
    /// caught up or gone idle.
    fn apply_assignments(&mut self) {
        let (pending, state) = match self.restores.lock() {
            Ok(mut m) if !m.checkpoints.is_empty() || m.state.is_some() => {
                let cps: Vec<_> = m.checkpoints.drain().collect();
                (cps, m.state.take())
            }
            _ => return,
        };
        if let Some((layouts, references, counters)) = state {
            // Versions already tracked ignore them; the others (those of the new partitions)
            // start from what their previous owner persisted.
            self.pipeline.preload(&layouts, references, counters);
        }
        for ((topic, partition), cp) in pending {
            if let Some(t) = self.pipeline.topics().by_name(&topic).map(|t| t.index) {
                self.pipeline.assign(t, partition, cp);
            }
        }
    }

    fn process(&mut self, records: &Batch) {
        // The resume callback may have run since the top of the loop: state and checkpoints
        // go in before the first record of a new partition.
        self.apply_assignments();
        let mut topic_cache: Option<(Arc<str>, u32)> = None;
        for r in records.iter() {
            let t = match &topic_cache {
                Some((name, t)) if Arc::ptr_eq(name, r.topic) => *t,
                _ => match self.pipeline.topics().by_name(r.topic) {
                    Some(t) => {
                        let i = t.index;
                        topic_cache = Some((Arc::clone(r.topic), i));
                        i
                    }
                    None => continue,
                },
            };
            if !self.pipeline.is_assigned(t, r.partition) {
                let cp = self
                    .restores
                    .lock()
                    .ok()
                    .and_then(|mut m| m.checkpoints.remove(&(r.topic.to_string(), r.partition)))
                    .flatten();
                self.pipeline.assign(t, r.partition, cp);
            }
            let input = Input {
                topic: t,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                payload: r.payload,
            };
            self.report.records += 1;
            if let Some(rejection) = self.pipeline.process(input)
                && let Some(d) = self.dead_letter.as_deref_mut()
            {
                match d.send(r, &rejection) {
                    Ok(()) => {
                        self.report.dead_letters += 1;
                        self.dead_letters_pending = true;
                        self.metrics.dead_lettered(1, 0);
                    }
                    Err(e) => {
                        self.metrics.dead_lettered(0, 1);
                        tracing::warn!(error = %e, "dead-letter enqueue failed");
                    }
                }
            }
        }
    }

    /// Marks the partitions whose records wait in the broker, so that idleness does not take
    /// a slow broker for a quiet shipper: the high watermark is the larger of the last fetch
    /// response's (librdkafka statistics, every second) and the lag sampler's.
    fn judge_backlogs(&mut self) {
        let names = &self.topic_names;
        let source = self.source;
        let sampled = self.highs.lock().ok();
        self.pipeline.set_backlogs(|t, p| {
            let name = names.get(t as usize)?;
            let fetched = source.high_watermark(name, p);
            let probed = sampled.as_ref().and_then(|h| h.get(&(Arc::clone(name), p)).copied());
            fetched.max(probed)
        });
    }

    fn flush_due(&self) -> bool {
        self.last_flush.elapsed() >= self.opts.flush_interval
            || self.pipeline.pending_rows() >= self.opts.flush_rows
    }

    /// Hands everything collected to the sink (skipped when nothing changed); `false` when
    /// it had to wait for dead letters. A checkpoint must not pass a record whose dead letter
    /// the broker has not acknowledged: without `wait` (the loop) the hand-off is postponed to
    /// the next flush while they are outstanding, so a slow broker does not block the engine
    /// thread; with `wait` (revocation, shutdown) it waits for them, at most 30 s.
    fn hand_off(&mut self, wait: bool) -> Result<bool, EngineError> {
        self.last_flush = Instant::now();
        if self.dead_letters_pending
            && let Some(d) = self.dead_letter.as_deref_mut()
        {
            let settled = if wait {
                d.flush(Duration::from_secs(30))
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "dead-letter flush failed; checkpoint postponed");
                    })
                    .is_ok()
            } else {
                d.outstanding() == 0
            };
            if !settled {
                if self.dead_letters_waiting.get_or_insert_with(Instant::now).elapsed()
                    >= Duration::from_secs(30)
                {
                    self.dead_letters_waiting = Some(Instant::now());
                    tracing::warn!(
                        "dead letters unacknowledged for 30 s: checkpoints wait for them"
                    );
                }
                return Ok(false);
            }
            self.dead_letters_pending = false;
            self.dead_letters_waiting = None;
        }
        let now = wall_ms();
        let flush = self.pipeline.take_flush(now as u64);
        self.pipeline.set_written_at(now as u64);
        let unchanged = flush.rows.is_empty()
            && flush.layouts.is_empty()
            && flush.references.is_empty()
            && flush.commits == self.last_commits;
        if unchanged {
            return Ok(true);
        }
        self.last_commits.clone_from(&flush.commits);
        self.flush_tx.blocking_send(flush).map_err(|_| EngineError::SinkGone)?;
        self.in_flight += 1;
        Ok(true)
    }

    /// Applies the sink's acknowledgements: commit, release. With `wait`, blocks for one.
    fn take_acks(&mut self, wait: bool) -> Result<(), EngineError> {
        let mut first = wait;
        loop {
            let ack = if first {
                first = false;
                match self.ack_rx.recv() {
                    Ok(a) => a,
                    Err(_) => return Err(EngineError::SinkGone),
                }
            } else {
                match self.ack_rx.try_recv() {
                    Ok(a) => a,
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => return Err(EngineError::SinkGone),
                }
            };
            self.in_flight -= 1;
            let commits = ack.result.map_err(EngineError::Sink)?;
            self.report.flushes += 1;
            self.metrics.checkpoint_written(wall_ms());
            let offsets: Vec<(&str, i32, i64)> = commits
                .iter()
                .map(|c| (&*c.topic, c.partition, c.checkpoint.resume_offset))
                .collect();
            if !offsets.is_empty()
                && let Err(e) = self.source.commit(&offsets)
            {
                // The checkpoint is durable; the Kafka offset only serves lag monitoring.
                tracing::warn!(error = %e, "offset commit failed");
            }
            self.pipeline.release(&commits);
        }
    }

    /// Tells the alert worker (through the judge) which versions went with revoked
    /// partitions, after the windows of their last flush (`drain` waited for those).
    fn hand_over_released(&self, released: Vec<(String, String)>) {
        let Some(tx) = &self.opts.written else { return };
        if released.is_empty() {
            return;
        }
        tracing::info!(versions = released.len(), "versions released to the next owner");
        let w = WrittenWindows { released, ..WrittenWindows::default() };
        match tx.try_send(w) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.alert_windows_dropped();
                tracing::warn!(
                    "the alert worker is behind: it is not told which versions were released"
                );
            }
        }
    }

    /// Flushes everything and waits until the sink wrote it.
    fn drain(&mut self) -> Result<(), EngineError> {
        while self.in_flight >= self.opts.max_in_flight {
            self.take_acks(true)?;
        }
        self.hand_off(true)?;
        while self.in_flight > 0 {
            self.take_acks(true)?;
        }
        Ok(())
    }

    fn assigned(&self) -> Vec<(String, i32)> {
        self.pipeline
            .positions()
            .into_iter()
            .map(|(t, p, _)| (self.pipeline.topics().topic(t).name.to_string(), p))
            .collect()
    }

    fn pause(&mut self) -> Result<(), EngineError> {
        if self.paused {
            return Ok(());
        }
        let parts = self.assigned();
        let refs: Vec<(&str, i32)> = parts.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        if let Err(e) = self.source.pause(&refs) {
            tracing::warn!(error = %e, "pause failed");
        }
        tracing::warn!(in_flight = self.in_flight, "sink behind: consumption paused");
        self.paused = true;
        self.paused_since = Some(Instant::now());
        Ok(())
    }

    fn resume(&mut self) -> Result<(), EngineError> {
        let parts = self.assigned();
        let refs: Vec<(&str, i32)> = parts.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        if let Err(e) = self.source.resume(&refs) {
            tracing::warn!(error = %e, "resume failed");
        }
        tracing::info!("sink caught up: consumption resumed");
        self.paused = false;
        if let Some(s) = self.paused_since.take() {
            self.paused_total += s.elapsed();
        }
        Ok(())
    }

    fn publish(&mut self) {
        if self.last_publish.elapsed() < self.opts.metrics_interval {
            return;
        }
        self.last_publish = Instant::now();
        let p = &self.pipeline;
        self.metrics.publish(p.topics(), p.counts(), p.tracker_stats(), p.active_keys());
        self.metrics.publish_resume_gaps(p.resume_gaps());
        self.metrics.publish_consumer_errors(self.source.poll_errors());
        self.metrics.set_flow(self.in_flight, self.paused);
        self.metrics.update_checkpoint_age(wall_ms());
        if let Ok(mut pos) = self.positions.lock() {
            pos.clear();
            for (t, k, o) in p.positions() {
                pos.push((Arc::clone(&p.topics().topic(t).name), k, o));
            }
        }
        if self.last_several.elapsed() >= Duration::from_secs(10) {
            self.last_several = Instant::now();
            tracing::debug!(
                records = self.report.records,
                flushes = self.report.flushes,
                in_flight = self.in_flight,
                paused = self.paused,
                pending_rows = p.pending_rows(),
                positions = ?p.positions(),
                "progress"
            );
            let keys = p.keys_in_several_partitions();
            self.metrics.set_several_partitions(&keys);
            if keys.len() != self.several_reported {
                self.several_reported = keys.len();
                if !keys.is_empty() {
                    let examples: Vec<String> = keys
                        .iter()
                        .take(5)
                        .map(|(m, v, ps)| format!("{m}/{v} in partitions {ps:?}"))
                        .collect();
                    tracing::warn!(
                        count = keys.len(),
                        examples = ?examples,
                        "versions seen in several partitions: the input is not keyed by model; \
                         counts stay exact with one instance, but replay is at-least-once for \
                         them and several instances would each see part of them"
                    );
                }
            }
        }
    }
}
