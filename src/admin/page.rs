//! The status page at `/`: static HTML, CSS and script compiled into the binary, which
//! read `/debug/signals`, `/debug/backends` and `/debug/store` from the same origin and
//! refresh themselves. A Content-Security-Policy forbids every other origin, so the page
//! works offline and cannot leak what it shows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("status.html");
const CSS: &str = include_str!("status.css");
const JS: &str = include_str!("status.js");

/// Same origin only: scripts, styles and fetches; images only as inline data.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's routes (stateless, merged into the admin router).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/status.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/status.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// How far back ingest rates look.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Counter samples taken when `/debug/store` is read, turned into per-second rates over
/// the last [`RATE_WINDOW`] (the page reads it every few seconds).
#[derive(Debug)]
pub struct RateWindow {
    samples: VecDeque<(Instant, (u64, u64))>,
}

impl RateWindow {
    /// Starts with the counters' values now (usually zero, at start-up).
    pub fn new(counts: (u64, u64)) -> Self {
        Self::starting_at(Instant::now(), counts)
    }

    fn starting_at(at: Instant, counts: (u64, u64)) -> Self {
        RateWindow {
            samples: VecDeque::from([(at, counts)]),
        }
    }

    /// Adds a sample and returns both counters' rates per second since the oldest sample
    /// in the window; `None` until a second has passed.
    pub fn observe(&mut self, now: Instant, counts: (u64, u64)) -> Option<(f64, f64)> {
        // Keep one sample older than the window so the rate always spans it.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (since, before) = *self.samples.front()?;
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_millis(500))
        {
            self.samples.push_back((now, counts));
        }
        let elapsed = now.duration_since(since).as_secs_f64();
        if elapsed < 1.0 {
            return None;
        }
        // Counters only grow; a smaller value (never expected) reads as no traffic.
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / elapsed;
        Some((rate(counts.0, before.0), rate(counts.1, before.1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds samples (seconds after start, accepted, rejected) and checks each rate.
    fn check(samples: &[(u64, u64, u64)], expect: &[Option<(f64, f64)>]) {
        let start = Instant::now();
        let mut w = RateWindow::starting_at(start, (0, 0));
        let got: Vec<Option<(f64, f64)>> = samples
            .iter()
            .map(|(s, a, r)| w.observe(start + Duration::from_secs(*s), (*a, *r)))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn rates_cover_the_last_minute() {
        check(&[(0, 0, 0)], &[None]);
        check(
            &[(2, 200, 10), (4, 400, 10)],
            &[Some((100.0, 5.0)), Some((100.0, 2.5))],
        );
        // After a minute the early samples leave the window: the burst at the start no
        // longer counts.
        check(
            &[(1, 5000, 0), (30, 5000, 0), (61, 5000, 0), (91, 5300, 0)],
            &[
                Some((5000.0, 0.0)),
                Some((5000.0 / 30.0, 0.0)),
                Some((0.0, 0.0)),
                Some((300.0 / 61.0, 0.0)),
            ],
        );
    }
}
