//! The simulated store's signals: each second's bucket, the ring of the last seconds filed
//! by completion time, and a policy's reading over a window, with the store's window
//! arithmetic (`Store::read_at`).

use crate::signal::capacity::{self, pods_needed};
use crate::signal::slo::{slo_ratio, Objectives, Observed};
use crate::source::otlp::sketch::LatencySketch;

use super::super::policy::Policy;
use super::Config;

#[derive(Debug, Clone, Default)]
pub(super) struct Bucket {
    /// The second's latencies, kept only for the policies that read them (p95, slo).
    pub(super) latency: LatencySketch,
    pub(super) requests: u64,
    pub(super) errors: u64,
    pub(super) cpu_s: f64,
    /// Σ latencies, seconds: requests in flight × time (Little's law).
    pub(super) busy_s: f64,
}

/// Seconds ahead of the current one a request may complete in and still be filed under
/// its own second (later completions go into the last of them): the 2 s default timeout
/// plus a long service time.
const AHEAD_S: usize = 16;

/// The store's settle delay the simulated store reads with (the default of
/// `--otlp-rate-settle`): rates and requests in flight leave out the last seconds, whose
/// spans exporters may not have sent yet.
pub const SETTLE_S: usize = 6;

/// The last seconds' buckets, as the store's ring: a request is filed under the second
/// it completes in (the store files a span by its end time), so a reading at `now` knows
/// only the requests that completed before it.
pub(super) struct Ring {
    buckets: Vec<Bucket>,
}

impl Ring {
    /// A ring that reads `len` seconds back.
    pub(super) fn new(len: usize) -> Self {
        Ring {
            buckets: vec![Bucket::default(); len.max(1) + AHEAD_S + 1],
        }
    }

    /// Starts second `t`: the slot `AHEAD_S` seconds on is cleared for completions.
    pub(super) fn advance(&mut self, t: usize) {
        let n = self.buckets.len();
        self.buckets[(t + AHEAD_S) % n] = Bucket::default();
    }

    /// The bucket of second `end` for a request that arrived in second `t`.
    pub(super) fn completion(&mut self, t: usize, end: usize) -> &mut Bucket {
        let n = self.buckets.len();
        &mut self.buckets[end.clamp(t, t + AHEAD_S) % n]
    }

    pub(super) fn arrival(&mut self, t: usize) -> &mut Bucket {
        let n = self.buckets.len();
        &mut self.buckets[t % n]
    }

    /// Merges seconds `[now − window, now)` (those that exist).
    pub(super) fn window(&self, now: usize, window: usize) -> (Bucket, usize) {
        self.between(now.saturating_sub(window), now, true)
    }

    /// [`Ring::window`] without the latency sketches (counts, CPU and Σ latencies only):
    /// merging sketches is most of a read's cost.
    pub(super) fn counts(&self, now: usize, window: usize) -> (Bucket, usize) {
        self.between(now.saturating_sub(window), now, false)
    }

    /// Merges seconds `[now − window, now − SETTLE_S)`, the store's rule for rates and
    /// requests in flight; the seconds covered are those merged.
    pub(super) fn settled(&self, now: usize, window: usize) -> (Bucket, usize) {
        self.between(
            now.saturating_sub(window),
            now.saturating_sub(SETTLE_S),
            false,
        )
    }

    fn between(&self, from: usize, to: usize, latency: bool) -> (Bucket, usize) {
        let n = self.buckets.len();
        let from = from.max(to.saturating_sub(n - AHEAD_S - 1));
        let mut total = Bucket::default();
        for t in from..to {
            let b = &self.buckets[t % n];
            if latency {
                total.latency.merge(&b.latency);
            }
            total.requests += b.requests;
            total.errors += b.errors;
            total.cpu_s += b.cpu_s;
            total.busy_s += b.busy_s;
        }
        (total, to.saturating_sub(from))
    }

