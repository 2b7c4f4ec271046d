//! Counters and a latency histogram recorded without a shared write, and the answer
//! path's series resolved once: recording a `GetMetrics` takes no lock, hashes no label,
//! and does not bounce a cache line between the cores answering calls.
//!
//! prometheus-client's `Histogram` locks a mutex on every observation, its `Counter` is one
//! atomic every core adds to, and a `Family` read-locks its map and hashes the labels on
//! every lookup; on the answer path those were writes every caller of the process made to
//! the same memory, in turn (BENCHMARKS.md, the `keda_load` runs). Here each thread adds to its own stripe (a cache
//! line of its own); a scrape sums the stripes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Stripes per metric; threads take them in turn (more threads than stripes share).
const STRIPES: usize = 8;

/// This thread's stripe.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// A value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

/// A monotonic counter, one stripe per thread.
#[derive(Clone, Debug, Default)]
pub struct StripedCounter(Arc<[Line<AtomicU64>; STRIPES]>);

impl StripedCounter {
    pub fn inc(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds: 50 µs × 2^i for i in 0..20 (50 µs .. ~26 s), then +Inf.
const BOUNDS: usize = 20;
const FIRST_BOUND_NANOS: u64 = 50_000;

/// A histogram of durations with the scaler's latency buckets, one stripe per thread.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<[Line<Cells>; STRIPES]>);

#[derive(Debug, Default)]
struct Cells {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = (0..BOUNDS)
            .find(|&i| nanos <= FIRST_BOUND_NANOS << i)
            .unwrap_or(BOUNDS);
        let cells = &self.0[stripe()].0;
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (upper bound in seconds, observations in that bucket alone), over every stripe.
    fn buckets(&self) -> Vec<(f64, u64)> {
        (0..=BOUNDS)
            .map(|i| {
                let bound = if i < BOUNDS {
                    (FIRST_BOUND_NANOS << i) as f64 / 1e9
                } else {
                    f64::INFINITY
                };
                let n = self
                    .0
                    .iter()
                    .map(|l| l.0.buckets[i].load(Ordering::Relaxed))
                    .sum();
                (bound, n)
            })
            .collect()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        // The count is the buckets' total, so `_count` always equals the `+Inf` bucket
        // even while observations land during the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum_nanos: u64 = self
            .0
            .iter()
            .map(|l| l.0.sum_nanos.load(Ordering::Relaxed))
            .sum();
        encoder.encode_histogram::<NoLabelSet>(sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The ExternalScaler methods whose series are resolved once.
pub const GRPC_METHODS: [&str; 5] = [
    "IsActive",
    "StreamIsActive",
    "GetMetricSpec",
    "GetMetrics",
    "StreamMetricSpec",
];

/// gRPC codes are 0 ..= 16.
const CODES: usize = 17;

/// One method's series, each taken from its family the first time it is used (so
/// `/metrics` shows what it showed before: only series that were recorded).
#[derive(Debug, Default)]
pub struct MethodSeries {
    pub requests: [OnceLock<StripedCounter>; CODES],
    pub duration: OnceLock<LatencyHistogram>,
}

impl MethodSeries {
    pub fn requests(
        &self,
        code: tonic::Code,
        make: impl FnOnce() -> StripedCounter,
    ) -> &StripedCounter {
        let i = (code as usize).min(CODES - 1);
        self.requests[i].get_or_init(make)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(h: &LatencyHistogram) -> String {
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("t", "test", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    /// Adds from many threads all land in the total, exposed as prometheus-client exposes
    /// its own counter.
    #[test]
    fn striped_counter_counts_every_thread() {
        let c = StripedCounter::default();
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 12_000);
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("t", "test", c);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("# TYPE t counter\nt_total 12000\n"), "{out}");
    }

    /// The same exposition as prometheus-client's own histogram with the same buckets.
    #[test]
    fn encodes_as_prometheus_clients_histogram() {
        use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
        let ours = LatencyHistogram::default();
        let theirs = Histogram::new(exponential_buckets(0.00005, 2.0, 20));
        for micros in [
            1, 50, 51, 100, 101, 700, 25_000, 3_000_000, 26_214_400, 30_000_000,
        ] {
            ours.observe(Duration::from_micros(micros));
            theirs.observe(micros as f64 / 1e6);
        }
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("t", "test", theirs);
        let mut want = String::new();
        prometheus_client::encoding::text::encode(&mut want, &reg).unwrap();
        // Sums differ only in float rounding; compare every other line exactly.
        let lines = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("t_sum"))
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let got = text(&ours);
        assert_eq!(lines(&got), lines(&want), "{got}\n---\n{want}");
        let sum = |s: &str| -> f64 {
            s.lines()
                .find_map(|l| l.strip_prefix("t_sum "))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((sum(&got) - sum(&want)).abs() < 1e-9, "{got}");
    }
}
