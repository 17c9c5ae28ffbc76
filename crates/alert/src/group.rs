//! Notification scheduling with Alertmanager's semantics, on an explicit wall clock.
//!
//! Alerts are grouped per (rule, model). A group is created by its first firing alert and
//! notified `group_wait` later (so a burst of alerts becomes one notification); from then on
//! it **ticks** every `group_interval`. At a tick the group is notified when an alert changed
//! since the last notification (a new firing alert, a new episode, a resolution of an alert
//! that was notified firing), or when it still has firing alerts and `repeat_interval` has
//! passed since the last notification. A group whose alerts are all resolved and notified is
//! dropped at its first tick at least `group_interval` after its last notification (not at
//! once: an alert firing again right away joins it). So a (rule, model) gets at most one
//! notification per `group_interval`, however much its input flaps.
//!
//! A notification carries every notifiable alert of the group, firing and resolved; a
//! resolved alert is carried once and then forgotten (`send_resolved`), and a resolved alert
//! that was never notified firing is forgotten silently. (An alert notified firing that
//! resolves, fires again and resolves again between two ticks is notified resolved once, with
//! the latest episode's times.)
//!
//! Left out of a notification (but kept, and still in the `alerts` log):
//! - firing alerts matched by an active [silence](crate::silence) at the tick; they are
//!   notified at the first tick after the silence ends if they still fire;
//! - firing alerts whose latest evaluation (`at_ms`, or a later [`Scheduler::refresh`]) is
//!   older than `max_notification_age` at the tick: results of catching up on old data. They
//!   are notified at a later tick if a refresh shows them firing on recent data.
//!
//! A resolution of an alert that receivers were told fires is always sent, however old and
//! even when silenced, so receivers never keep an alert open forever (Alertmanager mutes it
//! under a silence; here a silence mutes news, not the closing of an incident already
//! announced). A resolution of an alert never notified firing is never sent.
//!
//! ## Sequence numbers and idempotency
//! A group's notifications are numbered from `1000 × (creation wall-clock ms) + 1`, one by
//! one, so a group key never reuses a number, also across restarts and after a group emptied
//! and was re-created (as long as the wall clock does not go back). (`group_key`, `seq`) is
//! the notification's idempotency key ([`Notification::idempotency_key`]).
//!
//! ## Restart
//! [`Scheduler::restore`] rebuilds groups from the evaluator's restored alerts and the
//! delivery rows of the `alerts` log, so alerts that were already notified are not notified
//! again. The delivery rows it expects: one per alert of a notification and channel attempt,
//! with `seq` = [`AlertInstance::state_seq`], `state` = the alert's notified status,
//! `starts_at_ms` = its `starts_at_ms` and `at_ms` = the wall-clock time of the attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use modelwatch_clickhouse::rows::AlertRow;
use serde::{Deserialize, Serialize};

use crate::eval::{AlertEvent, AlertState};
use crate::fingerprint::hash_hex;
use crate::rule::{ConfigError, Rule, duration, millis};
use crate::silence::Silences;

/// `[alerts]` timing of notifications, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSpec {
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait", with = "duration")]
    pub group_wait: Duration,
    /// How often a group may be notified of changes (and at least 1s).
    #[serde(default = "default_group_interval", with = "duration")]
    pub group_interval: Duration,
    /// How often a group whose alerts keep firing unchanged is notified again.
    #[serde(default = "default_repeat_interval", with = "duration")]
    pub repeat_interval: Duration,
    /// Firing alerts whose latest evaluation is older than this when they would be sent are
    /// not notified (results of catching up on old data).
    #[serde(default = "default_max_notification_age", with = "duration")]
    pub max_notification_age: Duration,
}

fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_max_notification_age() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        Self {
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            max_notification_age: default_max_notification_age(),
        }
    }
}

/// Whether an alert, or a notification as a whole, is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Firing (a notification: at least one of its alerts is).
    Firing,
    /// Resolved (a notification: all of its alerts are).
    Resolved,
}

