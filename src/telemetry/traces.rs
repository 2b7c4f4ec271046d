//! Self-traces: the scaler's own spans (each gRPC call, each backend read, each OTLP
//! ingest batch), exported over OTLP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! Off, nothing is installed: no exporter, no layer. The spans are `DEBUG` spans of the
//! `slo_scaler` target, which the log filter (`info` unless `RUST_LOG` says otherwise)
//! disables at their call site, so they cost one level check. On, an OpenTelemetry layer
//! with its own filter takes only these spans (never events, whose messages may quote a
//! backend's answer), and the `opentelemetry-otlp` exporter reads every other standard
//! `OTEL_*` variable itself (protocol, headers, timeout, batch settings, sampler,
//! resource). Span attributes carry names and outcomes, never query text or secrets.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::Span;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The gRPC service name in span names and `rpc.service`.
pub const RPC_SERVICE: &str = "externalscaler.ExternalScaler";

/// True once an exporter is installed; lets hot paths skip span bookkeeping when off.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Why self-traces could not be turned on (the scaler runs on without them).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("self-traces: cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Whether the standard variables ask for an OTLP trace exporter: an endpoint is set,
/// the SDK is not disabled (`OTEL_SDK_DISABLED=true`) and `OTEL_TRACES_EXPORTER` is not
/// `none`. `env` looks a variable up (the process environment in production).
pub fn wanted(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let exporter_none = env("OTEL_TRACES_EXPORTER").is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|e| e.eq_ignore_ascii_case("none"))
    });
    endpoint && !disabled && !exporter_none
}

/// Flushes and stops the exporter when dropped (keep it alive for the process's life).
#[must_use = "dropping the guard stops the export"]
pub struct SelfTraces {
    provider: Option<SdkTracerProvider>,
}

impl SelfTraces {
    /// The guard of a process that does not export.
    pub fn off() -> Self {
        SelfTraces { provider: None }
    }

    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for SelfTraces {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Release);
            // The exporter logs its own failures; nothing more to do at exit.
            let _ = provider.shutdown();
        }
    }
}

/// The OpenTelemetry layer and its guard when the environment asks for self-traces.
/// Must run inside a Tokio runtime (the gRPC exporter spawns its connection there).
#[allow(clippy::type_complexity)]
pub fn from_env<S>() -> Result<(Option<Box<dyn Layer<S> + Send + Sync>>, SelfTraces), TraceError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    if !wanted(|k| std::env::var(k).ok()) {
        return Ok((None, SelfTraces::off()));
    }
    // Protocol (default http/protobuf), endpoint, headers and timeout come from the
    // standard variables, read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(|k| std::env::var(k).ok()))
        .build();
    let tracer = provider.tracer("slo-scaler");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(exported))
        .boxed();
    EXPORTING.store(true, Ordering::Release);
    Ok((
        Some(layer),
        SelfTraces {
            provider: Some(provider),
        },
    ))
}

/// What the export layer takes: the scaler's own spans, no events, nothing from
/// dependencies (the exporter's own tonic client must not trace itself).
pub fn exported(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.target().starts_with("slo_scaler")
}

/// The SDK's resource (which reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`),
/// named `slo-scaler` unless those name the service, with the scaler's version.
fn resource(env: impl Fn(&str) -> Option<String>) -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| {
            v.split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        });
    let mut builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if !named {
        builder = builder.with_service_name("slo-scaler");
    }
    builder.build()
}

/// The server span of one ExternalScaler call, named `externalscaler.ExternalScaler/<method>`
/// (the OpenTelemetry RPC convention). Record its end with [`end_rpc`].
pub fn rpc_span(
    method: &'static str,
    full_name: &'static str,
    namespace: &str,
    name: &str,
) -> Span {
    tracing::debug_span!(
        "grpc.request",
        otel.name = full_name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = RPC_SERVICE,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        k8s.namespace.name = namespace,
        keda.scaled_object.name = name,
    )
}

