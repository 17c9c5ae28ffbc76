//! A small template language for e-mail subjects and bodies: text with `{{placeholder}}`s.
//!
//! Placeholders (whitespace inside the braces is ignored):
//! - `{{status}}` (`firing` / `resolved`), `{{status_upper}}` (`FIRING` / `RESOLVED`),
//!   `{{receiver}}`, `{{group_key}}`, `{{external_url}}`, `{{count}}` (the number of alerts);
//! - `{{rule}}` (the `alertname` label), `{{model}}`, `{{version}}`, `{{severity}}`, `{{value}}`,
//!   `{{threshold}}`, `{{summary}}`, `{{description}}`: the group's value of that label or
//!   annotation (see [`Notification::values_of`]): the common one, else the distinct values of
//!   the alerts joined by `, `, else empty;
//! - `{{labels.NAME}}` / `{{annotations.NAME}}`: the same for any label or annotation;
//! - `{{alerts}}`: every alert, one per line (plain text) or as a `<ul>` list (HTML).
//!
//! An unknown placeholder or an unclosed `{{` is an error when the template is parsed (at config
//! validation), never at send time. In HTML rendering every substituted value is escaped.

use std::fmt::Write as _;

use crate::model::{Alert, Labels, Notification, Status, annotation, label, rfc3339_ms};

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Status,
    StatusUpper,
    Receiver,
    GroupKey,
    ExternalUrl,
    Count,
    Alerts,
    /// A label or annotation (label first).
    Value(String),
    Label(String),
    Annotation(String),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error("unclosed '{{{{' at byte {0}")]
    Unclosed(usize),
    /// A name that is not one of the placeholders.
    #[error("unknown placeholder '{{{{{0}}}}}'")]
    Unknown(String),
}

/// How substituted values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (plain text, subjects).
    None,
    /// HTML-escaped; `{{alerts}}` becomes a `<ul>` list.
    Html,
}

impl Template {
    /// Parses `src`.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(offset + open))?;
            parts.push(Part::Var(Self::var(after[..close].trim())?));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    fn var(name: &str) -> Result<Var, TemplateError> {
        Ok(match name {
            "status" => Var::Status,
            "status_upper" => Var::StatusUpper,
            "receiver" => Var::Receiver,
            "group_key" => Var::GroupKey,
            "external_url" => Var::ExternalUrl,
            "count" => Var::Count,
            "alerts" => Var::Alerts,
            "rule" => Var::Value(label::ALERTNAME.to_owned()),
            "model" | "version" | "severity" | "value" | "threshold" | "summary"
            | "description" => Var::Value(name.to_owned()),
            _ => match name.split_once('.') {
                Some(("labels", l)) if !l.is_empty() => Var::Label(l.to_owned()),
                Some(("annotations", a)) if !a.is_empty() => Var::Annotation(a.to_owned()),
                _ => return Err(TemplateError::Unknown(name.to_owned())),
            },
        })
    }

    /// Renders the template for `n`.
    pub fn render(&self, n: &Notification, escape: Escape) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(Var::Alerts) => match escape {
                    Escape::None => out.push_str(&alerts_text(n)),
                    Escape::Html => out.push_str(&alerts_html(n)),
                },
                Part::Var(v) => {
                    let value = match v {
                        Var::Status => n.status.as_str().to_owned(),
                        Var::StatusUpper => n.status.as_str().to_uppercase(),
                        Var::Receiver => n.receiver.clone(),
                        Var::GroupKey => n.group_key.clone(),
                        Var::ExternalUrl => n.external_url.clone(),
                        Var::Count => n.alerts.len().to_string(),
                        Var::Value(name) => n.values_of(name).join(", "),
                        Var::Label(name) => distinct(n, |a| a.labels.get(name)),
                        Var::Annotation(name) => distinct(n, |a| a.annotations.get(name)),
                        Var::Alerts => String::new(),
                    };
                    match escape {
                        Escape::None => out.push_str(&value),
                        Escape::Html => out.push_str(&html_escape(&value)),
                    }
                }
            }
        }
        out
    }
}

/// The distinct values `get` finds in the alerts, in alert order, joined by `, `.
fn distinct<'a>(n: &'a Notification, get: impl Fn(&'a Alert) -> Option<&'a String>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for a in &n.alerts {
        if let Some(v) = get(a)
            && !seen.contains(&v.as_str())
        {
            seen.push(v);
        }
    }
    seen.join(", ")
}

