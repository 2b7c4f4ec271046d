//! Table tests for metadata parsing: the keys every trigger has, names and sizes here; each
//! signal's trigger in `tests/signals.rs`, the source-specific keys in `tests/sources.rs`.

mod signals;
mod sources;

use std::collections::HashMap;

use super::*;
use crate::signal::Quantile;

fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn opts() -> ParseOptions {
    ParseOptions {
        default_source: SourceKind::Prometheus,
        ..ParseOptions::default()
    }
}

/// Parses `pairs` and expects exactly the problems on `keys` (in any order).
fn check_err(pairs: &[(&str, &str)], keys: &[&str]) {
    let err = parse(&md(pairs), &opts()).expect_err(&format!("{pairs:?} should fail"));
    let mut got = err.keys();
    got.sort();
    let mut want = keys.to_vec();
    want.sort();
    assert_eq!(got, want, "{pairs:?}: {err}");
    let text = err.to_string();
    for k in keys {
        assert!(text.contains(k), "message names {k}: {text}");
    }
}

fn check_ok(pairs: &[(&str, &str)]) -> Trigger {
    parse(&md(pairs), &opts()).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
}

const LAT: (&str, &str) = ("signal", "latency");
const SVC: (&str, &str) = ("service", "order-service");
const T300: (&str, &str) = ("threshold", "300ms");

#[test]
fn malformed_metadata_names_every_bad_key() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[], &["signal"]),
        (&[("signal", "latancy"), SVC, T300], &["signal"]),
        (&[LAT, SVC], &["threshold"]),
        (&[LAT, T300], &["service"]),
        (&[LAT, SVC, ("threshold", "fast")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "-1")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "0")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "0.0001")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "NaN")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "inf")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "1e400")], &["threshold"]),
        (&[LAT, SVC, ("threshold", "300 millis")], &["threshold"]),
        (
            &[("signal", "errorRate"), SVC, ("threshold", "3")],
            &["threshold"],
        ),
        (
            &[("signal", "errorRate"), SVC, ("threshold", "3%%")],
            &["threshold"],
        ),
        (
            &[LAT, SVC, T300, ("activationThreshold", "-5ms")],
            &["activationThreshold"],
        ),
        (&[LAT, SVC, T300, ("quantile", "95")], &["quantile"]),
        (&[LAT, SVC, T300, ("quantile", "p100")], &["quantile"]),
        (&[LAT, SVC, T300, ("spanKind", "serverside")], &["spanKind"]),
        (
            &[LAT, SVC, T300, ("window", "5 minutes please")],
            &["window"],
        ),
        (&[LAT, SVC, T300, ("window", "0s")], &["window"]),
        (&[LAT, SVC, T300, ("window", "-5m")], &["window"]),
        (&[LAT, SVC, T300, ("window", "30d")], &["window"]),
        (&[LAT, SVC, T300, ("source", "jaeger")], &["source"]),
        (&[LAT, SVC, T300, ("source", "sqs")], &["source"]),
        (
            &[LAT, SVC, T300, ("convention", "datadog")],
            &["convention"],
        ),
        (&[LAT, SVC, T300, ("labels", "route")], &["labels"]),
        (&[LAT, SVC, T300, ("labels", "a=1,a=2")], &["labels"]),
        (&[LAT, SVC, T300, ("labels", "=x")], &["labels"]),
        (&[LAT, SVC, T300, ("labels", "bad-name=x")], &["labels"]),
        // An empty value would select "no such label" in PromQL and "the empty string" in
        // TraceQL: refused rather than read two ways.
        (&[LAT, SVC, T300, ("labels", "env=")], &["labels"]),
        (&[LAT, SVC, T300, ("labels", "env= ,a=b")], &["labels"]),
        (
            &[LAT, SVC, T300, ("backend", "http://evil.example/")],
            &["backend"],
        ),
        (
            &[LAT, SVC, T300, ("ignoreNullValues", "maybe")],
            &["ignoreNullValues"],
        ),
        (&[LAT, SVC, T300, ("cacheTTL", "1h")], &["cacheTTL"]),
        (&[LAT, SVC, T300, ("cacheTTL", "10ms")], &["cacheTTL"]),
        (&[LAT, SVC, T300, ("cacheTTL", "soon")], &["cacheTTL"]),
        (
            &[LAT, SVC, T300, ("metricName", "Order_Latency")],
            &["metricName"],
        ),
        (&[LAT, SVC, T300, ("metricName", "9lives")], &["metricName"]),
        (&[LAT, SVC, T300, ("threshhold", "300ms")], &["threshhold"]),
        (
            &[LAT, SVC, T300, ("serverAddress", "x:6000")],
            &["serverAddress"],
        ),
        (&[LAT, SVC, T300, ("queueURL", "orders")], &["queueURL"]),
        (&[LAT, SVC, T300, ("query", "up")], &["query"]),
        (
            &[
                ("signal", "query"),
                ("source", "otlp"),
                ("threshold", "3"),
                ("query", "up"),
            ],
            &["source"],
        ),
        (
            &[
                ("signal", "query"),
                ("threshold", "3"),
                ("source", "prometheus"),
            ],
            &["query"],
        ),
        (
            &[
                ("signal", "query"),
                ("threshold", "3"),
                ("source", "otlp"),
                ("query", "up"),
            ],
            &["source"],
        ),
        (&[("signal", "queueDepth")], &["queueURL"]),
        (
            &[("signal", "queueDepth"), ("queueURL", "ftp://x/y")],
            &["queueURL"],
        ),
        (
            &[("signal", "queueDepth"), ("queueURL", "bad queue!")],
            &["queueURL"],
        ),
        (
            &[
                ("signal", "queueDepth"),
                ("queueURL", "q"),
                ("queueLength", "lots"),
            ],
            &["queueLength"],
        ),
        (
            &[
                ("signal", "queueDepth"),
                ("queueURL", "q"),
                ("awsRegion", "mars"),
            ],
            &["awsRegion"],
        ),
        (
            &[
                ("signal", "queueDepth"),
                ("queueURL", "q"),
                ("scaleOnInFlight", "yes"),
            ],
            &["scaleOnInFlight"],
        ),
        (
            &[
                ("signal", "queueDepth"),
                ("queueURL", "q"),
                ("awsEndpoint", "http://127.0.0.1:1/"),
            ],
            &["awsEndpoint"],
        ),
        (
            &[
                ("signal", "queueDepth"),
                ("queueURL", "q"),
                ("awsRoleArn", "arn:aws:iam::1:role/x"),
            ],
            &["awsRoleArn"],
        ),
        (
            &[
                ("signal", "queueDepth"),
                ("queueURL", "q"),
                ("service", "x"),
            ],
            &["service"],
        ),
        (
            &[LAT, SVC, T300, ("service", "x"), ("serviceFromEnv", "y")],
            &["service"],
        ),
        (
            &[
                ("signal", "rps"),
                SVC,
                ("threshold", "10"),
                ("source", "otlp"),
                ("labels", "a=b"),
            ],
            &["labels"],
        ),
        // Several problems at once, all reported.
        (
            &[
                ("signal", "latency"),
                ("threshold", "slow"),
                ("quantile", "high"),
                ("windw", "5m"),
            ],
            &["threshold", "quantile", "service", "windw"],
        ),
    ];
    assert!(cases.len() >= 25);
    for (pairs, keys) in cases {
        check_err(pairs, keys);
    }
}

