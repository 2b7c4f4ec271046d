//! Unit tests of the store: ingest, reads, rejects, expiry and configuration.

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
const T0: u64 = 1_724_234_400_000_000_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// A span as the tests describe it: service, version, OTLP kind, end (ns after T0),
/// duration (ns), error.
#[derive(Clone, Copy)]
struct Sp {
    service: &'static str,
    version: Option<&'static str>,
    kind: i32,
    end: u64,
    duration: u64,
    error: bool,
}

fn sp(service: &'static str, end: u64, duration: u64) -> Sp {
    Sp {
        service,
        version: None,
        kind: 2,
        end,
        duration,
        error: false,
    }
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
fn request(spans: &[Sp]) -> ExportTraceServiceRequest {
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

fn at(ns_after_t0: u64) -> SystemTime {
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

/// Ingests `spans` at clock time 100 s and compares the summary.
fn check_ingest(spans: &[Sp], accepted: u64, rejected: &[(RejectReason, u64)]) {
    let (store, clock, metrics) = store(StoreConfig::default());
    clock.set(at(100 * S));
    let summary = store.ingest(request(spans));
    assert_eq!(summary.accepted, accepted);
    assert_eq!(summary.rejected, rejected);
    assert_eq!(summary.error_message().is_some(), !rejected.is_empty());
    let series = if accepted > 0 { 1 } else { 0 };
    assert_eq!(metrics.otlp_store_series.get(), series);
}

#[test]
fn ingest_refuses_what_it_cannot_place() {
    use RejectReason::*;
    let ok = sp("orders", 99 * S, 5 * MS);
    check_ingest(&[ok], 1, &[]);
    check_ingest(&[Sp { service: "", ..ok }], 0, &[(MissingServiceName, 1)]);
    check_ingest(&[ok, Sp { kind: 9, ..ok }], 1, &[(UnknownSpanKind, 1)]);
    // Unspecified kind counts as internal (a series of its own).
    check_ingest(&[Sp { kind: 0, ..ok }], 1, &[]);
    // Zero start (duration equal to the whole end time) and end before start.
    check_ingest(
        &[Sp {
            duration: T0 + 99 * S,
            ..ok
        }],
        0,
        &[(BadTimestamps, 1)],
    );
    // Spans from any earlier time within retention are kept.
    check_ingest(&[ok, Sp { end: 0, ..ok }], 2, &[]);
    // Up to a minute in the future is clamped to now; beyond, refused.
    check_ingest(&[Sp { end: 150 * S, ..ok }], 1, &[]);
    check_ingest(&[Sp { end: 161 * S, ..ok }], 0, &[(TooNew, 1)]);
    check_ingest(
        &[ok, Sp { end: 161 * S, ..ok }, Sp { service: "", ..ok }],
        1,
        &[(MissingServiceName, 1), (TooNew, 1)],
    );
}

#[test]
fn too_old_spans_are_refused() {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(1000 * S));
    let summary = store.ingest(request(&[
        sp("orders", 300 * S, MS),
        sp("orders", 999 * S, MS),
    ]));
    assert_eq!(summary.accepted, 1);
    assert_eq!(summary.rejected, vec![(RejectReason::TooOld, 1)]);
}

#[test]
fn future_spans_are_counted_now() {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(100 * S));
    store.ingest(request(&[sp("orders", 130 * S, 7 * MS)]));
    let got = store.read_at(&query("orders", None, p(0.5), 1), at(100 * S));
    let Ok(Reading::Value(Some(v))) = got else {
        panic!("{got:?}");
    };
    assert!((v - 0.007).abs() < 0.007 * 0.01, "{v}");
}

#[test]
fn late_spans_land_in_their_bucket_and_rejects_change_nothing() {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(100 * S));
    store.ingest(request(&[sp("orders", 99 * S, 10 * MS)]));
    // Three late error spans for second 50, after the newer one.
    let late = Sp {
        error: true,
        ..sp("orders", 50 * S, 900 * MS)
    };
    store.ingest(request(&[late, late, late]));
    let ratio = |window_s| {
        store.read_at(
            &query("orders", None, TraceMeasure::ErrorRatio, window_s),
            at(100 * S),
        )
    };
    let p50 = || store.read_at(&query("orders", None, p(0.5), 600), at(100 * S));
    assert_eq!(ratio(600), Ok(Reading::Value(Some(0.75))));
    assert_eq!(ratio(10), Ok(Reading::Value(Some(0.0))));
    let before = p50();
    assert!(
        matches!(before, Ok(Reading::Value(Some(v))) if (v - 0.900).abs() < 0.009),
        "{before:?}"
    );
    // A request refused entirely leaves everything as it was.
    store.ingest(request(&[Sp {
        service: "",
        ..sp("orders", 99 * S, 5 * S)
    }]));
    assert_eq!(p50(), before);
    assert_eq!(ratio(600), Ok(Reading::Value(Some(0.75))));
}

