//! The SQS source against a real SQS API (moto's server), plus fakes for throttling,
//! garbage answers and silence; and `source: sqs` through the scaler's gRPC API.
//!
//! Needs `moto_server`: run `scripts/install-moto.sh` once, or set `MOTO_SERVER`.

mod fake;
mod grpc;
#[path = "../common/loopback.rs"]
mod loopback;
mod moto;
mod scaler;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_sdk_sqs::config::Credentials;
use prometheus_client::registry::Registry;
use slo_scaler::source::prometheus::PrometheusSource;
use slo_scaler::source::sqs::{SqsConfig, SqsSource};
use slo_scaler::source::tempo::TempoSource;
use slo_scaler::source::{Query, QueueDepth, Reading, SourceError, Sources, SqsQuery};
use slo_scaler::telemetry::Metrics;

use fake::{Canned, FakeSqs, Silent};
use moto::{CountingProxy, Moto};

/// The dummy secret key every test signs with; no error may ever show it.
const SECRET: &str = "dummy-secret-never-shown";

const REGION: &str = "us-east-1";

fn loader(endpoint: &str) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("AKIDTESTING", SECRET, None, None, "tests"))
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
}

/// The SQS source inside the one place that bounds and records backend calls.
struct Subject {
    sources: Sources,
}

impl Subject {
    async fn fetch(&self, q: &SqsQuery) -> Result<Reading, SourceError> {
        self.sources.fetch(&Query::Sqs(q.clone())).await
    }

    fn clients_created(&self) -> usize {
        self.sources.sqs.clients_created()
    }
}

/// A source whose SQS and STS calls go to `endpoint`, with its metrics registry.
async fn source_at(endpoint: &str, timeout: Duration) -> (Subject, Registry) {
    let (registry, metrics) = Metrics::standalone();
    let metrics = Arc::new(metrics);
    let config = SqsConfig {
        endpoint: Some(endpoint.to_string()),
        region: None,
    };
    let sts = endpoint.to_string();
    let sources = Sources {
        prometheus: PrometheusSource::new(&[], timeout).expect("no prometheus backends"),
        tempo: TempoSource::new(Vec::new(), timeout, metrics.clone()).expect("no tempo backends"),
        sqs: SqsSource::with_loader(move || loader(&sts), config),
        otlp: None,
        metrics,
        timeout,
    };
    (Subject { sources }, registry)
}

/// `slo_scaler_backend_requests_total{backend="sqs",outcome=…}` in the registry.
fn backend_requests(registry: &Registry, outcome: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode metrics");
    let prefix =
        format!("slo_scaler_backend_requests_total{{backend=\"sqs\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().expect("counter value"))
}

/// moto behind a counting proxy, a source pointed at the proxy, and a test client
/// that talks to moto directly (so setup calls are not counted).
struct Env {
    _moto: Moto,
    proxy: CountingProxy,
    source: Subject,
    registry: Registry,
    sqs: aws_sdk_sqs::Client,
}

impl Env {
    async fn start() -> Env {
        Env::start_moto(Moto::start()).await
    }

    async fn start_moto(moto: Moto) -> Env {
        let proxy = CountingProxy::start(&moto.url).await;
        let (source, registry) = source_at(&proxy.url, Duration::from_secs(10)).await;
        let sqs = aws_sdk_sqs::Client::new(&loader(&moto.url).load().await);
        Env {
            _moto: moto,
            proxy,
            source,
            registry,
            sqs,
        }
    }

    /// A fresh queue, named after the test; returns its URL.
    async fn queue(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}-{}", N.fetch_add(1, Ordering::SeqCst));
        self.create_queue(&name).await
    }

    async fn create_queue(&self, name: &str) -> String {
        let out = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("create queue");
        out.queue_url.expect("queue url")
    }

    async fn send(&self, url: &str, n: usize, delay_seconds: i32) {
        for i in 0..n {
            self.sqs
                .send_message()
                .queue_url(url)
                .message_body(format!("m{i}"))
                .delay_seconds(delay_seconds)
                .send()
                .await
                .expect("send message");
        }
    }

    /// Receives exactly `n` messages, hidden for an hour and not deleted (in flight).
    async fn receive(&self, url: &str, n: usize) -> Vec<String> {
        let mut handles = Vec::new();
        while handles.len() < n {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(i32::try_from(n - handles.len()).expect("small n"))
                .visibility_timeout(3600)
                .send()
                .await
                .expect("receive");
            let got = out.messages.unwrap_or_default();
            assert!(
                !got.is_empty(),
                "queue ran dry after {} messages",
                handles.len()
            );
            handles.extend(got.into_iter().filter_map(|m| m.receipt_handle));
        }
        handles
    }

    async fn delete(&self, url: &str, handles: &[String]) {
        for h in handles {
            self.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(h)
                .send()
                .await
                .expect("delete message");
        }
    }

    async fn depth(&self, q: &SqsQuery) -> QueueDepth {
        match self.source.fetch(q).await {
            Ok(Reading::Queue(d)) => d,
            other => panic!("fetch {q:?}: {other:?}"),
        }
    }
}

