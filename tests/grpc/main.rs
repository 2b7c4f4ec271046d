//! KEDA's protocol semantics through a real tonic client: specs, names, statuses,
//! StreamIsActive / StreamMetricSpec, health, per-ScaledObject metrics, shutdown.
//! Values come from a real Prometheus scraping a gauge the test sets.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::prometheus::PrometheusServer;
use common::scaler::{metric, so, Scaler};
use slo_scaler::proto::GetMetricsRequest;
use tokio_stream::StreamExt;
use tonic::Code;

/// The next pushed IsActive value, or `None` if nothing comes within `wait` seconds.
async fn next_active(
    s: &mut tonic::Streaming<slo_scaler::proto::IsActiveResponse>,
    wait: u64,
) -> Option<bool> {
    tokio::time::timeout(Duration::from_secs(wait), s.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.unwrap().result)
}

async fn gauge_fixture() -> (Exporter, PrometheusServer, Scaler) {
    let (exporter, prom) = PrometheusServer::scraping_gauge("queue_backlog", 0.0).await;
    let url = format!("default={}", prom.url());
    let scaler = Scaler::start(&[
        "--prometheus",
        &url,
        "--cache-ttl",
        "100ms",
        "--min-cache-ttl",
        "10ms",
        "--stream-interval",
        "200ms",
        "--signal-expiry",
        "2s",
    ])
    .await;
    (exporter, prom, scaler)
}

