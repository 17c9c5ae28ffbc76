//! Workloads shared by the benchmarks: realistic inference records for many model versions, and
//! their encodings (Avro bare datum, Confluent framing, JSON).
//!
//! The Avro encoder here writes maps in a stable order, as real producers do (a Python dict,
//! a Java `LinkedHashMap`, or a `HashMap` with fixed keys); apache-avro's `Value::Map` would
//! shuffle them per record. A test checks it against apache-avro's decoder.

use modelwatch_core::event::InferenceRecord;
use modelwatch_core::{Admission, CoreConfig, Output, Source, Tracker};

pub mod live;

/// Numeric features per record.
pub const NUMERIC_FEATURES: usize = 20;
/// Categorical features per record.
pub const CATEGORICAL_FEATURES: usize = 2;

/// Events between two `advance` calls of [`EngineFeed`]: the engine advances after every batch
/// it consumes (up to `max_batch` records, 2,048 by default).
pub const ADVANCE_EVERY: i64 = 1_000;

/// Events between two checkpoints of [`EngineFeed`]: the engine takes one per flush
/// (`flush_interval`, 1 s by default), and the benchmarks' load brings 100,000 events a second.
pub const CHECKPOINT_EVERY: i64 = 100_000;

/// Discards panes and windows.
#[derive(Debug)]
pub struct Discard;
impl Output for Discard {}

/// A tracker fed records of partition 0 in offset order, as the engine feeds it: `advance`
/// every [`ADVANCE_EVERY`] events and a checkpoint (with its release) every
/// [`CHECKPOINT_EVERY`].
#[derive(Debug)]
pub struct EngineFeed {
    /// The tracker.
    pub tracker: Tracker,
    /// The offset of the next record.
    pub offset: i64,
    /// The offset of the last checkpoint [`EngineFeed::maintain`] took.
    checkpointed: i64,
}

impl EngineFeed {
    /// A fresh tracker of `cfg`.
    pub fn new(cfg: CoreConfig) -> Self {
        Self { tracker: Tracker::new(cfg), offset: 0, checkpointed: 0 }
    }

    /// Records `rec` at the next offset, then does what is due.
    #[inline]
    pub fn record(&mut self, rec: &InferenceRecord) -> Admission {
        let a = self.record_only(rec);
        if self.offset % ADVANCE_EVERY == 0 {
            self.tracker.advance(&mut Discard);
        }
        if self.offset % CHECKPOINT_EVERY == 0 {
            let cp = self.tracker.checkpoint(0, self.offset);
            self.tracker.release(0, &cp);
        }
        a
    }

    /// What [`EngineFeed::record`] does besides recording, for the events recorded since the
    /// last call: `advance` (pane closes and, past a slide, the evaluation of every window),
    /// then a checkpoint and its release if one was due ([`CHECKPOINT_EVERY`]). A benchmark of
    /// recording alone calls it between timed batches.
    pub fn maintain(&mut self) {
        self.tracker.advance(&mut Discard);
        if self.offset / CHECKPOINT_EVERY > self.checkpointed / CHECKPOINT_EVERY {
            let cp = self.tracker.checkpoint(0, self.offset);
            self.tracker.release(0, &cp);
            self.checkpointed = self.offset;
        }
    }

    /// Records `rec` at the next offset and nothing else: no pane closes, no checkpoint.
    #[inline]
    pub fn record_only(&mut self, rec: &InferenceRecord) -> Admission {
        let src = Source { partition: 0, offset: self.offset, record_ts_ms: rec.event_time_ms };
        self.offset += 1;
        self.tracker.record_inference(src, rec)
    }
}

/// A small deterministic generator (xorshift64*), so runs are comparable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Traffic of `versions` model versions (10 versions per model) at `rate_per_version` events
/// per second of event time, round robin.
#[derive(Debug, Clone)]
pub struct Workload {
    versions: usize,
    rate_per_version: u32,
    start_ms: i64,
    n: u64,
    run: u64,
    rng: Rng,
    models: Vec<String>,
    version_names: Vec<String>,
    feature_names: Vec<String>,
    category_names: Vec<String>,
}