#[test]
fn typos_get_suggestions() {
    let err = parse(&md(&[LAT, SVC, T300, ("quantil", "p99")]), &opts()).unwrap_err();
    assert!(err.to_string().contains("did you mean quantile?"), "{err}");
}

#[test]
fn thresholds_in_their_units() {
    let check = |kind: &str, raw: &str, expect: f64| {
        let t = check_ok(&[("signal", kind), SVC, ("threshold", raw)]);
        assert!(
            (t.target - expect).abs() < 1e-12,
            "{kind} {raw}: {}",
            t.target
        );
    };
    check("latency", "250ms", 0.25);
    check("latency", "0.25s", 0.25);
    check("latency", "0.25", 0.25);
    check("latency", "1500us", 0.0015);
    check("errorRate", "0.03", 0.03);
    check("errorRate", "3%", 0.03);
    check("errorRate", "0.5%", 0.005);
    check("rps", "100", 100.0);
    check("rps", "1e2", 100.0);
}

#[test]
fn raw_queries_get_stable_names() {
    let a = check_ok(&[
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "sum(up)"),
        ("threshold", "3"),
    ]);
    let b = check_ok(&[
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "sum(up)"),
        ("threshold", "4"),
    ]);
    assert_eq!(a.metric_name, b.metric_name);
    assert!(a.metric_name.starts_with("query-"));
    assert_eq!(
        a.read,
        Read::Prometheus {
            backend: "default".into(),
            tenant: None,
            spec: PromSpec::Raw("sum(up)".into())
        }
    );
}

