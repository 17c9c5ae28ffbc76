//! Field checks shared by every decoding path (fast Avro, generic Avro, JSON).
//!
//! Validated: `event_time` present; `model`, `version` (and a metric's `name`) non-empty;
//! `latency_ms` finite and >= 0; a metric's `value` finite; `kind` is `gauge` or `counter`.

use modelwatch_core::event::MetricKind;

use crate::Problem;

pub(crate) fn non_empty(s: &str) -> Result<&str, Problem> {
    if s.is_empty() { Err(Problem::Empty) } else { Ok(s) }
}

pub(crate) fn latency(v: f64) -> Result<f64, Problem> {
    if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(Problem::NegativeOrNotFinite) }
}

pub(crate) fn finite(v: f64) -> Result<f64, Problem> {
    if v.is_finite() { Ok(v) } else { Err(Problem::NotFinite) }
}

pub(crate) fn kind(s: &str) -> Result<MetricKind, Problem> {
    MetricKind::parse(s).ok_or(Problem::UnknownKind)
}
