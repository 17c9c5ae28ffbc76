//! Helpers shared by the integration tests: records as plain data, their Avro values and
//! encodings (bare, single-object, Confluent) written with apache-avro.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use apache_avro::{
    GenericSingleObjectWriter, Schema, types::Value, writer::datum::GenericDatumWriter,
};
use modelwatch_core::event::{InferenceRecord, MetricRecord};

/// An inference log as plain data.
#[derive(Debug, Clone, Default)]
pub struct Inf {
    pub event_time: i64,
    pub model: String,
    pub version: String,
    pub request_id: Option<String>,
    pub latency_ms: f64,
    pub status: String,
    pub prediction: Option<f64>,
    pub predicted_label: Option<String>,
    pub features: BTreeMap<String, f64>,
    pub categories: BTreeMap<String, String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub ttft_ms: Option<f64>,
    pub attributes: BTreeMap<String, String>,
}

fn union<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn smap(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<HashMap<_, _>>(),
    )
}

impl Inf {
    /// A realistic record: 20 numeric features, 2 categorical, 3 attributes (~800 bytes as Avro).
    pub fn sample(i: i64) -> Self {
        let features = (0..20)
            .map(|f| (format!("feature_{f:02}_input_signal"), f as f64 * 1.5 + i as f64))
            .collect();
        Self {
            event_time: 1_779_089_412_345 + i,
            model: "fraud-detector".into(),
            version: "v42".into(),
            request_id: Some(format!("req-{i:012}-8f3a2c1d")),
            latency_ms: 12.75,
            status: "ok".into(),
            prediction: Some(0.913),
            predicted_label: Some("fraud".into()),
            features,
            categories: [("country", "DE"), ("channel", "web")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tokens_in: None,
            tokens_out: None,
            ttft_ms: None,
            attributes: [("region", "eu-west-1"), ("tenant", "acme"), ("route", "canary")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn value(&self) -> Value {
        Value::Record(vec![
            ("event_time".into(), Value::TimestampMillis(self.event_time)),
            ("model".into(), Value::String(self.model.clone())),
            ("version".into(), Value::String(self.version.clone())),
            ("request_id".into(), union(self.request_id.clone(), Value::String)),
            ("latency_ms".into(), Value::Double(self.latency_ms)),
            ("status".into(), Value::String(self.status.clone())),
            ("prediction".into(), union(self.prediction, Value::Double)),
            ("predicted_label".into(), union(self.predicted_label.clone(), Value::String)),
            (
                "features".into(),
                Value::Map(
                    self.features.iter().map(|(k, v)| (k.clone(), Value::Double(*v))).collect(),
                ),
            ),
            ("categories".into(), smap(&self.categories)),
            ("tokens_in".into(), union(self.tokens_in, Value::Long)),
            ("tokens_out".into(), union(self.tokens_out, Value::Long)),
            ("ttft_ms".into(), union(self.ttft_ms, Value::Double)),
            ("attributes".into(), smap(&self.attributes)),
        ])
    }

    /// The record the decoders should produce, maps in key order.
    pub fn record(&self) -> InferenceRecord {
        let mut r = InferenceRecord::default();
        r.event_time_ms = self.event_time;
        r.set_model(&self.model);
        r.set_version(&self.version);
        r.set_request_id(self.request_id.as_deref());
        r.latency_ms = self.latency_ms;
        r.set_status(&self.status);
        r.prediction = self.prediction;
        r.set_predicted_label(self.predicted_label.as_deref());
        for (k, v) in &self.features {
            r.push_feature(k, *v);
        }
        for (k, v) in &self.categories {
            r.push_category(k, v);
        }
        r.tokens_in = self.tokens_in;
        r.tokens_out = self.tokens_out;
        r.ttft_ms = self.ttft_ms;
        for (k, v) in &self.attributes {
            r.push_attribute(k, v);
        }
        r
    }

    pub fn json(&self) -> String {
        let mut o = serde_json::json!({
            "event_time": self.event_time, "model": self.model, "version": self.version,
            "request_id": self.request_id, "latency_ms": self.latency_ms, "status": self.status,
            "prediction": self.prediction, "predicted_label": self.predicted_label,
            "features": self.features, "categories": self.categories, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "ttft_ms": self.ttft_ms, "attributes": self.attributes,
        });
        if let Some(m) = o.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        o.to_string()
    }
}

/// A copy of `r` with every map sorted by key (apache-avro's maps have no order).
pub fn sorted(r: &InferenceRecord) -> InferenceRecord {
    let mut o = InferenceRecord::default();
    o.event_time_ms = r.event_time_ms;
    o.set_model(r.model());
    o.set_version(r.version());
    o.set_request_id(r.request_id());
    o.latency_ms = r.latency_ms;
    o.set_status(r.status());
    o.prediction = r.prediction;
    o.set_predicted_label(r.predicted_label());
    let mut f: Vec<_> = r.features().collect();
    f.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in f {
        o.push_feature(k, v);
    }
    let mut c: Vec<_> = r.categories().collect();
    c.sort();
    for (k, v) in c {
        o.push_category(k, v);
    }
    o.tokens_in = r.tokens_in;
    o.tokens_out = r.tokens_out;
    o.ttft_ms = r.ttft_ms;
    let mut a: Vec<_> = r.attributes().collect();
    a.sort();
    for (k, v) in a {
        o.push_attribute(k, v);
    }
    o
}

/// A metric event as plain data.
#[derive(Debug, Clone)]
pub struct Met {
    pub event_time: i64,
    pub model: String,
    pub version: String,
    pub name: String,
    pub value: f64,
    pub kind: String,
    pub attributes: BTreeMap<String, String>,
}

impl Met {
    pub fn sample(i: i64) -> Self {
        Self {
            event_time: 1_779_089_400_000 + i,
            model: "support-chat".into(),
            version: "2026-05-01".into(),
            name: "gpu_utilization".into(),
            value: 0.87,
            kind: "gauge".into(),
            attributes: [("host".to_string(), "llm-a100-3".to_string())].into(),
        }
    }

    pub fn value(&self) -> Value {
        Value::Record(vec![
            ("event_time".into(), Value::TimestampMillis(self.event_time)),
            ("model".into(), Value::String(self.model.clone())),
            ("version".into(), Value::String(self.version.clone())),
            ("name".into(), Value::String(self.name.clone())),
            ("value".into(), Value::Double(self.value)),
            ("kind".into(), Value::String(self.kind.clone())),
            ("attributes".into(), smap(&self.attributes)),
        ])
    }

    pub fn record(&self) -> MetricRecord {
        let mut r = MetricRecord::default();
        r.event_time_ms = self.event_time;
        r.set_model(&self.model);
        r.set_version(&self.version);
        r.set_name(&self.name);
        r.value = self.value;
        r.kind = modelwatch_core::event::MetricKind::parse(&self.kind).unwrap_or_default();
        for (k, v) in &self.attributes {
            r.push_attribute(k, v);
        }
        r
    }
}

/// A bare Avro datum of `value` written with `schema`.
pub fn bare(schema: &Schema, value: Value) -> Vec<u8> {
    GenericDatumWriter::builder(schema).build().unwrap().write_value_to_vec(value).unwrap()
}

/// Single-object encoding of `value` written with `schema`.
pub fn single_object(schema: &Schema, value: Value) -> Vec<u8> {
    let mut out = Vec::new();
    GenericSingleObjectWriter::new_with_capacity(schema, 1024)
        .unwrap()
        .write_value(value, &mut out)
        .unwrap();
    out
}

/// Confluent framing of `value` written with `schema` under schema id `id`.
pub fn confluent(id: u32, schema: &Schema, value: Value) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(bare(schema, value));
    out
}

/// The contract's inference schema with `edit` applied to its JSON field list.
pub fn edited_inference_schema(edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> Schema {
    let mut j: serde_json::Value =
        serde_json::from_str(modelwatch_codec::INFERENCE_LOG_AVSC).unwrap();
    let fields = j["fields"].as_array_mut().unwrap();
    edit(fields);
    Schema::parse_str(&j.to_string()).unwrap()
}
