//! Checkpoints (delivery.md): a run that crashes, restores every partition from its checkpoint
//! into a fresh tracker and replays from the resume offsets writes the same rows as a run that
//! did not crash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use modelwatch_core::bins::FrozenLayout;
use modelwatch_core::config::{DriftSpec, Limits, WindowSpec};
use modelwatch_core::event::{InferenceRecord, MetricKind, MetricRecord};
use modelwatch_core::latency::LatencySpec;
use modelwatch_core::metrics::CounterSeries;
use modelwatch_core::tracker::ReferenceSnapshot;
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

/// What the engine persists besides the rows: the latest reference and counter series per key.
#[derive(Debug, Default)]
struct Store {
    refs: BTreeMap<(String, String), ReferenceSnapshot>,
    counters: BTreeMap<(String, String, String, String), CounterSeries>,
}

/// The engine's rule: the checkpoint of every partition, the references as of their cutoffs,
/// and each partition's counter series as of its resume offset, persisted.
fn checkpoint_all(tr: &Tracker, next: &[i64], store: &mut Store) -> Vec<PartitionCheckpoint> {
    let cps: Vec<PartitionCheckpoint> =
        next.iter().enumerate().map(|(p, n)| tr.checkpoint(p as u32, *n)).collect();
    for r in tr.reference_snapshots_as_of(&|p| cps[p as usize].cutoff_ms) {
        store.refs.insert((r.model.clone(), r.version.clone()), r);
    }
    for (p, cp) in cps.iter().enumerate() {
        for c in tr.counter_series_as_of(p as u32, cp) {
            let k = (c.model.clone(), c.version.clone(), c.name.clone(), c.host.clone());
            store.counters.insert(k, c);
        }
    }
    cps
}

/// One process's life: the rows it wrote and the checkpoints it crashed with (`None` for the
/// last, which reads to the end and closes everything).
struct Life {
    rows: Rows,
    cps: Option<Vec<PartitionCheckpoint>>,
}

/// When a life crashes: after `crash_frac` of its input (the first life not before
/// `first_crash_after` events), having checkpointed and released at `release_frac` of that.
#[derive(Debug, Clone, Copy)]
struct Crash {
    release_frac: f64,
    crash_frac: f64,
}

