//! OTLP ingest throughput: the real gRPC receiver on loopback next to protobuf decoding
//! alone of the same payloads (the ceiling), the store's memory per series, and KEDA's
//! `GetMetrics` on the real server, idle and while OTLP clients flood the receivers.
//!
//! Run: `cargo bench --bench otlp_ingest`. Throughput is in spans/s (criterion's
//! "elem/s"). The memory figures are printed before the timings.

#[path = "../tests/common/loopback.rs"]
mod loopback;
#[path = "common/raw_export.rs"]
mod raw_export;
#[path = "common/spans.rs"]
mod spans;

use spans::{attr, splitmix, text, unix_ns};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use slo_scaler::source::otlp::{grpc_server, grpc_service, ManualClock, Store, StoreConfig};
use slo_scaler::telemetry::Metrics;
use tonic::transport::Channel;

/// Spans per request, as the SDK batch processor sends them by default.
const SPANS_PER_REQUEST: usize = 512;
/// Distinct payloads (services × versions) the requests rotate through.
const PAYLOADS: usize = 8;
/// Requests in flight at once through the gRPC receiver.
const IN_FLIGHT: usize = 8;

/// One request like an instrumented HTTP service exports (`spans::spans_request`), for
/// payload `service`: half the payloads are version v0, half v1, each from its own pod
/// (the store keeps each bucket's pods for `sloCapacity`).
fn request(service: usize, now_ns: u64, seed: &mut u64) -> ExportTraceServiceRequest {
    let resource = vec![
        attr("service.name", text(&format!("service-{}", service / 2))),
        attr("service.version", text(&format!("v{}", service % 2))),
        attr("service.instance.id", text(&format!("pod-{service}"))),
        attr("k8s.namespace.name", text("shop")),
        attr("telemetry.sdk.language", text("rust")),
    ];
    let extra = [attr("server.address", text("orders.shop.svc"))];
    spans::spans_request(resource, SPANS_PER_REQUEST, &extra, now_ns, seed)
}

fn payloads(now_ns: u64) -> Vec<Bytes> {
    let mut seed = 42;
    (0..PAYLOADS)
        .map(|s| Bytes::from(request(s, now_ns, &mut seed).encode_to_vec()))
        .collect()
}

/// One export that must be stored whole.
async fn export(channel: Channel, body: Bytes) {
    assert!(
        raw_export::try_export(channel, body).await,
        "every span stored"
    );
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = Arc::new(Metrics::standalone().1);
    let now = SystemTime::now();
    let clock = Arc::new(ManualClock::new(now));
    let store = Arc::new(
        Store::with_clock(StoreConfig::default(), Arc::clone(&metrics), clock)
            .expect("default config"),
    );
    let bodies = payloads(unix_ns(now));
    let bytes_per_request = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();
    println!(
        "payload: {SPANS_PER_REQUEST} spans per request, {bytes_per_request} bytes ({} bytes/span)",
        bytes_per_request / SPANS_PER_REQUEST
    );

    let channel = rt.block_on(async {
        let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())
            .expect("bind")
            .with_nodelay(Some(true));
        let addr = incoming.local_addr().expect("address");
        tokio::spawn(
            grpc_server()
                .add_service(grpc_service(Arc::clone(&store), Arc::clone(&metrics)))
                .serve_with_incoming(incoming),
        );
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    });

    let mut group = c.benchmark_group("otlp_ingest");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements((SPANS_PER_REQUEST * PAYLOADS) as u64));
    group.bench_function(BenchmarkId::new("decode_only", PAYLOADS), |b| {
        b.iter(|| {
            for body in &bodies {
                let req = ExportTraceServiceRequest::decode(body.clone()).expect("decode");
                std::hint::black_box(req);
            }
        })
    });
    group.bench_function(BenchmarkId::new("decode_and_store", PAYLOADS), |b| {
        b.iter(|| {
            for body in &bodies {
                let req = ExportTraceServiceRequest::decode(body.clone()).expect("decode");
                std::hint::black_box(store.ingest(req));
            }
        })
    });
    group.bench_function(BenchmarkId::new("lean_decode_and_store", PAYLOADS), |b| {
        b.iter(|| {
            for body in &bodies {
                let req = slo_scaler::source::otlp::wire::TraceRequest::decode(body.clone())
                    .expect("decode");
                std::hint::black_box(store.ingest_lean(req));
            }
        })
    });
    group.bench_function(BenchmarkId::new("grpc_loopback", PAYLOADS), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (channel, bodies) = (channel.clone(), bodies.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    // IN_FLIGHT requests at a time, PAYLOADS per iteration.
                    for chunk in bodies.chunks(IN_FLIGHT) {
                        join_all(chunk.iter().map(|b| export(channel.clone(), b.clone()))).await;
                    }
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

/// Resident memory of this process, from `/proc/self/statm`, in bytes.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Fills `series` series over the whole retention (one bucket per second) with
/// `spans_per_second` spans each second, latencies over `spread` octaves from 1 ms, and
/// prints the store's own count and the resident-memory growth per series.
fn memory_case(what: &str, series: usize, spans_per_second: usize, spread: u64) {
    let metrics = Arc::new(Metrics::standalone().1);
    let start = UNIX_EPOCH + Duration::from_secs(1_724_234_400);
    let clock = Arc::new(ManualClock::new(start));
    let config = StoreConfig::default();
    let seconds = config.retention.as_secs();
    let store = Store::with_clock(config, metrics, clock.clone()).expect("config");
    let rss_before = rss_bytes();
    let mut seed = 1;
    for _ in 0..seconds {
        clock.advance(Duration::from_secs(1));
        let now_ns = unix_ns(clock_now(&clock));
        for s in 0..series {
            let spans = (0..spans_per_second)
                .map(|_| {
                    let r = splitmix(&mut seed);
                    let duration = (1_000_000u64 << (r % spread.max(1))) + (r >> 44);
                    Span {
                        kind: 2,
                        start_time_unix_nano: now_ns - 1 - duration,
                        end_time_unix_nano: now_ns - 1,
                        ..Span::default()
                    }
                })
                .collect();
            store.ingest(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![attr("service.name", text(&format!("svc-{s}")))],
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                }],
            });
        }
    }
    let counted = store.heap_bytes() / series;
    let rss = match (rss_before, rss_bytes()) {
        (Some(a), Some(b)) => format!("{} KiB", b.saturating_sub(a) / series / 1024),
        _ => "n/a".to_string(),
    };
    println!(
        "memory per series, {what} ({series} series, {seconds} buckets): store count {} KiB, resident growth {rss}",
        counted / 1024
    );
    std::hint::black_box(store);
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    slo_scaler::source::otlp::Clock::now(clock)
}

