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

#[path = "../common/mod.rs"]
mod common;

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

#[tokio::test(flavor = "multi_thread")]
async fn istio_signals_read_the_destination_proxys_series() {
    let mut f = fixture().await;
    // Every version of payment-service in `shop`, as the server's sidecars report it.
    let sel = r#"destination_service_name="payment-service",reporter="destination",destination_service_namespace="shop""#;
    let all: Vec<Dist> = ISTIO_SIDES.iter().flat_map(|s| [s.ok, s.failed]).collect();
    let calls: f64 = all.iter().map(|d| total(d)).sum();
    let errors: f64 = ISTIO_SIDES.iter().map(|s| total(s.failed)).sum();
    let ns = [("labels", "destination_service_namespace=shop")];
    for (query, signal) in canonical(ISTIO_NAMES.0, ISTIO_NAMES.1, sel, r#"response_code=~"5..""#) {
        let r = so("payment", &trigger(signal, "istio", "payment-service", &ns));
        let v = assert_agrees(&f.prom, &mut f.scaler, &r, &query).await;
        match signal {
            "latency" => {
                let want = quantile(0.95, &ISTIO_BOUNDS, &all);
                assert!((v - want).abs() < 1e-9, "p95 {want}: {v}");
            }
            "errorRate" => assert!((v - errors / calls).abs() < 1e-12, "{v}"),
            // About one scrape a second.
            "rps" => assert!((calls * 0.7..calls * 1.3).contains(&v), "{v}"),
            // Each request counted at its bucket's bound: seconds of requests per scrape.
            _ => {
                let seconds: f64 = all
                    .iter()
                    .flat_map(|d| d.iter())
                    .map(|(b, n)| b * n / 1000.0)
                    .sum();
                assert!((seconds * 0.7..seconds * 1.3).contains(&v), "{v}");
            }
        }
    }

    // deploy/examples/payment-service-latency-istio.yaml's trigger, over the test's window.
    let example: yaml_serde::Value = yaml_serde::from_str(include_str!(
        "../../deploy/examples/payment-service-latency-istio.yaml"
    ))
    .expect("the example is YAML");
    let mut md: Vec<(String, String)> = example["spec"]["triggers"][0]["metadata"]
        .as_mapping()
        .expect("trigger metadata")
        .iter()
        .map(|(k, v)| {
            let s = |x: &yaml_serde::Value| x.as_str().expect("a string").to_string();
            (s(k), s(v))
        })
        .collect();
    md.retain(|(k, _)| k != "window");
    md.push(("window".into(), "10s".into()));
    let md: Vec<(&str, &str)> = md.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let q = format!(
        "histogram_quantile(0.95, sum by (le) (rate({}_bucket{{{sel}}}[10s]))) / 1000",
        ISTIO_NAMES.1
    );
    let v = assert_agrees(&f.prom, &mut f.scaler, &so("example", &md), &q).await;
    let want = quantile(0.95, &ISTIO_BOUNDS, &all);
    assert!((v - want).abs() < 1e-9, "the example's p95 {want}: {v}");

    // One version: the slow canary's p95, from `destination_version`.
    let sel_v3 = format!("{sel},destination_version=\"v3\"");
    let q = format!(
        "histogram_quantile(0.95, sum by (le) (rate({}_bucket{{{sel_v3}}}[10s]))) / 1000",
        ISTIO_NAMES.1
    );
    let md = [ns[0], ("version", "v3")];
    let r = so(
        "payment-v3",
        &trigger("latency", "istio", "payment-service", &md),
    );
    let v = assert_agrees(&f.prom, &mut f.scaler, &r, &q).await;
    let want = quantile(0.95, &ISTIO_BOUNDS, &[SLOW.ok, SLOW.failed]);
    assert!((v - want).abs() < 1e-9, "v3 p95 {want}: {v}");

    // Without the namespace, the namesake in staging counts too: the labels matter.
    let r = so(
        "payment-any-ns",
        &trigger("errorRate", "istio", "payment-service", &[]),
    );
    let v = metric(&mut f.scaler.client, &r).await.expect("a value");
    assert!(v > 0.2, "staging's failures are in: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_analysis_judges_canaries_by_the_seeds_rule() {
    let f = fixture().await;
    for (canary, want) in [
        (&ERRORS, "Failed"),
        (&SLOW, "Failed"),
        (&GOOD, "Successful"),
    ] {
        // deploy/examples/canary/analysis-template-istio.yaml's parameters, over the
        // test's 10 s window.
        let params = [
            ("service", "payment-service"),
            ("canary", canary.version),
            ("baseline", BASELINE.version),
            ("source", "prometheus"),
            ("convention", "istio"),
            ("labels", "destination_service_namespace=shop"),
            ("window", "10s"),
            ("quantile", "0.95"),
            ("minCount", "50"),
        ];
        let (status, a) = analysis(&f.scaler, &params).await;
        assert_eq!(status, 200, "{a}");
        assert_side(&a, "canary", &ISTIO_BOUNDS, canary);
        assert_side(&a, "baseline", &ISTIO_BOUNDS, &BASELINE);
        let delta = quantile(0.95, &ISTIO_BOUNDS, &[canary.ok, canary.failed])
            - quantile(0.95, &ISTIO_BOUNDS, &[BASELINE.ok, BASELINE.failed]);
        let got = a["delta"]["latency"].as_f64().expect("delta");
        assert!((got - delta).abs() < 1e-9, "delta {delta}: {a}");
        assert_eq!(a["inconclusive"], false, "{a}");
        // Argo Rollouts' verdict under the example template, and the demo's judge.
        assert_eq!(
            common::canary::verdict("slo-scaler-canary-istio", &a),
            want,
            "{}: {a}",
            canary.version
        );
        let answer: Answer = serde_json::from_value(a.clone()).expect("an answer");
        let ours = match Rule::EXAMPLE.judge(&answer) {
            Verdict::Pass => "Successful",
            Verdict::Fail => "Failed",
            Verdict::Inconclusive => "Inconclusive",
        };
        assert_eq!(ours, want, "{}: {a}", canary.version);
    }
    // A version no pod reports: no traffic, never a pass.
    let (status, a) = analysis(
        &f.scaler,
        &[
            ("service", "payment-service"),
            ("canary", "v9"),
            ("baseline", "v1"),
            ("source", "prometheus"),
            ("convention", "istio"),
            ("window", "10s"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["canary"]["count"], 0, "{a}");
    assert_eq!(a["inconclusive"], true, "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn linkerd_signals_read_the_inbound_side() {
    let mut f = fixture().await;
    let sel = r#"deployment="payment-service",direction="inbound",namespace="shop""#;
    let d = &DEPLOYED;
    let calls = total(d.ok) + total(d.failed);
    let ns = [("labels", "namespace=shop")];
    for (query, signal) in canonical(
        LINKERD_NAMES.0,
        LINKERD_NAMES.1,
        sel,
        r#"classification="failure""#,
    ) {
        let r = so(
            "payment",
            &trigger(signal, "linkerd", "payment-service", &ns),
        );
        let v = assert_agrees(&f.prom, &mut f.scaler, &r, &query).await;
        match signal {
            "latency" => {
                let want = quantile(0.95, &LINKERD_BOUNDS, &[d.ok, d.failed]);
                assert!((v - want).abs() < 1e-9, "p95 {want}: {v}");
            }
            "errorRate" => assert!((v - total(d.failed) / calls).abs() < 1e-12, "{v}"),
            "rps" => assert!((calls * 0.7..calls * 1.3).contains(&v), "{v}"),
            _ => assert!(v > 0.0, "{v}"),
        }
    }

    // linkerd has no version label: a version is refused, naming the key.
    let md = [ns[0], ("version", "v2")];
    let r = so(
        "payment-v2",
        &trigger("rps", "linkerd", "payment-service", &md),
    );
    let e = metric(&mut f.scaler.client, &r).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("version: convention linkerd has no service version label"),
        "{e:?}"
    );
    // … and so is the analysis endpoint, naming the convention (its versions are required).
    let (status, a) = analysis(
        &f.scaler,
        &[
            ("service", "payment-service"),
            ("canary", "v2"),
            ("baseline", "v1"),
            ("source", "prometheus"),
            ("convention", "linkerd"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{a}");
    assert_eq!(a["params"][0]["param"], "convention", "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn linkerd_rollouts_by_a_conventions_file() {
    let mut f = fixture().await;
    // The file's fixed matcher keeps the inbound side; versions by pod-template hash.
    let q = r#"sum(rate(response_total{app="checkout",direction="inbound",rollouts_pod_template_hash="7c8d9e0f1"}[10s]))"#;
    let md = [("version", CANARY.version)];
    let r = so(
        "checkout",
        &trigger("rps", "linkerd-rollouts", "checkout", &md),
    );
    assert_agrees(&f.prom, &mut f.scaler, &r, q).await;

    let (status, a) = analysis(
        &f.scaler,
        &[
            ("service", "checkout"),
            ("canary", CANARY.version),
            ("baseline", STABLE.version),
            ("source", "prometheus"),
            ("convention", "linkerd-rollouts"),
            ("window", "10s"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{a}");
    assert_side(&a, "canary", &LINKERD_BOUNDS, &CANARY);
    assert_side(&a, "baseline", &LINKERD_BOUNDS, &STABLE);
    let answer: Answer = serde_json::from_value(a.clone()).expect("an answer");
    assert_eq!(
        Rule::EXAMPLE.judge(&answer),
        Verdict::Fail,
        "10 % failures: {a}"
    );
}
