//! The seeds' metrics path for real: spans → a real OpenTelemetry Collector's
//! `spanmetrics` connector (its defaults: histogram buckets in milliseconds, 60 s flush,
//! cumulative temporality, label names) → its `prometheus` exporter (defaults) → a real
//! Prometheus scraping it (PROMETHEUS_BIN: Debian's 2.x, or the 3.x that
//! `scripts/real/build.sh` builds) → the scaler's `otel-spanmetrics` convention.
//!
//! The scaler's p95, error rate and RPS must equal Prometheus' own answer to the same
//! query, and the p95 must lie inside the default bucket that holds the exact p95 of the
//! spans sent: that bucket's width is what spanmetrics' default buckets cost in accuracy
//! (docs/real-pipeline.md).
//!
//! Native histograms, off (Prometheus' default) and on: the classic histogram scraped by a
//! Prometheus with native-histogram ingestion on, and the connector's exponential
//! histogram reaching Prometheus as a native histogram through the same exporter, read
//! with the `otel-spanmetrics-native` convention; its p95 must lie in the native bucket
//! holding the exact p95.

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::collector::Collector;
use common::prometheus::PrometheusServer;
use common::scaler::{metric, so, Scaler};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;

/// The connector's default histogram bounds in milliseconds
/// (open-telemetry/opentelemetry-collector-contrib
/// `connector/spanmetricsconnector/config.go`, `defaultHistogramBucketsMs`).
const DEFAULT_BOUNDS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10_000.0, 15_000.0,
];

/// The window every query reads, once it starts after the series' first sample (so
/// `rate()` extrapolates to both of its edges and its answer moves only when a sample
/// enters or leaves it) and still holds a sample from before the measured batch's flush
/// (a minute after the first).
const WINDOW: &str = "90s";
const WINDOW_S: u64 = 90;

/// One span: duration in milliseconds, and whether it failed.
type Planned = (f64, bool);

/// `n` spans with a deterministic latency schedule: medians of `median_ms` with a long
/// tail; every `error_every`-th fails.
fn schedule(n: usize, median_ms: f64, error_every: usize) -> Vec<Planned> {
    (0..n)
        .map(|i| {
            // A fixed spread of multipliers from 0.4× to 4×, the slow ones rarer.
            let u = ((i * 7919) % n) as f64 / n as f64;
            let ms = median_ms * (0.4 + 3.6 * u.powi(4));
            (ms, (i + 1) % error_every == 0)
        })
        .collect()
}

/// The exact `q` quantile of `planned`, in milliseconds (the smallest span at or past
/// rank `q × n`).
fn exact_quantile_ms(planned: &[Planned], q: f64) -> f64 {
    let mut d: Vec<f64> = planned.iter().map(|p| p.0).collect();
    d.sort_by(f64::total_cmp);
    d[((q * d.len() as f64).ceil() as usize).clamp(1, d.len()) - 1]
}

/// The default bucket (lower, upper] in milliseconds holding `ms`.
fn default_bucket_of(ms: f64) -> (f64, f64) {
    let mut lower = 0.0;
    for b in DEFAULT_BOUNDS_MS {
        if ms <= b {
            return (lower, b);
        }
        lower = b;
    }
    (lower, f64::INFINITY)
}

