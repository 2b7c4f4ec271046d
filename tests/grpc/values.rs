//! The numbers KEDA gets and the metadata it sends: values it cannot use are errors naming
//! them, every state is visible in `/debug/signals` and `/metrics`, and metadata KEDA or the
//! HPA would misread is refused by name.

use super::*;

/// A raw-query trigger on the fixture's Prometheus.
fn raw(name: &str, query: &str, extra: &[(&str, &str)]) -> slo_scaler::proto::ScaledObjectRef {
    let mut md = vec![
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", query),
        ("threshold", "1"),
    ];
    md.extend_from_slice(extra);
    so(name, &md)
}

/// The `/debug/signals` row of one ScaledObject.
async fn debug_row(scaler: &Scaler, name: &str) -> serde_json::Value {
    let (_, body) = scaler.get("/debug/signals").await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    rows.into_iter()
        .find(|r| r["scaledObject"] == name)
        .unwrap_or_else(|| panic!("no row for {name} in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn values_keda_cannot_use_are_errors_and_every_state_is_visible() {
    let (exporter, mut prom, mut scaler) = gauge_fixture().await;
    // Prometheus answers these numbers itself; KEDA would turn each into a scale-in
    // (keda-external-scaler.md, "Names and numbers"), so each is an error naming it. KEDA
    // makes every value a milli-quantity with `int64(value * 1000)` (kedacore/keda
    // `pkg/scalers/scaler.go`, `GenerateMetricInMili`, called from `external_scaler.go`'s
    // `GetMetricsAndActivity`), which overflows above about 9.22e15: out of range too.
    for (name, query, shown) in [
        ("negative", "vector(-3)", "-3"),
        ("plus-inf", "vector(+Inf)", "inf"),
        ("minus-inf", "vector(-Inf)", "-inf"),
        ("huge", "vector(1e16)", "10000000000000000"),
        ("just-over", "vector(9.3e15)", "9300000000000000"),
    ] {
        let err = metric(&mut scaler.client, &raw(name, query, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{query}: {err:?}");
        assert!(err.message().contains(shown), "{query}: {err:?}");
        let row = debug_row(&scaler, name).await;
        assert_eq!(row["state"], "error", "{row}");
        assert!(row["error"].as_str().unwrap().contains(shown), "{row}");
    }
    // NaN and an empty answer are "no data": 0 under ignoreNullValues (KEDA's default),
    // an error otherwise, and visible as no_data either way.
    for (name, query) in [("nan", "vector(NaN)"), ("empty", "absent_metric_xyz")] {
        assert_eq!(
            metric(&mut scaler.client, &raw(name, query, &[]))
                .await
                .unwrap(),
            0.0,
            "{query}"
        );
        assert_eq!(debug_row(&scaler, name).await["state"], "no_data");
        let strict = format!("{name}-strict");
        let err = metric(
            &mut scaler.client,
            &raw(&strict, query, &[("ignoreNullValues", "false")]),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{query}: {err:?}");
        assert_eq!(debug_row(&scaler, &strict).await["state"], "no_data");
    }
    // The largest values whose milli-value fits are answered as they are.
    assert_eq!(
        metric(&mut scaler.client, &raw("fits", "vector(9e15)", &[]))
            .await
            .unwrap(),
        9e15
    );
    assert_states(
        &scaler,
        &[
            ("negative", "error"),
            ("huge", "error"),
            ("nan", "no_data"),
            ("empty-strict", "no_data"),
        ],
    )
    .await;
    // A real value is ok; once Prometheus is gone the last good value is served (stale).
    exporter.set_gauge("queue_backlog", 4.0);
    let good = raw("good", "max(queue_backlog)", &[("cacheTTL", "10ms")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&mut scaler.client, &good).await.unwrap() != 4.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = debug_row(&scaler, "good").await;
    assert_eq!(
        (row["state"].as_str(), row["value"].as_f64()),
        (Some("ok"), Some(4.0))
    );
    assert_eq!(row["signal"], "query");
    assert_eq!(row["source"], "prometheus");
    assert!(!row["history"].as_array().unwrap().is_empty(), "{row}");
    prom.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&mut scaler.client, &good).await.unwrap(), 4.0);
    assert_eq!(debug_row(&scaler, "good").await["state"], "stale");

    assert_states(&scaler, &[("good", "stale")]).await;
}

/// Metadata whose number KEDA or the HPA would misread is refused by name before any value
/// is read: a latency without a unit above a minute (likely milliseconds), a threshold whose
/// milli-value overflows KEDA's `int64(value * 1000)` (kedacore/keda `pkg/scalers/scaler.go`,
/// `GetMetricTargetMili`), and `ignoreNullValues: "true"` on a signal where 0 reads as
/// "all is well". `slo-scaler check`, the real binary, refuses the same and exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_keda_would_misread_is_refused_by_name() {
    let (_exporter, _prom, mut scaler) = gauge_fixture().await;
    let latency = |extra: (&'static str, &'static str)| {
        let mut md = vec![
            ("signal", "latency"),
            ("source", "prometheus"),
            ("service", "checkout"),
            ("threshold", "300ms"),
        ];
        md.retain(|(k, _)| *k != extra.0);
        md.push(extra);
        md
    };
    let query = |extra: (&'static str, &'static str)| {
        let mut md = vec![
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", "max(queue_backlog)"),
            ("threshold", "1"),
        ];
        md.retain(|(k, _)| *k != extra.0);
        md.push(extra);
        md
    };
    for (md, key, says) in [
        (latency(("threshold", "300")), "threshold", "write 300ms"),
        (
            latency(("activationThreshold", "250")),
            "activationThreshold",
            "write 250ms",
        ),
        (query(("threshold", "1e16")), "threshold", "int64"),
        (
            query(("activationThreshold", "1e19")),
            "activationThreshold",
            "int64",
        ),
        (
            latency(("ignoreNullValues", "true")),
            "ignoreNullValues",
            "all is well",
        ),
    ] {
        let err = scaler
            .client
            .get_metric_spec(so("misread", &md))
            .await
            .expect_err(&format!("{md:?}"));
        assert_eq!(err.code(), Code::InvalidArgument, "{md:?}: {err:?}");
        assert!(
            err.message().contains(key) && err.message().contains(says),
            "{md:?}: {err:?}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
        .args(["check", "-m", "signal=latency", "-m", "service=x"])
        .args(["-m", "threshold=300"])
        .output()
        .expect("run slo-scaler check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check accepted 300 s: {stderr}");
    assert!(
        stderr.contains("threshold") && stderr.contains("write 300ms"),
        "{stderr}"
    );
}

/// Every `slo_scaler_signal_state` series of each ScaledObject: 1 for `state`, 0 otherwise.
async fn assert_states(scaler: &Scaler, expect: &[(&str, &str)]) {
    let (_, text) = scaler.get("/metrics").await;
    for (name, state) in expect {
        let metric = debug_row(scaler, name).await["metric"].clone();
        for s in ["ok", "no_data", "stale", "error"] {
            let line = format!(
                "slo_scaler_signal_state{{namespace=\"shop\",scaled_object=\"{name}\",metric={metric},state=\"{s}\"}} {}",
                i32::from(s == *state)
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }
}
