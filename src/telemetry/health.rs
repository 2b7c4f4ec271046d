//! Backend health for people: last success, recent error ratio and latency per backend,
//! fed by every call [`super::Metrics::record_backend`] records (`/debug/backends`).
//!
//! The Prometheus families hold totals since start; this tracker keeps the last calls of
//! each backend so the status page can say "failing now" rather than "failed once".

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many recent calls of one backend the ratios and latencies are computed over.
pub const RECENT_CALLS: usize = 100;

/// Calls older than this leave the recent window, however few there are.
pub const RECENT_WINDOW: Duration = Duration::from_secs(300);

/// One backend call as the tracker keeps it.
#[derive(Debug, Clone, Copy)]
struct Call {
    at: Instant,
    ok: bool,
    seconds: f64,
}

#[derive(Debug, Default)]
struct Track {
    calls_total: u64,
    errors_total: u64,
    last_success: Option<SystemTime>,
    last_failure: Option<(SystemTime, &'static str)>,
    recent: VecDeque<Call>,
}

/// The health of every backend called since start.
#[derive(Debug, Default)]
pub struct BackendHealth {
    tracks: Mutex<HashMap<String, Track>>,
}

impl BackendHealth {
    /// Records one call; `outcome` is the label of `slo_scaler_backend_requests_total`
    /// (`success`, `error`, `timeout`).
    pub fn record(&self, backend: &str, outcome: &'static str, elapsed: Duration) {
        let now = Instant::now();
        let ok = outcome == "success";
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let track = match tracks.get_mut(backend) {
            Some(t) => t,
            None => tracks.entry(backend.to_string()).or_default(),
        };
        track.calls_total += 1;
        if ok {
            track.last_success = Some(SystemTime::now());
        } else {
            track.errors_total += 1;
            track.last_failure = Some((SystemTime::now(), outcome));
        }
        if track.recent.len() == RECENT_CALLS {
            track.recent.pop_front();
        }
        track.recent.push_back(Call {
            at: now,
            ok,
            seconds: elapsed.as_secs_f64(),
        });
    }

