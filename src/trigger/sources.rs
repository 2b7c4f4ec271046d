//! The per-source part of a trigger: every source-specific key read and checked, then
//! assembled into the [`Read`] of the trigger's source.

use std::time::Duration;

use super::{
    clip, default_window, keys::Reader, values, PromSpec, QueueSpec, Read, SignalKind, SourceKind,
    TempoSpec, TraceRead,
};
use crate::signal::{promql, Quantile, SpanKind, TraceMeasure, TraceSelector};

/// Every source-specific value, read and checked whatever the signal.
pub(super) struct Fields {
    service: Option<String>,
    span_kind: SpanKind,
    version: Option<String>,
    pub(super) quantile: Quantile,
    labels: Vec<(String, String)>,
    window: Option<Duration>,
    convention: String,
    backend: String,
    tenant: Option<String>,
    query: Option<String>,
    queue: Option<QueueSpec>,
    /// `signal: sloCapacity`'s target, set by the caller after reading.
    pub(super) capacity: Option<crate::signal::CapacityTarget>,
}

impl Fields {
    pub(super) fn read(
        r: &mut Reader<'_>,
        kind: Option<SignalKind>,
        source: Option<SourceKind>,
        opts: &super::ParseOptions,
    ) -> Fields {
        let service = r.get("service").map(str::to_string);
        let span_kind = r
            .value("spanKind", values::parse_span_kind)
            .unwrap_or(SpanKind::Server);
        let version = r.get("version").map(str::to_string);
        let quantile = r
            .value("quantile", values::parse_quantile)
            .unwrap_or(Quantile::P95);
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
        if source == Some(SourceKind::Prometheus) {
            for (k, _) in &labels {
                if !promql::is_label_name(k) {
                    r.problem(
                        "labels",
                        format!(
                            "{:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                            clip(k)
                        ),
                    );
                }
            }
        }
        let window = read_window(r, source);
        let convention = r
            .get("convention")
            .unwrap_or("otel-spanmetrics")
            .to_string();
        if !opts.conventions.iter().any(|c| c == &convention) {
            r.problem(
                "convention",
                format!(
                    "unknown convention {:?} (known: {})",
                    clip(&convention),
                    opts.conventions.join(", ")
                ),
            );
        }
        let backend = r.get("backend").unwrap_or("default").to_string();
        if !values::is_backend_name(&backend) {
            r.problem(
                "backend",
                format!(
                    "must be a backend name ([A-Za-z0-9_-]), got {:?}",
                    clip(&backend)
                ),
            );
        }
        let tenant = r.get("tenant").map(str::to_string);
        let query = r.get("query").map(str::to_string);
        let queue = read_queue(r, kind, opts);
        Fields {
            service,
            span_kind,
            version,
            quantile,
            labels,
            window,
            convention,
            backend,
            tenant,
            query,
            queue,
            capacity: None,
        }
    }
}

/// `window`, within its limits; Tempo's must be longer than its query end cutoff.
fn read_window(r: &mut Reader<'_>, source: Option<SourceKind>) -> Option<Duration> {
    r.value("window", |raw| values::parse_window(raw, source))
}

