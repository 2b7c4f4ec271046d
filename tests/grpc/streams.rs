//! StreamIsActive and StreamMetricSpec: what they push and when, how many may be open, and
//! how they end when the server stops.

use tokio_stream::StreamExt;

use super::*;

/// The next pushed IsActive value, or `None` if nothing comes within `wait` seconds.
async fn next_active(
    s: &mut tonic::Streaming<slo_scaler::proto::IsActiveResponse>,
    wait: u64,
) -> Option<bool> {
    tokio::time::timeout(Duration::from_secs(wait), s.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.unwrap().result)
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_is_active_pushes_state_then_only_rising_edges() {
    let (exporter, _prom, scaler) = gauge_fixture().await;
    let mut stream = scaler
        .client
        .clone()
        .stream_is_active(backlog_trigger())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_active(&mut stream, 5).await,
        Some(false),
        "current state at open"
    );
    exporter.set_gauge("queue_backlog", 5.0);
    assert_eq!(
        next_active(&mut stream, 10).await,
        Some(true),
        "inactive → active pushed"
    );
    // Staying active sends nothing more; going inactive sends nothing either.
    assert_eq!(next_active(&mut stream, 2).await, None);
    exporter.set_gauge("queue_backlog", 0.0);
    assert_eq!(next_active(&mut stream, 3).await, None);
    exporter.set_gauge("queue_backlog", 9.0);
    assert_eq!(
        next_active(&mut stream, 10).await,
        Some(true),
        "the next rising edge"
    );
}

/// The stream `open` opens once a place frees: refused with `ResourceExhausted` until then,
/// for at most `within_s` seconds (`why` otherwise).
async fn once_a_place_frees<T, F, Fut>(within_s: u64, why: &str, mut open: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(within_s);
    loop {
        match open().await {
            Ok(s) => return s.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(Instant::now() < deadline, "{why}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Open streams are bounded as the board is: at most `--max-signals` of them, both kinds
/// together; one more is `ResourceExhausted` naming the flag, and a stream the client
/// closes frees its place. (A `source: otlp` trigger needs no backend.)
#[tokio::test(flavor = "multi_thread")]
async fn open_streams_are_bounded_by_max_signals() {
    let scaler = Scaler::start(&["--default-source", "otlp", "--max-signals", "2"]).await;
    let trigger = so(
        "orders",
        &[
            ("signal", "latency"),
            ("service", "order-service"),
            ("threshold", "300ms"),
        ],
    );
    let mut client = scaler.client.clone();
    let specs = client
        .stream_metric_spec(trigger.clone())
        .await
        .expect("the first stream opens")
        .into_inner();
    let active = client
        .stream_is_active(trigger.clone())
        .await
        .expect("the second stream opens")
        .into_inner();
    for refused in [
        client.stream_is_active(trigger.clone()).await.err(),
        client.stream_metric_spec(trigger.clone()).await.err(),
    ] {
        let status = refused.expect("a third stream is refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("--max-signals"), "{status:?}");
    }
    // Plain calls are not streams: still answered.
    client
        .get_metric_spec(trigger.clone())
        .await
        .expect("GetMetricSpec beside full streams");
    drop(specs);
    let reopened = once_a_place_frees(5, "a closed stream's place was not freed", || {
        let (mut client, trigger) = (client.clone(), trigger.clone());
        async move { client.stream_metric_spec(trigger).await }
    })
    .await;
    drop((active, reopened));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_metric_spec_sends_current_specs_and_stays_open_until_shutdown() {
    let (_exporter, _prom, mut scaler) = gauge_fixture().await;
    let mut specs = scaler
        .client
        .stream_metric_spec(backlog_trigger())
        .await
        .unwrap()
        .into_inner();
    let first = specs.next().await.unwrap().unwrap();
    assert_eq!(first.metric_specs[0].metric_name, "backlog");
    assert_eq!(first.metric_specs[0].target_size_float, 2.5);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), specs.next())
            .await
            .is_err(),
        "the stream stays open"
    );
    let mut active = scaler
        .client
        .stream_is_active(backlog_trigger())
        .await
        .unwrap()
        .into_inner();
    assert!(active.next().await.is_some());
    // Health is served next to the scaler.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!(
            "http://{}",
            scaler.server.as_ref().unwrap().grpc_addr
        ))
        .unwrap()
        .connect()
        .await
        .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "externalscaler.ExternalScaler".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // SIGTERM's path: open streams end cleanly, well within the grace period.
    let started = Instant::now();
    scaler.server.take().unwrap().shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let end = tokio::time::timeout(Duration::from_secs(2), specs.next())
        .await
        .unwrap();
    assert!(
        end.is_none() || end.unwrap().is_err(),
        "the spec stream ended"
    );
    let end = tokio::time::timeout(Duration::from_secs(2), active.next())
        .await
        .unwrap();
    assert!(end.is_none() || end.unwrap().is_err());
}

/// A TCP proxy that forwards one connection both ways until frozen, then neither reads nor
/// writes, and keeps both sockets open: a peer that vanished without a close or reset (its
/// node crashed, the network dropped it).
async fn freezable_proxy(
    upstream: std::net::SocketAddr,
) -> (String, std::sync::Arc<tokio::sync::Notify>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = std::sync::Arc::new(tokio::sync::Notify::new());
    let frozen = freeze.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
        loop {
            tokio::select! {
                _ = frozen.notified() => break,
                n = cr.read(&mut a) => match n {
                    Ok(n) if n > 0 && sw.write_all(&a[..n]).await.is_ok() => {}
                    _ => return,
                },
                n = sr.read(&mut b) => match n {
                    Ok(n) if n > 0 && cw.write_all(&b[..n]).await.is_ok() => {}
                    _ => return,
                },
            }
        }
        // Frozen: both connections stay open, and nothing moves.
        let _held = (cr, cw, sr, sw);
        std::future::pending::<()>().await;
    });
    (format!("http://{addr}"), freeze)
}

/// A stream whose client vanished without closing its connection frees its place: the
/// server's HTTP/2 keepalive pings go unanswered and it closes the connection
/// (`--grpc-keepalive-interval`, `--grpc-keepalive-timeout`). Without them the stream's
/// task ran, evaluated its trigger and held its place for as long as the process lived.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_client_vanished_frees_its_place() {
    let scaler = Scaler::start(&[
        "--default-source",
        "otlp",
        "--max-signals",
        "1",
        "--grpc-keepalive-interval",
        "1s",
        "--grpc-keepalive-timeout",
        "1s",
    ])
    .await;
    let grpc = scaler.server.as_ref().expect("server").grpc_addr;
    let trigger = so(
        "orders",
        &[
            ("signal", "latency"),
            ("service", "order-service"),
            ("threshold", "300ms"),
        ],
    );
    let (url, freeze) = freezable_proxy(grpc).await;
    let mut vanishing =
        slo_scaler::proto::external_scaler_client::ExternalScalerClient::connect(url)
            .await
            .expect("connect");
    let stream = vanishing
        .stream_is_active(trigger.clone())
        .await
        .expect("the one stream opens")
        .into_inner();
    let mut client = scaler.client.clone();
    let status = client
        .stream_is_active(trigger.clone())
        .await
        .expect_err("the place is taken");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    freeze.notify_one();
    let reopened = once_a_place_frees(
        15,
        "the vanished client's stream still holds its place",
        || {
            let (mut client, trigger) = (client.clone(), trigger.clone());
            async move { client.stream_is_active(trigger).await }
        },
    )
    .await;
    drop((stream, vanishing, reopened));
}
