//! The scaler against a real Prometheus server (Debian's `prometheus`, started by the
//! harness on a free loopback port, scraping a test exporter every second), through the
//! real gRPC interface.

mod capacity;
#[path = "../common/mod.rs"]
mod common;

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
                // a decoy or a widened match would be off by 100× or more.
                assert!(
                    (got - want).abs() <= 1e-12 * want,
                    "{name:?} selects exactly its own series: {got} vs {want}"
                );
                checked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        assert!(checked, "{name:?}: no stable answer");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_cache_concurrent_requests_make_one_prometheus_query() {
    let (_exporter, prom) = fixture().await;
    prom.wait_for_data("sum(rate(traces_span_metrics_calls_total[10s]))")
        .await;
    let url = format!("default={}", prom.url());
    let scaler = Scaler::start(&["--prometheus", &url, "--cache-ttl", "1m"]).await;
    let r = so(
        "orders",
        &[
            ("signal", "rps"),
            ("service", "order-service"),
            ("window", "10s"),
            ("threshold", "100"),
        ],
    );
    // GetMetricSpec never touches a backend.
    let before = prom.query_requests().await;
    for _ in 0..20 {
        scaler
            .client
            .clone()
            .get_metric_spec(r.clone())
            .await
            .unwrap();
    }
    assert_eq!(prom.query_requests().await, before);
    let name = scaler
        .client
        .clone()
        .get_metric_spec(r.clone())
        .await
        .unwrap()
        .into_inner()
        .metric_specs[0]
        .metric_name
        .clone();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let mut client = scaler.client.clone();
            let req = GetMetricsRequest {
                scaled_object_ref: Some(r.clone()),
                metric_name: name.clone(),
            };
            tokio::spawn(async move { client.get_metrics(req).await })
        })
        .collect();
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap().unwrap().into_inner().metric_values[0].metric_value_float);
    }
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "one answer for all"
    );
    assert_eq!(
        prom.query_requests().await - before,
        1.0,
        "exactly one Prometheus query"
    );
    let (_, text) = scaler.get("/metrics").await;
    assert!(
        text.contains(r#"slo_scaler_cache_requests_total{result="miss"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"slo_scaler_cache_requests_total{result="hit"} 199"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_serves_stale_then_unavailable_then_recovers() {
    let (_exporter, mut prom) = fixture().await;
    prom.wait_for_data("sum(rate(traces_span_metrics_calls_total[10s]))")
        .await;
    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&[
        "--prometheus",
        &url,
        "--cache-ttl",
        "200ms",
        "--min-cache-ttl",
        "10ms",
        "--max-stale",
        "3s",
        "--max-cache-ttl",
        "2s",
        "--backend-timeout",
        "1s",
    ])
    .await;
    let r = so(
        "orders",
        &[
            ("signal", "errorRate"),
            ("service", "order-service"),
            ("window", "10s"),
            ("threshold", "3%"),
        ],
    );
    let good = metric(&mut scaler.client, &r).await.unwrap();
    let last_fetch = Instant::now();
    prom.stop();
    // While younger than --max-stale, the last good value is served.
    let mut stale_served = 0;
    while last_fetch.elapsed() < Duration::from_millis(2500) {
        assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), good);
        assert_eq!(scaler.get("/readyz").await.0, 200);
        stale_served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stale_served > 10);
    // Then Unavailable, quickly, so KEDA's fallback takes over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let err = metric(&mut scaler.client, &r).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("prometheus/default"), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert_eq!(scaler.get("/readyz").await.0, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // GetMetricSpec never touches a backend: with Prometheus still down, a ScaledObject
    // never asked about before is planned and answered, and so is the failing one.
    let unseen = so(
        "payments",
        &[
            ("signal", "errorRate"),
            ("service", "payment-service"),
            ("window", "20s"),
            ("threshold", "3%"),
        ],
    );
    for r in [&unseen, &r] {
        let spec = scaler
            .client
            .get_metric_spec(r.clone())
            .await
            .unwrap_or_else(|e| panic!("GetMetricSpec while Prometheus is down: {e:?}"))
            .into_inner();
        assert_eq!(spec.metric_specs.len(), 1, "{spec:?}");
    }
    let (_, text) = scaler.get("/metrics").await;
    assert!(
        text.contains(r#"slo_scaler_cache_requests_total{result="stale"}"#),
        "{text}"
    );
    // Back without restarting the scaler.
    prom.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = metric(&mut scaler.client, &r).await {
            assert!((v - 6.0 / 106.0).abs() < 1e-9, "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fresh value after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Two triggers share one query: each is served as fresh as its own `cacheTTL` says
/// (before, the first caller's TTL held for both), and a short outage at the end of a TTL
/// is covered by the last good value instead of becoming a TTL of errors.
#[tokio::test(flavor = "multi_thread")]
async fn shared_queries_keep_each_triggers_ttl_and_short_outages_serve_stale() {
    let (exporter, mut prom) = PrometheusServer::scraping_gauge("backlog", 1.0).await;
    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&[
        "--prometheus",
        &url,
        "--cache-ttl",
        "20s",
        "--min-cache-ttl",
        "100ms",
        "--max-cache-ttl",
        "30s",
        "--max-stale",
        "60s",
        "--backend-timeout",
        "1s",
    ])
    .await;
    let trigger = |name: &str, ttl: Option<&'static str>| {
        let mut md = vec![
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", "max(backlog)"),
            ("threshold", "1"),
        ];
        if let Some(ttl) = ttl {
            md.push(("cacheTTL", ttl));
        }
        so(name, &md)
    };
    let (slow, fast) = (trigger("slow", None), trigger("fast", Some("1s")));
    // The long-TTL trigger asks first and fills the cache.
    assert_eq!(metric(&mut scaler.client, &slow).await.unwrap(), 1.0);
    assert_eq!(metric(&mut scaler.client, &fast).await.unwrap(), 1.0);
    exporter.set_gauge("backlog", 30.0);
    prom.wait_for_data("max(backlog) == 30").await;
    // Prometheus has 30 now: the 1 s trigger sees it within about a second.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let v = metric(&mut scaler.client, &fast).await.unwrap();
        if v == 30.0 {
            break;
        }
        assert!(Instant::now() < deadline, "cacheTTL 1s still reads {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A one-second outage: the 1 s trigger's TTL runs out during it, and it is served the
    // last good value (stale), never an error; the long-TTL trigger is served from cache.
    prom.stop();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_millis(1500) {
        assert_eq!(metric(&mut scaler.client, &fast).await.unwrap(), 30.0);
        assert_eq!(metric(&mut scaler.client, &slow).await.unwrap(), 30.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, text) = scaler.get("/metrics").await;
    assert!(
        text.contains(r#"slo_scaler_cache_requests_total{result="stale"}"#),
        "{text}"
    );
    // Back: the short-TTL trigger reads fresh values again within a couple of seconds.
    prom.restart().await;
    exporter.set_gauge("backlog", 7.0);
    prom.wait_for_data("max(backlog) == 7").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&mut scaler.client, &fast).await.unwrap() != 7.0 {
        assert!(Instant::now() < deadline, "no fresh value after the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A trigger asked in the last quarter of its TTL is served the answer held (younger than
/// the TTL, so no waiting for Prometheus) and the scaler asks Prometheus again on its own;
/// the next call after the TTL is served that newer answer without a query on its path.
#[tokio::test(flavor = "multi_thread")]
async fn answers_late_in_their_ttl_are_refreshed_off_the_callers_path() {
    let (exporter, prom) = PrometheusServer::scraping_gauge("backlog", 1.0).await;
    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&["--prometheus", &url, "--cache-ttl", "8s"]).await;
    let r = so(
        "orders",
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", "max(backlog)"),
            ("threshold", "1"),
        ],
    );
    let first = Instant::now();
    assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), 1.0);
    exporter.set_gauge("backlog", 5.0);
    prom.wait_for_data("max(backlog) == 5").await;
    // Within the first three quarters of the TTL: the answer held, no query.
    let before = prom.query_requests().await;
    assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), 1.0);
    assert_eq!(prom.query_requests().await, before);

    // The last quarter (from 6 s of 8 s): still the answer held, and one query follows.
    tokio::time::sleep_until((first + Duration::from_millis(6300)).into()).await;
    assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), 1.0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while prom.query_requests().await == before {
        assert!(Instant::now() < deadline, "no refresh ahead of the TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refreshed = prom.query_requests().await;
    assert_eq!(refreshed, before + 1.0, "one refresh");

    // Past the first answer's TTL: the refreshed answer, no query on the caller's path.
    tokio::time::sleep_until((first + Duration::from_millis(8300)).into()).await;
    assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), 5.0);
    assert_eq!(prom.query_requests().await, refreshed);
    let (_, text) = scaler.get("/metrics").await;
    assert!(
        text.contains(r#"slo_scaler_cache_requests_total{result="miss"} 1"#),
        "one miss, the first call: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_never_answers_is_cut_off_at_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let url = format!("hung=http://{addr}");
    let mut scaler = Scaler::start(&["--prometheus", &url, "--backend-timeout", "500ms"]).await;
    let r = so(
        "orders",
        &[
            ("signal", "rps"),
            ("service", "order-service"),
            ("backend", "hung"),
            ("threshold", "10"),
        ],
    );
    let started = Instant::now();
    let err = metric(&mut scaler.client, &r).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no answer within 500ms"), "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(scaler.get("/readyz").await.0, 200);
    let (_, text) = scaler.get("/metrics").await;
    assert!(
        text.contains(
            r#"slo_scaler_backend_requests_total{backend="prometheus/hung",outcome="timeout"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_data_errors_and_bad_queries_reach_keda_as_clear_statuses() {
    let (_exporter, prom) = fixture().await;
    prom.wait_for_data("sum(rate(traces_span_metrics_calls_total[10s]))")
        .await;
    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&["--prometheus", &url]).await;
    let check = |md: Vec<(&'static str, &'static str)>| so("x", &md);
    // No traffic, for rps (where 0 is a real reading): 0 with ignoreNullValues (KEDA's
    // default), an error without it.
    let idle = vec![
        ("signal", "rps"),
        ("service", "idle-service"),
        ("threshold", "10"),
    ];
    assert_eq!(
        metric(&mut scaler.client, &check(idle.clone()))
            .await
            .unwrap(),
        0.0
    );
    let mut strict = idle.clone();
    strict.push(("ignoreNullValues", "false"));
    let err = metric(&mut scaler.client, &check(strict))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no data"), "{err:?}");
    // Where 0 reads as "all is well", a service with no series (here a typo) is an error
    // for KEDA's fallback by default, never the best latency there is; asking for 0 is
    // refused by name.
    for (signal, threshold) in [("latency", "300ms"), ("errorRate", "3%")] {
        let typo = vec![
            ("signal", signal),
            ("service", "order-servce"),
            ("threshold", threshold),
        ];
        let err = metric(&mut scaler.client, &check(typo.clone()))
            .await
            .expect_err(signal);
        assert_eq!(err.code(), Code::Unavailable, "{signal}: {err:?}");
        assert!(err.message().contains("no data"), "{signal}: {err:?}");
        let mut zero = typo;
        zero.push(("ignoreNullValues", "true"));
        let err = metric(&mut scaler.client, &check(zero))
            .await
            .expect_err(signal);
        assert_eq!(err.code(), Code::InvalidArgument, "{signal}: {err:?}");
        assert!(err.message().contains("ignoreNullValues"), "{err:?}");
    }
    let slo = vec![
        ("signal", "slo"),
        ("service", "order-servce"),
        ("latencyObjective", "300ms"),
        ("errorRateObjective", "1%"),
    ];
    let err = metric(&mut scaler.client, &check(slo))
        .await
        .expect_err("slo");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no data"), "{err:?}");
    // Prometheus' own parse error, surfaced.
    let bad = vec![
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "sum(rate(x[5m])"),
        ("threshold", "1"),
    ];
    let err = metric(&mut scaler.client, &check(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("bad_data"), "{err:?}");
    // Several series cannot be one value.
    let many = vec![
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "rate(traces_span_metrics_calls_total[10s])"),
        ("threshold", "1"),
    ];
    let err = metric(&mut scaler.client, &check(many)).await.unwrap_err();
    assert!(err.message().contains("series"), "{err:?}");
    // A raw query that works.
    let raw = vec![
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "scalar(vector(42))"),
        ("threshold", "1"),
    ];
    assert_eq!(metric(&mut scaler.client, &check(raw)).await.unwrap(), 42.0);
}

