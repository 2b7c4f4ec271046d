//! A mergeable latency sketch with a 1 % relative-error bound (DDSketch, log-bucketed).
//!
//! A duration `x` nanoseconds long (x ≥ 1) falls in bin `k = ceil(log_γ x)` with
//! `γ = (1 + α) / (1 − α)`, so bin `k` holds `(γ^(k−1), γ^k]`; zero-length spans are
//! counted apart. The quantile at rank `r` is answered with the bin's midpoint in relative
//! terms, `2γ^k / (γ + 1)`, which is within `α` of every value in the bin, hence within
//! `α` of the exact value at that rank. Merging adds bins, so a merged sketch answers
//! exactly as one fed with every value would.
//!
//! The bins are a dense `u32` array over the keys actually seen (`[offset, offset + len)`),
//! because the store keeps one sketch per series per second: a 1 ms – 1 s spread is about
//! 350 bins (1.4 KiB), an empty sketch allocates nothing, and no key range can exceed
//! [`MAX_KEY`] + 1 bins (durations are `u64` nanoseconds). The maintained
//! `sketches-ddsketch` crate was not used because its stores start at 128 `u64` bins each
//! (1 KiB+ per sketch, even for one span), which multiplies by 600 buckets per series.

/// The relative-error bound of every quantile this sketch answers.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// `γ = (1 + α) / (1 − α)`.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// The largest key: `ceil(log_γ u64::MAX)`.
pub const MAX_KEY: u16 = 2218;

/// Durations in nanoseconds, summarised for quantile queries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySketch {
    /// Values of 0 ns.
    zeros: u64,
    /// Key of `bins[0]`.
    offset: u16,
    bins: Vec<u32>,
    count: u64,
    min_ns: u64,
    max_ns: u64,
}

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

/// The bin of a duration of `ns ≥ 1` nanoseconds, by the formula.
fn exact_key(ns: u64) -> u16 {
    let k = ((ns as f64).ln() / ln_gamma()).ceil();
    // `ns ≥ 1`, so `k ≥ 0`; the clamp only guards against float rounding at the top.
    (k.max(0.0) as u16).min(MAX_KEY)
}

/// Durations from here on take [`Keys`]; shorter ones (under 66 µs) the formula.
const FAST_FROM: u64 = 1 << 16;

/// Mantissa bits that name a cell: a cell `[x, x · (1 + 2⁻⁶))` spans
/// `ln(1 + 2⁻⁶) / ln γ ≈ 0.78` of a bin, so at most one bin boundary falls inside it.
const CELL_BITS: u32 = 6;

/// How far an `f64`'s bits shift right to leave its exponent and `CELL_BITS` of mantissa.
const CELL_SHIFT: u32 = 52 - CELL_BITS;

/// The first cell: the top bits of `FAST_FROM as f64` (a power of two, so no mantissa).
const FIRST_CELL: u64 = (1023 + FAST_FROM.ilog2() as u64) << CELL_BITS;

/// Tables that give [`exact_key`]'s answer with two lookups and no logarithm. They exist
/// for speed: every span the store takes and every request a latency policy of the
/// simulator serves needs a key (the simulator's 10 s target in BENCHMARKS.md).
struct Keys {
    /// The key of each cell's lowest duration, from `FIRST_CELL` on.
    cell: Vec<u16>,
    /// `lower[k]`: the shortest duration whose key is `k` or more.
    lower: Vec<u64>,
}

fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let last_cell = (u64::MAX as f64).to_bits() >> CELL_SHIFT;
        let cell = (FIRST_CELL..=last_cell)
            .map(|c| exact_key(f64::from_bits(c << CELL_SHIFT) as u64))
            .collect();
        // `exact_key` never falls as `ns` grows, so each boundary is a binary search.
        let lower = (0..=MAX_KEY)
            .map(|k| {
                let (mut lo, mut hi) = (1u64, u64::MAX);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if exact_key(mid) >= k {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                lo
            })
            .collect();
        Keys { cell, lower }
    })
}

