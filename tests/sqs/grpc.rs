//! `source: sqs` end to end: KEDA's gRPC calls to the real scaler binary, SQS from moto.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tonic::transport::Channel;

use super::scaler::{sample, Scaler};
use super::{Env, SECRET};

fn trigger(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn object(name: &str, metadata: HashMap<String, String>) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.to_string(),
        namespace: "shop".to_string(),
        scaler_metadata: metadata,
    }
}

async fn value(client: &mut ExternalScalerClient<Channel>, r: &ScaledObjectRef) -> f64 {
    let spec = client
        .get_metric_spec(r.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    let name = spec.metric_specs[0].metric_name.clone();
    let answer = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(r.clone()),
            metric_name: name,
        })
        .await
        .unwrap_or_else(|s| panic!("GetMetrics {}: {s:?}", r.name))
        .into_inner();
    answer.metric_values[0].metric_value_float
}

async fn active(client: &mut ExternalScalerClient<Channel>, r: &ScaledObjectRef) -> bool {
    client
        .is_active(r.clone())
        .await
        .unwrap_or_else(|s| panic!("IsActive {}: {s:?}", r.name))
        .into_inner()
        .result
}

/// Polls GetMetrics until it answers `want`; returns how long that took.
async fn until_value(
    client: &mut ExternalScalerClient<Channel>,
    r: &ScaledObjectRef,
    want: f64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = value(client, r).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {got} after {:?}, want {want}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn start_scaler(env: &Env, cache_ttl: &str) -> Scaler {
    Scaler::start(
        &env.proxy.url,
        "AKIDTESTING",
        SECRET,
        &["--cache-ttl", cache_ttl, "--min-cache-ttl", "100ms"],
    )
}

#[tokio::test]
async fn activation_switches_just_above_activation_queue_length() {
    let env = Env::start().await;
    let url = env.queue("activation").await;
    let scaler = start_scaler(&env, "200ms");
    let mut client = scaler.client().await;
    let so = object(
        "notifications",
        trigger(&[
            ("signal", "queueDepth"),
            ("queueURL", &url),
            ("queueLength", "10"),
            ("activationQueueLength", "3"),
        ]),
    );

    let spec = client
        .get_metric_spec(so.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(spec.metric_specs[0].target_size_float, 10.0);

    env.send(&url, 2, 0).await;
    env.receive(&url, 1).await; // In flight counts (scaleOnInFlight defaults to true).
    assert_eq!(value(&mut client, &so).await, 2.0);
    assert!(!active(&mut client, &so).await, "2 is not above 3");

    env.send(&url, 1, 0).await;
    until_value(&mut client, &so, 3.0, Duration::from_secs(2)).await;
    assert!(!active(&mut client, &so).await, "3 is not above 3");

    env.send(&url, 1, 0).await;
    until_value(&mut client, &so, 4.0, Duration::from_secs(2)).await;
    assert!(active(&mut client, &so).await, "4 is above 3");

    // Delayed messages only count with scaleOnDelayed; in-flight ones not without scaleOnInFlight.
    env.send(&url, 5, 900).await;
    let delayed = object(
        "notifications-delayed",
        trigger(&[
            ("signal", "queueDepth"),
            ("queueURL", &url),
            ("scaleOnInFlight", "false"),
            ("scaleOnDelayed", "true"),
            ("activationQueueLength", "7"),
        ]),
    );
    until_value(&mut client, &delayed, 8.0, Duration::from_secs(2)).await;
    assert!(active(&mut client, &delayed).await, "8 is above 7");
    assert_eq!(value(&mut client, &so).await, 4.0);

    let logs = scaler.logs();
    assert!(!logs.contains(SECRET), "secret in the scaler's log");
}

#[tokio::test]
async fn an_emptied_and_refilled_queue_is_followed_within_one_ttl() {
    let ttl = Duration::from_secs(1);
    // Time for a gRPC round trip and a moto call on a busy machine.
    let slack = Duration::from_millis(700);
    let env = Env::start().await;
    let url = env.queue("follow").await;
    let scaler = start_scaler(&env, "1s");
    let mut client = scaler.client().await;
    let so = object(
        "worker",
        trigger(&[("signal", "queueDepth"), ("queueURL", &url)]),
    );

    env.send(&url, 5, 0).await;
    assert_eq!(value(&mut client, &so).await, 5.0);

    let handles = env.receive(&url, 5).await;
    env.delete(&url, &handles).await;
    let took = until_value(&mut client, &so, 0.0, ttl + slack).await;
    assert!(took <= ttl + slack, "{took:?}");

    env.send(&url, 2, 0).await;
    let took = until_value(&mut client, &so, 2.0, ttl + slack).await;
    assert!(took <= ttl + slack, "{took:?}");
}

#[tokio::test]
async fn five_hundred_scaled_objects_on_one_queue_make_one_call_per_ttl_and_flags() {
    let ttl = Duration::from_secs(4);
    let env = Env::start().await;
    let url = env.queue("shared").await;
    env.send(&url, 9, 0).await;
    env.receive(&url, 2).await;
    let scaler = start_scaler(&env, "4s");
    let client = scaler.client().await;

    // Different targets and activations share a call; the two scaleOnInFlight settings ask
    // for different counts (as KEDA does), so two calls.
    let settings = 2;
    let objects: Vec<(ScaledObjectRef, f64)> = (0..500)
        .map(|i| {
            let in_flight = i % 2 == 0;
            let length = (1 + i % 10).to_string();
            let activation = (i % 4).to_string();
            let so = object(
                &format!("consumer-{i}"),
                trigger(&[
                    ("signal", "queueDepth"),
                    ("queueURL", &url),
                    ("queueLength", &length),
                    ("activationQueueLength", &activation),
                    ("scaleOnInFlight", if in_flight { "true" } else { "false" }),
                ]),
            );
            (so, if in_flight { 9.0 } else { 7.0 })
        })
        .collect();

    let round = || async {
        let calls = objects.iter().map(|(so, want)| {
            let mut client = client.clone();
            async move {
                let got = value(&mut client, so).await;
                assert_eq!(got, *want, "{}", so.name);
                active(&mut client, so).await
            }
        });
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(|a| *a), "every activation is below 7");
    };
    let started = Instant::now();
    round().await;
    round().await;
    let elapsed = started.elapsed();
    let calls = env.proxy.counts.get("GetQueueAttributes");
    // At most one call per setting and TTL window the rounds spanned (one window, on any
    // sane machine).
    let windows = 1 + (elapsed.as_secs_f64() / ttl.as_secs_f64()).floor() as usize;
    assert!(
        (settings..=settings * windows).contains(&calls),
        "{calls} calls for two rounds of 500 ScaledObjects in {elapsed:?}"
    );
    let metrics = scaler.metrics().await;
    let recorded = sample(
        &metrics,
        "slo_scaler_backend_requests_total{backend=\"sqs\",outcome=\"success\"}",
    );
    assert_eq!(recorded, calls as f64, "{metrics}");

    // After the TTL, the next round asks SQS again, once per setting.
    tokio::time::sleep(ttl).await;
    let before = env.proxy.counts.get("GetQueueAttributes");
    let started = Instant::now();
    round().await;
    let elapsed = started.elapsed();
    let after = env.proxy.counts.get("GetQueueAttributes");
    let windows = 1 + (elapsed.as_secs_f64() / ttl.as_secs_f64()).floor() as usize;
    assert!(
        (settings..=settings * windows).contains(&(after - before)),
        "{} calls for one round of 500 ScaledObjects in {elapsed:?}",
        after - before
    );
    let metrics = scaler.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "slo_scaler_backend_requests_total{backend=\"sqs\",outcome=\"success\"}"
        ),
        after as f64
    );
    eprintln!(
        "500 ScaledObjects, 3 rounds of GetMetricSpec + GetMetrics + IsActive: {after} GetQueueAttributes; last round took {elapsed:?}"
    );
}

