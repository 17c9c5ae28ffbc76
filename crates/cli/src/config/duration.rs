//! Durations as humantime strings: `"10s"`, `"5m"`, `"1h 30m"`, `"250ms"`.

use std::time::Duration;

use serde::{Deserializer, Serializer, de};

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration string such as \"10s\", \"5m\" or \"1h 30m\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s).map_err(|e| {
                E::custom(format_args!(
                    "invalid duration \"{s}\" ({e}); expected e.g. \"10s\", \"5m\" or \"1h 30m\""
                ))
            })
        }
    }
    d.deserialize_str(Visitor)
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// A duration in the configuration's notation.
pub(crate) fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
