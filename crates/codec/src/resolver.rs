//! Writer-schema lookup: Confluent schema ids and single-object fingerprints to Avro schemas.
//!
//! A [`SchemaResolver`] is asked by a decoder the first time it meets an id or a fingerprint;
//! the decoder caches the answer (as a decode plan) and does not ask again for that id or
//! fingerprint. An unknown id or fingerprint is a typed error ([`ResolveError::UnknownId`],
//! [`ResolveError::UnknownFingerprint`]), never a guess. Errors are not cached by the decoder,
//! so a resolver backed by a network service is asked again for the next message.
//!
//! [`DirResolver`] serves schemas from `.avsc` files. Naming rule: `NAME.avsc` is registered by
//! its fingerprint only; `NAME.ID.avsc`, where `ID` is a decimal `u32` (for example
//! `inference_log.7.avsc`), is also registered under Confluent schema id `ID`. The contract's two
//! schemas are always known by fingerprint.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use apache_avro::Schema;
use rustc_hash::FxHashMap;

use crate::{ResolveError, schema};

/// Turns a Confluent schema id or a Rabin fingerprint into the writer's schema.
///
/// Driven by the decoders: called once per new id or fingerprint (answers are cached by the
/// decoder), possibly from several threads, so implementations are `Send + Sync`. Blocking is
/// allowed (decoders run on the consumer's thread, not on an async executor).
pub trait SchemaResolver: Send + Sync + fmt::Debug {
    /// The writer schema registered under a Confluent schema id.
    fn by_id(&self, id: u32) -> Result<Arc<Schema>, ResolveError>;
    /// The writer schema whose Rabin fingerprint (see [`crate::fingerprint`]) is `fingerprint`.
    fn by_fingerprint(&self, fingerprint: u64) -> Result<Arc<Schema>, ResolveError>;
}

/// Schemas known in advance: the contract's two, plus any loaded from a directory or added.
#[derive(Debug, Clone)]
pub struct DirResolver {
    by_id: FxHashMap<u32, Arc<Schema>>,
    by_fingerprint: FxHashMap<u64, Arc<Schema>>,
}

impl Default for DirResolver {
    fn default() -> Self {
        Self::builtin()
    }
}

impl DirResolver {
    /// A resolver that knows only the contract's two schemas (by fingerprint).
    pub fn builtin() -> Self {
        let mut r = Self { by_id: FxHashMap::default(), by_fingerprint: FxHashMap::default() };
        for s in [schema::inference_log_schema(), schema::metric_event_schema()] {
            r.by_fingerprint.insert(schema::fingerprint(&s), s);
        }
        r
    }

    /// Loads every `*.avsc` file of `dir` (not recursively) after the contract's schemas, following
    /// the naming rule of the module docs.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ResolveError> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ResolveError::Io { path, source }
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "avsc") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut r = Self::builtin();
        for path in files {
            let id = file_id(&path)?;
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let parsed = Schema::parse_str(&text).map_err(|source| ResolveError::Parse {
                origin: Some(path.display().to_string()),
                source,
            })?;
            r.insert(id, parsed)?;
        }
        Ok(r)
    }

    /// Registers a schema by its fingerprint and, when given, under a Confluent id.
    pub fn insert(&mut self, id: Option<u32>, schema: Schema) -> Result<(), ResolveError> {
        let schema = Arc::new(schema);
        if let Some(id) = id {
            if self.by_id.contains_key(&id) {
                return Err(ResolveError::DuplicateId(id));
            }
            self.by_id.insert(id, Arc::clone(&schema));
        }
        self.by_fingerprint.insert(schema::fingerprint(&schema), schema);
        Ok(())
    }

    /// Registers a schema (builder style), see [`DirResolver::insert`].
    pub fn with(mut self, id: Option<u32>, schema: Schema) -> Result<Self, ResolveError> {
        self.insert(id, schema)?;
        Ok(self)
    }
}

/// The Confluent id in a file name `NAME.ID.avsc`, `None` for `NAME.avsc`.
fn file_id(path: &Path) -> Result<Option<u32>, ResolveError> {
    let bad = || ResolveError::BadFileName(path.display().to_string());
    let stem = path.file_stem().and_then(|s| s.to_str()).ok_or_else(bad)?;
    match stem.rsplit_once('.') {
        None => Ok(None),
        Some((name, id))
            if !name.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            id.parse().map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

impl SchemaResolver for DirResolver {
    fn by_id(&self, id: u32) -> Result<Arc<Schema>, ResolveError> {
        self.by_id.get(&id).cloned().ok_or(ResolveError::UnknownId(id))
    }

    fn by_fingerprint(&self, fingerprint: u64) -> Result<Arc<Schema>, ResolveError> {
        self.by_fingerprint
            .get(&fingerprint)
            .cloned()
            .ok_or(ResolveError::UnknownFingerprint(fingerprint))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_id(Path::new("/x/inference_log.avsc")).unwrap(), None);
        assert_eq!(file_id(Path::new("/x/inference_log.7.avsc")).unwrap(), Some(7));
        assert!(file_id(Path::new("/x/inference_log.v2.avsc")).is_err());
        assert!(file_id(Path::new("/x/a.99999999999.avsc")).is_err());
    }

    #[test]
    fn builtin_knows_the_contract_by_fingerprint_only() {
        let r = DirResolver::builtin();
        assert!(r.by_fingerprint(schema::INFERENCE.fingerprint).is_ok());
        assert!(r.by_fingerprint(schema::METRIC.fingerprint).is_ok());
        assert!(matches!(r.by_fingerprint(1), Err(ResolveError::UnknownFingerprint(1))));
        assert!(matches!(r.by_id(1), Err(ResolveError::UnknownId(1))));
    }

    #[test]
    fn load_follows_the_naming_rule() {
        let dir = std::env::temp_dir().join(format!("modelwatch-codec-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("inference_log.7.avsc"), schema::INFERENCE_LOG_AVSC).unwrap();
        std::fs::write(dir.join("metric_event.avsc"), schema::METRIC_EVENT_AVSC).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let r = DirResolver::load(&dir).unwrap();
        assert_eq!(schema::fingerprint(&r.by_id(7).unwrap()), schema::INFERENCE.fingerprint);
        assert!(r.by_id(8).is_err());
        std::fs::write(dir.join("broken.avsc"), "{").unwrap();
        assert!(matches!(DirResolver::load(&dir), Err(ResolveError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
