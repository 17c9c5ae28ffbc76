//! Checkpoints (delivery.md): a run that crashes, restores every partition from its checkpoint
//! into a fresh tracker and replays from the resume offsets writes the same rows as a run that
//! did not crash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use modelwatch_core::config::{DriftSpec, Limits, WindowSpec};
use modelwatch_core::event::{InferenceRecord, MetricKind, MetricRecord};
use modelwatch_core::latency::LatencySpec;
use modelwatch_core::metrics::CounterSeries;
use modelwatch_core::{
    Admission, CoreConfig, Output, PaneView, PartitionCheckpoint, Source, Tracker, WindowView,
};
use proptest::prelude::*;

/// Bin counts by feature name.
type Features = BTreeMap<String, Vec<u64>>;
/// Per metric: (name, count, sum, min, max, last, increase or rate), floats as bits.
type Metrics = Vec<(String, u64, [u64; 5])>;

#[derive(Debug, Clone, PartialEq)]
struct PaneRow {
    requests: u64,
    errors: u64,
    latency: Vec<(u32, u32)>,
    bins: Features,
    metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq)]
struct WindowRow {
    requests: u64,
    errors: u64,
    p50: Option<u64>,
    p99: Option<u64>,
    bins: Features,
    metrics: Metrics,
    /// KL against the reference per feature (bits); empty without a complete reference.
    ref_kl: Vec<(String, Option<u64>)>,
}

/// Every row an output saw, keyed like the ClickHouse tables (a later row replaces an earlier).
#[derive(Debug, Default, Clone)]
struct Rows {
    /// (model, version, partition, pane start)
    panes: BTreeMap<(String, String, u32, i64), PaneRow>,
    /// (model, version, window end)
    windows: BTreeMap<(String, String, i64), WindowRow>,
}

fn features(v: &modelwatch_core::StatsView<'_>) -> Features {
    v.features().map(|(f, c)| (f.name.to_owned(), c.to_vec())).collect()
}

/// By name: the order of metric ids depends on which name came first since the start.
fn metrics(v: &modelwatch_core::StatsView<'_>, span_ms: Option<i64>) -> Metrics {
    let mut m: Metrics = v
        .metrics()
        .map(|(n, m)| {
            let inc = match span_ms {
                Some(s) => m.rate_per_s(s).unwrap_or(f64::NAN),
                None => m.increase,
            };
            let f = [m.sum, m.min, m.max, m.last, inc].map(f64::to_bits);
            (n.to_owned(), m.count, f)
        })
        .collect();
    m.sort_by(|a, b| a.0.cmp(&b.0));
    m
}

impl Output for Rows {
    fn pane_closed(&mut self, p: &PaneView<'_>) {
        let v = p.view();
        let k = (v.model().to_owned(), v.version().to_owned(), p.partition(), p.start_ms());
        let row = PaneRow {
            requests: v.requests(),
            errors: v.errors(),
            latency: v.latency_buckets().iter().collect(),
            bins: features(v),
            metrics: metrics(v, None),
        };
        assert!(self.panes.insert(k.clone(), row).is_none(), "pane closed twice: {k:?}");
    }
    fn window_closed(&mut self, w: &WindowView<'_>) {
        let v = w.view();
        let k = (v.model().to_owned(), v.version().to_owned(), w.end_ms());
        let row = WindowRow {
            requests: v.requests(),
            errors: v.errors(),
            p50: w.latency().map(|l| l.p50_ms.to_bits()),
            p99: w.latency().map(|l| l.p99_ms.to_bits()),
            bins: features(v),
            metrics: metrics(v, Some(w.end_ms() - w.start_ms())),
            ref_kl: w
                .drift_vs_reference()
                .map(|(f, s)| (f.name.to_owned(), s.map(|s| s.kl.to_bits())))
                .collect(),
        };
        assert!(self.windows.insert(k.clone(), row).is_none(), "window emitted twice: {k:?}");
    }
}

