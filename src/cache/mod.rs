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
//!   failure does not turn into minutes of errors; a query that has only failed (a raw
//!   query the backend refuses) is forgotten with it, so cycling refused queries holds
//!   nothing past the error TTL;
//! - the cache is bounded by entries and by bytes: each entry weighs its query's text and
//!   its answer ([`weight`]); past either bound the least used entries are dropped and
//!   counted (`slo_scaler_cache_evictions_total`);
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
#[derive(Debug)]
struct Slot {
    /// The query, shared with the cache's key: re-weighing the slot re-inserts this same
    /// allocation, never a copy of the query's text.
    key: Arc<Query>,
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
    fn new(key: Arc<Query>) -> Self {
        Slot {
            key,
            state: Mutex::default(),
            flight: tokio::sync::Mutex::default(),
            refreshing: AtomicBool::new(false),
            generation: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend has failed and never answered: nothing to serve once the error is
    /// forgotten.
    fn only_failed(&self) -> bool {
        let state = self.state();
        state.good.is_none() && state.error.is_some()
    }
}

/// Weighs `slot` again after its state changed, and sets its lifetime ([`Lifetime`]), if
/// it is still the one the cache holds for its query.
fn reweigh(slots: &Slots, slot: &Arc<Slot>) {
    slots
        .entry(Arc::clone(&slot.key))
        .and_compute_with(|held| match held {
            Some(entry) if Arc::ptr_eq(entry.value(), slot) => {
                moka::ops::compute::Op::Put(Arc::clone(slot))
            }
            _ => moka::ops::compute::Op::Nop,
        });
}

/// `slo_scaler_cache_entries` and `slo_scaler_cache_bytes`, read from the cache when
/// `/metrics` is scraped.
pub struct CacheGauges {
    slots: Slots,
}

impl std::fmt::Debug for CacheGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheGauges").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for CacheGauges {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::{gauge::ConstGauge, MetricType};
        self.slots.run_pending_tasks();
        let gauges = [
            (
                "cache_entries",
                "Queries held by the signal cache (bound: --cache-max-entries)",
                self.slots.entry_count(),
            ),
            (
                "cache_bytes",
                "Bytes the signal cache holds, as weighed against --cache-max-bytes (each entry its query text and answer, at least --cache-max-bytes / --cache-max-entries)",
                self.slots.weighted_size(),
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
        }
        Ok(())
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
    /// Most distinct queries held (`--cache-max-entries`).
    pub max_entries: u64,
    /// Most bytes held, by [`weight`] (`--cache-max-bytes`).
    pub max_bytes: u64,
}

/// Keyed by the query behind an `Arc`: the slot shares it (see [`Slot::key`]).
type Slots = moka::sync::Cache<Arc<Query>, Arc<Slot>>;

pub struct SignalCache {
    slots: Slots,
    config: CacheConfig,
    metrics: Arc<Metrics>,
    refresher: Option<Refresher>,
    /// What "now" is for the ages of answers and errors: the monotonic clock, or a test's
    /// own. (Entries' idle expiry is moka's, on its own clock.)
    clock: Clock,
}

/// The clock ages are read from.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// What moka keeps for an entry beside the key's and the slot's own bytes: the key's
/// `Arc`, the entry's node in the access and write orders, its timer and hash.
const ENTRY_OVERHEAD: usize = 256;

/// The bytes one entry holds: the query (its text: a raw query may have 16 KiB), the slot
/// and its answer or error, and moka's own per-entry bookkeeping.
fn weight(query: &Query, slot: &Slot) -> usize {
    let state = slot.state();
    let good = state.good.as_ref().map_or(0, |g| reading_bytes(&g.reading));
    let error = state.error.as_ref().map_or(0, |(e, _)| {
        e.to_string().len() + std::mem::size_of::<SourceError>()
    });
    std::mem::size_of::<Query>()
        + query_bytes(query)
        + std::mem::size_of::<Slot>()
        + std::mem::size_of::<AtomicU64>()
        + good
        + error
        + ENTRY_OVERHEAD
}

/// The heap bytes of a query beyond its own struct.
fn query_bytes(query: &Query) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    match query {
        Query::Prometheus(q) => q.backend.len() + opt(&q.tenant) + q.promql.len(),
        Query::Tempo(q) => q.backend.len() + opt(&q.tenant) + q.traceql.len(),
        Query::Sqs(q) => q.queue.len() + opt(&q.region) + opt(&q.role_arn) + opt(&q.endpoint),
        Query::Otlp(q) => {
            let s = &q.selector;
            s.service.len()
                + opt(&s.version)
                + s.labels
                    .iter()
                    .map(|(k, v)| std::mem::size_of::<(String, String)>() + k.len() + v.len())
                    .sum::<usize>()
        }
        Query::Pair(pair) => {
            2 * std::mem::size_of::<Query>() + query_bytes(&pair.0) + query_bytes(&pair.1)
        }
    }
}

/// The heap bytes of a reading beyond its own enum.
fn reading_bytes(reading: &Reading) -> usize {
    match reading {
        Reading::Value(_) | Reading::Queue(_) => 0,
        Reading::Pair(pair) => {
            2 * std::mem::size_of::<Reading>() + reading_bytes(&pair.0) + reading_bytes(&pair.1)
        }
    }
}

/// How long an entry lives unasked: past any TTL and any stale window (nobody may ask for
/// an answer that old), except a query that has only failed, which lives as long as its
/// error is remembered.
struct Lifetime {
    idle: Duration,
}

impl moka::Expiry<Arc<Query>, Arc<Slot>> for Lifetime {
    fn expire_after_create(&self, _: &Arc<Query>, _: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(self.idle)
    }

