//! A canary caught in the act: generated traffic for a baseline (v41) and a canary (v42) of one
//! model, encoded as Avro, decoded and windowed by modelwatch-core. At minute 10 of event time
//! the canary's `amount` feature drifts and its latency grows by 30%. Every minute of event time
//! it prints each version's window: requests, p50/p99 latency, error rate, the largest KL against
//! the version's pinned reference, and the canary's KL against the baseline's same window.
//!
//! Run: `cargo run --release -p modelwatch-benches --example canary`.

#![allow(clippy::print_stdout, reason = "an example reports on stdout")]

use std::collections::HashMap;
use std::time::Duration;

use modelwatch_benches::{Rng, encode_avro};
use modelwatch_codec::{Format, InferenceDecoder};
use modelwatch_core::config::{DriftSpec, WindowSpec};
use modelwatch_core::event::InferenceRecord;
use modelwatch_core::{CoreConfig, Output, Source, Tracker, WindowView};

struct Printer {
    baseline_bins: HashMap<i64, Vec<u64>>,
}

impl Output for Printer {
    fn window_closed(&mut self, w: &WindowView<'_>) {
        let v = w.view();
        if v.version() == "v41" {
            self.baseline_bins.insert(w.end_ms(), v.stats().bins().to_vec());
        }
        if w.end_ms() % 60_000 != 0 {
            return;
        }
        let lat = w.latency().expect("requests in every window");
        let max_ref = w
            .drift_vs_reference()
            .filter_map(|(f, s)| s.map(|s| (f.name, s.kl)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let vs_baseline = match (v.version(), self.baseline_bins.get(&w.end_ms())) {
            ("v42", Some(b)) => w
                .drift_against(b)
                .find(|(f, _)| f.name == "amount")
                .and_then(|(_, s)| s)
                .map_or("-".to_owned(), |s| format!("{:.3} (p={:.1e})", s.kl, s.p_value)),
            _ => "-".to_owned(),
        };
        println!(
            "{:>5} min  {}  {:>6} req  p50 {:>6.1} ms  p99 {:>6.1} ms  errors {:>5.2}%  max KL vs ref {:<22}  amount KL vs v41 {}",
            w.end_ms() / 60_000,
            v.version(),
            v.requests(),
            lat.p50_ms,
            lat.p99_ms,
            100.0 * w.error_rate().unwrap_or(0.0),
            max_ref.map_or("(reference pending)".to_owned(), |(n, kl)| format!("{kl:.3} ({n})")),
            vs_baseline,
        );
    }
}

fn main() {
    let s = Duration::from_secs;
    let cfg = CoreConfig {
        windows: WindowSpec::new(s(300), s(10), s(5), s(60), s(30)).expect("valid"),
        drift: DriftSpec::new(2_000, s(300), 10, 10, 1e-4).expect("valid"),
        ..CoreConfig::default()
    };
    let mut tracker = Tracker::new(cfg);
    let mut decoder = InferenceDecoder::new(Format::Avro);
    let mut out = Printer { baseline_bins: HashMap::new() };
    let mut rng = Rng::new(7);
    let mut rec = InferenceRecord::default();
    let mut payload = Vec::new();
    println!(
        "baseline v41 and canary v42 at 200 requests/s each; the canary regresses at minute 10"
    );
    let per_second = 400;
    for i in 0..(20 * 60 * per_second) {
        let t = i64::from(i) * 1000 / i64::from(per_second);
        let canary = i % 2 == 1;
        let bad = canary && t >= 600_000;
        rec.clear();
        rec.event_time_ms = t;
        rec.set_model("fraud-detector");
        rec.set_version(if canary { "v42" } else { "v41" });
        rec.latency_ms = (3.0 + 0.4 * rng.normal()).exp() * if bad { 1.3 } else { 1.0 };
        rec.set_status(if rng.unit() < 0.01 { "error" } else { "ok" });
        rec.prediction = Some(rng.unit());
        rec.push_feature("amount", (4.0 + rng.normal() + if bad { 0.8 } else { 0.0 }).exp());
        rec.push_feature("account_age_days", 400.0 + 100.0 * rng.normal());
        rec.push_category("country", ["DE", "US", "FR"][(rng.next_u64() % 3) as usize]);
        rec.push_attribute("route", if canary { "canary" } else { "stable" });
        payload.clear();
        encode_avro(&rec, &mut payload);
        let decoded = decoder.decode_one(&payload).expect("valid Avro");
        let src = Source { partition: 0, offset: i64::from(i), record_ts_ms: t };
        tracker.record_inference(src, decoded);
        if i % 1000 == 0 {
            tracker.advance(&mut out);
        }
    }
    tracker.tick(0, &mut out);
    tracker.tick(3_600_000, &mut out);
    let st = tracker.stats();
    println!(
        "recorded {} events, {} panes, {} windows, {} late, {} bad timestamps",
        st.recorded, st.panes_closed, st.windows_emitted, st.late, st.bad_timestamp
    );
}
