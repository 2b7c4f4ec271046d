//! The Tempo source against a fake Tempo (see `fake.rs`: no Tempo server can be installed
//! on these machines, so the fake reproduces the documented wire format, quirks included).
//!
//! The tests assert what is sent (path, `q`, `since` or `start`/`end`/`step`,
//! `X-Scope-OrgID`) and what comes back (the reading, the error, the metrics).

#[path = "../common/mod.rs"]
mod common;
mod fake;
mod grpc;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake::{FakeTempo, Reply};
use prometheus_client::registry::Registry;
use slo_scaler::signal::traceql;
use slo_scaler::signal::{Quantile, SpanKind, TraceMeasure, TraceSelector};
use slo_scaler::source::http::HttpBackendConfig;
use slo_scaler::source::prometheus::PrometheusSource;
use slo_scaler::source::sqs::{SqsConfig, SqsSource};
use slo_scaler::source::tempo::{TempoApi, TempoBackendConfig, TempoSource};
use slo_scaler::source::{Query, Reading, SourceError, Sources, TempoQuery};
use slo_scaler::telemetry::Metrics;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The Tempo source inside the one place that bounds and records backend calls.
struct Setup {
    sources: Sources,
    registry: Registry,
}

impl Setup {
    fn new(backends: Vec<TempoBackendConfig>, timeout: Duration) -> Setup {
        let (registry, metrics) = Metrics::standalone();
        let metrics = Arc::new(metrics);
        let sources = Sources {
            prometheus: PrometheusSource::new(&[], timeout).unwrap(),
            tempo: TempoSource::new(backends, timeout, metrics.clone()).unwrap(),
            sqs: SqsSource::lazy(SqsConfig::default()),
            otlp: None,
            metrics,
            timeout,
        };
        Setup { sources, registry }
    }

    async fn fetch(&self, q: &TempoQuery) -> Result<Reading, SourceError> {
        self.sources.fetch(&Query::Tempo(q.clone())).await
    }

    /// One backend called `default` at the fake's URL.
    fn one(fake: &FakeTempo, default_tenant: Option<&str>, api: TempoApi) -> Setup {
        Setup::new(
            vec![backend("default", &fake.url, default_tenant, api)],
            TIMEOUT,
        )
    }

