//! The backends a signal is read from, and what they answer.
//!
//! A [`Query`] is the fully resolved request (backend, query text, tenant): it is the
//! cache key, so two triggers asking the same thing share one backend call. Each
//! backend lives in its own folder and turns a query into a [`Reading`].

use std::time::{Duration, Instant};

pub mod http;
pub mod otlp;
pub mod prometheus;
pub mod sqs;
pub mod tempo;
pub mod tenant;

use crate::signal::{TraceMeasure, TraceSelector};

/// One fully resolved backend request; also the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    Prometheus(PromQuery),
    Tempo(TempoQuery),
    Sqs(SqsQuery),
    Otlp(OtlpQuery),
    /// Two queries of one backend read together (the objectives of `signal: slo`):
    /// fetched at once and cached as one entry, so both answers describe the same moment.
    Pair(Box<(Query, Query)>),
}

impl Query {
    /// The backend label used in metrics and error messages, e.g. `prometheus/default`.
    pub fn backend_label(&self) -> String {
        match self {
            Query::Prometheus(q) => format!("prometheus/{}", q.backend),
            Query::Tempo(q) => format!("tempo/{}", q.backend),
            Query::Sqs(_) => "sqs".to_string(),
            Query::Otlp(_) => "otlp".to_string(),
            Query::Pair(pair) => pair.0.backend_label(),
        }
    }

    /// What a timeout names: the backend, and for SQS the queue as the trigger gave it
    /// (any user and password redacted).
    pub fn subject(&self) -> String {
        match self {
            Query::Sqs(q) => format!("sqs queue {:?}", http::redact_url(&q.queue)),
            other => other.backend_label(),
        }
    }
}

/// An instant PromQL query against a named Prometheus backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PromQuery {
    pub backend: String,
    /// `X-Scope-OrgID` (Mimir, Cortex, Thanos receive); `None` uses the backend's default
    /// tenant, or sends none.
    pub tenant: Option<String>,
    pub promql: String,
}

pub use crate::signal::traceql::TempoReduce;

/// A TraceQL metrics query against a named Tempo backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TempoQuery {
    pub backend: String,
    /// `X-Scope-OrgID`; `None` uses the backend's default tenant.
    pub tenant: Option<String>,
    pub traceql: String,
    /// The `since` window of the instant query.
    pub since: Duration,
    pub reduce: TempoReduce,
}

/// One `GetQueueAttributes` call, asking for the counts a trigger sums, as KEDA's
/// `aws-sqs-queue` does: the visible count, and the in-flight and delayed ones when its
/// flags add them. Triggers on one queue with the same flags share one call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqsQuery {
    /// A full queue URL, or a bare queue name resolved in `region`.
    pub queue: String,
    /// `None` uses the region of the scaler's AWS configuration.
    pub region: Option<String>,
    /// Role to assume through STS, when the operator allows per-trigger roles.
    pub role_arn: Option<String>,
    /// SQS endpoint (KEDA's `awsEndpoint`), when the operator allows per-trigger endpoints;
    /// `None` uses the scaler's `--aws-endpoint`, else the region's public endpoint.
    pub endpoint: Option<String>,
    /// Ask for the in-flight count (`scaleOnInFlight`).
    pub in_flight: bool,
    /// Ask for the delayed count (`scaleOnDelayed`).
    pub delayed: bool,
}

impl SqsQuery {
    /// A read of `queue` (a URL or a bare name) in the scaler's own region, through its own
    /// endpoint and credentials, of KEDA's default counts: visible and in flight.
    pub fn of(queue: impl Into<String>) -> Self {
        SqsQuery {
            queue: queue.into(),
            region: None,
            role_arn: None,
            endpoint: None,
            in_flight: true,
            delayed: false,
        }
    }

    /// The same read, asking for the in-flight and delayed counts as given.
    pub fn counting(self, in_flight: bool, delayed: bool) -> Self {
        SqsQuery {
            in_flight,
            delayed,
            ..self
        }
    }
}

/// A read from the embedded trace store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtlpQuery {
    pub selector: TraceSelector,
    pub measure: TraceMeasure,
    pub window: Duration,
}

/// An SQS queue's approximate message counts; `None` for a count the call did not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: Option<u64>,
    pub delayed: Option<u64>,
}

