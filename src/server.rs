//! Wiring: builds the engine from settings, binds every listener, runs the servers,
//! and drains them on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::CacheConfig;
use crate::config::{ConfigError, ServeArgs, Settings};
use crate::engine::{Engine, EngineConfig};
use crate::proto::external_scaler_server::ExternalScalerServer;
use crate::scaler::{Board, BoardConfig, ScalerService};
use crate::source::otlp::{self, Store, StoreConfig};
use crate::source::prometheus::PrometheusSource;
use crate::source::sqs::SqsSource;
use crate::source::tempo::TempoSource;
use crate::source::Sources;
use crate::telemetry::{new_registry, Metrics};
use crate::tls::{ReloadingConfig, TlsFiles, TlsIncoming, ALPN_GRPC, ALPN_HTTP1};

/// A running server.
pub struct Server {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The OTLP/gRPC and OTLP/HTTP receivers; `None` with `--no-otlp`.
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub otlp_http_addr: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    /// Every ScaledObject trigger asked about recently.
    pub board: Arc<Board>,
    ready: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    grace: Duration,
    /// The threads of the OTLP receivers; shut down in the background on drop.
    otlp_runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.otlp_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The runtime of the OTLP receivers: half the cores (at least one thread), apart from
/// the workers that answer KEDA, and at a lower scheduling priority than they are: when the
/// cores are busy, a KEDA call waiting for a core is given one before span ingest.
fn otlp_runtime_builder() -> tokio::runtime::Builder {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(threads)
        .thread_name("otlp-receiver")
        .on_thread_start(|| {
            if let Err(e) = lower_thread_priority() {
                tracing::warn!(error = %e, "cannot lower the OTLP receiver thread's priority");
            }
        })
        .enable_all();
    builder
}

/// How much nicer than the rest of the process the OTLP receiver threads are (nice values
/// stop at 19): at +10, under contention, the kernel gives them about a tenth of the time a
/// KEDA-answering thread gets.
pub const OTLP_NICENESS: i32 = 10;

/// Lowers the calling thread's priority by [`OTLP_NICENESS`] (on Linux a nice value is a
/// thread's own, and a new thread starts with its creator's). Lowering one's own priority
/// needs no privilege; if it fails anyway the thread keeps its priority, which is only
/// slower to yield. Elsewhere than Linux it does nothing.
pub fn lower_thread_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let tid = Some(rustix::thread::gettid());
        getpriority_process(tid)
            .and_then(|nice| setpriority_process(tid, (nice + OTLP_NICENESS).min(19)))?;
    }
    Ok(())
}

/// Builds the engine (no listeners): shared by `serve`, `check` and tests.
pub fn build_engine(
    settings: &Settings,
    metrics: Arc<Metrics>,
    otlp: Option<Arc<Store>>,
) -> Result<Engine, ConfigError> {
    build_engine_with(settings, metrics, otlp, None)
}

/// Makes the loader of the AWS configuration the SQS source starts from (see
/// [`SqsSource::with_loader`]); the server's own is the AWS default chain.
pub type AwsLoader = Arc<dyn Fn() -> aws_config::ConfigLoader + Send + Sync>;

fn build_engine_with(
    settings: &Settings,
    metrics: Arc<Metrics>,
    otlp: Option<Arc<Store>>,
    aws: Option<AwsLoader>,
) -> Result<Engine, ConfigError> {
    install_crypto_provider();
    let prometheus = PrometheusSource::new(&settings.prometheus, settings.backend_timeout)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let tempo = TempoSource::new(
        settings.tempo.clone(),
        settings.backend_timeout,
        metrics.clone(),
    )
    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    // Lazy: the AWS configuration is only loaded once an SQS trigger is evaluated.
    let sqs = match aws {
        Some(loader) => SqsSource::with_loader(move || loader(), settings.sqs.clone()),
        None => SqsSource::lazy(settings.sqs.clone()),
    };
    let sources = Sources {
        prometheus,
        tempo,
        sqs,
        otlp,
        metrics: metrics.clone(),
        timeout: settings.backend_timeout,
    };
    Ok(Engine::new(
        EngineConfig {
            parse: settings.parse.clone(),
            conventions: settings.conventions.clone(),
            tenant_policy: settings.tenant_policy.clone(),
            policy: settings.policy.clone(),
            cache_ttl: settings.cache_ttl,
            cache: CacheConfig {
                max_stale: settings.max_stale,
                max_ttl: settings.parse.max_cache_ttl,
                max_entries: settings.cache_max_entries,
                max_bytes: settings.cache_max_bytes,
            },
        },
        sources,
        metrics,
    ))
}

impl Server {
    /// Validates the configuration, binds every listener and starts serving.
    /// A [`ConfigError`] in the returned error means the configuration was refused.
    pub async fn start(args: ServeArgs) -> anyhow::Result<Server> {
        Self::start_with(args, None).await
    }

