//! Spans from the official SDK through the OTLP gRPC and HTTP exporters.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use slo_scaler::signal::{capacity, CapacityTarget, Quantile, TraceMeasure};
use slo_scaler::source::otlp::sketch::LatencySketch;

use crate::harness::{
    assert_close, exact_quantile, latency, make_spans, plan, t0, Harness, Planned,
};

pub fn resource(service: &str, version: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service.to_string()),
            KeyValue::new("service.version", version.to_string()),
        ])
        .build()
}

#[derive(Debug, Clone, Copy)]
pub enum Via {
    Grpc,
    Http,
}

/// Sends `spans` through the official OTLP exporter, in batches like the batch processor.
async fn export(h: &Harness, via: Via, resource: &Resource, spans: Vec<SpanData>) {
    let addr = match via {
        Via::Grpc => h.grpc,
        Via::Http => h.http,
    };
    export_to(addr, via, resource, spans).await;
}

/// Sends `spans` to the receiver at `addr` through the official OTLP exporter.
pub async fn export_to(addr: SocketAddr, via: Via, resource: &Resource, spans: Vec<SpanData>) {
    export_compressed(addr, via, None, resource, spans).await;
}

/// [`export_to`] with the exporter's `compression` setting.
pub async fn export_compressed(
    addr: SocketAddr,
    via: Via,
    compression: Option<Compression>,
    resource: &Resource,
    spans: Vec<SpanData>,
) {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match (via, compression) {
        (Via::Grpc, None) => builder
            .with_tonic()
            .with_endpoint(format!("http://{addr}"))
            .build(),
        (Via::Grpc, Some(c)) => builder
            .with_tonic()
            .with_endpoint(format!("http://{addr}"))
            .with_compression(c)
            .build(),
        (Via::Http, None) => builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://{addr}/v1/traces"))
            .build(),
        (Via::Http, Some(c)) => builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("http://{addr}/v1/traces"))
            .with_compression(c)
            .build(),
    }
    .expect("exporter");
    exporter.set_resource(resource);
    let mut spans = spans;
    while !spans.is_empty() {
        let rest = spans.split_off(spans.len().min(512));
        exporter.export(spans).await.expect("export accepted");
        spans = rest;
    }
}

