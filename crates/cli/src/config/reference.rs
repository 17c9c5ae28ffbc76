//! The configuration reference (`docs/configuration.md`), generated from the doc comments of the
//! structs in `file.rs`, their default values and the override table, so the documentation
//! cannot drift from the code: a test regenerates it and compares it with the committed file.
//! `modelwatch config-reference` prints it.
//!
//! The generator reads `file.rs` as text and relies on its layout: a section struct is
//! `pub struct Name {`, preceded by its `///` doc, and each field is `pub name: Type,`, preceded
//! by its `///` doc and attributes.

use std::fmt::Write as _;

use toml::{Table, Value};

use super::{ConfigFile, overrides};

const SOURCE: &str = include_str!("file.rs");
/// `[[alerts.rules]]` entries are the alerting crate's `RuleSpec`.
const RULE_SOURCE: &str = include_str!("../../../alert/src/rule.rs");
/// `[alerts.channels.NAME]` and `[alerts.retry]` are the delivery crate's config structs.
const CHANNEL_SOURCES: &[(&str, &str, &str)] = &[
    ("webhook", "WebhookConfig", include_str!("../../../notify/src/webhook.rs")),
    ("email", "EmailConfig", include_str!("../../../notify/src/email.rs")),
    ("alertmanager", "AlertmanagerConfig", include_str!("../../../notify/src/alertmanager.rs")),
];
const RETRY_SOURCE: &str = include_str!("../../../notify/src/retry.rs");
/// `[judge.latency]`, `[judge.error_rate]` and `[judge.drift]` are the judge crate's specs.
const JUDGE_SOURCE: &str = include_str!("../../../judge/src/spec.rs");

/// Keys without a default that validation requires.
const REQUIRED: &[(&str, &str)] =
    &[("kafka", "brokers"), ("kafka", "inference_topics"), ("clickhouse", "url")];

#[derive(Debug, Default)]
struct Item {
    name: String,
    /// The serde `rename`, if any.
    rename: Option<String>,
    ty: String,
    doc: Vec<String>,
}

#[derive(Debug, Default)]
struct Struct {
    name: String,
    doc: Vec<String>,
    fields: Vec<Item>,
}

/// Structs of `file.rs` with their docs and fields.
fn structs() -> Vec<Struct> {
    structs_of(SOURCE)
}

/// Structs of a Rust source with their docs and fields (see the module docs for the layout).
fn structs_of(source: &str) -> Vec<Struct> {
    let mut out = Vec::new();
    let mut doc = Vec::new();
    let mut rename = None;
    let mut current: Option<Struct> = None;
    for line in source.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text).to_owned());
        } else if line.starts_with("#[") {
            if let Some((_, r)) = line.split_once("rename = \"") {
                rename = r.split_once('"').map(|(name, _)| name.to_owned());
            }
            continue;
        } else if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches(" {").to_owned();
            current = Some(Struct { name, doc: std::mem::take(&mut doc), fields: Vec::new() });
            rename = None;
        } else if let (Some(s), Some(rest)) = (current.as_mut(), line.strip_prefix("pub ")) {
            if let Some((name, ty)) = rest.trim_end_matches(',').split_once(": ") {
                let doc = std::mem::take(&mut doc);
                let item =
                    Item { name: name.to_owned(), rename: rename.take(), ty: ty.to_owned(), doc };
                s.fields.push(item);
            }
        } else if line == "}" {
            out.extend(current.take());
            doc.clear();
            rename = None;
        } else {
            doc.clear();
            rename = None;
        }
    }
    out
}

