//! Hostile OTLP against the real binary (`slo-scaler serve`, default flags): peak RSS
//! (`VmHWM` in `/proc/PID/status`) stays under docs/limits.md's worst case and the chart's
//! 1 GiB limit with N concurrent maximum-size requests over HTTP and gRPC, compression
//! bombs are refused in bounded memory, and the server still answers afterwards.

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tonic::codec::CompressionEncoding;

use common::free_addr;

const MIB: u64 = 1 << 20;
/// The defaults of `--otlp-max-request-bytes`, `--otlp-max-inflight-bytes` and
/// `--otlp-max-store-bytes`.
const MAX_REQUEST: usize = 4 << 20;
const INFLIGHT: u64 = 256 * MIB;
const STORE: u64 = 512 * MIB;
/// The chart's memory limit.
const CHART_LIMIT: u64 = 1024 * MIB;
/// Concurrent maximum-size requests per protocol in each round.
const N: usize = 8;
/// Rounds of N + N requests.
const ROUNDS: usize = 2;

/// docs/limits.md's worst case: the process at rest plus the in-flight budget plus the
/// store's byte cap (allocator overhead included in the rest figure's margin).
fn worst_case(rest: u64) -> u64 {
    rest + INFLIGHT + STORE + 32 * MIB
}

/// `slo-scaler serve` on loopback ports, killed on drop.
struct Scaler {
    child: Child,
    admin: SocketAddr,
    otlp_grpc: SocketAddr,
    otlp_http: SocketAddr,
}

impl Scaler {
    async fn start() -> Scaler {
        let (grpc, admin, otlp_grpc, otlp_http) =
            (free_addr(), free_addr(), free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
            .args([
                "serve",
                "--grpc-addr",
                &grpc.to_string(),
                "--admin-addr",
                &admin.to_string(),
                "--otlp-grpc-addr",
                &otlp_grpc.to_string(),
                "--otlp-http-addr",
                &otlp_http.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn slo-scaler");
        let scaler = Scaler {
            child,
            admin,
            otlp_grpc,
            otlp_http,
        };
        for _ in 0..300 {
            if scaler.ready().await {
                return scaler;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("slo-scaler did not become ready");
    }

    async fn ready(&self) -> bool {
        let url = format!("http://{}/readyz", self.admin);
        matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success())
    }

    /// Peak resident set size so far.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the scaler is running");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    async fn post(&self, encoding: &str, body: Vec<u8>) -> u16 {
        reqwest::Client::new()
            .post(format!("http://{}/v1/traces", self.otlp_http))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn grpc(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(format!("http://{}", self.otlp_grpc))
            .await
            .expect("connect")
            .max_encoding_message_size(usize::MAX)
    }

    /// The server still takes spans and answers its probes.
    async fn still_serves(&self) {
        assert!(self.ready().await, "readyz after the abuse");
        let mut client = self.grpc().await;
        client
            .export(minimal("after", 10))
            .await
            .expect("ordinary spans are accepted after the abuse");
        let body = minimal("after", 10).encode_to_vec();
        assert_eq!(self.post("identity", body).await, 200);
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as u64
}

/// One resource of `service`'s `spans`.
fn resource(service: String, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service)),
                }),
                ..KeyValue::default()
            }],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

/// `n` spans as small as a valid span gets (ids, kind, times), with durations from
/// 1 ns to 100 s and end times over the whole retention (600 s), so every bucket of every
/// series gets a sketch of every width; `service` may hold `{}` for one of 50 services.
fn minimal(service: &str, n: usize) -> ExportTraceServiceRequest {
    let now = now_ns();
    let resources = if service.contains("{}") { 50 } else { 1 };
    ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|r| {
                let spans = (0..n / resources)
                    .map(|i| {
                        let end = now - (i as u64 % 590) * 1_000_000_000;
                        Span {
                            trace_id: vec![9; 16],
                            span_id: vec![1; 8],
                            kind: 2,
                            start_time_unix_nano: end - 10u64.pow((i % 12) as u32),
                            end_time_unix_nano: end,
                            ..Span::default()
                        }
                    })
                    .collect();
                resource(service.replace("{}", &r.to_string()), spans)
            })
            .collect(),
    }
}

