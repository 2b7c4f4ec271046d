//! Metadata → [`Trigger`]: every key read, every problem collected (see the module
//! above), then the signal's and the source's keys assembled into its [`Read`].

use std::collections::HashMap;
use std::time::Duration;

use super::keys::Reader;
use super::{
    clip, parse_bool, parse_duration, sources, values, Objectives, ParseOptions, Problem, PromSpec,
    Read, SignalKind, SourceKind, TempoSpec, TraceRead, Trigger, TriggerError,
};
use crate::signal::{SpanKind, TraceMeasure};

/// KEDA keeps milli precision: a target below 0.0005 becomes 0, which Kubernetes rejects.
const MIN_TARGET: f64 = 0.001;

/// Parses one trigger's metadata, reporting every problem at once.
pub fn parse(md: &HashMap<String, String>, opts: &ParseOptions) -> Result<Trigger, TriggerError> {
    let mut r = Reader::new(md);
    if !r.check_sizes() {
        return Err(TriggerError {
            problems: r.problems,
        });
    }
    let kind = parse_kind(&mut r);
    let source = parse_source(&mut r, kind, opts);
    let (target, activation) = parse_thresholds(&mut r, kind);
    let metric_name_override = r.get("metricName").and_then(|n| {
        if values::is_metric_name(n) {
            Some(n.to_string())
        } else {
            r.problem(
                "metricName",
                format!("must be lowercase [a-z0-9-], start with a letter, at most 63 characters, got {:?}", clip(n)),
            );
            None
        }
    });
    let ignore_null_values = parse_ignore_null_values(&mut r, kind);
    let cache_ttl = parse_cache_ttl(&mut r, opts);
    let objectives = parse_objectives(&mut r, kind);
    // Every value is read and checked whatever the signal, so that one bad key does not
    // hide another; which keys the signal and source use is checked after.
    let mut fields = sources::Fields::read(&mut r, kind, source, opts);
    fields.capacity = parse_capacity(&mut r, kind, fields.quantile);
    r.check_keys(kind.zip(source));
    let read = match (kind, source) {
        (Some(kind), Some(source)) => sources::assemble(&mut r, kind, source, fields),
        _ => None,
    };
    if !r.problems.is_empty() {
        return Err(TriggerError {
            problems: r.problems,
        });
    }
    // Every `None` above recorded a problem, so these are all present here.
    let (Some(kind), Some(read), Some(target), Some(activation)) = (kind, read, target, activation)
    else {
        return Err(TriggerError {
            problems: vec![Problem {
                key: "signal".into(),
                message: "incomplete trigger".into(),
            }],
        });
    };
    let metric_name = metric_name_override.unwrap_or_else(|| derive_metric_name(kind, &read));
    Ok(Trigger {
        kind,
        read,
        target,
        activation,
        metric_name: metric_name.into(),
        ignore_null_values,
        cache_ttl,
        objectives,
    })
}

/// `ignoreNullValues`: by default whether the signal reads no data as 0
/// ([`SignalKind::no_data_is_zero`]); asking for 0 where 0 reads as "all is well" is refused,
/// so that no spelling makes a typo or an empty pipeline scale a workload in.
fn parse_ignore_null_values(r: &mut Reader<'_>, kind: Option<SignalKind>) -> bool {
    let zero_allowed = kind.is_none_or(SignalKind::no_data_is_zero);
    match r.parse("ignoreNullValues", "must be true or false", parse_bool) {
        Some(true) if !zero_allowed => {
            let kind = kind.map_or("", SignalKind::as_str);
            r.problem(
                "ignoreNullValues",
                format!(
                    "cannot be true for signal {kind}, where 0 reads as all is well: no data (a typo in service, an empty pipeline) would scale the workload in; remove the key, and no data is an error that KEDA's fallback handles"
                ),
            );
            false
        }
        Some(asked) => asked,
        None => zero_allowed,
    }
}

