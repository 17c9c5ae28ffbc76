//! modelwatch-core: the pure domain logic of modelwatch.
//!
//! No I/O, no async runtime, and no clock: every function that depends on time takes it as an
//! argument, so the same input always gives the same output (which is what makes replay after a
//! crash produce identical rows).
//!
//! - [`event`]: decoded records, reusable without allocation.
//! - [`tracker`]: event-time panes and sliding windows per (model, version), watermarks per
//!   partition, late and bad-timestamp events, caps, replay from a checkpoint.
//! - [`latency`]: HDR-resolution latency buckets per pane and window quantiles.
//! - [`bins`]: frozen bin layouts shared by every version of a model.
//! - [`drift`]: KL, PSI, Jensen-Shannon and the chi-square test on aligned bins.
//! - [`metrics`]: metric-event aggregates, counters turned into rates.

pub mod bins;
pub mod config;
pub mod drift;
pub mod event;
mod intern;
pub mod latency;
pub mod metrics;
pub mod pane;
pub mod tracker;
pub mod view;

pub use config::CoreConfig;
pub use tracker::{Admission, PartitionCheckpoint, Source, Tracker};
pub use view::{Output, PaneView, StatsView, WindowView};
