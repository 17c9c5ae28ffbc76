//! Rows built from the core tracker's real panes and windows: written, then merged in SQL, they
//! give back the tracker's windows (a window is the sum of its panes), and frozen layouts
//! reload into a fresh tracker.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use modelwatch_clickhouse::rows::*;
use modelwatch_core::config::{DriftSpec, Limits, WindowSpec};
use modelwatch_core::event::InferenceRecord;
use modelwatch_core::latency::LatencySpec;
use modelwatch_core::{CoreConfig, Output, PaneView, Source, Tracker, WindowView};
use support::*;

/// A window's bin counts: (version, start, end, (feature, counts)).
type WindowBins = (String, i64, i64, Vec<(String, Vec<u64>)>);

#[derive(Default)]
struct Rows {
    panes: Vec<PaneStatsRow>,
    bins: Vec<PaneBinsRow>,
    windows: Vec<WindowStatsRow>,
    window_bins: Vec<WindowBins>,
    metrics: Vec<MetricStatsRow>,
}

impl Output for Rows {
    fn pane_closed(&mut self, p: &PaneView<'_>) {
        self.panes.push(PaneStatsRow::from_pane(p, 1));
        self.bins.extend(PaneBinsRow::from_pane(p, 1));
    }
    fn window_closed(&mut self, w: &WindowView<'_>) {
        self.windows.push(WindowStatsRow::from_window(w, 1));
        self.metrics.extend(MetricStatsRow::from_window(w, 1));
        let bins =
            w.view().features().map(|(f, c)| (f.name.to_owned(), c.to_vec())).collect::<Vec<_>>();
        self.window_bins.push((w.view().version().to_owned(), w.start_ms(), w.end_ms(), bins));
    }
}

fn config() -> CoreConfig {
    let s = Duration::from_secs;
    CoreConfig {
        windows: WindowSpec::new(s(60), s(10), s(5), s(60), s(30)).unwrap(),
        drift: DriftSpec::new(50, s(60), 4, 3, 1e-4).unwrap(),
        limits: Limits::default(),
        latency: LatencySpec::default(),
    }
}

#[tokio::test]
async fn windows_are_the_sql_merge_of_their_pane_rows() {
    let Some(url) = test_url("windows_are_the_sql_merge_of_their_pane_rows") else { return };
    let mut tracker = Tracker::new(config());
    let mut out = Rows::default();
    let mut r = InferenceRecord::default();
    let t0 = 1_700_000_000_000i64;
    for i in 0..6_000i64 {
        let t = t0 + i * 50; // 300 s of events
        r.clear();
        r.event_time_ms = t;
        r.set_model("fraud-detector");
        r.set_version(if i % 3 == 0 { "v2" } else { "v1" });
        r.latency_ms = 1.0 + (i % 97) as f64 * 0.37;
        r.set_status(["ok", "ok", "ok", "error", "timeout"][(i % 5) as usize]);
        r.push_feature("amount", (i % 41) as f64);
        r.push_category("country", ["de", "fr", "us"][(i % 3) as usize]);
        r.prediction = Some((i % 10) as f64 / 10.0);
        let partition = (i % 2) as u32;
        tracker.record_inference(Source { partition, offset: i, record_ts_ms: t }, &r);
        if i % 100 == 0 {
            tracker.advance(&mut out);
        }
    }
    tracker.tick(t0 + 300_000, &mut out);
    tracker.tick(t0 + 300_000 + 86_400_000, &mut out);
    assert!(out.windows.len() > 20 && out.panes.len() > 40, "{}", out.windows.len());

    let store = store(&url);
    store.migrate().await.unwrap();
    let w = store.writer().await.unwrap();
    w.insert(&out.panes).await.unwrap();
    w.insert(&out.bins).await.unwrap();
    w.insert(&out.windows).await.unwrap();
    w.insert(&out.metrics).await.unwrap();
    let layouts: Vec<_> = tracker
        .frozen_layouts()
        .iter()
        .map(|(m, f)| DriftLayoutRow::from_frozen(m, f, 1))
        .collect();
    assert!(!layouts.is_empty());
    w.insert(&layouts).await.unwrap();

    for win in &out.windows {
        let totals = store
            .pane_totals(Some("fraud-detector"), win.window_start_ms, win.window_end_ms)
            .await
            .unwrap();
        let t = totals.iter().find(|t| t.version == win.version).unwrap();
        assert_eq!((t.requests, t.errors), (win.requests, win.errors), "{win:?}");
        assert_eq!(t.latency.1.iter().sum::<u64>(), win.requests);
        assert_eq!(Some(t.latency_max_ms), win.latency_max_ms);
    }
    for (version, start, end, bins) in &out.window_bins {
        let totals = store.bin_totals(Some("fraud-detector"), *start, *end).await.unwrap();
        for (feature, counts) in bins {
            let got = totals.iter().find(|b| &b.version == version && &b.feature == feature);
            let want_total: u64 = counts.iter().sum();
            match got {
                Some(b) => {
                    // sumForEach pads shorter pane arrays; compare on the window's length.
                    let mut c = b.counts.clone();
                    c.resize(counts.len().max(c.len()), 0);
                    assert_eq!(&c[..counts.len()], &counts[..], "{version} {feature} {end}");
                }
                None => assert_eq!(want_total, 0, "{version} {feature} {end}"),
            }
        }
    }

    // Frozen layouts reload into a fresh tracker.
    let reloaded = store.drift_layouts().await.unwrap();
    let key = |(m, f): &(String, modelwatch_core::bins::FrozenLayout)| {
        (m.clone(), f.kind.as_str(), f.feature.clone())
    };
    let mut expected = tracker.frozen_layouts();
    expected.sort_by_key(key);
    assert_eq!(reloaded, expected);
    let mut fresh = Tracker::new(config());
    for (model, f) in &reloaded {
        assert!(fresh.restore_layout(model, f));
    }
    drop_db(&store).await;
}
