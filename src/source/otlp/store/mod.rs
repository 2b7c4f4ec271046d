//! The embedded trace store: per-series rings of time buckets, fed with OTLP spans.
//!
//! A series is one (`service.name`, span kind, `service.version`). Each holds the buckets
//! of the last `retention` (`bucket_width` each, placed by span end time) with the span
//! count, the error count (status code 2) and a [`LatencySketch`](super::sketch::LatencySketch). Reads merge the
//! buckets that overlap the window, across versions when the selector names none.
//! Each series also keeps each minute's span count and Σ durations for
//! `capacity::SUSTAINED_S` (30 minutes), past the buckets' retention: `signal:
//! sloCapacity`'s sustained level reads them (24 bytes a minute, at most 33 minutes).
//!
//! Ingest is cheap: a request is first aggregated per series with no lock held, then each
//! series is locked once. The index of series is behind a `RwLock` that is only written
//! when a series is created or swept.
//!
//! Memory is bounded: the store counts the bytes its series hold (buckets, sketches,
//! keys) and refuses spans while they pass `max_bytes`; at most `max_series` series (new
//! ones are refused and counted once full); idle series expire in [`Store::sweep`]; a
//! series holds only the buckets that saw spans (at most `retention / bucket_width + 1`).
//!
//! Per-series cost, measured by `cargo bench --bench otlp_ingest` (it prints them): a
//! bucket is ~115 B plus 4 B per 1 % latency bin between its fastest and slowest span
//! (~115 bins per decade) and 8 B per pod that served its spans. Over a full 10 m
//! retention at 1 s buckets, a series with one span per second at a steady latency holds
//! ~73 KiB; one with 100 spans/s spread over 1 ms – 1 s holds ~790 KiB; a hostile one
//! with every bucket spanning 1 ns to hours (up to 2219 bins, ~18 KiB with growth slack)
//! and 256 pods (2 KiB) ~12 MiB. So `max_series` alone does not bound memory; `max_bytes`
//! does.
//!
//! The module is split by responsibility: [`ring`] (the buckets of one series),
//! [`index`] (finding and creating series), [`ingest`] (OTLP requests into buckets),
//! [`read`] (answering queries) and [`sweep`] (expiry and memory accounting).

mod index;
mod ingest;
mod read;
mod ring;
mod sweep;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::telemetry::Metrics;
use index::Index;
pub use ingest::MAX_ADJUSTED_COUNT;
pub use read::Snapshot;

/// The backend label of the embedded store, in errors and metrics.
pub const BACKEND: &str = "otlp";

/// Spans that end up to this far after the store's clock are counted now (clock skew);
/// later ones are dropped.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// The longest `service.name` the store keeps (bytes); longer ones are refused. Every
/// series holds its name, so the cap bounds the index with `max_series`. Kubernetes
/// names are at most 253 characters.
pub const MAX_SERVICE_NAME_BYTES: usize = 255;

/// The longest `service.version` the store keeps (bytes); longer ones are refused.
pub const MAX_SERVICE_VERSION_BYTES: usize = 128;

/// The default of [`StoreConfig::max_bytes`]: 512 MiB.
pub const DEFAULT_MAX_STORE_BYTES: usize = 512 << 20;

/// Span status code ERROR (`opentelemetry.proto.trace.v1.Status.StatusCode`).
const STATUS_ERROR: i32 = 2;

/// How the store keeps spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Time resolution of every series; a change in latency shows within one width.
    pub bucket_width: Duration,
    /// How far back spans are kept: the longest window a read may ask for.
    pub retention: Duration,
    /// The most series held at once; spans of new series are refused beyond it.
    pub max_series: usize,
    /// A series that received no span for this long is dropped by [`Store::sweep`].
    pub idle_expiry: Duration,
    /// Rates leave out the buckets that ended less than this long ago: exporters batch
    /// (the SDK's BatchSpanProcessor sends every 5 s), so the newest seconds are still
    /// filling. Zero leaves out only the bucket in progress.
    pub rate_settle: Duration,
    /// Bytes the series may hold (buckets, sketches, keys); spans are refused while the
    /// store holds more. A series holds at most `retention / bucket_width + 1` buckets
    /// of up to ~20 KiB each (a sketch spanning every duration, and 256 pods), so
    /// `max_series` alone bounds memory only at ~12 MiB per series.
    pub max_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            bucket_width: Duration::from_secs(1),
            retention: Duration::from_secs(600),
            max_series: 1_000,
            idle_expiry: Duration::from_secs(600),
            rate_settle: Duration::ZERO,
            max_bytes: DEFAULT_MAX_STORE_BYTES,
        }
    }
}

