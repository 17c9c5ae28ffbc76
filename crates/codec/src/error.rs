//! Typed errors of decoding and of writer-schema resolution.
//!
//! Every failure of [`crate::InferenceDecoder`] and [`crate::MetricDecoder`] is a [`DecodeError`];
//! no input panics. Errors about one field name the field (as in the input contract) and where it
//! was found: the byte offset in the Kafka message value for Avro, the line and column for JSON.

use std::fmt;

/// Where in a payload a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A byte offset from the start of the payload (Avro, framing included).
    Byte(usize),
    /// A 1-based line and column (JSON).
    Line {
        /// The 1-based line of the payload.
        line: usize,
        /// The 1-based column in that line.
        column: usize,
    },
    /// Not known: the generic Avro path validates the record after apache-avro decoded it.
    Unknown,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Byte(b) => write!(f, " at byte {b}"),
            Self::Line { line, column } => write!(f, " at line {line} column {column}"),
            Self::Unknown => Ok(()),
        }
    }
}

/// What is wrong with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A required field is absent.
    Missing,
    /// A string that must not be empty is empty.
    Empty,
    /// A number that must be finite and non-negative is not.
    NegativeOrNotFinite,
    /// A number that must be finite is NaN or infinite.
    NotFinite,
    /// `kind` is neither `gauge` nor `counter`.
    UnknownKind,
    /// `event_time` is neither epoch milliseconds nor an RFC 3339 timestamp with an offset.
    BadTimestamp,
    /// The payload ends inside the field.
    Truncated,
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// A variable-length integer is longer than 10 bytes or overflows 64 bits.
    BadVarint,
    /// A length or count is negative or larger than the bytes that remain.
    BadLength,
    /// A union branch index that the schema does not have.
    BadUnionIndex,
    /// A value of the wrong type (generic Avro path).
    WrongType,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "missing",
            Self::Empty => "empty",
            Self::NegativeOrNotFinite => "not a finite number >= 0",
            Self::NotFinite => "not a finite number",
            Self::UnknownKind => "neither `gauge` nor `counter`",
            Self::BadTimestamp => {
                "neither epoch milliseconds nor an rfc 3339 timestamp with offset"
            }
            Self::Truncated => "payload ends inside the field",
            Self::InvalidUtf8 => "string is not valid utf-8",
            Self::BadVarint => "malformed variable-length integer",
            Self::BadLength => "length or count out of bounds",
            Self::BadUnionIndex => "union branch index out of range",
            Self::WrongType => "value of the wrong type",
        })
    }
}

/// Why a payload could not be decoded into a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty (or, for JSON, only whitespace).
    #[error("empty payload")]
    Empty,
    /// The payload does not start with the magic bytes its format requires.
    #[error("expected {expected} framing, found leading byte {found:#04x}")]
    BadMagic {
        /// The framing the configured format requires.
        expected: &'static str,
        /// The first byte of the payload.
        found: u8,
    },
    /// The payload ends inside its framing header.
    #[error("payload ends inside the {framing} header")]
    TruncatedHeader {
        /// The framing whose header is cut short.
        framing: &'static str,
    },
    /// The writer schema named by the header is unknown or could not be fetched.
    #[error("cannot resolve the writer schema")]
    Resolve(#[source] ResolveError),
    /// The writer schema cannot be read as the contract's schema (schema resolution rules).
    #[error("writer schema `{writer}` is not readable as the contract's schema")]
    IncompatibleSchema {
        /// The writer schema's full name.
        writer: String,
        /// Why apache-avro rejects it.
        #[source]
        source: apache_avro::error::CompatibilityError,
    },
    /// A field is malformed or fails validation.
    #[error("invalid `{field}`{at}: {problem}")]
    Field {
        /// The field name of the input contract.
        field: &'static str,
        /// What is wrong.
        problem: Problem,
        /// Where.
        at: Position,
    },
    /// Bytes remain after one complete Avro datum.
    #[error("{remaining} unexpected bytes after the avro datum{at}")]
    TrailingBytes {
        /// How many bytes remain.
        remaining: usize,
        /// Where the datum ended.
        at: Position,
    },
    /// The JSON is not well formed, or a value has the wrong type.
    #[error("malformed json at line {line} column {column}")]
    Json {
        /// The 1-based line of the payload.
        line: usize,
        /// The 1-based column.
        column: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON field has a value of the wrong type or shape.
    #[error("invalid json value for `{field}` at line {line} column {column}")]
    JsonField {
        /// The field name of the input contract.
        field: &'static str,
        /// The 1-based line of the payload.
        line: usize,
        /// The 1-based column.
        column: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// apache-avro failed to decode or resolve a datum written with a foreign writer schema.
    #[error("generic avro decoding with the writer schema failed")]
    Generic(#[source] apache_avro::Error),
}

impl DecodeError {
    pub(crate) fn field(field: &'static str, problem: Problem, at: Position) -> Self {
        Self::Field { field, problem, at }
    }

    /// The contract field the error is about, when it is about one field.
    pub fn field_name(&self) -> Option<&'static str> {
        match self {
            Self::Field { field, .. } | Self::JsonField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Where in the payload the error was found, when known.
    pub fn position(&self) -> Position {
        match self {
            Self::Field { at, .. } | Self::TrailingBytes { at, .. } => *at,
            Self::Json { line, column, .. } | Self::JsonField { line, column, .. } => {
                Position::Line { line: *line, column: *column }
            }
            _ => Position::Unknown,
        }
    }
}

/// Why a writer schema could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No schema is known under this Confluent schema id (a registry answered 404).
    #[error("unknown schema id {0}")]
    UnknownId(u32),
    /// No schema is known with this Rabin fingerprint.
    #[error("unknown schema fingerprint {0:#018x}")]
    UnknownFingerprint(u64),
    /// A schema file or directory could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A schema file's name does not follow the `NAME.avsc` / `NAME.ID.avsc` rule.
    #[error("schema file name `{0}` is not NAME.avsc or NAME.ID.avsc with a decimal u32 id")]
    BadFileName(String),
    /// Two schema files claim the same Confluent id.
    #[error("schema id {0} is given by two files")]
    DuplicateId(u32),
    /// A schema text is not a valid Avro schema.
    #[error("invalid avro schema{}", origin.as_deref().map(|o| format!(" in {o}")).unwrap_or_default())]
    Parse {
        /// Where the schema came from (file or registry URL).
        origin: Option<String>,
        /// The parser's error.
        #[source]
        source: apache_avro::Error,
    },
    /// The registry could not be reached or did not answer in time.
    #[error("schema registry request for id {id} failed")]
    Http {
        /// The schema id asked for.
        id: u32,
        /// The HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("schema registry answered status {status} for id {id}")]
    Status {
        /// The schema id asked for.
        id: u32,
        /// The HTTP status code.
        status: u16,
    },
    /// The registry's answer is not the expected JSON (`{"schema": "..."}`).
    #[error("schema registry answer for id {id} is not {{\"schema\": \"...\"}}")]
    BadResponse {
        /// The schema id asked for.
        id: u32,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The registry holds a non-Avro schema (`schemaType` PROTOBUF or JSON) under this id.
    #[error("schema id {id} is a {schema_type} schema, not avro")]
    NotAvro {
        /// The schema id asked for.
        id: u32,
        /// The registry's `schemaType`.
        schema_type: String,
    },
}