/// Checks p50/p95/p99 against the exact quantiles within 1 %, and the exact error
/// ratio and rate, of `planned` over `window_s`.
fn check_signals(
    h: &Harness,
    service: &str,
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
    for q in [0.5, 0.95, 0.99] {
        assert_close(
            h.read(service, version, latency(q), window_s),
            exact_quantile(&inside, q),
            &format!("{service} {version:?} p{} over {window_s}s", q * 100.0),
        );
    }
    let errors = inside.iter().filter(|p| p.error).count();
    assert_eq!(
        h.read(service, version, TraceMeasure::ErrorRatio, window_s),
        Some(errors as f64 / inside.len() as f64),
        "error ratio"
    );
    // The store clock is on a bucket boundary, so the window covers exactly `window_s`.
    let rate = h
        .read(service, version, TraceMeasure::Rate, window_s)
        .expect("rate");
    let want = inside.len() as f64 / window_s as f64;
    assert!((rate - want).abs() < 1e-9, "rate: got {rate}, want {want}");
    // Little's law: Σ of the spans' durations over the time covered, exactly.
    let busy_ns: u128 = inside.iter().map(|p| p.duration.as_nanos()).sum();
    let want = busy_ns as f64 / 1e9 / window_s as f64;
    let got = h
        .read(service, version, TraceMeasure::Concurrency, window_s)
        .expect("concurrency");
    assert!(
        (got - want).abs() <= 1e-9 * want,
        "concurrency over {window_s}s: got {got}, want {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_spans_give_exact_signals() {
    let h = Harness::start(1 << 20).await;
    let res = resource("order-service", "v1");
    let planned = plan(3_000, Duration::from_secs(60), 40.0, 8);
    export(&h, Via::Grpc, &res, make_spans(&res, &planned, t0())).await;

    check_signals(&h, "order-service", None, &planned, 60);
    check_signals(&h, "order-service", Some("v1"), &planned, 60);
    // A shorter window sees only its own spans.
    check_signals(&h, "order-service", None, &planned, 10);
    assert_eq!(h.read("order-service", Some("v2"), latency(0.95), 60), None);
    assert_eq!(
        h.read("payment-service", None, TraceMeasure::Rate, 60),
        None
    );
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"accepted\"}"),
        Some(3_000.0)
    );
    assert_eq!(h.metric("slo_scaler_otlp_store_series "), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exporter_spans_give_exact_signals_per_version() {
    let h = Harness::start(4 << 20).await;
    let stable = plan(2_000, Duration::from_secs(120), 25.0, 50);
    let canary = plan(400, Duration::from_secs(120), 300.0, 4);
    let (v1, v2) = (
        resource("order-service", "v1"),
        resource("order-service", "v2"),
    );
    export(&h, Via::Http, &v1, make_spans(&v1, &stable, t0())).await;
    export(&h, Via::Http, &v2, make_spans(&v2, &canary, t0())).await;

    check_signals(&h, "order-service", Some("v1"), &stable, 120);
    check_signals(&h, "order-service", Some("v2"), &canary, 120);
    let both: Vec<Planned> = stable.iter().chain(&canary).copied().collect();
    check_signals(&h, "order-service", None, &both, 120);
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"accepted\"}"),
        Some(2_400.0)
    );
    assert_eq!(h.metric("slo_scaler_otlp_store_series "), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_step_shows_within_one_bucket() {
    let h = Harness::start(1 << 20).await;
    let res = resource("order-service", "v1");
    // A minute at 20 ms, then one bucket (the last second) at 2 s.
    let calm = plan(600, Duration::from_secs(60), 20.0, 1_000);
    export(&h, Via::Grpc, &res, make_spans(&res, &calm, t0())).await;
    let before = h
        .read("order-service", None, latency(0.95), 60)
        .expect("p95");
    assert!(before < 0.1, "{before}");

    h.clock.advance(Duration::from_secs(1));
    let spike = plan(200, Duration::from_secs(1), 2_000.0, 1_000);
    export(
        &h,
        Via::Grpc,
        &res,
        make_spans(&res, &spike, t0() + Duration::from_secs(1)),
    )
    .await;
    let after = h
        .read("order-service", None, latency(0.95), 60)
        .expect("p95");
    assert!(after > 1.0, "p95 {after} should reflect the spike at once");
}

/// The figures `signal: sloCapacity` takes from `planned`, worked out from the planned
/// spans themselves: the last minute's requests in flight and rate, each whole minute's
/// mean latency over the ten-minute history, the busiest requests in flight and rate of its
/// last five minutes, the mean latency of each 10 s block with at least
/// `capacity::BLOCK_MIN_SPANS` spans (and their p95 while fewer than
/// `capacity::YOUNG_MINUTES` minutes have spans), and the sustained level: the store
/// started ten minutes before now, so its sustained window's whole minutes are those ten,
/// quiet ones as zeros, and their 0.9 quantile (Prometheus' `quantile_over_time`: rank 0.9
/// × 9 = 8.1 of the sorted ten). `p95` is the sketch's over the guard window, read from the
/// store (within 1 % of the exact one, as the tests above check).
fn capacity_reading(planned: &[Planned], p95: f64) -> capacity::Reading {
    // The store's buckets are whole seconds and t0 is on one: a span that ended `e`
    // before now is in the second `ceil(e) − 1` back, so in the minute that divided by
    // 60 back and in the block that divided by 10 back.
    let second_of = |p: &Planned| p.end_before_now.as_nanos().div_ceil(1_000_000_000) - 1;
    let minute_of = |p: &Planned| second_of(p) / 60;
    let mut minutes = [(0.0f64, 0u64); 10];
    let mut blocks = [(0.0f64, 0u64); 60];
    // Each minute's and block's latencies in the store's own sketch: its quantile is the
    // sketch's.
    let mut sketches: [LatencySketch; 10] = Default::default();
    let mut block_sketches: [LatencySketch; 60] = std::array::from_fn(|_| LatencySketch::default());
    for p in planned {
        let m = &mut minutes[9 - minute_of(p) as usize];
        m.0 += p.duration.as_secs_f64();
        m.1 += 1;
        sketches[9 - minute_of(p) as usize].add(p.duration.as_nanos() as u64);
        let b = &mut blocks[59 - (second_of(p) / 10) as usize];
        b.0 += p.duration.as_secs_f64();
        b.1 += 1;
        block_sketches[59 - (second_of(p) / 10) as usize].add(p.duration.as_nanos() as u64);
    }
    let last: Vec<&Planned> = planned.iter().filter(|p| minute_of(p) == 0).collect();
    let rate = last.len() as f64 / 60.0;
    let concurrency = last.iter().map(|p| p.duration.as_secs_f64()).sum::<f64>() / 60.0;
    let shortest = minutes
        .iter()
        .filter(|(_, n)| *n > 0)
        .chain(
            blocks
                .iter()
                .filter(|(_, n)| *n as f64 >= capacity::BLOCK_MIN_SPANS),
        )
        .map(|(busy, n)| busy / *n as f64)
        .fold(f64::MAX, f64::min);
    assert_eq!(capacity::PEAK_S, 300);
    let busiest = minutes[5..]
        .iter()
        .map(|(busy, _)| busy / 60.0)
        .fold(0.0, f64::max);
    let busiest_rate = minutes[5..]
        .iter()
        .map(|(_, n)| *n as f64 / 60.0)
        .fold(0.0, f64::max);
    assert_eq!(capacity::SUSTAINED_Q, 0.9);
    let p90 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        0.9 * v[8] + 0.1 * v[9]
    };
    let sustained = p90(minutes.iter().map(|(busy, _)| busy / 60.0).collect());
    let sustained_rate = p90(minutes.iter().map(|(_, n)| *n as f64 / 60.0).collect());
    let calmest = sketches
        .iter()
        .filter_map(|s| s.quantile_ns(0.95))
        .fold(f64::MAX, f64::min);
    // A history of fewer than YOUNG_MINUTES minutes with spans also takes its calm
    // latency from its blocks.
    let with_spans = minutes.iter().filter(|(_, n)| *n > 0).count();
    let calmest = if with_spans < capacity::YOUNG_MINUTES {
        blocks
            .iter()
            .zip(&block_sketches)
            .filter(|((_, n), _)| *n as f64 >= capacity::BLOCK_MIN_SPANS)
            .filter_map(|(_, s)| s.quantile_ns(0.95))
            .fold(calmest, f64::min)
    } else {
        calmest
    };
    capacity::Reading {
        concurrency,
        reference_concurrency: Some(rate * shortest),
        peak_concurrency: busiest,
        peak_reference: Some(busiest_rate * shortest),
        sustained_concurrency: sustained,
        sustained_reference: Some(sustained_rate * shortest),
        latency_s: p95,
        calm_latency_s: Some(calmest / 1e9),
    }
}

