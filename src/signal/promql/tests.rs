//! Tests of the PromQL builder and the built-in conventions.

use super::*;
use crate::signal::Quantile;

fn selector(service: &str) -> TraceSelector {
    TraceSelector {
        service: service.into(),
        span_kind: SpanKind::Server,
        version: None,
        labels: vec![],
    }
}

#[test]
fn hostile_values_stay_literals() {
    let conventions = builtin_conventions();
    for value in [
        r#"a"} or vector(1e9) #"#,
        "new\nline\r\ncr",
        "nul\0bell\x07del\x7f",
        "c1\u{85}bom\u{feff}bad\u{fffd}",
        r"\",
    ] {
        let q = build(
            "tempo-spanmetrics",
            &conventions["tempo-spanmetrics"],
            &selector(value),
            TraceMeasure::Rate,
            Duration::from_secs(60),
        )
        .unwrap();
        let (skeleton, literals) =
            crate::signal::quote::tests::lex(&q).unwrap_or_else(|e| panic!("{value:?}: {e}: {q}"));
        assert_eq!(literals, vec![value, "SPAN_KIND_SERVER"], "{q}");
        assert_eq!(
            skeleton,
            r#"sum(rate(traces_spanmetrics_calls_total{service="…", span_kind="…"}[1m]))"#
        );
    }
}

#[test]
fn canonical_queries() {
    let conventions = builtin_conventions();
    let check = |conv: &str, sel: &TraceSelector, m: TraceMeasure, expect: &str| {
        let q = build(conv, &conventions[conv], sel, m, Duration::from_secs(120)).unwrap();
        assert_eq!(q, expect, "{conv} {m:?}");
    };
    let s = selector("order-service");
    check(
        "otel-spanmetrics",
        &s,
        TraceMeasure::Latency(Quantile::P95),
        r#"histogram_quantile(0.95, sum by (le) (rate(traces_span_metrics_duration_milliseconds_bucket{service_name="order-service", span_kind="SPAN_KIND_SERVER"}[2m]))) / 1000"#,
    );
    check(
        "otel-spanmetrics",
        &s,
        TraceMeasure::ErrorRatio,
        r#"(sum(rate(traces_span_metrics_calls_total{service_name="order-service", span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_ERROR"}[2m])) or vector(0)) / sum(rate(traces_span_metrics_calls_total{service_name="order-service", span_kind="SPAN_KIND_SERVER"}[2m]))"#,
    );
    check(
        "tempo-spanmetrics",
        &s,
        TraceMeasure::Rate,
        r#"sum(rate(traces_spanmetrics_calls_total{service="order-service", span_kind="SPAN_KIND_SERVER"}[2m]))"#,
    );
    check(
        "otel-http",
        &s,
        TraceMeasure::Latency(Quantile::parse("p99").unwrap()),
        r#"histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="order-service"}[2m])))"#,
    );
    check(
        "prometheus-http",
        &s,
        TraceMeasure::ErrorRatio,
        r#"(sum(rate(http_request_duration_seconds_count{job="order-service", code=~"5.."}[2m])) or vector(0)) / sum(rate(http_request_duration_seconds_count{job="order-service"}[2m]))"#,
    );
    // Istio: the destination proxy's series only; latency and concurrency in ms.
    check(
        "istio",
        &s,
        TraceMeasure::Latency(Quantile::P95),
        r#"histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_service_name="order-service", reporter="destination"}[2m]))) / 1000"#,
    );
    check(
        "istio",
        &s,
        TraceMeasure::ErrorRatio,
        r#"(sum(rate(istio_requests_total{destination_service_name="order-service", reporter="destination", response_code=~"5.."}[2m])) or vector(0)) / sum(rate(istio_requests_total{destination_service_name="order-service", reporter="destination"}[2m]))"#,
    );
    check(
        "istio",
        &s,
        TraceMeasure::Concurrency,
        r#"sum(rate(istio_request_duration_milliseconds_sum{destination_service_name="order-service", reporter="destination"}[2m])) / 1000"#,
    );
    let mut canary = selector("order-service");
    canary.version = Some("v2".into());
    canary.labels = vec![("destination_service_namespace".into(), "shop".into())];
    check(
        "istio",
        &canary,
        TraceMeasure::Rate,
        r#"sum(rate(istio_requests_total{destination_service_name="order-service", reporter="destination", destination_version="v2", destination_service_namespace="shop"}[2m]))"#,
    );
    // Linkerd: the proxy's inbound side only; failures as the proxy classifies them.
    check(
        "linkerd",
        &s,
        TraceMeasure::ErrorRatio,
        r#"(sum(rate(response_total{deployment="order-service", direction="inbound", classification="failure"}[2m])) or vector(0)) / sum(rate(response_total{deployment="order-service", direction="inbound"}[2m]))"#,
    );
    check(
        "linkerd",
        &s,
        TraceMeasure::Latency(Quantile::P95),
        r#"histogram_quantile(0.95, sum by (le) (rate(response_latency_ms_bucket{deployment="order-service", direction="inbound"}[2m]))) / 1000"#,
    );
    check(
        "linkerd",
        &s,
        TraceMeasure::Rate,
        r#"sum(rate(response_total{deployment="order-service", direction="inbound"}[2m]))"#,
    );
    let mut labelled = selector("a\"b");
    labelled.labels = vec![("span_name".into(), "GET /orders/{id}".into())];
    check(
        "tempo-spanmetrics",
        &labelled,
        TraceMeasure::Rate,
        r#"sum(rate(traces_spanmetrics_calls_total{service="a\"b", span_kind="SPAN_KIND_SERVER", span_name="GET /orders/{id}"}[2m]))"#,
    );
}