/// Why a [`StoreConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreConfigError {
    #[error("otlp store: bucket width must be at least 1ms, got {}", humantime::format_duration(*.0))]
    BucketWidth(Duration),
    #[error(
        "otlp store: retention {} must be at least one bucket width {} and at most 100000 buckets",
        humantime::format_duration(*.retention),
        humantime::format_duration(*.bucket_width)
    )]
    Retention {
        retention: Duration,
        bucket_width: Duration,
    },
    #[error("otlp store: max series must be at least 1")]
    MaxSeries,
    #[error("otlp store: max bytes must be above zero")]
    MaxBytes,
}

/// Where the store reads the time; tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock (span timestamps are wall-clock Unix times).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(now: SystemTime) -> Self {
        ManualClock(Mutex::new(now))
    }

    pub fn set(&self, now: SystemTime) {
        *lock(&self.0) = now;
    }

    pub fn advance(&self, by: Duration) {
        let mut t = lock(&self.0);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *lock(&self.0)
    }
}

/// Why spans were not stored. Every reason is reported back to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    MissingServiceName,
    UnknownSpanKind,
    BadTimestamps,
    TooOld,
    TooNew,
    TooLong,
    SampledTooSparsely,
    SeriesLimit,
    StoreBytesLimit,
    ServiceNameTooLong,
    ServiceVersionTooLong,
}

impl RejectReason {
    fn describe(self) -> &'static str {
        match self {
            RejectReason::MissingServiceName => "no service.name resource attribute",
            RejectReason::UnknownSpanKind => "unknown span kind",
            RejectReason::BadTimestamps => "missing start or end time, or end before start",
            RejectReason::TooOld => "ended before the store's retention",
            RejectReason::TooNew => "ended more than 1m in the future",
            RejectReason::TooLong => "lasted longer than the store's retention",
            RejectReason::SampledTooSparsely => {
                "sampled at below 1 in 16384 (tracestate ot=th: adjusted count over 16384)"
            }
            RejectReason::SeriesLimit => "store is full (max series reached)",
            RejectReason::StoreBytesLimit => "store is full (max bytes reached)",
            RejectReason::ServiceNameTooLong => "service.name longer than 255 bytes",
            RejectReason::ServiceVersionTooLong => "service.version longer than 128 bytes",
        }
    }
}

/// What one ingest did with the spans of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub accepted: u64,
    /// Accepted spans whose `tracestate` held no valid OpenTelemetry sampling threshold
    /// (`ot=th:…`), each counted as one span.
    pub without_sampling_record: u64,
    /// Spans not stored, by reason.
    pub rejected: Vec<(RejectReason, u64)>,
}

impl IngestSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// A sender-facing explanation of the rejects, e.g. `3 spans rejected: no
    /// service.name resource attribute`; `None` when all were accepted.
    pub fn error_message(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, n)| {
                let noun = if *n == 1 { "span" } else { "spans" };
                format!("{n} {noun} rejected: {}", reason.describe())
            })
            .collect();
        Some(parts.join("; "))
    }

    fn reject(&mut self, reason: RejectReason, n: u64) {
        if n == 0 {
            return;
        }
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => {
                self.rejected.push((reason, n));
                self.rejected.sort_unstable();
            }
        }
    }
}

