//! `source: tempo` end to end: KEDA's calls through the real gRPC client, the scaler
//! in-process, and the fake Tempo recording what reaches it.

use std::time::Duration;

use tonic::Code;

use crate::common::scaler::{metric, so, Scaler};
use crate::fake::{FakeTempo, Reply};

fn error_split() -> Reply {
    use crate::fake::status;
    use crate::fake::Val::{Error, Ok, Unset};
    Reply::Series(vec![
        status(Error, &[2.0]),
        status(Unset, &[30.0]),
        status(Ok, &[8.0]),
    ])
}

async fn scaler_for(fake: &FakeTempo) -> Scaler {
    let url = format!("default={}", fake.url);
    Scaler::start(&[
        "--tempo",
        &url,
        "--tempo-tenant",
        "default=team-a",
        "--tempo-tenant-allow",
        "shop=team-a,team-b",
        "--allow-unauthenticated-namespace-policy",
        "--default-source",
        "tempo",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn error_rate_is_divided_in_the_scaler_with_the_default_tenant() {
    let fake = FakeTempo::start([error_split()]).await;
    let mut scaler = scaler_for(&fake).await;
    let r = so(
        "payments",
        &[
            ("signal", "errorRate"),
            ("service", "payment-service"),
            ("window", "2m"),
            ("threshold", "3%"),
        ],
    );
    let v = metric(&mut scaler.client, &r).await.unwrap();
    assert_eq!(v, 2.0 / 40.0);
    let req = fake.only_request();
    assert_eq!(req.path, "/api/metrics/query");
    assert_eq!(
        req.param("q"),
        Some(
            r#"{ resource.service.name = "payment-service" && span:kind = server } | rate() by (span:status)"#
        )
    );
    assert_eq!(req.param("since"), Some("2m"));
    assert_eq!(req.header("x-scope-orgid"), Some("team-a"));
    // Cached: KEDA's IsActive right after makes no second request.
    assert!(
        scaler
            .client
            .is_active(r)
            .await
            .unwrap()
            .into_inner()
            .result
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_outside_the_namespace_allowance_never_reaches_tempo() {
    let fake = FakeTempo::start([Reply::Series(vec![crate::fake::quantile(0.95, &[0.42])])]).await;
    let mut scaler = scaler_for(&fake).await;
    let trigger = |namespace: &str, tenant: &str| {
        let mut r = so(
            "latency",
            &[
                ("signal", "latency"),
                ("service", "order-service"),
                ("tenant", tenant),
                ("threshold", "300ms"),
            ],
        );
        r.namespace = namespace.to_string();
        r
    };
    for r in [trigger("shop", "team-c"), trigger("analytics", "team-a")] {
        let status = scaler.client.get_metric_spec(r.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = metric(&mut scaler.client, &r).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(&r.scaler_metadata["tenant"]),
            "{status:?}"
        );
    }
    // A malformed tenant is a metadata problem, named by key.
    let status = scaler
        .client
        .get_metric_spec(trigger("shop", "../other"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("tenant"), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
    // An allowed tenant goes through with its own header.
    let v = metric(&mut scaler.client, &trigger("shop", "team-b"))
        .await
        .unwrap();
    assert_eq!(v, 0.42);
    let req = fake.only_request();
    assert_eq!(req.header("x-scope-orgid"), Some("team-b"));
    assert_eq!(
        req.param("q"),
        Some(
            r#"{ resource.service.name = "order-service" && span:kind = server } | quantile_over_time(span:duration, .95)"#
        )
    );
    assert_eq!(req.param("since"), Some("5m"));
}

/// Tempo 3.0 fails a query while its live store lags (`fail_on_high_lag`): a backend
/// failure, so KEDA gets the last good value while it is younger than `--max-stale`, then
/// `Unavailable` (never a made-up number, never `InvalidArgument`).
#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_tempo_is_served_stale_then_unavailable() {
    let mut replies = vec![Reply::Series(vec![crate::fake::quantile(0.95, &[0.42])])];
    replies.extend(std::iter::repeat_n(Reply::Lagged, 100));
    let fake = FakeTempo::start(replies).await;
    let url = format!("default={}", fake.url);
    let mut scaler = Scaler::start(&[
        "--tempo",
        &url,
        "--default-source",
        "tempo",
        "--cache-ttl",
        "100ms",
        "--min-cache-ttl",
        "10ms",
        "--max-stale",
        "1500ms",
        "--max-cache-ttl",
        "1s",
    ])
    .await;
    let r = so(
        "latency",
        &[
            ("signal", "latency"),
            ("service", "order-service"),
            ("threshold", "300ms"),
        ],
    );
    assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), 0.42);
    let good_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Younger than --max-stale: the last good value, though Tempo now refuses.
    assert_eq!(metric(&mut scaler.client, &r).await.unwrap(), 0.42);
    assert!(fake.requests().len() >= 2, "{:#?}", fake.requests());
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(good_at.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = metric(&mut scaler.client, &r).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("tempo/default"), "{status:?}");
    assert!(status.message().contains("fail_on_high_lag"), "{status:?}");
}

/// Numbers KEDA cannot use never reach it from Tempo either. Tempo itself answers neither
/// ±Inf nor a negative rate (see fake.rs: `Log2Quantile` stays within its buckets; NaN
/// steps are dropped by `SeriesSet.ToProto`), but a proxy or a raw query's arithmetic can:
/// the engine's one rule refuses them by value, and NaN is no data.
#[tokio::test(flavor = "multi_thread")]
async fn values_keda_cannot_use_are_errors_from_tempo_too() {
    let raw = so(
        "raw",
        &[
            ("signal", "query"),
            ("source", "tempo"),
            ("query", "{ resource.service.name = \"a\" } | rate()"),
            ("threshold", "1"),
        ],
    );
    for (body, shown) in [
        (r#"{"series":[{"labels":[],"value":"Infinity"}]}"#, "inf"),
        (r#"{"series":[{"labels":[],"value":"-Infinity"}]}"#, "-inf"),
        (r#"{"series":[{"labels":[],"value":-3}]}"#, "-3"),
    ] {
        let fake = FakeTempo::start([Reply::Raw(body)]).await;
        let mut scaler = scaler_for(&fake).await;
        let err = metric(&mut scaler.client, &raw).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{body}: {err:?}");
        assert!(err.message().contains(shown), "{body}: {err:?}");
    }
    let fake = FakeTempo::start([Reply::Raw(r#"{"series":[{"labels":[],"value":"NaN"}]}"#)]).await;
    let mut scaler = scaler_for(&fake).await;
    assert_eq!(metric(&mut scaler.client, &raw).await.unwrap(), 0.0);
}