/// Runs the log through one life per crash and a last one. Each life after the first is a
/// fresh tracker with the layouts of the one before, everything in the store preloaded and
/// every partition restored from its checkpoint, reading each partition from its resume
/// offset. Lives advance every `advance_every` events; checkpoints come between advances.
/// Returns the lives and the last one's counter series before closing.
fn run_with_crashes(
    logged: &[Logged],
    partitions: u32,
    crashes: &[Crash],
    first_crash_after: usize,
    advance_every: usize,
) -> (Vec<Life>, Vec<CounterSeries>) {
    let mut feeder = Feeder::new();
    let mut store = Store::default();
    let mut layouts: Vec<(String, FrozenLayout)> = Vec::new();
    let mut restore: Option<Vec<PartitionCheckpoint>> = None;
    let mut lives = Vec::new();
    loop {
        let life = lives.len();
        let mut tr = Tracker::new(cfg());
        // A layout frozen after a cutoff would differ: the replay would bin values the first
        // life only collected. The warmup freezes every layout in the first pane.
        for (m, l) in &layouts {
            assert!(tr.restore_layout(m, l));
        }
        for r in store.refs.values() {
            tr.preload_reference(r.clone());
        }
        for c in store.counters.values() {
            tr.preload_counter(c.clone());
        }
        let mut next = vec![0i64; partitions as usize];
        for (p, cp) in restore.iter().flatten().enumerate() {
            tr.restore_partition(p as u32, cp.watermark_ms, cp.cutoff_ms);
            next[p] = cp.resume_offset;
        }
        let input: Vec<&Logged> =
            logged.iter().filter(|l| l.offset >= next[l.partition as usize]).collect();
        let (release_at, crash_at) = match crashes.get(life) {
            Some(c) => {
                let skip = if life == 0 { first_crash_after } else { 1 };
                let crash_at =
                    skip + (input.len().saturating_sub(skip) as f64 * c.crash_frac) as usize;
                ((crash_at as f64 * c.release_frac) as usize, crash_at)
            }
            None => (0, usize::MAX),
        };
        let mut rows = Rows::default();
        let mut crashed = None;
        for (k, l) in input.iter().enumerate() {
            feeder.feed(&mut tr, l);
            next[l.partition as usize] = l.offset + 1;
            if (k + 1) % advance_every == 0 {
                tr.advance(&mut rows);
            }
            if k + 1 == release_at {
                // An earlier checkpoint, durable: its bookkeeping is released.
                for (p, cp) in checkpoint_all(&tr, &next, &mut store).iter().enumerate() {
                    tr.release(p as u32, cp);
                }
            }
            if k + 1 == crash_at {
                crashed = Some(checkpoint_all(&tr, &next, &mut store));
                break;
            }
        }
        if let Some(cps) = crashed {
            layouts = tr.frozen_layouts();
            restore = Some(cps.clone());
            lives.push(Life { rows, cps: Some(cps) });
            continue;
        }
        tr.advance(&mut rows);
        // The series of versions without an event since the last restart are still preloads
        // (and still in the store).
        let live: Vec<(String, String)> =
            tr.reference_snapshots().into_iter().map(|r| (r.model, r.version)).collect();
        let mut counters = tr.counter_series();
        counters.extend(
            store
                .counters
                .into_values()
                .filter(|c| !live.contains(&(c.model.clone(), c.version.clone()))),
        );
        counters
            .sort_by(|a, b| (&a.model, &a.version, &a.host).cmp(&(&b.model, &b.version, &b.host)));
        close_all(&mut tr, &mut rows, logged.iter().map(|l| l.ev.t).max().unwrap_or(0));
        lives.push(Life { rows, cps: None });
        return (lives, counters);
    }
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

    /// Crash anywhere, once or twice, restore every partition from its checkpoint into a fresh
    /// tracker and replay: panes and windows (counter rates and drift against references
    /// included) are the uninterrupted run's, once each life's rows replace the earlier ones.
    #[test]
    fn a_replay_from_checkpoints_writes_the_uninterrupted_rows(
        events in arb_events(),
        partitions in 2u32..4,
        crashes in prop::collection::vec(
            (0.0f64..1.0, 0.0f64..1.0).prop_map(|(release_frac, crash_frac)| Crash { release_frac, crash_frac }),
            1..3,
        ),
        advance_every in 1usize..8,
    ) {
        let logged = log(&events, partitions);
        let warm = warmup(3).len();
        let (full, full_counters) = uninterrupted(&logged);
        let (lives, counters) =
            run_with_crashes(&logged, partitions, &crashes, warm + CRASH_AFTER, advance_every);

        // No warmup event is replayed: layouts froze before every cutoff.
        if let Some(cps) = &lives[0].cps {
            for l in &logged[..warm] {
                prop_assume!(l.offset < cps[l.partition as usize].resume_offset);
            }
        }
        let mut panes = BTreeMap::new();
        let mut windows = BTreeMap::new();
        let mut cutoffs: Option<&Vec<PartitionCheckpoint>> = None;
        for life in &lives {
            if let Some(before) = cutoffs {
                for k in life.rows.panes.keys() {
                    prop_assert!(
                        k.3 + 10_000 > before[k.2 as usize].cutoff_ms,
                        "a replay rewrote a durable pane {:?}", k
                    );
                }
            }
            let mut durable = life.rows.panes.clone();
            if let Some(cps) = &life.cps {
                durable.retain(|k, _| k.3 + 10_000 <= cps[k.2 as usize].cutoff_ms);
            }
            panes.extend(durable);
            windows.extend(life.rows.windows.clone());
            cutoffs = life.cps.as_ref();
        }
        for (k, p) in &full.panes {
            prop_assert_eq!(panes.get(k), Some(p), "pane {:?}", k);
        }
        prop_assert_eq!(panes.len(), full.panes.len());
        for (k, w) in &full.windows {
            prop_assert_eq!(windows.get(k), Some(w), "window {:?}", k);
        }
        prop_assert_eq!(windows.len(), full.windows.len());
        prop_assert_eq!(&counters, &full_counters);
    }
}

fn inference(
    tr: &mut Tracker,
    partition: u32,
    offset: i64,
    t: i64,
    model: &str,
    version: &str,
) -> Admission {
    let mut r = InferenceRecord::default();
    r.event_time_ms = t;
    r.set_model(model);
    r.set_version(version);
    r.latency_ms = 5.0;
    r.set_status("ok");
    tr.record_inference(Source { partition, offset, record_ts_ms: t }, &r)
}

