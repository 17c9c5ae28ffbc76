//! Row builders shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use modelwatch_alert::rule::Op;
use modelwatch_alert::{Rule, RuleSpec};
use modelwatch_clickhouse::rows::{DriftScoreRow, MetricStatsRow, WindowStatsRow};

/// Slide of the test windows: 10 s.
pub const SLIDE: i64 = 10_000;

/// A window row of (model, version) ending at `end` with `requests` and a p99 latency.
pub fn window(model: &str, version: &str, end: i64, requests: u64, p99: f64) -> WindowStatsRow {
    WindowStatsRow {
        model: model.into(),
        version: version.into(),
        window_end_ms: end,
        window_start_ms: end - 300_000,
        requests,
        errors: requests / 10,
        timeouts: 0,
        error_rate: (requests > 0).then_some(0.1),
        throughput_rps: requests as f64 / 300.0,
        latency_p50_ms: (requests > 0).then_some(p99 / 2.0),
        latency_p90_ms: (requests > 0).then_some(p99 * 0.8),
        latency_p99_ms: (requests > 0).then_some(p99),
        latency_p999_ms: (requests > 0).then_some(p99 * 1.2),
        latency_max_ms: (requests > 0).then_some(p99 * 1.5),
        tokens_in: 0,
        tokens_out: 0,
        ttft_p50_ms: None,
        ttft_p99_ms: None,
        written_at_ms: 0,
    }
}

/// A metric row of a gauge with `count` samples averaging `avg`.
pub fn metric(
    model: &str,
    version: &str,
    name: &str,
    end: i64,
    count: u64,
    avg: f64,
) -> MetricStatsRow {
    MetricStatsRow {
        model: model.into(),
        version: version.into(),
        name: name.into(),
        window_end_ms: end,
        window_start_ms: end - 300_000,
        kind: "gauge".into(),
        count,
        sum: avg * count as f64,
        min: avg - 1.0,
        max: avg + 1.0,
        last: avg,
        p50: Some(avg),
        p99: Some(avg + 1.0),
        rate_per_s: None,
        written_at_ms: 0,
    }
}

/// A drift row.
pub fn drift(
    model: &str,
    version: &str,
    reference: &str,
    feature: &str,
    end: i64,
    kl: f64,
) -> DriftScoreRow {
    DriftScoreRow {
        model: model.into(),
        version: version.into(),
        reference: reference.into(),
        kind: "numeric".into(),
        feature: feature.into(),
        window_end_ms: end,
        kl,
        psi: kl * 2.0,
        js: kl / 4.0,
        chi2: 0.0,
        dof: 1,
        p_value: 0.5,
        samples: 500,
        reference_samples: 500,
        written_at_ms: 0,
    }
}

/// A rule spec comparing `metric` with `op threshold`, every model and version.
pub fn spec(name: &str, metric: &str, op: Op, threshold: f64) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        metric: metric.into(),
        op: Some(op),
        threshold: Some(threshold),
        severity: "critical".into(),
        model: "*".into(),
        version: "*".into(),
        ..RuleSpec::default()
    }
}

/// `spec` with `for` and `keep_firing_for`, validated.
pub fn rule(name: &str, metric: &str, threshold: f64, for_s: u64, kff_s: u64) -> Rule {
    let mut s = spec(name, metric, Op::Gt, threshold);
    s.for_ = Duration::from_secs(for_s);
    s.keep_firing_for = Duration::from_secs(kff_s);
    s.validate(0).unwrap()
}
