//! The scaler against a real Prometheus server (Debian's `prometheus`, started by the
//! harness on a free loopback port, scraping a test exporter every second), through the
//! real gRPC interface. Here the naming conventions and hostile label values; the cache's
//! behaviour against it in `freshness.rs`, what KEDA and `check` are told in `statuses.rs`,
//! `signal: sloCapacity` in `capacity.rs`.

mod capacity;
#[path = "../common/mod.rs"]
mod common;
mod freshness;
mod statuses;

use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::prometheus::PrometheusServer;
use common::scaler::{assert_agrees, metric, so, Scaler};
use slo_scaler::proto::GetMetricsRequest;
use tonic::Code;

/// One naming convention as the test exporter writes it.
struct Conv {
    name: &'static str,
    histogram: &'static str,
    /// The call counter; `None` when it is the histogram's `_count`.
    calls: Option<&'static str>,
    service: &'static str,
    kind: Option<(&'static str, &'static str)>,
    status_label: &'static str,
    ok: &'static str,
    error: &'static str,
    /// PromQL matcher selecting errors.
    error_matcher: &'static str,
    /// Histogram units per second.
    unit: f64,
}

const CONVENTIONS: [Conv; 4] = [
    Conv {
        name: "otel-spanmetrics",
        histogram: "traces_span_metrics_duration_milliseconds",
        calls: Some("traces_span_metrics_calls_total"),
        service: "service_name",
        kind: Some(("span_kind", "SPAN_KIND_SERVER")),
        status_label: "status_code",
        ok: "STATUS_CODE_UNSET",
        error: "STATUS_CODE_ERROR",
        error_matcher: r#"status_code="STATUS_CODE_ERROR""#,
        unit: 1000.0,
    },
    Conv {
        name: "tempo-spanmetrics",
        histogram: "traces_spanmetrics_latency",
        calls: Some("traces_spanmetrics_calls_total"),
        service: "service",
        kind: Some(("span_kind", "SPAN_KIND_SERVER")),
        status_label: "status_code",
        ok: "STATUS_CODE_OK",
        error: "STATUS_CODE_ERROR",
        error_matcher: r#"status_code="STATUS_CODE_ERROR""#,
        unit: 1.0,
    },
    Conv {
        name: "otel-http",
        histogram: "http_server_request_duration_seconds",
        calls: None,
        service: "job",
        kind: None,
        status_label: "http_response_status_code",
        ok: "200",
        error: "503",
        error_matcher: r#"http_response_status_code=~"5..""#,
        unit: 1.0,
    },
    Conv {
        name: "prometheus-http",
        histogram: "http_request_duration_seconds",
        calls: None,
        service: "job",
        kind: None,
        status_label: "code",
        ok: "200",
        error: "500",
        error_matcher: r#"code=~"5..""#,
        unit: 1.0,
    },
];

/// Bucket bounds in seconds and how many of 100 calls per scrape fall at or below each.
const BOUNDS_S: [f64; 8] = [0.005, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0];
const OK_CUMULATIVE: [f64; 8] = [1.0, 4.0, 20.0, 45.0, 70.0, 88.0, 97.0, 100.0];
const ERR_CUMULATIVE: [f64; 8] = [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 5.0, 6.0];

/// Exports every convention's series for `order-service` (server spans, ok and errors),
/// plus decoys that a correct query must not select: client spans, another service.
fn export_conventions(e: &Exporter) {
    for c in &CONVENTIONS {
        let bounds: Vec<f64> = BOUNDS_S.iter().map(|b| b * c.unit).collect();
        for (service, kind, scale) in [
            ("order-service", c.kind.map(|k| k.1), 1.0),
            ("payment-service", c.kind.map(|k| k.1), 7.0),
            ("order-service", c.kind.map(|_| "SPAN_KIND_CLIENT"), 3.0),
        ] {
            if c.kind.is_none() && scale == 3.0 {
                continue;
            }
            for (status, cumulative, total) in [
                (c.ok, &OK_CUMULATIVE, 100.0),
                (c.error, &ERR_CUMULATIVE, 6.0),
            ] {
                let mut labels = vec![(c.service, service), (c.status_label, status)];
                if let (Some((k, _)), Some(v)) = (c.kind, kind) {
                    labels.push((k, v));
                }
                let scaled: Vec<f64> = cumulative.iter().map(|x| x * scale).collect();
                e.add_histogram(c.histogram, &labels, &bounds, &scaled, total * scale);
                if let Some(calls) = c.calls {
                    e.add_counter(calls, &labels, total * scale);
                }
            }
        }
    }
}

