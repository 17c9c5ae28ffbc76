//! Validated settings of the core: windows, drift binning, latency resolution and caps.
//!
//! Every constructor checks its values and fails with a [`ConfigError`] that names the offending
//! key (as it is spelled in the TOML configuration), so a bad value stops the program at start.
//! Validation is pure: nothing here touches disk, network or clock.

use std::time::Duration;

/// A setting that cannot be used, with the configuration key it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("`{key}` must be greater than zero")]
    Zero {
        /// The configuration key, e.g. `windows.slide`.
        key: &'static str,
    },
    /// A duration is not a whole number of milliseconds or is too large.
    #[error("`{key}` must be a whole number of milliseconds below 100 years")]
    Resolution {
        /// The configuration key.
        key: &'static str,
    },
    /// The window is not a whole number of slides.
    #[error(
        "`windows.window` ({window:?}) must be a whole multiple of `windows.slide` ({slide:?})"
    )]
    WindowNotMultipleOfSlide {
        /// The window length.
        window: Duration,
        /// The slide.
        slide: Duration,
    },
    /// The backlog idle timeout is shorter than the idle timeout.
    #[error(
        "`windows.backlog_idle_timeout` ({backlog_idle_timeout:?}) must be at least \
         `windows.idle_timeout` ({idle_timeout:?})"
    )]
    BacklogIdleBelowIdle {
        /// The backlog idle timeout.
        backlog_idle_timeout: Duration,
        /// The idle timeout.
        idle_timeout: Duration,
    },
    /// The window holds too many panes to keep in memory per version.
    #[error("`windows.window` / `windows.slide` is {panes} panes; at most {max} are supported")]
    TooManyPanes {
        /// Panes per window.
        panes: u64,
        /// The supported maximum.
        max: u64,
    },
    /// A number is out of its range.
    #[error("`{key}` must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The configuration key.
        key: &'static str,
        /// The value given.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
}

/// The most panes one window may hold (window / slide).
pub const MAX_PANES_PER_WINDOW: u64 = 360;

fn millis(key: &'static str, d: Duration, allow_zero: bool) -> Result<i64, ConfigError> {
    if d.is_zero() && !allow_zero {
        return Err(ConfigError::Zero { key });
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) || d > Duration::from_secs(100 * 365 * 86_400) {
        return Err(ConfigError::Resolution { key });
    }
    Ok(d.as_millis() as i64)
}

/// Event-time windowing: sliding windows of `window` advancing every `slide`, built from panes of
/// one slide each.
///
/// ```
/// use std::time::Duration;
/// use modelwatch_core::config::WindowSpec;
///
/// let spec = WindowSpec::default();
/// assert_eq!(spec.panes_per_window(), 30); // 5m / 10s
/// assert!(WindowSpec::new(Duration::from_secs(60), Duration::from_secs(7),
///     Duration::ZERO, Duration::from_secs(60), Duration::from_secs(30)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    window_ms: i64,
    slide_ms: i64,
    lateness_ms: i64,
    max_future_skew_ms: i64,
    idle_timeout_ms: i64,
    backlog_idle_timeout_ms: i64,
}

