//! `slo-scaler simulate`: replay a traffic scenario through a model of the service, KEDA
//! and the HPA for several scaling policies, and report what each would have done.
//!
//! - [`scenario`]: built-in scenarios and `t,rps` CSV files.
//! - [`service`]: the queueing model (M/G/c with a timeout, start-up delay).
//! - [`policy`]: `--policy` values.
//! - [`engine`]: the closed loop (signals through the store's sketch and windows).
//! - [`report`]: the table, `summary.json`, the CSV and the SVG plots.
//!
//! SIMULATION.md describes the model, its assumptions and its limits.

pub mod engine;
pub mod policy;
pub mod report;
pub mod scenario;
pub mod service;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::config::duration_arg;
use crate::signal::hpa::Behavior;
use engine::{Config, Keda, Run};
use policy::Policy;
use report::Summary;
use scenario::Scenario;
use service::{ServiceDist, ServiceModel};

#[derive(Debug, Error)]
pub enum SimulateError {
    #[error("scenario {name} line {line}: {detail}")]
    Scenario {
        name: String,
        line: usize,
        detail: String,
    },
    #[error("scenario {name:?} is neither a built-in ({}) nor a readable file: {detail}", scenario::BUILTIN.join(", "))]
    UnknownScenario { name: String, detail: String },
    #[error("policy {value:?}: {detail}")]
    Policy { value: String, detail: String },
    #[error("{key} {value}: {detail}")]
    Invalid {
        key: &'static str,
        value: String,
        detail: &'static str,
    },
    #[error("cannot write {path}: {detail}")]
    Write { path: String, detail: String },
    #[error("cannot plot {path}: {detail}")]
    Plot { path: String, detail: String },
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// A built-in scenario (diurnal, flash-crowd, slow-dependency, release-regression) or a CSV file with
    /// the header t,rps (optionally a third column, slowdown).
    #[arg(long, default_value = "diurnal")]
    pub scenario: String,
    /// The p95 latency objective.
    #[arg(long, value_parser = duration_arg, default_value = "300ms")]
    pub objective: Duration,
    /// An error-rate objective (a ratio, 0.01 for 1 %) for the slo policy.
    #[arg(long)]
    pub error_objective: Option<f64>,
    /// A policy to compare (repeatable): static:N, static:auto, cpu:70%, rps:60,
    /// p95[:240ms], slo[:0.8], concurrency:3, recommended[:POD_CONCURRENCY] (the
    /// sloCapacity signal; podConcurrency defaults to --workers-per-pod), oracle.
    /// Default: static:auto cpu:70% rps:60 p95 slo:0.8 concurrency:3 recommended oracle.
    // The brackets are `--help`'s optional parts, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// Write summary.json, timeseries.csv and the plots (SVG and PNG) here as well.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Workers (concurrent requests) per pod.
    #[arg(long, default_value_t = 4)]
    pub workers_per_pod: u32,
    /// Mean service time.
    #[arg(long, value_parser = duration_arg, default_value = "50ms")]
    pub service_time: Duration,
    /// Service-time distribution: exponential or lognormal:SIGMA.
    #[arg(long, default_value = "exponential")]
    pub service_dist: String,
    /// Share of the service time spent on CPU (the rest waits on dependencies, holding
    /// its worker). Measure it as CPU seconds per request / mean service time.
    #[arg(long, default_value_t = 0.2)]
    pub cpu_share: f64,
    /// CPU request per pod, in cores.
    #[arg(long, default_value_t = 1.0)]
    pub cpu_request: f64,
    /// Requests waiting longer than this give up (errors).
    #[arg(long, value_parser = duration_arg, default_value = "2s")]
    pub timeout: Duration,
    /// Pod start-up delay (creation to ready).
    #[arg(long, value_parser = duration_arg, default_value = "30s")]
    pub startup: Duration,
    /// KEDA minReplicaCount (0 allows scale to zero).
    #[arg(long, default_value_t = 2)]
    pub min_replicas: u32,
    /// KEDA maxReplicaCount.
    #[arg(long, default_value_t = 30)]
    pub max_replicas: u32,
    /// KEDA pollingInterval.
    #[arg(long, value_parser = duration_arg, default_value = "30s")]
    pub polling_interval: Duration,
    /// KEDA cooldownPeriod.
    #[arg(long, value_parser = duration_arg, default_value = "300s")]
    pub cooldown: Duration,
    /// The trigger's activation threshold.
    #[arg(long, default_value_t = 0.0)]
    pub activation: f64,
    /// KEDA fallback.replicas (no fallback when unset).
    #[arg(long)]
    pub fallback_replicas: Option<u32>,
    /// KEDA fallback.failureThreshold.
    #[arg(long, default_value_t = 3)]
    pub failure_threshold: u32,
    /// The HPA controller's sync period.
    #[arg(long, value_parser = duration_arg, default_value = "15s")]
    pub hpa_sync: Duration,
    /// behavior.scaleDown.stabilizationWindowSeconds (with --hpa-behavior unset, the
    /// controller's downscale stabilisation window).
    #[arg(long, value_parser = duration_arg, default_value = "300s")]
    pub scale_down_stabilization: Duration,
    /// The HPA's spec.behavior: `set` (the ScaledObject sets
    /// advanced.horizontalPodAutoscalerConfig.behavior, as the examples do: the
    /// autoscaling/v2 rules) or `unset` (KEDA's HPA without one: the controller's older
    /// rules, at most max(2 × current, 4) pods a sync and the highest recommendation of the
    /// window).
    #[arg(long, default_value = "set", value_parser = ["set", "unset"])]
    pub hpa_behavior: String,
    /// The trace signals' `window` (sloCapacity reads windows of its own and takes none).
    #[arg(long, value_parser = duration_arg, default_value = "60s")]
    pub window: Duration,
    /// The CPU usage window (metrics-server).
    #[arg(long, value_parser = duration_arg, default_value = "30s")]
    pub cpu_window: Duration,
    /// The attainment static:auto must reach.
    #[arg(long, default_value_t = 0.99)]
    pub goal: f64,
    /// Seed of the arrival and service-time generators.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
}

