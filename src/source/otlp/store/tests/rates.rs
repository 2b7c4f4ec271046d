//! Rates and snapshots: only what the store saw whole, every span of the window counted
//! (sampled ones by their adjusted count), and the warm-up error before that.

use super::*;

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

    let snap = snapshot_60s(&store, "orders", at(100 * S));
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