/// The bin of a duration of `ns ≥ 1` nanoseconds: [`exact_key`]'s answer (equal for every
/// `ns`, as `exact_key` never falls as `ns` grows; `key_is_the_formula` checks it).
fn key(ns: u64) -> u16 {
    if ns < FAST_FROM {
        return exact_key(ns);
    }
    let keys = keys();
    // `ns as f64` is what `exact_key` takes the logarithm of; its top bits name the cell.
    let cell = ((ns as f64).to_bits() >> CELL_SHIFT) - FIRST_CELL;
    let k = keys.cell[cell as usize];
    match keys.lower.get(usize::from(k) + 1) {
        Some(&next) if ns >= next => k + 1,
        _ => k,
    }
}

/// The representative value of a bin, in nanoseconds.
fn value(key: u16) -> f64 {
    2.0 * GAMMA.powi(i32::from(key)) / (GAMMA + 1.0)
}

impl LatencySketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many durations were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds one duration.
    pub fn add(&mut self, ns: u64) {
        self.note_extremes(ns, ns);
        self.count += 1;
        if ns == 0 {
            self.zeros += 1;
        } else {
            let k = key(ns);
            self.grow_to(k, k);
            let bin = &mut self.bins[usize::from(k - self.offset)];
            *bin = bin.saturating_add(1);
        }
    }

    /// Adds every value of `other` to `self`.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.is_empty() {
            return;
        }
        self.note_extremes(other.min_ns, other.max_ns);
        self.count += other.count;
        self.zeros += other.zeros;
        if let Some(last) = other.bins.len().checked_sub(1) {
            let hi = other.offset.saturating_add(last as u16);
            self.grow_to(other.offset, hi);
            let start = usize::from(other.offset - self.offset);
            for (mine, theirs) in self.bins[start..].iter_mut().zip(&other.bins) {
                *mine = mine.saturating_add(*theirs);
            }
        }
    }

    /// The `q`-quantile (0 ≤ q ≤ 1) in nanoseconds, within [`RELATIVE_ACCURACY`] of the
    /// exact value at rank `floor(q × (count − 1))`; `None` when empty.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        let mut answer = value(self.offset.saturating_add(self.bins.len() as u16));
        for (i, n) in self.bins.iter().enumerate() {
            seen += u64::from(*n);
            if seen > rank {
                answer = value(self.offset + i as u16);
                break;
            }
        }
        // Bounding by the exact extremes can only move the answer towards the truth.
        Some(answer.clamp(self.min_ns as f64, self.max_ns as f64))
    }

    /// Gives back the bins' slack.
    pub fn shrink(&mut self) {
        self.bins.shrink_to_fit();
    }

    /// Heap bytes held by this sketch.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<u32>()
    }

    fn note_extremes(&mut self, lo: u64, hi: u64) {
        if self.count == 0 {
            self.min_ns = lo;
            self.max_ns = hi;
        } else {
            self.min_ns = self.min_ns.min(lo);
            self.max_ns = self.max_ns.max(hi);
        }
    }

    /// Makes `bins` cover keys `lo..=hi` (and what it covered before).
    fn grow_to(&mut self, lo: u16, hi: u16) {
        if self.bins.is_empty() {
            self.offset = lo;
            self.bins = vec![0; usize::from(hi - lo) + 1];
            return;
        }
        let end = self.offset + self.bins.len() as u16; // Exclusive.
        if lo < self.offset {
            let extra = usize::from(self.offset - lo);
            self.bins.splice(0..0, std::iter::repeat_n(0, extra));
            self.offset = lo;
        }
        if hi >= end {
            self.bins.resize(usize::from(hi - self.offset) + 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact value at rank `floor(q × (n − 1))`, the rank the sketch answers for.
    fn exact(sorted: &[u64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize] as f64
    }

    /// A deterministic pseudo-random sequence (SplitMix64), so the tables are reproducible.
    fn splitmix(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(seed: &mut u64) -> f64 {
        (splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Feeds `values` into a sketch (whole, and split in three merged parts) and checks
    /// every quantile in `qs` against the exact one within the stated bound.
    fn check(name: &str, values: &[u64]) {
        let mut whole = LatencySketch::new();
        let mut parts = [
            LatencySketch::new(),
            LatencySketch::new(),
            LatencySketch::new(),
        ];
        for (i, v) in values.iter().enumerate() {
            whole.add(*v);
            parts[i % 3].add(*v);
        }
        let mut merged = LatencySketch::new();
        for p in &parts {
            merged.merge(p);
        }
        assert_eq!(
            merged, whole,
            "{name}: merging must equal feeding everything"
        );
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        for q in [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&sorted, q);
            let got = whole.quantile_ns(q).expect("non-empty sketch answers");
            let bound = RELATIVE_ACCURACY * want * (1.0 + 1e-9);
            assert!(
                (got - want).abs() <= bound,
                "{name}: q={q} got {got} want {want} (bound {bound})"
            );
        }
        assert_eq!(whole.count(), values.len() as u64, "{name}");
    }

    #[test]
    fn quantiles_stay_within_the_bound() {
        let mut seed = 7;
        let lognormal: Vec<u64> = (0..20_000)
            .map(|_| {
                // Box-Muller: a log-normal around 20 ms with a long tail.
                let (u1, u2) = (uniform(&mut seed).max(1e-12), uniform(&mut seed));
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (20e6 * (0.8 * z).exp()) as u64
            })
            .collect();
        check("log-normal around 20 ms", &lognormal);

        let bimodal: Vec<u64> = (0..10_000)
            .map(|i| if i % 10 == 0 { 900_000_000 } else { 3_000_000 } + i)
            .collect();
        check("bimodal 3 ms / 900 ms", &bimodal);

        let uniform_wide: Vec<u64> = (0..5_000)
            .map(|_| 1 + (uniform(&mut seed) * 10e9) as u64)
            .collect();
        check("uniform 1 ns .. 10 s", &uniform_wide);

        check("one value", &[42_000_000]);
        check("two values", &[1_000, 5_000_000_000]);
        check("with zeros", &[0, 0, 0, 10, 1_000, 100_000, 1_000_000]);
        check("all zeros", &[0, 0, 0]);
        check("one nanosecond", &[1, 1, 1, 2]);
        check("extremes", &[1, u64::MAX / 2, u64::MAX]);
        let ascending: Vec<u64> = (1..=1_000).map(|i| i * 1_000_000).collect();
        check("1..1000 ms", &ascending);
    }

    #[test]
    fn empty_and_out_of_range() {
        let s = LatencySketch::new();
        assert_eq!(s.quantile_ns(0.5), None);
        assert_eq!(s.heap_bytes(), 0);
        let mut s = LatencySketch::new();
        s.add(5);
        assert_eq!(s.quantile_ns(1.5), None);
        assert_eq!(s.quantile_ns(f64::NAN), None);
        s.merge(&LatencySketch::new());
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn key_is_the_formula() {
        let check = |ns: u64| assert_eq!(key(ns), exact_key(ns), "{ns} ns");
        // Every duration to 131 µs: the formula's range and the tables' first cells.
        (1..=FAST_FROM * 2).for_each(check);
        // Both sides of every bin boundary and of every cell's edges.
        let keys = keys();
        for &lower in &keys.lower {
            (lower.saturating_sub(2)..=lower.saturating_add(2)).for_each(check);
        }
        for c in 0..keys.cell.len() as u64 {
            let edge = f64::from_bits((FIRST_CELL + c) << CELL_SHIFT) as u64;
            (edge.saturating_sub(2)..=edge.saturating_add(2)).for_each(check);
        }
        // Log-uniform durations from 1 ns to u64::MAX.
        let mut seed = 11;
        for _ in 0..200_000 {
            check((64.0 * uniform(&mut seed)).exp2() as u64);
        }
        check(u64::MAX);
        assert_eq!(keys.lower[0], 1);
        assert_eq!(keys.lower.len(), usize::from(MAX_KEY) + 1);
    }

    #[test]
    fn bins_cover_only_the_keys_seen() {
        let mut s = LatencySketch::new();
        for ns in [1_000_000u64, 1_000_000_000] {
            s.add(ns);
        }
        // 1 ms .. 1 s is three decades: ln(1000) / ln(γ) ≈ 346 bins.
        assert!((340..=350).contains(&s.bins.len()), "{}", s.bins.len());
        assert_eq!(key(u64::MAX), MAX_KEY);
    }
}
