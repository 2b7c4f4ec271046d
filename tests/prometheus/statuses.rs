//! What KEDA and `slo-scaler check` are told when there is no data, a bad query or a bad
//! trigger: clear statuses and states, never a silent 0 where 0 reads as "all is well".

use super::*;

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
