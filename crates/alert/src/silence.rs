//! Silences: label matchers over a time span. A silenced alert is still evaluated and
//! recorded in the `alerts` log; it is only left out of notifications.
//!
//! Matchers follow Alertmanager: `name = value` (`is_regex: false, is_equal: true`),
//! `name != value`, `name =~ regex`, `name !~ regex`. A label the alert does not have counts
//! as the empty string. Regular expressions are anchored at both ends (`=~ "fraud-.*"` matches
//! `fraud-detector`, not `old-fraud-detector`) and use the syntax of the `regex-lite` crate:
//! RE2-like (alternation, classes, repetition, groups), without Unicode character classes such
//! as `\p{L}`.
//!
//! A silence applies from `starts_at_ms` (inclusive) to `ends_at_ms` (exclusive) of wall-clock
//! time; expiring one early is rewriting it with an earlier end.

use std::collections::BTreeMap;

use modelwatch_clickhouse::rows::SilenceRow;
use regex_lite::Regex;
use serde::{Deserialize, Serialize};

/// A silence that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// No matcher at all.
    #[error("silence {id:?} has no matcher")]
    NoMatchers {
        /// Silence id.
        id: String,
    },
    /// Every matcher matches the empty string, so the silence would mute every alert.
    #[error("silence {id:?} matches every alert: at least one matcher must need a non-empty value")]
    MatchesEverything {
        /// Silence id.
        id: String,
    },
    /// A regular expression that does not compile.
    #[error("silence {id:?}: matcher `{name}` has an invalid regular expression {value:?}")]
    Regex {
        /// Silence id.
        id: String,
        /// The matcher's label name.
        name: String,
        /// The expression.
        value: String,
        /// Why it does not compile.
        #[source]
        source: regex_lite::Error,
    },
    /// The end is not after the start.
    #[error("silence {id:?} ends ({ends_at_ms}) before it starts ({starts_at_ms})")]
    EndsBeforeStart {
        /// Silence id.
        id: String,
        /// Start, ms since the epoch.
        starts_at_ms: i64,
        /// End, ms since the epoch.
        ends_at_ms: i64,
    },
    /// The stored matchers are not the expected JSON.
    #[error("silence {id:?}: stored matchers are not valid JSON matchers")]
    StoredMatchers {
        /// Silence id.
        id: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// One matcher, in the JSON shape of `silences.matchers` and of Alertmanager's API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
    /// `value` is a regular expression (`=~` / `!~`).
    #[serde(default)]
    pub is_regex: bool,
    /// Equality (`=`, `=~`) rather than inequality (`!=`, `!~`).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
struct Compiled {
    matcher: Matcher,
    regex: Option<Regex>,
}

impl Compiled {
    fn matches_value(&self, v: &str) -> bool {
        let hit = match &self.regex {
            Some(r) => r.is_match(v),
            None => self.matcher.value == v,
        };
        hit == self.matcher.is_equal
    }
}

/// A validated silence.
#[derive(Debug, Clone)]
pub struct Silence {
    id: String,
    matchers: Vec<Compiled>,
    starts_at_ms: i64,
    ends_at_ms: i64,
    created_by: String,
    comment: String,
}

impl Silence {
    /// Checks and builds a silence.
    pub fn new(
        id: impl Into<String>,
        matchers: Vec<Matcher>,
        starts_at_ms: i64,
        ends_at_ms: i64,
        created_by: impl Into<String>,
        comment: impl Into<String>,
    ) -> Result<Self, SilenceError> {
        let id = id.into();
        if matchers.is_empty() {
            return Err(SilenceError::NoMatchers { id });
        }
        if ends_at_ms <= starts_at_ms {
            return Err(SilenceError::EndsBeforeStart { id, starts_at_ms, ends_at_ms });
        }
        let mut compiled = Vec::with_capacity(matchers.len());
        for m in matchers {
            let regex = if m.is_regex {
                match Regex::new(&format!("^(?:{})$", m.value)) {
                    Ok(r) => Some(r),
                    Err(source) => {
                        return Err(SilenceError::Regex {
                            id,
                            name: m.name,
                            value: m.value,
                            source,
                        });
                    }
                }
            } else {
                None
            };
            compiled.push(Compiled { matcher: m, regex });
        }
        if compiled.iter().all(|c| c.matches_value("")) {
            return Err(SilenceError::MatchesEverything { id });
        }
        Ok(Self {
            id,
            matchers: compiled,
            starts_at_ms,
            ends_at_ms,
            created_by: created_by.into(),
            comment: comment.into(),
        })
    }

    /// The silence's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Start, ms since the epoch (inclusive).
    pub fn starts_at_ms(&self) -> i64 {
        self.starts_at_ms
    }
    /// End, ms since the epoch (exclusive).
    pub fn ends_at_ms(&self) -> i64 {
        self.ends_at_ms
    }
    /// The matchers as given.
    pub fn matchers(&self) -> impl Iterator<Item = &Matcher> {
        self.matchers.iter().map(|c| &c.matcher)
    }

    /// Whether the silence is in force at wall-clock `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    /// Whether every matcher matches the labels (a missing label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|c| c.matches_value(labels.get(&c.matcher.name).map_or("", String::as_str)))
    }

    /// Decodes a stored silence.
    pub fn from_row(row: &SilenceRow) -> Result<Self, SilenceError> {
        let matchers: Vec<Matcher> = serde_json::from_str(&row.matchers)
            .map_err(|source| SilenceError::StoredMatchers { id: row.id.clone(), source })?;
        Self::new(
            row.id.clone(),
            matchers,
            row.starts_at_ms,
            row.ends_at_ms,
            row.created_by.clone(),
            row.comment.clone(),
        )
    }

    /// The row that stores the silence.
    pub fn to_row(&self, written_at_ms: u64) -> SilenceRow {
        let matchers: Vec<&Matcher> = self.matchers().collect();
        SilenceRow {
            id: self.id.clone(),
            // Plain strings and booleans always serialise.
            matchers: serde_json::to_string(&matchers).unwrap_or_default(),
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            written_at_ms,
        }
    }
}

