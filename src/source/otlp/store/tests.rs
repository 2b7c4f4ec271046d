//! Unit tests of the store: reads and configuration here, ingest, rejects and expiry in
//! `tests/ingest.rs`, rates and snapshots in `tests/rates.rs`.

mod ingest;
mod rates;

use super::*;
use crate::signal::{Quantile, TraceSelector};
use crate::signal::{SpanKind, TraceMeasure};
use crate::source::{OtlpQuery, Reading};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::AnyValue as AnyValueMsg;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

/// 2024-08-21T10:00:00Z, on a bucket boundary.
pub(crate) const T0: u64 = 1_724_234_400_000_000_000;
const MS: u64 = 1_000_000;
pub(crate) const S: u64 = 1_000_000_000;

/// A span as the tests describe it: service, version, OTLP kind, end (ns after T0),
/// duration (ns), error.
#[derive(Clone, Copy)]
pub(crate) struct Sp {
    service: &'static str,
    version: Option<&'static str>,
    kind: i32,
    end: u64,
    duration: u64,
    error: bool,
}

pub(crate) fn sp(service: &'static str, end: u64, duration: u64) -> Sp {
    Sp {
        service,
        version: None,
        kind: 2,
        end,
        duration,
        error: false,
    }
}

/// A resource's `service.instance.id`.
pub(crate) fn instance(id: &str) -> KeyValue {
    kv("service.instance.id", id)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValueMsg {
            value: Some(AnyValue::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// One request, one resource per span (the store must aggregate across them).
pub(crate) fn request(spans: &[Sp]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: spans
            .iter()
            .map(|s| {
                let mut attrs = Vec::new();
                if !s.service.is_empty() {
                    attrs.push(kv("service.name", s.service));
                }
                if let Some(v) = s.version {
                    attrs.push(kv("service.version", v));
                }
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: attrs,
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            name: "GET /orders".to_string(),
                            kind: s.kind,
                            start_time_unix_nano: (T0 + s.end).saturating_sub(s.duration),
                            end_time_unix_nano: T0 + s.end,
                            status: Some(Status {
                                code: if s.error {
                                    status::StatusCode::Error as i32
                                } else {
                                    status::StatusCode::Ok as i32
                                },
                                ..Status::default()
                            }),
                            ..Span::default()
                        }],
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                }
            })
            .collect(),
    }
}

pub(crate) fn at(ns_after_t0: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(T0 + ns_after_t0)
}

fn store(config: StoreConfig) -> (Store, Arc<ManualClock>, Arc<Metrics>) {
    let clock = Arc::new(ManualClock::new(at(0)));
    let metrics = Arc::new(Metrics::standalone().1);
    let store =
        Store::with_clock(config, Arc::clone(&metrics), clock.clone()).expect("valid config");
    (store, clock, metrics)
}

fn query(service: &str, version: Option<&str>, measure: TraceMeasure, window_s: u64) -> OtlpQuery {
    OtlpQuery {
        selector: TraceSelector {
            service: service.to_string(),
            span_kind: SpanKind::Server,
            version: version.map(str::to_string),
            labels: Vec::new(),
        },
        measure,
        window: Duration::from_secs(window_s),
    }
}

/// The snapshot of `service`'s server spans over the 60 s before `now`.
fn snapshot_60s(store: &Store, service: &str, now: SystemTime) -> Snapshot {
    store
        .snapshot_at(
            &query(service, None, p(0.5), 60).selector,
            Duration::from_secs(60),
            now,
        )
        .expect("snapshot")
}

fn p(q: f64) -> TraceMeasure {
    TraceMeasure::Latency(Quantile::new(q).expect("valid quantile"))
}

/// Ingests `spans` at clock time 100 s, reads `q` at `read_at` (ns after T0), and
/// compares with `expect` (`Some(v)`: within 1 % for latency, 1e-9 otherwise).
fn check(spans: &[Sp], read_at: u64, q: OtlpQuery, expect: Result<Option<f64>, &str>) {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(100 * S));
    store.ingest(request(spans));
    let got = store.read_at(&q, at(read_at));
    match (got, expect) {
        (Ok(Reading::Value(Some(g))), Ok(Some(e))) => {
            let tol = match q.measure {
                TraceMeasure::Latency(_) => 0.01 * e,
                _ => 1e-9,
            };
            assert!((g - e).abs() <= tol, "{q:?}: got {g}, want {e}");
        }
        (Ok(Reading::Value(None)), Ok(None)) => {}
        (Err(g), Err(e)) => assert!(g.to_string().contains(e), "{q:?}: got {g}, want {e}"),
        (g, e) => panic!("{q:?}: got {g:?}, want {e:?}"),
    }
}

