//! The Prometheus source: instant queries against named, operator-configured backends.
//!
//! Queries go as form-encoded `POST /api/v1/query` (long queries fit), with
//! Prometheus' own `timeout` set to ours so an abandoned query stops evaluating, and
//! `partial_response=false` so Thanos fails a query it cannot answer whole. The URL
//! may carry a path (`/select/0/prometheus` for VictoriaMetrics, a `--web.route-prefix`):
//! `api/v1/query` is resolved under it. A backend may sign its requests with AWS SigV4
//! ([`sigv4`], Amazon Managed Service for Prometheus).

mod response;
pub mod sigv4;

use std::collections::HashMap;
use std::time::Duration;

use super::http::{
    describe_reqwest_error, read_limited, BodyError, HttpBackend, HttpBackendConfig,
    HttpConfigError,
};
use super::tenant::{validate_tenant, TENANT_HEADER};
use super::{PromQuery, Reading, SourceError};
use sigv4::Signer;

pub use response::parse_response;

/// One named Prometheus backend (`--prometheus NAME=URL` and its options).
#[derive(Debug, Clone, Default)]
pub struct PrometheusBackendConfig {
    pub http: HttpBackendConfig,
    /// `--prometheus-sigv4 NAME=REGION`: sign every request with AWS SigV4 for service
    /// `aps` in this region, with credentials from the AWS default chain.
    pub sigv4_region: Option<String>,
    /// `X-Scope-OrgID` sent when a trigger names no `tenant`; `None` sends none
    /// (single-tenant Prometheus).
    pub default_tenant: Option<String>,
}

struct Backend {
    http: HttpBackend,
    signer: Option<Signer>,
    default_tenant: Option<String>,
}

/// Every configured Prometheus backend, by name.
pub struct PrometheusSource {
    backends: HashMap<String, Backend>,
    /// Sent as Prometheus' own `timeout`, so an abandoned query stops evaluating.
    timeout: Duration,
}

/// Bodies larger than this are refused (a scalar answer is a few hundred bytes).
const MAX_BODY_BYTES: usize = 4 << 20;

impl PrometheusSource {
    /// One client per backend. `timeout` bounds connecting and is sent as Prometheus'
    /// query `timeout`; the whole call is bounded by [`crate::source::Sources::fetch`].
    pub fn new(
        configs: &[PrometheusBackendConfig],
        timeout: Duration,
    ) -> Result<Self, HttpConfigError> {
        let backends = configs
            .iter()
            .map(|c| {
                let backend = Backend {
                    http: HttpBackend::new(&c.http, timeout)?,
                    signer: c.sigv4_region.as_deref().map(Signer::default_chain),
                    default_tenant: c.default_tenant.clone(),
                };
                Ok((c.http.name.clone(), backend))
            })
            .collect::<Result<_, HttpConfigError>>()?;
        Ok(PrometheusSource { backends, timeout })
    }

    /// Signs `name`'s requests with `signer` (tests and tools give their own credentials).
    pub fn set_signer(&mut self, name: &str, signer: Signer) {
        if let Some(b) = self.backends.get_mut(name) {
            b.signer = Some(signer);
        }
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
        let tenant = q.tenant.as_deref().or(backend.default_tenant.as_deref());
        if let Some(tenant) = tenant {
            validate_tenant(tenant).map_err(|detail| SourceError::BadQuery {
                backend: label.clone(),
                detail,
            })?;
        }
        self.query(backend, &label, tenant, &q.promql).await
    }

    async fn query(
        &self,
        backend: &Backend,
        label: &str,
        tenant: Option<&str>,
        promql: &str,
    ) -> Result<Reading, SourceError> {
        let timeout = format!("{}ms", self.timeout.as_millis().max(1));
        let unavailable = |detail: String| SourceError::Unavailable {
            backend: label.to_string(),
            detail,
        };
        let mut req = backend
            .http
            .request(reqwest::Method::POST, "api/v1/query")
            .map_err(unavailable)?;
        if let Some(tenant) = tenant {
            // Signed along with the body when the backend signs its requests.
            req = req.header(TENANT_HEADER, tenant);
        }
        let mut req = req
            .form(&[
                ("query", promql),
                ("timeout", timeout.as_str()),
                // Thanos Query answers with the stores it reached and a warning when
                // others are down, unless asked not to (its `partial_response`, on by
                // default: docs/components/query.md); a rate summed over some stores
                // undercounts. Prometheus and the others ignore the parameter.
                ("partial_response", "false"),
            ])
            .build()
            .map_err(|e| unavailable(describe_reqwest_error(&e)))?;
        if let Some(signer) = &backend.signer {
            signer.sign(&mut req).await.map_err(|e| {
                unavailable(format!(
                    "sigv4 (region {}, service {}): {e}",
                    signer.region(),
                    sigv4::SERVICE
                ))
            })?;
        }
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
        let resp = backend.http.execute(req).await.map_err(map_err)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every query asks for a whole answer (`partial_response=false`, Thanos' parameter)
    /// next to the query and Prometheus' `timeout`: the body as a backend receives it.
    #[tokio::test]
    async fn queries_ask_for_whole_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let body = loop {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .expect("a form body has a length");
                    if request.len() >= end + 4 + length {
                        break text[end + 4..end + 4 + length].to_string();
                    }
                }
            };
            let answer = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"7"]}]}}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            conn.write_all(response.as_bytes()).await.unwrap();
            body
        });
        let config = PrometheusBackendConfig {
            http: HttpBackendConfig {
                name: "default".into(),
                url: format!("http://{addr}"),
                ..HttpBackendConfig::default()
            },
            ..PrometheusBackendConfig::default()
        };
        let source = PrometheusSource::new(&[config], Duration::from_secs(2)).unwrap();
        let got = source
            .fetch(&PromQuery {
                backend: "default".into(),
                tenant: None,
                promql: "sum(up)".into(),
            })
            .await;
        assert_eq!(got, Ok(Reading::Value(Some(7.0))));
        let body = server.await.unwrap();
        let params: Vec<&str> = body.split('&').collect();
        assert_eq!(
            params,
            [
                "query=sum%28up%29",
                "timeout=2000ms",
                "partial_response=false"
            ],
            "{body}"
        );
    }
}