impl Workload {
    /// A workload starting at `start_ms` of event time.
    pub fn new(versions: usize, rate_per_version: u32, start_ms: i64, seed: u64) -> Self {
        Self {
            versions,
            rate_per_version,
            start_ms,
            n: 0,
            run: 1,
            rng: Rng::new(seed),
            models: (0..versions.div_ceil(10)).map(|m| format!("model-{m:03}")).collect(),
            version_names: (0..10).map(|v| format!("v{}", 40 + v)).collect(),
            feature_names: (0..NUMERIC_FEATURES).map(|i| format!("txn_feature_{i:02}")).collect(),
            category_names: vec!["merchant_country".into(), "device_type".into()],
        }
    }

    /// Consecutive events per version before the next one: 1 is strict round robin (the worst
    /// case for caches); a keyed producer's batch of ~20 records is typical of real input.
    pub fn with_runs(mut self, run: u64) -> Self {
        self.run = run.max(1);
        self
    }

    /// Event time of the next event.
    pub fn now_ms(&self) -> i64 {
        let per_ms = f64::from(self.rate_per_version) * self.versions as f64 / 1000.0;
        self.start_ms + (self.n as f64 / per_ms) as i64
    }

    /// Fills `rec` with the next event.
    pub fn next(&mut self, rec: &mut InferenceRecord) {
        let t = self.now_ms();
        let k = ((self.n / self.run) % self.versions as u64) as usize;
        self.n += 1;
        let r = &mut self.rng;
        rec.clear();
        rec.event_time_ms = t;
        rec.set_model(&self.models[k / 10]);
        rec.set_version(&self.version_names[k % 10]);
        rec.set_request_id(Some("3f2b8c1e-4a5d-4e6f-9a7b-1c2d3e4f5a6b"));
        rec.latency_ms = (3.0 + 0.5 * r.normal()).exp() + if r.unit() < 0.01 { 200.0 } else { 0.0 };
        rec.set_status(if r.unit() < 0.01 { "error" } else { "ok" });
        rec.prediction = Some(r.unit());
        rec.set_predicted_label(Some(if r.unit() < 0.1 { "fraud" } else { "legit" }));
        for (i, name) in self.feature_names.iter().enumerate() {
            rec.push_feature(name, r.normal() * (1.0 + i as f64) + i as f64);
        }
        rec.push_category(
            &self.category_names[0],
            ["DE", "US", "FR", "GB", "IN"][(r.next_u64() % 5) as usize],
        );
        rec.push_category(
            &self.category_names[1],
            ["ios", "android", "web"][(r.next_u64() % 3) as usize],
        );
        rec.push_attribute("region", "eu-west-1");
        rec.push_attribute("route", if k % 10 == 9 { "canary" } else { "stable" });
        rec.push_attribute("host", "inference-7f9c-2");
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_long(out, 0),
        Some(s) => {
            put_long(out, 1);
            put_str(out, s);
        }
    }
}

fn put_opt_long(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => put_long(out, 0),
        Some(v) => {
            put_long(out, 1);
            put_long(out, v);
        }
    }
}

