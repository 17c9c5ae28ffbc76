//! The alert worker of `modelwatch run`: the rows of written windows through the rule
//! evaluator and the notification scheduler to the delivery channels.
//!
//! Threads and queues:
//! - The engine's sink task hands the window rows of every flush that ClickHouse acknowledged to
//!   the worker over a bounded queue ([`QUEUE_FLUSHES`] flushes); when it is full the rows of
//!   that flush are dropped and counted (`modelwatch_alert_flushes_dropped`), so alerting never
//!   stalls the pipeline. The worker only evaluates and writes the `alerts` log, so it keeps up
//!   unless ClickHouse itself is stuck (and then the pipeline is paused too).
//! - The worker thread evaluates ([`Evaluator::observe`], and [`Evaluator::tick`] every
//!   [`TICK`] for `absent` rules, told whether the consumer is caught up), writes every state
//!   change to the `alerts` log **before** pushing it into the [`Scheduler`] (the log is the
//!   record that a restart restores from), and hands due notifications to the channels.
//! - Every channel has a delivery thread of its own behind a bounded queue
//!   ([`QUEUE_NOTIFICATIONS`]), so a slow or failing receiver delays only its own
//!   notifications; a notification that finds its channel's queue full is dropped, counted
//!   (`outcome="dropped"`) and logged. Each delivery attempt is a delivery row of the `alerts`
//!   log ([`AlertInstance::delivery_row`](modelwatch_alert::AlertInstance::delivery_row)).
//!   A channel whose receiver forgets firing alerts that are not re-sent (Alertmanager, see
//!   [`Deliverer::resend_interval`]) gets the firing alerts of each group's latest notification
//!   again at that interval until they resolve; these re-sends are counted
//!   (`outcome="resent"`), not logged.
//!
//! The worker restores a version's state machines from the latest state rows of the log, and
//! its notification groups from the recent successful deliveries, when the version's first
//! window reaches it (after the start, or after its partition moved here), so a restart or a
//! rebalance (and the replay that follows it) does not notify again what was already delivered;
//! `absent` rules are restored at start (a silent version sends no window). When the engine
//! revokes a partition it hands over the versions that lived only there
//! ([`WrittenWindows::released`]): the worker forgets their state without notifying (the next
//! owner restores it) and its channels stop re-sending their alerts.
//!
//! Shutdown: when the engine has stopped (its queue is closed) the worker evaluates what is left,
//! then closes the channel queues; the delivery threads finish what they hold (without further
//! retries once stopping) and every log row is written before [`AlertWorker::join`] returns.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use modelwatch_alert::{
    AlertEvent, AlertState, CanaryPair, Evaluator, Notification, NotificationStatus,
    RouteInference, Scheduler, Silence, Silences, WindowRows,
};
use modelwatch_clickhouse::rows::{AlertRow, SilenceRow};
use modelwatch_engine::WrittenWindows;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::AlertsConfig;

/// Flushes of window rows that may wait for the worker (a flush is written every
/// `pipeline.flush_interval`, 1 s by default: about a minute of headroom).
pub const QUEUE_FLUSHES: usize = 64;
/// Notifications that may wait for one channel's delivery thread.
pub const QUEUE_NOTIFICATIONS: usize = 256;
/// How often `absent` rules are judged and silences re-read.
pub const TICK: Duration = Duration::from_secs(5);
/// How often the active silences are read from the `silences` table.
const SILENCE_RELOAD: Duration = Duration::from_secs(30);

/// The `alerts` and `silences` tables, as the worker uses them.
pub trait AlertStore: Send + Sync + 'static {
    /// Appends rows to the `alerts` log.
    fn write(&self, rows: &[AlertRow]) -> anyhow::Result<()>;
    /// The latest state row of every fingerprint.
    fn latest_states(&self) -> anyhow::Result<Vec<AlertRow>>;
    /// Rows of the log (state and delivery rows) with `at_ms >= since_ms`.
    fn log_since(&self, since_ms: i64) -> anyhow::Result<Vec<AlertRow>>;
    /// Silences active at `now_ms`.
    fn active_silences(&self, now_ms: i64) -> anyhow::Result<Vec<SilenceRow>>;
}

/// The ClickHouse tables through the store and writer of `modelwatch run`.
#[derive(Debug, Clone)]
pub struct ClickHouseAlertStore {
    store: modelwatch_clickhouse::Store,
    writer: modelwatch_clickhouse::Writer,
    rt: tokio::runtime::Handle,
}

impl ClickHouseAlertStore {
    /// Queries run on `rt` (blocking the calling thread, never a runtime worker).
    pub fn new(
        store: modelwatch_clickhouse::Store,
        writer: modelwatch_clickhouse::Writer,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Self { store, writer, rt }
    }
}

impl AlertStore for ClickHouseAlertStore {
    fn write(&self, rows: &[AlertRow]) -> anyhow::Result<()> {
        self.rt.block_on(self.writer.insert(rows)).context("writing the alerts log")?;
        Ok(())
    }
    fn latest_states(&self) -> anyhow::Result<Vec<AlertRow>> {
        Ok(self.rt.block_on(self.store.latest_alert_states())?)
    }
    fn log_since(&self, since_ms: i64) -> anyhow::Result<Vec<AlertRow>> {
        Ok(self.rt.block_on(self.store.alert_log(since_ms))?)
    }
    fn active_silences(&self, now_ms: i64) -> anyhow::Result<Vec<SilenceRow>> {
        Ok(self.rt.block_on(self.store.active_silences(now_ms))?)
    }
}

