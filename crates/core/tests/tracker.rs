//! Behaviour of the tracker: panes, windows, watermarks, lateness, idleness, caps and replay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use modelwatch_core::config::{DriftSpec, Limits, WindowSpec};
use modelwatch_core::event::{InferenceRecord, MetricKind, MetricRecord};
use modelwatch_core::latency::{LatencySpec, WindowLatency};
use modelwatch_core::{Admission, CoreConfig, Output, PaneView, Source, Tracker, WindowView};
use proptest::prelude::*;

/// Everything an output saw, in owned form, comparable across runs.
#[derive(Debug, Default, Clone, PartialEq)]
struct Collected {
    /// (model, version, partition, pane start) -> (requests, errors, latency buckets, bins)
    panes: BTreeMap<(String, String, u32, i64), PaneRow>,
    /// (model, version, window end) -> summary
    windows: BTreeMap<(String, String, i64), WindowRow>,
    pane_order: Vec<(String, String, u32, i64)>,
    evicted: Vec<(String, String)>,
}

/// (requests, errors, latency buckets, bins) of a pane.
type PaneRow = (u64, u64, Vec<(u32, u32)>, Features);

/// Bin counts by feature name (flat offsets differ between runs that froze in another order).
type Features = BTreeMap<String, Vec<u64>>;

fn features(v: &modelwatch_core::StatsView<'_>) -> Features {
    v.features().map(|(f, c)| (f.name.to_owned(), c.to_vec())).collect()
}

#[derive(Debug, Clone, PartialEq)]
struct WindowRow {
    requests: u64,
    errors: u64,
    timeouts: u64,
    p50: f64,
    p99: f64,
    max: f64,
    bins: Features,
    metrics: Vec<(String, u64, f64, f64, f64, f64)>,
    ref_kl: Vec<(String, Option<f64>)>,
}

impl Output for Collected {
    fn pane_closed(&mut self, p: &PaneView<'_>) {
        let v = p.view();
        let k = (v.model().to_owned(), v.version().to_owned(), p.partition(), p.start_ms());
        let row = (v.requests(), v.errors(), v.latency_buckets().iter().collect(), features(v));
        assert!(self.panes.insert(k.clone(), row).is_none(), "pane closed twice: {k:?}");
        self.pane_order.push(k);
    }
    fn window_closed(&mut self, w: &WindowView<'_>) {
        let v = w.view();
        let k = (v.model().to_owned(), v.version().to_owned(), w.end_ms());
        let lat = w.latency();
        let row = WindowRow {
            requests: v.requests(),
            errors: v.errors(),
            timeouts: v.timeouts(),
            p50: lat.map_or(f64::NAN, |l| l.p50_ms),
            p99: lat.map_or(f64::NAN, |l| l.p99_ms),
            max: w.latency_max_ms().unwrap_or(f64::NAN),
            bins: features(v),
            metrics: v
                .metrics()
                .map(|(n, m)| {
                    let rate = m.rate_per_s(w.end_ms() - w.start_ms()).unwrap_or(f64::NAN);
                    (n.to_owned(), m.count, m.min, m.max, m.last, rate)
                })
                .collect(),
            ref_kl: w
                .drift_vs_reference()
                .map(|(f, s)| (f.name.to_owned(), s.map(|s| s.kl)))
                .collect(),
        };
        assert!(self.windows.insert(k.clone(), row).is_none(), "window emitted twice: {k:?}");
    }
    fn key_evicted(&mut self, model: &str, version: &str) {
        self.evicted.push((model.to_owned(), version.to_owned()));
    }
}

fn cfg(window_s: u64, slide_s: u64, lateness_s: u64) -> CoreConfig {
    let s = Duration::from_secs;
    CoreConfig {
        windows: WindowSpec::new(s(window_s), s(slide_s), s(lateness_s), s(60), s(30)).unwrap(),
        drift: DriftSpec::new(20, s(60), 4, 3, 1e-4).unwrap(),
        limits: Limits::default(),
        latency: LatencySpec::default(),
    }
}

#[derive(Debug, Clone)]
struct Ev {
    t: i64,
    model: u8,
    version: u8,
    latency: f64,
    status: u8,
    x: f64,
    cat: u8,
}

