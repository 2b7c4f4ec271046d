//! The closed loop: one scenario through the service model, with KEDA and the HPA
//! deciding the pod count from signals computed the way the scaler computes them.
//!
//! Every second, Poisson arrivals at the scenario's rate are drawn once for every policy
//! compared ([`run_lockstep`]) and served by each policy's service. Each request is filed
//! under the second it completes in, as the embedded store files a span by its end time
//! (a reading never sees a request still queued); for the policies that read latency it
//! goes into that second's [`LatencySketch`](crate::source::otlp::sketch::LatencySketch), as the store keeps one sketch per series per
//! second. A signal over a window merges the buckets of the last `window` seconds, as
//! `Store::read_at` does: latency and errors over all of them, rates and requests in
//! flight leaving out the last [`SETTLE_S`] (the store's default `--otlp-rate-settle`). What the service
//! delivered (each minute's p95, for attainment) is the exact quantile of every latency. Every HPA sync period the policy's metric is read,
//! the HPA arithmetic of [`crate::signal::hpa`] proposes a count, and [`Autoscaler`]
//! applies the behaviour. KEDA's operator loop (every polling interval) handles
//! activation, scale to zero after the cooldown, and fallback after repeated failures.

use crate::signal::capacity;
use crate::signal::hpa::{
    desired_replicas_ready, desired_replicas_utilization, Autoscaler, Behavior,
};
use crate::signal::MetricType;

use super::policy::Policy;
use super::scenario::{Scenario, Second};
use super::service::{Arrival, Rng, Service, ServiceModel};

mod signals;
#[cfg(test)]
mod tests;

pub use signals::SETTLE_S;
use signals::{read, Ring};

/// KEDA's ScaledObject settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Keda {
    pub polling_interval_s: u32,
    pub cooldown_s: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// The trigger's activation threshold (the metric must exceed it to be active).
    pub activation: f64,
    /// `fallback`: (failureThreshold, replicas).
    pub fallback: Option<(u32, u32)>,
}

impl Default for Keda {
    fn default() -> Self {
        Keda {
            polling_interval_s: 30,
            cooldown_s: 300,
            min_replicas: 2,
            max_replicas: 30,
            activation: 0.0,
            fallback: None,
        }
    }
}

/// Everything but the scenario and the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service: ServiceModel,
    pub keda: Keda,
    pub behavior: Behavior,
    /// The HPA as KEDA writes it for a ScaledObject without
    /// `advanced.horizontalPodAutoscalerConfig.behavior`: `spec.behavior` unset, the
    /// controller's older rules ([`Autoscaler::unset`]), `behavior`'s scale-down window as
    /// the controller's.
    pub behavior_unset: bool,
    /// The HPA controller's sync period.
    pub hpa_sync_s: u32,
    /// The scaler's signal window.
    pub window_s: u32,
    /// The window of CPU usage as metrics-server reports it.
    pub cpu_window_s: u32,
    /// The p95 latency objective, seconds.
    pub objective_s: f64,
    /// The error-rate objective for `signal: slo`, as a ratio.
    pub error_objective: Option<f64>,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: ServiceModel::default(),
            keda: Keda::default(),
            behavior: Behavior::default(),
            behavior_unset: false,
            hpa_sync_s: 15,
            window_s: 60,
            cpu_window_s: 30,
            objective_s: 0.3,
            error_objective: None,
            seed: 0x5eed,
        }
    }
}

/// One minute of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    pub rps: f64,
    /// Mean pods (ready or not) over the minute.
    pub replicas: f64,
    pub ready: f64,
    /// CPU utilisation over the minute: CPU seconds used / (ready-pod seconds × the CPU
    /// request), percent, as the HPA's `Utilization` sees it.
    pub cpu_percent: f64,
    /// The exact p95 latency over the minute; `None` when no request arrived.
    pub p95_s: Option<f64>,
    pub error_rate: f64,
    pub within: bool,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub policy: String,
    pub minutes: Vec<Minute>,
    pub replica_seconds: f64,
    pub max_replicas: u32,
    pub scale_events: u32,
    pub requests: u64,
    pub errors: u64,
    /// Times KEDA's fallback replaced the metric.
    pub fallbacks: u32,
    /// The recommended policy (README, "Choosing a signal"; docs/simulation-results.md).
    pub recommended: bool,
    /// A lower bound rather than a policy one could run (`oracle`).
    pub bound: bool,
}

