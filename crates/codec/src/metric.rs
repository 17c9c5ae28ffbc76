//! `modelwatch.v1.MetricEvent` on the three paths: fast Avro, generic Avro, JSON.

use std::fmt;

use modelwatch_core::event::MetricRecord;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::{
    DecodeError,
    avro::{Cursor, Fail, field, non_empty},
    check,
    decoder::Kind,
    generic::{self, Fields},
    json::{Ctx, EventTime, JsonDe, StrMap, Text},
    schema::{METRIC, OwnSchema},
};

#[derive(Debug)]
pub(crate) struct Metric;

impl Kind for Metric {
    type Record = MetricRecord;

    fn own() -> &'static OwnSchema {
        &METRIC
    }

    #[inline]
    fn fast(c: &mut Cursor<'_>, r: &mut MetricRecord) -> Result<(), DecodeError> {
        r.clear();
        r.event_time_ms = field(c, "event_time", Cursor::long)?;
        r.set_model(field(c, "model", non_empty)?);
        r.set_version(field(c, "version", non_empty)?);
        r.set_name(field(c, "name", non_empty)?);
        r.value = field(c, "value", |c| {
            let at = c.pos();
            check::finite(c.double()?).map_err(|p| Fail(p, at))
        })?;
        r.kind = field(c, "kind", |c| {
            let at = c.pos();
            check::kind(c.str()?).map_err(|p| Fail(p, at))
        })?;
        field(c, "attributes", |c| {
            loop {
                let n = c.block()?;
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    let k = c.str()?;
                    r.push_attribute(k, c.str()?);
                }
            }
        })
    }

    fn from_fields(f: &Fields<'_>, r: &mut MetricRecord) -> Result<(), DecodeError> {
        r.clear();
        r.event_time_ms = f.long("event_time")?;
        r.set_model(generic::check("model", check::non_empty(f.str("model")?))?);
        r.set_version(generic::check("version", check::non_empty(f.str("version")?))?);
        r.set_name(generic::check("name", check::non_empty(f.str("name")?))?);
        r.value = generic::check("value", check::finite(f.double("value")?))?;
        r.kind = generic::check("kind", check::kind(f.str("kind")?))?;
        for (k, v) in f.map("attributes", generic::string)? {
            r.push_attribute(k, v);
        }
        Ok(())
    }

    fn json(de: &mut JsonDe<'_>, rec: &mut MetricRecord, ctx: &mut Ctx) -> serde_json::Result<()> {
        Seed { rec, ctx }.deserialize(de)
    }
}

struct Seed<'a> {
    rec: &'a mut MetricRecord,
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
        f.write_str("a metric event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let Seed { rec: r, ctx } = self;
        r.clear();
        let (mut time, mut model, mut version, mut name, mut value, mut kind) =
            (false, false, false, false, false, false);
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
                "name" => {
                    let s: Text<'de> = ctx.value(&mut m, "name")?;
                    r.set_name(ctx.check("name", check::non_empty(&s))?);
                    name = true;
                }
                "value" => {
                    let v: f64 = ctx.value(&mut m, "value")?;
                    r.value = ctx.check("value", check::finite(v))?;
                    value = true;
                }
                "kind" => {
                    let s: Text<'de> = ctx.value(&mut m, "kind")?;
                    r.kind = ctx.check("kind", check::kind(&s))?;
                    kind = true;
                }
                "attributes" => {
                    ctx.seed(
                        &mut m,
                        "attributes",
                        StrMap { rec: &mut *r, push: MetricRecord::push_attribute },
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
        ctx.require("name", name)?;
        ctx.require("value", value)?;
        ctx.require("kind", kind)?;
        Ok(())
    }
}