fn record(r: &mut InferenceRecord, e: &Ev) {
    r.clear();
    r.event_time_ms = e.t;
    r.set_model(&format!("m{}", e.model));
    r.set_version(&format!("v{}", e.version));
    r.latency_ms = e.latency;
    r.set_status(["ok", "ok", "ok", "error", "timeout"][usize::from(e.status % 5)]);
    r.push_feature("x", e.x);
    r.push_category("c", ["a", "b", "c", "d"][usize::from(e.cat % 4)]);
    r.prediction = Some(e.x / 10.0);
}

/// Feeds events (partition, offset order) and closes everything at the end.
fn run(c: CoreConfig, events: &[(u32, Ev)], advance_every: usize) -> (Collected, Tracker) {
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    let mut offsets = BTreeMap::<u32, i64>::new();
    for (i, (p, e)) in events.iter().enumerate() {
        record(&mut r, e);
        let off = offsets.entry(*p).or_default();
        tr.record_inference(Source { partition: *p, offset: *off, record_ts_ms: e.t + 1_000 }, &r);
        *off += 1;
        if advance_every > 0 && i % advance_every == 0 {
            tr.advance(&mut out);
        }
    }
    close_all(&mut tr, &mut out, events.iter().map(|e| e.1.t).max().unwrap_or(0));
    (out, tr)
}

/// Closes everything: ticks twice far in the (wall-clock) future so every partition goes idle.
fn close_all(tr: &mut Tracker, out: &mut Collected, last_t: i64) {
    tr.tick(last_t, out);
    tr.tick(last_t + 24 * 3_600_000, out);
}

fn ev(t: i64, latency: f64) -> Ev {
    Ev { t, model: 0, version: 0, latency, status: 0, x: 1.0, cat: 0 }
}

#[test]
fn panes_close_on_the_watermark_and_late_events_are_counted() {
    let c = cfg(30, 10, 2);
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    let src = |o| Source { partition: 0, offset: o, record_ts_ms: 100_000 };
    for (o, t) in [1_000, 9_000, 11_000].into_iter().enumerate() {
        record(&mut r, &ev(t, 5.0));
        assert_eq!(tr.record_inference(src(o as i64), &r), Admission::Recorded);
    }
    tr.advance(&mut out);
    assert!(out.panes.is_empty(), "watermark 9s has not reached pane end 10s");
    record(&mut r, &ev(12_500, 5.0));
    tr.record_inference(src(3), &r);
    tr.advance(&mut out);
    assert_eq!(out.panes.len(), 1, "watermark 10.5s closes pane [0, 10s)");
    let (req, ..) = out.panes[&("m0".into(), "v0".into(), 0, 0)].clone();
    assert_eq!(req, 2);
    // An event for the closed pane is late, counted, and not merged.
    record(&mut r, &ev(9_500, 5.0));
    assert_eq!(tr.record_inference(src(4), &r), Admission::Late);
    // Within the lateness, the open pane still takes it.
    record(&mut r, &ev(10_100, 5.0));
    assert_eq!(tr.record_inference(src(5), &r), Admission::Recorded);
    assert_eq!(tr.stats().late, 1);
    // A future timestamp is rejected and does not move the watermark.
    record(&mut r, &ev(10_000_000, 5.0));
    assert_eq!(tr.record_inference(src(6), &r), Admission::BadTimestamp);
    assert_eq!(tr.watermark(0), Some(10_500));
}

#[test]
fn windows_slide_over_panes_and_stop_when_empty() {
    let c = cfg(30, 10, 0);
    let events: Vec<(u32, Ev)> = (0..60).map(|i| (0, ev(i * 1_000, 1.0 + i as f64))).collect();
    let (out, _) = run(c, &events, 1);
    // Panes [0,10) [10,20) ... [50,60): windows end at 10, 20, ..., 80 (the last one holds
    // only pane [50, 60)); the window ending at 90 would be empty.
    let ends: Vec<i64> = out.windows.keys().map(|k| k.2).collect();
    assert_eq!(ends, (1..=8).map(|i| i * 10_000).collect::<Vec<_>>());
    let w = &out.windows[&("m0".into(), "v0".into(), 30_000)];
    assert_eq!(w.requests, 30);
    assert_eq!(w.max, 30.0);
    let w = &out.windows[&("m0".into(), "v0".into(), 80_000)];
    assert_eq!(w.requests, 10);
}