/// The most workers a simulated pod has: each is a slot the simulation keeps, per pod.
const MAX_WORKERS_PER_POD: u32 = 10_000;

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
}

impl SimulateArgs {
    /// The model configuration, every value checked.
    pub fn config(&self) -> Result<Config, SimulateError> {
        let invalid = |key, value: String, detail| SimulateError::Invalid { key, value, detail };
        let dist = match self.service_dist.split_once(':') {
            None if self.service_dist == "exponential" => ServiceDist::Exponential,
            Some(("lognormal", s)) => match s.parse::<f64>() {
                Ok(sigma) if sigma.is_finite() && sigma > 0.0 => ServiceDist::LogNormal { sigma },
                _ => {
                    return Err(invalid(
                        "service-dist",
                        self.service_dist.clone(),
                        "want exponential or lognormal:SIGMA with SIGMA > 0",
                    ))
                }
            },
            _ => {
                return Err(invalid(
                    "service-dist",
                    self.service_dist.clone(),
                    "want exponential or lognormal:SIGMA with SIGMA > 0",
                ))
            }
        };
        if !(1..=MAX_WORKERS_PER_POD).contains(&self.workers_per_pod) {
            return Err(invalid(
                "workers-per-pod",
                self.workers_per_pod.to_string(),
                "must be within 1..=10000",
            ));
        }
        if self.service_time.is_zero() {
            return Err(invalid("service-time", "0s".into(), "must be above zero"));
        }
        if !(0.0..=1.0).contains(&self.cpu_share) {
            return Err(invalid(
                "cpu-share",
                self.cpu_share.to_string(),
                "must be within 0..1",
            ));
        }
        if !(self.cpu_request.is_finite() && self.cpu_request > 0.0) {
            return Err(invalid(
                "cpu-request",
                self.cpu_request.to_string(),
                "must be above zero",
            ));
        }
        if self.max_replicas == 0 || self.max_replicas < self.min_replicas {
            return Err(invalid(
                "max-replicas",
                self.max_replicas.to_string(),
                "must be at least 1 and at least min-replicas",
            ));
        }
        if let Some(e) = self.error_objective {
            if !(e.is_finite() && e > 0.0 && e <= 1.0) {
                return Err(invalid(
                    "error-objective",
                    e.to_string(),
                    "must be a ratio within (0, 1]",
                ));
            }
        }
        if self.objective.is_zero() {
            return Err(invalid("objective", "0s".into(), "must be above zero"));
        }
        for (key, d) in [
            ("window", self.window),
            ("cpu-window", self.cpu_window),
            ("hpa-sync", self.hpa_sync),
            ("polling-interval", self.polling_interval),
        ] {
            if d.as_secs() == 0 {
                return Err(invalid(key, format!("{d:?}"), "must be at least 1s"));
            }
        }
        let mut behavior = Behavior::default();
        behavior.scale_down.stabilization_s = secs(self.scale_down_stabilization);
        Ok(Config {
            behavior_unset: self.hpa_behavior == "unset",
            service: ServiceModel {
                workers_per_pod: self.workers_per_pod,
                mean_service_s: self.service_time.as_secs_f64(),
                dist,
                cpu_share: self.cpu_share,
                cpu_request_cores: self.cpu_request,
                timeout_s: self.timeout.as_secs_f64(),
                startup_s: self.startup.as_secs_f64(),
            },
            keda: Keda {
                polling_interval_s: secs(self.polling_interval),
                cooldown_s: secs(self.cooldown),
                min_replicas: self.min_replicas,
                max_replicas: self.max_replicas,
                activation: self.activation,
                fallback: self.fallback_replicas.map(|r| (self.failure_threshold, r)),
            },
            behavior,
            hpa_sync_s: secs(self.hpa_sync),
            window_s: secs(self.window),
            cpu_window_s: secs(self.cpu_window),
            objective_s: self.objective.as_secs_f64(),
            error_objective: self.error_objective,
            seed: self.seed,
        })
    }

