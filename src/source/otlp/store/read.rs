//! Reads: the buckets of the matching series over a window, merged into one value.
//!
//! Every figure of a window comes from one [`Snapshot`]: one pass over the matching
//! series' buckets, each series locked once, so a count, an error ratio, a latency and a
//! rate read together describe the same spans at the same instant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::super::sketch::LatencySketch;
use super::ring::{Bucket, Series};
use super::{duration_ns, lock, read_lock, unix_ns, Store, BACKEND};
use crate::signal::capacity;
use crate::signal::CapacityTarget;
use crate::signal::{Quantile, TraceMeasure, TraceSelector};
use crate::source::{OtlpQuery, Reading, SourceError};

/// Whether a pass merges the buckets' latency sketches (only latency reads need them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latencies {
    Merged,
    Skipped,
}

/// Every figure of one selector over one window, from one pass over the store.
///
/// Which buckets count: `count`, the error ratio and the latency cover every bucket that
/// overlaps the window, the one still filling included (so at bucket resolution: up to
/// one bucket width more than the window, never less). The rate covers only whole buckets
/// that ended at least `rate_settle` ago and started after the store did, divided by the
/// time they cover.
#[derive(Debug, Clone)]
///
/// Counts, error ratios, rates and concurrency weigh each span by its adjusted count
/// (1 / the sampling probability its `tracestate` records, 1 without a record); the
/// latency holds each stored span once (see `ingest.rs`).
pub struct Snapshot {
    /// Stored spans (each once): whether the window holds any data.
    stored: u64,
    /// Σ adjusted count.
    count: f64,
    /// Σ adjusted count of the error spans.
    errors: f64,
    latency: LatencySketch,
    /// Spans per second, or why it is not known yet.
    rate: Result<f64, SourceError>,
    /// Requests in flight (Σ durations ÷ time) over the same buckets as the rate.
    concurrency: Result<f64, SourceError>,
}

impl Snapshot {
    /// Spans in the buckets that overlap the window: the sum of their adjusted counts,
    /// rounded (the stored spans themselves when none was sampled).
    pub fn count(&self) -> u64 {
        self.count.round() as u64
    }

    /// The spans stored in the buckets that overlap the window, each once however many
    /// requests its sampling makes it stand for: the sample the figures come from.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Error spans among [`Snapshot::count`], likewise adjusted and rounded.
    pub fn errors(&self) -> u64 {
        self.errors.round() as u64
    }

    /// One measure of the snapshot: `None` (no data) when the window holds no span. A rate
    /// (or concurrency, over the same buckets) not known yet is an error even without
    /// spans: a fresh store's warm-up comes before "no data" (no span yet is not a rate
    /// of 0).
    pub fn value(&self, measure: TraceMeasure) -> Result<Option<f64>, SourceError> {
        let settled = match measure {
            TraceMeasure::Rate => Some(&self.rate),
            TraceMeasure::Concurrency => Some(&self.concurrency),
            _ => None,
        };
        if let Some(figure) = settled {
            let figure = figure.clone()?;
            return Ok((self.stored > 0).then_some(figure));
        }
        if self.stored == 0 {
            return Ok(None);
        }
        Ok(match measure {
            TraceMeasure::Latency(q) => self.latency(q),
            TraceMeasure::ErrorRatio => Some(self.errors / self.count),
            // Read above, before the no-data rule.
            TraceMeasure::Rate | TraceMeasure::Concurrency => None,
            TraceMeasure::Capacity(_) => {
                return Err(SourceError::BadQuery {
                    backend: BACKEND.to_string(),
                    detail: "sloCapacity is read with Store::capacity, not from a snapshot"
                        .to_string(),
                })
            }
        })
    }

    /// Spans per second over the settled buckets (0 without spans), or `None` while the
    /// store has no settled bucket of the window yet (its first seconds).
    pub fn rate(&self) -> Option<f64> {
        self.rate.as_ref().ok().copied()
    }

    /// Seconds at quantile `q`; `None` with no spans.
    fn latency(&self, q: Quantile) -> Option<f64> {
        self.latency.quantile_ns(q.get()).map(|ns| ns / 1e9)
    }
}

impl Store {
    /// Reads one signal over `q.window` ending now.
    pub fn read(&self, q: &OtlpQuery) -> Result<Reading, SourceError> {
        self.read_at(q, self.clock.now())
    }

