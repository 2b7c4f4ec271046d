//! The cache's freshness rule, pure: given the ages of what is held, what one caller gets.

use std::time::Duration;

/// How long a backend error is remembered (capped by the caller's TTL).
pub const ERROR_TTL: Duration = Duration::from_secs(1);

/// What to do for one caller, given what the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The last good answer is young enough for this caller.
    Serve,
    /// The last good answer is young enough for this caller, but in the last quarter of its
    /// TTL ([`refresh_from`]): serve it, and ask the backend off the caller's path, so the
    /// next caller finds a fresh answer instead of waiting for one.
    ServeAndRefresh,
    /// Ask the backend.
    Refetch,
    /// The backend failed just now; the last good answer still stands in for it.
    ServeStale,
    /// The backend failed just now and no good answer is young enough: the error.
    Fail,
}

/// What the cache holds for one query, as ages at the moment of asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Age of the last good answer.
    pub good: Option<Duration>,
    /// Age of the last error, when it is newer than the last good answer.
    pub error: Option<Duration>,
}

/// The age from which an answer a caller with `ttl` is served is also refreshed ahead of
/// that caller: three quarters of the TTL. The answer served is still younger than the TTL;
/// only the backend is asked sooner.
pub fn refresh_from(ttl: Duration) -> Duration {
    ttl - ttl / 4
}

/// The freshness rule: serve (and refresh ahead) / refetch / serve stale / fail.
pub fn decide(held: Held, ttl: Duration, max_stale: Duration) -> Freshness {
    if let Some(age) = held.good.filter(|age| *age < ttl) {
        // A refresh that failed within the error TTL is not tried again before it ends.
        let failed_just_now = held.error.is_some_and(|e| e < ERROR_TTL.min(ttl));
        return if age >= refresh_from(ttl) && !failed_just_now {
            Freshness::ServeAndRefresh
        } else {
            Freshness::Serve
        };
    }
    match held.error {
        Some(age) if age < ERROR_TTL.min(ttl) => {
            if held.good.is_some_and(|age| age < max_stale) {
                Freshness::ServeStale
            } else {
                Freshness::Fail
            }
        }
        _ => Freshness::Refetch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as a table: ages held → what one caller gets.
    #[test]
    fn freshness_rule() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let (ttl, max_stale) = (s(10), s(120));
        let cases: &[(Option<Duration>, Option<Duration>, Duration, Freshness)] = &[
            (None, None, ttl, Freshness::Refetch),
            (Some(s(3)), None, ttl, Freshness::Serve),
            (Some(s(3)), None, s(1), Freshness::Refetch),
            (Some(s(10)), None, ttl, Freshness::Refetch),
            // The last quarter of the TTL: served, and asked again off the caller's path.
            (Some(ms(7499)), None, ttl, Freshness::Serve),
            (Some(ms(7500)), None, ttl, Freshness::ServeAndRefresh),
            (Some(ms(9999)), None, ttl, Freshness::ServeAndRefresh),
            // ... but not again while the last refresh's error is fresh.
            (Some(s(8)), Some(ms(500)), ttl, Freshness::Serve),
            (Some(s(9)), Some(ms(1000)), ttl, Freshness::ServeAndRefresh),
            // A fresh error: the last good answer stands in while younger than max_stale.
            (Some(s(30)), Some(ms(200)), ttl, Freshness::ServeStale),
            (Some(s(119)), Some(ms(200)), ttl, Freshness::ServeStale),
            (Some(s(120)), Some(ms(200)), ttl, Freshness::Fail),
            (None, Some(ms(200)), ttl, Freshness::Fail),
            // An error older than a second (or than a shorter TTL) is asked again.
            (Some(s(30)), Some(ms(1000)), ttl, Freshness::Refetch),
            (None, Some(ms(1000)), ttl, Freshness::Refetch),
            (None, Some(ms(150)), ms(100), Freshness::Refetch),
            // A good answer young enough for this caller wins over an older error view.
            (Some(ms(50)), Some(ms(10)), ms(100), Freshness::Serve),
        ];
        for (good, error, ttl, want) in cases {
            let held = Held {
                good: *good,
                error: *error,
            };
            assert_eq!(decide(held, *ttl, max_stale), *want, "{held:?} ttl {ttl:?}");
        }
    }
}
