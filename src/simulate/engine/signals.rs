//! The simulated store's signals: each second's bucket, the ring of the last seconds filed
//! by completion time, and a policy's reading over a window, with the store's window
//! arithmetic (`Store::read_at`).

use std::collections::HashMap;

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
    /// The pods that served the second's requests, each once (the store counts a
    /// series' `service.instance.id`s).
    pub(super) pods: Vec<u32>,
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
    /// A power of two long (indexed by a mask: a division per request was a twentieth of
    /// the simulator's time, its 10 s target in BENCHMARKS.md), at least `len + AHEAD_S + 1`.
    buckets: Vec<Bucket>,
    /// The seconds a read may reach back.
    len: usize,
    /// Each whole minute's merged latency sketch, by its first second, for
    /// [`Ring::guard_and_minutes`]. Exists for speed (the simulator's 10 s target,
    /// BENCHMARKS.md): reads come every HPA sync at a few phases of the minute, so a read
    /// finds the minutes it read a minute earlier and merges one new one instead of ten.
    /// Only seconds already past are merged, and those no longer change.
    minutes: HashMap<usize, LatencySketch>,
    /// `(Σ latencies, requests)` of each whole minute of simulated time, by its index
    /// (its first second ÷ 60), summed once settled and kept for [`Ring::sustained`] after
    /// its seconds have left the ring, as the store keeps its minutes.
    sustained: HashMap<usize, (f64, f64)>,
}

impl Ring {
    /// A ring that reads `len` seconds back.
    pub(super) fn new(len: usize) -> Self {
        let len = len.max(1);
        Ring {
            buckets: vec![Bucket::default(); (len + AHEAD_S + 1).next_power_of_two()],
            len,
            minutes: HashMap::new(),
            sustained: HashMap::new(),
        }
    }

    fn slot(&self, t: usize) -> usize {
        t & (self.buckets.len() - 1)
    }

    /// Starts second `t`: the slot `AHEAD_S` seconds on is cleared for completions.
    pub(super) fn advance(&mut self, t: usize) {
        let slot = self.slot(t + AHEAD_S);
        self.buckets[slot] = Bucket::default();
    }

    /// The bucket of second `end` for a request that arrived in second `t`.
    pub(super) fn completion(&mut self, t: usize, end: usize) -> &mut Bucket {
        let slot = self.slot(end.clamp(t, t + AHEAD_S));
        &mut self.buckets[slot]
    }

