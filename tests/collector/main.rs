//! The embedded store fed through a real OpenTelemetry Collector (built from its Go
//! modules by `scripts/real/build.sh`), whose exporters keep their default settings:
//! gzip compression, the sending queue, retry on failure, and the batch processor's
//! default sizes and timeout (open-telemetry/opentelemetry-collector
//! `exporter/otlpexporter/config.go` and `exporter/otlphttpexporter/config.go`,
//! `createDefaultConfig`; `config/configgrpc`: compression defaults to gzip).
//!
//! Spans come from the Rust SDK with explicit timestamps around the stores' manual clock,
//! so every window holds a known set of spans and the truth is exact.

#[path = "../common/mod.rs"]
mod common;
#[path = "../otlp/harness.rs"]
#[allow(dead_code)] // The suite uses part of the OTLP suite's harness.
mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::collector::Collector;
use harness::{assert_close, exact_quantile, latency, make_spans, plan, t0, Harness, Planned};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use slo_scaler::signal::TraceMeasure;
use slo_scaler::source::otlp::DEFAULT_MAX_MESSAGE_BYTES;

fn resource(service: &str, version: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service.to_string()),
            KeyValue::new("service.version", version.to_string()),
        ])
        .build()
}

/// Sends `spans` to the Collector's receiver with the SDK's OTLP exporter (gRPC, or
/// HTTP/protobuf), in batches of the SDK batch processor's default size.
async fn send(collector: &Collector, grpc: bool, resource: &Resource, mut spans: Vec<SpanData>) {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = if grpc {
        builder
            .with_tonic()
            .with_endpoint(format!("http://{}", collector.grpc))
            .build()
    } else {
        builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://{}/v1/traces", collector.http))
            .build()
    }
    .expect("exporter");
    exporter.set_resource(resource);
    while !spans.is_empty() {
        let rest = spans.split_off(spans.len().min(512));
        exporter.export(spans).await.expect("the collector accepts");
        spans = rest;
    }
}