/// Window 30 s, slide 10 s, lateness 2 s; layouts freeze after 10 values; references last
/// 30 s (three panes), so crashes fall inside them; two versions per model at most.
fn cfg() -> CoreConfig {
    let s = Duration::from_secs;
    CoreConfig {
        windows: WindowSpec::new(s(30), s(10), s(2), s(60), s(30)).unwrap(),
        drift: DriftSpec::new(10, s(30), 4, 3, 1e-4).unwrap(),
        limits: Limits::new(4, 2, 50, s(3_600)).unwrap(),
        latency: LatencySpec::default(),
    }
}

#[derive(Debug, Clone)]
enum Body {
    Inference { latency: f64, status: u8, x: f64, cat: u8 },
    Counter { host: u8, value: f64 },
    Gauge { value: f64 },
}

#[derive(Debug, Clone)]
struct Ev {
    t: i64,
    model: u8,
    version: u8,
    body: Body,
}

/// An event with its place in the log: (partition, offset).
#[derive(Debug, Clone)]
struct Logged {
    partition: u32,
    offset: i64,
    ev: Ev,
}

struct Feeder {
    inf: InferenceRecord,
    met: MetricRecord,
}

impl Feeder {
    fn new() -> Self {
        Self { inf: InferenceRecord::default(), met: MetricRecord::default() }
    }

    fn feed(&mut self, tr: &mut Tracker, l: &Logged) -> Admission {
        let e = &l.ev;
        let src = Source { partition: l.partition, offset: l.offset, record_ts_ms: e.t + 1_000 };
        let (model, version) = (format!("m{}", e.model), format!("v{}", e.version));
        match e.body {
            Body::Inference { latency, status, x, cat } => {
                let r = &mut self.inf;
                r.clear();
                r.event_time_ms = e.t;
                r.set_model(&model);
                r.set_version(&version);
                r.latency_ms = latency;
                r.set_status(["ok", "ok", "ok", "error", "timeout"][usize::from(status % 5)]);
                r.push_feature("x", x);
                r.push_category("c", ["a", "b", "c", "d"][usize::from(cat % 4)]);
                r.prediction = Some(x / 10.0);
                tr.record_inference(src, r)
            }
            Body::Counter { .. } | Body::Gauge { .. } => {
                let m = &mut self.met;
                m.clear();
                m.event_time_ms = e.t;
                m.set_model(&model);
                m.set_version(&version);
                match e.body {
                    Body::Counter { host, value } => {
                        m.set_name("requests_total");
                        m.kind = MetricKind::Counter;
                        m.value = value;
                        m.push_attribute("host", ["h0", "h1", "h2"][usize::from(host % 3)]);
                    }
                    Body::Gauge { value } => {
                        m.set_name("gpu");
                        m.kind = MetricKind::Gauge;
                        m.value = value;
                    }
                    Body::Inference { .. } => unreachable!(),
                }
                tr.record_metric(src, m)
            }
        }
    }
}

/// Closes everything: ticks twice far in the (wall-clock) future so every partition goes idle.
fn close_all(tr: &mut Tracker, out: &mut Rows, last_t: i64) {
    tr.tick(last_t, out);
    tr.tick(last_t + 24 * 3_600_000, out);
}

/// Places events in partitions by model (so every (model, version) lives in one partition) and
/// numbers them per partition.
fn log(events: &[Ev], partitions: u32) -> Vec<Logged> {
    let mut next = BTreeMap::<u32, i64>::new();
    events
        .iter()
        .map(|e| {
            let partition = u32::from(e.model) % partitions;
            let o = next.entry(partition).or_default();
            *o += 1;
            Logged { partition, offset: *o - 1, ev: e.clone() }
        })
        .collect()
}

/// Eleven inference events per model in the first pane, so every layout is frozen long
/// before any checkpoint's cutoff.
fn warmup(models: u8) -> Vec<Ev> {
    let mut v = Vec::new();
    for i in 0..11u8 {
        for model in 0..models {
            let x = f64::from(i) * 2.5;
            let body = Body::Inference { latency: 1.0 + x, status: i, x, cat: i };
            v.push(Ev { t: 500 + i64::from(i) * 40, model, version: 0, body });
        }
    }
    v
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => (0.1f64..500.0, 0u8..5, -5.0f64..30.0, 0u8..4)
            .prop_map(|(latency, status, x, cat)| Body::Inference { latency, status, x, cat }),
        // Small values so that increases and resets (a decrease) both happen.
        2 => (0u8..3, 0u32..40).prop_map(|(host, v)| Body::Counter { host, value: f64::from(v) }),
        1 => (0.0f64..100.0).prop_map(|value| Body::Gauge { value }),
    ]
}