/// `planned` moved `secs` seconds into the past.
fn earlier(planned: Vec<Planned>, secs: u64) -> impl Iterator<Item = Planned> {
    planned.into_iter().map(move |p| Planned {
        end_before_now: p.end_before_now + Duration::from_secs(secs),
        ..p
    })
}

/// `signal: sloCapacity` from SDK spans: the store's value is `capacity::pods_needed` of
/// the figures [`capacity_reading`] works out from the spans sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_capacity_is_the_pods_the_objective_needs_for_the_spans_sent() {
    let h = Harness::start(4 << 20).await;
    let target = CapacityTarget {
        pod_concurrency: 4.0,
        objective: Duration::from_millis(300),
        quantile: Quantile::P95,
    };
    // Sends `planned` as `service`'s spans; the store's value must be pods_needed of the
    // figures the spans give. Returns those figures.
    let check = |service: &'static str, planned: Vec<Planned>| {
        let h = &h;
        async move {
            let res = resource(service, "v1");
            export(h, Via::Grpc, &res, make_spans(&res, &planned, t0())).await;
            let got = h
                .read(service, None, TraceMeasure::Capacity(target), 60)
                .expect("a value");
            let p95 = h
                .read(service, None, latency(0.95), capacity::GUARD_WINDOW_S)
                .expect("p95");
            let r = capacity_reading(&planned, p95);
            let want = capacity::pods_needed(target.target(), r);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "{service}: got {got}, want {want}"
            );
            r
        }
    };

    // order-service: five quiet minutes at 40 ms, then a busy last minute at 120 ms.
    let mut planned = plan(3_000, Duration::from_secs(300), 40.0, 50);
    planned.extend(plan(1_500, Duration::from_secs(60), 120.0, 50));
    let r = check("order-service", planned).await;
    // The busy minute queued: it is clamped at CLAMP × what it would hold at the target had
    // nothing queued (its rate × the quiet minutes' shortest mean latency, × the queue
    // factor of a 4-slot pod): the value is the clamp's.
    let queue = capacity::queue_factor(4.0);
    let reference = r.reference_concurrency.expect("a reference");
    assert!(r.concurrency > capacity::CLAMP * queue * reference, "{r:?}");

    // checkout: the same busy minute four minutes ago, quiet since: the value holds it, at
    // PEAK_CLAMP × what its load holds at the target (not its queue), above what the quiet
    // last minute needs.
    let mut planned = plan(3_000, Duration::from_secs(300), 40.0, 50);
    planned.extend(earlier(
        plan(1_500, Duration::from_secs(60), 120.0, 50),
        240,
    ));
    let r = check("checkout", planned).await;
    let peak_reference = r.peak_reference.expect("a peak reference");
    assert!(
        r.peak_concurrency > capacity::PEAK_CLAMP * queue * peak_reference,
        "{r:?}"
    );
    assert!(
        capacity::PEAK_CLAMP * queue * peak_reference > r.concurrency.max(1e-9) * 2.0,
        "the held minute decides: {r:?}"
    );

    // basket: two busy minutes eight and nine minutes ago (before the busiest-minute
    // window), quiet since: the sustained level (two minutes of ten) holds them.
    let mut planned = plan(2_400, Duration::from_secs(420), 40.0, 50);
    planned.extend(earlier(
        plan(2_400, Duration::from_secs(120), 60.0, 50),
        480,
    ));
    let r = check("basket", planned).await;
    let sustained_reference = r.sustained_reference.expect("a sustained reference");
    let held = r
        .sustained_concurrency
        .min(capacity::PEAK_CLAMP * queue * sustained_reference);
    assert!(held > r.peak_concurrency * 2.0, "{r:?}");
    let without = capacity::Reading {
        sustained_concurrency: 0.0,
        ..r
    };
    assert!(
        capacity::pods_needed(target.target(), r)
            > 1.5 * capacity::pods_needed(target.target(), without),
        "the sustained level decides: {r:?}"
    );

    // cart-service: new to the store, and its one minute queued after 20 calm seconds
    // (1,000 spans at 40 ms, then 4,000 at 2 s). The minute's mean is 1.6 s; the reference
    // is the calm blocks' mean, so the queue is clamped at CLAMP × what the load holds at
    // the target, not read whole.
    let mut planned: Vec<Planned> = plan(4_000, Duration::from_secs(40), 2_000.0, 50);
    planned.extend(earlier(plan(1_000, Duration::from_secs(20), 40.0, 50), 40));
    let r = check("cart-service", planned).await;
    let reference_latency = r.reference_concurrency.expect("a reference") / (5_000.0 / 60.0);
    assert!(reference_latency < 0.1, "{r:?}");
    let reference = r.reference_concurrency.unwrap_or(0.0);
    assert!(r.concurrency > capacity::CLAMP * queue * 10.0 * reference);
    // Its calm latency is the calm blocks' p95 too, not the queued minute's: the
    // utilisation target is the guard's, not U_FLOOR's.
    assert!(r.calm_latency_s.expect("a calm latency") < 0.2, "{r:?}");
    assert!(
        capacity::utilization(r.latency_s / 0.3, r.calm_latency_s.map(|s| s / 0.3))
            > capacity::U_FLOOR,
        "{r:?}"
    );

    // inventory: every minute slow (90 ms median, p95 near the objective): the calmest
    // minute leaves little room for a queue, and the utilisation target falls with it.
    let r = check("inventory", plan(3_000, Duration::from_secs(300), 90.0, 50)).await;
    let calm = r.calm_latency_s.expect("a calm minute");
    assert!(calm > capacity::CALM * 0.3, "{r:?}");
    let without = capacity::Reading {
        calm_latency_s: None,
        ..r
    };
    assert!(
        capacity::pods_needed(target.target(), r) > capacity::pods_needed(target.target(), without),
        "{r:?}"
    );

    // With no spans, no value.
    assert_eq!(
        h.read("payment-service", None, TraceMeasure::Capacity(target), 60),
        None
    );
}