/// Waits until `h` has accepted `n` spans (the Collector batches and queues them).
async fn wait_accepted(h: &Harness, n: f64, collector: &Collector, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = "slo_scaler_otlp_spans_total{outcome=\"accepted\"}";
    loop {
        let got = h.metric(line).unwrap_or(0.0);
        if got == n {
            // Nothing more arrives: a retry of an accepted batch would count twice.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                h.metric(line),
                Some(n),
                "{what}: spans after the last batch"
            );
            return;
        }
        assert!(got < n, "{what}: {got} spans accepted, {n} sent");
        assert!(
            Instant::now() < deadline,
            "{what}: {got} of {n} spans arrived\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// p50/p95/p99 within the sketch's 1 % of the exact quantiles, the exact error ratio
/// and the exact rate of the spans `planned` ending inside `window_s`.
fn check_signals(
    h: &Harness,
    what: &str,
    version: Option<&str>,
    planned: &[Planned],
    window_s: u64,
) {
    let window = Duration::from_secs(window_s);
    let inside: Vec<Planned> = planned
        .iter()
        .copied()
        .filter(|p| p.end_before_now < window)
        .collect();
    assert!(!inside.is_empty());
    let what = format!("{what} order-service {version:?} over {window_s}s");
    for q in [0.5, 0.95, 0.99] {
        assert_close(
            h.read("order-service", version, latency(q), window_s),
            exact_quantile(&inside, q),
            &format!("{what} p{}", q * 100.0),
        );
    }
    let errors = inside.iter().filter(|p| p.error).count();
    assert_eq!(
        h.read("order-service", version, TraceMeasure::ErrorRatio, window_s),
        Some(errors as f64 / inside.len() as f64),
        "{what} error ratio"
    );
    // The store clock is on a bucket boundary: the window covers exactly `window_s`.
    let rate = h
        .read("order-service", version, TraceMeasure::Rate, window_s)
        .expect("rate");
    let want = inside.len() as f64 / window_s as f64;
    assert!(
        (rate - want).abs() < 1e-9,
        "{what} rate: {rate}, want {want}"
    );
}

fn otlp_exporter(name: &str, addr: SocketAddr) -> String {
    format!("  otlp/{name}:\n    endpoint: {addr}\n    tls:\n      insecure: true\n")
}

fn otlphttp_exporter(name: &str, addr: SocketAddr) -> String {
    format!("  otlphttp/{name}:\n    endpoint: http://{addr}\n")
}

/// A traces pipeline: the `otlp` receiver, the default `batch` processor, `exporters`.
fn pipeline(exporters: &[(&str, String)]) -> String {
    let names: Vec<&str> = exporters.iter().map(|(n, _)| *n).collect();
    let defs: String = exporters.iter().map(|(_, d)| d.as_str()).collect();
    format!(
        "processors:\n  batch: {{}}\nexporters:\n{defs}service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [{}]\n",
        names.join(", ")
    )
}

/// The chart's fan-out (NOTES.txt with otlp.fanOut: one `otlp/slo-scaler-N` exporter
/// per replica, at default settings) plus an `otlphttp` exporter: every replica holds
/// every span, and each answers the exact figures, the same as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exporters_fan_out_and_every_replica_answers_exactly() {
    let replicas = [
        Harness::start(DEFAULT_MAX_MESSAGE_BYTES).await,
        Harness::start(DEFAULT_MAX_MESSAGE_BYTES).await,
        Harness::start(DEFAULT_MAX_MESSAGE_BYTES).await,
    ];
    let collector = Collector::start(&pipeline(&[
        (
            "otlp/slo-scaler-0",
            otlp_exporter("slo-scaler-0", replicas[0].grpc),
        ),
        (
            "otlp/slo-scaler-1",
            otlp_exporter("slo-scaler-1", replicas[1].grpc),
        ),
        (
            "otlphttp/slo-scaler-2",
            otlphttp_exporter("slo-scaler-2", replicas[2].http),
        ),
    ]))
    .await;

    let stable = plan(6_000, Duration::from_secs(60), 40.0, 8);
    let canary = plan(900, Duration::from_secs(60), 300.0, 5);
    let (v1, v2) = (
        resource("order-service", "v1"),
        resource("order-service", "v2"),
    );
    // The SDK reaches the Collector over gRPC for one version, HTTP for the other.
    send(&collector, true, &v1, make_spans(&v1, &stable, t0())).await;
    send(&collector, false, &v2, make_spans(&v2, &canary, t0())).await;

    let both: Vec<Planned> = stable.iter().chain(&canary).copied().collect();
    for (i, h) in replicas.iter().enumerate() {
        let what = format!("replica {i}");
        wait_accepted(h, both.len() as f64, &collector, &what).await;
        check_signals(h, &what, Some("v1"), &stable, 60);
        check_signals(h, &what, Some("v2"), &canary, 60);
        check_signals(h, &what, None, &both, 60);
        check_signals(h, &what, None, &both, 10);
        assert_eq!(h.metric("slo_scaler_otlp_store_series "), Some(2.0));
    }
    let first = replicas[0].snapshot("order-service");
    for h in &replicas[1..] {
        assert_eq!(h.snapshot("order-service"), first, "replicas answer alike");
    }
}

/// The harness's own promise (tests/common/collector.rs `start_with`): a port taken
/// between its pick and the Collector's bind — by a test running beside this one — makes
/// the real Collector exit with "address already in use", and the harness starts it again
/// on new ports instead of failing the test. The first try here is given a port a listener
/// holds.
#[tokio::test]
async fn a_port_taken_before_the_collector_binds_it_is_picked_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let taken_port = taken.local_addr().expect("its port").port();
    let tries = AtomicUsize::new(0);
    let collector = Collector::start_with(|| {
        let port = match tries.fetch_add(1, Ordering::SeqCst) {
            0 => taken_port,
            _ => common::free_port(),
        };
        format!(
            "exporters:\n  prometheus:\n    endpoint: 127.0.0.1:{port}\nservice:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [prometheus]\n"
        )
    })
    .await;
    assert_eq!(tries.load(Ordering::SeqCst), 2, "{}", collector.log());
    drop(taken);
}