/// Records the gRPC status of a call on its span.
pub fn end_rpc<T>(span: &Span, result: &Result<T, tonic::Status>) {
    if span.is_disabled() {
        return;
    }
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    span.record("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of one signal read: the backend it names and, recorded by the cache through
/// [`record_cache`], whether the answer was a `hit`, a `miss` (the backend was called),
/// `stale` (the last good answer, served because the backend failed) or `error` (a failure
/// remembered for the error TTL, served again). End it with
/// [`end_read`].
pub fn read_span(source: &'static str, backend: impl FnOnce() -> String, metric: &str) -> Span {
    let span = tracing::debug_span!(
        "backend.read",
        otel.kind = "internal",
        otel.status_code = Empty,
        slo_scaler.backend = Empty,
        slo_scaler.source = source,
        slo_scaler.metric = metric,
        slo_scaler.cache = Empty,
        slo_scaler.outcome = Empty,
        "error.type" = Empty,
    );
    if !span.is_disabled() {
        span.record("slo_scaler.backend", backend());
    }
    span
}

/// Records the cache's answer (`hit`, `miss`, `stale`, `error`) on the current read span.
pub fn record_cache(result: &'static str) {
    if EXPORTING.load(Ordering::Relaxed) {
        Span::current().record("slo_scaler.cache", result);
    }
}

/// Records a read's outcome: `ok`, or `error` with the kind of failure (a short fixed
/// name, never its text, which may quote the backend's answer).
pub fn end_read(span: &Span, outcome: Result<(), &'static str>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(()) => {
            span.record("slo_scaler.outcome", "ok");
        }
        Err(kind) => {
            span.record("slo_scaler.outcome", "error");
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)], expect: bool) {
        let env = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(wanted(env), expect, "{vars:?}");
    }

    #[test]
    fn the_standard_variables_turn_export_on_and_off() {
        check(&[], false);
        check(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")], false);
        check(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
            true,
        );
        check(
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            )],
            true,
        );
        check(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ],
            false,
        );
        check(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_SDK_DISABLED", "false"),
            ],
            true,
        );
        check(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
            false,
        );
        check(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
            ],
            true,
        );
    }

    #[test]
    fn the_service_is_named_unless_the_environment_names_it() {
        let service = |vars: &'static [(&'static str, &'static str)]| {
            let r = resource(|k| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            });
            r.get(&opentelemetry::Key::new("service.name"))
                .map(|v| v.to_string())
        };
        assert_eq!(service(&[]).as_deref(), Some("slo-scaler"));
        // Named by the environment, the SDK's own detector supplies the name: ours must
        // not override it.
        assert_ne!(
            service(&[("OTEL_SERVICE_NAME", "scaler-eu")]).as_deref(),
            Some("slo-scaler")
        );
        assert_ne!(
            service(&[("OTEL_RESOURCE_ATTRIBUTES", "team=a,service.name=scaler-eu")]).as_deref(),
            Some("slo-scaler")
        );
    }

    #[test]
    fn spans_are_disabled_by_the_default_log_filter_and_taken_by_the_export_filter() {
        use tracing_subscriber::layer::SubscriberExt;
        let logs_only = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(tracing_subscriber::EnvFilter::new("info")),
        );
        tracing::subscriber::with_default(logs_only, || {
            let span = rpc_span("GetMetrics", "x/GetMetrics", "shop", "orders");
            assert!(span.is_disabled());
            // Recording on a disabled span is a no-op.
            end_rpc::<()>(&span, &Err(tonic::Status::unavailable("down")));
            record_cache("hit");
        });
        let exporting = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(tracing_subscriber::EnvFilter::new("info")),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(tracing_subscriber::filter::filter_fn(exported)),
            );
        tracing::subscriber::with_default(exporting, || {
            let span = rpc_span("GetMetrics", "x/GetMetrics", "shop", "orders");
            assert!(!span.is_disabled());
        });
    }
}