/// One delivery attempt, as the alert log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1, 2, ...
    pub number: u32,
    /// `sent` or `failed`.
    pub status: &'static str,
    /// Wall-clock start of the attempt, ms.
    pub started_at_ms: i64,
    /// Why it failed.
    pub error: Option<String>,
}

/// A configured delivery channel.
pub trait Deliverer: Send + Sync + 'static {
    /// `webhook`, `email` or `alertmanager`: the delivery rows' channel column is `kind:name`.
    fn kind(&self) -> &'static str;
    /// Delivers `n` to the channel named `receiver`, retrying as configured, and returns every
    /// attempt. Blocking. Once `stop` is set no further retry is started.
    fn deliver(
        &self,
        n: &Notification,
        receiver: &str,
        external_url: &str,
        stop: &AtomicBool,
    ) -> Vec<AttemptRecord>;
    /// How often a still-firing group must be sent again so that the receiver keeps it (an
    /// Alertmanager expires alerts that are not re-sent); `None`: the receiver keeps alerts
    /// until told they resolved.
    fn resend_interval(&self) -> Option<Duration> {
        None
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelOutcome {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Prometheus metrics of alerting.
#[derive(Debug)]
pub struct AlertMetrics {
    firing: Gauge,
    transitions: Family<StateLabel, Counter>,
    notifications: Family<ChannelOutcome, Counter>,
    attempts: Family<ChannelOutcome, Counter>,
    latency: Family<ChannelLabel, Histogram, fn() -> Histogram>,
    log_failures: Counter,
}

impl Default for AlertMetrics {
    fn default() -> Self {
        Self {
            firing: Gauge::default(),
            transitions: Family::default(),
            notifications: Family::default(),
            attempts: Family::default(),
            latency: Family::new_with_constructor(latency_buckets),
            log_failures: Counter::default(),
        }
    }
}

impl AlertMetrics {
    /// Registers every metric under `modelwatch_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("modelwatch");
        r.register("alerts_firing", "Alerts currently firing", self.firing.clone());
        r.register(
            "alert_transitions",
            "Alert state changes written to the alerts log, per new state",
            self.transitions.clone(),
        );
        r.register(
            "notifications",
            "Notifications per channel and outcome (sent, failed after retries, dropped because \
             the channel's queue was full)",
            self.notifications.clone(),
        );
        r.register(
            "notification_attempts",
            "Delivery attempts per channel and outcome (sent, failed)",
            self.attempts.clone(),
        );
        r.register(
            "notification_latency_seconds",
            "From a notification being due to its delivery (or giving up), per channel",
            self.latency.clone(),
        );
        r.register(
            "alert_log_write_failures",
            "Failed writes of alerts log rows (retried)",
            self.log_failures.clone(),
        );
    }

    fn notification(&self, channel: &str, outcome: &str) {
        let l = ChannelOutcome { channel: channel.to_owned(), outcome: outcome.to_owned() };
        self.notifications.get_or_create(&l).inc();
    }
}

/// The running worker: [`AlertWorker::join`] waits until it has finished (after the engine
/// stopped and closed the queue).
#[derive(Debug)]
pub struct AlertWorker {
    thread: JoinHandle<()>,
}

impl AlertWorker {
    /// Waits for the worker and its delivery threads.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the alert worker panicked");
        }
    }

    /// Waits at most `timeout` (a sink task still retrying a flush after the engine failed keeps
    /// the queue open); past it the worker is left to the process exit.
    pub fn join_timeout(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!("the alert worker did not finish in {timeout:?}; not waiting");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.join();
    }
}

/// What the worker needs besides its configuration.
pub struct WorkerContext {
    /// The `alerts` and `silences` tables.
    pub store: Arc<dyn AlertStore>,
    /// The channels by name (every channel a rule names).
    pub channels: BTreeMap<String, Arc<dyn Deliverer>>,
    /// Canary pairs for baseline-relative rules.
    pub canaries: Vec<CanaryPair>,
    /// Whether the consumer is caught up (for `absent` rules).
    pub caught_up: Box<dyn Fn() -> bool + Send>,
    /// Metrics.
    pub metrics: Arc<AlertMetrics>,
    /// Set on shutdown: log writes and deliveries stop retrying.
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .field("canaries", &self.canaries)
            .finish_non_exhaustive()
    }
}

