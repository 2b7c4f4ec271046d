//! Benches for the scaler's hot paths: metadata parsing, query building, and a
//! cache-hit `GetMetrics` — the handler alone (server-side work) and a full loopback
//! round trip next to a bare tonic health check as the baseline measured in the same run.
//!
//! `cargo bench --bench core`

#[path = "common/in_process.rs"]
mod in_process;
#[path = "../tests/common/loopback.rs"]
mod loopback;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use in_process::{service, start_scaler};
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::external_scaler_server::ExternalScaler;
use slo_scaler::proto::{wire, GetMetricsRequest, ScaledObjectRef};
use slo_scaler::signal::promql::{self, builtin_conventions};
use slo_scaler::signal::{Quantile, SpanKind, TraceMeasure, TraceSelector};
use slo_scaler::trigger::{self, ParseOptions, SourceKind};

fn metadata() -> HashMap<String, String> {
    [
        ("scalerAddress", "slo-scaler.keda.svc.cluster.local:6000"),
        ("signal", "latency"),
        ("service", "order-service"),
        ("threshold", "300ms"),
        ("activationThreshold", "50ms"),
        ("quantile", "p95"),
        ("window", "2m"),
        ("labels", "http_route=/orders/{id}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn parse_and_build(c: &mut Criterion) {
    let md = metadata();
    let opts = ParseOptions {
        default_source: SourceKind::Prometheus,
        ..ParseOptions::default()
    };
    c.bench_function("trigger/parse_latency_metadata", |b| {
        b.iter(|| trigger::parse(std::hint::black_box(&md), &opts).unwrap())
    });
    let conventions = builtin_conventions();
    let selector = TraceSelector {
        service: "order-service".into(),
        span_kind: SpanKind::Server,
        version: None,
        labels: vec![("http_route".into(), "/orders/{id}".into())],
    };
    c.bench_function("promql/build_p95", |b| {
        b.iter(|| {
            promql::build(
                "otel-spanmetrics",
                &conventions["otel-spanmetrics"],
                std::hint::black_box(&selector),
                TraceMeasure::Latency(Quantile::P95),
                Duration::from_secs(120),
            )
            .unwrap()
        })
    });
    c.bench_function("promql/build_error_ratio", |b| {
        b.iter(|| {
            promql::build(
                "otel-spanmetrics",
                &conventions["otel-spanmetrics"],
                std::hint::black_box(&selector),
                TraceMeasure::ErrorRatio,
                Duration::from_secs(120),
            )
            .unwrap()
        })
    });
}

/// A minimal Prometheus answering every instant query with one sample, to fill the
/// cache once; every measured call after that is a cache hit.
fn get_metrics_cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(start_scaler("1m"));
    let r = ScaledObjectRef {
        name: "orders".into(),
        namespace: "shop".into(),
        scaler_metadata: metadata(),
    };
    let req = GetMetricsRequest {
        scaled_object_ref: Some(r.clone()),
        metric_name: "latency-p95-order-service".into(),
    };
    let (service, _stop) = service(&server);
    let service = Arc::new(service);
    // Fill the cache.
    // The handler takes the request as the server decodes it.
    let decoded = wire::GetMetricsRequest::from(req.clone());
    rt.block_on(service.get_metrics(tonic::Request::new(decoded.clone())))
        .unwrap();

    let mut group = c.benchmark_group("get_metrics");
    group.bench_function("cache_hit_handler", |b| {
        b.to_async(&rt).iter(|| {
            let service = service.clone();
            let req = decoded.clone();
            async move { service.get_metrics(tonic::Request::new(req)).await.unwrap() }
        })
    });
    let addr = server.grpc_addr;
    let client = rt.block_on(async {
        ExternalScalerClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    });
    group.bench_function("cache_hit_loopback_roundtrip", |b| {
        b.to_async(&rt).iter(|| {
            let mut client = client.clone();
            let req = req.clone();
            async move { client.get_metrics(req).await.unwrap() }
        })
    });
    let health = rt.block_on(async {
        tonic_health::pb::health_client::HealthClient::new(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    });
    group.bench_function("baseline_bare_tonic_health_check_roundtrip", |b| {
        b.to_async(&rt).iter(|| {
            let mut health = health.clone();
            async move {
                health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap()
            }
        })
    });
    group.finish();
    rt.block_on(server.shutdown()).unwrap();
}

criterion_group!(benches, parse_and_build, get_metrics_cache_hit);
criterion_main!(benches);
