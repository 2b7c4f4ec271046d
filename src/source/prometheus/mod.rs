//! The Prometheus source: instant queries against named, operator-configured backends.
//!
//! Queries go as form-encoded `POST /api/v1/query` (long queries fit), with
//! Prometheus' own `timeout` set to ours so an abandoned query stops evaluating.

mod response;

use std::collections::HashMap;
use std::time::Duration;

use super::http::{
    describe_reqwest_error, read_limited, BodyError, HttpBackend, HttpBackendConfig,
    HttpConfigError,
};
use super::{PromQuery, Reading, SourceError};

pub use response::parse_response;

/// Every configured Prometheus backend, by name.
pub struct PrometheusSource {
    backends: HashMap<String, HttpBackend>,
    /// Sent as Prometheus' own `timeout`, so an abandoned query stops evaluating.
    timeout: Duration,
}

/// Bodies larger than this are refused (a scalar answer is a few hundred bytes).
const MAX_BODY_BYTES: usize = 4 << 20;

impl PrometheusSource {
    /// One client per backend. `timeout` bounds connecting and is sent as Prometheus'
    /// query `timeout`; the whole call is bounded by [`crate::source::Sources::fetch`].
    pub fn new(configs: &[HttpBackendConfig], timeout: Duration) -> Result<Self, HttpConfigError> {
        let backends = configs
            .iter()
            .map(|c| Ok((c.name.clone(), HttpBackend::new(c, timeout)?)))
            .collect::<Result<_, HttpConfigError>>()?;
        Ok(PrometheusSource { backends, timeout })
    }

    pub fn has_backend(&self, name: &str) -> bool {
        self.backends.contains_key(name)
    }

    pub fn backend_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    /// Runs one instant query. Unbounded in time: [`crate::source::Sources::fetch`]
    /// bounds it and records it.
    pub async fn fetch(&self, q: &PromQuery) -> Result<Reading, SourceError> {
        let label = format!("prometheus/{}", q.backend);
        let Some(backend) = self.backends.get(&q.backend) else {
            return Err(SourceError::UnknownBackend {
                kind: "prometheus",
                name: q.backend.clone(),
            });
        };
        self.query(backend, &label, &q.promql).await
    }

    async fn query(
        &self,
        backend: &HttpBackend,
        label: &str,
        promql: &str,
    ) -> Result<Reading, SourceError> {
        let timeout = format!("{}ms", self.timeout.as_millis().max(1));
        let req = backend
            .request(reqwest::Method::POST, "api/v1/query")
            .map_err(|detail| SourceError::Unavailable {
                backend: label.to_string(),
                detail,
            })?
            .form(&[("query", promql), ("timeout", timeout.as_str())]);
        let map_err = |e: reqwest::Error| {
            if e.is_connect() {
                SourceError::Connect {
                    backend: label.to_string(),
                    detail: describe_reqwest_error(&e),
                }
            } else {
                SourceError::Unavailable {
                    backend: label.to_string(),
                    detail: describe_reqwest_error(&e),
                }
            }
        };
        let resp = req.send().await.map_err(map_err)?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => map_err(e),
                BodyError::TooLarge(limit) => SourceError::BadResponse {
                    backend: label.to_string(),
                    detail: format!("answer larger than {limit} bytes"),
                },
            })?;
        parse_response(label, status, &body)
    }
}
