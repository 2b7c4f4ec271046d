//! Trigger metadata (a ScaledObject's `triggers[].metadata`) → a typed [`Trigger`].
//!
//! Parsing is pure and total: every key is read, every problem is collected, and the
//! caller gets either a complete `Trigger` or the full list of problems, each naming
//! its key. Unknown keys are problems too: a typo must not silently change scaling.

mod values;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::signal::{promql, Quantile, SpanKind, TraceMeasure, TraceSelector};

pub use values::{parse_bool, parse_duration};

/// At most this much of a caller's value is quoted back in a message.
const QUOTE_LIMIT: usize = 80;

/// `s` cut to a length fit for an error message (on a character boundary, marked `…`).
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= QUOTE_LIMIT {
        return s.into();
    }
    let mut end = QUOTE_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// Which backend a trigger reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SourceKind {
    /// The embedded trace store fed by the OTLP receiver.
    Otlp,
    Prometheus,
    Tempo,
    Sqs,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Otlp => "otlp",
            SourceKind::Prometheus => "prometheus",
            SourceKind::Tempo => "tempo",
            SourceKind::Sqs => "sqs",
        }
    }

    fn parse(s: &str) -> Option<SourceKind> {
        [
            SourceKind::Otlp,
            SourceKind::Prometheus,
            SourceKind::Tempo,
            SourceKind::Sqs,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `signal` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Latency,
    ErrorRate,
    Rps,
    QueueDepth,
    Query,
}

impl SignalKind {
    const ALL: [SignalKind; 5] = [
        SignalKind::Latency,
        SignalKind::ErrorRate,
        SignalKind::Rps,
        SignalKind::QueueDepth,
        SignalKind::Query,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Latency => "latency",
            SignalKind::ErrorRate => "errorRate",
            SignalKind::Rps => "rps",
            SignalKind::QueueDepth => "queueDepth",
            SignalKind::Query => "query",
        }
    }

    /// The HPA metric type this signal is meant for (see README).
    pub fn metric_type(self) -> crate::signal::MetricType {
        use crate::signal::MetricType;
        match self {
            SignalKind::Latency | SignalKind::ErrorRate => MetricType::Value,
            SignalKind::Rps | SignalKind::QueueDepth | SignalKind::Query => {
                MetricType::AverageValue
            }
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a trigger asks for, by source.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A trace-derived measure (latency / errorRate / rps).
    Trace {
        selector: TraceSelector,
        measure: TraceMeasure,
    },
    /// A raw PromQL or TraceQL metrics query (`signal: query`).
    Query(String),
    /// An SQS queue's backlog, as KEDA's `aws-sqs-queue`.
    QueueDepth(QueueSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// A queue URL or a bare queue name.
    pub queue: String,
    pub region: Option<String>,
    pub scale_on_in_flight: bool,
    pub scale_on_delayed: bool,
    pub role_arn: Option<String>,
    pub endpoint: Option<String>,
}

/// A parsed, valid trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub kind: SignalKind,
    pub source: SourceKind,
    pub signal: Signal,
    /// The HPA target, in the signal's unit (seconds for latency, a ratio for errors).
    pub target: f64,
    /// Active when the value is strictly above this.
    pub activation: f64,
    /// The metric name reported to KEDA: lowercase `[a-z0-9-]`, at most 63 characters.
    pub metric_name: String,
    /// Named Prometheus / Tempo backend (`default` unless set).
    pub backend: String,
    /// Prometheus naming convention.
    pub convention: String,
    /// Tempo tenant (`X-Scope-OrgID`).
    pub tenant: Option<String>,
    /// The rate / quantile window.
    pub window: Duration,
    /// No data → 0 when true, an error when false (KEDA's meaning).
    pub ignore_null_values: bool,
    /// Per-trigger cache TTL; `None` uses the server's.
    pub cache_ttl: Option<Duration>,
}

/// What the server lets metadata do, and its defaults.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub default_source: SourceKind,
    pub min_cache_ttl: Duration,
    pub max_cache_ttl: Duration,
    /// Allow `awsEndpoint` in metadata (otherwise only the operator sets endpoints).
    pub allow_metadata_aws_endpoint: bool,
    /// Allow `awsRoleArn` in metadata.
    pub allow_aws_role_arn: bool,
    /// Convention names known to the server.
    pub conventions: Vec<String>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            default_source: SourceKind::Otlp,
            min_cache_ttl: Duration::from_secs(1),
            max_cache_ttl: Duration::from_secs(300),
            allow_metadata_aws_endpoint: false,
            allow_aws_role_arn: false,
            conventions: promql::builtin_conventions().into_keys().collect(),
        }
    }
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every problem found in one trigger's metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TriggerError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for TriggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid trigger metadata: ")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl TriggerError {
    pub fn keys(&self) -> Vec<&str> {
        self.problems.iter().map(|p| p.key.as_str()).collect()
    }
}

