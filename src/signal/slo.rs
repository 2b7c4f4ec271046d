//! The `signal: slo` value: how far a service is from its objectives, as one ratio.
//!
//! `max(latency / latency_objective, error_rate / error_rate_objective)` over whichever
//! objectives are set, so 1.0 means "exactly at the objective" and a `Value` target of
//! 1.0 (or below, for headroom) scales on whichever objective is closer to breaking.

use thiserror::Error;

/// The objectives of a `signal: slo` trigger; at least one must be set.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Objectives {
    /// Latency objective in seconds (for the trigger's quantile, p95 by default).
    pub latency_s: Option<f64>,
    /// Error-rate objective as a ratio (0.01 for 1 %).
    pub error_rate: Option<f64>,
}

/// What was observed over the window; `None` when the source had no data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observed {
    pub latency_s: Option<f64>,
    pub error_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SloError {
    #[error("signal slo needs at least one objective (latency or error rate)")]
    NoObjective,
    #[error("slo objective {name} must be a positive finite number, got {value}")]
    BadObjective { name: &'static str, value: f64 },
    #[error("slo has no {name} observation for its objective")]
    NoData { name: &'static str },
    #[error("slo observed {name} {value} is not a non-negative finite number")]
    BadObservation { name: &'static str, value: f64 },
}

/// The SLO ratio. An objective without its observation is an error, never a guess: the
/// scaler reports it so KEDA's fallback decides.
pub fn slo_ratio(objectives: Objectives, observed: Observed) -> Result<f64, SloError> {
    let pairs = [
        ("latency", objectives.latency_s, observed.latency_s),
        ("error rate", objectives.error_rate, observed.error_rate),
    ];
    let mut ratio: Option<f64> = None;
    for (name, objective, value) in pairs {
        let Some(objective) = objective else { continue };
        if !objective.is_finite() || objective <= 0.0 {
            return Err(SloError::BadObjective {
                name,
                value: objective,
            });
        }
        let value = value.ok_or(SloError::NoData { name })?;
        if !value.is_finite() || value < 0.0 {
            return Err(SloError::BadObservation { name, value });
        }
        let r = value / objective;
        ratio = Some(ratio.map_or(r, |m: f64| m.max(r)));
    }
    ratio.ok_or(SloError::NoObjective)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        objectives: (Option<f64>, Option<f64>),
        observed: (Option<f64>, Option<f64>),
        expect: Result<f64, SloError>,
    ) {
        let got = slo_ratio(
            Objectives {
                latency_s: objectives.0,
                error_rate: objectives.1,
            },
            Observed {
                latency_s: observed.0,
                error_rate: observed.1,
            },
        );
        match (&got, &expect) {
            (Ok(g), Ok(e)) => assert!(
                (g - e).abs() < 1e-12,
                "{objectives:?} {observed:?}: {g} vs {e}"
            ),
            _ => assert_eq!(got, expect, "{objectives:?} {observed:?}"),
        }
    }

    #[test]
    fn table() {
        // Latency only: 240 ms against 300 ms.
        check((Some(0.3), None), (Some(0.24), None), Ok(0.8));
        // Both set: the worse objective wins.
        check((Some(0.3), Some(0.01)), (Some(0.15), Some(0.02)), Ok(2.0));
        check((Some(0.3), Some(0.01)), (Some(0.6), Some(0.0)), Ok(2.0));
        // Error rate only; a latency reading without its objective is ignored.
        check((None, Some(0.05)), (Some(9.0), Some(0.01)), Ok(0.2));
        // No data for a set objective is an error, not zero.
        check(
            (Some(0.3), Some(0.01)),
            (None, Some(0.0)),
            Err(SloError::NoData { name: "latency" }),
        );
        check(
            (None, None),
            (Some(0.1), Some(0.1)),
            Err(SloError::NoObjective),
        );
        check(
            (Some(0.0), None),
            (Some(0.1), None),
            Err(SloError::BadObjective {
                name: "latency",
                value: 0.0,
            }),
        );
        check(
            (None, Some(0.01)),
            (None, Some(-1.0)),
            Err(SloError::BadObservation {
                name: "error rate",
                value: -1.0,
            }),
        );
    }
}