/// How a Rust field type reads in the file.
fn user_type(ty: &str) -> String {
    let ty = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')).unwrap_or(ty);
    match ty {
        "Vec<String>" => "list of strings",
        "String" => "string",
        "PathBuf" => "string (path)",
        "Duration" => "duration",
        "u8" | "u16" | "u32" | "u64" => "integer",
        "f64" => "float",
        "bool" => "boolean",
        "Format" => r#""auto" | "avro" | "avro-confluent" | "json""#,
        "OffsetReset" => r#""earliest" | "latest""#,
        "BTreeMap<String, String>" => "table of strings",
        "BTreeMap<String, f64>" => "table of floats",
        "Op" => r#"">" | ">=" | "<" | "<=""#,
        "RelativeTo" => r#""baseline""#,
        "Compare" => r#""ratio" | "difference""#,
        "DriftReference" => r#""reference" | "baseline""#,
        "Vec<Matcher>" | "Vec<RuleSpec>" | "Vec<SilenceEntry>" => "list of tables",
        "BTreeMap<String, Table>" => "tables by name",
        "Table" => "table",
        "WebhookFormat" => r#""alertmanager" | "slack""#,
        "SmtpTls" => r#""none" | "starttls" | "tls""#,
        "Direction" => r#""increase" | "decrease" | "both""#,
        "LatencyJudgeSpec" | "ErrorRateJudgeSpec" | "DriftJudgeSpec" => "table",
        "Secret" => "string (secret)",
        "usize" => "integer",
        other => other,
    }
    .to_owned()
}

/// The key's name in the file: the field name, or its serde rename.
fn file_name(field: &Item) -> String {
    field.rename.clone().unwrap_or_else(|| field.name.clone())
}

/// One table of keys: `section` is the key prefix of the environment overrides (`None`: not
/// overridable), `defaults` the serialised defaults, `required` the keys without a default.
fn keys_table(
    w: &mut String,
    s: &Struct,
    section: Option<&str>,
    defaults: Option<&Table>,
    required: &dyn Fn(&str, &Item) -> bool,
) {
    let _ = writeln!(w, "| key | type | default | environment | description |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for field in &s.fields {
        let name = file_name(field);
        let default = if required(&name, field) {
            "**required**".to_owned()
        } else {
            match defaults.and_then(|t| t.get(&name)) {
                Some(Value::Table(t)) if t.is_empty() => "empty".to_owned(),
                Some(Value::Table(_)) => "see below".to_owned(),
                Some(v) => format!("`{v}`"),
                None if field.ty.starts_with("Vec<") || field.ty.starts_with("BTreeMap<") => {
                    "empty".to_owned()
                }
                None => "unset".to_owned(),
            }
        };
        let env = match section {
            Some(key) if overrides::OVERRIDABLE.iter().any(|(s, k, _)| *s == key && *k == name) => {
                format!("`{}`", overrides::variable_name(key, &name))
            }
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            w,
            "| `{name}` | {} | {default} | {env} | {} |",
            user_type(&field.ty).replace('|', "\\|"),
            join(&field.doc).replace('|', "\\|"),
        );
    }
    let _ = writeln!(w);
}

/// A section's heading and its doc without the `` `[header]`: `` prefix, capitalised.
fn heading(w: &mut String, header: &str, doc: &[String]) {
    let _ = writeln!(w, "## `{header}`\n");
    let intro = join(doc);
    let intro = intro.strip_prefix(&format!("`{header}`: ")).unwrap_or(&intro);
    let mut chars = intro.chars();
    let intro: String =
        chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect();
    let _ = writeln!(w, "{intro}\n");
}

/// A value serialised as a TOML table (empty if it is not one).
fn as_table<T: serde::Serialize>(value: T) -> Table {
    match Value::try_from(value) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    }
}

