//! Embedded rates against the real server: right after a (re)start, and while spans
//! arrive the way the SDK's BatchSpanProcessor sends them (every 5 s).

use std::time::{Duration, Instant, SystemTime};

use opentelemetry_otlp::Compression;
use opentelemetry_sdk::trace::OTEL_BSP_SCHEDULE_DELAY_DEFAULT;

use crate::common::scaler::{metric, so, Scaler};
use crate::harness::make_spans;
use crate::harness::Planned;
use crate::sdk::{export_compressed, resource, Via};

/// Spans per second the services send.
const RATE: f64 = 100.0;

/// Span `i` of the load ends at `origin + i × 10 ms`: exactly [`RATE`] per second over
/// any interval, whenever the spans are delivered.
fn end_of(origin: SystemTime, i: u64) -> SystemTime {
    origin + Duration::from_millis(10 * i)
}

/// Exports, like the batch span processor, every span that has ended since the last
/// call; returns how many were sent.
async fn flush(addr: std::net::SocketAddr, origin: SystemTime, next: &mut u64) -> usize {
    let now = SystemTime::now();
    let mut planned = Vec::new();
    while end_of(origin, *next) <= now {
        planned.push(Planned {
            end_before_now: now
                .duration_since(end_of(origin, *next))
                .unwrap_or_default(),
            duration: Duration::from_millis(20),
            error: false,
        });
        *next += 1;
    }
    let n = planned.len();
    let res = resource("checkout", "v1");
    export_compressed(
        addr,
        Via::Grpc,
        Some(Compression::Gzip),
        &res,
        make_spans(&res, &planned, now),
    )
    .await;
    n
}

fn rps(window: &str) -> slo_scaler::proto::ScaledObjectRef {
    so(
        "checkout",
        &[
            ("signal", "rps"),
            ("source", "otlp"),
            ("service", "checkout"),
            ("window", window),
            ("threshold", "50"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rps_is_within_5_percent_after_a_restart_and_with_sdk_batching() {
    // The load ran for 20 s before the scaler (re)started: the first batch after the
    // start carries spans from before it, as an SDK's queue does.
    let origin = SystemTime::now() - Duration::from_secs(20);
    let mut scaler = Scaler::start(&[
        "--default-source",
        "otlp",
        "--min-cache-ttl",
        "100ms",
        "--cache-ttl",
        "100ms",
    ])
    .await;
    let started = Instant::now();
    let server = scaler.server.take().expect("running");
    let otlp = server.otlp_grpc_addr.expect("OTLP receiver on");
    let mut client = scaler.client.clone();

    let mut next = 0u64;
    let mut readings = Vec::new();
    // A batch at start, then one per schedule delay; read at 10 s and
    // at several phases of the batch schedule afterwards.
    let reads = [10.0, 12.5, 15.0, 17.5, 20.0, 22.5];
    let mut r = 0;
    let mut flushed_at = Duration::ZERO;
    assert!(flush(otlp, origin, &mut next).await > 0);
    while r < reads.len() {
        let due_read = Duration::from_secs_f64(reads[r]);
        let due_flush = flushed_at + OTEL_BSP_SCHEDULE_DELAY_DEFAULT;
        let (at, is_read) = if due_read <= due_flush {
            (due_read, true)
        } else {
            (due_flush, false)
        };
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        if is_read {
            for window in ["60s", "30s"] {
                let got = metric(&mut client, &rps(window))
                    .await
                    .unwrap_or_else(|e| panic!("rps at {at:?}: {e:?}"));
                readings.push((reads[r], window, got));
            }
            r += 1;
        } else {
            flush(otlp, origin, &mut next).await;
            flushed_at = at;
        }
    }
    let mut worst = 0.0f64;
    for (at, window, got) in &readings {
        let error = (got - RATE) / RATE;
        eprintln!(
            "rps {window} at {at} s after the start: {got:.2} ({:+.2} %)",
            error * 100.0
        );
        worst = worst.max(error.abs());
        assert!(
            error.abs() <= 0.05,
            "rps over {window} at {at} s: {got}, want {RATE} ± 5 %"
        );
    }
    eprintln!("worst rps error: {:.2} %", worst * 100.0);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rps_right_after_a_start_is_an_error_not_a_guess() {
    let mut scaler = Scaler::start(&[
        "--default-source",
        "otlp",
        "--min-cache-ttl",
        "100ms",
        "--cache-ttl",
        "100ms",
    ])
    .await;
    let server = scaler.server.take().expect("running");
    let otlp = server.otlp_grpc_addr.expect("OTLP receiver on");
    let mut client = scaler.client.clone();
    let mut next = 0u64;
    let origin = SystemTime::now() - Duration::from_secs(5);
    flush(otlp, origin, &mut next).await;
    // Spans arrived, but no whole bucket older than the settle time (6 s) exists yet.
    let err = metric(&mut client, &rps("60s"))
        .await
        .expect_err("not known yet");
    assert!(err.message().contains("rate not known yet"), "{err:?}");
    server.shutdown().await.expect("clean shutdown");
}

/// No spans through gRPC from the embedded store. Where 0 reads as "all is well" (latency,
/// error rate, slo) no spans is an error by default, so KEDA's fallback takes over instead
/// of a typo in `service` scaling the workload to its minimum; asking for 0 there is
/// refused by name. For rps, a fresh store's warm-up comes first (no span yet is not a rate
/// of 0), and once the rate is known no spans is KEDA's default 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spans_is_never_a_perfect_reading_and_rps_waits_for_its_warm_up() {
    let mut scaler = Scaler::start(&[
        "--default-source",
        "otlp",
        "--min-cache-ttl",
        "100ms",
        "--cache-ttl",
        "100ms",
        "--otlp-rate-settle",
        "100ms",
    ])
    .await;
    let server = scaler.server.take().expect("running");
    let mut client = scaler.client.clone();
    let ghost = |signal: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut md = vec![("signal", signal), ("source", "otlp"), ("service", "ghost")];
        md.extend_from_slice(extra);
        so(&format!("ghost-{}", signal.to_lowercase()), &md)
    };
    let rps = ghost("rps", &[("threshold", "10")]);
    // Right after the start: the rate is not known yet, whether or not spans came.
    let err = metric(&mut client, &rps).await.expect_err("not known yet");
    assert!(err.message().contains("rate not known yet"), "{err:?}");
    for r in [
        ghost("latency", &[("threshold", "300ms")]),
        ghost("errorRate", &[("threshold", "3%")]),
        ghost("slo", &[("latencyObjective", "300ms")]),
    ] {
        let err = metric(&mut client, &r).await.expect_err("no data");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{}: {err:?}", r.name);
        assert!(err.message().contains("no data"), "{}: {err:?}", r.name);
        let mut zero = r.clone();
        zero.scaler_metadata
            .insert("ignoreNullValues".into(), "true".into());
        let err = metric(&mut client, &zero).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("ignoreNullValues"), "{err:?}");
    }
    // Once a whole bucket has settled (bucket 1 s, settle 100 ms) the rate is known: 0.
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        match metric(&mut client, &rps).await {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                assert!(e.message().contains("rate not known yet"), "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("rate still unknown after 5 s: {e:?}"),
        }
    };
    assert_eq!(got, 0.0);
    server.shutdown().await.expect("clean shutdown");
}