impl WindowSpec {
    /// Default window length: 5 minutes.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
    /// Default slide (pane length): 10 seconds.
    pub const DEFAULT_SLIDE: Duration = Duration::from_secs(10);
    /// Default allowed lateness: 5 seconds.
    pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(5);
    /// Default largest lead of an event's time over its Kafka record timestamp: 1 minute.
    pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);
    /// Default wall-clock silence after which a partition counts as idle: 30 seconds.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default wall-clock silence after which a partition with a known backlog (records the
    /// broker holds that were not read yet) counts as idle all the same: 2 minutes.
    pub const DEFAULT_BACKLOG_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

    /// Checks and builds a window specification.
    pub fn new(
        window: Duration,
        slide: Duration,
        allowed_lateness: Duration,
        max_future_skew: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let window_ms = millis("windows.window", window, false)?;
        let slide_ms = millis("windows.slide", slide, false)?;
        let lateness_ms = millis("windows.allowed_lateness", allowed_lateness, true)?;
        let max_future_skew_ms = millis("windows.max_future_skew", max_future_skew, true)?;
        let idle_timeout_ms = millis("windows.idle_timeout", idle_timeout, false)?;
        if window_ms % slide_ms != 0 {
            return Err(ConfigError::WindowNotMultipleOfSlide { window, slide });
        }
        let panes = (window_ms / slide_ms) as u64;
        if panes > MAX_PANES_PER_WINDOW {
            return Err(ConfigError::TooManyPanes { panes, max: MAX_PANES_PER_WINDOW });
        }
        let backlog_idle_timeout_ms =
            idle_timeout_ms.max(Self::DEFAULT_BACKLOG_IDLE_TIMEOUT.as_millis() as i64);
        Ok(Self {
            window_ms,
            slide_ms,
            lateness_ms,
            max_future_skew_ms,
            idle_timeout_ms,
            backlog_idle_timeout_ms,
        })
    }

    /// The same specification with another backlog idle timeout: the wall-clock silence after
    /// which a partition counts as idle although the broker holds records of it that were not
    /// read yet (its silence is then the broker's or the consumer's delay, not a quiet
    /// shipper's). It must be at least `idle_timeout`.
    pub fn with_backlog_idle_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        let ms = millis("windows.backlog_idle_timeout", timeout, false)?;
        if ms < self.idle_timeout_ms {
            return Err(ConfigError::BacklogIdleBelowIdle {
                backlog_idle_timeout: timeout,
                idle_timeout: Duration::from_millis(self.idle_timeout_ms as u64),
            });
        }
        Ok(Self { backlog_idle_timeout_ms: ms, ..self })
    }

    /// Window length in milliseconds.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }
    /// Slide (pane length) in milliseconds.
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }
    /// Allowed lateness in milliseconds.
    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }
    /// Largest accepted lead of event time over record time, in milliseconds.
    pub fn max_future_skew_ms(&self) -> i64 {
        self.max_future_skew_ms
    }
    /// Wall-clock silence after which a partition is idle, in milliseconds.
    pub fn idle_timeout_ms(&self) -> i64 {
        self.idle_timeout_ms
    }
    /// Wall-clock silence after which a partition with a known backlog is idle, in
    /// milliseconds.
    pub fn backlog_idle_timeout_ms(&self) -> i64 {
        self.backlog_idle_timeout_ms
    }
    /// Panes in one window.
    pub fn panes_per_window(&self) -> i64 {
        self.window_ms / self.slide_ms
    }
    /// The pane holding an event time: panes are `[id * slide, (id + 1) * slide)`.
    pub fn pane_of(&self, event_time_ms: i64) -> i64 {
        event_time_ms.div_euclid(self.slide_ms)
    }
    /// Start of a pane in milliseconds since the epoch.
    pub fn pane_start(&self, pane: i64) -> i64 {
        pane.saturating_mul(self.slide_ms)
    }
    /// End (exclusive) of a pane in milliseconds since the epoch.
    pub fn pane_end(&self, pane: i64) -> i64 {
        pane.saturating_add(1).saturating_mul(self.slide_ms)
    }
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self {
            window_ms: Self::DEFAULT_WINDOW.as_millis() as i64,
            slide_ms: Self::DEFAULT_SLIDE.as_millis() as i64,
            lateness_ms: Self::DEFAULT_ALLOWED_LATENESS.as_millis() as i64,
            max_future_skew_ms: Self::DEFAULT_MAX_FUTURE_SKEW.as_millis() as i64,
            idle_timeout_ms: Self::DEFAULT_IDLE_TIMEOUT.as_millis() as i64,
            backlog_idle_timeout_ms: Self::DEFAULT_BACKLOG_IDLE_TIMEOUT.as_millis() as i64,
        }
    }
}

/// How feature and prediction distributions are binned and referenced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftSpec {
    edge_samples: u32,
    reference_period_ms: i64,
    bins: u16,
    top_k: u16,
    epsilon: f64,
}

impl DriftSpec {
    /// Default number of values per (model, feature) from which bin edges are frozen.
    pub const DEFAULT_EDGE_SAMPLES: u32 = 2_000;
    /// Default pinned reference period: the first 30 minutes of a version's traffic.
    pub const DEFAULT_REFERENCE_PERIOD: Duration = Duration::from_secs(1_800);
    /// Default number of quantile bins between the underflow and overflow bins.
    pub const DEFAULT_BINS: u16 = 10;
    /// Default number of categorical values kept before "other".
    pub const DEFAULT_TOP_K: u16 = 10;

