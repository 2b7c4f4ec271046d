//! Scaling policies to compare: a static fleet, or one HPA metric.

use std::fmt;

use super::SimulateError;

/// One `--policy` value.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// `static:N`: N pods, never scaled.
    Static(u32),
    /// `static:auto`: the smallest static fleet that holds the attainment goal.
    StaticAuto,
    /// `cpu:70%`: the HPA's CPU `Utilization` target, percent of the pod's request.
    Cpu { target_percent: f64 },
    /// `rps:60`: the scaler's `signal: rps`, `AverageValue` per pod.
    Rps { per_pod: f64 },
    /// `p95:240ms`: the scaler's `signal: latency` p95, `Value`, target in seconds
    /// (`p95` alone: 0.8 × the objective).
    P95 { target_s: Option<f64> },
    /// `slo:0.8`: the scaler's `signal: slo` ratio, `Value` (`slo` alone: 0.8).
    Slo { target: f64 },
    /// `concurrency:3`: the scaler's `signal: concurrency` (requests in flight),
    /// `AverageValue` per pod.
    Concurrency { per_pod: f64 },
    /// `recommended[:N]`: the scaler's `signal: sloCapacity`, `AverageValue` 1, with
    /// `podConcurrency` N (default: the service model's `--workers-per-pod`, as a user
    /// sets it from the service's own configuration).
    Recommended { pod_concurrency: Option<f64> },
    /// `oracle`: the lower bound, a fleet sized each minute for that minute's load,
    /// known in advance, with no start-up delay.
    Oracle,
}

impl Policy {
    /// The default set compared when no `--policy` is given.
    pub fn defaults() -> Vec<Policy> {
        vec![
            Policy::StaticAuto,
            Policy::Cpu {
                target_percent: 70.0,
            },
            Policy::Rps { per_pod: 60.0 },
            Policy::P95 { target_s: None },
            Policy::Slo { target: 0.8 },
            Policy::Concurrency { per_pod: 3.0 },
            Policy::Recommended {
                pod_concurrency: None,
            },
            Policy::Oracle,
        ]
    }

    /// Whether the policy is the recommended one (README, "Choosing a signal").
    pub fn is_recommended(&self) -> bool {
        matches!(self, Policy::Recommended { .. })
    }

    /// Whether the policy is computed apart from the closed loop (a search or a bound).
    pub fn is_offline(&self) -> bool {
        matches!(self, Policy::StaticAuto | Policy::Oracle)
    }

    /// Whether the policy reads latency, so its replay keeps a sketch of every request
    /// (about twice the work of a replay that only counts).
    pub fn reads_latency(&self) -> bool {
        matches!(
            self,
            Policy::P95 { .. } | Policy::Slo { .. } | Policy::Recommended { .. }
        )
    }

