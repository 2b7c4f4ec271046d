//! What a signal means: trace selectors, measures, metric types and the HPA arithmetic.
//!
//! Everything here is pure: no I/O, no clocks. Query languages live in submodules
//! (`promql`, `traceql`); the sources in `crate::source` send what they build.

pub mod capacity;
pub mod hpa;
pub mod promql;
pub mod quote;
pub mod slo;
pub mod traceql;

use std::fmt;
use std::time::Duration;

/// 2^63: the first milli-value that does not fit an int64 (exact as an f64).
const INT64_LIMIT: f64 = 9_223_372_036_854_775_808.0;

/// The largest number KEDA can pass on, for messages (KEDA's `int64(v × 1000)` limit).
pub const KEDA_MAX: &str = "9.2e15";

/// Whether KEDA can carry `v`. KEDA turns every value and every target into a
/// milli-quantity with Go's `int64(v * 1000)` (kedacore/keda `pkg/scalers/scaler.go`:
/// `GenerateMetricInMili` for what `GetMetrics` answers, `GetMetricTargetMili` for the
/// targets of `GetMetricSpec`). Past about 9.22e15 the product does not fit: Go leaves the
/// conversion undefined, and on amd64 it is a negative quantity, which the HPA reads as
/// "scale in". NaN and ±Inf do not fit either.
pub fn fits_keda(v: f64) -> bool {
    (v * 1000.0).abs() < INT64_LIMIT
}

/// The OpenTelemetry span kind a trace signal is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub const ALL: [SpanKind; 5] = [
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    /// The lowercase name used in trigger metadata and TraceQL (`span:kind = server`).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    /// The value the spanmetrics connectors write in their `span_kind` label.
    pub fn otel_label(self) -> &'static str {
        match self {
            SpanKind::Internal => "SPAN_KIND_INTERNAL",
            SpanKind::Server => "SPAN_KIND_SERVER",
            SpanKind::Client => "SPAN_KIND_CLIENT",
            SpanKind::Producer => "SPAN_KIND_PRODUCER",
            SpanKind::Consumer => "SPAN_KIND_CONSUMER",
        }
    }

    /// The OTLP protobuf enum value (`opentelemetry.proto.trace.v1.Span.SpanKind`).
    pub fn from_otlp(kind: i32) -> Option<SpanKind> {
        match kind {
            1 => Some(SpanKind::Internal),
            2 => Some(SpanKind::Server),
            3 => Some(SpanKind::Client),
            4 => Some(SpanKind::Producer),
            5 => Some(SpanKind::Consumer),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<SpanKind> {
        let s = s.trim();
        let s = s
            .strip_prefix("SPAN_KIND_")
            .or_else(|| s.strip_prefix("span_kind_"))
            .unwrap_or(s);
        SpanKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quantile strictly between 0 and 1, e.g. 0.95 for p95.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile(f64);

impl Quantile {
    pub const P95: Quantile = Quantile(0.95);

    /// Accepts `0.95`, `p95`, `P99`, `p99.9`, `95` is refused (ambiguous).
    pub fn parse(s: &str) -> Option<Quantile> {
        let s = s.trim();
        let q = if let Some(p) = s.strip_prefix(['p', 'P']) {
            let v: f64 = p.parse().ok()?;
            if !p.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return None;
            }
            // Round away the binary noise of the division (p99.9 is 0.999, not 0.99900…01).
            (v / 100.0 * 1e12).round() / 1e12
        } else {
            s.parse().ok()?
        };
        Quantile::new(q)
    }

    pub fn new(q: f64) -> Option<Quantile> {
        (q.is_finite() && q > 0.0 && q < 1.0).then_some(Quantile(q))
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// `p95`, `p99`, `p999` — used in derived metric names.
    pub fn label(self) -> String {
        let mut digits = format!("{}", (self.0 * 100.0 * 1e9).round() / 1e9);
        if let Some(stripped) = digits.strip_suffix(".0") {
            digits = stripped.to_string();
        }
        format!("p{}", digits.replace('.', ""))
    }
}

impl Eq for Quantile {}

impl std::hash::Hash for Quantile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Which spans a trace signal looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceSelector {
    /// `service.name` of the spans' resource.
    pub service: String,
    pub span_kind: SpanKind,
    /// `service.version`, to tell a canary from stable. `None` means every version.
    pub version: Option<String>,
    /// Extra exact-match filters (label / attribute name, value), sorted by name.
    pub labels: Vec<(String, String)>,
}

/// What is computed over the selected spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceMeasure {
    /// The latency quantile, in seconds.
    Latency(Quantile),
    /// Errors / all spans, 0..=1.
    ErrorRatio,
    /// Spans per second.
    Rate,
    /// Requests in flight by Little's law: Σ span durations ÷ the time covered.
    Concurrency,
    /// The recommended policy's value: the pods the latency objective needs
    /// ([`capacity::pods_needed`]).
    Capacity(CapacityTarget),
}

/// What a `signal: sloCapacity` trigger sets: the requests one pod serves at once, the
/// latency objective and its quantile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityTarget {
    pub pod_concurrency: f64,
    pub objective: Duration,
    pub quantile: Quantile,
}

impl CapacityTarget {
    pub fn target(self) -> capacity::Target {
        capacity::Target {
            pod_concurrency: self.pod_concurrency,
            objective_s: self.objective.as_secs_f64(),
        }
    }
}

impl Eq for CapacityTarget {}

impl std::hash::Hash for CapacityTarget {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pod_concurrency.to_bits().hash(state);
        self.objective.hash(state);
        self.quantile.hash(state);
    }
}