impl NotificationStatus {
    /// `firing` or `resolved` (Alertmanager's words, and the `alerts.state` values).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

/// One alert in a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertInstance {
    /// Stable fingerprint.
    pub fingerprint: String,
    /// Labels (`alertname`, `model`, `version`, `severity` and the rule's labels).
    pub labels: BTreeMap<String, String>,
    /// Annotations rendered with the latest evaluated value.
    pub annotations: BTreeMap<String, String>,
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// When the episode started (event time of its first holding window).
    pub starts_at_ms: i64,
    /// When it resolved; `None` while firing.
    pub ends_at_ms: Option<i64>,
    /// The latest evaluated value.
    pub value: Option<f64>,
    /// The threshold in force.
    pub threshold: Option<f64>,
    /// The `seq` of the alert's latest state row: the `seq` of its delivery rows.
    pub state_seq: u64,
}

/// A notification of one group, due for the rule's channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Alertmanager-style group key: `{}:{alertname="<rule>", model="<model>"}`.
    pub group_key: String,
    /// The rule.
    pub rule: String,
    /// The model.
    pub model: String,
    /// Firing if any alert is firing.
    pub status: NotificationStatus,
    /// The alerts, by fingerprint.
    pub alerts: Vec<AlertInstance>,
    /// Labels shared (same name and value) by every alert.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations shared by every alert.
    pub common_annotations: BTreeMap<String, String>,
    /// Channel names of the rule.
    pub channels: Vec<String>,
    /// Number of this notification within its group key (see the module documentation).
    pub seq: u64,
    /// How many times the same alerts in the same states were notified before in this group
    /// (repeats after `repeat_interval`): part of the [idempotency key](Self::idempotency_key).
    pub repeat: u32,
}

impl AlertInstance {
    /// The `alerts` delivery row of this alert for one attempt to send `notification` through
    /// `channel` (e.g. `webhook:pager`), in the shape [`Scheduler::restore`] reads back:
    /// `seq` = [`state_seq`](Self::state_seq), `state` = the notified status, `at_ms` = the
    /// wall-clock time of the attempt. `delivery_status` is `sent`, `failed` or `suppressed`.
    pub fn delivery_row(
        &self,
        notification: &Notification,
        channel: &str,
        attempt: u32,
        delivery_status: &str,
        at_ms: i64,
        written_at_ms: u64,
    ) -> AlertRow {
        let label = |k: &str| self.labels.get(k).cloned().unwrap_or_default();
        AlertRow {
            fingerprint: self.fingerprint.clone(),
            seq: self.state_seq,
            channel: channel.to_owned(),
            attempt,
            rule: notification.rule.clone(),
            model: notification.model.clone(),
            version: label("version"),
            severity: label("severity"),
            state: self.status.as_str().to_owned(),
            value: self.value,
            threshold: self.threshold,
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            delivery_status: delivery_status.to_owned(),
            at_ms,
            written_at_ms,
        }
    }
}

impl Notification {
    /// The idempotency key: 16 hex digits of the FNV-1a hash of [`content`](Self::content),
    /// `-`, [`repeat`](Self::repeat). It depends only on what is notified (which alerts, in
    /// which state, of which episode and state row), never on when: the notification made again
    /// after a crash between sending it and recording its delivery has the same key, so a
    /// receiver may drop the repeat. A deliberate repeat (`repeat_interval`) has a new key.
    pub fn idempotency_key(&self) -> String {
        format!("{}-{}", hash_hex(&self.content()), self.repeat)
    }