#[test]
fn idle_partition_does_not_stall_a_key_nor_the_others() {
    let c = cfg(20, 10, 0);
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    // m0 lives in partition 0 (busy), m1 in partition 1 (goes quiet after one event).
    let mut e = ev(1_000, 3.0);
    e.model = 1;
    record(&mut r, &e);
    tr.record_inference(Source { partition: 1, offset: 0, record_ts_ms: 2_000 }, &r);
    tr.tick(0, &mut out);
    for i in 0..100 {
        record(&mut r, &ev(i * 1_000, 3.0));
        tr.record_inference(Source { partition: 0, offset: i, record_ts_ms: i * 1_000 }, &r);
    }
    tr.tick(10_000, &mut out);
    // Partition 0 closes its own panes regardless of partition 1, but windows wait for every
    // partition that is not idle (partition 1 might still carry m0's events).
    assert!(out.panes.keys().any(|k| k.0 == "m0" && k.3 == 80_000));
    assert!(!out.windows.keys().any(|k| k.0 == "m0"), "windows wait for partition 1");
    assert!(!out.panes.keys().any(|k| k.0 == "m1"), "not idle yet");
    // 30 s of wall-clock silence on partition 1: it closes its panes by idleness and no
    // longer holds back the others' windows.
    tr.tick(45_000, &mut out);
    assert!(tr.is_idle(1));
    assert!(out.windows.keys().any(|k| k.0 == "m0" && k.2 == 90_000));
    assert!(out.panes.contains_key(&("m1".into(), "v0".into(), 1, 0)));
    assert!(out.windows.contains_key(&("m1".into(), "v0".into(), 10_000)));
}

#[test]
fn a_silent_partition_with_a_backlog_is_behind_not_idle() {
    // idle_timeout 30 s; backlog_idle_timeout 2 min.
    let c = cfg(20, 10, 0);
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    // Partition 1 got one event of m1 and then nothing, but the broker holds more of it.
    let mut e = ev(1_000, 3.0);
    e.model = 1;
    record(&mut r, &e);
    tr.record_inference(Source { partition: 1, offset: 0, record_ts_ms: 2_000 }, &r);
    tr.tick(0, &mut out);
    tr.set_backlog(1, true);
    for i in 0..100 {
        record(&mut r, &ev(i * 1_000, 3.0));
        tr.record_inference(Source { partition: 0, offset: i, record_ts_ms: i * 1_000 }, &r);
    }
    tr.tick(10_000, &mut out);
    // 45 s of silence: idle without a backlog (see above), behind with one.
    tr.tick(45_000, &mut out);
    assert!(!tr.is_idle(1), "a partition with unread records is not idle after idle_timeout");
    assert!(!out.panes.keys().any(|k| k.0 == "m1"), "its panes stay open");
    assert!(!out.windows.keys().any(|k| k.0 == "m0"), "and it holds the windows back");
    // Its next record (the broker was slow) is counted, not late.
    record(&mut r, &e);
    let a = tr.record_inference(Source { partition: 1, offset: 1, record_ts_ms: 2_000 }, &r);
    assert_eq!(a, Admission::Recorded);
    tr.tick(50_000, &mut out);
    // Silent for backlog_idle_timeout (2 min) with the backlog unchanged: idle after all, so
    // a broker that never delivers (or offsets that never arrive) cannot stall every window.
    tr.tick(100_000, &mut out);
    assert!(!tr.is_idle(1));
    tr.tick(171_000, &mut out);
    assert!(tr.is_idle(1));
    assert!(out.windows.keys().any(|k| k.0 == "m0" && k.2 == 90_000));
    assert_eq!(out.panes[&("m1".into(), "v0".into(), 1, 0)].0, 2);
}

#[test]
fn a_backlog_idle_timeout_below_the_idle_timeout_is_refused() {
    let s = Duration::from_secs;
    let w = WindowSpec::new(s(20), s(10), s(0), s(60), s(30)).unwrap();
    assert_eq!(w.backlog_idle_timeout_ms(), 120_000);
    let e = w.with_backlog_idle_timeout(s(10)).unwrap_err().to_string();
    assert!(e.contains("windows.backlog_idle_timeout"), "{e}");
    assert_eq!(w.with_backlog_idle_timeout(s(30)).unwrap().backlog_idle_timeout_ms(), 30_000);
}

#[test]
fn caps_count_and_drop() {
    let mut c = cfg(30, 10, 0);
    c.limits = Limits::new(2, 2, 200, Duration::from_secs(3600)).unwrap();
    let mut tr = Tracker::new(c);
    let mut r = InferenceRecord::default();
    let mut got = Vec::new();
    for m in 0..3 {
        for v in 0..3 {
            let mut e = ev(1_000, 1.0);
            e.model = m;
            e.version = v;
            record(&mut r, &e);
            got.push(
                tr.record_inference(Source { partition: 0, offset: 0, record_ts_ms: 5_000 }, &r),
            );
        }
    }
    let recorded = got.iter().filter(|a| **a == Admission::Recorded).count();
    assert_eq!(recorded, 4);
    assert_eq!(tr.stats().over_version_cap, 2);
    assert_eq!(tr.stats().over_model_cap, 3);
    assert_eq!(tr.active_keys(), 4);
}

