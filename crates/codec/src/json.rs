//! JSON input: one object, or newline-delimited objects, deserialised straight into the record.
//!
//! Framing: the payload is split at `\n`; lines holding only JSON whitespace are skipped; every
//! other line is one object, decoded and handed to the caller on its own, so a bad line yields an
//! error for that line and the good lines around it still come through. An object that does not
//! end on its line (a pretty-printed object) is followed onto the next lines; after an error,
//! decoding resumes at the next line.
//!
//! An inference object is first tried on the fast path ([`crate::json_scan`]: plain strings,
//! numbers, nulls, scalar unknown fields), which reads exactly what the serde path reads or
//! gives up; anything else (escapes, nested unknown values, every error) goes through serde
//! visitors into the record, so errors are serde_json's, with line and column. On both paths
//! keys and string values are borrowed from the payload and copied into the record's arena, no
//! `serde_json::Value` is built, so an object without escaped strings allocates nothing once the
//! record is warm. Strings with escapes are unescaped into a temporary `String`. Numbers are
//! correctly rounded on both paths (serde_json's `float_roundtrip`).
//!
//! `event_time` is epoch milliseconds (an integer, or a float truncated towards zero) or an
//! RFC 3339 string with an offset (`Z` or `+02:00`). Missing optional fields are null (maps are
//! empty), `null` is accepted for every optional field and map, and unknown fields are ignored.
//! A missing required field, an invalid value or a value of the wrong type is an error naming
//! the field, with the line and column where the parser stood.

use std::{borrow::Cow, fmt, ops::Deref};

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{DecodeError, Problem, decoder::Kind};

/// The serde_json deserializer over a byte slice.
pub(crate) type JsonDe<'de> = serde_json::Deserializer<serde_json::de::SliceRead<'de>>;

/// What the record visitor tells the driver about a failure: which field was being read, and
/// the validation problem when it was not a syntax or type error.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    field: Option<&'static str>,
    problem: Option<(&'static str, Problem)>,
}

impl Ctx {
    /// Reads the value of `field`.
    #[inline]
    pub(crate) fn value<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
        &mut self,
        m: &mut A,
        field: &'static str,
    ) -> Result<T, A::Error> {
        self.field = Some(field);
        let v = m.next_value()?;
        self.field = None;
        Ok(v)
    }

    /// Reads the value of `field` through a seed.
    #[inline]
    pub(crate) fn seed<'de, S: DeserializeSeed<'de>, A: MapAccess<'de>>(
        &mut self,
        m: &mut A,
        field: &'static str,
        seed: S,
    ) -> Result<S::Value, A::Error> {
        self.field = Some(field);
        let v = m.next_value_seed(seed)?;
        self.field = None;
        Ok(v)
    }

    /// Turns a validation result into the parser's error type, keeping the typed problem.
    #[inline]
    pub(crate) fn check<T, E: de::Error>(
        &mut self,
        field: &'static str,
        r: Result<T, Problem>,
    ) -> Result<T, E> {
        r.map_err(|p| {
            self.problem = Some((field, p));
            E::custom(format_args!("invalid `{field}`: {p}"))
        })
    }

    /// Fails when a required field was not seen.
    #[inline]
    pub(crate) fn require<E: de::Error>(
        &mut self,
        field: &'static str,
        seen: bool,
    ) -> Result<(), E> {
        self.check(field, if seen { Ok(()) } else { Err(Problem::Missing) })
    }
}

/// A string, borrowed from the payload unless it had escapes.
#[derive(Debug)]
pub(crate) struct Text<'de>(Cow<'de, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `event_time`: epoch milliseconds or RFC 3339; an unparsable string is a typed problem.
#[derive(Debug)]
pub(crate) struct EventTime(pub(crate) Result<i64, Problem>);

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EventTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("epoch milliseconds or an rfc 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(EventTime(Ok(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(EventTime(i64::try_from(v).map_err(|_| Problem::BadTimestamp)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // i64::MIN as f64 is exact; i64::MAX as f64 rounds up to 2^63, hence `<`.
                let ok = v.is_finite() && v >= i64::MIN as f64 && v < i64::MAX as f64;
                Ok(EventTime(if ok { Ok(v.trunc() as i64) } else { Err(Problem::BadTimestamp) }))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(EventTime(rfc3339_ms(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Milliseconds since the epoch of an RFC 3339 timestamp (floored to the millisecond).
pub(crate) fn rfc3339_ms(s: &str) -> Result<i64, Problem> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| Problem::BadTimestamp)?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).map_err(|_| Problem::BadTimestamp)
}

/// A `map<double>` pushed entry by entry into a record; `null` is an empty map.
pub(crate) struct NumMap<'r, R> {
    pub(crate) rec: &'r mut R,
    pub(crate) push: fn(&mut R, &str, f64),
}