fn counter(
    tr: &mut Tracker,
    (partition, offset): (u32, i64),
    t: i64,
    model: &str,
    host: &str,
    v: f64,
) {
    let mut m = MetricRecord::default();
    m.event_time_ms = t;
    m.set_model(model);
    m.set_version("v0");
    m.set_name("requests_total");
    m.kind = MetricKind::Counter;
    m.value = v;
    m.push_attribute("host", host);
    assert_eq!(
        tr.record_metric(Source { partition, offset, record_ts_ms: t }, &m),
        Admission::Recorded
    );
}

fn resume_at(offset: i64) -> PartitionCheckpoint {
    PartitionCheckpoint { cutoff_ms: i64::MIN, resume_offset: offset, watermark_ms: i64::MIN }
}

#[test]
fn an_untouched_partition_checkpoints_where_it_stands() {
    let tr = Tracker::new(cfg());
    let none =
        PartitionCheckpoint { cutoff_ms: i64::MIN, resume_offset: 42, watermark_ms: i64::MIN };
    assert_eq!(tr.checkpoint(3, 42), none, "never seen");
    // Restored and nothing consumed since: the restored checkpoint, unchanged (the watermark
    // alone would give 20 s).
    let mut tr = Tracker::new(cfg());
    let cp = PartitionCheckpoint { cutoff_ms: 11_000, resume_offset: 17, watermark_ms: 50_000 };
    tr.restore_partition(1, cp.watermark_ms, cp.cutoff_ms);
    tr.tick(0, &mut Rows::default());
    assert_eq!(tr.checkpoint(1, 17), cp);
    tr.restore_partition(2, i64::MIN, i64::MIN);
    assert_eq!(tr.checkpoint(2, 0), resume_at(0));
    // A replayed event before the cutoff (skipped) moves the watermark, but the cutoff never
    // goes below the restored one: those panes are durable.
    tr.restore_partition(1, 50_000, 21_000);
    assert_eq!(inference(&mut tr, 1, 17, 15_000, "m0", "v0"), Admission::Skipped);
    let after = tr.checkpoint(1, 18);
    assert_eq!(
        after,
        PartitionCheckpoint { cutoff_ms: 21_000, resume_offset: 18, watermark_ms: 50_000 }
    );
}

#[test]
fn an_open_pane_and_its_pending_windows_hold_the_cutoff_back() {
    let mut tr = Tracker::new(cfg()); // window 30 s, slide 10 s, lateness 2 s
    inference(&mut tr, 0, 0, 5_000, "m0", "v0");
    inference(&mut tr, 0, 1, 75_000, "m0", "v0");
    // Not advanced yet: pane [0, 10 s) is still open, and so is the first window holding it,
    // [-20 s, 10 s): the watermark alone (73 s) would give 43 s.
    let cp = tr.checkpoint(0, 2);
    assert_eq!(
        cp,
        PartitionCheckpoint { cutoff_ms: -20_000, resume_offset: 0, watermark_ms: i64::MIN }
    );
    tr.advance(&mut Rows::default());
    // Closed and its windows out: the watermark's term; the event of pane [70 s, 80 s)
    // comes first after it.
    let cp = tr.checkpoint(0, 2);
    assert_eq!(
        cp,
        PartitionCheckpoint { cutoff_ms: 43_000, resume_offset: 1, watermark_ms: 3_000 }
    );
}

#[test]
fn a_window_waiting_for_another_partition_holds_the_cutoff_back() {
    let mut tr = Tracker::new(cfg());
    let mut out = Rows::default();
    // m0/v0 in partitions 0 and 1 (input not keyed); partition 0 moves on to 100 s.
    inference(&mut tr, 1, 0, 5_000, "m0", "v0");
    inference(&mut tr, 0, 0, 5_000, "m0", "v0");
    inference(&mut tr, 0, 1, 100_000, "m1", "v0");
    tr.advance(&mut out);
    assert!(out.windows.is_empty(), "m0/v0's windows wait for partition 1");
    // Partition 0 left m0/v0 a window ago, but the window [-20 s, 10 s) still needs its pane
    // [0, 10 s): watermark - window (68 s) would leave it out of a replay.
    let cp = tr.checkpoint(0, 2);
    assert_eq!(
        cp,
        PartitionCheckpoint { cutoff_ms: -20_000, resume_offset: 0, watermark_ms: i64::MIN }
    );
    // Partition 1 catches up: the windows are out, the cutoff moves on.
    inference(&mut tr, 1, 1, 200_000, "m2", "v0");
    tr.advance(&mut out);
    assert!(out.windows.contains_key(&("m0".into(), "v0".into(), 30_000)));
    let cp = tr.checkpoint(0, 2);
    assert_eq!(
        cp,
        PartitionCheckpoint { cutoff_ms: 68_000, resume_offset: 1, watermark_ms: 3_000 }
    );
}