#[test]
fn silent_versions_are_evicted_after_idle_ttl() {
    let mut c = cfg(20, 10, 0);
    c.limits = Limits::new(10, 10, 10, Duration::from_secs(60)).unwrap();
    let mut events: Vec<(u32, Ev)> = vec![(0, ev(0, 1.0))];
    let mut e = ev(0, 1.0);
    e.version = 1;
    for i in 0..40 {
        e.t = i * 5_000;
        events.push((0, e.clone()));
    }
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    for (o, (p, e)) in events.iter().enumerate() {
        record(&mut r, e);
        tr.record_inference(Source { partition: *p, offset: o as i64, record_ts_ms: e.t }, &r);
        tr.advance(&mut out);
    }
    assert_eq!(out.evicted, vec![("m0".to_owned(), "v0".to_owned())]);
    assert_eq!(tr.active_keys(), 1);
}

#[test]
fn metric_events_aggregate_and_counters_become_rates() {
    let c = cfg(30, 10, 0);
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut m = MetricRecord::default();
    let mut send = |tr: &mut Tracker, t: i64, name: &str, kind, v: f64, host: &str| {
        m.clear();
        m.event_time_ms = t;
        m.set_model("m0");
        m.set_version("v0");
        m.set_name(name);
        m.kind = kind;
        m.value = v;
        m.push_attribute("host", host);
        tr.record_metric(Source { partition: 0, offset: t, record_ts_ms: t }, &m)
    };
    for (i, v) in [50.0, 70.0, 60.0].into_iter().enumerate() {
        send(&mut tr, i as i64 * 1000, "gpu", MetricKind::Gauge, v, "h1");
    }
    // Counter on two hosts; h1 resets from 30 to 5.
    for (t, v, h) in [
        (0, 10.0, "h1"),
        (1000, 30.0, "h1"),
        (2000, 5.0, "h1"),
        (0, 100.0, "h2"),
        (2500, 160.0, "h2"),
    ] {
        send(&mut tr, t, "requests_total", MetricKind::Counter, v, h);
    }
    let series = tr.counter_series();
    assert_eq!(series.len(), 2);
    assert_eq!((series[0].host.as_str(), series[0].value), ("h1", 5.0));
    assert_eq!((series[1].host.as_str(), series[1].value), ("h2", 160.0));
    close_all(&mut tr, &mut out, 3_000);
    let w = &out.windows[&("m0".into(), "v0".into(), 10_000)];
    // Increase: h1 +20 then a reset +5, h2 +60: 85 over the 30 s window.
    let rate = w.metrics.iter().find(|m| m.0 == "requests_total").unwrap().5;
    assert!((rate - 85.0 / 30.0).abs() < 1e-12, "{rate}");
    let gpu = w.metrics.iter().find(|m| m.0 == "gpu").unwrap();
    assert_eq!((gpu.1, gpu.2, gpu.3, gpu.4), (3, 50.0, 70.0, 60.0));
    assert_eq!(w.requests, 0, "metric events are not requests");
    assert!(tr.counter_series().is_empty(), "evicted with its version");
}

