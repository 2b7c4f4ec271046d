//! The embedded trace store: per-series rings of time buckets, fed with OTLP spans.
//!
//! A series is one (`service.name`, span kind, `service.version`). Each holds the buckets
//! of the last `retention` (`bucket_width` each, placed by span end time) with the span
//! count, the error count (status code 2) and a [`LatencySketch`]. Reads merge the
//! buckets that overlap the window, across versions when the selector names none.
//!
//! Ingest is cheap: a request is first aggregated per series with no lock held, then each
//! series is locked once. The index of series is behind a `RwLock` that is only written
//! when a series is created or swept.
//!
//! Memory is bounded: at most `max_series` series (new ones are refused and counted once
//! full), idle series expire in [`Store::sweep`], and a series holds only the buckets that
//! saw spans (at most `retention / bucket_width + 1`).
//!
//! Per-series cost, measured by `cargo bench --bench otlp_ingest` (it prints them): a
//! bucket is ~90 B plus 4 B per 1 % latency bin between its fastest and slowest span
//! (~115 bins per decade). Over a full 10 m retention at 1 s buckets, a series with one
//! span per second at a steady latency holds ~50 KiB (~68 KiB resident, allocator
//! overhead included); one with 100 spans/s spread over 1 ms – 1 s holds ~770 KiB. So the
//! worst case is about `max_series` × 0.8 MiB: the default cap of 1000 series bounds the
//! store near 0.8 GiB, and quiet series cost a small fraction of that.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::sketch::LatencySketch;
use crate::signal::{SpanKind, TraceMeasure};
use crate::source::{OtlpQuery, Reading, SourceError};
use crate::telemetry::Metrics;

/// The backend label of the embedded store, in errors and metrics.
pub const BACKEND: &str = "otlp";

/// Spans that end up to this far after the store's clock are counted now (clock skew);
/// later ones are dropped.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            bucket_width: Duration::from_secs(1),
            retention: Duration::from_secs(600),
            max_series: 1_000,
            idle_expiry: Duration::from_secs(600),
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
    SeriesLimit,
}

impl RejectReason {
    fn describe(self) -> &'static str {
        match self {
            RejectReason::MissingServiceName => "no service.name resource attribute",
            RejectReason::UnknownSpanKind => "unknown span kind",
            RejectReason::BadTimestamps => "missing start or end time, or end before start",
            RejectReason::TooOld => "ended before the store's retention",
            RejectReason::TooNew => "ended more than 1m in the future",
            RejectReason::SeriesLimit => "store is full (max series reached)",
        }
    }
}

/// What one ingest did with the spans of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub accepted: u64,
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

/// One time bucket of a series.
#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Absolute index: span end time / bucket width.
    index: u64,
    errors: u64,
    latency: LatencySketch,
}

impl Bucket {
    fn merge(&mut self, other: &Bucket) {
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }
}

/// The buckets of one series, oldest first, only those that saw spans.
#[derive(Debug, Default)]
struct Series {
    buckets: VecDeque<Bucket>,
    /// When (store clock, Unix ns) the series last received a span.
    last_ingest_ns: u64,
}

impl Series {
    /// Adds `incoming` into the bucket of the same index and drops buckets before `oldest`.
    /// A series never holds more than `slots` buckets.
    fn absorb(&mut self, incoming: &[Bucket], oldest: u64, now_ns: u64, slots: usize) {
        self.last_ingest_ns = self.last_ingest_ns.max(now_ns);
        self.trim(oldest);
        for b in incoming {
            // Spans almost always land in the newest bucket: look from the back.
            match self.buckets.iter().rposition(|x| x.index <= b.index) {
                Some(i) if self.buckets[i].index == b.index => self.buckets[i].merge(b),
                Some(i) => {
                    self.make_room(slots);
                    self.buckets.insert(i + 1, b.clone());
                }
                None => {
                    self.make_room(slots);
                    self.buckets.push_front(b.clone());
                }
            }
        }
    }