/// The bucket (lower, upper] in milliseconds holding `exact` in the histogram the latency
/// query reads: for a classic histogram the connector's default bucket; for a native one
/// the bucket of Prometheus' own sum of the window's rates (at the lowest schema of the
/// series summed, as `histogram_quantile` reads it), checked no wider than the connector's
/// 160 buckets allow for the range of `measured` (which spans every batch's range).
async fn bucket_of(
    prom: &PrometheusServer,
    h: Histograms,
    version: Option<&str>,
    measured: &[Planned],
    exact: f64,
) -> (f64, f64) {
    if let Histograms::Classic { .. } = h {
        return default_bucket_of(exact);
    }
    let q = format!("sum(rate({NATIVE}{{{}}}[{WINDOW}]))", matchers(version));
    let buckets = prom
        .query_histogram_buckets(&q)
        .await
        .unwrap_or_else(|| panic!("{q}: no data"));
    let &(lower, upper, _) = buckets
        .iter()
        .find(|b| b.0 < exact && exact <= b.1)
        .unwrap_or_else(|| panic!("{q}: no bucket holds {exact} ms: {buckets:?}"));
    // go-expohisto (the connector's histogram) keeps a series' observations in at most
    // `max_size` (160) buckets at the largest scale s where they fit: at s + 1 the range's
    // `octaves × 2^(s+1)` (+ 2 partly filled) buckets did not, so a bucket's upper/lower
    // ratio 2^(2^-s) is under 2^(2 × octaves / 158); the exporter serves at most schema 8.
    let (min, max) = measured
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let octaves = (max / min).log2();
    let widest = (2.0 * octaves / 158.0).exp2().max((1.0f64 / 256.0).exp2());
    assert!(
        upper / lower <= widest * (1.0 + 1e-12),
        "{q}: bucket ({lower}, {upper}] wider than 160 buckets over {octaves:.2} octaves allow ({widest})"
    );
    (lower, upper)
}

fn resource(version: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "order-service"),
            KeyValue::new("service.version", version.to_string()),
        ])
        .build()
}

/// Sends `planned` as server spans of order-service at `version`, ending now, through
/// the SDK's OTLP/gRPC exporter to the Collector.
async fn send(collector: &Collector, version: &str, planned: &[Planned]) {
    let res = resource(version);
    let collect = common::collector::Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collect.clone())
        .with_resource(res.clone())
        .build();
    let tracer = provider.tracer("slo-scaler-tests");
    let now = SystemTime::now();
    for (ms, error) in planned {
        let mut span = tracer
            .span_builder("GET /orders")
            .with_kind(SpanKind::Server)
            .with_start_time(now - Duration::from_secs_f64(ms / 1e3))
            .start(&tracer);
        if *error {
            span.set_status(Status::error("payment declined"));
        }
        span.end_with_timestamp(now);
    }
    provider.shutdown().expect("provider shutdown");
    let mut spans: Vec<SpanData> = std::mem::take(&mut *collect.0.lock().expect("lock"));
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", collector.grpc))
        .build()
        .expect("exporter");
    exporter.set_resource(&res);
    while !spans.is_empty() {
        let rest = spans.split_off(spans.len().min(512));
        exporter.export(spans).await.expect("the collector accepts");
        spans = rest;
    }
}

/// How a pipeline's latency histogram is made and read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Histograms {
    /// The connector's explicit-bucket histogram (its default), exposed as a classic
    /// histogram, scraped by a Prometheus with native-histogram ingestion off (its
    /// default) or on; read with `otel-spanmetrics`.
    Classic { native_ingestion: bool },
    /// The connector's exponential histogram (`histogram: {exponential: {}}`, its default
    /// `max_size` of 160 buckets), which the `prometheus` exporter serves as a native
    /// histogram (open-telemetry/opentelemetry-collector-contrib
    /// `exporter/prometheusexporter/collector.go`, `convertExponentialHistogram`: at most
    /// schema 8, bucket index + 1), scraped with native-histogram ingestion on; read with
    /// `otel-spanmetrics-native`.
    Native,
}

impl Histograms {
    fn convention(self) -> &'static str {
        match self {
            Histograms::Classic { .. } => "otel-spanmetrics",
            Histograms::Native => "otel-spanmetrics-native",
        }
    }
}

