//! Bodies a receiver must refuse clearly, without a panic and without touching stored data.

use std::time::{Duration, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use slo_scaler::signal::TraceMeasure;
use slo_scaler::source::otlp::receiver::RpcStatus;

use crate::harness::{assert_close, latency, t0, Harness};

const LIMIT: usize = 64 * 1024;

fn unix_ns(ago: Duration) -> u64 {
    (t0() - ago)
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64
}

/// A resource with `service.name` = `service` (none when empty) and `n` server spans of
/// `ms` milliseconds that ended a second ago, every one an error when `error`.
fn resource_spans(service: &str, n: usize, ms: u64, error: bool) -> ResourceSpans {
    let attributes = if service.is_empty() {
        Vec::new()
    } else {
        vec![KeyValue {
            key: "service.name".to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service.to_string())),
            }),
            ..KeyValue::default()
        }]
    };
    let end = unix_ns(Duration::from_secs(1));
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: (0..n)
                .map(|i| Span {
                    trace_id: vec![7; 16],
                    span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                    name: "POST /pay".to_string(),
                    kind: 2,
                    start_time_unix_nano: end - ms * 1_000_000,
                    end_time_unix_nano: end,
                    status: Some(Status {
                        code: if error { 2 } else { 1 },
                        ..Status::default()
                    }),
                    ..Span::default()
                })
                .collect(),
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

fn request(parts: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: parts,
    }
}

async fn post(
    h: &Harness,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", h.http))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(enc) = encoding {
        req = req.header("content-encoding", enc);
    }
    let resp = req.send().await.expect("the receiver answers");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, resp.bytes().await.expect("body").to_vec())
}

/// The `google.rpc.Status` message of an error body, in either encoding.
fn status_message(content_type: &str, body: &[u8]) -> String {
    if content_type == "application/json" {
        let v: serde_json::Value = serde_json::from_slice(body).expect("JSON status");
        v["message"].as_str().expect("message").to_string()
    } else {
        RpcStatus::decode(body).expect("protobuf status").message
    }
}

/// Stores a known baseline: 10 spans of 30 ms, 2 of them errors.
async fn baseline(h: &Harness) -> Vec<Option<f64>> {
    let body = request(vec![
        resource_spans("payment-service", 8, 30, false),
        resource_spans("payment-service", 2, 30, true),
    ])
    .encode_to_vec();
    let (status, _, _) = post(h, Some("application/x-protobuf"), None, body).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.read("payment-service", None, TraceMeasure::ErrorRatio, 60),
        Some(0.2)
    );
    h.snapshot("payment-service")
}

/// A body the HTTP receiver must refuse, and how.
struct Bad {
    what: &'static str,
    content_type: Option<&'static str>,
    encoding: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    message: &'static str,
}

type BadRow = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

impl From<BadRow> for Bad {
    fn from((what, content_type, encoding, body, status, message): BadRow) -> Bad {
        Bad {
            what,
            content_type,
            encoding,
            body,
            status,
            message,
        }
    }
}

