//! Where flushes go: ClickHouse in production, nowhere in benchmarks.
//!
//! A sink writes a whole [`Flush`] or fails; the run loop retries a failed flush (all of it:
//! every table is a `ReplacingMergeTree` with deterministic keys, so rewriting rows already
//! written is harmless) and acknowledges it to the pipeline only once it is written. Within a
//! flush, checkpoint rows go last, after the rows and state they cover.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use modelwatch_clickhouse::schema::Table;
use modelwatch_clickhouse::{Error, ErrorClass, Writer};

use crate::metrics::EngineMetrics;
use crate::pipeline::Flush;

/// Why a flush was not written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying (the server is down, a timeout, ...).
    #[error("write failed (will retry)")]
    Transient(#[source] Error),
    /// Retrying cannot help (a schema mismatch, bad credentials, ...).
    #[error("write failed permanently")]
    Permanent(#[source] Error),
}

/// Writes flushes.
pub trait Sink: Send + 'static {
    /// Writes every row of `flush`, checkpoints last.
    fn write(&mut self, flush: &Flush) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Discards everything (benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl Sink for NullSink {
    async fn write(&mut self, _flush: &Flush) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes flushes to ClickHouse.
#[derive(Debug)]
pub struct ClickHouseSink {
    writer: Writer,
    metrics: Arc<EngineMetrics>,
}

impl ClickHouseSink {
    /// A sink over a checked writer (`Store::writer`).
    pub fn new(writer: Writer, metrics: Arc<EngineMetrics>) -> Self {
        Self { writer, metrics }
    }

    async fn insert<T: Table>(&self, rows: &[T]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.writer.insert(rows).await;
        self.metrics.insert_seconds(T::TABLE).observe(started.elapsed().as_secs_f64());
        match result {
            Ok(report) => {
                self.metrics.insert_rows(T::TABLE).inc_by(report.rows as u64);
                if report.retries > 0 {
                    self.metrics.insert_failures(T::TABLE).inc_by(u64::from(report.retries));
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.insert_failures(T::TABLE).inc();
                Err(match e.class() {
                    ErrorClass::Permanent => SinkError::Permanent(e),
                    ErrorClass::Retryable => SinkError::Transient(e),
                })
            }
        }
    }
}

impl Sink for ClickHouseSink {
    async fn write(&mut self, f: &Flush) -> Result<(), SinkError> {
        self.insert(&f.rows.pane_stats).await?;
        self.insert(&f.rows.pane_bins).await?;
        self.insert(&f.rows.window_stats).await?;
        self.insert(&f.rows.drift_scores).await?;
        self.insert(&f.rows.metric_stats).await?;
        self.insert(&f.layouts).await?;
        self.insert(&f.references).await?;
        self.insert(&f.counters).await?;
        self.insert(&f.checkpoints).await
    }
}
