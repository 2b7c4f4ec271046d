//! The receivers wired into the real server: a latency step reaches `GetMetrics` and a
//! pushed `StreamIsActive` within one bucket width.

use std::time::{Duration, Instant, SystemTime};

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::ScaledObjectRef;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::common::scaler::{metric, so, Scaler};
use crate::harness::make_spans;
use crate::harness::{assert_close, Planned};
use crate::sdk::{export_to, resource, Via};

/// The store's default bucket width.
const BUCKET_WIDTH: Duration = Duration::from_secs(1);

async fn start() -> Scaler {
    Scaler::start(&[
        "--default-source",
        "otlp",
        "--min-cache-ttl",
        "100ms",
        "--cache-ttl",
        "100ms",
        // The default stream interval (5 s): otlp triggers re-evaluate per bucket anyway.
    ])
    .await
}

fn trigger() -> ScaledObjectRef {
    so(
        "orders",
        &[
            ("signal", "latency"),
            ("source", "otlp"),
            ("service", "order-service"),
            ("quantile", "p95"),
            ("window", "30s"),
            ("threshold", "300ms"),
            ("activationThreshold", "0.5"),
        ],
    )
}

async fn get_metrics(client: &mut ExternalScalerClient<Channel>) -> f64 {
    metric(client, &trigger()).await.expect("GetMetrics")
}

/// `n` spans of exactly `duration`, ending over the last 100 ms.
fn steady(n: usize, duration: Duration) -> Vec<Planned> {
    (0..n)
        .map(|i| Planned {
            end_before_now: Duration::from_millis(100 * (n - i) as u64 / n as u64),
            duration,
            error: false,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_step_reaches_keda_within_one_bucket() {
    let mut scaler = start().await;
    let server = scaler.server.take().expect("running");
    let otlp = server.otlp_grpc_addr.expect("OTLP receiver on");
    let mut client = scaler.client.clone();
    let res = resource("order-service", "v1");

    let calm = steady(100, Duration::from_millis(20));
    export_to(
        otlp,
        Via::Grpc,
        &res,
        make_spans(&res, &calm, SystemTime::now()),
    )
    .await;
    assert_close(Some(get_metrics(&mut client).await), 0.020, "calm p95");

    let mut stream = client
        .stream_is_active(trigger())
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = stream.next().await.expect("a first answer").expect("ok");
    assert!(
        !first.result,
        "20 ms is under the 0.5 s activation threshold"
    );

    let spike = steady(200, Duration::from_secs(2));
    export_to(
        otlp,
        Via::Grpc,
        &res,
        make_spans(&res, &spike, SystemTime::now()),
    )
    .await;
    let sent = Instant::now();
    let pushed = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a push within 10 s")
        .expect("stream open")
        .expect("ok");
    let took = sent.elapsed();
    assert!(pushed.result, "the spike activates the trigger");
    assert!(
        took <= BUCKET_WIDTH,
        "pushed after {took:?}, more than one bucket"
    );

    // p95 of 100 × 20 ms and 200 × 2 s is 2 s.
    let value = get_metrics(&mut client).await;
    assert!(
        sent.elapsed() <= BUCKET_WIDTH + Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
    assert_close(Some(value), 2.0, "spike p95");

    drop(stream);
    server.shutdown().await.expect("clean shutdown");
}

/// `slo-scaler check --scaler-address` explains a `source: otlp` trigger with the value the
/// running server's store gives KEDA, and the replicas the HPA would choose from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_an_otlp_trigger_from_the_running_server() {
    use clap::Parser as _;
    let mut scaler = start().await;
    let server = scaler.server.take().expect("running");
    let otlp = server.otlp_grpc_addr.expect("OTLP receiver on");
    let res = resource("order-service", "v1");
    let slow = steady(100, Duration::from_millis(600));
    export_to(
        otlp,
        Via::Grpc,
        &res,
        make_spans(&res, &slow, SystemTime::now()),
    )
    .await;
    let mut client = scaler.client.clone();
    assert_close(
        Some(get_metrics(&mut client).await),
        0.6,
        "p95 over GetMetrics",
    );
    let address = server.grpc_addr.to_string();
    let mut argv: Vec<String> = ["slo-scaler", "check", "--scaler-address", &address]
        .into_iter()
        .chain(["--namespace", "shop", "--current-replicas", "2"])
        .map(String::from)
        .collect();
    for (k, v) in &trigger().scaler_metadata {
        argv.extend(["-m".to_string(), format!("{k}={v}")]);
    }
    let args = match slo_scaler::cli::Cli::try_parse_from(argv).unwrap().command {
        slo_scaler::cli::Command::Check(a) => a,
        _ => panic!("not check"),
    };
    let report = slo_scaler::check::run(args.clone()).await.expect("checked");
    // 0.6 s against 300 ms with metricType Value: 2 pods × 0.6 / 0.3.
    for line in [
        "value        0.6 (from the server at",
        "active       true",
        "2 now → 4 wanted",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    // Without the address it says where the value lives, and gives none.
    let mut without = args.clone();
    without.scaler_address = None;
    let report = slo_scaler::check::run(without).await.expect("checked");
    assert!(
        report.contains("--scaler-address") && !report.contains("active "),
        "{report}"
    );
    // A server that is not there is an error within the bound, never a value.
    let mut gone = args;
    gone.scaler_address = Some("127.0.0.1:9".into());
    let err = slo_scaler::check::run(gone).await.unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
    server.shutdown().await.expect("clean shutdown");
}
