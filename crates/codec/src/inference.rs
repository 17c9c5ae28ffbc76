//! `modelwatch.v1.InferenceLog` on the three paths: fast Avro, generic Avro, JSON.

use std::fmt;

use modelwatch_core::event::{InferenceRecord, RawText};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::{
    DecodeError, Position, Problem,
    avro::{Cursor, Fail, field},
    check,
    decoder::Kind,
    generic::{self, Fields},
    json::{self, Ctx, EventTime, JsonDe, NumMap, StrMap, Text},
    json_scan::{Bail, Scan, Scanner},
    schema::{INFERENCE, OwnSchema},
};

#[derive(Debug)]
pub(crate) struct Inference;

impl Kind for Inference {
    type Record = InferenceRecord;

    fn own() -> &'static OwnSchema {
        &INFERENCE
    }

    #[inline]
    fn fast(c: &mut Cursor<'_>, r: &mut InferenceRecord) -> Result<(), DecodeError> {
        let from = c.clone();
        let done = fast::<false>(c, r).and_then(|()| {
            r.finish_raw()
                .map_err(|_| DecodeError::field("record", Problem::InvalidUtf8, Position::Unknown))
        });
        match done {
            Ok(()) => Ok(()),
            Err(e) => Err(precise(from, r).unwrap_or(e)),
        }
    }

    fn from_fields(f: &Fields<'_>, r: &mut InferenceRecord) -> Result<(), DecodeError> {
        r.clear();
        r.event_time_ms = f.long("event_time")?;
        r.set_model(generic::check("model", check::non_empty(f.str("model")?))?);
        r.set_version(generic::check("version", check::non_empty(f.str("version")?))?);
        r.set_request_id(f.opt_str("request_id")?);
        r.latency_ms = generic::check("latency_ms", check::latency(f.double("latency_ms")?))?;
        r.set_status(f.str("status")?);
        r.prediction = f.opt_double("prediction")?;
        r.set_predicted_label(f.opt_str("predicted_label")?);
        for (k, v) in f.map("features", generic::double)? {
            r.push_feature(k, v);
        }
        for (k, v) in f.map("categories", generic::string)? {
            r.push_category(k, v);
        }
        r.tokens_in = f.opt_long("tokens_in")?;
        r.tokens_out = f.opt_long("tokens_out")?;
        r.ttft_ms = f.opt_double("ttft_ms")?;
        for (k, v) in f.map("attributes", generic::string)? {
            r.push_attribute(k, v);
        }
        Ok(())
    }

    fn json_fast(text: &[u8], rec: &mut InferenceRecord) -> bool {
        json_fast(text, rec).is_ok()
    }

    fn json(
        de: &mut JsonDe<'_>,
        rec: &mut InferenceRecord,
        ctx: &mut Ctx,
    ) -> serde_json::Result<()> {
        Seed { rec, ctx }.deserialize(de)
    }
}

/// Reads the datum into `r` with raw text: strings are pushed unvalidated, the caller validates
/// them at once with [`InferenceRecord::finish_raw`]. With `UTF8`, every string is also
/// validated as it is read, so that the first error is the same one the checked reads of the
/// other paths give (field and byte offset).
#[inline(always)]
fn fast<const UTF8: bool>(c: &mut Cursor<'_>, r: &mut InferenceRecord) -> Result<(), DecodeError> {
    r.begin_raw();
    r.event_time_ms = field(c, "event_time", Cursor::long)?;
    let t = field(c, "model", non_empty_text::<UTF8>)?;
    let t = t.keep(r);
    r.set_model_raw(t);
    let t = field(c, "version", non_empty_text::<UTF8>)?;
    let t = t.keep(r);
    r.set_version_raw(t);
    let t = field(c, "request_id", |c| c.nullable(text::<UTF8>))?;
    let t = t.map(|t| t.keep(r));
    r.set_request_id_raw(t);
    r.latency_ms = field(c, "latency_ms", |c| {
        let at = c.pos();
        check::latency(c.double()?).map_err(|p| Fail(p, at))
    })?;
    let t = field(c, "status", text::<UTF8>)?;
    let t = t.keep(r);
    r.set_status_raw(t);
    r.prediction = field(c, "prediction", |c| c.nullable(Cursor::double))?;
    let t = field(c, "predicted_label", |c| c.nullable(text::<UTF8>))?;
    let t = t.map(|t| t.keep(r));
    r.set_predicted_label_raw(t);
    field(c, "features", |c| {
        loop {
            let n = c.block()?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                let k = text::<UTF8>(c)?;
                let v = c.double()?;
                let k = k.keep(r);
                r.push_feature_raw(k, v);
            }
        }
    })?;
    field(c, "categories", |c| string_map::<UTF8>(c, r, InferenceRecord::push_category_raw))?;
    r.tokens_in = field(c, "tokens_in", |c| c.nullable(Cursor::long))?;
    r.tokens_out = field(c, "tokens_out", |c| c.nullable(Cursor::long))?;
    r.ttft_ms = field(c, "ttft_ms", |c| c.nullable(Cursor::double))?;
    field(c, "attributes", |c| string_map::<UTF8>(c, r, InferenceRecord::push_attribute_raw))
}