    /// Reads one signal over `q.window` ending at `now`.
    pub fn read_at(&self, q: &OtlpQuery, now: SystemTime) -> Result<Reading, SourceError> {
        let latencies = match q.measure {
            TraceMeasure::Latency(_) => Latencies::Merged,
            TraceMeasure::Capacity(target) => {
                return self
                    .capacity_at(&q.selector, target, now)
                    .map(Reading::Value)
            }
            _ => Latencies::Skipped,
        };
        let snapshot = self.pass(&q.selector, q.window, now, latencies)?;
        snapshot.value(q.measure).map(Reading::Value)
    }

    /// Every figure of `selector` over `window` ending now, from one pass.
    pub fn snapshot(
        &self,
        selector: &TraceSelector,
        window: Duration,
    ) -> Result<Snapshot, SourceError> {
        self.snapshot_at(selector, window, self.clock.now())
    }

    /// Every figure of `selector` over `window` ending at `now`, from one pass.
    pub fn snapshot_at(
        &self,
        selector: &TraceSelector,
        window: Duration,
        now: SystemTime,
    ) -> Result<Snapshot, SourceError> {
        self.pass(selector, window, now, Latencies::Merged)
    }

    /// The one pass: finds the matching series, locks each once, and sums its buckets.
    fn pass(
        &self,
        selector: &TraceSelector,
        window: Duration,
        now: SystemTime,
        latencies: Latencies,
    ) -> Result<Snapshot, SourceError> {
        let bad = |detail: String| SourceError::BadQuery {
            backend: BACKEND.to_string(),
            detail,
        };
        let matching = self.matching(selector)?;
        if window.is_zero() || window > self.config.retention {
            return Err(bad(format!(
                "window {} must be above zero and at most the store's retention {}",
                humantime::format_duration(window),
                humantime::format_duration(self.config.retention)
            )));
        }
        let now_ns = unix_ns(now);
        let now_index = now_ns / self.bucket_ns;
        let first = now_ns.saturating_sub(duration_ns(window)) / self.bucket_ns;
        self.refusals_since(first * self.bucket_ns, now_ns, !matching.is_empty())?;
        // Rates count whole, settled buckets only: none from before the store started
        // (spans of that time went elsewhere or nowhere), none still filling (exporters
        // batch for seconds). `settled` is the exclusive end.
        let settled = now_ns.saturating_sub(duration_ns(self.config.rate_settle)) / self.bucket_ns;
        let rate_from = first.max(self.first_full_index);

        let mut latency = LatencySketch::default();
        let mut stored = 0u64;
        let mut count = 0f64;
        let mut errors = 0f64;
        let mut settled_spans = 0f64;
        let mut settled_busy_ns = 0f64;
        for series in matching {
            let series = lock(&series);
            for b in series
                .buckets
                .iter()
                .filter(|b| (first..=now_index).contains(&b.index))
            {
                stored += b.latency.count();
                count += b.spans;
                errors += b.errors;
                if (rate_from..settled).contains(&b.index) {
                    settled_spans += b.spans;
                    settled_busy_ns += b.busy_ns;
                }
                if latencies == Latencies::Merged {
                    latency.merge(&b.latency);
                }
            }
        }
        let covered = self.covered(now_ns, settled, rate_from);
        let rate = covered.clone().map(|covered_s| settled_spans / covered_s);
        let concurrency = covered.map(|covered_s| settled_busy_ns / 1e9 / covered_s);
        Ok(Snapshot {
            stored,
            count,
            errors,
            latency,
            rate,
            concurrency,
        })
    }

    /// An error when the store refused spans a read from `from_ns` may have needed: any
    /// series' at `max_bytes`, or, when the read matched no series, a new series' at
    /// `max_series` (a refused version or span kind of a service whose other series are
    /// held is not told apart). Without it a flood of spans or of service names would read
    /// as fewer requests, or none, and scale the workload in.
    fn refusals_since(&self, from_ns: u64, now_ns: u64, matched: bool) -> Result<(), SourceError> {
        let refused =
            |at: &AtomicU64| Some(at.load(Ordering::Relaxed)).filter(|&t| t > 0 && t >= from_ns);
        let ago = |t: u64| {
            humantime::format_duration(Duration::from_secs(
                now_ns.saturating_sub(t) / 1_000_000_000,
            ))
        };
        let detail = if let Some(t) = refused(&self.refused_bytes_ns) {
            format!(
                "the store refused spans {} ago, inside this read's window, at its byte limit \
                 (--otlp-max-store-bytes): its figures would undercount",
                ago(t)
            )
        } else if let Some(t) = refused(&self.refused_series_ns).filter(|_| !matched) {
            format!(
                "no series for this selector, and the store refused new series {} ago, \
                 inside this read's window, at its limit (--otlp-max-series): its spans may \
                 be among them",
                ago(t)
            )
        } else {
            return Ok(());
        };
        Err(SourceError::Unavailable {
            backend: BACKEND.to_string(),
            detail,
        })
    }

