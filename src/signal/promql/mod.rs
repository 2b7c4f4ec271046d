//! PromQL for trace-derived signals: the naming conventions as data, string escaping,
//! and the canonical query shapes.
//!
//! Every value that comes from trigger metadata enters a query only through
//! [`go_string`] (values) or [`is_label_name`]-checked label names, so metadata can
//! never change a query's structure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use super::quote::go_string;
use super::{format_window, Quantile, SpanKind, TraceMeasure, TraceSelector};

/// One label matcher of a convention: how errors are recognised in its call counter, or a
/// fixed matcher every query of the convention carries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelMatcher {
    pub label: String,
    /// The value, or an RE2 regex when `regex` is true (fully anchored, as in PromQL).
    pub value: String,
    #[serde(default)]
    pub regex: bool,
}

/// One naming convention for trace- or request-derived metrics in Prometheus.
///
/// Built-in conventions are listed in [`builtin_conventions`]; operators add or
/// override them with a JSON file (`--conventions-file`) of the same shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Convention {
    /// The latency histogram: the `_bucket` series of a classic histogram, or the
    /// metric name of a native histogram (with `native_histogram: true`).
    pub histogram: String,
    #[serde(default)]
    pub native_histogram: bool,
    /// Histogram units per second (1000 for milliseconds); latency is always reported
    /// in seconds.
    #[serde(default = "one")]
    pub units_per_second: f64,
    /// A counter of calls (spans or requests).
    pub calls: String,
    /// The label holding the service name.
    pub service_label: String,
    /// The label holding the span kind (`SPAN_KIND_SERVER`…); `None` when the metrics
    /// only describe server requests.
    #[serde(default)]
    pub span_kind_label: Option<String>,
    /// The label holding `service.version`, when the pipeline keeps it.
    #[serde(default)]
    pub version_label: Option<String>,
    /// Matchers every query of the convention carries, after the service's: the series
    /// that describe a server's own requests where the same metric also counts others
    /// (Istio's `reporter="destination"`, Linkerd's `direction="inbound"`).
    #[serde(default)]
    pub matchers: Vec<LabelMatcher>,
    pub error: LabelMatcher,
}

impl LabelMatcher {
    /// The PromQL operator: `=~` for a regex, else `=`.
    fn op(&self) -> &'static str {
        if self.regex {
            "=~"
        } else {
            "="
        }
    }
}

fn one() -> f64 {
    1.0
}

/// The label `service.version` becomes in Prometheus when an OpenTelemetry pipeline keeps
/// it: attribute names are sanitised to label names by replacing every character outside
/// `[a-zA-Z0-9_]` with `_`, in every pipeline the built-in conventions describe.
///
/// - otel-spanmetrics: the Collector's spanmetrics connector adds a `dimensions` entry
///   from the span's attributes, else the resource's
///   (open-telemetry/opentelemetry-collector-contrib
///   `connector/spanmetricsconnector/connector.go`, `getDimensionValue`); the
///   Collector's Prometheus exporters turn `service.version` into `service_version`
///   (`exporter/prometheusexporter/README.md`, "Metric names and labels normalization").
/// - tempo-spanmetrics: Tempo's metrics-generator looks a `dimensions` entry up in the
///   resource and span attributes and names the label with Prometheus'
///   `strutil.SanitizeLabelName` (grafana/tempo
///   `modules/generator/processor/spanmetrics/spanmetrics.go`,
///   `modules/generator/validation/sanitize.go`).
/// - otel-http: the SDK's HTTP server metrics carry `service.version` as a resource
///   attribute, a label once the exporter copies resource attributes onto metrics
///   (`resource_constant_labels` / `resource_to_telemetry_conversion`).
///
/// When the pipeline drops it, a query naming a version selects nothing: no data.
pub const OTEL_VERSION_LABEL: &str = "service_version";

