//! The HPA's replica arithmetic, as the Kubernetes controller applies it to our values.
//!
//! Used by `check`, `demo` and `simulate` to show what a trigger would do; the scaler
//! itself only reports values and lets the HPA decide. [`Behavior`] and [`Autoscaler`]
//! follow `pkg/controller/podautoscaler/horizontal.go` (stabilisation windows, scaling
//! policies, `selectPolicy`) and the defaults of the `autoscaling/v2` API.

use super::MetricType;

/// The HPA's default tolerance: no change while |ratio − 1| ≤ 0.1.
pub const TOLERANCE: f64 = 0.1;

/// Replicas the HPA would want for one metric, before min/max clamping and behaviour
/// policies, with every pod ready. `current` is the current replica count (0 means
/// scaled to zero: KEDA's activation decides then, so the answer is 1 if active, else 0).
pub fn desired_replicas(metric_type: MetricType, current: u32, value: f64, target: f64) -> u32 {
    desired_replicas_ready(metric_type, current, current, value, target)
}

/// [`desired_replicas`] with `ready` of the `current` pods ready, as
/// `pkg/controller/podautoscaler/replica_calculator.go` computes an external metric:
/// `AverageValue` gives `ceil(value / target)` whatever is ready; `Value`
/// (`getUsageRatioReplicaCount`) gives `ceil(value / target × ready pods)`, so pods still
/// starting do not multiply the ratio again while their metric has not moved.
pub fn desired_replicas_ready(
    metric_type: MetricType,
    current: u32,
    ready: u32,
    value: f64,
    target: f64,
) -> u32 {
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
        MetricType::Value => (ratio * f64::from(ready.min(current))).ceil(),
    };
    desired.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Replicas the HPA wants for a resource metric with a `Utilization` target (CPU), as
/// `replica_calculator.go` computes it: the ratio is taken over the `ready` pods' average
/// utilisation; when it asks for a scale-up while some pods are not ready yet, those pods
/// count as using nothing and the ratio is recomputed over all `current` pods, and no
/// change is made if that flips the direction or falls within the tolerance.
pub fn desired_replicas_utilization(
    current: u32,
    ready: u32,
    utilization: f64,
    target: f64,
) -> u32 {
    if target.is_nan() || target <= 0.0 || !utilization.is_finite() || utilization < 0.0 {
        return current;
    }
    if ready == 0 || current == 0 {
        return current;
    }
    let ratio = utilization / target;
    let unready = current.saturating_sub(ready);
    if unready > 0 && ratio > 1.0 {
        let all = ratio * f64::from(ready) / f64::from(current);
        if all <= 1.0 || (all - 1.0).abs() <= TOLERANCE {
            return current;
        }
        return to_replicas((all * f64::from(current)).ceil());
    }
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    to_replicas((ratio * f64::from(ready)).ceil())
}

fn to_replicas(x: f64) -> u32 {
    x.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// How a scaling policy limits change: a number of pods or a percentage of the replicas
/// at the start of the period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One `behavior.scaleUp.policies[]` / `behavior.scaleDown.policies[]` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingPolicy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_s: u32,
}

/// `selectPolicy`: the policy allowing the most change, the least, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    pub stabilization_s: u32,
    pub select: SelectPolicy,
    pub policies: Vec<ScalingPolicy>,
}

/// `spec.behavior` of an `autoscaling/v2` HorizontalPodAutoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub scale_up: ScalingRules,
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// The API defaults: scale up by at most 100 % or 4 pods (the larger) per 15 s with
    /// no stabilisation; scale down by up to 100 % per 15 s after a 300 s stabilisation.
    fn default() -> Self {
        Behavior {
            scale_up: ScalingRules {
                stabilization_s: 0,
                select: SelectPolicy::Max,
                policies: vec![
                    ScalingPolicy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period_s: 15,
                    },
                    ScalingPolicy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period_s: 15,
                    },
                ],
            },
            scale_down: ScalingRules {
                stabilization_s: 300,
                select: SelectPolicy::Max,
                policies: vec![ScalingPolicy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_s: 15,
                }],
            },
        }
    }
}

/// The HPA controller's memory for one target: past recommendations (for stabilisation)
/// and past scale events (for the policies' periods). Time is in seconds from any origin.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    pub behavior: Behavior,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// `spec.behavior` unset: the controller's downscale stabilisation window
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 minutes), and its older rules
    /// (see [`Autoscaler::unset`]); `behavior` is then not read.
    unset_window_s: Option<u32>,
    recommendations: Vec<(f64, u32)>,
    /// (time, replicas added > 0 or removed < 0).
    events: Vec<(f64, i64)>,
}

