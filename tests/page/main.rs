//! The status page in a real browser: a scaler answering for ScaledObjects in every state
//! (ok, no data, stale, error), read by Debian's `chromium` through `playwright-core`
//! (`tests/page/browser.mjs`), asserting what a person sees and that the page asks no
//! other host for anything.
//!
//! Needs `/usr/bin/chromium` and `playwright-core` in `target/page-node` (both installed
//! by `scripts/test.sh`); without them the test fails, it never skips.

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::prometheus::PrometheusServer;
use common::scaler::{metric, Scaler};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use slo_scaler::proto::ScaledObjectRef;

fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "no chromium at {} — the page test needs a real browser: run `scripts/test.sh` \
         (it installs Debian's `chromium` package)",
        path.display()
    );
    path
}

fn node_modules() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-node/node_modules");
    assert!(
        dir.join("playwright-core").exists(),
        "no playwright-core in {} — run `scripts/test.sh` (it installs it there with npm)",
        dir.display()
    );
    dir
}

fn so(namespace: &str, name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let mut r = common::scaler::so(name, metadata);
    r.namespace = namespace.into();
    r
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Sends `n` server spans of `service` ending now, each `latency` long, `errors` of them
/// failed, through a real OTLP/gRPC client.
async fn send_spans(addr: SocketAddr, service: &str, n: usize, latency: Duration, errors: usize) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "GET /orders/{id}".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: now - latency.as_nanos() as u64,
            end_time_unix_nano: now,
            status: Some(Status {
                code: if i < errors {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Ok as i32
                },
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the OTLP receiver");
    client.export(request).await.expect("spans accepted");
}

/// What the browser saw in one row of the page.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeenRow {
    namespace: String,
    scaled_object: String,
    metric: String,
    signal: String,
    value: String,
    threshold: String,
    active: String,
    state: String,
    error: String,
    query: String,
    sparkline_points: u32,
    sparkline_lines: u32,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    rows: Vec<SeenRow>,
    backends: Vec<Vec<String>>,
    store: std::collections::BTreeMap<String, String>,
    requests: Vec<String>,
    foreign: Vec<String>,
    violations: Vec<String>,
    console_errors: Vec<String>,
}

/// Runs the browser on `url`; what it saw.
fn browse(url: &str, screenshot: &Path) -> Seen {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/page/browser.mjs");
    let profile = tempfile::tempdir().expect("empty profile dir");
    let out = std::process::Command::new("node")
        .arg(&script)
        .env("NODE_PATH", node_modules())
        .env("PAGE_URL", url)
        .env("CHROMIUM", chromium())
        .env("PROFILE_DIR", profile.path())
        .env("SCREENSHOT", screenshot)
        .output()
        .expect("run node (the page test needs Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// One expected row: (namespace, ScaledObject, signal tag, value shown, state shown,
/// part of the error shown or "", sparkline has a line).
type Expect = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
);

fn check(seen: &[SeenRow], expect: &[Expect]) {
    let got: Vec<Expect> = seen
        .iter()
        .map(|r| {
            let e = expect
                .iter()
                .find(|e| e.0 == r.namespace && e.1 == r.scaled_object)
                .unwrap_or_else(|| panic!("unexpected row {r:?}"));
            (
                e.0,
                e.1,
                if r.signal == e.2 {
                    e.2
                } else {
                    "<other signal>"
                },
                if r.value == e.3 || (e.3 == "<latency>" && r.value.ends_with(" ms")) {
                    e.3
                } else {
                    "<other value>"
                },
                if r.state == e.4 { e.4 } else { "<other state>" },
                if r.error.contains(e.5) {
                    e.5
                } else {
                    "<other error>"
                },
                r.sparkline_lines > 0,
            )
        })
        .collect();
    assert_eq!(got, expect, "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_every_scaled_object_in_its_state() {
    let good = PrometheusServer::start(&[]).await;
    let mut flaky = PrometheusServer::start(&[]).await;
    let gone = format!("http://127.0.0.1:{}", common::free_port());
    let backends = format!("main={},flaky={},gone={gone}", good.url(), flaky.url());
    let scaler = Scaler::start(&[
        "--prometheus",
        &backends,
        "--cache-ttl",
        "1s",
        "--max-stale",
        "10m",
        "--backend-timeout",
        "2s",
        "--otlp-bucket-width",
        "1s",
    ])
    .await;
    let mut client = scaler.client.clone();
    let otlp = scaler
        .server
        .as_ref()
        .and_then(|s| s.otlp_grpc_addr)
        .expect("OTLP receiver on");

    let orders = so(
        "shop",
        "orders",
        &[
            ("signal", "latency"),
            ("source", "otlp"),
            ("service", "order-service"),
            ("quantile", "p95"),
            ("window", "1m"),
            ("threshold", "300ms"),
            ("activationThreshold", "50ms"),
        ],
    );
    let checkout = so(
        "shop",
        "checkout",
        &[
            ("signal", "errorRate"),
            ("source", "otlp"),
            ("service", "checkout-service"),
            ("window", "1m"),
            ("threshold", "0.05"),
        ],
    );
    let search = so(
        "shop",
        "search",
        &[
            ("signal", "latency"),
            ("source", "otlp"),
            ("service", "search-service"),
            ("quantile", "p99"),
            ("threshold", "500ms"),
            ("ignoreNullValues", "false"),
        ],
    );
    let ledger = so(
        "payments",
        "ledger",
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("backend", "main"),
            ("query", "scalar(vector(42))"),
            ("threshold", "100"),
        ],
    );
    let fraud = so(
        "payments",
        "fraud-check",
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("backend", "flaky"),
            ("query", "scalar(vector(7))"),
            ("threshold", "10"),
        ],
    );
    let exporter = so(
        "batch",
        "report-exporter",
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("backend", "gone"),
            ("query", "sum(rate(reports_total[1m]))"),
            ("threshold", "5"),
        ],
    );

    // KEDA's polling, a second apart, for long enough that each value has two history
    // samples (the board keeps one per 5 s).
    const ROUNDS: u32 = 6;
    let mut p95 = 0.0;
    for round in 0..ROUNDS {
        send_spans(
            otlp,
            "order-service",
            50,
            Duration::from_millis(120 + 10 * u64::from(round)),
            0,
        )
        .await;
        send_spans(otlp, "checkout-service", 50, Duration::from_millis(40), 1).await;
        p95 = metric(&mut client, &orders).await.unwrap();
        assert!(metric(&mut client, &checkout).await.is_ok());
        assert_eq!(metric(&mut client, &ledger).await.unwrap(), 42.0);
        assert_eq!(metric(&mut client, &fraud).await.unwrap(), 7.0);
        assert!(metric(&mut client, &search).await.is_err());
        assert!(metric(&mut client, &exporter).await.is_err());
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // The flaky backend goes away: its last good value is served, stale.
    flaky.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(metric(&mut client, &fraud).await.unwrap(), 7.0);

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-node/status-page.png");
    let seen = browse(&format!("{}/", scaler.admin), &screenshot);

    check(
        &seen.rows,
        &[
            (
                "batch",
                "report-exporter",
                "query",
                "–",
                "error",
                "cannot connect",
                false,
            ),
            ("payments", "fraud-check", "query", "7", "stale", "", true),
            ("payments", "ledger", "query", "42", "ok", "", true),
            ("shop", "checkout", "errorRate", "2 %", "ok", "", true),
            ("shop", "orders", "latency", "<latency>", "ok", "", true),
            (
                "shop", "search", "latency", "–", "no data", "no data", false,
            ),
        ],
    );
    // The query each trigger sends is on the page, as the admin port's JSON has it.
    let ledger_row = seen
        .rows
        .iter()
        .find(|r| r.scaled_object == "ledger")
        .unwrap();
    assert_eq!(ledger_row.query, "prometheus/main: scalar(vector(42))");
    assert_eq!(ledger_row.threshold, "100");
    assert_eq!(ledger_row.active, "active");
    let orders_row = seen
        .rows
        .iter()
        .find(|r| r.scaled_object == "orders")
        .unwrap();
    assert_eq!(orders_row.metric, "latency-p95-order-service");
    assert!(orders_row.sparkline_points >= 2, "{orders_row:?}");
    // The value shown is the value KEDA was last given, in milliseconds (3 digits).
    let shown: f64 = orders_row.value.trim_end_matches(" ms").parse().unwrap();
    assert!(
        (shown - p95 * 1000.0).abs() <= 0.5,
        "{shown} ms shown, {p95} s served"
    );

    // Backends: the failing one shows its errors, the good one its last success.
    let backend = |name: &str| {
        seen.backends
            .iter()
            .find(|b| b.first().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("no backend {name} in {:?}", seen.backends))
            .clone()
    };
    assert!(
        backend("prometheus/gone")[2].starts_with("100 %"),
        "{:?}",
        seen.backends
    );
    assert!(
        backend("prometheus/main")[2].starts_with("0 %"),
        "{:?}",
        seen.backends
    );
    assert_ne!(backend("prometheus/main")[1], "never");
    assert_eq!(backend("prometheus/gone")[1], "never");
    // Its last failure, seconds ago by the server's clock (the browser's is an hour ahead).
    let failure = &backend("prometheus/flaky")[5];
    assert!(
        failure.starts_with("error, ") && (failure.ends_with(" s ago") || failure.ends_with("now")),
        "{:?}",
        seen.backends
    );

    // The store holds the two services' series and counted their spans.
    assert_eq!(seen.store["store-series"], "2", "{:?}", seen.store);
    let sent = ROUNDS * 2 * 50;
    assert_eq!(
        seen.store["store-accepted"],
        sent.to_string(),
        "{:?}",
        seen.store
    );

    // Nothing but the scaler's own origin was asked for anything.
    let origin = scaler.admin.clone();
    assert!(
        seen.foreign.is_empty(),
        "requests to other hosts: {:?}",
        seen.foreign
    );
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert!(seen.console_errors.is_empty(), "{:?}", seen.console_errors);
    assert!(
        seen.requests.iter().all(|u| u.starts_with(&origin)),
        "{:?}",
        seen.requests
    );
    for path in ["/", "/status.js", "/status.css", "/debug/signals"] {
        assert!(
            seen.requests.contains(&format!("{origin}{path}")),
            "{path} not requested: {:?}",
            seen.requests
        );
    }
    assert!(screenshot.exists());
}
