//! The signal cache: every backend answer, keyed by its [`Query`], with a TTL,
//! single flight, a hard timeout, and stale-on-error.
//!
//! Invariants:
//! - concurrent requests for the same query make one backend call (moka's entry API
//!   runs one initialiser per key; the others wait for its result);
//! - every backend call ends within `timeout`, whatever the source does;
//! - after a failure the last good answer is served while younger than `max_stale`,
//!   then the error is returned. No value is ever made up.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::source::{Query, Reading, SourceError};
use crate::telemetry::Metrics;

/// A backend answer and when it was fetched.
#[derive(Debug, Clone)]
struct Good {
    reading: Reading,
    fetched_at: Instant,
}

/// A cached outcome (errors are cached too, so a failing backend is asked at most
/// once per TTL).
#[derive(Debug)]
struct Outcome {
    result: Result<Good, SourceError>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<Query, Arc<Outcome>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Query,
        value: &Arc<Outcome>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
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
    /// Hard limit on one backend call.
    pub timeout: Duration,
    /// How long the last good answer may stand in for a failing backend.
    pub max_stale: Duration,
    /// Most distinct queries held.
    pub max_entries: u64,
}

pub struct SignalCache {
    fresh: moka::future::Cache<Query, Arc<Outcome>>,
    last_good: moka::sync::Cache<Query, Good>,
    config: CacheConfig,
    metrics: Arc<Metrics>,
}

impl SignalCache {
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Self {
        SignalCache {
            fresh: moka::future::Cache::builder()
                .max_capacity(config.max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            last_good: moka::sync::Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.max_stale.max(Duration::from_millis(1)))
                .build(),
            config,
            metrics,
        }
    }

    /// Serves `query` from the cache, calling `fetch` (once, however many callers wait)
    /// when there is no answer younger than `ttl`.
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
        let entry = self
            .fresh
            .entry_by_ref(query)
            .or_insert_with(async {
                let started = Instant::now();
                let result = match tokio::time::timeout(self.config.timeout, fetch()).await {
                    Ok(result) => result,
                    Err(_) => {
                        let backend = query.backend_label();
                        self.metrics
                            .record_backend(&backend, "timeout", started.elapsed());
                        Err(SourceError::Timeout {
                            backend,
                            timeout: self.config.timeout,
                        })
                    }
                };
                let result = result.map(|reading| Good {
                    reading,
                    fetched_at: Instant::now(),
                });
                if let Ok(good) = &result {
                    self.last_good.insert(query.clone(), good.clone());
                }
                Arc::new(Outcome { result, ttl })
            })
            .await;
        let fetched = entry.is_fresh();
        let outcome = entry.into_value();
        let served = match &outcome.result {
            Ok(good) => Ok(Served {
                reading: good.reading.clone(),
                age: good.fetched_at.elapsed(),
                stale: false,
            }),
            Err(err) => match self.last_good.get(query) {
                Some(good) if good.fetched_at.elapsed() < self.config.max_stale => Ok(Served {
                    reading: good.reading,
                    age: good.fetched_at.elapsed(),
                    stale: true,
                }),
                _ => Err(err.clone()),
            },
        };
        let result = match (&served, fetched) {
            (Ok(s), _) if s.stale => "stale",
            (_, true) => "miss",
            _ => "hit",
        };
        self.metrics.record_cache(result);
        served
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

    fn cache(timeout_ms: u64, max_stale_ms: u64) -> SignalCache {
        let (_, metrics) = Metrics::standalone();
        SignalCache::new(
            CacheConfig {
                timeout: Duration::from_millis(timeout_ms),
                max_stale: Duration::from_millis(max_stale_ms),
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
        let c = Arc::new(cache(1000, 1000));
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
        let c = cache(1000, 300);
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
    async fn hung_fetch_is_cut_at_the_timeout() {
        let c = cache(100, 1000);
        let started = Instant::now();
        let e = c
            .get(&query("slow"), Duration::from_secs(1), || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Reading::Value(Some(1.0)))
            })
            .await
            .unwrap_err();
        assert!(matches!(e, SourceError::Timeout { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn errors_are_cached_for_the_ttl() {
        let c = cache(1000, 0);
        let calls = AtomicUsize::new(0);
        for _ in 0..5 {
            let _ = c
                .get(&query("bad"), Duration::from_secs(10), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(down())
                })
                .await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
