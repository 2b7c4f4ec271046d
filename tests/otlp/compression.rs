//! Compressed OTLP: what a default Collector sends (its `otlp` exporter's
//! `createDefaultConfig` sets `Compression: configcompression.TypeGzip`, "Default to gzip
//! compression", in opentelemetry-collector `exporter/otlpexporter/factory.go`; the
//! `otlphttp` exporter gzips by default too), zstd, compression bombs, hostile element
//! counts and the in-flight budget.

use std::io::Write as _;
use std::time::Duration;

use opentelemetry_otlp::Compression;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use slo_scaler::signal::TraceMeasure;
use slo_scaler::source::otlp::receiver::RpcStatus;
use slo_scaler::source::otlp::Budget;
use tokio::io::AsyncWriteExt as _;
use tonic::codec::CompressionEncoding;

use crate::harness::make_spans;
use crate::harness::{plan, t0, Harness};
use crate::sdk::{export_compressed, resource, Via};

const SPANS: &str = "slo_scaler_otlp_spans_total{outcome=\"accepted\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exporter_with_gzip_and_zstd_over_grpc_and_http_is_counted_exactly() {
    let h = Harness::start(1 << 20).await;
    let mut sent = 0usize;
    let cases = [
        ("grpc-gzip", Via::Grpc, Compression::Gzip),
        ("grpc-zstd", Via::Grpc, Compression::Zstd),
        ("http-gzip", Via::Http, Compression::Gzip),
        ("http-zstd", Via::Http, Compression::Zstd),
    ];
    for (i, (service, via, compression)) in cases.into_iter().enumerate() {
        let res = resource(service, "v1");
        let n = 700 + 100 * i;
        let planned = plan(n, Duration::from_secs(30), 40.0, 7);
        let addr = match via {
            Via::Grpc => h.grpc,
            Via::Http => h.http,
        };
        export_compressed(
            addr,
            via,
            Some(compression),
            &res,
            make_spans(&res, &planned, t0()),
        )
        .await;
        sent += n;
        let errors = planned.iter().filter(|p| p.error).count();
        assert_eq!(
            h.read(service, None, TraceMeasure::ErrorRatio, 60),
            Some(errors as f64 / n as f64),
            "{service}"
        );
        assert_eq!(
            h.read(service, None, TraceMeasure::Rate, 60),
            Some(n as f64 / 60.0),
            "{service}: every span arrived once"
        );
        assert_eq!(h.metric(SPANS), Some(sent as f64), "{service}");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).expect("zstd")
}

fn request(service: &str, n: usize) -> ExportTraceServiceRequest {
    let end = (t0() - Duration::from_secs(1))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![3; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "GET /orders".into(),
                        kind: 2,
                        start_time_unix_nano: end - 5_000_000,
                        end_time_unix_nano: end,
                        ..Span::default()
                    })
                    .collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// POSTs `body` with `encoding`; returns the status and the `google.rpc.Status` message
