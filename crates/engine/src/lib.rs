//! modelwatch's engine: Kafka records through the core tracker into ClickHouse rows, with the
//! checkpoint protocol that makes the results exactly-once (design/delivery.md).
//!
//! - [`pipeline`]: the synchronous part, no I/O: decode, record, close, collect rows, take
//!   checkpoints. Benchmarks and tests drive it directly from memory.
//! - [`collect`]: the core's closed panes and windows as rows, drift against references and
//!   canary-against-baseline drift.
//! - [`sink`]: where flushes go (ClickHouse, or nowhere).
//! - [`run`]: the run loop over a Kafka consumer group, with backpressure, rebalances,
//!   dead letters and graceful shutdown.
//! - [`metrics`]: the Prometheus metrics.
//! - [`topics`]: input topics and partition ids.

pub mod collect;
pub mod metrics;
pub mod pipeline;
pub mod run;
pub mod sink;
pub mod topics;

pub use collect::{CanaryPair, RouteCount, Rows};
pub use metrics::EngineMetrics;
pub use pipeline::{Flush, Input, Pipeline, PipelineOptions, RejectKind, Rejection};
pub use run::{EngineError, EngineOptions, RunReport, WrittenWindows, run};
pub use sink::{ClickHouseSink, NullSink, Sink, SinkError};
pub use topics::{TopicKind, Topics};