/// SQS counts are untrusted, and their sum goes through the engine's one value rule: KEDA
/// makes every value `int64(value × 1000)` (kedacore/keda `pkg/scalers/scaler.go`,
/// `GenerateMetricInMili`, from `external_scaler.go`), so a sum past about 9.22e15
/// (here the counts' saturated sum, 2^64 − 1) is `OutOfRange` naming it, never a number
/// the HPA would read as negative. The fake answers GetQueueAttributes in the AWS JSON
/// protocol's shape (the SQS API reference's `GetQueueAttributes` response: `Attributes`,
/// a map of strings), which moto cannot be made to fill with such counts.
#[tokio::test]
async fn a_queue_sum_outside_kedas_range_is_out_of_range() {
    use super::fake::{Canned, FakeSqs};
    let fake = FakeSqs::start(Canned {
        status: 200,
        headers: vec![("content-type", "application/x-amz-json-1.0")],
        body: r#"{"Attributes":{"ApproximateNumberOfMessages":"18446744073709551615","ApproximateNumberOfMessagesNotVisible":"5","ApproximateNumberOfMessagesDelayed":"0"}}"#,
    })
    .await;
    let scaler = Scaler::start(&fake.url, "AKIDTESTING", SECRET, &[]);
    let mut client = scaler.client().await;
    let url = format!("{}/123456789012/flood", fake.url);
    let so = object(
        "flood",
        trigger(&[("signal", "queueDepth"), ("queueURL", &url)]),
    );
    let spec = client
        .get_metric_spec(so.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    let err = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name: spec.metric_specs[0].metric_name.clone(),
        })
        .await
        .expect_err("a sum KEDA cannot carry");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("18446744073709552000"),
        "names the value: {err:?}"
    );
}
