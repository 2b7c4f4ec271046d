//! The simulator on the 24-hour seed scenario at 1 s resolution: one policy per run (the
//! p95 policy, the closed loop with the most work per request: its latencies go into the
//! store's sketch), and the default set as `slo-scaler simulate` runs it (`static:auto`'s
//! search beside the other policies in lockstep, on threads).
//!
//! `cargo bench --bench simulate`

use criterion::{criterion_group, criterion_main, Criterion};
use slo_scaler::simulate::engine::{self, Config};
use slo_scaler::simulate::policy::Policy;
use slo_scaler::simulate::{scenario, simulate};

fn diurnal_24h(c: &mut Criterion) {
    let scenario = scenario::builtin("diurnal").expect("built-in diurnal");
    let config = Config::default();
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10);
    g.bench_function("diurnal_24h_p95_policy", |b| {
        b.iter(|| engine::run(&scenario, &Policy::P95 { target_s: None }, &config))
    });
    g.bench_function("diurnal_24h_default_set", |b| {
        b.iter(|| simulate(&scenario, &Policy::defaults(), &config, 0.99))
    });
    g.finish();
}

criterion_group!(benches, diurnal_24h);
criterion_main!(benches);
