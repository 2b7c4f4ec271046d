//! The signal cache's tests: one fetch per query at a time, stale-on-error, remembered
//! errors, the bounds, per-caller freshness and the refresh ahead of the TTL.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::source::PromQuery;

fn query(s: &str) -> Query {
    Query::Prometheus(PromQuery {
        backend: "default".into(),
        tenant: None,
        promql: s.into(),
    })
}

fn cache(max_stale_ms: u64) -> SignalCache {
    let (_, metrics) = Metrics::standalone();
    SignalCache::new(
        CacheConfig {
            max_stale: Duration::from_millis(max_stale_ms),
            max_ttl: Duration::from_secs(60),
            max_entries: 1000,
            max_bytes: 1 << 20,
        },
        Arc::new(metrics),
    )
}

/// A clock the test moves by hand: ages are exact, whatever the machine's load.
#[derive(Clone)]
struct Hand(Arc<Mutex<Instant>>);

impl Hand {
    fn new() -> Self {
        Hand(Arc::new(Mutex::new(Instant::now())))
    }
    fn clock(&self) -> Clock {
        let at = Arc::clone(&self.0);
        Arc::new(move || *at.lock().unwrap())
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

/// [`cache`] on a hand-moved clock.
fn cache_at(max_stale_ms: u64) -> (SignalCache, Hand) {
    let hand = Hand::new();
    (cache(max_stale_ms).with_clock(hand.clock()), hand)
}

/// Waits (in real time, up to 10 s) until no refresh of `q` is under way: a refresh
/// runs on the runtime, off the caller's path.
async fn refreshed(c: &SignalCache, q: &Query) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c
        .slots
        .get(q)
        .is_some_and(|slot| slot.refreshing.load(Ordering::Acquire))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn down() -> SourceError {
    SourceError::Connect {
        backend: "prometheus/default".into(),
        detail: "refused".into(),
    }
}

#[tokio::test]
async fn concurrent_misses_make_one_call() {
    let c = Arc::new(cache(1000));
    let calls = Arc::new(AtomicUsize::new(0));
    let q = query("up");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (c, calls, q) = (c.clone(), calls.clone(), q.clone());
            tokio::spawn(async move {
                c.get(&q, Duration::from_secs(10), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Reading::Value(Some(1.0)))
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().reading, Reading::Value(Some(1.0)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stale_then_error_then_recovery() {
    let (c, hand) = cache_at(300);
    let q = query("up");
    let ttl = Duration::from_millis(50);
    let v = c
        .get(&q, ttl, || async { Ok(Reading::Value(Some(7.0))) })
        .await
        .unwrap();
    assert!(!v.stale);
    hand.advance(Duration::from_millis(80));
    let v = c.get(&q, ttl, || async { Err(down()) }).await.unwrap();
    assert!(v.stale);
    assert_eq!(v.reading, Reading::Value(Some(7.0)));
    hand.advance(Duration::from_millis(300));
    let e = c.get(&q, ttl, || async { Err(down()) }).await.unwrap_err();
    assert_eq!(e, down());
    hand.advance(Duration::from_millis(80));
    let v = c
        .get(&q, ttl, || async { Ok(Reading::Value(Some(8.0))) })
        .await
        .unwrap();
    assert_eq!((v.reading, v.stale), (Reading::Value(Some(8.0)), false));
}

#[tokio::test]
async fn errors_are_remembered_for_about_a_second_not_a_ttl() {
    let (c, hand) = cache_at(0);
    let calls = AtomicUsize::new(0);
    let ask = || async {
        c.get(&query("bad"), Duration::from_secs(60), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(down())
        })
        .await
    };
    for _ in 0..5 {
        assert!(ask().await.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call per error TTL");
    hand.advance(ERROR_TTL + Duration::from_millis(50));
    assert!(ask().await.is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "asked again after a second"
    );
}

/// A cache with `max_entries` and `max_bytes`, and the registry of its metrics (the
/// gauges registered as the server does).
fn bounded(
    max_entries: u64,
    max_bytes: u64,
) -> (SignalCache, prometheus_client::registry::Registry) {
    let (mut registry, metrics) = Metrics::standalone();
    let c = SignalCache::new(
        CacheConfig {
            max_stale: Duration::from_secs(120),
            max_ttl: Duration::from_secs(60),
            max_entries,
            max_bytes,
        },
        Arc::new(metrics),
    );
    registry.register_collector(Box::new(c.gauges()));
    (c, registry)
}

/// The value of the unlabelled or labelled series `series` in the registry's text.
fn scrape(registry: &prometheus_client::registry::Registry, series: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Distinct 16 KiB raw queries (what a hostile caller may send) fill the byte bound,
/// not the entry bound: the cache holds at most `max_bytes`, drops the least used, and
/// counts them; small queries meet the entry bound first.
#[tokio::test]
async fn the_cache_is_bounded_by_bytes_and_by_entries() {
    let (c, registry) = bounded(1000, 1 << 20);
    let pad = "x".repeat(16 * 1024);
    for i in 0..200 {
        let q = query(&format!("{i} {pad}"));
        c.get(&q, Duration::from_secs(10), || async {
            Ok(Reading::Value(Some(1.0)))
        })
        .await
        .unwrap();
    }
    let bytes = scrape(&registry, "slo_scaler_cache_bytes").unwrap();
    let entries = scrape(&registry, "slo_scaler_cache_entries").unwrap();
    assert!(bytes <= (1 << 20) as f64, "{bytes} bytes held");
    assert!(
        bytes >= entries * 16.0 * 1024.0,
        "each entry weighs its query: {bytes} for {entries}"
    );
    assert!(
        (40.0..=64.0).contains(&entries),
        "{entries} entries of 16 KiB in 1 MiB"
    );
    let evicted = scrape(
        &registry,
        r#"slo_scaler_cache_evictions_total{reason="size"}"#,
    )
    .unwrap();
    // Every query not held was dropped for size (one re-weighed while its eviction was
    // pending is dropped, and counted, again).
    assert!(
        evicted + entries >= 200.0,
        "{evicted} dropped, {entries} held"
    );

    let (c, registry) = bounded(100, 1 << 20);
    for i in 0..1000 {
        let q = query(&format!("up{{i=\"{i}\"}}"));
        c.get(&q, Duration::from_secs(10), || async {
            Ok(Reading::Value(Some(1.0)))
        })
        .await
        .unwrap();
    }
    let entries = scrape(&registry, "slo_scaler_cache_entries").unwrap();
    assert!(
        (50.0..=100.0).contains(&entries),
        "{entries} entries, at most 100"
    );
}

/// A query the backend refuses keeps no slot past the error TTL (a caller cycling
/// refused raw queries would otherwise hold each for the idle time, minutes), while a
/// query that once answered is kept for its stale window.
#[tokio::test]
async fn a_refused_query_is_forgotten_with_its_error() {
    let (c, registry) = bounded(1000, 1 << 20);
    let ttl = Duration::from_secs(10);
    let refused = SourceError::BadQuery {
        backend: "prometheus/default".into(),
        detail: "parse error".into(),
    };
    c.get(&query("up{"), ttl, || async { Err(refused.clone()) })
        .await
        .unwrap_err();
    c.get(&query("up"), ttl, || async {
        Ok(Reading::Value(Some(1.0)))
    })
    .await
    .unwrap();
    assert_eq!(scrape(&registry, "slo_scaler_cache_entries"), Some(2.0));
    tokio::time::sleep(ERROR_TTL + Duration::from_millis(100)).await;
    assert_eq!(scrape(&registry, "slo_scaler_cache_entries"), Some(1.0));
    assert_eq!(
        scrape(
            &registry,
            r#"slo_scaler_cache_evictions_total{reason="expired"}"#
        ),
        Some(1.0)
    );
}

/// A remembered error served again is counted as `error`, not as a `hit`.
#[tokio::test]
async fn remembered_errors_are_counted_as_errors() {
    let (c, registry) = bounded(1000, 1 << 20);
    for _ in 0..5 {
        c.get(&query("bad"), Duration::from_secs(10), || async {
            Err(down())
        })
        .await
        .unwrap_err();
    }
    let count = |result: &str| {
        scrape(
            &registry,
            &format!("slo_scaler_cache_requests_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(
        (count("miss"), count("error"), count("hit")),
        (Some(1.0), Some(4.0), None)
    );
}

#[tokio::test]
async fn each_caller_gets_its_own_freshness() {
    let (c, hand) = cache_at(60_000);
    let q = query("shared");
    let calls = AtomicUsize::new(0);
    let read = |ttl_ms: u64| {
        let (c, q, calls) = (&c, &q, &calls);
        async move {
            let n = calls.load(Ordering::SeqCst);
            c.get(q, Duration::from_millis(ttl_ms), || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(Reading::Value(Some(n as f64)))
            })
            .await
            .unwrap()
        }
    };
    // A long-TTL caller fills the cache; a short-TTL caller later refetches; the
    // long-TTL caller is then served the newer answer.
    assert_eq!(read(60_000).await.reading, Reading::Value(Some(0.0)));
    hand.advance(Duration::from_millis(120));
    assert_eq!(read(60_000).await.reading, Reading::Value(Some(0.0)));
    assert_eq!(read(100).await.reading, Reading::Value(Some(1.0)));
    assert_eq!(read(60_000).await.reading, Reading::Value(Some(1.0)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A refresher that counts its calls and answers `answer` after `delay`.
fn refresher(
    calls: Arc<AtomicUsize>,
    answer: Result<f64, SourceError>,
    delay: Duration,
) -> Refresher {
    Arc::new(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            answer.map(|v| Reading::Value(Some(v)))
        })
    })
}

/// The value a caller is served, and whether it was asked for on the caller's path.
async fn read(c: &SignalCache, q: &Query, ttl: Duration) -> (Served, bool) {
    let asked = AtomicUsize::new(0);
    let served = c
        .get(q, ttl, || async {
            asked.fetch_add(1, Ordering::SeqCst);
            Ok(Reading::Value(Some(-1.0)))
        })
        .await
        .unwrap();
    (served, asked.load(Ordering::SeqCst) > 0)
}

/// Callers in the last quarter of the TTL are served what is held — they do not wait
/// for the refresh (it answers 2.0 only 300 ms later) — and start one refresh between
/// them; after the first answer's TTL the next caller finds the refreshed answer
/// instead of asking the backend itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_the_last_quarter_of_the_ttl_are_refreshed_off_the_callers_path() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let hand = Hand::new();
    let c = Arc::new(
        cache(60_000)
            .with_clock(hand.clock())
            .with_refresher(refresher(
                refreshes.clone(),
                Ok(2.0),
                Duration::from_millis(300),
            )),
    );
    let (q, ttl) = (query("up"), Duration::from_secs(2));
    c.get(&q, ttl, || async { Ok(Reading::Value(Some(1.0))) })
        .await
        .unwrap();
    let (early, asked) = read(&c, &q, ttl).await;
    assert_eq!((early.reading, asked), (Reading::Value(Some(1.0)), false));
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        0,
        "not in the last quarter"
    );

    hand.advance(Duration::from_millis(1600));
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let (c, q) = (c.clone(), q.clone());
            tokio::spawn(async move { read(&c, &q, ttl).await })
        })
        .collect();
    for caller in callers {
        let (served, asked) = caller.await.unwrap();
        assert_eq!(
            served.reading,
            Reading::Value(Some(1.0)),
            "served what is held"
        );
        assert!(
            served.age >= refresh_from(ttl) && served.age < ttl,
            "{served:?}"
        );
        assert!(!asked && !served.stale);
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "one refresh for all");

    refreshed(&c, &q).await;
    hand.advance(Duration::from_millis(500));
    let (later, asked) = read(&c, &q, ttl).await;
    assert_eq!(later.reading, Reading::Value(Some(2.0)), "{later:?}");
    assert!(!asked, "the caller found the refreshed answer");
    assert!(later.age < Duration::from_secs(1), "{later:?}");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}

/// A refresh that fails changes nothing a caller is served while the answer is younger
/// than the TTL, is not tried again within the error TTL, and after the TTL the rule
/// for a failed backend holds: the last good answer, marked stale, while `max_stale`
/// allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_serves_the_held_answer_then_stale() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let hand = Hand::new();
    let c = cache(60_000)
        .with_clock(hand.clock())
        .with_refresher(refresher(refreshes.clone(), Err(down()), Duration::ZERO));
    let (q, ttl) = (query("up"), Duration::from_secs(2));
    c.get(&q, ttl, || async { Ok(Reading::Value(Some(1.0))) })
        .await
        .unwrap();
    hand.advance(Duration::from_millis(1600));
    let (served, _) = read(&c, &q, ttl).await;
    assert_eq!(
        (served.reading, served.stale),
        (Reading::Value(Some(1.0)), false)
    );
    refreshed(&c, &q).await;
    hand.advance(Duration::from_millis(150));
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    let (served, asked) = read(&c, &q, ttl).await;
    assert_eq!(
        (served.stale, asked),
        (false, false),
        "younger than the TTL"
    );
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "not again within the error TTL"
    );

    hand.advance(Duration::from_millis(400));
    let (served, asked) = read(&c, &q, ttl).await;
    assert_eq!(
        (served.reading, served.stale, asked),
        (Reading::Value(Some(1.0)), true, false),
        "past the TTL, within a second of the failure: the last good answer, stale"
    );
}

/// Without a refresher (as in `check`) an answer in the last quarter is served and left
/// to expire; the caller after the TTL asks the backend itself.
#[tokio::test]
async fn without_a_refresher_answers_expire() {
    let (c, hand) = cache_at(60_000);
    let (q, ttl) = (query("up"), Duration::from_millis(400));
    c.get(&q, ttl, || async { Ok(Reading::Value(Some(1.0))) })
        .await
        .unwrap();
    hand.advance(Duration::from_millis(320));
    assert!(!read(&c, &q, ttl).await.1, "served what is held");
    hand.advance(Duration::from_millis(200));
    assert!(read(&c, &q, ttl).await.1, "asked by the caller");
}

#[tokio::test]
async fn a_short_outage_under_a_long_ttl_is_served_stale() {
    let (c, hand) = cache_at(60_000);
    let q = query("up");
    let v = c
        .get(&q, Duration::from_millis(50), || async {
            Ok(Reading::Value(Some(3.0)))
        })
        .await
        .unwrap();
    assert!(!v.stale);
    hand.advance(Duration::from_millis(80));
    let v = c
        .get(&q, Duration::from_millis(50), || async { Err(down()) })
        .await
        .unwrap();
    assert_eq!((v.reading, v.stale), (Reading::Value(Some(3.0)), true));
}