    fn expire_after_read(
        &self,
        _: &Arc<Query>,
        slot: &Arc<Slot>,
        _: Instant,
        until_expiry: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        if slot.only_failed() {
            until_expiry
        } else {
            Some(self.idle)
        }
    }

    fn expire_after_update(
        &self,
        _: &Arc<Query>,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(if slot.only_failed() {
            ERROR_TTL
        } else {
            self.idle
        })
    }
}

impl SignalCache {
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        // Nobody asked for longer than any TTL and any stale window: nothing to keep.
        let idle = config
            .max_stale
            .max(config.max_ttl)
            .saturating_add(Duration::from_secs(1));
        // Each entry weighs at least its share of the bytes, so the byte bound also keeps
        // the entries at most `max_entries`.
        let floor = (config.max_bytes / config.max_entries.max(1)).max(1);
        let evictions = metrics.clone();
        SignalCache {
            slots: moka::sync::Cache::builder()
                .max_capacity(config.max_bytes)
                .weigher(move |query: &Arc<Query>, slot: &Arc<Slot>| {
                    let w = (weight(query, slot) as u64).max(floor);
                    u32::try_from(w).unwrap_or(u32::MAX)
                })
                .expire_after(Lifetime { idle })
                .eviction_listener(move |_, _, cause| match cause {
                    moka::notification::RemovalCause::Size => {
                        evictions.record_cache_eviction("size")
                    }
                    moka::notification::RemovalCause::Expired => {
                        evictions.record_cache_eviction("expired")
                    }
                    _ => {}
                })
                .build(),
            config,
            metrics,
            refresher: None,
            clock: Arc::new(Instant::now),
        }
    }

    /// Reads ages from `clock` instead of the monotonic clock (tests move it by hand).
    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The entries and bytes held, for `/metrics` (read at scrape time).
    pub fn gauges(&self) -> CacheGauges {
        CacheGauges {
            slots: self.slots.clone(),
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
        // A hit copies nothing; a miss copies the query once, for the key and the slot.
        let slot = self.slots.get(query).unwrap_or_else(|| {
            let key = Arc::new(query.clone());
            self.slots
                .get_with(Arc::clone(&key), || Arc::new(Slot::new(key)))
        });
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
                        let (served, seen) =
                            keep(&slot, result, self.config.max_stale, (self.clock)());
                        reweigh(&self.slots, &slot);
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
        let now = (self.clock)();
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
        let slots = self.slots.clone();
        let clock = Arc::clone(&self.clock);
        runtime.spawn(async move {
            let slot = &done.0;
            let _flight = slot.flight.lock().await;
            let held = slot.state().held(clock());
            if decide(held, ttl, max_stale) == Freshness::ServeAndRefresh {
                let result = fetch.await;
                let _ = keep(slot, result, max_stale, clock());
                reweigh(&slots, slot);
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
    now: Instant,
) -> (Result<Served, SourceError>, u64) {
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
        Freshness::Fail => state.error.as_ref().map(|(e, _)| (Err(e.clone()), "error")),
    }
}

#[cfg(test)]
mod tests;
