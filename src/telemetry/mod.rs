//! The scaler's own telemetry: Prometheus metrics (`slo_scaler_*`) and tracing setup.
//!
//! One [`Metrics`] struct owns every family; components get an `Arc<Metrics>` and
//! record through typed methods. Labels are low-cardinality and never carry query text.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub mod health;
pub mod traces;

/// Labels of the per-ScaledObject signal gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SignalLabels {
    pub namespace: String,
    pub scaled_object: String,
    pub metric: String,
}

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
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

type GaugeF = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

/// Every metric family the scaler exports.
pub struct Metrics {
    pub signal_value: Family<SignalLabels, GaugeF>,
    pub signal_threshold: Family<SignalLabels, GaugeF>,
    pub signal_activation_threshold: Family<SignalLabels, GaugeF>,
    pub signal_active: Family<SignalLabels, Gauge>,
    pub signal_age_seconds: Family<SignalLabels, GaugeF>,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_request_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub backend_requests: Family<BackendOutcomeLabels, Counter>,
    pub backend_request_duration: Family<BackendLabels, Histogram, fn() -> Histogram>,
    pub cache_requests: Family<ResultLabels, Counter>,
    pub otlp_spans: Family<OutcomeLabels, Counter>,
    pub otlp_store_series: Gauge,
    pub otlp_store_series_evicted: Counter,
    pub tempo_partial_responses: Family<BackendLabels, Counter>,
    pub build_info: Family<VersionLabels, Gauge>,
    /// Recent calls per backend, for `/debug/backends`.
    pub backend_health: health::BackendHealth,
    /// What each per-ScaledObject label set last answered, and when (for expiry and
    /// the `/debug/signals` view).
    signal_seen: Mutex<HashMap<SignalLabels, SignalState>>,
}

