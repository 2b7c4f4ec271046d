//! The signal cache: every backend answer, keyed by its [`Query`], served fresh enough
//! for each caller, with single flight, a hard timeout, and stale-on-error.
//!
//! Invariants:
//! - freshness is the caller's: a trigger with `cacheTTL: 1s` gets an answer at most about
//!   a second old even when another trigger with a longer TTL shares the query;
//! - concurrent requests for the same query make one backend call (one fetch at a time
//!   per query; callers waiting for it are served its answer);
//! - a fetch is bounded by its caller: `Sources::fetch` owns the one deadline per backend
//!   call (`--backend-timeout`);
//! - an error is remembered for [`ERROR_TTL`] at most (never a whole TTL), so one transient
//!   failure does not turn into minutes of errors;
//! - after a failure the last good answer is served while younger than `max_stale`, then the
//!   error is returned. No value is ever made up;
//! - an answer served in the last quarter of its caller's TTL is also refreshed, once, off
//!   the caller's path (with a [`Refresher`]): the caller is served what is held, younger
//!   than its TTL as always, and the next caller finds the newer answer instead of waiting
//!   for the backend. Only a caller's hit starts a refresh: nothing is asked for a query
//!   nobody asks about.
//!
//! The rule itself is [`decide`], a pure function.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod freshness;

use crate::source::{Query, Reading, SourceError};
use crate::telemetry::Metrics;

pub use freshness::{decide, refresh_from, Freshness, Held, ERROR_TTL};

/// Asks the backend for a query off any caller's path (a refresh ahead of the TTL): the
/// same call a miss makes, as a future that owns what it needs.
pub type Refresher = Arc<
    dyn Fn(Query) -> Pin<Box<dyn Future<Output = Result<Reading, SourceError>> + Send>>
        + Send
        + Sync,
>;

/// What one caller is served: the answer, the cache result it counts as, and the slot's
/// generation it was served from.
type Answer = (Result<Served, SourceError>, &'static str, u64);

/// A backend answer and when it was fetched.
#[derive(Debug, Clone)]
struct Good {
    reading: Reading,
    fetched_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    good: Option<Good>,
    /// The last error, if newer than `good`.
    error: Option<(SourceError, Instant)>,
}

impl State {
    fn held(&self, now: Instant) -> Held {
        Held {
            good: self.good.as_ref().map(|g| now.duration_since(g.fetched_at)),
            error: self.error.as_ref().map(|(_, at)| now.duration_since(*at)),
        }
    }
}

/// One query's answers, and the lock that makes its fetches one at a time.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    flight: tokio::sync::Mutex<()>,
    /// A refresh ahead of the TTL is under way (at most one per query).
    refreshing: AtomicBool,
    /// Changes (under the state's lock) whenever the state does, and when the slot goes.
    generation: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// What an answer was served from: its query's slot and the slot's generation then. While
/// [`Watch::current`] equals [`Watch::seen`] the cache holds exactly the state it was
/// served from (no newer answer, no error since, not forgotten), so it would serve that
/// answer again to a caller with the same TTL while it is younger than the TTL ([`decide`]).
#[derive(Debug, Clone)]
pub struct Watch {
    generation: Arc<AtomicU64>,
    seen: u64,
}

impl Watch {
    /// The same query's slot as `other` (both watch one cell).
    pub fn same_slot(&self, other: &Watch) -> bool {
        Arc::ptr_eq(&self.generation, &other.generation)
    }

    /// The generation seen, to compare with [`Watch::current`] later.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the cache served.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub reading: Reading,
    /// How old the backend answer is.
    pub age: Duration,
    /// True when this is the last good answer, served because the backend failed.
    pub stale: bool,
}

/// Cache settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// How long the last good answer may stand in for a failing backend.
    pub max_stale: Duration,
    /// The longest TTL a caller may ask for.
    pub max_ttl: Duration,
    /// Most distinct queries held.
    pub max_entries: u64,
}

pub struct SignalCache {
    slots: moka::sync::Cache<Query, Arc<Slot>>,
    config: CacheConfig,
    metrics: Arc<Metrics>,
    refresher: Option<Refresher>,
}

