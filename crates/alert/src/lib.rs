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
//! - [`routes`]: canary pairs inferred from the `route` attribute.
//!
//! The engine wires them: rows of each flush go to [`Evaluator::observe`], a periodic
//! [`Evaluator::tick`] judges `absent` rules, the events are written to the `alerts` log and
//! pushed into the [`Scheduler`], whose due [`Notification`]s go to the delivery channels.
//!
//! ```
//! use modelwatch_alert::{Evaluator, RuleSpec, Scheduler, SchedulerSpec, Silences, WindowRows};
//! use modelwatch_alert::rule::Op;
//! # use modelwatch_clickhouse::rows::WindowStatsRow;
//! # fn window(end: i64, p99: f64) -> WindowStatsRow {
//! #     WindowStatsRow { model: "fraud".into(), version: "v2".into(), window_end_ms: end,
//! #         window_start_ms: end - 300_000, requests: 500, errors: 0, timeouts: 0,
//! #         error_rate: Some(0.0), throughput_rps: 1.0, latency_p50_ms: Some(p99 / 2.0),
//! #         latency_p90_ms: Some(p99), latency_p99_ms: Some(p99), latency_p999_ms: Some(p99),
//! #         latency_max_ms: Some(p99), tokens_in: 0, tokens_out: 0, ttft_p50_ms: None,
//! #         ttft_p99_ms: None, written_at_ms: 0 }
//! # }
//!
//! let spec = RuleSpec {
//!     name: "slow".into(),
//!     metric: "latency_p99_ms".into(),
//!     op: Some(Op::Gt),
//!     threshold: Some(250.0),
//!     channels: vec!["pager".into()],
//!     ..RuleSpec::default()
//! };
//! let rules = modelwatch_alert::validate_rules(&[spec])?;
//! let mut scheduler = Scheduler::new(&SchedulerSpec::default(), &rules)?;
//! let mut evaluator = Evaluator::new(rules);
//!
//! let now = 1_700_000_000_000; // wall clock, ms
//! let rows = [window(now - 15_000, 400.0)];
//! for event in evaluator.observe(WindowRows { windows: &rows, ..WindowRows::default() }) {
//!     // write event.to_row(now) to the `alerts` log first, then:
//!     scheduler.push(&event, now);
//! }
//! assert_eq!(scheduler.next_due(), Some(now + 30_000)); // group_wait
//! let sent = scheduler.due(now + 30_000, &Silences::new());
//! assert_eq!(sent[0].alerts[0].labels["alertname"], "slow");
//! assert_eq!(sent[0].channels, ["pager"]);
//! # Ok::<(), modelwatch_alert::ConfigError>(())
//! ```

#![warn(missing_docs)]

pub mod eval;
mod fingerprint;
mod glob;
pub mod group;
pub mod routes;
pub mod rule;
pub mod silence;

pub use eval::{AlertEvent, AlertState, CanaryPair, Evaluator, WindowRows};
pub use fingerprint::fingerprint;
pub use group::{AlertInstance, Notification, NotificationStatus, Scheduler, SchedulerSpec};
pub use routes::RouteInference;
pub use rule::{ConfigError, Rule, RuleSpec, check_channels, validate_rules};
pub use silence::{Matcher, Silence, SilenceError, Silences};