/// The canonical queries of a convention (docs/prometheus-conventions.md), written out
/// by hand for one convention.
fn canonical(c: &Conv, window: &str) -> [(String, &'static str); 4] {
    let mut f = format!("{}=\"order-service\"", c.service);
    if let Some((k, v)) = c.kind {
        f.push_str(&format!(",{k}=\"{v}\""));
    }
    let calls = c
        .calls
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}_count", c.histogram));
    let mut latency = format!(
        "histogram_quantile(0.95, sum by (le) (rate({}_bucket{{{f}}}[{window}])))",
        c.histogram
    );
    if c.unit != 1.0 {
        latency.push_str(&format!(" / {}", c.unit));
    }
    // Little's law from the histogram's sum: seconds of spans per second.
    let mut concurrency = format!("sum(rate({}_sum{{{f}}}[{window}]))", c.histogram);
    if c.unit != 1.0 {
        concurrency.push_str(&format!(" / {}", c.unit));
    }
    [
        (latency, "latency"),
        (
            format!(
                "sum(rate({calls}{{{f},{}}}[{window}])) / sum(rate({calls}{{{f}}}[{window}]))",
                c.error_matcher
            ),
            "errorRate",
        ),
        (format!("sum(rate({calls}{{{f}}}[{window}]))"), "rps"),
        (concurrency, "concurrency"),
    ]
}

async fn fixture() -> (Exporter, PrometheusServer) {
    let exporter = Exporter::start().await;
    export_conventions(&exporter);
    let prometheus = PrometheusServer::start(&[exporter.addr]).await;
    (exporter, prometheus)
}

const FAST_CACHE: [&str; 4] = ["--cache-ttl", "50ms", "--min-cache-ttl", "10ms"];

