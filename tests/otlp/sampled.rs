//! Sampled spans from the official SDK: each span whose `tracestate` records its sampling
//! probability (OpenTelemetry's `ot=th:…`) stands for its adjusted count, 1 / p.
//!
//! The threshold encoding and the adjusted count follow the OpenTelemetry specification,
//! "TraceState Handling" (`specification/trace/tracestate-handling.md`, "Sampling
//! threshold value `th`": `AdjustedCount = 2^56 / (2^56 − Threshold)`, the `th` value
//! extended with trailing zeros to 14 hex digits) and "TraceState: Probability Sampling"
//! (`specification/trace/tracestate-probability-sampling.md`). The SDK gives a span its
//! parent's `tracestate` (`opentelemetry_sdk`'s tracer copies the parent span context's
//! trace state into the sampling result), which is how a child of a sampled remote
//! parent carries the threshold its root sampler wrote; the OTLP exporters send it as
//! `Span.trace_state`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use slo_scaler::signal::{SpanKind as StoreKind, TraceMeasure, TraceSelector};

use crate::harness::{plan, t0, Collect, Harness, Planned};
use crate::sdk::{export_to, resource, Via};

/// Makes the planned server spans with the SDK tracer as children of a sampled remote
/// parent whose `tracestate` is `trace_state` (none: a root span, no `tracestate`).
fn make_sampled_spans(
    resource: &Resource,
    planned: &[Planned],
    now: SystemTime,
    trace_state: Option<&str>,
) -> Vec<SpanData> {
    let collect = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collect.clone())
        .with_resource(resource.clone())
        .build();
    let tracer = provider.tracer("slo-scaler-tests");
    let parent = match trace_state {
        Some(header) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128),
            SpanId::from(0x00f0_67aa_0ba9_02b7u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_str(header).expect("a valid W3C tracestate"),
        )),
        None => Context::new(),
    };
    for p in planned {
        let end = now - p.end_before_now;
        let mut span = tracer
            .span_builder("GET /orders")
            .with_kind(SpanKind::Server)
            .with_start_time(end - p.duration)
            .start_with_context(&tracer, &parent);
        if p.error {
            span.set_status(Status::error("payment declined"));
        }
        span.end_with_timestamp(end);
    }
    provider.shutdown().expect("provider shutdown");
    let spans = std::mem::take(&mut *collect.0.lock().expect("collector lock"));
    assert_eq!(spans.len(), planned.len(), "the SDK made every span");
    for s in &spans {
        assert_eq!(
            s.span_context.trace_state().header(),
            trace_state.unwrap_or(""),
            "the SDK span carries its parent's tracestate"
        );
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_spans_count_by_their_adjusted_count() {
    let h = Harness::start(4 << 20).await;
    let res = resource("order-service", "v1");
    // (tracestate, adjusted count the specification gives it, spans, median ms)
    let groups: [(Option<&str>, f64, usize, f64); 6] = [
        // 50 %: th = 0x8 → 2^56 / (2^56 − 2^55) = 2.
        (Some("ot=th:8"), 2.0, 600, 30.0),
        // 25 %, beside another vendor's member and an rv sub-key: 4.
        (Some("vendor=x:1,ot=th:c;rv:0123456789abcd"), 4.0, 300, 80.0),
        // 100 %, recorded: 1.
        (Some("ot=th:0"), 1.0, 150, 20.0),
        // No tracestate at all, and an `ot` entry with no valid `th`: no record, 1 each.
        (None, 1.0, 200, 50.0),
        (Some("ot=th:xyz"), 1.0, 100, 40.0),
        (Some("ot=rv:0123456789abcd"), 1.0, 50, 60.0),
    ];
    let (mut spans, mut errors, mut busy_ns, mut stored) = (0.0f64, 0.0f64, 0u128, 0u64);
    for (i, (trace_state, adjusted, n, median_ms)) in groups.into_iter().enumerate() {
        let planned = plan(n, Duration::from_secs(60), median_ms, 7);
        let via = if i % 2 == 0 { Via::Grpc } else { Via::Http };
        let addr = match via {
            Via::Grpc => h.grpc,
            Via::Http => h.http,
        };
        let made = make_sampled_spans(&res, &planned, t0(), trace_state);
        export_to(addr, via, &res, made).await;
        stored += n as u64;
        spans += adjusted * n as f64;
        errors += adjusted * planned.iter().filter(|p| p.error).count() as f64;
        busy_ns += planned
            .iter()
            .map(|p| p.duration.as_nanos() * adjusted as u128)
            .sum::<u128>();
    }
    assert_eq!(
        spans,
        2.0 * 600.0 + 4.0 * 300.0 + 150.0 + 200.0 + 100.0 + 50.0
    );

    // The store clock is on a bucket boundary and every span ended in the last 60 s, so
    // the rate and concurrency cover exactly 60 s: the adjusted sums over 60, exactly
    // (powers of two and integers: every sum is exact in f64).
    let read = |m| h.read("order-service", None, m, 60);
    assert_eq!(read(TraceMeasure::Rate), Some(spans / 60.0), "rate");
    assert_eq!(
        read(TraceMeasure::Concurrency),
        Some(busy_ns as f64 / 1e9 / 60.0),
        "concurrency"
    );
    assert_eq!(
        read(TraceMeasure::ErrorRatio),
        Some(errors / spans),
        "error ratio"
    );
    let snapshot = h
        .store
        .snapshot(
            &TraceSelector {
                service: "order-service".to_string(),
                span_kind: StoreKind::Server,
                version: None,
                labels: Vec::new(),
            },
            Duration::from_secs(60),
        )
        .expect("a snapshot");
    assert_eq!(snapshot.count(), spans as u64, "adjusted count");
    assert_eq!(snapshot.errors(), errors as u64, "adjusted errors");

    // Every stored span was accepted once; those without a valid record are counted.
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"accepted\"}"),
        Some(stored as f64)
    );
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_without_sampling_record_total "),
        Some(350.0)
    );
}