/// The `q`-quantile of `values` at rank `floor(q × (n − 1))` (the rank the store's
/// sketch answers for), reordering them; `None` when empty.
fn exact_quantile(values: &mut [u64], q: f64) -> Option<u64> {
    let last = values.len().checked_sub(1)?;
    let rank = ((q * last as f64).floor() as usize).min(last);
    Some(*values.select_nth_unstable(rank).1)
}

/// Replays `scenario` under `policy`. `Policy::StaticAuto` is resolved by the caller.
pub fn run(scenario: &Scenario, policy: &Policy, config: &Config) -> Run {
    run_lockstep(scenario, std::slice::from_ref(policy), config)
        .pop()
        .unwrap_or_else(|| Loop::new(scenario, policy, config, None).finish())
}

/// Replays `scenario` under `policy` only as long as it can still reach attainment
/// `goal`: the whole run when it does, `None` as soon as so many minutes are out of the
/// objective that it cannot (the same arithmetic as [`super::report::Summary`]'s
/// attainment, so the answer is the one the whole run would give).
pub fn run_if_reaches(
    scenario: &Scenario,
    policy: &Policy,
    config: &Config,
    goal: f64,
) -> Option<Run> {
    let mut arrivals = Arrivals::new(config);
    let mut one = Loop::new(scenario, policy, config, Some(goal));
    for (t, second) in scenario.seconds.iter().enumerate() {
        if !one.second(t, second, arrivals.second(t, second, &config.service)) {
            return None;
        }
    }
    Some(one.finish())
}

/// Replays `scenario` under every policy at once: each second's arrivals and service
/// times are drawn once and served by every policy's service (they are the same for
/// every policy anyway, common random numbers), so each extra policy costs only its own
/// queueing, sketch and HPA work. The runs are exactly those of [`run`] one at a time.
pub fn run_lockstep(scenario: &Scenario, policies: &[Policy], config: &Config) -> Vec<Run> {
    let mut arrivals = Arrivals::new(config);
    let mut loops: Vec<Loop> = policies
        .iter()
        .map(|p| Loop::new(scenario, p, config, None))
        .collect();
    for (t, second) in scenario.seconds.iter().enumerate() {
        let drawn = arrivals.second(t, second, &config.service);
        for one in &mut loops {
            one.second(t, second, drawn);
        }
    }
    loops.into_iter().map(Loop::finish).collect()
}