#[test]
fn a_preloaded_version_keeps_its_capped_slot() {
    let s = Duration::from_secs;
    let mut c = cfg();
    c.limits = Limits::new(1, 1, 50, s(3_600)).unwrap();
    let mut first = Tracker::new(c);
    assert_eq!(inference(&mut first, 0, 0, 5_000, "m0", "v0"), Admission::Recorded);
    let snap = first.reference_snapshots().remove(0);
    assert_eq!((snap.start_ms, snap.end_ms), (0, 30_000));

    // Without the preload, whatever comes first after a restart takes the slots.
    let mut fresh = Tracker::new(c);
    assert_eq!(inference(&mut fresh, 0, 1, 25_000, "m0", "v1"), Admission::Recorded);

    let mut tr = Tracker::new(c);
    tr.preload_reference(snap);
    assert_eq!(inference(&mut tr, 0, 1, 25_000, "m0", "v1"), Admission::OverVersionCap);
    assert_eq!(inference(&mut tr, 0, 2, 25_000, "m1", "v0"), Admission::OverModelCap);
    assert_eq!(inference(&mut tr, 0, 3, 25_000, "m0", "v0"), Admission::Recorded);
    // Installed on admission: the reference period is the first run's, not [20 s, 50 s).
    let got = tr.reference_snapshots();
    assert_eq!((got.len(), got[0].start_ms, got[0].end_ms), (1, 0, 30_000));
    assert_eq!(inference(&mut tr, 0, 4, 26_000, "m0", "v1"), Admission::OverVersionCap);
    assert_eq!(tr.stats().over_version_cap, 2);
}

#[test]
fn counter_updates_are_undone_back_to_the_resume_offset() {
    let mut tr = Tracker::new(cfg());
    for (o, t, host, v) in [
        (0, 1_000, "h0", 10.0),
        (1, 2_000, "h0", 20.0),
        (2, 3_000, "h0", 5.0),
        (3, 3_500, "h1", 100.0),
        (4, 4_000, "h0", 7.0),
    ] {
        counter(&mut tr, (0, o), t, "m0", host, v);
    }
    counter(&mut tr, (1, 0), 1_000, "m1", "h0", 50.0);
    let as_of = |tr: &Tracker, p: u32, r: i64| -> Vec<(String, String, i64, f64)> {
        tr.counter_series_as_of(p, &resume_at(r))
            .into_iter()
            .map(|c| (c.model, c.host, c.time_ms, c.value))
            .collect()
    };
    let s = |m: &str, h: &str, t: i64, v: f64| (m.to_owned(), h.to_owned(), t, v);
    assert_eq!(as_of(&tr, 0, 0), vec![]);
    assert_eq!(as_of(&tr, 0, 2), vec![s("m0", "h0", 2_000, 20.0)], "before the reset");
    assert_eq!(as_of(&tr, 0, 4), vec![s("m0", "h0", 3_000, 5.0), s("m0", "h1", 3_500, 100.0)]);
    assert_eq!(as_of(&tr, 0, 5), vec![s("m0", "h0", 4_000, 7.0), s("m0", "h1", 3_500, 100.0)]);
    assert_eq!(as_of(&tr, 1, 1), vec![s("m1", "h0", 1_000, 50.0)], "each partition its own");
    // Released up to 2: what is needed from 2 on is kept.
    tr.release(0, &resume_at(2));
    assert_eq!(as_of(&tr, 0, 2), vec![s("m0", "h0", 2_000, 20.0)]);
    assert_eq!(as_of(&tr, 0, 3), vec![s("m0", "h0", 3_000, 5.0)]);
    // Restoring the partition in this tracker drops the versions that lived only there (their
    // state comes back from the store's preloads); the other partition's series stay.
    tr.restore_partition(0, i64::MIN, i64::MIN);
    let now: Vec<_> =
        tr.counter_series().into_iter().map(|c| (c.model, c.host, c.time_ms, c.value)).collect();
    assert_eq!(now, vec![s("m1", "h0", 1_000, 50.0)]);
}
