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

/// A string of at most 16 bytes as a value that compares in two instructions: its bytes
/// (zero past its length) and its length. Categorical names and values are mostly this short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key16 {
    bytes: u128,
    len: u32,
}

impl Key16 {
    /// Equal to no key of a string.
    pub(crate) const NONE: Self = Self { bytes: 0, len: u32::MAX };

    /// The key of `s`, `None` when it is longer than 16 bytes.
    pub(crate) fn of(s: &[u8]) -> Option<Self> {
        let mut block = [0u8; 16];
        block.get_mut(..s.len())?.copy_from_slice(s);
        Some(Self { bytes: u128::from_le_bytes(block), len: s.len() as u32 })
    }

    /// The key of the first `len` bytes of a 16-byte block.
    #[inline(always)]
    fn prefix(block: &[u8; 16], len: u32) -> Self {
        let mask = u128::MAX.checked_shr(128 - 8 * len).unwrap_or(0);
        Self { bytes: u128::from_le_bytes(*block) & mask, len }
    }

    /// 64 bits mixing the bytes and the length (for a multiplicative hash).
    #[inline(always)]
    pub(crate) fn fold(self) -> u64 {
        (self.bytes as u64) ^ ((self.bytes >> 64) as u64).rotate_left(23) ^ u64::from(self.len)
    }
}

/// The text arena shared by the spans of one record.
///
/// Text is normally pushed as `&str`. A decoder may instead push raw bytes ([`RawText`]) and
/// validate the whole arena once at the end ([`InferenceRecord::finish_raw`]): one pass over a
/// few hundred bytes (an ASCII check, for almost every record) instead of one call per string.
///
/// The text is kept as bytes, valid UTF-8 with every span on char boundaries once validated
/// (and always for text pushed as `&str`): the hot path compares names and values as bytes,
/// and only what is read as `&str` is checked again (a few short strings, off the hot path),
/// instead of the whole text being checked a second time to make a `String` of it.
#[derive(Default, Clone)]
struct Arena {
    bytes: Vec<u8>,
    /// Raw bytes were pushed and not validated yet: every span reads as empty.
    raw: bool,
}

impl Arena {
    #[inline]
    fn push(&mut self, s: &str) -> Span {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        Span { start, end: self.bytes.len() as u32 }
    }

    /// The text once validated (empty while raw bytes are being pushed).
    #[inline(always)]
    fn text(&self) -> &[u8] {
        if self.raw { &[] } else { &self.bytes }
    }

    /// The key of a span of at most 16 bytes (see [`Key16`]): one 16-byte load where the text
    /// goes on for 16 bytes from the span's start, as it does for all but the last strings.
    #[inline(always)]
    fn key16(&self, span: Span) -> Option<Key16> {
        let len = span.end.wrapping_sub(span.start);
        if len > 16 {
            return None;
        }
        let from = self.text().get(span.start as usize..).unwrap_or_default();
        match from.first_chunk::<16>() {
            Some(block) => Some(Key16::prefix(block, len)),
            None => Key16::of(from.get(..len as usize).unwrap_or_default()),
        }
    }

    /// A span's bytes (empty while raw bytes are being pushed, or for a span out of range).
    #[inline(always)]
    fn bytes(&self, span: Span) -> &[u8] {
        self.text().get(span.start as usize..span.end as usize).unwrap_or_default()
    }

    #[inline]
    fn get(&self, span: Span) -> &str {
        // Valid by construction; checking a short string again costs a few instructions.
        std::str::from_utf8(self.bytes(span)).unwrap_or("")
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.raw = false;
    }

    fn begin_raw(&mut self) {
        self.bytes.clear();
        self.raw = true;
    }

    #[inline]
    fn push_raw(&mut self, b: &[u8]) -> Span {
        // Unchecked bytes: nothing reads the text until `finish_raw` checked it.
        self.raw = true;
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        Span { start, end: self.bytes.len() as u32 }
    }