#[test]
fn reads() {
    // 100 server spans of 1..=100 ms ending in second 99, every 10th an error.
    let hundred: Vec<Sp> = (1..=100)
        .map(|i| Sp {
            error: i % 10 == 0,
            ..sp("orders", 99 * S + i * MS, i * MS)
        })
        .collect();
    let now = 100 * S;
    check(
        &hundred,
        now,
        query("orders", None, p(0.5), 60),
        Ok(Some(0.050)),
    );
    check(
        &hundred,
        now,
        query("orders", None, p(0.95), 60),
        Ok(Some(0.095)),
    );
    check(
        &hundred,
        now,
        query("orders", None, p(0.99), 60),
        Ok(Some(0.099)),
    );
    check(
        &hundred,
        now,
        query("orders", None, TraceMeasure::ErrorRatio, 60),
        Ok(Some(0.1)),
    );
    // The window (40 s .. 100 s) starts on a boundary: 100 spans / 60 s.
    check(
        &hundred,
        now,
        query("orders", None, TraceMeasure::Rate, 60),
        Ok(Some(100.0 / 60.0)),
    );
    // Mid-bucket: the bucket in progress (100 s ..) is left out of rates: buckets
    // 40 s .. 100 s are whole, 60 s covered.
    check(
        &hundred,
        now + S / 2,
        query("orders", None, TraceMeasure::Rate, 60),
        Ok(Some(100.0 / 60.0)),
    );
    // Another service, another kind: nothing.
    check(
        &hundred,
        now,
        query("payments", None, p(0.95), 60),
        Ok(None),
    );
    let mut client = query("orders", None, p(0.95), 60);
    client.selector.span_kind = SpanKind::Client;
    check(&hundred, now, client, Ok(None));
    // Spans that ended before the window are left out.
    check(
        &hundred,
        now + 200 * S,
        query("orders", None, p(0.95), 60),
        Ok(None),
    );
    // A window longer than retention, or zero, is refused.
    check(
        &hundred,
        now,
        query("orders", None, p(0.95), 601),
        Err("at most the store's retention 10m"),
    );
    check(
        &hundred,
        now,
        query("orders", None, p(0.95), 0),
        Err("must be above zero"),
    );
    let mut labelled = query("orders", None, p(0.95), 60);
    labelled.selector.labels = vec![("http.route".into(), "/orders".into())];
    check(
        &hundred,
        now,
        labelled,
        Err("otlp: rejected the query: label filters are not supported"),
    );
}

#[test]
fn versions_filter_or_merge() {
    let mut spans = Vec::new();
    for i in 0..10 {
        spans.push(Sp {
            version: Some("v1"),
            ..sp("orders", 90 * S + i * MS, 10 * MS)
        });
        spans.push(Sp {
            version: Some("v2"),
            error: true,
            ..sp("orders", 90 * S + i * MS, 500 * MS)
        });
    }
    let now = 100 * S;
    check(
        &spans,
        now,
        query("orders", Some("v1"), p(0.95), 60),
        Ok(Some(0.010)),
    );
    check(
        &spans,
        now,
        query("orders", Some("v2"), p(0.95), 60),
        Ok(Some(0.500)),
    );
    check(
        &spans,
        now,
        query("orders", None, p(0.95), 60),
        Ok(Some(0.500)),
    );
    check(
        &spans,
        now,
        query("orders", None, p(0.25), 60),
        Ok(Some(0.010)),
    );
    check(
        &spans,
        now,
        query("orders", None, TraceMeasure::ErrorRatio, 60),
        Ok(Some(0.5)),
    );
    check(
        &spans,
        now,
        query("orders", Some("v1"), TraceMeasure::ErrorRatio, 60),
        Ok(Some(0.0)),
    );
    check(
        &spans,
        now,
        query("orders", Some("v3"), TraceMeasure::Rate, 60),
        Ok(None),
    );
}