/// The largest body of valid minimal spans under the request limit.
fn maximum_valid() -> Vec<u8> {
    let per_span = minimal("abuse-{}", 5_000).encoded_len() / 5_000;
    let mut n = MAX_REQUEST / per_span;
    loop {
        let body = minimal("abuse-{}", n).encode_to_vec();
        if body.len() <= MAX_REQUEST {
            return body;
        }
        n -= n / 50;
    }
}

/// A body of empty spans at the request limit (2 bytes each: 4 MiB is ~2 million).
fn maximum_empty() -> Vec<u8> {
    let spans = (MAX_REQUEST - 16) / 2;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); spans],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_maximum_size_hostile_requests_stay_within_the_bound() {
    let scaler = Scaler::start().await;
    let rest = scaler.peak_rss();
    let valid = maximum_valid();
    let empty = maximum_empty();
    assert!(valid.len() <= MAX_REQUEST && empty.len() <= MAX_REQUEST);
    let valid_request = ExportTraceServiceRequest::decode(valid.as_slice()).expect("decodes");
    let empty_request = ExportTraceServiceRequest::decode(empty.as_slice()).expect("decodes");

    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for i in 0..N {
            // Alternate: bodies that decode (and fill the store) and bodies of empty spans.
            let (body, request) = if (i + round) % 2 == 0 {
                (valid.clone(), valid_request.clone())
            } else {
                (empty.clone(), empty_request.clone())
            };
            let http = reqwest::Client::new()
                .post(format!("http://{}/v1/traces", scaler.otlp_http))
                .header("content-type", "application/x-protobuf")
                .body(body);
            tasks.push(tokio::spawn(async move {
                match http.send().await {
                    Ok(r) => format!("http {}", r.status().as_u16()),
                    Err(e) => format!("http error {e}"),
                }
            }));
            let mut client = scaler.grpc().await;
            tasks.push(tokio::spawn(async move {
                match client.export(request).await {
                    Ok(_) => "grpc OK".to_string(),
                    Err(e) => format!("grpc {:?}", e.code()),
                }
            }));
        }
        for t in tasks {
            *outcomes.entry(t.await.expect("task")).or_default() += 1;
        }
    }
    let peak = scaler.peak_rss();
    eprintln!(
        "{N} HTTP + {N} gRPC concurrent 4 MiB requests × {ROUNDS} rounds: {outcomes:?}; \
         peak RSS {} MiB (at rest {} MiB, worst case {} MiB)",
        peak / MIB,
        rest / MIB,
        worst_case(rest) / MIB
    );
    assert!(
        outcomes.contains_key("http 200") && outcomes.contains_key("grpc OK"),
        "valid maximum-size requests are served: {outcomes:?}"
    );
    assert!(
        outcomes.contains_key("http 413") && outcomes.contains_key("grpc ResourceExhausted"),
        "empty-span bodies are refused: {outcomes:?}"
    );
    assert!(
        peak <= worst_case(rest),
        "peak RSS {peak} over the stated worst case"
    );
    assert!(peak < CHART_LIMIT, "peak RSS {peak} over the chart's limit");
    scaler.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compression_bombs_are_refused_in_bounded_memory() {
    let scaler = Scaler::start().await;
    let rest = scaler.peak_rss();
    // 256 MiB of zeros (64 × the limit): about 256 KiB gzip, 8 KiB zstd.
    let gzip_bomb = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let chunk = vec![0u8; MIB as usize];
        for _ in 0..256 {
            e.write_all(&chunk).expect("gzip");
        }
        e.finish().expect("gzip")
    };
    let zstd_bomb = {
        use std::io::Write as _;
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
        let chunk = vec![0u8; MIB as usize];
        for _ in 0..256 {
            e.write_all(&chunk).expect("zstd");
        }
        e.finish().expect("zstd")
    };
    assert!(gzip_bomb.len() < MAX_REQUEST && zstd_bomb.len() < MAX_REQUEST);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for (encoding, bomb) in [("gzip", gzip_bomb.clone()), ("zstd", zstd_bomb.clone())] {
            let http = reqwest::Client::new()
                .post(format!("http://{}/v1/traces", scaler.otlp_http))
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", encoding)
                .body(bomb);
            tasks.push(tokio::spawn(async move {
                http.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
            }));
        }
    }
    for t in tasks {
        let status = t.await.expect("task");
        assert!(
            status == 413 || status == 429,
            "a bomb is refused as too large (or throttled), got {status}"
        );
    }
    // gRPC: a 64 MiB span name of zeros, gzip and zstd.
    let mut bomb = minimal("bomb", 1);
    bomb.resource_spans[0].scope_spans[0].spans[0].name = "\0".repeat(64 << 20);
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = scaler.grpc().await.send_compressed(encoding);
        let err = client.export(bomb.clone()).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    }
    let peak = scaler.peak_rss();
    eprintln!(
        "compression bombs (256 MiB inflated, 8 over HTTP, 2 over gRPC): peak RSS {} MiB \
         (at rest {} MiB)",
        peak / MIB,
        rest / MIB
    );
    // At most the in-flight budget above rest: nothing was inflated past the limit.
    assert!(peak <= rest + INFLIGHT, "peak RSS {peak}, at rest {rest}");
    scaler.still_serves().await;
}

