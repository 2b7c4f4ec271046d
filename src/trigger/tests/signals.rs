//! Each signal's trigger: latency, slo, concurrency and sloCapacity read as meant, and
//! which signals may read no data as 0.

use super::*;

#[test]
fn latency_trigger() {
    let t = check_ok(&[
        LAT,
        SVC,
        ("threshold", "0.3s"),
        ("activationThreshold", "50ms"),
        ("quantile", "p99"),
        ("scalerAddress", "slo-scaler.keda:6000"),
        ("enableTLS", "false"),
        ("unsafeSsl", "false"),
        ("labels", r"span_name=GET /a\,b,http_route=/x\=y"),
    ]);
    assert_eq!(t.kind, SignalKind::Latency);
    assert_eq!(t.source(), SourceKind::Prometheus);
    assert_eq!(t.target, 0.3);
    assert_eq!(t.activation, 0.05);
    assert_eq!(&*t.metric_name, "latency-p99-order-service");
    assert!(!t.ignore_null_values, "no data is an error for a latency");
    let Read::Prometheus {
        backend,
        spec: PromSpec::Trace { trace, convention },
        ..
    } = &t.read
    else {
        panic!("{t:?}")
    };
    assert_eq!(trace.window, Duration::from_secs(300));
    assert_eq!(backend, "default");
    assert_eq!(convention, "otel-spanmetrics");
    let (selector, measure) = (&trace.selector, &trace.measure);
    assert_eq!(
        *measure,
        TraceMeasure::Latency(Quantile::parse("0.99").unwrap())
    );
    assert_eq!(
        selector.labels,
        vec![
            ("http_route".to_string(), "/x=y".to_string()),
            ("span_name".to_string(), "GET /a,b".to_string())
        ]
    );
}

/// Spaces around a label's value are the list's layout, not the value: `env = prod` selects
/// `env="prod"`. Kept, `" prod"` matched no series, and an `rps` trigger (no data is 0)
/// read 0 for a loaded service.
#[test]
fn label_values_are_trimmed_as_their_names() {
    for raw in [
        "env = prod , region=eu",
        "env=prod,region= eu ",
        " env =prod,region=eu",
    ] {
        assert_eq!(
            crate::trigger::parse_labels(raw),
            Ok(vec![
                ("env".to_string(), "prod".to_string()),
                ("region".to_string(), "eu".to_string())
            ]),
            "{raw:?}"
        );
    }
    // Inner spaces, and escaped characters, are the value's.
    assert_eq!(
        crate::trigger::parse_labels(r"span_name= GET /a\,b "),
        Ok(vec![("span_name".to_string(), "GET /a,b".to_string())])
    );
}

#[test]
fn slo_triggers() {
    const SLO: (&str, &str) = ("signal", "slo");
    let t = check_ok(&[
        SLO,
        SVC,
        ("latencyObjective", "300ms"),
        ("errorRateObjective", "2%"),
    ]);
    assert_eq!(t.kind, SignalKind::Slo);
    assert_eq!(t.target, 1.0, "threshold defaults to 1 (at objective)");
    assert_eq!(
        t.objectives,
        Some(Objectives {
            latency: Some(0.3),
            error_rate: Some(0.02),
        })
    );
    assert_eq!(t.kind.metric_type(), crate::signal::MetricType::Value);
    assert_eq!(&*t.metric_name, "slo-order-service");
    let Read::Prometheus {
        spec: PromSpec::Trace { trace, .. },
        ..
    } = &t.read
    else {
        panic!("{:?}", t.read);
    };
    assert_eq!(trace.measure, TraceMeasure::Latency(Quantile::P95));
    let t = check_ok(&[
        SLO,
        SVC,
        ("errorRateObjective", "0.05"),
        ("quantile", "p99"),
        ("threshold", "0.8"),
    ]);
    assert_eq!(t.target, 0.8);
    assert_eq!(
        t.objectives,
        Some(Objectives {
            latency: None,
            error_rate: Some(0.05),
        })
    );
    // Other signals have no objectives.
    assert_eq!(check_ok(&[LAT, SVC, T300]).objectives, None);

    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (&[SLO, SVC], &["latencyObjective"]),
        (
            &[SLO, SVC, ("latencyObjective", "fast")],
            &["latencyObjective"],
        ),
        (
            &[SLO, SVC, ("latencyObjective", "0ms")],
            &["latencyObjective"],
        ),
        (
            &[SLO, SVC, ("errorRateObjective", "3")],
            &["errorRateObjective"],
        ),
        (
            &[SLO, SVC, ("errorRateObjective", "-1%")],
            &["errorRateObjective"],
        ),
        (&[SLO, ("errorRateObjective", "1%")], &["service"]),
        (
            &[SLO, SVC, ("errorRateObjective", "1%"), ("source", "sqs")],
            &["source"],
        ),
        // slo's unused keys are refused by name.
        (
            &[SLO, SVC, ("errorRateObjective", "1%"), ("query", "up")],
            &["query"],
        ),
        (
            &[SLO, SVC, ("errorRateObjective", "1%"), ("queueURL", "q")],
            &["queueURL"],
        ),
        // The objectives are refused elsewhere.
        (
            &[LAT, SVC, T300, ("latencyObjective", "300ms")],
            &["latencyObjective"],
        ),
        (
            &[
                ("signal", "errorRate"),
                SVC,
                ("threshold", "1%"),
                ("errorRateObjective", "1%"),
            ],
            &["errorRateObjective"],
        ),
        (
            &[LAT, SVC, T300, ("latencyObjectiv", "1s")],
            &["latencyObjectiv"],
        ),
    ];
    for (pairs, keys) in cases {
        check_err(pairs, keys);
    }
}

