//! HTTP plumbing shared by the HTTP backends (Prometheus, Tempo): one configured
//! client per named backend, with the operator's credentials and CA, one limited body
//! read, and one way to quote an error body.
//!
//! Credentials (bearer token, basic auth, secret headers) are read from files at request
//! time, so rotated secrets are picked up, and they never appear in `Debug` output, logs
//! or errors. Backend URLs may not carry credentials (`http://user:pass@host` is refused,
//! with the password redacted from the message): use the basic-auth file instead.

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
    /// Extra headers sent on every request. Not for secrets: flags are visible in the
    /// process' arguments; use `header_files`.
    pub headers: Vec<(String, String)>,
    /// Headers whose value is read from a file on every request (`HEADER`, `PATH`).
    pub header_files: Vec<(String, PathBuf)>,
    /// PEM bundle of CAs to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for HttpBackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: print names only.
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpBackendConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("bearer_token_file", &self.bearer_token_file)
            .field("basic_auth_file", &self.basic_auth_file)
            .field("headers", &header_names)
            .field("header_files", &self.header_files)
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
    header_files: Vec<(HeaderName, PathBuf)>,
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
    /// Builds the client. `connect_timeout` bounds connecting only: the whole call is
    /// bounded once, by its caller (`Sources::fetch`).
    pub fn new(
        config: &HttpBackendConfig,
        connect_timeout: Duration,
    ) -> Result<Self, HttpConfigError> {
        let name = config.name.clone();
        let url_err = |reason: String| HttpConfigError::Url {
            backend: config.name.clone(),
            url: redact_url(&config.url),
            reason,
        };
        let mut base = reqwest::Url::parse(&config.url).map_err(|e| url_err(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(url_err("scheme must be http or https".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(url_err(
                "credentials in the URL are refused (they would show in the process' \
                 arguments); use a basic-auth file"
                    .into(),
            ));
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
        let mut header_files = Vec::new();
        for (k, path) in &config.header_files {
            let k = HeaderName::from_bytes(k.as_bytes()).map_err(|_| HttpConfigError::Header {
                backend: name.clone(),
                header: k.clone(),
            })?;
            header_files.push((k, path.clone()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
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
            header_files,
        })
    }

    /// Sends a request built from [`HttpBackend::request`] (after signing it, say).
    pub async fn execute(
        &self,
        req: reqwest::Request,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.client.execute(req).await
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
        for (header, path) in &self.header_files {
            let value = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the file of header {header} ({}): {e}",
                    path.display()
                )
            })?;
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
                format!(
                    "the file of header {header} ({}) does not hold a valid header value",
                    path.display()
                )
            })?;
            value.set_sensitive(true);
            req = req.header(header, value);
        }
        Ok(req)
    }
}

/// Why an answer's body could not be read.
#[derive(Debug)]
pub enum BodyError {
    Transport(reqwest::Error),
    /// The body is larger than the limit (in bytes).
    TooLarge(usize),
}

/// Reads an answer's body, refusing one larger than `limit` bytes without buffering it.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// How much of an error body is kept in an error message, in bytes.
const SNIPPET_LIMIT: usize = 512;

/// The start of an error body (or any text quoted in an error), on one line: runs of
/// whitespace and control characters become one space, and it is cut at a character
/// boundary after 512 bytes, with `…`.
pub fn error_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.len() <= SNIPPET_LIMIT {
        return one_line;
    }
    let mut cut = SNIPPET_LIMIT;
    while !one_line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &one_line[..cut])
}

/// `s` with the credentials of every `scheme://user:password@` in it replaced by `***`
/// (everything between `://` and the word's last `@`),
/// for messages and `Debug` output that quote a URL or a flag holding one.
pub fn redact_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // Up to the end of the word, not of the authority: a password may hold a raw `/`,
        // and redacting a path that holds `@` too is the safe side.
        let word_end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..word_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
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
    redact_url(&msg)
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

    #[test]
    fn error_snippets() {
        let check = |input: &[u8], expect: &str| {
            assert_eq!(error_snippet(input), expect, "{input:?}");
        };
        check(b"", "");
        check(
            b"parse error at line 1, col 3: syntax error\n",
            "parse error at line 1, col 3: syntax error",
        );
        check(b"  <html>Bad Gateway</html>\n", "<html>Bad Gateway</html>");
        check(b"a\r\n\tb\x00c", "a b c");
        check(&[b'x'; 600], &format!("{}…", "x".repeat(512)));
        check(&[0xff, b'a'], "\u{fffd}a");
        let long = "é".repeat(300);
        let cut = error_snippet(long.as_bytes());
        assert!(cut.len() <= 512 + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn urls_are_redacted() {
        let check = |input: &str, expect: &str| assert_eq!(redact_url(input), expect, "{input}");
        check("http://prom:9090/x", "http://prom:9090/x");
        check("http://user:s3cret@prom:9090/x", "http://***@prom:9090/x");
        check("https://s3cret@prom/", "https://***@prom/");
        check("http://u:p/s3cret@prom/x", "http://***@prom/x");
        check(
            "a=http://u:s3cret@a/ b=https://v:t0ken@b?q=1",
            "a=http://***@a/ b=https://***@b?q=1",
        );
        check("no url here", "no url here");
        check("http://", "http://");
        check("http://@", "http://***@");
        check("é://ü:ß@x", "é://***@x");
    }

    #[test]
    fn credentials_in_urls_are_refused_without_being_printed() {
        for url in [
            "http://user:s3cret@prom.example:9090/",
            "http://s3cret@prom.example:9090/",
            "http://user:s3cret@prom.example:bad/",
        ] {
            let config = HttpBackendConfig {
                name: "default".into(),
                url: url.into(),
                ..Default::default()
            };
            assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
            let err = HttpBackend::new(&config, Duration::from_secs(1)).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("default"), "{text}");
        }
    }

    #[test]
    fn header_files_show_paths_never_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret-key\n").unwrap();
        let config = HttpBackendConfig {
            name: "x".into(),
            url: "http://host/".into(),
            header_files: vec![("X-Api-Key".into(), path.clone())],
            ..Default::default()
        };
        let backend = HttpBackend::new(&config, Duration::from_secs(1)).unwrap();
        for text in [format!("{config:?}"), format!("{backend:?}")] {
            assert!(!text.contains("s3cret"), "{text}");
        }
        assert!(format!("{config:?}").contains("X-Api-Key"));
        let req = backend
            .request(reqwest::Method::GET, "api")
            .unwrap()
            .build()
            .unwrap();
        let value = req.headers().get("x-api-key").unwrap();
        assert_eq!(value, "s3cret-key");
        assert!(value.is_sensitive());
        assert!(!format!("{req:?}").contains("s3cret"));
        // A bad file is an error naming the header and the path, never the content.
        std::fs::write(&path, "s3cret\nsecond line").unwrap();
        let err = backend.request(reqwest::Method::GET, "api").unwrap_err();
        assert!(
            err.contains("X-Api-Key") || err.contains("x-api-key"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = backend.request(reqwest::Method::GET, "api").unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(HttpBackend::new(
            &HttpBackendConfig {
                header_files: vec![("bad header".into(), path)],
                ..config
            },
            Duration::from_secs(1)
        )
        .is_err());
    }
}