impl Metrics {
    /// Creates every family and registers it in `reg` (which should carry the
    /// `slo_scaler` prefix, see [`new_registry`]).
    pub fn register(reg: &mut Registry) -> Self {
        let m = Metrics {
            signal_value: Family::default(),
            signal_threshold: Family::default(),
            signal_activation_threshold: Family::default(),
            signal_active: Family::default(),
            signal_age_seconds: Family::default(),
            grpc_requests: Family::default(),
            grpc_request_duration: Family::new_with_constructor(latency_histogram),
            backend_requests: Family::default(),
            backend_request_duration: Family::new_with_constructor(latency_histogram),
            cache_requests: Family::default(),
            otlp_spans: Family::default(),
            otlp_store_series: Gauge::default(),
            otlp_store_series_evicted: Counter::default(),
            tempo_partial_responses: Family::default(),
            build_info: Family::default(),
            backend_health: health::BackendHealth::default(),
            signal_seen: Mutex::new(HashMap::new()),
        };
        reg.register(
            "signal_value",
            "Last value served for a ScaledObject's metric (latency in seconds)",
            m.signal_value.clone(),
        );
        reg.register(
            "signal_threshold",
            "Target (threshold) of a ScaledObject's metric",
            m.signal_threshold.clone(),
        );
        reg.register(
            "signal_activation_threshold",
            "Activation threshold of a ScaledObject's metric",
            m.signal_activation_threshold.clone(),
        );
        reg.register(
            "signal_active",
            "1 when the metric's value is above its activation threshold",
            m.signal_active.clone(),
        );
        reg.register(
            "signal_age_seconds",
            "Age of the backend answer behind the last value served",
            m.signal_age_seconds.clone(),
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
            "Signal cache lookups: hit (fresh), miss (backend called), stale (last good value served after a failure)",
            m.cache_requests.clone(),
        );
        reg.register(
            "otlp_spans",
            "Spans received by the embedded OTLP receiver, by outcome",
            m.otlp_spans.clone(),
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
            "build_info",
            "Build information; always 1",
            m.build_info.clone(),
        );
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

    /// Records what a ScaledObject's metric was answered with: the gauges, and for the
    /// debug view the query it read and the error, if any.
    pub fn record_signal(
        &self,
        labels: &SignalLabels,
        reading: SignalRecord,
        query: String,
        error: Option<String>,
    ) {
        if let Some(value) = reading.value {
            self.signal_value.get_or_create(labels).set(value);
        }
        if let Some(age) = reading.age {
            self.signal_age_seconds
                .get_or_create(labels)
                .set(age.as_secs_f64());
        }
        if let Some(active) = reading.active {
            self.signal_active
                .get_or_create(labels)
                .set(i64::from(active));
        }
        self.signal_threshold
            .get_or_create(labels)
            .set(reading.threshold);
        self.signal_activation_threshold
            .get_or_create(labels)
            .set(reading.activation_threshold);
        let state = SignalState {
            last_seen: Instant::now(),
            record: reading,
            query,
            error,
        };
        let mut seen = self.signal_seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(labels) {
            Some(s) => *s = state,
            None => {
                seen.insert(labels.clone(), state);
            }
        }
    }

    /// Every ScaledObject metric asked about recently, as JSON (`/debug/signals`).
    pub fn debug_signals(&self) -> serde_json::Value {
        let seen = self.signal_seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(&SignalLabels, &SignalState)> = seen.iter().collect();
        rows.sort_by(|a, b| {
            (&a.0.namespace, &a.0.scaled_object, &a.0.metric).cmp(&(
                &b.0.namespace,
                &b.0.scaled_object,
                &b.0.metric,
            ))
        });
        let rows: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(l, s)| {
                serde_json::json!({
                    "namespace": l.namespace,
                    "scaledObject": l.scaled_object,
                    "metric": l.metric,
                    "query": s.query,
                    "value": s.record.value,
                    "threshold": s.record.threshold,
                    "activationThreshold": s.record.activation_threshold,
                    "active": s.record.active,
                    "valueAgeSeconds": s.record.age.map(|a| a.as_secs_f64()),
                    "error": s.error,
                    "askedSecondsAgo": s.last_seen.elapsed().as_secs_f64(),
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    /// Drops the per-ScaledObject series nobody asked about for `idle`, so deleted
    /// ScaledObjects disappear from dashboards. Returns how many were dropped.
    pub fn sweep_signals(&self, idle: Duration) -> usize {
        let mut seen = self.signal_seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let before = seen.len();
        seen.retain(|labels, state| {
            let keep = now.duration_since(state.last_seen) < idle;
            if !keep {
                self.signal_value.remove(labels);
                self.signal_threshold.remove(labels);
                self.signal_activation_threshold.remove(labels);
                self.signal_active.remove(labels);
                self.signal_age_seconds.remove(labels);
            }
            keep
        });
        before - seen.len()
    }

    pub fn record_grpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.grpc_request_duration
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
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
            .observe(elapsed.as_secs_f64());
        self.backend_health.record(backend, outcome, elapsed);
    }

    pub fn record_cache(&self, result: &'static str) {
        self.cache_requests
            .get_or_create(&ResultLabels { result })
            .inc();
        traces::record_cache(result);
    }
}

/// The last answer for one ScaledObject's metric.
#[derive(Debug, Clone)]
struct SignalState {
    last_seen: Instant,
    record: SignalRecord,
    query: String,
    error: Option<String>,
}

/// What one evaluation of a ScaledObject's metric showed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignalRecord {
    pub value: Option<f64>,
    pub age: Option<Duration>,
    pub active: Option<bool>,
    pub threshold: f64,
    pub activation_threshold: f64,
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
    fn idle_signal_series_are_swept() {
        let (reg, m) = Metrics::standalone();
        let labels = SignalLabels {
            namespace: "shop".into(),
            scaled_object: "orders".into(),
            metric: "latency-p95-order-service".into(),
        };
        m.record_signal(
            &labels,
            SignalRecord {
                value: Some(0.25),
                age: Some(Duration::from_secs(1)),
                active: Some(true),
                threshold: 0.3,
                activation_threshold: 0.0,
            },
            "prometheus/default: up".into(),
            None,
        );
        let debug = m.debug_signals();
        assert_eq!(debug[0]["scaledObject"], "orders");
        assert_eq!(debug[0]["query"], "prometheus/default: up");
        assert_eq!(debug[0]["value"], 0.25);
        let text = scrape(&reg);
        assert!(text.contains(
            "slo_scaler_signal_value{namespace=\"shop\",scaled_object=\"orders\",metric=\"latency-p95-order-service\"} 0.25"
        ), "{text}");
        assert_eq!(m.sweep_signals(Duration::from_secs(3600)), 0);
        assert_eq!(m.sweep_signals(Duration::ZERO), 1);
        let text = scrape(&reg);
        assert!(!text.contains("scaled_object=\"orders\""), "{text}");
        assert!(text.contains("slo_scaler_build_info{version="), "{text}");
    }
}