    /// The seconds covered by the whole, settled buckets `[rate_from, settled)`, or why
    /// no rate is known yet.
    fn covered(&self, now_ns: u64, settled: u64, rate_from: u64) -> Result<f64, SourceError> {
        if settled <= rate_from {
            Err(SourceError::Unavailable {
                backend: BACKEND.to_string(),
                detail: format!(
                    "rate not known yet: the store has seen no whole bucket of the \
                     window that is older than {} (it started {} ago)",
                    humantime::format_duration(self.config.rate_settle),
                    humantime::format_duration(Duration::from_secs(
                        now_ns.saturating_sub(self.first_full_index * self.bucket_ns)
                            / 1_000_000_000
                    )),
                ),
            })
        } else {
            Ok(((settled - rate_from) * self.bucket_ns) as f64 / 1e9)
        }
    }

    /// The series `selector` matches (every version when it names none).
    fn matching(&self, selector: &TraceSelector) -> Result<Vec<Arc<Mutex<Series>>>, SourceError> {
        if !selector.labels.is_empty() {
            return Err(SourceError::BadQuery {
                backend: BACKEND.to_string(),
                detail: "label filters are not supported by the embedded store".to_string(),
            });
        }
        let index = read_lock(&self.index);
        Ok(index
            .by_service
            .get(&selector.service)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e.kind == selector.span_kind)
                    .filter(|e| match &selector.version {
                        Some(v) => e.version.as_deref() == Some(v.as_str()),
                        None => true,
                    })
                    .map(|e| Arc::clone(&e.series))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `signal: sloCapacity` over the windows of [`capacity`], ending at `now`: one pass
    /// over the matching series' buckets of the history. `None` when the long window holds
    /// no span (no data is no value).
    pub fn capacity_at(
        &self,
        selector: &TraceSelector,
        target: CapacityTarget,
        now: SystemTime,
    ) -> Result<Option<f64>, SourceError> {
        let retention = self.config.retention;
        let secs = |s: u64| Duration::from_secs(s).min(retention);
        let now_ns = unix_ns(now);
        let now_index = now_ns / self.bucket_ns;
        let settled = now_ns.saturating_sub(duration_ns(self.config.rate_settle)) / self.bucket_ns;
        let from = |d: Duration| now_ns.saturating_sub(duration_ns(d)) / self.bucket_ns;
        let window_from = from(secs(capacity::WINDOW_S)).max(self.first_full_index);
        let guard_from = from(secs(capacity::GUARD_WINDOW_S));
        let history_from = from(secs(capacity::HISTORY_S)).max(self.first_full_index);
        let covered_s = self.covered(now_ns, settled, window_from)?;
        let per_minute = self.per_minute;
        let mut minutes = Periods::new(per_minute, history_from, settled);
        let per_block = (capacity::BLOCK_S * 1_000_000_000 / self.bucket_ns).max(1);
        let mut blocks = Periods::new(per_block, history_from, settled);
        let mut minute_latency = vec![LatencySketch::default(); minutes.sums.len()];
        // The sustained window: every whole, settled minute that ends inside it and
        // started after the store did (Prometheus' `[30m:1m]` subquery steps, each the
        // minute before a multiple of a minute), minutes without spans as zeros.
        let minute_ns = per_minute * self.bucket_ns;
        let sustained_from = (now_ns
            .saturating_sub(duration_ns(Duration::from_secs(capacity::SUSTAINED_S)))
            / minute_ns)
            .max(self.first_full_index.div_ceil(per_minute));
        let sustained_to = (settled / per_minute).max(sustained_from);
        let mut sustained = vec![(0f64, 0f64); (sustained_to - sustained_from) as usize];
        let (mut spans, mut busy_ns) = (0f64, 0f64);
        let mut latency = LatencySketch::default();
        let matching = self.matching(selector)?;
        // The history decides the value (its reference latency and held levels): a
        // refusal in it undercounts them.
        self.refusals_since(history_from * self.bucket_ns, now_ns, !matching.is_empty())?;
        for series in &matching {
            let series = lock(series);
            for b in series.buckets.iter().filter(|b| b.index <= now_index) {
                if b.index >= guard_from {
                    latency.merge(&b.latency);
                }
                if (window_from..settled).contains(&b.index) {
                    spans += b.spans;
                    busy_ns += b.busy_ns;
                }
                if let Some(at) = minutes.add(b) {
                    minute_latency[at].merge(&b.latency);
                }
                blocks.add(b);
            }
            for m in series.minutes.iter() {
                if (sustained_from..sustained_to).contains(&m.index) {
                    let at = &mut sustained[(m.index - sustained_from) as usize];
                    at.0 += m.busy_ns / 1e9;
                    at.1 += m.spans;
                }
            }
        }
        if spans == 0.0 {
            return Ok(None);
        }
        let Some(latency_ns) = latency.quantile_ns(target.quantile.get()) else {
            return Ok(None);
        };
        let minute_s = (per_minute * self.bucket_ns) as f64 / 1e9;
        let quantile = target.quantile.get();
        let pod_concurrency = target.target().pod_concurrency;
        let block_s = (per_block * self.bucket_ns) as f64 / 1e9;
        let minute_periods = minutes.periods(minute_s, pod_concurrency);
        let block_periods = blocks.periods(block_s, pod_concurrency);
        // The blocks' latencies are read only while the history is young, so their
        // sketches are merged then, in a second pass (a span that settles in between
        // counts in its block's latency and not in its spans).
        let block_latencies = std::iter::once_with(|| {
            let mut sketches = vec![LatencySketch::default(); blocks.sums.len()];
            for series in &matching {
                for b in lock(series).buckets.iter() {
                    if let Some(at) = blocks.position(b.index) {
                        sketches[at].merge(&b.latency);
                    }
                }
            }
            sketches
        })
        .flatten()
        .zip(&blocks.sums)
        .filter_map(|(sketch, &(_, spans, _))| {
            let ns = sketch.quantile_ns(quantile)?;
            Some((spans, ns / 1e9))
        });
        // Each minute's spans by their adjusted counts, as its durations are.
        let history = capacity::history(
            minute_periods,
            block_periods,
            minute_s,
            minute_latency
                .iter()
                .filter_map(|m| m.quantile_ns(quantile).map(|ns| ns / 1e9)),
            block_latencies,
            sustained,
        );
        Ok(Some(capacity::pods_needed(
            target.target(),
            history.reading(
                busy_ns / 1e9 / covered_s,
                spans / covered_s,
                latency_ns / 1e9,
            ),
        )))
    }
}

/// `(Σ durations in seconds, spans, spans without error)` and the pods that served them,
/// of each whole period of `per` settled buckets in `[from, settled)`, newest last, ending
/// at `settled` (sloCapacity's minutes and blocks).
struct Periods {
    per: u64,
    settled: u64,
    sums: Vec<(f64, f64, f64)>,
    /// Each period's buckets' pod ids, repeats included (sorted and counted once, at
    /// the end: a union per bucket would cost `MAX_PODS`² a bucket); `None` once one
    /// bucket's pods are unknown.
    pods: Vec<Option<Vec<u64>>>,
}

impl Periods {
    fn new(per: u64, from: u64, settled: u64) -> Self {
        let whole = (settled.saturating_sub(from) / per) as usize;
        Periods {
            per,
            settled,
            sums: vec![(0.0, 0.0, 0.0); whole],
            pods: vec![Some(Vec::new()); whole],
        }
    }