/// The `oracle` bound: each minute served by the smallest fleet whose p95 over that
/// minute is within the objective, the fleet ready from the minute's first request (it
/// knew the load in advance and had no start-up delay) and starting with empty queues.
/// The arrivals are the other policies' own (common random numbers); fleets are tried
/// from the previous minute's size up or down, so a slowly moving load costs two or three
/// fleets a minute. A minute that no fleet up to `maxReplicaCount` holds (the service time
/// alone passes the objective) gets one pod: every policy misses it, so holding it is no
/// cost a policy must pay, and the next minute's search still starts from the largest
/// fleet tried. No request carries over between minutes and nothing is lost at a
/// scale-down, so no policy reaches fewer replica-hours at the same attainment.
pub fn oracle(scenario: &Scenario, config: &Config) -> Run {
    let max = config.keda.max_replicas.max(1);
    let mut arrivals = Arrivals::new(config);
    let mut out = Run {
        policy: Policy::Oracle.to_string(),
        minutes: Vec::with_capacity(scenario.seconds.len() / 60 + 1),
        replica_seconds: 0.0,
        max_replicas: 0,
        scale_events: 0,
        requests: 0,
        errors: 0,
        fallbacks: 0,
        recommended: false,
        bound: true,
    };
    let mut minute: Vec<(Arrival, f64)> = Vec::new();
    let mut n = config.keda.min_replicas.max(1);
    let mut previous = None;
    for (start, seconds) in scenario.seconds.chunks(60).enumerate() {
        minute.clear();
        for (i, second) in seconds.iter().enumerate() {
            let t = start * 60 + i;
            for a in arrivals.second(t, second, &config.service) {
                minute.push((*a, second.slowdown));
            }
        }
        let t0 = (start * 60) as f64;
        // (p95 within, latencies, errors) of the minute on `pods` pods.
        let serve = |pods: u32| {
            let mut service = Service::new(config.service.clone(), 0, config.seed ^ 0xa5a5_5a5a);
            service.scale_to(pods, t0 - config.service.startup_s);
            let mut latencies = Vec::with_capacity(minute.len());
            let mut errors = 0u64;
            for (a, slowdown) in &minute {
                let o = service.serve_base(a.at_s, a.base_s, *slowdown);
                latencies.push((o.latency_s * 1e9) as u64);
                errors += u64::from(o.error);
            }
            let p95 = exact_quantile(&mut latencies, 0.95).map(|ns| ns as f64 / 1e9);
            (p95.is_none_or(|p| p <= config.objective_s), p95, errors)
        };
        let pods = if minute.is_empty() {
            0
        } else {
            n = n.clamp(1, max);
            if serve(n).0 {
                while n > 1 && serve(n - 1).0 {
                    n -= 1;
                }
                n
            } else {
                while n < max && !serve(n).0 {
                    n += 1;
                }
                if n == max && !serve(n).0 {
                    1
                } else {
                    n
                }
            }
        };
        let (within, p95_s, errors) = if pods == 0 {
            (true, None, 0)
        } else {
            serve(pods)
        };
        let len = seconds.len() as f64;
        out.replica_seconds += f64::from(pods) * len;
        out.max_replicas = out.max_replicas.max(pods);
        out.requests += minute.len() as u64;
        out.errors += errors;
        if previous.is_some_and(|p| p != pods) {
            out.scale_events += 1;
        }
        previous = Some(pods);
        out.minutes.push(Minute {
            rps: minute.len() as f64 / len,
            replicas: f64::from(pods),
            ready: f64::from(pods),
            cpu_percent: 0.0,
            p95_s,
            error_rate: if minute.is_empty() {
                0.0
            } else {
                errors as f64 / minute.len() as f64
            },
            within,
        });
    }
    out
}

/// The arrival stream and each request's base service time (before the scenario's
/// slowdown), drawn from the configuration's seeds, one second at a time.
struct Arrivals {
    gaps: Rng,
    service: Rng,
    buf: Vec<Arrival>,
}

impl Arrivals {
    fn new(config: &Config) -> Self {
        Arrivals {
            gaps: Rng::new(config.seed),
            service: Rng::new(config.seed ^ 0xa5a5_5a5a),
            buf: Vec::new(),
        }
    }

    /// Poisson arrivals at the second's rate within `[t, t + 1)`.
    fn second(&mut self, t: usize, second: &Second, model: &ServiceModel) -> &[Arrival] {
        self.buf.clear();
        if second.rps > 0.0 {
            let t0 = t as f64;
            let gap = 1.0 / second.rps;
            let mut at = t0 + self.gaps.exp1() * gap;
            while at < t0 + 1.0 {
                self.buf.push(Arrival {
                    at_s: at,
                    base_s: model.base_service_s(&mut self.service) * second.release,
                });
                at += self.gaps.exp1() * gap;
            }
        }
        &self.buf
    }
}

/// One policy's closed loop, advanced a second at a time.
struct Loop<'a> {
    policy: &'a Policy,
    config: &'a Config,
    /// Stop once attainment cannot reach this.
    goal: Option<f64>,
    total_minutes: f64,
    misses: usize,
    len: usize,
    service: Service,
    hpa: Autoscaler,
    ring: Ring,
    /// The minute's latencies (ns), for its exact p95.
    minute: Vec<u64>,
    /// Whether the policy reads latency (so each second's sketch is kept).
    sketch: bool,
    /// Whether the policy reads the pods that served each second (sloCapacity), so each
    /// second keeps them. Exists for speed (the simulator's 10 s target, BENCHMARKS.md):
    /// kept for every policy, the default set took about 45 % more CPU time.
    pods: bool,
    minute_errors: u64,
    minute_replicas: f64,
    minute_ready: f64,
    /// CPU seconds used and ready-pod seconds over the minute.
    minute_cpu_s: f64,
    minute_ready_s: f64,
    out: Run,
    failures: u32,
    last_active: f64,
    dynamic: bool,
}