    /// Checks and builds a drift specification.
    pub fn new(
        edge_samples: u32,
        reference_period: Duration,
        bins: u16,
        top_k: u16,
        epsilon: f64,
    ) -> Result<Self, ConfigError> {
        let range = |key, value: f64, min: f64, max: f64| {
            if value.is_finite() && (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { key, value, min, max })
            }
        };
        range("drift.edge_samples", f64::from(edge_samples), 10.0, 1_000_000.0)?;
        range("drift.bins", f64::from(bins), 2.0, 1_000.0)?;
        range("drift.top_k", f64::from(top_k), 1.0, 1_000.0)?;
        range("drift.epsilon", epsilon, f64::MIN_POSITIVE, 0.1)?;
        let reference_period_ms = millis("drift.reference_period", reference_period, false)?;
        Ok(Self { edge_samples, reference_period_ms, bins, top_k, epsilon })
    }
    /// Values collected per (model, feature) before its bins are frozen.
    pub fn edge_samples(&self) -> u32 {
        self.edge_samples
    }
    /// Length of the pinned reference period, from a version's first pane.
    pub fn reference_period_ms(&self) -> i64 {
        self.reference_period_ms
    }
    /// Quantile bins of a numeric feature (underflow and overflow come on top).
    pub fn bins(&self) -> u16 {
        self.bins
    }
    /// Categorical values kept per feature (the rest is "other").
    pub fn top_k(&self) -> u16 {
        self.top_k
    }
    /// The additive smoothing constant of the drift scores.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }
}

impl Default for DriftSpec {
    fn default() -> Self {
        Self {
            edge_samples: Self::DEFAULT_EDGE_SAMPLES,
            reference_period_ms: Self::DEFAULT_REFERENCE_PERIOD.as_millis() as i64,
            bins: Self::DEFAULT_BINS,
            top_k: Self::DEFAULT_TOP_K,
            epsilon: 1e-4,
        }
    }
}

/// Caps that keep memory bounded whatever the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_models: u32,
    max_versions_per_model: u32,
    max_features: u32,
    idle_ttl_ms: i64,
}

impl Limits {
    /// Checks and builds the caps.
    pub fn new(
        max_models: u32,
        max_versions_per_model: u32,
        max_features: u32,
        idle_ttl: Duration,
    ) -> Result<Self, ConfigError> {
        let range = |key, value: u32, max: u32| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    key,
                    value: f64::from(value),
                    min: 1.0,
                    max: f64::from(max),
                })
            }
        };
        range("limits.max_models", max_models, 1_000_000)?;
        range("limits.max_versions_per_model", max_versions_per_model, 1_000_000)?;
        range("limits.max_features", max_features, u32::from(u16::MAX) - 2)?;
        let idle_ttl_ms = millis("limits.idle_ttl", idle_ttl, false)?;
        Ok(Self { max_models, max_versions_per_model, max_features, idle_ttl_ms })
    }
    /// Most models tracked at once.
    pub fn max_models(&self) -> u32 {
        self.max_models
    }
    /// Most versions tracked per model.
    pub fn max_versions_per_model(&self) -> u32 {
        self.max_versions_per_model
    }
    /// Most features (numeric and categorical together) tracked per model.
    pub fn max_features(&self) -> u32 {
        self.max_features
    }
    /// Event-time silence after which a version is evicted, in milliseconds.
    pub fn idle_ttl_ms(&self) -> i64 {
        self.idle_ttl_ms
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_models: 1_000,
            max_versions_per_model: 20,
            max_features: 200,
            idle_ttl_ms: 3_600_000,
        }
    }
}

/// Everything the tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CoreConfig {
    /// Windows, lateness, skew and idleness.
    pub windows: WindowSpec,
    /// Binning and references.
    pub drift: DriftSpec,
    /// Caps.
    pub limits: Limits,
    /// Latency histogram resolution.
    pub latency: crate::latency::LatencySpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let s = Duration::from_secs;
        let e = WindowSpec::new(s(0), s(10), s(5), s(60), s(30)).unwrap_err();
        assert_eq!(e, ConfigError::Zero { key: "windows.window" });
        let e = WindowSpec::new(s(300), Duration::from_micros(1500), s(5), s(60), s(30));
        assert_eq!(e.unwrap_err(), ConfigError::Resolution { key: "windows.slide" });
        let e = WindowSpec::new(s(3600), s(1), s(5), s(60), s(30)).unwrap_err();
        assert!(matches!(e, ConfigError::TooManyPanes { panes: 3600, .. }));
        let e = DriftSpec::new(2000, s(1800), 1, 10, 1e-4).unwrap_err();
        assert!(e.to_string().contains("drift.bins"), "{e}");
        let e = DriftSpec::new(2000, s(1800), 10, 10, f64::NAN).unwrap_err();
        assert!(e.to_string().contains("drift.epsilon"), "{e}");
        let e = Limits::new(0, 1, 1, s(1)).unwrap_err();
        assert!(e.to_string().contains("limits.max_models"), "{e}");
    }

    #[test]
    fn pane_math_handles_negative_times() {
        let w = WindowSpec::default();
        assert_eq!(w.pane_of(0), 0);
        assert_eq!(w.pane_of(9_999), 0);
        assert_eq!(w.pane_of(10_000), 1);
        assert_eq!(w.pane_of(-1), -1);
        assert_eq!(w.pane_end(0), 10_000);
    }
}
