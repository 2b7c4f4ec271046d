//! (a) Saturation: the scaler's cache-hit GetMetrics, its Health/Check and the bare
//! ExternalScaler (`common/bare.rs`), each called as fast as answered from the same client
//! with the same concurrency, in alternating rounds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::GetMetricsRequest;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::args::Args;
use crate::bare;
use crate::planning::Planned;
use crate::record::median;
use crate::report::Report;
use crate::scaler::{connect, Scaler};
use crate::workload::Kind;

/// Saturation: connections × concurrent calls per connection (as h2load's `-c 8 -m 16`).
pub const SAT_CONNECTIONS: usize = 8;
pub const SAT_STREAMS: usize = 16;

/// The saturation round's connections to one server.
async fn connections(addr: SocketAddr) -> Vec<Channel> {
    let mut v = Vec::new();
    for _ in 0..SAT_CONNECTIONS {
        v.push(connect(addr).await);
    }
    v
}

/// [`saturate`] with the cache-hit GetMetrics `request`.
async fn saturate_get_metrics(
    channels: &[Channel],
    how_long: Duration,
    request: &GetMetricsRequest,
) -> (f64, u64) {
    let request = request.clone();
    saturate(channels, how_long, move |c| {
        let request = request.clone();
        async move {
            ExternalScalerClient::new(c)
                .get_metrics(request)
                .await
                .is_ok()
        }
    })
    .await
}

/// Calls `call` from `SAT_CONNECTIONS × SAT_STREAMS` loops for `how_long`; calls per
/// second answered OK, and the failures.
async fn saturate<F, Fut>(channels: &[Channel], how_long: Duration, call: F) -> (f64, u64)
where
    F: Fn(Channel) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + how_long;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for channel in channels {
        for _ in 0..SAT_STREAMS {
            let (channel, call) = (channel.clone(), call.clone());
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    if call(channel.clone()).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

/// The bare service on its own runtime and threads, as the scaler's process has them;
/// its address.
fn start_bare(nproc: usize) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(nproc)
            .enable_all()
            .build()
            .expect("bare runtime");
        rt.block_on(async {
            let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())
                .expect("bind")
                .with_nodelay(Some(true));
            let _ = addr_tx.send(incoming.local_addr().expect("address"));
            bare::serve_bare(incoming).await;
        });
    });
    addr_rx.recv().expect("the bare service's address")
}

/// A GetMetrics the scaler answers from its cache: a planned Prometheus ScaledObject's
/// (the first ScaledObject's if there is none), asked once.
async fn cache_hit_request(planned: &Planned) -> GetMetricsRequest {
    let sos = &planned.sos;
    let hit = sos
        .iter()
        .find(|(k, _)| *k == Kind::Prometheus)
        .map_or_else(|| sos[0].1.clone(), |(_, so)| so.clone());
    let mut client = ExternalScalerClient::new(planned.channels[0].clone());
    let spec = client
        .get_metric_spec(hit.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    let request = GetMetricsRequest {
        scaled_object_ref: Some(hit.clone()),
        metric_name: spec.metric_specs[0].metric_name.clone(),
    };
    client
        .get_metrics(request.clone())
        .await
        .expect("a cache-hit GetMetrics answers");
    request
}

/// (a) Saturation, alternating: the scaler's cache-hit GetMetrics, its Health/Check, and
/// the bare service, from the same client with the same concurrency.
pub async fn saturation(args: &Args, scaler: &Scaler, planned: &Planned, report: &mut Report) {
    let bare_addr = start_bare(report.nproc);
    let hit_request = cache_hit_request(planned).await;
    let mut sat = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let scaler_channels = connections(scaler.grpc).await;
        let bare_channels = connections(bare_addr).await;
        let (gm, f1) =
            saturate_get_metrics(&scaler_channels, args.saturation_round, &hit_request).await;
        let (hc, f2) = saturate(&scaler_channels, args.saturation_round, |c| async move {
            HealthClient::new(c)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        })
        .await;
        let (bare, f3) =
            saturate_get_metrics(&bare_channels, args.saturation_round, &hit_request).await;
        eprintln!(
            "saturation round {}: GetMetrics {gm:.0}/s, Health/Check {hc:.0}/s, bare {bare:.0}/s",
            round + 1
        );
        report.sat_failures += f1 + f2 + f3;
        sat.0.push(gm);
        sat.1.push(hc);
        sat.2.push(bare);
    }
    report.ratio_vs_health = median(&sat.0) / median(&sat.1).max(1.0);
    report.ratio_vs_bare = median(&sat.0) / median(&sat.2).max(1.0);
    (
        report.sat_get_metrics_rps,
        report.sat_health_rps,
        report.sat_bare_rps,
    ) = sat;
}