/// Escapes `&`, `<`, `>`, `"` and `'`.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn get<'a>(m: &'a Labels, k: &str) -> &'a str {
    m.get(k).map(String::as_str).unwrap_or("")
}

/// The `name=value` fields of one alert's line in `{{alerts}}` (empty values are left out by
/// the callers): model, version, value, threshold, severity, since, resolved, summary.
fn alert_fields(a: &Alert) -> [(&'static str, String); 8] {
    [
        ("model", get(&a.labels, label::MODEL).to_owned()),
        ("version", get(&a.labels, label::VERSION).to_owned()),
        ("value", get(&a.annotations, annotation::VALUE).to_owned()),
        ("threshold", get(&a.annotations, annotation::THRESHOLD).to_owned()),
        ("severity", get(&a.labels, label::SEVERITY).to_owned()),
        ("since", rfc3339_ms(a.starts_at_ms)),
        (
            "resolved",
            match (a.status, a.ends_at_ms) {
                (Status::Resolved, Some(end)) => rfc3339_ms(end),
                _ => String::new(),
            },
        ),
        ("summary", get(&a.annotations, annotation::SUMMARY).to_owned()),
    ]
}

/// `- [FIRING] Rule model=m version=v value=3 threshold=2 ... since=T` per alert.
fn alerts_text(n: &Notification) -> String {
    let mut out = String::new();
    for a in &n.alerts {
        let _ = write!(
            out,
            "- [{}] {}",
            a.status.as_str().to_uppercase(),
            get(&a.labels, label::ALERTNAME)
        );
        for (k, v) in alert_fields(a) {
            if !v.is_empty() {
                let _ = write!(out, " {k}={v}");
            }
        }
        out.push('\n');
    }
    out
}

/// `<ul><li><b>FIRING</b> Rule: model=m, ...</li></ul>`, values escaped.
fn alerts_html(n: &Notification) -> String {
    let mut out = String::from("<ul>\n");
    for a in &n.alerts {
        let _ = write!(
            out,
            "<li><b>{}</b> {}",
            a.status.as_str().to_uppercase(),
            html_escape(get(&a.labels, label::ALERTNAME))
        );
        let fields: Vec<String> = alert_fields(a)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}=<code>{}</code>", html_escape(&v)))
            .collect();
        if !fields.is_empty() {
            let _ = write!(out, ": {}", fields.join(", "));
        }
        out.push_str("</li>\n");
    }
    out.push_str("</ul>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_notification;

    #[test]
    fn parses_and_renders() {
        let n = test_notification("ops", "http://mw");
        let t = Template::parse("[{{ status_upper }}] {{rule}} on {{model}}/{{version}}: {{value}} > {{threshold}} ({{count}})")
            .unwrap();
        assert_eq!(
            t.render(&n, Escape::None),
            "[FIRING] ModelwatchTestAlert on modelwatch-test/test: 1 > 0 (1)"
        );
        let t = Template::parse(
            "{{labels.severity}}|{{annotations.value}}|{{labels.none}}|{{receiver}}",
        )
        .unwrap();
        assert_eq!(t.render(&n, Escape::None), "info|1||ops");
        assert_eq!(
            Template::parse("no placeholders").unwrap().render(&n, Escape::Html),
            "no placeholders"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(Template::parse("a {{rule"), Err(TemplateError::Unclosed(2)));
        assert_eq!(Template::parse("{{rulez}}"), Err(TemplateError::Unknown("rulez".into())));
        assert_eq!(Template::parse("{{labels.}}"), Err(TemplateError::Unknown("labels.".into())));
        assert_eq!(TemplateError::Unknown("x".into()).to_string(), "unknown placeholder '{{x}}'");
    }

    #[test]
    fn html_escapes_values_and_lists_alerts() {
        let mut n = test_notification("ops", "");
        n.alerts[0].labels.insert("model".into(), "<m&m>".into());
        n.common_labels.insert("model".into(), "<m&m>".into());
        let t = Template::parse("<p>{{model}}</p>{{alerts}}").unwrap();
        let html = t.render(&n, Escape::Html);
        assert!(html.starts_with("<p>&lt;m&amp;m&gt;</p><ul>"), "{html}");
        assert!(
            html.contains(
                "<li><b>FIRING</b> ModelwatchTestAlert: model=<code>&lt;m&amp;m&gt;</code>"
            ),
            "{html}"
        );
        let text = t.render(&n, Escape::None);
        assert!(
            text.contains(
                "- [FIRING] ModelwatchTestAlert model=<m&m> version=test value=1 threshold=0"
            ),
            "{text}"
        );
    }
}
