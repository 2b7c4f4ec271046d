//! An engine over a store on a manual clock (and any backends), behind the real admin
//! router on loopback; SDK spans exported to the store's OTLP/gRPC receiver.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;
use slo_scaler::cli::{Cli, Command};
use slo_scaler::engine::Engine;
use slo_scaler::scaler::{Board, BoardConfig};
use slo_scaler::source::otlp::{grpc_server, grpc_service, ManualClock, Store, StoreConfig};
use slo_scaler::telemetry::Metrics;
use tonic::transport::server::TcpIncoming;

use crate::harness::{t0, Collect, Planned};

pub struct Setup {
    pub engine: Arc<Engine>,
    /// The store's clock (at `t0()` unless a test moves it).
    pub clock: Arc<ManualClock>,
    pub store: Arc<Store>,
    pub otlp: SocketAddr,
    pub admin: String,
    /// The ExternalScaler service KEDA calls, over the same engine and board.
    pub scaler: SocketAddr,
}

impl Setup {
    /// `flags` are `serve` flags for the backends (`--prometheus default=URL`, …).
    pub async fn start(flags: &[&str]) -> Setup {
        // The store started ten minutes (its retention) before the spans' clock, so rates
        // cover whole windows (the store counts no bucket from before it started).
        Setup::start_after(flags, Duration::from_secs(600)).await
    }

    /// [`Setup::start`] with a store that started `uptime` before the spans' clock.
    pub async fn start_after(flags: &[&str], uptime: Duration) -> Setup {
        let mut argv = vec!["slo-scaler", "serve"];
        argv.extend_from_slice(flags);
        let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
            panic!("not serve");
        };
        let settings = args.backends.resolve(true).expect("valid settings");
        let (registry, metrics) = Metrics::standalone();
        let metrics = Arc::new(metrics);
        let clock = Arc::new(ManualClock::new(t0() - uptime));
        let store = Arc::new(
            Store::with_clock(StoreConfig::default(), metrics.clone(), clock.clone())
                .expect("default store config"),
        );
        clock.set(t0());
        let engine = Arc::new(
            slo_scaler::server::build_engine(&settings, metrics.clone(), Some(store.clone()))
                .expect("engine"),
        );

        let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())
            .expect("bind OTLP")
            .with_nodelay(Some(true));
        let otlp = incoming.local_addr().expect("OTLP address");
        tokio::spawn(
            grpc_server()
                .add_service(grpc_service(store.clone(), metrics.clone()))
                .serve_with_incoming(incoming),
        );

        let board = Arc::new(Board::new(
            BoardConfig {
                max_signals: 100,
                idle_expiry: Duration::from_secs(600),
            },
            Default::default(),
        ));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let service = slo_scaler::scaler::ScalerService::new(
            engine.clone(),
            board.clone(),
            16,
            Duration::from_secs(5),
            shutdown,
        );
        let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())
            .expect("bind the scaler")
            .with_nodelay(Some(true));
        let scaler = incoming.local_addr().expect("scaler address");
        tokio::spawn(async move {
            // The sender lives as long as the server, so streams stay open until the test ends.
            let _stop = _stop;
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(incoming)
                .await
        });
        let router = slo_scaler::admin::router(
            Arc::new(registry),
            board,
            metrics.clone(),
            Arc::new(AtomicBool::new(true)),
            engine.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let admin = format!("http://{}", listener.local_addr().expect("admin address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Setup {
            engine,
            clock,
            store,
            otlp,
            admin,
            scaler,
        }
    }

    /// `slo_scaler_backend_requests_total` of `backend` with outcome success, from the
    /// admin port's `/metrics`.
    pub async fn backend_calls(&self, backend: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text");
        let prefix = format!(
            "slo_scaler_backend_requests_total{{backend=\"{backend}\",outcome=\"success\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }

    /// `GET /api/v1/analysis?…` with `params` (URL-encoded by reqwest): status and JSON.
    pub async fn analysis(&self, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let url =
            reqwest::Url::parse_with_params(&format!("{}/api/v1/analysis", self.admin), params)
                .expect("a URL");
        let resp = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("admin request");
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("a JSON body");
        (status, body)
    }

    /// Makes `planned` server spans of `service` at `version` with the SDK tracer, ending
    /// before the store clock, and exports them with the OTLP/gRPC exporter.
    pub async fn send(&self, service: &str, version: &str, planned: &[Planned]) {
        self.send_before(t0(), service, version, planned).await
    }

    /// [`Setup::send`] with the spans ending before `now` instead of the store clock's start.
    pub async fn send_before(
        &self,
        now: SystemTime,
        service: &str,
        version: &str,
        planned: &[Planned],
    ) {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", service.to_string()),
                KeyValue::new("service.version", version.to_string()),
            ])
            .build();
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collect.clone())
            .with_resource(resource.clone())
            .build();
        let tracer = provider.tracer("slo-scaler-analysis-tests");
        for p in planned {
            let end = now - p.end_before_now;
            let mut span = tracer
                .span_builder("POST /pay")
                .with_kind(SpanKind::Server)
                .with_start_time(end - p.duration)
                .start(&tracer);
            if p.error {
                span.set_status(Status::error("declined"));
            }
            span.end_with_timestamp(end);
        }
        provider.shutdown().expect("provider shutdown");
        let mut spans = std::mem::take(&mut *collect.0.lock().expect("collector lock"));
        assert_eq!(spans.len(), planned.len());
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", self.otlp))
            .build()
            .expect("exporter");
        exporter.set_resource(&resource);
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(512));
            exporter.export(spans).await.expect("export accepted");
            spans = rest;
        }
    }
}

use opentelemetry_otlp::WithExportConfig as _;