/// A Collector whose traces feed the `span_metrics` connector (formerly `spanmetrics`) (`connector`: its
/// settings, `{}` for the defaults) and whose metrics go to a `prometheus` exporter, and
/// a Prometheus scraping that exporter, with native-histogram ingestion on or off; and
/// the exporter's address.
async fn pipeline(
    connector: &str,
    native_ingestion: bool,
) -> (Collector, PrometheusServer, SocketAddr) {
    // The exporter's port is picked again with the receiver's if a try finds it taken.
    let port = std::sync::atomic::AtomicU16::new(0);
    let collector = Collector::start_with(|| {
        let p = common::free_port();
        port.store(p, std::sync::atomic::Ordering::SeqCst);
        format!(
            "connectors:\n  span_metrics: {connector}\nexporters:\n  prometheus:\n    endpoint: 127.0.0.1:{p}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [span_metrics]\n    metrics:\n      receivers: [span_metrics]\n      exporters: [prometheus]\n"
        )
    })
    .await;
    let port = port.load(std::sync::atomic::Ordering::SeqCst);
    let targets = [format!("127.0.0.1:{port}").parse().unwrap()];
    let prometheus = if native_ingestion {
        PrometheusServer::start_native_histograms(&targets).await
    } else {
        PrometheusServer::start(&targets).await
    };
    (collector, prometheus, targets[0])
}

const CALLS: &str = "traces_span_metrics_calls_total";
const HISTOGRAM: &str = "traces_span_metrics_duration_milliseconds_bucket";
/// The exponential histogram's name as a native histogram (no `_bucket`).
const NATIVE: &str = "traces_span_metrics_duration_milliseconds";

