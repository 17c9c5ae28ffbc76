//! Errors of the storage crate, each telling whether retrying can help.
//!
//! ClickHouse reports server-side failures as `Code: N` in the HTTP response body; the code
//! decides the class ([`ErrorClass`]): overload and availability codes (`TOO_MANY_PARTS`,
//! `TIMEOUT_EXCEEDED`, `MEMORY_LIMIT_EXCEEDED`, ...), network failures, timeouts and HTTP 5xx
//! without a code are [`ErrorClass::Retryable`]; request errors (unknown table or column, type
//! mismatch, syntax, unparseable data, authentication) are [`ErrorClass::Permanent`]. A code that
//! is in neither list is treated as retryable (the writer retries a bounded number of times, then
//! surfaces the error with the batch still owned by the caller).

/// Whether an operation may succeed if repeated unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the server is down, overloaded or slow. Retry later with backoff.
    Retryable,
    /// The request itself is wrong (schema, types, permissions). Retrying cannot help.
    Permanent,
}

/// An error of the ClickHouse store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured database name is not a plain identifier.
    #[error("invalid database name {name:?}: use 1 to 64 ASCII letters, digits or '_'")]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },
    /// A query (DDL, read, schema check) failed.
    #[error("{what} failed")]
    Query {
        /// What was being done, e.g. `reading checkpoints`.
        what: &'static str,
        /// Whether retrying may help.
        class: ErrorClass,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// A migration step failed; the steps before it are applied and recorded.
    #[error("migration {version} ({name}) failed")]
    Migration {
        /// The step's version.
        version: u32,
        /// The step's name.
        name: &'static str,
        /// Whether retrying may help.
        class: ErrorClass,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The database has migrations this build does not know: it was migrated by a newer build.
    #[error("database is at schema version {found}, newer than this build's {known}")]
    SchemaTooNew {
        /// Highest version recorded in `schema_migrations`.
        found: u32,
        /// Highest version this build knows.
        known: u32,
    },
    /// A table the writer needs does not exist (migrations not run?).
    #[error("table {table} does not exist in database {database}")]
    MissingTable {
        /// Database.
        database: String,
        /// Table.
        table: &'static str,
    },
    /// A table's columns differ from its row layout: writing RowBinary would corrupt data.
    #[error(
        "table {table}: column {position} is {found}, expected {expected} (the row layout \
         does not match the table; run migrations or use a matching build)"
    )]
    ColumnMismatch {
        /// Table.
        table: &'static str,
        /// 1-based position among the inserted (non-materialized) columns.
        position: usize,
        /// Expected `name Type`, or `nothing` when the table has extra columns.
        expected: String,
        /// Found `name Type`, or `nothing` when the table lacks columns.
        found: String,
    },
    /// An insert failed with a permanent error; it was not retried.
    #[error("insert of {rows} rows into {table} failed permanently")]
    InsertPermanent {
        /// Table.
        table: &'static str,
        /// Rows in the failed batch.
        rows: usize,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// An insert kept failing with retryable errors until the retry budget was spent. The batch
    /// is still the caller's: retry it later (rows are keyed, so a repeat is harmless).
    #[error("insert of {rows} rows into {table} failed after {attempts} attempts")]
    InsertRetriesExhausted {
        /// Table.
        table: &'static str,
        /// Rows in the failed batch.
        rows: usize,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// A stored JSON document (a bin layout, a matcher list) does not decode.
    #[error("stored json in {table} for {key} does not decode")]
    StoredJson {
        /// Table.
        table: &'static str,
        /// The row's key, for the operator.
        key: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is outside its domain (e.g. an unknown feature kind).
    #[error("stored value {value:?} in {table}.{column} is not valid")]
    StoredValue {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// The value.
        value: String,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Query { class, .. } | Self::Migration { class, .. } => *class,
            Self::InsertRetriesExhausted { .. } => ErrorClass::Retryable,
            Self::InvalidDatabaseName { .. }
            | Self::SchemaTooNew { .. }
            | Self::MissingTable { .. }
            | Self::ColumnMismatch { .. }
            | Self::InsertPermanent { .. }
            | Self::StoredJson { .. }
            | Self::StoredValue { .. } => ErrorClass::Permanent,
        }
    }

    /// Shorthand for `class() == ErrorClass::Retryable`.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    pub(crate) fn query(what: &'static str, source: clickhouse::error::Error) -> Self {
        Self::Query { what, class: classify(&source), source }
    }
}