/// `latencyObjective` and `errorRateObjective`, read whatever the signal (the key table
/// refuses them outside `signal: slo`); for slo at least one is required.
fn parse_objectives(r: &mut Reader<'_>, kind: Option<SignalKind>) -> Option<Objectives> {
    let read = |r: &mut Reader<'_>, key: &str, unit: values::Unit| -> Option<f64> {
        let raw = r.get(key)?;
        match unit.parse(raw) {
            Some(v) if v > 0.0 => match unit.check_range(raw, v) {
                Some(msg) => {
                    r.problem(key, msg);
                    None
                }
                None if unit == values::Unit::Seconds && !values::OBJECTIVE_S.contains(&v) => {
                    r.problem(
                        key,
                        format!("must be a latency from 1us to 24h, got {:?}", clip(raw)),
                    );
                    None
                }
                None => Some(v),
            },
            Some(_) => {
                r.problem(key, format!("must be above zero, got {:?}", clip(raw)));
                None
            }
            None => {
                r.problem(key, format!("{}, got {:?}", unit.expected(), clip(raw)));
                None
            }
        }
    };
    let latency = read(r, "latencyObjective", values::Unit::Seconds);
    let error_rate = read(r, "errorRateObjective", values::Unit::Ratio);
    if kind != Some(SignalKind::Slo) {
        return None;
    }
    if latency.is_none() && error_rate.is_none() {
        if !r.has("latencyObjective") && !r.has("errorRateObjective") {
            r.problem(
                "latencyObjective",
                "signal slo needs latencyObjective and/or errorRateObjective",
            );
        }
        return None;
    }
    Some(Objectives {
        latency,
        error_rate,
    })
}

/// `signal: sloCapacity`'s `latencyObjective` and `podConcurrency`, both required.
fn parse_capacity(
    r: &mut Reader<'_>,
    kind: Option<SignalKind>,
    quantile: crate::signal::Quantile,
) -> Option<crate::signal::CapacityTarget> {
    if kind != Some(SignalKind::SloCapacity) {
        return None;
    }
    let objective = match r.get("latencyObjective") {
        None => {
            r.problem(
                "latencyObjective",
                "required for signal sloCapacity (e.g. 300ms)",
            );
            None
        }
        // parse_objectives has read it and named what is wrong with it.
        Some(raw) => values::Unit::Seconds
            .parse(raw)
            .filter(|v| values::OBJECTIVE_S.contains(v))
            .filter(|v| values::Unit::Seconds.check_range(raw, *v).is_none())
            .and_then(|v| Duration::try_from_secs_f64(v).ok()),
    };
    let pod_concurrency = match r.get("podConcurrency") {
        None => {
            r.problem(
                "podConcurrency",
                "required for signal sloCapacity: the requests one pod serves at once \
                 (its worker threads or connection-pool slots)",
            );
            None
        }
        Some(raw) => match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.001..=1_000_000.0).contains(&v) => Some(v),
            _ => {
                r.problem(
                    "podConcurrency",
                    format!(
                        "must be a number from 0.001 to 1000000, got {:?}",
                        clip(raw)
                    ),
                );
                None
            }
        },
    };
    Some(crate::signal::CapacityTarget {
        pod_concurrency: pod_concurrency?,
        objective: objective?,
        quantile,
    })
}

fn parse_kind(r: &mut Reader<'_>) -> Option<SignalKind> {
    let Some(s) = r.get("signal") else {
        r.problem(
            "signal",
            "required (latency, errorRate, rps, concurrency, queueDepth, query, slo or sloCapacity)",
        );
        return None;
    };
    let k = SignalKind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s));
    if k.is_none() {
        r.problem(
            "signal",
            format!(
                "must be latency, errorRate, rps, concurrency, queueDepth, query, slo or sloCapacity, got {:?}",
                clip(s)
            ),
        );
    }
    k
}

