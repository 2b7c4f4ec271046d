//! The cache against a real Prometheus: one query for many callers, each trigger's own TTL,
//! refresh ahead of the TTL, stale answers through an outage, a backend cut off at the
//! timeout, and what KEDA and `/readyz` see meanwhile.

use super::*;

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