/// Starts the worker: returns the queue the engine hands written windows to
/// ([`modelwatch_engine::EngineOptions::written`]) and the worker.
pub fn start(
    config: &AlertsConfig,
    ctx: WorkerContext,
) -> anyhow::Result<(SyncSender<WrittenWindows>, AlertWorker)> {
    let mut scheduler =
        Scheduler::new(&config.scheduler, &config.rules).context("alert timings")?;
    let mut evaluator = Evaluator::new(config.rules.clone());
    evaluator.set_canary_pairs(ctx.canaries.clone());

    // Restore before the first window. The alerts of `absent` rules now: their versions may
    // never send again. Every other alert when the first window of its version arrives
    // (`Worker::adopt`), so that an instance restores only the versions of its partitions.
    let absent: Vec<&str> = config
        .rules
        .iter()
        .filter(|r| matches!(r.metric(), modelwatch_alert::rule::Metric::Absent { .. }))
        .map(|r| r.name())
        .collect();
    let states = retry_io("reading alert states", &ctx.stop, || ctx.store.latest_states())?;
    let states: Vec<AlertRow> =
        states.into_iter().filter(|r| absent.contains(&r.rule.as_str())).collect();
    let history_ms = (2 * config.scheduler.repeat_interval.as_millis() as i64).max(24 * 3_600_000);
    let (deliveries, resend) =
        restore(&mut evaluator, &mut scheduler, &states, &*ctx.store, history_ms, &ctx.stop)?;
    let firing = evaluator.firing().count();
    ctx.metrics.firing.set(firing as i64);
    tracing::info!(
        states = states.len(),
        firing,
        deliveries,
        "alert state of absent rules restored"
    );

    let (tx, rx) = mpsc::sync_channel::<WrittenWindows>(QUEUE_FLUSHES);
    let mut queues = BTreeMap::new();
    let mut threads = Vec::new();
    for (name, channel) in &ctx.channels {
        let (qtx, qrx) = mpsc::sync_channel::<Job>(QUEUE_NOTIFICATIONS);
        let d = DeliveryThread {
            name: name.clone(),
            label: format!("{}:{name}", channel.kind()),
            channel: Arc::clone(channel),
            external_url: config.external_url.clone(),
            store: Arc::clone(&ctx.store),
            metrics: Arc::clone(&ctx.metrics),
            stop: Arc::clone(&ctx.stop),
        };
        let t = std::thread::Builder::new()
            .name(format!("modelwatch-notify-{name}"))
            .spawn(move || d.run(qrx))
            .context("starting a delivery thread")?;
        queues.insert(name.clone(), qtx);
        threads.push(t);
    }
    resend_restored(&queues, resend);
    let worker = Worker {
        evaluator,
        scheduler,
        routes: RouteInference::new(),
        pairs: ctx.canaries.clone(),
        owned: HashSet::new(),
        history_ms,
        config_silences: config.silences.clone(),
        silences: Silences::new(),
        queues,
        ctx,
    };
    let thread = std::thread::Builder::new()
        .name("modelwatch-alerts".into())
        .spawn(move || {
            worker.run(rx);
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a delivery thread panicked");
                }
            }
        })
        .context("starting the alert worker")?;
    Ok((tx, AlertWorker { thread }))
}

/// Restores the state machines of `states` (latest state rows) and their groups, from the
/// successful deliveries of the last `history_ms`: the number of delivery rows read, and the
/// restored firing alerts whose firing was notified (for [`Job::Resend`]).
fn restore(
    evaluator: &mut Evaluator,
    scheduler: &mut Scheduler,
    states: &[AlertRow],
    store: &dyn AlertStore,
    history_ms: i64,
    stop: &AtomicBool,
) -> anyhow::Result<(usize, Vec<Notification>)> {
    let restored = evaluator.restore(states);
    if restored.is_empty() {
        return Ok((0, Vec::new()));
    }
    let now = wall_ms();
    let log = retry_io("reading the alerts log", stop, || store.log_since(now - history_ms))?;
    let deliveries: Vec<AlertRow> = log
        .into_iter()
        .filter(|r| !r.channel.is_empty() && r.delivery_status == "sent")
        .filter(|r| restored.iter().any(|e| e.fingerprint == r.fingerprint))
        .collect();
    scheduler.restore(&restored, &deliveries, now);
    let mut resend = scheduler.notified_firing();
    for n in &mut resend {
        n.alerts.retain(|a| restored.iter().any(|e| e.fingerprint == a.fingerprint));
    }
    resend.retain(|n| !n.alerts.is_empty());
    Ok((deliveries.len(), resend))
}

enum Job {
    /// Deliver a notification.
    Deliver { notification: Notification, due: Instant },
    /// Re-send these firing alerts now and on, if the channel needs re-sends: restored
    /// alerts whose firing was notified before (by this instance before a restart, or by the
    /// instance their partition came from), which `Scheduler::due` does not notify again.
    Resend(Notification),
    /// Stop re-sending these alerts (their versions went to another instance).
    Forget(Vec<String>),
}

/// Hands restored firing notifications to their channels for re-sending.
fn resend_restored(queues: &BTreeMap<String, SyncSender<Job>>, notifications: Vec<Notification>) {
    for n in notifications {
        for channel in &n.channels {
            if let Some(q) = queues.get(channel) {
                // A full queue: the next regular re-send or notification covers it.
                let _ = q.try_send(Job::Resend(n.clone()));
            }
        }
    }
}

struct Worker {
    evaluator: Evaluator,
    scheduler: Scheduler,
    /// Canary pairs inferred from the `route` attribute for models without `[[canary]]`.
    routes: RouteInference,
    /// The pairs in force: configured, then inferred.
    pairs: Vec<CanaryPair>,
    /// The (model, version) whose alert state this instance holds: restored from the log when
    /// their first window arrived, dropped when their partitions were revoked.
    owned: HashSet<(String, String)>,
    /// How far back deliveries are read when restoring.
    history_ms: i64,
    config_silences: Vec<Silence>,
    silences: Silences,
    queues: BTreeMap<String, SyncSender<Job>>,
    ctx: WorkerContext,
}

