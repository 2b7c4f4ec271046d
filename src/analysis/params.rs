//! The parameters of `GET /api/v1/analysis`, parsed from the untrusted query string.
//!
//! Every parameter is checked and every problem reported, each naming its parameter, with
//! the same length caps and name rules as trigger metadata.

use std::time::Duration;

use crate::signal::promql::is_label_name;
use crate::signal::{Quantile, SpanKind};
use crate::trigger::{
    clip, is_backend_name, parse_labels, parse_quantile, parse_span_kind, parse_window, SourceKind,
    MAX_VALUE_BYTES,
};

/// Every parameter the endpoint reads.
pub const PARAMS: &[&str] = &[
    "service",
    "canary",
    "baseline",
    "window",
    "source",
    "backend",
    "convention",
    "spanKind",
    "quantile",
    "minCount",
    "labels",
];

/// Most parameters one request may carry (repeats included).
pub const MAX_PARAMS: usize = 32;
const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
const DEFAULT_MIN_COUNT: u64 = 50;

/// A parsed, valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub service: String,
    pub canary: String,
    pub baseline: String,
    pub window: Duration,
    pub source: SourceKind,
    pub backend: String,
    pub convention: String,
    pub span_kind: SpanKind,
    pub quantile: Quantile,
    pub min_count: u64,
    /// Extra exact-match filters for both sides, as the trigger key `labels`.
    pub labels: Vec<(String, String)>,
}

/// One bad parameter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParamProblem {
    pub param: String,
    pub message: String,
}

/// Every bad parameter of one request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid analysis parameters: {}", .problems.iter().map(|p| format!("{}: {}", p.param, p.message)).collect::<Vec<_>>().join("; "))]
pub struct ParamError {
    pub problems: Vec<ParamProblem>,
}

/// What the server allows: its default source and the convention names it knows.
#[derive(Debug, Clone)]
pub struct ParamOptions {
    pub default_source: SourceKind,
    pub conventions: Vec<String>,
}

