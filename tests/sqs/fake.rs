//! Fakes for what moto cannot be made to do: throttle, answer garbage, or never answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::Router;

/// A canned HTTP answer.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
}

type Bodies = Arc<Mutex<Vec<String>>>;

/// An SQS endpoint that gives every request the same answer, counts requests and keeps
/// their bodies.
pub struct FakeSqs {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    bodies: Bodies,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSqs {
    pub async fn start(canned: Canned) -> FakeSqs {
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Bodies::default();
        let state = (canned, hits.clone(), bodies.clone());
        let app = Router::new()
            .fallback(
                |State((canned, hits, bodies)): State<(Canned, Arc<AtomicUsize>, Bodies)>,
                 body: Bytes| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    bodies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let mut r = Response::builder().status(canned.status);
                    for (k, v) in &canned.headers {
                        r = r.header(*k, *v);
                    }
                    r.body(Body::from(canned.body))
                        .unwrap_or_else(|_| Response::new(Body::empty()))
                },
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake sqs");
        let url = format!("http://{}", listener.local_addr().expect("fake addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSqs {
            url,
            hits,
            bodies,
            task,
        }
    }

    /// The JSON bodies of the requests so far, parsed.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| serde_json::from_str(b).expect("a JSON request body"))
            .collect()
    }
}

impl Drop for FakeSqs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port that accepts connections and never answers.
pub struct Silent {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind silent");
        let url = format!("http://{}", listener.local_addr().expect("silent addr"));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        Silent { url, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback URL where nothing listens.
pub async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind closed");
    let addr = listener.local_addr().expect("closed addr");
    drop(listener);
    format!("http://{addr}")
}