    /// [`Arena::push_raw`] of the first `len` bytes of `src`. A short string followed by enough
    /// bytes is copied as a fixed 16-byte block and cut back (a few moves instead of a call to
    /// `memcpy`, for each of a record's thirty-odd strings).
    #[inline(always)]
    fn push_raw_prefix(&mut self, src: &[u8], len: usize) -> Span {
        self.raw = true;
        let start = self.bytes.len();
        match src.first_chunk::<16>() {
            Some(block) if len <= 16 => {
                self.bytes.extend_from_slice(block);
                self.bytes.truncate(start + len);
            }
            _ => self.bytes.extend_from_slice(src.get(..len).unwrap_or(src)),
        }
        Span { start: start as u32, end: self.bytes.len() as u32 }
    }

    /// Whether the raw bytes are all ASCII (then valid, every byte a char boundary): the
    /// 16-byte blocks OR-ed together (one vector operation each), then the high bits tested
    /// once; `<[u8]>::is_ascii` tests a word at a time.
    #[inline]
    fn raw_is_ascii(&self) -> bool {
        let (blocks, tail) = self.bytes.as_chunks::<16>();
        let any = blocks.iter().fold(0u128, |any, b| any | u128::from_le_bytes(*b));
        any & u128::from_le_bytes([0x80; 16]) == 0 && tail.is_ascii()
    }

    /// Validates the raw bytes as one string. `boundaries_ok` says whether every span starts and
    /// ends on a char boundary (then every span is valid UTF-8 on its own). On error the text
    /// is dropped: every span reads as empty.
    fn finish_raw(&mut self, boundaries_ok: bool) -> Result<(), RawTextError> {
        self.raw = false;
        let result = match std::str::from_utf8(&self.bytes) {
            Err(e) => Err(RawTextError::InvalidUtf8 { offset: e.valid_up_to() }),
            Ok(_) if !boundaries_ok => Err(RawTextError::SplitCharacter),
            Ok(_) => Ok(()),
        };
        if result.is_err() {
            self.bytes.clear();
        }
        result
    }

    /// Whether both ends of a span are char boundaries of the raw bytes (a byte that is not a
    /// UTF-8 continuation byte, or the end).
    #[inline]
    fn raw_boundaries(&self, s: Span) -> bool {
        let at = |i: u32| self.bytes.get(i as usize).is_none_or(|&c| (c as i8) >= -0x40);
        at(s.start) & at(s.end)
    }
}

/// Text pushed as raw bytes, not validated yet (see [`InferenceRecord::begin_raw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawText(Span);