#[test]
fn replay_from_a_resume_point_reproduces_the_rows() {
    // An uninterrupted run, and a run that "crashes" after event k, restores the partition from
    // (cutoff, resume offset, watermark) and replays from the resume offset.
    let c = cfg(30, 10, 2);
    let events: Vec<Ev> = (0..400)
        .map(|i| Ev {
            t: i * 250 + if i % 7 == 0 { -1_500 } else { 0 },
            model: (i % 2) as u8,
            version: (i % 3) as u8,
            latency: 1.0 + (i * 37 % 101) as f64,
            status: (i % 5) as u8,
            x: (i * 13 % 17) as f64,
            cat: (i % 4) as u8,
        })
        .collect();
    let tagged: Vec<(u32, Ev)> = events.iter().cloned().map(|e| (0, e)).collect();
    let (full, _) = run(c, &tagged, 1);

    let crash_at = 250usize;
    let mut first = Collected::default();
    let mut tr = Tracker::new(c);
    let mut r = InferenceRecord::default();
    for (o, e) in events[..crash_at].iter().enumerate() {
        record(&mut r, e);
        tr.record_inference(
            Source { partition: 0, offset: o as i64, record_ts_ms: e.t + 1_000 },
            &r,
        );
        tr.advance(&mut first);
    }
    // Checkpoint: cutoff = watermark - window (all closed panes are "durable" here).
    let wm = tr.watermark(0).unwrap();
    let cutoff = (wm - 30_000).div_euclid(10_000) * 10_000;
    let resume = tr.resume_point(0, cutoff).unwrap();
    // The restarted tracker must also have the frozen layouts, as it would from ClickHouse.
    let layouts = tr.frozen_layouts();
    drop(tr);
    let mut tr = Tracker::new(c);
    for (m, l) in &layouts {
        assert!(tr.restore_layout(m, l));
    }
    tr.restore_partition(0, resume.watermark_ms, cutoff);
    let mut second = Collected::default();
    for (o, e) in events.iter().enumerate().skip(resume.offset as usize) {
        record(&mut r, e);
        tr.record_inference(
            Source { partition: 0, offset: o as i64, record_ts_ms: e.t + 1_000 },
            &r,
        );
        tr.advance(&mut second);
    }
    assert!(resume.offset < crash_at as i64, "events were replayed");
    close_all(&mut tr, &mut second, events.iter().map(|e| e.t).max().unwrap());
    // Rows written by the second run overwrite the first's (ReplacingMergeTree): the union
    // with the second winning must equal the uninterrupted run.
    let mut merged = first.clone();
    merged.panes.extend(second.panes.clone());
    merged.windows.extend(second.windows.clone());
    assert_eq!(merged.panes, full.panes);
    for (k, w) in &full.windows {
        let got = merged.windows.get(k).unwrap_or_else(|| panic!("missing window {k:?}"));
        // Reference drift depends on reference state that this test does not persist.
        assert_eq!(
            (got.requests, got.errors, got.p99, &got.bins),
            (w.requests, w.errors, w.p99, &w.bins),
            "{k:?}"
        );
    }
    assert_eq!(merged.windows.len(), full.windows.len());
    // And the second run rewrote no pane at or before the cutoff.
    assert!(second.panes.keys().all(|k| k.3 + 10_000 > cutoff));
}

#[test]
fn a_replay_through_the_freezing_pane_bins_what_the_first_run_binned() {
    // The checkpoint's cutoff lies before the first pane (another partition held the windows
    // back), so the replay starts at offset 0 with the layouts already frozen: it must leave
    // out the edge samples that the first run collected and did not bin.
    let c = cfg(30, 10, 2); // 20 edge samples
    let events: Vec<Ev> = (0..300)
        .map(|i| Ev {
            t: i * 100,
            model: 0,
            version: (i % 2) as u8,
            latency: 1.0 + (i * 37 % 101) as f64,
            status: 0,
            x: (i * 13 % 17) as f64,
            cat: (i % 4) as u8,
        })
        .collect();
    let tagged: Vec<(u32, Ev)> = events.iter().cloned().map(|e| (0, e)).collect();
    let (full, first) = run(c, &tagged, 1);
    let layouts = first.frozen_layouts();
    assert!(layouts.iter().all(|(_, l)| l.frozen_at == Some((0, 19))), "{layouts:?}");

    let mut tr = Tracker::new(c);
    for (m, l) in &layouts {
        assert!(tr.restore_layout(m, l));
    }
    tr.restore_partition(0, i64::MIN, i64::MIN);
    let mut replay = Collected::default();
    let mut r = InferenceRecord::default();
    for (o, e) in events.iter().enumerate() {
        record(&mut r, e);
        let src = Source { partition: 0, offset: o as i64, record_ts_ms: e.t + 1_000 };
        tr.record_inference(src, &r);
        tr.advance(&mut replay);
    }
    close_all(&mut tr, &mut replay, events.last().unwrap().t);
    assert_eq!(replay.panes, full.panes);
    // Without the freezing event the replay would bin the edge samples too.
    let mut tr = Tracker::new(c);
    for (m, l) in &layouts {
        let mut l = l.clone();
        l.frozen_at = None;
        assert!(tr.restore_layout(m, &l));
    }
    let mut naive = Collected::default();
    for (o, e) in events.iter().enumerate() {
        record(&mut r, e);
        let src = Source { partition: 0, offset: o as i64, record_ts_ms: e.t + 1_000 };
        tr.record_inference(src, &r);
        tr.advance(&mut naive);
    }
    close_all(&mut tr, &mut naive, events.last().unwrap().t);
    assert_ne!(naive.panes, full.panes);

    // The same in one process: the partition is revoked after the freeze and read again from
    // offset 0 (a rebalance that gives it back, its checkpoint before the first pane).
    let mut tr = Tracker::new(c);
    let mut before = Collected::default();
    for (o, e) in events.iter().enumerate().take(150) {
        record(&mut r, e);
        let src = Source { partition: 0, offset: o as i64, record_ts_ms: e.t + 1_000 };
        tr.record_inference(src, &r);
        tr.advance(&mut before);
    }
    tr.restore_partition(0, i64::MIN, i64::MIN);
    let mut again = Collected::default();
    for (o, e) in events.iter().enumerate() {
        record(&mut r, e);
        let src = Source { partition: 0, offset: o as i64, record_ts_ms: e.t + 1_000 };
        tr.record_inference(src, &r);
        tr.advance(&mut again);
    }
    close_all(&mut tr, &mut again, events.last().unwrap().t);
    assert_eq!(again.panes, full.panes);
}

