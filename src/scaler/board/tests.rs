//! The board's table and reuse, together: plans memoised per caller, the bound, idle
//! expiry and what may be reused.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::*;
use crate::proto::wire::Metadata;

fn md(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().copied().collect()
}

/// An otlp latency plan from metadata, as the engine makes one (no server needed).
fn plan(md: &HashMap<String, String>) -> Result<Plan, PlanError> {
    let opts = crate::trigger::ParseOptions {
        default_source: crate::trigger::SourceKind::Otlp,
        ..Default::default()
    };
    let trigger = crate::trigger::parse(md, &opts)?;
    let crate::trigger::Read::Otlp(t) = &trigger.read else {
        unreachable!("otlp by default")
    };
    let query = crate::source::Query::Otlp(crate::source::OtlpQuery {
        selector: t.selector.clone(),
        measure: t.measure,
        window: t.window,
    });
    Ok(Plan {
        trigger,
        query,
        slo: None,
        capacity: None,
    })
}

fn board(max_signals: u64, idle_expiry: Duration) -> Board {
    Board::new(
        BoardConfig {
            max_signals,
            idle_expiry,
        },
        Counter::default(),
    )
}

fn trigger(threshold: u32) -> Metadata {
    md(&[
        ("signal", "latency"),
        ("service", "orders"),
        ("threshold", &format!("{threshold}ms")),
    ])
}

/// A caller asking again gets the memoised plan, planned once, whatever order its
/// metadata map came in; another caller or other metadata is another entry.
#[test]
fn one_plan_per_caller_and_metadata() {
    let b = board(100, Duration::from_secs(60));
    let planned = std::cell::Cell::new(0);
    let counted = |md: &HashMap<String, String>| {
        planned.set(planned.get() + 1);
        plan(md)
    };
    let a = b.entry("shop", "orders", &trigger(300), counted).unwrap();
    let reordered = md(&[
        ("threshold", "300ms"),
        ("service", "orders"),
        ("signal", "latency"),
    ]);
    let again = b.entry("shop", "orders", &reordered, counted).unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    assert_eq!(planned.get(), 1);
    b.entry("shop", "orders", &trigger(301), counted).unwrap();
    b.entry("shop", "other", &trigger(300), counted).unwrap();
    assert_eq!((planned.get(), b.len()), (3, 3));
    assert_eq!((a.namespace(), a.name()), ("shop", "orders"));
    // A refused trigger or name leaves nothing behind.
    assert!(b
        .entry("shop", "orders", &md(&[("signal", "nope")]), plan)
        .is_err());
    assert!(b.entry("Shop!", "orders", &trigger(300), plan).is_err());
    assert_eq!(b.len(), 3);
}

