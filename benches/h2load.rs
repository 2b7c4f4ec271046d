//! The helpers of the h2load comparison (`scripts/h2load-bench.sh`, BENCHMARKS.md "h2load:
//! cache-hit GetMetrics vs Health/Check on the same server"); no measurement of its own.
//!
//! `cargo bench --bench h2load -- --write-bodies DIR` writes the gRPC-framed request bodies
//! h2load sends (a GetMetrics of an otlp p95 trigger, an empty `HealthCheckRequest`) and the
//! spans that give that trigger a value; `--probe ADDR` makes one real-client call of those
//! requests and prints the answers (failing on an error, which h2load cannot see: gRPC
//! errors travel in trailers); `--serve-bare ADDR` serves the bare ExternalScaler
//! (`common/bare.rs`) and tonic's Health on ADDR until killed, h2load's same-run baseline.

#![forbid(unsafe_code)]

#[path = "common/bare.rs"]
mod bare;
#[path = "common/spans.rs"]
mod spans;
#[path = "common/workload.rs"]
#[allow(dead_code)] // `so` only: the workload itself is keda_load's
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use prost::Message;
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use spans::{service_spans, unix_ns};
use workload::so;

/// The ScaledObject whose cache-hit GetMetrics h2load sends: the embedded store's p95 of
/// `h2load-svc` over 5 minutes (the spans `spans.pb` holds).
fn h2load_so() -> ScaledObjectRef {
    so(
        "shop",
        "h2load",
        &[
            ("signal", "latency".into()),
            ("source", "otlp".into()),
            ("service", "h2load-svc".into()),
            ("quantile", "p95".into()),
            ("window", "5m".into()),
            ("threshold", "300ms".into()),
            ("metricName", H2LOAD_METRIC.into()),
        ],
    )
}

/// The metric name the h2load ScaledObject sets (`metricName`), so its request is fixed.
const H2LOAD_METRIC: &str = "h2load-p95";

/// gRPC framing: flag 0 (no compression), 4-byte big-endian length, the message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn h2load_get_metrics() -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(h2load_so()),
        metric_name: H2LOAD_METRIC.to_string(),
    }
}

fn write_bodies(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    write("get_metrics.bin", &grpc_frame(&h2load_get_metrics()))?;
    write(
        "health_check.bin",
        &grpc_frame(&HealthCheckRequest {
            service: String::new(),
        }),
    )?;
    let mut seed = 7;
    let now = unix_ns(SystemTime::now());
    write(
        "spans.pb",
        &service_spans("h2load-svc", 2_000, now, &mut seed).encode_to_vec(),
    )?;
    println!(
        "wrote get_metrics.bin, health_check.bin, spans.pb to {}",
        dir.display()
    );
    Ok(())
}

/// One real-client call of each h2load request: prints the answers, fails on an error.
async fn probe(addr: &str) -> Result<(), String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut scaler = ExternalScalerClient::new(channel.clone());
    let spec = scaler
        .get_metric_spec(h2load_so())
        .await
        .map_err(|e| format!("GetMetricSpec: {e}"))?
        .into_inner();
    let answer = scaler
        .get_metrics(h2load_get_metrics())
        .await
        .map_err(|e| format!("GetMetrics: {e}"))?
        .into_inner();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("Health/Check: {e}"))?
        .into_inner();
    println!(
        "probe: GetMetricSpec {:?}; GetMetrics OK {:?}; Health/Check OK status {}",
        spec.metric_specs
            .iter()
            .map(|m| (&m.metric_name, m.target_size_float))
            .collect::<Vec<_>>(),
        answer
            .metric_values
            .iter()
            .map(|m| (&m.metric_name, m.metric_value_float))
            .collect::<Vec<_>>(),
        health.status
    );
    Ok(())
}

/// What to do.
enum Mode {
    WriteBodies(PathBuf),
    Probe(String),
    ServeBare(SocketAddr),
}

fn parse_args() -> Result<Option<Mode>, String> {
    let mut mode = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            // Cargo passes `--bench` to every bench binary.
            "--bench" => {}
            "--write-bodies" => mode = Some(Mode::WriteBodies(value("--write-bodies")?.into())),
            "--probe" => mode = Some(Mode::Probe(value("--probe")?)),
            "--serve-bare" => {
                let v = value("--serve-bare")?;
                let addr = v.parse().map_err(|e| format!("bad address {v:?}: {e}"))?;
                mode = Some(Mode::ServeBare(addr))
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(mode)
}

fn main() {
    let mode = match parse_args() {
        Ok(Some(m)) => m,
        // `cargo bench` runs every bench: this one has nothing to measure.
        Ok(None) => {
            eprintln!(
                "h2load: the h2load comparison's helpers (scripts/h2load-bench.sh): \
                 --write-bodies DIR | --probe ADDR | --serve-bare ADDR"
            );
            return;
        }
        Err(e) => {
            eprintln!("h2load: {e}");
            std::process::exit(64);
        }
    };
    match mode {
        Mode::WriteBodies(dir) => {
            if let Err(e) = write_bodies(&dir) {
                eprintln!("h2load: {e}");
                std::process::exit(1);
            }
        }
        Mode::ServeBare(addr) => {
            // The scaler's RPC runtime: a worker per core.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("bare runtime");
            rt.block_on(async {
                match tonic::transport::server::TcpIncoming::bind(addr) {
                    Ok(incoming) => bare::serve_bare(incoming.with_nodelay(Some(true))).await,
                    Err(e) => {
                        eprintln!("h2load: --serve-bare {addr}: {e}");
                        std::process::exit(1);
                    }
                }
            });
        }
        Mode::Probe(addr) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            if let Err(e) = rt.block_on(probe(&addr)) {
                eprintln!("h2load: probe: {e}");
                std::process::exit(1);
            }
        }
    }
}
