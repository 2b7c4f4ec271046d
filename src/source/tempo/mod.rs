//! The Grafana Tempo source: TraceQL metrics queries over HTTP, one client per named backend.
//!
//! A [`TempoQuery`] is sent to `api/metrics/query` (or `api/metrics/query_range` for
//! Tempo before 2.6), with `X-Scope-OrgID` set to the query's tenant or the backend's
//! default. The answer is parsed in [`response`] and reduced to one [`Reading`].

pub mod config;
pub mod response;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

use crate::signal::format_window;
use crate::source::http::{
    describe_reqwest_error, error_snippet, read_limited, BodyError, HttpBackend, HttpConfigError,
};
use crate::source::{Reading, SourceError, TempoQuery};
use crate::telemetry::{BackendLabels, Metrics};

pub use crate::source::tenant::{
    parse_allow, validate_tenant, TenantDenied, TenantPolicy, TENANT_HEADER,
};
pub use config::{TempoApi, TempoBackendConfig};

/// The largest answer read; metrics answers for one signal are a few hundred bytes.
const ANSWER_LIMIT: usize = 8 << 20;

/// The text of Tempo's `errLagged` (`modules/livestore/live_store.go`).
const LAGGED: &str = "cannot guarantee complete results";

/// The text of Tempo's `errQueryWindowWithinEndCutoff`
/// (`modules/frontend/metrics_query_range_handler.go`).
const WITHIN_CUTOFF: &str = "query window falls entirely within query_end_cutoff";

const INSTANT_PATH: &str = "api/metrics/query";
const RANGE_PATH: &str = "api/metrics/query_range";