/// Keys KEDA itself puts in the metadata of external triggers; accepted and ignored.
const KEDA_KEYS: &[&str] = &["scalerAddress", "enableTLS", "unsafeSsl"];

/// Every key this scaler understands.
const KNOWN_KEYS: &[&str] = &[
    "signal",
    "source",
    "threshold",
    "activationThreshold",
    "service",
    "spanKind",
    "quantile",
    "window",
    "convention",
    "labels",
    "backend",
    "query",
    "tenant",
    "version",
    "ignoreNullValues",
    "cacheTTL",
    "metricName",
    "queueURL",
    "queueLength",
    "activationQueueLength",
    "awsRegion",
    "awsRoleArn",
    "awsEndpoint",
    "scaleOnInFlight",
    "scaleOnDelayed",
];

/// Default windows, by source (documented in the README).
pub fn default_window(source: SourceKind) -> Duration {
    match source {
        SourceKind::Otlp => Duration::from_secs(60),
        SourceKind::Prometheus | SourceKind::Tempo => Duration::from_secs(300),
        SourceKind::Sqs => Duration::ZERO,
    }
}

const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// KEDA keeps milli precision: a target below 0.0005 becomes 0, which Kubernetes rejects.
const MIN_TARGET: f64 = 0.001;

/// Reads metadata keys, remembering which were used and what was wrong.
struct Reader<'a> {
    md: &'a HashMap<String, String>,
    used: Vec<&'a str>,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    /// The trimmed value of `key` (or of `keyFromEnv`, which KEDA fills from the
    /// target's environment); `None` when absent or empty.
    fn get(&mut self, key: &str) -> Option<&'a str> {
        let direct = self.md.get_key_value(key);
        let from_env = self.md.get_key_value(format!("{key}FromEnv").as_str());
        if let (Some(_), Some(_)) = (direct, from_env) {
            self.problem(key, format!("set both {key} and {key}FromEnv; use one"));
        }
        let (k, v) = direct.or(from_env)?;
        self.used.push(k.as_str());
        if let (Some((k2, _)), Some(_)) = (from_env, direct) {
            self.used.push(k2.as_str());
        }
        let v = v.trim();
        (!v.is_empty()).then_some(v)
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn require(&mut self, key: &str, why: &str) -> Option<&'a str> {
        let v = self.get(key);
        if v.is_none() {
            self.problem(key, format!("required {why}"));
        }
        v
    }

    /// Parses `key` with `parse`, recording `expected` on failure.
    fn parse<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = self.get(key)?;
        let parsed = parse(raw);
        if parsed.is_none() {
            self.problem(key, format!("{expected}, got {raw:?}"));
        }
        parsed
    }

    fn bool(&mut self, key: &str, default: bool) -> bool {
        self.parse(key, "must be true or false", parse_bool)
            .unwrap_or(default)
    }
}