/// The built-in conventions (docs/prometheus-conventions.md), by name.
///
/// prometheus-http (client libraries' `http_request_duration_seconds`) has no version
/// label: nothing there carries `service.version`; a conventions file names the label a
/// deployment adds (for example from the pod's `app.kubernetes.io/version`). The service
/// meshes' metrics, `istio` and `linkerd`, are described at `istio()` and `linkerd()`.
pub fn builtin_conventions() -> BTreeMap<String, Convention> {
    let spanmetrics = |histogram: &str, unit: f64, calls: &str, service: &str| Convention {
        histogram: histogram.into(),
        native_histogram: false,
        units_per_second: unit,
        calls: calls.into(),
        service_label: service.into(),
        span_kind_label: Some("span_kind".into()),
        version_label: Some(OTEL_VERSION_LABEL.into()),
        matchers: Vec::new(),
        error: LabelMatcher {
            label: "status_code".into(),
            value: "STATUS_CODE_ERROR".into(),
            regex: false,
        },
    };
    let http =
        |histogram: &str, calls: &str, status_label: &str, version: Option<&str>| Convention {
            histogram: histogram.into(),
            native_histogram: false,
            units_per_second: 1.0,
            calls: calls.into(),
            service_label: "job".into(),
            span_kind_label: None,
            version_label: version.map(str::to_string),
            matchers: Vec::new(),
            error: LabelMatcher {
                label: status_label.into(),
                value: "5..".into(),
                regex: true,
            },
        };
    BTreeMap::from([
        (
            "otel-spanmetrics".to_string(),
            spanmetrics(
                "traces_span_metrics_duration_milliseconds_bucket",
                1000.0,
                "traces_span_metrics_calls_total",
                "service_name",
            ),
        ),
        (
            // The connector with `histogram: {exponential: {}}`: its `prometheus` exporter
            // serves the exponential histogram as a native histogram of the bucket series'
            // name without `_bucket` (open-telemetry/opentelemetry-collector-contrib
            // `exporter/prometheusexporter/collector.go`, `convertExponentialHistogram`),
            // which Prometheus keeps when it scrapes native histograms.
            "otel-spanmetrics-native".to_string(),
            Convention {
                native_histogram: true,
                ..spanmetrics(
                    "traces_span_metrics_duration_milliseconds",
                    1000.0,
                    "traces_span_metrics_calls_total",
                    "service_name",
                )
            },
        ),
        (
            "tempo-spanmetrics".to_string(),
            spanmetrics(
                "traces_spanmetrics_latency_bucket",
                1.0,
                "traces_spanmetrics_calls_total",
                "service",
            ),
        ),
        (
            "otel-http".to_string(),
            http(
                "http_server_request_duration_seconds_bucket",
                "http_server_request_duration_seconds_count",
                "http_response_status_code",
                Some(OTEL_VERSION_LABEL),
            ),
        ),
        (
            "prometheus-http".to_string(),
            http(
                "http_request_duration_seconds_bucket",
                "http_request_duration_seconds_count",
                "code",
                None,
            ),
        ),
        ("istio".to_string(), istio()),
        ("linkerd".to_string(), linkerd()),
    ])
}

fn exact(label: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        label: label.into(),
        value: value.into(),
        regex: false,
    }
}

/// Istio's standard metrics as the sidecar's stats filter writes them (istio/proxy
/// `source/extensions/filters/http/istio_stats/istio_stats.cc`; istio.io, "Istio Standard
/// Metrics"): `istio_requests_total` counts every request and
/// `istio_request_duration_milliseconds` times it, in milliseconds, both labelled
/// `response_code` (the HTTP status). Each request is reported twice, by the client's proxy
/// (`reporter="source"`) and by the server's (`reporter="destination"`); the server's own
/// view is the destination's. Its labels come from the server pod itself:
/// `destination_service_name` (the Service's name), `destination_service_namespace` (the
/// pod's namespace; select it with `labels`) and `destination_version` (the pod's `version`
/// label).
fn istio() -> Convention {
    Convention {
        histogram: "istio_request_duration_milliseconds_bucket".into(),
        native_histogram: false,
        units_per_second: 1000.0,
        calls: "istio_requests_total".into(),
        service_label: "destination_service_name".into(),
        span_kind_label: None,
        version_label: Some("destination_version".into()),
        matchers: vec![exact("reporter", "destination")],
        error: LabelMatcher {
            label: "response_code".into(),
            value: "5..".into(),
            regex: true,
        },
    }
}

