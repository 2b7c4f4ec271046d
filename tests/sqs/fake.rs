//! Fakes for what moto cannot be made to do: throttle, answer garbage, or never answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
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

/// An SQS endpoint that gives every request the same answer and counts requests.
pub struct FakeSqs {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSqs {
    pub async fn start(canned: Canned) -> FakeSqs {
        let hits = Arc::new(AtomicUsize::new(0));
        let state = (canned, hits.clone());
        let app = Router::new()
            .fallback(
                |State((canned, hits)): State<(Canned, Arc<AtomicUsize>)>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
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
        FakeSqs { url, hits, task }
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