/// A `map<string>` pushed entry by entry into a record; `null` is an empty map.
pub(crate) struct StrMap<'r, R> {
    pub(crate) rec: &'r mut R,
    pub(crate) push: fn(&mut R, &str, &str),
}

macro_rules! map_seed {
    ($seed:ident, $val:ty, $expect:literal, |$v:ident| $arg:expr) => {
        impl<'de, R> DeserializeSeed<'de> for $seed<'_, R> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de, R> Visitor<'de> for $seed<'_, R> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($expect)
            }
            fn visit_unit<E: de::Error>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
                while let Some(k) = m.next_key::<Text<'de>>()? {
                    let $v: $val = m.next_value()?;
                    (self.push)(self.rec, &k, $arg);
                }
                Ok(())
            }
        }
    };
}
map_seed!(NumMap, f64, "an object of numbers", |v| v);
map_seed!(StrMap, Text<'de>, "an object of strings", |v| &v);

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn convert(e: serde_json::Error, ctx: &Ctx, first_line: usize) -> DecodeError {
    let line = first_line + e.line().saturating_sub(1);
    let column = e.column();
    if let Some((field, problem)) = ctx.problem {
        DecodeError::field(field, problem, crate::Position::Line { line, column })
    } else if let Some(field) = ctx.field {
        DecodeError::JsonField { field, line, column, source: e }
    } else {
        DecodeError::Json { line, column, source: e }
    }
}

/// Decodes `text` as exactly one object (surrounding whitespace allowed).
pub(crate) fn one<K: Kind>(
    text: &[u8],
    rec: &mut K::Record,
    first_line: usize,
    fast: bool,
) -> Result<(), DecodeError> {
    if fast && K::json_fast(text, rec) {
        return Ok(());
    }
    let mut ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_slice(text);
    K::json(&mut de, rec, &mut ctx)
        .and_then(|()| de.end())
        .map_err(|e| convert(e, &ctx, first_line))
}

/// Decodes one object or newline-delimited objects (see the module docs).
pub(crate) fn decode<K: Kind>(
    payload: &[u8],
    rec: &mut K::Record,
    fast: bool,
    each: &mut impl FnMut(Result<&K::Record, DecodeError>),
) {
    let mut pos = 0;
    let mut line = 1;
    let mut any = false;
    while pos < payload.len() {
        let rest = &payload[pos..];
        let nl = rest.iter().position(|&b| b == b'\n');
        let text = &rest[..nl.unwrap_or(rest.len())];
        if !text.iter().all(|&b| is_ws(b)) {
            any = true;
            if fast && K::json_fast(text, rec) {
                each(Ok(&*rec));
                pos += text.len() + 1;
                line += 1;
                continue;
            }
            let mut ctx = Ctx::default();
            let mut de = serde_json::Deserializer::from_slice(text);
            match K::json(&mut de, rec, &mut ctx).and_then(|()| de.end()) {
                Ok(()) => each(Ok(&*rec)),
                Err(e) if e.is_eof() && nl.is_some() && ctx.problem.is_none() => {
                    // The object may go on over the next lines: find its end, decode it whole.
                    let mut scan =
                        serde_json::Deserializer::from_slice(rest).into_iter::<IgnoredAny>();
                    if let Some(Ok(_)) = scan.next() {
                        let span = &rest[..scan.byte_offset()];
                        each(one::<K>(span, rec, line, fast).map(|()| &*rec));
                        line += span.iter().filter(|&&b| b == b'\n').count();
                        pos += span.len();
                        continue;
                    }
                    each(Err(convert(e, &ctx, line)));
                }
                Err(e) => each(Err(convert(e, &ctx, line))),
            }
        }
        pos += text.len() + 1;
        line += 1;
    }
    if !any {
        each(Err(DecodeError::Empty));
    }
}