/// Raw text of a record that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RawTextError {
    /// Invalid UTF-8 at this offset of the record's concatenated text.
    #[error("invalid utf-8 at offset {offset} of the record's text")]
    InvalidUtf8 {
        /// Offset within the concatenated text of the record.
        offset: usize,
    },
    /// A string starts or ends inside a multi-byte character.
    #[error("a string of the record splits a utf-8 character")]
    SplitCharacter,
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
        self.arena.clear();
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

    /// Forgets the content (as [`InferenceRecord::clear`]) and starts building from raw bytes:
    /// push every string with [`InferenceRecord::raw`], set fields with the `*_raw` methods, then
    /// call [`InferenceRecord::finish_raw`], which validates all the text in one pass. Accessors
    /// read empty strings until then.
    pub fn begin_raw(&mut self) {
        self.clear();
        self.arena.begin_raw();
    }
    /// Pushes raw text (not validated until [`InferenceRecord::finish_raw`]).
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) -> RawText {
        RawText(self.arena.push_raw(bytes))
    }
    /// Pushes the first `len` bytes of `src` as raw text, as [`InferenceRecord::raw`] does;
    /// faster for a short string that `src` continues past (a decoder passes the rest of the
    /// payload from the string's start). All of `src` when it is shorter than `len`.
    #[inline]
    pub fn raw_prefix(&mut self, src: &[u8], len: usize) -> RawText {
        RawText(self.arena.push_raw_prefix(src, len))
    }
    /// Sets the model name from raw text.
    #[inline]
    pub fn set_model_raw(&mut self, t: RawText) {
        self.model = t.0;
    }
    /// Sets the version from raw text.
    #[inline]
    pub fn set_version_raw(&mut self, t: RawText) {
        self.version = t.0;
    }
    /// Sets the request id from raw text.
    #[inline]
    pub fn set_request_id_raw(&mut self, t: Option<RawText>) {
        self.request_id = t.map(|t| t.0);
    }
    /// Sets the status from raw text.
    #[inline]
    pub fn set_status_raw(&mut self, t: RawText) {
        self.status = t.0;
    }
    /// Sets the predicted label from raw text.
    #[inline]
    pub fn set_predicted_label_raw(&mut self, t: Option<RawText>) {
        self.predicted_label = t.map(|t| t.0);
    }
    /// Adds a numeric feature named by raw text.
    #[inline]
    pub fn push_feature_raw(&mut self, name: RawText, value: f64) {
        self.features.push((name.0, value));
    }
    /// Adds a categorical feature from raw text.
    #[inline]
    pub fn push_category_raw(&mut self, name: RawText, value: RawText) {
        self.categories.push((name.0, value.0));
    }
    /// Adds an attribute from raw text.
    #[inline]
    pub fn push_attribute_raw(&mut self, name: RawText, value: RawText) {
        self.attributes.push((name.0, value.0));
    }
    /// Validates the raw text pushed since [`InferenceRecord::begin_raw`]: all of it must be
    /// UTF-8 and no string may split a character. On error the text reads as empty.
    pub fn finish_raw(&mut self) -> Result<(), RawTextError> {
        // Plain loops: this runs for every record and an iterator chain cost a third of it.
        let a = &self.arena;
        if a.raw_is_ascii() {
            // Valid, and every byte is a char boundary.
            self.arena.raw = false;
            return Ok(());
        }
        let mut ok = a.raw_boundaries(self.model)
            & a.raw_boundaries(self.version)
            & a.raw_boundaries(self.status)
            & self.request_id.is_none_or(|s| a.raw_boundaries(s))
            & self.predicted_label.is_none_or(|s| a.raw_boundaries(s));
        for f in &self.features {
            ok &= a.raw_boundaries(f.0);
        }
        for c in &self.categories {
            ok &= a.raw_boundaries(c.0) & a.raw_boundaries(c.1);
        }
        for at in &self.attributes {
            ok &= a.raw_boundaries(at.0) & a.raw_boundaries(at.1);
        }
        self.arena.finish_raw(ok)
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
    /// The model name's bytes (valid UTF-8, not checked again).
    #[inline]
    pub(crate) fn model_bytes(&self) -> &[u8] {
        self.arena.bytes(self.model)
    }
    /// The version's bytes (valid UTF-8, not checked again).
    #[inline]
    pub(crate) fn version_bytes(&self) -> &[u8] {
        self.arena.bytes(self.version)
    }
    /// The status's bytes (valid UTF-8, not checked again).
    #[inline]
    pub(crate) fn status_bytes(&self) -> &[u8] {
        self.arena.bytes(self.status)
    }
    /// The bytes of one attribute's value (the last one when repeated).
    #[inline]
    pub(crate) fn attribute_bytes(&self, name: &[u8]) -> Option<&[u8]> {
        let a = &self.arena;
        self.attributes.iter().rev().find(|&&(n, _)| a.bytes(n) == name).map(|&(_, v)| a.bytes(v))
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
    /// Whether the numeric features are named exactly as a shape recorded by
    /// [`InferenceRecord::feature_shape`]: `text` is the concatenation of the names in order and
    /// `ends` the end of each name within it. True only when the record's names lie back to back
    /// in its text (every decoder pushes them so) and match byte for byte.
    #[inline]
    pub(crate) fn has_feature_shape(&self, text: &[u8], ends: &[u32]) -> bool {
        if self.features.len() != ends.len() {
            return false;
        }
        let Some(&(first, _)) = self.features.first() else { return true };
        let base = first.start;
        let mut at = base;
        let mut ok = true;
        for (&(span, _), &end) in self.features.iter().zip(ends) {
            ok &= (span.start == at) & (span.end == base.wrapping_add(end));
            at = span.end;
        }
        ok && self.arena.text().get(base as usize..at as usize) == Some(text)
    }
    /// The shape of the numeric features' names for [`InferenceRecord::has_feature_shape`],
    /// written into `text` and `ends`; `false` (and nothing written) when the names do not lie
    /// back to back in the record's text.
    pub(crate) fn feature_shape(&self, text: &mut Vec<u8>, ends: &mut Vec<u32>) -> bool {
        let base = self.features.first().map_or(0, |&(s, _)| s.start);
        let mut at = base;
        for &(span, _) in &self.features {
            if span.start != at {
                return false;
            }
            at = span.end;
        }
        let Some(names) = self.arena.text().get(base as usize..at as usize) else {
            return false;
        };
        text.clear();
        text.extend_from_slice(names);
        ends.clear();
        ends.extend(self.features.iter().map(|&(span, _)| span.end - base));
        true
    }
    /// The value of the numeric feature at position `i` (NaN past the end).
    #[inline(always)]
    pub(crate) fn feature_value(&self, i: usize) -> f64 {
        self.features.get(i).map_or(f64::NAN, |f| f.1)
    }
    /// The numeric features' values, in the order they were decoded.
    #[inline]
    pub(crate) fn feature_values(
        &self,
    ) -> impl DoubleEndedIterator<Item = f64> + ExactSizeIterator + '_ {
        self.features.iter().map(|&(_, v)| v)
    }
    /// Categorical features in the order they were decoded.
    #[inline]
    pub fn categories(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator + '_ {
        self.categories.iter().map(|&(n, v)| (self.arena.get(n), self.arena.get(v)))
    }
    /// The categorical features' names and values as [`Key16`]s (`None` for a string over 16
    /// bytes), in the order they were decoded.
    #[inline]
    pub(crate) fn category_keys(
        &self,
    ) -> impl DoubleEndedIterator<Item = (Option<Key16>, Option<Key16>)> + ExactSizeIterator + '_
    {
        self.categories.iter().map(|&(n, v)| (self.arena.key16(n), self.arena.key16(v)))
    }
    /// The categorical feature at position `i`: its name and value (`""` past the end).
    #[inline]
    pub(crate) fn category(&self, i: usize) -> (&str, &str) {
        self.categories.get(i).map_or(("", ""), |&(n, v)| (self.arena.get(n), self.arena.get(v)))
    }
    /// The predicted label's [`Key16`]: `None` without a label, `Some(None)` for one over 16
    /// bytes.
    #[inline]
    pub(crate) fn label_key(&self) -> Option<Option<Key16>> {
        self.predicted_label.map(|s| self.arena.key16(s))
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
        self.arena.clear();
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
    fn raw_prefixes_copy_exactly_their_bytes() {
        let payload = b"model-042\x06v41-canary-with-a-long-name\x00\x01 and more bytes after it";
        let mut r = InferenceRecord::default();
        r.begin_raw();
        // Short with 16 bytes after it, exactly 16, long, and longer than what is there.
        let a = r.raw_prefix(payload, 9);
        let b = r.raw_prefix(&payload[10..], 16);
        let c = r.raw_prefix(&payload[10..], 29);
        let d = r.raw_prefix(&payload[payload.len() - 5..], 3);
        let e = r.raw_prefix(b"xy", 9);
        r.set_model_raw(a);
        r.set_version_raw(b);
        r.set_status_raw(c);
        r.set_request_id_raw(Some(d));
        r.set_predicted_label_raw(Some(e));
        assert_eq!(r.finish_raw(), Ok(()));
        assert_eq!(r.model(), "model-042");
        assert_eq!(r.version(), "v41-canary-with-");
        assert_eq!(r.status(), "v41-canary-with-a-long-name\0\u{1}");
        assert_eq!(r.request_id(), Some("er "));
        assert_eq!(r.predicted_label(), Some("xy"));
    }

    #[test]
    fn raw_text_is_validated_once_and_split_characters_are_caught() {
        let mut r = InferenceRecord::default();
        r.begin_raw();
        let m = r.raw(b"fraud");
        r.set_model_raw(m);
        let n = r.raw("caf\u{e9}".as_bytes());
        r.push_feature_raw(n, 1.5);
        assert_eq!(r.finish_raw(), Ok(()));
        assert_eq!(r.model(), "fraud");
        assert_eq!(r.features().collect::<Vec<_>>(), vec![("caf\u{e9}", 1.5)]);
        // Non-ASCII in the 16-byte blocks the ASCII check ORs together, not only in the tail.
        for at in [0, 7, 15, 16, 31, 33] {
            r.begin_raw();
            let mut text = "x".repeat(40);
            text.replace_range(at..at + 1, "\u{e9}");
            let t = r.raw(text.as_bytes());
            r.set_model_raw(t);
            assert_eq!(r.finish_raw(), Ok(()));
            assert_eq!(r.model(), text);
            r.begin_raw();
            let t = r.raw(&text.as_bytes()[..at + 1]);
            r.set_model_raw(t);
            assert_eq!(r.finish_raw(), Err(RawTextError::InvalidUtf8 { offset: at }), "{at}");
        }
        // "é" split over two strings: the concatenation is valid, the strings are not.
        r.begin_raw();
        let a = r.raw(&[b'x', 0xC3]);
        let b = r.raw(&[0xA9]);
        r.set_model_raw(a);
        r.set_version_raw(b);
        assert!(r.finish_raw().is_err());
        assert_eq!(r.model(), "");
        r.begin_raw();
        let bad = r.raw(&[0xff, b'a']);
        r.set_status_raw(bad);
        assert_eq!(r.finish_raw(), Err(RawTextError::InvalidUtf8 { offset: 0 }));
        // The arena still works afterwards.
        r.clear();
        r.set_model("m");
        assert_eq!(r.model(), "m");
    }

    #[test]
    fn byte_accessors_read_what_the_str_accessors_read() {
        let mut r = InferenceRecord::default();
        r.set_model("fraud-détecteur");
        r.set_version("v1");
        r.set_status("ok");
        r.push_attribute("route", "stable");
        r.push_attribute("host", "h");
        r.push_attribute("route", "canary");
        assert_eq!(r.model_bytes(), r.model().as_bytes());
        assert_eq!(r.version_bytes(), b"v1");
        assert_eq!(r.status_bytes(), b"ok");
        assert_eq!(r.attribute_bytes(b"route"), Some(&b"canary"[..]));
        assert_eq!(r.attribute("route"), Some("canary"));
        assert_eq!(r.attribute_bytes(b"region"), None);
        // Raw text not validated yet reads as empty, as bytes too.
        r.begin_raw();
        let m = r.raw(b"m");
        r.set_model_raw(m);
        assert_eq!((r.model(), r.model_bytes()), ("", &b""[..]));
        assert_eq!(r.finish_raw(), Ok(()));
        assert_eq!((r.model(), r.model_bytes()), ("m", &b"m"[..]));
    }

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
        let cap = r.arena.bytes.capacity();
        r.clear();
        assert_eq!(r.model(), "");
        assert_eq!(r.features().len(), 0);
        assert_eq!(r.arena.bytes.capacity(), cap);
    }
}
