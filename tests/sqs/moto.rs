//! A real SQS API for the tests: moto's server on a free loopback port, behind a proxy
//! that counts the actions it forwards.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use http::StatusCode;

/// Where `moto_server` is: `$MOTO_SERVER`, else `.venv-test/bin/moto_server` in the repo.
fn moto_server_path() -> PathBuf {
    match std::env::var_os("MOTO_SERVER") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/moto_server"),
    }
}

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT` of the server itself.
    pub url: String,
}

impl Moto {
    /// Starts moto with default settings (no IAM checks).
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Starts moto with extra environment variables for its process.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "moto_server not found at {}: the SQS tests need a real SQS API. Install it with \
             `scripts/install-moto.sh` (creates .venv-test), or set MOTO_SERVER to a moto_server binary",
            path.display()
        );
        let mut child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // Werkzeug prints the bound port, then one line per request: keep draining so
        // moto never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("moto_server did not report its port within 60s");
            }
        };
        Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts per AWS action of the requests a [`CountingProxy`] forwarded.
#[derive(Default)]
pub struct Counts {
    by_action: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl Counts {
    pub fn get(&self, action: &str) -> usize {
        let map = self.by_action.lock().unwrap_or_else(|e| e.into_inner());
        map.get(action).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    fn add(&self, action: String) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut map = self.by_action.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(action).or_default() += 1;
    }
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    counts: Arc<Counts>,
}

/// An HTTP proxy in front of moto that records each request's action: the
/// `X-Amz-Target` of JSON-protocol calls (SQS), or the `Action` form field of
/// query-protocol calls (STS).
pub struct CountingProxy {
    pub url: String,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> CountingProxy {
        let counts = Arc::new(Counts::default());
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            client: reqwest::Client::new(),
            counts: counts.clone(),
        });
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingProxy { url, counts, task }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn action_of(headers: &http::HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_string()
}

async fn forward(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    st.counts.add(action_of(&parts.headers, &body));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    headers.remove(http::header::CONTENT_LENGTH);
    let answer = st
        .client
        .request(parts.method, format!("{}{path}", st.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(answer) = answer else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut builder = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != http::header::CONTENT_LENGTH
            && name != http::header::TRANSFER_ENCODING
            && name != http::header::CONNECTION
        {
            builder = builder.header(name, value);
        }
    }
    let Ok(bytes) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    builder
        .body(Body::from(bytes))
        .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY))
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
