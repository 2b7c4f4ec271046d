//! Hostile callers against the scaler's gRPC port: whatever they send, the per-ScaledObject
//! state stays bounded by `--max-signals`, the overflow is counted, and `/metrics` stays
//! scrapeable; distinct raw queries stay within the signal cache's byte bound. Readers of
//! the admin port: the board's views send a bounded number of answers at once.

#[path = "../common/mod.rs"]
mod common;

use common::scaler::{so, Scaler};
use futures::StreamExt;
use slo_scaler::proto::GetMetricsRequest;

/// 50,000 distinct ScaledObjects with 200-character names in 50,000 namespaces-worth of
/// variety, each asking once (a `source: otlp` trigger needs no backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_distinct_callers_leave_metrics_bounded() {
    const CALLERS: usize = 50_000;
    const MAX_SIGNALS: u64 = 5_000;
    let scaler = Scaler::start(&[]).await;
    let client = scaler.client.clone();
    let long = "x".repeat(190);
    let results = futures::stream::iter(0..CALLERS)
        .map(|i| {
            let mut client = client.clone();
            let mut r = so(
                &format!("{long}-{i:09}"),
                &[
                    ("signal", "rps"),
                    ("source", "otlp"),
                    ("service", "order-service"),
                    ("threshold", "10"),
                ],
            );
            r.namespace = format!("ns-{}", i % 997);
            async move {
                client
                    .get_metrics(GetMetricsRequest {
                        scaled_object_ref: Some(r),
                        metric_name: "rps-order-service".into(),
                    })
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    // Every caller is answered: with the value, or, in a fresh store's first seconds, with
    // the rate's warm-up error (no span yet is not a rate of 0).
    let answered = |r: &Result<(), tonic::Status>| match r {
        Ok(()) => true,
        Err(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("rate not known yet")
        }
    };
    assert!(results.iter().all(answered), "every caller answered");

    let server = scaler.server.as_ref().unwrap();
    assert!(
        server.board.len() <= MAX_SIGNALS,
        "board holds {} entries",
        server.board.len()
    );
    let (status, text) = scaler.get("/metrics").await;
    assert_eq!(status, 200);
    // At most --max-signals entries × 9 series (value, threshold, activation, age, active,
    // four states) × under 560 bytes a line with the longest Kubernetes names: 25 MB.
    let bound = MAX_SIGNALS as usize * 9 * 560;
    assert!(
        text.len() < bound,
        "/metrics is {} bytes (bound {bound})",
        text.len()
    );
    let evicted: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("slo_scaler_signals_evicted_total "))
        .expect("the overflow is counted")
        .parse()
        .unwrap();
    assert!(
        evicted >= (CALLERS as u64 - MAX_SIGNALS) as f64,
        "evicted {evicted}"
    );
    let (_, debug) = scaler.get("/debug/signals").await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&debug).unwrap();
    assert!(rows.len() as u64 <= MAX_SIGNALS);
    eprintln!(
        "{CALLERS} callers: board {} entries, /metrics {} bytes, /debug/signals {} bytes, evicted {evicted}",
        server.board.len(),
        text.len(),
        debug.len()
    );
}

