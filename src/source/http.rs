//! HTTP plumbing shared by the HTTP backends (Prometheus, Tempo): one configured
//! client per named backend, with the operator's credentials and CA.
//!
//! Credentials are read from files at request time, so rotated tokens are picked up,
//! and they never appear in `Debug` output or logs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

/// How to reach one named HTTP backend. Built by the operator's flags.
#[derive(Clone, Default)]
pub struct HttpBackendConfig {
    /// The backend's name, as triggers refer to it (`backend: NAME`).
    pub name: String,
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// File holding a bearer token (sent as `Authorization: Bearer …`).
    pub bearer_token_file: Option<PathBuf>,
    /// File holding `user:password` for basic auth.
    pub basic_auth_file: Option<PathBuf>,
    /// Extra headers sent on every request.
    pub headers: Vec<(String, String)>,
    /// PEM bundle of CAs to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for HttpBackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: print names only.
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpBackendConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("basic_auth_file", &self.basic_auth_file)
            .field("headers", &header_names)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A bad backend configuration; the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    #[error("backend {backend:?}: invalid url {url:?}: {reason}")]
    Url {
        backend: String,
        url: String,
        reason: String,
    },
    #[error("backend {backend:?}: invalid header {header:?}")]
    Header { backend: String, header: String },
    #[error("backend {backend:?}: cannot read CA file {path}: {reason}")]
    Ca {
        backend: String,
        path: String,
        reason: String,
    },
    #[error("backend {backend:?}: cannot build HTTP client: {reason}")]
    Client { backend: String, reason: String },
}

/// A ready-to-use client for one named backend.
#[derive(Clone)]
pub struct HttpBackend {
    pub name: String,
    base: reqwest::Url,
    client: reqwest::Client,
    bearer_token_file: Option<PathBuf>,
    basic_auth_file: Option<PathBuf>,
}

impl fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBackend")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl HttpBackend {
    /// Builds the client. `timeout` bounds every request end to end.
    pub fn new(config: &HttpBackendConfig, timeout: Duration) -> Result<Self, HttpConfigError> {
        let name = config.name.clone();
        let mut base = reqwest::Url::parse(&config.url).map_err(|e| HttpConfigError::Url {
            backend: name.clone(),
            url: config.url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HttpConfigError::Url {
                backend: name,
                url: config.url.clone(),
                reason: "scheme must be http or https".into(),
            });
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            let bad = || HttpConfigError::Header {
                backend: name.clone(),
                header: k.clone(),
            };
            let k = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
            let mut v = HeaderValue::from_str(v).map_err(|_| bad())?;
            v.set_sensitive(true);
            headers.insert(k, v);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .default_headers(headers)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("slo-scaler/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let ca_err = |reason: String| HttpConfigError::Ca {
                backend: name.clone(),
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no certificate in file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| HttpConfigError::Client {
            backend: name.clone(),
            reason: e.to_string(),
        })?;
        Ok(HttpBackend {
            name,
            base,
            client,
            bearer_token_file: config.bearer_token_file.clone(),
            basic_auth_file: config.basic_auth_file.clone(),
        })
    }

    /// The URL of `path` (relative, e.g. `api/v1/query`) under the backend's base URL.
    pub fn url(&self, path: &str) -> reqwest::Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Starts a request with the backend's credentials attached. Fails (without the
    /// secret in the message) when a credential file cannot be read.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read bearer token file {}: {e}", path.display()))?;
            req = req.bearer_auth(token.trim());
        }
        if let Some(path) = &self.basic_auth_file {
            let creds = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read basic auth file {}: {e}", path.display()))?;
            let creds = creds.trim();
            let (user, pass) = creds.split_once(':').ok_or_else(|| {
                format!("basic auth file {} must hold user:password", path.display())
            })?;
            req = req.basic_auth(user, Some(pass));
        }
        Ok(req)
    }
}

/// Describes a reqwest error with its causes, without the URL.
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    // The outermost error repeats the URL; its causes say what went wrong.
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_under_base_path() {
        let b = HttpBackend::new(
            &HttpBackendConfig {
                name: "default".into(),
                url: "http://prom.example:9090/prefix".into(),
                ..Default::default()
            },
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            b.url("api/v1/query").as_str(),
            "http://prom.example:9090/prefix/api/v1/query"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let check = |config: HttpBackendConfig| {
            assert!(HttpBackend::new(&config, Duration::from_secs(1)).is_err());
        };
        check(HttpBackendConfig {
            name: "x".into(),
            url: "not a url".into(),
            ..Default::default()
        });
        check(HttpBackendConfig {
            name: "x".into(),
            url: "ftp://host/".into(),
            ..Default::default()
        });
        check(HttpBackendConfig {
            name: "x".into(),
            url: "http://host/".into(),
            headers: vec![("bad header".into(), "v".into())],
            ..Default::default()
        });
    }

    #[test]
    fn debug_hides_header_values() {
        let c = HttpBackendConfig {
            name: "x".into(),
            url: "http://host/".into(),
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