    pub fn scenario(&self) -> Result<Scenario, SimulateError> {
        if let Some(s) = scenario::builtin(&self.scenario) {
            return Ok(s);
        }
        let text = std::fs::read_to_string(&self.scenario).map_err(|e| {
            SimulateError::UnknownScenario {
                name: self.scenario.clone(),
                detail: e.to_string(),
            }
        })?;
        scenario::parse_csv(&self.scenario, &text)
    }

    pub fn policies(&self) -> Result<Vec<Policy>, SimulateError> {
        if self.policies.is_empty() {
            return Ok(Policy::defaults());
        }
        self.policies.iter().map(|p| Policy::parse(p)).collect()
    }
}

/// The smallest static fleet whose attainment reaches `goal`, or the maximum when none
/// does. Attainment grows with the fleet, so a search: doubling from 1 until a fleet
/// reaches the goal, then halving the gap below it. A fleet that falls short stops as soon
/// as it cannot reach the goal, so the short ones (most probes) cost a fraction of a run.
pub fn smallest_static(scenario: &Scenario, config: &Config, goal: f64) -> Run {
    let max = config.keda.max_replicas.max(1);
    let probe = |n: u32| engine::run_if_reaches(scenario, &Policy::Static(n), config, goal);
    // The largest fleet known to fall short (0: none yet) and the smallest that holds.
    let mut short = 0u32;
    let mut best: Option<(u32, Run)> = None;
    let mut n = 1u32;
    while best.is_none() {
        match probe(n) {
            Some(run) => best = Some((n, run)),
            None if n == max => break,
            None => {
                short = n;
                n = n.saturating_mul(2).min(max);
            }
        }
    }
    let mut best = match best {
        Some((mut hi, mut run)) => {
            while hi - short > 1 {
                let mid = short + (hi - short) / 2;
                match probe(mid) {
                    Some(r) => (hi, run) = (mid, r),
                    None => short = mid,
                }
            }
            run
        }
        None => engine::run(scenario, &Policy::Static(max), config),
    };
    best.policy = if Summary::of(&best).slo_attainment >= goal {
        format!("{} (smallest ≥{}%)", best.policy, goal * 100.0)
    } else {
        format!("{} (max; none ≥{}%)", best.policy, goal * 100.0)
    };
    best
}

