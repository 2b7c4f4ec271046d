//! The Tempo source against a fake Tempo (see `fake.rs`: no Tempo server can be installed
//! on these machines, so the fake reproduces the documented wire format, quirks included).
//!
//! The tests assert what is sent (path, `q`, `since` or `start`/`end`/`step`,
//! `X-Scope-OrgID`) and what comes back (the reading, the error, the metrics). Here the
//! answers and errors; what is sent in `requests.rs`, named backends and their credentials in
//! `backends.rs`, the scaler over gRPC in `grpc.rs`.

mod backends;
#[path = "../common/mod.rs"]
mod common;
mod fake;
mod grpc;
mod requests;

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

/// Tempo marks an answer PARTIAL when it cut it at its max-series limit, with the series
/// it kept (the local-blocks processor's `QueryRange` returns `Series: rr[:maxSeries]`
/// and `Status: PARTIAL`; the frontend says "Response exceeds maximum series limit"). A
/// PARTIAL answer without series is none Tempo writes: an incomplete answer that cannot
/// tell no traffic, so an error (KEDA's fallback decides), not no data (which `rps` would
/// read as 0).
#[tokio::test]
async fn partial_answers_without_series_are_errors() {
    for q in [
        query(TraceMeasure::Rate),
        query(TraceMeasure::ErrorRatio),
        p95(),
    ] {
        check(
            Reply::Partial(vec![], "2 of 40 blocks failed"),
            q,
            Expect::Error("unavailable", "PARTIAL"),
        )
        .await;
    }
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