fn parse_source(
    r: &mut Reader<'_>,
    kind: Option<SignalKind>,
    opts: &ParseOptions,
) -> Option<SourceKind> {
    let source = match r.get("source") {
        Some(s) => {
            let k = SourceKind::parse(s);
            if k.is_none() {
                r.problem(
                    "source",
                    format!("must be otlp, prometheus, tempo or sqs, got {:?}", clip(s)),
                );
            }
            k
        }
        None => match kind {
            Some(SignalKind::QueueDepth) => Some(SourceKind::Sqs),
            // A raw query runs where the default source takes one; the embedded store does not.
            Some(SignalKind::Query)
                if !matches!(
                    opts.default_source,
                    SourceKind::Prometheus | SourceKind::Tempo
                ) =>
            {
                r.problem(
                    "source",
                    format!(
                        "required for signal query (prometheus or tempo): the server's default source is {}",
                        opts.default_source
                    ),
                );
                None
            }
            _ => Some(opts.default_source),
        },
    };
    if let (Some(kind), Some(source)) = (kind, source) {
        let ok = match kind {
            SignalKind::QueueDepth => source == SourceKind::Sqs,
            SignalKind::Query => matches!(source, SourceKind::Prometheus | SourceKind::Tempo),
            // Tempo sums durations, in seconds (`sum_over_time(span:duration)`:
            // `pkg/traceql/engine_metrics.go`, `NewOverTimeAggregator`), but over less than
            // the window asked: its query frontend pulls an instant query's end back by
            // `query_end_cutoff` and keeps the start (`modules/frontend/
            // metrics_query_handler.go`, `clampInstantQueryEnd`), so that sum ÷ the window
            // under-reads (by half for a 1m window). Refused until the divisor is Tempo's own.
            SignalKind::Concurrency => matches!(source, SourceKind::Otlp | SourceKind::Prometheus),
            // sloCapacity reads a thirty-minute history: the embedded store's, or
            // Prometheus' through subqueries (signal::promql::capacity). Tempo's is not
            // asked for.
            SignalKind::SloCapacity => matches!(source, SourceKind::Otlp | SourceKind::Prometheus),
            _ => source != SourceKind::Sqs,
        };
        if !ok {
            let why = match (source, kind) {
                (SourceKind::Tempo, SignalKind::Concurrency | SignalKind::SloCapacity) => {
                    " (Tempo sums durations over its window less query_end_cutoff, not over \
                     the window: use source otlp or prometheus)"
                }
                _ => "",
            };
            r.problem(
                "source",
                format!("source {source} cannot serve signal {kind}{why}"),
            );
            return None;
        }
    }
    source
}

/// The HPA target and the activation threshold, in the signal's unit. SQS triggers may
/// use KEDA's `queueLength` / `activationQueueLength` instead.
fn parse_thresholds(r: &mut Reader<'_>, kind: Option<SignalKind>) -> (Option<f64>, Option<f64>) {
    let queue = kind == Some(SignalKind::QueueDepth);
    let pick = |r: &mut Reader<'_>, ours: &'static str, keda: &'static str| {
        if queue && r.has(keda) {
            if r.has(ours) {
                r.problem(keda, format!("set both {ours} and {keda}; use one"));
            }
            keda
        } else {
            ours
        }
    };
    let threshold_key = pick(r, "threshold", "queueLength");
    let activation_key = pick(r, "activationThreshold", "activationQueueLength");
    // With no valid signal the unit is unknown: a value any unit reads is let through.
    let units: Vec<values::Unit> = match kind {
        Some(k) => vec![values::Unit::of(k)],
        None => values::Unit::ALL.to_vec(),
    };
    let read = |r: &mut Reader<'_>, key: &str, min: f64, what: &str| -> Option<Option<f64>> {
        let raw = r.get(key)?;
        // KEDA's aws-sqs-queue reads these as int64: "2.5" or "1e3" is refused, not read.
        if matches!(key, "queueLength" | "activationQueueLength") && !values::is_whole_number(raw) {
            r.problem(
                key,
                format!(
                    "must be a whole number of messages like 5 (KEDA reads {key} as an integer), got {:?}",
                    clip(raw)
                ),
            );
            return Some(None);
        }
        let parsed = units.iter().find_map(|u| u.parse(raw).map(|v| (*u, v)));
        Some(match parsed {
            Some((_, v)) if v >= min && !crate::signal::fits_keda(v) => {
                r.problem(
                    key,
                    format!(
                        "must be at most {} (KEDA sends it to Kubernetes as int64(value × 1000), which overflows), got {:?}",
                        crate::signal::KEDA_MAX,
                        clip(raw)
                    ),
                );
                None
            }
            Some((unit, v)) if v >= min => match unit.check_range(raw, v) {
                Some(msg) => {
                    r.problem(key, msg);
                    None
                }
                None => Some(v),
            },
            Some(_) => {
                r.problem(key, format!("{what}, got {:?}", clip(raw)));
                None
            }
            None => {
                r.problem(key, format!("{}, got {:?}", units[0].expected(), clip(raw)));
                None
            }
        })
    };
    let target = match read(
        r,
        threshold_key,
        MIN_TARGET,
        &format!("must be at least {MIN_TARGET} (Kubernetes rejects smaller targets)"),
    ) {
        Some(v) => v,
        None if queue => Some(5.0),
        // At objective.
        None if kind == Some(SignalKind::Slo) => Some(1.0),
        // One pod per pod the objective needs.
        None if kind == Some(SignalKind::SloCapacity) => Some(1.0),
        None if kind.is_some() => {
            r.problem(threshold_key, "required (the HPA target)");
            None
        }
        None => None,
    };
    let activation = read(r, activation_key, 0.0, "must be zero or more").unwrap_or(Some(0.0));
    (target, activation)
}