#[test]
fn concurrency_and_slo_capacity_triggers() {
    const CONC: (&str, &str) = ("signal", "concurrency");
    let t = check_ok(&[CONC, SVC, ("threshold", "3")]);
    assert_eq!(
        t.kind.metric_type(),
        crate::signal::MetricType::AverageValue
    );
    assert_eq!(&*t.metric_name, "concurrency-order-service");
    assert!(
        t.ignore_null_values,
        "0 in flight is a reading, as 0 rps is"
    );
    let Read::Prometheus {
        spec: PromSpec::Trace { trace, .. },
        ..
    } = &t.read
    else {
        panic!("{:?}", t.read);
    };
    assert_eq!(trace.measure, TraceMeasure::Concurrency);
    check_ok(&[CONC, SVC, ("threshold", "3"), ("source", "otlp")]);
    let tempo = [CONC, SVC, ("threshold", "3"), ("source", "tempo")];
    check_err(&tempo, &["source"]);
    let why = parse(&md(&tempo), &opts()).unwrap_err().to_string();
    assert!(
        why.contains("query_end_cutoff"),
        "the refusal says why: {why}"
    );

    const CAP: (&str, &str) = ("signal", "sloCapacity");
    const OTLP: (&str, &str) = ("source", "otlp");
    let t = check_ok(&[
        CAP,
        SVC,
        OTLP,
        ("latencyObjective", "300ms"),
        ("podConcurrency", "4"),
    ]);
    assert_eq!(
        t.target, 1.0,
        "threshold defaults to 1 (a pod per pod needed)"
    );
    assert!(!t.ignore_null_values, "no spans is never a fleet size");
    assert_eq!(
        t.kind.metric_type(),
        crate::signal::MetricType::AverageValue
    );
    assert_eq!(&*t.metric_name, "slo-capacity-order-service");
    let Read::Otlp(read) = &t.read else {
        panic!("{:?}", t.read);
    };
    assert_eq!(
        read.measure,
        TraceMeasure::Capacity(crate::signal::CapacityTarget {
            pod_concurrency: 4.0,
            objective: Duration::from_millis(300),
            quantile: Quantile::P95,
        })
    );
    // Both settings are required, each named; the windows are the policy's own; the
    // embedded store and Prometheus serve it, Tempo does not.
    check_err(&[CAP, SVC, OTLP], &["latencyObjective", "podConcurrency"]);
    check_err(
        &[
            CAP,
            SVC,
            OTLP,
            ("latencyObjective", "soon"),
            ("podConcurrency", "-4"),
        ],
        &["latencyObjective", "podConcurrency"],
    );
    // An objective no span reaches (past a day) or below a microsecond is refused by name,
    // not turned into a Duration (past 1.8e19 s that panicked on every call).
    for objective in ["1e20s", "1e23ms", "2e19", "86401s", "1e-10s", "0.0000001"] {
        check_err(
            &[
                CAP,
                SVC,
                OTLP,
                ("latencyObjective", objective),
                ("podConcurrency", "4"),
            ],
            &["latencyObjective"],
        );
        check_err(
            &[
                ("signal", "slo"),
                SVC,
                OTLP,
                ("latencyObjective", objective),
            ],
            &["latencyObjective"],
        );
    }
    let good = [
        CAP,
        SVC,
        ("latencyObjective", "300ms"),
        ("podConcurrency", "4"),
    ];
    let t = check_ok(&good);
    let Read::Prometheus {
        spec: crate::trigger::PromSpec::Trace { trace, .. },
        ..
    } = &t.read
    else {
        panic!("{:?}", t.read);
    };
    assert!(matches!(trace.measure, TraceMeasure::Capacity(_)));
    let mut tempo = good.to_vec();
    tempo.push(("source", "tempo"));
    check_err(&tempo, &["source"]);
    let mut windowed = good.to_vec();
    windowed.extend([OTLP, ("window", "2m")]);
    check_err(&windowed, &["window"]);
    let mut objective_on_rps = vec![("signal", "rps"), SVC, ("threshold", "5")];
    objective_on_rps.push(("podConcurrency", "4"));
    check_err(&objective_on_rps, &["podConcurrency"]);
}

