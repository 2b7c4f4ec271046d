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
/// ([`capacity::WINDOW_S`], [`capacity::GUARD_WINDOW_S`], [`capacity::HISTORY_S`]). Every
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
}

impl CapacityQueries {
    /// The queries in a fixed order (that of the fields).
    pub fn all(&self) -> [&String; 6] {
        [
            &self.concurrency,
            &self.rate,
            &self.reference_latency,
            &self.peak_concurrency,
            &self.peak_rate,
            &self.latency,
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
    use super::capacity::{GUARD_WINDOW_S, HISTORY_S, WINDOW_S};
    let matchers = matchers(convention_name, c, selector)?;
    let window = format_window(Duration::from_secs(WINDOW_S));
    let minute = format_window(Duration::from_secs(60));
    let history = format_window(Duration::from_secs(HISTORY_S));
    let guard = format_window(Duration::from_secs(GUARD_WINDOW_S));
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
            format!("max_over_time({}[{history}:{minute}])", sum(&minute)),
        ),
        peak_rate: format!("max_over_time({}[{history}:{minute}])", count(&minute)),
        latency: latency(c, &matchers, quantile, &guard),
    })
}

/// The histogram's quantile in seconds.
fn latency(c: &Convention, matchers: &str, q: Quantile, w: &str) -> String {
    let inner = if c.native_histogram {
        format!("sum(rate({}{{{matchers}}}[{w}]))", c.histogram)
    } else {
        format!("sum by (le) (rate({}{{{matchers}}}[{w}]))", c.histogram)
    };
    in_seconds(c, format!("histogram_quantile({}, {inner})", q.get()))
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
mod tests {
    use super::*;
    use crate::signal::Quantile;

    fn selector(service: &str) -> TraceSelector {
        TraceSelector {
            service: service.into(),
            span_kind: SpanKind::Server,
            version: None,
            labels: vec![],
        }
    }

    #[test]
    fn hostile_values_stay_literals() {
        let conventions = builtin_conventions();
        for value in [
            r#"a"} or vector(1e9) #"#,
            "new\nline\r\ncr",
            "nul\0bell\x07del\x7f",
            "c1\u{85}bom\u{feff}bad\u{fffd}",
            r"\",
        ] {
            let q = build(
                "tempo-spanmetrics",
                &conventions["tempo-spanmetrics"],
                &selector(value),
                TraceMeasure::Rate,
                Duration::from_secs(60),
            )
            .unwrap();
            let (skeleton, literals) = crate::signal::quote::tests::lex(&q)
                .unwrap_or_else(|e| panic!("{value:?}: {e}: {q}"));
            assert_eq!(literals, vec![value, "SPAN_KIND_SERVER"], "{q}");
            assert_eq!(
                skeleton,
                r#"sum(rate(traces_spanmetrics_calls_total{service="…", span_kind="…"}[1m]))"#
            );
        }
    }

    #[test]
    fn canonical_queries() {
        let conventions = builtin_conventions();
        let check = |conv: &str, sel: &TraceSelector, m: TraceMeasure, expect: &str| {
            let q = build(conv, &conventions[conv], sel, m, Duration::from_secs(120)).unwrap();
            assert_eq!(q, expect, "{conv} {m:?}");
        };
        let s = selector("order-service");
        check(
            "otel-spanmetrics",
            &s,
            TraceMeasure::Latency(Quantile::P95),
            r#"histogram_quantile(0.95, sum by (le) (rate(traces_span_metrics_duration_milliseconds_bucket{service_name="order-service", span_kind="SPAN_KIND_SERVER"}[2m]))) / 1000"#,
        );
        check(
            "otel-spanmetrics",
            &s,
            TraceMeasure::ErrorRatio,
            r#"(sum(rate(traces_span_metrics_calls_total{service_name="order-service", span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_ERROR"}[2m])) or vector(0)) / sum(rate(traces_span_metrics_calls_total{service_name="order-service", span_kind="SPAN_KIND_SERVER"}[2m]))"#,
        );
        check(
            "tempo-spanmetrics",
            &s,
            TraceMeasure::Rate,
            r#"sum(rate(traces_spanmetrics_calls_total{service="order-service", span_kind="SPAN_KIND_SERVER"}[2m]))"#,
        );
        check(
            "otel-http",
            &s,
            TraceMeasure::Latency(Quantile::parse("p99").unwrap()),
            r#"histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="order-service"}[2m])))"#,
        );
        check(
            "prometheus-http",
            &s,
            TraceMeasure::ErrorRatio,
            r#"(sum(rate(http_request_duration_seconds_count{job="order-service", code=~"5.."}[2m])) or vector(0)) / sum(rate(http_request_duration_seconds_count{job="order-service"}[2m]))"#,
        );
        // Istio: the destination proxy's series only; latency and concurrency in ms.
        check(
            "istio",
            &s,
            TraceMeasure::Latency(Quantile::P95),
            r#"histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_service_name="order-service", reporter="destination"}[2m]))) / 1000"#,
        );
        check(
            "istio",
            &s,
            TraceMeasure::ErrorRatio,
            r#"(sum(rate(istio_requests_total{destination_service_name="order-service", reporter="destination", response_code=~"5.."}[2m])) or vector(0)) / sum(rate(istio_requests_total{destination_service_name="order-service", reporter="destination"}[2m]))"#,
        );
        check(
            "istio",
            &s,
            TraceMeasure::Concurrency,
            r#"sum(rate(istio_request_duration_milliseconds_sum{destination_service_name="order-service", reporter="destination"}[2m])) / 1000"#,
        );
        let mut canary = selector("order-service");
        canary.version = Some("v2".into());
        canary.labels = vec![("destination_service_namespace".into(), "shop".into())];
        check(
            "istio",
            &canary,
            TraceMeasure::Rate,
            r#"sum(rate(istio_requests_total{destination_service_name="order-service", reporter="destination", destination_version="v2", destination_service_namespace="shop"}[2m]))"#,
        );
        // Linkerd: the proxy's inbound side only; failures as the proxy classifies them.
        check(
            "linkerd",
            &s,
            TraceMeasure::ErrorRatio,
            r#"(sum(rate(response_total{deployment="order-service", direction="inbound", classification="failure"}[2m])) or vector(0)) / sum(rate(response_total{deployment="order-service", direction="inbound"}[2m]))"#,
        );
        check(
            "linkerd",
            &s,
            TraceMeasure::Latency(Quantile::P95),
            r#"histogram_quantile(0.95, sum by (le) (rate(response_latency_ms_bucket{deployment="order-service", direction="inbound"}[2m]))) / 1000"#,
        );
        check(
            "linkerd",
            &s,
            TraceMeasure::Rate,
            r#"sum(rate(response_total{deployment="order-service", direction="inbound"}[2m]))"#,
        );
        let mut labelled = selector("a\"b");
        labelled.labels = vec![("span_name".into(), "GET /orders/{id}".into())];
        check(
            "tempo-spanmetrics",
            &labelled,
            TraceMeasure::Rate,
            r#"sum(rate(traces_spanmetrics_calls_total{service="a\"b", span_kind="SPAN_KIND_SERVER", span_name="GET /orders/{id}"}[2m]))"#,
        );
    }

    /// `signal: sloCapacity`'s queries, written out by hand: the histogram's `_sum` and
    /// `_count` over the policy's windows (1m, a 10m history at 1m steps, the guard's 5m or
    /// whatever `capacity::GUARD_WINDOW_S` is), in seconds.
    #[test]
    fn capacity_queries() {
        use crate::signal::capacity::{GUARD_WINDOW_S, HISTORY_S, WINDOW_S};
        // The shapes below are written for these windows.
        assert_eq!((WINDOW_S, HISTORY_S), (60, 600));
        let guard = format_window(Duration::from_secs(GUARD_WINDOW_S));
        let conventions = builtin_conventions();
        let mut s = selector("order-service");
        s.version = Some("v2".into());
        let q = capacity(
            "otel-spanmetrics",
            &conventions["otel-spanmetrics"],
            &s,
            Quantile::P95,
        )
        .unwrap();
        let f =
            r#"{service_name="order-service", span_kind="SPAN_KIND_SERVER", service_version="v2"}"#;
        let h = "traces_span_metrics_duration_milliseconds";
        assert_eq!(q.concurrency, format!("sum(rate({h}_sum{f}[1m])) / 1000"));
        assert_eq!(q.rate, format!("sum(rate({h}_count{f}[1m]))"));
        assert_eq!(
            q.reference_latency,
            format!("min_over_time((sum(rate({h}_sum{f}[1m])) / sum(rate({h}_count{f}[1m])))[10m:1m]) / 1000")
        );
        assert_eq!(
            q.peak_concurrency,
            format!("max_over_time(sum(rate({h}_sum{f}[1m]))[10m:1m]) / 1000")
        );
        assert_eq!(
            q.peak_rate,
            format!("max_over_time(sum(rate({h}_count{f}[1m]))[10m:1m])")
        );
        assert_eq!(
            q.latency,
            format!("histogram_quantile(0.95, sum by (le) (rate({h}_bucket{f}[{guard}]))) / 1000")
        );
        // The long window's figure is `signal: concurrency`'s query, the guard's is
        // `signal: latency`'s.
        let c = &conventions["otel-spanmetrics"];
        let same = |m, secs| build("otel-spanmetrics", c, &s, m, Duration::from_secs(secs));
        assert_eq!(
            Ok(q.concurrency.clone()),
            same(TraceMeasure::Concurrency, WINDOW_S)
        );
        assert_eq!(
            Ok(q.latency.clone()),
            same(TraceMeasure::Latency(Quantile::P95), GUARD_WINDOW_S)
        );

        // Seconds already, fixed matchers kept (Istio's reporter), another quantile.
        let q = capacity(
            "istio",
            &conventions["istio"],
            &selector("checkout"),
            Quantile::parse("p99").unwrap(),
        )
        .unwrap();
        let f = r#"{destination_service_name="checkout", reporter="destination"}"#;
        let h = "istio_request_duration_milliseconds";
        assert_eq!(
            q.reference_latency,
            format!("min_over_time((sum(rate({h}_sum{f}[1m])) / sum(rate({h}_count{f}[1m])))[10m:1m]) / 1000")
        );
        assert!(
            q.latency.starts_with("histogram_quantile(0.99, "),
            "{}",
            q.latency
        );
        let q = capacity(
            "prometheus-http",
            &conventions["prometheus-http"],
            &selector("checkout"),
            Quantile::P95,
        )
        .unwrap();
        assert_eq!(
            q.peak_concurrency,
            r#"max_over_time(sum(rate(http_request_duration_seconds_sum{job="checkout"}[1m]))[10m:1m])"#
        );

        // Native histograms: histogram_sum / histogram_count of the one series.
        let mut native = conventions["tempo-spanmetrics"].clone();
        native.native_histogram = true;
        native.histogram = "traces_spanmetrics_latency".into();
        let q = capacity("native", &native, &selector("s"), Quantile::P95).unwrap();
        let f = r#"{service="s", span_kind="SPAN_KIND_SERVER"}"#;
        let n = "traces_spanmetrics_latency";
        assert_eq!(
            q.concurrency,
            format!("histogram_sum(sum(rate({n}{f}[1m])))")
        );
        assert_eq!(q.rate, format!("histogram_count(sum(rate({n}{f}[1m])))"));
        assert_eq!(
            q.reference_latency,
            format!("min_over_time((histogram_sum(sum(rate({n}{f}[1m]))) / histogram_count(sum(rate({n}{f}[1m]))))[10m:1m])")
        );
        assert_eq!(
            q.peak_rate,
            format!("max_over_time(histogram_count(sum(rate({n}{f}[1m])))[10m:1m])")
        );
        assert_eq!(
            q.latency,
            format!("histogram_quantile(0.95, sum(rate({n}{f}[{guard}])))")
        );

        // The selector's limits are the other signals' (no span kind label, no version).
        let mut client = selector("s");
        client.span_kind = SpanKind::Client;
        assert!(matches!(
            capacity(
                "otel-http",
                &conventions["otel-http"],
                &client,
                Quantile::P95
            ),
            Err(QueryBuildError::NoSpanKind { .. })
        ));
        // Hostile values stay literals in every query.
        let hostile = r#"a"} or vector(1e9) #"#;
        let q = capacity(
            "tempo-spanmetrics",
            &conventions["tempo-spanmetrics"],
            &selector(hostile),
            Quantile::P95,
        )
        .unwrap();
        for text in q.all() {
            let (_, literals) =
                crate::signal::quote::tests::lex(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(
                literals
                    .chunks(2)
                    .all(|l| l == [hostile, "SPAN_KIND_SERVER"]),
                "{text}: {literals:?}"
            );
        }
    }

    #[test]
    fn native_histograms_drop_le() {
        let mut c = builtin_conventions()["tempo-spanmetrics"].clone();
        c.native_histogram = true;
        c.histogram = "traces_spanmetrics_latency".into();
        let q = build(
            "native",
            &c,
            &selector("s"),
            TraceMeasure::Latency(Quantile::P95),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            q,
            r#"histogram_quantile(0.95, sum(rate(traces_spanmetrics_latency{service="s", span_kind="SPAN_KIND_SERVER"}[1m])))"#
        );
    }

    /// The spanmetrics connector's exponential histogram as the Collector's `prometheus`
    /// exporter serves it: a native histogram named like the classic one without
    /// `_bucket`, in milliseconds; the calls counter as with explicit buckets.
    #[test]
    fn otel_spanmetrics_native() {
        let c = &builtin_conventions()["otel-spanmetrics-native"];
        let q = |m| {
            build(
                "otel-spanmetrics-native",
                c,
                &selector("s"),
                m,
                Duration::from_secs(90),
            )
            .unwrap()
        };
        assert_eq!(
            q(TraceMeasure::Latency(Quantile::P95)),
            r#"histogram_quantile(0.95, sum(rate(traces_span_metrics_duration_milliseconds{service_name="s", span_kind="SPAN_KIND_SERVER"}[90s]))) / 1000"#
        );
        assert_eq!(
            q(TraceMeasure::Rate),
            r#"sum(rate(traces_span_metrics_calls_total{service_name="s", span_kind="SPAN_KIND_SERVER"}[90s]))"#
        );
    }

    #[test]
    fn impossible_selectors() {
        let conventions = builtin_conventions();
        let mut s = selector("s");
        s.span_kind = SpanKind::Consumer;
        assert!(matches!(
            build(
                "otel-http",
                &conventions["otel-http"],
                &s,
                TraceMeasure::Rate,
                Duration::from_secs(60)
            ),
            Err(QueryBuildError::NoSpanKind { .. })
        ));
        let mut s = selector("s");
        s.version = Some("v2".into());
        assert!(matches!(
            build(
                "prometheus-http",
                &conventions["prometheus-http"],
                &s,
                TraceMeasure::Rate,
                Duration::from_secs(60)
            ),
            Err(QueryBuildError::NoVersion { .. })
        ));
    }

    /// The label `service.version` becomes in each built-in convention when the pipeline
    /// keeps it (see [`OTEL_VERSION_LABEL`] for the upstream files): the Collector's
    /// spanmetrics connector and Prometheus exporter, Tempo's metrics-generator and the
    /// SDK's HTTP metrics all sanitise `service.version` to `service_version`; client
    /// libraries' HTTP metrics have none.
    #[test]
    fn builtin_version_labels() {
        let conventions = builtin_conventions();
        let cases: &[(&str, Option<&str>)] = &[
            ("otel-spanmetrics", Some("service_version")),
            ("otel-spanmetrics-native", Some("service_version")),
            ("tempo-spanmetrics", Some("service_version")),
            ("otel-http", Some("service_version")),
            ("prometheus-http", None),
            // istio/proxy istio_stats.cc: the server pod's `version` label.
            ("istio", Some("destination_version")),
            // Neither linkerd2-proxy nor linkerd-viz's scrape configuration writes one.
            ("linkerd", None),
        ];
        assert_eq!(conventions.len(), cases.len());
        for (name, label) in cases {
            let c = &conventions[*name];
            assert_eq!(c.version_label.as_deref(), *label, "{name}");
            let mut s = selector("checkout");
            s.version = Some("v2".into());
            let q = build(name, c, &s, TraceMeasure::Rate, Duration::from_secs(60));
            match label {
                Some(l) => {
                    let q = q.expect("a query");
                    assert!(q.contains(&format!("{l}=\"v2\"")), "{name}: {q}");
                }
                None => assert!(
                    matches!(q, Err(QueryBuildError::NoVersion { .. })),
                    "{name}: {q:?}"
                ),
            }
        }
    }

    #[test]
    fn builtins_are_valid_and_files_are_checked() {
        for (name, c) in builtin_conventions() {
            c.validate(&name).unwrap();
        }
        let bad: Convention = serde_json::from_str(
            r#"{"histogram":"x_bucket","calls":"x} or vector(1)","service_label":"job","error":{"label":"code","value":"5..","regex":true}}"#,
        )
        .unwrap();
        assert!(bad.validate("bad").is_err());
        let bad_regex: Convention = serde_json::from_str(
            r#"{"histogram":"x_bucket","calls":"x_total","service_label":"job","error":{"label":"code","value":"5(","regex":true}}"#,
        )
        .unwrap();
        assert!(matches!(
            bad_regex.validate("r"),
            Err(ConventionError::BadRegex { .. })
        ));
    }

    /// Fixed matchers from a conventions file are checked like every other name, and
    /// their values enter queries only as literals.
    #[test]
    fn fixed_matchers_from_files() {
        let parse = |matchers: &str| -> Convention {
            serde_json::from_str(&format!(
                r#"{{"histogram":"x_bucket","calls":"x_total","service_label":"job","matchers":{matchers},"error":{{"label":"code","value":"5..","regex":true}}}}"#
            ))
            .unwrap()
        };
        let bad_label = parse(r#"[{"label":"a} or vector(1) #","value":"x"}]"#);
        assert!(matches!(
            bad_label.validate("f"),
            Err(ConventionError::BadName {
                field: "matchers.label",
                ..
            })
        ));
        let reserved = parse(r#"[{"label":"__name__","value":"x"}]"#);
        assert!(reserved.validate("f").is_err());
        let bad_regex = parse(r#"[{"label":"reporter","value":"(","regex":true}]"#);
        assert!(matches!(
            bad_regex.validate("f"),
            Err(ConventionError::BadRegex { .. })
        ));
        let unknown_field: Result<Convention, _> = serde_json::from_str(
            r#"{"histogram":"x_bucket","calls":"x_total","service_label":"job","matchers":[{"label":"a","value":"b","op":"!="}],"error":{"label":"code","value":"5.."}}"#,
        );
        assert!(unknown_field.is_err());

        let hostile = r#"x"} or vector(1e9) #"#;
        let c = parse(&format!(
            r#"[{{"label":"reporter","value":{}}},{{"label":"mesh","value":"a|b","regex":true}}]"#,
            serde_json::to_string(hostile).unwrap()
        ));
        c.validate("f").unwrap();
        let q = build(
            "f",
            &c,
            &selector("s"),
            TraceMeasure::Rate,
            Duration::from_secs(60),
        )
        .unwrap();
        let (skeleton, literals) = crate::signal::quote::tests::lex(&q).unwrap();
        assert_eq!(literals, vec!["s", hostile, "a|b"], "{q}");
        assert_eq!(
            skeleton,
            r#"sum(rate(x_total{job="…", reporter="…", mesh=~"…"}[1m]))"#
        );
    }

    /// The conventions files docs/prometheus-conventions.md and docs/mesh.md show parse and pass the checks,
    /// and docs/mesh.md's Istio query is the one built for its trigger (default window 5m).
    #[test]
    fn documented_conventions_and_queries() {
        let docs = [
            (
                "docs/prometheus-conventions.md",
                include_str!("../../docs/prometheus-conventions.md"),
            ),
            ("docs/mesh.md", include_str!("../../docs/mesh.md")),
        ];
        for (doc, text) in docs {
            let mut files = 0;
            for block in text.split("```json\n").skip(1) {
                let json = block.split("```").next().unwrap_or_default();
                if !json.contains("\"histogram\"") {
                    continue; // not a conventions file
                }
                let parsed: BTreeMap<String, Convention> =
                    serde_json::from_str(json).unwrap_or_else(|e| panic!("{doc}: {e}: {json}"));
                for (name, c) in &parsed {
                    c.validate(name).unwrap_or_else(|e| panic!("{doc}: {e}"));
                }
                files += 1;
            }
            assert!(files > 0, "{doc} shows a conventions file");
        }
        let mesh = docs[1].1;
        let shown = mesh
            .split("The query it sends:\n\n```\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("docs/mesh.md shows the Istio query");
        let mut s = selector("payment-service");
        s.labels = vec![("destination_service_namespace".into(), "shop".into())];
        let built = build(
            "istio",
            &builtin_conventions()["istio"],
            &s,
            TraceMeasure::Latency(Quantile::P95),
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(shown, built);
    }

    /// docs/slo-capacity-prometheus.md shows the queries built for its example trigger (that
    /// of deploy/examples/order-service-slo-capacity-prometheus.yaml), in the order the
    /// figures are read.
    #[test]
    fn documented_capacity_queries() {
        let doc = include_str!("../../docs/slo-capacity-prometheus.md");
        let shown = doc
            .split("The queries it sends:\n\n```\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("the docs show the queries");
        let mut s = selector("order-service");
        s.span_kind = SpanKind::Server;
        let built = capacity(
            "otel-spanmetrics",
            &builtin_conventions()["otel-spanmetrics"],
            &s,
            Quantile::P95,
        )
        .unwrap();
        let built: Vec<&str> = built.all().iter().map(|q| q.as_str()).collect();
        assert_eq!(shown.lines().collect::<Vec<_>>(), built);
    }

    #[test]
    fn names() {
        assert!(is_label_name("service_name"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name("1a"));
        assert!(!is_label_name(""));
        assert!(is_metric_name("a:b_c"));
        assert!(!is_metric_name("a{b}"));
    }
}
