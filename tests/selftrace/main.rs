//! Self-traces: the real `slo-scaler` binary, started with the standard
//! `OTEL_EXPORTER_OTLP_*` variables, exports its own spans over OTLP — to an OTLP/gRPC
//! receiver that records every request (span names and attributes asserted), and to a
//! second scaler's embedded store (which then answers a trigger on the first one's RPCs).

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::scaler::{metric, Scaler};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::ScaledObjectRef;
use tonic::transport::server::TcpIncoming;

/// An OTLP/gRPC trace receiver keeping every request.
#[derive(Clone, Default)]
struct Recorder {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_recorder() -> (SocketAddr, Recorder) {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind recorder");
    let addr = incoming.local_addr().expect("recorder address");
    let recorder = Recorder::default();
    let service = TraceServiceServer::new(recorder.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    (addr, recorder)
}

fn text(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|a| {
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (a.key.clone(), v)
        })
        .collect()
}

/// One received span: its name, kind, status code and attributes as text.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    kind: i32,
    status: i32,
    attrs: BTreeMap<String, String>,
    parent: Vec<u8>,
    span_id: Vec<u8>,
    resource: BTreeMap<String, String>,
}

fn spans(recorder: &Recorder) -> Vec<Got> {
    let requests = recorder.requests.lock().unwrap();
    let mut out = Vec::new();
    for r in requests.iter() {
        for rs in &r.resource_spans {
            let resource = text(&rs.resource.clone().unwrap_or_default().attributes);
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(Got {
                        name: s.name.clone(),
                        kind: s.kind,
                        status: s.status.as_ref().map_or(0, |st| st.code),
                        attrs: text(&s.attributes),
                        parent: s.parent_span_id.clone(),
                        span_id: s.span_id.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The scaler binary, with self-traces sent to `endpoint` by the standard variables.
struct Child_ {
    child: Child,
    grpc: SocketAddr,
    otlp_grpc: SocketAddr,
}

fn port_addr() -> SocketAddr {
    format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap()
}

async fn start_binary(endpoint: SocketAddr, schedule_delay_ms: u64, flags: &[&str]) -> Child_ {
    let (grpc, admin, otlp_grpc, otlp_http) = (port_addr(), port_addr(), port_addr(), port_addr());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slo-scaler"));
    cmd.args(["serve", "--log-format", "text"])
        .args(["--grpc-addr", &grpc.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--otlp-grpc-addr", &otlp_grpc.to_string()])
        .args(["--otlp-http-addr", &otlp_http.to_string()])
        .args(flags);
    // Only the variables this test means; none inherited.
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("SLO_SCALER_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{endpoint}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms.to_string())
        .stdout(Stdio::null());
    // Its log, to say why when it does not become ready (a port taken between
    // `free_port` and the bind, say).
    let log = tempfile::NamedTempFile::new().expect("a log file");
    cmd.stderr(log.reopen().expect("the log file"));
    let mut child = cmd.spawn().expect("start slo-scaler");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("slo-scaler did not become ready (exit: {exited:?}); its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Child_ {
        child,
        grpc,
        otlp_grpc,
    }
}

impl Child_ {
    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "scaler exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "scaler did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one server span of `service` to an OTLP/gRPC receiver.
async fn send_span(addr: SocketAddr, service: &str) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![7; 8],
                    name: "GET /".into(),
                    kind: 2,
                    start_time_unix_nano: now - 20_000_000,
                    end_time_unix_nano: now,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .export(request)
        .await
        .expect("export");
}

fn so(namespace: &str, name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let mut r = common::scaler::so(name, metadata);
    r.namespace = namespace.into();
    r
}

const SECRET_QUERY: &str = "sum(rate(payments_secret_total[1m]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_backend_reads_and_ingest_batches_become_spans() {
    let (endpoint, recorder) = start_recorder().await;
    let gone = format!("gone=http://127.0.0.1:{}", common::free_port());
    // A schedule delay of a minute: every span below reaches the receiver only through
    // the flush at SIGTERM.
    let scaler = start_binary(endpoint, 60_000, &["--prometheus", &gone]).await;
    let mut client = ExternalScalerClient::connect(format!("http://{}", scaler.grpc))
        .await
        .expect("connect to the scaler");

    send_span(scaler.otlp_grpc, "order-service").await;
    let orders = so(
        "shop",
        "orders",
        &[
            ("signal", "latency"),
            ("source", "otlp"),
            ("service", "order-service"),
            ("window", "1m"),
            ("threshold", "300ms"),
        ],
    );
    // GetMetricSpec + GetMetrics (a miss), then GetMetrics again within the TTL (a hit).
    assert!(metric(&mut client, &orders).await.unwrap() > 0.0);
    assert!(metric(&mut client, &orders).await.unwrap() > 0.0);
    let failing = so(
        "payments",
        "ledger",
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("backend", "gone"),
            ("query", SECRET_QUERY),
            ("threshold", "5"),
        ],
    );
    let err = metric(&mut client, &failing).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let mut messages = vec![err.message().to_string()];
    let invalid = so("shop", "broken", &[("signal", "latency")]);
    let err = client.get_metric_spec(invalid).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    messages.push(err.message().to_string());
    assert!(
        spans(&recorder).is_empty(),
        "nothing exported before the flush"
    );

    scaler.terminate();
    let got = spans(&recorder);
    assert!(!got.is_empty(), "no span received");

    // Every span comes from the scaler's resource.
    for s in &got {
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("slo-scaler")
        );
        assert_eq!(
            s.resource.get("service.version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
    // The query text and the metadata never leave the process, nor the error messages
    // KEDA was answered with (a span names an error by its kind).
    let everything = format!("{got:?}");
    assert!(
        !everything.contains("payments_secret_total"),
        "{everything}"
    );
    for message in &messages {
        assert!(message.len() > 20, "{message:?}");
        assert!(
            !everything.contains(message.as_str()),
            "{message:?} in {everything}"
        );
    }

    let rpc = |method: &str, name: &str| -> Vec<Got> {
        got.iter()
            .filter(|s| {
                s.name == format!("externalscaler.ExternalScaler/{method}")
                    && s.attrs.get("keda.scaled_object.name").map(String::as_str) == Some(name)
            })
            .cloned()
            .collect()
    };
    // Server spans with the RPC conventions' attributes.
    let get_metrics = rpc("GetMetrics", "orders");
    assert_eq!(get_metrics.len(), 2, "{got:#?}");
    for s in &get_metrics {
        assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
        assert_eq!(s.attrs["rpc.system"], "grpc");
        assert_eq!(s.attrs["rpc.service"], "externalscaler.ExternalScaler");
        assert_eq!(s.attrs["rpc.method"], "GetMetrics");
        assert_eq!(s.attrs["rpc.grpc.status_code"], "0");
        assert_eq!(s.attrs["k8s.namespace.name"], "shop");
    }
    assert_eq!(rpc("GetMetricSpec", "orders").len(), 2);
    let broken = rpc("GetMetricSpec", "broken");
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].attrs["rpc.grpc.status_code"], "3");
    assert_eq!(broken[0].status, 2, "STATUS_CODE_ERROR");
    let ledger = rpc("GetMetrics", "ledger");
    assert_eq!(ledger[0].attrs["rpc.grpc.status_code"], "14");

    // Backend reads, children of their RPC: a miss then a hit; a failing backend's
    // error named by its kind only.
    let reads = |parent: &Got| -> Vec<BTreeMap<String, String>> {
        got.iter()
            .filter(|s| s.name == "backend.read" && s.parent == parent.span_id)
            .map(|s| s.attrs.clone())
            .collect()
    };
    let cache: Vec<String> = get_metrics
        .iter()
        .flat_map(reads)
        .map(|a| {
            format!(
                "{} {} {}",
                a["slo_scaler.backend"], a["slo_scaler.cache"], a["slo_scaler.outcome"]
            )
        })
        .collect();
    assert_eq!(cache, ["otlp miss ok", "otlp hit ok"]);
    let failed = reads(&ledger[0]);
    assert_eq!(failed.len(), 1, "{got:#?}");
    assert_eq!(failed[0]["slo_scaler.backend"], "prometheus/gone");
    assert_eq!(failed[0]["slo_scaler.source"], "prometheus");
    assert_eq!(failed[0]["slo_scaler.cache"], "miss");
    assert_eq!(failed[0]["error.type"], "connect");

    // The OTLP ingest batch.
    let ingest: Vec<&Got> = got.iter().filter(|s| s.name == "otlp.ingest").collect();
    assert_eq!(ingest.len(), 1, "{got:#?}");
    assert_eq!(ingest[0].attrs["otlp.spans.accepted"], "1");
    assert_eq!(ingest[0].attrs["otlp.spans.rejected"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_scaler_scales_on_the_first_ones_spans() {
    let second = Scaler::start(&["--otlp-bucket-width", "1s"]).await;
    let receiver = second
        .server
        .as_ref()
        .and_then(|s| s.otlp_grpc_addr)
        .expect("receiver on");
    let first = start_binary(receiver, 100, &[]).await;
    let mut client = ExternalScalerClient::connect(format!("http://{}", first.grpc))
        .await
        .expect("connect to the first scaler");
    let invalid = so("shop", "broken", &[("signal", "latency")]);
    for _ in 0..20 {
        let _ = client.get_metric_spec(invalid.clone()).await;
    }
    // The second scaler reads the first one's server spans from its store, as KEDA would.
    let mut second_client = second.client.clone();
    let own = so(
        "keda",
        "slo-scaler",
        &[
            ("signal", "errorRate"),
            ("source", "otlp"),
            ("service", "slo-scaler"),
            ("window", "1m"),
            ("threshold", "0.5"),
            ("ignoreNullValues", "false"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let ratio = loop {
        match metric(&mut second_client, &own).await {
            Ok(v) => break v,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no spans of slo-scaler arrived: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Every call was refused (InvalidArgument): every server span is an error.
    assert_eq!(ratio, 1.0);
    first.terminate();
}