impl QueueDepth {
    /// KEDA's `aws-sqs-queue` sum: visible + in flight (if on) + delayed (if on),
    /// saturating at `u64::MAX` (the counts are untrusted). `None` when a count to add
    /// was not read: it is never taken for 0.
    pub fn total(self, scale_on_in_flight: bool, scale_on_delayed: bool) -> Option<u64> {
        // The counts come from the network: add them without overflowing.
        let mut n = self.visible;
        if scale_on_in_flight {
            n = n.saturating_add(self.in_flight?);
        }
        if scale_on_delayed {
            n = n.saturating_add(self.delayed?);
        }
        Some(n)
    }
}

/// What a backend answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// One number; `None` when the backend had no data (an empty result or NaN).
    Value(Option<f64>),
    /// An SQS queue's counts.
    Queue(QueueDepth),
    /// The answers to a [`Query::Pair`], in its order.
    Pair(Box<(Reading, Reading)>),
}

impl Reading {
    /// What kind of answer this is, for an error naming a mismatch.
    pub fn shape(&self) -> &'static str {
        match self {
            Reading::Value(_) => "number",
            Reading::Queue(_) => "queue depth",
            Reading::Pair(_) => "pair of answers",
        }
    }
}

/// Why a backend gave no reading. Messages name the backend and never carry secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    #[error("{backend}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout { backend: String, timeout: Duration },
    #[error("{backend}: cannot connect: {detail}")]
    Connect { backend: String, detail: String },
    #[error("{backend}: unavailable: {detail}")]
    Unavailable { backend: String, detail: String },
    #[error("{backend}: rejected the query: {detail}")]
    BadQuery { backend: String, detail: String },
    #[error("{backend}: {what} not found")]
    NotFound { backend: String, what: String },
    #[error("{backend}: access denied: {detail}")]
    PermissionDenied { backend: String, detail: String },
    #[error("{backend}: unexpected answer: {detail}")]
    BadResponse { backend: String, detail: String },
    #[error("no {kind} backend named {name:?} is configured")]
    UnknownBackend { kind: &'static str, name: String },
}

/// Every configured backend; dispatches a [`Query`] to the one it names.
///
/// The one owner of a backend call's deadline and of its accounting: [`Sources::fetch`]
/// bounds every call with `timeout` and records its outcome and duration.
pub struct Sources {
    pub prometheus: prometheus::PrometheusSource,
    pub tempo: tempo::TempoSource,
    pub sqs: sqs::SqsSource,
    /// The embedded trace store; `None` when the OTLP receiver is off (`--no-otlp`, `check`).
    pub otlp: Option<std::sync::Arc<otlp::Store>>,
    pub metrics: std::sync::Arc<crate::telemetry::Metrics>,
    /// `--backend-timeout`: the deadline of every call, end to end.
    pub timeout: Duration,
}