/// Parses one trigger's metadata.
pub fn parse(md: &HashMap<String, String>, opts: &ParseOptions) -> Result<Trigger, TriggerError> {
    let mut r = Reader {
        md,
        used: Vec::with_capacity(md.len()),
        problems: Vec::new(),
    };
    let kind = r
        .require("signal", "(latency, errorRate, rps, queueDepth or query)")
        .and_then(|s| {
            let k = SignalKind::ALL
                .into_iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(s));
            if k.is_none() {
                r.problem(
                    "signal",
                    format!("must be latency, errorRate, rps, queueDepth or query, got {s:?}"),
                );
            }
            k
        });
    let source = match r.get("source") {
        Some(s) => match SourceKind::parse(s) {
            Some(k) => Some(k),
            None => {
                r.problem(
                    "source",
                    format!("must be otlp, prometheus, tempo or sqs, got {s:?}"),
                );
                None
            }
        },
        None => match kind {
            Some(SignalKind::QueueDepth) => Some(SourceKind::Sqs),
            Some(SignalKind::Query) => {
                r.problem("source", "required for signal query (prometheus or tempo)");
                None
            }
            _ => Some(opts.default_source),
        },
    };
    if let (Some(kind), Some(source)) = (kind, source) {
        let ok = match kind {
            SignalKind::QueueDepth => source == SourceKind::Sqs,
            SignalKind::Query => matches!(source, SourceKind::Prometheus | SourceKind::Tempo),
            _ => source != SourceKind::Sqs,
        };
        if !ok {
            r.problem(
                "source",
                format!("source {source} cannot serve signal {kind}"),
            );
        }
    }

    let threshold_key = if kind == Some(SignalKind::QueueDepth) && !md.contains_key("threshold") {
        "queueLength"
    } else {
        "threshold"
    };
    let activation_key =
        if kind == Some(SignalKind::QueueDepth) && !md.contains_key("activationThreshold") {
            "activationQueueLength"
        } else {
            "activationThreshold"
        };
    let unit = kind.map(values::Unit::of);
    let target = match (unit, r.get(threshold_key)) {
        (Some(unit), Some(raw)) => match unit.parse(raw) {
            Some(v) if v >= MIN_TARGET => unit.check_range(v).map_or(Some(v), |msg| {
                r.problem(threshold_key, msg);
                None
            }),
            Some(_) => {
                r.problem(
                    threshold_key,
                    format!("must be at least {MIN_TARGET} (Kubernetes rejects smaller targets), got {raw:?}"),
                );
                None
            }
            None => {
                r.problem(threshold_key, format!("{}, got {raw:?}", unit.expected()));
                None
            }
        },
        (Some(values::Unit::Count), None) if kind == Some(SignalKind::QueueDepth) => Some(5.0),
        (Some(_), None) => {
            r.problem(threshold_key, "required (the HPA target)");
            None
        }
        (None, _) => None,
    };
    let activation = match (unit, r.get(activation_key)) {
        (Some(unit), Some(raw)) => match unit.parse(raw) {
            Some(v) if v >= 0.0 => Some(v),
            _ => {
                r.problem(
                    activation_key,
                    format!("{} (zero or more), got {raw:?}", unit.expected()),
                );
                None
            }
        },
        _ => Some(0.0),
    };

    let backend = r.get("backend").unwrap_or("default").to_string();
    if !values::is_backend_name(&backend) {
        r.problem(
            "backend",
            format!("must be a backend name ([A-Za-z0-9_-]), got {backend:?}"),
        );
    }
    let convention = r
        .get("convention")
        .unwrap_or("otel-spanmetrics")
        .to_string();
    if !opts.conventions.iter().any(|c| c == &convention) {
        r.problem(
            "convention",
            format!(
                "unknown convention {convention:?} (known: {})",
                opts.conventions.join(", ")
            ),
        );
    }
    let tenant = r.get("tenant").map(str::to_string);
    let window = match r.get("window") {
        Some(raw) => match parse_duration(raw) {
            Some(d) if (MIN_WINDOW..=MAX_WINDOW).contains(&d) => Some(d),
            _ => {
                r.problem(
                    "window",
                    format!("must be a duration between 1s and 24h like 30s, 5m, got {raw:?}"),
                );
                None
            }
        },
        None => source.map(default_window),
    };
    let ignore_null_values = r.bool("ignoreNullValues", true);
    let cache_ttl = match r.get("cacheTTL") {
        Some(raw) => match parse_duration(raw) {
            Some(d) if (opts.min_cache_ttl..=opts.max_cache_ttl).contains(&d) => Some(d),
            Some(_) => {
                r.problem(
                    "cacheTTL",
                    format!(
                        "must be between the server's limits {} and {}, got {raw:?}",
                        humantime::format_duration(opts.min_cache_ttl),
                        humantime::format_duration(opts.max_cache_ttl)
                    ),
                );
                None
            }
            None => {
                r.problem(
                    "cacheTTL",
                    format!("must be a duration like 500ms, 15s, 2m, got {raw:?}"),
                );
                None
            }
        },
        None => None,
    };
    let metric_name_override = r.get("metricName").and_then(|n| {
        if values::is_metric_name(n) {
            Some(n.to_string())
        } else {
            r.problem(
                "metricName",
                format!("must be lowercase [a-z0-9-], start with a letter, at most 63 characters, got {n:?}"),
            );
            None
        }
    });

    let signal = match kind {
        Some(SignalKind::QueueDepth) => parse_queue(&mut r, opts).map(Signal::QueueDepth),
        Some(SignalKind::Query) => r
            .require("query", "for signal query")
            .map(|q| Signal::Query(q.to_string())),
        Some(k) => parse_trace(&mut r, k, source)
            .map(|(selector, measure)| Signal::Trace { selector, measure }),
        None => None,
    };

    // Keys that exist but were not read are a problem too: they do nothing for this
    // signal and source, and the user probably expects them to.
    let mut extra: Vec<&String> = md
        .keys()
        .filter(|k| {
            !r.used.contains(&k.as_str())
                && !KEDA_KEYS.contains(&k.as_str())
                && !md[*k].trim().is_empty()
        })
        .collect();
    extra.sort();
    for k in extra {
        let base = k.strip_suffix("FromEnv").unwrap_or(k);
        if KNOWN_KEYS.contains(&base) {
            // With no valid signal or source, which keys apply is unknown.
            if let (Some(kind), Some(source)) = (kind, source) {
                r.problem(k, format!("not used by signal {kind} with source {source}"));
            }
        } else {
            let msg = match values::closest(base, KNOWN_KEYS) {
                Some(s) => format!("unknown key (did you mean {s}?)"),
                None => "unknown key".to_string(),
            };
            r.problem(k, msg);
        }
    }

    if !r.problems.is_empty() {
        return Err(TriggerError {
            problems: r.problems,
        });
    }
    // Every `None` above recorded a problem, so these are all present here.
    let (Some(kind), Some(source), Some(signal), Some(target), Some(activation), Some(window)) =
        (kind, source, signal, target, activation, window)
    else {
        return Err(TriggerError {
            problems: vec![Problem {
                key: "signal".into(),
                message: "incomplete trigger".into(),
            }],
        });
    };
    let metric_name = metric_name_override.unwrap_or_else(|| derive_metric_name(kind, &signal));
    Ok(Trigger {
        kind,
        source,
        signal,
        target,
        activation,
        metric_name,
        backend,
        convention,
        tenant,
        window,
        ignore_null_values,
        cache_ttl,
    })
}