/// Waits until Prometheus counts `n` calls of order-service (the connector flushes
/// once a minute).
async fn wait_calls(prom: &PrometheusServer, collector: &Collector, n: usize) {
    let q = format!("sum({CALLS}{{service_name=\"order-service\"}})");
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let got = prom.query(&q).await;
        if got == Some(n as f64) {
            return;
        }
        assert!(
            got.unwrap_or(0.0) < n as f64,
            "{q}: {got:?} > {n} spans sent"
        );
        assert!(
            Instant::now() < deadline,
            "{q}: {got:?}, want {n}\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The label matchers of order-service's server spans, at `version` when given.
fn matchers(version: Option<&str>) -> String {
    let mut f = r#"service_name="order-service",span_kind="SPAN_KIND_SERVER""#.to_string();
    if let Some(v) = version {
        f.push_str(&format!(",service_version=\"{v}\""));
    }
    f
}

/// The canonical queries of the `otel-spanmetrics` convention, or of
/// `otel-spanmetrics-native` (signal-sources.md: no `_bucket`, no `by (le)`), for
/// order-service's server spans, at `version` when given.
fn canonical(h: Histograms, version: Option<&str>) -> [(String, &'static str); 3] {
    let f = matchers(version);
    let latency = match h {
        Histograms::Classic { .. } => {
            format!(
                "histogram_quantile(0.95, sum by (le) (rate({HISTOGRAM}{{{f}}}[{WINDOW}]))) / 1000"
            )
        }
        Histograms::Native => {
            format!("histogram_quantile(0.95, sum(rate({NATIVE}{{{f}}}[{WINDOW}]))) / 1000")
        }
    };
    [
        (latency, "latency"),
        (
            format!(
                "sum(rate({CALLS}{{{f},status_code=\"STATUS_CODE_ERROR\"}}[{WINDOW}])) / sum(rate({CALLS}{{{f}}}[{WINDOW}]))"
            ),
            "errorRate",
        ),
        (format!("sum(rate({CALLS}{{{f}}}[{WINDOW}]))"), "rps"),
    ]
}

/// `signal: concurrency`'s query (Little's law: the rate of the histogram's sum of
/// durations, in seconds): the classic histogram's `_sum` series, or `histogram_sum` of
/// the native one (signal-sources.md).
fn concurrency_query(h: Histograms, version: Option<&str>) -> String {
    let f = matchers(version);
    match h {
        Histograms::Classic { .. } => {
            let name = HISTOGRAM.trim_end_matches("_bucket");
            format!("sum(rate({name}_sum{{{f}}}[{WINDOW}])) / 1000")
        }
        Histograms::Native => {
            format!("histogram_sum(sum(rate({NATIVE}{{{f}}}[{WINDOW}]))) / 1000")
        }
    }
}

/// The scaler's answer for `signal` (at `version`), checked equal to Prometheus' own
/// answer to the canonical query: a direct query before and after the scaler's must
/// agree (no scrape in between), so all three saw the same samples.
async fn agreed(
    prom: &PrometheusServer,
    scaler: &mut Scaler,
    h: Histograms,
    version: Option<&str>,
    query: &str,
    signal: &str,
) -> f64 {
    let mut meta = vec![
        ("signal", signal),
        ("source", "prometheus"),
        ("convention", h.convention()),
        ("service", "order-service"),
        ("window", WINDOW),
        (
            "threshold",
            if signal == "errorRate" { "0.05" } else { "1" },
        ),
    ];
    if let Some(v) = version {
        meta.push(("version", v));
    }
    let r = so(
        &format!(
            "orders-{}-{}",
            signal.to_lowercase(),
            version.unwrap_or("all")
        ),
        &meta,
    );
    let mut differed = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(120)).await; // past the cache TTL
        let before = prom.query(query).await;
        let got = metric(&mut scaler.client, &r).await;
        let after = prom.query(query).await;
        let (Some(want), true) = (before, before == after) else {
            continue;
        };
        let got = got.unwrap_or_else(|s| panic!("{query}: {s:?}"));
        if (got - want).abs() <= want.abs() * 1e-9 {
            return got;
        }
        // The scrape-commit gap (`common::scaler::assert_agrees`): ask again.
        eprintln!("scaler {got}, prometheus {want} either side, for {query}: asking again");
        differed = Some((got, want));
    }
    match differed {
        Some((got, want)) => panic!("scaler {got} != prometheus {want} for {query}"),
        None => panic!("prometheus never gave a stable answer for {query}"),
    }
}

/// Checks one version's (or all versions') figures against Prometheus and the truth:
/// `measured` are the spans of the second batch (the first has the same shape and
/// error share: counted by `rate()` or not, it changes neither the error ratio nor the
/// bucket of the p95).
async fn check(
    prom: &PrometheusServer,
    scaler: &mut Scaler,
    h: Histograms,
    version: Option<&str>,
    measured: &[Planned],
) {
    let [(latency_q, _), (errors_q, _), (rps_q, _)] = canonical(h, version);
    let p95 = agreed(prom, scaler, h, version, &latency_q, "latency").await;
    let exact = exact_quantile_ms(measured, 0.95);
    let (lower, upper) = bucket_of(prom, h, version, measured, exact).await;
    assert!(
        lower / 1e3 <= p95 && p95 <= upper / 1e3,
        "{h:?} {version:?}: p95 {p95} s outside the bucket ({lower}, {upper}] ms of the exact {exact} ms"
    );
    eprintln!(
        "{h:?} {version:?}: p95 {:.3} ms, exact {exact:.3} ms ({:+.2} %), its bucket ({lower:.3}, {upper:.3}] ms ({:.2} % wide)",
        p95 * 1e3,
        (p95 * 1e3 / exact - 1.0) * 100.0,
        (upper / lower - 1.0) * 100.0
    );
    let error_rate = agreed(prom, scaler, h, version, &errors_q, "errorRate").await;
    let errors = measured.iter().filter(|p| p.1).count() as f64;
    let want = errors / measured.len() as f64;
    assert!(
        (error_rate - want).abs() <= want * 1e-9,
        "{version:?}: error rate {error_rate}, want {want}"
    );
    let rps = agreed(prom, scaler, h, version, &rps_q, "rps").await;
    // rate() extrapolates the increase towards the window's edges, never below it.
    assert!(
        rps * WINDOW_S as f64 >= measured.len() as f64 * (1.0 - 1e-9),
        "{version:?}: rps {rps} under {} spans in {WINDOW}",
        measured.len()
    );
    let concurrency = agreed(
        prom,
        scaler,
        h,
        version,
        &concurrency_query(h, version),
        "concurrency",
    )
    .await;
    // The histogram's sum and the calls counter grow by the same batch, so their ratio is
    // the batch's mean duration — but only up to `rate()`'s extrapolation, which Prometheus
    // does per series from that series' own first and last samples in the window
    // (promql/functions.go, `extrapolatedRate`): a sum over series that began at different
    // scrapes (ok and error spans, two versions) is extrapolated unevenly, and the ok and
    // error spans' mean durations differ, so the ratio moves by up to a scrape interval over
    // the window (a few per cent). A cold CI run saw 4e-5 relative, a warm one under load
    // 1.1 %. This is the Little's-law cross-check, which a unit (1000x) or family (p95 for
    // the mean) mistake misses by far; the equality with Prometheus' own answer above is
    // the exact check.
    let mean_s = measured.iter().map(|p| p.0).sum::<f64>() / measured.len() as f64 / 1e3;
    assert!(
        (concurrency / rps - mean_s).abs() <= mean_s * 0.05,
        "{h:?} {version:?}: concurrency {concurrency} / rps {rps} is not the mean duration {mean_s} s"
    );
}

/// The base pipeline (connector defaults) and the one with `service.version` as a
/// dimension, run side by side (each waits on its connector's one-minute flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanmetrics_through_prometheus_match_prometheus_and_the_spans() {
    let classic = Histograms::Classic {
        native_ingestion: false,
    };
    let (base, versioned) = tokio::join!(
        run_pipeline("{}", classic, false),
        run_pipeline(
            "\n    dimensions:\n      - name: service.version",
            classic,
            true
        )
    );
    let ((_c1, _p1), (_c2, _p2)) = (base, versioned);
}

