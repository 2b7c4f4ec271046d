//! The HPA's replica arithmetic, as the Kubernetes controller applies it to our values.
//!
//! Used by `check` and `demo` to show what a trigger would do; the scaler itself only
//! reports values and lets the HPA decide.

use super::MetricType;

/// The HPA's default tolerance: no change while |ratio − 1| ≤ 0.1.
pub const TOLERANCE: f64 = 0.1;

/// Replicas the HPA would want for one metric, before min/max clamping and behaviour
/// policies. `current` is the current replica count (0 means scaled to zero: KEDA's
/// activation decides then, so the answer is 1 if active, else 0).
pub fn desired_replicas(metric_type: MetricType, current: u32, value: f64, target: f64) -> u32 {
    if target.is_nan() || target <= 0.0 || !value.is_finite() || value < 0.0 {
        return current;
    }
    if current == 0 {
        return u32::from(value > 0.0);
    }
    let current_f = f64::from(current);
    let ratio = match metric_type {
        MetricType::AverageValue => value / (target * current_f),
        MetricType::Value => value / target,
    };
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    let desired = match metric_type {
        MetricType::AverageValue => (value / target).ceil(),
        MetricType::Value => (ratio * current_f).ceil(),
    };
    desired.clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricType::*;

    #[test]
    fn table() {
        let check = |mt, current, value, target, expect| {
            assert_eq!(
                desired_replicas(mt, current, value, target),
                expect,
                "{mt} current={current} value={value} target={target}"
            );
        };
        // AverageValue: independent of current replicas.
        check(AverageValue, 2, 450.0, 100.0, 5);
        check(AverageValue, 10, 450.0, 100.0, 5);
        check(AverageValue, 4, 420.0, 100.0, 4); // within tolerance of 4 × 100
        check(AverageValue, 3, 0.0, 100.0, 0);
        // Value: proportional to current replicas.
        check(Value, 2, 0.6, 0.3, 4);
        check(Value, 3, 0.31, 0.3, 3); // within tolerance
        check(Value, 4, 0.15, 0.3, 2);
        check(Value, 1, 0.45, 0.3, 2);
        // Scaled to zero: activation.
        check(Value, 0, 0.1, 0.3, 1);
        check(AverageValue, 0, 0.0, 10.0, 0);
        // Nonsense keeps the current count.
        check(Value, 3, f64::NAN, 0.3, 3);
        check(Value, 3, 1.0, 0.0, 3);
    }
}