/// Reads TraceQL metrics from the configured Tempo backends.
pub struct TempoSource {
    backends: HashMap<String, Backend>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Backend {
    http: HttpBackend,
    default_tenant: Option<String>,
    api: TempoApi,
    /// `tempo/<name>`, the label in metrics and errors.
    label: String,
}

impl std::fmt::Debug for TempoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempoSource")
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl TempoSource {
    /// Builds one client per backend. `connect_timeout` bounds connecting; the whole call
    /// is bounded by the caller, [`crate::source::Sources::fetch`].
    ///
    /// Fails on a bad URL, header or CA file, on an invalid default tenant, and when two
    /// backends share a name.
    pub fn new(
        backends: Vec<TempoBackendConfig>,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, HttpConfigError> {
        let mut map = HashMap::new();
        for config in backends {
            let name = config.http.name.clone();
            if let Some(tenant) = &config.default_tenant {
                if validate_tenant(tenant).is_err() {
                    return Err(HttpConfigError::Header {
                        backend: name,
                        header: TENANT_HEADER.to_string(),
                    });
                }
            }
            if map.contains_key(&name) {
                return Err(HttpConfigError::Client {
                    backend: name,
                    reason: "another tempo backend has the same name".into(),
                });
            }
            let http = HttpBackend::new(&config.http, connect_timeout)?;
            let backend = Backend {
                http,
                default_tenant: config.default_tenant,
                api: config.api,
                label: format!("tempo/{name}"),
            };
            map.insert(name, backend);
        }
        Ok(TempoSource {
            backends: map,
            metrics,
        })
    }

    /// Whether a backend called `name` is configured.
    pub fn has_backend(&self, name: &str) -> bool {
        self.backends.contains_key(name)
    }

    /// Runs `q` and reduces its answer to one reading (`Reading::Value(None)`: no data).
    /// Unbounded in time: [`crate::source::Sources::fetch`] bounds it and records it.
    pub async fn fetch(&self, q: &TempoQuery) -> Result<Reading, SourceError> {
        let backend = self
            .backends
            .get(&q.backend)
            .ok_or_else(|| SourceError::UnknownBackend {
                kind: "tempo",
                name: q.backend.clone(),
            })?;
        let tenant = q.tenant.as_deref().or(backend.default_tenant.as_deref());
        if let Some(tenant) = tenant {
            validate_tenant(tenant).map_err(|e| SourceError::BadQuery {
                backend: backend.label.clone(),
                detail: e,
            })?;
        }
        let answer = backend.call(q, tenant).await;
        if let Ok(response::Answer {
            partial: Some(message),
            ..
        }) = &answer
        {
            self.metrics
                .tempo_partial_responses
                .get_or_create(&BackendLabels {
                    backend: backend.label.clone(),
                })
                .inc();
            tracing::warn!(
                backend = %backend.label,
                message = %message,
                "tempo answered PARTIAL; using the value"
            );
        }
        // An answer that does not reduce to one number (several series) fails the fetch,
        // and counts as an error like any other failed call.
        answer.and_then(|answer| {
            let value =
                response::reduce(&answer, q.reduce).map_err(|detail| SourceError::BadResponse {
                    backend: backend.label.clone(),
                    detail,
                })?;
            match (value, &answer.partial) {
                // Tempo marks an answer PARTIAL when it cut it at its max-series limit,
                // series kept (the local-blocks `QueryRange`: `Series: rr[:maxSeries]`); an
                // incomplete answer without any is no "no spans", which `rps` would read
                // as 0.
                (None, Some(message)) => Err(SourceError::Unavailable {
                    backend: backend.label.clone(),
                    detail: format!(
                        "answered PARTIAL ({}) with no series: an incomplete answer cannot \
                         tell no traffic",
                        crate::trigger::clip(message)
                    ),
                }),
                (value, _) => Ok(Reading::Value(value)),
            }
        })
    }
}

impl Backend {
    async fn call(
        &self,
        q: &TempoQuery,
        tenant: Option<&str>,
    ) -> Result<response::Answer, SourceError> {
        let path = match self.api {
            TempoApi::Instant => INSTANT_PATH,
            TempoApi::Range => RANGE_PATH,
        };
        let since = format_window(q.since);
        let params: Vec<(&str, String)> = match self.api {
            TempoApi::Instant => vec![("q", q.traceql.clone()), ("since", since)],
            TempoApi::Range => {
                let end = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let window = q.since.as_secs_f64().ceil().max(1.0) as u64;
                let start = end.saturating_sub(window);
                vec![
                    ("q", q.traceql.clone()),
                    ("start", start.to_string()),
                    ("end", end.to_string()),
                    ("step", since),
                ]
            }
        };
        // Percent-encode the parameters the way a form would (`url` does it; reqwest's
        // own `query` needs a feature this crate does not enable).
        let mut url = self.http.url(path);
        url.query_pairs_mut().clear().extend_pairs(&params);
        let path_and_query = format!("{path}?{}", url.query().unwrap_or_default());
        let mut req = self
            .http
            .request(reqwest::Method::GET, &path_and_query)
            .map_err(|detail| SourceError::Unavailable {
                backend: self.label.clone(),
                detail,
            })?
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(tenant) = tenant {
            req = req.header(TENANT_HEADER, tenant);
        }
        tracing::debug!(backend = %self.label, traceql = %q.traceql, "querying tempo");
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body = read_limited(resp, ANSWER_LIMIT)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => self.transport_error(&e),
                BodyError::TooLarge(limit) => SourceError::BadResponse {
                    backend: self.label.clone(),
                    detail: format!("answer larger than {limit} bytes"),
                },
            })?;
        if !status.is_success() {
            return Err(self.status_error(status, &body, path));
        }
        let parsed = match self.api {
            TempoApi::Instant => response::parse_instant(&body),
            TempoApi::Range => response::parse_range(&body),
        };
        parsed.map_err(|e| SourceError::BadResponse {
            backend: self.label.clone(),
            detail: format!("cannot read TraceQL metrics answer: {e}"),
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> SourceError {
        let detail = describe_reqwest_error(e);
        if e.is_connect() {
            SourceError::Connect {
                backend: self.label.clone(),
                detail,
            }
        } else {
            SourceError::Unavailable {
                backend: self.label.clone(),
                detail,
            }
        }
    }

    fn status_error(&self, status: StatusCode, body: &[u8], path: &str) -> SourceError {
        let backend = self.label.clone();
        let text = error_snippet(body);
        let with_body = |prefix: String| {
            if text.is_empty() {
                prefix
            } else {
                format!("{prefix}: {text}")
            }
        };
        let code = status.as_u16();
        match code {
            401 | 403 => SourceError::PermissionDenied {
                backend,
                detail: with_body(format!("HTTP {code}")),
            },
            404 => SourceError::BadQuery {
                backend,
                detail: match self.api {
                    TempoApi::Instant => format!(
                        "endpoint {path} not found (HTTP 404): Tempo before 2.6 has no instant \
                         TraceQL metrics API; configure this backend to use the range API"
                    ),
                    TempoApi::Range => format!(
                        "endpoint {path} not found (HTTP 404): TraceQL metrics need Tempo 2.4 \
                         or later with the metrics querier enabled"
                    ),
                },
            },
            // Tempo 3.0's `fail_on_high_lag`: the live store is behind, the answer would be
            // incomplete (Tempo `modules/livestore/live_store.go`, `errLagged`).
            500 if text.contains(LAGGED) => SourceError::Unavailable {
                backend,
                detail: format!(
                    "HTTP 500: Tempo's live store lags behind ingest (fail_on_high_lag): {text}"
                ),
            },
            429 | 500..=599 => SourceError::Unavailable {
                backend,
                detail: with_body(format!("HTTP {code}")),
            },
            // Tempo 3.0 refuses a window inside `query_end_cutoff` (Tempo
            // `modules/frontend/metrics_query_handler.go`, `clampInstantQueryEnd`).
            400 if text.contains(WITHIN_CUTOFF) => SourceError::BadQuery {
                backend,
                detail: format!(
                    "HTTP 400: {text}: the window must be longer than Tempo's \
                     query_end_cutoff (30s by default)"
                ),
            },
            // 400 is Tempo's answer to a query it cannot parse; its body says why.
            _ if status.is_client_error() => SourceError::BadQuery {
                backend,
                detail: with_body(format!("HTTP {code}")),
            },
            _ => SourceError::BadResponse {
                backend,
                detail: format!("unexpected HTTP status {code}"),
            },
        }
    }
}