/// Native histograms on: the connector's default (classic) histogram scraped by a
/// Prometheus with native-histogram ingestion on must read the same as with it off; the
/// connector's exponential histogram reaches Prometheus as a native histogram (with
/// `service.version` as a dimension: per version and through `/api/v1/analysis`, read
/// with `otel-spanmetrics-native`). Side by side, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_through_prometheus_match_prometheus_and_the_spans() {
    let (classic, native) = tokio::join!(
        run_pipeline(
            "{}",
            Histograms::Classic {
                native_ingestion: true
            },
            false
        ),
        run_pipeline(
            "\n    histogram:\n      exponential: {}\n    dimensions:\n      - name: service.version",
            Histograms::Native,
            true
        )
    );
    let ((_c1, _p1), (_c2, _p2)) = (classic, native);
}

async fn run_pipeline(
    connector: &str,
    h: Histograms,
    versioned: bool,
) -> (Collector, PrometheusServer) {
    let native_ingestion = match h {
        Histograms::Classic { native_ingestion } => native_ingestion,
        Histograms::Native => true,
    };
    let (collector, prom, exporter) = pipeline(connector, native_ingestion).await;
    // The exponential histogram scraped by a Prometheus at its default, native-histogram
    // ingestion off (checked at the end).
    let default_ingestion = match h {
        Histograms::Native => Some(PrometheusServer::start(&[exporter]).await),
        Histograms::Classic { .. } => None,
    };
    // Without the version dimension every span comes from one resource: the connector
    // keeps one set of series per resource, and the prometheus exporter drops the
    // resource attributes that are not labels, so two versions' series would collide
    // there (one overwriting the other at each flush; docs/real-pipeline.md).
    let (a, b) = if versioned {
        ("v1", "v2")
    } else {
        ("v1", "v1")
    };
    // First batch: every series (each version, ok and failed) starts with a few spans,
    // failing in the same share as the second batch's. Whether `rate()` counts a series'
    // first flush depends on where Prometheus places the series' start (with Debian's
    // 2.42 it did here), so the error ratio must come out the same either way.
    let warm_v1 = schedule(80, 40.0, 8);
    let warm_v2 = schedule(20, 250.0, 5);
    send(&collector, a, &warm_v1).await;
    send(&collector, b, &warm_v2).await;
    wait_calls(&prom, &collector, 100).await;
    let first_flush = Instant::now();
    // Second batch: what the queries measure.
    let v1 = schedule(4_000, 40.0, 8);
    let v2 = schedule(1_000, 250.0, 5);
    send(&collector, a, &v1).await;
    send(&collector, b, &v2).await;
    wait_calls(&prom, &collector, 100 + 5_000).await;
    // The window starts after the first flush's sample, and must still hold a sample
    // from before the second flush (the connector's interval after the first).
    let from = first_flush + Duration::from_secs(WINDOW_S + 2);
    let until = first_flush + Duration::from_secs(WINDOW_S + 58);
    tokio::time::sleep_until(from.into()).await;

    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&[
        "--prometheus",
        &url,
        "--default-source",
        "prometheus",
        "--cache-ttl",
        "50ms",
        "--min-cache-ttl",
        "10ms",
    ])
    .await;
    let both: Vec<Planned> = v1.iter().chain(&v2).copied().collect();
    check(&prom, &mut scaler, h, None, &both).await;
    if versioned {
        check(&prom, &mut scaler, h, Some("v1"), &v1).await;
        check(&prom, &mut scaler, h, Some("v2"), &v2).await;
        analysis(&prom, &scaler, h, &v1, &v2).await;
    }
    assert!(
        Instant::now() < until,
        "the checks outlasted the window that holds the second flush ({h:?}, versioned: {versioned})"
    );
    if let Some(off) = default_ingestion {
        // Prometheus asks for a text exposition then, which has no native buckets: the
        // exporter's handler writes a native-only histogram as `_sum`, `_count` and a lone
        // `le="+Inf"` bucket (prometheus/common `expfmt/text_create.go`). The counts
        // arrive, but neither convention reads a latency: no data.
        let f = matchers(None);
        let count = format!("sum({NATIVE}_count{{{f}}})");
        assert_eq!(off.query(&count).await, Some(100.0 + 5_000.0), "{count}");
        let buckets = format!("count({HISTOGRAM}{{{f}}}) / count({NATIVE}_count{{{f}}})");
        assert_eq!(
            off.query(&buckets).await,
            Some(1.0),
            "{buckets}: one bucket a series"
        );
        for (latency, _) in [
            canonical(Histograms::Native, None),
            canonical(
                Histograms::Classic {
                    native_ingestion: false,
                },
                None,
            ),
        ]
        .map(|[l, _, _]| l)
        {
            assert_eq!(off.query(&latency).await, None, "{latency}");
        }
    }
    (collector, prom)
}