/// Linkerd's proxy metrics (linkerd/linkerd2-proxy `linkerd/http/metrics/src/requests/
/// report.rs`, `linkerd/app/core/src/metrics.rs`; linkerd.io, "Proxy Metrics"):
/// `response_total` counts responses, labelled `classification` (`success` / `failure`,
/// the proxy's own verdict: a 5xx or a gRPC error) and `status_code`;
/// `response_latency_ms` times them in milliseconds. The proxy labels its server side
/// `direction="inbound"`, its calls to others `direction="outbound"`. The workload labels
/// come from linkerd-viz's scrape configuration (linkerd/linkerd2
/// `viz/charts/linkerd-viz/templates/prometheus.yaml`, job `linkerd-proxy`): `namespace`,
/// `pod`, and the pod's `linkerd.io/proxy-<kind>` label as `<kind>`, so `deployment` for a
/// Deployment's pods.
///
/// No version label: the proxy writes none, and the scrape configuration copies the pod's
/// own labels, of which none carries a version by any convention. A conventions file
/// names the one a deployment has (a Rollout's pods carry `rollouts_pod_template_hash`).
fn linkerd() -> Convention {
    Convention {
        histogram: "response_latency_ms_bucket".into(),
        native_histogram: false,
        units_per_second: 1000.0,
        calls: "response_total".into(),
        service_label: "deployment".into(),
        span_kind_label: None,
        version_label: None,
        matchers: vec![exact("direction", "inbound")],
        error: exact("classification", "failure"),
    }
}

/// Why a convention file or a convention/selector pair is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConventionError {
    #[error("convention {name:?}: {field} {value:?} is not a valid Prometheus name")]
    BadName {
        name: String,
        field: &'static str,
        value: String,
    },
    #[error("convention {name:?}: units_per_second must be a positive number")]
    BadUnit { name: String },
    #[error("convention {name:?}: regex {value:?} is invalid: {reason}")]
    BadRegex {
        name: String,
        value: String,
        reason: String,
    },
}

impl Convention {
    /// Checks every name, so a convention file cannot smuggle PromQL into queries.
    pub fn validate(&self, name: &str) -> Result<(), ConventionError> {
        let bad = |field: &'static str, value: &str| ConventionError::BadName {
            name: name.to_string(),
            field,
            value: value.to_string(),
        };
        for (field, value) in [("histogram", &self.histogram), ("calls", &self.calls)] {
            if !is_metric_name(value) {
                return Err(bad(field, value));
            }
        }
        let labels = [
            ("service_label", Some(&self.service_label)),
            ("span_kind_label", self.span_kind_label.as_ref()),
            ("version_label", self.version_label.as_ref()),
            ("error.label", Some(&self.error.label)),
        ];
        for (field, value) in labels {
            if let Some(v) = value {
                if !is_label_name(v) {
                    return Err(bad(field, v));
                }
            }
        }
        for m in &self.matchers {
            if !is_label_name(&m.label) {
                return Err(bad("matchers.label", &m.label));
            }
        }
        if !(self.units_per_second.is_finite() && self.units_per_second > 0.0) {
            return Err(ConventionError::BadUnit {
                name: name.to_string(),
            });
        }
        for m in self.matchers.iter().chain([&self.error]) {
            if m.regex {
                regex_syntax::Parser::new().parse(&m.value).map_err(|e| {
                    ConventionError::BadRegex {
                        name: name.to_string(),
                        value: m.value.clone(),
                        reason: e.to_string(),
                    }
                })?;
            }
        }
        Ok(())
    }
}

/// Why a selector cannot be expressed in a convention.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryBuildError {
    #[error("convention {convention} has no span kind label; only spanKind server is possible")]
    NoSpanKind { convention: String },
    #[error("convention {convention} has no service version label; version cannot be used")]
    NoVersion { convention: String },
    #[error("signal {signal} is read from the embedded store only (source: otlp)")]
    NotServed { signal: &'static str },
}

