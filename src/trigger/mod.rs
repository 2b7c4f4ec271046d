//! Trigger metadata (a ScaledObject's `triggers[].metadata`) → a typed [`Trigger`].
//!
//! Parsing is pure and total: every key is read, every problem is collected, and the
//! caller gets either a complete `Trigger` or the full list of problems, each naming
//! its key. Unknown keys are problems too: a typo must not silently change scaling.

mod keys;
mod parse;
mod sources;
mod values;

use std::fmt;
use std::time::Duration;

use crate::signal::{promql, TraceMeasure, TraceSelector};

pub use keys::{known_keys, MAX_KEYS, MAX_QUERY_BYTES, MAX_VALUE_BYTES};
pub use parse::{derive_metric_name, parse};
pub use values::{
    is_aws_region, is_backend_name, is_dns1123_label, is_dns1123_subdomain, parse_bool,
    parse_duration, parse_labels, parse_quantile, parse_span_kind, parse_window,
};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    pub fn parse(s: &str) -> Option<SourceKind> {
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
    /// The larger of latency ÷ its objective and error rate ÷ its objective.
    Slo,
    /// Requests in flight by Little's law.
    Concurrency,
    /// The recommended policy: the pods the latency objective needs
    /// ([`crate::signal::capacity`]).
    SloCapacity,
}

