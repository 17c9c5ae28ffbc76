//! Framing, writer-schema plans and the decoders.
//!
//! # Framing ([`Format`])
//! - `avro`: a bare datum written with the contract's schema, or single-object encoding
//!   (`0xC3 0x01`, then the writer schema's 8-byte little-endian Rabin fingerprint, then the datum).
//! - `avro-confluent`: `0x00`, a 4-byte big-endian Confluent schema id, then the datum.
//! - `json`: one object or newline-delimited objects (see the `json` module rules below).
//! - `auto` sniffs each payload: `0xC3 0x01` is single-object, a leading `0x00` is Confluent, a first
//!   non-whitespace byte `{` is JSON, anything else a bare datum. This is unambiguous for bare
//!   datums of the contract's schemas whenever `|event_time|` is at least 2^13 ms after or before
//!   the epoch (any real timestamp): such a varint starts with a byte >= 0x80 whose next byte is
//!   also >= 0x80, so it cannot look like `0x00`, `0xC3 0x01`, whitespace or `{`.
//!
//! An Avro payload holds exactly one datum; trailing bytes are an error.
//!
//! # Plans
//! The first time a decoder meets a Confluent id or a fingerprint it asks its [`SchemaResolver`]
//! for the writer schema and caches a plan for it: the **fast path** when the writer schema's
//! fingerprint equals the contract's (same canonical form, hence the same binary layout), the
//! **generic path** (apache-avro schema resolution) otherwise, after checking with
//! `SchemaCompatibility::can_read` that the writer is readable as the contract's schema. A bare
//! datum, or a single-object header carrying the contract's fingerprint, goes to the fast path
//! without asking the resolver. Failed lookups are not cached.
//!
//! # Allocation
//! Each decoder owns one record and fills it in place ([`InferenceRecord::clear`] keeps capacity),
//! so once it is warm the fast path and JSON without escaped strings allocate nothing per
//! record. The first decoder created lowers apache-avro's process-wide allocation limit for one
//! decoded value from 512 MiB to [`MAX_AVRO_ALLOCATION`] (apache-avro keeps the first value set
//! in the process); the fast path checks every length against the remaining bytes instead.
//!
//! [`InferenceRecord::clear`]: modelwatch_core::event::InferenceRecord::clear

use std::{fmt, sync::Arc};

use apache_avro::{Schema, schema_compatibility::SchemaCompatibility};
use modelwatch_core::event::{InferenceRecord, MetricRecord};
use rustc_hash::FxHashMap;

use crate::{
    DecodeError, DirResolver, Position, SchemaResolver, avro::Cursor, generic, json,
    schema::OwnSchema,
};

/// The largest allocation apache-avro may make for one decoded value (see the module docs).
pub const MAX_AVRO_ALLOCATION: usize = 8 * 1024 * 1024;

/// How Kafka message values are framed; see the module docs of [`crate::decoder`] for the rules.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Sniff every payload: single-object, Confluent, JSON or bare Avro.
    #[default]
    Auto,
    /// A bare Avro datum of the contract's schema, or single-object encoding.
    Avro,
    /// Confluent framing: `0x00` and a 4-byte big-endian schema id.
    AvroConfluent,
    /// One JSON object or newline-delimited JSON objects.
    Json,
}