#[test]
fn reference_drift_appears_once_the_reference_is_complete() {
    let c = cfg(30, 10, 0); // reference period 60 s, 20 edge samples, 4 bins
    let mut events = Vec::new();
    for i in 0..600i64 {
        // x uniform-ish on 0..20 for the first 300 s, then shifted up by 15.
        let shift = if i >= 300 { 15.0 } else { 0.0 };
        let mut e = ev(i * 1_000, 2.0);
        e.x = (i * 7 % 20) as f64 + shift;
        events.push((0, e));
    }
    let (out, _) = run(c, &events, 1);
    let kl = |end: i64| {
        let w = &out.windows[&("m0".into(), "v0".into(), end)];
        w.ref_kl.iter().find(|(n, _)| n == "x").and_then(|(_, k)| *k)
    };
    assert_eq!(out.windows[&("m0".into(), "v0".into(), 40_000)].ref_kl, vec![], "no reference yet");
    let before = kl(200_000).expect("reference complete");
    let after = kl(400_000).expect("reference complete");
    assert!(before < 0.05, "{before}");
    assert!(after > 10.0 * before.max(0.01), "{before} -> {after}");
}

fn arb_events() -> impl Strategy<Value = Vec<(u32, Ev)>> {
    prop::collection::vec(
        (0u32..3, 0i64..120_000, 0u8..2, 0u8..2, 0.1f64..500.0, 0u8..5, -5.0f64..30.0, 0u8..4),
        1..300,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(p, t, model, version, latency, status, x, cat)| {
                (p, Ev { t, model, version, latency, status, x, cat })
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every window equals the merge of its panes (over partitions too), and every recorded
    /// event is in exactly one pane.
    #[test]
    fn a_window_is_the_merge_of_its_panes(mut events in arb_events()) {
        // In-order per partition with a big lateness, so nothing is late.
        events.sort_by_key(|e| e.1.t);
        let c = cfg(30, 10, 200);
        let (out, tr) = run(c, &events, 7);
        prop_assert_eq!(tr.stats().late, 0);
        let total: u64 = out.panes.values().map(|p| p.0).sum();
        prop_assert_eq!(total, events.len() as u64);
        for ((m, v, end), w) in &out.windows {
            let mut lat = WindowLatency::new(LatencySpec::default());
            let mut req = 0;
            let mut err = 0;
            let mut bins = Features::new();
            for ((pm, pv, _, start), (r, e, b, pb)) in &out.panes {
                if pm == m && pv == v && *start >= end - 30_000 && *start < *end {
                    req += r;
                    err += e;
                    lat.add(&modelwatch_core::latency::LatencyBuckets::from_pairs(b));
                    for (name, counts) in pb {
                        let acc = bins.entry(name.clone()).or_default();
                        if acc.len() < counts.len() { acc.resize(counts.len(), 0); }
                        for (a, x) in acc.iter_mut().zip(counts) { *a += x; }
                    }
                }
            }
            prop_assert_eq!(w.requests, req);
            prop_assert_eq!(w.errors, err);
            prop_assert_eq!(w.p99, lat.summary().unwrap().p99_ms);
            // A window's counts of a feature equal the sum of its panes' (features frozen
            // mid-window have no counts in the earlier panes).
            for (name, counts) in &w.bins {
                let mut want = bins.get(name).cloned().unwrap_or_default();
                let mut got = counts.clone();
                let n = want.len().max(got.len());
                want.resize(n, 0);
                got.resize(n, 0);
                prop_assert_eq!(got, want, "{}", name);
            }
        }
    }

    /// Windows do not depend on how events are spread over partitions nor on the order in
    /// which partitions close their panes.
    #[test]
    fn windows_do_not_depend_on_partitioning(mut events in arb_events(), rotate in 0u32..3) {
        events.sort_by_key(|e| e.1.t);
        let c = cfg(30, 10, 200);
        let one: Vec<(u32, Ev)> = events.iter().map(|(_, e)| (0, e.clone())).collect();
        let spread: Vec<(u32, Ev)> = events.iter().map(|(p, e)| ((p + rotate) % 3, e.clone())).collect();
        let (a, _) = run(c, &one, 5);
        let (b, _) = run(c, &spread, 3);
        // Drift against references may differ in timing; compare the statistics.
        let strip = |c: &Collected| c.windows.iter().map(|(k, w)| (k.clone(), (w.requests, w.errors, w.timeouts, w.p50, w.p99, w.max))).collect::<BTreeMap<_, _>>();
        prop_assert_eq!(strip(&a), strip(&b));
    }

    /// Merging panes is associative and commutative, and equals recording every event into one.
    #[test]
    fn pane_merge_is_associative_and_equals_one_pane(events in arb_events()) {
        let c = cfg(3_600, 3_600, 0);
        // Each third of the events into its own tracker, all in one pane.
        let parts: Vec<Vec<(u32, Ev)>> = (0..3).map(|k| events.iter().enumerate().filter(|(i, _)| i % 3 == k).map(|(_, e)| (0, Ev { t: 5, model: 0, version: 0, ..e.1.clone() })).collect()).collect();
        let all: Vec<(u32, Ev)> = events.iter().map(|e| (0, Ev { t: 5, model: 0, version: 0, ..e.1.clone() })).collect();
        let pane = |evs: &[(u32, Ev)]| {
            let (out, _) = run(c, evs, 0);
            out.panes.into_values().next()
        };
        let one = pane(&all).unwrap();
        let merge = |xs: &[Option<PaneRow>]| {
            let mut s = (0u64, 0u64, modelwatch_core::latency::LatencyBuckets::default());
            for x in xs.iter().flatten() {
                s.0 += x.0;
                s.1 += x.1;
                s.2.merge(&modelwatch_core::latency::LatencyBuckets::from_pairs(&x.2));
            }
            (s.0, s.1, s.2.iter().collect::<Vec<_>>())
        };
        let p: Vec<_> = parts.iter().map(|e| pane(e)).collect();
        let abc = merge(&[p[0].clone(), p[1].clone(), p[2].clone()]);
        let cba = merge(&[p[2].clone(), p[1].clone(), p[0].clone()]);
        prop_assert_eq!(&abc, &cba);
        prop_assert_eq!(abc, (one.0, one.1, one.2));
    }
}

#[test]
fn a_lone_ancient_event_does_not_make_windows_walk_every_slide_since() {
    let c = cfg(30, 10, 0);
    let mut tr = Tracker::new(c);
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    let now = 1_700_000_000_000;
    // An unset producer field: event time 0, then normal traffic.
    record(&mut r, &ev(0, 1.0));
    tr.record_inference(Source { partition: 0, offset: 0, record_ts_ms: now }, &r);
    for i in 1..100 {
        record(&mut r, &ev(now + i * 1_000, 1.0));
        tr.record_inference(Source { partition: 0, offset: i, record_ts_ms: now + i * 1_000 }, &r);
        tr.advance(&mut out);
    }
    // The 1970 pane's windows (3) and today's: nothing in between.
    assert!(out.windows.len() < 20, "{}", out.windows.len());
    assert_eq!(out.windows.keys().filter(|k| k.2 < now).count(), 3);
    // Extreme times neither panic nor hang.
    for t in [i64::MIN, i64::MAX, i64::MIN + 1] {
        record(&mut r, &ev(t, 1.0));
        tr.record_inference(Source { partition: 1, offset: 0, record_ts_ms: i64::MAX }, &r);
        tr.advance(&mut out);
    }
    close_all(&mut tr, &mut out, now + 100_000);
}

#[test]
fn forgetting_a_partition_drops_its_open_panes_so_a_replay_counts_once() {
    let c = cfg(30, 10, 0);
    let events: Vec<Ev> = (0..50).map(|i| ev(i * 1_000, 1.0)).collect();
    let run_all = |tr: &mut Tracker, out: &mut Collected, from: usize| {
        let mut r = InferenceRecord::default();
        for (o, e) in events.iter().enumerate().skip(from) {
            record(&mut r, e);
            tr.record_inference(Source { partition: 0, offset: o as i64, record_ts_ms: e.t }, &r);
            tr.advance(out);
        }
    };
    let mut tr = Tracker::new(c);
    let mut first = Collected::default();
    run_all(&mut tr, &mut first, 0);
    // Revoked, then assigned back: replay from the start of the open panes.
    let wm = tr.watermark(0).unwrap();
    let cutoff = wm.div_euclid(10_000) * 10_000;
    let resume = tr.resume_point(0, cutoff).unwrap();
    tr.restore_partition(0, resume.watermark_ms, cutoff);
    let mut second = Collected::default();
    run_all(&mut tr, &mut second, resume.offset as usize);
    close_all(&mut tr, &mut second, 60_000);
    let (full, _) = run(c, &events.iter().cloned().map(|e| (0, e)).collect::<Vec<_>>(), 1);
    let mut merged = first.panes.clone();
    merged.extend(second.panes);
    assert_eq!(merged, full.panes);
}

#[test]
fn a_partition_read_after_another_still_finds_the_windows_of_its_data_open() {
    // m0 is spread over partitions 0 and 1 (input not keyed); partition 1 is read after all of
    // partition 0 (a consumer catching up reads partitions unevenly).
    let mut tr = Tracker::new(cfg(20, 10, 0));
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    tr.register_partition(0);
    tr.register_partition(1);
    for p in [0u32, 1] {
        for i in 0..100 {
            record(&mut r, &ev(i * 1_000, 3.0));
            let src = Source { partition: p, offset: i, record_ts_ms: i * 1_000 };
            assert_eq!(tr.record_inference(src, &r), Admission::Recorded);
            tr.advance(&mut out);
        }
        if p == 0 {
            assert!(out.windows.is_empty(), "windows wait for the registered partition 1");
        }
    }
    // Every full window holds both partitions' events: 20 s at one event per second each.
    let w = &out.windows[&("m0".into(), "v0".into(), 60_000)];
    assert_eq!(w.requests, 40);
}

#[test]
fn a_registered_partition_without_events_stops_holding_windows_once_idle() {
    let mut tr = Tracker::new(cfg(20, 10, 0));
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    tr.register_partition(1);
    tr.tick(0, &mut out);
    for i in 0..100 {
        record(&mut r, &ev(i * 1_000, 3.0));
        tr.record_inference(Source { partition: 0, offset: i, record_ts_ms: i * 1_000 }, &r);
    }
    tr.tick(1_000, &mut out);
    assert!(out.windows.is_empty());
    tr.tick(31_000, &mut out);
    assert!(out.windows.contains_key(&("m0".into(), "v0".into(), 90_000)));
}

#[test]
fn a_revoked_partition_takes_its_versions_along_and_emits_nothing_partial() {
    let mut tr = Tracker::new(cfg(20, 10, 0));
    let mut out = Collected::default();
    let mut r = InferenceRecord::default();
    // m0 only in partition 0, m1 only in partition 1.
    for (p, model) in [(0u32, 0u8), (1, 1)] {
        for i in 0..30 {
            let mut e = ev(i * 1_000, 3.0);
            e.model = model;
            record(&mut r, &e);
            tr.record_inference(Source { partition: p, offset: i, record_ts_ms: i * 1_000 }, &r);
        }
    }
    tr.advance(&mut out);
    assert_eq!(tr.active_keys(), 2);
    let m0_before = out.windows.keys().filter(|k| k.0 == "m0").count();
    let released = tr.forget_partition(0);
    assert_eq!(tr.active_keys(), 1, "m0 lived only in partition 0");
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].0, "m0", "the version now owned elsewhere: {released:?}");
    for i in 30..100 {
        let mut e = ev(i * 1_000, 3.0);
        e.model = 1;
        record(&mut r, &e);
        tr.record_inference(Source { partition: 1, offset: i, record_ts_ms: i * 1_000 }, &r);
    }
    tr.advance(&mut out);
    let m0_after = out.windows.keys().filter(|k| k.0 == "m0").count();
    assert_eq!(m0_after, m0_before, "no window of m0 after its partition left");
    assert!(out.windows.keys().any(|k| k.0 == "m1" && k.2 == 90_000));
}
