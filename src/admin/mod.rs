//! The admin HTTP server: `/metrics` (OpenMetrics text), `/healthz` (live),
//! `/readyz` (ready: listening with a valid configuration — never a backend's health),
//! `/debug/signals` (what every ScaledObject's trigger last answered, as JSON),
//! `/api/v1/analysis` (canary analysis, see `crate::analysis`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::scaler::{Board, Engine};

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    board: Arc<Board>,
    ready: Arc<AtomicBool>,
    engine: Arc<Engine>,
}

/// The admin routes. `ready` is flipped by the server once every listener is up, and
/// back to false when it starts draining.
pub fn router(
    registry: Arc<Registry>,
    board: Arc<Board>,
    ready: Arc<AtomicBool>,
    engine: Arc<Engine>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/debug/signals", get(debug_signals))
        .route("/api/v1/analysis", get(analysis))
        .with_state(AdminState {
            registry,
            board,
            ready,
            engine,
        })
}

async fn analysis(
    State(s): State<AdminState>,
    query: Result<
        axum::extract::Query<Vec<(String, String)>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> impl IntoResponse {
    let pairs = match query {
        Ok(axum::extract::Query(pairs)) => pairs,
        Err(e) => {
            let body = serde_json::json!({
                "error": format!("invalid query string: {}", e.body_text()),
                "params": [{"param": "query", "message": "not a valid query string"}],
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body));
        }
    };
    match crate::analysis::run(&s.engine, &pairs).await {
        Ok(answer) => (
            StatusCode::OK,
            axum::Json(serde_json::to_value(answer).unwrap_or_default()),
        ),
        Err(e) => (
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            axum::Json(e.body()),
        ),
    }
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