#[test]
fn derived_names_are_kubernetes_safe() {
    let check = |service: &str, expect: &str| {
        let t = check_ok(&[("signal", "rps"), ("service", service), ("threshold", "10")]);
        assert_eq!(&*t.metric_name, expect);
        assert!(values::is_metric_name(&t.metric_name), "{}", t.metric_name);
    };
    check("order-service", "rps-order-service");
    check("Order_Service.v2", "rps-order-service-v2");
    check(r#"a"} or vector(1e9) #"#, "rps-a-or-vector-1e9");
    check(&"x".repeat(100), &format!("rps-{}", "x".repeat(59)));
    check("ünï", "rps-n");
}

#[test]
fn no_panic_on_arbitrary_input() {
    let nasty = [
        "", " ", "\0", "\u{202e}", "🚀", "=", ",", "\\", "%", "1e309", "-0", "p", "ms", "s",
    ];
    for k in known_keys() {
        for v in nasty {
            for signal in ["latency", "errorRate", "rps", "queueDepth", "query"] {
                let _ = parse(&md(&[("signal", signal), (k, v)]), &opts());
            }
        }
    }
}

/// Every key a (signal, source) does not use is refused by name, never silently ignored.
#[test]
fn keys_a_source_does_not_use_are_refused_by_name() {
    let rps = |source: &'static str| {
        [
            ("signal", "rps"),
            SVC,
            ("threshold", "10"),
            ("source", source),
        ]
    };
    let raw_prom = [
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "up"),
        ("threshold", "1"),
    ];
    let queue = [("signal", "queueDepth"), ("queueURL", "orders")];
    type Case<'a> = (Vec<(&'a str, &'a str)>, (&'a str, &'a str));
    let cases: Vec<Case> = vec![
        (rps("otlp").to_vec(), ("tenant", "team-a")),
        (rps("otlp").to_vec(), ("backend", "thanos")),
        (rps("otlp").to_vec(), ("convention", "tempo-spanmetrics")),
        (rps("otlp").to_vec(), ("cacheTTL", "5s")),
        (rps("otlp").to_vec(), ("labels", "a=b")),
        (rps("tempo").to_vec(), ("convention", "tempo-spanmetrics")),
        (rps("prometheus").to_vec(), ("quantile", "p99")),
        (rps("prometheus").to_vec(), ("query", "up")),
        (rps("prometheus").to_vec(), ("queueURL", "orders")),
        (raw_prom.to_vec(), ("window", "5m")),
        (raw_prom.to_vec(), ("service", "x")),
        (raw_prom.to_vec(), ("convention", "otel-http")),
        (queue.to_vec(), ("window", "5m")),
        (queue.to_vec(), ("ignoreNullValues", "false")),
        (queue.to_vec(), ("backend", "default")),
        (queue.to_vec(), ("tenant", "team-a")),
    ];
    for (mut pairs, extra) in cases {
        pairs.push(extra);
        let err = parse(&md(&pairs), &opts()).expect_err(&format!("{pairs:?}"));
        assert_eq!(err.keys(), vec![extra.0], "{pairs:?}: {err}");
        assert!(err.to_string().contains("not used by signal"), "{err}");
    }
}

/// An unknown signal does not hide the other problems.
#[test]
fn every_problem_is_reported_when_the_signal_is_unknown() {
    check_err(
        &[("signal", "nope"), ("threshold", "x")],
        &["signal", "threshold"],
    );
    check_err(
        &[
            ("signal", "nope"),
            ("window", "forever"),
            ("servce", "x"),
            ("quantile", "high"),
            ("cacheTTL", "1h"),
        ],
        &["signal", "window", "servce", "quantile", "cacheTTL"],
    );
    check_err(
        &[("threshold", "3%"), ("spanKind", "sideways")],
        &["signal", "spanKind"],
    );
    // A threshold some unit reads is not a problem while the unit is unknown.
    check_err(&[("signal", "nope"), ("threshold", "300ms")], &["signal"]);
}

#[test]
fn sizes_are_capped_before_anything_is_read() {
    let long = "a".repeat(MAX_VALUE_BYTES + 1);
    check_err(&[LAT, T300, ("service", &long)], &["service"]);
    let err = parse(&md(&[LAT, T300, ("service", &long)]), &opts()).unwrap_err();
    assert!(err.to_string().len() < 1000, "{err}");
    let query = format!("sum(up{{job=\"{}\"}})", "j".repeat(MAX_VALUE_BYTES));
    check_ok(&[
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", &query),
        ("threshold", "1"),
    ]);
    let huge = "u".repeat(MAX_QUERY_BYTES + 1);
    check_err(
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", &huge),
            ("threshold", "1"),
        ],
        &["query"],
    );
    let many: Vec<(String, String)> = (0..=MAX_KEYS)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let err = parse(&many.into_iter().collect(), &opts()).unwrap_err();
    assert_eq!(err.keys(), vec!["metadata"]);
}

