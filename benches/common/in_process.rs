//! The scaler in the bench's own process (`core`, `state_memory`), its default Prometheus a
//! fake that answers every instant query with one sample, so every GetMetrics has a value.

use std::time::Duration;

use slo_scaler::cli::{Cli, Command};
use slo_scaler::scaler::ScalerService;
use slo_scaler::server::Server;

/// Starts the fake Prometheus on a loopback port of the current runtime.
async fn fake_prometheus() -> std::net::SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/api/v1/query",
        post(|| async {
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1724240000,"0.231"]}]}}"#
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `slo-scaler serve` on loopback ports chosen by the system, reading the fake Prometheus,
/// with the cache TTL given.
#[allow(dead_code)] // stream_cost starts it with more flags
pub async fn start_scaler(cache_ttl: &str) -> Server {
    start_scaler_with(&["--cache-ttl", cache_ttl]).await
}

/// `slo-scaler serve` on loopback ports, reading the fake Prometheus, with `flags` added.
pub async fn start_scaler_with(flags: &[&str]) -> Server {
    let url = format!("default=http://{}", fake_prometheus().await);
    let mut argv = vec!["slo-scaler", "serve"];
    argv.extend(crate::loopback::LOOPBACK_ADDRS);
    argv.extend(["--prometheus", &url]);
    argv.extend(flags);
    let Command::Serve(args) = <Cli as clap::Parser>::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    Server::start(args).await.unwrap()
}

/// The server's ExternalScaler service, to call its handlers straight; streams end when the
/// returned sender is dropped.
#[allow(dead_code)] // stream_cost calls the server over gRPC
pub fn service(server: &Server) -> (ScalerService, tokio::sync::watch::Sender<bool>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let service = ScalerService::new(
        server.engine.clone(),
        server.board.clone(),
        5_000,
        Duration::from_secs(5),
        stopped,
    );
    (service, stop)
}
