//! Synthetic OTLP exports for the benches: server spans as an instrumented HTTP service
//! sends them, deterministic from a seed.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.to_string())
}

/// A deterministic pseudo-random sequence (SplitMix64).
pub fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One export of `count` server spans under a resource with the attributes `resource`:
/// the usual HTTP attributes and then `extra`, latencies spread over 1 ms – 1 s, 2 %
/// errors, ending over the second before `now_ns`.
pub fn spans_request(
    resource: Vec<KeyValue>,
    count: usize,
    extra: &[KeyValue],
    now_ns: u64,
    seed: &mut u64,
) -> ExportTraceServiceRequest {
    let spans = (0..count)
        .map(|i| {
            let r = splitmix(seed);
            let duration = 1_000_000u64 << (r % 10); // 1 ms .. 512 ms, then up to 2x.
            let duration = duration + (r >> 40) % duration;
            let end = now_ns - (r >> 20) % 1_000_000_000;
            let error = r.is_multiple_of(50);
            let mut attributes = vec![
                attr("http.request.method", text("GET")),
                attr("http.route", text("/api/orders/{id}")),
                attr("url.path", text(&format!("/api/orders/{}", 1000 + i))),
                attr(
                    "http.response.status_code",
                    any_value::Value::IntValue(if error { 500 } else { 200 }),
                ),
            ];
            attributes.extend_from_slice(extra);
            Span {
                trace_id: splitmix(seed).to_be_bytes().repeat(2),
                span_id: splitmix(seed).to_be_bytes().to_vec(),
                parent_span_id: splitmix(seed).to_be_bytes().to_vec(),
                name: "GET /api/orders/{id}".to_string(),
                kind: 2,
                start_time_unix_nano: end - duration,
                end_time_unix_nano: end,
                attributes,
                status: Some(Status {
                    code: if error { 2 } else { 0 },
                    ..Status::default()
                }),
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// [`spans_request`] for `service` in namespace `shop`, as the KEDA-shaped workload's
/// services send them.
#[allow(dead_code)] // keda_load and h2load send these; otlp_ingest does not
pub fn service_spans(
    service: &str,
    count: usize,
    now_ns: u64,
    seed: &mut u64,
) -> ExportTraceServiceRequest {
    let resource = vec![
        attr("service.name", text(service)),
        attr("k8s.namespace.name", text("shop")),
    ];
    spans_request(resource, count, &[], now_ns, seed)
}