    pub(super) fn arrival(&mut self, t: usize) -> &mut Bucket {
        let slot = self.slot(t);
        &mut self.buckets[slot]
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
        let from = from.max(to.saturating_sub(self.len));
        let mut total = Bucket::default();
        for t in from..to {
            let b = &self.buckets[self.slot(t)];
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

    /// Each whole `period` seconds of settled seconds in `[now − len, now − SETTLE_S)`
    /// that exist, oldest first, ending at `now − SETTLE_S` (the store's minutes and
    /// blocks), with the longest service time the pods that served it allow for pods of
    /// `pod_concurrency` slots.
    pub(super) fn periods(
        &self,
        now: usize,
        len: usize,
        period: usize,
        pod_concurrency: f64,
    ) -> impl Iterator<Item = capacity::Period> + '_ {
        self.starts(now, len, period).map(move |m| {
            let mut pods: Vec<u32> = Vec::new();
            let (mut busy_s, mut spans, mut errors) = (0.0, 0, 0);
            for t in m..m + period {
                let b = &self.buckets[self.slot(t)];
                busy_s += b.busy_s;
                spans += b.requests;
                errors += b.errors;
                for p in &b.pods {
                    if !pods.contains(p) {
                        pods.push(*p);
                    }
                }
            }
            capacity::Period {
                busy_s,
                spans: spans as f64,
                longest_service_s: capacity::longest_service_s(
                    pods.len() as f64,
                    pod_concurrency,
                    period as f64,
                    (spans - errors) as f64,
                ),
            }
        })
    }

    /// The latency sketch of seconds `[now − window, now)` (as [`Ring::window`]) and the
    /// latency at `quantile` (seconds) of each whole minute of [`Ring::periods`] (`len`
    /// back) that has requests: the guard window and the store's minutes, read for
    /// `capacity::History::calm_latency_s`. Each minute is merged once and kept while a
    /// later read can still cover it; the guard window merges the minutes inside it
    /// whole. Merging adds bins, so the answers are those of merging every second.
    pub(super) fn guard_and_minutes(
        &mut self,
        now: usize,
        window: usize,
        len: usize,
        quantile: f64,
    ) -> (LatencySketch, Vec<f64>) {
        let starts: Vec<usize> = self.starts(now, len, 60).collect();
        // A later read starts its minutes at `now + 1 − len` or after.
        let oldest = now.saturating_sub(len);
        self.minutes.retain(|m, _| *m >= oldest);
        for &m in &starts {
            if !self.minutes.contains_key(&m) {
                let (minute, _) = self.between(m, m + 60, true);
                self.minutes.insert(m, minute.latency);
            }
        }
        let to = now;
        let from = now.saturating_sub(window).max(to.saturating_sub(self.len));
        let mut guard = LatencySketch::new();
        let mut t = from;
        let mut latencies = Vec::with_capacity(starts.len());
        for m in starts {
            let minute = &self.minutes[&m];
            if m >= t && m + 60 <= to {
                for s in t..m {
                    guard.merge(&self.buckets[self.slot(s)].latency);
                }
                guard.merge(minute);
                t = m + 60;
            }
            latencies.extend(minute.quantile_ns(quantile).map(|ns| ns / 1e9));
        }
        for s in t..to {
            guard.merge(&self.buckets[self.slot(s)].latency);
        }
        (guard, latencies)
    }

    /// `(Σ latencies, requests)` of each whole minute of simulated time (aligned to
    /// multiples of 60 s, as the store's minutes and Prometheus' subquery steps are) that
    /// ends after `now − len` and at `now − SETTLE_S` or earlier, oldest first: the
    /// store's sustained window ([`capacity::SUSTAINED_S`]).
    pub(super) fn sustained(&mut self, now: usize, len: usize) -> Vec<(f64, f64)> {
        let first = now.saturating_sub(len) / 60;
        let end = now.saturating_sub(SETTLE_S) / 60;
        self.sustained.retain(|m, _| *m >= first);
        let mut out = Vec::with_capacity(end.saturating_sub(first));
        for m in first..end {
            let sums = match self.sustained.get(&m) {
                Some(&sums) => sums,
                // Reads come every HPA sync, so a minute is summed while the ring still
                // holds its seconds; one that has left the ring is not made up.
                None if m * 60 + self.len >= now => {
                    let (b, _) = self.between(m * 60, m * 60 + 60, false);
                    let sums = (b.busy_s, b.requests as f64);
                    self.sustained.insert(m, sums);
                    sums
                }
                None => continue,
            };
            out.push(sums);
        }
        out
    }

    /// The first seconds of [`Ring::periods`]' periods, oldest first.
    fn starts(&self, now: usize, len: usize, period: usize) -> impl Iterator<Item = usize> {
        let end = now.saturating_sub(SETTLE_S);
        let start = now.saturating_sub(len).max(end.saturating_sub(self.len));
        let whole = (end - start.min(end)) / period;
        (0..whole).map(move |i| end - (whole - i) * period)
    }
}

/// A metric reading: the value, or no data (an error to KEDA).
pub(super) fn read(policy: &Policy, config: &Config, ring: &mut Ring, now: usize) -> Option<f64> {
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
    ring: &mut Ring,
    now: usize,
) -> Option<f64> {
    let sustained = ring.sustained(now, capacity::SUSTAINED_S as usize);
    let (settled, settled_s) = ring.settled(now, capacity::WINDOW_S as usize);
    if settled.requests == 0 || settled_s == 0 {
        return None;
    }
    let len = capacity::HISTORY_S as usize;
    let (guard, minutes) =
        ring.guard_and_minutes(now, capacity::GUARD_WINDOW_S as usize, len, 0.95);
    let latency_s = guard.quantile_ns(0.95).map(|ns| ns / 1e9)?;
    let ring = &*ring;
    let block_s = capacity::BLOCK_S as usize;
    let pod_concurrency = pod_concurrency.unwrap_or(f64::from(config.service.workers_per_pod));
    let history = capacity::history(
        ring.periods(now, len, 60, pod_concurrency),
        ring.periods(now, len, block_s, pod_concurrency),
        60.0,
        minutes,
        ring.starts(now, len, block_s).filter_map(|b| {
            let (block, _) = ring.between(b, b + block_s, true);
            let latency_ns = block.latency.quantile_ns(0.95)?;
            Some((block.requests as f64, latency_ns / 1e9))
        }),
        sustained,
    );
    let target = capacity::Target {
        pod_concurrency,
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