impl Worker {
    fn run(mut self, rx: Receiver<WrittenWindows>) {
        let mut next_tick = Instant::now();
        let mut next_silences = Instant::now();
        loop {
            if Instant::now() >= next_silences {
                next_silences = Instant::now() + SILENCE_RELOAD;
                self.reload_silences();
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                let events = self.evaluator.tick(wall_ms(), (self.ctx.caught_up)());
                self.apply(events);
            }
            self.send_due();
            let until_due = self
                .scheduler
                .next_due()
                .map_or(TICK, |d| Duration::from_millis((d - wall_ms()).max(0) as u64));
            let wait = until_due.min(next_tick.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait.max(Duration::from_millis(10))) {
                Ok(w) => {
                    // Versions whose partitions went to another instance: that instance
                    // notifies them from now on.
                    for (model, version) in &w.released {
                        self.release(model, version);
                    }
                    // Versions seen for the first time (since the start, or since they were
                    // released): their state is read from the log first.
                    let keys = w
                        .window_stats
                        .iter()
                        .map(|r| (&r.model, &r.version))
                        .chain(w.metric_stats.iter().map(|r| (&r.model, &r.version)))
                        .chain(w.drift_scores.iter().map(|r| (&r.model, &r.version)))
                        .chain(w.canary_verdicts.iter().map(|r| (&r.model, &r.canary_version)));
                    let new: BTreeSet<(String, String)> = keys
                        .filter(|&(m, v)| !self.owned.contains(&(m.clone(), v.clone())))
                        .map(|(m, v)| (m.clone(), v.clone()))
                        .collect();
                    if !new.is_empty() && self.adopt(new).is_err() {
                        break; // stopping while ClickHouse is unreachable
                    }
                    self.infer_pairs(&w);
                    // Versions the engine stopped tracking are never evaluated again: their
                    // alerts end now (`absent` rules keep reporting them).
                    for (model, version) in &w.evicted {
                        let events = self.evaluator.retire(model, version, 0, false);
                        self.apply(events);
                    }
                    let events = self.evaluator.observe(WindowRows {
                        windows: &w.window_stats,
                        metrics: &w.metric_stats,
                        drift: &w.drift_scores,
                        verdicts: &w.canary_verdicts,
                    });
                    self.apply(events);
                    let firing: Vec<(String, i64)> =
                        self.evaluator.firing().map(|(f, at)| (f.to_owned(), at)).collect();
                    for (f, at) in firing {
                        self.scheduler.refresh(&f, at);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // The engine stopped: what is due now still goes out; the rest waits for the restart
        // (restored from the log).
        self.send_due();
        tracing::info!("alert worker stopped");
    }

    /// Reads the latest state of `keys` from the log and takes them on.
    fn adopt(&mut self, keys: BTreeSet<(String, String)>) -> anyhow::Result<()> {
        let store = Arc::clone(&self.ctx.store);
        let states = retry_io("reading alert states", &self.ctx.stop, || store.latest_states())?;
        let states: Vec<AlertRow> = states
            .into_iter()
            .filter(|r| keys.contains(&(r.model.clone(), r.version.clone())))
            .collect();
        let (deliveries, resend) = restore(
            &mut self.evaluator,
            &mut self.scheduler,
            &states,
            &*store,
            self.history_ms,
            &self.ctx.stop,
        )?;
        resend_restored(&self.queues, resend);
        if !states.is_empty() {
            self.ctx.metrics.firing.set(self.evaluator.firing().count() as i64);
            tracing::info!(
                versions = keys.len(),
                states = states.len(),
                deliveries,
                "alert state restored"
            );
        }
        self.owned.extend(keys);
        Ok(())
    }

    /// Updates the pairs inferred from the `route` attribute with a flush's windows, before
    /// they are evaluated.
    fn infer_pairs(&mut self, w: &WrittenWindows) {
        for (model, version) in w.evicted.iter().chain(&w.released) {
            self.routes.forget(model, version);
        }
        for r in &w.routes {
            self.routes.observe(&r.model, &r.version, r.window_end_ms, r.stable, r.canary);
        }
        let configured = &self.ctx.canaries;
        let mut pairs = configured.clone();
        pairs.extend(self.routes.pairs(|m| configured.iter().any(|p| p.model == m)));
        if pairs != self.pairs {
            let inferred: Vec<String> = pairs[configured.len()..]
                .iter()
                .map(|p| format!("{}: {} -> {}", p.model, p.baseline, p.canary))
                .collect();
            tracing::info!(?inferred, "canary pairs inferred from the route attribute");
            self.evaluator.set_canary_pairs(pairs.clone());
            self.pairs = pairs;
        }
    }

    /// Lets a version go to the instance that owns its partitions now.
    fn release(&mut self, model: &str, version: &str) {
        let gone = self.evaluator.release(model, version);
        self.owned.remove(&(model.to_owned(), version.to_owned()));
        if gone.is_empty() {
            return;
        }
        self.scheduler.forget(&gone);
        for q in self.queues.values() {
            // A full queue keeps re-sending the alerts until they resolve elsewhere: harmless
            // for receivers, which take the same alert again.
            let _ = q.try_send(Job::Forget(gone.clone()));
        }
        self.ctx.metrics.firing.set(self.evaluator.firing().count() as i64);
        tracing::info!(
            model,
            version,
            alerts = gone.len(),
            "alert state released to the next owner"
        );
    }

    /// Writes the events to the log, then hands them to the scheduler.
    fn apply(&mut self, events: Vec<AlertEvent>) {
        if events.is_empty() {
            return;
        }
        let now = wall_ms();
        let rows: Vec<AlertRow> = events.iter().map(|e| e.to_row(now as u64)).collect();
        write_log(&*self.ctx.store, &rows, &self.ctx.metrics, &self.ctx.stop);
        for e in &events {
            let state = StateLabel { state: e.state.as_str().to_owned() };
            self.ctx.metrics.transitions.get_or_create(&state).inc();
            if matches!(e.state, AlertState::Firing | AlertState::Resolved) {
                tracing::info!(
                    rule = %e.rule, model = %e.model, version = %e.version,
                    state = e.state.as_str(), value = ?e.value, at_ms = e.at_ms, "alert"
                );
            }
            self.scheduler.push(e, now);
        }
        self.ctx.metrics.firing.set(self.evaluator.firing().count() as i64);
    }

    fn send_due(&mut self) {
        let now = wall_ms();
        if self.scheduler.next_due().is_none_or(|d| d > now) {
            return;
        }
        for n in self.scheduler.due(now, &self.silences) {
            for channel in &n.channels {
                let Some(q) = self.queues.get(channel) else { continue };
                let job = Job::Deliver { notification: n.clone(), due: Instant::now() };
                match q.try_send(job) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.ctx.metrics.notification(channel, "dropped");
                        tracing::error!(
                            channel, group = %n.group_key,
                            "channel queue full: notification dropped"
                        );
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.ctx.metrics.notification(channel, "dropped");
                    }
                }
            }
        }
    }

    fn reload_silences(&mut self) {
        let rows = match self.ctx.store.active_silences(wall_ms()) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading silences failed; keeping the last ones");
                return;
            }
        };
        let mut s = Silences::new();
        for e in s.replace_from_rows(&rows) {
            tracing::warn!(error = %e, "ignoring a stored silence");
        }
        for c in &self.config_silences {
            s.upsert(c.clone());
        }
        self.silences = s;
    }
}

