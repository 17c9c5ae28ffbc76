//! Decoded input records, reusable without allocation.
//!
//! A decoder fills an [`InferenceRecord`] or a [`MetricRecord`] in place: every string of the
//! record is copied into one text arena owned by the record, and the record keeps spans into it.
//! [`InferenceRecord::clear`] keeps the arena's and the vectors' capacity, so after the first few
//! records of a stream, decoding and recording allocate nothing per event.
//!
//! Field names and meanings follow the input contract (`schemas/inference_log.avsc`,
//! `schemas/metric_event.avsc`).

use std::fmt;

/// A byte range of a record's text arena.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// The text arena shared by the spans of one record.
#[derive(Default, Clone)]
struct Arena {
    text: String,
}

impl Arena {
    #[inline]
    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span { start, end: self.text.len() as u32 }
    }

    #[inline]
    fn get(&self, span: Span) -> &str {
        // Spans are only created by `push` on this arena, at char boundaries.
        &self.text[span.start as usize..span.end as usize]
    }
}

/// One inference log record (`modelwatch.v1.InferenceLog`), decoded.
///
/// Build it with the `set_*` and `push_*` methods after [`InferenceRecord::clear`]; read it with
/// the accessors. A record whose `model`, `version` or `status` was never set reads them as `""`.
#[derive(Default, Clone)]
pub struct InferenceRecord {
    arena: Arena,
    /// When the request was served, in milliseconds since the Unix epoch (event time).
    pub event_time_ms: i64,
    model: Span,
    version: Span,
    request_id: Option<Span>,
    /// Server-side latency in milliseconds.
    pub latency_ms: f64,
    status: Span,
    /// Numeric output (score, regression value).
    pub prediction: Option<f64>,
    predicted_label: Option<Span>,
    features: Vec<(Span, f64)>,
    categories: Vec<(Span, Span)>,
    /// Prompt tokens (LLM serving).
    pub tokens_in: Option<i64>,
    /// Generated tokens (LLM serving).
    pub tokens_out: Option<i64>,
    /// Time to first token in milliseconds (LLM serving).
    pub ttft_ms: Option<f64>,
    attributes: Vec<(Span, Span)>,
}

impl InferenceRecord {
    /// Forgets the content, keeps the capacity.
    #[inline]
    pub fn clear(&mut self) {
        self.arena.text.clear();
        self.event_time_ms = 0;
        self.model = Span::default();
        self.version = Span::default();
        self.request_id = None;
        self.latency_ms = 0.0;
        self.status = Span::default();
        self.prediction = None;
        self.predicted_label = None;
        self.features.clear();
        self.categories.clear();
        self.tokens_in = None;
        self.tokens_out = None;
        self.ttft_ms = None;
        self.attributes.clear();
    }

    /// Sets the model name.
    #[inline]
    pub fn set_model(&mut self, s: &str) {
        self.model = self.arena.push(s);
    }
    /// Sets the model version.
    #[inline]
    pub fn set_version(&mut self, s: &str) {
        self.version = self.arena.push(s);
    }
    /// Sets the optional request id.
    #[inline]
    pub fn set_request_id(&mut self, s: Option<&str>) {
        self.request_id = s.map(|s| self.arena.push(s));
    }
    /// Sets the status (`ok` is success, anything else an error class).
    #[inline]
    pub fn set_status(&mut self, s: &str) {
        self.status = self.arena.push(s);
    }
    /// Sets the optional predicted label.
    #[inline]
    pub fn set_predicted_label(&mut self, s: Option<&str>) {
        self.predicted_label = s.map(|s| self.arena.push(s));
    }
    /// Adds a numeric feature.
    #[inline]
    pub fn push_feature(&mut self, name: &str, value: f64) {
        let name = self.arena.push(name);
        self.features.push((name, value));
    }
    /// Adds a categorical feature.
    #[inline]
    pub fn push_category(&mut self, name: &str, value: &str) {
        let name = self.arena.push(name);
        let value = self.arena.push(value);
        self.categories.push((name, value));
    }
    /// Adds a slicing attribute (`region`, `tenant`, `route`, `host`, ...).
    #[inline]
    pub fn push_attribute(&mut self, name: &str, value: &str) {
        let name = self.arena.push(name);
        let value = self.arena.push(value);
        self.attributes.push((name, value));
    }