impl SignalCache {
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        // Nobody asked for longer than any TTL and any stale window: nothing to keep.
        let idle = config.max_stale.max(config.max_ttl) + Duration::from_secs(1);
        SignalCache {
            slots: moka::sync::Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_idle(idle)
                .build(),
            config,
            metrics,
            refresher: None,
        }
    }

    /// Refreshes answers in the last quarter of their TTL through `refresher`, off the
    /// caller's path (without one, such answers are served and left to expire).
    pub fn with_refresher(mut self, refresher: Refresher) -> Self {
        self.refresher = Some(refresher);
        self
    }

    /// Serves `query` with an answer younger than `ttl`, calling `fetch` (once, however many
    /// callers wait) when there is none.
    pub async fn get<F, Fut>(
        &self,
        query: &Query,
        ttl: Duration,
        fetch: F,
    ) -> Result<Served, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reading, SourceError>>,
    {
        self.get_watched(query, ttl, fetch).await.0
    }

    /// [`SignalCache::get`], and what the answer was served from.
    pub async fn get_watched<F, Fut>(
        &self,
        query: &Query,
        ttl: Duration,
        fetch: F,
    ) -> (Result<Served, SourceError>, Watch)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reading, SourceError>>,
    {
        let slot = self.slots.get_with_by_ref(query, Default::default);
        let (served, result, seen) = match self.serve(&slot, ttl) {
            Some((answer, refresh)) => {
                if refresh {
                    self.refresh_ahead(&slot, query, ttl);
                }
                answer
            }
            None => {
                let _flight = slot.flight.lock().await;
                // Someone else may have fetched while this caller waited.
                match self.serve(&slot, ttl) {
                    // Fetched by the caller this one waited for: nothing to refresh.
                    Some((answer, _)) => answer,
                    None => {
                        let result = fetch().await;
                        let (served, seen) = keep(&slot, result, self.config.max_stale);
                        let result = match &served {
                            Ok(s) if s.stale => "stale",
                            _ => "miss",
                        };
                        (served, result, seen)
                    }
                }
            }
        };
        self.metrics.record_cache(result);
        let watch = Watch {
            generation: slot.generation.clone(),
            seen,
        };
        (served, watch)
    }

    /// The answer for this caller from what is held (and whether to refresh it ahead of
    /// the TTL), or `None` to fetch.
    fn serve(&self, slot: &Slot, ttl: Duration) -> Option<(Answer, bool)> {
        let now = Instant::now();
        let state = slot.state();
        let decision = decide(state.held(now), ttl, self.config.max_stale);
        let seen = slot.generation.load(Ordering::Acquire);
        answer(&state, decision, now).map(|(served, result)| {
            (
                (served, result, seen),
                decision == Freshness::ServeAndRefresh,
            )
        })
    }

    /// Starts the one refresh of `query` ahead of its TTL, unless one is under way or no
    /// runtime or refresher is at hand. It takes the query's flight lock like a miss, asks
    /// again only if no caller fetched meanwhile, and keeps the answer (or the error, which
    /// the next callers see as [`decide`] says).
    fn refresh_ahead(&self, slot: &Arc<Slot>, query: &Query, ttl: Duration) {
        let (Some(refresher), Ok(runtime)) =
            (&self.refresher, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        if slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears `refreshing` however the task ends.
        struct Done(Arc<Slot>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.refreshing.store(false, Ordering::Release);
            }
        }
        let done = Done(Arc::clone(slot));
        let max_stale = self.config.max_stale;
        let fetch = refresher(query.clone());
        runtime.spawn(async move {
            let slot = &done.0;
            let _flight = slot.flight.lock().await;
            let held = slot.state().held(Instant::now());
            if decide(held, ttl, max_stale) == Freshness::ServeAndRefresh {
                let _ = keep(slot, fetch.await, max_stale);
            }
        });
    }
}

/// Keeps what the backend answered and serves it: the fresh answer, or after a failure the
/// last good one while younger than `max_stale`, else the error.
fn keep(
    slot: &Slot,
    result: Result<Reading, SourceError>,
    max_stale: Duration,
) -> (Result<Served, SourceError>, u64) {
    let now = Instant::now();
    let mut state = slot.state();
    let seen = slot.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let served = match result {
        Ok(reading) => {
            state.good = Some(Good {
                reading: reading.clone(),
                fetched_at: now,
            });
            state.error = None;
            Ok(Served {
                reading,
                age: Duration::ZERO,
                stale: false,
            })
        }
        Err(e) => {
            state.error = Some((e.clone(), now));
            match &state.good {
                Some(g) if now.duration_since(g.fetched_at) < max_stale => Ok(Served {
                    reading: g.reading.clone(),
                    age: now.duration_since(g.fetched_at),
                    stale: true,
                }),
                _ => Err(e),
            }
        }
    };
    (served, seen)
}