fn put_opt_double(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => put_long(out, 0),
        Some(v) => {
            put_long(out, 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_str_map<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = (&'a str, &'a str)>) {
    if items.len() > 0 {
        put_long(out, items.len() as i64);
        for (k, v) in items {
            put_str(out, k);
            put_str(out, v);
        }
    }
    put_long(out, 0);
}

/// Appends the Avro binary encoding of `rec` in the contract's schema
/// (`modelwatch.v1.InferenceLog`), maps in the record's order.
pub fn encode_avro(rec: &InferenceRecord, out: &mut Vec<u8>) {
    put_long(out, rec.event_time_ms);
    put_str(out, rec.model());
    put_str(out, rec.version());
    put_opt_str(out, rec.request_id());
    out.extend_from_slice(&rec.latency_ms.to_le_bytes());
    put_str(out, rec.status());
    put_opt_double(out, rec.prediction);
    put_opt_str(out, rec.predicted_label());
    let f = rec.features();
    if f.len() > 0 {
        put_long(out, f.len() as i64);
        for (k, v) in f {
            put_str(out, k);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    put_long(out, 0);
    put_str_map(out, rec.categories());
    put_opt_long(out, rec.tokens_in);
    put_opt_long(out, rec.tokens_out);
    put_opt_double(out, rec.ttft_ms);
    put_str_map(out, rec.attributes());
}

/// The Confluent framing of an Avro datum: magic 0, 4-byte big-endian schema id, datum.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(datum.len() + 5);
    v.push(0);
    v.extend_from_slice(&schema_id.to_be_bytes());
    v.extend_from_slice(datum);
    v
}

/// Appends the JSON encoding of `rec` (one object, no trailing newline).
pub fn encode_json(rec: &InferenceRecord, out: &mut Vec<u8>) {
    let map = |it: &mut dyn Iterator<Item = (&str, serde_json::Value)>| {
        serde_json::Value::Object(it.map(|(k, v)| (k.to_owned(), v)).collect())
    };
    let v = serde_json::json!({
        "event_time": rec.event_time_ms,
        "model": rec.model(),
        "version": rec.version(),
        "request_id": rec.request_id(),
        "latency_ms": rec.latency_ms,
        "status": rec.status(),
        "prediction": rec.prediction,
        "predicted_label": rec.predicted_label(),
        "features": map(&mut rec.features().map(|(k, v)| (k, v.into()))),
        "categories": map(&mut rec.categories().map(|(k, v)| (k, v.into()))),
        "tokens_in": rec.tokens_in,
        "tokens_out": rec.tokens_out,
        "ttft_ms": rec.ttft_ms,
        "attributes": map(&mut rec.attributes().map(|(k, v)| (k, v.into()))),
    });
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelwatch_codec::{Format, InferenceDecoder};

    #[test]
    fn encodings_decode_to_the_same_record_on_both_avro_paths_and_json() {
        let mut w = Workload::new(30, 100, 1_700_000_000_000, 7);
        let mut rec = InferenceRecord::default();
        let mut fast = InferenceDecoder::new(Format::Avro);
        let mut generic = InferenceDecoder::new(Format::Avro);
        generic.set_fast_path(false);
        let mut json = InferenceDecoder::new(Format::Json);
        for _ in 0..200 {
            w.next(&mut rec);
            let mut avro = Vec::new();
            encode_avro(&rec, &mut avro);
            assert_eq!(fast.decode_one(&avro).expect("fast path"), &rec);
            // apache-avro's own decoder agrees with the hand-written encoder (up to map order,
            // which its HashMap does not keep).
            let g = generic.decode_one(&avro).expect("generic path");
            assert_eq!(g.model(), rec.model());
            let mut a: Vec<_> = g.features().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut b: Vec<_> = rec.features().map(|(k, v)| (k.to_owned(), v)).collect();
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(a, b);
            let mut j = Vec::new();
            encode_json(&rec, &mut j);
            let d = json.decode_one(&j).expect("json");
            // serde_json parses floats to within one ulp unless its slower `float_roundtrip`
            // feature is on; that is far below any precision a latency or feature carries.
            assert_eq!((d.event_time_ms, d.status()), (rec.event_time_ms, rec.status()));
            assert!((d.latency_ms - rec.latency_ms).abs() <= 1e-12 * rec.latency_ms.abs());
            assert_eq!(d.features().len(), NUMERIC_FEATURES);
        }
    }
}
