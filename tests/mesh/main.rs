//! The `istio` and `linkerd` conventions against a real Prometheus (Debian's, or 3.x through
//! PROMETHEUS_BIN, see scripts/test-real.sh) scraping a test exporter that writes the series
//! the meshes' proxies export, with a known schedule of requests per scrape: every signal
//! over gRPC and the analysis endpoint are checked against Prometheus' own answer to the
//! canonical query (docs/prometheus-conventions.md) and against figures computed here.
//!
//! Where the series come from:
//! - Istio: the sidecar's stats filter (istio/proxy
//!   `source/extensions/filters/http/istio_stats/istio_stats.cc`): `istio_requests_total`
//!   (counter) and `istio_request_duration_milliseconds` (histogram), labelled with every
//!   tag the filter writes for an HTTP request, the server's proxy as `reporter="destination"`
//!   and the client's as `reporter="source"`; buckets are Envoy's default histogram bounds
//!   (envoyproxy/envoy `source/common/stats/histogram_impl.cc`, `defaultBuckets`).
//! - Linkerd: linkerd2-proxy's HTTP metrics (`linkerd/http/metrics/src/requests/report.rs`:
//!   `response_total` by target, `status_code` and `classification`; `response_latency_ms` by
//!   target and `status_code`; target labels from `linkerd/app/core/src/metrics.rs`: inbound
//!   `direction`, `authority`, `target_addr`, `tls`, `client_id`, server and authorization
//!   labels; outbound `dst_*` labels), buckets from `linkerd/metrics/src/latency.rs`; the pod
//!   labels linkerd-viz's scrape configuration adds (linkerd/linkerd2
//!   `viz/charts/linkerd-viz/templates/prometheus.yaml`, job `linkerd-proxy`): `namespace`,
//!   `pod`, `linkerd.io/proxy-deployment` as `deployment`, and every other pod label with
//!   its name sanitised (`rollouts-pod-template-hash` as `rollouts_pod_template_hash`).
//!
//! The test's Prometheus scrapes with `honor_labels`, so the exporter writes the labels the
//! scrape configuration would add itself.
//!
//! This file writes the series and works out the figures; the tests are `istio.rs` and
//! `linkerd.rs`.

#[path = "../common/mod.rs"]
mod common;
mod istio;
mod linkerd;

use std::time::Duration;

use common::exporter::Exporter;
use common::prometheus::PrometheusServer;
use common::scaler::{assert_agrees, metric, so, Scaler};
use slo_scaler::analysis::{Answer, Rule, Verdict};
use tonic::Code;

/// Envoy's default histogram bounds, in milliseconds.
const ISTIO_BOUNDS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// linkerd2-proxy's latency bounds, in milliseconds.
const LINKERD_BOUNDS: [f64; 11] = [
    1.0, 10.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0, 5000.0, 10000.0,
];

/// Requests per scrape: how many end at or below each bound (milliseconds).
type Dist = &'static [(f64, f64)];

/// One version of a workload: successful and failed requests per scrape.
struct Side {
    version: &'static str,
    ok: Dist,
    failed: Dist,
}

fn total(d: Dist) -> f64 {
    d.iter().map(|(_, n)| n).sum()
}

/// Cumulative counts per bound of `bounds`.
fn cumulative(bounds: &[f64], dists: &[Dist]) -> Vec<f64> {
    bounds
        .iter()
        .map(|b| {
            dists
                .iter()
                .flat_map(|d| d.iter())
                .filter(|(at, _)| at <= b)
                .map(|(_, n)| n)
                .sum()
        })
        .collect()
}

/// Prometheus' `histogram_quantile` over a classic histogram, in seconds: linear
/// interpolation inside the bucket holding the rank (prometheus/prometheus
/// `promql/quantile.go`, `bucketQuantile`). Every requests ends below the last bound here.
fn quantile(q: f64, bounds: &[f64], dists: &[Dist]) -> f64 {
    let cum = cumulative(bounds, dists);
    let all: f64 = dists.iter().map(|d| total(d)).sum();
    let rank = q * all;
    let mut lower = (0.0, 0.0);
    for (b, c) in bounds.iter().zip(&cum) {
        if *c >= rank {
            return (lower.0 + (b - lower.0) * (rank - lower.1) / (c - lower.1)) / 1000.0;
        }
        lower = (*b, *c);
    }
    panic!("rank past the last bound");
}

// --- Istio ---------------------------------------------------------------------------

