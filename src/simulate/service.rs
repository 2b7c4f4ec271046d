//! The service model: pods with a fixed number of workers each and a first-come
//! first-served queue per pod (so one pod is an M/G/c queue, c = workers), requests
//! routed to a ready pod at random, a service-time distribution, and a client timeout
//! past which a waiting request gives up and counts as an error.
//!
//! Pods are added with a start-up delay (no traffic before they are ready) and removed
//! newest first, as the ReplicaSet controller deletes pods.

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
            cpu_share: 0.2,
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

/// One request as it arrives: when, and its service time before any dependency slowdown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at_s: f64,
    pub base_s: f64,
}

impl ServiceModel {
    /// One service time at normal dependency latency, drawn from `rng`.
    pub fn base_service_s(&self, rng: &mut Rng) -> f64 {
        match self.dist {
            ServiceDist::Exponential => self.mean_service_s * rng.exp1(),
            ServiceDist::LogNormal { sigma } => {
                self.mean_service_s * (sigma * rng.normal() - sigma * sigma / 2.0).exp()
            }
        }
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
    /// The pod that served it (its `service.instance.id`); `None` when none did.
    pub pod: Option<u32>,
}

/// One pod: when it becomes ready, and when each of its workers is next free (ns).
#[derive(Debug, Clone)]
struct Pod {
    /// Unique over the run, as a pod's `service.instance.id` is.
    id: u32,
    ready_s: f64,
    free_at: Vec<u64>,
}

/// The running service. Pods are kept in creation order, so ready times ascend (the
/// start-up delay is constant) and the ready pods are a prefix.
#[derive(Debug, Clone)]
pub struct Service {
    pub model: ServiceModel,
    pods: Vec<Pod>,
    service_rng: Rng,
    routing_rng: Rng,
    /// Pods created so far (the next pod's id).
    created: u32,
}

fn ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

impl Service {
    /// A service with `replicas` pods ready at time 0.
    pub fn new(model: ServiceModel, replicas: u32, seed: u64) -> Self {
        let mut s = Service {
            model,
            pods: Vec::new(),
            service_rng: Rng::new(seed),
            routing_rng: Rng::new(seed ^ 0x0123_4567_89ab_cdef),
            created: 0,
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
        self.pods.partition_point(|p| p.ready_s <= now_s) as u32
    }

    /// Sets the pod count at `now_s`: new pods become ready after the start-up delay;
    /// removed pods are the newest first (so unready ones before ready ones, as the
    /// ReplicaSet controller picks), and requests in flight on them finish.
    pub fn scale_to(&mut self, replicas: u32, now_s: f64) {
        let have = self.replicas();
        if replicas > have {
            self.add_pods(replicas - have, now_s + self.model.startup_s);
        } else {
            self.pods.truncate(replicas as usize);
        }
    }

    fn add_pods(&mut self, n: u32, ready_s: f64) {
        for _ in 0..n {
            self.pods.push(Pod {
                id: self.created,
                ready_s,
                free_at: vec![ns(ready_s); self.model.workers_per_pod as usize],
            });
            self.created = self.created.wrapping_add(1);
        }
    }

    /// Serves one request arriving at `arrival_s` while dependencies are `slowdown` times
    /// slower than normal. The Service routes it to a ready pod at random (kube-proxy's
    /// iptables mode), where it waits for the first free worker of that pod.
    pub fn serve(&mut self, arrival_s: f64, slowdown: f64) -> Outcome {
        let base = self.model.base_service_s(&mut self.service_rng);
        self.serve_base(arrival_s, base, slowdown)
    }

    /// [`Service::serve`] with the request's base service time drawn by the caller (the
    /// simulator draws it once for every policy it compares).
    pub fn serve_base(&mut self, arrival_s: f64, base: f64, slowdown: f64) -> Outcome {
        let m = &self.model;
        let cpu_s = base * m.cpu_share;
        let service_s = cpu_s + base * (1.0 - m.cpu_share) * slowdown;
        let gave_up = Outcome {
            wait_s: m.timeout_s,
            latency_s: m.timeout_s,
            cpu_s: 0.0,
            error: true,
            pod: None,
        };
        let ready = self.pods.partition_point(|p| p.ready_s <= arrival_s);
        if ready == 0 {
            return gave_up;
        }
        let pick = ((self.routing_rng.uniform() * ready as f64) as usize).min(ready - 1);
        let pod = &mut self.pods[pick];
        let Some((worker, free)) = pod
            .free_at
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, f)| *f)
        else {
            return gave_up;
        };
        let arrival = ns(arrival_s);
        let start = free.max(arrival);
        let wait_s = (start - arrival) as f64 / 1e9;
        if wait_s > m.timeout_s {
            return gave_up;
        }
        pod.free_at[worker] = start + ns(service_s);
        Outcome {
            wait_s,
            latency_s: wait_s + service_s,
            cpu_s,
            error: false,
            pod: Some(pod.id),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_matches_known_values() {
        // One server: C = ρ. Two servers at a = 1: C = 1/3.
        let check = |c, a: f64, expect: f64| {
            let got = erlang_c(c, a);
            assert!(
                (got - expect).abs() < 1e-9,
                "c={c} a={a}: {got} vs {expect}"
            );
        };
        check(1, 0.5, 0.5);
        check(2, 1.0, 1.0 / 3.0);
        // c = 4, a = 2 (ρ = 0.5): 4/23.
        check(4, 2.0, 4.0 / 23.0);
    }

    #[test]
    fn requests_wait_for_unready_pods_never() {
        let model = ServiceModel {
            startup_s: 30.0,
            ..ServiceModel::default()
        };
        let mut s = Service::new(model, 0, 1);
        s.scale_to(2, 0.0);
        assert_eq!((s.replicas(), s.ready(10.0), s.ready(30.0)), (2, 0, 2));
        assert!(s.serve(10.0, 1.0).error, "no ready pod: the request fails");
        assert!(!s.serve(31.0, 1.0).error);
        s.scale_to(1, 40.0);
        assert_eq!(s.replicas(), 1);
    }
}