#[tokio::test(flavor = "multi_thread")]
async fn every_convention_matches_prometheus_canonical_queries() {
    let (_exporter, prom) = fixture().await;
    let url = format!("default={}", prom.url());
    let mut flags = vec!["--prometheus", &url];
    flags.extend_from_slice(&FAST_CACHE);
    let mut scaler = Scaler::start(&flags).await;
    for c in &CONVENTIONS {
        for (query, signal) in canonical(c, "10s") {
            let threshold = if signal == "errorRate" { "0.05" } else { "1" };
            let r = so(
                "orders",
                &[
                    ("scalerAddress", "slo-scaler:6000"),
                    ("signal", signal),
                    ("service", "order-service"),
                    ("convention", c.name),
                    ("window", "10s"),
                    ("threshold", threshold),
                ],
            );
            let v = assert_agrees(&prom, &mut scaler, &r, &query).await;
            // The values mean what the exporter wrote: 6 errors in 106 calls per scrape,
            // about 106 calls a second, p95 between the 0.4 s and 0.8 s bounds.
            match signal {
                "errorRate" => assert!((v - 6.0 / 106.0).abs() < 1e-9, "{} {v}", c.name),
                "rps" => assert!((80.0..130.0).contains(&v), "{} {v}", c.name),
                // 29.035 s of spans a scrape (each at its bucket's bound), a scrape a second.
                "concurrency" => assert!((20.0..40.0).contains(&v), "{} {v}", c.name),
                _ => assert!((0.4..0.8).contains(&v), "{} {v}", c.name),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_label_values_select_exactly_one_series() {
    let exporter = Exporter::start().await;
    let hostile = [
        (r#"a"} or vector(1e9) #"#, 10.0),
        (r"back\slash", 20.0),
        ("new\nline", 30.0),
        ("{braces}", 40.0),
        ("ünïcødé 🚀", 50.0),
        (r#"\"#, 60.0),
        // Prometheus' lexer refuses a raw U+FFFD ("invalid UTF-8 rune",
        // `promql/parser/lex.go`, `lexString`): it must reach it escaped.
        ("bad\u{fffd}byte", 70.0),
        ("c1\u{85}bom\u{feff}", 80.0),
    ];
    for (name, per_scrape) in hostile {
        exporter.add_counter(
            "traces_span_metrics_calls_total",
            &[("service_name", name), ("span_kind", "SPAN_KIND_SERVER")],
            per_scrape,
        );
    }
    // Decoys a widened match would pick up.
    for decoy in ["a", "back", "new", "braces", "ünïcødé", "", "bad", "c1"] {
        exporter.add_counter(
            "traces_span_metrics_calls_total",
            &[("service_name", decoy), ("span_kind", "SPAN_KIND_SERVER")],
            1000.0,
        );
    }
    let prom = PrometheusServer::start(&[exporter.addr]).await;
    prom.wait_for_data("sum(rate(traces_span_metrics_calls_total[10s]))")
        .await;
    prom.wait_window_full(Duration::from_secs(10)).await;
    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&["--prometheus", &url]).await;
    // The series Prometheus itself holds for each name (matched on the decoded JSON
    // label, not through any query escaping), against the scaler's exact-match query.
    let all = "rate(traces_span_metrics_calls_total[10s])";
    for (name, _) in hostile {
        let r = so(
            "hostile",
            &[
                ("signal", "rps"),
                ("service", name),
                ("window", "10s"),
                ("threshold", "10"),
                ("cacheTTL", "1s"),
            ],
        );
        let own = |v: Vec<(std::collections::HashMap<String, String>, f64)>| {
            v.into_iter()
                .find(|(l, _)| l.get("service_name").map(String::as_str) == Some(name))
                .map(|(_, v)| v)
        };
        let mut differed = None;
        let mut checked = false;
        for _ in 0..20 {
            let before = own(prom.query_vector(all).await);
            let got = metric(&mut scaler.client, &r)
                .await
                .unwrap_or_else(|s| panic!("{name:?}: {s:?}"));
            let after = own(prom.query_vector(all).await);
            if let Some(want) = before.filter(|_| before == after) {
                // Equal to the last bits but for rate()'s extrapolation, whose float sums
                // depend on the evaluation time (the two queries run milliseconds apart);
                // a decoy or a widened match would be off by 100× or more. The
                // scrape-commit gap (`common::scaler::assert_agrees`): ask again.
                if (got - want).abs() <= 1e-12 * want {
                    checked = true;
                    break;
                }
                differed = Some((got, want));
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        if let (false, Some((got, want))) = (checked, differed) {
            panic!("{name:?} selects exactly its own series: {got} vs {want}");
        }
        assert!(checked, "{name:?}: no stable answer");
    }
}

/// A trigger's `version` through a built-in convention: Tempo's metrics-generator names
/// `service.version` `service_version` when its `dimensions` keep it (grafana/tempo
/// `modules/generator/processor/spanmetrics/spanmetrics.go`, the label sanitised by
/// `modules/generator/validation/sanitize.go`), so no conventions file is needed; where
/// the pipeline dropped it, the value is visibly no data, never a made-up 0.
#[tokio::test(flavor = "multi_thread")]
async fn version_triggers_read_the_built_in_version_label() {
    let exporter = Exporter::start().await;
    let calls = "traces_spanmetrics_calls_total";
    for (service, version, ok, errors) in [
        ("payment-service", Some("v1"), 98.0, 2.0),
        ("payment-service", Some("v2"), 16.0, 4.0),
        // The same service shape from a pipeline without the version dimension.
        ("legacy-service", None, 98.0, 2.0),
    ] {
        for (status, n) in [("STATUS_CODE_OK", ok), ("STATUS_CODE_ERROR", errors)] {
            let mut labels = vec![
                ("service", service),
                ("span_kind", "SPAN_KIND_SERVER"),
                ("status_code", status),
            ];
            if let Some(v) = version {
                labels.push(("service_version", v));
            }
            exporter.add_counter(calls, &labels, n);
        }
    }
    let prom = PrometheusServer::start(&[exporter.addr]).await;
    prom.wait_for_data(&format!("sum({calls})")).await;
    prom.wait_window_full(Duration::from_secs(10)).await;
    let url = format!("default={}", prom.url());
    let mut flags = vec!["--prometheus", &url];
    flags.extend_from_slice(&FAST_CACHE);
    let mut scaler = Scaler::start(&flags).await;
    let trigger = |service: &'static str, version: &'static str, ignore: &'static str| {
        so(
            &format!("{service}-{version}-ignore-{ignore}"),
            &[
                ("signal", "errorRate"),
                ("source", "prometheus"),
                ("convention", "tempo-spanmetrics"),
                ("service", service),
                ("version", version),
                ("window", "10s"),
                ("threshold", "3%"),
                ("ignoreNullValues", ignore),
            ],
        )
    };
    // Both counters of a version grow in the same scrape: the ratio is exact.
    for (version, want) in [("v2", 4.0 / 20.0), ("v1", 2.0 / 100.0)] {
        let got = metric(
            &mut scaler.client,
            &trigger("payment-service", version, "false"),
        )
        .await
        .unwrap_or_else(|s| panic!("{version}: {s:?}"));
        assert!((got - want).abs() < 1e-12, "{version}: {got}, want {want}");
    }
    // No version label in Prometheus: an error for KEDA's fallback, and shown as no data
    // (an error rate of 0 would be the best there is: no data never reads as it).
    let err = metric(
        &mut scaler.client,
        &trigger("legacy-service", "v2", "false"),
    )
    .await
    .expect_err("no data is not a value");
    assert!(err.message().contains("no data"), "{err:?}");
    let (status, body) = scaler.get("/debug/signals").await;
    assert_eq!(status, 200, "{body}");
    let signals: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let states: Vec<(String, String)> = signals
        .as_array()
        .or_else(|| signals["signals"].as_array())
        .expect("a list of signals")
        .iter()
        .map(|s| {
            (
                s["scaledObject"].as_str().unwrap_or_default().to_string(),
                s["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        states
            .iter()
            .any(|(so, state)| so == "legacy-service-v2-ignore-false" && state == "no_data"),
        "{body}"
    );
}