    /// The model name.
    #[inline]
    pub fn model(&self) -> &str {
        self.arena.get(self.model)
    }
    /// The model version.
    #[inline]
    pub fn version(&self) -> &str {
        self.arena.get(self.version)
    }
    /// The request id, when the producer sent one.
    #[inline]
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.map(|s| self.arena.get(s))
    }
    /// The status: `ok` or an error class.
    #[inline]
    pub fn status(&self) -> &str {
        self.arena.get(self.status)
    }
    /// Whether the request succeeded (`status == "ok"`).
    #[inline]
    pub fn is_ok(&self) -> bool {
        self.status() == "ok"
    }
    /// The predicted label, when the model is a classifier.
    #[inline]
    pub fn predicted_label(&self) -> Option<&str> {
        self.predicted_label.map(|s| self.arena.get(s))
    }
    /// Numeric features in the order they were decoded.
    #[inline]
    pub fn features(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&str, f64)> + ExactSizeIterator + '_ {
        self.features.iter().map(|&(n, v)| (self.arena.get(n), v))
    }
    /// Categorical features in the order they were decoded.
    #[inline]
    pub fn categories(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator + '_ {
        self.categories.iter().map(|&(n, v)| (self.arena.get(n), self.arena.get(v)))
    }
    /// Slicing attributes in the order they were decoded.
    #[inline]
    pub fn attributes(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator + '_ {
        self.attributes.iter().map(|&(n, v)| (self.arena.get(n), self.arena.get(v)))
    }
    /// The value of one attribute (the last one when repeated).
    #[inline]
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes().rev().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for InferenceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InferenceRecord")
            .field("event_time_ms", &self.event_time_ms)
            .field("model", &self.model())
            .field("version", &self.version())
            .field("request_id", &self.request_id())
            .field("latency_ms", &self.latency_ms)
            .field("status", &self.status())
            .field("prediction", &self.prediction)
            .field("predicted_label", &self.predicted_label())
            .field("features", &self.features().collect::<Vec<_>>())
            .field("categories", &self.categories().collect::<Vec<_>>())
            .field("tokens_in", &self.tokens_in)
            .field("tokens_out", &self.tokens_out)
            .field("ttft_ms", &self.ttft_ms)
            .field("attributes", &self.attributes().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for InferenceRecord {
    fn eq(&self, o: &Self) -> bool {
        // Floats compare by bits so that a NaN equals itself in round-trip tests.
        fn feq(a: f64, b: f64) -> bool {
            a.to_bits() == b.to_bits()
        }
        fn ofeq(a: Option<f64>, b: Option<f64>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => feq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        self.event_time_ms == o.event_time_ms
            && self.model() == o.model()
            && self.version() == o.version()
            && self.request_id() == o.request_id()
            && feq(self.latency_ms, o.latency_ms)
            && self.status() == o.status()
            && ofeq(self.prediction, o.prediction)
            && self.predicted_label() == o.predicted_label()
            && self.features.len() == o.features.len()
            && self.features().zip(o.features()).all(|(a, b)| a.0 == b.0 && feq(a.1, b.1))
            && self.categories().eq(o.categories())
            && self.tokens_in == o.tokens_in
            && self.tokens_out == o.tokens_out
            && ofeq(self.ttft_ms, o.ttft_ms)
            && self.attributes().eq(o.attributes())
    }
}

/// Whether a metric event is a gauge or a cumulative counter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// A value sampled at a point in time (GPU utilisation, queue depth).
    #[default]
    Gauge,
    /// A cumulative count per (model, version, host); its increase per second is a rate.
    Counter,
}

impl MetricKind {
    /// Parses the contract's `kind` string: `gauge` or `counter`.
    #[inline]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gauge" => Some(Self::Gauge),
            "counter" => Some(Self::Counter),
            _ => None,
        }
    }
}

/// One metric event (`modelwatch.v1.MetricEvent`), decoded.
#[derive(Default, Clone)]
pub struct MetricRecord {
    arena: Arena,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    model: Span,
    version: Span,
    name: Span,
    /// The sampled value.
    pub value: f64,
    /// Gauge or counter.
    pub kind: MetricKind,
    attributes: Vec<(Span, Span)>,
}

impl MetricRecord {
    /// Forgets the content, keeps the capacity.
    #[inline]
    pub fn clear(&mut self) {
        self.arena.text.clear();
        self.event_time_ms = 0;
        self.model = Span::default();
        self.version = Span::default();
        self.name = Span::default();
        self.value = 0.0;
        self.kind = MetricKind::Gauge;
        self.attributes.clear();
    }
    /// Sets the model name.
    #[inline]
    pub fn set_model(&mut self, s: &str) {
        self.model = self.arena.push(s);
    }
    /// Sets the model version.
    #[inline]
    pub fn set_version(&mut self, s: &str) {
        self.version = self.arena.push(s);
    }
    /// Sets the metric name (`gpu_utilization`, ...).
    #[inline]
    pub fn set_name(&mut self, s: &str) {
        self.name = self.arena.push(s);
    }
    /// Adds an attribute.
    #[inline]
    pub fn push_attribute(&mut self, name: &str, value: &str) {
        let name = self.arena.push(name);
        let value = self.arena.push(value);
        self.attributes.push((name, value));
    }
    /// The model name.
    #[inline]
    pub fn model(&self) -> &str {
        self.arena.get(self.model)
    }
    /// The model version.
    #[inline]
    pub fn version(&self) -> &str {
        self.arena.get(self.version)
    }
    /// The metric name.
    #[inline]
    pub fn name(&self) -> &str {
        self.arena.get(self.name)
    }
    /// Attributes in the order they were decoded.
    #[inline]
    pub fn attributes(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator + '_ {
        self.attributes.iter().map(|&(n, v)| (self.arena.get(n), self.arena.get(v)))
    }
    /// The value of one attribute (the last one when repeated).
    #[inline]
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes().rev().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for MetricRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricRecord")
            .field("event_time_ms", &self.event_time_ms)
            .field("model", &self.model())
            .field("version", &self.version())
            .field("name", &self.name())
            .field("value", &self.value)
            .field("kind", &self.kind)
            .field("attributes", &self.attributes().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for MetricRecord {
    fn eq(&self, o: &Self) -> bool {
        self.event_time_ms == o.event_time_ms
            && self.model() == o.model()
            && self.version() == o.version()
            && self.name() == o.name()
            && self.value.to_bits() == o.value.to_bits()
            && self.kind == o.kind
            && self.attributes().eq(o.attributes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_keeps_capacity_and_forgets_content() {
        let mut r = InferenceRecord::default();
        r.set_model("fraud");
        r.set_version("v1");
        r.push_feature("amount", 12.5);
        r.push_category("country", "DE");
        r.push_attribute("route", "canary");
        assert_eq!(r.model(), "fraud");
        assert_eq!(r.features().collect::<Vec<_>>(), vec![("amount", 12.5)]);
        assert_eq!(r.attribute("route"), Some("canary"));
        let cap = r.arena.text.capacity();
        r.clear();
        assert_eq!(r.model(), "");
        assert_eq!(r.features().len(), 0);
        assert_eq!(r.arena.text.capacity(), cap);
    }
}