/// Runs every policy over the scenario: each offline policy (`static:auto`'s search, the
/// `oracle` bound) on a thread of its own, the other policies in lockstep
/// ([`engine::run_lockstep`]) in as many groups as there are cores, balanced by
/// [`groups`]. Each run is deterministic and shares nothing but the read-only scenario and
/// configuration, so the result is the same as one policy after the other.
pub fn simulate(scenario: &Scenario, policies: &[Policy], config: &Config, goal: f64) -> Vec<Run> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others: Vec<(usize, Policy)> = policies
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, p)| !p.is_offline())
        .collect();
    let groups = groups(others, cores);
    let mut runs: Vec<Option<Run>> = vec![None; policies.len()];
    std::thread::scope(|s| {
        let offline_handles: Vec<_> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_offline())
            .map(|(i, p)| {
                let handle = s.spawn(move || match p {
                    Policy::Oracle => engine::oracle(scenario, config),
                    _ => smallest_static(scenario, config, goal),
                });
                (i, handle)
            })
            .collect();
        let group_handles: Vec<_> = groups
            .into_iter()
            .map(|mine| {
                s.spawn(move || {
                    let (index, group): (Vec<usize>, Vec<Policy>) = mine.into_iter().unzip();
                    index
                        .into_iter()
                        .zip(engine::run_lockstep(scenario, &group, config))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A run has no panicking path; were one to panic, re-raise it here as the
        // sequential loop would have.
        for (i, h) in offline_handles {
            runs[i] = Some(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        for h in group_handles {
            for (i, run) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                runs[i] = Some(run);
            }
        }
    });
    runs.into_iter().flatten().collect()
}

/// Splits the closed-loop policies (with their indices) into at most `cores` lockstep
/// groups of about equal work, the heaviest first into the lightest group (a policy that
/// reads latency counts twice: its sketch costs about what its queue does). As many
/// groups as cores, not only the cores the offline threads leave: the lockstep work is
/// the largest of the default set's (BENCHMARKS.md), so one group of it was the run's
/// critical path on two cores; each extra group draws the arrivals again (a tenth of a
/// replay).
fn groups(mut others: Vec<(usize, Policy)>, cores: usize) -> Vec<Vec<(usize, Policy)>> {
    let weight = |p: &Policy| 1 + usize::from(p.reads_latency());
    let n = cores.clamp(1, others.len().max(1));
    let mut groups: Vec<(usize, Vec<(usize, Policy)>)> = vec![(0, Vec::new()); n];
    // Stable: equal weights keep the order given.
    others.sort_by_key(|(_, p)| std::cmp::Reverse(weight(p)));
    for (i, p) in others {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(w, _)| *w) {
            lightest.0 += weight(&p);
            lightest.1.push((i, p));
        }
    }
    groups
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
}

/// `slo-scaler simulate`: returns the table to print.
pub fn run(args: &SimulateArgs) -> Result<String, SimulateError> {
    let config = args.config()?;
    let scenario = args.scenario()?;
    let policies = args.policies()?;
    let runs = simulate(&scenario, &policies, &config, args.goal);
    let rows = Summary::all(&runs);
    let mut text = report::table(&scenario.name, config.objective_s, &rows);
    if let Some(dir) = &args.out {
        report::write(dir, &scenario.name, config.objective_s, &runs, &rows)?;
        text.push_str(&format!(
            "\nwrote {0}/summary.json, {0}/timeseries.csv, {0}/load.svg, {0}/load.png, {0}/replicas.svg, {0}/replicas.png, {0}/p95.svg, {0}/p95.png\n",
            dir.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_set() -> Vec<(usize, Policy)> {
        [
            "cpu:70%",
            "rps:60",
            "p95",
            "slo:0.8",
            "concurrency:3",
            "recommended",
        ]
        .iter()
        .map(|s| Policy::parse(s).expect("a built-in policy"))
        .enumerate()
        .collect()
    }

    #[test]
    fn groups_hold_every_policy_once_in_at_most_one_group_a_core() {
        for cores in [1, 2, 3, 4, 8, 64] {
            let groups = groups(default_set(), cores);
            assert_eq!(groups.len(), cores.min(6), "{cores} cores");
            let mut seen: Vec<usize> = groups.iter().flatten().map(|(i, _)| *i).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..6).collect::<Vec<_>>(), "{cores} cores");
        }
        assert!(groups(Vec::new(), 2).is_empty());
    }

    #[test]
    fn two_cores_split_the_latency_readers() {
        // The three policies that keep a sketch weigh twice: 9 units, split 5 and 4, and no
        // group gets all three.
        let groups = groups(default_set(), 2);
        let readers: Vec<usize> = groups
            .iter()
            .map(|g| g.iter().filter(|(_, p)| p.reads_latency()).count())
            .collect();
        assert_eq!(readers.iter().sum::<usize>(), 3);
        assert!(readers.iter().all(|&n| n < 3), "{groups:?}");
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3]);
    }
}
