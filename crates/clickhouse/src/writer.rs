//! The batched insert path: RowBinary, LZ4, retries with backoff for retryable errors.
//!
//! Contract: [`Writer::insert`] borrows the batch. It returns `Ok` only after every row was
//! acknowledged by the server, and otherwise returns the error ([`Error::InsertPermanent`] at
//! once, or [`Error::InsertRetriesExhausted`] after the retry budget) with the batch untouched
//! in the caller's hands. Nothing is dropped silently. A batch larger than
//! [`WriterConfig::batch_rows`] is sent as several inserts; if a later one fails, the earlier
//! ones stay written, which is harmless: rows are keyed deterministically and the tables are
//! `ReplacingMergeTree`, so inserting the whole batch again leaves one row per key.

use std::time::{Duration, Instant};

use clickhouse::Client;

use crate::Error;
use crate::error::{ErrorClass, classify};
use crate::schema::Table;

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per insert, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1-based): the exponential step capped at
    /// `max_backoff`, of which a random half is kept ("equal jitter"), so instances that failed
    /// together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let step = exp.min(self.max_backoff);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Settings of the insert path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Most rows per insert request.
    pub batch_rows: usize,
    /// Retries of retryable errors.
    pub retry: RetryPolicy,
    /// Longest wait for one chunk of rows to be sent to the socket.
    pub send_timeout: Duration,
    /// Longest wait for the server to acknowledge an insert once sent.
    pub end_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_rows: 10_000,
            retry: RetryPolicy::default(),
            send_timeout: Duration::from_secs(30),
            end_timeout: Duration::from_secs(60),
        }
    }
}

/// Inserts batches of rows; cheap to clone (clones share the connection pool).
///
/// Built by [`crate::Store::writer`], which first checks every table's columns against the row
/// layouts.
#[derive(Clone)]
pub struct Writer {
    pub(crate) client: Client,
    pub(crate) database: String,
    pub(crate) config: WriterConfig,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("database", &self.database)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertReport {
    /// Rows written.
    pub rows: usize,
    /// Insert requests that succeeded.
    pub requests: u32,
    /// Failed attempts that were retried.
    pub retries: u32,
    /// Time spent, backoff included.
    pub elapsed: Duration,
}

impl Writer {
    /// The writer's settings.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// Inserts `rows` into `T`'s table, in requests of at most `batch_rows` rows, retrying
    /// retryable errors. See the module docs for the contract.
    pub async fn insert<T: Table>(&self, rows: &[T]) -> Result<InsertReport, Error> {
        let started = Instant::now();
        let mut report = InsertReport::default();
        let table_sql = format!("`{}`.`{}`", self.database, T::TABLE);
        for chunk in rows.chunks(self.config.batch_rows.max(1)) {
            let mut attempt = 1u32;
            loop {
                match self.insert_once(&table_sql, chunk).await {
                    Ok(()) => break,
                    Err(e) if classify(&e) == ErrorClass::Permanent => {
                        return Err(Error::InsertPermanent {
                            table: T::TABLE,
                            rows: rows.len(),
                            source: e,
                        });
                    }
                    Err(e) if attempt >= self.config.retry.max_attempts.max(1) => {
                        return Err(Error::InsertRetriesExhausted {
                            table: T::TABLE,
                            rows: rows.len(),
                            attempts: attempt,
                            source: e,
                        });
                    }
                    Err(e) => {
                        let pause = self.config.retry.backoff(attempt);
                        tracing::warn!(
                            table = T::TABLE,
                            rows = chunk.len(),
                            attempt,
                            backoff_ms = pause.as_millis() as u64,
                            error = %e,
                            "retrying insert"
                        );
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                        report.retries += 1;
                    }
                }
            }
            report.rows += chunk.len();
            report.requests += 1;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn insert_once<T: Table>(
        &self,
        table_sql: &str,
        rows: &[T],
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = self
            .client
            .insert_unescaped::<T>(table_sql)
            .await?
            .with_timeouts(Some(self.config.send_timeout), Some(self.config.end_timeout));
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100), "{b1:?}");
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b30 = p.backoff(30);
            assert!(b30 >= Duration::from_millis(500) && b30 <= Duration::from_secs(1));
        }
    }
}
