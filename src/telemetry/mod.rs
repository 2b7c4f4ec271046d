//! The scaler's own telemetry: Prometheus metrics (`slo_scaler_*`) and tracing setup.
//!
//! One [`Metrics`] struct owns every family; components get an `Arc<Metrics>` and
//! record through typed methods. Labels are low-cardinality and never carry query text.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub mod health;
pub mod striped;
pub mod traces;

pub use striped::{LatencyHistogram, StripedCounter};
use striped::{MethodSeries, GRPC_METHODS};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendOutcomeLabels {
    pub backend: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsReloadLabels {
    pub listener: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// Every metric family the scaler exports.
pub struct Metrics {
    /// Per-ScaledObject entries dropped because the board was full (`--max-signals`).
    pub signals_evicted: Counter,
    pub grpc_requests: Family<GrpcLabels, StripedCounter>,
    pub grpc_request_duration: Family<MethodLabels, LatencyHistogram>,
    pub backend_requests: Family<BackendOutcomeLabels, Counter>,
    pub backend_request_duration: Family<BackendLabels, LatencyHistogram>,
    pub cache_requests: Family<ResultLabels, StripedCounter>,
    /// Signal cache entries dropped: `size` (over --cache-max-entries / --cache-max-bytes)
    /// or `expired` (unasked past every TTL, or a failed query's error forgotten).
    pub cache_evictions: Family<ReasonLabels, Counter>,
    pub otlp_spans: Family<OutcomeLabels, Counter>,
    /// Accepted spans without an OpenTelemetry sampling threshold (`ot=th:…` in
    /// `tracestate`), each counted as one span; its share of
    /// `otlp_spans{outcome="accepted"}` is the share of the store's figures that assume
    /// the spans were not sampled.
    pub otlp_spans_without_sampling_record: Counter,
    pub otlp_store_series: Gauge,
    pub otlp_store_series_evicted: Counter,
    pub tempo_partial_responses: Family<BackendLabels, Counter>,
    /// TLS listeners' certificate reloads: `loaded` (changed files in service) or
    /// `failed` (unreadable or mismatched files; the previous certificate stays).
    pub tls_reloads: Family<TlsReloadLabels, Counter>,
    /// 1 while a TLS listener's files on disk cannot be loaded, else 0.
    pub tls_reload_failing: Family<ListenerLabels, Gauge>,
    /// TLS handshakes that failed or timed out (plaintext clients, untrusted or missing
    /// client certificates).
    pub tls_handshake_failures: Family<ListenerLabels, Counter>,
    pub build_info: Family<VersionLabels, Gauge>,
    /// Recent calls per backend, for `/debug/backends`.
    pub backend_health: health::BackendHealth,
    /// The ExternalScaler methods' series (in `GRPC_METHODS` order) and the cache's (in
    /// `CACHE_RESULTS` order), resolved once: the answer path records without a lock.
    grpc_series: [MethodSeries; GRPC_METHODS.len()],
    cache_series: [OnceLock<StripedCounter>; CACHE_RESULTS.len()],
}

/// The signal cache's lookup results.
const CACHE_RESULTS: [&str; 4] = ["hit", "miss", "stale", "error"];

impl Metrics {
    /// Creates every family and registers it in `reg` (which should carry the
    /// `slo_scaler` prefix, see [`new_registry`]).
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics {
            signals_evicted: Counter::default(),
            grpc_requests: Family::default(),
            grpc_request_duration: Family::default(),
            backend_requests: Family::default(),
            backend_request_duration: Family::default(),
            cache_requests: Family::default(),
            cache_evictions: Family::default(),
            otlp_spans: Family::default(),
            otlp_spans_without_sampling_record: Counter::default(),
            otlp_store_series: Gauge::default(),
            otlp_store_series_evicted: Counter::default(),
            tempo_partial_responses: Family::default(),
            tls_reloads: Family::default(),
            tls_reload_failing: Family::default(),
            tls_handshake_failures: Family::default(),
            build_info: Family::default(),
            backend_health: health::BackendHealth::default(),
            grpc_series: Default::default(),
            cache_series: Default::default(),
        };
        reg.register(
            "signals_evicted",
            "Per-ScaledObject entries dropped because more were asked about than --max-signals",
            m.signals_evicted.clone(),
        );
        reg.register(
            "grpc_requests",
            "ExternalScaler RPCs answered, by method and gRPC code",
            m.grpc_requests.clone(),
        );
        reg.register(
            "grpc_request_duration_seconds",
            "Time to answer an ExternalScaler RPC (streams: time to open)",
            m.grpc_request_duration.clone(),
        );
        reg.register(
            "backend_requests",
            "Calls to backends (Prometheus, Tempo, SQS, the embedded store), by outcome",
            m.backend_requests.clone(),
        );
        reg.register(
            "backend_request_duration_seconds",
            "Duration of backend calls",
            m.backend_request_duration.clone(),
        );
        reg.register(
            "cache_requests",
            "Signal cache lookups: hit (fresh), miss (backend called), stale (last good value served after a failure), error (a failure remembered for the error TTL served again)",
            m.cache_requests.clone(),
        );
        reg.register(
            "cache_evictions",
            "Signal cache entries dropped: size (over --cache-max-entries or --cache-max-bytes), expired (unasked past every TTL, or a failed query's error forgotten)",
            m.cache_evictions.clone(),
        );
        reg.register(
            "otlp_spans",
            "Spans received by the embedded OTLP receiver, by outcome",
            m.otlp_spans.clone(),
        );
        reg.register(
            "otlp_spans_without_sampling_record",
            "Accepted spans whose tracestate held no OpenTelemetry sampling threshold (ot=th:...), each counted as one span",
            m.otlp_spans_without_sampling_record.clone(),
        );
        reg.register(
            "otlp_store_series",
            "Series held by the embedded trace store",
            m.otlp_store_series.clone(),
        );
        reg.register(
            "otlp_store_series_evicted",
            "Series dropped by the embedded trace store (idle or over the cap)",
            m.otlp_store_series_evicted.clone(),
        );
        reg.register(
            "tempo_partial_responses",
            "Tempo answers with status PARTIAL (value still used)",
            m.tempo_partial_responses.clone(),
        );
        reg.register(
            "tls_reloads",
            "TLS certificate reloads by listener: loaded (changed files now in service), failed (unreadable or mismatched files; the previous certificate stays)",
            m.tls_reloads.clone(),
        );
        reg.register(
            "tls_reload_failing",
            "1 while a TLS listener's certificate files cannot be loaded (the previous certificate is served), else 0",
            m.tls_reload_failing.clone(),
        );
        reg.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            m.tls_handshake_failures.clone(),
        );
        reg.register(
            "build_info",
            "Build information; always 1",
            m.build_info.clone(),
        );
        // Series present from the start at 0, also where nothing ever increments them (the
        // receiver off, a cache that never fills): a dashboard reads 0, not "no data".
        for outcome in ["accepted", "rejected"] {
            let _ = m.otlp_spans.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in ["size", "expired"] {
            let _ = m.cache_evictions.get_or_create(&ReasonLabels { reason });
        }
        m.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        m
    }

    /// A fresh registry and metrics, for tests, benches and `check`.
    pub fn standalone() -> (Registry, Self) {
        let mut reg = new_registry();
        let m = Metrics::register(&mut reg);
        (reg, m)
    }

    pub fn record_grpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        let requests = || {
            self.grpc_requests
                .get_or_create(&GrpcLabels {
                    method,
                    code: code_name(code),
                })
                .clone()
        };
        let duration = || {
            self.grpc_request_duration
                .get_or_create(&MethodLabels { method })
                .clone()
        };
        match GRPC_METHODS.iter().position(|m| *m == method) {
            Some(i) => {
                let series = &self.grpc_series[i];
                series.requests(code, requests).inc();
                series.duration.get_or_init(duration).observe(elapsed);
            }
            None => {
                requests().inc();
                duration().observe(elapsed);
            }
        }
    }

    pub fn record_backend(&self, backend: &str, outcome: &'static str, elapsed: Duration) {
        self.backend_requests
            .get_or_create(&BackendOutcomeLabels {
                backend: backend.to_string(),
                outcome,
            })
            .inc();
        self.backend_request_duration
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .observe(elapsed);
        self.backend_health.record(backend, outcome, elapsed);
    }

    pub fn record_cache_eviction(&self, reason: &'static str) {
        self.cache_evictions
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn record_cache(&self, result: &'static str) {
        let counter = || {
            self.cache_requests
                .get_or_create(&ResultLabels { result })
                .clone()
        };
        match CACHE_RESULTS.iter().position(|r| *r == result) {
            Some(i) => self.cache_series[i].get_or_init(counter).inc(),
            None => counter().inc(),
        };
        traces::record_cache(result);
    }
}

/// A registry with the `slo_scaler` prefix.
pub fn new_registry() -> Registry {
    Registry::with_prefix("slo_scaler")
}

/// Stable snake-case names of gRPC codes, for the `code` label.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global tracing subscriber: logs to stderr (`RUST_LOG` overrides the
/// default `info` filter), and self-traces over OTLP when the standard `OTEL_*`
/// variables ask for them (see [`traces`]). Call it inside the Tokio runtime and keep the
/// guard for the process's life: dropping it flushes the last spans.
pub fn init_tracing(format: LogFormat) -> traces::SelfTraces {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let (export, guard, problem) = match traces::from_env() {
        Ok((layer, guard)) => (layer, guard, None),
        Err(e) => (None, traces::SelfTraces::off(), Some(e)),
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(export)
        .try_init();
    if let Some(e) = problem {
        tracing::warn!(error = %e, "running without self-traces");
    } else if guard.is_exporting() {
        tracing::info!("exporting self-traces over OTLP");
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn scrape(reg: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, reg).unwrap();
        s
    }

    #[test]
    fn families_carry_the_prefix() {
        let (reg, m) = Metrics::standalone();
        m.record_grpc("GetMetrics", tonic::Code::Ok, Duration::from_millis(1));
        let text = scrape(&reg);
        assert!(text.contains("slo_scaler_build_info{version="), "{text}");
        assert!(
            text.contains(r#"slo_scaler_grpc_requests_total{method="GetMetrics",code="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("slo_scaler_signals_evicted_total 0"),
            "{text}"
        );
    }
}
