//! The demo's table: what a poll saw, and the canary analysis under it.

use std::fmt::Write as _;

use crate::analysis::{Answer, Rule, Verdict};

use super::queue::{CONSUMER_MIN_PODS, CONSUMER_RATE};
use super::scaling::Polled;
use super::story::{
    ANALYSIS_PARAMS, BASELINE_VERSION, CANARY_VERSION, DEMO_STABILIZATION_S, DEMO_STARTUP_S,
};

/// The table of one poll.
pub(super) fn table(p: &Polled) -> String {
    let t = p.t;
    let phase_name = p.phase;
    let mut out = String::new();
    let _ = writeln!(out, "slo-scaler demo — t={t:>5.1}s — {phase_name}\n");
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>8}",
        "service", "rps", "p95", "errors"
    );
    for (name, row) in &p.services {
        let fmt = |v: &Result<f64, String>, f: &dyn Fn(f64) -> String| match v {
            Ok(v) => f(*v),
            Err(_) => "—".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>10} {:>8}",
            name,
            fmt(&row[0], &|v| format!("{v:.1}")),
            fmt(&row[1], &|v| format!("{:.0}ms", v * 1000.0)),
            fmt(&row[2], &|v| format!("{:.1}%", v * 100.0)),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<36} {:>12} {:>10} {:>7} {:>14}  metricType",
        "trigger", "value", "threshold", "active", "replicas"
    );
    // Errors are named under the table, whole: a cell would cut them mid-word.
    let mut errors: Vec<(&str, &str)> = Vec::new();
    for trig in &p.triggers {
        let (value_text, replicas) = match &trig.answer {
            Ok((v, current, desired)) => (format!("{v:.3}"), format!("{current} → {desired}")),
            Err(e) => {
                errors.push((trig.title, e));
                ("error ¹".to_string(), "—".into())
            }
        };
        let _ = writeln!(
            out,
            "{:<36} {:>12} {:>10} {:>7} {:>14}  {}",
            trig.title,
            value_text,
            trig.threshold,
            match &trig.active {
                Ok(a) => a.to_string(),
                Err(_) => "—".into(),
            },
            replicas,
            trig.metric_type
        );
    }
    for (title, e) in &errors {
        let _ = writeln!(out, "  ¹ {title}: {e}");
    }
    let _ = writeln!(
        out,
        "\norder-service pods: {} ({} ready), set by the sloCapacity trigger through the HPA (scale-down stabilisation {}s, start-up {}s)",
        p.pods,
        p.ready,
        DEMO_STABILIZATION_S,
        DEMO_STARTUP_S
    );
    if let Some((counts, pods, ready)) = p.queue {
        let _ = writeln!(
            out,
            "notification-service consumers: {pods} ({ready} ready, {CONSUMER_RATE} msg/s each, min {CONSUMER_MIN_PODS}), set by the queueDepth trigger; \
             its queue: {} waiting, {} in flight",
            counts.visible, counts.in_flight
        );
    }
    let _ = writeln!(
        out,
        "values: latency in seconds, error rate as a ratio; replicas: what the HPA would pick now (min 1, max 20)\n"
    );
    out
}

/// One of the analysis query's parameters.
fn analysis_param(name: &str) -> &'static str {
    ANALYSIS_PARAMS
        .iter()
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| *v)
}

/// The canary analysis under the table: both sides' figures, and the verdict of the
/// example AnalysisTemplate's rule on them.
pub(super) fn analysis(out: &mut String, answer: Result<Answer, String>) {
    let rule = Rule::EXAMPLE;
    let _ = writeln!(
        out,
        "canary analysis: payment-service {CANARY_VERSION} vs {BASELINE_VERSION} over {}, p95, \
         minCount {} (GET /api/v1/analysis)\nrule of the example AnalysisTemplate: fail above \
         {:.0}% canary errors or p95 more than {:.0}ms above the baseline",
        analysis_param("window"),
        analysis_param("minCount"),
        rule.max_error_rate * 100.0,
        rule.max_latency_increase_s * 1000.0,
    );
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(out, "canary verdict: unavailable ({e})\n");
            return;
        }
    };
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}%", v * 100.0));
    let ms = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.0}ms", v * 1000.0));
    let _ = writeln!(
        out,
        "  {:<10} {:<8} {:>7} {:>8} {:>8} {:>8}",
        "side", "version", "count", "rps", "errors", "p95"
    );
    for (name, side) in [("canary", &a.canary), ("baseline", &a.baseline)] {
        let _ = writeln!(
            out,
            "  {:<10} {:<8} {:>7} {:>8} {:>8} {:>8}",
            name,
            side.version,
            side.count,
            side.rps.map_or("—".into(), |r| format!("{r:.1}")),
            pct(side.error_rate),
            ms(side.latency)
        );
    }
    let verdict = rule.judge(&a);
    let reason = match verdict {
        Verdict::Inconclusive if a.inconclusive => format!(
            "fewer than {} spans on a side (canary {}, baseline {})",
            analysis_param("minCount"),
            a.canary.count,
            a.baseline.count
        ),
        Verdict::Inconclusive => "a figure is missing".to_string(),
        Verdict::Fail | Verdict::Pass => format!(
            "canary errors {} (at most {:.0}%), p95 {} vs baseline (at most +{:.0}ms)",
            pct(a.canary.error_rate),
            rule.max_error_rate * 100.0,
            a.delta
                .latency
                .map_or("—".into(), |d| format!("{:+.0}ms", d * 1000.0)),
            rule.max_latency_increase_s * 1000.0,
        ),
    };
    let _ = writeln!(out, "canary verdict: {} — {reason}\n", verdict.label());
}