/// Carries out a decision on the held state; `None` for [`Freshness::Refetch`].
fn answer(
    state: &State,
    decision: Freshness,
    now: Instant,
) -> Option<(Result<Served, SourceError>, &'static str)> {
    let served = |stale: bool| {
        state.good.as_ref().map(|g| Served {
            reading: g.reading.clone(),
            age: now.duration_since(g.fetched_at),
            stale,
        })
    };
    match decision {
        Freshness::Refetch => None,
        Freshness::Serve | Freshness::ServeAndRefresh => served(false).map(|s| (Ok(s), "hit")),
        Freshness::ServeStale => served(true).map(|s| (Ok(s), "stale")),
        Freshness::Fail => state.error.as_ref().map(|(e, _)| (Err(e.clone()), "hit")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::source::PromQuery;

    fn query(s: &str) -> Query {
        Query::Prometheus(PromQuery {
            backend: "default".into(),
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
            },
            Arc::new(metrics),
        )
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
        let c = cache(300);
        let q = query("up");
        let ttl = Duration::from_millis(50);
        let v = c
            .get(&q, ttl, || async { Ok(Reading::Value(Some(7.0))) })
            .await
            .unwrap();
        assert!(!v.stale);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let v = c.get(&q, ttl, || async { Err(down()) }).await.unwrap();
        assert!(v.stale);
        assert_eq!(v.reading, Reading::Value(Some(7.0)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = c.get(&q, ttl, || async { Err(down()) }).await.unwrap_err();
        assert_eq!(e, down());
        tokio::time::sleep(Duration::from_millis(80)).await;
        let v = c
            .get(&q, ttl, || async { Ok(Reading::Value(Some(8.0))) })
            .await
            .unwrap();
        assert_eq!((v.reading, v.stale), (Reading::Value(Some(8.0)), false));
    }

    #[tokio::test]
    async fn errors_are_remembered_for_about_a_second_not_a_ttl() {
        let c = cache(0);
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
        tokio::time::sleep(ERROR_TTL + Duration::from_millis(50)).await;
        assert!(ask().await.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "asked again after a second"
        );
    }

    #[tokio::test]
    async fn each_caller_gets_its_own_freshness() {
        let c = cache(60_000);
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
        tokio::time::sleep(Duration::from_millis(120)).await;
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
        let c = Arc::new(cache(60_000).with_refresher(refresher(
            refreshes.clone(),
            Ok(2.0),
            Duration::from_millis(300),
        )));
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

        tokio::time::sleep(Duration::from_millis(1600)).await;
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

        tokio::time::sleep(Duration::from_millis(500)).await;
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
        let c =
            cache(60_000).with_refresher(refresher(refreshes.clone(), Err(down()), Duration::ZERO));
        let (q, ttl) = (query("up"), Duration::from_secs(2));
        c.get(&q, ttl, || async { Ok(Reading::Value(Some(1.0))) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let (served, _) = read(&c, &q, ttl).await;
        assert_eq!(
            (served.reading, served.stale),
            (Reading::Value(Some(1.0)), false)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
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

        tokio::time::sleep(Duration::from_millis(400)).await;
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
        let c = cache(60_000);
        let (q, ttl) = (query("up"), Duration::from_millis(400));
        c.get(&q, ttl, || async { Ok(Reading::Value(Some(1.0))) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(320)).await;
        assert!(!read(&c, &q, ttl).await.1, "served what is held");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(read(&c, &q, ttl).await.1, "asked by the caller");
    }

    #[tokio::test]
    async fn a_short_outage_under_a_long_ttl_is_served_stale() {
        let c = cache(60_000);
        let q = query("up");
        let v = c
            .get(&q, Duration::from_millis(50), || async {
                Ok(Reading::Value(Some(3.0)))
            })
            .await
            .unwrap();
        assert!(!v.stale);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let v = c
            .get(&q, Duration::from_millis(50), || async { Err(down()) })
            .await
            .unwrap();
        assert_eq!((v.reading, v.stale), (Reading::Value(Some(3.0)), true));
    }
}
