//! Canary analysis (`GET /api/v1/analysis`): two versions of one service compared over a
//! window, from any trace source, for Argo Rollouts' `web` provider or anything that GETs
//! JSON.
//!
//! [`params`] parses the untrusted query string; [`plan`] turns it into the queries of
//! each side (no I/O); [`run`] reads them through the engine's cache; [`compare`] makes
//! the answer (pure).

pub mod params;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EvalError, PlanError};
use crate::signal::{format_window, TraceMeasure, TraceSelector};
use crate::source::Query;
use crate::trigger::TraceRead;

pub use params::{ParamError, ParamOptions, ParamProblem, Params};

/// The three queries of one side.
#[derive(Debug, Clone, PartialEq)]
pub struct SidePlan {
    pub version: String,
    pub rate: Query,
    pub error_ratio: Query,
    pub latency: Query,
}

/// What one side's queries answered (`None`: no data).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SideReading {
    /// The exact number of spans, from a source that holds them (the embedded store);
    /// `None` from sources that only know rates (then rps × window).
    pub count: Option<u64>,
    /// The spans the source holds, each once however many requests it stands for (the
    /// embedded store): the evidence `minCount` asks for. `None`: [`SideReading::count`]
    /// or rps × window.
    pub stored: Option<u64>,
    /// Spans per second (0 without traffic); `None` while not known yet (a fresh store).
    pub rps: Option<f64>,
    pub error_rate: Option<f64>,
    pub latency: Option<f64>,
}

/// One side of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub version: String,
    /// Spans in the window. From `otlp`, the spans the store holds in the buckets that
    /// overlap the window (the one still filling included, so up to one bucket width more
    /// than the window), sampled ones by their adjusted count; from Prometheus and Tempo,
    /// the rate times the window, rounded.
    pub count: u64,
    /// `null` while not known yet: the embedded store's first seconds (product spec: "A
    /// figure that is not known yet is null; the others are still answered").
    pub rps: Option<f64>,
    /// `null` with no spans.
    pub error_rate: Option<f64>,
    /// Seconds at the quantile; `null` with no spans.
    pub latency: Option<f64>,
}

/// Canary − baseline; `null` when either side has no value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    pub error_rate: Option<f64>,
    pub latency: Option<f64>,
}

/// The endpoint's answer (docs/canary-analysis.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub service: String,
    pub window: String,
    pub quantile: f64,
    pub canary: Side,
    pub baseline: Side,
    pub delta: Delta,
    /// Either side has fewer than `minCount` spans: a canary without traffic never passes.
    pub inconclusive: bool,
}

/// A rollback rule over an [`Answer`], as an Argo Rollouts AnalysisTemplate states it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The canary fails above this error rate (a ratio).
    pub max_error_rate: f64,
    /// The canary fails when its latency is more than this many seconds above the
    /// baseline's.
    pub max_latency_increase_s: f64,
}

/// What a rule makes of one answer (Argo Rollouts: Successful, Failed, Inconclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl Rule {
    /// The rule of `deploy/examples/canary/analysis-template.yaml`: fail when the canary's
    /// error rate is above 3 % or its latency more than 200 ms above the baseline's.
    pub const EXAMPLE: Rule = Rule {
        max_error_rate: 0.03,
        max_latency_increase_s: 0.2,
    };

    /// The template's conditions: inconclusive below `minCount` (either side); failed when
    /// a known figure breaks the rule; passed when both figures are known and keep it;
    /// otherwise (a figure missing) inconclusive, never passed.
    pub fn judge(&self, a: &Answer) -> Verdict {
        if a.inconclusive {
            return Verdict::Inconclusive;
        }
        let errors_bad = a.canary.error_rate.map(|e| e > self.max_error_rate);
        let latency_bad = a.delta.latency.map(|d| d > self.max_latency_increase_s);
        match (errors_bad, latency_bad) {
            (Some(true), _) | (_, Some(true)) => Verdict::Fail,
            (Some(false), Some(false)) => Verdict::Pass,
            _ => Verdict::Inconclusive,
        }
    }
}

/// Why there is no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// Bad parameters (400).
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The parameters name something the server does not have (400).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A backend failed (503).
    #[error(transparent)]
    Backend(#[from] EvalError),
}

impl AnalysisError {
    /// The HTTP status: 400 for the caller's mistakes, 503 for a failing backend.
    pub fn status(&self) -> u16 {
        match self {
            AnalysisError::Params(_) | AnalysisError::Plan(PlanError::Invalid(_)) => 400,
            AnalysisError::Plan(PlanError::PermissionDenied(_)) => 403,
            AnalysisError::Backend(_) => 503,
        }
    }

