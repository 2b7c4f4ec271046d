//! KEDA and the HPA: each ScaledObject's GetMetricSpec → GetMetrics → IsActive every
//! `pollingInterval` and every HPA sync, from a thread of their own (see the bench's story
//! in `main.rs`), and (b)'s Health/Check baseline at the same rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::record::Record;
use crate::scaler::connect;
use crate::spans::splitmix;

/// The HPA controller's sync period (`--horizontal-pod-autoscaler-sync-period`).
pub const HPA_SYNC: Duration = Duration::from_secs(15);

/// One KEDA cycle for a ScaledObject: GetMetricSpec → GetMetrics → IsActive.
pub async fn keda_cycle(
    client: &mut ExternalScalerClient<Channel>,
    so: &ScaledObjectRef,
    record: &Record,
    phase: usize,
) {
    let spec = match client.get_metric_spec(so.clone()).await {
        Ok(r) => r.into_inner(),
        Err(e) => return record.failure(phase, "GetMetricSpec", &e),
    };
    let Some(metric_name) = spec.metric_specs.first().map(|m| m.metric_name.clone()) else {
        return;
    };
    let started = Instant::now();
    let answer = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name,
        })
        .await;
    record.latency(phase, started.elapsed());
    record.calls.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = answer {
        record.failure(phase, "GetMetrics", &e);
    }
    if let Err(e) = client.is_active(so.clone()).await {
        record.failure(phase, "IsActive", &e);
    }
}

/// KEDA's and the HPA's calls, and (b)'s Health/Check baseline: on a thread of their own
/// with a single-threaded runtime and their own connections, as KEDA is a process of its
/// own. The latency (b) measures is then the scaler's and the transport's, not this
/// process's other work (the fake Prometheus, the planning client) or a hop between its
/// threads.
pub struct Keda {
    pub grpc: SocketAddr,
    pub connections: usize,
    pub scaled_objects: Vec<ScaledObjectRef>,
    pub polling_interval: Duration,
    pub record: Arc<Record>,
    pub health_record: Arc<Record>,
    pub phase: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    /// When the first calls are due.
    pub start: Instant,
}

impl Keda {
    /// Polls until `stop`.
    pub fn run(self) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("keda".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("keda runtime");
                rt.block_on(self.poll());
            })
            .expect("keda thread")
    }

    async fn poll(self) {
        let mut channels = Vec::new();
        for _ in 0..self.connections {
            channels.push(connect(self.grpc).await);
        }
        let start = tokio::time::Instant::from_std(self.start);
        let mut seed = 0x5eed_u64;
        for (i, so) in self.scaled_objects.iter().enumerate() {
            for interval in [self.polling_interval, HPA_SYNC] {
                let offset =
                    Duration::from_nanos(splitmix(&mut seed) % interval.as_nanos().max(1) as u64);
                let mut client = ExternalScalerClient::new(channels[i % channels.len()].clone());
                let (so, record) = (so.clone(), Arc::clone(&self.record));
                let (phase, stop) = (Arc::clone(&self.phase), Arc::clone(&self.stop));
                tokio::spawn(async move {
                    let mut next = start + offset;
                    loop {
                        tokio::time::sleep_until(next).await;
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let p = phase.load(Ordering::Relaxed) as usize;
                        keda_cycle(&mut client, &so, &record, p).await;
                        next += interval;
                    }
                });
            }
        }
        // The same-run baseline of (b): tonic's own Health/Check on the same server and
        // connection, at the rate KEDA's calls come, in the same phases.
        let calls_per_second = self.scaled_objects.len() as f64
            * (1.0 / self.polling_interval.as_secs_f64() + 1.0 / HPA_SYNC.as_secs_f64());
        let mut client = HealthClient::new(channels[0].clone());
        let (record, phase, stop) = (
            Arc::clone(&self.health_record),
            Arc::clone(&self.phase),
            Arc::clone(&self.stop),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                start,
                Duration::from_secs_f64(1.0 / calls_per_second.max(1.0)),
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Instant::now();
                let ok = client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok();
                if ok {
                    record.latency(phase.load(Ordering::Relaxed) as usize, started.elapsed());
                }
            }
        });
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
