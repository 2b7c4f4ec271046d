//! What is sent to Tempo: the instant API's `q` and `since`, metadata values unchanged
//! inside the quoted TraceQL, and the tenant header (the default, the query's, or refused).

use super::*;

#[tokio::test]
async fn instant_query_sends_q_and_since() {
    let fake = FakeTempo::start([Reply::Series(vec![fake::quantile(0.95, &[0.31])])]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let q = p95();
    assert_eq!(setup.fetch(&q).await, Ok(Reading::Value(Some(0.31))));
    let req = fake.only_request();
    assert_eq!(req.path, "/api/metrics/query");
    assert_eq!(
        req.params,
        vec![
            (
                "q".to_string(),
                r#"{ resource.service.name = "order-service" && span:kind = server } | quantile_over_time(span:duration, .95)"#
                    .to_string()
            ),
            ("since".to_string(), "5m".to_string()),
        ]
    );
    assert_eq!(req.header("x-scope-orgid"), None);
    assert_eq!(req.header("accept"), Some("application/json"));
}

#[tokio::test]
async fn hostile_values_reach_tempo_unchanged() {
    let hostile = "a\" } | rate() # & q=x%20+\\ \n東京";
    let fake = FakeTempo::start([Reply::Series(vec![])]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let (traceql, reduce) = traceql::build(&selector(hostile), TraceMeasure::Rate).unwrap();
    let q = TempoQuery {
        backend: "default".into(),
        tenant: None,
        traceql: traceql.clone(),
        since: Duration::from_secs(90),
        reduce,
    };
    assert_eq!(setup.fetch(&q).await, Ok(Reading::Value(None)));
    let req = fake.only_request();
    assert_eq!(req.param("q"), Some(traceql.as_str()));
    assert_eq!(
        req.param("q"),
        Some(
            r#"{ resource.service.name = "a\" } | rate() # & q=x%20+\\ \n東京" && span:kind = server } | rate()"#
        )
    );
    assert_eq!(req.param("since"), Some("90s"));
    assert_eq!(req.params.len(), 2, "{:?}", req.params);
}

#[tokio::test]
async fn tenant_header_is_the_default_or_the_query_tenant() {
    let fake = FakeTempo::start([Reply::Series(vec![]), Reply::Series(vec![])]).await;
    let setup = Setup::one(&fake, Some("team-shop"), TempoApi::Instant);
    let mut q = p95();
    setup.fetch(&q).await.unwrap();
    q.tenant = Some("team-pay".into());
    setup.fetch(&q).await.unwrap();
    let tenants: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.header("X-Scope-OrgID").map(str::to_string))
        .collect();
    assert_eq!(
        tenants,
        vec![Some("team-shop".to_string()), Some("team-pay".to_string())]
    );
}

#[tokio::test]
async fn query_tenant_without_backend_default() {
    let fake = FakeTempo::start([Reply::Series(vec![])]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let mut q = p95();
    q.tenant = Some("team-pay".into());
    setup.fetch(&q).await.unwrap();
    assert_eq!(
        fake.only_request().header("x-scope-orgid"),
        Some("team-pay")
    );
}

#[tokio::test]
async fn invalid_tenant_is_refused_before_sending() {
    let fake = FakeTempo::start([Reply::Series(vec![])]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let mut q = p95();
    q.tenant = Some("a|b".into());
    let err = setup.fetch(&q).await.unwrap_err();
    assert_eq!(kind(&err), "bad query", "{err}");
    assert!(err.to_string().contains("\"a|b\""), "{err}");
    assert!(fake.requests().is_empty());
}