/// of an error (empty on success).
async fn post(h: &Harness, encoding: &str, body: Vec<u8>) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", h.http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("the receiver answers");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    let message = if status == 200 {
        String::new()
    } else {
        RpcStatus::decode(body)
            .expect("a google.rpc.Status")
            .message
    };
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_compressed_bodies_and_bombs_over_http() {
    const LIMIT: usize = 256 * 1024;
    let h = Harness::start(LIMIT).await;
    let body = request("raw", 300).encode_to_vec();
    for (encoding, compressed) in [
        ("gzip", gzip(&body)),
        ("zstd", zstd(&body)),
        ("identity", body.clone()),
        ("GZIP", gzip(&body)),
    ] {
        assert_eq!(post(&h, encoding, compressed).await, (200, String::new()));
    }
    assert_eq!(h.metric(SPANS), Some(1200.0));

    // 64 MiB of zeros: about 64 KiB gzip, 2 KiB zstd; refused once inflation passes the
    // limit, before the rest is inflated.
    let zeros = vec![0u8; 64 << 20];
    for (encoding, bomb) in [("gzip", gzip(&zeros)), ("zstd", zstd(&zeros))] {
        assert!(
            bomb.len() < LIMIT,
            "{encoding} bomb of {} bytes",
            bomb.len()
        );
        let (status, message) = post(&h, encoding, bomb).await;
        assert_eq!(status, 413, "{encoding}: {message}");
        assert!(
            message.contains(&format!(
                "exceeds the limit of {LIMIT} bytes once {encoding} decompressed"
            )),
            "{message}"
        );
    }
    // Just over the limit once inflated is refused too; at the limit it is decoded.
    let over = request("raw", 1).encode_to_vec();
    let mut padded = over.clone();
    padded.resize(LIMIT + 1, 0);
    let (status, _) = post(&h, "gzip", gzip(&padded)).await;
    assert_eq!(status, 413);
    assert_eq!(
        h.metric(SPANS),
        Some(1200.0),
        "refused bodies store nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_grpc_messages_over_the_limit_are_resource_exhausted() {
    // tonic inflates into a buffer capped at `max_decoding_message_size` and answers
    // RESOURCE_EXHAUSTED when the cap is hit (tonic `codec/decode.rs`); an uncompressed
    // message over it gets the same (tonic's OUT_OF_RANGE, rewritten: see `malformed.rs`).
    let h = Harness::start(1 << 20).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = TraceServiceClient::new(channel.clone()).send_compressed(encoding);
        client
            .export(request("grpc-compressed", 100))
            .await
            .unwrap_or_else(|e| panic!("{encoding:?}: {e:?}"));
        // 32 MiB of zeros in one span name: small on the wire, a bomb once inflated.
        let mut bomb = request("grpc-bomb", 1);
        bomb.resource_spans[0].scope_spans[0].spans[0].name = "\0".repeat(32 << 20);
        let err = client
            .export(bomb)
            .await
            .expect_err("refused once inflated past the limit");
        assert_eq!(
            err.code(),
            tonic::Code::ResourceExhausted,
            "{encoding:?}: {err:?}"
        );
    }
    assert_eq!(h.metric(SPANS), Some(200.0));
    assert_eq!(h.read("grpc-bomb", None, TraceMeasure::Rate, 60), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_empty_spans_are_refused_before_they_are_decoded() {
    const LIMIT: usize = 1 << 20;
    let h = Harness::start(LIMIT).await;
    // 500,000 empty spans: two bytes each on the wire, 1 MB, under the limit; decoded
    // they would take tens of MB.
    let hostile = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); 500_000],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let body = hostile.encode_to_vec();
    assert!(body.len() < LIMIT);
    let (status, message) = post(&h, "identity", body.clone()).await;
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("holds 500000 spans"), "{message}");
    let (status, _) = post(&h, "gzip", gzip(&body)).await;
    assert_eq!(status, 413);

    let mut client = TraceServiceClient::connect(format!("http://{}", h.grpc))
        .await
        .expect("connect");
    let err = client.export(hostile).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("holds 500000 spans"), "{err:?}");
    // The accepted series exists from the start at 0 and nothing was accepted.
    assert_eq!(h.metric(SPANS), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_over_the_caps_are_rejected_and_counted() {
    let h = Harness::start(1 << 20).await;
    let long = "s".repeat(256);
    let body = request(&long, 3).encode_to_vec();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", h.http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status().as_u16(), 200);
    let answer =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
            resp.bytes().await.expect("body"),
        )
        .expect("response");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial
            .error_message
            .contains("service.name longer than 255 bytes"),
        "{}",
        partial.error_message
    );
    assert_eq!(
        h.metric("slo_scaler_otlp_spans_total{outcome=\"rejected\"}"),
        Some(3.0)
    );
    assert_eq!(h.store.series_count(), 0);
    // 255 bytes is kept.
    let body = request(&long[..255], 3).encode_to_vec();
    assert_eq!(post(&h, "identity", body).await, (200, String::new()));
    assert_eq!(h.store.series_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_answers_with_the_otlp_throttling_codes() {
    // The OTLP spec's throttling answers: HTTP 429 (retryable, with Retry-After) and
    // gRPC UNAVAILABLE (opentelemetry-specification `specification/protocol/otlp.md`,
    // "OTLP/HTTP Throttling" and "OTLP/gRPC Throttling").
    const LIMIT: usize = 64 * 1024;
    let h = Harness::start_with_budget(LIMIT, Budget::new(Budget::cost(LIMIT))).await;
    // Hold the whole budget: a request that declares a maximum-size body and sends
    // none of it.
    let mut held = tokio::net::TcpStream::connect(h.http)
        .await
        .expect("connect");
    held.write_all(
        format!(
            "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n\
             content-length: {LIMIT}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("headers");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let body = request("throttled", 5).encode_to_vec();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", h.http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let mut client = TraceServiceClient::connect(format!("http://{}", h.grpc))
        .await
        .expect("connect");
    let err = client
        .export(request("throttled", 5))
        .await
        .expect_err("busy");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // Once the held request ends, the budget is back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .export(request("throttled", 5))
        .await
        .expect("accepted once the budget is free");
    assert_eq!(h.metric(SPANS), Some(5.0));
}