/// payment-service in `shop`: the stable version and three canaries.
const BASELINE: Side = Side {
    version: "v1",
    ok: &[(50.0, 40.0), (100.0, 100.0), (250.0, 56.0)],
    failed: &[(100.0, 4.0)],
};
/// 6 % 5xx, latency like the baseline's.
const ERRORS: Side = Side {
    version: "v2",
    ok: &[(50.0, 10.0), (100.0, 25.0), (250.0, 12.0)],
    failed: &[(100.0, 3.0)],
};
/// No errors, p95 far above the baseline's.
const SLOW: Side = Side {
    version: "v3",
    ok: &[(100.0, 5.0), (250.0, 5.0), (500.0, 20.0), (1000.0, 20.0)],
    failed: &[],
};
/// 2 % 5xx, latency like the baseline's.
const GOOD: Side = Side {
    version: "v4",
    ok: &[(50.0, 10.0), (100.0, 25.0), (250.0, 14.0)],
    failed: &[(250.0, 1.0)],
};
const ISTIO_SIDES: [&Side; 4] = [&BASELINE, &ERRORS, &SLOW, &GOOD];

/// One Istio request series: every tag istio_stats.cc writes for an HTTP request.
fn istio_labels(
    reporter: &str,
    service: &str,
    namespace: &str,
    version: &str,
    code: &str,
) -> Vec<(String, String)> {
    let workload_principal = format!("spiffe://cluster.local/ns/{namespace}/sa/{service}");
    [
        ("reporter", reporter.to_string()),
        ("source_workload", "frontend".into()),
        ("source_canonical_service", "frontend".into()),
        ("source_canonical_revision", "latest".into()),
        ("source_workload_namespace", "shop".into()),
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/frontend".into(),
        ),
        ("source_app", "frontend".into()),
        ("source_version", "unknown".into()),
        ("source_cluster", "Kubernetes".into()),
        ("destination_workload", service.into()),
        ("destination_workload_namespace", namespace.into()),
        ("destination_principal", workload_principal),
        ("destination_app", service.into()),
        ("destination_version", version.into()),
        (
            "destination_service",
            format!("{service}.{namespace}.svc.cluster.local"),
        ),
        ("destination_canonical_service", service.into()),
        ("destination_canonical_revision", "latest".into()),
        ("destination_service_name", service.into()),
        ("destination_service_namespace", namespace.into()),
        ("destination_cluster", "Kubernetes".into()),
        ("request_protocol", "http".into()),
        ("response_code", code.into()),
        ("grpc_response_status", String::new()),
        ("response_flags", "-".into()),
        (
            "connection_security_policy",
            if reporter == "destination" {
                "mutual_tls"
            } else {
                "unknown"
            }
            .into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Adds a counter and a histogram of `dist` per scrape under `labels`.
fn add_requests(
    e: &Exporter,
    (counter, histogram): (&str, &str),
    bounds: &[f64],
    labels: &[(String, String)],
    dist: Dist,
) {
    if dist.is_empty() {
        return;
    }
    let l: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    e.add_counter(counter, &l, total(dist));
    e.add_histogram(
        histogram,
        &l,
        bounds,
        &cumulative(bounds, &[dist]),
        total(dist),
    );
}

const ISTIO_NAMES: (&str, &str) = (
    "istio_requests_total",
    "istio_request_duration_milliseconds",
);

fn export_istio(e: &Exporter) {
    e.set_type("istio_requests_total", "counter");
    e.set_type("istio_request_duration_milliseconds", "histogram");
    let add = |reporter: &str, service: &str, ns: &str, side: &Side| {
        for (code, dist) in [("200", side.ok), ("503", side.failed)] {
            let labels = istio_labels(reporter, service, ns, side.version, code);
            add_requests(e, ISTIO_NAMES, &ISTIO_BOUNDS, &labels, dist);
        }
    };
    for side in ISTIO_SIDES {
        add("destination", "payment-service", "shop", side);
    }
    // Decoys a correct query leaves out, each of which would fail the good canary: the
    // clients' proxies' view of the same requests (timeouts they saw as 503), the same
    // service name in another namespace, another service.
    const BROKEN: Side = Side {
        version: "v4",
        ok: &[],
        failed: &[(5000.0, 100.0)],
    };
    add("source", "payment-service", "shop", &BROKEN);
    add("destination", "payment-service", "staging", &BROKEN);
    add("destination", "order-service", "shop", &BROKEN);
}

// --- Linkerd -------------------------------------------------------------------------

/// A Deployment's pods (linkerd-viz labels `deployment`).
const DEPLOYED: Side = Side {
    version: "",
    ok: &[(10.0, 20.0), (50.0, 50.0), (100.0, 29.0)],
    failed: &[(50.0, 1.0)],
};
/// A Rollout's stable and canary pods (no `deployment` label; the pod-template hash).
const STABLE: Side = Side {
    version: "6d4f8b7c9",
    ok: &[(10.0, 20.0), (50.0, 50.0), (100.0, 29.0)],
    failed: &[(50.0, 1.0)],
};
const CANARY: Side = Side {
    version: "7c8d9e0f1",
    ok: &[(50.0, 10.0), (100.0, 8.0)],
    failed: &[(100.0, 2.0)],
};

const LINKERD_NAMES: (&str, &str) = ("response_total", "response_latency_ms");

/// The pod labels linkerd-viz's scrape configuration adds: a Deployment's pod, or (with a
/// hash) a Rollout's.
fn pod_labels(workload: &str, namespace: &str, hash: &str) -> Vec<(String, String)> {
    let mut l = vec![
        ("namespace", namespace.to_string()),
        ("app", workload.to_string()),
        ("control_plane_ns", "linkerd".to_string()),
        ("serviceaccount", workload.to_string()),
    ];
    if hash.is_empty() {
        l.push(("pod", format!("{workload}-5f7b9c6d4-x2k8p")));
        l.push(("deployment", workload.to_string()));
        l.push(("pod_template_hash", "5f7b9c6d4".to_string()));
    } else {
        l.push(("pod", format!("{workload}-{hash}-q9z7w")));
        l.push(("rollouts_pod_template_hash", hash.to_string()));
    }
    l.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn export_linkerd(e: &Exporter) {
    e.set_type("response_total", "counter");
    e.set_type("response_latency_ms", "histogram");
    let add = |workload: &str, ns: &str, side: &Side, outbound: bool| {
        for (code, class, dist) in [("200", "success", side.ok), ("500", "failure", side.failed)] {
            let authority = format!("{workload}.{ns}.svc.cluster.local:8080");
            let mut target: Vec<(String, String)> = if outbound {
                // The workload's own calls to its database: the same pod labels.
                [
                    ("direction", "outbound"),
                    ("authority", "db.shop.svc.cluster.local:5432"),
                    ("target_addr", "10.0.3.7:5432"),
                    ("tls", "true"),
                    (
                        "server_id",
                        "db.shop.serviceaccount.identity.linkerd.cluster.local",
                    ),
                    ("dst_namespace", "shop"),
                    ("dst_deployment", "db"),
                    ("dst_service", "db"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
            } else {
                [
                    ("direction", "inbound"),
                    ("authority", authority.as_str()),
                    ("target_addr", "10.0.1.12:8080"),
                    ("tls", "true"),
                    (
                        "client_id",
                        "frontend.shop.serviceaccount.identity.linkerd.cluster.local",
                    ),
                    ("srv_kind", "default"),
                    ("srv_name", "all-unauthenticated"),
                    ("authz_kind", "default"),
                    ("authz_name", "all-unauthenticated"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
            };
            target.extend(pod_labels(workload, ns, side.version));
            target.push(("status_code".into(), code.into()));
            if dist.is_empty() {
                continue;
            }
            let l: Vec<(&str, &str)> = target
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            // The latency histogram is by status code only; the counter adds the class.
            let bounds = &LINKERD_BOUNDS;
            e.add_histogram(
                LINKERD_NAMES.1,
                &l,
                bounds,
                &cumulative(bounds, &[dist]),
                total(dist),
            );
            let mut c = l.clone();
            c.push(("classification", class));
            e.add_counter(LINKERD_NAMES.0, &c, total(dist));
        }
    };
    add("payment-service", "shop", &DEPLOYED, false);
    add("checkout", "shop", &STABLE, false);
    add("checkout", "shop", &CANARY, false);
    // Decoys: payment-service's own calls to its database (the same `deployment` label,
    // direction outbound), all failing and slow; its namesake in staging.
    const BROKEN: Side = Side {
        version: "",
        ok: &[],
        failed: &[(5000.0, 100.0)],
    };
    add("payment-service", "shop", &BROKEN, true);
    add("payment-service", "staging", &BROKEN, false);
}

/// docs/mesh.md's conventions file for Linkerd with Argo Rollouts: pods by their `app`
/// label, versions by their pod-template hash (both copied from the pod by linkerd-viz's
/// scrape configuration), the inbound side by a fixed matcher.
fn linkerd_rollouts() -> &'static str {
    include_str!("../../docs/mesh.md")
        .split("```json\n")
        .find(|block| block.starts_with("{\"linkerd-rollouts\""))
        .and_then(|block| block.split("```").next())
        .expect("docs/mesh.md shows the linkerd-rollouts conventions file")
}

struct Fixture {
    prom: PrometheusServer,
    scaler: Scaler,
    _exporter: Exporter,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let exporter = Exporter::start().await;
    export_istio(&exporter);
    export_linkerd(&exporter);
    let prom = PrometheusServer::start(&[exporter.addr]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("conventions.json");
    std::fs::write(&file, linkerd_rollouts()).expect("write conventions");
    let url = format!("default={}", prom.url());
    let file = file.to_str().expect("utf-8 path").to_string();
    let scaler = Scaler::start(&[
        "--prometheus",
        &url,
        "--conventions-file",
        &file,
        "--cache-ttl",
        "50ms",
        "--min-cache-ttl",
        "10ms",
    ])
    .await;
    prom.wait_for_data("sum(istio_requests_total)").await;
    prom.wait_window_full(Duration::from_secs(10)).await;
    Fixture {
        prom,
        scaler,
        _exporter: exporter,
        _dir: dir,
    }
}

/// The four signals' canonical queries over `{f}` in a convention's names
/// (docs/prometheus-conventions.md), written out by hand.
fn canonical(calls: &str, histogram: &str, f: &str, errors: &str) -> [(String, &'static str); 4] {
    [
        (
            format!(
                "histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket{{{f}}}[10s]))) / 1000"
            ),
            "latency",
        ),
        (
            format!("sum(rate({calls}{{{f},{errors}}}[10s])) / sum(rate({calls}{{{f}}}[10s]))"),
            "errorRate",
        ),
        (format!("sum(rate({calls}{{{f}}}[10s]))"), "rps"),
        (
            format!("sum(rate({histogram}_sum{{{f}}}[10s])) / 1000"),
            "concurrency",
        ),
    ]
}

/// The trigger metadata for `signal` in `convention`.
fn trigger<'a>(
    signal: &'a str,
    convention: &'a str,
    service: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let threshold = if signal == "errorRate" { "0.05" } else { "1" };
    let mut md = vec![
        ("scalerAddress", "slo-scaler:6000"),
        ("signal", signal),
        ("service", service),
        ("convention", convention),
        ("window", "10s"),
        ("threshold", threshold),
    ];
    md.extend_from_slice(extra);
    md
}

/// `GET /api/v1/analysis` on the scaler's admin port: status and JSON.
async fn analysis(scaler: &Scaler, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/analysis", scaler.admin), params)
        .expect("a URL");
    let resp = reqwest::get(url).await.expect("admin request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

/// The server writes each float in its shortest exact form; the tests read it back exactly.
/// serde_json's default parser can land one ulp off: a Prometheus 3.x run read the canary's
/// rps "37.449999999999996" as 37.45, so the check below computed 375 spans where the server,
/// rounding 374.49999999999994, rightly answered 374 (the dev-dependency's
/// `float_roundtrip` feature).
#[test]
fn the_servers_floats_reach_the_tests_exactly() {
    for x in [
        37.449999999999996_f64,
        0.1 + 0.2,
        149.86,
        1e-300,
        2.0_f64.sqrt(),
    ] {
        let written = serde_json::to_string(&x).unwrap();
        let read: f64 = serde_json::from_str(&written).unwrap();
        assert_eq!(read.to_bits(), x.to_bits(), "{written}");
    }
}

/// The figures a Prometheus-backed answer's side must carry: the error ratio and the p95
/// computed here, `count` as rps × the window.
fn assert_side(a: &serde_json::Value, side: &str, bounds: &[f64], s: &Side) {
    let v = &a[side];
    let num = |x: &serde_json::Value| x.as_f64().unwrap_or_else(|| panic!("{x}: {a}"));
    let calls = total(s.ok) + total(s.failed);
    let errors = total(s.failed) / calls;
    assert!(
        (num(&v["errorRate"]) - errors).abs() < 1e-12,
        "{side} error rate {errors}: {a}"
    );
    let p95 = quantile(0.95, bounds, &[s.ok, s.failed]);
    assert!(
        (num(&v["latency"]) - p95).abs() < 1e-9,
        "{side} p95 {p95}: {a}"
    );
    let rps = num(&v["rps"]);
    assert!(
        (calls * 0.7..calls * 1.3).contains(&rps),
        "{side} rps about {calls}: {a}"
    );
    assert_eq!(v["count"], (rps * 10.0).round() as u64, "{side}: {a}");
}
