//! `signal: concurrency` and `signal: sloCapacity` from the embedded store, asked over
//! KEDA's ExternalScaler protocol (GetMetricSpec, then GetMetrics) with spans the OTel SDK
//! exported to the store's OTLP/gRPC receiver.

use std::time::Duration;

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::signal::{CapacityTarget, Quantile};

use crate::common::scaler::{metric, so};
use crate::harness::{plan, t0};
use crate::setup::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_slo_capacity_are_served_to_keda_from_sdk_spans() {
    let setup = Setup::start(&[]).await;
    // Four quiet minutes at 40 ms, then a busier last minute at 90 ms.
    let mut planned = plan(2_400, Duration::from_secs(240), 40.0, 40);
    planned.extend(plan(1_200, Duration::from_secs(60), 90.0, 40));
    setup.send("order-service", "v1", &planned).await;
    let mut client = ExternalScalerClient::connect(format!("http://{}", setup.scaler))
        .await
        .expect("connect");

    // The store's clock is on a bucket boundary: the last minute covers exactly 60 s.
    let last: Vec<_> = planned
        .iter()
        .filter(|p| p.end_before_now < Duration::from_secs(60))
        .collect();
    let busy_ns: u128 = last.iter().map(|p| p.duration.as_nanos()).sum();
    let want = busy_ns as f64 / 1e9 / 60.0;
    let got = metric(
        &mut client,
        &so(
            "orders",
            &[
                ("signal", "concurrency"),
                ("source", "otlp"),
                ("service", "order-service"),
                ("window", "60s"),
                ("threshold", "3"),
            ],
        ),
    )
    .await
    .expect("concurrency");
    assert!((got - want).abs() <= 1e-9 * want, "got {got}, want {want}");

    let capacity = so(
        "orders",
        &[
            ("signal", "sloCapacity"),
            ("source", "otlp"),
            ("service", "order-service"),
            ("latencyObjective", "300ms"),
            ("podConcurrency", "4"),
        ],
    );
    let got = metric(&mut client, &capacity).await.expect("sloCapacity");
    // What the store computes with signal::capacity (checked against the spans themselves
    // in tests/otlp), here reached through KEDA's protocol unchanged.
    let store = &setup.store;
    let want = store
        .capacity_at(
            &slo_scaler::signal::TraceSelector {
                service: "order-service".into(),
                span_kind: slo_scaler::signal::SpanKind::Server,
                version: None,
                labels: Vec::new(),
            },
            CapacityTarget {
                pod_concurrency: 4.0,
                objective: Duration::from_millis(300),
                quantile: Quantile::P95,
            },
            t0(),
        )
        .expect("a reading")
        .expect("a value");
    assert!((got - want).abs() <= 1e-9 * want, "got {got}, want {want}");
    assert!(want > 0.0 && want.is_finite(), "{want}");

    // A service that sent nothing: no value, an error for KEDA's fallback.
    let missing = so(
        "missing",
        &[
            ("signal", "sloCapacity"),
            ("source", "otlp"),
            ("service", "no-such-service"),
            ("latencyObjective", "300ms"),
            ("podConcurrency", "4"),
        ],
    );
    let status = metric(&mut client, &missing).await.expect_err("no data");
    assert!(
        status.message().contains("no data") || status.message().contains("no spans"),
        "{status:?}"
    );
}