#[test]
fn kubernetes_names() {
    for ok in ["shop", "a", "team-a", "a1", &"a".repeat(63)] {
        assert!(is_dns1123_label(ok), "{ok}");
    }
    for bad in [
        "",
        "Team-A",
        "team/a",
        "-a",
        "a-",
        "a.b",
        &"a".repeat(64),
        "é",
    ] {
        assert!(!is_dns1123_label(bad), "{bad}");
    }
    for ok in ["orders", "orders.v2", "a-b.c-d", &"a".repeat(253)] {
        assert!(is_dns1123_subdomain(ok), "{ok}");
    }
    for bad in ["", "team/a", "Orders", "a..b", ".a", "a.", &"a".repeat(254)] {
        assert!(!is_dns1123_subdomain(bad), "{bad}");
    }
}

/// A latency written without a unit is seconds; one above a minute is far more likely a
/// forgotten `ms` (dashboards show milliseconds) than a target, so it is refused with the fix.
#[test]
fn latencies_without_a_unit_above_a_minute_are_refused_with_the_fix() {
    const SLO: (&str, &str) = ("signal", "slo");
    // (pairs, the key refused, the fix its message names)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[LAT, SVC, ("threshold", "300")], "threshold", "300ms"),
        (&[LAT, SVC, ("threshold", " 250 ")], "threshold", "250ms"),
        (&[LAT, SVC, ("threshold", "60.5")], "threshold", "60.5ms"),
        (&[LAT, SVC, ("threshold", "1e3")], "threshold", "1e3ms"),
        (
            &[LAT, SVC, T300, ("activationThreshold", "120")],
            "activationThreshold",
            "120ms",
        ),
        (
            &[SLO, SVC, ("latencyObjective", "300")],
            "latencyObjective",
            "300ms",
        ),
    ];
    for (pairs, key, fix) in cases {
        let err = parse(&md(pairs), &opts()).expect_err(&format!("{pairs:?}"));
        assert_eq!(err.keys(), vec![*key], "{pairs:?}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("seconds") && text.contains(&format!("write {fix}")),
            "{pairs:?}: {text}"
        );
    }
    // The slo threshold is a ratio, not a latency: 61 there is 61 times the objective.
    let t = check_ok(&[SLO, SVC, ("latencyObjective", "300ms"), ("threshold", "61")]);
    assert_eq!(t.target, 61.0);
    // Up to a minute a bare number is seconds; with a unit any size is what it says.
    for (raw, want) in [
        ("60", 60.0),
        ("0.3", 0.3),
        ("300s", 300.0),
        ("300ms", 0.3),
        ("120000us", 0.12),
    ] {
        assert_eq!(
            check_ok(&[LAT, SVC, ("threshold", raw)]).target,
            want,
            "{raw}"
        );
    }
    let t = check_ok(&[SLO, SVC, ("latencyObjective", "90s")]);
    assert_eq!(t.objectives.and_then(|o| o.latency), Some(90.0));
    // Other signals' numbers have no unit to forget.
    assert_eq!(
        check_ok(&[("signal", "rps"), SVC, ("threshold", "300")]).target,
        300.0
    );
}

/// KEDA sends targets to Kubernetes as `int64(value × 1000)` milli-units
/// (kedacore/keda `pkg/scalers/scaler.go`, `GetMetricTargetMili`; the activation threshold
/// is compared with values that go through `GenerateMetricInMili`): a threshold whose
/// milli-value does not fit an int64 would overflow, so it is refused by name.
#[test]
fn thresholds_outside_kedas_integer_range_are_refused_by_name() {
    let rps = |extra: (&'static str, &'static str)| {
        vec![("signal", "rps"), SVC, ("threshold", "10"), extra]
    };
    let queue = |extra: (&'static str, &'static str)| {
        vec![("signal", "queueDepth"), ("queueURL", "orders"), extra]
    };
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (rps(("threshold", "1e16")), "threshold"),
        (rps(("threshold", "9223372036854776")), "threshold"),
        (rps(("activationThreshold", "1e300")), "activationThreshold"),
        (
            queue(("queueLength", "10000000000000000000")),
            "queueLength",
        ),
        (
            queue(("activationQueueLength", "18446744073709551615")),
            "activationQueueLength",
        ),
        (vec![LAT, SVC, ("threshold", "1e16s")], "threshold"),
    ];
    for (pairs, key) in cases {
        // The later `threshold` replaces the first in the map.
        let err = parse(&md(&pairs), &opts()).expect_err(&format!("{pairs:?}"));
        assert_eq!(err.keys(), vec![key], "{pairs:?}: {err}");
        assert!(err.to_string().contains("int64"), "{err}");
    }
    // The largest that fits is accepted.
    let t = check_ok(&rps(("threshold", "9e15")));
    assert_eq!(t.target, 9e15);
}