/// The SQS keys, KEDA's `aws-sqs-queue` names and defaults. `None` when `queueURL` is
/// absent (required only for `queueDepth`, checked at assembly).
fn read_queue(
    r: &mut Reader<'_>,
    kind: Option<SignalKind>,
    opts: &super::ParseOptions,
) -> Option<QueueSpec> {
    let queue = r.get("queueURL");
    if let Some(q) = queue {
        if q.contains('@') {
            // A user or password: errors and logs quote the queue, so it is refused unquoted.
            r.problem(
                "queueURL",
                "must not hold a user or password (an SQS queue URL has none); the value is not repeated here",
            );
        } else if !values::is_queue_ref(q) {
            r.problem(
                "queueURL",
                format!("must be a queue URL https://HOST/ACCOUNT/NAME like https://sqs.eu-west-1.amazonaws.com/123456789012/orders, or a queue name ([A-Za-z0-9_-], optional .fifo), got {:?}", clip(q)),
            );
        }
    }
    let region = r.get("awsRegion").map(str::to_string);
    if let Some(region) = &region {
        if !values::is_aws_region(region) {
            r.problem(
                "awsRegion",
                format!(
                    "must be an AWS region like eu-west-1, got {:?}",
                    clip(region)
                ),
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
                "not allowed by the server (the operator lists the roles each namespace may assume with --aws-role-allow)",
            );
        } else if !values::is_role_arn(arn) {
            r.problem(
                "awsRoleArn",
                format!(
                    "must be an IAM role ARN like arn:aws:iam::123456789012:role/name, got {:?}",
                    clip(arn)
                ),
            );
        }
    }
    let endpoint = r.get("awsEndpoint").map(str::to_string);
    if let Some(e) = &endpoint {
        if !opts
            .metadata_aws_endpoints
            .iter()
            .any(|allowed| allowed == e)
        {
            r.problem(
                "awsEndpoint",
                "not allowed in metadata (the operator sets --aws-endpoint, or lists the endpoints triggers may name with --allow-metadata-aws-endpoint)",
            );
        }
    }
    if kind != Some(SignalKind::QueueDepth) {
        // The keys above were checked for syntax; check_keys says they are not used.
        return None;
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

/// The trigger's [`Read`] for its source; `None` after recording what is missing.
pub(super) fn assemble(
    r: &mut Reader<'_>,
    kind: SignalKind,
    source: SourceKind,
    f: Fields,
) -> Option<Read> {
    let window = f.window.unwrap_or_else(|| default_window(source));
    let trace = |r: &mut Reader<'_>, f: Fields| -> Option<(TraceRead, Fields)> {
        let Some(service) = f.service.clone() else {
            r.problem("service", format!("required for signal {kind}"));
            return None;
        };
        let measure = match kind {
            // slo reads the latency at `quantile` and, from the same selector, the errors.
            SignalKind::Latency | SignalKind::Slo => TraceMeasure::Latency(f.quantile),
            SignalKind::ErrorRate => TraceMeasure::ErrorRatio,
            SignalKind::Concurrency => TraceMeasure::Concurrency,
            // Recorded by parse_capacity when missing.
            SignalKind::SloCapacity => TraceMeasure::Capacity(f.capacity?),
            _ => TraceMeasure::Rate,
        };
        let read = TraceRead {
            selector: TraceSelector {
                service,
                span_kind: f.span_kind,
                version: f.version.clone(),
                labels: f.labels.clone(),
            },
            measure,
            window,
        };
        Some((read, f))
    };
    let raw = |r: &mut Reader<'_>, f: &Fields| -> Option<String> {
        if f.query.is_none() {
            r.problem("query", "required for signal query");
        }
        f.query.clone()
    };
    match (kind, source) {
        (SignalKind::QueueDepth, _) => match f.queue {
            Some(q) => Some(Read::Sqs(q)),
            None => {
                r.problem(
                    "queueURL",
                    "required for signal queueDepth (a queue URL or name)",
                );
                None
            }
        },
        (SignalKind::Query, SourceKind::Prometheus) => Some(Read::Prometheus {
            spec: PromSpec::Raw(raw(r, &f)?),
            backend: f.backend,
            tenant: f.tenant,
        }),
        (SignalKind::Query, _) => Some(Read::Tempo {
            spec: TempoSpec::Raw {
                query: raw(r, &f)?,
                window,
            },
            backend: f.backend,
            tenant: f.tenant,
        }),
        (_, SourceKind::Otlp) => trace(r, f).map(|(t, _)| Read::Otlp(t)),
        (_, SourceKind::Prometheus) => trace(r, f).map(|(trace, f)| Read::Prometheus {
            spec: PromSpec::Trace {
                trace,
                convention: f.convention,
            },
            backend: f.backend,
            tenant: f.tenant,
        }),
        (_, SourceKind::Tempo) => trace(r, f).map(|(trace, f)| Read::Tempo {
            spec: TempoSpec::Trace(trace),
            backend: f.backend,
            tenant: f.tenant,
        }),
        (_, SourceKind::Sqs) => None, // Refused by parse_source.
    }
}