fn check_args(argv: &[&str]) -> slo_scaler::check::CheckArgs {
    use clap::Parser as _;
    let mut full = vec!["slo-scaler", "check"];
    full.extend_from_slice(argv);
    match slo_scaler::cli::Cli::try_parse_from(full).unwrap().command {
        slo_scaler::cli::Command::Check(a) => a,
        _ => panic!("not check"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_explains_a_trigger_against_the_real_server() {
    let (_exporter, prom) = fixture().await;
    let canonical = &canonical(&CONVENTIONS[0], "10s")[1].0;
    prom.wait_for_data(canonical).await;
    let url = format!("default={}", prom.url());
    let report = slo_scaler::check::run(check_args(&[
        "--prometheus",
        &url,
        "-m",
        "signal=errorRate",
        "-m",
        "service=order-service",
        "-m",
        "window=10s",
        "-m",
        "threshold=3%",
        "--current-replicas",
        "4",
    ]))
    .await
    .unwrap();
    // 6 errors in 106 calls against a 3 % target with Value: ceil(4 × 0.0566 / 0.03) = 8.
    for line in [
        "signal       errorRate (source prometheus)",
        "metric       errorrate-order-service",
        "query        prometheus/default: (sum(rate(traces_span_metrics_calls_total{service_name=\"order-service\", span_kind=\"SPAN_KIND_SERVER\", status_code=\"STATUS_CODE_ERROR\"}[10s])) or vector(0))",
        "threshold    0.03 (activation above 0)",
        "metricType   Value",
        "keda         2.18 or later for `fallback`",
        "state        ok",
        "active       true",
        "replicas     4 now → 8 wanted",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    // A typo in `service` selects nothing: visible as no data, not a silent 0.
    let report = slo_scaler::check::run(check_args(&[
        "--prometheus",
        &url,
        "-m",
        "signal=rps",
        "-m",
        "service=order-servce",
        "-m",
        "threshold=10",
    ]))
    .await
    .unwrap();
    assert!(report.contains("state        no_data"), "{report}");
    // Errors are an Err (the binary exits non-zero), naming the key.
    let err = slo_scaler::check::run(check_args(&[
        "--prometheus",
        &url,
        "-m",
        "signal=latency",
        "-m",
        "threshold=soon",
    ]))
    .await
    .unwrap_err();
    assert!(
        err.contains("threshold") && err.contains("service"),
        "{err}"
    );
    let err = slo_scaler::check::run(check_args(&[
        "-m",
        "signal=rps",
        "-m",
        "service=x",
        "-m",
        "threshold=1",
        "-m",
        "source=prometheus",
    ]))
    .await
    .unwrap_err();
    assert!(err.contains("no Prometheus backend"), "{err}");
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
