//! Before KEDA polls: every service's first spans, then (e), every ScaledObject planned
//! (one KEDA cycle each) and the resident memory that costs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::ScaledObjectRef;
use tonic::transport::Channel;

use crate::args::Args;
use crate::keda::keda_cycle;
use crate::raw_export;
use crate::record::Record;
use crate::report::Report;
use crate::scaler::{connect, Scaler};
use crate::sender::{span_bodies, OTLP_CONNECTIONS};
use crate::workload::{scaled_object, Kind};

/// Every service has spans before the baseline RSS, so the store's series exist. Returns
/// the OTLP connections and the span bodies, for the sender.
pub async fn feed_every_service(
    scaler: &Scaler,
    report: &mut Report,
) -> (Vec<Channel>, Vec<Bytes>) {
    let otlp_channels = {
        let mut v = Vec::new();
        for _ in 0..OTLP_CONNECTIONS {
            v.push(connect(scaler.otlp_grpc).await);
        }
        v
    };
    let bodies = span_bodies();
    for (i, body) in bodies.iter().enumerate() {
        assert!(
            raw_export::try_export(otlp_channels[i % OTLP_CONNECTIONS].clone(), body.clone()).await,
            "warm-up spans accepted"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_before = scaler.rss();
    (otlp_channels, bodies)
}

/// The ScaledObjects planned in (e), the connections that planned them, and the record
/// KEDA's calls add to.
pub struct Planned {
    pub channels: Vec<Channel>,
    pub sos: Vec<(Kind, ScaledObjectRef)>,
    pub record: Arc<Record>,
}

/// (e) Plans every ScaledObject: one KEDA cycle each, 32 at a time, and the RSS it costs.
pub async fn plan_every_scaled_object(
    args: &Args,
    scaler: &Scaler,
    report: &mut Report,
) -> Planned {
    let channels = {
        let mut v = Vec::new();
        for _ in 0..args.connections {
            v.push(connect(scaler.grpc).await);
        }
        v
    };
    let sos: Vec<(Kind, ScaledObjectRef)> = (0..args.scaled_objects).map(scaled_object).collect();
    report.otlp_scaled_objects = sos.iter().filter(|(k, _)| *k == Kind::Otlp).count();
    report.prometheus_scaled_objects = sos.len() - report.otlp_scaled_objects;
    let record = Arc::new(Record::default());
    // In two halves: the first calls also make what the process makes once (the
    // connection's buffers, each thread's allocator arena, tables sized up from empty), so
    // what one more ScaledObject costs is read from the second half's growth alone.
    let half = sos.len() / 2;
    for (offset, part) in [(0, &sos[..half]), (half, &sos[half..])] {
        futures::stream::iter(part.iter().enumerate())
            .for_each_concurrent(32, |(i, (_, so))| {
                let mut client =
                    ExternalScalerClient::new(channels[(offset + i) % channels.len()].clone());
                let record = Arc::clone(&record);
                async move { keda_cycle(&mut client, so, &record, 0).await }
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if offset == 0 {
            report.rss_half = scaler.rss();
        }
    }
    report.rss_after_planning = scaler.rss();
    report.bytes_per_scaled_object =
        report.rss_after_planning.saturating_sub(report.rss_before) as f64 / sos.len() as f64;
    report.bytes_per_more_scaled_object = report.rss_after_planning.saturating_sub(report.rss_half)
        as f64
        / (sos.len() - half).max(1) as f64;
    eprintln!(
        "planned {} ScaledObjects: RSS {} → {} KiB",
        sos.len(),
        report.rss_before / 1024,
        report.rss_after_planning / 1024
    );
    Planned {
        channels,
        sos,
        record,
    }
}