fn backlog_trigger() -> slo_scaler::proto::ScaledObjectRef {
    so(
        "workers",
        &[
            ("scalerAddress", "slo-scaler.keda:6000"),
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", "max(queue_backlog)"),
            ("threshold", "2.5"),
            ("activationThreshold", "1"),
            ("metricName", "backlog"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn specs_values_names_and_statuses_follow_keda() {
    let (exporter, prom, mut scaler) = gauge_fixture().await;
    let r = backlog_trigger();
    let spec = scaler
        .client
        .get_metric_spec(r.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let s = &spec.metric_specs[0];
    assert_eq!(s.metric_name, "backlog");
    assert_eq!(s.target_size_float, 2.5);
    #[allow(deprecated)]
    let target_size = s.target_size;
    assert_eq!(target_size, 3);

    exporter.set_gauge("queue_backlog", 7.4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&mut scaler.client, &r).await.unwrap() != 7.4 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = scaler
        .client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(r.clone()),
            metric_name: "backlog".into(),
        })
        .await
        .unwrap()
        .into_inner();
    #[allow(deprecated)]
    let int_value = resp.metric_values[0].metric_value;
    assert_eq!(
        (resp.metric_values[0].metric_value_float, int_value),
        (7.4, 7)
    );
    assert!(
        scaler
            .client
            .is_active(r.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // An unknown metric name is NotFound.
    let err = scaler
        .client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(r.clone()),
            metric_name: "something-else".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Malformed metadata is InvalidArgument naming every bad key, on every RPC.
    let bad = so(
        "broken",
        &[
            ("signal", "latency"),
            ("threshold", "fast"),
            ("servce", "x"),
        ],
    );
    for status in [
        scaler
            .client
            .get_metric_spec(bad.clone())
            .await
            .unwrap_err(),
        scaler.client.is_active(bad.clone()).await.unwrap_err(),
        scaler
            .client
            .stream_is_active(bad.clone())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument);
        for key in ["threshold", "service", "servce"] {
            assert!(status.message().contains(key), "{status:?}");
        }
    }
    // The scaler's own metrics show the ScaledObject, then forget it once KEDA stops asking.
    let (_, text) = scaler.get("/metrics").await;
    let labels = r#"{namespace="shop",scaled_object="workers",metric="backlog"}"#;
    for line in [
        format!("slo_scaler_signal_value{labels} 7.4"),
        format!("slo_scaler_signal_threshold{labels} 2.5"),
        format!("slo_scaler_signal_activation_threshold{labels} 1.0"),
        format!("slo_scaler_signal_active{labels} 1"),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(
        text.contains(r#"slo_scaler_grpc_requests_total{method="GetMetrics",code="not_found"} 1"#)
    );
    // Labels name the ScaledObject and its metric, never the query it runs.
    assert!(!text.contains("queue_backlog"), "query text in\n{text}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, text) = scaler.get("/metrics").await;
    assert!(!text.contains("scaled_object=\"workers\""), "{text}");
    drop(prom);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_is_active_pushes_state_then_only_rising_edges() {
    let (exporter, _prom, scaler) = gauge_fixture().await;
    let mut stream = scaler
        .client
        .clone()
        .stream_is_active(backlog_trigger())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_active(&mut stream, 5).await,
        Some(false),
        "current state at open"
    );
    exporter.set_gauge("queue_backlog", 5.0);
    assert_eq!(
        next_active(&mut stream, 10).await,
        Some(true),
        "inactive → active pushed"
    );
    // Staying active sends nothing more; going inactive sends nothing either.
    assert_eq!(next_active(&mut stream, 2).await, None);
    exporter.set_gauge("queue_backlog", 0.0);
    assert_eq!(next_active(&mut stream, 3).await, None);
    exporter.set_gauge("queue_backlog", 9.0);
    assert_eq!(
        next_active(&mut stream, 10).await,
        Some(true),
        "the next rising edge"
    );
}

/// Open streams are bounded as the board is: at most `--max-signals` of them, both kinds
/// together; one more is `ResourceExhausted` naming the flag, and a stream the client
/// closes frees its place. (A `source: otlp` trigger needs no backend.)
#[tokio::test(flavor = "multi_thread")]
async fn open_streams_are_bounded_by_max_signals() {
    let scaler = Scaler::start(&["--default-source", "otlp", "--max-signals", "2"]).await;
    let trigger = so(
        "orders",
        &[
            ("signal", "latency"),
            ("service", "order-service"),
            ("threshold", "300ms"),
        ],
    );
    let mut client = scaler.client.clone();
    let specs = client
        .stream_metric_spec(trigger.clone())
        .await
        .expect("the first stream opens")
        .into_inner();
    let active = client
        .stream_is_active(trigger.clone())
        .await
        .expect("the second stream opens")
        .into_inner();
    for refused in [
        client.stream_is_active(trigger.clone()).await.err(),
        client.stream_metric_spec(trigger.clone()).await.err(),
    ] {
        let status = refused.expect("a third stream is refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("--max-signals"), "{status:?}");
    }
    // Plain calls are not streams: still answered.
    client
        .get_metric_spec(trigger.clone())
        .await
        .expect("GetMetricSpec beside full streams");
    drop(specs);
    let deadline = Instant::now() + Duration::from_secs(5);
    let reopened = loop {
        match client.stream_metric_spec(trigger.clone()).await {
            Ok(s) => break s.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "a closed stream's place was not freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop((active, reopened));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_metric_spec_sends_current_specs_and_stays_open_until_shutdown() {
    let (_exporter, _prom, mut scaler) = gauge_fixture().await;
    let mut specs = scaler
        .client
        .stream_metric_spec(backlog_trigger())
        .await
        .unwrap()
        .into_inner();
    let first = specs.next().await.unwrap().unwrap();
    assert_eq!(first.metric_specs[0].metric_name, "backlog");
    assert_eq!(first.metric_specs[0].target_size_float, 2.5);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), specs.next())
            .await
            .is_err(),
        "the stream stays open"
    );
    let mut active = scaler
        .client
        .stream_is_active(backlog_trigger())
        .await
        .unwrap()
        .into_inner();
    assert!(active.next().await.is_some());
    // Health is served next to the scaler.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!(
            "http://{}",
            scaler.server.as_ref().unwrap().grpc_addr
        ))
        .unwrap()
        .connect()
        .await
        .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "externalscaler.ExternalScaler".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // SIGTERM's path: open streams end cleanly, well within the grace period.
    let started = Instant::now();
    scaler.server.take().unwrap().shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let end = tokio::time::timeout(Duration::from_secs(2), specs.next())
        .await
        .unwrap();
    assert!(
        end.is_none() || end.unwrap().is_err(),
        "the spec stream ended"
    );
    let end = tokio::time::timeout(Duration::from_secs(2), active.next())
        .await
        .unwrap();
    assert!(end.is_none() || end.unwrap().is_err());
}

/// The Helm chart runs several replicas without the receiver unless every replica receives
/// every span: a `source: otlp` trigger is refused saying the receiver is off and how to
/// turn it on.
#[tokio::test(flavor = "multi_thread")]
async fn source_otlp_without_the_receiver_is_a_metadata_error_at_spec_time() {
    let mut scaler =
        Scaler::start(&["--no-otlp", "--prometheus", "default=http://127.0.0.1:9"]).await;
    let r = so(
        "orders",
        &[
            ("signal", "rps"),
            ("source", "otlp"),
            ("service", "order-service"),
            ("threshold", "10"),
        ],
    );
    let status = scaler.client.get_metric_spec(r).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains(
            "source: source otlp needs the embedded OTLP receiver, which is off on this install"
        ),
        "{status:?}"
    );
    // What to do about it, as the chart's notes say (issue 23 item 6).
    assert!(
        status.message().contains("otlp.fanOut=true")
            && status.message().contains("replicaCount=1"),
        "{status:?}"
    );
}

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

#[tokio::test(flavor = "multi_thread")]
async fn callers_that_are_not_kubernetes_objects_are_refused() {
    let (_exporter, _prom, mut scaler) = gauge_fixture().await;
    let good = backlog_trigger();
    for (namespace, name, key) in [
        ("shop", "Team-A", "name"),
        ("shop", "team/a", "name"),
        ("shop", &*"a".repeat(300), "name"),
        ("Team-A", "orders", "namespace"),
        (&*"n".repeat(64), "orders", "namespace"),
        ("", "orders", "namespace"),
    ] {
        let mut r = good.clone();
        r.namespace = namespace.to_string();
        r.name = name.to_string();
        let err = scaler.client.get_metric_spec(r).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{namespace}/{name}");
        assert!(err.message().contains(key), "{err:?}");
        assert!(err.message().len() < 400, "long names are not echoed whole");
    }
    let (_, body) = scaler.get("/debug/signals").await;
    assert_eq!(body, "[]", "nothing was kept for refused callers");
}

/// Per-namespace allowances of backends, raw queries and AWS roles (with the operator's
/// acknowledgement that namespaces are not authenticated here; see tests/tls for mTLS).
#[tokio::test(flavor = "multi_thread")]
async fn namespace_allowances_hold() {
    let (_exporter, prom) = PrometheusServer::scraping_gauge("queue_backlog", 3.0).await;
    let url = format!("default={}", prom.url());
    let mut scaler = Scaler::start(&[
        "--prometheus",
        &url,
        "--backend-allow",
        "shop=default",
        "--backend-allow",
        "ops=default",
        "--raw-query-allow",
        "ops=default",
        "--aws-role-allow",
        "shop=arn:aws:iam::123456789012:role/reader",
        "--allow-unauthenticated-namespace-policy",
    ])
    .await;
    let in_ns = |namespace: &str, md: &[(&str, &str)]| {
        let mut r = so("x", md);
        r.namespace = namespace.to_string();
        r
    };
    let raw = [
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", "max(queue_backlog)"),
        ("threshold", "1"),
    ];
    let rps = [
        ("signal", "rps"),
        ("source", "prometheus"),
        ("service", "order-service"),
        ("threshold", "1"),
    ];
    let role = |arn: &'static str| {
        [
            ("signal", "queueDepth"),
            ("queueURL", "orders"),
            ("awsRoleArn", arn),
        ]
    };
    let reader = "arn:aws:iam::123456789012:role/reader";
    let admin = "arn:aws:iam::123456789012:role/admin";
    assert_eq!(
        metric(&mut scaler.client, &in_ns("ops", &raw))
            .await
            .unwrap(),
        3.0
    );
    let spec = |r| {
        let mut c = scaler.client.clone();
        async move { c.get_metric_spec(r).await.map(|_| ()) }
    };
    assert!(spec(in_ns("shop", &rps)).await.is_ok());
    assert!(spec(in_ns("shop", &role(reader))).await.is_ok());
    for (r, what) in [
        (in_ns("shop", &raw), "raw queries"),
        (in_ns("billing", &rps), "prometheus backend"),
        (in_ns("billing", &role(reader)), "AWS role"),
        (in_ns("shop", &role(admin)), "AWS role"),
    ] {
        let err = spec(r).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains(what), "{err:?}");
    }
}

/// A thread's nice value, from `/proc/self/task/TID/stat` (field 19; the name before it is
/// in parentheses and may hold spaces).
fn nice_of(stat: &str) -> i32 {
    let after_name = &stat[stat.rfind(')').expect("stat has the name in parentheses") + 2..];
    // After the name: state is field 3, so nice (19) is the 17th from here.
    after_name.split(' ').nth(16).unwrap().parse().unwrap()
}

/// The OTLP receiver threads run at a lower priority than the threads that answer KEDA, so
/// a span flood waits for a core before a KEDA call does (BENCHMARKS.md, keda_load (b)).
#[tokio::test(flavor = "multi_thread")]
async fn otlp_receiver_threads_yield_to_keda_calls() {
    let scaler = Scaler::start(&[]).await;
    let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    let mut receivers = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() == "otlp-receiver" {
            receivers.push(nice_of(&stat));
        }
    }
    assert!(!receivers.is_empty(), "no otlp-receiver thread");
    let expected = (own + slo_scaler::server::OTLP_NICENESS).min(19);
    assert!(
        expected > own,
        "this test runs at nice {own}: nothing to lower"
    );
    assert!(
        receivers.iter().all(|&n| n == expected),
        "otlp-receiver threads at {receivers:?}, this thread at {own}"
    );
    drop(scaler);
}

/// The server's per-call buffers start at 1 KiB (`proto::codec`); a request many times that
/// size is read whole: GetMetricSpec plans it, and the refusal names the bad key it carries.
#[tokio::test(flavor = "multi_thread")]
async fn requests_larger_than_the_first_buffer_are_read_whole() {
    let mut scaler = Scaler::start(&[]).await;
    let big = "v".repeat(16 * 1024);
    let metadata = [
        ("signal", "rps"),
        ("source", "otlp"),
        ("service", "order-service"),
        ("threshold", "10"),
    ];
    let mut with_big = metadata.to_vec();
    with_big.push(("zz-unknown-key", &big));
    let err = scaler
        .client
        .get_metric_spec(so("big", &with_big))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("zz-unknown-key"), "{err:?}");
    // Values stop at 1,024 bytes, names at 253.
    let service = "s".repeat(1000);
    let mut long = so(
        "big",
        &[
            ("signal", "rps"),
            ("service", &service),
            ("threshold", "10"),
        ],
    );
    long.name = "x".repeat(250);
    assert!(prost::Message::encoded_len(&long) > 1024 + 256);
    let spec = scaler
        .client
        .get_metric_spec(long)
        .await
        .expect("a valid request of over 1.25 KiB plans")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
}