/// The real binary (`slo-scaler serve`, the cache's default bounds) and Prometheus behind
/// it: many callers each send a distinct raw PromQL query of nearly the 16 KiB a raw query
/// may have, half of them valid and half refused by Prometheus (a parse error). The signal
/// cache and the board hold each query's text; peak RSS (`VmHWM`) stays under docs/limits.md's
/// bound, the cache holds at most `--cache-max-bytes` and counts what it drops. (Before the
/// cache was bounded by bytes and while it kept a refused query's slot for minutes, this run
/// peaked at 356 MiB against a bound of 223 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_raw_queries_from_many_callers_stay_within_the_memory_bound() {
    use common::prometheus::PrometheusServer;
    use slo_scaler::proto::external_scaler_client::ExternalScalerClient;

    const CALLERS: usize = 16_000;
    /// The board's bound, below its default so that the cache's share shows.
    const MAX_SIGNALS: u64 = 1_000;
    const MIB: u64 = 1 << 20;
    let prometheus = PrometheusServer::start(&[]).await;
    let scaler = binary::Scaler::start(&[
        "--prometheus",
        &format!("default={}", prometheus.url()),
        "--max-signals",
        &MAX_SIGNALS.to_string(),
    ])
    .await;
    let rest = scaler.peak_rss();
    let client = ExternalScalerClient::connect(format!("http://{}", scaler.grpc))
        .await
        .expect("connect");
    // A raw query may have 16 KiB; the caller's name and the selector take the rest.
    let pad = "x".repeat(16 * 1024 - 64);
    let outcomes = futures::stream::iter(0..CALLERS)
        .map(|i| {
            let mut client = client.clone();
            // Valid: `vector(1) or up{…}` answers 1. Refused: the selector is not closed.
            let close = if i % 2 == 0 { "}" } else { "" };
            let query = format!("vector(1) or up{{pad=\"{i:08}{pad}\"{close}");
            let mut r = so(
                &format!("raw-{i}"),
                &[
                    ("signal", "query"),
                    ("source", "prometheus"),
                    ("query", &query),
                    ("threshold", "10"),
                ],
            );
            r.namespace = format!("team-{}", i % 101);
            async move {
                common::scaler::metric(&mut client, &r)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|o| **o == Err(tonic::Code::InvalidArgument))
        .count();
    assert_eq!(
        (ok, refused),
        (CALLERS / 2, CALLERS / 2),
        "valid queries answered, the rest refused by Prometheus"
    );
    let peak = scaler.peak_rss();
    let bound = binary::raw_query_bound(rest, MAX_SIGNALS);
    eprintln!(
        "{CALLERS} distinct 16 KiB raw queries: peak RSS {} MiB (at rest {} MiB, bound {} MiB)",
        peak / MIB,
        rest / MIB,
        bound / MIB
    );
    assert!(
        peak < bound,
        "peak RSS {peak} over the stated bound {bound}"
    );
    let text = scaler.metrics().await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} in /metrics"))
            .parse()
            .unwrap()
    };
    let held = value("slo_scaler_cache_bytes");
    assert!(held <= (64 * MIB) as f64, "the cache holds {held} bytes");
    let evicted = value(r#"slo_scaler_cache_evictions_total{reason="size"}"#);
    let expired = value(r#"slo_scaler_cache_evictions_total{reason="expired"}"#);
    eprintln!(
        "cache: {} entries, {:.1} MiB held, {evicted} dropped for size, {expired} expired",
        value("slo_scaler_cache_entries"),
        held / MIB as f64
    );
    assert!(evicted > 0.0, "the overflow is counted");
    assert!(
        expired > 0.0,
        "refused queries are forgotten with their error"
    );
}

/// `slo-scaler serve` as a process, for its resident memory.
mod binary {
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    /// docs/limits.md's bound on what distinct raw queries can hold: the process at rest, the board
    /// (`max_signals` triggers of up to 80 KiB each with a 16 KiB query, which it holds as
    /// the caller's metadata, the parsed trigger and the plan's query), the signal cache's
    /// byte cap (`--cache-max-bytes`, 64 MiB by default) and a quarter more for the
    /// allocator, and 32 MiB for buffers.
    pub fn raw_query_bound(rest: u64, max_signals: u64) -> u64 {
        rest + max_signals * 80 * 1024 + 64 * MIB * 5 / 4 + 32 * MIB
    }

    pub struct Scaler {
        child: Child,
        pub grpc: SocketAddr,
        admin: SocketAddr,
    }

    impl Scaler {
        pub async fn start(flags: &[&str]) -> Scaler {
            let (grpc, admin) = (super::common::free_addr(), super::common::free_addr());
            let child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
                .args(["serve", "--no-otlp", "--grpc-addr", &grpc.to_string()])
                .args(["--admin-addr", &admin.to_string()])
                .args(flags)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn slo-scaler");
            let scaler = Scaler { child, grpc, admin };
            for _ in 0..300 {
                let url = format!("http://{}/readyz", scaler.admin);
                if matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) {
                    return scaler;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("slo-scaler did not become ready");
        }

        pub async fn metrics(&self) -> String {
            reqwest::get(format!("http://{}/metrics", self.admin))
                .await
                .expect("scrape")
                .text()
                .await
                .expect("metrics text")
        }

        /// Peak resident set size so far (`VmHWM`).
        pub fn peak_rss(&self) -> u64 {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
                .expect("the scaler is running");
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmHWM in /proc/PID/status");
            kib * 1024
        }
    }

    impl Drop for Scaler {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The admin routes of a server with the default settings, ready.
fn admin() -> axum::Router {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use clap::Parser as _;
    use slo_scaler::cli::{Cli, Command};
    use slo_scaler::scaler::{Board, BoardConfig};
    use slo_scaler::telemetry::Metrics;

    let Command::Serve(args) = Cli::try_parse_from(["slo-scaler", "serve"])
        .unwrap()
        .command
    else {
        panic!("not serve");
    };
    let settings = args.backends.resolve(true).unwrap();
    let (registry, metrics) = Metrics::standalone();
    let metrics = Arc::new(metrics);
    let engine = slo_scaler::server::build_engine(&settings, metrics.clone(), None).unwrap();
    let board = Board::new(
        BoardConfig {
            max_signals: 10,
            idle_expiry: std::time::Duration::from_secs(60),
        },
        Default::default(),
    );
    slo_scaler::admin::router(
        Arc::new(registry),
        Arc::new(board),
        metrics,
        Arc::new(AtomicBool::new(true)),
        Arc::new(engine),
    )
}

/// `GET path` of the admin routes, without a socket: the answer, its body not yet sent.
async fn get(admin: &axum::Router, path: &str) -> axum::response::Response {
    use tower::ServiceExt as _;
    let request = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    admin.clone().oneshot(request).await.unwrap()
}

/// Each board view (`/metrics`, `/debug/signals`: up to tens of MB an answer, docs/limits.md)
/// is built and sent at most `BOARD_VIEWS_AT_ONCE` times at once, an answer holding its
/// place until its body is sent; past it, a request waits up to `PLACE_WAIT` for a place,
/// then gets 503 with `Retry-After`. The probes, and the other view, answer meanwhile.
#[tokio::test]
async fn board_views_are_bounded_at_once_and_probes_always_answer() {
    use axum::http::{header, StatusCode};
    use slo_scaler::admin::BOARD_VIEWS_AT_ONCE;

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
        // A request past the places waits for one, then is told to retry.
        let asked = std::time::Instant::now();
        let busy = get(&admin, view).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE, "{view}");
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        assert!(asked.elapsed() >= slo_scaler::admin::PLACE_WAIT, "{view}");
        for path in ["/healthz", "/readyz", other] {
            assert_eq!(get(&admin, path).await.status(), StatusCode::OK, "{path}");
        }
        // One that waits while a body is sent to the end gets that place.
        let waiting = tokio::spawn({
            let admin = admin.clone();
            async move { get(&admin, view).await.status() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let sent = unsent.pop().unwrap().into_body();
        axum::body::to_bytes(sent, usize::MAX).await.unwrap();
        assert_eq!(waiting.await.unwrap(), StatusCode::OK, "{view}");
    }
}
