//! `MODELWATCH_<SECTION>_<KEY>` environment overrides.
//!
//! A variable named `MODELWATCH_` + section + `_` + key, upper-cased (`MODELWATCH_KAFKA_BROKERS`,
//! `MODELWATCH_WINDOWS_SLIDE`), replaces that key of the file. Only the scalar keys of a
//! section (and its lists of strings) can be overridden; the value is parsed as the key's type:
//! integers and floats as numbers, `true`/`false` as booleans, durations as humantime strings
//! (`"10s"`), lists of strings comma-separated with blanks around items trimmed (an empty value
//! is an empty list). Override values are taken literally: `${...}` in them is not substituted;
//! and the file's value of an overridden key is dropped before substitution, so its `${VAR}`
//! references need no variable.
//!
//! Not overridable: `[kafka.properties]` (use `${VAR}` in the file), `[[canary]]` entries,
//! whose index in a list has no stable environment name, and the rules, channels and silences
//! of `[alerts]` (use `${VAR}` for their secrets). A `MODELWATCH_` variable that names a
//! section but no overridable key of it is an error, so a misspelt override is never silently
//! ignored; `MODELWATCH_` variables naming no section are left alone (other tools may use them).

use toml::{Table, Value};

use super::{ConfigError, Environment};

/// The type of an overridable key, which says how its variable's value is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A string, taken as it is.
    String,
    /// A list of strings, comma-separated.
    StringList,
    /// An integer.
    Integer,
    /// A floating-point number.
    Float,
    /// `true` or `false`.
    Boolean,
    /// A humantime duration such as `"10s"`.
    Duration,
}

/// Every key that a `MODELWATCH_<SECTION>_<KEY>` variable can set: (section, key, type).
pub const OVERRIDABLE: &[(&str, &str, KeyKind)] = &[
    ("kafka", "brokers", KeyKind::StringList),
    ("kafka", "group_id", KeyKind::String),
    ("kafka", "inference_topics", KeyKind::StringList),
    ("kafka", "metric_topics", KeyKind::StringList),
    ("kafka", "format", KeyKind::String),
    ("kafka", "auto_offset_reset", KeyKind::String),
    ("kafka", "dead_letter_topic", KeyKind::String),
    ("kafka", "schema_registry_url", KeyKind::String),
    ("kafka", "schema_dir", KeyKind::String),
    ("clickhouse", "url", KeyKind::String),
    ("clickhouse", "database", KeyKind::String),
    ("clickhouse", "user", KeyKind::String),
    ("clickhouse", "password", KeyKind::String),
    ("windows", "window", KeyKind::Duration),
    ("windows", "slide", KeyKind::Duration),
    ("windows", "allowed_lateness", KeyKind::Duration),
    ("windows", "max_future_skew", KeyKind::Duration),
    ("windows", "idle_timeout", KeyKind::Duration),
    ("windows", "backlog_idle_timeout", KeyKind::Duration),
    ("drift", "edge_samples", KeyKind::Integer),
    ("drift", "reference_period", KeyKind::Duration),
    ("drift", "bins", KeyKind::Integer),
    ("drift", "top_k", KeyKind::Integer),
    ("drift", "epsilon", KeyKind::Float),
    ("limits", "max_models", KeyKind::Integer),
    ("limits", "max_versions_per_model", KeyKind::Integer),
    ("limits", "max_features", KeyKind::Integer),
    ("limits", "idle_ttl", KeyKind::Duration),
    ("latency", "significant_digits", KeyKind::Integer),
    ("http", "enabled", KeyKind::Boolean),
    ("http", "listen", KeyKind::String),
    ("http", "auth_token", KeyKind::String),
    ("pipeline", "flush_interval", KeyKind::Duration),
    ("pipeline", "flush_rows", KeyKind::Integer),
    ("pipeline", "max_in_flight", KeyKind::Integer),
    ("judge", "alpha", KeyKind::Float),
    ("judge", "power", KeyKind::Float),
    ("judge", "min_duration", KeyKind::Duration),
    ("judge", "min_samples", KeyKind::Integer),
    ("judge", "promote_score", KeyKind::Float),
    ("judge", "srm_alpha", KeyKind::Float),
    ("alerts", "group_wait", KeyKind::Duration),
    ("alerts", "group_interval", KeyKind::Duration),
    ("alerts", "repeat_interval", KeyKind::Duration),
    ("alerts", "max_notification_age", KeyKind::Duration),
    ("alerts", "external_url", KeyKind::String),
];

