//! The Prometheus fake: answers every instant query with one sample, instantly, and counts
//! the queries, which (c) compares with KEDA's built-in scaler's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Answers every instant query with one sample, instantly, and counts the queries.
pub async fn fake_prometheus(counter: Arc<AtomicU64>) -> SocketAddr {
    use axum::routing::any;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new().route(
        "/api/v1/query",
        any(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                (
                    [("content-type", "application/json")],
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1724240000.123,"0.25"]}]}}"#,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
