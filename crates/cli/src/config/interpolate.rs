//! `${VAR}` references in string values.
//!
//! Every string value of the file, at any depth (arrays, `[kafka.properties]`, `[[canary]]`
//! entries), has each `${NAME}` replaced by the value of environment variable `NAME`, where
//! `NAME` is `[A-Za-z_][A-Za-z0-9_]*`. `$${` stands for a literal `${`; any other `$` is kept as
//! it is; the text is scanned left to right. Substitution is one pass: a substituted value is
//! not scanned again. A variable that is not set is an error naming it and the key where it
//! appears; so is a malformed reference (`${` without `}` or with an invalid name). Table keys
//! are never substituted.

use toml::{Table, Value};

use super::{ConfigError, Environment};

/// Substitutes every string value of `table`, whose keys are below `prefix` (`""` at the top).
pub(crate) fn interpolate_table(
    table: &mut Table,
    prefix: &str,
    env: &Environment,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        interpolate_value(value, &join_key(prefix, key), env)?;
    }
    Ok(())
}

fn interpolate_value(value: &mut Value, path: &str, env: &Environment) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if let Some(expanded) = expand(s, path, env)? {
                *s = expanded;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env)?;
            }
        }
        Value::Table(t) => interpolate_table(t, path, env)?,
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
    Ok(())
}

/// The key path of `key` below `prefix`, quoting a key that is not a bare TOML key.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    let bare =
        !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if prefix.is_empty() { key } else { format!("{prefix}.{key}") }
}

/// The expansion of `s`, or `None` when it holds no reference or escape.
fn expand(s: &str, key: &str, env: &Environment) -> Result<Option<String>, ConfigError> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| ConfigError::BadReference {
                key: key.to_owned(),
                reason: "`${` without a closing `}`",
            })?;
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(ConfigError::BadReference {
                    key: key.to_owned(),
                    reason: "a variable name is letters, digits and `_`, not starting with a digit",
                });
            }
            let value = env.get(name).ok_or_else(|| ConfigError::MissingVariable {
                key: key.to_owned(),
                variable: name.to_owned(),
            })?;
            out.push_str(value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

fn is_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        [("A", "alpha"), ("B_2", "${A}"), ("EMPTY", "")].into_iter().collect()
    }

    #[test]
    fn expands_references_and_escapes() {
        let e = env();
        let x = |s: &str| expand(s, "k", &e).unwrap();
        assert_eq!(x("plain"), None);
        assert_eq!(x("${A}").as_deref(), Some("alpha"));
        assert_eq!(x("a-${A}-${A}").as_deref(), Some("a-alpha-alpha"));
        assert_eq!(x("$${A}").as_deref(), Some("${A}"));
        // Left to right: a lone `$`, then the escape.
        assert_eq!(x("$$${A}").as_deref(), Some("$${A}"));
        assert_eq!(x("cost: $5 ${EMPTY}$").as_deref(), Some("cost: $5 $"));
        // One pass: a value holding a reference is not expanded again.
        assert_eq!(x("${B_2}").as_deref(), Some("${A}"));
    }

    #[test]
    fn reports_missing_and_malformed_references() {
        let e = env();
        let err = expand("x${NOPE}", "clickhouse.password", &e).unwrap_err();
        assert!(
            matches!(&err, ConfigError::MissingVariable { key, variable }
                if key == "clickhouse.password" && variable == "NOPE"),
            "{err}"
        );
        for bad in ["${A", "${}", "${1A}", "${A B}"] {
            let err = expand(bad, "k", &e).unwrap_err();
            assert!(matches!(err, ConfigError::BadReference { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn key_paths_quote_dotted_keys() {
        assert_eq!(join_key("", "kafka"), "kafka");
        assert_eq!(
            join_key("kafka.properties", "sasl.password"),
            "kafka.properties.\"sasl.password\""
        );
    }
}