    /// The JSON body: `{"error": …, "params": [{"param", "message"}…]}`.
    pub fn body(&self) -> serde_json::Value {
        let problems: Vec<ParamProblem> = match self {
            AnalysisError::Params(e) => e.problems.clone(),
            AnalysisError::Plan(PlanError::Invalid(e)) => e
                .problems
                .iter()
                .map(|p| ParamProblem {
                    param: p.key.clone(),
                    message: p.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        serde_json::json!({ "error": self.to_string(), "params": problems })
    }
}

/// The queries of both sides. Never touches a backend.
pub fn plan(engine: &Engine, p: &Params) -> Result<(SidePlan, SidePlan), PlanError> {
    let side = |version: &str| -> Result<SidePlan, PlanError> {
        let q = |measure| {
            let read = TraceRead {
                selector: TraceSelector {
                    service: p.service.clone(),
                    span_kind: p.span_kind,
                    version: Some(version.to_string()),
                    labels: p.labels.clone(),
                },
                measure,
                window: p.window,
            };
            engine.trace_query(p.source, &p.backend, &p.convention, &read)
        };
        Ok(SidePlan {
            version: version.to_string(),
            rate: q(TraceMeasure::Rate)?,
            error_ratio: q(TraceMeasure::ErrorRatio)?,
            latency: q(TraceMeasure::Latency(p.quantile))?,
        })
    };
    Ok((side(&p.canary)?, side(&p.baseline)?))
}

/// Reads one side: from the embedded store, every figure from one snapshot (the exact
/// count, and the rate, error rate and latency of the same spans); from other sources,
/// the three queries together, through the engine's cache.
async fn read_side(engine: &Engine, s: &SidePlan) -> Result<SideReading, EvalError> {
    if let (Query::Otlp(rate), Query::Otlp(_), Query::Otlp(latency)) =
        (&s.rate, &s.error_ratio, &s.latency)
    {
        let snapshot = engine
            .sources()
            .otlp_snapshot(&rate.selector, rate.window)?;
        return Ok(SideReading {
            count: Some(snapshot.count()),
            stored: Some(snapshot.stored()),
            rps: snapshot.rate(),
            error_rate: snapshot.value(TraceMeasure::ErrorRatio)?,
            latency: snapshot.value(latency.measure)?,
        });
    }
    let (rps, error_rate, latency) = tokio::join!(
        engine.read_value(&s.rate),
        engine.read_value(&s.error_ratio),
        engine.read_value(&s.latency)
    );
    Ok(SideReading {
        count: None,
        stored: None,
        // No series from a rate query is no traffic.
        rps: Some(rps?.unwrap_or(0.0)),
        error_rate: error_rate?,
        latency: latency?,
    })
}

/// Parses, plans, reads and compares.
pub async fn run(engine: &Engine, pairs: &[(String, String)]) -> Result<Answer, AnalysisError> {
    let (default_source, conventions) = engine.defaults();
    let opts = ParamOptions {
        default_source,
        conventions,
    };
    let p = params::parse(pairs, &opts)?;
    let (canary, baseline) = plan(engine, &p)?;
    let (c, b) = tokio::join!(read_side(engine, &canary), read_side(engine, &baseline));
    Ok(compare(&p, c?, b?))
}

/// The answer from both sides' readings. Pure.
pub fn compare(p: &Params, canary: SideReading, baseline: SideReading) -> Answer {
    let side = |version: &str, r: SideReading| {
        let count = r.count.unwrap_or_else(|| count(r.rps, p.window));
        // No spans: no error rate or latency, whatever a backend's rounding answered.
        let (error_rate, latency) = if count == 0 {
            (None, None)
        } else {
            (r.error_rate, r.latency)
        };
        Side {
            version: version.to_string(),
            count,
            rps: r.rps,
            error_rate,
            latency,
        }
    };
    // The spans behind a side's figures: those held, where the source tells them apart.
    let evidence = |side: &Side, r: SideReading| r.stored.unwrap_or(side.count).min(side.count);
    let (canary_read, baseline_read) = (canary, baseline);
    let canary = side(&p.canary, canary);
    let baseline = side(&p.baseline, baseline);
    let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    Answer {
        service: p.service.clone(),
        window: format_window(p.window),
        quantile: p.quantile.get(),
        delta: Delta {
            error_rate: diff(canary.error_rate, baseline.error_rate),
            latency: diff(canary.latency, baseline.latency),
        },
        inconclusive: evidence(&canary, canary_read) < p.min_count
            || evidence(&baseline, baseline_read) < p.min_count,
        canary,
        baseline,
    }
}

/// Spans in `window` at `rps`, rounded to the nearest whole span.
fn count(rps: Option<f64>, window: Duration) -> u64 {
    match rps {
        Some(r) if r.is_finite() && r > 0.0 => (r * window.as_secs_f64()).round() as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{Quantile, SpanKind};
    use crate::trigger::SourceKind;

    fn params(min_count: u64) -> Params {
        Params {
            service: "payment-service".into(),
            canary: "v2".into(),
            baseline: "v1".into(),
            window: Duration::from_secs(120),
            source: SourceKind::Otlp,
            backend: "default".into(),
            convention: "otel-spanmetrics".into(),
            span_kind: SpanKind::Server,
            quantile: Quantile::P95,
            min_count,
            labels: Vec::new(),
        }
    }

    fn reading(rps: f64, e: f64, l: f64) -> SideReading {
        SideReading {
            count: None,
            stored: None,
            rps: Some(rps),
            error_rate: Some(e),
            latency: Some(l),
        }
    }

    #[test]
    fn answers_compare_canary_with_baseline() {
        // (min count, canary, baseline, counts, delta error rate, delta latency, inconclusive)
        type Case = (
            u64,
            SideReading,
            SideReading,
            (u64, u64),
            Option<f64>,
            Option<f64>,
            bool,
        );
        let none = SideReading::default();
        let cases: &[Case] = &[
            (
                50,
                reading(10.0, 0.041, 0.412),
                reading(80.25, 0.002, 0.198),
                (1200, 9630),
                Some(0.041 - 0.002),
                Some(0.412 - 0.198),
                false,
            ),
            // 0.4 spans per second over 2 minutes is 48 spans: below 50.
            (
                50,
                reading(0.4, 0.0, 0.1),
                reading(10.0, 0.0, 0.1),
                (48, 1200),
                Some(0.0),
                Some(0.0),
                true,
            ),
            (
                48,
                reading(0.4, 0.0, 0.1),
                reading(10.0, 0.0, 0.1),
                (48, 1200),
                Some(0.0),
                Some(0.0),
                false,
            ),
            // An exact count (the embedded store) is the count, whatever rate × window says.
            (
                50,
                SideReading {
                    count: Some(51),
                    ..reading(0.4, 0.0, 0.1)
                },
                reading(10.0, 0.0, 0.1),
                (51, 1200),
                Some(0.0),
                Some(0.0),
                false,
            ),
            // Sampled spans count as the requests they stand for, but the evidence is the
            // spans held: one span sampled at 1 % (count 100) is not 50 spans' worth.
            (
                50,
                SideReading {
                    count: Some(100),
                    stored: Some(1),
                    ..reading(0.8, 0.0, 0.1)
                },
                SideReading {
                    count: Some(1200),
                    stored: Some(1200),
                    ..reading(10.0, 0.0, 0.1)
                },
                (100, 1200),
                Some(0.0),
                Some(0.0),
                true,
            ),
            // A canary with no traffic: no numbers, never conclusive.
            (
                1,
                none,
                reading(10.0, 0.01, 0.2),
                (0, 1200),
                None,
                None,
                true,
            ),
        ];
        for (min, c, b, counts, de, dl, inconclusive) in cases {
            let a = compare(&params(*min), *c, *b);
            assert_eq!((a.canary.count, a.baseline.count), *counts, "{c:?} {b:?}");
            assert_eq!(a.delta.error_rate, *de, "{c:?} {b:?}");
            assert_eq!(a.delta.latency, *dl, "{c:?} {b:?}");
            assert_eq!(a.inconclusive, *inconclusive, "{c:?} {b:?}");
        }
    }

    #[test]
    fn the_answer_has_the_documented_shape() {
        let a = compare(
            &params(50),
            reading(10.0, 0.041, 0.412),
            reading(80.25, 0.002, 0.198),
        );
        let v = serde_json::to_value(&a).expect("json");
        assert_eq!(v["service"], "payment-service");
        assert_eq!(v["window"], "2m");
        assert_eq!(v["quantile"], 0.95);
        assert_eq!(v["canary"]["version"], "v2");
        assert_eq!(v["canary"]["errorRate"], 0.041);
        assert_eq!(v["baseline"]["latency"], 0.198);
        assert_eq!(v["baseline"]["rps"], 80.25);
        assert!(v["delta"]["errorRate"].is_number());
        assert!(v["delta"]["latency"].is_number());
        assert_eq!(v["inconclusive"], false);
    }

    #[test]
    fn the_example_rule_judges_like_its_template() {
        // (canary error rate, delta latency, inconclusive, verdict)
        let cases: &[(Option<f64>, Option<f64>, bool, Verdict)] = &[
            (Some(0.02), Some(0.05), false, Verdict::Pass),
            (Some(0.03), Some(0.2), false, Verdict::Pass),
            (Some(0.031), Some(0.0), false, Verdict::Fail),
            (Some(0.0), Some(0.201), false, Verdict::Fail),
            // Below minCount nothing is judged, however bad it looks.
            (Some(0.5), Some(1.0), true, Verdict::Inconclusive),
            // A figure missing never passes; a known bad one still fails.
            (Some(0.01), None, false, Verdict::Inconclusive),
            (Some(0.2), None, false, Verdict::Fail),
            (None, None, false, Verdict::Inconclusive),
        ];
        for (error_rate, delta_latency, inconclusive, want) in cases {
            let mut a = compare(
                &params(50),
                reading(10.0, 0.0, 0.3),
                reading(80.0, 0.0, 0.3),
            );
            a.canary.error_rate = *error_rate;
            a.delta.latency = *delta_latency;
            a.inconclusive = *inconclusive;
            assert_eq!(
                Rule::EXAMPLE.judge(&a),
                *want,
                "{error_rate:?} {delta_latency:?}"
            );
        }
    }
}