/// What differs between the two record types; everything else is shared.
pub(crate) trait Kind {
    type Record: Default + fmt::Debug;
    /// The contract's schema for this record type.
    fn own() -> &'static OwnSchema;
    /// Decodes a datum of exactly the contract's schema (fast path). Clears `rec` first.
    fn fast(c: &mut Cursor<'_>, rec: &mut Self::Record) -> Result<(), DecodeError>;
    /// Fills `rec` from a value resolved to the contract's schema (generic path).
    fn from_fields(f: &generic::Fields<'_>, rec: &mut Self::Record) -> Result<(), DecodeError>;
    /// Reads one JSON object (with surrounding whitespace) into `rec` through the fast path,
    /// when it can; `false` leaves `text` to [`Kind::json`] (which then gives the same record,
    /// or the error). The fast path never accepts what the serde path rejects.
    fn json_fast(_text: &[u8], _rec: &mut Self::Record) -> bool {
        false
    }
    /// Deserialises one JSON object into `rec`.
    fn json(
        de: &mut json::JsonDe<'_>,
        rec: &mut Self::Record,
        ctx: &mut json::Ctx,
    ) -> serde_json::Result<()>;
}

#[derive(Debug, Clone)]
enum Plan {
    Fast,
    Generic(Arc<Schema>),
}

const SINGLE_OBJECT: [u8; 2] = [0xC3, 0x01];

/// The shared decoder behind [`InferenceDecoder`] and [`MetricDecoder`].
pub(crate) struct Engine<K: Kind> {
    format: Format,
    resolver: Arc<dyn SchemaResolver>,
    record: K::Record,
    fast: bool,
    by_id: FxHashMap<u32, Plan>,
    by_fingerprint: FxHashMap<u64, Plan>,
}

impl<K: Kind> fmt::Debug for Engine<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("format", &self.format)
            .field("resolver", &self.resolver)
            .field("cached_ids", &self.by_id.len())
            .field("cached_fingerprints", &self.by_fingerprint.len())
            .finish_non_exhaustive()
    }
}

