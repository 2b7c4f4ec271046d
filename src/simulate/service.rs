//! The service model: pods with a fixed number of workers each, one first-come
//! first-served queue in front of all workers (M/G/c), a service-time distribution, and a
//! client timeout past which a waiting request gives up and counts as an error.
//!
//! Pods are added with a start-up delay (their workers accept nothing before they are
//! ready) and removed unready-first, as the ReplicaSet controller deletes pods.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The shape of service times around their mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceDist {
    /// Exponential (the M/M/c model the closed forms describe).
    Exponential,
    /// Log-normal with this shape σ, scaled to the same mean.
    LogNormal { sigma: f64 },
}

/// The service's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceModel {
    /// Workers (concurrent requests) per pod.
    pub workers_per_pod: u32,
    /// Mean service time at normal dependency latency, seconds.
    pub mean_service_s: f64,
    pub dist: ServiceDist,
    /// Share of the normal service time spent on CPU; the rest waits on dependencies.
    pub cpu_share: f64,
    /// CPU request per pod, cores (the denominator of CPU utilisation).
    pub cpu_request_cores: f64,
    /// A request waiting longer than this gives up: an error, seen as this latency.
    pub timeout_s: f64,
    /// Time from a pod's creation to its readiness, seconds.
    pub startup_s: f64,
}

impl Default for ServiceModel {
    fn default() -> Self {
        ServiceModel {
            workers_per_pod: 4,
            mean_service_s: 0.050,
            dist: ServiceDist::Exponential,
            cpu_share: 0.5,
            cpu_request_cores: 1.0,
            timeout_s: 2.0,
            startup_s: 30.0,
        }
    }
}

/// A small deterministic generator (SplitMix64), so every run is reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        -self.uniform().ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Time in the queue before a worker took it (the timeout when it gave up), seconds.
    pub wait_s: f64,
    /// Latency seen by the client, seconds.
    pub latency_s: f64,
    /// CPU seconds the request used.
    pub cpu_s: f64,
    pub error: bool,
}

/// The running service: workers' next free times (nanoseconds) and the pods.
#[derive(Debug, Clone)]
pub struct Service {
    pub model: ServiceModel,
    free_at: BinaryHeap<Reverse<u64>>,
    /// Ready time of every pod, seconds.
    pods: Vec<f64>,
    service_rng: Rng,
}

fn ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

impl Service {
    /// A service with `replicas` pods ready at time 0.
    pub fn new(model: ServiceModel, replicas: u32, seed: u64) -> Self {
        let mut s = Service {
            model,
            free_at: BinaryHeap::new(),
            pods: Vec::new(),
            service_rng: Rng::new(seed),
        };
        s.add_pods(replicas, 0.0);
        s
    }

    /// Pods, ready or not.
    pub fn replicas(&self) -> u32 {
        self.pods.len() as u32
    }

    /// Pods ready at `now_s`.
    pub fn ready(&self, now_s: f64) -> u32 {
        self.pods.iter().filter(|r| **r <= now_s).count() as u32
    }

    /// Sets the pod count at `now_s`: new pods become ready after the start-up delay;
    /// removed pods are the least ready (latest ready time) first, and their workers the
    /// ones free last, so requests in flight finish.
    pub fn scale_to(&mut self, replicas: u32, now_s: f64) {
        let have = self.replicas();
        if replicas > have {
            self.add_pods(replicas - have, now_s + self.model.startup_s);
        } else if replicas < have {
            self.pods
                .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            self.pods.truncate(replicas as usize);
            let workers = replicas as usize * self.model.workers_per_pod as usize;
            // Ascending in `Reverse` order: the latest free times come first, so the
            // tail holds the workers free soonest, the ones to keep.
            let mut all = std::mem::take(&mut self.free_at).into_sorted_vec();
            let keep_from = all.len().saturating_sub(workers);
            self.free_at = all.split_off(keep_from).into();
        }
    }

    fn add_pods(&mut self, n: u32, ready_s: f64) {
        for _ in 0..n {
            self.pods.push(ready_s);
            for _ in 0..self.model.workers_per_pod {
                self.free_at.push(Reverse(ns(ready_s)));
            }
        }
    }

    /// Serves one request arriving at `arrival_s` while dependencies are `slowdown` times
    /// slower than normal.
    pub fn serve(&mut self, arrival_s: f64, slowdown: f64) -> Outcome {
        let m = &self.model;
        let base = match m.dist {
            ServiceDist::Exponential => m.mean_service_s * self.service_rng.exp1(),
            ServiceDist::LogNormal { sigma } => {
                m.mean_service_s * (sigma * self.service_rng.normal() - sigma * sigma / 2.0).exp()
            }
        };
        let cpu_s = base * m.cpu_share;
        let service_s = cpu_s + base * (1.0 - m.cpu_share) * slowdown;
        let gave_up = Outcome {
            wait_s: m.timeout_s,
            latency_s: m.timeout_s,
            cpu_s: 0.0,
            error: true,
        };
        let Some(Reverse(free)) = self.free_at.peek().copied() else {
            return gave_up;
        };
        let arrival = ns(arrival_s);
        let start = free.max(arrival);
        let wait_s = (start - arrival) as f64 / 1e9;
        if wait_s > m.timeout_s {
            return gave_up;
        }
        if let Some(mut top) = self.free_at.peek_mut() {
            *top = Reverse(start + ns(service_s));
        }
        Outcome {
            wait_s,
            latency_s: wait_s + service_s,
            cpu_s,
            error: false,
        }
    }
}

/// Erlang C: the probability that an arrival waits in an M/M/c queue with `c` servers
/// and offered load `a = λ/μ` (< c).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    // Erlang B by its stable recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (f64::from(k) + a * b);
    }
    let rho = a / f64::from(c);
    b / (1.0 - rho + rho * b)
}

/// The `p`-quantile of the waiting time in an M/M/c queue:
/// `P(W > t) = C · exp(−(cμ − λ) t)`, so the quantile is 0 while `1 − p ≥ C`.
pub fn mmc_wait_quantile(c: u32, lambda: f64, mu: f64, p: f64) -> f64 {
    let pc = erlang_c(c, lambda / mu);
    if 1.0 - p >= pc {
        0.0
    } else {
        (pc / (1.0 - p)).ln() / (f64::from(c) * mu - lambda)
    }
}