/// The silences known to this instance, by id (a newer version of a silence replaces the
/// older one).
#[derive(Debug, Clone, Default)]
pub struct Silences {
    by_id: BTreeMap<String, Silence>,
}

impl Silences {
    /// No silences.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a silence or replaces the one with its id (an edit or an early expiry).
    pub fn upsert(&mut self, s: Silence) {
        self.by_id.insert(s.id.clone(), s);
    }

    /// Replaces every silence with those of `rows` (the `silences` table read with FINAL).
    /// Rows that do not decode are returned with their error and left out.
    pub fn replace_from_rows(&mut self, rows: &[SilenceRow]) -> Vec<SilenceError> {
        self.by_id.clear();
        let mut errors = Vec::new();
        for r in rows {
            match Silence::from_row(r) {
                Ok(s) => self.upsert(s),
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Drops silences that ended at or before `now_ms` (they no longer apply anyway).
    pub fn remove_expired(&mut self, now_ms: i64) {
        self.by_id.retain(|_, s| s.ends_at_ms > now_ms);
    }

    /// The silences, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Silence> {
        self.by_id.values()
    }

    /// The id of an active silence that matches the labels at `now_ms`, if any.
    pub fn silenced_by(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> Option<&str> {
        self.by_id
            .values()
            .find(|s| s.is_active(now_ms) && s.matches(labels))
            .map(|s| s.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Matcher {
        Matcher { name: name.into(), value: value.into(), is_regex, is_equal }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn matchers_follow_alertmanager() {
        let l = labels(&[("alertname", "slow"), ("model", "fraud-detector"), ("version", "v2")]);
        // Each matcher next to one that always matches `l`: a lone `!=` would mute everything.
        let one = |mm: Matcher| {
            Silence::new("s", vec![m("alertname", "slow", false, true), mm], 0, 10, "", "")
                .unwrap()
                .matches(&l)
        };
        assert!(one(m("model", "fraud-detector", false, true)));
        assert!(!one(m("model", "fraud", false, true)));
        assert!(one(m("model", "fraud-.*", true, true)));
        assert!(!one(m("model", "detector", true, true)), "regexes are anchored");
        assert!(one(m("model", "ranker", false, false)));
        assert!(!one(m("version", "v[0-9]", true, false)));
        assert!(one(m("team", "ml", false, false)), "a missing label is empty");
        let both = Silence::new(
            "s",
            vec![m("alertname", "slow", false, true), m("version", "v1", false, true)],
            0,
            10,
            "",
            "",
        )
        .unwrap();
        assert!(!both.matches(&l), "every matcher must match");
    }

    #[test]
    fn invalid_silences_are_refused() {
        assert!(matches!(
            Silence::new("a", vec![], 0, 1, "", ""),
            Err(SilenceError::NoMatchers { .. })
        ));
        assert!(matches!(
            Silence::new("a", vec![m("model", "(", true, true)], 0, 1, "", ""),
            Err(SilenceError::Regex { .. })
        ));
        assert!(matches!(
            Silence::new("a", vec![m("model", ".*", true, true)], 0, 1, "", ""),
            Err(SilenceError::MatchesEverything { .. })
        ));
        assert!(matches!(
            Silence::new("a", vec![m("model", "x", false, true)], 5, 5, "", ""),
            Err(SilenceError::EndsBeforeStart { .. })
        ));
    }

    #[test]
    fn silences_apply_only_while_active_and_round_trip_through_rows() {
        let s = Silence::new("id1", vec![m("model", "m", false, true)], 100, 200, "ops", "deploy")
            .unwrap();
        let row = s.to_row(7);
        assert_eq!(
            row.matchers,
            r#"[{"name":"model","value":"m","is_regex":false,"is_equal":true}]"#
        );
        let back = Silence::from_row(&row).unwrap();
        assert_eq!(back.to_row(7), row);
        let mut all = Silences::new();
        assert!(all.replace_from_rows(&[row]).is_empty());
        let l = labels(&[("model", "m")]);
        assert_eq!(all.silenced_by(&l, 99), None);
        assert_eq!(all.silenced_by(&l, 100), Some("id1"));
        assert_eq!(all.silenced_by(&l, 200), None, "the end is exclusive");
        // Expiring early: the same id with an earlier end.
        all.upsert(
            Silence::new("id1", vec![m("model", "m", false, true)], 100, 150, "", "").unwrap(),
        );
        assert_eq!(all.silenced_by(&l, 160), None);
        all.remove_expired(160);
        assert_eq!(all.iter().count(), 0);
        // Alertmanager's JSON without is_equal defaults to equality.
        let mm: Matcher =
            serde_json::from_str(r#"{"name":"a","value":"b","is_regex":false}"#).unwrap();
        assert!(mm.is_equal);
    }
}
