//! The receivers wired into the real server: a latency step reaches `GetMetrics` and a
//! pushed `StreamIsActive` within one bucket width.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser as _;
use slo_scaler::config::{Cli, Command};
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use slo_scaler::server::Server;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::harness::{assert_close, Planned};
use crate::sdk::{export_to, make_spans, resource, Via};

/// The store's default bucket width.
const BUCKET_WIDTH: Duration = Duration::from_secs(1);

async fn start() -> Server {
    let argv = [
        "slo-scaler",
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--default-source",
        "otlp",
        "--min-cache-ttl",
        "100ms",
        "--cache-ttl",
        "100ms",
        "--stream-interval",
        "100ms",
        "--log-format",
        "text",
    ];
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("not serve");
    };
    Server::start(args).await.expect("scaler starts")
}

fn trigger() -> ScaledObjectRef {
    let metadata = [
        ("signal", "latency"),
        ("source", "otlp"),
        ("service", "order-service"),
        ("quantile", "p95"),
        ("window", "30s"),
        ("threshold", "300ms"),
        ("activationThreshold", "0.5"),
    ];
    ScaledObjectRef {
        name: "orders".into(),
        namespace: "shop".into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

async fn get_metrics(client: &mut ExternalScalerClient<Channel>) -> f64 {
    let r = trigger();
    let spec = client
        .get_metric_spec(r.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    let resp = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(r),
            metric_name: spec.metric_specs[0].metric_name.clone(),
        })
        .await
        .expect("GetMetrics")
        .into_inner();
    resp.metric_values[0].metric_value_float
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
    let server = start().await;
    let otlp = server.otlp_grpc_addr.expect("OTLP receiver on");
    let mut client = ExternalScalerClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .expect("connect");
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