/// Spans that make every bucket's sketch wide: over each of about 100 services, two spans
/// in each second of the retention, 1 ns and 590 s long (no ids, no names: 20 bytes each),
/// so each (service, second) takes a sketch of about 1,350 bins (5.4 KiB) from 40 bytes of
/// request; each request names its own services (`round`), so each adds its buckets to the
/// store. Built per request before the store counted them, a request's sketches (about
/// 320 MiB) came on top of a full store; the store builds each bucket under its byte
/// bound instead.
fn wide_sketches(round: usize) -> Vec<u8> {
    let now = now_ns();
    ExportTraceServiceRequest {
        resource_spans: (0..100)
            .map(|r| {
                let spans = (0..590u64)
                    .flat_map(|s| {
                        let end = now - s * 1_000_000_000;
                        [1, 590_000_000_000].map(|d| Span {
                            kind: 2,
                            start_time_unix_nano: end - d,
                            end_time_unix_nano: end,
                            ..Span::default()
                        })
                    })
                    .collect();
                resource(format!("wide-{round}-{r}"), spans)
            })
            .collect(),
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wide_sketches_stay_within_the_bound() {
    let scaler = Scaler::start().await;
    let rest = scaler.peak_rss();
    let body = wide_sketches(0);
    assert!(body.len() <= MAX_REQUEST, "{}", body.len());
    // Over HTTP the body is refused before it is decoded: its spans would take over 4 ×
    // its size decoded.
    assert_eq!(scaler.post("identity", body.clone()).await, 413);
    // Over gRPC (charged 6 × the limit whatever its size) the first two fill the store, and
    // the next are refused by it.
    let mut client = scaler.grpc().await;
    let mut rejected = Vec::new();
    for round in 0..4 {
        let request =
            ExportTraceServiceRequest::decode(wide_sketches(round).as_slice()).expect("decodes");
        let answer = client.export(request).await.expect("an OTLP answer");
        let partial = answer.into_inner().partial_success.unwrap_or_default();
        rejected.push(partial.rejected_spans);
    }
    let peak = scaler.peak_rss();
    eprintln!(
        "4 gRPC requests of wide sketches, {} KiB each: spans rejected {rejected:?}; peak RSS \
         {} MiB (at rest {} MiB, worst case {} MiB)",
        body.len() / 1024,
        peak / MIB,
        rest / MIB,
        worst_case(rest) / MIB
    );
    assert!(
        rejected.last().is_some_and(|&n| n > 0),
        "the store filled up: {rejected:?}"
    );
    assert!(
        peak <= worst_case(rest),
        "peak RSS {} MiB over the stated worst case",
        peak / MIB
    );
    scaler.still_serves().await;
}