/// The embedded trace store. Share it as `Arc<Store>` between the receivers and readers.
pub struct Store {
    bucket_ns: u64,
    /// The first bucket that started after the store did: rates are not known before it.
    first_full_index: u64,
    /// Buckets kept per series: the current one plus `retention / bucket_width`.
    slots: u64,
    /// Buckets per minute of `signal: sloCapacity` (as many as fit in 60 s, at least
    /// one, so a divisor), and the minutes a series keeps before the current one (its sustained
    /// window, `capacity::SUSTAINED_S`).
    per_minute: u64,
    sustained_minutes: u64,
    config: StoreConfig,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    index: RwLock<Index>,
    /// Bytes the series hold, as [`Store::heap_bytes`] counts them.
    bytes: AtomicUsize,
    /// When (the store's clock, ns) spans were last refused at `max_bytes`, and a new
    /// series at `max_series`; 0: never. A read whose window holds a refusal is an error
    /// ([`Store::refusals_since`]): the figures it would give undercount.
    refused_bytes_ns: AtomicU64,
    refused_series_ns: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("series", &self.series_count())
            .finish()
    }
}

impl Store {
    /// How far back spans are kept: the longest window a read may ask for.
    pub fn retention(&self) -> Duration {
        self.config.retention
    }

    /// The time resolution: a read is never staler than one bucket.
    pub fn bucket_width(&self) -> Duration {
        self.config.bucket_width
    }

    /// A store on the system clock.
    pub fn new(config: StoreConfig, metrics: Arc<Metrics>) -> Result<Store, StoreConfigError> {
        Store::with_clock(config, metrics, Arc::new(SystemClock))
    }

    /// A store reading the time from `clock`.
    pub fn with_clock(
        config: StoreConfig,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreConfigError> {
        if config.bucket_width < Duration::from_millis(1) {
            return Err(StoreConfigError::BucketWidth(config.bucket_width));
        }
        let bucket_ns = duration_ns(config.bucket_width);
        let buckets = duration_ns(config.retention).div_ceil(bucket_ns);
        if config.retention < config.bucket_width || buckets > 100_000 {
            return Err(StoreConfigError::Retention {
                retention: config.retention,
                bucket_width: config.bucket_width,
            });
        }
        if config.max_series == 0 {
            return Err(StoreConfigError::MaxSeries);
        }
        if config.max_bytes == 0 {
            return Err(StoreConfigError::MaxBytes);
        }
        // Rates count only buckets the store saw whole: from the first one after it started.
        let first_full_index = unix_ns(clock.now()).div_ceil(bucket_ns);
        let per_minute = (60_000_000_000 / bucket_ns).max(1);
        let sustained_minutes =
            (crate::signal::capacity::SUSTAINED_S * 1_000_000_000).div_ceil(per_minute * bucket_ns);
        Ok(Store {
            bucket_ns,
            first_full_index,
            slots: buckets + 1,
            per_minute,
            sustained_minutes,
            config,
            metrics,
            clock,
            index: RwLock::new(Index::default()),
            bytes: AtomicUsize::new(0),
            refused_bytes_ns: AtomicU64::new(0),
            refused_series_ns: AtomicU64::new(0),
        })
    }

    /// Bytes the series hold now (what [`StoreConfig::max_bytes`] bounds).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Moves the byte count of one series from `before` to `after`.
    fn account(&self, before: usize, after: usize) {
        if after >= before {
            self.bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            let freed = before - after;
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Series held now.
    pub fn series_count(&self) -> usize {
        read_lock(&self.index).len
    }

    /// The oldest bucket index kept when the current one is `now_index`.
    fn oldest_index(&self, now_index: u64) -> u64 {
        now_index.saturating_sub(self.slots - 1)
    }

    /// What a series keeps when the current bucket is `now_index`.
    fn keep(&self, now_index: u64) -> ring::Keep {
        ring::Keep {
            oldest: self.oldest_index(now_index),
            slots: self.slots as usize,
            per_minute: self.per_minute,
            oldest_minute: (now_index / self.per_minute).saturating_sub(self.sustained_minutes),
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_ns)
}

/// Locks ignoring poison: every update leaves the data consistent, and nothing in
/// this module panics while holding a lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub(crate) mod tests;