/// `/api/v1/analysis` on the versioned pipeline: each side's error rate is the exact
/// ratio of its spans, its p95 lies in the bucket of its exact p95 and equals
/// Prometheus' answer.
async fn analysis(
    prom: &PrometheusServer,
    scaler: &Scaler,
    h: Histograms,
    v1: &[Planned],
    v2: &[Planned],
) {
    let path = format!(
        "/api/v1/analysis?service=order-service&canary=v2&baseline=v1&window={WINDOW}&convention={}",
        h.convention()
    );
    let (status, body) = scaler.get(&path).await;
    assert_eq!(status, 200, "{body}");
    let a: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    for (side, version, spans) in [("canary", "v2", v2), ("baseline", "v1", v1)] {
        let v = &a[side];
        let errors = spans.iter().filter(|p| p.1).count() as f64 / spans.len() as f64;
        let got = v["errorRate"].as_f64().unwrap_or_else(|| panic!("{a}"));
        assert!((got - errors).abs() <= errors * 1e-9, "{side}: {a}");
        let p95 = v["latency"].as_f64().unwrap_or_else(|| panic!("{a}"));
        let exact = exact_quantile_ms(spans, 0.95);
        let (lower, upper) = bucket_of(prom, h, Some(version), spans, exact).await;
        assert!(
            lower / 1e3 <= p95 && p95 <= upper / 1e3,
            "{side}: p95 {p95} outside ({lower}, {upper}] ms: {a}"
        );
        // Histogram counts move only at the connector's flush: Prometheus' answer now is
        // the one the endpoint read.
        let [(latency_q, _), _, _] = canonical(h, Some(version));
        let want = prom.query(&latency_q).await.expect("a p95");
        assert!((p95 - want).abs() <= want * 1e-9, "{side}: {want}: {a}");
    }
}
