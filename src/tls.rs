//! TLS on the listeners (KEDA's gRPC port, the OTLP receivers), with certificates that
//! are re-read from their files while the server runs.
//!
//! cert-manager rotates a certificate by updating its Secret, and the kubelet swaps the
//! mounted files under a running pod (an atomic rename of the volume's `..data` link). A
//! [`ReloadingConfig`] holds the rustls configuration built from the files; [`reload`]
//! re-reads them and swaps in a new configuration when they changed and load cleanly (the
//! certificate chain, a matching key, the client CA). Files that cannot be read, do not
//! parse or do not match keep the old configuration in service, and the failure is logged
//! and counted (`slo_scaler_tls_reloads_total{outcome="failed"}`,
//! `slo_scaler_tls_reload_failing`). [`TlsIncoming`] hands each new connection the
//! configuration current at its handshake: connections already open keep their session.
//!
//! [`reload`]: ReloadingConfig::reload

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::telemetry::{ListenerLabels, Metrics, TlsReloadLabels};

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols a gRPC listener offers (gRPC runs over HTTP/2 only).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// The ALPN protocols the OTLP/HTTP listener offers (it serves HTTP/1.1).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// A listener's certificate files, and the flags that named them (for messages).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA bundle signed.
    pub client_ca: Option<PathBuf>,
    /// The flags' common prefix: `tls` (`--tls-cert-file` …) or `otlp-tls`.
    pub flag_prefix: &'static str,
}

/// Why a listener's certificate files could not be loaded. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--{flag} {path}: cannot read: {source}")]
    Read {
        flag: String,
        path: String,
        source: io::Error,
    },
    #[error("--{flag} {path}: {reason}")]
    Pem {
        flag: String,
        path: String,
        reason: String,
    },
    #[error("--{key_flag} {key}: the key does not match the certificate in --{cert_flag} {cert}: {reason}")]
    KeyMismatch {
        key_flag: String,
        key: String,
        cert_flag: String,
        cert: String,
        reason: String,
    },
    #[error("--{flag} {path}: not a usable client CA bundle: {reason}")]
    ClientCa {
        flag: String,
        path: String,
        reason: String,
    },
}

/// The bytes a configuration was built from: a reload that reads the same bytes keeps it.
#[derive(PartialEq, Eq)]
struct Source {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Source {
    fn read(files: &TlsFiles) -> Result<Source, TlsError> {
        let read = |path: &Path, flag: String| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                flag,
                path: path.display().to_string(),
                source,
            })
        };
        let p = files.flag_prefix;
        Ok(Source {
            cert: read(&files.cert, format!("{p}-cert-file"))?,
            key: read(&files.key, format!("{p}-key-file"))?,
            client_ca: match &files.client_ca {
                Some(ca) => Some(read(ca, format!("{p}-client-ca-file"))?),
                None => None,
            },
        })
    }
}

/// What a PEM error says, without quoting the file (a key file's lines are secret).
fn pem_reason(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => format!("cannot read a PEM {what}"),
    }
}