impl Sources {
    /// Asks the backend, within `timeout`, and records the call in the backend metrics
    /// (`success`, `error` or `timeout`, with its duration).
    pub async fn fetch(&self, q: &Query) -> Result<Reading, SourceError> {
        if let Query::Pair(pair) = q {
            // Each half is its own call, bounded and counted; both start together.
            let (a, b) = tokio::join!(Box::pin(self.fetch(&pair.0)), Box::pin(self.fetch(&pair.1)));
            return Ok(Reading::Pair(Box::new((a?, b?))));
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.dispatch(q)).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::Timeout {
                backend: q.subject(),
                timeout: self.timeout,
            }),
        };
        self.record(&q.backend_label(), &result, started);
        result
    }

    /// Counts one finished call (`success`, `error` or `timeout`, with its duration).
    fn record<T>(&self, backend: &str, result: &Result<T, SourceError>, started: Instant) {
        let outcome = match result {
            Ok(_) => "success",
            Err(SourceError::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        self.metrics
            .record_backend(backend, outcome, started.elapsed());
        if let Err(err) = result {
            tracing::debug!(backend, error = %err, "backend call failed");
        }
    }

    /// The embedded store, or the error of a server that runs none (`--no-otlp`, `check`).
    fn store(&self) -> Result<&otlp::Store, SourceError> {
        self.otlp
            .as_deref()
            .ok_or_else(|| SourceError::UnknownBackend {
                kind: "otlp",
                name: "embedded".into(),
            })
    }

    /// Every figure of `selector` over `window` from one pass over the embedded store
    /// (`signal: slo`, the analysis endpoint), accounted as one `otlp` call like
    /// [`Sources::fetch`]. A local read: nothing to time out.
    pub fn otlp_snapshot(
        &self,
        selector: &TraceSelector,
        window: Duration,
    ) -> Result<otlp::store::Snapshot, SourceError> {
        let started = Instant::now();
        let result = self
            .store()
            .and_then(|store| store.snapshot(selector, window));
        self.record("otlp", &result, started);
        result
    }

    async fn dispatch(&self, q: &Query) -> Result<Reading, SourceError> {
        match q {
            Query::Prometheus(q) => self.prometheus.fetch(q).await,
            Query::Tempo(q) => self.tempo.fetch(q).await,
            // Boxed: the SDK's futures are deep enough to exceed the compiler's layout
            // recursion limit in callers that nest this one.
            Query::Sqs(q) => Box::pin(self.sqs.fetch(q)).await,
            Query::Otlp(q) => self.store().and_then(|store| store.read(q)),
            // `fetch` asks a pair's halves itself, each bounded and counted.
            Query::Pair(_) => Err(SourceError::BadQuery {
                backend: q.backend_label(),
                detail: "a pair is fetched half by half".into(),
            }),
        }
    }

    /// A one-line description of what `q` sends, for `check` and debug views.
    pub fn describe(q: &Query) -> String {
        match q {
            Query::Prometheus(q) => match &q.tenant {
                Some(t) => format!("prometheus/{} (tenant {t}): {}", q.backend, q.promql),
                None => format!("prometheus/{}: {}", q.backend, q.promql),
            },
            Query::Tempo(q) => format!(
                "tempo/{} (tenant {}): {} since={}",
                q.backend,
                q.tenant.as_deref().unwrap_or("<backend default>"),
                q.traceql,
                crate::signal::format_window(q.since)
            ),
            Query::Sqs(q) => {
                let mut s = format!(
                    "sqs GetQueueAttributes {} (region {})",
                    http::redact_url(&q.queue),
                    q.region.as_deref().unwrap_or("<default>")
                );
                if let Some(role) = &q.role_arn {
                    s.push_str(&format!(" as {role}"));
                }
                if let Some(endpoint) = &q.endpoint {
                    s.push_str(&format!(" at {}", http::redact_url(endpoint)));
                }
                s
            }
            Query::Pair(pair) => format!(
                "{} together with {}",
                Sources::describe(&pair.0),
                Sources::describe(&pair.1)
            ),
            Query::Otlp(q) => format!(
                "otlp store: {} of service {:?} kind {} version {} over {}",
                match q.measure {
                    TraceMeasure::Latency(quantile) => format!("{} latency", quantile.label()),
                    TraceMeasure::ErrorRatio => "error ratio".to_string(),
                    TraceMeasure::Rate => "spans per second".to_string(),
                    TraceMeasure::Concurrency => "requests in flight".to_string(),
                    TraceMeasure::Capacity(c) => format!(
                        "pods needed for {} latency {} at {} requests per pod",
                        c.quantile.label(),
                        humantime::format_duration(c.objective),
                        c.pod_concurrency
                    ),
                },
                q.selector.service,
                q.selector.span_kind,
                q.selector.version.as_deref().unwrap_or("*"),
                crate::signal::format_window(q.window)
            ),
        }
    }
}

/// An error and its sources, `: `-separated, each said once (AWS SDK errors
/// say little at the top: the cause is in the chain).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_redact_url_credentials() {
        let q = Query::Sqs(SqsQuery {
            endpoint: Some("http://key:s3cret@localhost:4566".into()),
            ..SqsQuery::of("https://user:s3cret@sqs.example/123/q")
        });
        let text = Sources::describe(&q);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("https://***@sqs.example/123/q"), "{text}");
        assert!(text.contains("http://***@localhost:4566"), "{text}");
    }

    /// A queue URL with a user or password (refused by the trigger parser, but `SqsQuery`
    /// is public) is refused before any call, and no error or timeout repeats it.
    #[tokio::test]
    async fn queue_urls_with_credentials_are_never_quoted() {
        let q = SqsQuery::of("https://user:s3cret@sqs.eu-west-1.amazonaws.com/123456789012/q");
        let subject = Query::Sqs(q.clone()).subject();
        assert!(!subject.contains("s3cret"), "{subject}");
        let sqs = sqs::SqsSource::lazy(sqs::SqsConfig::default());
        let err = sqs.fetch(&q).await.unwrap_err();
        assert!(matches!(err, SourceError::BadQuery { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("password"), "{text}");
    }

    /// Every call through [`Sources::fetch`] is counted once, with its outcome, for a source
    /// that keeps no accounting of its own (the embedded store; SQS in `tests/sqs`,
    /// Prometheus and Tempo in their suites).
    #[tokio::test]
    async fn every_call_is_counted_once_by_fetch() {
        let (registry, metrics) = crate::telemetry::Metrics::standalone();
        let metrics = std::sync::Arc::new(metrics);
        let timeout = Duration::from_secs(1);
        let store =
            otlp::Store::new(otlp::StoreConfig::default(), metrics.clone()).expect("default store");
        let sources = Sources {
            prometheus: prometheus::PrometheusSource::new(&[], timeout).expect("none"),
            tempo: tempo::TempoSource::new(Vec::new(), timeout, metrics.clone()).expect("none"),
            sqs: sqs::SqsSource::lazy(sqs::SqsConfig::default()),
            otlp: Some(std::sync::Arc::new(store)),
            metrics,
            timeout,
        };
        let query = |window: Duration| {
            Query::Otlp(OtlpQuery {
                selector: crate::signal::TraceSelector {
                    service: "checkout".into(),
                    span_kind: crate::signal::SpanKind::Server,
                    version: None,
                    labels: Vec::new(),
                },
                measure: TraceMeasure::ErrorRatio,
                window,
            })
        };
        sources
            .fetch(&query(Duration::from_secs(60)))
            .await
            .expect("an empty store answers");
        sources
            .fetch(&query(Duration::ZERO))
            .await
            .expect_err("a zero window is refused");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for outcome in ["success", "error"] {
            let line = format!(
                "slo_scaler_backend_requests_total{{backend=\"otlp\",outcome=\"{outcome}\"}} 1"
            );
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn queue_sums_follow_keda() {
        let d = QueueDepth {
            visible: 7,
            in_flight: Some(3),
            delayed: Some(2),
        };
        assert_eq!(d.total(true, false), Some(10));
        assert_eq!(d.total(false, false), Some(7));
        assert_eq!(d.total(true, true), Some(12));
        assert_eq!(d.total(false, true), Some(9));
        let huge = QueueDepth {
            visible: u64::MAX - 1,
            in_flight: Some(5),
            delayed: Some(u64::MAX),
        };
        assert_eq!(huge.total(true, true), Some(u64::MAX));
    }

    /// A count the call did not ask for is not there to add: no sum, never a 0 in its place.
    #[test]
    fn queue_sums_need_every_count_they_add() {
        let d = QueueDepth {
            visible: 7,
            in_flight: Some(3),
            delayed: None,
        };
        assert_eq!(d.total(true, false), Some(10));
        assert_eq!(d.total(true, true), None);
        assert_eq!(d.total(false, true), None);
        let d = QueueDepth {
            visible: 7,
            in_flight: None,
            delayed: Some(2),
        };
        assert_eq!(d.total(false, true), Some(9));
        assert_eq!(d.total(true, false), None);
    }

    #[test]
    fn queue_sums_saturate_on_hostile_counts() {
        // The counts come from the SQS answer (or an endpoint posing as SQS): a sum past
        // u64::MAX must not panic the evaluation (fuzz corpus `sqs_answer/crash-sum-overflow`).
        let d = QueueDepth {
            visible: u64::MAX,
            in_flight: Some(u64::MAX),
            delayed: Some(1),
        };
        assert_eq!(d.total(false, false), Some(u64::MAX));
        assert_eq!(d.total(true, false), Some(u64::MAX));
        assert_eq!(d.total(false, true), Some(u64::MAX));
        assert_eq!(d.total(true, true), Some(u64::MAX));
    }
}