struct DeliveryThread {
    name: String,
    label: String,
    channel: Arc<dyn Deliverer>,
    external_url: String,
    store: Arc<dyn AlertStore>,
    metrics: Arc<AlertMetrics>,
    stop: Arc<AtomicBool>,
}

impl DeliveryThread {
    fn run(self, rx: Receiver<Job>) {
        let resend = self.channel.resend_interval();
        // Groups whose latest notification has firing alerts, for receivers that need them
        // re-sent: (their firing alerts, when last sent).
        let mut firing: BTreeMap<String, (Notification, Instant)> = BTreeMap::new();
        loop {
            let job = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match job {
                Some(Job::Deliver { notification, due }) => {
                    self.deliver(&notification, due);
                    if resend.is_some() {
                        let mut n = notification;
                        n.alerts.retain(|a| a.status == NotificationStatus::Firing);
                        if n.alerts.is_empty() {
                            firing.remove(&n.group_key);
                        } else {
                            n.status = NotificationStatus::Firing;
                            firing.insert(n.group_key.clone(), (n, Instant::now()));
                        }
                    }
                }
                Some(Job::Resend(n)) => {
                    if let Some(every) = resend {
                        let long_ago =
                            Instant::now().checked_sub(every).unwrap_or_else(Instant::now);
                        firing.insert(n.group_key.clone(), (n, long_ago));
                    }
                }
                Some(Job::Forget(gone)) => {
                    for (n, _) in firing.values_mut() {
                        n.alerts.retain(|a| !gone.contains(&a.fingerprint));
                    }
                    firing.retain(|_, (n, _)| !n.alerts.is_empty());
                }
                None => {}
            }
            let Some(every) = resend else { continue };
            for (n, last) in firing.values_mut() {
                if last.elapsed() < every || self.stop.load(Ordering::Relaxed) {
                    continue;
                }
                *last = Instant::now();
                let attempts = self.channel.deliver(n, &self.name, &self.external_url, &self.stop);
                let sent = attempts.last().is_some_and(|a| a.status == "sent");
                self.metrics
                    .notification(&self.name, if sent { "resent" } else { "resend_failed" });
                if !sent {
                    let error = attempts.last().and_then(|a| a.error.clone()).unwrap_or_default();
                    tracing::warn!(channel = %self.label, group = %n.group_key, error, "re-sending firing alerts failed");
                }
            }
        }
    }

    /// Delivers one notification and writes a delivery row per attempt and alert.
    fn deliver(&self, n: &Notification, due: Instant) {
        let attempts = self.channel.deliver(n, &self.name, &self.external_url, &self.stop);
        if attempts.last().is_some_and(|a| a.status == "sent") && fail_point(ABORT_AFTER_SEND) {
            tracing::error!(channel = %self.label, "fail point {ABORT_AFTER_SEND}: aborting");
            std::process::abort();
        }
        let now = wall_ms() as u64;
        let mut rows = Vec::with_capacity(attempts.len() * n.alerts.len());
        for a in &attempts {
            let outcome =
                ChannelOutcome { channel: self.name.clone(), outcome: a.status.to_owned() };
            self.metrics.attempts.get_or_create(&outcome).inc();
            for alert in &n.alerts {
                rows.push(alert.delivery_row(
                    n,
                    &self.label,
                    a.number,
                    a.status,
                    a.started_at_ms,
                    now,
                ));
            }
        }
        write_log(&*self.store, &rows, &self.metrics, &self.stop);
        let sent = attempts.last().is_some_and(|a| a.status == "sent");
        self.metrics.notification(&self.name, if sent { "sent" } else { "failed" });
        self.metrics
            .latency
            .get_or_create(&ChannelLabel { channel: self.name.clone() })
            .observe(due.elapsed().as_secs_f64());
        if sent {
            tracing::info!(
                channel = %self.label, group = %n.group_key, status = n.status.as_str(),
                alerts = n.alerts.len(), attempts = attempts.len(), "notification sent"
            );
        } else {
            let error = attempts.last().and_then(|a| a.error.clone()).unwrap_or_default();
            tracing::error!(
                channel = %self.label, group = %n.group_key, attempts = attempts.len(),
                error, "notification failed"
            );
        }
    }
}

/// The test-only fail point between sending a notification and recording its delivery: with
/// `MODELWATCH_TEST_FAILPOINT=abort-after-send` the process aborts right after a notification
/// was sent, before its delivery rows are written (tests of the crash that repeats one
/// notification). Never set it in production.
pub const ABORT_AFTER_SEND: &str = "abort-after-send";