/// Builds the canonical instant query for a trace measure in a convention.
pub fn build(
    convention_name: &str,
    c: &Convention,
    selector: &TraceSelector,
    measure: TraceMeasure,
    window: Duration,
) -> Result<String, QueryBuildError> {
    let matchers = matchers(convention_name, c, selector)?;
    let w = format_window(window);
    Ok(match measure {
        TraceMeasure::Latency(q) => latency(c, &matchers, q, &w),
        TraceMeasure::Rate => format!("sum(rate({}{{{matchers}}}[{w}]))", c.calls),
        // Little's law: the histogram's sum grows by each span's duration, so its rate is
        // the seconds of spans per second, the mean number in flight.
        TraceMeasure::Concurrency => in_seconds(c, histogram_sum(c, &matchers, &w)),
        // Several queries: see [`capacity`].
        TraceMeasure::Capacity(_) => {
            return Err(QueryBuildError::NotServed {
                signal: "sloCapacity",
            })
        }
        TraceMeasure::ErrorRatio => {
            let mut err = matchers.clone();
            push_matcher(&mut err, &c.error.label, c.error.op(), &c.error.value);
            // `or vector(0)`: traffic without errors is a ratio of 0, not "no data".
            format!(
                "(sum(rate({calls}{{{err}}}[{w}])) or vector(0)) / sum(rate({calls}{{{matchers}}}[{w}]))",
                calls = c.calls
            )
        }
    })
}

/// The instant queries `signal: sloCapacity` reads from Prometheus, one per figure of
/// [`capacity::Reading`](super::capacity::Reading), over the policy's windows
/// ([`capacity::WINDOW_S`](crate::signal::capacity::WINDOW_S), [`capacity::GUARD_WINDOW_S`](crate::signal::capacity::GUARD_WINDOW_S), [`capacity::HISTORY_S`](crate::signal::capacity::HISTORY_S)). Every
/// figure comes from the latency histogram alone: its `_sum` gives the seconds of spans
/// (Little's law), its `_count` the spans, so the rate and the mean latency describe the
/// same requests as the requests in flight. The history is a subquery at one-minute
/// resolution: each step is one whole minute's `rate` (an evaluation at a multiple of 1m
/// over the minute before it), as the embedded store's whole minutes are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CapacityQueries {
    /// Requests in flight over the long window, in flight (seconds of spans per second).
    pub concurrency: String,
    /// Spans per second over the long window.
    pub rate: String,
    /// The shortest mean latency (seconds) of a minute of the history with spans: a
    /// minute without any is `0 / 0`, NaN, which `min_over_time` passes over.
    pub reference_latency: String,
    /// The busiest minute's requests in flight.
    pub peak_concurrency: String,
    /// The busiest minute's spans per second.
    pub peak_rate: String,
    /// The latency at the trigger's quantile over the guard window, seconds: the query
    /// `signal: latency` builds.
    pub latency: String,
    /// The lowest latency at the trigger's quantile of a minute of the history (a minute
    /// without spans is NaN, passed over).
    pub calm_latency: String,
    /// The sustained level: the [`SUSTAINED_Q`](super::capacity::SUSTAINED_Q) quantile of
    /// the per-minute requests in flight over
    /// [`SUSTAINED_S`](super::capacity::SUSTAINED_S) (`quantile_over_time` computes it as
    /// `capacity::quantile` does).
    pub sustained_concurrency: String,
    /// The same quantile of the per-minute spans per second.
    pub sustained_rate: String,
}

impl CapacityQueries {
    /// The queries in a fixed order (that of the fields).
    pub fn all(&self) -> [&String; 9] {
        [
            &self.concurrency,
            &self.rate,
            &self.reference_latency,
            &self.peak_concurrency,
            &self.peak_rate,
            &self.latency,
            &self.calm_latency,
            &self.sustained_concurrency,
            &self.sustained_rate,
        ]
    }
}

