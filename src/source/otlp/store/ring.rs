//! The ring of one series: its time buckets, oldest first, only those that saw spans.

use std::collections::VecDeque;

use super::super::sketch::LatencySketch;

/// One time bucket of a series.
#[derive(Debug, Clone, Default)]
pub(super) struct Bucket {
    /// Absolute index: span end time / bucket width.
    pub(super) index: u64,
    /// Σ adjusted count (1 / sampling probability; 1 for a span without a sampling
    /// record): the spans this bucket stands for.
    pub(super) spans: f64,
    /// Σ adjusted count of the error spans.
    pub(super) errors: f64,
    /// Σ adjusted count × duration, ns (Little's law's numerator). Exact while the sum
    /// stays below 2^53 ns (104 days of busy time per bucket) and the counts are powers
    /// of two; otherwise within f64's relative 2^-53 per addition.
    pub(super) busy_ns: f64,
    /// Every stored span once, whatever its adjusted count: quantiles are unweighted
    /// (see `ingest.rs`).
    pub(super) latency: LatencySketch,
}

impl Bucket {
    pub(super) fn merge(&mut self, other: &Bucket) {
        self.spans += other.spans;
        self.errors += other.errors;
        self.busy_ns += other.busy_ns;
        self.latency.merge(&other.latency);
    }
}

/// The buckets of one series, oldest first, only those that saw spans.
#[derive(Debug, Default)]
pub(super) struct Series {
    pub(super) buckets: VecDeque<Bucket>,
    /// When (store clock, Unix ns) the series last received a span.
    pub(super) last_ingest_ns: u64,
    /// What [`Series::heap_bytes`] would count, kept as buckets come and go.
    pub(super) bytes: usize,
}

impl Series {
    /// Adds `incoming` into the bucket of the same index and drops buckets before `oldest`.
    /// A series never holds more than `slots` buckets. Keeps [`Series::bytes`] current.
    pub(super) fn absorb(&mut self, incoming: &[Bucket], oldest: u64, now_ns: u64, slots: usize) {
        self.last_ingest_ns = self.last_ingest_ns.max(now_ns);
        self.trim(oldest);
        let ring_before = self.ring_bytes();
        let mut grown = 0isize;
        for b in incoming {
            // Spans almost always land in the newest bucket: look from the back.
            match self.buckets.iter().rposition(|x| x.index <= b.index) {
                Some(i) if self.buckets[i].index == b.index => {
                    let before = self.buckets[i].latency.heap_bytes();
                    self.buckets[i].merge(b);
                    grown += self.buckets[i].latency.heap_bytes() as isize - before as isize;
                }
                Some(i) => {
                    self.make_room(slots);
                    self.buckets.insert(i + 1, b.clone());
                    // The clone's capacity, not the original's.
                    grown += self.buckets[i + 1].latency.heap_bytes() as isize;
                }
                None => {
                    self.make_room(slots);
                    self.buckets.push_front(b.clone());
                    grown += self.buckets[0].latency.heap_bytes() as isize;
                }
            }
        }
        grown += self.ring_bytes() as isize - ring_before as isize;
        self.bytes = self.bytes.saturating_add_signed(grown);
    }

    fn ring_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// Grows the ring by doubling, but never past `slots`, so a full series does not
    /// carry the slack of a power-of-two capacity.
    pub(super) fn make_room(&mut self, slots: usize) {
        let (len, cap) = (self.buckets.len(), self.buckets.capacity());
        if len == cap {
            let target = (cap * 2).clamp(4, slots.max(len + 1));
            self.buckets.reserve_exact(target - len);
        }
    }

    pub(super) fn trim(&mut self, oldest: u64) {
        while self.buckets.front().is_some_and(|b| b.index < oldest) {
            if let Some(b) = self.buckets.pop_front() {
                self.bytes = self.bytes.saturating_sub(b.latency.heap_bytes());
            }
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| b.latency.heap_bytes())
                .sum::<usize>()
    }
}