impl<K: Kind> Engine<K> {
    pub(crate) fn new(format: Format, resolver: Arc<dyn SchemaResolver>) -> Self {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
        Self {
            format,
            resolver,
            record: K::Record::default(),
            fast: true,
            by_id: FxHashMap::default(),
            by_fingerprint: FxHashMap::default(),
        }
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    pub(crate) fn set_fast_path(&mut self, enabled: bool) {
        self.fast = enabled;
    }

    fn is_json(&self, payload: &[u8]) -> bool {
        match self.format {
            Format::Json => true,
            Format::Auto => {
                !payload.starts_with(&SINGLE_OBJECT)
                    && payload.first() != Some(&0)
                    && payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            }
            Format::Avro | Format::AvroConfluent => false,
        }
    }

    pub(crate) fn decode(
        &mut self,
        payload: &[u8],
        each: &mut impl FnMut(Result<&K::Record, DecodeError>),
    ) {
        if self.is_json(payload) {
            json::decode::<K>(payload, &mut self.record, self.fast, each);
        } else {
            let r = self.avro(payload);
            each(r.map(|()| &self.record));
        }
    }

    pub(crate) fn decode_one(&mut self, payload: &[u8]) -> Result<&K::Record, DecodeError> {
        if self.is_json(payload) {
            if payload.iter().all(u8::is_ascii_whitespace) {
                return Err(DecodeError::Empty);
            }
            json::one::<K>(payload, &mut self.record, 1, self.fast)?;
        } else {
            self.avro(payload)?;
        }
        Ok(&self.record)
    }

    fn avro(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        let first = *payload.first().ok_or_else(|| DecodeError::Empty)?;
        let (plan, start) = match self.format {
            Format::AvroConfluent if first != 0 => {
                return Err(DecodeError::BadMagic { expected: "confluent", found: first });
            }
            Format::AvroConfluent | Format::Auto if first == 0 => {
                let id = payload
                    .get(1..5)
                    .ok_or_else(|| DecodeError::TruncatedHeader { framing: "confluent" })?;
                let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                (self.plan_by_id(id)?, 5)
            }
            _ if payload.starts_with(&SINGLE_OBJECT) => {
                let fp = payload
                    .get(2..10)
                    .ok_or_else(|| DecodeError::TruncatedHeader { framing: "single-object" })?;
                let mut le = [0u8; 8];
                le.copy_from_slice(fp);
                (self.plan_by_fingerprint(u64::from_le_bytes(le))?, 10)
            }
            _ => (Plan::Fast, 0),
        };
        let plan = match plan {
            Plan::Fast if !self.fast => Plan::Generic(Arc::clone(&K::own().schema)),
            plan => plan,
        };
        match plan {
            Plan::Fast => {
                let mut c = Cursor::new(payload, start);
                K::fast(&mut c, &mut self.record)?;
                match c.remaining() {
                    0 => Ok(()),
                    remaining => {
                        Err(DecodeError::TrailingBytes { remaining, at: Position::Byte(c.pos()) })
                    }
                }
            }
            Plan::Generic(writer) => {
                generic::decode::<K>(&writer, payload, start, &mut self.record)
            }
        }
    }

    fn plan_by_id(&mut self, id: u32) -> Result<Plan, DecodeError> {
        if let Some(p) = self.by_id.get(&id) {
            return Ok(p.clone());
        }
        let writer = self.resolver.by_id(id).map_err(DecodeError::Resolve)?;
        let plan = Self::plan_for(writer)?;
        self.by_id.insert(id, plan.clone());
        Ok(plan)
    }

    fn plan_by_fingerprint(&mut self, fp: u64) -> Result<Plan, DecodeError> {
        if fp == K::own().fingerprint {
            return Ok(Plan::Fast);
        }
        if let Some(p) = self.by_fingerprint.get(&fp) {
            return Ok(p.clone());
        }
        let writer = self.resolver.by_fingerprint(fp).map_err(DecodeError::Resolve)?;
        let plan = Self::plan_for(writer)?;
        self.by_fingerprint.insert(fp, plan.clone());
        Ok(plan)
    }

    fn plan_for(writer: Arc<Schema>) -> Result<Plan, DecodeError> {
        let own = K::own();
        if crate::schema::fingerprint(&writer) == own.fingerprint {
            return Ok(Plan::Fast);
        }
        SchemaCompatibility::can_read(&writer, &own.schema).map_err(|source| {
            DecodeError::IncompatibleSchema {
                writer: writer.name().map(|n| n.to_string()).unwrap_or_else(|| "(unnamed)".into()),
                source,
            }
        })?;
        Ok(Plan::Generic(writer))
    }
}

macro_rules! decoder {
    ($(#[$doc:meta])* $name:ident, $kind:ty, $record:ty) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(Engine<$kind>);

        impl $name {
            /// A decoder that knows only the contract's schemas ([`DirResolver::builtin`]): enough
            /// for bare datums, single-object encoding with the contract's fingerprint, and JSON.
            pub fn new(format: Format) -> Self {
                Self::with_resolver(format, Arc::new(DirResolver::builtin()))
            }

            /// A decoder that asks `resolver` for writer schemas it has not met yet.
            pub fn with_resolver(format: Format, resolver: Arc<dyn SchemaResolver>) -> Self {
                Self(Engine::new(format, resolver))
            }

            /// The framing this decoder expects.
            pub fn format(&self) -> Format {
                self.0.format()
            }

            /// Enables (the default) or disables the fast paths. Disabled, datums of the
            /// contract's schema go through apache-avro like foreign writer schemas do, and JSON
            /// objects through serde_json only: for benchmarks and differential tests of the
            /// paths.
            pub fn set_fast_path(&mut self, enabled: bool) {
                self.0.set_fast_path(enabled);
            }

            /// Decodes every record of `payload`, calling `each` once per record or per error.
            ///
            /// Avro payloads yield exactly one result; newline-delimited JSON yields one per
            /// non-blank line (a bad line yields its error and decoding goes on with the next).
            /// The record lent to `each` is the decoder's buffer, overwritten by the next record.
            pub fn decode(&mut self, payload: &[u8], mut each: impl FnMut(Result<&$record, DecodeError>)) {
                self.0.decode(payload, &mut each);
            }

            /// Decodes a payload that holds exactly one record (for JSON: one object, possibly
            /// spread over several lines; anything after it is an error).
            pub fn decode_one(&mut self, payload: &[u8]) -> Result<&$record, DecodeError> {
                self.0.decode_one(payload)
            }
        }
    };
}

decoder!(
    /// Decodes Kafka message values into [`InferenceRecord`]s (`modelwatch.v1.InferenceLog`).
    ///
    /// ```
    /// use modelwatch_codec::{Format, InferenceDecoder};
    ///
    /// let mut d = InferenceDecoder::new(Format::Auto);
    /// let json = br#"{"event_time": "2026-05-18T07:30:12Z", "model": "m", "version": "v1",
    ///                 "latency_ms": 3.5, "status": "ok"}"#;
    /// let r = d.decode_one(json).unwrap();
    /// assert_eq!((r.model(), r.event_time_ms), ("m", 1_779_089_412_000));
    /// ```
    InferenceDecoder,
    crate::inference::Inference,
    InferenceRecord
);

decoder!(
    /// Decodes Kafka message values into [`MetricRecord`]s (`modelwatch.v1.MetricEvent`).
    MetricDecoder,
    crate::metric::Metric,
    MetricRecord
);