/// Never more than `max_signals` entries; what goes is the least recently asked about,
/// and each is counted as evicted.
#[test]
fn full_board_evicts_the_least_recently_asked() {
    let b = board(4, Duration::from_secs(60));
    let names: Vec<String> = (0..4).map(|i| format!("so-{i}")).collect();
    for n in &names {
        b.entry("shop", n, &trigger(300), plan).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    // so-0 is asked again, so so-1 is now the least recently asked.
    b.entry("shop", "so-0", &trigger(300), plan).unwrap();
    std::thread::sleep(Duration::from_millis(3));
    b.entry("shop", "so-new", &trigger(300), plan).unwrap();
    assert_eq!((b.len(), b.evicted()), (4, 1));
    let held: Vec<String> = b.snapshot().iter().map(|r| r.entry.name().into()).collect();
    assert_eq!(held, ["so-0", "so-2", "so-3", "so-new"]);
    for i in 0..200 {
        b.entry("shop", &format!("flood-{i}"), &trigger(300), plan)
            .unwrap();
        assert!(b.len() <= 4);
    }
    assert_eq!((b.len(), b.evicted()), (4, 201));
}

/// Many threads adding different entries at once never push the board over its cap.
#[test]
fn the_cap_holds_under_concurrent_callers() {
    let b = Arc::new(board(50, Duration::from_secs(60)));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    b.entry("shop", &format!("so-{t}-{i}"), &trigger(300), plan)
                        .unwrap();
                    let held = b.len.load(Ordering::Acquire);
                    assert!(held <= 50, "{held}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(b.len(), 50);
    assert_eq!(b.evicted(), 8 * 200 - 50);
}

/// Runs `f` on a thread of its own and waits at most 60 s for it: a caller stalled behind
/// a lock it should never take fails the test instead of hanging it.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: still waiting after 60 s"))
}

/// Invariant 12, the answer path takes no process-wide lock: while one caller's planning is
/// under way (planned outside every lock) every other caller is answered, hits and new
/// plans alike; while one shard is held for writing, a caller whose entry is in another
/// shard is answered.
#[test]
fn a_planning_under_way_or_a_held_shard_stalls_no_other_caller() {
    let b = Arc::new(board(1_000, Duration::from_secs(600)));
    let names: Vec<String> = (0..64).map(|i| format!("so-{i}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| b.entry("shop", n, &trigger(300), plan).unwrap())
        .collect();

    // A planning that does not end until the test lets it.
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let slow = std::thread::spawn({
        let b = b.clone();
        move || {
            b.entry("shop", "slow", &trigger(300), |md| {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                plan(md)
            })
            .map(drop)
        }
    });
    entered_rx.recv().unwrap();
    within_a_minute("callers beside a planning under way", {
        let (b, names, entries) = (b.clone(), names.clone(), entries.clone());
        move || {
            for (n, e) in names.iter().zip(&entries) {
                let hit = b.entry("shop", n, &trigger(300), plan).unwrap();
                assert!(Arc::ptr_eq(&hit, e), "{n} planned again");
            }
            b.entry("shop", "new", &trigger(300), plan).unwrap();
        }
    });
    release_tx.send(()).unwrap();
    slow.join().unwrap().unwrap();

    // One shard held for writing; a caller on another shard.
    let shard_of = |e: &Arc<Entry>| {
        b.shards
            .iter()
            .position(|s| s.read().unwrap().iter().any(|x| Arc::ptr_eq(x, e)))
            .unwrap()
    };
    let held_shard = shard_of(&entries[0]);
    let elsewhere = (0..entries.len())
        .find(|&i| shard_of(&entries[i]) != held_shard)
        .expect("64 entries in one shard of 16");
    let held = b.shards[held_shard].write().unwrap();
    let hit = within_a_minute("a caller on another shard", {
        let (b, name) = (b.clone(), names[elsewhere].clone());
        move || b.entry("shop", &name, &trigger(300), plan).unwrap()
    });
    assert!(Arc::ptr_eq(&hit, &entries[elsewhere]));
    drop(held);
}

/// Entries nobody asked about for `idle_expiry` go (and are not counted as evicted); one
/// asked about stays.
#[test]
fn idle_entries_go() {
    // The idle clock moved by hand, 4 s at a time against a 10 s expiry: only a pause of
    // 6 s in the test itself could change the outcome.
    let b = board(100, Duration::from_secs(10));
    let advance = |ms: u64| b.skew_ms.fetch_add(ms, Ordering::Relaxed);
    let kept = b.entry("shop", "kept", &trigger(300), plan).unwrap();
    b.entry("shop", "idle", &trigger(300), plan).unwrap();
    for _ in 0..3 {
        advance(4_000);
        let again = b.entry("shop", "kept", &trigger(300), plan).unwrap();
        assert!(Arc::ptr_eq(&kept, &again));
    }
    let held: Vec<String> = b.snapshot().iter().map(|r| r.entry.name().into()).collect();
    assert_eq!(held, ["kept"]);
    assert_eq!(b.evicted(), 0);
    advance(11_000);
    assert!(b.is_empty());
    // Asked about after expiring: planned anew.
    let fresh = b.entry("shop", "kept", &trigger(300), plan).unwrap();
    assert!(!Arc::ptr_eq(&kept, &fresh));
}

/// An answer is served again only while the cache holds exactly the state it came
/// from and it is younger than the TTL: a newer answer fetched for another caller, an
/// error, a stale or an uncached answer all stop reuse.
#[tokio::test]
async fn only_what_the_cache_would_serve_is_reused() {
    use crate::source::Reading;
    let cache = small_cache();
    let b = board(10, Duration::from_secs(60));
    let e = b.entry("shop", "orders", &trigger(300), plan).unwrap();
    let q = e.plan.query.clone();
    let ttl = Duration::from_millis(300);
    let answer = |v: f64| async move { Ok(Reading::Value(Some(v))) };
    let evaluation = |value: f64, age: Duration| Evaluation {
        value,
        active: true,
        age,
        stale: false,
        no_data: false,
    };
    assert_eq!(e.reuse(ttl), None, "nothing answered yet");

    let (served, watch) = cache.get_watched(&q, ttl, || answer(0.42)).await;
    e.record(&Ok(evaluation(0.42, served.unwrap().age)), Some(watch));
    let again = e
        .reuse(ttl)
        .expect("the cache holds it, younger than the TTL");
    assert_eq!(
        (again.value, again.active, again.stale),
        (0.42, true, false)
    );

    // Another caller with a shorter TTL refetches: the cache holds a newer answer now.
    let (newer, _) = cache.get_watched(&q, Duration::ZERO, || answer(0.5)).await;
    assert_eq!(newer.unwrap().reading, Reading::Value(Some(0.5)));
    assert_eq!(e.reuse(ttl), None, "the cache would serve 0.5, not 0.42");

    // Served the newer answer (a hit), reused until three quarters of a TTL old.
    let (served, watch) = cache.get_watched(&q, ttl, || answer(0.9)).await;
    let served = served.unwrap();
    assert_eq!(served.reading, Reading::Value(Some(0.5)));
    e.record(&Ok(evaluation(0.5, served.age)), Some(watch.clone()));
    assert_eq!(e.reuse(ttl).map(|ev| ev.value), Some(0.5));
    tokio::time::sleep(Duration::from_millis(240)).await;
    assert_eq!(
        e.reuse(ttl),
        None,
        "in the TTL's last quarter: asked of the cache, which refreshes it ahead"
    );

    let fresh = evaluation(0.5, Duration::ZERO);
    e.record(&Ok(fresh.clone()), None);
    assert_eq!(
        e.reuse(ttl),
        None,
        "not read through the cache: never reused"
    );
    let stale = Evaluation {
        stale: true,
        ..fresh.clone()
    };
    e.record(&Ok(stale), Some(watch.clone()));
    assert_eq!(e.reuse(ttl), None, "a stale answer is never reused");
    e.record(&Err(EvalError::NoData { metric: "m".into() }), Some(watch));
    assert_eq!(e.reuse(ttl), None, "an error is never reused");
    assert_eq!(e.state(), Some(SignalState::NoData));
}

/// A raw-query plan as the engine makes one for a Prometheus backend named `default`.
fn raw_plan(md: &HashMap<String, String>) -> Result<Plan, PlanError> {
    let trigger = crate::trigger::parse(md, &Default::default())?;
    let query = crate::source::Query::Prometheus(crate::source::PromQuery {
        backend: "default".into(),
        tenant: None,
        promql: md["query"].clone(),
    });
    Ok(Plan {
        trigger,
        query,
        slo: None,
        capacity: None,
    })
}

/// A `/debug/signals` row stays under 8 KiB whatever a caller sends (docs/limits.md): the
/// longest names, a full history, a long error, and a raw query of 16 KiB of control
/// characters (each written `\u0001` in JSON: 99 KiB a row when shown whole), of which the
/// row shows the first 512 characters and the query's length.
#[test]
fn a_debug_row_is_bounded_whatever_the_caller_sends() {
    let b = board(10, Duration::from_secs(60));
    let query = "\u{1}".repeat(crate::trigger::MAX_QUERY_BYTES);
    let md = md(&[
        ("signal", "query"),
        ("source", "prometheus"),
        ("query", &query),
        ("threshold", "10"),
    ]);
    let (namespace, name) = ("n".repeat(63), "o".repeat(253));
    let e = b.entry(&namespace, &name, &md, raw_plan).unwrap();
    let error = crate::source::SourceError::BadQuery {
        backend: "prometheus/default".into(),
        detail: "\"".repeat(512),
    };
    e.record(&Err(EvalError::Source(error)), None);
    {
        let mut slot = e.slot();
        slot.history.clear();
        slot.history.extend(std::iter::repeat_n(
            (u32::MAX, -f32::MAX),
            history::HISTORY_LEN,
        ));
    }
    let body = b.debug_json();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert!(body.len() < 8 * 1024, "a row of {} bytes", body.len());
    let shown = rows[0]["query"].as_str().unwrap();
    let head = format!("prometheus/default: {}", &query[..512 - 20]);
    assert_eq!(shown, format!("{head}… (16404 bytes)"));
    assert_eq!(
        rows[0]["history"].as_array().unwrap().len(),
        history::HISTORY_LEN
    );
}

/// A value's age (`valueAgeSeconds`, `slo_scaler_signal_age_seconds`) is its backend
/// answer's age when it was last served: a lookup that serves no value (GetMetricSpec, a
/// GetMetrics for another metric) does not age it.
#[tokio::test]
async fn a_lookup_that_serves_no_value_does_not_age_the_value() {
    use crate::source::Reading;
    let cache = small_cache();
    let b = board(10, Duration::from_secs(600));
    let e = b.entry("shop", "orders", &trigger(300), plan).unwrap();
    let (served, watch) = cache
        .get_watched(&e.plan.query, Duration::from_secs(60), || async {
            Ok(Reading::Value(Some(0.42)))
        })
        .await;
    let evaluation = Evaluation {
        value: 0.42,
        active: true,
        age: served.unwrap().age,
        stale: false,
        no_data: false,
    };
    e.record(&Ok(evaluation), Some(watch));
    let age = || {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&b.debug_json()).unwrap();
        rows[0]["valueAgeSeconds"].as_f64().unwrap()
    };
    assert!(age() < 5.0, "{}", age());
    // Five minutes on, a caller looks the trigger up and is served no value.
    b.skew_ms.fetch_add(300_000, Ordering::Relaxed);
    b.entry("shop", "orders", &trigger(300), plan).unwrap();
    assert!(
        age() < 5.0,
        "{} s after a lookup that served nothing",
        age()
    );
}

/// A cache of ten entries whose answers are fresh for up to 60 s and served stale for 60 s.
fn small_cache() -> crate::cache::SignalCache {
    let (_, metrics) = crate::telemetry::Metrics::standalone();
    crate::cache::SignalCache::new(
        crate::cache::CacheConfig {
            max_stale: Duration::from_secs(60),
            max_ttl: Duration::from_secs(60),
            max_entries: 10,
            max_bytes: 1 << 20,
        },
        Arc::new(metrics),
    )
}
