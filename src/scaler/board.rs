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

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;

use hashbrown::HashTable;

use super::engine::{EvalError, Evaluation, Plan, PlanError};
use crate::cache::Watch;
use crate::proto::wire::Metadata;
use crate::trigger::{is_dns1123_label, is_dns1123_subdomain, Problem, TriggerError};

/// How many samples of a signal's value the board keeps for sparklines.
pub const HISTORY_LEN: usize = 60;
/// At most one history sample per this interval (60 × 5 s: the last five minutes).
pub const HISTORY_EVERY: Duration = Duration::from_secs(5);

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
    /// The cache slot this entry's answers come from (the first one recorded) and its
    /// generation when the reusable answer was served: reuse only while it is unchanged.
    watched: OnceLock<Watch>,
    reuse_seen: AtomicU64,
    /// When the next history sample is due (ms on [`clock_ms`]).
    sample_due_ms: AtomicU64,
    slot: Mutex<Slot>,
}

/// When the backend gave the answer a non-zero `reuse_meta` describes (ms on [`clock_ms`]).
fn answered_ms(meta: u64) -> u64 {
    (meta >> 2) - 1
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

/// Who asked and the trigger metadata in one allocation: the namespace, the name, then the
/// metadata pairs sorted by key (for a key sent twice, its last value, as prost decodes a
/// map), each a little-endian `u32` length and its bytes. Two requests are the same
/// ScaledObject trigger exactly when their keys are equal, whatever order the map came in.
#[derive(Debug, PartialEq, Eq)]
struct Key(Box<[u8]>);

impl Key {
    #[cfg(test)]
    fn new(namespace: &str, name: &str, md: &Metadata) -> Key {
        let mut out = Vec::new();
        Key::write(&mut out, namespace, name, md);
        Key(out.into_boxed_slice())
    }

    /// Writes the key of this caller and metadata into `out`.
    fn write(out: &mut Vec<u8>, namespace: &str, name: &str, md: &Metadata) {
        // The pairs sorted in place: on the stack for up to 16 (KEDA triggers have a
        // handful), on the heap beyond.
        let mut stack: [(&[u8], &[u8]); 16] = [(&[], &[]); 16];
        let mut heap = Vec::new();
        let mut n = 0;
        for pair in md.entry_bytes() {
            if n < stack.len() {
                stack[n] = pair;
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack);
                }
                heap.push(pair);
            }
            n += 1;
        }
        let pairs: &mut [(&[u8], &[u8])] = if heap.is_empty() {
            &mut stack[..n]
        } else {
            &mut heap
        };
        // UTF-8 sorts as its bytes do, so this is the order of the keys as strings. Stable:
        // for a key sent twice the later pair stays later, and is the one kept.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut put = |part: &[u8]| {
            // Parts are capped far below 4 GiB by tonic's message size limit.
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        };
        put(namespace.as_bytes());
        put(name.as_bytes());
        for (i, (k, v)) in pairs.iter().enumerate() {
            if pairs.get(i + 1).is_none_or(|next| next.0 != *k) {
                put(k);
                put(v);
            }
        }
    }

    /// The parts in order: namespace, name, then key, value, key, value, ...
    fn parts(&self) -> impl Iterator<Item = &str> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (bytes, tail) = tail.split_at_checked(len)?;
            rest = tail;
            // Made from `&str`s; never fails.
            std::str::from_utf8(bytes).ok()
        })
    }

    fn namespace(&self) -> &str {
        self.parts().next().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.parts().nth(1).unwrap_or_default()
    }

    /// The metadata pairs, sorted by key.
    #[cfg(test)]
    fn pairs(&self) -> Vec<(&str, &str)> {
        let mut parts = self.parts().skip(2);
        std::iter::from_fn(|| Some((parts.next()?, parts.next()?))).collect()
    }
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
                self.reuse_meta.store(meta, Ordering::Release);
            }
        }
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

    /// The last evaluation again, while the cache holds exactly the state it was served
    /// from (no newer answer, no error since) and its backend answer is younger than three
    /// quarters of `ttl` — what the signal cache would serve (`cache::decide`), without
    /// looking the query up; `None` otherwise (and in the TTL's last quarter, where the
    /// cache also refreshes the answer ahead of the TTL). Reads atomics only, but for a history sample when one is due
    /// (every [`HISTORY_EVERY`]).
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

    /// Adds a history sample if one is due (the last is `HISTORY_EVERY` old).
    fn sample(&self, slot: &mut Slot, now: Instant, value: Option<f64>) {
        if clock_ms(now) >= self.sample_due_ms.load(Ordering::Relaxed) {
            if slot.history.len() == HISTORY_LEN {
                slot.history.pop_front();
            }
            slot.history.push_back((unix_now(), narrow(value)));
            self.sample_due_ms
                .store(clock_ms(now + HISTORY_EVERY), Ordering::Relaxed);
        }
    }

    /// The state of the last evaluation, if any.
    pub fn state(&self) -> Option<SignalState> {
        self.slot().last.as_ref().map(|o| o.state)
    }
}