fn parse_trace(
    r: &mut Reader<'_>,
    kind: SignalKind,
    source: Option<SourceKind>,
) -> Option<(TraceSelector, TraceMeasure)> {
    let service = r.require("service", &format!("for signal {kind}"));
    let span_kind = r
        .parse(
            "spanKind",
            "must be server, client, consumer, producer or internal",
            SpanKind::parse,
        )
        .unwrap_or(SpanKind::Server);
    let version = r.get("version").map(str::to_string);
    let measure = match kind {
        SignalKind::Latency => TraceMeasure::Latency(
            r.parse(
                "quantile",
                "must be a quantile like 0.95 or p95",
                Quantile::parse,
            )
            .unwrap_or(Quantile::P95),
        ),
        SignalKind::ErrorRate => TraceMeasure::ErrorRatio,
        _ => TraceMeasure::Rate,
    };
    let labels = match r.get("labels") {
        Some(raw) => match values::parse_labels(raw) {
            Ok(l) => l,
            Err(msg) => {
                r.problem("labels", msg);
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    if source == Some(SourceKind::Otlp) && !labels.is_empty() {
        r.problem(
            "labels",
            "not supported by source otlp (the embedded store keys spans by service, span kind and version)",
        );
    }
    if source == Some(SourceKind::Prometheus) {
        for (k, _) in &labels {
            if !promql::is_label_name(k) {
                r.problem(
                    "labels",
                    format!("{k:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                );
            }
        }
    }
    Some((
        TraceSelector {
            service: service?.to_string(),
            span_kind,
            version,
            labels,
        },
        measure,
    ))
}

fn parse_queue(r: &mut Reader<'_>, opts: &ParseOptions) -> Option<QueueSpec> {
    let queue = r.require("queueURL", "for signal queueDepth (a queue URL or name)");
    if let Some(q) = queue {
        if !values::is_queue_ref(q) {
            r.problem(
                "queueURL",
                format!("must be an https queue URL or a queue name ([A-Za-z0-9_-], optional .fifo), got {q:?}"),
            );
        }
    }
    let region = r.get("awsRegion").map(str::to_string);
    if let Some(region) = &region {
        if !values::is_aws_region(region) {
            r.problem(
                "awsRegion",
                format!("must be an AWS region like eu-west-1, got {region:?}"),
            );
        }
    }
    let scale_on_in_flight = r.bool("scaleOnInFlight", true);
    let scale_on_delayed = r.bool("scaleOnDelayed", false);
    let role_arn = r.get("awsRoleArn").map(str::to_string);
    if let Some(arn) = &role_arn {
        if !opts.allow_aws_role_arn {
            r.problem(
                "awsRoleArn",
                "not allowed by the server (the operator enables it with --allow-aws-role-arn)",
            );
        } else if !arn.starts_with("arn:") {
            r.problem("awsRoleArn", format!("must be a role ARN, got {arn:?}"));
        }
    }
    let endpoint = r.get("awsEndpoint").map(str::to_string);
    if endpoint.is_some() && !opts.allow_metadata_aws_endpoint {
        r.problem(
            "awsEndpoint",
            "not allowed in metadata (the operator sets --aws-endpoint, or enables --allow-metadata-aws-endpoint)",
        );
    }
    Some(QueueSpec {
        queue: queue?.to_string(),
        region,
        scale_on_in_flight,
        scale_on_delayed,
        role_arn,
        endpoint,
    })
}

/// The metric name KEDA will ask about, derived from what the trigger measures:
/// `latency-p95-order-service`, `errorrate-payment-service`, `rps-api-gateway`,
/// `queuedepth-notifications`, `query-<hash>`.
pub fn derive_metric_name(kind: SignalKind, signal: &Signal) -> String {
    let raw = match signal {
        Signal::Trace { selector, measure } => {
            let mut s = match measure {
                TraceMeasure::Latency(q) => format!("latency-{}-{}", q.label(), selector.service),
                TraceMeasure::ErrorRatio => format!("errorrate-{}", selector.service),
                TraceMeasure::Rate => format!("rps-{}", selector.service),
            };
            if selector.span_kind != SpanKind::Server {
                s.push('-');
                s.push_str(selector.span_kind.as_str());
            }
            if let Some(v) = &selector.version {
                s.push('-');
                s.push_str(v);
            }
            s
        }
        Signal::QueueDepth(q) => {
            let name = q.queue.rsplit('/').next().unwrap_or(&q.queue);
            format!("queuedepth-{name}")
        }
        Signal::Query(q) => format!("query-{:016x}", values::fnv1a(q.as_bytes())),
    };
    values::sanitize_metric_name(&raw, kind.as_str())
}

#[cfg(test)]
mod tests;