    /// Like [`Server::start`], with the SQS source's AWS configuration from `aws` (the demo
    /// points it at its own queue) instead of the AWS default chain.
    pub async fn start_with(args: ServeArgs, aws: Option<AwsLoader>) -> anyhow::Result<Server> {
        args.validate()?;
        let settings = args.backends.resolve(!args.otlp.no_otlp)?;
        args.check_policy_trust(&settings)?;
        let mut registry = new_registry();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let board = Arc::new(Board::new(
            BoardConfig {
                max_signals: args.max_signals,
                idle_expiry: args.signal_expiry,
            },
            metrics.signals_evicted.clone(),
        ));
        registry.register_collector(Box::new(board.clone()));
        let store = if args.otlp.no_otlp {
            None
        } else {
            args.otlp.validate()?;
            let config = StoreConfig {
                bucket_width: args.otlp.otlp_bucket_width,
                retention: args.otlp.otlp_retention,
                max_series: args.otlp.otlp_max_series,
                idle_expiry: args.otlp.otlp_retention,
                rate_settle: args.otlp.otlp_rate_settle,
                max_bytes: args.otlp.otlp_max_store_bytes,
            };
            let store = Store::new(config, metrics.clone())
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            Some(Arc::new(store))
        };
        let engine = Arc::new(build_engine_with(
            &settings,
            metrics.clone(),
            store.clone(),
            aws,
        )?);
        registry.register_collector(Box::new(engine.cache().gauges()));
        // Every TLS listener's files are loaded now (a bad file refuses the start) and
        // re-read every --tls-reload-interval.
        let mut reloading = Vec::new();
        let mut load = |listener, files: Option<TlsFiles>, alpn| -> Result<_, ConfigError> {
            let Some(files) = files else { return Ok(None) };
            let config = ReloadingConfig::load(listener, files, alpn, &metrics)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let config = Arc::new(config);
            reloading.push(config.clone());
            Ok(Some(config))
        };
        let tls = load("grpc", grpc_tls_files(&args), ALPN_GRPC)?;
        let (otlp_grpc_tls, otlp_http_tls) = if store.is_some() {
            (
                load("otlp-grpc", otlp_tls_files(&args), ALPN_GRPC)?,
                load("otlp-http", otlp_tls_files(&args), ALPN_HTTP1)?,
            )
        } else {
            (None, None)
        };

        // TCP_NODELAY: small unary answers must not wait for Nagle's algorithm.
        let grpc_listener = TcpListener::bind(args.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on --grpc-addr {}", args.grpc_addr))?;
        let admin_listener = TcpListener::bind(args.admin_addr)
            .await
            .with_context(|| format!("cannot listen on --admin-addr {}", args.admin_addr))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();

        let service = ScalerService::new(
            engine.clone(),
            board.clone(),
            args.max_signals as usize,
            args.stream_interval,
            shutdown_rx.clone(),
        );
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<ExternalScalerServer<ScalerService>>()
            .await;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(args.grpc_keepalive_interval))
            .http2_keepalive_timeout(Some(args.grpc_keepalive_timeout))
            .add_service(health_service)
            .add_service(service.into_server());
        let stop = stopped(shutdown_rx.clone());
        match tls {
            Some(tls) => {
                let incoming = TlsIncoming::new(grpc_listener, tls, shutdown_rx.clone())?;
                tasks.spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, stop)
                        .await
                        .context("gRPC server failed")
                });
            }
            None => {
                let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener)
                    .with_nodelay(Some(true));
                tasks.spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, stop)
                        .await
                        .context("gRPC server failed")
                });
            }
        }

        let admin = crate::admin::router(
            Arc::new(registry),
            board.clone(),
            metrics.clone(),
            ready.clone(),
            engine.clone(),
        );
        let stop = stopped(shutdown_rx.clone());
        tasks.spawn(async move {
            axum::serve(admin_listener, admin)
                .with_graceful_shutdown(stop)
                .await
                .context("admin server failed")
        });

        let (mut otlp_grpc_addr, mut otlp_http_addr) = (None, None);
        let mut otlp_runtime = None;
        if let Some(store) = &store {
            let grpc_addr = args.otlp.otlp_grpc_addr;
            // Bound here, registered with the receivers' runtime in its own task.
            let grpc_listener = std::net::TcpListener::bind(grpc_addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .with_context(|| format!("cannot listen on --otlp-grpc-addr {grpc_addr}"))?;
            otlp_grpc_addr = Some(grpc_listener.local_addr()?);
            let http_listener = std::net::TcpListener::bind(args.otlp.otlp_http_addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .with_context(|| {
                    format!(
                        "cannot listen on --otlp-http-addr {}",
                        args.otlp.otlp_http_addr
                    )
                })?;
            otlp_http_addr = Some(http_listener.local_addr()?);
            let max_bytes = args.otlp.otlp_max_request_bytes;
            let budget = otlp::Budget::new(args.otlp.otlp_max_inflight_bytes);

            // The receivers run on their own threads: decoding and ingest of any volume of
            // spans cannot take the workers that answer KEDA.
            let runtime = otlp_runtime_builder()
                .build()
                .context("cannot start the OTLP receiver threads")?;
            let handle = runtime.handle().clone();
            otlp_runtime = Some(runtime);

            let service = otlp::grpc_service(store.clone(), metrics.clone())
                .max_decoding_message_size(max_bytes)
                .with_budget(budget.clone());
            let stop = stopped(shutdown_rx.clone());
            let stop_rx = shutdown_rx.clone();
            let grpc = handle.spawn(async move {
                let listener = TcpListener::from_std(grpc_listener)
                    .context("cannot listen on --otlp-grpc-addr")?;
                let router = otlp::grpc_server().add_service(service);
                match otlp_grpc_tls {
                    Some(tls) => {
                        router
                            .serve_with_incoming_shutdown(
                                TlsIncoming::new(listener, tls, stop_rx)?,
                                stop,
                            )
                            .await
                    }
                    None => {
                        let incoming = tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true));
                        router.serve_with_incoming_shutdown(incoming, stop).await
                    }
                }
                .context("OTLP gRPC receiver failed")
            });
            tasks.spawn(async move { grpc.await.context("OTLP gRPC receiver panicked")? });

            let router =
                otlp::http_router_with_budget(store.clone(), metrics.clone(), max_bytes, budget);
            let stop = stopped(shutdown_rx.clone());
            let stop_rx = shutdown_rx.clone();
            let http = handle.spawn(async move {
                let listener = TcpListener::from_std(http_listener)
                    .context("cannot listen on --otlp-http-addr")?;
                match otlp_http_tls {
                    Some(tls) => {
                        axum::serve(TlsIncoming::new(listener, tls, stop_rx)?, router)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                    None => {
                        axum::serve(listener, router)
                            .with_graceful_shutdown(stop)
                            .await
                    }
                }
                .context("OTLP HTTP receiver failed")
            });
            tasks.spawn(async move { http.await.context("OTLP HTTP receiver panicked")? });

            // Idle series leave the store (and its memory) after the retention.
            let sweep_store = store.clone();
            tasks.spawn(every(
                args.otlp.otlp_retention / 10,
                shutdown_rx.clone(),
                move || {
                    sweep_store.sweep();
                },
            ));
        }

        tasks.spawn(crate::tls::reload_every(
            args.tls_reload_interval,
            reloading,
            shutdown_rx.clone(),
        ));

        // Per-ScaledObject entries expire when KEDA stops asking (deleted ScaledObjects);
        // the board drops them as it is used, and this makes it happen on an idle server too.
        let sweep_board = board.clone();
        tasks.spawn(every(
            args.signal_expiry / 4,
            shutdown_rx.clone(),
            move || {
                sweep_board.run_pending_tasks();
            },
        ));

        ready.store(true, Ordering::Release);
        tracing::info!(
            grpc = %grpc_addr,
            admin = %admin_addr,
            default_source = %settings.parse.default_source,
            prometheus_backends = settings.prometheus.len(),
            "slo-scaler ready"
        );
        Ok(Server {
            grpc_addr,
            admin_addr,
            otlp_grpc_addr,
            otlp_http_addr,
            engine,
            board,
            ready,
            shutdown,
            tasks,
            grace: args.shutdown_grace,
            otlp_runtime,
        })
    }

    /// Waits until a server task fails (it should not) and returns its error.
    pub async fn wait_for_failure(&mut self) -> anyhow::Error {
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return e,
                Err(e) => return anyhow::anyhow!("server task panicked: {e}"),
            }
        }
        anyhow::anyhow!("every server task ended")
    }

    /// Stops accepting, ends streams, lets in-flight RPCs finish within the grace period.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        let drain = async {
            while let Some(result) = self.tasks.join_next().await {
                result.context("server task panicked")??;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(self.grace, drain).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "shutdown grace period over; exiting");
                self.tasks.abort_all();
                Ok(())
            }
        }
    }
}

/// Picks rustls' process-wide crypto provider. Several dependencies enable both `ring`
/// and `aws-lc-rs`, and rustls then refuses to guess (it would panic on first use).
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs `job` every `period` (at least a second) until shutdown.
async fn every(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    mut job: impl FnMut() + Send,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(period.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => job(),
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Resolves once shutdown is signalled.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The KEDA-facing gRPC listener's certificate files, when TLS is configured.
fn grpc_tls_files(args: &ServeArgs) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: args.tls_cert_file.clone()?,
        key: args.tls_key_file.clone()?,
        client_ca: args.tls_client_ca_file.clone(),
        flag_prefix: "tls",
    })
}

/// The OTLP receivers' certificate files, when TLS is configured for them.
fn otlp_tls_files(args: &ServeArgs) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: args.otlp.otlp_tls_cert_file.clone()?,
        key: args.otlp.otlp_tls_key_file.clone()?,
        client_ca: args.otlp.otlp_tls_client_ca_file.clone(),
        flag_prefix: "otlp-tls",
    })
}