/// The error of a datum the raw read rejected, found again by a read that validates every
/// string where it stands (`from` is where the datum starts).
#[cold]
#[inline(never)]
fn precise(mut from: Cursor<'_>, r: &mut InferenceRecord) -> Option<DecodeError> {
    fast::<true>(&mut from, r).err()
}

/// A string read from the payload: its bytes, and the payload from them on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) rest: &'a [u8],
}

impl Piece<'_> {
    /// Copies the string into `r`'s text (see [`InferenceRecord::raw_prefix`]).
    #[inline(always)]
    pub(crate) fn keep(self, r: &mut InferenceRecord) -> RawText {
        r.raw_prefix(self.rest, self.bytes.len())
    }
}

/// A string, validated as UTF-8 when `UTF8`.
#[inline(always)]
fn text<'a, const UTF8: bool>(c: &mut Cursor<'a>) -> Result<Piece<'a>, Fail> {
    let (bytes, rest) = c.bytes_and_rest()?;
    if UTF8 && std::str::from_utf8(bytes).is_err() {
        return Err(Fail(Problem::InvalidUtf8, c.pos() - bytes.len()));
    }
    Ok(Piece { bytes, rest })
}

/// An Avro map of strings, each (key, value) handed to `push` as raw text.
#[inline(always)]
fn string_map<const UTF8: bool>(
    c: &mut Cursor<'_>,
    r: &mut InferenceRecord,
    push: fn(&mut InferenceRecord, RawText, RawText),
) -> Result<(), Fail> {
    loop {
        let n = c.block()?;
        if n == 0 {
            return Ok(());
        }
        for _ in 0..n {
            let k = text::<UTF8>(c)?;
            let v = text::<UTF8>(c)?;
            let (k, v) = (k.keep(r), v.keep(r));
            push(r, k, v);
        }
    }
}

/// [`text`] that must not be empty.
#[inline(always)]
fn non_empty_text<'a, const UTF8: bool>(c: &mut Cursor<'a>) -> Result<Piece<'a>, Fail> {
    let at = c.pos();
    let t = text::<UTF8>(c)?;
    if t.bytes.is_empty() { Err(Fail(Problem::Empty, at)) } else { Ok(t) }
}

/// Reads one JSON object through the fast path (see [`crate::json_scan`]) into `r`. Gives up
/// on everything the serde path would reject or read differently: what is read here is what
/// the serde visitor below would have read.
///
/// The strings the record keeps are copied raw and validated together at the end
/// ([`InferenceRecord::finish_raw`]); the others (unknown keys and values, an RFC 3339
/// `event_time`) are validated where they are read.
#[inline]
fn json_fast(text: &[u8], r: &mut InferenceRecord) -> Scan<()> {
    const TIME: u8 = 1;
    const MODEL: u8 = 2;
    const VERSION: u8 = 4;
    const LATENCY: u8 = 8;
    const STATUS: u8 = 16;
    let s = &mut Scanner::new(text);
    r.begin_raw();
    let mut seen = 0u8;
    s.eat(b'{')?;
    let mut first = true;
    while let Some(key) = s.key(&mut first)? {
        match key.bytes {
            b"event_time" => {
                r.event_time_ms = match s.epoch_ms()? {
                    Some(ms) => ms,
                    None => json::rfc3339_ms(s.str()?).map_err(|_| Bail)?,
                };
                seen |= TIME;
            }
            b"model" => {
                let t = non_empty_raw(s)?.keep(r);
                r.set_model_raw(t);
                seen |= MODEL;
            }
            b"version" => {
                let t = non_empty_raw(s)?.keep(r);
                r.set_version_raw(t);
                seen |= VERSION;
            }
            b"request_id" => {
                let t = s.opt(Scanner::raw_str)?.map(|t| t.keep(r));
                r.set_request_id_raw(t);
            }
            b"latency_ms" => {
                r.latency_ms = check::latency(s.f64()?).map_err(|_| Bail)?;
                seen |= LATENCY;
            }
            b"status" => {
                let t = s.raw_str()?.keep(r);
                r.set_status_raw(t);
                seen |= STATUS;
            }
            b"prediction" => r.prediction = s.opt(Scanner::f64)?,
            b"predicted_label" => {
                let t = s.opt(Scanner::raw_str)?.map(|t| t.keep(r));
                r.set_predicted_label_raw(t);
            }
            b"features" => {
                if !s.null()? {
                    s.eat(b'{')?;
                    let mut first = true;
                    while let Some(k) = s.key(&mut first)? {
                        let v = s.f64()?;
                        let k = k.keep(r);
                        r.push_feature_raw(k, v);
                    }
                }
            }
            b"categories" => json_string_map(s, r, InferenceRecord::push_category_raw)?,
            b"tokens_in" => r.tokens_in = s.opt(Scanner::i64)?,
            b"tokens_out" => r.tokens_out = s.opt(Scanner::i64)?,
            b"ttft_ms" => r.ttft_ms = s.opt(Scanner::f64)?,
            b"attributes" => json_string_map(s, r, InferenceRecord::push_attribute_raw)?,
            _ => {
                std::str::from_utf8(key.bytes).map_err(|_| Bail)?;
                s.skip_scalar()?;
            }
        }
    }
    s.end()?;
    if seen != TIME | MODEL | VERSION | LATENCY | STATUS {
        return Err(Bail);
    }
    r.finish_raw().map_err(|_| Bail)
}