/// Parses the query string's pairs, reporting every bad parameter at once.
pub fn parse(pairs: &[(String, String)], opts: &ParamOptions) -> Result<Params, ParamError> {
    let mut problems = Vec::new();
    let mut bad = |param: &str, message: String| {
        problems.push(ParamProblem {
            param: clip(param).into_owned(),
            message,
        })
    };
    if pairs.len() > MAX_PARAMS {
        bad(
            "query",
            format!("has {} parameters; at most {MAX_PARAMS}", pairs.len()),
        );
        return Err(ParamError { problems });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        if !PARAMS.contains(&k.as_str()) {
            bad(k, "unknown parameter".into());
        } else if seen.contains(&k.as_str()) {
            bad(k, "given more than once".into());
        } else if v.len() > MAX_VALUE_BYTES {
            bad(k, format!("longer than {MAX_VALUE_BYTES} bytes"));
        }
        seen.push(k);
    }
    // The first value of a known, not oversized parameter; empty is absent.
    let get = |name: &str| -> Option<&str> {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_BYTES)
    };
    let mut required = |name: &str, what: &str| -> Option<String> {
        let v = get(name);
        if v.is_none()
            && !pairs
                .iter()
                .any(|(k, v)| k == name && v.len() > MAX_VALUE_BYTES)
        {
            bad(name, format!("required ({what})"));
        }
        v.map(str::to_string)
    };
    let service = required("service", "the service.name to analyse");
    let canary = required("canary", "the canary's service.version");
    let baseline = required("baseline", "the baseline's service.version");
    let source = match get("source") {
        None => Some(opts.default_source),
        Some(s) => match SourceKind::parse(s) {
            Some(k) if k != SourceKind::Sqs => Some(k),
            _ => {
                bad(
                    "source",
                    format!("must be otlp, prometheus or tempo, got {:?}", clip(s)),
                );
                None
            }
        },
    };
    let window = get("window")
        .map_or(Ok(DEFAULT_WINDOW), |raw| parse_window(raw, source))
        .map_err(|msg| bad("window", msg))
        .ok();
    let backend = get("backend").unwrap_or("default").to_string();
    if !is_backend_name(&backend) {
        bad(
            "backend",
            format!(
                "must be a backend name ([A-Za-z0-9_-]), got {:?}",
                clip(&backend)
            ),
        );
    }
    let convention = get("convention").unwrap_or("otel-spanmetrics").to_string();
    if !opts.conventions.iter().any(|c| c == &convention) {
        bad(
            "convention",
            format!(
                "unknown convention {:?} (known: {})",
                clip(&convention),
                opts.conventions.join(", ")
            ),
        );
    }
    let span_kind = get("spanKind")
        .map_or(Ok(SpanKind::Server), parse_span_kind)
        .map_err(|msg| bad("spanKind", msg))
        .ok();
    let quantile = get("quantile")
        .map_or(Ok(Quantile::P95), parse_quantile)
        .map_err(|msg| bad("quantile", msg))
        .ok();
    let min_count = match get("minCount") {
        None => Some(DEFAULT_MIN_COUNT),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                bad(
                    "minCount",
                    format!(
                        "must be a whole number of spans, at least 1, got {:?}",
                        clip(s)
                    ),
                );
                None
            }
        },
    };
    let labels = match get("labels") {
        None => Some(Vec::new()),
        Some(raw) => match parse_labels(raw) {
            Err(msg) => {
                bad("labels", msg);
                None
            }
            Ok(labels) => {
                let mut ok = true;
                match source {
                    Some(SourceKind::Otlp) => {
                        bad(
                            "labels",
                            "the embedded store (source otlp) selects by service, span kind \
                             and version only; labels need source prometheus or tempo"
                                .into(),
                        );
                        ok = false;
                    }
                    // Tempo's attribute names are checked where the query is built
                    // (signal::traceql::attribute), as for triggers.
                    Some(SourceKind::Prometheus) => {
                        for (k, _) in labels.iter().filter(|(k, _)| !is_label_name(k)) {
                            bad(
                                "labels",
                                format!(
                                    "{:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                                    clip(k)
                                ),
                            );
                            ok = false;
                        }
                    }
                    _ => {}
                }
                ok.then_some(labels)
            }
        },
    };
    match (
        service, canary, baseline, window, source, span_kind, quantile, min_count, labels,
    ) {
        (
            Some(service),
            Some(canary),
            Some(baseline),
            Some(window),
            Some(source),
            Some(span_kind),
            Some(quantile),
            Some(min_count),
            Some(labels),
        ) if problems.is_empty() => Ok(Params {
            service,
            canary,
            baseline,
            window,
            source,
            backend,
            convention,
            span_kind,
            quantile,
            min_count,
            labels,
        }),
        _ => Err(ParamError { problems }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParamOptions {
        ParamOptions {
            default_source: SourceKind::Otlp,
            conventions: crate::signal::promql::builtin_conventions()
                .into_keys()
                .collect(),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: [(&str, &str); 3] = [
        ("service", "payment-service"),
        ("canary", "v2"),
        ("baseline", "v1"),
    ];

    /// Parses `extra` on top of the three required parameters (`None` drops them) and
    /// expects exactly the problems on `want` (empty: success).
    fn check(base: bool, extra: &[(&str, &str)], want: &[&str]) -> Option<Params> {
        let mut p: Vec<(&str, &str)> = if base { BASE.to_vec() } else { Vec::new() };
        p.extend_from_slice(extra);
        match parse(&pairs(&p), &opts()) {
            Ok(params) => {
                assert!(want.is_empty(), "{p:?} should fail on {want:?}");
                Some(params)
            }
            Err(e) => {
                let mut got: Vec<&str> = e.problems.iter().map(|p| p.param.as_str()).collect();
                got.sort();
                let mut w = want.to_vec();
                w.sort();
                assert_eq!(got, w, "{p:?}: {e}");
                assert!(e.to_string().contains(want[0]), "{e}");
                None
            }
        }
    }

    #[test]
    fn defaults_follow_the_product_spec() {
        let p = check(true, &[], &[]).expect("valid");
        assert_eq!(p.window, Duration::from_secs(120));
        assert_eq!(p.quantile, Quantile::P95);
        assert_eq!(p.min_count, 50);
        assert_eq!(p.source, SourceKind::Otlp);
        assert_eq!(p.backend, "default");
        assert_eq!(p.convention, "otel-spanmetrics");
        assert_eq!(p.span_kind, SpanKind::Server);
        let p = check(
            true,
            &[
                ("window", "5m"),
                ("quantile", "p99"),
                ("minCount", "10"),
                ("source", "tempo"),
                ("backend", "prod_2"),
                ("spanKind", "client"),
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(p.window, Duration::from_secs(300));
        assert_eq!(p.quantile.get(), 0.99);
        assert_eq!(p.min_count, 10);
        assert_eq!(p.source, SourceKind::Tempo);
        assert_eq!(p.span_kind, SpanKind::Client);
    }

    /// `labels` narrows both sides like the trigger key of the same name (say Istio's
    /// `destination_service_namespace`), with the same syntax and name rules.
    #[test]
    fn labels_narrow_both_sides_as_in_triggers() {
        let p = check(
            true,
            &[
                ("source", "prometheus"),
                ("labels", r"destination_service_namespace=shop,route=/a\,b"),
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(
            p.labels,
            vec![
                (
                    "destination_service_namespace".to_string(),
                    "shop".to_string()
                ),
                ("route".to_string(), "/a,b".to_string()),
            ]
        );
        assert!(check(true, &[], &[]).expect("valid").labels.is_empty());
        let tempo = check(
            true,
            &[("source", "tempo"), ("labels", "http.route=/pay")],
            &[],
        )
        .expect("valid");
        assert_eq!(tempo.labels, vec![("http.route".into(), "/pay".into())]);
        for bad in [
            [("source", "prometheus"), ("labels", "a} or vector(1) #=x")],
            [("source", "prometheus"), ("labels", "__name__=up")],
            [("source", "prometheus"), ("labels", "namespace")],
            // The embedded store keeps no attributes beyond service, kind and version.
            [("source", "otlp"), ("labels", "namespace=shop")],
        ] {
            check(true, &bad, &["labels"]);
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        type Case<'a> = (bool, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (false, &[], &["service", "canary", "baseline"]),
            (false, &[("service", "a"), ("canary", "v2")], &["baseline"]),
            (true, &[("window", "soon")], &["window"]),
            (true, &[("window", "0s")], &["window"]),
            (true, &[("window", "30d")], &["window"]),
            (true, &[("window", "30s"), ("source", "tempo")], &["window"]),
            (true, &[("source", "sqs")], &["source"]),
            (true, &[("source", "jaeger")], &["source"]),
            (true, &[("backend", "http://evil.example/")], &["backend"]),
            (true, &[("convention", "datadog")], &["convention"]),
            (true, &[("spanKind", "serverside")], &["spanKind"]),
            (true, &[("quantile", "95")], &["quantile"]),
            (true, &[("minCount", "0")], &["minCount"]),
            (true, &[("minCount", "-3")], &["minCount"]),
            (true, &[("minCount", "1.5")], &["minCount"]),
            (true, &[("canary", "v3")], &["canary"]),
            (true, &[("versoin", "v3")], &["versoin"]),
            (
                true,
                &[("quantile", "2"), ("minCount", "x"), ("window", "-1m")],
                &["quantile", "minCount", "window"],
            ),
        ];
        for (base, extra, want) in cases {
            check(*base, extra, want);
        }
        // An oversized value is refused once, for its size.
        let p = pairs(&[("service", &long), ("canary", "v2"), ("baseline", "v1")]);
        let e = parse(&p, &opts()).expect_err("too long");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(e.problems[0].message.contains("longer than"), "{e}");
        // Too many parameters are not read at all.
        let many: Vec<(String, String)> = (0..=MAX_PARAMS)
            .map(|i| (format!("p{i}"), "x".to_string()))
            .collect();
        let e = parse(&many, &opts()).expect_err("too many");
        assert_eq!(e.problems.len(), 1, "{e}");
    }
}