/// The HPA metric type a signal is meant for (the trigger's `metricType`).
///
/// KEDA does not send `metricType` to external scalers, so this is what each signal
/// is documented to use, and what `check` and `demo` assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// desired = ceil(value / target): extensive signals (RPS, queue depth).
    AverageValue,
    /// desired = ceil(current × value / target): intensive signals (latency, error rate).
    Value,
}

impl MetricType {
    pub fn parse(s: &str) -> Option<MetricType> {
        match s {
            "AverageValue" | "averagevalue" | "average-value" => Some(MetricType::AverageValue),
            "Value" | "value" => Some(MetricType::Value),
            _ => None,
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricType::AverageValue => "AverageValue",
            MetricType::Value => "Value",
        })
    }
}

/// Formats a duration the way PromQL and TraceQL accept it (`90s`, `5m`, `1500ms`).
pub fn format_window(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let check = |input: &str, expect: Option<f64>| {
            assert_eq!(Quantile::parse(input).map(Quantile::get), expect, "{input}");
        };
        check("0.95", Some(0.95));
        check("p95", Some(0.95));
        check("P99", Some(0.99));
        check("p99.9", Some(0.999));
        check("p50", Some(0.5));
        check("1", None);
        check("0", None);
        check("p100", None);
        check("p-5", None);
        check("NaN", None);
        check("", None);
        check("p", None);
    }

    #[test]
    fn quantile_labels() {
        assert_eq!(Quantile::P95.label(), "p95");
        assert_eq!(Quantile::parse("0.999").unwrap().label(), "p999");
        assert_eq!(Quantile::parse("0.5").unwrap().label(), "p50");
    }

    #[test]
    fn span_kinds() {
        assert_eq!(SpanKind::parse("server"), Some(SpanKind::Server));
        assert_eq!(
            SpanKind::parse("SPAN_KIND_CONSUMER"),
            Some(SpanKind::Consumer)
        );
        assert_eq!(SpanKind::parse("Client"), Some(SpanKind::Client));
        assert_eq!(SpanKind::parse("srv"), None);
        assert_eq!(SpanKind::from_otlp(2), Some(SpanKind::Server));
        assert_eq!(SpanKind::from_otlp(0), None);
    }

    #[test]
    fn windows() {
        assert_eq!(format_window(Duration::from_secs(300)), "5m");
        assert_eq!(format_window(Duration::from_secs(90)), "90s");
        assert_eq!(format_window(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_window(Duration::from_secs(7200)), "2h");
    }
}