/// Events about 450 ms apart with up to 3 s of disorder (some late), after the warmup. Only
/// v0 for the first 50 s; then v1 and v2 come and compete for the second version slot, and
/// their references (30 s from their first pane) are still filling at the crash.
fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((-3_000i64..3_000, 0u8..3, 0u8..3, arb_body()), MIN_EVENTS..260).prop_map(
        |v| {
            let mut events = warmup(3);
            for (i, (jitter, model, version, body)) in v.into_iter().enumerate() {
                let t = 2_000 + i as i64 * 450 + jitter;
                let version = if i < 110 { 0 } else { version };
                events.push(Ev { t, model, version, body });
            }
            events
        },
    )
}

/// Events after the warmup; crashes come after the first `CRASH_AFTER` of them (about 60 s),
/// so that every cutoff is past the warmup's pane.
const MIN_EVENTS: usize = 140;
const CRASH_AFTER: usize = 130;

/// The engine's rule: the checkpoint of every partition, the references as of their cutoffs,
/// and each partition's counter series as of its resume offset.
fn take_checkpoints(
    tr: &Tracker,
    logged: &[Logged],
    consumed: usize,
    partitions: u32,
) -> (Vec<PartitionCheckpoint>, Vec<modelwatch_core::tracker::ReferenceSnapshot>, Vec<CounterSeries>)
{
    let cps: Vec<PartitionCheckpoint> = (0..partitions)
        .map(|p| {
            let next = logged[..consumed].iter().filter(|l| l.partition == p).count() as i64;
            tr.checkpoint(p, next)
        })
        .collect();
    let refs = tr.reference_snapshots_as_of(&|p| cps[p as usize].cutoff_ms);
    let counters =
        (0..partitions).flat_map(|p| tr.counter_series_as_of(p, &cps[p as usize])).collect();
    (cps, refs, counters)
}

struct Crash {
    /// Rows written before the crash.
    first: Rows,
    /// Rows written by the replay.
    second: Rows,
    cps: Vec<PartitionCheckpoint>,
    /// Counter series after the replay, before closing.
    counters: Vec<CounterSeries>,
    replayed: usize,
}

/// Runs `logged[..crash_at]` (checkpointing and releasing at `release_at` on the way), takes
/// checkpoints (not necessarily right after an advance), then replays into a fresh tracker.
/// Both runs advance in batches: `advance_every` events before the crash and after.
fn crash_and_replay(
    logged: &[Logged],
    partitions: u32,
    release_at: usize,
    crash_at: usize,
    advance_every: (usize, usize),
) -> Crash {
    let mut feeder = Feeder::new();
    let mut tr = Tracker::new(cfg());
    let mut first = Rows::default();
    for (i, l) in logged[..crash_at].iter().enumerate() {
        feeder.feed(&mut tr, l);
        if (i + 1) % advance_every.0 == 0 {
            tr.advance(&mut first);
        }
        if i + 1 == release_at {
            // An earlier checkpoint, durable: its bookkeeping is released.
            let (cps, _, _) = take_checkpoints(&tr, logged, release_at, partitions);
            for (p, cp) in cps.iter().enumerate() {
                tr.release(p as u32, cp);
            }
        }
    }
    let (cps, refs, counters) = take_checkpoints(&tr, logged, crash_at, partitions);
    // A layout frozen after a cutoff would differ: the replay would bin values the first run
    // only collected. The warmup freezes every layout in the first pane.
    let layouts = tr.frozen_layouts();
    drop(tr);

    let mut tr = Tracker::new(cfg());
    for (m, l) in &layouts {
        assert!(tr.restore_layout(m, l));
    }
    for r in refs {
        tr.preload_reference(r);
    }
    for c in counters.iter().cloned() {
        tr.preload_counter(c);
    }
    for (p, cp) in cps.iter().enumerate() {
        tr.restore_partition(p as u32, cp.watermark_ms, cp.cutoff_ms);
    }
    let mut second = Rows::default();
    let mut replayed = 0;
    for l in logged.iter().filter(|l| l.offset >= cps[l.partition as usize].resume_offset) {
        feeder.feed(&mut tr, l);
        replayed += 1;
        if replayed % advance_every.1 == 0 {
            tr.advance(&mut second);
        }
    }
    tr.advance(&mut second);
    // The series of versions without an event since the restart are still preloads (and
    // still in the store).
    let live: Vec<(String, String)> =
        tr.reference_snapshots().into_iter().map(|r| (r.model, r.version)).collect();
    let mut pending: Vec<CounterSeries> = counters
        .into_iter()
        .filter(|c| !live.iter().any(|(m, v)| *m == c.model && *v == c.version))
        .collect();
    let mut counters = tr.counter_series();
    counters.append(&mut pending);
    counters.sort_by(|a, b| (&a.model, &a.version, &a.host).cmp(&(&b.model, &b.version, &b.host)));
    close_all(&mut tr, &mut second, logged.iter().map(|l| l.ev.t).max().unwrap_or(0));
    Crash { first, second, cps, counters, replayed }
}