/// Where 0 means "all is well" (latency, error rate, slo, sloCapacity), no data is never 0:
/// a typo in `service` or an empty pipeline must not read as the best value there is and
/// scale the workload in. Where 0 is a real reading (rps, concurrency, queueDepth, raw
/// queries), KEDA's default stands.
#[test]
fn no_data_is_zero_only_where_zero_is_a_real_reading() {
    const SLO: (&str, &str) = ("signal", "slo");
    let trace = |signal: &'static str| -> Vec<(&'static str, &'static str)> {
        match signal {
            "slo" => vec![SLO, SVC, ("latencyObjective", "300ms")],
            "latency" => vec![LAT, SVC, T300],
            "errorRate" => vec![("signal", "errorRate"), SVC, ("threshold", "3%")],
            _ => vec![("signal", signal), SVC, ("threshold", "10")],
        }
    };
    let raw = vec![
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "up"),
        ("threshold", "1"),
    ];
    // (metadata, no data is 0 by default)
    let cases: Vec<(Vec<(&str, &str)>, bool)> = vec![
        (trace("latency"), false),
        (trace("errorRate"), false),
        (trace("slo"), false),
        (
            vec![
                ("signal", "sloCapacity"),
                SVC,
                ("latencyObjective", "300ms"),
                ("podConcurrency", "4"),
            ],
            false,
        ),
        (trace("rps"), true),
        (trace("concurrency"), true),
        (raw.clone(), true),
        (vec![("signal", "queueDepth"), ("queueURL", "orders")], true),
    ];
    for (pairs, zero) in &cases {
        let t = check_ok(pairs);
        assert_eq!(t.ignore_null_values, *zero, "{pairs:?}");
        assert_eq!(t.kind.no_data_is_zero(), *zero, "{pairs:?}");
    }
    // Asking for an error is always allowed; asking for 0 where 0 means "all is well" is
    // refused by name, saying why, so that no spelling can scale in on no data.
    for (mut pairs, zero) in cases.into_iter().filter(|(p, _)| p[0].1 != "queueDepth") {
        pairs.push(("ignoreNullValues", "false"));
        assert!(!check_ok(&pairs).ignore_null_values, "{pairs:?}");
        pairs.pop();
        pairs.push(("ignoreNullValues", "true"));
        if zero {
            assert!(check_ok(&pairs).ignore_null_values, "{pairs:?}");
        } else {
            let err = parse(&md(&pairs), &opts()).expect_err(&format!("{pairs:?}"));
            assert_eq!(err.keys(), vec!["ignoreNullValues"], "{pairs:?}: {err}");
            assert!(
                err.to_string().contains("all is well") && err.to_string().contains("fallback"),
                "{err}"
            );
        }
    }
}

/// `source` defaults to the server's `--default-source` for `signal: query` too, when that
/// source takes a raw query (Prometheus or Tempo); with the embedded store as the default
/// it is required, saying why.
#[test]
fn a_raw_query_takes_the_default_source_that_can_run_it() {
    let raw = md(&[("signal", "query"), ("query", "up"), ("threshold", "1")]);
    for (default, want) in [
        (SourceKind::Prometheus, Some(SourceKind::Prometheus)),
        (SourceKind::Tempo, Some(SourceKind::Tempo)),
        (SourceKind::Otlp, None),
    ] {
        let opts = ParseOptions {
            default_source: default,
            ..ParseOptions::default()
        };
        match (parse(&raw, &opts), want) {
            (Ok(t), Some(want)) => assert_eq!(t.read.source(), want, "{default:?}"),
            (Err(e), None) => {
                assert_eq!(e.keys(), ["source"], "{e}");
                assert!(e.to_string().contains("default source is otlp"), "{e}");
            }
            (got, want) => panic!("default {default:?}: {got:?}, want {want:?}"),
        }
    }
}