#[test]
fn configs() {
    let check = |config: StoreConfig, expect: Result<(), &str>| {
        let metrics = Arc::new(Metrics::standalone().1);
        let got = Store::new(config, metrics)
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(g), Err(e)) => assert_eq!(g, e),
            (g, e) => panic!("got {g:?}, want {e:?}"),
        }
    };
    let d = StoreConfig::default;
    check(d(), Ok(()));
    check(
        StoreConfig {
            bucket_width: Duration::ZERO,
            ..d()
        },
        Err("otlp store: bucket width must be at least 1ms, got 0s"),
    );
    check(
        StoreConfig { retention: Duration::from_millis(500), ..d() },
        Err("otlp store: retention 500ms must be at least one bucket width 1s and at most 100000 buckets"),
    );
    check(
        StoreConfig { bucket_width: Duration::from_millis(1), retention: Duration::from_secs(3600), ..d() },
        Err("otlp store: retention 1h must be at least one bucket width 1ms and at most 100000 buckets"),
    );
    check(
        StoreConfig {
            max_series: 0,
            ..d()
        },
        Err("otlp store: max series must be at least 1"),
    );
}

/// `signal: sloCapacity`'s sustained window reaches back 30 minutes, past the 10 minutes
/// of buckets the store keeps: each series keeps its minutes' sums that long, no longer,
/// and no more of them than the window holds.
#[test]
fn the_sustained_window_outlasts_the_buckets() {
    use crate::signal::capacity::{SUSTAINED_Q, SUSTAINED_S};
    use crate::signal::CapacityTarget;
    assert_eq!((SUSTAINED_S, SUSTAINED_Q), (1800, 0.9));
    // Forty minutes of 100 ms requests, one a second, ten a second in the busy minutes;
    // each minute's spans sent during it.
    let read = |busy: &[u64]| {
        let (store, clock, _) = store(StoreConfig::default());
        for minute in 0..40u64 {
            let per_second = if busy.contains(&minute) { 10 } else { 1 };
            let spans: Vec<Sp> = (0..60 * per_second)
                .map(|i| {
                    sp(
                        "orders",
                        minute * 60 * S + i * S / per_second + S / 2,
                        100 * MS,
                    )
                })
                .collect();
            clock.set(at((minute * 60 + 59) * S + S / 2));
            store.ingest(request(&spans));
        }
        // The sums of at most the window's minutes (30, the one filling and the
        // future skew's) are kept.
        for entry in read_lock(&store.index).by_service["orders"].iter() {
            assert!(lock(&entry.series).minutes.len() <= 33);
        }
        let target = CapacityTarget {
            pod_concurrency: 1.0,
            objective: Duration::from_secs(1),
            quantile: Quantile::P95,
        };
        let selector = query("orders", None, TraceMeasure::Rate, 60).selector;
        store
            .capacity_at(&selector, target, at(40 * 60 * S))
            .expect("a value")
            .expect("spans")
    };
    // Quiet throughout: 0.1 in flight, the value 0.1 pods (one a pod, latency calm).
    assert!((read(&[]) - 0.1).abs() < 1e-9);
    // The window's whole minutes are 10–39. Three busy ones (1.0 in flight), all older
    // than the buckets' ten minutes: the 0.9 quantile of the thirty, rank 26.1 of the
    // sorted minutes, is 0.9 × 0.1 + 0.1 × 1.0. Busy minutes before the window change
    // nothing.
    let want = 0.9 * 0.1 + 0.1 * 1.0;
    assert!(
        (read(&[12, 15, 21]) - want).abs() < 1e-9,
        "{}",
        read(&[12, 15, 21])
    );
    assert!((read(&[2, 5, 8, 12, 15, 21]) - want).abs() < 1e-9);
    // Four of thirty: the level is theirs (the clamp, 1.2 × their rate × 100 ms, is above it).
    assert!((read(&[12, 15, 21, 27]) - 1.0).abs() < 1e-9);
}

