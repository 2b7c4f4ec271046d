//! Hostile callers against the scaler's gRPC port: whatever they send, the per-ScaledObject
//! state stays bounded by `--max-signals`, the overflow is counted, and `/metrics` stays
//! scrapeable (issue "Untrusted callers and hostile input").

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
    assert!(results.iter().all(Result::is_ok), "every caller answered");

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
