//! Reads: the buckets of the matching series over a window, merged into one value.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::ring::{Bucket, Series};
use super::{duration_ns, lock, read_lock, unix_ns, Store, BACKEND};
use crate::signal::TraceMeasure;
use crate::source::{OtlpQuery, Reading, SourceError};

impl Store {
    /// Reads one signal over `q.window` ending now.
    pub fn read(&self, q: &OtlpQuery) -> Result<Reading, SourceError> {
        self.read_at(q, self.clock.now())
    }

    /// Reads one signal over `q.window` ending at `now`.
    pub fn read_at(&self, q: &OtlpQuery, now: SystemTime) -> Result<Reading, SourceError> {
        let bad = |detail: String| SourceError::BadQuery {
            backend: BACKEND.to_string(),
            detail,
        };
        if !q.selector.labels.is_empty() {
            return Err(bad(
                "label filters are not supported by the embedded store".to_string()
            ));
        }
        if q.window.is_zero() || q.window > self.config.retention {
            return Err(bad(format!(
                "window {} must be above zero and at most the store's retention {}",
                humantime::format_duration(q.window),
                humantime::format_duration(self.config.retention)
            )));
        }
        let now_ns = unix_ns(now);
        let now_index = now_ns / self.bucket_ns;
        let first = now_ns.saturating_sub(duration_ns(q.window)) / self.bucket_ns;
        let want_latency = matches!(q.measure, TraceMeasure::Latency(_));
        // Rates count whole, settled buckets only: none from before the store started
        // (spans of that time went elsewhere or nowhere), none still filling (exporters
        // batch for seconds). `settled` is the exclusive end.
        let settled = now_ns.saturating_sub(duration_ns(self.config.rate_settle)) / self.bucket_ns;
        let rate_from = first.max(self.first_full_index);

        let matching: Vec<Arc<Mutex<Series>>> = {
            let index = read_lock(&self.index);
            index
                .by_service
                .get(&q.selector.service)
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|e| e.kind == q.selector.span_kind)
                        .filter(|e| match &q.selector.version {
                            Some(v) => e.version.as_deref() == Some(v.as_str()),
                            None => true,
                        })
                        .map(|e| Arc::clone(&e.series))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut total = Bucket::default();
        let mut spans = 0u64;
        let mut settled_spans = 0u64;
        for series in matching {
            let series = lock(&series);
            for b in series
                .buckets
                .iter()
                .filter(|b| (first..=now_index).contains(&b.index))
            {
                spans += b.latency.count();
                if (rate_from..settled).contains(&b.index) {
                    settled_spans += b.latency.count();
                }
                if want_latency {
                    total.merge(b);
                } else {
                    total.errors += b.errors;
                }
            }
        }
        if spans == 0 {
            return Ok(Reading::Value(None));
        }
        let value = match q.measure {
            TraceMeasure::Latency(quantile) => {
                total.latency.quantile_ns(quantile.get()).map(|ns| ns / 1e9)
            }
            TraceMeasure::ErrorRatio => Some(total.errors as f64 / spans as f64),
            TraceMeasure::Rate => {
                if settled <= rate_from {
                    return Err(SourceError::Unavailable {
                        backend: BACKEND.to_string(),
                        detail: format!(
                            "rate not known yet: the store has seen no whole bucket of the \
                             window that is older than {} (it started {} ago)",
                            humantime::format_duration(self.config.rate_settle),
                            humantime::format_duration(std::time::Duration::from_secs(
                                now_ns.saturating_sub(self.first_full_index * self.bucket_ns)
                                    / 1_000_000_000
                            )),
                        ),
                    });
                }
                let covered_ns = (settled - rate_from) * self.bucket_ns;
                Some(settled_spans as f64 / (covered_ns as f64 / 1e9))
            }
        };
        Ok(Reading::Value(value))
    }
}