/// The sections of the file, as in `OVERRIDABLE`, plus `canary` (never overridable).
const SECTIONS: &[&str] = &[
    "kafka",
    "clickhouse",
    "windows",
    "drift",
    "limits",
    "latency",
    "http",
    "pipeline",
    "canary",
    "judge",
    "alerts",
];

/// The variable that overrides `section.key`.
pub fn variable_name(section: &str, key: &str) -> String {
    format!("MODELWATCH_{}_{}", section.to_ascii_uppercase(), key.to_ascii_uppercase())
}

/// One parsed override: section, key and the value that replaces the file's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    section: &'static str,
    key: &'static str,
    value: Value,
}

/// Parses every `MODELWATCH_<SECTION>_<KEY>` variable of `env`.
pub(crate) fn collect(env: &Environment) -> Result<Vec<Override>, ConfigError> {
    let mut out = Vec::new();
    for (variable, raw) in env.with_prefix("MODELWATCH_") {
        let rest = &variable["MODELWATCH_".len()..];
        let Some(section) = SECTIONS.iter().copied().find(|s| {
            rest.strip_prefix(s.to_ascii_uppercase().as_str()).is_some_and(|r| r.starts_with('_'))
        }) else {
            continue;
        };
        let Some(&(section, key, kind)) =
            OVERRIDABLE.iter().find(|(s, k, _)| *s == section && variable_name(s, k) == variable)
        else {
            return Err(ConfigError::UnknownOverride {
                variable: variable.to_owned(),
                section: section.to_owned(),
            });
        };
        let value = parse(raw, kind).map_err(|expected| ConfigError::BadOverride {
            variable: variable.to_owned(),
            key: format!("{section}.{key}"),
            expected,
        })?;
        out.push(Override { section, key, value });
    }
    Ok(out)
}

/// Removes the overridden keys from `doc`, so that `${VAR}` references in values about to be
/// replaced need no variable.
pub(crate) fn remove_overridden(doc: &mut Table, overrides: &[Override]) {
    for o in overrides {
        if let Some(Value::Table(t)) = doc.get_mut(o.section) {
            t.remove(o.key);
        }
    }
}

/// Writes the overrides into `doc`.
pub(crate) fn insert(doc: &mut Table, overrides: Vec<Override>) -> Result<(), ConfigError> {
    for Override { section, key, value } in overrides {
        let table = doc
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Invalid {
                key: section.to_owned(),
                message: "expected a table".to_owned(),
            })?;
        table.insert(key.to_owned(), value);
    }
    Ok(())
}

/// Parses an override value, or says what was expected. Error texts never quote the value (it
/// may be a secret).
fn parse(raw: &str, kind: KeyKind) -> Result<Value, &'static str> {
    let trimmed = raw.trim();
    Ok(match kind {
        KeyKind::String => Value::String(raw.to_owned()),
        KeyKind::StringList => Value::Array(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        KeyKind::Integer => {
            Value::Integer(trimmed.replace('_', "").parse().map_err(|_| "an integer")?)
        }
        KeyKind::Float => Value::Float(trimmed.parse().map_err(|_| "a number")?),
        KeyKind::Boolean => match trimmed {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err("`true` or `false`"),
        },
        KeyKind::Duration => {
            humantime::parse_duration(trimmed)
                .map_err(|_| "a duration such as \"10s\", \"5m\" or \"1h 30m\"")?;
            Value::String(trimmed.to_owned())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            parse(" a:1 , b:2,,", KeyKind::StringList).unwrap(),
            Value::Array(vec!["a:1".into(), "b:2".into()])
        );
        assert_eq!(parse("", KeyKind::StringList).unwrap(), Value::Array(vec![]));
        assert_eq!(parse("1_000", KeyKind::Integer).unwrap(), Value::Integer(1000));
        assert_eq!(parse("0.5", KeyKind::Float).unwrap(), Value::Float(0.5));
        assert_eq!(parse("false", KeyKind::Boolean).unwrap(), Value::Boolean(false));
        assert_eq!(parse("10s", KeyKind::Duration).unwrap(), Value::String("10s".into()));
        assert!(parse("ten", KeyKind::Integer).is_err());
        assert!(parse("yes", KeyKind::Boolean).is_err());
        assert!(parse("10 parsecs", KeyKind::Duration).is_err());
    }

    #[test]
    fn every_override_section_is_known() {
        for (section, _, _) in OVERRIDABLE {
            assert!(SECTIONS.contains(section), "{section}");
        }
    }
}
