//! The span sender: applications' exporters on other nodes, OTLP/gRPC requests of
//! pre-encoded spans at a set rate (or as fast as the receiver takes them), on a thread of
//! its own at a lower priority.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prost::Message;
use tonic::transport::Channel;

use crate::raw_export;
use crate::spans::{service_spans, unix_ns};
use crate::workload::SERVICES;

/// Spans per OTLP request, as the SDK batch processor sends them by default.
pub const SPANS_PER_REQUEST: usize = 512;

/// OTLP connections of the span sender, and its requests in flight at most.
pub const OTLP_CONNECTIONS: usize = 4;
const OTLP_IN_FLIGHT: usize = 16;

/// One pre-encoded request per service, ending now.
pub fn span_bodies() -> Vec<Bytes> {
    let now = unix_ns(SystemTime::now());
    let mut seed = now;
    (0..SERVICES)
        .map(|s| {
            Bytes::from(
                service_spans(&format!("svc-{s}"), SPANS_PER_REQUEST, now, &mut seed)
                    .encode_to_vec(),
            )
        })
        .collect()
}

/// Sends spans at `rate` spans/s (0: as fast as the receiver takes them, `OTLP_IN_FLIGHT`
/// at a time) over `OTLP_CONNECTIONS` connections; counts accepted and refused spans.
pub struct Sender {
    pub rate: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub behind: AtomicU64,
    pub stop: AtomicBool,
    pub bodies: RwLock<Arc<Vec<Bytes>>>,
}

impl Sender {
    pub fn run(self: Arc<Self>, channels: Vec<Channel>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("span-sender".into())
            .spawn(move || {
                // The sender stands in for exporters on other nodes: at a lower priority
                // (as the scaler's own receiver threads are), its CPU does not delay the
                // KEDA calls (b) measures, on the client's side or the server's. What it
                // delivers is still counted: (d) and "sender behind".
                // This thread, and the threads it starts: the receiver threads' niceness.
                slo_scaler::server::lower_thread_priority()
                    .expect("lower the span sender's priority");
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("sender runtime");
                rt.block_on(self.send(channels));
            })
            .expect("sender thread")
    }

    async fn send(self: Arc<Self>, channels: Vec<Channel>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(OTLP_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut sent, mut n) = (0u64, 0usize);
        let mut rate_since = (0u64, Instant::now(), 0u64);
        let mut refreshed = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let rate = self.rate.load(Ordering::Relaxed);
            if rate != rate_since.0 {
                rate_since = (rate, Instant::now(), sent);
            }
            // Fresh timestamps every few seconds: the signals read recent windows.
            if refreshed.elapsed() > Duration::from_secs(5) {
                let fresh = tokio::task::spawn_blocking(span_bodies)
                    .await
                    .expect("bodies");
                *self.bodies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                refreshed = Instant::now();
            }
            let due = if rate == 0 {
                u64::MAX
            } else {
                let since = rate_since.1.elapsed().as_secs_f64();
                rate_since.2 + (since * rate as f64 / SPANS_PER_REQUEST as f64) as u64
            };
            let bodies = Arc::clone(&self.bodies.read().unwrap_or_else(|e| e.into_inner()));
            while sent < due {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    if rate != 0 {
                        // Behind schedule: counted, and the schedule moves on.
                        self.behind.fetch_add(due - sent, Ordering::Relaxed);
                        sent = due;
                    }
                    break;
                };
                let channel = channels[n % channels.len()].clone();
                let body = bodies[n % bodies.len()].clone();
                n += 1;
                sent += 1;
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    if raw_export::try_export(channel, body).await {
                        me.accepted
                            .fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                    } else {
                        me.refused
                            .fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                    }
                    drop(permit);
                });
            }
            if rate == 0 {
                let _ = Arc::clone(&permits).acquire_owned().await.map(drop);
            } else {
                tick.tick().await;
            }
        }
    }
}