impl<'a> Loop<'a> {
    fn new(scenario: &Scenario, policy: &'a Policy, config: &'a Config, goal: Option<f64>) -> Self {
        let hpa_min = config.keda.min_replicas.max(1);
        let start = match policy {
            Policy::Static(n) => *n,
            _ => hpa_min,
        };
        let len = scenario.seconds.len();
        Loop {
            policy,
            config,
            goal,
            total_minutes: len.div_ceil(60).max(1) as f64,
            misses: 0,
            len,
            service: Service::new(config.service.clone(), start, config.seed ^ 0xa5a5_5a5a),
            hpa: if config.behavior_unset {
                Autoscaler::unset(
                    config.behavior.scale_down.stabilization_s,
                    hpa_min,
                    config.keda.max_replicas,
                )
            } else {
                Autoscaler::new(config.behavior.clone(), hpa_min, config.keda.max_replicas)
            },
            ring: Ring::new(if matches!(policy, Policy::Recommended { .. }) {
                (capacity::HISTORY_S.max(capacity::GUARD_WINDOW_S) as usize)
                    .max(config.window_s as usize)
            } else {
                config.window_s.max(config.cpu_window_s) as usize
            }),
            minute: Vec::new(),
            sketch: policy.reads_latency(),
            pods: matches!(policy, Policy::Recommended { .. }),
            minute_errors: 0,
            minute_replicas: 0.0,
            minute_ready: 0.0,
            minute_cpu_s: 0.0,
            minute_ready_s: 0.0,
            out: Run {
                policy: policy.to_string(),
                minutes: Vec::with_capacity(len / 60 + 1),
                replica_seconds: 0.0,
                max_replicas: start,
                scale_events: 0,
                requests: 0,
                errors: 0,
                fallbacks: 0,
                recommended: policy.is_recommended(),
                bound: false,
            },
            failures: 0,
            last_active: 0.0,
            dynamic: !matches!(
                policy,
                Policy::Static(_) | Policy::StaticAuto | Policy::Oracle
            ),
        }
    }

    fn finish(self) -> Run {
        self.out
    }

