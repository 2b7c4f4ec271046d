//! The last answer served again without asking the cache: atomics in the entry, valid
//! while the cache holds exactly the state the answer was served from.
//!
//! Why it exists: the h2load target in BENCHMARKS.md ("h2load: cache-hit GetMetrics vs
//! Health/Check on the same server", ≥ 0.9× Health/Check) — with the sharded board,
//! the `wire` decoding and the striped telemetry it took the ratio from 0.69× to 0.88×
//! (the 21:54 row). On its own (BENCHMARKS.md, "the reuse layer, A/B", 2026-12-04): with
//! [`Entry::reuse`] answering `None`, every cache-hit call asking the signal cache, the
//! ratio fell from 0.76 to 0.60 in the same run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{clock_ms, Entry, EvalError, Evaluation};
use crate::cache::Watch;

/// When the backend gave the answer a non-zero `reuse_meta` describes (ms on [`clock_ms`]).
pub(super) fn answered_ms(meta: u64) -> u64 {
    (meta >> 2) - 1
}

impl Entry {
    /// Keeps a fresh answer (not stale, not an error) served from the cache (`watch`,
    /// what it was served from) for [`Entry::reuse`], and forgets the previous one. Called
    /// under the slot's lock; `reuse_meta` is written last.
    pub(super) fn keep_for_reuse(
        &self,
        result: &Result<Evaluation, EvalError>,
        watch: Option<Watch>,
        now: Instant,
    ) {
        self.reuse_meta.store(0, Ordering::Release);
        // Reusable only through the first slot this entry was served from (a slot the cache
        // dropped and made anew is another cell; reuse then stays off for this entry).
        let watch = watch.filter(|w| self.watched.get_or_init(|| w.clone()).same_slot(w));
        if let (Ok(ev), Some(watch)) = (result, watch) {
            let answered = now.checked_sub(ev.age).map(clock_ms);
            if let (false, Some(answered)) = (ev.stale, answered) {
                self.reuse_value
                    .store(ev.value.to_bits(), Ordering::Release);
                self.reuse_seen.store(watch.seen(), Ordering::Release);
                let meta = (answered + 1) << 2 | u64::from(ev.active) << 1 | u64::from(ev.no_data);
                self.served_ms.store(clock_ms(now), Ordering::Relaxed);
                self.reuse_meta.store(meta, Ordering::Release);
            }
        }
    }

    /// The last evaluation again, while the cache holds exactly the state it was served
    /// from (no newer answer, no error since) and its backend answer is younger than three
    /// quarters of `ttl` — what the signal cache would serve (`cache::decide`), without
    /// looking the query up; `None` otherwise (and in the TTL's last quarter, where the
    /// cache also refreshes the answer ahead of the TTL). Reads atomics only, but for a history sample when one is due
    /// (every [`HISTORY_EVERY`](super::history::HISTORY_EVERY)).
    pub fn reuse(&self, ttl: Duration) -> Option<Evaluation> {
        let meta = self.reuse_meta.load(Ordering::Acquire);
        if meta == 0 {
            return None;
        }
        let value = f64::from_bits(self.reuse_value.load(Ordering::Acquire));
        let seen = self.reuse_seen.load(Ordering::Acquire);
        if self.watched.get()?.current() != seen || self.reuse_meta.load(Ordering::Acquire) != meta
        {
            return None; // being rewritten: evaluate instead
        }
        let now = Instant::now();
        let now_ms = clock_ms(now);
        let age = Duration::from_millis(now_ms.saturating_sub(answered_ms(meta)));
        // From the last quarter of the TTL on, the cache serves the answer and refreshes it
        // ahead of the TTL: the caller goes there, so that it does.
        if age >= crate::cache::refresh_from(ttl) {
            return None;
        }
        // As `asked_ms`: no store when it would not change the value.
        if self.served_ms.load(Ordering::Relaxed) != now_ms {
            self.served_ms.store(now_ms, Ordering::Relaxed);
        }
        let ev = Evaluation {
            value,
            active: meta & 2 != 0,
            age,
            stale: false,
            no_data: meta & 1 != 0,
        };
        if now_ms >= self.sample_due_ms.load(Ordering::Relaxed) {
            let mut slot = self.slot();
            if let Some(last) = slot.last.as_mut() {
                last.age = Some(age);
            }
            self.sample(&mut slot, now, Some(value));
        }
        Some(ev)
    }
}
