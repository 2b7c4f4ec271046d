//! Test harness: receivers on 127.0.0.1:0, a store on a manual clock, span generators.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use slo_scaler::signal::{Quantile, SpanKind, TraceMeasure, TraceSelector};
use slo_scaler::source::otlp::{
    grpc_server, grpc_service, http_router_with_budget, Budget, ManualClock, Store, StoreConfig,
    DEFAULT_MAX_MESSAGE_BYTES,
};
use slo_scaler::source::{OtlpQuery, Reading};
use slo_scaler::telemetry::Metrics;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// The store clock: 2024-08-21T10:00:00Z, on a bucket boundary.
pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_724_234_400)
}

/// Both receivers, serving one store until the test ends.
pub struct Harness {
    pub store: Arc<Store>,
    pub clock: Arc<ManualClock>,
    pub registry: Registry,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Harness {
    pub async fn start(max_body_bytes: usize) -> Harness {
        Harness::start_with_budget(max_body_bytes, Budget::default()).await
    }

    /// Both receivers with `max_body_bytes` as their limit, sharing `budget`.
    pub async fn start_with_budget(max_body_bytes: usize, budget: Budget) -> Harness {
        Harness::start_full(max_body_bytes, budget, t0()).await
    }

    /// Both receivers with the store clock at `now` (for senders that stamp spans with
    /// the wall clock: `now` after the last span they will send).
    #[allow(dead_code)] // The seeds suite's; the OTLP suite stamps spans around t0.
    pub async fn start_at(max_body_bytes: usize, now: SystemTime) -> Harness {
        Harness::start_full(max_body_bytes, Budget::default(), now).await
    }

    async fn start_full(max_body_bytes: usize, budget: Budget, now: SystemTime) -> Harness {
        let (registry, metrics) = Metrics::standalone();
        let metrics = Arc::new(metrics);
        // The store started before the spans the tests send (rates count only what it
        // saw whole), then the clock moves to `now`.
        let clock = Arc::new(ManualClock::new(now - Duration::from_secs(600)));
        let store = Arc::new(
            Store::with_clock(StoreConfig::default(), Arc::clone(&metrics), clock.clone())
                .expect("default config is valid"),
        );
        clock.set(now);

        let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())
            .expect("bind gRPC")
            .with_nodelay(Some(true));
        let grpc = incoming.local_addr().expect("gRPC address");
        let service = grpc_service(Arc::clone(&store), Arc::clone(&metrics))
            .max_decoding_message_size(max_body_bytes.max(DEFAULT_MAX_MESSAGE_BYTES))
            .with_budget(budget.clone());
        tokio::spawn(
            grpc_server()
                .add_service(service)
                .serve_with_incoming(incoming),
        );

        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let http = http_listener.local_addr().expect("HTTP address");
        let router = http_router_with_budget(Arc::clone(&store), metrics, max_body_bytes, budget);
        tokio::spawn(async move { axum::serve(http_listener, router).await });

        Harness {
            store,
            clock,
            registry,
            grpc,
            http,
        }
    }

    /// Reads `measure` for `service` (server spans) over `window_s` seconds.
    pub fn read(
        &self,
        service: &str,
        version: Option<&str>,
        measure: TraceMeasure,
        window_s: u64,
    ) -> Option<f64> {
        let q = OtlpQuery {
            selector: TraceSelector {
                service: service.to_string(),
                span_kind: SpanKind::Server,
                version: version.map(str::to_string),
                labels: Vec::new(),
            },
            measure,
            window: Duration::from_secs(window_s),
        };
        match self.store.read(&q) {
            Ok(Reading::Value(v)) => v,
            other => panic!("{q:?}: {other:?}"),
        }
    }

    /// Every latency quantile, error ratio and rate the tests look at, for comparisons
    /// of "nothing changed".
    pub fn snapshot(&self, service: &str) -> Vec<Option<f64>> {
        let mut all: Vec<Option<f64>> = [0.5, 0.95, 0.99]
            .into_iter()
            .map(|q| self.read(service, None, latency(q), 600))
            .collect();
        all.push(self.read(service, None, TraceMeasure::ErrorRatio, 600));
        all.push(self.read(service, None, TraceMeasure::Rate, 600));
        all
    }

    /// The value of one sample line of the metrics scrape, e.g.
    /// `slo_scaler_otlp_spans_total{outcome="accepted"}`.
    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text.lines()
            .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
    }
}

pub fn latency(q: f64) -> TraceMeasure {
    TraceMeasure::Latency(Quantile::new(q).expect("valid quantile"))
}

/// One planned span: when it ends (before the store clock), how long it took, error.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub end_before_now: Duration,
    pub duration: Duration,
    pub error: bool,
}

/// `n` spans over the last `spread` seconds with a deterministic log-normal latency
/// (median `median_ms`, long tail); every `error_every`-th is an error.
pub fn plan(n: usize, spread: Duration, median_ms: f64, error_every: usize) -> Vec<Planned> {
    let mut seed: u64 = 0x5EED;
    let mut next = move || {
        // SplitMix64, so the distribution is the same on every run.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let (u1, u2) = (next().max(1e-12), next());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let ms = median_ms * (0.7 * z).exp();
            Planned {
                // Strictly inside the spread, newest last.
                end_before_now: spread.mul_f64((n - i) as f64 / (n + 1) as f64),
                duration: Duration::from_secs_f64(ms / 1e3),
                error: (i + 1) % error_every == 0,
            }
        })
        .collect()
}

/// The exact value the sketch answers for: rank `floor(q × (n − 1))`, in seconds.
pub fn exact_quantile(plan: &[Planned], q: f64) -> f64 {
    let mut d: Vec<f64> = plan.iter().map(|p| p.duration.as_secs_f64()).collect();
    d.sort_by(f64::total_cmp);
    d[(q * (d.len() - 1) as f64).floor() as usize]
}

/// Asserts a latency reading is within the sketch's 1 % of the exact quantile.
pub fn assert_close(got: Option<f64>, want: f64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: no value"));
    let bound = slo_scaler::source::otlp::sketch::RELATIVE_ACCURACY * want * (1.0 + 1e-9);
    assert!(
        (got - want).abs() <= bound,
        "{what}: got {got}, want {want} ± {bound}"
    );
}

/// An SDK span exporter that only collects, so spans made by the SDK tracer can be
/// handed to the OTLP exporters from async code.
#[derive(Debug, Clone, Default)]
pub struct Collect(pub Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Collect {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().expect("collector lock").extend(batch);
        Ok(())
    }
}

/// Makes the planned server spans with the SDK tracer, with explicit start and end times.
pub fn make_spans(
    resource: &opentelemetry_sdk::Resource,
    planned: &[Planned],
    now: SystemTime,
) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let collect = Collect::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(collect.clone())
        .with_resource(resource.clone())
        .build();
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    let tracer = provider.tracer("slo-scaler-tests");
    for p in planned {
        let end = now - p.end_before_now;
        let mut span = tracer
            .span_builder("GET /orders")
            .with_kind(opentelemetry::trace::SpanKind::Server)
            .with_start_time(end - p.duration)
            .start(&tracer);
        if p.error {
            span.set_status(opentelemetry::trace::Status::error("payment declined"));
        }
        span.end_with_timestamp(end);
    }
    provider.shutdown().expect("provider shutdown");
    let spans = std::mem::take(&mut *collect.0.lock().expect("collector lock"));
    assert_eq!(spans.len(), planned.len(), "the SDK made every span");
    spans
}