/// Posts `bad` and checks the status, the message, and that stored data is as `before`.
async fn check(h: &Harness, before: &[Option<f64>], bad: Bad) {
    let (status, resp_ct, resp) = post(h, bad.content_type, bad.encoding, bad.body).await;
    assert_eq!(status, bad.status, "{}", bad.what);
    let message = status_message(&resp_ct, &resp);
    assert!(message.contains(bad.message), "{}: {message:?}", bad.what);
    assert_eq!(
        h.snapshot("payment-service"),
        before,
        "{} changed stored data",
        bad.what
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_clearly_and_change_nothing() {
    let h = Harness::start(LIMIT).await;
    let before = baseline(&h).await;
    let valid = request(vec![resource_spans("payment-service", 50, 900, true)]).encode_to_vec();

    let cases = [
        (
            "truncated protobuf",
            Some("application/x-protobuf"),
            None,
            valid[..valid.len() / 2].to_vec(),
            400,
            "cannot decode protobuf ExportTraceServiceRequest",
        ),
        (
            "garbage protobuf",
            Some("application/x-protobuf"),
            None,
            vec![0xff; 100],
            400,
            "cannot decode protobuf ExportTraceServiceRequest",
        ),
        (
            "JSON that is not JSON",
            Some("application/json"),
            None,
            b"{\"resourceSpans\": [".to_vec(),
            400,
            "cannot decode JSON ExportTraceServiceRequest",
        ),
        (
            "JSON of the wrong shape",
            Some("application/json"),
            None,
            br#"{"resourceSpans": 5}"#.to_vec(),
            400,
            "cannot decode JSON ExportTraceServiceRequest",
        ),
        (
            // Three bytes of text each, a `String` (24 bytes) in a `Vec` decoded.
            "JSON arrays of empty strings (a resource's entity reference keys)",
            Some("application/json"),
            None,
            format!(
                r#"{{"resourceSpans":[{{"resource":{{"entityRefs":[{{"type":"k8s.pod","idKeys":[{}""]}}]}}}}]}}"#,
                r#""","#.repeat(LIMIT / 3 - 40)
            )
            .into_bytes(),
            413,
            "would take up to",
        ),
        (
            "plain text",
            Some("text/plain"),
            None,
            valid.clone(),
            415,
            "unsupported content type \"text/plain\"",
        ),
        (
            "no content type",
            None,
            None,
            valid.clone(),
            415,
            "unsupported content type \"\"",
        ),
        (
            "a gzip header on a body that is not gzip",
            Some("application/x-protobuf"),
            Some("gzip"),
            valid.clone(),
            400,
            "cannot decompress the gzip body",
        ),
        (
            "an encoding the receiver does not inflate",
            Some("application/x-protobuf"),
            Some("br"),
            valid.clone(),
            415,
            "unsupported content encoding \"br\"",
        ),
        (
            "oversized",
            Some("application/x-protobuf"),
            None,
            request(vec![resource_spans("payment-service", 2_000, 900, true)]).encode_to_vec(),
            413,
            "request body exceeds the limit of 65536 bytes",
        ),
    ];
    for case in cases {
        check(&h, &before, Bad::from(case)).await;
    }
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"accepted\"}"),
        Some(10.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_without_service_name_are_rejected_through_partial_success() {
    let h = Harness::start(LIMIT).await;
    let before = baseline(&h).await;
    let mixed = request(vec![
        resource_spans("", 3, 5_000, true),
        resource_spans("checkout", 4, 120, false),
    ]);

    // OTLP/HTTP, protobuf.
    let (status, ct, body) = post(
        &h,
        Some("application/x-protobuf"),
        None,
        mixed.encode_to_vec(),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/x-protobuf"));
    let resp = ExportTraceServiceResponse::decode(body.as_slice()).expect("response");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    assert_eq!(
        partial.error_message,
        "3 spans rejected: no service.name resource attribute"
    );

    // OTLP/gRPC.
    let mut client = TraceServiceClient::connect(format!("http://{}", h.grpc))
        .await
        .expect("connect");
    let resp = client.export(mixed).await.expect("export").into_inner();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);

    // The good half of each request was stored, the rest left alone.
    assert_eq!(
        h.read("checkout", None, TraceMeasure::Rate, 60),
        Some(8.0 / 60.0)
    );
    assert_close(
        h.read("checkout", None, latency(0.95), 60),
        0.120,
        "checkout p95",
    );
    assert_eq!(h.snapshot("payment-service"), before);
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"rejected\"}"),
        Some(6.0)
    );
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"accepted\"}"),
        Some(18.0)
    );
}

/// A message over the limit never fits, so its refusal must not be one OTLP exporters
/// retry: the OTLP specification (protocol/exporter "Failures" for OTLP/gRPC) lists
/// `OUT_OF_RANGE` (tonic's answer to an oversized message) among the retryable codes, and
/// `RESOURCE_EXHAUSTED` as retryable only with a `RetryInfo`. A Collector would resend the
/// batch until its retry time ran out (5 minutes by default), taking an in-flight charge each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_grpc_messages_are_refused_for_good() {
    let h = Harness::start(LIMIT).await;
    let before = baseline(&h).await;
    let mut big = resource_spans("payment-service", 1, 900, true);
    big.scope_spans[0].spans[0].name = "x".repeat(9 * 1024 * 1024);
    let mut client = TraceServiceClient::connect(format!("http://{}", h.grpc))
        .await
        .expect("connect");
    let err = client
        .export(request(vec![big]))
        .await
        .expect_err("over the decoding limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.metadata().get("grpc-status-details-bin").is_none(),
        "no RetryInfo"
    );
    assert!(err.message().contains("too large"), "{err:?}");
    assert_eq!(h.snapshot("payment-service"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_is_accepted() {
    let h = Harness::start(LIMIT).await;
    let end = unix_ns(Duration::from_secs(2));
    let start = end - 250_000_000;
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[
            {{"key":"service.name","value":{{"stringValue":"json-service"}}}},
            {{"key":"service.version","value":{{"stringValue":"1.4.2"}}}}]}},
          "scopeSpans":[{{"scope":{{"name":"manual"}},"spans":[
            {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
              "name":"GET /items","kind":2,
              "startTimeUnixNano":"{start}","endTimeUnixNano":"{end}",
              "status":{{"code":2,"message":"boom"}}}},
            {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175",
              "name":"GET /items","kind":2,
              "startTimeUnixNano":"{start}","endTimeUnixNano":"{end}"}}]}}]}}]}}"#
    );
    let (status, ct, resp) = post(
        &h,
        Some("application/json; charset=utf-8"),
        None,
        body.into_bytes(),
    )
    .await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/json"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let resp: serde_json::Value = serde_json::from_slice(&resp).expect("JSON response");
    assert!(
        resp.get("partialSuccess").is_none_or(|p| p.is_null()),
        "{resp}"
    );
    assert_eq!(
        h.read("json-service", Some("1.4.2"), TraceMeasure::ErrorRatio, 60),
        Some(0.5)
    );
    assert_close(
        h.read("json-service", None, latency(0.99), 60),
        0.250,
        "json p99",
    );
}