fn parse_cache_ttl(r: &mut Reader<'_>, opts: &ParseOptions) -> Option<Duration> {
    let raw = r.get("cacheTTL")?;
    match parse_duration(raw) {
        Some(d) if (opts.min_cache_ttl..=opts.max_cache_ttl).contains(&d) => Some(d),
        Some(_) => {
            r.problem(
                "cacheTTL",
                format!(
                    "must be between the server's limits {} and {}, got {:?}",
                    humantime::format_duration(opts.min_cache_ttl),
                    humantime::format_duration(opts.max_cache_ttl),
                    clip(raw)
                ),
            );
            None
        }
        None => {
            r.problem(
                "cacheTTL",
                format!(
                    "must be a duration like 500ms, 15s, 2m, got {:?}",
                    clip(raw)
                ),
            );
            None
        }
    }
}

/// The metric name KEDA will ask about, derived from what the trigger measures:
/// `latency-p95-order-service`, `errorrate-payment-service`, `rps-api-gateway`,
/// `queuedepth-notifications`, `query-<hash>`.
pub fn derive_metric_name(kind: SignalKind, read: &Read) -> String {
    let trace = |t: &TraceRead| {
        let mut s = match t.measure {
            _ if kind == SignalKind::Slo => format!("slo-{}", t.selector.service),
            TraceMeasure::Latency(q) => format!("latency-{}-{}", q.label(), t.selector.service),
            TraceMeasure::ErrorRatio => format!("errorrate-{}", t.selector.service),
            TraceMeasure::Rate => format!("rps-{}", t.selector.service),
            TraceMeasure::Concurrency => format!("concurrency-{}", t.selector.service),
            TraceMeasure::Capacity(_) => format!("slo-capacity-{}", t.selector.service),
        };
        if t.selector.span_kind != SpanKind::Server {
            s.push('-');
            s.push_str(t.selector.span_kind.as_str());
        }
        if let Some(v) = &t.selector.version {
            s.push('-');
            s.push_str(v);
        }
        s
    };
    let raw = |q: &str| format!("query-{:016x}", values::fnv1a(q.as_bytes()));
    let name = match read {
        Read::Otlp(t)
        | Read::Prometheus {
            spec: PromSpec::Trace { trace: t, .. },
            ..
        }
        | Read::Tempo {
            spec: TempoSpec::Trace(t),
            ..
        } => trace(t),
        Read::Prometheus {
            spec: PromSpec::Raw(q),
            ..
        }
        | Read::Tempo {
            spec: TempoSpec::Raw { query: q, .. },
            ..
        } => raw(q),
        Read::Sqs(q) => {
            let name = q.queue.rsplit('/').next().unwrap_or(&q.queue);
            format!("queuedepth-{name}")
        }
    };
    values::sanitize_metric_name(&name, kind.as_str())
}