/// One row of the debug view and of `/metrics`: a copy taken at read time.
#[derive(Debug, Clone)]
pub struct Row {
    pub entry: Arc<Entry>,
    value: Option<f64>,
    age: Option<Duration>,
    active: Option<bool>,
    state: Option<SignalState>,
    error: Option<String>,
    asked_ago: Duration,
    history: Vec<(u64, Option<f64>)>,
}

impl Row {
    pub fn state(&self) -> Option<SignalState> {
        self.state
    }

    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.entry;
        let t = &e.plan.trigger;
        serde_json::json!({
            "namespace": e.namespace(),
            "scaledObject": e.name(),
            "metric": &*t.metric_name,
            "signal": t.kind.as_str(),
            "source": t.source().as_str(),
            "query": e.plan.describe(),
            "value": self.value,
            "threshold": t.target,
            "activationThreshold": t.activation,
            "active": self.active,
            "state": self.state.map_or("pending", SignalState::as_str),
            "valueAgeSeconds": self.age.map(|a| a.as_secs_f64()),
            "error": self.error,
            "askedSecondsAgo": self.asked_ago.as_secs_f64(),
            "history": self.history.iter().map(|(t, v)| serde_json::json!([t, v])).collect::<Vec<_>>(),
        })
    }
}

/// Shards of the board's table: a lookup read-locks one, so callers asking about different
/// ScaledObjects rarely meet, and none waits on a planning (planned outside every lock).
const SHARDS: usize = 16;

type Shard = RwLock<HashTable<Arc<Entry>>>;

