//! The generic Avro path: apache-avro decodes with the writer's schema, resolves the value to the
//! contract's schema (added fields dropped, missing fields filled with their defaults, promotions
//! such as `int` to `long` applied), and the resolved value fills the record.
//!
//! This path allocates (apache-avro builds a `Value` tree); it is used only for writer schemas
//! whose fingerprint differs from the contract's. Maps come out of apache-avro as hash maps, so
//! their entries are pushed sorted by key (the fast path keeps the order of the wire).

use apache_avro::{Schema, reader::datum::GenericDatumReader, types::Value};

use crate::{DecodeError, Position, Problem, decoder::Kind};

/// Decodes the datum at `payload[start..]` written with `writer` into `rec`.
pub(crate) fn decode<K: Kind>(
    writer: &Schema,
    payload: &[u8],
    start: usize,
    rec: &mut K::Record,
) -> Result<(), DecodeError> {
    let reader = GenericDatumReader::builder(writer)
        .reader_schema(&K::own().schema)
        .build()
        .map_err(DecodeError::Generic)?;
    let mut rest = payload.get(start..).unwrap_or_default();
    let value = reader.read_value(&mut rest).map_err(DecodeError::Generic)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            remaining: rest.len(),
            at: Position::Byte(payload.len() - rest.len()),
        });
    }
    match value {
        Value::Record(fields) => K::from_fields(&Fields(&fields), rec),
        _ => Err(DecodeError::field("record", Problem::WrongType, Position::Unknown)),
    }
}

/// The fields of a resolved record, looked up by name.
#[derive(Debug)]
pub(crate) struct Fields<'v>(&'v [(String, Value)]);

fn err(field: &'static str) -> impl Fn(Problem) -> DecodeError {
    move |p| DecodeError::field(field, p, Position::Unknown)
}

impl Fields<'_> {
    fn get(&self, name: &'static str) -> Result<&Value, DecodeError> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| err(name)(Problem::Missing))
    }

    /// The inner value of `["null", T]`, `None` for null.
    fn nullable(&self, name: &'static str) -> Result<Option<&Value>, DecodeError> {
        Ok(match self.get(name)? {
            Value::Union(_, v) if matches!(**v, Value::Null) => None,
            Value::Union(_, v) => Some(v),
            Value::Null => None,
            v => Some(v),
        })
    }

    pub(crate) fn long(&self, name: &'static str) -> Result<i64, DecodeError> {
        long(self.get(name)?).map_err(err(name))
    }

    pub(crate) fn double(&self, name: &'static str) -> Result<f64, DecodeError> {
        double(self.get(name)?).map_err(err(name))
    }

    pub(crate) fn str(&self, name: &'static str) -> Result<&str, DecodeError> {
        string(self.get(name)?).map_err(err(name))
    }

    pub(crate) fn opt_long(&self, name: &'static str) -> Result<Option<i64>, DecodeError> {
        self.nullable(name)?.map(long).transpose().map_err(err(name))
    }

    pub(crate) fn opt_double(&self, name: &'static str) -> Result<Option<f64>, DecodeError> {
        self.nullable(name)?.map(double).transpose().map_err(err(name))
    }

    pub(crate) fn opt_str(&self, name: &'static str) -> Result<Option<&str>, DecodeError> {
        self.nullable(name)?.map(string).transpose().map_err(err(name))
    }

    /// A map's entries sorted by key, each value converted by `conv`.
    pub(crate) fn map<'s, T>(
        &'s self,
        name: &'static str,
        conv: impl Fn(&'s Value) -> Result<T, Problem>,
    ) -> Result<Vec<(&'s str, T)>, DecodeError> {
        let Value::Map(m) = self.get(name)? else {
            return Err(err(name)(Problem::WrongType));
        };
        let mut out = m
            .iter()
            .map(|(k, v)| conv(v).map(|v| (k.as_str(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(name))?;
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Ok(out)
    }
}

pub(crate) fn long(v: &Value) -> Result<i64, Problem> {
    match *v {
        Value::Long(x) | Value::TimestampMillis(x) => Ok(x),
        Value::Int(x) => Ok(i64::from(x)),
        _ => Err(Problem::WrongType),
    }
}

pub(crate) fn double(v: &Value) -> Result<f64, Problem> {
    match *v {
        Value::Double(x) => Ok(x),
        Value::Float(x) => Ok(f64::from(x)),
        Value::Long(x) => Ok(x as f64),
        Value::Int(x) => Ok(f64::from(x)),
        _ => Err(Problem::WrongType),
    }
}

pub(crate) fn string(v: &Value) -> Result<&str, Problem> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(Problem::WrongType),
    }
}

/// Applies a check of [`crate::check`] to a generic-path value.
pub(crate) fn check<T>(field: &'static str, r: Result<T, Problem>) -> Result<T, DecodeError> {
    r.map_err(err(field))
}
