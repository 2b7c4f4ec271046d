//! `signal: slo`: how far a service is from its objectives, as one ratio.

/// The larger of `latency / latency_objective` and `error_rate / error_rate_objective`,
/// over the objectives that are set. `None` when no set objective has a reading (no data),
/// or when an objective is not a positive finite number.
///
/// A reading that is missing for one objective does not hide the other: the value is the
/// worst known ratio. Both missing is no data, never 0.
pub fn slo_ratio(
    latency: Option<f64>,
    latency_objective: Option<f64>,
    error_rate: Option<f64>,
    error_rate_objective: Option<f64>,
) -> Option<f64> {
    let ratio = |reading: Option<f64>, objective: Option<f64>| -> Option<f64> {
        let o = objective?;
        if !(o.is_finite() && o > 0.0) {
            return None;
        }
        let r = reading?;
        r.is_finite().then_some(r / o)
    };
    match (
        ratio(latency, latency_objective),
        ratio(error_rate, error_rate_objective),
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(l: Option<f64>, lo: Option<f64>, e: Option<f64>, eo: Option<f64>, want: Option<f64>) {
        assert_eq!(slo_ratio(l, lo, e, eo), want, "{l:?}/{lo:?}, {e:?}/{eo:?}");
    }

    #[test]
    fn the_worse_ratio_wins() {
        // Latency 0.45 s against 0.3 s is 1.5; errors 2 % against 5 % is 0.4.
        check(
            Some(0.45),
            Some(0.3),
            Some(0.02),
            Some(0.05),
            Some(0.45 / 0.3),
        );
        // Errors 6 % against 3 % is 2; latency 0.1 s against 0.3 s is 1/3.
        check(
            Some(0.1),
            Some(0.3),
            Some(0.06),
            Some(0.03),
            Some(0.06 / 0.03),
        );
        check(Some(0.2), Some(0.4), None, None, Some(0.5));
        check(None, None, Some(0.01), Some(0.04), Some(0.25));
        // A missing reading leaves the other objective's ratio.
        check(None, Some(0.3), Some(0.03), Some(0.03), Some(1.0));
        check(Some(0.6), Some(0.3), None, Some(0.03), Some(2.0));
        // Nothing known is no data, never 0.
        check(None, Some(0.3), None, Some(0.03), None);
        check(Some(0.3), None, Some(0.1), None, None);
        // Objectives that cannot divide give nothing.
        check(Some(0.3), Some(0.0), None, None, None);
        check(Some(0.3), Some(f64::NAN), None, None, None);
        check(Some(f64::NAN), Some(0.3), None, None, None);
        check(Some(0.0), Some(0.3), Some(0.0), Some(0.01), Some(0.0));
    }
}