fn assert_no_secret(err: &SourceError) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SECRET), "secret in error: {text}");
}

#[tokio::test]
async fn counts_give_kedas_sums_for_every_flag_combination() {
    let env = Env::start().await;
    let url = env.queue("sums").await;
    env.send(&url, 7, 0).await;
    env.receive(&url, 3).await;
    env.send(&url, 2, 900).await;

    let depth = env.depth(&SqsQuery::of(&url).counting(true, true)).await;
    assert_eq!(
        depth,
        QueueDepth {
            visible: 4,
            in_flight: Some(3),
            delayed: Some(2)
        }
    );
    // (scaleOnInFlight, scaleOnDelayed); KEDA's defaults are (true, false). Each asks for
    // the counts it adds, and only those.
    for (flags, expect) in [
        ((true, false), 7),
        ((false, false), 4),
        ((true, true), 9),
        ((false, true), 6),
    ] {
        let depth = env
            .depth(&SqsQuery::of(&url).counting(flags.0, flags.1))
            .await;
        assert_eq!(depth.total(flags.0, flags.1), Some(expect), "{flags:?}");
        assert_eq!(depth.in_flight.is_some(), flags.0, "{flags:?}");
        assert_eq!(depth.delayed.is_some(), flags.1, "{flags:?}");
    }

    assert_eq!(env.proxy.counts.get("GetQueueAttributes"), 5);
    assert_eq!(env.proxy.counts.total(), 5, "one call per fetch");
    assert_eq!(backend_requests(&env.registry, "success"), 5);
}

