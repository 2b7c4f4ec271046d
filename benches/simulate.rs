//! The simulator on the 24-hour seed scenario at 1 s resolution: one policy per run
//! (the p95 policy, the closed loop with the most HPA work), so the figure scales with
//! the number of policies compared.
//!
//! `cargo bench --bench simulate`

use criterion::{criterion_group, criterion_main, Criterion};
use slo_scaler::simulate::engine::{self, Config};
use slo_scaler::simulate::policy::Policy;
use slo_scaler::simulate::scenario;

fn diurnal_24h(c: &mut Criterion) {
    let scenario = scenario::builtin("diurnal").expect("built-in diurnal");
    let config = Config::default();
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10);
    g.bench_function("diurnal_24h_p95_policy", |b| {
        b.iter(|| engine::run(&scenario, &Policy::P95 { target_s: None }, &config))
    });
    g.finish();
}

criterion_group!(benches, diurnal_24h);
criterion_main!(benches);
