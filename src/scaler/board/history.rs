//! Sparkline history: a sample of a signal's value every [`HISTORY_EVERY`], the last
//! [`HISTORY_LEN`] kept, 8 bytes each.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{clock_ms, Entry, Slot};

/// How many samples of a signal's value the board keeps for sparklines.
pub const HISTORY_LEN: usize = 60;
/// At most one history sample per this interval (60 × 5 s: the last five minutes).
pub const HISTORY_EVERY: Duration = Duration::from_secs(5);

impl Entry {
    /// Adds a history sample if one is due (the last is `HISTORY_EVERY` old).
    pub(super) fn sample(&self, slot: &mut Slot, now: Instant, value: Option<f64>) {
        if clock_ms(now) >= self.sample_due_ms.load(Ordering::Relaxed) {
            if slot.history.len() == HISTORY_LEN {
                slot.history.pop_front();
            }
            slot.history.push_back((unix_now(), narrow(value)));
            self.sample_due_ms
                .store(clock_ms(now + HISTORY_EVERY), Ordering::Relaxed);
        }
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A history sample as stored: `f32`, NaN for none; values past `f32::MAX` keep the
/// largest `f32`, not infinity.
pub(super) fn narrow(v: Option<f64>) -> f32 {
    v.map_or(f32::NAN, |v| (v as f32).min(f32::MAX))
}

/// A history sample back to `f64`, as the shortest decimal that reads back as the same
/// `f32` (so 0.3 shows as 0.3, not 0.30000001192092896); NaN is "no value".
pub(super) fn widen(v: f32) -> Option<f64> {
    if v.is_nan() {
        return None;
    }
    v.to_string().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
