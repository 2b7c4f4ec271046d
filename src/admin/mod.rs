//! The admin HTTP server: `/metrics` (OpenMetrics text), `/healthz` (live),
//! `/readyz` (ready: listening with a valid configuration — never a backend's health),
//! `/debug/signals` (what every ScaledObject's trigger last answered, as JSON).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::scaler::Board;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    board: Arc<Board>,
    ready: Arc<AtomicBool>,
}

/// The admin routes. `ready` is flipped by the server once every listener is up, and
/// back to false when it starts draining.
pub fn router(registry: Arc<Registry>, board: Arc<Board>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/debug/signals", get(debug_signals))
        .with_state(AdminState {
            registry,
            board,
            ready,
        })
}

async fn debug_signals(State(s): State<AdminState>) -> impl IntoResponse {
    axum::Json(s.board.debug_json())
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
