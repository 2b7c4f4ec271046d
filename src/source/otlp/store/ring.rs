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
    /// The pods that served the bucket's spans.
    pub(super) pods: Pods,
}

impl Bucket {
    pub(super) fn merge(&mut self, other: &Bucket) {
        self.spans += other.spans;
        self.errors += other.errors;
        self.busy_ns += other.busy_ns;
        self.latency.merge(&other.latency);
        self.pods.merge(&other.pods);
    }

    /// Gives back the slack a bucket built span by span holds (a `Vec` grows by doubling):
    /// a bucket is stored for the whole retention.
    pub(super) fn shrink(&mut self) {
        self.latency.shrink();
        if let Some(ids) = &mut self.pods.0 {
            ids.shrink_to_fit();
        }
    }

    /// The heap the bucket holds.
    pub(super) fn heap_bytes(&self) -> usize {
        self.latency.heap_bytes() + self.pods.heap_bytes()
    }
}

/// The most pods a [`Pods`] names; past it the pods count as unknown. Bounds a bucket's
/// memory (8 bytes a pod) against a caller that sends a new instance id with each span.
pub const MAX_PODS: usize = 256;

/// The distinct pods (instances) whose spans a bucket or period holds, as hashes of
/// their instance id (see `ingest.rs`), or unknown: once a span came without an
/// instance id, of a kind other than server or consumer (a client span runs in its
/// caller's pod), with a sampling record of a probability below 1 (a sampled pod may
/// have no span kept), or past [`MAX_PODS`]. `signal: sloCapacity` bounds a period's
/// queue-free latency by the slots of the pods that served it
/// (`capacity::longest_service_s`), and a count read low would read that bound low:
/// unknown is no bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Pods(Option<Vec<u64>>);

impl Default for Pods {
    /// No span yet: no pod, and none unknown.
    fn default() -> Self {
        Pods(Some(Vec::new()))
    }
}

impl Pods {
    /// Pods that are not known.
    pub fn unknown() -> Self {
        Pods(None)
    }

    /// Adds the pod whose id hashes to `id`.
    pub fn add(&mut self, id: u64) {
        if let Some(ids) = &mut self.0 {
            if !ids.contains(&id) {
                if ids.len() == MAX_PODS {
                    self.0 = None;
                } else {
                    ids.push(id);
                }
            }
        }
    }

    /// Adds `other`'s pods: unknown if either is.
    pub fn merge(&mut self, other: &Pods) {
        match &other.0 {
            Some(ids) => ids.iter().for_each(|&id| self.add(id)),
            None => self.0 = None,
        }
    }

    /// The pods' id hashes, each once, if known.
    pub fn ids(&self) -> Option<&[u64]> {
        self.0.as_deref()
    }

    fn heap_bytes(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |ids| ids.capacity() * std::mem::size_of::<u64>())
    }
}

/// One minute of a series (a whole number of buckets, see `Store::per_minute`): the sums
/// `signal: sloCapacity`'s sustained window reads, kept after the minute's buckets have
/// left the retention.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Minute {
    /// Absolute index: bucket index / buckets per minute.
    pub(super) index: u64,
    /// Σ adjusted count, as [`Bucket::spans`].
    pub(super) spans: f64,
    /// Σ adjusted count × duration, ns, as [`Bucket::busy_ns`].
    pub(super) busy_ns: f64,
}

/// Where a series keeps its buckets and minutes: see [`Series::absorb`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Keep {
    /// The oldest bucket index kept.
    pub(super) oldest: u64,
    /// The most buckets a series holds.
    pub(super) slots: usize,
    /// Buckets per minute.
    pub(super) per_minute: u64,
    /// The oldest minute index kept.
    pub(super) oldest_minute: u64,
}

/// The buckets of one series, oldest first, only those that saw spans.
#[derive(Debug, Default)]
pub(super) struct Series {
    pub(super) buckets: VecDeque<Bucket>,
    /// The minutes that saw spans, oldest first, from [`Keep::oldest_minute`]: a span is
    /// accepted at most `MAX_FUTURE_SKEW` ahead, so at most the sustained window's
    /// minutes and two more.
    pub(super) minutes: VecDeque<Minute>,
    /// When (store clock, Unix ns) the series last received a span.
    pub(super) last_ingest_ns: u64,
    /// What [`Series::heap_bytes`] would count, kept as buckets come and go.
    pub(super) bytes: usize,
}

impl Series {
    /// Adds `incoming` into the bucket of the same index and into its minute, and drops
    /// the buckets and minutes before those `keep` keeps. A series never holds more than
    /// `keep.slots` buckets. Keeps [`Series::bytes`] current. Every incoming bucket is at
    /// or after `keep.oldest`; a new one is moved in, not copied.
    pub(super) fn absorb(
        &mut self,
        incoming: impl IntoIterator<Item = Bucket>,
        keep: Keep,
        now_ns: u64,
    ) {
        self.last_ingest_ns = self.last_ingest_ns.max(now_ns);
        self.trim(keep);
        let ring_before = self.ring_bytes();
        let mut grown = 0isize;
        let slots = keep.slots;
        for b in incoming {
            self.add_to_minute(&b, keep.per_minute);
            // Spans almost always land in the newest bucket: look from the back.
            match self.buckets.iter().rposition(|x| x.index <= b.index) {
                Some(i) if self.buckets[i].index == b.index => {
                    let before = self.buckets[i].heap_bytes();
                    self.buckets[i].merge(&b);
                    grown += self.buckets[i].heap_bytes() as isize - before as isize;
                }
                Some(i) => {
                    self.make_room(slots);
                    grown += b.heap_bytes() as isize;
                    self.buckets.insert(i + 1, b);
                }
                None => {
                    self.make_room(slots);
                    grown += b.heap_bytes() as isize;
                    self.buckets.push_front(b);
                }
            }
        }
        grown += self.ring_bytes() as isize - ring_before as isize;
        self.bytes = self.bytes.saturating_add_signed(grown);
    }

    /// Adds bucket `b`'s sums to its minute.
    fn add_to_minute(&mut self, b: &Bucket, per_minute: u64) {
        let index = b.index / per_minute;
        let at = match self.minutes.iter().rposition(|m| m.index <= index) {
            Some(i) if self.minutes[i].index == index => i,
            Some(i) => {
                self.minutes.insert(
                    i + 1,
                    Minute {
                        index,
                        ..Minute::default()
                    },
                );
                i + 1
            }
            None => {
                self.minutes.push_front(Minute {
                    index,
                    ..Minute::default()
                });
                0
            }
        };
        self.minutes[at].spans += b.spans;
        self.minutes[at].busy_ns += b.busy_ns;
    }

    fn ring_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.minutes.capacity() * std::mem::size_of::<Minute>()
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

    /// Drops the buckets and minutes before those `keep` keeps.
    pub(super) fn trim(&mut self, keep: Keep) {
        while self.buckets.front().is_some_and(|b| b.index < keep.oldest) {
            if let Some(b) = self.buckets.pop_front() {
                self.bytes = self.bytes.saturating_sub(b.heap_bytes());
            }
        }
        while self
            .minutes
            .front()
            .is_some_and(|m| m.index < keep.oldest_minute)
        {
            self.minutes.pop_front();
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.ring_bytes() + self.buckets.iter().map(Bucket::heap_bytes).sum::<usize>()
    }
}
