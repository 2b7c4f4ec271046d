//! The board: every (namespace, name, trigger metadata) a caller asked about, its
//! memoised [`Plan`], and what its trigger last answered.
//!
//! Invariants:
//! - bounded: at most `max_signals` entries; what does not fit is evicted and counted
//!   (`slo_scaler_signals_evicted_total`), so no caller can grow memory or `/metrics`;
//! - no process-wide lock on the answer path: a hit is one lookup in a concurrent map and
//!   one uncontended per-entry lock;
//! - entries nobody asked about for `idle_expiry` disappear, and with them their series;
//! - the `/metrics` series and the debug rows are built from a snapshot at read time.
//!
//! One room per job: [`key`] (who asked and the metadata, as one buffer), [`table`] (the
//! sharded table, its bound and idle expiry), [`reuse`] (the last answer served again
//! without asking the cache), [`history`] (sparkline samples) and [`views`] (`/metrics`
//! and `/debug/signals`, from a snapshot).

mod history;
mod key;
mod reuse;
mod table;
#[cfg(test)]
mod tests;
mod views;

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use crate::cache::Watch;
use crate::engine::{EvalError, Evaluation, Plan, PlanError};

use key::Key;
pub use table::Board;
pub use views::Row;

/// What a trigger's last evaluation showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalState {
    /// A value from a fresh backend answer with data.
    Ok,
    /// The backend answered, with no data (0 under `ignoreNullValues`, else an error).
    NoData,
    /// The backend failed; the last good value was served.
    Stale,
    /// No value could be given; KEDA got an error.
    Error,
}

impl SignalState {
    pub const ALL: [SignalState; 4] = [
        SignalState::Ok,
        SignalState::NoData,
        SignalState::Stale,
        SignalState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalState::Ok => "ok",
            SignalState::NoData => "no_data",
            SignalState::Stale => "stale",
            SignalState::Error => "error",
        }
    }

    /// The state an evaluation result puts a signal in.
    pub fn of(result: &Result<Evaluation, EvalError>) -> SignalState {
        match result {
            Ok(ev) if ev.stale => SignalState::Stale,
            Ok(ev) if ev.no_data => SignalState::NoData,
            Ok(_) => SignalState::Ok,
            Err(EvalError::NoData { .. }) => SignalState::NoData,
            Err(_) => SignalState::Error,
        }
    }
}

/// Board settings.
#[derive(Debug, Clone, Copy)]
pub struct BoardConfig {
    /// Most entries held (one per ScaledObject trigger).
    pub max_signals: u64,
    /// Entries nobody asked about for this long are dropped.
    pub idle_expiry: Duration,
}

/// One ScaledObject trigger: who asked, what it means, what it last answered.
#[derive(Debug)]
pub struct Entry {
    /// Who asked and the trigger metadata, compact: see [`Key`].
    key: Key,
    pub plan: Plan,
    /// When a caller last asked (ms on [`clock_ms`]).
    asked_ms: AtomicU64,
    /// The last answer while it may be reused (see [`Entry::reuse`]), readable without the
    /// lock: `reuse_meta` is 0 for none, else (when the backend answered, ms on
    /// [`clock_ms`], + 1) << 2 | active << 1 | no_data; `reuse_value` the value's bits.
    /// Written under the slot's lock, meta last.
    reuse_meta: AtomicU64,
    reuse_value: AtomicU64,
    /// When the answer `reuse_meta` describes was last served (ms on [`clock_ms`]): its
    /// age then is the value's age (a lookup that serves nothing, such as GetMetricSpec,
    /// leaves it).
    served_ms: AtomicU64,
    /// The cache slot this entry's answers come from (the first one recorded) and its
    /// generation when the reusable answer was served: reuse only while it is unchanged.
    watched: OnceLock<Watch>,
    reuse_seen: AtomicU64,
    /// When the next history sample is due (ms on [`clock_ms`]).
    sample_due_ms: AtomicU64,
    slot: Mutex<Slot>,
}

/// Milliseconds since the first use of the board's clock: one clock for every entry, so
/// an answer's time and a caller's can be compared.
fn clock_ms(now: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    now.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_millis() as u64
}

#[derive(Debug, Default)]
struct Slot {
    last: Option<Outcome>,
    /// (unix seconds, value as `f32`, NaN for none): 8 bytes a sample, so five minutes of
    /// samples stay within the per-ScaledObject memory budget (BENCHMARKS.md).
    history: VecDeque<(u32, f32)>,
}

#[derive(Debug, Clone)]
struct Outcome {
    value: Option<f64>,
    age: Option<Duration>,
    active: Option<bool>,
    state: SignalState,
    error: Option<String>,
}

impl Entry {
    pub fn namespace(&self) -> &str {
        self.key.namespace()
    }

    /// The ScaledObject's name.
    pub fn name(&self) -> &str {
        self.key.name()
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an evaluation; logs when the signal's state changes. A fresh answer (not
    /// stale, not an error) served from the cache (`watch`, what it was served from) is
    /// kept for [`Entry::reuse`].
    pub fn record(&self, result: &Result<Evaluation, EvalError>, watch: Option<Watch>) {
        let state = SignalState::of(result);
        let outcome = match result {
            Ok(ev) => Outcome {
                value: Some(ev.value),
                age: Some(ev.age),
                active: Some(ev.active),
                state,
                error: None,
            },
            Err(e) => Outcome {
                value: None,
                age: None,
                active: None,
                state,
                error: Some(e.to_string()),
            },
        };
        let now = Instant::now();
        let mut slot = self.slot();
        let was = slot.last.as_ref().map(|o| o.state);
        self.keep_for_reuse(result, watch, now);
        self.sample(&mut slot, now, outcome.value);
        let error = outcome.error.clone();
        slot.last = Some(outcome);
        drop(slot);
        if was != Some(state) {
            let from = was.map_or("new", SignalState::as_str);
            let metric = &*self.plan.trigger.metric_name;
            match state {
                SignalState::Ok => tracing::info!(
                    namespace = %self.namespace(), scaled_object = %self.name(), metric,
                    from, to = state.as_str(), "signal state changed"
                ),
                _ => tracing::warn!(
                    namespace = %self.namespace(), scaled_object = %self.name(), metric,
                    from, to = state.as_str(), error = error.as_deref().unwrap_or(""),
                    "signal state changed"
                ),
            }
        }
    }

    /// The state of the last evaluation, if any.
    pub fn state(&self) -> Option<SignalState> {
        self.slot().last.as_ref().map(|o| o.state)
    }
}