    /// Every backend, sorted by name, as JSON rows.
    pub fn snapshot(&self) -> Vec<BackendRow> {
        let now = Instant::now();
        let tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<BackendRow> = tracks
            .iter()
            .map(|(name, t)| {
                let recent: Vec<Call> = t
                    .recent
                    .iter()
                    .filter(|c| now.duration_since(c.at) < RECENT_WINDOW)
                    .copied()
                    .collect();
                let errors = recent.iter().filter(|c| !c.ok).count();
                let mut latencies: Vec<f64> = recent.iter().map(|c| c.seconds).collect();
                latencies.sort_by(f64::total_cmp);
                BackendRow {
                    backend: name.clone(),
                    calls_total: t.calls_total,
                    errors_total: t.errors_total,
                    recent_calls: recent.len(),
                    recent_error_ratio: (!recent.is_empty())
                        .then(|| errors as f64 / recent.len() as f64),
                    recent_latency_p50_seconds: quantile(&latencies, 0.5),
                    recent_latency_max_seconds: latencies.last().copied(),
                    last_latency_seconds: t.recent.back().map(|c| c.seconds),
                    last_success_unix: t.last_success.map(unix_seconds),
                    last_success_seconds_ago: t
                        .last_success
                        .map(|at| seconds_since(at, SystemTime::now())),
                    last_failure_unix: t.last_failure.map(|(at, _)| unix_seconds(at)),
                    last_failure_seconds_ago: t
                        .last_failure
                        .map(|(at, _)| seconds_since(at, SystemTime::now())),
                    last_failure_outcome: t.last_failure.map(|(_, o)| o),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.backend.cmp(&b.backend));
        rows
    }
}

/// One backend's health, as `/debug/backends` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRow {
    pub backend: String,
    pub calls_total: u64,
    pub errors_total: u64,
    /// Calls in the recent window (the last [`RECENT_CALLS`], none older than
    /// [`RECENT_WINDOW`]).
    pub recent_calls: usize,
    /// Failed share of the recent calls; `None` without recent calls.
    pub recent_error_ratio: Option<f64>,
    pub recent_latency_p50_seconds: Option<f64>,
    pub recent_latency_max_seconds: Option<f64>,
    pub last_latency_seconds: Option<f64>,
    pub last_success_unix: Option<f64>,
    pub last_success_seconds_ago: Option<f64>,
    pub last_failure_unix: Option<f64>,
    /// By the server's clock, as `last_success_seconds_ago`: the status page shows it as
    /// is, whatever the viewer's clock says.
    pub last_failure_seconds_ago: Option<f64>,
    /// `error` or `timeout`.
    pub last_failure_outcome: Option<&'static str>,
}

/// The nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn seconds_since(at: SystemTime, now: SystemTime) -> f64 {
    now.duration_since(at)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `calls` (backend, outcome, latency) and checks each backend's recent
    /// error ratio, median and max latency, and which of last success / failure are set.
    fn check(calls: &[(&str, &'static str, u64)], expect: &[(&str, f64, f64, f64, bool, bool)]) {
        let health = BackendHealth::default();
        for (backend, outcome, latency) in calls {
            health.record(backend, outcome, ms(*latency));
        }
        let rows = health.snapshot();
        let got: Vec<(&str, f64, f64, f64, bool, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.backend.as_str(),
                    r.recent_error_ratio.unwrap_or(f64::NAN),
                    r.recent_latency_p50_seconds.unwrap_or(f64::NAN),
                    r.recent_latency_max_seconds.unwrap_or(f64::NAN),
                    r.last_success_unix.is_some(),
                    r.last_failure_unix.is_some(),
                )
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn ratios_and_latencies_per_backend() {
        check(
            &[
                ("prometheus/default", "success", 10),
                ("prometheus/default", "error", 30),
                ("prometheus/default", "success", 20),
                ("prometheus/default", "timeout", 5000),
                ("sqs", "success", 40),
            ],
            &[
                ("prometheus/default", 0.5, 0.02, 5.0, true, true),
                ("sqs", 0.0, 0.04, 0.04, true, false),
            ],
        );
        check(
            &[("tempo/main", "error", 100), ("tempo/main", "timeout", 200)],
            &[("tempo/main", 1.0, 0.1, 0.2, false, true)],
        );
        check(&[], &[]);
    }

    #[test]
    fn only_the_last_calls_count() {
        let health = BackendHealth::default();
        for _ in 0..RECENT_CALLS {
            health.record("otlp", "error", ms(1));
        }
        for _ in 0..RECENT_CALLS {
            health.record("otlp", "success", ms(2));
        }
        let row = &health.snapshot()[0];
        assert_eq!(row.recent_calls, RECENT_CALLS);
        assert_eq!(row.recent_error_ratio, Some(0.0));
        assert_eq!(row.calls_total, 2 * RECENT_CALLS as u64);
        assert_eq!(row.errors_total, RECENT_CALLS as u64);
        assert_eq!(row.last_failure_outcome, Some("error"));
    }

    /// Both ages are the server's (the status page shows them as they are, whatever the
    /// viewer's clock says): a failure just now is seconds old; none is `null`.
    #[test]
    fn ages_are_the_servers() {
        let health = BackendHealth::default();
        health.record("tempo/main", "timeout", ms(1));
        health.record("sqs", "success", ms(1));
        let json = serde_json::to_value(health.snapshot()).unwrap();
        let failed = json[1]["lastFailureSecondsAgo"].as_f64().expect("a number");
        assert!((0.0..60.0).contains(&failed), "{json}");
        assert!(json[0]["lastFailureSecondsAgo"].is_null(), "{json}");
        assert!(json[1]["lastSuccessSecondsAgo"].is_null(), "{json}");
        assert!(json[0]["lastSuccessSecondsAgo"].is_number(), "{json}");
    }
}