impl Autoscaler {
    pub fn new(behavior: Behavior, min_replicas: u32, max_replicas: u32) -> Self {
        Autoscaler {
            behavior,
            min_replicas,
            max_replicas: max_replicas.max(min_replicas),
            unset_window_s: None,
            recommendations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// An HPA whose `spec.behavior` is unset, as KEDA writes it unless the ScaledObject sets
    /// `advanced.horizontalPodAutoscalerConfig.behavior` (KEDA `controllers/keda/hpa.go`,
    /// `newHPAForScaledObject`); the API server fills in a behavior only where one is set
    /// (Kubernetes `pkg/apis/autoscaling/v2/defaults.go`,
    /// `SetDefaults_HorizontalPodAutoscalerBehavior`). The controller then takes its older
    /// rules (`pkg/controller/podautoscaler/horizontal.go`, `normalizeDesiredReplicas`): the
    /// highest recommendation of the last `downscale_window_s`, not bounded by the current
    /// count, and at most `max(2 × current, 4)` replicas a sync.
    pub fn unset(downscale_window_s: u32, min_replicas: u32, max_replicas: u32) -> Self {
        Autoscaler {
            unset_window_s: Some(downscale_window_s),
            ..Autoscaler::new(Behavior::default(), min_replicas, max_replicas)
        }
    }

    /// One reconcile at `now_s`: `desired` is the maximum over the metrics' proposals;
    /// returns the replica count the HPA writes (and records it as a scale event).
    pub fn reconcile(&mut self, now_s: f64, current: u32, desired: u32) -> u32 {
        if let Some(window_s) = self.unset_window_s {
            return self.reconcile_unset(now_s, current, desired, window_s);
        }
        let stabilized = self.stabilize(now_s, current, desired);
        let next = self.limit_rate(now_s, current, stabilized);
        if next != current {
            self.events
                .push((now_s, i64::from(next) - i64::from(current)));
        }
        next
    }

    /// `stabilizeRecommendation` (a recommendation from before `now − window` is old), then
    /// `convertDesiredReplicasWithRules`: at least the minimum, at most the maximum and
    /// `calculateScaleUpLimit`'s `max(2 × current, 4)`.
    fn reconcile_unset(&mut self, now_s: f64, current: u32, desired: u32, window_s: u32) -> u32 {
        let from = now_s - f64::from(window_s);
        self.recommendations.retain(|(t, _)| *t >= from);
        let highest = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .fold(desired, u32::max);
        self.recommendations.push((now_s, desired));
        let scale_up_limit = current.saturating_mul(2).max(4);
        highest
            .min(self.max_replicas.min(scale_up_limit))
            .max(self.min_replicas)
    }

    /// `stabilizeRecommendationWithBehaviors`: the lowest recommendation in the scale-up
    /// window and the highest in the scale-down window bound the current count.
    fn stabilize(&mut self, now_s: f64, current: u32, desired: u32) -> u32 {
        let up_from = now_s - f64::from(self.behavior.scale_up.stabilization_s);
        let down_from = now_s - f64::from(self.behavior.scale_down.stabilization_s);
        let mut up = desired;
        let mut down = desired;
        for &(t, r) in &self.recommendations {
            if t > up_from {
                up = up.min(r);
            }
            if t > down_from {
                down = down.max(r);
            }
        }
        let longest = f64::from(
            self.behavior
                .scale_up
                .stabilization_s
                .max(self.behavior.scale_down.stabilization_s),
        );
        self.recommendations.retain(|(t, _)| *t > now_s - longest);
        self.recommendations.push((now_s, desired));
        current.max(up).min(down)
    }

    /// `convertDesiredReplicasWithBehaviorRate`: the policies' limits, then min/max.
    fn limit_rate(&mut self, now_s: f64, current: u32, desired: u32) -> u32 {
        let longest = self
            .behavior
            .scale_up
            .policies
            .iter()
            .chain(&self.behavior.scale_down.policies)
            .map(|p| p.period_s)
            .max()
            .unwrap_or(0);
        self.events.retain(|(t, _)| *t > now_s - f64::from(longest));
        let cur = i64::from(current);
        if desired > current {
            let limit = self
                .limit(now_s, cur, &self.behavior.scale_up, true)
                .max(cur);
            let allowed = limit.min(i64::from(self.max_replicas));
            return clamp_u32(i64::from(desired).min(allowed));
        }
        if desired < current {
            let limit = self
                .limit(now_s, cur, &self.behavior.scale_down, false)
                .min(cur);
            let allowed = limit.max(i64::from(self.min_replicas));
            return clamp_u32(i64::from(desired).max(allowed));
        }
        desired
    }

    /// `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors`.
    fn limit(&self, now_s: f64, current: i64, rules: &ScalingRules, up: bool) -> i64 {
        if rules.select == SelectPolicy::Disabled {
            return current;
        }
        // Max picks the most change: the highest limit up, the lowest down.
        let take_max = (rules.select == SelectPolicy::Max) == up;
        let mut result: Option<i64> = None;
        for p in &rules.policies {
            let from = now_s - f64::from(p.period_s);
            let (mut added, mut deleted) = (0i64, 0i64);
            for &(t, d) in &self.events {
                if t > from {
                    if d > 0 {
                        added += d;
                    } else {
                        deleted -= d;
                    }
                }
            }
            let start = current - added + deleted;
            let value = i64::from(p.value);
            let proposed = match (p.kind, up) {
                (PolicyKind::Pods, true) => start + value,
                (PolicyKind::Pods, false) => start - value,
                // Rounded up, so a small percentage still adds a pod.
                (PolicyKind::Percent, true) => {
                    (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64
                }
                // Truncated, as the controller converts to int32.
                (PolicyKind::Percent, false) => {
                    (start as f64 * (1.0 - value as f64 / 100.0)) as i64
                }
            };
            result = Some(match result {
                None => proposed,
                Some(r) if take_max => r.max(proposed),
                Some(r) => r.min(proposed),
            });
        }
        result.unwrap_or(current)
    }
}

fn clamp_u32(x: i64) -> u32 {
    x.clamp(0, i64::from(u32::MAX)) as u32
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

    // The worked examples of the Kubernetes documentation, "Horizontal Pod Autoscaling"
    // (concepts/workloads/autoscaling/horizontal-pod-autoscale.md, "Algorithm details"
    // and "Configurable scaling behavior"), and the rules of
    // pkg/controller/podautoscaler/horizontal.go and replica_calculator.go.

    #[test]
    fn docs_replica_calculation_and_tolerance() {
        let check = |current, value, target, expect| {
            assert_eq!(
                desired_replicas(Value, current, value, target),
                expect,
                "current={current} value={value} target={target}"
            );
        };
        // "200m and desired 100m: the number of replicas will be doubled".
        check(3, 0.200, 0.100, 6);
        // "50m: you'll halve the number of replicas".
        check(4, 0.050, 0.100, 2);
        // "skips any scaling action if the ratio is sufficiently close to 1.0 (0.1)".
        check(5, 0.109, 0.100, 5);
        check(5, 0.091, 0.100, 5);
        check(5, 0.111, 0.100, 6);
    }

    /// `replica_calculator.go`: `GetExternalMetricReplicas` → `getUsageRatioReplicaCount`
    /// multiplies a `Value` metric's ratio by the ready pods (`getReadyPodsCount`), after
    /// the tolerance check; `GetExternalPerPodMetricReplicas` (`AverageValue`) divides the
    /// value by the per-pod target, pods ready or not.
    #[test]
    fn external_value_scales_the_ready_pods() {
        let check = |metric_type, current, ready, value, target, expect| {
            assert_eq!(
                desired_replicas_ready(metric_type, current, ready, value, target),
                expect,
                "{metric_type:?} current={current} ready={ready} value={value} target={target}"
            );
        };
        // p95 at twice its target, 4 pods of which 2 are still starting: 2 × 2, not 4 × 2.
        check(Value, 4, 2, 0.6, 0.3, 4);
        check(Value, 4, 4, 0.6, 0.3, 8);
        // Within the tolerance: the current count, ready or not.
        check(Value, 8, 4, 0.32, 0.3, 8);
        // Below target with pods starting: the ready pods' share.
        check(Value, 6, 3, 0.15, 0.3, 2);
        // Every pod starting: 0, which the HPA's minimum then raises.
        check(Value, 3, 0, 0.9, 0.3, 0);
        check(AverageValue, 4, 2, 450.0, 100.0, 5);
        // Scaled to zero: activation decides.
        check(Value, 0, 0, 0.9, 0.3, 1);
    }

    #[test]
    fn utilization_treats_unready_pods_as_idle_when_scaling_up() {
        let check = |current, ready, util, target, expect| {
            assert_eq!(
                desired_replicas_utilization(current, ready, util, target),
                expect,
                "current={current} ready={ready} util={util} target={target}"
            );
        };
        check(4, 4, 100.0, 50.0, 8);
        // Two pods still starting: 150 % over two ready pods is 75 % over four → 6.
        check(4, 2, 150.0, 50.0, 6);
        // Counting the unready pods as idle lands within the tolerance: no change.
        check(4, 2, 105.0, 50.0, 4);
        // Scale-down ignores unready pods: ratio over the ready ones.
        check(4, 2, 20.0, 50.0, 1);
        check(4, 4, 52.0, 50.0, 4);
    }

    /// Runs `reconcile` at each (time, desired) and checks the replica count after each.
    fn check_run(hpa: &mut Autoscaler, start: u32, steps: &[(f64, u32, u32)]) {
        let mut current = start;
        for &(t, desired, expect) in steps {
            current = hpa.reconcile(t, current, desired);
            assert_eq!(current, expect, "t={t} desired={desired}");
        }
    }

    /// `spec.behavior` unset (a ScaledObject without `advanced.horizontalPodAutoscalerConfig`):
    /// Kubernetes `horizontal.go`, `normalizeDesiredReplicas`. At most `max(2 × current, 4)`
    /// a sync (2 → 4, where the behavior defaults allow 2 → 6), and the highest recommendation
    /// of the last 5 minutes, even above the current count: a spike's proposal of 20, cut to
    /// 4, is climbed to at the next syncs though the load fell; it holds until 300 s after it.
    #[test]
    fn unset_behavior_doubles_or_reaches_four_and_climbs_to_the_highest_recent_proposal() {
        let mut hpa = Autoscaler::unset(300, 2, 100);
        check_run(
            &mut hpa,
            2,
            &[
                (0.0, 20, 4),
                (15.0, 3, 8),
                (30.0, 3, 16),
                (45.0, 3, 20),
                (300.0, 3, 20),
                // The proposal of 20 (at 0 s) is old once before `now − 300 s`.
                (301.0, 3, 3),
                (315.0, 1, 3),
                (620.0, 1, 2),
            ],
        );
        let mut with_behavior = Autoscaler::new(Behavior::default(), 2, 100);
        check_run(&mut with_behavior, 2, &[(0.0, 20, 6), (15.0, 3, 6)]);
        // The maximum and the minimum still hold.
        check_run(
            &mut Autoscaler::unset(300, 2, 5),
            2,
            &[(0.0, 20, 4), (15.0, 20, 5)],
        );
    }

    #[test]
    fn docs_default_scale_up_doubles_or_adds_four_pods_per_15s() {
        // "up to 4 pods or 100% of the currently running replicas will be added every
        // 15 seconds till the HPA reaches its steady state".
        let mut hpa = Autoscaler::new(Behavior::default(), 1, 100);
        check_run(
            &mut hpa,
            1,
            &[
                (0.0, 20, 5),
                (5.0, 20, 5),
                (15.0, 20, 10),
                (30.0, 20, 20),
                (45.0, 20, 20),
            ],
        );
    }

    #[test]
    fn docs_scale_down_stabilization_uses_the_highest_recommendation() {
        // "the highest recommendation within the [300 s] window is used".
        let mut hpa = Autoscaler::new(Behavior::default(), 1, 100);
        check_run(
            &mut hpa,
            10,
            &[
                (0.0, 10, 10),
                (15.0, 4, 10),
                (150.0, 6, 10),
                (299.0, 4, 10),
                (300.0, 4, 6),
                (450.0, 4, 4),
            ],
        );
    }

    #[test]
    fn docs_scale_down_policies_pods_and_percent() {
        // "80 replicas ... scaled down to 10: the first step removes 8; at 72, 10 % is
        // 7.2, rounded up to 8; below 40 the Pods policy removes 4 at a time".
        let behavior = Behavior {
            scale_down: ScalingRules {
                stabilization_s: 300,
                select: SelectPolicy::Max,
                policies: vec![
                    ScalingPolicy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period_s: 60,
                    },
                    ScalingPolicy {
                        kind: PolicyKind::Percent,
                        value: 10,
                        period_s: 60,
                    },
                ],
            },
            ..Behavior::default()
        };
        let mut hpa = Autoscaler::new(behavior, 1, 100);
        let mut current = 80;
        let mut seen = vec![current];
        let mut t = 0.0;
        while current > 10 && t < 10_000.0 {
            current = hpa.reconcile(t, current, 10);
            if seen.last() != Some(&current) {
                seen.push(current);
            }
            t += 15.0;
        }
        assert_eq!(
            seen,
            [80, 72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]
        );
        // One step per policy period (60 s).
        assert!(
            (t - 15.0 - 13.0 * 60.0).abs() < 1e-9,
            "last step at {}",
            t - 15.0
        );
    }

    #[test]
    fn docs_select_policy_disabled_never_scales_down() {
        let mut behavior = Behavior::default();
        behavior.scale_down.select = SelectPolicy::Disabled;
        let mut hpa = Autoscaler::new(behavior, 1, 100);
        check_run(&mut hpa, 8, &[(0.0, 2, 8), (600.0, 2, 8), (615.0, 12, 12)]);
    }

    #[test]
    fn min_and_max_bound_every_decision() {
        let mut hpa = Autoscaler::new(Behavior::default(), 2, 6);
        check_run(&mut hpa, 4, &[(0.0, 50, 6), (400.0, 0, 2)]);
    }
}