impl SignalKind {
    const ALL: [SignalKind; 8] = [
        SignalKind::Latency,
        SignalKind::ErrorRate,
        SignalKind::Rps,
        SignalKind::QueueDepth,
        SignalKind::Query,
        SignalKind::Slo,
        SignalKind::Concurrency,
        SignalKind::SloCapacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Latency => "latency",
            SignalKind::ErrorRate => "errorRate",
            SignalKind::Rps => "rps",
            SignalKind::QueueDepth => "queueDepth",
            SignalKind::Query => "query",
            SignalKind::Slo => "slo",
            SignalKind::Concurrency => "concurrency",
            SignalKind::SloCapacity => "sloCapacity",
        }
    }

    /// Whether no data (no spans, no series, NaN) may read as 0 for this signal: the one
    /// rule behind `ignoreNullValues`. Where 0 is a real reading of "nothing is happening"
    /// (a rate, a queue, a raw query, as KEDA's own scalers read them) it may, and does by
    /// default (KEDA's `ignoreNullValues: true`). Where 0 reads as "all is well" (a
    /// latency, an error rate, an SLO ratio) it may not: a typo in `service` or an empty
    /// pipeline would read as the best value there is and scale the workload in, to zero
    /// with `minReplicaCount: 0`. There no data is an error, KEDA's fallback takes over,
    /// and `ignoreNullValues: "true"` is refused. A new signal must say which it is: the
    /// match has no catch-all.
    pub fn no_data_is_zero(self) -> bool {
        match self {
            // 0 in flight is a reading, as 0 rps is.
            SignalKind::Rps
            | SignalKind::Concurrency
            | SignalKind::QueueDepth
            | SignalKind::Query => true,
            // sloCapacity: with no spans there is no fleet to size.
            SignalKind::Latency
            | SignalKind::ErrorRate
            | SignalKind::Slo
            | SignalKind::SloCapacity => false,
        }
    }

    /// The HPA metric type this signal is meant for (docs/triggers.md, "Which `metricType`, and why").
    pub fn metric_type(self) -> crate::signal::MetricType {
        use crate::signal::MetricType;
        match self {
            SignalKind::Latency | SignalKind::ErrorRate | SignalKind::Slo => MetricType::Value,
            SignalKind::Rps
            | SignalKind::QueueDepth
            | SignalKind::Query
            | SignalKind::Concurrency
            | SignalKind::SloCapacity => MetricType::AverageValue,
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trace-derived measure: whose spans, which number, over which window.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRead {
    pub selector: TraceSelector,
    pub measure: TraceMeasure,
    pub window: Duration,
}

/// What a Prometheus trigger asks.
#[derive(Debug, Clone, PartialEq)]
pub enum PromSpec {
    /// A trace measure in one of the naming conventions.
    Trace {
        trace: TraceRead,
        convention: String,
    },
    /// A raw PromQL query (`signal: query`).
    Raw(String),
}

/// What a Tempo trigger asks.
#[derive(Debug, Clone, PartialEq)]
pub enum TempoSpec {
    /// A trace measure, as a TraceQL metrics query.
    Trace(TraceRead),
    /// A raw TraceQL metrics query (`signal: query`) over `window` (Tempo's `since`).
    Raw { query: String, window: Duration },
}

/// What a trigger reads, typed by source: a key a source does not use has no field here,
/// so the parser refuses it by name.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// The embedded trace store.
    Otlp(TraceRead),
    Prometheus {
        backend: String,
        /// `X-Scope-OrgID` (Mimir, Cortex, Thanos receive); `None` uses the backend's
        /// default tenant.
        tenant: Option<String>,
        spec: PromSpec,
    },
    Tempo {
        backend: String,
        /// `X-Scope-OrgID`; `None` uses the backend's default tenant.
        tenant: Option<String>,
        spec: TempoSpec,
    },
    /// An SQS queue's backlog, as KEDA's `aws-sqs-queue`.
    Sqs(QueueSpec),
}

impl Read {
    pub fn source(&self) -> SourceKind {
        match self {
            Read::Otlp(_) => SourceKind::Otlp,
            Read::Prometheus { .. } => SourceKind::Prometheus,
            Read::Tempo { .. } => SourceKind::Tempo,
            Read::Sqs(_) => SourceKind::Sqs,
        }
    }
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

/// The objectives of `signal: slo`; at least one is set, each above zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objectives {
    /// Seconds, at the trigger's `quantile`.
    pub latency: Option<f64>,
    /// A ratio, 0..=1.
    pub error_rate: Option<f64>,
}

/// A parsed, valid trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub kind: SignalKind,
    pub read: Read,
    /// The HPA target, in the signal's unit (seconds for latency, a ratio for errors).
    pub target: f64,
    /// Active when the value is strictly above this.
    pub activation: f64,
    /// The metric name reported to KEDA: lowercase `[a-z0-9-]`, at most 63 characters.
    /// Shared, so an answer carries it without a copy.
    pub metric_name: std::sync::Arc<str>,
    /// No data → 0 when true, an error when false (KEDA's meaning). Never true where
    /// [`SignalKind::no_data_is_zero`] is false. An SQS answer always has counts, so the
    /// key is refused there and this stays at its default.
    pub ignore_null_values: bool,
    /// Per-trigger cache TTL; `None` uses the server's (the key is refused for otlp, whose
    /// reads are cached one bucket at most).
    pub cache_ttl: Option<Duration>,
    /// `signal: slo`'s objectives; `None` for every other signal. The read's measure is
    /// then the latency at `quantile`; the error ratio is read from the same selector.
    pub objectives: Option<Objectives>,
}

impl Trigger {
    pub fn source(&self) -> SourceKind {
        self.read.source()
    }
}

/// What the server lets metadata do, and its defaults.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub default_source: SourceKind,
    pub min_cache_ttl: Duration,
    pub max_cache_ttl: Duration,
    /// `awsEndpoint` values metadata may name (empty: only the operator sets endpoints).
    pub metadata_aws_endpoints: Vec<String>,
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
            max_cache_ttl: Duration::from_secs(60),
            metadata_aws_endpoints: Vec::new(),
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

/// Default windows, by source (docs/trigger-metadata.md).
pub fn default_window(source: SourceKind) -> Duration {
    match source {
        SourceKind::Otlp => Duration::from_secs(60),
        SourceKind::Prometheus | SourceKind::Tempo => Duration::from_secs(300),
        SourceKind::Sqs => Duration::ZERO,
    }
}

const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Tempo 3.0 leaves out the newest 30 s of every query (`query_end_cutoff`) and refuses a
/// query whose whole window lies inside it: a Tempo window must be longer, and a minute
/// keeps at least 30 s of data.
pub const TEMPO_MIN_WINDOW: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests;