#[tokio::test]
async fn a_missing_queue_is_not_found_and_named() {
    let env = Env::start().await;
    let url = format!("{}/123456789012/no-such-queue", env._moto.url);
    let check = |queue: &str, err: SourceError| {
        assert!(
            matches!(err, SourceError::NotFound { .. }),
            "{queue}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(queue), "{text}");
        assert!(text.contains("not found"), "{text}");
        assert_no_secret(&err);
    };
    check(
        &url,
        env.source
            .fetch(&SqsQuery::of(&url))
            .await
            .expect_err("no queue"),
    );
    check(
        "no-such-name",
        env.source
            .fetch(&SqsQuery::of("no-such-name"))
            .await
            .expect_err("no queue"),
    );
    assert_eq!(backend_requests(&env.registry, "error"), 2);
    assert_eq!(backend_requests(&env.registry, "success"), 0);
}

#[tokio::test]
async fn a_bare_queue_name_is_resolved_once() {
    let env = Env::start().await;
    let url = env.create_queue("orders-by-name").await;
    env.send(&url, 3, 0).await;
    for _ in 0..3 {
        assert_eq!(env.depth(&SqsQuery::of("orders-by-name")).await.visible, 3);
    }
    assert_eq!(env.proxy.counts.get("GetQueueUrl"), 1);
    assert_eq!(env.proxy.counts.get("GetQueueAttributes"), 3);
    assert_eq!(backend_requests(&env.registry, "success"), 3);
}

#[tokio::test]
async fn a_named_queue_deleted_and_recreated_is_resolved_again() {
    let env = Env::start().await;
    let url = env.create_queue("recreated").await;
    env.send(&url, 2, 0).await;
    assert_eq!(env.depth(&SqsQuery::of("recreated")).await.visible, 2);

    env.sqs
        .delete_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("delete queue");
    let err = env
        .source
        .fetch(&SqsQuery::of("recreated"))
        .await
        .expect_err("deleted");
    assert!(matches!(err, SourceError::NotFound { .. }), "{err:?}");

    let url = env.create_queue("recreated").await;
    env.send(&url, 1, 0).await;
    assert_eq!(env.depth(&SqsQuery::of("recreated")).await.visible, 1);
    assert_eq!(env.proxy.counts.get("GetQueueUrl"), 2);
}

#[tokio::test]
async fn a_queue_emptied_and_refilled_is_followed() {
    let env = Env::start().await;
    let url = env.queue("refill").await;
    let q = SqsQuery::of(&url);

    env.send(&url, 5, 0).await;
    assert_eq!(env.depth(&q).await.total(true, false), Some(5));

    let handles = env.receive(&url, 5).await;
    let empty = QueueDepth {
        visible: 0,
        in_flight: Some(0),
        delayed: None,
    };
    assert_eq!(
        env.depth(&q).await,
        QueueDepth {
            in_flight: Some(5),
            ..empty
        }
    );
    env.delete(&url, &handles).await;
    assert_eq!(env.depth(&q).await, empty);

    env.send(&url, 2, 0).await;
    assert_eq!(env.depth(&q).await.total(true, false), Some(2));
    assert_eq!(env.proxy.counts.get("GetQueueAttributes"), 4);
}

#[tokio::test]
async fn fetches_share_one_client_per_region_endpoint_and_role() {
    let env = Env::start().await;
    let a = env.queue("shared-a").await;
    let b = env.queue("shared-b").await;
    env.send(&a, 1, 0).await;
    env.send(&b, 2, 0).await;

    let queries: Vec<SqsQuery> = (0..50)
        .map(|i| SqsQuery::of(if i % 2 == 0 { &a } else { &b }))
        .collect();
    let results = futures::future::join_all(queries.iter().map(|q| env.source.fetch(q))).await;
    for (q, r) in queries.iter().zip(&results) {
        let want = if q.queue == a { 1 } else { 2 };
        assert!(
            matches!(r, Ok(Reading::Queue(d)) if d.visible == want),
            "{q:?}: {r:?}"
        );
    }
    assert_eq!(env.source.clients_created(), 1);
    assert_eq!(env.proxy.counts.get("GetQueueAttributes"), 50);

    // Another region is another client; the queue does not exist there.
    let mut elsewhere = SqsQuery::of("shared-a");
    elsewhere.region = Some("eu-west-1".to_string());
    let err = env
        .source
        .fetch(&elsewhere)
        .await
        .expect_err("other region");
    assert!(matches!(err, SourceError::NotFound { .. }), "{err:?}");
    assert_eq!(env.source.clients_created(), 2);
    env.source
        .fetch(&elsewhere)
        .await
        .expect_err("other region");
    assert_eq!(env.source.clients_created(), 2);
}

#[tokio::test]
async fn a_role_is_assumed_through_sts_once() {
    let env = Env::start().await;
    let url = env.queue("role").await;
    env.send(&url, 4, 0).await;

    let mut q = SqsQuery::of(&url);
    q.role_arn = Some("arn:aws:iam::123456789012:role/queue-reader".to_string());
    for _ in 0..3 {
        assert_eq!(env.depth(&q).await.visible, 4);
    }
    assert_eq!(env.proxy.counts.get("AssumeRole"), 1, "credentials reused");
    assert_eq!(env.source.clients_created(), 1);

    // The scaler's own identity is a separate client.
    assert_eq!(env.depth(&SqsQuery::of(&url)).await.visible, 4);
    assert_eq!(env.source.clients_created(), 2);
    assert_eq!(env.proxy.counts.get("AssumeRole"), 1);
}

#[tokio::test]
async fn rejected_credentials_are_permission_denied() {
    // With no free actions, moto checks every request's access key against its IAM.
    let env = Env::start_moto(Moto::start_with_env(&[(
        "INITIAL_NO_AUTH_ACTION_COUNT",
        "0",
    )]))
    .await;
    let url = format!("{}/123456789012/guarded", env._moto.url);
    let err = env
        .source
        .fetch(&SqsQuery::of(&url))
        .await
        .expect_err("denied");
    assert!(
        matches!(err, SourceError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("guarded"), "{err}");
    assert_no_secret(&err);

    // STS refuses the role too: no usable credentials, still access denied.
    let mut q = SqsQuery::of(&url);
    q.role_arn = Some("arn:aws:iam::123456789012:role/queue-reader".to_string());
    let err = env.source.fetch(&q).await.expect_err("role denied");
    assert!(
        matches!(err, SourceError::PermissionDenied { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("guarded") && text.contains("credentials"),
        "{text}"
    );
    assert_no_secret(&err);
    assert_eq!(env.proxy.counts.get("AssumeRole"), 1);
    assert_eq!(
        env.proxy.counts.get("GetQueueAttributes"),
        1,
        "no call without credentials"
    );
    assert_eq!(backend_requests(&env.registry, "error"), 2);
}

#[tokio::test]
async fn throttling_is_unavailable_and_says_throttled() {
    let fake = FakeSqs::start(Canned {
        status: 400,
        headers: vec![
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amzn-query-error", "RequestThrottled;Sender"),
        ],
        body: r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#,
    })
    .await;
    let (source, registry) = source_at(&fake.url, Duration::from_secs(20)).await;
    let url = format!("{}/123456789012/busy", fake.url);
    let err = source
        .fetch(&SqsQuery::of(&url))
        .await
        .expect_err("throttled");
    assert!(matches!(err, SourceError::Unavailable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("throttled") && text.contains("busy"),
        "{text}"
    );
    assert!(fake.hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(backend_requests(&registry, "error"), 1);
}

#[tokio::test]
async fn counts_that_are_not_integers_are_a_bad_response() {
    let fake = FakeSqs::start(Canned {
        status: 200,
        headers: vec![("content-type", "application/x-amz-json-1.0")],
        body: r#"{"Attributes":{"ApproximateNumberOfMessages":"lots","ApproximateNumberOfMessagesNotVisible":"0","ApproximateNumberOfMessagesDelayed":"0"}}"#,
    })
    .await;
    let (source, _registry) = source_at(&fake.url, Duration::from_secs(5)).await;
    let url = format!("{}/123456789012/odd", fake.url);
    let err = source
        .fetch(&SqsQuery::of(&url))
        .await
        .expect_err("garbage");
    assert!(matches!(err, SourceError::BadResponse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("odd")
            && text.contains("ApproximateNumberOfMessages")
            && text.contains("lots"),
        "{text}"
    );
}

/// An SQS-compatible endpoint that does not report delayed messages serves a trigger that
/// does not sum them (KEDA asks only for the counts its flags sum).
#[tokio::test]
async fn an_endpoint_without_the_delayed_count_serves_triggers_that_do_not_sum_it() {
    let fake = FakeSqs::start(Canned {
        status: 200,
        headers: vec![("content-type", "application/x-amz-json-1.0")],
        body: r#"{"Attributes":{"ApproximateNumberOfMessages":"4","ApproximateNumberOfMessagesNotVisible":"3"}}"#,
    })
    .await;
    let (source, _registry) = source_at(&fake.url, Duration::from_secs(5)).await;
    let url = format!("{}/123456789012/undelayed", fake.url);
    let Reading::Queue(depth) = source.fetch(&SqsQuery::of(&url)).await.expect("served") else {
        panic!("not a queue reading");
    };
    assert_eq!(depth.total(true, false), Some(7));
    assert_eq!(depth.delayed, None);

    // A trigger that adds the delayed count asks for it and gets an error naming it, not 0.
    let err = source
        .fetch(&SqsQuery::of(&url).counting(true, true))
        .await
        .expect_err("no delayed count");
    assert!(matches!(err, SourceError::BadResponse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("undelayed") && text.contains("lacks ApproximateNumberOfMessagesDelayed"),
        "{text}"
    );

    // Each call asks for exactly the counts its trigger adds.
    source
        .fetch(&SqsQuery::of(&url).counting(false, false))
        .await
        .expect("visible only");
    let asked: Vec<serde_json::Value> = fake
        .requests()
        .iter()
        .map(|r| r["AttributeNames"].clone())
        .collect();
    assert_eq!(
        asked,
        [
            serde_json::json!([
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible"
            ]),
            serde_json::json!([
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"
            ]),
            serde_json::json!(["ApproximateNumberOfMessages"]),
        ]
    );
}

/// An endpoint posing as SQS (`--aws-endpoint`) cannot make the scaler hold an answer of any
/// size: past 1 MiB it is a bad response, even one that would parse.
#[tokio::test]
async fn an_oversized_answer_is_a_bad_response() {
    let counts = r#"{"Attributes":{"ApproximateNumberOfMessages":"4","ApproximateNumberOfMessagesNotVisible":"3","#;
    let body = format!(r#"{counts}"Padding":"{}"}}}}"#, "x".repeat(2 << 20));
    let fake = FakeSqs::start(Canned {
        status: 200,
        headers: vec![("content-type", "application/x-amz-json-1.0")],
        body: Box::leak(body.into_boxed_str()),
    })
    .await;
    let (source, _registry) = source_at(&fake.url, Duration::from_secs(10)).await;
    let url = format!("{}/123456789012/flood", fake.url);
    let err = source
        .fetch(&SqsQuery::of(&url))
        .await
        .expect_err("too large");
    assert!(matches!(err, SourceError::BadResponse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("flood") && text.contains("1 MiB"), "{text}");
}

#[tokio::test]
async fn a_silent_endpoint_times_out() {
    let silent = Silent::start().await;
    let timeout = Duration::from_millis(300);
    let (source, registry) = source_at(&silent.url, timeout).await;
    let started = std::time::Instant::now();
    let err = source
        .fetch(&SqsQuery::of("slow"))
        .await
        .expect_err("silent");
    assert_eq!(
        err,
        SourceError::Timeout {
            backend: "sqs queue \"slow\"".to_string(),
            timeout
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend_requests(&registry, "timeout"), 1);
    assert_eq!(backend_requests(&registry, "error"), 0);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let closed = fake::closed_port_url().await;
    let (source, registry) = source_at(&closed, Duration::from_secs(10)).await;
    let url = format!("{closed}/123456789012/gone");
    let err = source.fetch(&SqsQuery::of(&url)).await.expect_err("closed");
    assert!(matches!(err, SourceError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("gone"), "{err}");
    assert_no_secret(&err);
    assert_eq!(backend_requests(&registry, "error"), 1);
}
