//! A blocking client of a Confluent-compatible schema registry (feature `registry`).
//!
//! `GET {base}/schemas/ids/{id}` must answer `{"schema": "<avro schema json>"}` (a
//! `schemaType` other than `AVRO` is refused). A schema is fetched once per id and cached for the
//! life of the resolver; registry ids are immutable, so the cache never goes stale. Failures are
//! not cached: 404 is [`ResolveError::UnknownId`], any other non-200 status
//! [`ResolveError::Status`], a transport error or timeout [`ResolveError::Http`].
//!
//! Fingerprint lookups (single-object encoding) are answered from the contract's schemas and the
//! schemas already fetched by id; the registry API has no lookup by Rabin fingerprint.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use apache_avro::Schema;
use rustc_hash::FxHashMap;

use crate::{ResolveError, SchemaResolver, schema};

/// The largest registry answer read, in bytes.
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Default)]
struct Cache {
    by_id: FxHashMap<u32, Arc<Schema>>,
    by_fingerprint: FxHashMap<u64, Arc<Schema>>,
}

/// A [`SchemaResolver`] backed by a Confluent-compatible schema registry, with a cache.
#[derive(Debug)]
pub struct RegistryResolver {
    base: String,
    agent: ureq::Agent,
    cache: RwLock<Cache>,
}

#[derive(serde::Deserialize)]
struct Answer {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

impl RegistryResolver {
    /// A client of the registry at `base` (for example `http://localhost:8081`) whose requests
    /// give up after `timeout` (connection, request and answer together).
    pub fn new(base: impl Into<String>, timeout: Duration) -> Self {
        let mut base = base.into();
        while base.ends_with('/') {
            base.pop();
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build();
        let mut cache = Cache::default();
        for s in [schema::inference_log_schema(), schema::metric_event_schema()] {
            cache.by_fingerprint.insert(schema::fingerprint(&s), s);
        }
        Self { base, agent: ureq::Agent::new_with_config(config), cache: RwLock::new(cache) }
    }

    /// The registry's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn fetch(&self, id: u32) -> Result<Schema, ResolveError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let http = |e: ureq::Error| ResolveError::Http { id, source: Box::new(e) };
        let mut resp = self
            .agent
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
            .call()
            .map_err(http)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(ResolveError::UnknownId(id)),
            status => return Err(ResolveError::Status { id, status }),
        }
        let body =
            resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().map_err(http)?;
        let answer: Answer = serde_json::from_str(&body)
            .map_err(|source| ResolveError::BadResponse { id, source })?;
        if let Some(t) = answer.schema_type.filter(|t| !t.eq_ignore_ascii_case("AVRO")) {
            return Err(ResolveError::NotAvro { id, schema_type: t });
        }
        Schema::parse_str(&answer.schema)
            .map_err(|source| ResolveError::Parse { origin: Some(url), source })
    }
}

impl SchemaResolver for RegistryResolver {
    fn by_id(&self, id: u32) -> Result<Arc<Schema>, ResolveError> {
        if let Some(s) = self.cache.read().unwrap_or_else(|p| p.into_inner()).by_id.get(&id) {
            return Ok(Arc::clone(s));
        }
        let fetched = Arc::new(self.fetch(id)?);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let s = Arc::clone(cache.by_id.entry(id).or_insert(fetched));
        cache.by_fingerprint.insert(schema::fingerprint(&s), Arc::clone(&s));
        Ok(s)
    }

    fn by_fingerprint(&self, fingerprint: u64) -> Result<Arc<Schema>, ResolveError> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_fingerprint
            .get(&fingerprint)
            .cloned()
            .ok_or(ResolveError::UnknownFingerprint(fingerprint))
    }
}