/// Whether the fail point `name` is armed (`MODELWATCH_TEST_FAILPOINT`, read once).
fn fail_point(name: &str) -> bool {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ARMED.get_or_init(|| std::env::var("MODELWATCH_TEST_FAILPOINT").ok()).as_deref() == Some(name)
}

/// Writes log rows, retrying with backoff; once stopping, gives up after a few attempts.
fn write_log(store: &dyn AlertStore, rows: &[AlertRow], metrics: &AlertMetrics, stop: &AtomicBool) {
    if rows.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.write(rows) {
            Ok(()) => return,
            Err(e) => {
                metrics.log_failures.inc();
                if stop.load(Ordering::Relaxed) && attempt >= 3 {
                    tracing::error!(error = %format!("{e:#}"), rows = rows.len(), "alerts log rows lost at shutdown");
                    return;
                }
                tracing::warn!(error = %format!("{e:#}"), "writing the alerts log failed; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Calls `f` until it succeeds (backing off up to 10 s), or until `stop` is set.
pub(crate) fn retry_io<T>(
    what: &str,
    stop: &AtomicBool,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if stop.load(Ordering::Relaxed) => return Err(e.context(what.to_owned())),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "{what} failed; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn wall_ms() -> i64 {
    modelwatch_clickhouse::now_ms() as i64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use modelwatch_clickhouse::rows::WindowStatsRow;
    use modelwatch_engine::RouteCount;

    use super::*;
    use crate::config::{Config, Environment};

    /// Every row written, in order, over the in-memory tables the worker reads back.
    #[derive(Default)]
    struct MemStore {
        rows: Mutex<Vec<AlertRow>>,
        tables: crate::history::MemoryHistory,
    }

    impl AlertStore for MemStore {
        fn write(&self, rows: &[AlertRow]) -> anyhow::Result<()> {
            self.rows.lock().unwrap().extend_from_slice(rows);
            self.tables.write(rows)
        }
        fn latest_states(&self) -> anyhow::Result<Vec<AlertRow>> {
            self.tables.latest_states()
        }
        fn log_since(&self, since_ms: i64) -> anyhow::Result<Vec<AlertRow>> {
            self.tables.log_since(since_ms)
        }
        fn active_silences(&self, now_ms: i64) -> anyhow::Result<Vec<SilenceRow>> {
            self.tables.active_silences(now_ms)
        }
    }

    /// Records what it is given; fails the first `fail_first` attempts of every notification.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<(String, Notification)>>,
        fail_first: u32,
        resend: Option<Duration>,
    }

    impl Deliverer for Recorder {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn deliver(
            &self,
            n: &Notification,
            receiver: &str,
            _external_url: &str,
            _stop: &AtomicBool,
        ) -> Vec<AttemptRecord> {
            self.sent.lock().unwrap().push((receiver.to_owned(), n.clone()));
            let mut out = Vec::new();
            for number in 1..=self.fail_first + 1 {
                let sent = number > self.fail_first;
                out.push(AttemptRecord {
                    number,
                    status: if sent { "sent" } else { "failed" },
                    started_at_ms: wall_ms(),
                    error: (!sent).then(|| "HTTP 500".to_owned()),
                });
            }
            out
        }
        fn resend_interval(&self) -> Option<Duration> {
            self.resend
        }
    }

    const CONFIG: &str = r#"
[kafka]
brokers = ["localhost:9092"]
inference_topics = ["inference"]
[clickhouse]
url = "http://localhost:8123"
[[canary]]
model = "fraud"
baseline = "v1"
canary = "v2"
[alerts]
group_wait = "300ms"
group_interval = "1s"
[[alerts.rules]]
name = "canary_p99"
metric = "latency_p99_ms"
relative_to = "baseline"
op = ">"
threshold = 1.5
channels = ["hook"]
[alerts.channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/"
"#;

    fn window(version: &str, end: i64, p99: f64) -> WindowStatsRow {
        WindowStatsRow {
            model: "fraud".into(),
            version: version.into(),
            window_end_ms: end,
            window_start_ms: end - 300_000,
            requests: 500,
            errors: 0,
            timeouts: 0,
            error_rate: Some(0.0),
            throughput_rps: 1.0,
            latency_p50_ms: Some(p99 / 2.0),
            latency_p90_ms: Some(p99),
            latency_p99_ms: Some(p99),
            latency_p999_ms: Some(p99),
            latency_max_ms: Some(p99),
            tokens_in: 0,
            tokens_out: 0,
            ttft_p50_ms: None,
            ttft_p99_ms: None,
            written_at_ms: 0,
        }
    }

    fn pair(end: i64, canary_p99: f64) -> WrittenWindows {
        WrittenWindows {
            window_stats: vec![window("v1", end, 100.0), window("v2", end, canary_p99)],
            ..WrittenWindows::default()
        }
    }

    fn worker(
        store: &Arc<MemStore>,
        hook: &Arc<Recorder>,
    ) -> (SyncSender<WrittenWindows>, AlertWorker) {
        worker_of(CONFIG, store, hook)
    }

    fn worker_of(
        config: &str,
        store: &Arc<MemStore>,
        hook: &Arc<Recorder>,
    ) -> (SyncSender<WrittenWindows>, AlertWorker) {
        let config = Config::from_toml_str(config, &Environment::default()).unwrap();
        let canaries = config
            .canaries()
            .iter()
            .map(|c| CanaryPair {
                model: c.model.clone(),
                baseline: c.baseline.clone(),
                canary: c.canary.clone(),
            })
            .collect();
        let hook: Arc<dyn Deliverer> = Arc::clone(hook) as Arc<dyn Deliverer>;
        let ctx = WorkerContext {
            store: Arc::clone(store) as Arc<dyn AlertStore>,
            channels: [("hook".to_owned(), hook)].into_iter().collect(),
            canaries,
            caught_up: Box::new(|| true),
            metrics: Arc::default(),
            stop: Arc::default(),
        };
        start(config.alerts(), ctx).unwrap()
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn fires_once_resolves_once_and_logs_state_before_delivery() {
        let store = Arc::new(MemStore::default());
        let hook = Arc::new(Recorder { fail_first: 1, ..Recorder::default() });
        let (tx, w) = worker(&store, &hook);
        let t0 = wall_ms() - 10_000;
        tx.send(pair(t0, 250.0)).unwrap();
        tx.send(pair(t0 + 1000, 260.0)).unwrap();
        wait_for("the firing notification", || hook.sent.lock().unwrap().len() == 1);
        tx.send(pair(t0 + 2000, 110.0)).unwrap();
        wait_for("the resolved notification", || hook.sent.lock().unwrap().len() == 2);
        drop(tx);
        w.join();

        let sent = hook.sent.lock().unwrap();
        let (receiver, firing) = &sent[0];
        assert_eq!(receiver, "hook");
        assert_eq!(firing.status.as_str(), "firing");
        assert_eq!(firing.alerts.len(), 1);
        let a = &firing.alerts[0];
        assert_eq!(a.labels["alertname"], "canary_p99");
        assert_eq!(a.labels["model"], "fraud");
        assert_eq!(a.labels["version"], "v2");
        assert_eq!(a.value, Some(2.5), "the ratio of the window that made it fire");
        assert_eq!(a.starts_at_ms, t0);
        assert_eq!(sent[1].1.status.as_str(), "resolved");
        assert_eq!(sent[1].1.alerts[0].ends_at_ms, Some(t0 + 2000));

        let rows = store.rows.lock().unwrap();
        let states: Vec<(&str, u64)> = rows
            .iter()
            .filter(|r| r.channel.is_empty())
            .map(|r| (r.state.as_str(), r.seq))
            .collect();
        assert_eq!(states, [("firing", 1), ("resolved", 2)]);
        let deliveries: Vec<(&str, u32, &str, &str)> = rows
            .iter()
            .filter(|r| !r.channel.is_empty())
            .map(|r| (r.channel.as_str(), r.attempt, r.state.as_str(), r.delivery_status.as_str()))
            .collect();
        assert_eq!(
            deliveries,
            [
                ("fake:hook", 1, "firing", "failed"),
                ("fake:hook", 2, "firing", "sent"),
                ("fake:hook", 1, "resolved", "failed"),
                ("fake:hook", 2, "resolved", "sent"),
            ]
        );
        // The state row of each notification precedes its delivery rows.
        let first_delivery = rows.iter().position(|r| !r.channel.is_empty()).unwrap();
        assert!(rows[..first_delivery].iter().any(|r| r.state == "firing"));
    }

    #[test]
    fn the_alerts_of_an_evicted_version_resolve() {
        let store = Arc::new(MemStore::default());
        let hook = Arc::new(Recorder::default());
        let (tx, w) = worker(&store, &hook);
        let t0 = wall_ms() - 10_000;
        tx.send(pair(t0, 250.0)).unwrap();
        wait_for("the firing notification", || hook.sent.lock().unwrap().len() == 1);
        tx.send(WrittenWindows {
            evicted: vec![("fraud".into(), "v2".into())],
            ..WrittenWindows::default()
        })
        .unwrap();
        wait_for("the resolved notification", || hook.sent.lock().unwrap().len() == 2);
        drop(tx);
        w.join();
        let sent = hook.sent.lock().unwrap();
        assert_eq!(sent[1].1.status.as_str(), "resolved");
        // Resolved just after the last window it was evaluated on.
        assert_eq!(sent[1].1.alerts[0].ends_at_ms, Some(t0 + 1));
    }

    #[test]
    fn firing_alerts_are_re_sent_to_receivers_that_forget_them_until_resolved() {
        let store = Arc::new(MemStore::default());
        let hook =
            Arc::new(Recorder { resend: Some(Duration::from_millis(400)), ..Recorder::default() });
        let (tx, w) = worker(&store, &hook);
        let t0 = wall_ms() - 10_000;
        tx.send(pair(t0, 250.0)).unwrap();
        wait_for("two re-sends", || hook.sent.lock().unwrap().len() >= 3);
        tx.send(pair(t0 + 1000, 100.0)).unwrap();
        wait_for("the resolution", || {
            hook.sent.lock().unwrap().iter().any(|(_, n)| n.status == NotificationStatus::Resolved)
        });
        std::thread::sleep(Duration::from_millis(1200));
        drop(tx);
        w.join();
        let sent = hook.sent.lock().unwrap();
        let last = sent.iter().rposition(|(_, n)| n.status == NotificationStatus::Resolved);
        assert_eq!(last, Some(sent.len() - 1), "nothing re-sent after the resolution");
        assert!(sent[..sent.len() - 1].iter().all(|(_, n)| n.status == NotificationStatus::Firing));
        // Re-sends are not logged: one delivery row per notification.
        let deliveries =
            store.rows.lock().unwrap().iter().filter(|r| !r.channel.is_empty()).count();
        assert_eq!(deliveries, 2);
    }

    #[test]
    fn a_restart_and_replay_do_not_notify_again() {
        let store = Arc::new(MemStore::default());
        let hook = Arc::new(Recorder::default());
        let t0 = wall_ms() - 10_000;
        let (tx, w) = worker(&store, &hook);
        tx.send(pair(t0, 250.0)).unwrap();
        wait_for("the firing notification", || hook.sent.lock().unwrap().len() == 1);
        drop(tx);
        w.join();

        // Restart: the same windows are replayed, then the canary recovers.
        let (tx, w) = worker(&store, &hook);
        tx.send(pair(t0, 250.0)).unwrap();
        tx.send(pair(t0 + 1000, 250.0)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(hook.sent.lock().unwrap().len(), 1, "no second firing notification");
        tx.send(pair(t0 + 2000, 100.0)).unwrap();
        wait_for("the resolved notification", || hook.sent.lock().unwrap().len() == 2);
        drop(tx);
        w.join();
        let sent = hook.sent.lock().unwrap();
        assert_eq!(sent[1].1.status.as_str(), "resolved");
        let states: Vec<u64> = store
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.channel.is_empty())
            .map(|r| r.seq)
            .collect();
        assert_eq!(states, [1, 2], "the replayed windows wrote no state row");
    }

    #[test]
    fn a_version_moved_to_another_instance_is_neither_repeated_nor_lost() {
        // Two instances of one group over one store; both start before anything fires.
        let store = Arc::new(MemStore::default());
        // Receivers that forget alerts not re-sent (Alertmanager).
        let resending = || {
            Arc::new(Recorder { resend: Some(Duration::from_millis(200)), ..Recorder::default() })
        };
        let (hook_a, hook_b) = (resending(), resending());
        let (tx_a, a) = worker(&store, &hook_a);
        let (tx_b, b) = worker(&store, &hook_b);
        let t0 = wall_ms() - 10_000;
        tx_a.send(pair(t0, 250.0)).unwrap();
        wait_for("the firing notification", || hook_a.sent.lock().unwrap().len() == 1);
        wait_for("a re-send", || hook_a.sent.lock().unwrap().len() >= 2);

        // Its partition moves to B: A lets it go and stops re-sending it; B replays the last
        // window before going on.
        tx_a.send(WrittenWindows {
            released: vec![("fraud".into(), "v1".into()), ("fraud".into(), "v2".into())],
            ..WrittenWindows::default()
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let sent_by_a = hook_a.sent.lock().unwrap().len();
        tx_b.send(pair(t0, 250.0)).unwrap();
        tx_b.send(pair(t0 + 1000, 260.0)).unwrap();
        // B re-sends the firing alert it took over (a re-send, not a new notification).
        wait_for("B's re-send", || !hook_b.sent.lock().unwrap().is_empty());
        tx_b.send(pair(t0 + 2000, 110.0)).unwrap();
        let resolved = |r: &Arc<Recorder>| {
            r.sent.lock().unwrap().iter().any(|(_, n)| n.status.as_str() == "resolved")
        };
        wait_for("the resolved notification", || resolved(&hook_b));
        assert_eq!(hook_a.sent.lock().unwrap().len(), sent_by_a, "A went on re-sending");
        drop((tx_a, tx_b));
        a.join();
        b.join();

        let b_sent = hook_b.sent.lock().unwrap();
        let (_, resolution) = b_sent.iter().find(|(_, n)| n.status.as_str() == "resolved").unwrap();
        assert_eq!(resolution.alerts[0].starts_at_ms, t0, "the same episode");
        // One notification each way, A's firing and B's resolution: re-sends are not logged.
        let deliveries: Vec<(String, String)> = store
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.channel.is_empty())
            .map(|r| (r.state.clone(), r.delivery_status.clone()))
            .collect();
        let sent = |state: &str| (state.to_owned(), "sent".to_owned());
        assert_eq!(deliveries, [sent("firing"), sent("resolved")]);
        let states: Vec<(String, u64)> = store
            .rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.channel.is_empty())
            .map(|r| (r.state.clone(), r.seq))
            .collect();
        assert_eq!(states, [("firing".to_owned(), 1), ("resolved".to_owned(), 2)]);
    }

    #[test]
    fn without_a_canary_entry_the_pair_is_inferred_from_the_route_attribute() {
        let config = CONFIG
            .replace("[[canary]]\nmodel = \"fraud\"\nbaseline = \"v1\"\ncanary = \"v2\"\n", "");
        assert!(!config.contains("[[canary]]"));
        let store = Arc::new(MemStore::default());
        let hook = Arc::new(Recorder::default());
        let (tx, w) = worker_of(&config, &store, &hook);
        let t0 = wall_ms() - 10_000;
        let routed = |end: i64, canary_p99: f64| {
            let mut f = pair(end, canary_p99);
            f.routes = vec![
                RouteCount {
                    model: "fraud".into(),
                    version: "v1".into(),
                    window_end_ms: end,
                    stable: 500,
                    canary: 0,
                },
                RouteCount {
                    model: "fraud".into(),
                    version: "v2".into(),
                    window_end_ms: end,
                    stable: 3,
                    canary: 497,
                },
            ];
            f
        };
        // No routes: no pair, so the baseline-relative rule cannot judge v2.
        tx.send(pair(t0, 250.0)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert!(hook.sent.lock().unwrap().is_empty());
        // Routed: v1 stable, v2 canary; the 2.5x p99 fires.
        tx.send(routed(t0 + 1000, 250.0)).unwrap();
        wait_for("the firing notification", || hook.sent.lock().unwrap().len() == 1);
        drop(tx);
        w.join();
        let sent = hook.sent.lock().unwrap();
        let a = &sent[0].1.alerts[0];
        assert_eq!((a.labels["version"].as_str(), a.value), ("v2", Some(2.5)));
    }
}
