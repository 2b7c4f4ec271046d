//! A KEDA-shaped load on the real scaler: the release binary (`slo-scaler serve`, spawned
//! on loopback ports so its RSS and its threads are its own), N ScaledObjects polled the
//! way KEDA and the HPA poll them, OTLP spans arriving at a set rate, a Prometheus fake
//! that counts what it is asked; then saturation throughput next to two baselines.
//!
//! Run: `cargo bench --bench keda_load -- [--duration 60s] [--scaled-objects 1500]
//! [--spans-per-second 200000] [--polling-interval 30s] [--connections 1] [--json]`.
//! The h2load comparison's helpers (request bodies, the probe, the bare service on its own)
//! are the `h2load` bench (`benches/h2load.rs`); the bare service is `common/bare.rs`.
//!
//! This file is the run in order; each step is a module of this folder: `planning` ((e)),
//! `polled` ((b), (c), (d) while `keda` polls and the `sender` sends spans), `saturation`
//! ((a)), then the `report`. The scaler process is `scaler`, its Prometheus `prometheus`.
//!
//! KEDA's shape, from KEDA's own code (kedacore/keda, `pkg/scalers/external_scaler.go`):
//! `getClientForConnectionPool` keeps one `grpc.ClientConn` per scaler address (and TLS
//! settings) in `connectionPool`, shared by every ScaledObject, so one HTTP/2 connection
//! carries every call (`--connections` defaults to 1); `GetMetricsAndActivity` sends
//! `GetMetrics` then `IsActive` on it. The scale loop (`pkg/scaling/scale_handler.go`,
//! `checkScalers` → `getScalerState`) asks the metric spec, then `GetMetricsAndActivity`,
//! every `pollingInterval`; the HPA's sync (every 15 s) reaches the same
//! `GetMetricsAndActivity` through `GetScaledObjectMetrics`. Each ScaledObject therefore
//! runs GetMetricSpec → GetMetrics → IsActive every `pollingInterval` and again every 15 s,
//! at a random phase, as KEDA's goroutine per ScaledObject and the HPA's sync would.
//!
//! KEDA's calls come from a thread of this process with a single-threaded runtime and
//! connections of its own, as from a process of its own; the planning calls and (a)'s
//! saturation client run on the main runtime.
//!
//! The span sender stands in for applications' exporters on other nodes; it runs 10 nice
//! values below the rest of this process so its CPU does not stretch the latencies (b)
//! measures, and what it delivers is still counted in (d). (b)'s same-run baseline is tonic's
//! own Health/Check on the same server and connection, at the same rate, in the same phases.
//!
//! KEDA's built-in prometheus scaler (`pkg/scalers/prometheus_scaler.go`) runs one query
//! (`ExecutePromQuery`) per `GetMetricsAndActivity`, with no cache: the comparison in (c)
//! counts that for the same ScaledObjects and the same calls.

#![forbid(unsafe_code)]

#[path = "../common/bare.rs"]
mod bare;
#[path = "../common/raw_export.rs"]
mod raw_export;
#[path = "../common/spans.rs"]
mod spans;
#[path = "../common/workload.rs"]
mod workload;

mod args;
mod keda;
mod planning;
mod polled;
mod prometheus;
mod record;
mod report;
mod saturation;
mod scaler;
mod sender;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use args::{parse_args, Args};
use planning::{feed_every_service, plan_every_scaled_object};
use polled::keda_shaped_phase;
use prometheus::fake_prometheus;
use report::{print_report, uptime, Report};
use saturation::saturation;
use scaler::Scaler;

/// Polling before the measured phase (longer than the store's 6 s rate settle).
const WARM_UP: Duration = Duration::from_secs(8);

/// The scaler's `--cache-ttl` in this run.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// The whole run, step by step: (e) while planning, (b), (c), (d) while KEDA polls and
/// spans arrive, then (a) at saturation.
async fn run(args: Args) -> Report {
    let mut report = Report::new(&args);
    let queries = Arc::new(AtomicU64::new(0));
    let prometheus = fake_prometheus(Arc::clone(&queries)).await;
    let scaler = Scaler::start(prometheus, args.scaled_objects).await;
    eprintln!("scaler pid {} on {}", scaler.child.id(), scaler.grpc);
    let (otlp_channels, bodies) = feed_every_service(&scaler, &mut report).await;
    let planned = plan_every_scaled_object(&args, &scaler, &mut report).await;
    keda_shaped_phase(
        &args,
        &scaler,
        &queries,
        &planned,
        (otlp_channels, bodies),
        &mut report,
    )
    .await;
    saturation(&args, &scaler, &planned, &mut report).await;
    report.load_after = uptime();
    drop(scaler);
    report
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keda_load: {e}");
            std::process::exit(64);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(args.clone()));
    print_report(&report, &args);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
}