    /// The periods, `period_s` long, for `capacity::history`, with the longest service
    /// time their pods allow at `pod_concurrency` slots a pod.
    fn periods(&mut self, period_s: f64, pod_concurrency: f64) -> Vec<capacity::Period> {
        self.sums
            .iter()
            .zip(&mut self.pods)
            .map(|(&(busy_s, spans, served), pods)| capacity::Period {
                busy_s,
                spans,
                longest_service_s: pods.as_mut().and_then(|ids| {
                    ids.sort_unstable();
                    ids.dedup();
                    capacity::longest_service_s(ids.len() as f64, pod_concurrency, period_s, served)
                }),
            })
            .collect()
    }

    /// The position of bucket `index`'s period, if it falls in a whole one.
    fn position(&self, index: u64) -> Option<usize> {
        if index >= self.settled {
            return None;
        }
        let back = ((self.settled - 1 - index) / self.per) as usize;
        let whole = self.sums.len();
        (back < whole).then(|| whole - 1 - back)
    }

    /// Adds bucket `b`'s figures to its period, if it falls in a whole one, and returns
    /// that period's position.
    fn add(&mut self, b: &Bucket) -> Option<usize> {
        let at = self.position(b.index)?;
        self.sums[at].0 += b.busy_ns / 1e9;
        self.sums[at].1 += b.spans;
        self.sums[at].2 += b.spans - b.errors;
        match (&mut self.pods[at], b.pods.ids()) {
            (Some(ids), Some(more)) => ids.extend_from_slice(more),
            (known, _) => *known = None,
        }
        Some(at)
    }
}
