//! The admin HTTP server: `/metrics` (OpenMetrics text), `/healthz` (live),
//! `/readyz` (ready: listening with a valid configuration — never a backend's health),
//! `/debug/signals` (what every ScaledObject's trigger last answered, as JSON),
//! `/debug/backends` (each backend's recent health), `/debug/store` (the embedded trace
//! store), and `/`, the status page for people built from those three (its HTML, CSS and
//! script ship inside the binary, see [`page`]), and `/api/v1/analysis` (canary analysis,
//! see `crate::analysis`). `/metrics` and `/debug/signals` read the whole board: each sends
//! at most [`BOARD_VIEWS_AT_ONCE`] answers at once.

mod page;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::scaler::Board;
use crate::telemetry::{Metrics, OutcomeLabels};

/// At most this many answers of each board view (`/metrics`, `/debug/signals`) are built and
/// sent at once (two: Prometheus' HA pair scraping together); past it a request waits up to
/// [`PLACE_WAIT`] for a place (scrapes that overlap by chance are served a moment later, not
/// failed), then the admin port answers 503 with `Retry-After: 1`. An answer may take tens
/// of MB (docs/limits.md): the bound keeps a burst of page refreshes or slow readers from
/// multiplying that. `/healthz` and `/readyz` are never limited.
pub const BOARD_VIEWS_AT_ONCE: usize = 2;

/// How long a board view's request waits for a place: well within Prometheus' default
/// 10 s scrape timeout.
pub const PLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    engine: Arc<Engine>,
    ingest: Arc<Mutex<page::RateWindow>>,
}

/// The admin routes. `ready` is flipped by the server once every listener is up, and
/// back to false when it starts draining.
pub fn router(
    registry: Arc<Registry>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    engine: Arc<Engine>,
) -> Router {
    // Each board view its own places: page refreshes never crowd out a scrape.
    let places =
        || middleware::from_fn_with_state(Arc::new(Semaphore::new(BOARD_VIEWS_AT_ONCE)), at_most);
    Router::new()
        .route("/metrics", get(metrics_text).layer(places()))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/debug/signals", get(debug_signals).layer(places()))
        .route("/debug/backends", get(debug_backends))
        .route("/debug/store", get(debug_store))
        .merge(page::routes())
        .route("/api/v1/analysis", get(analysis))
        .with_state(AdminState {
            ingest: Arc::new(Mutex::new(page::RateWindow::new(spans_seen(&metrics)))),
            registry,
            board,
            metrics,
            ready,
            engine,
        })
}

/// Answers once one of `places` is free, holding it until the answer's body is sent (or
/// dropped); 503 when none frees within [`PLACE_WAIT`].
async fn at_most(State(places): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(Ok(place)) = tokio::time::timeout(PLACE_WAIT, places.acquire_owned()).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("busy: {BOARD_VIEWS_AT_ONCE} answers of this view are being sent; retry\n"),
        )
            .into_response();
    };
    next.run(request).await.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &place;
            frame
        }))
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

/// Spans the receivers accepted and rejected since start.
fn spans_seen(m: &Metrics) -> (u64, u64) {
    let count = |outcome| {
        m.otlp_spans
            .get(&OutcomeLabels { outcome })
            .map_or(0, |c| c.get())
    };
    (count("accepted"), count("rejected"))
}

async fn debug_backends(State(s): State<AdminState>) -> impl IntoResponse {
    axum::Json(s.metrics.backend_health.snapshot())
}

/// The embedded store: series held and evicted, spans accepted and refused (totals, and
/// per second over the last minute of page refreshes).
async fn debug_store(State(s): State<AdminState>) -> impl IntoResponse {
    let (accepted, rejected) = spans_seen(&s.metrics);
    let rates = s
        .ingest
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .observe(std::time::Instant::now(), (accepted, rejected));
    axum::Json(serde_json::json!({
        "series": s.metrics.otlp_store_series.get(),
        "seriesEvicted": s.metrics.otlp_store_series_evicted.get(),
        "spansAccepted": accepted,
        "spansRejected": rejected,
        "spansPerSecond": rates.map(|r| r.0),
        "rejectedPerSecond": rates.map(|r| r.1),
    }))
}

async fn debug_signals(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.board.debug_json(),
    )
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