    /// The group key and, per alert, its fingerprint, status, episode start and state row
    /// `seq`.
    pub fn content(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.group_key.clone();
        for a in &self.alerts {
            let _ = write!(
                out,
                "|{}:{}:{}:{}",
                a.fingerprint,
                a.status.as_str(),
                a.starts_at_ms,
                a.state_seq
            );
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    event: AlertEvent,
    status: NotificationStatus,
    evaluated_at_ms: i64,
    /// What was last notified: status and the episode's start.
    notified: Option<(NotificationStatus, i64)>,
    /// Restored firing with no delivery on record: the process may have stopped between
    /// sending its firing notification and recording it, so its resolution is sent even if
    /// the firing is not notified again first.
    maybe_notified: bool,
}

impl Tracked {
    fn changed(&self) -> bool {
        self.notified != Some((self.status, self.event.starts_at_ms))
    }
    /// Whether receivers were last told that this alert fires (in this episode or an earlier
    /// one whose resolution was not sent yet): a resolution must then be sent.
    fn notified_firing(&self) -> bool {
        matches!(self.notified, Some((NotificationStatus::Firing, _))) || self.maybe_notified
    }
    /// The alert as a notification carries it.
    fn instance(&self, fingerprint: &str) -> AlertInstance {
        let e = &self.event;
        AlertInstance {
            fingerprint: fingerprint.to_owned(),
            labels: e.labels.clone(),
            annotations: e.annotations.clone(),
            status: self.status,
            starts_at_ms: e.starts_at_ms,
            ends_at_ms: match self.status {
                NotificationStatus::Firing => None,
                NotificationStatus::Resolved => e.ends_at_ms,
            },
            value: e.value,
            threshold: e.threshold,
            state_seq: e.seq,
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    next_tick_ms: i64,
    last_sent_ms: Option<i64>,
    seq: u64,
    /// The content of the last notification sent and how many times it was repeated.
    last_content: Option<(String, u32)>,
    alerts: BTreeMap<String, Tracked>,
}

/// The notification scheduler; see the module documentation.
///
/// Driving it: [`push`](Self::push) every event of the evaluator, [`refresh`](Self::refresh)
/// with [`Evaluator::firing`](crate::Evaluator::firing), and call [`due`](Self::due) at
/// [`next_due`](Self::next_due) (or periodically) with the wall clock.
#[derive(Debug, Clone)]
pub struct Scheduler {
    group_wait_ms: i64,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
    max_age_ms: i64,
    channels: BTreeMap<String, Vec<String>>,
    groups: BTreeMap<(String, String), Group>,
    /// Last seq used per group key, kept after the group is gone.
    last_seq: BTreeMap<(String, String), u64>,
}

impl Scheduler {
    /// A scheduler for `rules` (their channels) with checked timings.
    pub fn new(spec: &SchedulerSpec, rules: &[Rule]) -> Result<Self, ConfigError> {
        let group_wait_ms = millis(|| "alerts.group_wait".to_owned(), spec.group_wait)?;
        let group_interval_ms = millis(|| "alerts.group_interval".to_owned(), spec.group_interval)?;
        if group_interval_ms < 1000 {
            return Err(ConfigError::Invalid {
                key: "alerts.group_interval".to_owned(),
                value: humantime::format_duration(spec.group_interval).to_string(),
                expected: "at least 1s",
            });
        }
        let repeat_interval_ms =
            millis(|| "alerts.repeat_interval".to_owned(), spec.repeat_interval)?;
        let max_age_ms =
            millis(|| "alerts.max_notification_age".to_owned(), spec.max_notification_age)?;
        Ok(Self {
            group_wait_ms,
            group_interval_ms,
            repeat_interval_ms,
            max_age_ms,
            channels: rules.iter().map(|r| (r.name().to_owned(), r.channels().to_vec())).collect(),
            groups: BTreeMap::new(),
            last_seq: BTreeMap::new(),
        })
    }

    fn group(&mut self, rule: &str, model: &str, now_ms: i64) -> &mut Group {
        let key = (rule.to_owned(), model.to_owned());
        let base = (now_ms.max(0) as u64).saturating_mul(1000);
        let seq = self.last_seq.get(&key).copied().unwrap_or(0).max(base);
        let wait = self.group_wait_ms;
        self.groups.entry(key).or_insert_with(|| Group {
            next_tick_ms: now_ms.saturating_add(wait),
            last_sent_ms: None,
            seq,
            last_content: None,
            alerts: BTreeMap::new(),
        })
    }

    /// Takes an evaluator event at wall-clock `now_ms`. Firing events add or update their
    /// alert (a new group starts its `group_wait`); resolved events resolve a tracked alert;
    /// pending and inactive events are not notified and are ignored.
    pub fn push(&mut self, event: &AlertEvent, now_ms: i64) {
        let status = match event.state {
            AlertState::Firing => NotificationStatus::Firing,
            AlertState::Resolved => NotificationStatus::Resolved,
            AlertState::Pending | AlertState::Inactive => return,
        };
        let key = (event.rule.clone(), event.model.clone());
        if status == NotificationStatus::Resolved {
            let Some(g) = self.groups.get_mut(&key) else { return };
            if let Some(t) = g.alerts.get_mut(&event.fingerprint) {
                t.status = status;
                t.evaluated_at_ms = t.evaluated_at_ms.max(event.at_ms);
                t.event = event.clone();
            }
            return;
        }
        let g = self.group(&event.rule, &event.model, now_ms);
        match g.alerts.get_mut(&event.fingerprint) {
            Some(t) => {
                if t.event.starts_at_ms != event.starts_at_ms {
                    t.evaluated_at_ms = event.at_ms;
                    t.maybe_notified = false;
                }
                t.evaluated_at_ms = t.evaluated_at_ms.max(event.at_ms);
                t.status = status;
                t.event = event.clone();
            }
            None => {
                let t = Tracked {
                    event: event.clone(),
                    status,
                    evaluated_at_ms: event.at_ms,
                    notified: None,
                    maybe_notified: false,
                };
                g.alerts.insert(event.fingerprint.clone(), t);
            }
        }
    }

    /// Records that a firing alert was evaluated (its condition still judged) at `at_ms`, so
    /// it counts as recent for `max_notification_age`.
    pub fn refresh(&mut self, fingerprint: &str, at_ms: i64) {
        for g in self.groups.values_mut() {
            if let Some(t) = g.alerts.get_mut(fingerprint) {
                t.evaluated_at_ms = t.evaluated_at_ms.max(at_ms);
                return;
            }
        }
    }

    /// When [`due`](Self::due) has something to do next (a group's tick), wall-clock ms.
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_tick_ms).min()
    }

    /// The notifications due at wall-clock `now_ms`, by group key. Runs the tick of every group
    /// whose tick is at or before `now_ms`; the next tick is `group_interval` after `now_ms`.
    pub fn due(&mut self, now_ms: i64, silences: &Silences) -> Vec<Notification> {
        let mut out = Vec::new();
        let (interval, repeat, max_age) =
            (self.group_interval_ms, self.repeat_interval_ms, self.max_age_ms);
        let mut emptied = Vec::new();
        for ((rule, model), g) in &mut self.groups {
            if g.next_tick_ms > now_ms {
                continue;
            }
            g.next_tick_ms = now_ms.saturating_add(interval);
            // Decide per alert: send, keep for later, or forget.
            let mut send = Vec::new();
            g.alerts.retain(|fp, t| {
                let silenced = silences.silenced_by(&t.event.labels, now_ms).is_some();
                let stale = now_ms.saturating_sub(t.evaluated_at_ms) > max_age;
                match t.status {
                    NotificationStatus::Firing => {
                        if !silenced && !stale {
                            send.push(fp.clone());
                        }
                        true
                    }
                    NotificationStatus::Resolved => {
                        if t.notified_firing() {
                            send.push(fp.clone());
                            true
                        } else {
                            false
                        }
                    }
                }
            });
            let changed = send.iter().any(|fp| g.alerts[fp].changed());
            let firing = send.iter().any(|fp| g.alerts[fp].status == NotificationStatus::Firing);
            let repeat_due = firing && g.last_sent_ms.is_none_or(|t| now_ms - t >= repeat);
            if changed || repeat_due {
                g.seq += 1;
                g.last_sent_ms = Some(now_ms);
                let alerts: Vec<AlertInstance> =
                    send.iter().map(|fp| g.alerts[fp].instance(fp)).collect();
                for fp in &send {
                    if let Some(t) = g.alerts.get_mut(fp) {
                        t.notified = Some((t.status, t.event.starts_at_ms));
                    }
                }
                g.alerts.retain(|_, t| t.status == NotificationStatus::Firing);
                let channels = self.channels.get(rule).cloned().unwrap_or_default();
                let mut n = notification(rule, model, alerts, channels, g.seq);
                let content = n.content();
                n.repeat = match &g.last_content {
                    Some((c, r)) if *c == content => r + 1,
                    _ => 0,
                };
                g.last_content = Some((content, n.repeat));
                out.push(n);
            }
            // An emptied group is kept for one more interval after its last notification, so
            // an alert that comes back at once waits for that tick instead of starting a new
            // group (whose `group_wait` would beat `group_interval`).
            if g.alerts.is_empty() && g.last_sent_ms.is_none_or(|t| now_ms - t >= interval) {
                emptied.push((rule.clone(), model.clone()));
            }
        }
        for key in emptied {
            if let Some(g) = self.groups.remove(&key) {
                self.last_seq.insert(key, g.seq);
            }
        }
        out
    }

    /// Stops tracking alerts whose versions went to another instance (which notifies them from
    /// now on, see [`Evaluator::release`](crate::Evaluator::release)): nothing more is sent
    /// for them from here. Groups left empty go, keeping their sequence numbers.
    pub fn forget(&mut self, fingerprints: &[String]) {
        let mut emptied = Vec::new();
        for (key, g) in &mut self.groups {
            g.alerts.retain(|f, _| !fingerprints.contains(f));
            if g.alerts.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            if let Some(g) = self.groups.remove(&key) {
                self.last_seq.insert(key, g.seq);
            }
        }
    }

    /// Per group, the firing alerts whose firing (this episode) receivers were last notified
    /// of, as a firing notification (groups without any are left out). After a
    /// [`restore`](Self::restore) this is what receivers that forget alerts not re-sent
    /// (Alertmanager) must get again, since the notification that told them is not re-sent by
    /// [`due`](Self::due) before `repeat_interval`.
    pub fn notified_firing(&self) -> Vec<Notification> {
        let mut out = Vec::new();
        for ((rule, model), g) in &self.groups {
            let alerts: Vec<AlertInstance> = g
                .alerts
                .iter()
                .filter(|(_, t)| t.status == NotificationStatus::Firing && !t.changed())
                .map(|(fp, t)| t.instance(fp))
                .collect();
            if !alerts.is_empty() {
                let channels = self.channels.get(rule).cloned().unwrap_or_default();
                out.push(notification(rule, model, alerts, channels, g.seq));
            }
        }
        out
    }

    /// Rebuilds groups after a restart from the evaluator's restored alerts
    /// ([`Evaluator::restore`](crate::Evaluator::restore)) and the delivery rows of the
    /// `alerts` log (rows with a `channel`; state rows are ignored). A firing alert whose
    /// latest delivery was of this episode firing is not notified again before
    /// `repeat_interval`; a resolved alert whose latest delivery was firing gets its resolved
    /// notification; anything else restored is handled as new, except that a restored firing
    /// alert always gets its resolution (its firing notification may have been sent by a
    /// process that stopped before recording it).
    pub fn restore(&mut self, alerts: &[AlertEvent], deliveries: &[AlertRow], now_ms: i64) {
        let mut latest: BTreeMap<&str, &AlertRow> = BTreeMap::new();
        for r in deliveries.iter().filter(|r| !r.channel.is_empty()) {
            let e = latest.entry(r.fingerprint.as_str()).or_insert(r);
            if (r.at_ms, r.seq) > (e.at_ms, e.seq) {
                *e = r;
            }
        }
        for a in alerts {
            let delivered = latest.get(a.fingerprint.as_str()).copied();
            let notified = delivered.and_then(|d| {
                let status = match d.state.as_str() {
                    "firing" => NotificationStatus::Firing,
                    "resolved" => NotificationStatus::Resolved,
                    _ => return None,
                };
                Some((status, d.starts_at_ms))
            });
            let notified_firing = matches!(notified, Some((NotificationStatus::Firing, _)));
            match a.state {
                AlertState::Firing => {}
                AlertState::Resolved if notified_firing => {}
                _ => continue,
            }
            let g = self.group(&a.rule, &a.model, now_ms);
            if let Some(d) = delivered.filter(|_| notified.is_some()) {
                g.last_sent_ms = g.last_sent_ms.max(Some(d.at_ms));
            }
            let status = match a.state {
                AlertState::Resolved => NotificationStatus::Resolved,
                _ => NotificationStatus::Firing,
            };
            g.alerts.insert(
                a.fingerprint.clone(),
                Tracked {
                    event: a.clone(),
                    status,
                    evaluated_at_ms: a.at_ms,
                    notified,
                    maybe_notified: a.state == AlertState::Firing,
                },
            );
        }
    }
}

/// The notification of group (rule, model) with these alerts: firing when any is.
fn notification(
    rule: &str,
    model: &str,
    alerts: Vec<AlertInstance>,
    channels: Vec<String>,
    seq: u64,
) -> Notification {
    let firing = alerts.iter().any(|a| a.status == NotificationStatus::Firing);
    Notification {
        group_key: format!("{{}}:{{alertname={rule:?}, model={model:?}}}"),
        rule: rule.to_owned(),
        model: model.to_owned(),
        status: if firing { NotificationStatus::Firing } else { NotificationStatus::Resolved },
        common_labels: common(alerts.iter().map(|a| &a.labels)),
        common_annotations: common(alerts.iter().map(|a| &a.annotations)),
        alerts,
        channels,
        seq,
        repeat: 0,
    }
}

/// The (name, value) pairs present in every map.
fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let Some(first) = maps.next() else { return BTreeMap::new() };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}