    fn scrape(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

fn backend(
    name: &str,
    url: &str,
    default_tenant: Option<&str>,
    api: TempoApi,
) -> TempoBackendConfig {
    TempoBackendConfig {
        http: HttpBackendConfig {
            name: name.into(),
            url: url.into(),
            ..Default::default()
        },
        default_tenant: default_tenant.map(str::to_string),
        api,
    }
}

fn selector(service: &str) -> TraceSelector {
    TraceSelector {
        service: service.into(),
        span_kind: SpanKind::Server,
        version: None,
        labels: vec![],
    }
}

fn query(measure: TraceMeasure) -> TempoQuery {
    let (traceql, reduce) = traceql::build(&selector("order-service"), measure).unwrap();
    TempoQuery {
        backend: "default".into(),
        tenant: None,
        traceql,
        since: Duration::from_secs(300),
        reduce,
    }
}

fn p95() -> TempoQuery {
    query(TraceMeasure::Latency(Quantile::P95))
}

/// What a fetch should give: a value, or an error of a kind whose message contains a
/// fragment.
#[derive(Debug)]
enum Expect {
    Value(Option<f64>),
    Error(&'static str, &'static str),
}

fn kind(e: &SourceError) -> &'static str {
    match e {
        SourceError::Timeout { .. } => "timeout",
        SourceError::Connect { .. } => "connect",
        SourceError::Unavailable { .. } => "unavailable",
        SourceError::BadQuery { .. } => "bad query",
        SourceError::NotFound { .. } => "not found",
        SourceError::PermissionDenied { .. } => "permission denied",
        SourceError::BadResponse { .. } => "bad response",
        SourceError::UnknownBackend { .. } => "unknown backend",
    }
}

fn assert_result(got: &Result<Reading, SourceError>, expect: &Expect, context: &str) {
    match (got, expect) {
        (Ok(Reading::Value(v)), Expect::Value(e)) => assert_eq!(v, e, "{context}"),
        (Err(err), Expect::Error(k, fragment)) => {
            assert_eq!(kind(err), *k, "{context}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains(fragment),
                "{context}: {msg:?} lacks {fragment:?}"
            );
            assert!(msg.starts_with("tempo/default: "), "{context}: {msg}");
        }
        _ => panic!("{context}: got {got:?}, expected {expect:?}"),
    }
}

/// One scripted reply from the instant endpoint, one fetch of `q`.
async fn check(reply: Reply, q: TempoQuery, expect: Expect) {
    let context = format!("{reply:?} for {}", q.traceql);
    let fake = FakeTempo::start([reply]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let got = setup.fetch(&q).await;
    assert_result(&got, &expect, &context);
    assert_eq!(fake.requests().len(), 1, "{context}");
    let outcome = match &got {
        Ok(_) => "success",
        Err(SourceError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    let metrics = setup.scrape();
    let line = format!(
        "slo_scaler_backend_requests_total{{backend=\"tempo/default\",outcome=\"{outcome}\"}} 1"
    );
    assert!(
        metrics.contains(&line),
        "{context}: {line} missing from\n{metrics}"
    );
}

#[tokio::test]
async fn answers_become_readings() {
    use fake::Val::{Error as Err, Ok as Fine, Unset};
    use fake::{quantile, status, ungrouped};
    use Expect::{Error, Value};
    let rate = || query(TraceMeasure::Rate);
    let errors = || query(TraceMeasure::ErrorRatio);
    let series = |s: Vec<fake::Series>| Reply::Series(s);

    check(
        series(vec![quantile(0.95, &[0.23])]),
        p95(),
        Value(Some(0.23)),
    )
    .await;
    // A value of 0 is omitted by the protobuf JSON mapping: no `value` key.
    check(
        series(vec![ungrouped("rate", &[0.0])]),
        rate(),
        Value(Some(0.0)),
    )
    .await;
    // No spans in the window: no series at all.
    check(series(vec![]), p95(), Value(None)).await;
    check(series(vec![]), rate(), Value(None)).await;
    // Tempo drops NaN samples, and with them a series left empty: no data.
    check(
        series(vec![quantile(0.95, &[f64::NAN])]),
        p95(),
        Value(None),
    )
    .await;
    // Non-finite values pass up unchanged; the engine's value rule decides.
    check(
        series(vec![ungrouped("rate", &[f64::INFINITY])]),
        rate(),
        Value(Some(f64::INFINITY)),
    )
    .await;
    check(
        series(vec![
            status(Err, &[0.5]),
            status(Fine, &[1.5]),
            status(Unset, &[8.0]),
        ]),
        errors(),
        Value(Some(0.05)),
    )
    .await;
    // Only successes: no error series at all is a ratio of 0.
    check(
        series(vec![status(Unset, &[3.0])]),
        errors(),
        Value(Some(0.0)),
    )
    .await;
    // No traffic is no data, not a ratio.
    check(series(vec![]), errors(), Value(None)).await;
    check(
        series(vec![
            fake::Series {
                labels: vec![(fake::Attr::Resource("service.name"), fake::Val::Str("a"))],
                values: vec![1.0],
            },
            fake::Series {
                labels: vec![(fake::Attr::Resource("service.name"), fake::Val::Str("b"))],
                values: vec![2.0],
            },
        ]),
        rate(),
        Error("bad response", "2 series"),
    )
    .await;
    check(
        Reply::Raw("<html>gateway</html>"),
        p95(),
        Error("bad response", "cannot read"),
    )
    .await;
    check(
        Reply::Text(400, "invalid TraceQL query: parse error at line 1, col 12: syntax error: unexpected IDENTIFIER\n"),
        p95(),
        Error("bad query", "HTTP 400: invalid TraceQL query: parse error at line 1, col 12"),
    )
    .await;
    check(
        Reply::Text(
            500,
            "rpc error: code = Unavailable desc = no healthy queriers",
        ),
        p95(),
        Error(
            "unavailable",
            "HTTP 500: rpc error: code = Unavailable desc = no healthy queriers",
        ),
    )
    .await;
    // `fail_on_high_lag`: a backend failure (served stale by the cache), not a bad query.
    check(
        Reply::Lagged,
        p95(),
        Error("unavailable", "lags behind ingest (fail_on_high_lag)"),
    )
    .await;
    check(
        Reply::Text(503, ""),
        p95(),
        Error("unavailable", "HTTP 503"),
    )
    .await;
    check(
        Reply::Text(429, "job queue full"),
        p95(),
        Error("unavailable", "HTTP 429: job queue full"),
    )
    .await;
    check(
        Reply::Text(401, "no org id"),
        p95(),
        Error("permission denied", "HTTP 401: no org id"),
    )
    .await;
    check(
        Reply::Text(403, "forbidden"),
        p95(),
        Error("permission denied", "HTTP 403"),
    )
    .await;
    check(
        Reply::Text(404, "404 page not found"),
        p95(),
        Error("bad query", "range API"),
    )
    .await;
}

/// Tempo names the group label of `rate() by (span:status)` `status` (the intrinsic's
/// `String()`, `pkg/traceql/enum_attributes.go`), so the error series must be found
/// under that key, on both endpoints.
#[tokio::test]
async fn error_ratio_reads_tempos_status_label() {
    use fake::status;
    use fake::Val::{Error as Err, Ok as Fine, Unset};
    let split = vec![
        status(Err, &[2.0]),
        status(Unset, &[30.0]),
        status(Fine, &[8.0]),
    ];
    for api in [TempoApi::Instant, TempoApi::Range] {
        let fake = FakeTempo::start([Reply::Series(split.clone())]).await;
        let setup = Setup::one(&fake, None, api);
        assert_eq!(
            setup.fetch(&query(TraceMeasure::ErrorRatio)).await,
            Ok(Reading::Value(Some(2.0 / 40.0))),
            "{api:?}"
        );
    }
}

/// Tempo 3.0 leaves out the newest `query_end_cutoff` (30 s) and refuses a window that
/// lies entirely inside it: the answer is a bad query naming the cutoff.
#[tokio::test]
async fn windows_inside_the_query_end_cutoff_are_refused() {
    let fake = FakeTempo::start([Reply::Series(vec![fake::ungrouped("rate", &[4.0])])]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let mut q = query(TraceMeasure::Rate);
    q.since = Duration::from_secs(30);
    let err = setup.fetch(&q).await.unwrap_err();
    assert_eq!(kind(&err), "bad query", "{err}");
    assert!(err.to_string().contains(fake::CUTOFF_ERROR), "{err}");
    assert!(err.to_string().contains("longer than"), "{err}");
    q.since = Duration::from_secs(60);
    assert_eq!(setup.fetch(&q).await, Ok(Reading::Value(Some(4.0))));
}

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

#[tokio::test]
async fn partial_answers_are_used_and_counted() {
    let fake = FakeTempo::start([
        Reply::Partial(vec![fake::quantile(0.95, &[0.4])], "2 of 40 blocks failed"),
        Reply::Partial(vec![fake::quantile(0.95, &[0.5])], ""),
        Reply::Series(vec![fake::quantile(0.95, &[0.6])]),
    ])
    .await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let q = p95();
    let mut values = Vec::new();
    for _ in 0..3 {
        values.push(setup.fetch(&q).await.unwrap());
    }
    assert_eq!(
        values,
        vec![
            Reading::Value(Some(0.4)),
            Reading::Value(Some(0.5)),
            Reading::Value(Some(0.6))
        ]
    );
    let metrics = setup.scrape();
    assert!(
        metrics.contains("slo_scaler_tempo_partial_responses_total{backend=\"tempo/default\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "slo_scaler_backend_requests_total{backend=\"tempo/default\",outcome=\"success\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn hung_tempo_is_cut_off_at_the_timeout() {
    let fake = FakeTempo::start([Reply::Hang]).await;
    let timeout = Duration::from_millis(300);
    let setup = Setup::new(
        vec![backend("default", &fake.url, None, TempoApi::Instant)],
        timeout,
    );
    let started = Instant::now();
    let err = setup.fetch(&p95()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        err,
        SourceError::Timeout {
            backend: "tempo/default".into(),
            timeout
        }
    );
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(fake.requests().len(), 1);
    let metrics = setup.scrape();
    assert!(
        metrics.contains(
            "slo_scaler_backend_requests_total{backend=\"tempo/default\",outcome=\"timeout\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn range_api_takes_the_latest_sample() {
    let fake = FakeTempo::start([
        Reply::Series(vec![fake::quantile(0.95, &[0.2, 0.35])]),
        Reply::Series(vec![
            fake::status(fake::Val::Error, &[4.0, f64::NAN]),
            fake::status(fake::Val::Unset, &[4.0, 10.0]),
        ]),
        Reply::Series(vec![fake::ungrouped("rate", &[1.0, 0.0])]),
        // No spans in the latest step: `quantile_over_time` writes 0 there, which is no data.
        Reply::Series(vec![fake::quantile(0.95, &[0.3, 0.0])]),
    ])
    .await;
    let setup = Setup::one(&fake, Some("team-shop"), TempoApi::Range);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(setup.fetch(&p95()).await, Ok(Reading::Value(Some(0.35))));
    // The error series had no spans in the latest step: 0 errors, not 4 from earlier.
    assert_eq!(
        setup.fetch(&query(TraceMeasure::ErrorRatio)).await,
        Ok(Reading::Value(Some(0.0)))
    );
    // A latest sample of 0 has no `value` key.
    assert_eq!(
        setup.fetch(&query(TraceMeasure::Rate)).await,
        Ok(Reading::Value(Some(0.0)))
    );
    assert_eq!(setup.fetch(&p95()).await, Ok(Reading::Value(None)));
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    let req = &requests[0];
    assert_eq!(req.path, "/api/metrics/query_range");
    assert_eq!(req.param("q"), Some(p95().traceql.as_str()));
    assert_eq!(req.param("step"), Some("5m"));
    assert_eq!(req.param("since"), None);
    assert_eq!(req.header("x-scope-orgid"), Some("team-shop"));
    let start: u64 = req.param("start").unwrap().parse().unwrap();
    let end: u64 = req.param("end").unwrap().parse().unwrap();
    assert!(before <= end && end <= after, "{before} {end} {after}");
    assert_eq!(end - start, 300);
    let names: Vec<&str> = req.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["q", "start", "end", "step"]);
}

#[tokio::test]
async fn range_api_404_names_the_version_needed() {
    let fake = FakeTempo::start([Reply::Text(404, "404 page not found")]).await;
    let setup = Setup::one(&fake, None, TempoApi::Range);
    let err = setup.fetch(&p95()).await.unwrap_err();
    assert_eq!(kind(&err), "bad query");
    assert!(err.to_string().contains("Tempo 2.4"), "{err}");
}

#[tokio::test]
async fn long_error_bodies_are_truncated() {
    let body: &'static str = Box::leak("x".repeat(5000).into_boxed_str());
    let fake = FakeTempo::start([Reply::Text(400, body)]).await;
    let setup = Setup::one(&fake, None, TempoApi::Instant);
    let err = setup.fetch(&p95()).await.unwrap_err();
    let SourceError::BadQuery { detail, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(detail.len() < 600, "{}", detail.len());
    assert!(detail.starts_with("HTTP 400: xxx"), "{detail}");
}

#[tokio::test]
async fn backends_are_chosen_by_name() {
    let a = FakeTempo::start([Reply::Series(vec![fake::ungrouped("rate", &[1.0])])]).await;
    let b = FakeTempo::start([Reply::Series(vec![fake::ungrouped("rate", &[2.0])])]).await;
    let setup = Setup::new(
        vec![
            backend("default", &a.url, None, TempoApi::Instant),
            backend("eu", &b.url, Some("eu-tenant"), TempoApi::Instant),
        ],
        TIMEOUT,
    );
    assert!(setup.sources.tempo.has_backend("eu"));
    assert!(!setup.sources.tempo.has_backend("us"));
    let mut q = query(TraceMeasure::Rate);
    q.backend = "eu".into();
    assert_eq!(setup.fetch(&q).await, Ok(Reading::Value(Some(2.0))));
    assert!(a.requests().is_empty());
    assert_eq!(b.only_request().header("x-scope-orgid"), Some("eu-tenant"));

    q.backend = "us".into();
    assert_eq!(
        setup.fetch(&q).await,
        Err(SourceError::UnknownBackend {
            kind: "tempo",
            name: "us".into()
        })
    );
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    // Bind a port, then free it, so nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let setup = Setup::new(
        vec![backend("default", &url, None, TempoApi::Instant)],
        TIMEOUT,
    );
    let err = setup.fetch(&p95()).await.unwrap_err();
    assert_eq!(kind(&err), "connect", "{err}");
    assert!(!err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn credentials_of_the_shared_http_client_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let fake = FakeTempo::start([Reply::Series(vec![]), Reply::Series(vec![])]).await;
    let mut config = backend("default", &fake.url, None, TempoApi::Instant);
    config.http.bearer_token_file = Some(token);
    config.http.headers = vec![("X-Extra".into(), "yes".into())];
    config.http.header_files = vec![("X-Api-Key".into(), key.clone())];
    let printed_config = format!("{config:?}");
    let setup = Setup::new(vec![config], TIMEOUT);
    setup.fetch(&p95()).await.unwrap();
    let req = fake.only_request();
    assert_eq!(req.header("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(req.header("x-extra"), Some("yes"));
    assert_eq!(req.header("x-api-key"), Some("s3cret-key"));
    // Rotated: the file is read on every request.
    std::fs::write(&key, "s3cret-rotated").unwrap();
    setup.fetch(&p95()).await.unwrap();
    assert_eq!(
        fake.requests()[1].header("x-api-key"),
        Some("s3cret-rotated")
    );
    // A header file that cannot be read fails the call, naming the file, not the secret.
    std::fs::write(&key, "s3cret\nbroken").unwrap();
    let err = setup.fetch(&p95()).await.unwrap_err();
    assert_eq!(kind(&err), "unavailable", "{err}");
    assert!(err.to_string().contains("x-api-key"), "{err}");
    assert_eq!(fake.requests().len(), 2, "nothing sent without the header");
    for text in [
        printed_config,
        format!("{:?}", setup.sources.tempo),
        err.to_string(),
        format!("{err:?}"),
    ] {
        assert!(!text.contains("s3cret"), "{text}");
    }
}

/// The real binary, given a backend URL with a password: it refuses to start (exit 64)
/// and neither its log lines nor its error name the password.
#[test]
fn urls_with_passwords_are_refused_and_never_printed() {
    for flag in ["--tempo", "--prometheus"] {
        for log_format in ["json", "text"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
                .arg("serve")
                .args(common::scaler::LOOPBACK_ADDRS)
                .args([
                    "--log-format",
                    log_format,
                    flag,
                    "default=http://scaler:s3cret-pw@127.0.0.1:9/",
                ])
                .output()
                .unwrap();
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(64), "{flag}: {printed}");
            assert!(!printed.contains("s3cret"), "{flag}: {printed}");
            assert!(printed.contains("***@127.0.0.1:9"), "{flag}: {printed}");
            assert!(printed.contains("basic-auth file"), "{flag}: {printed}");
        }
    }
}

#[tokio::test]
async fn bad_backend_configs_are_refused() {
    let check = |backends: Vec<TempoBackendConfig>| {
        let (_, metrics) = Metrics::standalone();
        assert!(TempoSource::new(backends, TIMEOUT, Arc::new(metrics)).is_err());
    };
    check(vec![backend(
        "default",
        "not a url",
        None,
        TempoApi::Instant,
    )]);
    check(vec![backend(
        "default",
        "http://127.0.0.1:3200",
        Some("a b"),
        TempoApi::Instant,
    )]);
    check(vec![
        backend("default", "http://127.0.0.1:3200", None, TempoApi::Instant),
        backend("default", "http://127.0.0.1:3201", None, TempoApi::Range),
    ]);
}
