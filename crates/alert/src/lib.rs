//! Alerting logic of modelwatch, without I/O and without a clock: every instant is passed in.
//!
//! - [`rule`]: `[[alerts.rules]]` as written ([`RuleSpec`]) and validated ([`Rule`]).
//! - [`eval`]: the [`Evaluator`], one state machine per (rule, model, version) driven by the
//!   rows of closed event-time windows (and by wall-clock ticks for `absent` rules); every
//!   transition is an [`AlertEvent`], one row of the `alerts` log.
//! - [`group`]: the notification [`Scheduler`]: Alertmanager's grouping, `group_wait`,
//!   `group_interval`, `repeat_interval`, resolved notifications and the staleness cut-off, on an
//!   explicit wall clock.
//! - [`silence`]: silences with Alertmanager's matchers, and their `silences` rows.
//!
//! The engine wires them: rows of each flush go to [`Evaluator::observe`], a periodic
//! [`Evaluator::tick`] judges `absent` rules, the events are written to the `alerts` log and
//! pushed into the [`Scheduler`], whose due [`Notification`]s go to the delivery channels.

pub mod eval;
mod fingerprint;
mod glob;
pub mod group;
pub mod rule;
pub mod silence;

pub use eval::{AlertEvent, AlertState, CanaryPair, Evaluator, WindowRows};
pub use fingerprint::fingerprint;
pub use group::{AlertInstance, Notification, NotificationStatus, Scheduler, SchedulerSpec};
pub use rule::{ConfigError, Rule, RuleSpec, validate_rules};
pub use silence::{Matcher, Silence, SilenceError, Silences};