/// A string that must not be empty (`model`, `version`), as raw text.
#[inline(always)]
fn non_empty_raw<'a>(s: &mut Scanner<'a>) -> Scan<Piece<'a>> {
    let t = s.raw_str()?;
    if t.bytes.is_empty() { Err(Bail) } else { Ok(t) }
}

/// A JSON object of strings (or `null`), each (key, value) handed to `push` as raw text.
#[inline(always)]
fn json_string_map(
    s: &mut Scanner<'_>,
    r: &mut InferenceRecord,
    push: fn(&mut InferenceRecord, RawText, RawText),
) -> Scan<()> {
    if s.null()? {
        return Ok(());
    }
    s.eat(b'{')?;
    let mut first = true;
    while let Some(k) = s.key(&mut first)? {
        let v = s.raw_str()?;
        let (k, v) = (k.keep(r), v.keep(r));
        push(r, k, v);
    }
    Ok(())
}

struct Seed<'a> {
    rec: &'a mut InferenceRecord,
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference log object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let Seed { rec: r, ctx } = self;
        r.clear();
        let (mut time, mut model, mut version, mut latency, mut status) =
            (false, false, false, false, false);
        while let Some(key) = m.next_key::<Text<'de>>()? {
            match &*key {
                "event_time" => {
                    let t: EventTime = ctx.value(&mut m, "event_time")?;
                    r.event_time_ms = ctx.check("event_time", t.0)?;
                    time = true;
                }
                "model" => {
                    let s: Text<'de> = ctx.value(&mut m, "model")?;
                    r.set_model(ctx.check("model", check::non_empty(&s))?);
                    model = true;
                }
                "version" => {
                    let s: Text<'de> = ctx.value(&mut m, "version")?;
                    r.set_version(ctx.check("version", check::non_empty(&s))?);
                    version = true;
                }
                "request_id" => {
                    let s: Option<Text<'de>> = ctx.value(&mut m, "request_id")?;
                    r.set_request_id(s.as_deref());
                }
                "latency_ms" => {
                    let v: f64 = ctx.value(&mut m, "latency_ms")?;
                    r.latency_ms = ctx.check("latency_ms", check::latency(v))?;
                    latency = true;
                }
                "status" => {
                    let s: Text<'de> = ctx.value(&mut m, "status")?;
                    r.set_status(&s);
                    status = true;
                }
                "prediction" => r.prediction = ctx.value(&mut m, "prediction")?,
                "predicted_label" => {
                    let s: Option<Text<'de>> = ctx.value(&mut m, "predicted_label")?;
                    r.set_predicted_label(s.as_deref());
                }
                "features" => {
                    ctx.seed(
                        &mut m,
                        "features",
                        NumMap { rec: &mut *r, push: InferenceRecord::push_feature },
                    )?;
                }
                "categories" => {
                    ctx.seed(
                        &mut m,
                        "categories",
                        StrMap { rec: &mut *r, push: InferenceRecord::push_category },
                    )?;
                }
                "tokens_in" => r.tokens_in = ctx.value(&mut m, "tokens_in")?,
                "tokens_out" => r.tokens_out = ctx.value(&mut m, "tokens_out")?,
                "ttft_ms" => r.ttft_ms = ctx.value(&mut m, "ttft_ms")?,
                "attributes" => {
                    ctx.seed(
                        &mut m,
                        "attributes",
                        StrMap { rec: &mut *r, push: InferenceRecord::push_attribute },
                    )?;
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        ctx.require("event_time", time)?;
        ctx.require("model", model)?;
        ctx.require("version", version)?;
        ctx.require("latency_ms", latency)?;
        ctx.require("status", status)?;
        Ok(())
    }
}