/// ClickHouse error codes known to be transient (documentation, and a test keeps them apart from the permanent
/// ones): every code not in [`PERMANENT_CODES`] is retried.
#[cfg_attr(not(test), allow(dead_code))]
const RETRYABLE_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut mid-request)
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    236, // ABORTED
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY (replica lost its keeper session)
    252, // TOO_MANY_PARTS
    285, // TOO_FEW_LIVE_REPLICAS
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED (server shutting down)
    425, // SYSTEM_ERROR
    439, // CANNOT_SCHEDULE_TASK
    999, // KEEPER_EXCEPTION
];

/// ClickHouse error codes that a repeat cannot fix.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA (row layout shorter than the data)
    36,  // BAD_ARGUMENTS
    41,  // CANNOT_PARSE_DATETIME
    42,  // NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    48,  // NOT_IMPLEMENTED
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    73,  // UNKNOWN_FORMAT
    81,  // UNKNOWN_DATABASE
    115, // UNKNOWN_SETTING
    117, // INCORRECT_DATA
    130, // CANNOT_READ_ARRAY_FROM_TEXT
    164, // READONLY
    190, // SIZES_OF_ARRAYS_DOESNT_MATCH
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    195, // IP_ADDRESS_NOT_ALLOWED
    291, // DATABASE_ACCESS_DENIED
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// The `Code: N` of a ClickHouse server error, if the error carries one.
pub fn server_code(error: &clickhouse::error::Error) -> Option<u32> {
    let clickhouse::error::Error::BadResponse(text) = error else {
        return None;
    };
    // With an empty or unreadable body the client reports the bare exception-code header.
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed.parse().ok();
    }
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Classifies an error of the `clickhouse` client.
pub fn classify(error: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match error {
        E::Network(_) | E::TimedOut | E::Decompression(_) | E::Other(_) => ErrorClass::Retryable,
        E::BadResponse(text) => match server_code(error) {
            Some(code) if PERMANENT_CODES.contains(&code) => ErrorClass::Permanent,
            // Known transient codes and, conservatively, unknown ones retry.
            Some(_) => ErrorClass::Retryable,
            // No code: the client's text is the HTTP status line ("503 Service Unavailable").
            None if text.starts_with('5') => ErrorClass::Retryable,
            None if text.starts_with('4') => ErrorClass::Permanent,
            None => ErrorClass::Retryable,
        },
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as E;

    #[test]
    fn codes_of_old_and_new_servers() {
        let old = E::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist., e.what() = \
             DB::Exception"
                .into(),
        );
        let new = E::BadResponse(
            "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS) (version 24.8.1)"
                .into(),
        );
        assert_eq!(server_code(&old), Some(60));
        assert_eq!(classify(&old), ErrorClass::Permanent);
        assert_eq!(server_code(&new), Some(252));
        assert_eq!(classify(&new), ErrorClass::Retryable);
    }

    #[test]
    fn http_status_without_code() {
        assert_eq!(
            classify(&E::BadResponse("503 Service Unavailable".into())),
            ErrorClass::Retryable
        );
        assert_eq!(classify(&E::BadResponse("400 Bad Request".into())), ErrorClass::Permanent);
        assert_eq!(classify(&E::TimedOut), ErrorClass::Retryable);
        assert_eq!(classify(&E::NotEnoughData), ErrorClass::Permanent);
        // An empty body: the client reports the bare exception-code header.
        assert_eq!(classify(&E::BadResponse("60".into())), ErrorClass::Permanent);
        assert_eq!(classify(&E::BadResponse("516".into())), ErrorClass::Permanent);
        assert_eq!(classify(&E::BadResponse("252".into())), ErrorClass::Retryable);
    }

    #[test]
    fn code_lists_are_disjoint() {
        for c in RETRYABLE_CODES {
            assert!(!PERMANENT_CODES.contains(c), "code {c} in both lists");
        }
    }
}
