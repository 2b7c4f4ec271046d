//! The endpoint through the real Prometheus, reading spanmetrics with a version label
//! through the built-in conventions (no conventions file): `service.version` kept by the
//! pipeline is the label `service_version` (src/signal/promql/mod.rs, `OTEL_VERSION_LABEL`,
//! from the Collector's spanmetrics connector and Prometheus exporter and Tempo's
//! metrics-generator).
//!
//! The exporter's counters grow by fixed amounts on every scrape, and every bucket of a
//! version's histogram in proportion, so the error ratio and the histogram quantile do not
//! depend on scrape timing: they are exact figures computed here by hand.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::exporter::Exporter;
use crate::common::prometheus::PrometheusServer;
use crate::setup::Setup;

/// The metric names of a built-in spanmetrics convention: (convention, calls counter,
/// histogram without `_bucket`, service label, histogram units per second).
type Names = (&'static str, &'static str, &'static str, &'static str, f64);

/// The OpenTelemetry Collector's spanmetrics connector.
const OTEL: Names = (
    "otel-spanmetrics",
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_milliseconds",
    "service_name",
    1000.0,
);

/// Tempo's metrics-generator.
const TEMPO: Names = (
    "tempo-spanmetrics",
    "traces_spanmetrics_calls_total",
    "traces_spanmetrics_latency",
    "service",
    1.0,
);

/// Bucket bounds in milliseconds.
const BOUNDS: [f64; 4] = [100.0, 200.0, 400.0, 800.0];

/// One version per scrape in the names of `n`: `ok` and `errors` calls, `cumulative` per
/// bucket of `BOUNDS` (milliseconds); `version` `None` exports no version label at all (a
/// pipeline that drops `service.version`).
fn export(
    e: &Exporter,
    n: Names,
    service: &str,
    version: Option<&str>,
    ok: f64,
    errors: f64,
    cumulative: [f64; 4],
) {
    let (_, calls, histogram, service_label, unit) = n;
    let mut base = vec![(service_label, service), ("span_kind", "SPAN_KIND_SERVER")];
    if let Some(v) = version {
        base.push(("service_version", v));
    }
    for (status, n) in [("STATUS_CODE_UNSET", ok), ("STATUS_CODE_ERROR", errors)] {
        let mut labels = base.clone();
        labels.push(("status_code", status));
        e.add_counter(calls, &labels, n);
    }
    let bounds: Vec<f64> = BOUNDS.iter().map(|b| b / 1000.0 * unit).collect();
    e.add_histogram(histogram, &base, &bounds, &cumulative, ok + errors);
}

/// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the
/// rank (promql/quantile.go, `bucketQuantile`).
fn quantile(q: f64, cumulative: [f64; 4], total: f64) -> f64 {
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (b, c) in BOUNDS.iter().zip(cumulative) {
        if c >= rank {
            return (lower.0 + (b - lower.0) * (rank - lower.1) / (c - lower.1)) / 1000.0;
        }
        lower = (*b, c);
    }
    BOUNDS[3] / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_analysis_reads_the_version_label() {
    let exporter = Exporter::start().await;
    // Baseline v1: 98 + 2 calls per scrape (2 %); canary v2: 16 + 4 (20 %), in both
    // built-in spanmetrics conventions.
    let (v1_cum, v2_cum) = ([50.0, 90.0, 98.0, 100.0], [2.0, 6.0, 14.0, 20.0]);
    for names in [OTEL, TEMPO] {
        export(
            &exporter,
            names,
            "payment-service",
            Some("v1"),
            98.0,
            2.0,
            v1_cum,
        );
        export(
            &exporter,
            names,
            "payment-service",
            Some("v2"),
            16.0,
            4.0,
            v2_cum,
        );
    }
    // A service whose pipeline drops `service.version`: the same calls, no version label.
    export(&exporter, OTEL, "legacy-service", None, 98.0, 2.0, v1_cum);
    let prom = PrometheusServer::start(&[exporter.addr]).await;
    let backend = format!("default={}", prom.url());
    // A 1 s TTL, so the verdict after the backend stops is not a fresh cache hit.
    let s = Setup::start(&[
        "--prometheus",
        &backend,
        "--default-source",
        "prometheus",
        "--cache-ttl",
        "1s",
    ])
    .await;
    prom.wait_for_data("sum(traces_span_metrics_calls_total)")
        .await;
    prom.wait_window_full(Duration::from_secs(10)).await;

    let params = [
        ("service", "payment-service"),
        ("canary", "v2"),
        ("baseline", "v1"),
        ("window", "10s"),
        ("convention", "otel-spanmetrics"),
    ];
    let (status, a) = s.analysis(&params).await;
    assert_eq!(status, 200, "{a}");
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("{v}: {a}"));
    for (side, errors, cum, total) in [
        ("canary", 4.0 / 20.0, v2_cum, 20.0),
        ("baseline", 2.0 / 100.0, v1_cum, 100.0),
    ] {
        let v = &a[side];
        assert!(
            (num(&v["errorRate"]) - errors).abs() < 1e-12,
            "{side} error rate: {a}"
        );
        let want = quantile(0.95, cum, total);
        assert!(
            (num(&v["latency"]) - want).abs() < 1e-9,
            "{side} p95 {want}: {a}"
        );
        let rps = num(&v["rps"]);
        assert!(rps > 0.0, "{side} rps: {a}");
        assert_eq!(v["count"], (rps * 10.0).round() as u64, "{side}: {a}");
    }
    assert!(
        (num(&a["delta"]["latency"])
            - (quantile(0.95, v2_cum, 20.0) - quantile(0.95, v1_cum, 100.0)))
        .abs()
            < 1e-9,
        "{a}"
    );
    assert_eq!(a["inconclusive"], false, "{a}");

    // The rate is Prometheus' own `rate()` over the version's calls: a direct query
    // before and after the endpoint's (no scrape in between) agrees with it. Each try uses
    // a new window, so the engine's cache cannot answer it.
    let (mut agreed, mut differed) = (0, Vec::new());
    for w in 4..=9 {
        let window = format!("{w}s");
        let direct = format!(
            "sum(rate(traces_span_metrics_calls_total{{service_name=\"payment-service\", service_version=\"v2\"}}[{window}]))"
        );
        let before = prom.query(&direct).await;
        let mut p = params.to_vec();
        p.retain(|(k, _)| *k != "window");
        p.push(("window", &window));
        let (status, b) = s.analysis(&p).await;
        let after = prom.query(&direct).await;
        assert_eq!(status, 200, "{b}");
        if let (Some(before), true) = (before, before == after) {
            let rps = b["canary"]["rps"].as_f64().expect("rps");
            // Equal up to the order Prometheus sums the two status series in, unless the
            // try fell in the scrape-commit gap (`common::scaler::assert_agrees`): then it
            // is set aside.
            if (rps - before).abs() <= 1e-12 * before {
                assert_eq!(b["canary"]["count"], (rps * w as f64).round() as u64, "{b}");
                agreed += 1;
            } else {
                differed.push(format!("{direct} = {before}: {b}"));
            }
        }
    }
    assert!(
        agreed > differed.len(),
        "{agreed} tries agreed with Prometheus; these did not: {differed:#?}"
    );

    // `inconclusive` flips at minCount: the canary's count as minCount passes, one more
    // does not (each answer judged on the count it reports).
    let canary = a["canary"]["count"].as_u64().expect("count");
    for (min, want) in [(canary, false), (canary + 1, true)] {
        let min_s = min.to_string();
        let mut p = params.to_vec();
        p.push(("minCount", &min_s));
        let (status, b) = s.analysis(&p).await;
        assert_eq!(status, 200, "{b}");
        let got = b["canary"]["count"].as_u64().expect("count");
        assert_eq!(b["inconclusive"], got < min, "{b}");
        if got == canary {
            assert_eq!(b["inconclusive"], want, "minCount {min}: {b}");
        }
    }

    // `signal: slo` over the same series: p95 ÷ 250 ms and 2 % ÷ 1 %, the larger wins;
    // both queries are read together.
    for (latency_objective, error_objective, want) in [
        (
            "250ms",
            "1%",
            (0.02 / 0.01_f64).max(quantile(0.95, v1_cum, 100.0) / 0.25),
        ),
        (
            "100ms",
            "10%",
            (quantile(0.95, v1_cum, 100.0) / 0.1).max(0.02 / 0.1),
        ),
    ] {
        let md: HashMap<String, String> = [
            ("signal", "slo"),
            ("source", "prometheus"),
            ("service", "payment-service"),
            ("version", "v1"),
            ("convention", "otel-spanmetrics"),
            ("window", "10s"),
            ("latencyObjective", latency_objective),
            ("errorRateObjective", error_objective),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let plan = s.engine.plan("shop", &md).expect("valid slo trigger");
        let got = s.engine.evaluate(&plan).await.expect("a value").value;
        assert!(
            (got - want).abs() < 1e-9 * want,
            "slo {latency_objective}/{error_objective}: {got}, want {want}"
        );
    }

    // One snapshot: a latency trigger on the same series has just read the slo's latency
    // query (and keeps it cached); the slo trigger still asks Prometheus for both halves
    // together instead of pairing that older latency with a newer error rate.
    let md = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let common = [
        ("source", "prometheus"),
        ("service", "payment-service"),
        ("version", "v1"),
        ("convention", "otel-spanmetrics"),
        ("window", "11s"),
    ];
    let mut latency_md = md(&common);
    latency_md.extend(md(&[("signal", "latency"), ("threshold", "0.3")]));
    let plan = s
        .engine
        .plan("shop", &latency_md)
        .expect("valid latency trigger");
    s.engine.evaluate(&plan).await.expect("a latency");
    let mut slo_md = md(&common);
    slo_md.extend(md(&[
        ("signal", "slo"),
        ("latencyObjective", "250ms"),
        ("errorRateObjective", "1%"),
    ]));
    let plan = s.engine.plan("shop", &slo_md).expect("valid slo trigger");
    let before = s.backend_calls("prometheus/default").await;
    s.engine.evaluate(&plan).await.expect("a value");
    assert_eq!(
        s.backend_calls("prometheus/default").await - before,
        2,
        "both halves of the slo are fetched together"
    );

    // Tempo's metrics-generator names: the same figures through tempo-spanmetrics.
    let mut p = params.to_vec();
    p.retain(|(k, _)| *k != "convention");
    p.push(("convention", "tempo-spanmetrics"));
    let (status, b) = s.analysis(&p).await;
    assert_eq!(status, 200, "{b}");
    for (side, errors, cum, total) in [
        ("canary", 4.0 / 20.0, v2_cum, 20.0),
        ("baseline", 2.0 / 100.0, v1_cum, 100.0),
    ] {
        let v = &b[side];
        assert!((num(&v["errorRate"]) - errors).abs() < 1e-12, "{side}: {b}");
        let want = quantile(0.95, cum, total);
        assert!((num(&v["latency"]) - want).abs() < 1e-9, "{side}: {b}");
    }

    // prometheus-http has no version label: 400 naming the convention.
    let mut p = params.to_vec();
    p.retain(|(k, _)| *k != "convention");
    p.push(("convention", "prometheus-http"));
    let (status, b) = s.analysis(&p).await;
    assert_eq!(status, 400, "{b}");
    assert_eq!(b["params"][0]["param"], "convention", "{b}");

    // A Prometheus without the version label (the pipeline dropped it): visibly no data,
    // never a 0. The endpoint answers no spans and no figures, inconclusive.
    let (status, b) = s
        .analysis(&[
            ("service", "legacy-service"),
            ("canary", "v2"),
            ("baseline", "v1"),
            ("window", "10s"),
        ])
        .await;
    assert_eq!(status, 200, "{b}");
    for side in ["canary", "baseline"] {
        assert_eq!(b[side]["count"], 0, "{b}");
        assert!(b[side]["errorRate"].is_null(), "{b}");
        assert!(b[side]["latency"].is_null(), "{b}");
    }
    assert_eq!(b["inconclusive"], true, "{b}");
    // A trigger asking a version: no data is an error for KEDA's fallback (an error rate
    // of 0 would read as all is well), and asking for 0 instead is refused.
    let trigger = |ignore: &str| -> HashMap<String, String> {
        [
            ("signal", "errorRate"),
            ("source", "prometheus"),
            ("service", "legacy-service"),
            ("version", "v1"),
            ("window", "10s"),
            ("threshold", "3%"),
            ("ignoreNullValues", ignore),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let plan = s.engine.plan("shop", &trigger("false")).expect("valid");
    let err = s.engine.evaluate(&plan).await.expect_err("no data");
    assert_eq!(err.kind(), "no_data", "{err}");
    let mut md = trigger("false");
    md.remove("ignoreNullValues");
    let plan = s.engine.plan("shop", &md).expect("valid");
    let err = s
        .engine
        .evaluate(&plan)
        .await
        .expect_err("no data by default");
    assert_eq!(err.kind(), "no_data", "{err}");
    assert!(s.engine.plan("shop", &trigger("true")).is_err());
    // Without a version the same trigger reads the service's 2 %.
    let mut md = trigger("false");
    md.remove("version");
    let plan = s.engine.plan("shop", &md).expect("valid");
    let got = s.engine.evaluate(&plan).await.expect("a value");
    assert!((got.value - 0.02).abs() < 1e-12, "{got:?}");

    // A failing backend is 503.
    let mut prom = prom;
    prom.stop();
    let mut p = params.to_vec();
    p.push(("quantile", "0.5"));
    let (status, b) = s.analysis(&p).await;
    assert_eq!(status, 503, "{b}");
    // The figures asked for before: the cache holds their last good answers (within
    // --max-stale, which KEDA's values may use), but a verdict is made on fresh ones only.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, b) = s.analysis(&params).await;
    assert_eq!(status, 503, "{b}");
    assert!(b.to_string().contains("last good answer"), "{b}");
}
