//! The board's table: 16 read-locked shards of one `hashbrown::HashTable` each, bounded
//! by `max_signals` (the least recently asked entry evicted and counted) and swept of
//! entries nobody asked about for `idle_expiry`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use hashbrown::HashTable;
use prometheus_client::metrics::counter::Counter;

use super::{clock_ms, BoardConfig, Entry, Key, Plan, PlanError, Slot};
use crate::proto::wire::Metadata;
use crate::trigger::{is_dns1123_label, is_dns1123_subdomain, Problem, TriggerError};

/// Shards of the board's table: a lookup read-locks one, so callers asking about different
/// ScaledObjects rarely meet, and none waits on a planning (planned outside every lock).
const SHARDS: usize = 16;

pub(super) type Shard = RwLock<HashTable<Arc<Entry>>>;

/// Every ScaledObject trigger asked about recently.
pub struct Board {
    pub(super) shards: Box<[Shard]>,
    /// Seeded per process: which shard and bucket a key lands in cannot be chosen by a
    /// caller (and a shard holds at most `max` entries whatever the hash does).
    hasher: foldhash::fast::RandomState,
    /// Entries held plus insertions under way; never above `max`.
    pub(super) len: AtomicU64,
    max: u64,
    idle_ms: u64,
    evicted: Counter,
    /// Tests move the board's idle clock forward by hand (ms added to [`Board::now_ms`]).
    #[cfg(test)]
    pub(super) skew_ms: AtomicU64,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("entries", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

pub(super) fn read(shard: &Shard) -> RwLockReadGuard<'_, HashTable<Arc<Entry>>> {
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
            idle_ms: u64::try_from(config.idle_expiry.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
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
            served_ms: AtomicU64::new(0),
            watched: OnceLock::new(),
            reuse_seen: AtomicU64::new(0),
            sample_due_ms: AtomicU64::new(0),
            slot: Mutex::new(Slot::default()),
        });
        table.insert_unique(hash, entry.clone(), |e| self.hasher.hash_one(&e.key.0));
        Ok(entry)
    }

    pub(super) fn now_ms(&self) -> u64 {
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
