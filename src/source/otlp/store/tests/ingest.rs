//! Ingest: what the store refuses and counts (unplaceable, too old, future, late spans),
//! the series cap and idle expiry, and the byte bound its sweeps give back.

use super::*;

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
fn max_bytes_bounds_the_store_and_sweeps_give_them_back() {
    let config = StoreConfig {
        max_bytes: 256 * 1024,
        idle_expiry: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let (store, clock, _) = store(config);
    clock.set(at(600 * S));
    // Hostile spans: every second of the retention, latencies from 1 ns to 100 s (the
    // retention is 600 s), so every bucket's sketch spans most of its keys.
    let mut refused = 0;
    for second in 0..600u64 {
        let spans: Vec<Sp> = (0..12)
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

/// Spans the store refused are not "no spans": a read whose window holds a refusal answers
/// an error (KEDA's fallback decides), not a smaller figure or 0 rps. A refused new series
/// (past `max_series`) fails the reads that match no series; spans refused past
/// `max_bytes`, any series' read. Once the window starts after the refusal, reads answer
/// again.
#[test]
fn a_read_over_refused_spans_is_an_error_not_a_smaller_figure() {
    let rate = |service| query(service, None, TraceMeasure::Rate, 60);
    let capped = StoreConfig {
        max_series: 1,
        ..StoreConfig::default()
    };
    let (capped, clock, _) = store(capped);
    clock.set(at(100 * S));
    let spans: Vec<Sp> = (0..100)
        .flat_map(|i| [sp("a", i * S, MS), sp("b", i * S, MS)])
        .collect();
    let summary = capped.ingest(request(&spans));
    assert_eq!(summary.rejected, vec![(RejectReason::SeriesLimit, 100)]);
    clock.set(at(101 * S));
    let err = capped.read(&rate("b")).expect_err("b's spans were refused");
    assert!(err.to_string().contains("--otlp-max-series"), "{err}");
    let err = capped
        .read(&query("b", None, p(0.95), 60))
        .expect_err("b's spans were refused");
    assert!(err.to_string().contains("--otlp-max-series"), "{err}");
    // a's series holds all its spans.
    assert_eq!(
        capped.read(&rate("a")),
        Ok(Reading::Value(Some(59.0 / 60.0))),
        "one span a second in 59 of the window's 60 whole seconds"
    );
    // A window that starts after the refusal: b sent nothing since, no data.
    clock.set(at(161 * S));
    assert_eq!(capped.read(&rate("b")), Ok(Reading::Value(None)));

    let full = StoreConfig {
        max_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    let (full, clock, _) = store(full);
    let mut refused_at = None;
    for second in 1..300u64 {
        clock.set(at(second * S));
        // 1 ns to 100 s: wide sketches, within the retention.
        let spans: Vec<Sp> = (0..12)
            .map(|d| sp("orders", (second - 1) * S, 10u64.pow(d)))
            .collect();
        let summary = full.ingest(request(&spans));
        if !summary.rejected.is_empty() {
            assert_eq!(summary.rejected, [(RejectReason::StoreBytesLimit, 12)]);
            refused_at = Some(second);
            break;
        }
    }
    let refused_at = refused_at.expect("the byte limit was reached");
    clock.set(at((refused_at + 1) * S));
    let err = full.read(&rate("orders")).expect_err("spans were refused");
    assert!(err.to_string().contains("--otlp-max-store-bytes"), "{err}");
    let err = full
        .read(&query("orders", None, p(0.5), 60))
        .expect_err("spans were refused");
    assert!(err.to_string().contains("--otlp-max-store-bytes"), "{err}");
    // sloCapacity reads ten minutes of history: a refusal in it fails the read too.
    let capacity = TraceMeasure::Capacity(crate::signal::CapacityTarget {
        pod_concurrency: 4.0,
        objective: Duration::from_millis(300),
        quantile: Quantile::P95,
    });
    clock.set(at((refused_at + 300) * S));
    let err = full
        .read(&query("orders", None, capacity, 60))
        .expect_err("spans were refused");
    assert!(err.to_string().contains("--otlp-max-store-bytes"), "{err}");
    // A window after the refusal: nothing sent since, no data.
    clock.set(at((refused_at + 62) * S));
    assert_eq!(full.read(&rate("orders")), Ok(Reading::Value(None)));
}

/// One span may stand for at most [`MAX_ADJUSTED_COUNT`] requests: OpenTelemetry's
/// thresholds reach 1 in 2^56 (`th:ffffffffffffff`), and one such error span among a
/// thousand would otherwise read as an error ratio of 1 and a rate of 10^15 per second.
#[test]
fn a_span_sampled_more_sparsely_than_the_bound_is_refused_not_counted() {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(100 * S));
    let ok = sp("orders", 99 * S, 10 * MS);
    let mut spans = vec![ok; 1000];
    spans.push(Sp { error: true, ..ok });
    spans.push(ok);
    let mut req = request(&spans);
    // 1 in 2^56; and exactly 1 in 16384: 2^56 − 2^42, `th:fffc`.
    req.resource_spans[1000].scope_spans[0].spans[0].trace_state = "ot=th:ffffffffffffff".into();
    req.resource_spans[1001].scope_spans[0].spans[0].trace_state = "ot=th:fffc".into();
    let summary = store.ingest(req);
    assert_eq!(summary.accepted, 1001);
    assert_eq!(summary.rejected, [(RejectReason::SampledTooSparsely, 1)]);
    let snap = snapshot_60s(&store, "orders", at(100 * S));
    assert_eq!(snap.count() as f64, 1000.0 + MAX_ADJUSTED_COUNT);
    assert_eq!(
        snap.value(TraceMeasure::ErrorRatio).expect("known"),
        Some(0.0)
    );
}

/// A span longer than the store's retention is refused: a start time of 1 ns after the
/// epoch (a monotonic clock's reading sent as wall time) would read as 54 years of busy
/// time, 2.8 × 10^7 requests in flight over a minute, and a p99 of 54 years. A span as
/// long as the retention is kept.
#[test]
fn a_span_longer_than_the_retention_is_refused() {
    let (store, clock, _) = store(StoreConfig::default());
    clock.set(at(700 * S));
    let retention = StoreConfig::default().retention.as_nanos() as u64;
    let ok = sp("orders", 699 * S, retention);
    check_ingest_at(&store, &[ok], 1, &[]);
    let epoch_start = Sp {
        duration: T0 + 699 * S - 1,
        ..ok
    };
    let longer = Sp {
        duration: retention + 1,
        ..ok
    };
    check_ingest_at(
        &store,
        &[epoch_start, longer],
        0,
        &[(RejectReason::TooLong, 2)],
    );
}

fn check_ingest_at(store: &Store, spans: &[Sp], accepted: u64, rejected: &[(RejectReason, u64)]) {
    let summary = store.ingest(request(spans));
    assert_eq!(
        (summary.accepted, &summary.rejected[..]),
        (accepted, rejected)
    );
}
