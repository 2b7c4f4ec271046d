//! KEDA's protocol semantics through a real tonic client: specs, names, statuses,
//! StreamIsActive / StreamMetricSpec, health, per-ScaledObject metrics, shutdown.
//! Values come from a real Prometheus scraping a gauge the test sets. The streams are in
//! `streams.rs`, the values and metadata KEDA cannot use in `values.rs`.

#[path = "../common/mod.rs"]
mod common;
mod streams;
mod values;

use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::prometheus::PrometheusServer;
use common::scaler::{metric, so, Scaler};
use slo_scaler::proto::GetMetricsRequest;
use tonic::Code;

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

/// Every problem of a trigger comes back at once, those found against the server's own
/// backends (an unknown `backend`) beside those in the metadata itself.
#[tokio::test(flavor = "multi_thread")]
async fn problems_found_against_the_servers_backends_come_with_the_others() {
    let mut scaler = Scaler::start(&[
        "--prometheus",
        "default=http://127.0.0.1:9",
        "--tempo",
        "default=http://127.0.0.1:9",
    ])
    .await;
    let svc = ("service", "order-service");
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[
                ("signal", "rps"),
                ("source", "prometheus"),
                ("backend", "nope"),
                ("tenant", "team a"),
                svc,
                ("threshold", "5"),
            ],
            &["backend", "tenant"],
        ),
        (
            &[
                ("signal", "rps"),
                ("source", "prometheus"),
                ("backend", "nope"),
                svc,
                ("threshold", "fast"),
            ],
            &["backend", "threshold"],
        ),
        (
            &[
                ("signal", "latency"),
                ("source", "tempo"),
                ("backend", "nope"),
                ("tenant", "a/b"),
                svc,
                ("threshold", "300ms"),
            ],
            &["backend", "tenant"],
        ),
        // The convention has no version label: a problem found while building the query.
        (
            &[
                ("signal", "rps"),
                ("backend", "nope"),
                ("convention", "prometheus-http"),
                ("version", "v2"),
                svc,
                ("threshold", "5"),
            ],
            &["backend", "version"],
        ),
    ];
    for (md, keys) in cases {
        let status = scaler
            .client
            .get_metric_spec(so("orders", md))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{md:?}: {status:?}");
        for key in *keys {
            assert!(
                status.message().contains(&format!("{key}: ")),
                "{md:?} names {key}: {status:?}"
            );
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
    let expected = (own + slo_scaler::server::OTLP_NICENESS).min(19);
    assert!(
        expected > own,
        "this test runs at nice {own}: nothing to lower"
    );
    // The runtime's threads exist once it is built, but each names itself and lowers its
    // own priority when it first runs, which on a busy machine can come later than this
    // read (CI once saw no thread named yet): read until one has and every named one has
    // lowered its priority, for a bounded time.
    let receivers = || {
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            if comm.trim_end() == "otlp-receiver" {
                nices.push(nice_of(&stat));
            }
        }
        nices
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = receivers();
    while (seen.is_empty() || seen.iter().any(|&n| n != expected)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = receivers();
    }
    assert!(!seen.is_empty(), "no otlp-receiver thread");
    assert!(
        seen.iter().all(|&n| n == expected),
        "otlp-receiver threads at {seen:?}, this thread at {own}"
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