    /// `(Σ latencies, requests)` of each whole `period` seconds of settled seconds in
    /// `[now − len, now − SETTLE_S)` that exist, oldest first, ending at `now − SETTLE_S`
    /// (the store's minutes and blocks).
    pub(super) fn periods(
        &self,
        now: usize,
        len: usize,
        period: usize,
    ) -> impl Iterator<Item = (f64, f64)> + '_ {
        let n = self.buckets.len();
        self.starts(now, len, period).map(move |m| {
            (m..m + period).fold((0.0, 0.0), |(busy, count), t| {
                let b = &self.buckets[t % n];
                (busy + b.busy_s, count + b.requests as f64)
            })
        })
    }

    /// The latency at `quantile` (seconds) of each whole minute of [`Ring::periods`] that
    /// has requests: the store's minutes, read for `capacity::History::calm_latency_s`.
    pub(super) fn minute_latencies(
        &self,
        now: usize,
        len: usize,
        quantile: f64,
    ) -> impl Iterator<Item = f64> + '_ {
        self.starts(now, len, 60).filter_map(move |m| {
            let (minute, _) = self.between(m, m + 60, true);
            minute.latency.quantile_ns(quantile).map(|ns| ns / 1e9)
        })
    }

    /// The first seconds of [`Ring::periods`]' periods, oldest first.
    fn starts(&self, now: usize, len: usize, period: usize) -> impl Iterator<Item = usize> {
        let n = self.buckets.len();
        let end = now.saturating_sub(SETTLE_S);
        let start = now
            .saturating_sub(len)
            .max(end.saturating_sub(n - AHEAD_S - 1));
        let whole = (end - start.min(end)) / period;
        (0..whole).map(move |i| end - (whole - i) * period)
    }
}

/// A metric reading: the value, or no data (an error to KEDA).
pub(super) fn read(policy: &Policy, config: &Config, ring: &Ring, now: usize) -> Option<f64> {
    if let Policy::Recommended { pod_concurrency } = policy {
        return recommended(*pod_concurrency, config, ring, now);
    }
    let reads_latency = matches!(policy, Policy::P95 { .. } | Policy::Slo { .. });
    let (w, covered) = if reads_latency {
        ring.window(now, config.window_s as usize)
    } else {
        ring.counts(now, config.window_s as usize)
    };
    let count = w.requests;
    if count == 0 || covered == 0 {
        return None;
    }
    let (settled, settled_s) = ring.settled(now, config.window_s as usize);
    let p95 = || w.latency.quantile_ns(0.95).map(|ns| ns / 1e9);
    match policy {
        Policy::Rps { .. } if settled_s > 0 => Some(settled.requests as f64 / settled_s as f64),
        Policy::Concurrency { .. } if settled_s > 0 => Some(settled.busy_s / settled_s as f64),
        Policy::Rps { .. } | Policy::Concurrency { .. } => None,
        Policy::P95 { .. } => p95(),
        Policy::Slo { .. } => slo_ratio(
            Objectives {
                latency_s: Some(config.objective_s),
                error_rate: config.error_objective,
            },
            Observed {
                latency_s: p95(),
                error_rate: Some(w.errors as f64 / count as f64),
            },
        )
        .ok(),
        Policy::Cpu { .. }
        | Policy::Static(_)
        | Policy::StaticAuto
        | Policy::Oracle
        // Read by `recommended`, over windows of its own, before the window above.
        | Policy::Recommended { .. } => None,
    }
}

/// `signal: sloCapacity` as `Store::capacity_at` reads it: over the windows of
/// [`capacity`] (a trigger takes no `window`, so `--window` does not apply), no value
/// without requests in the long window or latencies in the guard window.
fn recommended(
    pod_concurrency: Option<f64>,
    config: &Config,
    ring: &Ring,
    now: usize,
) -> Option<f64> {
    let (settled, settled_s) = ring.settled(now, capacity::WINDOW_S as usize);
    if settled.requests == 0 || settled_s == 0 {
        return None;
    }
    let (guard, _) = ring.window(now, capacity::GUARD_WINDOW_S as usize);
    let latency_s = guard.latency.quantile_ns(0.95).map(|ns| ns / 1e9)?;
    let len = capacity::HISTORY_S as usize;
    let history = capacity::history(
        ring.periods(now, len, 60),
        ring.periods(now, len, capacity::BLOCK_S as usize),
        60.0,
        ring.minute_latencies(now, len, 0.95),
    );
    let target = capacity::Target {
        pod_concurrency: pod_concurrency.unwrap_or(f64::from(config.service.workers_per_pod)),
        objective_s: config.objective_s,
    };
    let covered = settled_s as f64;
    Some(pods_needed(
        target,
        history.reading(
            settled.busy_s / covered,
            settled.requests as f64 / covered,
            latency_s,
        ),
    ))
}
