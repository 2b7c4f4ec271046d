//! (b), (c), (d): the KEDA-shaped phase, KEDA and the HPA polling every planned
//! ScaledObject while spans arrive at the set rate, then while they flood the receiver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::transport::Channel;

use crate::args::Args;
use crate::keda::{Keda, HPA_SYNC};
use crate::planning::Planned;
use crate::record::{percentiles, Record};
use crate::report::Report;
use crate::scaler::{Scaler, HANDLER_BOUNDS};
use crate::sender::{Sender, SPANS_PER_REQUEST};
use crate::{CACHE_TTL, WARM_UP};

/// (b), (c), (d): the KEDA-shaped phase while spans arrive at the set rate, then spans as
/// fast as the receiver takes them, still polled.
pub async fn keda_shaped_phase(
    args: &Args,
    scaler: &Scaler,
    queries: &AtomicU64,
    planned: &Planned,
    (otlp_channels, bodies): (Vec<Channel>, Vec<Bytes>),
    report: &mut Report,
) {
    let record = &planned.record;
    let sender = Arc::new(Sender {
        rate: AtomicU64::new(args.spans_per_second),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        behind: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        bodies: RwLock::new(Arc::new(bodies)),
    });
    let sender_thread = if args.spans_per_second > 0 {
        Some(Arc::clone(&sender).run(otlp_channels))
    } else {
        None
    };
    let phase = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let health_record = Arc::new(Record::default());
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let keda = Keda {
        grpc: scaler.grpc,
        connections: args.connections,
        scaled_objects: planned.sos.iter().map(|(_, so)| so.clone()).collect(),
        polling_interval: args.polling_interval,
        record: Arc::clone(record),
        health_record: Arc::clone(&health_record),
        phase: Arc::clone(&phase),
        stop: Arc::clone(&stop),
        start: start.into_std(),
    }
    .run();
    // Warm-up: the store's rates need whole buckets older than `--otlp-rate-settle` (6 s);
    // before that otlp rps triggers answer "not known yet", which is right, but not the
    // steady state this phase measures.
    tokio::time::sleep_until(start + WARM_UP).await;
    phase.store(2, Ordering::Relaxed);
    measure_keda_rate(args, scaler, queries, &sender, record, report).await;
    phase.store(3, Ordering::Relaxed);
    if args.spans_per_second > 0 && !args.flood.is_zero() {
        measure_flood(args, scaler, &sender, report).await;
    }
    phase.store(4, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    sender.stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || keda.join()).await;
    if let Some(t) = sender_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    report.spans_refused = sender.refused.load(Ordering::Relaxed);
    report.spans_sender_behind = sender.behind.load(Ordering::Relaxed) * SPANS_PER_REQUEST as u64;
    report.rss_end = scaler.rss();
    {
        let mut l = record.latencies.lock().unwrap_or_else(|e| e.into_inner());
        l.resize(5, Vec::new());
        report.get_metrics_keda_rate = percentiles(std::mem::take(&mut l[2]));
        report.get_metrics_flood = percentiles(std::mem::take(&mut l[3]));
        let mut l = health_record
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        l.resize(5, Vec::new());
        report.health_keda_rate = percentiles(std::mem::take(&mut l[2]));
        report.health_flood = percentiles(std::mem::take(&mut l[3]));
    }
    report.failures = record
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
}

/// (b), (c), (d) over `--duration` of the KEDA-shaped phase: the scaler's handler
/// histogram, the backend queries against KEDA's built-in scaler's, the spans taken.
async fn measure_keda_rate(
    args: &Args,
    scaler: &Scaler,
    queries: &AtomicU64,
    sender: &Sender,
    record: &Record,
    report: &mut Report,
) {
    let s0 = scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await;
    let q0 = queries.load(Ordering::Relaxed);
    let m0 = scaler
        .metric("slo_scaler_backend_requests_total", &["prometheus"])
        .await;
    let handler0 = scaler.handler_buckets().await;
    let (a0, c0, t0) = (
        sender.accepted.load(Ordering::Relaxed),
        record.calls.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(args.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let handler1 = scaler.handler_buckets().await;
    report.handler_within = HANDLER_BOUNDS
        .iter()
        .zip(handler0.iter().zip(&handler1))
        .map(|(le, (b0, b1))| (le.to_string(), b1 - b0))
        .collect();
    report.fake_queries = queries.load(Ordering::Relaxed) - q0;
    report.backend_requests_metric = scaler
        .metric("slo_scaler_backend_requests_total", &["prometheus"])
        .await
        - m0;
    report.spans_accepted_per_second =
        (sender.accepted.load(Ordering::Relaxed) - a0) as f64 / elapsed;
    report.spans_counted_per_second = (scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await
        - s0)
        / elapsed;
    report.keda_calls_per_second = (record.calls.load(Ordering::Relaxed) - c0) as f64 / elapsed;
    report.calls_per_ttl = report.fake_queries as f64 * CACHE_TTL.as_secs_f64() / elapsed;
    // KEDA's prometheus scaler: one query per GetMetricsAndActivity, from the scale loop
    // every pollingInterval and from the HPA's sync every 15 s.
    report.keda_builtin_per_ttl = report.prometheus_scaled_objects as f64
        * (CACHE_TTL.as_secs_f64() / args.polling_interval.as_secs_f64()
            + CACHE_TTL.as_secs_f64() / HPA_SYNC.as_secs_f64());
}

/// (d) at saturation: spans as fast as the receiver takes them for `--flood`.
async fn measure_flood(args: &Args, scaler: &Scaler, sender: &Sender, report: &mut Report) {
    sender.rate.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s1 = scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await;
    let (a1, t1) = (sender.accepted.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(args.flood).await;
    let flood = t1.elapsed().as_secs_f64();
    report.spans_flood_accepted_per_second =
        (sender.accepted.load(Ordering::Relaxed) - a1) as f64 / flood;
    report.spans_flood_counted_per_second = (scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await
        - s1)
        / flood;
}