    pub fn parse(s: &str) -> Result<Policy, SimulateError> {
        let bad = |detail: &str| SimulateError::Policy {
            value: s.to_string(),
            detail: detail.to_string(),
        };
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let positive = |a: &str| a.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
        match (kind, arg) {
            ("static", Some("auto")) => Ok(Policy::StaticAuto),
            ("static", Some(a)) => a
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(Policy::Static)
                .ok_or_else(|| bad("want static:N with N ≥ 1, or static:auto")),
            ("cpu", Some(a)) => positive(a.trim_end_matches('%'))
                .map(|target_percent| Policy::Cpu { target_percent })
                .ok_or_else(|| bad("want cpu:PERCENT, like cpu:70%")),
            ("rps", Some(a)) => positive(a)
                .map(|per_pod| Policy::Rps { per_pod })
                .ok_or_else(|| bad("want rps:PER_POD, like rps:60")),
            ("p95", None) => Ok(Policy::P95 { target_s: None }),
            ("p95", Some(a)) => crate::config::duration_arg(a)
                .ok()
                .filter(|d| !d.is_zero())
                .map(|d| Policy::P95 {
                    target_s: Some(d.as_secs_f64()),
                })
                .ok_or_else(|| bad("want p95:DURATION, like p95:240ms")),
            ("slo", None) => Ok(Policy::Slo { target: 0.8 }),
            ("slo", Some(a)) => positive(a)
                .map(|target| Policy::Slo { target })
                .ok_or_else(|| bad("want slo:RATIO, like slo:0.8")),
            ("concurrency", Some(a)) => positive(a)
                .map(|per_pod| Policy::Concurrency { per_pod })
                .ok_or_else(|| bad("want concurrency:PER_POD, like concurrency:3")),
            ("recommended" | "sloCapacity", None) => Ok(Policy::Recommended {
                pod_concurrency: None,
            }),
            ("recommended" | "sloCapacity", Some(a)) => positive(a)
                .map(|n| Policy::Recommended {
                    pod_concurrency: Some(n),
                })
                .ok_or_else(|| bad("want recommended[:POD_CONCURRENCY], like recommended:4")),
            ("oracle", None) => Ok(Policy::Oracle),
            _ => Err(bad(
                "want static:N, static:auto, cpu:70%, rps:60, p95[:240ms], slo[:0.8], \
                 concurrency:3, recommended[:N] or oracle",
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Static(n) => write!(f, "static:{n}"),
            Policy::StaticAuto => write!(f, "static:auto"),
            Policy::Cpu { target_percent } => write!(f, "cpu:{target_percent}%"),
            Policy::Rps { per_pod } => write!(f, "rps:{per_pod}"),
            Policy::P95 { target_s: Some(t) } => write!(f, "p95:{}ms", (t * 1000.0).round()),
            Policy::P95 { target_s: None } => write!(f, "p95"),
            Policy::Slo { target } => write!(f, "slo:{target}"),
            Policy::Concurrency { per_pod } => write!(f, "concurrency:{per_pod}"),
            Policy::Recommended {
                pod_concurrency: None,
            } => write!(f, "sloCapacity"),
            Policy::Recommended {
                pod_concurrency: Some(n),
            } => write!(f, "sloCapacity:{n}"),
            Policy::Oracle => write!(f, "oracle"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, expect: Result<Policy, &str>) {
        match (Policy::parse(s), expect) {
            (Ok(p), Ok(want)) => assert_eq!(p, want, "{s}"),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{s}: {e}"),
            (got, want) => panic!("{s}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn table() {
        check("static:6", Ok(Policy::Static(6)));
        check("static:auto", Ok(Policy::StaticAuto));
        check(
            "cpu:70%",
            Ok(Policy::Cpu {
                target_percent: 70.0,
            }),
        );
        check(
            "cpu:50",
            Ok(Policy::Cpu {
                target_percent: 50.0,
            }),
        );
        check("rps:60", Ok(Policy::Rps { per_pod: 60.0 }));
        check("p95", Ok(Policy::P95 { target_s: None }));
        check(
            "p95:240ms",
            Ok(Policy::P95 {
                target_s: Some(0.24),
            }),
        );
        check("slo", Ok(Policy::Slo { target: 0.8 }));
        check("concurrency:3", Ok(Policy::Concurrency { per_pod: 3.0 }));
        check(
            "recommended",
            Ok(Policy::Recommended {
                pod_concurrency: None,
            }),
        );
        check(
            "sloCapacity:8",
            Ok(Policy::Recommended {
                pod_concurrency: Some(8.0),
            }),
        );
        check("oracle", Ok(Policy::Oracle));
        check("recommended:0", Err("want recommended"));
        check("slo:1", Ok(Policy::Slo { target: 1.0 }));
        check("static:0", Err("policy \"static:0\""));
        check("cpu:-5", Err("want cpu:PERCENT"));
        check("p95:0s", Err("want p95:DURATION"));
        check("memory:80%", Err("want static:N"));
        assert_eq!(
            Policy::parse("p95:240ms")
                .map(|p| p.to_string())
                .ok()
                .as_deref(),
            Some("p95:240ms")
        );
    }
}
