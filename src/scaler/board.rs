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

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::engine::{EvalError, Evaluation, Plan, PlanError};
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
    pub namespace: String,
    pub name: String,
    /// The trigger metadata, compact: see [`Metadata`].
    metadata: Metadata,
    pub plan: Plan,
    /// What the plan sends, described once (`Sources::describe`).
    pub query: String,
    /// The backend label of the plan's query (`prometheus/default`), computed once.
    pub backend: String,
    asked_ms: AtomicU64,
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    last: Option<Outcome>,
    /// (unix seconds, value as `f32`, NaN for none): 8 bytes a sample, so five minutes of
    /// samples stay within the per-ScaledObject memory budget (BENCHMARKS.md).
    history: VecDeque<(u32, f32)>,
    last_sample: Option<Instant>,
}

/// Trigger metadata in one allocation: the pairs sorted by key, each key and value a
/// little-endian `u32` length and its bytes. A `HashMap<String, String>` of the same six
/// pairs takes about four times the memory (a table and twelve allocations).
#[derive(Debug)]
struct Metadata(Box<[u8]>);

impl Metadata {
    fn new(md: &HashMap<String, String>) -> Metadata {
        let mut pairs: Vec<(&String, &String)> = md.iter().collect();
        pairs.sort_unstable();
        let len = pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(len);
        for (k, v) in pairs {
            for part in [k, v] {
                // Metadata values are capped far below 4 GiB by the trigger parser; a
                // longer one could not have been planned.
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        Metadata(out.into_boxed_slice())
    }

    /// The (key, value) pairs, in key order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let mut part = || {
                let (len, tail) = rest.split_first_chunk::<4>()?;
                let len = u32::from_le_bytes(*len) as usize;
                let (bytes, tail) = (tail.get(..len)?, tail.get(len..)?);
                rest = tail;
                std::str::from_utf8(bytes).ok()
            };
            Some((part()?, part()?))
        })
    }

    /// The same pairs as `md`: as many pairs, each found with its value (the stored
    /// keys are distinct, so this is map equality).
    fn matches(&self, md: &HashMap<String, String>) -> bool {
        let mut n = 0;
        for (k, v) in self.pairs() {
            n += 1;
            if md.get(k).map(String::as_str) != Some(v) {
                return false;
            }
        }
        n == md.len()
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
    fn matches(&self, namespace: &str, name: &str, md: &HashMap<String, String>) -> bool {
        self.namespace == namespace && self.name == name && self.metadata.matches(md)
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an evaluation; logs when the signal's state changes.
    pub fn record(&self, result: &Result<Evaluation, EvalError>) {
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
        if slot
            .last_sample
            .is_none_or(|t| now.duration_since(t) >= HISTORY_EVERY)
        {
            if slot.history.len() == HISTORY_LEN {
                slot.history.pop_front();
            }
            slot.history.push_back((unix_now(), narrow(outcome.value)));
            slot.last_sample = Some(now);
        }
        let error = outcome.error.clone();
        slot.last = Some(outcome);
        drop(slot);
        if was != Some(state) {
            let from = was.map_or("new", SignalState::as_str);
            let metric = self.plan.trigger.metric_name.as_str();
            match state {
                SignalState::Ok => tracing::info!(
                    namespace = %self.namespace, scaled_object = %self.name, metric,
                    from, to = state.as_str(), "signal state changed"
                ),
                _ => tracing::warn!(
                    namespace = %self.namespace, scaled_object = %self.name, metric,
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
            "namespace": e.namespace,
            "scaledObject": e.name,
            "metric": t.metric_name,
            "signal": t.kind.as_str(),
            "source": t.source().as_str(),
            "query": e.query,
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

/// Every ScaledObject trigger asked about recently.
pub struct Board {
    entries: moka::sync::Cache<u64, Arc<Entry>>,
    keys: RandomState,
    epoch: Instant,
    evicted: Counter,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl Board {
    /// `evicted` counts entries dropped because the board was full.
    pub fn new(config: BoardConfig, evicted: Counter) -> Self {
        let counter = evicted.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_signals)
            .time_to_idle(config.idle_expiry.max(Duration::from_millis(1)))
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counter.inc();
                }
            })
            .build();
        Board {
            entries,
            keys: RandomState::new(),
            epoch: Instant::now(),
            evicted,
        }
    }

    /// The entry for this caller and metadata: memoised, or planned with `plan` (which
    /// never touches a backend) and remembered. Names are checked before anything is kept.
    pub fn entry(
        &self,
        namespace: &str,
        name: &str,
        md: &HashMap<String, String>,
        plan: impl FnOnce() -> Result<Plan, PlanError>,
    ) -> Result<Arc<Entry>, PlanError> {
        let key = self.key(namespace, name, md);
        let asked = self.epoch.elapsed().as_millis() as u64;
        if let Some(e) = self.entries.get(&key) {
            if e.matches(namespace, name, md) {
                e.asked_ms.store(asked, Ordering::Relaxed);
                return Ok(e);
            }
        }
        check_names(namespace, name)?;
        let plan = plan()?;
        let entry = Arc::new(Entry {
            namespace: namespace.to_string(),
            name: name.to_string(),
            metadata: Metadata::new(md),
            query: plan.describe(),
            backend: plan.query.backend_label(),
            plan,
            asked_ms: AtomicU64::new(asked),
            slot: Mutex::new(Slot::default()),
        });
        self.entries.insert(key, entry.clone());
        Ok(entry)
    }

    /// A keyed hash of who asked and the metadata, independent of the map's order.
    fn key(&self, namespace: &str, name: &str, md: &HashMap<String, String>) -> u64 {
        let mut h = self.keys.build_hasher();
        namespace.hash(&mut h);
        name.hash(&mut h);
        md.len().hash(&mut h);
        let mut pairs = 0u64;
        for kv in md {
            pairs = pairs.wrapping_add(self.keys.hash_one(kv));
        }
        pairs.hash(&mut h);
        h.finish()
    }

    /// Every entry, sorted by namespace, name and metric.
    pub fn snapshot(&self) -> Vec<Row> {
        // Evictions due are carried out first, so a snapshot never holds more than the cap.
        self.entries.run_pending_tasks();
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut rows: Vec<Row> = self
            .entries
            .iter()
            .map(|(_, entry)| {
                let slot = entry.slot();
                let last = slot.last.clone();
                let history = slot
                    .history
                    .iter()
                    .map(|&(t, v)| (u64::from(t), widen(v)))
                    .collect();
                drop(slot);
                let asked = entry.asked_ms.load(Ordering::Relaxed);
                Row {
                    value: last.as_ref().and_then(|o| o.value),
                    age: last.as_ref().and_then(|o| o.age),
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
                    r.entry.namespace.clone(),
                    r.entry.name.clone(),
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

    /// Drops idle entries now (they also go on their own as the board is used).
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
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
                ("namespace", r.entry.namespace.clone()),
                ("scaled_object", r.entry.name.clone()),
                ("metric", r.entry.plan.trigger.metric_name.clone()),
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

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The compact metadata matches exactly the maps equal to the one it was made from.
    #[test]
    fn metadata_matches_only_equal_maps() {
        fn check(stored: &[(&str, &str)], asked: &[(&str, &str)], want: bool) {
            let m = Metadata::new(&map(stored));
            assert_eq!(m.matches(&map(asked)), want, "{stored:?} vs {asked:?}");
            assert_eq!(map(stored) == map(asked), want, "the table itself is wrong");
        }
        let md = [
            ("signal", "latency"),
            ("service", "orders"),
            ("threshold", "300ms"),
        ];
        check(&md, &md, true);
        check(&[], &[], true);
        check(&md, &md[..2], false);
        check(&md[..2], &md, false);
        check(
            &md,
            &[
                ("signal", "latency"),
                ("service", "orders"),
                ("threshold", "301ms"),
            ],
            false,
        );
        check(
            &md,
            &[
                ("signal", "latency"),
                ("service", "orders"),
                ("thresholds", "300ms"),
            ],
            false,
        );
        check(&[], &[("a", "")], false);
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
    }

    #[test]
    fn metadata_pairs_come_back_sorted() {
        let m = Metadata::new(&map(&[("b", "2"), ("a", "1"), ("c", "")]));
        let pairs: Vec<_> = m.pairs().collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2"), ("c", "")]);
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