fn memory() {
    memory_case("1 span/s at one latency", 200, 1, 1);
    memory_case("100 spans/s over 1 ms - 1 s", 50, 100, 10);
}

/// Percentile `q` of sorted durations, in µs.
fn percentile_us(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// `n` sequential GetMetrics round trips; sorted latencies.
async fn get_metrics_latencies(
    client: &mut slo_scaler::proto::external_scaler_client::ExternalScalerClient<Channel>,
    n: usize,
) -> Vec<Duration> {
    use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
    let so = ScaledObjectRef {
        name: "orders".into(),
        namespace: "shop".into(),
        scaler_metadata: [
            ("signal", "latency"),
            ("source", "otlp"),
            ("service", "service-0"),
            ("quantile", "p95"),
            ("window", "60s"),
            ("threshold", "300ms"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let spec = client
        .get_metric_spec(so.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    let metric_name = spec.metric_specs[0].metric_name.clone();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(so.clone()),
                metric_name: metric_name.clone(),
            })
            .await
            .expect("GetMetrics");
        out.push(started.elapsed());
    }
    out.sort();
    out
}

/// KEDA's calls while the OTLP receivers are flooded: the real server (`Server::start`,
/// receivers on their own threads), GetMetrics round trips idle and while 8 clients on
/// another runtime export 512-span requests as fast as they are answered.
fn isolation() {
    use clap::Parser as _;
    use slo_scaler::cli::{Cli, Command};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let flood_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut argv = vec!["slo-scaler", "serve"];
    argv.extend(loopback::LOOPBACK_ADDRS);
    argv.extend([
        "--default-source",
        "otlp",
        "--min-cache-ttl",
        "100ms",
        "--cache-ttl",
        "100ms",
    ]);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("flags").command else {
        panic!("not serve");
    };
    let server = rt
        .block_on(slo_scaler::server::Server::start(args))
        .expect("server");
    let otlp = server.otlp_grpc_addr.expect("receiver on");
    let bodies = payloads(unix_ns(SystemTime::now()));
    let channel = flood_rt.block_on(async {
        Channel::from_shared(format!("http://{otlp}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    });
    flood_rt.block_on(export(channel.clone(), bodies[0].clone()));
    let mut client = rt.block_on(async {
        slo_scaler::proto::external_scaler_client::ExternalScalerClient::connect(format!(
            "http://{}",
            server.grpc_addr
        ))
        .await
        .expect("connect")
    });
    const CALLS: usize = 5_000;
    let idle = rt.block_on(get_metrics_latencies(&mut client, CALLS));

    let stop = Arc::new(AtomicBool::new(false));
    let spans = Arc::new(AtomicU64::new(0));
    for i in 0..IN_FLIGHT {
        let (channel, body) = (channel.clone(), bodies[i % bodies.len()].clone());
        let (stop, spans) = (Arc::clone(&stop), Arc::clone(&spans));
        flood_rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if raw_export::try_export(channel.clone(), body.clone()).await {
                    spans.fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    let (before, started) = (spans.load(Ordering::Relaxed), Instant::now());
    let flooded = rt.block_on(get_metrics_latencies(&mut client, CALLS));
    let rate = (spans.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for (what, l) in [("idle", &idle), ("while flooded", &flooded)] {
        println!(
            "isolation: GetMetrics {what}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({CALLS} calls)",
            percentile_us(l, 0.5),
            percentile_us(l, 0.99),
            percentile_us(l, 1.0)
        );
    }
    println!("isolation: spans ingested while GetMetrics was called: {rate:.0} spans/s");
    drop(flood_rt);
    let _ = rt.block_on(server.shutdown());
}

fn main() {
    memory();
    isolation();
    let mut c = Criterion::default().configure_from_args();
    ingest(&mut c);
    c.final_summary();
}