    /// Grows the ring by doubling, but never past `slots`, so a full series does not
    /// carry the slack of a power-of-two capacity.
    fn make_room(&mut self, slots: usize) {
        let (len, cap) = (self.buckets.len(), self.buckets.capacity());
        if len == cap {
            let target = (cap * 2).clamp(4, slots.max(len + 1));
            self.buckets.reserve_exact(target - len);
        }
    }

    fn trim(&mut self, oldest: u64) {
        while self.buckets.front().is_some_and(|b| b.index < oldest) {
            self.buckets.pop_front();
        }
    }

    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| b.latency.heap_bytes())
                .sum::<usize>()
    }
}

/// One series of a service: its kind, version and buckets.
#[derive(Debug)]
struct Entry {
    kind: SpanKind,
    version: Option<String>,
    series: Arc<Mutex<Series>>,
}

#[derive(Debug, Default)]
struct Index {
    by_service: HashMap<String, Vec<Entry>>,
    len: usize,
}

impl Index {
    fn find(
        &self,
        service: &str,
        kind: SpanKind,
        version: Option<&str>,
    ) -> Option<Arc<Mutex<Series>>> {
        self.by_service
            .get(service)?
            .iter()
            .find(|e| e.kind == kind && e.version.as_deref() == version)
            .map(|e| Arc::clone(&e.series))
    }
}

/// The spans of one request for one series, aggregated before the series is locked.
struct Pending {
    service: String,
    version: Option<String>,
    kind: SpanKind,
    buckets: Vec<Bucket>,
}

impl Pending {
    fn add(&mut self, index: u64, duration_ns: u64, error: bool) {
        let bucket = match self.buckets.iter().rposition(|b| b.index == index) {
            Some(i) => &mut self.buckets[i],
            None => {
                self.buckets.push(Bucket {
                    index,
                    ..Bucket::default()
                });
                let last = self.buckets.len() - 1;
                &mut self.buckets[last]
            }
        };
        bucket.errors += u64::from(error);
        bucket.latency.add(duration_ns);
    }

    fn spans(&self) -> u64 {
        self.buckets.iter().map(|b| b.latency.count()).sum()
    }
}