/// Builds a rustls server configuration from `source`, offering `alpn`.
fn build(files: &TlsFiles, source: &Source, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let p = files.flag_prefix;
    let pem_error = |flag: &str, path: &Path, e: &pem::Error, what: &str| TlsError::Pem {
        flag: format!("{p}-{flag}"),
        path: path.display().to_string(),
        reason: pem_reason(e, what),
    };
    let chain = CertificateDer::pem_slice_iter(&source.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("cert-file", &files.cert, &e, "certificate"))?;
    if chain.is_empty() {
        return Err(pem_error(
            "cert-file",
            &files.cert,
            &pem::Error::NoItemsFound,
            "certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&source.key)
        .map_err(|e| pem_error("key-file", &files.key, &e, "private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pem {
            flag: format!("{p}-cert-file"),
            path: files.cert.display().to_string(),
            reason: e.to_string(),
        })?;
    let builder = match (&files.client_ca, &source.client_ca) {
        (Some(path), Some(pem)) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                flag: format!("{p}-client-ca-file"),
                path: path.display().to_string(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ca_error(pem_reason(&e, "certificate")))?;
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("holds no PEM certificate".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::KeyMismatch {
            key_flag: format!("{p}-key-file"),
            key: files.key.display().to_string(),
            cert_flag: format!("{p}-cert-file"),
            cert: files.cert.display().to_string(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

struct Loaded {
    config: Arc<ServerConfig>,
    source: Source,
}

/// A listener's TLS configuration, rebuilt when its files change.
pub struct ReloadingConfig {
    listener: &'static str,
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    current: RwLock<Arc<Loaded>>,
    reloads_loaded: Counter,
    reloads_failed: Counter,
    failing: Gauge,
    handshake_failures: Counter,
}

/// What a [`ReloadingConfig::reload`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were: nothing to do.
    Unchanged,
    /// The files changed and the new configuration is in service.
    Loaded,
}

impl ReloadingConfig {
    /// Loads `files` for `listener` (a metric label: `grpc`, `otlp-grpc`, `otlp-http`).
    /// An error here refuses the configuration at start-up.
    pub fn load(
        listener: &'static str,
        files: TlsFiles,
        alpn: &'static [&'static [u8]],
        metrics: &Metrics,
    ) -> Result<ReloadingConfig, TlsError> {
        let source = Source::read(&files)?;
        let config = Arc::new(build(&files, &source, alpn)?);
        let labels = |outcome| TlsReloadLabels { listener, outcome };
        // One statement each: a family's guard lives to the end of its statement, and
        // creating the next series takes the family's write lock.
        let failing = metrics
            .tls_reload_failing
            .get_or_create(&ListenerLabels { listener })
            .clone();
        failing.set(0);
        let reloads_loaded = metrics.tls_reloads.get_or_create(&labels("loaded")).clone();
        let reloads_failed = metrics.tls_reloads.get_or_create(&labels("failed")).clone();
        let handshake_failures = metrics
            .tls_handshake_failures
            .get_or_create(&ListenerLabels { listener })
            .clone();
        Ok(ReloadingConfig {
            listener,
            alpn,
            current: RwLock::new(Arc::new(Loaded { config, source })),
            reloads_loaded,
            reloads_failed,
            failing,
            handshake_failures,
            files,
        })
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.loaded().config.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a whole configuration (it is replaced, never edited).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files; swaps in a new configuration when they changed and load. On
    /// an error the configuration in service stays. Blocking (reads files).
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let source = Source::read(&self.files)?;
        if source == self.loaded().source {
            return Ok(Reload::Unchanged);
        }
        let config = Arc::new(build(&self.files, &source, self.alpn)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Loaded { config, source });
        Ok(Reload::Loaded)
    }

    /// [`reload`](Self::reload), logged and counted.
    pub fn reload_and_record(&self) {
        match self.reload() {
            Ok(Reload::Unchanged) => {
                self.failing.set(0);
            }
            Ok(Reload::Loaded) => {
                self.failing.set(0);
                self.reloads_loaded.inc();
                tracing::info!(listener = self.listener, "TLS certificate reloaded");
            }
            Err(e) => {
                self.failing.set(1);
                self.reloads_failed.inc();
                tracing::warn!(
                    listener = self.listener,
                    error = %e,
                    "cannot reload the TLS certificate; the previous one stays in service"
                );
            }
        }
    }
}

/// Re-reads every listener's files each `period` until shutdown.
pub async fn reload_every(
    period: Duration,
    configs: Vec<Arc<ReloadingConfig>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if configs.is_empty() {
        return Ok(());
    }
    // `--tls-reload-interval` is at most 7d; never past what an `Instant` can be.
    let period = period.min(crate::config::MAX_DURATION);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopped = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            return Ok(());
        }
        let configs = configs.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for config in &configs {
                config.reload_and_record();
            }
        })
        .await;
    }
}

/// Connections that completed their TLS handshake, each with the configuration current
/// when it began. A stream for tonic's `serve_with_incoming_shutdown` and a listener for
/// `axum::serve`. Accepting stops when shutdown is signalled or this is dropped.
pub struct TlsIncoming {
    ready: mpsc::Receiver<TlsStream<TcpStream>>,
    accept: tokio::task::JoinHandle<()>,
    local_addr: std::net::SocketAddr,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TlsIncoming {
    /// Accepts on `listener` (in the current runtime) until `stop`. TCP_NODELAY is set
    /// on every connection; a handshake that fails or takes over [`HANDSHAKE_TIMEOUT`]
    /// closes the connection and is counted.
    pub fn new(
        listener: TcpListener,
        tls: Arc<ReloadingConfig>,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<TlsIncoming> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let accept = tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let tcp = match tcp {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, as
                        // hyper's and axum's accept loops do.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(tls.config());
                let (tx, tls) = (tx.clone(), tls.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(stream).await;
                        }
                        Ok(Err(e)) => {
                            tls.handshake_failures.inc();
                            tracing::debug!(listener = tls.listener, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tls.handshake_failures.inc();
                            tracing::debug!(listener = tls.listener, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsIncoming {
            ready,
            accept,
            local_addr,
        })
    }
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|s| s.map(Ok))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.ready.recv().await {
                Some(stream) => {
                    // The peer address is only a label for axum; a connection whose peer
                    // has gone already is served (and closed) like any other.
                    let peer = stream
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                    return (stream, peer);
                }
                // Accepting stopped (shutdown): no more connections.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests;