/// `signal: sloCapacity`'s queries, written out by hand: the histogram's `_sum` and
/// `_count` over the policy's windows (1m, a 10m history, a 5m peak and a 30m sustained
/// window at 1m steps, the guard's 10m or whatever `capacity::GUARD_WINDOW_S` is), in
/// seconds.
#[test]
fn capacity_queries() {
    use crate::signal::capacity::{
        GUARD_WINDOW_S, HISTORY_S, PEAK_S, SUSTAINED_Q, SUSTAINED_S, WINDOW_S,
    };
    // The shapes below are written for these windows.
    assert_eq!(
        (WINDOW_S, HISTORY_S, PEAK_S, SUSTAINED_S, SUSTAINED_Q),
        (60, 600, 300, 1800, 0.9)
    );
    let guard = format_window(Duration::from_secs(GUARD_WINDOW_S));
    let conventions = builtin_conventions();
    let mut s = selector("order-service");
    s.version = Some("v2".into());
    let q = capacity(
        "otel-spanmetrics",
        &conventions["otel-spanmetrics"],
        &s,
        Quantile::P95,
    )
    .unwrap();
    let f = r#"{service_name="order-service", span_kind="SPAN_KIND_SERVER", service_version="v2"}"#;
    let h = "traces_span_metrics_duration_milliseconds";
    assert_eq!(q.concurrency, format!("sum(rate({h}_sum{f}[1m])) / 1000"));
    assert_eq!(q.rate, format!("sum(rate({h}_count{f}[1m]))"));
    assert_eq!(
        q.reference_latency,
        format!("min_over_time((sum(rate({h}_sum{f}[1m])) / sum(rate({h}_count{f}[1m])))[10m:1m]) / 1000")
    );
    assert_eq!(
        q.peak_concurrency,
        format!("max_over_time(sum(rate({h}_sum{f}[1m]))[5m:1m]) / 1000")
    );
    assert_eq!(
        q.peak_rate,
        format!("max_over_time(sum(rate({h}_count{f}[1m]))[5m:1m])")
    );
    assert_eq!(
        q.sustained_concurrency,
        format!("quantile_over_time(0.9, sum(rate({h}_sum{f}[1m]))[30m:1m]) / 1000")
    );
    assert_eq!(
        q.sustained_rate,
        format!("quantile_over_time(0.9, sum(rate({h}_count{f}[1m]))[30m:1m])")
    );
    assert_eq!(
        q.latency,
        format!("histogram_quantile(0.95, sum by (le) (rate({h}_bucket{f}[{guard}]))) / 1000")
    );
    assert_eq!(
        q.calm_latency,
        format!("min_over_time(histogram_quantile(0.95, sum by (le) (rate({h}_bucket{f}[1m])))[10m:1m]) / 1000")
    );
    // The long window's figure is `signal: concurrency`'s query, the guard's is
    // `signal: latency`'s.
    let c = &conventions["otel-spanmetrics"];
    let same = |m, secs| build("otel-spanmetrics", c, &s, m, Duration::from_secs(secs));
    assert_eq!(
        Ok(q.concurrency.clone()),
        same(TraceMeasure::Concurrency, WINDOW_S)
    );
    assert_eq!(
        Ok(q.latency.clone()),
        same(TraceMeasure::Latency(Quantile::P95), GUARD_WINDOW_S)
    );

    // Seconds already, fixed matchers kept (Istio's reporter), another quantile.
    let q = capacity(
        "istio",
        &conventions["istio"],
        &selector("checkout"),
        Quantile::parse("p99").unwrap(),
    )
    .unwrap();
    let f = r#"{destination_service_name="checkout", reporter="destination"}"#;
    let h = "istio_request_duration_milliseconds";
    assert_eq!(
        q.reference_latency,
        format!("min_over_time((sum(rate({h}_sum{f}[1m])) / sum(rate({h}_count{f}[1m])))[10m:1m]) / 1000")
    );
    assert!(
        q.latency.starts_with("histogram_quantile(0.99, "),
        "{}",
        q.latency
    );
    assert!(
        q.calm_latency
            .starts_with("min_over_time(histogram_quantile(0.99, "),
        "{}",
        q.calm_latency
    );
    let q = capacity(
        "prometheus-http",
        &conventions["prometheus-http"],
        &selector("checkout"),
        Quantile::P95,
    )
    .unwrap();
    assert_eq!(
        q.peak_concurrency,
        r#"max_over_time(sum(rate(http_request_duration_seconds_sum{job="checkout"}[1m]))[5m:1m])"#
    );

    // Native histograms: histogram_sum / histogram_count of the one series.
    let mut native = conventions["tempo-spanmetrics"].clone();
    native.native_histogram = true;
    native.histogram = "traces_spanmetrics_latency".into();
    let q = capacity("native", &native, &selector("s"), Quantile::P95).unwrap();
    let f = r#"{service="s", span_kind="SPAN_KIND_SERVER"}"#;
    let n = "traces_spanmetrics_latency";
    assert_eq!(
        q.concurrency,
        format!("histogram_sum(sum(rate({n}{f}[1m])))")
    );
    assert_eq!(q.rate, format!("histogram_count(sum(rate({n}{f}[1m])))"));
    assert_eq!(
        q.reference_latency,
        format!("min_over_time((histogram_sum(sum(rate({n}{f}[1m]))) / histogram_count(sum(rate({n}{f}[1m]))))[10m:1m])")
    );
    assert_eq!(
        q.peak_rate,
        format!("max_over_time(histogram_count(sum(rate({n}{f}[1m])))[5m:1m])")
    );
    assert_eq!(
        q.sustained_concurrency,
        format!("quantile_over_time(0.9, histogram_sum(sum(rate({n}{f}[1m])))[30m:1m])")
    );
    assert_eq!(
        q.latency,
        format!("histogram_quantile(0.95, sum(rate({n}{f}[{guard}])))")
    );
    assert_eq!(
        q.calm_latency,
        format!("min_over_time(histogram_quantile(0.95, sum(rate({n}{f}[1m])))[10m:1m])")
    );

    // The selector's limits are the other signals' (no span kind label, no version).
    let mut client = selector("s");
    client.span_kind = SpanKind::Client;
    assert!(matches!(
        capacity(
            "otel-http",
            &conventions["otel-http"],
            &client,
            Quantile::P95
        ),
        Err(QueryBuildError::NoSpanKind { .. })
    ));
    // Hostile values stay literals in every query.
    let hostile = r#"a"} or vector(1e9) #"#;
    let q = capacity(
        "tempo-spanmetrics",
        &conventions["tempo-spanmetrics"],
        &selector(hostile),
        Quantile::P95,
    )
    .unwrap();
    for text in q.all() {
        let (_, literals) =
            crate::signal::quote::tests::lex(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(
            literals
                .chunks(2)
                .all(|l| l == [hostile, "SPAN_KIND_SERVER"]),
            "{text}: {literals:?}"
        );
    }
}

#[test]
fn native_histograms_drop_le() {
    let mut c = builtin_conventions()["tempo-spanmetrics"].clone();
    c.native_histogram = true;
    c.histogram = "traces_spanmetrics_latency".into();
    let q = build(
        "native",
        &c,
        &selector("s"),
        TraceMeasure::Latency(Quantile::P95),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        q,
        r#"histogram_quantile(0.95, sum(rate(traces_spanmetrics_latency{service="s", span_kind="SPAN_KIND_SERVER"}[1m])))"#
    );
}

/// The spanmetrics connector's exponential histogram as the Collector's `prometheus`
/// exporter serves it: a native histogram named like the classic one without
/// `_bucket`, in milliseconds; the calls counter as with explicit buckets.
#[test]
fn otel_spanmetrics_native() {
    let c = &builtin_conventions()["otel-spanmetrics-native"];
    let q = |m| {
        build(
            "otel-spanmetrics-native",
            c,
            &selector("s"),
            m,
            Duration::from_secs(90),
        )
        .unwrap()
    };
    assert_eq!(
        q(TraceMeasure::Latency(Quantile::P95)),
        r#"histogram_quantile(0.95, sum(rate(traces_span_metrics_duration_milliseconds{service_name="s", span_kind="SPAN_KIND_SERVER"}[90s]))) / 1000"#
    );
    assert_eq!(
        q(TraceMeasure::Rate),
        r#"sum(rate(traces_span_metrics_calls_total{service_name="s", span_kind="SPAN_KIND_SERVER"}[90s]))"#
    );
}

#[test]
fn impossible_selectors() {
    let conventions = builtin_conventions();
    let mut s = selector("s");
    s.span_kind = SpanKind::Consumer;
    assert!(matches!(
        build(
            "otel-http",
            &conventions["otel-http"],
            &s,
            TraceMeasure::Rate,
            Duration::from_secs(60)
        ),
        Err(QueryBuildError::NoSpanKind { .. })
    ));
    let mut s = selector("s");
    s.version = Some("v2".into());
    assert!(matches!(
        build(
            "prometheus-http",
            &conventions["prometheus-http"],
            &s,
            TraceMeasure::Rate,
            Duration::from_secs(60)
        ),
        Err(QueryBuildError::NoVersion { .. })
    ));
}

/// The label `service.version` becomes in each built-in convention when the pipeline
/// keeps it (see [`OTEL_VERSION_LABEL`] for the upstream files): the Collector's
/// spanmetrics connector and Prometheus exporter, Tempo's metrics-generator and the
/// SDK's HTTP metrics all sanitise `service.version` to `service_version`; client
/// libraries' HTTP metrics have none.
#[test]
fn builtin_version_labels() {
    let conventions = builtin_conventions();
    let cases: &[(&str, Option<&str>)] = &[
        ("otel-spanmetrics", Some("service_version")),
        ("otel-spanmetrics-native", Some("service_version")),
        ("tempo-spanmetrics", Some("service_version")),
        ("otel-http", Some("service_version")),
        ("prometheus-http", None),
        // istio/proxy istio_stats.cc: the server pod's `version` label.
        ("istio", Some("destination_version")),
        // Neither linkerd2-proxy nor linkerd-viz's scrape configuration writes one.
        ("linkerd", None),
    ];
    assert_eq!(conventions.len(), cases.len());
    for (name, label) in cases {
        let c = &conventions[*name];
        assert_eq!(c.version_label.as_deref(), *label, "{name}");
        let mut s = selector("checkout");
        s.version = Some("v2".into());
        let q = build(name, c, &s, TraceMeasure::Rate, Duration::from_secs(60));
        match label {
            Some(l) => {
                let q = q.expect("a query");
                assert!(q.contains(&format!("{l}=\"v2\"")), "{name}: {q}");
            }
            None => assert!(
                matches!(q, Err(QueryBuildError::NoVersion { .. })),
                "{name}: {q:?}"
            ),
        }
    }
}

#[test]
fn builtins_are_valid_and_files_are_checked() {
    for (name, c) in builtin_conventions() {
        c.validate(&name).unwrap();
    }
    let bad: Convention = serde_json::from_str(
        r#"{"histogram":"x_bucket","calls":"x} or vector(1)","service_label":"job","error":{"label":"code","value":"5..","regex":true}}"#,
    )
    .unwrap();
    assert!(bad.validate("bad").is_err());
    let bad_regex: Convention = serde_json::from_str(
        r#"{"histogram":"x_bucket","calls":"x_total","service_label":"job","error":{"label":"code","value":"5(","regex":true}}"#,
    )
    .unwrap();
    assert!(matches!(
        bad_regex.validate("r"),
        Err(ConventionError::BadRegex { .. })
    ));
}

/// Fixed matchers from a conventions file are checked like every other name, and
/// their values enter queries only as literals.
#[test]
fn fixed_matchers_from_files() {
    let parse = |matchers: &str| -> Convention {
        serde_json::from_str(&format!(
            r#"{{"histogram":"x_bucket","calls":"x_total","service_label":"job","matchers":{matchers},"error":{{"label":"code","value":"5..","regex":true}}}}"#
        ))
        .unwrap()
    };
    let bad_label = parse(r#"[{"label":"a} or vector(1) #","value":"x"}]"#);
    assert!(matches!(
        bad_label.validate("f"),
        Err(ConventionError::BadName {
            field: "matchers.label",
            ..
        })
    ));
    let reserved = parse(r#"[{"label":"__name__","value":"x"}]"#);
    assert!(reserved.validate("f").is_err());
    let bad_regex = parse(r#"[{"label":"reporter","value":"(","regex":true}]"#);
    assert!(matches!(
        bad_regex.validate("f"),
        Err(ConventionError::BadRegex { .. })
    ));
    let unknown_field: Result<Convention, _> = serde_json::from_str(
        r#"{"histogram":"x_bucket","calls":"x_total","service_label":"job","matchers":[{"label":"a","value":"b","op":"!="}],"error":{"label":"code","value":"5.."}}"#,
    );
    assert!(unknown_field.is_err());

    let hostile = r#"x"} or vector(1e9) #"#;
    let c = parse(&format!(
        r#"[{{"label":"reporter","value":{}}},{{"label":"mesh","value":"a|b","regex":true}}]"#,
        serde_json::to_string(hostile).unwrap()
    ));
    c.validate("f").unwrap();
    let q = build(
        "f",
        &c,
        &selector("s"),
        TraceMeasure::Rate,
        Duration::from_secs(60),
    )
    .unwrap();
    let (skeleton, literals) = crate::signal::quote::tests::lex(&q).unwrap();
    assert_eq!(literals, vec!["s", hostile, "a|b"], "{q}");
    assert_eq!(
        skeleton,
        r#"sum(rate(x_total{job="…", reporter="…", mesh=~"…"}[1m]))"#
    );
}

/// The conventions files docs/prometheus-conventions.md and docs/mesh.md show parse and pass the checks,
/// and docs/mesh.md's Istio query is the one built for its trigger (default window 5m).
#[test]
fn documented_conventions_and_queries() {
    let docs = [
        (
            "docs/prometheus-conventions.md",
            include_str!("../../../docs/prometheus-conventions.md"),
        ),
        ("docs/mesh.md", include_str!("../../../docs/mesh.md")),
    ];
    for (doc, text) in docs {
        let mut files = 0;
        for block in text.split("```json\n").skip(1) {
            let json = block.split("```").next().unwrap_or_default();
            if !json.contains("\"histogram\"") {
                continue; // not a conventions file
            }
            let parsed: BTreeMap<String, Convention> =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{doc}: {e}: {json}"));
            for (name, c) in &parsed {
                c.validate(name).unwrap_or_else(|e| panic!("{doc}: {e}"));
            }
            files += 1;
        }
        assert!(files > 0, "{doc} shows a conventions file");
    }
    let mesh = docs[1].1;
    let shown = mesh
        .split("The query it sends:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/mesh.md shows the Istio query");
    let mut s = selector("payment-service");
    s.labels = vec![("destination_service_namespace".into(), "shop".into())];
    let built = build(
        "istio",
        &builtin_conventions()["istio"],
        &s,
        TraceMeasure::Latency(Quantile::P95),
        Duration::from_secs(300),
    )
    .unwrap();
    assert_eq!(shown, built);
}

/// docs/slo-capacity-prometheus.md shows the queries built for its example trigger (that
/// of deploy/examples/order-service-slo-capacity-prometheus.yaml), in the order the
/// figures are read.
#[test]
fn documented_capacity_queries() {
    let doc = include_str!("../../../docs/slo-capacity-prometheus.md");
    let shown = doc
        .split("The queries it sends:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the docs show the queries");
    let mut s = selector("order-service");
    s.span_kind = SpanKind::Server;
    let built = capacity(
        "otel-spanmetrics",
        &builtin_conventions()["otel-spanmetrics"],
        &s,
        Quantile::P95,
    )
    .unwrap();
    let built: Vec<&str> = built.all().iter().map(|q| q.as_str()).collect();
    assert_eq!(shown.lines().collect::<Vec<_>>(), built);
}

#[test]
fn names() {
    assert!(is_label_name("service_name"));
    assert!(!is_label_name("__name__"));
    assert!(!is_label_name("a-b"));
    assert!(!is_label_name("1a"));
    assert!(!is_label_name(""));
    assert!(is_metric_name("a:b_c"));
    assert!(!is_metric_name("a{b}"));
}