/// Every ScaledObject trigger asked about recently.
pub struct Board {
    shards: Box<[Shard]>,
    /// Seeded per process: which shard and bucket a key lands in cannot be chosen by a
    /// caller (and a shard holds at most `max` entries whatever the hash does).
    hasher: foldhash::fast::RandomState,
    /// Entries held plus insertions under way; never above `max`.
    len: AtomicU64,
    max: u64,
    idle_ms: u64,
    evicted: Counter,
    /// Tests move the board's idle clock forward by hand (ms added to [`Board::now_ms`]).
    #[cfg(test)]
    skew_ms: AtomicU64,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("entries", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

fn read(shard: &Shard) -> RwLockReadGuard<'_, HashTable<Arc<Entry>>> {
    shard.read().unwrap_or_else(|e| e.into_inner())
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashTable<Arc<Entry>>> {
    shard.write().unwrap_or_else(|e| e.into_inner())
}

impl Board {
    /// `evicted` counts entries dropped because the board was full.
    pub fn new(config: BoardConfig, evicted: Counter) -> Self {
        Board {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            len: AtomicU64::new(0),
            max: config.max_signals.max(1),
            idle_ms: (config.idle_expiry.as_millis() as u64).max(1),
            evicted,
            #[cfg(test)]
            skew_ms: AtomicU64::new(0),
        }
    }

    /// The entry for this caller and metadata: memoised, or planned with `plan` (given the
    /// metadata as a map; it never touches a backend) and remembered. Names are checked
    /// before anything is kept.
    pub fn entry(
        &self,
        namespace: &str,
        name: &str,
        md: &Metadata,
        plan: impl FnOnce(&HashMap<String, String>) -> Result<Plan, PlanError>,
    ) -> Result<Arc<Entry>, PlanError> {
        thread_local! {
            /// The key of the caller being looked up, in a buffer each thread reuses: a
            /// lookup allocates nothing.
            static PROBE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let now = self.now_ms();
        let found = PROBE.with_borrow_mut(|probe| {
            probe.clear();
            Key::write(probe, namespace, name, md);
            let hash = self.hasher.hash_one(probe.as_slice());
            let shard = &self.shards[(hash >> 48) as usize % SHARDS];
            self.find(&read(shard), hash, probe, now)
                .ok_or_else(|| (Key(probe.as_slice().into()), hash, shard))
        });
        let (key, hash, shard) = match found {
            Ok(e) => return Ok(e),
            Err(missing) => missing,
        };
        check_names(namespace, name)?;
        let plan = plan(&md.to_map())?;
        {
            let mut table = write(shard);
            self.sweep(&mut table, now);
            if let Some(e) = self.find(&table, hash, &key.0, now) {
                return Ok(e); // planned meanwhile by another caller
            }
        }
        self.reserve(now);
        let mut table = write(shard);
        if let Some(e) = self.find(&table, hash, &key.0, now) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Ok(e);
        }
        let entry = Arc::new(Entry {
            key,
            plan,
            asked_ms: AtomicU64::new(now),
            reuse_meta: AtomicU64::new(0),
            reuse_value: AtomicU64::new(0),
            watched: OnceLock::new(),
            reuse_seen: AtomicU64::new(0),
            sample_due_ms: AtomicU64::new(0),
            slot: Mutex::new(Slot::default()),
        });
        table.insert_unique(hash, entry.clone(), |e| self.hasher.hash_one(&e.key.0));
        Ok(entry)
    }

    fn now_ms(&self) -> u64 {
        let now = clock_ms(Instant::now());
        #[cfg(test)]
        let now = now + self.skew_ms.load(Ordering::Relaxed);
        now
    }

    fn is_idle(&self, e: &Entry, now: u64) -> bool {
        now.saturating_sub(e.asked_ms.load(Ordering::Relaxed)) >= self.idle_ms
    }

    /// The live entry with this key, marked as asked about now.
    fn find(
        &self,
        table: &HashTable<Arc<Entry>>,
        hash: u64,
        key: &[u8],
        now: u64,
    ) -> Option<Arc<Entry>> {
        let e = table.find(hash, |e| *e.key.0 == *key)?;
        if self.is_idle(e, now) {
            return None;
        }
        // Skip the store when it would not change the value: no cache line to bounce.
        if e.asked_ms.load(Ordering::Relaxed) != now {
            e.asked_ms.store(now, Ordering::Relaxed);
        }
        Some(e.clone())
    }

    /// Drops the idle entries of one shard.
    fn sweep(&self, table: &mut HashTable<Arc<Entry>>, now: u64) {
        let before = table.len();
        table.retain(|e| !self.is_idle(e, now));
        self.len
            .fetch_sub((before - table.len()) as u64, Ordering::AcqRel);
    }

    /// Makes room for one more entry and counts it: while the board is full, the least
    /// recently asked entry goes (a scan of every shard, only when full).
    fn reserve(&self, now: u64) {
        loop {
            let n = self.len.load(Ordering::Acquire);
            if n < self.max {
                if self
                    .len
                    .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            let oldest = self
                .shards
                .iter()
                .enumerate()
                .filter_map(|(i, shard)| {
                    read(shard)
                        .iter()
                        .map(|e| (e.asked_ms.load(Ordering::Relaxed), i, Arc::as_ptr(e)))
                        .min_by_key(|&(asked, ..)| asked)
                })
                .min_by_key(|&(asked, ..)| asked);
            let Some((asked, i, victim)) = oldest else {
                // Full of insertions under way: they land in a moment.
                std::thread::yield_now();
                continue;
            };
            let mut table = write(&self.shards[i]);
            let before = table.len();
            table.retain(|e| Arc::as_ptr(e) != victim);
            if table.len() < before {
                self.len.fetch_sub(1, Ordering::AcqRel);
                if now.saturating_sub(asked) < self.idle_ms {
                    self.evicted.inc();
                }
            }
        }
    }

    /// Every entry, sorted by namespace, name and metric.
    pub fn snapshot(&self) -> Vec<Row> {
        self.run_pending_tasks();
        let now_ms = self.now_ms();
        let entries: Vec<Arc<Entry>> = self
            .shards
            .iter()
            .flat_map(|shard| read(shard).iter().cloned().collect::<Vec<_>>())
            .collect();
        let mut rows: Vec<Row> = entries
            .into_iter()
            .map(|entry| {
                let slot = entry.slot();
                let last = slot.last.clone();
                let history = slot
                    .history
                    .iter()
                    .map(|&(t, v)| (u64::from(t), widen(v)))
                    .collect();
                drop(slot);
                let asked = entry.asked_ms.load(Ordering::Relaxed);
                // A reused answer's age when last served (a caller asking is served).
                let age = match entry.reuse_meta.load(Ordering::Acquire) {
                    0 => last.as_ref().and_then(|o| o.age),
                    meta => Some(Duration::from_millis(
                        asked.saturating_sub(answered_ms(meta)),
                    )),
                };
                Row {
                    value: last.as_ref().and_then(|o| o.value),
                    age,
                    active: last.as_ref().and_then(|o| o.active),
                    state: last.as_ref().map(|o| o.state),
                    error: last.and_then(|o| o.error),
                    asked_ago: Duration::from_millis(now_ms.saturating_sub(asked)),
                    history,
                    entry,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            let key = |r: &Row| {
                (
                    r.entry.namespace().to_string(),
                    r.entry.name().to_string(),
                    r.entry.plan.trigger.metric_name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        rows
    }

    /// The debug view (`/debug/signals`).
    pub fn debug_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.snapshot().iter().map(Row::to_json).collect())
    }

    /// Drops idle entries now (each shard also drops its own before an insertion).
    pub fn run_pending_tasks(&self) {
        let now = self.now_ms();
        for shard in self.shards.iter() {
            self.sweep(&mut write(shard), now);
        }
    }

    /// Entries held (idle ones dropped first).
    pub fn len(&self) -> u64 {
        self.run_pending_tasks();
        self.shards.iter().map(|s| read(s).len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn evicted(&self) -> u64 {
        self.evicted.get()
    }
}

/// Kubernetes object names: a namespace is a DNS-1123 label (≤ 63), a ScaledObject name a
/// DNS-1123 subdomain (≤ 253). Anything else did not come from KEDA.
fn check_names(namespace: &str, name: &str) -> Result<(), PlanError> {
    let mut problems = Vec::new();
    if !is_dns1123_label(namespace) {
        problems.push(Problem {
            key: "namespace".into(),
            message: format!(
                "must be a Kubernetes namespace name (lowercase [a-z0-9-], at most 63 characters), got {:?}",
                crate::trigger::clip(namespace)
            ),
        });
    }
    if !is_dns1123_subdomain(name) {
        problems.push(Problem {
            key: "name".into(),
            message: format!(
                "must be a Kubernetes object name (lowercase [a-z0-9.-], at most 253 characters), got {:?}",
                crate::trigger::clip(name)
            ),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PlanError::Invalid(TriggerError { problems }))
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A history sample as stored: `f32`, NaN for none; values past `f32::MAX` keep the
/// largest `f32`, not infinity.
fn narrow(v: Option<f64>) -> f32 {
    v.map_or(f32::NAN, |v| (v as f32).min(f32::MAX))
}

/// A history sample back to `f64`, as the shortest decimal that reads back as the same
/// `f32` (so 0.3 shows as 0.3, not 0.30000001192092896); NaN is "no value".
fn widen(v: f32) -> Option<f64> {
    if v.is_nan() {
        return None;
    }
    v.to_string().parse().ok()
}

/// The per-ScaledObject families, written from a snapshot at scrape time.
impl Collector for Board {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.snapshot();
        let labels = |r: &Row| {
            [
                ("namespace", r.entry.namespace().to_string()),
                ("scaled_object", r.entry.name().to_string()),
                ("metric", r.entry.plan.trigger.metric_name.to_string()),
            ]
        };
        type Pick = fn(&Row) -> Option<f64>;
        let gauges: [(&str, &str, Pick); 5] = [
            (
                "signal_value",
                "Last value served for a ScaledObject's metric (latency in seconds)",
                |r| r.value,
            ),
            (
                "signal_threshold",
                "Target (threshold) of a ScaledObject's metric",
                |r| Some(r.entry.plan.trigger.target),
            ),
            (
                "signal_activation_threshold",
                "Activation threshold of a ScaledObject's metric",
                |r| Some(r.entry.plan.trigger.activation),
            ),
            (
                "signal_age_seconds",
                "Age of the backend answer behind the last value served",
                |r| r.age.map(|a| a.as_secs_f64()),
            ),
            (
                "signal_active",
                "1 when the metric's value is above its activation threshold",
                |r| r.active.map(|a| if a { 1.0 } else { 0.0 }),
            ),
        ];
        for (name, help, pick) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for r in &rows {
                if let Some(v) = pick(r) {
                    let l = labels(r);
                    if name == "signal_active" {
                        ConstGauge::new(v as i64).encode(family.encode_family(&l)?)?;
                    } else {
                        ConstGauge::new(v).encode(family.encode_family(&l)?)?;
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "signal_state",
            "State of a ScaledObject's metric at its last evaluation: 1 for the current state (ok, no_data, stale, error), 0 for the others",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for r in &rows {
            let Some(current) = r.state else { continue };
            for s in SignalState::ALL {
                let [a, b, c] = labels(r);
                let l = [a, b, c, ("state", s.as_str().to_string())];
                ConstGauge::new(i64::from(s == current)).encode(family.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        pairs.iter().copied().collect()
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        md(pairs).to_map()
    }

    /// Two keys are equal exactly when the callers and the metadata maps (as prost decodes
    /// them) are, whatever order the pairs came in.
    #[test]
    fn keys_are_equal_only_for_equal_callers_and_maps() {
        fn check(stored: &[(&str, &str)], asked: &[(&str, &str)], want: bool) {
            let a = Key::new("ns", "so", &md(stored));
            let b = Key::new("ns", "so", &md(asked));
            assert_eq!(a == b, want, "{stored:?} vs {asked:?}");
            assert_eq!(map(stored) == map(asked), want, "the table itself is wrong");
        }
        let md3 = [
            ("signal", "latency"),
            ("service", "orders"),
            ("threshold", "300ms"),
        ];
        check(&md3, &md3, true);
        check(&md3, &[md3[2], md3[0], md3[1]], true);
        check(&[], &[], true);
        check(&md3, &md3[..2], false);
        check(&md3[..2], &md3, false);
        check(
            &md3,
            &[
                ("signal", "latency"),
                ("service", "orders"),
                ("threshold", "301ms"),
            ],
            false,
        );
        check(
            &md3,
            &[
                ("signal", "latency"),
                ("service", "orders"),
                ("thresholds", "300ms"),
            ],
            false,
        );
        check(&[], &[("a", "")], false);
        // A key sent twice counts with its last value, as in prost's map.
        check(&[("a", "1"), ("a", "2")], &[("a", "2")], true);
        check(&[("a", "1"), ("a", "2")], &[("a", "1")], false);
        // Lengths, not separators: no pair can be made to look like another.
        check(
            &[("a", "b\0c"), ("d", "")],
            &[("a", "b"), ("c\0d", "")],
            false,
        );
        check(
            &[("ключ", "значение\0"), ("", "")],
            &[("", ""), ("ключ", "значение\0")],
            true,
        );
        // Who asked is part of the key, and cannot be confused with the metadata.
        let m = md(&md3);
        assert_ne!(Key::new("ns", "so", &m), Key::new("ns", "so2", &m));
        assert_ne!(Key::new("ns", "so", &m), Key::new("ns2", "so", &m));
        assert_ne!(Key::new("ab", "c", &m), Key::new("a", "bc", &m));
    }

    #[test]
    fn key_parts_come_back_sorted() {
        let k = Key::new("shop", "orders", &md(&[("b", "2"), ("a", "1"), ("c", "")]));
        assert_eq!((k.namespace(), k.name()), ("shop", "orders"));
        assert_eq!(k.pairs(), [("a", "1"), ("b", "2"), ("c", "")]);
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
        use crate::cache::{CacheConfig, SignalCache};
        use crate::source::Reading;
        let (_, metrics) = crate::telemetry::Metrics::standalone();
        let cache = SignalCache::new(
            CacheConfig {
                max_stale: Duration::from_secs(60),
                max_ttl: Duration::from_secs(60),
                max_entries: 10,
                max_bytes: 1 << 20,
            },
            Arc::new(metrics),
        );
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

    /// History samples read back as the value shown (to `f32` precision), none as none.
    #[test]
    fn history_samples_widen_to_the_shortest_decimal() {
        fn check(v: Option<f64>, want: Option<f64>) {
            assert_eq!(widen(narrow(v)), want, "{v:?}");
        }
        check(None, None);
        check(Some(0.3), Some(0.3));
        check(Some(0.0), Some(0.0));
        check(Some(1234.5), Some(1234.5));
        check(Some(0.123456789), Some(0.12345679));
        check(Some(f64::MAX), Some(3.4028235e38));
    }
}