fn uninterrupted(logged: &[Logged]) -> (Rows, Vec<CounterSeries>) {
    let mut feeder = Feeder::new();
    let mut tr = Tracker::new(cfg());
    let mut out = Rows::default();
    for l in logged {
        feeder.feed(&mut tr, l);
        tr.advance(&mut out);
    }
    let counters = tr.counter_series();
    close_all(&mut tr, &mut out, logged.iter().map(|l| l.ev.t).max().unwrap_or(0));
    (out, counters)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Crash anywhere, restore every partition from its checkpoint into a fresh tracker and
    /// replay: panes and windows (counter rates and drift against references included) are the
    /// uninterrupted run's, once the replay's rows replace the first run's.
    #[test]
    fn a_replay_from_checkpoints_writes_the_uninterrupted_rows(
        events in arb_events(),
        partitions in 2u32..4,
        release_frac in 0.0f64..1.0,
        crash_frac in 0.0f64..1.0,
        advance_every in (1usize..8, 1usize..8),
    ) {
        let logged = log(&events, partitions);
        let warm = warmup(3).len();
        let crash_at =
            warm + CRASH_AFTER + ((logged.len() - warm - CRASH_AFTER) as f64 * crash_frac) as usize;
        let release_at = warm + ((crash_at - warm) as f64 * release_frac) as usize;
        let (full, full_counters) = uninterrupted(&logged);
        let run = crash_and_replay(&logged, partitions, release_at, crash_at, advance_every);

        // No warmup event is replayed: layouts froze before every cutoff.
        for l in &logged[..warm] {
            prop_assume!(l.offset < run.cps[l.partition as usize].resume_offset);
        }
        let cutoff = |p: u32| run.cps[p as usize].cutoff_ms;
        for k in run.second.panes.keys() {
            prop_assert!(k.3 + 10_000 > cutoff(k.2), "the replay rewrote a durable pane {:?}", k);
        }
        let mut panes = run.first.panes.clone();
        panes.retain(|k, _| k.3 + 10_000 <= cutoff(k.2));
        panes.extend(run.second.panes.clone());
        for (k, p) in &full.panes {
            prop_assert_eq!(panes.get(k), Some(p), "pane {:?}", k);
        }
        prop_assert_eq!(panes.len(), full.panes.len());
        let mut windows = run.first.windows.clone();
        windows.extend(run.second.windows.clone());
        for (k, w) in &full.windows {
            prop_assert_eq!(windows.get(k), Some(w), "window {:?}", k);
        }
        prop_assert_eq!(windows.len(), full.windows.len());
        prop_assert_eq!(&run.counters, &full_counters);
        let _ = run.replayed;
    }
}