    /// Serves second `t`'s arrivals, closes the minute, and lets KEDA and the HPA act.
    /// False once the goal is out of reach.
    fn second(&mut self, t: usize, second: &Second, arrivals: &[Arrival]) -> bool {
        let config = self.config;
        let policy = self.policy;
        let keda = &config.keda;
        let service = &mut self.service;
        let ring = &mut self.ring;
        let out = &mut self.out;
        let t0 = t as f64;
        ring.advance(t);
        let (mut errors, mut cpu_s) = (0, 0.0);
        for a in arrivals {
            let o = service.serve_base(a.at_s, a.base_s, second.slowdown);
            let ns = (o.latency_s * 1e9) as u64;
            let b = ring.completion(t, (a.at_s + o.latency_s) as usize);
            if self.sketch {
                b.latency.add(ns);
            }
            b.requests += 1;
            b.busy_s += o.latency_s;
            b.errors += u64::from(o.error);
            if let Some(pod) = o.pod.filter(|p| self.pods && !b.pods.contains(p)) {
                b.pods.push(pod);
            }
            self.minute.push(ns);
            errors += u64::from(o.error);
            cpu_s += o.cpu_s;
        }
        // CPU is what metrics-server sees used in the second, not filed by completion.
        ring.arrival(t).cpu_s += cpu_s;
        out.requests += arrivals.len() as u64;
        out.errors += errors;
        self.minute_errors += errors;
        self.minute_cpu_s += cpu_s;
        self.minute_ready_s += f64::from(service.ready(t0));
        let replicas = service.replicas();
        out.replica_seconds += f64::from(replicas);
        self.minute_replicas += f64::from(replicas);
        self.minute_ready += f64::from(service.ready(t0 + 1.0));

        let now = t + 1;
        if now.is_multiple_of(60) || now == self.len {
            let len = (now - 1) % 60 + 1;
            let n = self.minute.len();
            let p95_s = exact_quantile(&mut self.minute, 0.95).map(|ns| ns as f64 / 1e9);
            out.minutes.push(Minute {
                rps: n as f64 / len as f64,
                replicas: self.minute_replicas / len as f64,
                ready: self.minute_ready / len as f64,
                cpu_percent: if self.minute_ready_s > 0.0 {
                    100.0 * self.minute_cpu_s
                        / (self.minute_ready_s * config.service.cpu_request_cores)
                } else {
                    0.0
                },
                p95_s,
                error_rate: if n == 0 {
                    0.0
                } else {
                    self.minute_errors as f64 / n as f64
                },
                within: p95_s.is_none_or(|p| p <= config.objective_s),
            });
            self.minute.clear();
            (self.minute_errors, self.minute_replicas, self.minute_ready) = (0, 0.0, 0.0);
            (self.minute_cpu_s, self.minute_ready_s) = (0.0, 0.0);
            if out.minutes.last().is_some_and(|m| !m.within) {
                self.misses += 1;
                let reachable = (self.total_minutes - self.misses as f64) / self.total_minutes;
                if self.goal.is_some_and(|g| reachable < g) {
                    return false;
                }
            }
        }
        if !self.dynamic {
            return true;
        }
        let hpa_sync = config.hpa_sync_s.max(1) as usize;
        let polling = keda.polling_interval_s.max(1) as usize;
        let now_s = now as f64;
        let mut next = replicas;
        // KEDA's operator loop: activation and scale to zero (only with minReplicaCount 0).
        if keda.min_replicas == 0
            && now.is_multiple_of(polling)
            && !matches!(policy, Policy::Cpu { .. })
        {
            // No data reads as 0 (inactive) only where the scaler answers 0 for it (rps,
            // concurrency: `ignoreNullValues`); for a latency, an SLO ratio or sloCapacity it
            // answers an error, and KEDA neither activates nor scales to zero on an error
            // (`pkg/scaling/executor/scale_scaledobjects.go`: `!isActive && isError`).
            let reading = read(policy, config, ring, now).or(match policy {
                Policy::Rps { .. } | Policy::Concurrency { .. } => Some(0.0),
                _ => None,
            });
            match reading {
                Some(v) if v > keda.activation => {
                    self.last_active = now_s;
                    if replicas == 0 {
                        next = 1;
                    }
                }
                // Strictly past the cooldown (`scaleToZeroOrIdle`: `LastActiveTime.Add(
                // cooldownPeriod).Before(now)`).
                Some(_)
                    if replicas > 0 && now_s - self.last_active > f64::from(keda.cooldown_s) =>
                {
                    next = 0;
                }
                _ => {}
            }
        }
        // The HPA: only while the target has pods (KEDA owns 0 ↔ 1).
        if next == replicas && replicas > 0 && now.is_multiple_of(hpa_sync) {
            let desired = match policy {
                Policy::Cpu { target_percent } => {
                    let (w, covered) = ring.counts(now, config.cpu_window_s as usize);
                    let ready = service.ready(now_s);
                    let capacity =
                        covered as f64 * f64::from(ready) * config.service.cpu_request_cores;
                    (capacity > 0.0).then(|| {
                        let utilization = 100.0 * w.cpu_s / capacity;
                        desired_replicas_utilization(replicas, ready, utilization, *target_percent)
                    })
                }
                _ => {
                    let value = read(policy, config, ring, now);
                    let (metric_type, target) = match policy {
                        Policy::Rps { per_pod } => (MetricType::AverageValue, *per_pod),
                        Policy::Concurrency { per_pod } => (MetricType::AverageValue, *per_pod),
                        Policy::Recommended { .. } => (MetricType::AverageValue, 1.0),
                        Policy::P95 { target_s } => (
                            MetricType::Value,
                            target_s.unwrap_or(0.8 * config.objective_s),
                        ),
                        Policy::Slo { target } => (MetricType::Value, *target),
                        _ => (MetricType::Value, f64::NAN),
                    };
                    let ready = service.ready(now_s);
                    value.map(|v| desired_replicas_ready(metric_type, replicas, ready, v, target))
                }
            };
            let desired = match (desired, keda.fallback) {
                (Some(d), _) => {
                    self.failures = 0;
                    Some(d)
                }
                (None, Some((threshold, fallback))) => {
                    self.failures += 1;
                    (self.failures > threshold).then(|| {
                        out.fallbacks += 1;
                        fallback
                    })
                }
                (None, None) => None,
            };
            if let Some(d) = desired {
                next = self.hpa.reconcile(now_s, replicas, d);
            }
        }
        if next != replicas {
            service.scale_to(next, now_s);
            out.scale_events += 1;
            out.max_replicas = out.max_replicas.max(next);
        }
        true
    }
}