/// The embedded trace store. Share it as `Arc<Store>` between the receivers and readers.
pub struct Store {
    bucket_ns: u64,
    /// Buckets kept per series: the current one plus `retention / bucket_width`.
    slots: u64,
    config: StoreConfig,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    index: RwLock<Index>,
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
    /// A store on the system clock.
    /// The time resolution: a read is never staler than one bucket.
    pub fn bucket_width(&self) -> Duration {
        self.config.bucket_width
    }

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
        Ok(Store {
            bucket_ns,
            slots: buckets + 1,
            config,
            metrics,
            clock,
            index: RwLock::new(Index::default()),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Series held now.
    pub fn series_count(&self) -> usize {
        read_lock(&self.index).len
    }

    /// Stores the spans of one decoded request and says what was refused and why.
    /// Refused spans never change stored data. Traced as `otlp.ingest` (self-traces).
    #[tracing::instrument(level = "debug", name = "otlp.ingest", skip_all, fields(
        otlp.spans.accepted = tracing::field::Empty,
        otlp.spans.rejected = tracing::field::Empty,
    ))]
    pub fn ingest(&self, request: ExportTraceServiceRequest) -> IngestSummary {
        let now_ns = unix_ns(self.clock.now());
        let now_index = now_ns / self.bucket_ns;
        let oldest = self.oldest_index(now_index);
        let mut summary = IngestSummary::default();

        // 1. Aggregate per series, no lock held.
        let mut pending: Vec<Pending> = Vec::new();
        let mut where_is: HashMap<(String, Option<String>, SpanKind), usize> = HashMap::new();
        for rs in request.resource_spans {
            let spans: u64 = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
            let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let Some(service) = string_attr(&attrs, "service.name").filter(|s| !s.is_empty())
            else {
                summary.reject(RejectReason::MissingServiceName, spans);
                continue;
            };
            let version = string_attr(&attrs, "service.version");
            // This resource's series, by span kind, as indexes into `pending`.
            let mut slots: [Option<usize>; 5] = [None; 5];
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                let kind = match span.kind {
                    // Unspecified: the OTLP spec lets receivers assume internal.
                    0 => SpanKind::Internal,
                    k => match SpanKind::from_otlp(k) {
                        Some(kind) => kind,
                        None => {
                            summary.reject(RejectReason::UnknownSpanKind, 1);
                            continue;
                        }
                    },
                };
                let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
                if start == 0 || end < start {
                    summary.reject(RejectReason::BadTimestamps, 1);
                    continue;
                }
                let placed = if end <= now_ns {
                    end
                } else if end - now_ns <= duration_ns(MAX_FUTURE_SKEW) {
                    now_ns
                } else {
                    summary.reject(RejectReason::TooNew, 1);
                    continue;
                };
                let index = placed / self.bucket_ns;
                if index < oldest {
                    summary.reject(RejectReason::TooOld, 1);
                    continue;
                }
                let error = span.status.is_some_and(|s| s.code == STATUS_ERROR);
                let slot = &mut slots[kind_slot(kind)];
                let at = match *slot {
                    Some(at) => at,
                    None => {
                        let key = (service.clone(), version.clone(), kind);
                        let at = *where_is.entry(key).or_insert_with(|| {
                            pending.push(Pending {
                                service: service.clone(),
                                version: version.clone(),
                                kind,
                                buckets: Vec::new(),
                            });
                            pending.len() - 1
                        });
                        *slot = Some(at);
                        at
                    }
                };
                pending[at].add(index, end - start, error);
            }
        }

        // 2. Lock each series once.
        for p in pending {
            let spans = p.spans();
            match self.series_for(&p.service, p.kind, p.version.as_deref()) {
                Some(series) => {
                    lock(&series).absorb(&p.buckets, oldest, now_ns, self.slots as usize);
                    summary.accepted += spans;
                }
                None => summary.reject(RejectReason::SeriesLimit, spans),
            }
        }
        tracing::Span::current()
            .record("otlp.spans.accepted", summary.accepted)
            .record("otlp.spans.rejected", summary.rejected_total());
        summary
    }

    /// [`Store::read`], recorded in the backend metrics as backend `otlp` (what the
    /// engine's sources call).
    pub fn fetch(&self, q: &OtlpQuery) -> Result<Reading, SourceError> {
        let started = std::time::Instant::now();
        let result = self.read(q);
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .record_backend(BACKEND, outcome, started.elapsed());
        result
    }

    /// Reads one signal over `q.window` ending now.
    pub fn read(&self, q: &OtlpQuery) -> Result<Reading, SourceError> {
        self.read_at(q, self.clock.now())
    }

    /// Reads one signal over `q.window` ending at `now`.
    pub fn read_at(&self, q: &OtlpQuery, now: SystemTime) -> Result<Reading, SourceError> {
        let bad = |detail: String| SourceError::BadQuery {
            backend: BACKEND.to_string(),
            detail,
        };
        if !q.selector.labels.is_empty() {
            return Err(bad(
                "label filters are not supported by the embedded store".to_string()
            ));
        }
        if q.window.is_zero() || q.window > self.config.retention {
            return Err(bad(format!(
                "window {} must be above zero and at most the store's retention {}",
                humantime::format_duration(q.window),
                humantime::format_duration(self.config.retention)
            )));
        }
        let now_ns = unix_ns(now);
        let now_index = now_ns / self.bucket_ns;
        let first = now_ns.saturating_sub(duration_ns(q.window)) / self.bucket_ns;
        let want_latency = matches!(q.measure, TraceMeasure::Latency(_));

        let matching: Vec<Arc<Mutex<Series>>> = {
            let index = read_lock(&self.index);
            index
                .by_service
                .get(&q.selector.service)
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|e| e.kind == q.selector.span_kind)
                        .filter(|e| match &q.selector.version {
                            Some(v) => e.version.as_deref() == Some(v.as_str()),
                            None => true,
                        })
                        .map(|e| Arc::clone(&e.series))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut total = Bucket::default();
        let mut spans = 0u64;
        for series in matching {
            let series = lock(&series);
            for b in series
                .buckets
                .iter()
                .filter(|b| (first..=now_index).contains(&b.index))
            {
                spans += b.latency.count();
                if want_latency {
                    total.merge(b);
                } else {
                    total.errors += b.errors;
                }
            }
        }
        if spans == 0 {
            return Ok(Reading::Value(None));
        }
        let value = match q.measure {
            TraceMeasure::Latency(quantile) => {
                total.latency.quantile_ns(quantile.get()).map(|ns| ns / 1e9)
            }
            TraceMeasure::ErrorRatio => Some(total.errors as f64 / spans as f64),
            TraceMeasure::Rate => {
                // The buckets cover from the start of the first one to now.
                let covered_ns = now_ns - first * self.bucket_ns;
                Some(spans as f64 / (covered_ns as f64 / 1e9))
            }
        };
        Ok(Reading::Value(value))
    }

    /// Drops buckets past retention and series idle for `idle_expiry`. Call it
    /// periodically; returns how many series were dropped.
    pub fn sweep(&self) -> usize {
        let now_ns = unix_ns(self.clock.now());
        let oldest = self.oldest_index(now_ns / self.bucket_ns);
        let idle_ns = duration_ns(self.config.idle_expiry);
        let mut index = write_lock(&self.index);
        let mut dropped = 0;
        index.by_service.retain(|_, entries| {
            entries.retain(|e| {
                let mut s = lock(&e.series);
                s.trim(oldest);
                let keep = now_ns.saturating_sub(s.last_ingest_ns) < idle_ns;
                if !keep {
                    dropped += 1;
                }
                keep
            });
            !entries.is_empty()
        });
        index.len -= dropped;
        self.metrics.otlp_store_series.set(index.len as i64);
        self.metrics
            .otlp_store_series_evicted
            .inc_by(dropped as u64);
        dropped
    }

    /// Approximate bytes held by the series (keys, buckets, sketches), for debugging
    /// and the memory figures in the module docs.
    pub fn heap_bytes(&self) -> usize {
        let index = read_lock(&self.index);
        index
            .by_service
            .iter()
            .map(|(service, entries)| {
                service.capacity()
                    + entries.capacity() * std::mem::size_of::<Entry>()
                    + entries
                        .iter()
                        .map(|e| {
                            std::mem::size_of::<Mutex<Series>>()
                                + e.version.as_ref().map_or(0, String::capacity)
                                + lock(&e.series).heap_bytes()
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    fn oldest_index(&self, now_index: u64) -> u64 {
        now_index.saturating_sub(self.slots - 1)
    }

    /// The series, created when new and there is room.
    fn series_for(
        &self,
        service: &str,
        kind: SpanKind,
        version: Option<&str>,
    ) -> Option<Arc<Mutex<Series>>> {
        if let Some(s) = read_lock(&self.index).find(service, kind, version) {
            return Some(s);
        }
        let mut index = write_lock(&self.index);
        if let Some(s) = index.find(service, kind, version) {
            return Some(s);
        }
        if index.len >= self.config.max_series {
            self.metrics.otlp_store_series_evicted.inc();
            return None;
        }
        let series = Arc::new(Mutex::new(Series::default()));
        index
            .by_service
            .entry(service.to_string())
            .or_default()
            .push(Entry {
                kind,
                version: version.map(str::to_string),
                series: Arc::clone(&series),
            });
        index.len += 1;
        self.metrics.otlp_store_series.set(index.len as i64);
        Some(series)
    }
}

fn kind_slot(kind: SpanKind) -> usize {
    match kind {
        SpanKind::Internal => 0,
        SpanKind::Server => 1,
        SpanKind::Client => 2,
        SpanKind::Producer => 3,
        SpanKind::Consumer => 4,
    }
}

/// The string value of a resource attribute.
fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
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
mod tests {
    use super::*;
    use crate::signal::{Quantile, TraceSelector};
    use opentelemetry_proto::tonic::common::v1::AnyValue as AnyValueMsg;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

    /// 2024-08-21T10:00:00Z, on a bucket boundary.
    const T0: u64 = 1_724_234_400_000_000_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    /// A span as the tests describe it: service, version, OTLP kind, end (ns after T0),
    /// duration (ns), error.
    #[derive(Clone, Copy)]
    struct Sp {
        service: &'static str,
        version: Option<&'static str>,
        kind: i32,
        end: u64,
        duration: u64,
        error: bool,
    }

    fn sp(service: &'static str, end: u64, duration: u64) -> Sp {
        Sp {
            service,
            version: None,
            kind: 2,
            end,
            duration,
            error: false,
        }
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValueMsg {
                value: Some(AnyValue::StringValue(value.to_string())),
            }),
            ..KeyValue::default()
        }
    }

    /// One request, one resource per span (the store must aggregate across them).
    fn request(spans: &[Sp]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: spans
                .iter()
                .map(|s| {
                    let mut attrs = Vec::new();
                    if !s.service.is_empty() {
                        attrs.push(kv("service.name", s.service));
                    }
                    if let Some(v) = s.version {
                        attrs.push(kv("service.version", v));
                    }
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: attrs,
                            ..Resource::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            spans: vec![Span {
                                name: "GET /orders".to_string(),
                                kind: s.kind,
                                start_time_unix_nano: (T0 + s.end).saturating_sub(s.duration),
                                end_time_unix_nano: T0 + s.end,
                                status: Some(Status {
                                    code: if s.error {
                                        status::StatusCode::Error as i32
                                    } else {
                                        status::StatusCode::Ok as i32
                                    },
                                    ..Status::default()
                                }),
                                ..Span::default()
                            }],
                            ..ScopeSpans::default()
                        }],
                        ..ResourceSpans::default()
                    }
                })
                .collect(),
        }
    }

    fn at(ns_after_t0: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(T0 + ns_after_t0)
    }

    fn store(config: StoreConfig) -> (Store, Arc<ManualClock>, Arc<Metrics>) {
        let clock = Arc::new(ManualClock::new(at(0)));
        let metrics = Arc::new(Metrics::standalone().1);
        let store =
            Store::with_clock(config, Arc::clone(&metrics), clock.clone()).expect("valid config");
        (store, clock, metrics)
    }

    fn query(
        service: &str,
        version: Option<&str>,
        measure: TraceMeasure,
        window_s: u64,
    ) -> OtlpQuery {
        OtlpQuery {
            selector: TraceSelector {
                service: service.to_string(),
                span_kind: SpanKind::Server,
                version: version.map(str::to_string),
                labels: Vec::new(),
            },
            measure,
            window: Duration::from_secs(window_s),
        }
    }

    fn p(q: f64) -> TraceMeasure {
        TraceMeasure::Latency(Quantile::new(q).expect("valid quantile"))
    }

    /// Ingests `spans` at clock time 100 s, reads `q` at `read_at` (ns after T0), and
    /// compares with `expect` (`Some(v)`: within 1 % for latency, 1e-9 otherwise).
    fn check(spans: &[Sp], read_at: u64, q: OtlpQuery, expect: Result<Option<f64>, &str>) {
        let (store, clock, _) = store(StoreConfig::default());
        clock.set(at(100 * S));
        store.ingest(request(spans));
        let got = store.read_at(&q, at(read_at));
        match (got, expect) {
            (Ok(Reading::Value(Some(g))), Ok(Some(e))) => {
                let tol = match q.measure {
                    TraceMeasure::Latency(_) => 0.01 * e,
                    _ => 1e-9,
                };
                assert!((g - e).abs() <= tol, "{q:?}: got {g}, want {e}");
            }
            (Ok(Reading::Value(None)), Ok(None)) => {}
            (Err(g), Err(e)) => assert!(g.to_string().contains(e), "{q:?}: got {g}, want {e}"),
            (g, e) => panic!("{q:?}: got {g:?}, want {e:?}"),
        }
    }

    #[test]
    fn reads() {
        // 100 server spans of 1..=100 ms ending in second 99, every 10th an error.
        let hundred: Vec<Sp> = (1..=100)
            .map(|i| Sp {
                error: i % 10 == 0,
                ..sp("orders", 99 * S + i * MS, i * MS)
            })
            .collect();
        let now = 100 * S;
        check(
            &hundred,
            now,
            query("orders", None, p(0.5), 60),
            Ok(Some(0.050)),
        );
        check(
            &hundred,
            now,
            query("orders", None, p(0.95), 60),
            Ok(Some(0.095)),
        );
        check(
            &hundred,
            now,
            query("orders", None, p(0.99), 60),
            Ok(Some(0.099)),
        );
        check(
            &hundred,
            now,
            query("orders", None, TraceMeasure::ErrorRatio, 60),
            Ok(Some(0.1)),
        );
        // The window (40 s .. 100 s) starts on a boundary: 100 spans / 60 s.
        check(
            &hundred,
            now,
            query("orders", None, TraceMeasure::Rate, 60),
            Ok(Some(100.0 / 60.0)),
        );
        // Mid-bucket: the first bucket starts at 40 s, now is 100.5 s: 60.5 s covered.
        check(
            &hundred,
            now + S / 2,
            query("orders", None, TraceMeasure::Rate, 60),
            Ok(Some(100.0 / 60.5)),
        );
        // Another service, another kind: nothing.
        check(
            &hundred,
            now,
            query("payments", None, p(0.95), 60),
            Ok(None),
        );
        let mut client = query("orders", None, p(0.95), 60);
        client.selector.span_kind = SpanKind::Client;
        check(&hundred, now, client, Ok(None));
        // Spans that ended before the window are left out.
        check(
            &hundred,
            now + 200 * S,
            query("orders", None, p(0.95), 60),
            Ok(None),
        );
        // A window longer than retention, or zero, is refused.
        check(
            &hundred,
            now,
            query("orders", None, p(0.95), 601),
            Err("at most the store's retention 10m"),
        );
        check(
            &hundred,
            now,
            query("orders", None, p(0.95), 0),
            Err("must be above zero"),
        );
        let mut labelled = query("orders", None, p(0.95), 60);
        labelled.selector.labels = vec![("http.route".into(), "/orders".into())];
        check(
            &hundred,
            now,
            labelled,
            Err("otlp: rejected the query: label filters are not supported"),
        );
    }

    #[test]
    fn versions_filter_or_merge() {
        let mut spans = Vec::new();
        for i in 0..10 {
            spans.push(Sp {
                version: Some("v1"),
                ..sp("orders", 90 * S + i * MS, 10 * MS)
            });
            spans.push(Sp {
                version: Some("v2"),
                error: true,
                ..sp("orders", 90 * S + i * MS, 500 * MS)
            });
        }
        let now = 100 * S;
        check(
            &spans,
            now,
            query("orders", Some("v1"), p(0.95), 60),
            Ok(Some(0.010)),
        );
        check(
            &spans,
            now,
            query("orders", Some("v2"), p(0.95), 60),
            Ok(Some(0.500)),
        );
        check(
            &spans,
            now,
            query("orders", None, p(0.95), 60),
            Ok(Some(0.500)),
        );
        check(
            &spans,
            now,
            query("orders", None, p(0.25), 60),
            Ok(Some(0.010)),
        );
        check(
            &spans,
            now,
            query("orders", None, TraceMeasure::ErrorRatio, 60),
            Ok(Some(0.5)),
        );
        check(
            &spans,
            now,
            query("orders", Some("v1"), TraceMeasure::ErrorRatio, 60),
            Ok(Some(0.0)),
        );
        check(
            &spans,
            now,
            query("orders", Some("v3"), TraceMeasure::Rate, 60),
            Ok(None),
        );
    }

    /// Ingests `spans` at clock time 100 s and compares the summary.
    fn check_ingest(spans: &[Sp], accepted: u64, rejected: &[(RejectReason, u64)]) {
        let (store, clock, metrics) = store(StoreConfig::default());
        clock.set(at(100 * S));
        let summary = store.ingest(request(spans));
        assert_eq!(summary.accepted, accepted);
        assert_eq!(summary.rejected, rejected);
        assert_eq!(summary.error_message().is_some(), !rejected.is_empty());
        let series = if accepted > 0 { 1 } else { 0 };
        assert_eq!(metrics.otlp_store_series.get(), series);
    }

    #[test]
    fn ingest_refuses_what_it_cannot_place() {
        use RejectReason::*;
        let ok = sp("orders", 99 * S, 5 * MS);
        check_ingest(&[ok], 1, &[]);
        check_ingest(&[Sp { service: "", ..ok }], 0, &[(MissingServiceName, 1)]);
        check_ingest(&[ok, Sp { kind: 9, ..ok }], 1, &[(UnknownSpanKind, 1)]);
        // Unspecified kind counts as internal (a series of its own).
        check_ingest(&[Sp { kind: 0, ..ok }], 1, &[]);
        // Zero start (duration equal to the whole end time) and end before start.
        check_ingest(
            &[Sp {
                duration: T0 + 99 * S,
                ..ok
            }],
            0,
            &[(BadTimestamps, 1)],
        );
        // Spans from any earlier time within retention are kept.
        check_ingest(&[ok, Sp { end: 0, ..ok }], 2, &[]);
        // Up to a minute in the future is clamped to now; beyond, refused.
        check_ingest(&[Sp { end: 150 * S, ..ok }], 1, &[]);
        check_ingest(&[Sp { end: 161 * S, ..ok }], 0, &[(TooNew, 1)]);
        check_ingest(
            &[ok, Sp { end: 161 * S, ..ok }, Sp { service: "", ..ok }],
            1,
            &[(MissingServiceName, 1), (TooNew, 1)],
        );
    }

    #[test]
    fn too_old_spans_are_refused() {
        let (store, clock, _) = store(StoreConfig::default());
        clock.set(at(1000 * S));
        let summary = store.ingest(request(&[
            sp("orders", 300 * S, MS),
            sp("orders", 999 * S, MS),
        ]));
        assert_eq!(summary.accepted, 1);
        assert_eq!(summary.rejected, vec![(RejectReason::TooOld, 1)]);
    }

    #[test]
    fn future_spans_are_counted_now() {
        let (store, clock, _) = store(StoreConfig::default());
        clock.set(at(100 * S));
        store.ingest(request(&[sp("orders", 130 * S, 7 * MS)]));
        let got = store.read_at(&query("orders", None, p(0.5), 1), at(100 * S));
        let Ok(Reading::Value(Some(v))) = got else {
            panic!("{got:?}");
        };
        assert!((v - 0.007).abs() < 0.007 * 0.01, "{v}");
    }

    #[test]
    fn late_spans_land_in_their_bucket_and_rejects_change_nothing() {
        let (store, clock, _) = store(StoreConfig::default());
        clock.set(at(100 * S));
        store.ingest(request(&[sp("orders", 99 * S, 10 * MS)]));
        // Three late error spans for second 50, after the newer one.
        let late = Sp {
            error: true,
            ..sp("orders", 50 * S, 900 * MS)
        };
        store.ingest(request(&[late, late, late]));
        let ratio = |window_s| {
            store.read_at(
                &query("orders", None, TraceMeasure::ErrorRatio, window_s),
                at(100 * S),
            )
        };
        let p50 = || store.read_at(&query("orders", None, p(0.5), 600), at(100 * S));
        assert_eq!(ratio(600), Ok(Reading::Value(Some(0.75))));
        assert_eq!(ratio(10), Ok(Reading::Value(Some(0.0))));
        let before = p50();
        assert!(
            matches!(before, Ok(Reading::Value(Some(v))) if (v - 0.900).abs() < 0.009),
            "{before:?}"
        );
        // A request refused entirely leaves everything as it was.
        store.ingest(request(&[Sp {
            service: "",
            ..sp("orders", 99 * S, 5 * S)
        }]));
        assert_eq!(p50(), before);
        assert_eq!(ratio(600), Ok(Reading::Value(Some(0.75))));
    }

    #[test]
    fn series_are_capped_and_idle_ones_expire() {
        let config = StoreConfig {
            max_series: 2,
            idle_expiry: Duration::from_secs(60),
            ..StoreConfig::default()
        };
        let (store, clock, metrics) = store(config);
        clock.set(at(100 * S));
        let summary = store.ingest(request(&[
            sp("a", 99 * S, MS),
            sp("b", 99 * S, MS),
            sp("c", 99 * S, MS),
            sp("c", 99 * S, MS),
            sp("a", 99 * S, MS),
        ]));
        assert_eq!(summary.accepted, 3);
        assert_eq!(summary.rejected, vec![(RejectReason::SeriesLimit, 2)]);
        assert_eq!(store.series_count(), 2);
        assert_eq!(metrics.otlp_store_series.get(), 2);
        assert_eq!(metrics.otlp_store_series_evicted.get(), 1);

        clock.set(at(130 * S));
        store.ingest(request(&[sp("b", 129 * S, MS)]));
        assert_eq!(store.sweep(), 0);
        clock.set(at(161 * S));
        assert_eq!(store.sweep(), 1, "a was idle for 61 s");
        assert_eq!(store.series_count(), 1);
        assert_eq!(metrics.otlp_store_series.get(), 1);
        assert_eq!(metrics.otlp_store_series_evicted.get(), 2);
        // Room again: c is accepted now.
        let summary = store.ingest(request(&[sp("c", 160 * S, MS)]));
        assert_eq!(summary.accepted, 1);
        assert_eq!(store.series_count(), 2);
    }

    #[test]
    fn configs() {
        let check = |config: StoreConfig, expect: Result<(), &str>| {
            let metrics = Arc::new(Metrics::standalone().1);
            let got = Store::new(config, metrics)
                .map(|_| ())
                .map_err(|e| e.to_string());
            match (got, expect) {
                (Ok(()), Ok(())) => {}
                (Err(g), Err(e)) => assert_eq!(g, e),
                (g, e) => panic!("got {g:?}, want {e:?}"),
            }
        };
        let d = StoreConfig::default;
        check(d(), Ok(()));
        check(
            StoreConfig {
                bucket_width: Duration::ZERO,
                ..d()
            },
            Err("otlp store: bucket width must be at least 1ms, got 0s"),
        );
        check(
            StoreConfig { retention: Duration::from_millis(500), ..d() },
            Err("otlp store: retention 500ms must be at least one bucket width 1s and at most 100000 buckets"),
        );
        check(
            StoreConfig { bucket_width: Duration::from_millis(1), retention: Duration::from_secs(3600), ..d() },
            Err("otlp store: retention 1h must be at least one bucket width 1ms and at most 100000 buckets"),
        );
        check(
            StoreConfig {
                max_series: 0,
                ..d()
            },
            Err("otlp store: max series must be at least 1"),
        );
    }
}