/// `signal: sloCapacity` after a start the pods could not keep up with (the scaler
/// restarted while the fleet was saturated): every span of the history queued, so no
/// period's mean latency is the service's, and only the pods that served them bound it.
/// Two pods of 4 slots, each completing 80 requests a second (4 ÷ 50 ms), every one after
/// 400 ms: 64 in flight, where 8 slots serve and the load needs at most 8 ÷ 4 × the clamp.
#[test]
fn a_saturated_start_is_bounded_by_the_slots_of_the_pods_serving() {
    use crate::signal::capacity::{queue_factor, CLAMP};
    use crate::signal::CapacityTarget;
    use opentelemetry_proto::tonic::trace::v1::Span;
    let target = CapacityTarget {
        pod_concurrency: 4.0,
        objective: Duration::from_secs(1),
        quantile: Quantile::P95,
    };
    // `resource(i)` gives span i's extra resource attributes, `trace_state(i)` its own;
    // the spans are of OTLP kind `kind`, and read so.
    let read_kind = |(kind, code): (SpanKind, i32),
                     resource: &dyn Fn(u64) -> Vec<KeyValue>,
                     trace_state: &dyn Fn(u64) -> String| {
        let (store, clock, _) = store(StoreConfig::default());
        let spans: Vec<Sp> = (0..160 * 70)
            .map(|i| Sp {
                kind: code,
                ..sp("orders", i * S / 160 + MS, 400 * MS)
            })
            .collect();
        let mut request = request(&spans);
        for (i, rs) in request.resource_spans.iter_mut().enumerate() {
            let i = i as u64;
            if let Some(r) = rs.resource.as_mut() {
                r.attributes.extend(resource(i));
            }
            let span: &mut Span = &mut rs.scope_spans[0].spans[0];
            span.trace_state = trace_state(i);
        }
        clock.set(at(70 * S));
        store.ingest(request);
        let mut selector = query("orders", None, TraceMeasure::Rate, 60).selector;
        selector.span_kind = kind;
        store
            .capacity_at(&selector, target, at(70 * S))
            .expect("a value")
            .expect("spans")
    };
    let read = |resource: &dyn Fn(u64) -> Vec<KeyValue>, trace_state: &dyn Fn(u64) -> String| {
        read_kind((SpanKind::Server, 2), resource, trace_state)
    };
    let pod = |i: u64| {
        vec![kv(
            "service.instance.id",
            ["pod-a", "pod-b"][(i % 2) as usize],
        )]
    };
    let unsampled = |_: u64| String::new();
    // Each block's 1600 spans took at most 2 pods × 4 slots × 10 s ÷ 1600 = 50 ms each:
    // the reference concurrency is 160/s × 50 ms = 8, and the value is the clamp's.
    let bounded = CLAMP * queue_factor(4.0) * 8.0 / 4.0;
    let got = read(&pod, &unsampled);
    assert!((got - bounded).abs() < 1e-9, "got {got}, want {bounded}");
    assert!(got >= 2.0, "never fewer pods than served: {got}");
    // The same spans from pods named by `k8s.pod.name`.
    let by_name = |i: u64| {
        vec![kv(
            "k8s.pod.name",
            ["orders-7c9f-a", "orders-7c9f-b"][(i % 2) as usize],
        )]
    };
    assert!((read(&by_name, &unsampled) - bounded).abs() < 1e-9);
    // Unknown pods bound nothing: the 400 ms mean is the reference, and the value is all
    // 64 in flight ÷ 4 slots.
    let unbounded = 160.0 * 0.4 / 4.0;
    let none = |_: u64| Vec::new();
    assert!((read(&none, &unsampled) - unbounded).abs() < 1e-9);
    // One span without an instance id in each period makes its pods unknown, as does a
    // `host.name` (many pods share a node's).
    let one_missing = |i: u64| if i % 1600 == 7 { Vec::new() } else { pod(i) };
    assert!((read(&one_missing, &unsampled) - unbounded).abs() < 1e-9);
    let host = |i: u64| vec![kv("host.name", ["node-1", "node-2"][(i % 2) as usize])];
    assert!((read(&host, &unsampled) - unbounded).abs() < 1e-9);
    // Sampled spans (probability ½: each stands for 2) may leave a pod out: no bound.
    let half = |_: u64| "ot=th:8".to_string();
    assert!((read(&pod, &half) - 2.0 * unbounded).abs() < 1e-9);
    // Consumer spans run in the pods that serve them, as server spans do; client spans
    // in their callers' (two callers may call any number of pods): no bound.
    assert!((read_kind((SpanKind::Consumer, 5), &pod, &unsampled) - bounded).abs() < 1e-9);
    assert!((read_kind((SpanKind::Client, 3), &pod, &unsampled) - unbounded).abs() < 1e-9);
}