#[test]
fn series_are_capped_and_idle_ones_expire() {
    let config = StoreConfig {
        max_series: 2,
        idle_expiry: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let (store, clock, metrics) = store(config);
    clock.set(at(100 * S));
    let summary = store.ingest(request(&[
        sp("a", 99 * S, MS),
        sp("b", 99 * S, MS),
        sp("c", 99 * S, MS),
        sp("c", 99 * S, MS),
        sp("a", 99 * S, MS),
    ]));
    assert_eq!(summary.accepted, 3);
    assert_eq!(summary.rejected, vec![(RejectReason::SeriesLimit, 2)]);
    assert_eq!(store.series_count(), 2);
    assert_eq!(metrics.otlp_store_series.get(), 2);
    assert_eq!(metrics.otlp_store_series_evicted.get(), 1);

    clock.set(at(130 * S));
    store.ingest(request(&[sp("b", 129 * S, MS)]));
    assert_eq!(store.sweep(), 0);
    clock.set(at(161 * S));
    assert_eq!(store.sweep(), 1, "a was idle for 61 s");
    assert_eq!(store.series_count(), 1);
    assert_eq!(metrics.otlp_store_series.get(), 1);
    assert_eq!(metrics.otlp_store_series_evicted.get(), 2);
    // Room again: c is accepted now.
    let summary = store.ingest(request(&[sp("c", 160 * S, MS)]));
    assert_eq!(summary.accepted, 1);
    assert_eq!(store.series_count(), 2);
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

/// Rates over what the store saw: `started` (s after T0) is when the store started,
/// `settle` its rate settle time; one span per 10 ms from `started` to 100 s; read at
/// `read_at` (s) over 60 s.
fn check_rate(started: f64, settle_s: u64, read_at: f64, expect: Result<f64, &str>) {
    let config = StoreConfig {
        rate_settle: Duration::from_secs(settle_s),
        ..StoreConfig::default()
    };
    let clock = Arc::new(ManualClock::new(at((started * 1e9) as u64)));
    let metrics = Arc::new(Metrics::standalone().1);
    let store = Store::with_clock(config, metrics, clock.clone()).expect("valid config");
    clock.set(at(100 * S));
    let first = (started * 100.0).ceil() as u64;
    let spans: Vec<Sp> = (first..10_000)
        .map(|i| sp("orders", i * 10 * MS, MS))
        .collect();
    store.ingest(request(&spans));
    let got = store.read_at(
        &query("orders", None, TraceMeasure::Rate, 60),
        at((read_at * 1e9) as u64),
    );
    match (got, expect) {
        (Ok(Reading::Value(Some(g))), Ok(e)) => {
            assert!((g - e).abs() < 1e-9, "started {started}: got {g}, want {e}")
        }
        (Err(g), Err(e)) => assert!(g.to_string().contains(e), "got {g}, want {e}"),
        (g, e) => panic!("started {started}: got {g:?}, want {e:?}"),
    }
}

#[test]
fn rates_cover_only_what_the_store_saw_whole() {
    // Running for long: the 60 s window, whole buckets only.
    check_rate(0.0, 0, 100.0, Ok(100.0));
    check_rate(0.0, 0, 99.5, Ok(100.0));
    // Started 12 s before the read: 100 spans/s read as 100, not 100 × 12 / 60.
    check_rate(88.0, 0, 100.0, Ok(100.0));
    // Started mid-bucket: the partial first bucket is left out.
    check_rate(87.5, 0, 100.0, Ok(100.0));
    // With a settle time, the newest seconds are left out.
    check_rate(0.0, 5, 100.0, Ok(100.0));
    check_rate(88.0, 5, 100.0, Ok(100.0));
    // Nothing whole and settled yet: unknown, an error (not 0, not a guess).
    check_rate(97.0, 5, 100.0, Err("otlp: unavailable: rate not known yet"));
    check_rate(99.5, 0, 100.0, Err("rate not known yet"));
}

#[test]
fn max_bytes_bounds_the_store_and_sweeps_give_them_back() {
    let config = StoreConfig {
        max_bytes: 256 * 1024,
        idle_expiry: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let (store, clock, _) = store(config);
    clock.set(at(600 * S));
    // Hostile spans: every second of the retention, latencies from 1 ns to 1000 s, so
    // every bucket's sketch spans all its keys.
    let mut refused = 0;
    for second in 0..600u64 {
        let spans: Vec<Sp> = (0..13)
            .map(|d| sp("orders", second * S, 10u64.pow(d)))
            .collect();
        let summary = store.ingest(request(&spans));
        refused += summary
            .rejected
            .iter()
            .filter(|(r, _)| *r == RejectReason::StoreBytesLimit)
            .map(|(_, n)| n)
            .sum::<u64>();
        // Over by at most one request's buckets.
        assert!(store.bytes() <= 256 * 1024 + 64 * 1024, "{}", store.bytes());
    }
    assert!(refused > 0, "the cap was reached");
    // The count follows what the series hold.
    let (counted, held) = (store.bytes(), store.heap_bytes());
    assert!(
        counted >= held * 9 / 10 && counted <= held * 11 / 10,
        "counted {counted}, held {held}"
    );
    clock.set(at(2_000 * S));
    assert_eq!(store.sweep(), 1);
    assert_eq!(store.bytes(), 0);
}

/// A snapshot's figures: (settle s, read at ns after T0, window s, want count, want
/// errors, want rate). Spans: one per 100 ms from 40 s to 99.95 s (600), every tenth an
/// error; the store ran from T0.
fn check_snapshot(settle_s: u64, read_at: u64, window_s: u64, want: (u64, u64, Option<f64>)) {
    let config = StoreConfig {
        rate_settle: Duration::from_secs(settle_s),
        ..StoreConfig::default()
    };
    let (store, clock, _) = store(config);
    clock.set(at(100 * S));
    let spans: Vec<Sp> = (0..600u64)
        .map(|i| Sp {
            error: i % 10 == 0,
            ..sp("orders", 40 * S + i * 100 * MS + 50 * MS, 20 * MS)
        })
        .collect();
    store.ingest(request(&spans));
    let selector = query("orders", None, TraceMeasure::Rate, window_s).selector;
    let snap = store
        .snapshot_at(&selector, Duration::from_secs(window_s), at(read_at))
        .expect("a snapshot");
    let case = format!("settle {settle_s}s, at {read_at}, window {window_s}s");
    assert_eq!((snap.count(), snap.errors()), (want.0, want.1), "{case}");
    let rate = snap.value(TraceMeasure::Rate).ok().flatten();
    match (rate, want.2) {
        (Some(g), Some(e)) => assert!((g - e).abs() < 1e-9, "{case}: rate {g}, want {e}"),
        (g, e) => assert_eq!(g, e, "{case}: rate"),
    }
    let ratio = snap.value(TraceMeasure::ErrorRatio).expect("ratio");
    let want_ratio = (want.0 > 0).then(|| want.1 as f64 / want.0 as f64);
    assert_eq!(ratio, want_ratio, "{case}: error ratio");
    // A single read answers what the snapshot answers.
    for measure in [TraceMeasure::Rate, TraceMeasure::ErrorRatio, p(0.95)] {
        let q = OtlpQuery {
            selector: selector.clone(),
            measure,
            window: Duration::from_secs(window_s),
        };
        let single = store.read_at(&q, at(read_at)).ok();
        let from_snapshot = snap.value(measure).ok().map(Reading::Value);
        assert_eq!(single, from_snapshot, "{case}: {measure:?}");
    }
}

#[test]
fn snapshots_count_every_span_of_the_window() {
    // Read on a bucket boundary after the last span: all 600, the rate over 60 whole
    // buckets from 40 s is 600 / 60.
    check_snapshot(0, 100 * S, 60, (600, 60, Some(10.0)));
    // Read mid-bucket: the bucket still filling (99 s) counts its 10 spans; the rate
    // leaves it out (590 spans over the 60 whole buckets from 39 s).
    check_snapshot(0, 99_500 * MS, 60, (600, 60, Some(590.0 / 60.0)));
    // A settle time leaves the newest 5 s out of the rate, never out of the count.
    check_snapshot(5, 100 * S, 60, (600, 60, Some(10.0)));
    // A 10 s window read at 99.5 s overlaps the buckets from 89 s: 11 buckets, 110
    // spans, where rate × window (10 whole buckets at 10 spans/s) would say 100.
    check_snapshot(0, 99_500 * MS, 10, (110, 11, Some(10.0)));
    // Nothing in the window: no count, no data (and no rate) rather than zeros.
    check_snapshot(0, 200 * S, 10, (0, 0, None));
}

/// A span whose `tracestate` records `ot=th:…` counts as its adjusted count (OpenTelemetry
/// specification, "TraceState Handling", "Sampling threshold value `th`": `th:8` is p = ½,
/// `th:c` p = ¼) in counts and error ratios; the latency sketch holds each span once.
/// Only accepted spans are counted as without a record.
#[test]
fn sampled_spans_count_by_their_adjusted_count() {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(100 * S));
    let ok = sp("orders", 99 * S, 10 * MS);
    let spans = [
        ok,
        Sp {
            duration: 20 * MS,
            ..ok
        },
        Sp {
            duration: 40 * MS,
            error: true,
            ..ok
        },
        Sp { end: 161 * S, ..ok },
    ];
    let mut req = request(&spans);
    for (rs, state) in
        req.resource_spans
            .iter_mut()
            .zip(["ot=th:8", "", "vendor=1,ot=rv:00000000000001;th:c", ""])
    {
        rs.scope_spans[0].spans[0].trace_state = state.to_string();
    }
    let summary = store.ingest(req);
    assert_eq!(summary.accepted, 3);
    assert_eq!(summary.rejected, [(RejectReason::TooNew, 1)]);
    assert_eq!(summary.without_sampling_record, 1);

    let snap = store
        .snapshot_at(
            &query("orders", None, p(0.5), 60).selector,
            Duration::from_secs(60),
            at(100 * S),
        )
        .expect("snapshot");
    // 2 + 1 + 4 spans, the last (4) an error.
    assert_eq!((snap.count(), snap.errors()), (7, 4));
    assert_eq!(
        snap.value(TraceMeasure::ErrorRatio).expect("known"),
        Some(4.0 / 7.0)
    );
    // Unweighted: the median of 10, 20 and 40 ms (weighted by 2, 1, 4 it would be 40).
    let median = snap.value(p(0.5)).expect("known").expect("a value");
    assert!((median - 0.020).abs() <= 0.01 * 0.020, "{median}");
}

/// A store's warm-up comes before "no data": right after a start, a rate is not known
/// whether or not spans arrived (no span yet is not a rate of 0, which would scale in);
/// once the store has a settled bucket, no spans is no data.
#[test]
fn a_fresh_store_answers_the_warm_up_error_for_rates_even_without_spans() {
    let config = StoreConfig {
        rate_settle: Duration::from_secs(5),
        ..StoreConfig::default()
    };
    let (store, clock, _) = store(config);
    clock.set(at(3 * S));
    let rate = query("orders", None, TraceMeasure::Rate, 60);
    let err = store.read_at(&rate, at(3 * S)).expect_err("not known yet");
    assert!(err.to_string().contains("rate not known yet"), "{err}");
    let snap = store
        .snapshot_at(&rate.selector, rate.window, at(3 * S))
        .expect("a snapshot");
    assert_eq!(snap.count(), 0);
    assert!(snap.value(TraceMeasure::Rate).is_err());
    assert_eq!(snap.rate(), None, "the snapshot says the rate is not known");
    // The other figures have no warm-up: no spans is no data.
    assert_eq!(snap.value(TraceMeasure::ErrorRatio), Ok(None));
    assert_eq!(snap.value(p(0.95)), Ok(None));
    // Warmed up (a whole bucket older than the settle time): no spans is no data, and
    // the snapshot's rate is a known 0.
    clock.set(at(10 * S));
    assert_eq!(
        store.read_at(&rate, at(10 * S)).expect("a reading"),
        Reading::Value(None)
    );
    let snap = store
        .snapshot_at(&rate.selector, rate.window, at(10 * S))
        .expect("a snapshot");
    assert_eq!(snap.rate(), Some(0.0));
}
