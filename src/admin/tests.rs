//! The admin router without a socket.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use clap::Parser;
use tower::ServiceExt;

use super::{router, BOARD_VIEWS_AT_ONCE};
use crate::config::BackendArgs;
use crate::scaler::{Board, BoardConfig};
use crate::telemetry::Metrics;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    backends: BackendArgs,
}

/// The admin routes of a server with the default settings, ready.
fn admin() -> Router {
    let settings = Flags::try_parse_from(["slo-scaler"])
        .unwrap()
        .backends
        .resolve(true)
        .unwrap();
    let (registry, metrics) = Metrics::standalone();
    let metrics = Arc::new(metrics);
    let engine = crate::server::build_engine(&settings, metrics.clone(), None).unwrap();
    let board = Board::new(
        BoardConfig {
            max_signals: 10,
            idle_expiry: Duration::from_secs(60),
        },
        Default::default(),
    );
    router(
        Arc::new(registry),
        Arc::new(board),
        metrics,
        Arc::new(AtomicBool::new(true)),
        Arc::new(engine),
    )
}

async fn get(admin: &Router, path: &str) -> axum::response::Response {
    let request = Request::get(path).body(Body::empty()).unwrap();
    admin.clone().oneshot(request).await.unwrap()
}

/// Each board view is built and sent at most [`BOARD_VIEWS_AT_ONCE`] times at once (an
/// answer holds its place until its body is sent); past it, 503 with `Retry-After`. The
/// probes, and the other view, answer meanwhile.
#[tokio::test]
async fn board_views_are_bounded_at_once_and_probes_always_answer() {
    let admin = admin();
    for (view, other) in [
        ("/debug/signals", "/metrics"),
        ("/metrics", "/debug/signals"),
    ] {
        let mut unsent = Vec::new();
        for _ in 0..BOARD_VIEWS_AT_ONCE {
            let answer = get(&admin, view).await;
            assert_eq!(answer.status(), StatusCode::OK, "{view}");
            unsent.push(answer);
        }
        let busy = get(&admin, view).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE, "{view}");
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        for path in ["/healthz", "/readyz", other] {
            assert_eq!(get(&admin, path).await.status(), StatusCode::OK, "{path}");
        }
        // A body sent to the end frees its place.
        let sent = unsent.pop().unwrap().into_body();
        axum::body::to_bytes(sent, usize::MAX).await.unwrap();
        assert_eq!(get(&admin, view).await.status(), StatusCode::OK, "{view}");
    }
}
