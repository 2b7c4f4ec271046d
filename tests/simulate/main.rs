//! `slo-scaler simulate` against closed forms and on the built-in seed scenario.
//!
//! - The queueing model against Erlang C: one pod with c workers fed Poisson arrivals is
//!   an M/M/c queue, whose waiting time has `P(W > t) = C(c, a) · exp(−(cμ − λ) t)`.
//! - The seed scenario (`diurnal`, 24 h of order-service traffic): the p95 policy holds
//!   the objective; the smallest static fleet holding 99 % of minutes is the smallest.

use slo_scaler::simulate::engine::{self, Config};
use slo_scaler::simulate::policy::Policy;
use slo_scaler::simulate::report::Summary;
use slo_scaler::simulate::scenario;
use slo_scaler::simulate::service::{
    erlang_c, mmc_wait_quantile, Rng, Service, ServiceDist, ServiceModel,
};
use slo_scaler::simulate::smallest_static;

/// Simulated waiting-time quantiles of one pod with `c` workers at utilisation `rho`
/// (mean service 50 ms), compared with the closed form within 5 %.
fn check(c: u32, rho: f64, quantiles: &[f64]) {
    let mu = 20.0;
    let lambda = rho * f64::from(c) * mu;
    let model = ServiceModel {
        workers_per_pod: c,
        mean_service_s: 1.0 / mu,
        dist: ServiceDist::Exponential,
        cpu_share: 1.0,
        cpu_request_cores: 1.0,
        timeout_s: 1e6,
        startup_s: 0.0,
    };
    let mut service = Service::new(model, 1, 42 + u64::from(c));
    let mut arrivals = Rng::new(7 + (rho * 100.0) as u64);
    // Samples grow with the queue's relaxation time, which grows like 1 / (1 − ρ).
    let n = (400_000.0 / (1.0 - rho)) as usize;
    let mut t = 0.0;
    let mut waits: Vec<f64> = (0..n)
        .map(|_| {
            t += arrivals.exp1() / lambda;
            service.serve(t, 1.0).wait_s
        })
        .collect();
    // The first 1 % is the queue filling from empty.
    waits.drain(..n / 100);
    waits.sort_by(f64::total_cmp);
    let waited = waits.iter().filter(|w| **w > 0.0).count() as f64 / waits.len() as f64;
    let pc = erlang_c(c, lambda / mu);
    assert!(
        (waited - pc).abs() <= 0.05 * pc,
        "c={c} ρ={rho}: P(wait) {waited:.4} vs Erlang C {pc:.4}"
    );
    for &p in quantiles {
        let want = mmc_wait_quantile(c, lambda, mu, p);
        let got = waits[(p * (waits.len() - 1) as f64).floor() as usize];
        assert!(
            (got - want).abs() <= 0.05 * want,
            "c={c} ρ={rho} p{}: simulated {:.2} ms vs closed form {:.2} ms",
            p * 100.0,
            got * 1e3,
            want * 1e3
        );
    }
}

#[test]
fn mmc_waiting_time_percentiles_match_erlang_c() {
    // Quantiles where the closed form is well away from the atom at zero
    // (ln(C / (1 − p)) ≥ 1), so a 5 % bound tests the tail rather than C alone.
    check(1, 0.5, &[0.9, 0.95, 0.99]);
    check(1, 0.8, &[0.9, 0.95, 0.99]);
    check(4, 0.5, &[0.95, 0.99]);
    check(4, 0.7, &[0.9, 0.95, 0.99]);
    check(4, 0.8, &[0.9, 0.95, 0.99]);
    check(4, 0.9, &[0.9, 0.95, 0.99]);
    check(8, 0.7, &[0.95, 0.99]);
    check(8, 0.9, &[0.9, 0.95, 0.99]);
}

/// The issue asks three things of the seed scenario: the p95 policy holds ≥ 99 % of
/// minutes, at ≤ 0.8× the replica-hours of the smallest static fleet that also holds
/// 99 %, and beats CPU scaling on attainment. With the default model the first holds; the
/// measured figures for the other two (0.81× the static fleet; CPU at 70 % holds 100 % at
/// 1.2× the static cost) are reported in README and SIMULATION.md rather than asserted,
/// because the model does not meet them and the defaults were not tuned until it did.
#[test]
fn seed_scenario_p95_policy_holds_the_objective() {
    let scenario = scenario::builtin("diurnal").expect("built-in diurnal");
    let config = Config::default();
    let fleet = Summary::of(&smallest_static(&scenario, &config, 0.99));
    let p95 = Summary::of(&engine::run(
        &scenario,
        &Policy::P95 { target_s: None },
        &config,
    ));
    let report = format!("static {fleet:?}\np95 {p95:?}");
    assert!(fleet.slo_attainment >= 0.99, "{report}");
    // The smallest fleet: one pod fewer misses the goal.
    let smaller = Summary::of(&engine::run(
        &scenario,
        &Policy::Static(fleet.max_replicas - 1),
        &config,
    ));
    assert!(
        smaller.slo_attainment < 0.99,
        "{report}\nsmaller {smaller:?}"
    );
    assert!(
        p95.slo_attainment >= 0.99,
        "p95 holds 99 % of minutes\n{report}"
    );
    eprintln!(
        "p95 policy: {:.2} % of minutes at {:.2}× the static fleet's replica-hours",
        p95.slo_attainment * 100.0,
        p95.replica_hours / fleet.replica_hours
    );
}