fn duration_value(d: std::time::Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

/// The defaults of a channel type's optional keys, read from a minimal config of that type
/// (keys whose default is a long built-in template are shown as such).
fn channel_defaults(kind: &str) -> Table {
    use modelwatch_notify::ChannelConfig;
    let minimal = match kind {
        "email" => "type = \"email\"\nhost = \"h\"\nfrom = \"a@b\"\nto = [\"c@d\"]".to_owned(),
        other => format!("type = \"{other}\"\nurl = \"http://h\""),
    };
    let mut t = Table::new();
    let Ok(c) =
        minimal.parse::<Table>().map(Value::Table).and_then(|v| v.try_into::<ChannelConfig>())
    else {
        return t;
    };
    let text = |s: &str| Value::String(s.to_owned());
    match c {
        ChannelConfig::Webhook(c) => {
            t.insert("format".into(), text(&format!("{:?}", c.format).to_lowercase()));
            t.insert("headers".into(), Value::Table(Table::new()));
            t.insert("timeout".into(), duration_value(c.timeout));
            t.insert("max_alerts".into(), Value::Integer(c.max_alerts as i64));
        }
        ChannelConfig::Email(c) => {
            t.insert("tls".into(), text(&format!("{:?}", c.tls).to_lowercase()));
            t.insert("subject".into(), text(&c.subject));
            t.insert("text_body".into(), text("(built-in template)"));
            t.insert("html_body".into(), text("(built-in template)"));
            t.insert("timeout".into(), duration_value(c.timeout));
        }
        ChannelConfig::Alertmanager(c) => {
            t.insert("headers".into(), Value::Table(Table::new()));
            t.insert("timeout".into(), duration_value(c.timeout));
            t.insert("resend_interval".into(), duration_value(c.resend_interval));
        }
    }
    t
}

/// The configuration reference as Markdown.
pub fn markdown() -> String {
    let all = structs();
    let find = |name: &str| all.iter().find(|s| s.name == name);
    let defaults = as_table(ConfigFile::default());
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Configuration reference\n");
    let _ = writeln!(
        w,
        "<!-- Generated by `modelwatch config-reference` from the doc comments of \
         crates/cli/src/config/file.rs, crates/alert/src/rule.rs and the channel configs of \
         crates/notify; a test keeps this file in sync. Do not edit. -->\n"
    );
    let _ = writeln!(
        w,
        "A TOML file given with `--config FILE`; see `deploy/modelwatch.example.toml` for a \
         complete example and `modelwatch check-config --config FILE` to validate one.\n\n\
         - Durations are humantime strings: `\"250ms\"`, `\"10s\"`, `\"5m\"`, `\"1h 30m\"`.\n\
         - `${{NAME}}` anywhere in a string value is replaced by environment variable `NAME`; an \
         unset variable is an error naming it and the key. `$${{` is a literal `${{`.\n\
         - `MODELWATCH_<SECTION>_<KEY>` overrides a key of a section (the column *Environment* \
         below): numbers, booleans and durations are parsed as such, lists are comma-separated. \
         `[kafka.properties]`, `[[canary]]` entries and the rules, channels and silences of \
         `[alerts]` cannot be overridden; a `MODELWATCH_` variable that names a section but none \
         of its keys is an error.\n\
         - Unknown keys are errors.\n"
    );
    let Some(root) = find("ConfigFile") else { return md };
    for section in &root.fields {
        let key = file_name(section);
        let struct_name = section.ty.trim_start_matches("Vec<").trim_end_matches('>');
        let Some(s) = find(struct_name) else { continue };
        let header = if key == "canary" { "[[canary]]".to_owned() } else { format!("[{key}]") };
        heading(w, &header, &s.doc);
        let section_defaults = defaults.get(&key).and_then(Value::as_table);
        let required = |name: &str, field: &Item| {
            REQUIRED.contains(&(key.as_str(), name))
                || (key == "canary" && !field.ty.starts_with("Option<"))
        };
        keys_table(w, s, Some(&key), section_defaults, &required);
        if key == "alerts" {
            alert_sections(w, &all);
        }
        if key == "judge" {
            judge_sections(w, section_defaults);
        }
    }
    md.truncate(md.trim_end().len());
    md.push('\n');
    md
}

/// `[judge.latency]`, `[judge.error_rate]` and `[judge.drift]` (the judge crate's specs).
fn judge_sections(w: &mut String, defaults: Option<&Table>) {
    let structs = structs_of(JUDGE_SOURCE);
    for (key, name) in [
        ("latency", "LatencyJudgeSpec"),
        ("error_rate", "ErrorRateJudgeSpec"),
        ("drift", "DriftJudgeSpec"),
    ] {
        let Some(s) = structs.iter().find(|s| s.name == name) else { continue };
        heading(w, &format!("[judge.{key}]"), &s.doc);
        let d = defaults.and_then(|t| t.get(key)).and_then(Value::as_table);
        keys_table(w, s, None, d, &|_, _| false);
    }
}

/// `[[alerts.rules]]` (from the alerting crate's `RuleSpec`) and `[[alerts.silences]]`.
fn alert_sections(w: &mut String, file_structs: &[Struct]) {
    let rule_structs = structs_of(RULE_SOURCE);
    if let Some(s) = rule_structs.iter().find(|s| s.name == "RuleSpec") {
        let doc = vec![
            "One alert rule, evaluated on every closed window of every (model, version) it \
             applies to. Its alerts go pending when the condition first holds, fire once it held \
             for `for` (in event time), and resolve once it stopped holding for \
             `keep_firing_for`; every change is a row of the `alerts` table. Annotations and \
             labels are templates with `{{rule}}`, `{{model}}`, `{{version}}`, `{{baseline}}`, \
             `{{value}}`, `{{threshold}}`, `{{severity}}` and `{{metric}}`."
                .to_owned(),
        ];
        heading(w, "[[alerts.rules]]", &doc);
        let defaults = as_table(modelwatch_alert::RuleSpec::default());
        let required = |name: &str, _: &Item| matches!(name, "name" | "metric");
        keys_table(w, s, None, Some(&defaults), &required);
    }
    for (kind, name, source) in CHANNEL_SOURCES {
        let Some(s) = structs_of(source).into_iter().find(|s| s.name == *name) else { continue };
        let header = format!("[alerts.channels.NAME] type = \"{kind}\"");
        heading(w, &header, &s.doc);
        let defaults = channel_defaults(kind);
        let required = |name: &str, field: &Item| {
            !field.ty.starts_with("Option<") && !defaults.contains_key(name)
        };
        keys_table(w, &s, None, Some(&defaults), &required);
    }
    if let Some(s) = structs_of(RETRY_SOURCE).into_iter().find(|s| s.name == "RetryPolicy") {
        heading(w, "[alerts.retry]", &s.doc);
        let p = modelwatch_notify::RetryPolicy::default();
        let mut defaults = Table::new();
        defaults.insert("max_attempts".into(), Value::Integer(i64::from(p.max_attempts)));
        for (k, d) in [
            ("initial_backoff", p.initial_backoff),
            ("max_backoff", p.max_backoff),
            ("max_elapsed", p.max_elapsed),
        ] {
            defaults.insert(k.into(), duration_value(d));
        }
        keys_table(w, &s, None, Some(&defaults), &|_, _| false);
    }
    if let Some(s) = file_structs.iter().find(|s| s.name == "SilenceEntry") {
        heading(w, "[[alerts.silences]]", &s.doc);
        let defaults: Table = "matchers = []\nends_at = \"\""
            .parse::<Table>()
            .ok()
            .and_then(|t| Value::Table(t).try_into::<super::SilenceEntry>().ok())
            .map(as_table)
            .unwrap_or_default();
        let required = |name: &str, _: &Item| matches!(name, "matchers" | "ends_at");
        keys_table(w, s, None, Some(&defaults), &required);
    }
}

fn join(lines: &[String]) -> String {
    lines.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_documented() {
        let all = structs();
        assert!(all.len() >= 11, "{all:?}");
        for s in &all {
            assert!(!s.doc.is_empty(), "struct {} has no doc", s.name);
            for f in &s.fields {
                assert!(!f.doc.is_empty(), "{}.{} has no doc", s.name, f.name);
            }
        }
    }

    #[test]
    fn rule_keys_are_read_with_their_renames() {
        let rules = structs_of(RULE_SOURCE);
        let spec = rules.iter().find(|s| s.name == "RuleSpec").unwrap();
        let names: Vec<String> = spec.fields.iter().map(file_name).collect();
        assert!(names.contains(&"for".to_owned()), "{names:?}");
        assert!(names.contains(&"keep_firing_for".to_owned()), "{names:?}");
        assert!(spec.fields.iter().all(|f| !f.doc.is_empty()));
        let md = markdown();
        assert!(md.contains("## `[[alerts.rules]]`"));
        assert!(md.contains("| `for` | duration | `\"0s\"` |"), "{md}");
        assert!(md.contains("## `[[alerts.silences]]`"));
        assert!(md.contains("## `[alerts.channels.NAME] type = \"webhook\"`"), "{md}");
        assert!(md.contains("| `url` | string | **required** |"), "{md}");
        assert!(md.contains("## `[alerts.retry]`"), "{md}");
    }

    #[test]
    fn docs_configuration_md_is_current() {
        let committed = include_str!("../../../../docs/configuration.md");
        let generated = markdown();
        assert!(
            committed == generated,
            "docs/configuration.md is stale: run \
             `cargo run -p modelwatch -- config-reference > docs/configuration.md`\n{generated}"
        );
    }
}