/// Builds `signal: sloCapacity`'s queries ([`CapacityQueries`]) in a convention.
pub fn capacity(
    convention_name: &str,
    c: &Convention,
    selector: &TraceSelector,
    quantile: Quantile,
) -> Result<CapacityQueries, QueryBuildError> {
    use super::capacity::{GUARD_WINDOW_S, HISTORY_S, PEAK_S, SUSTAINED_Q, SUSTAINED_S, WINDOW_S};
    let matchers = matchers(convention_name, c, selector)?;
    let window = format_window(Duration::from_secs(WINDOW_S));
    let minute = format_window(Duration::from_secs(60));
    let history = format_window(Duration::from_secs(HISTORY_S));
    let guard = format_window(Duration::from_secs(GUARD_WINDOW_S));
    let peak = format_window(Duration::from_secs(PEAK_S));
    let sustained = format_window(Duration::from_secs(SUSTAINED_S));
    let sum = |w: &str| histogram_sum(c, &matchers, w);
    let count = |w: &str| histogram_count(c, &matchers, w);
    Ok(CapacityQueries {
        concurrency: in_seconds(c, sum(&window)),
        rate: count(&window),
        reference_latency: in_seconds(
            c,
            format!(
                "min_over_time(({} / {})[{history}:{minute}])",
                sum(&minute),
                count(&minute)
            ),
        ),
        peak_concurrency: in_seconds(
            c,
            format!("max_over_time({}[{peak}:{minute}])", sum(&minute)),
        ),
        peak_rate: format!("max_over_time({}[{peak}:{minute}])", count(&minute)),
        latency: latency(c, &matchers, quantile, &guard),
        calm_latency: in_seconds(
            c,
            format!(
                "min_over_time({}[{history}:{minute}])",
                quantile_of(c, &matchers, quantile, &minute)
            ),
        ),
        sustained_concurrency: in_seconds(
            c,
            format!(
                "quantile_over_time({SUSTAINED_Q}, {}[{sustained}:{minute}])",
                sum(&minute)
            ),
        ),
        sustained_rate: format!(
            "quantile_over_time({SUSTAINED_Q}, {}[{sustained}:{minute}])",
            count(&minute)
        ),
    })
}

/// The histogram's quantile in seconds.
fn latency(c: &Convention, matchers: &str, q: Quantile, w: &str) -> String {
    in_seconds(c, quantile_of(c, matchers, q, w))
}

/// The histogram's quantile in its own units.
fn quantile_of(c: &Convention, matchers: &str, q: Quantile, w: &str) -> String {
    let inner = if c.native_histogram {
        format!("sum(rate({}{{{matchers}}}[{w}]))", c.histogram)
    } else {
        format!("sum by (le) (rate({}{{{matchers}}}[{w}]))", c.histogram)
    };
    format!("histogram_quantile({}, {inner})", q.get())
}

/// The rate of the histogram's sum of observations, in the histogram's units.
fn histogram_sum(c: &Convention, matchers: &str, w: &str) -> String {
    if c.native_histogram {
        format!(
            "histogram_sum(sum(rate({}{{{matchers}}}[{w}])))",
            c.histogram
        )
    } else {
        let name = c.histogram.strip_suffix("_bucket").unwrap_or(&c.histogram);
        format!("sum(rate({name}_sum{{{matchers}}}[{w}]))")
    }
}

/// The rate of the histogram's count of observations.
fn histogram_count(c: &Convention, matchers: &str, w: &str) -> String {
    if c.native_histogram {
        format!(
            "histogram_count(sum(rate({}{{{matchers}}}[{w}])))",
            c.histogram
        )
    } else {
        let name = c.histogram.strip_suffix("_bucket").unwrap_or(&c.histogram);
        format!("sum(rate({name}_count{{{matchers}}}[{w}]))")
    }
}

/// `expr` (in the histogram's units) in seconds.
fn in_seconds(c: &Convention, mut expr: String) -> String {
    if c.units_per_second != 1.0 {
        let _ = write!(expr, " / {}", c.units_per_second);
    }
    expr
}

/// The label matchers of a selector in a convention, every value quoted.
fn matchers(
    convention_name: &str,
    c: &Convention,
    selector: &TraceSelector,
) -> Result<String, QueryBuildError> {
    let mut matchers = String::new();
    push_matcher(&mut matchers, &c.service_label, "=", &selector.service);
    for m in &c.matchers {
        push_matcher(&mut matchers, &m.label, m.op(), &m.value);
    }
    match &c.span_kind_label {
        Some(label) => push_matcher(&mut matchers, label, "=", selector.span_kind.otel_label()),
        None if selector.span_kind == SpanKind::Server => {}
        None => {
            return Err(QueryBuildError::NoSpanKind {
                convention: convention_name.to_string(),
            })
        }
    }
    if let Some(version) = &selector.version {
        let Some(label) = &c.version_label else {
            return Err(QueryBuildError::NoVersion {
                convention: convention_name.to_string(),
            });
        };
        push_matcher(&mut matchers, label, "=", version);
    }
    for (k, v) in &selector.labels {
        push_matcher(&mut matchers, k, "=", v);
    }
    Ok(matchers)
}

fn push_matcher(out: &mut String, label: &str, op: &str, value: &str) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    out.push_str(label);
    out.push_str(op);
    out.push_str(&go_string(value));
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not reserved (`__…`).
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests;
