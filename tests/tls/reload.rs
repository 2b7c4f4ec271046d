//! Certificates rotated under a running server, as cert-manager and the kubelet do it:
//! cert-manager writes the renewed certificate and key into the Secret, and the kubelet
//! updates the mounted volume atomically (kubernetes `pkg/volume/util/atomic_writer.go`:
//! the payload goes into a new timestamped directory, a `..data_tmp` symlink to it is
//! renamed over `..data`, and the visible `tls.crt` / `tls.key` are symlinks through
//! `..data`). New handshakes on every TLS listener must get the new certificate within the
//! reload interval, while clients that keep sending never see a failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::{CertificateDer, ServerName};
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::common::scaler::{so, start_server};
use crate::{ca, leaf, sample, scrape};

/// A Secret volume as the kubelet lays it out.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, cert: &str, key: &str) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.publish(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        volume
    }

    /// Writes a new payload directory and swaps `..data` to it with one rename.
    fn publish(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let payload = format!("..2026_12_04_00_00_{:02}.{}", self.version, self.version);
        std::fs::create_dir(self.dir.join(&payload)).unwrap();
        std::fs::write(self.dir.join(&payload).join("tls.crt"), cert).unwrap();
        std::fs::write(self.dir.join(&payload).join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&payload, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Opens a new TLS connection to `addr` and returns the certificate the server presented.
async fn served_certificate(
    addr: std::net::SocketAddr,
    roots: &rustls::RootCertStore,
    alpn: &[u8],
) -> Result<Vec<u8>, String> {
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(alpn), "ALPN kept");
    Ok(session.peer_certificates().ok_or("no certificate")?[0].to_vec())
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Counts a sender's successes and failures until told to stop.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: std::sync::Mutex<String>,
}

impl Tally {
    fn record<T, E: std::fmt::Debug>(&self, r: Result<T, E>) {
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap() = format!("{e:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificates_are_served_to_new_handshakes_without_failing_clients() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca("cluster issuer");
    let names = ["localhost", "127.0.0.1"];
    let (cert1, key1) = leaf(&issuer, &names, ExtendedKeyUsagePurpose::ServerAuth);
    let (cert2, key2) = leaf(&issuer, &names, ExtendedKeyUsagePurpose::ServerAuth);
    let mut volume = SecretVolume::new(dir.path(), &cert1, &key1);
    let (cert_file, key_file) = (volume.path("tls.crt"), volume.path("tls.key"));
    let server = start_server(&[
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--otlp-tls-cert-file",
        &cert_file,
        "--otlp-tls-key-file",
        &key_file,
        "--tls-reload-interval",
        "200ms",
    ])
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der(&issuer.pem))).unwrap();
    let listeners = [
        ("grpc", server.grpc_addr, b"h2".as_slice()),
        (
            "otlp-grpc",
            server.otlp_grpc_addr.unwrap(),
            b"h2".as_slice(),
        ),
        (
            "otlp-http",
            server.otlp_http_addr.unwrap(),
            b"http/1.1".as_slice(),
        ),
    ];
    for (name, addr, alpn) in listeners {
        assert_eq!(
            served_certificate(addr, &roots, alpn).await.as_deref(),
            Ok(der(&cert1).as_slice()),
            "{name}"
        );
    }

    // Clients that keep sending through the rotation, each on one connection opened now.
    let stop = Arc::new(AtomicBool::new(false));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&issuer.pem))
        .domain_name("localhost");
    let keda_channel = Channel::from_shared(format!("https://{}", server.grpc_addr))
        .unwrap()
        .tls_config(tls.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let otlp_channel = Channel::from_shared(format!("https://{}", server.otlp_grpc_addr.unwrap()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(issuer.pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let http_url = format!(
        "https://localhost:{}/v1/traces",
        server.otlp_http_addr.unwrap().port()
    );
    let tallies: [Arc<Tally>; 3] = Default::default();
    let mut senders = tokio::task::JoinSet::new();
    {
        let (stop, tally) = (stop.clone(), tallies[0].clone());
        let mut client = ExternalScalerClient::new(keda_channel);
        senders.spawn(async move {
            let trigger = so(
                "tls",
                &[("signal", "rps"), ("service", "api"), ("threshold", "1")],
            );
            while !stop.load(Ordering::Relaxed) {
                tally.record(client.get_metric_spec(trigger.clone()).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    {
        let (stop, tally) = (stop.clone(), tallies[1].clone());
        let mut client = TraceServiceClient::new(otlp_channel);
        senders.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tally.record(client.export(ExportTraceServiceRequest::default()).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    {
        let (stop, tally) = (stop.clone(), tallies[2].clone());
        senders.spawn(async move {
            let body = ExportTraceServiceRequest::default().encode_to_vec();
            while !stop.load(Ordering::Relaxed) {
                let sent = http
                    .post(&http_url)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                tally.record(sent);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    // A half-done rotation (the new certificate with the old key): refused, counted, and
    // the old certificate stays in service.
    volume.publish(&cert2, &key1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&server).await;
        let failing = listeners.iter().all(|(name, _, _)| {
            sample(
                &text,
                &format!("slo_scaler_tls_reload_failing{{listener=\"{name}\"}}"),
            ) == Some(1.0)
        });
        if failing {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mismatched files were never reported:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, addr, alpn) in listeners {
        assert_eq!(
            served_certificate(addr, &roots, alpn).await.as_deref(),
            Ok(der(&cert1).as_slice()),
            "{name} keeps the old certificate"
        );
    }

    // The whole rotation: every listener serves the new certificate to new handshakes.
    volume.publish(&cert2, &key2);
    for (name, addr, alpn) in listeners {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let served = served_certificate(addr, &roots, alpn).await;
            assert!(served.is_ok(), "{name}: a handshake failed: {served:?}");
            if served.as_deref() == Ok(der(&cert2).as_slice()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never served the new certificate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The senders go on a little on their connections after the swap.
    let after: Vec<u64> = tallies
        .iter()
        .map(|t| t.ok.load(Ordering::Relaxed))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tallies
        .iter()
        .zip(&after)
        .any(|(t, before)| t.ok.load(Ordering::Relaxed) <= *before)
    {
        assert!(tokio::time::Instant::now() < deadline, "a sender stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while senders.join_next().await.is_some() {}
    for (tally, (name, _, _)) in tallies.iter().zip(listeners) {
        assert_eq!(
            tally.failed.load(Ordering::Relaxed),
            0,
            "{name}: {}",
            tally.last_error.lock().unwrap()
        );
        assert!(tally.ok.load(Ordering::Relaxed) > 0, "{name}");
    }

    let text = scrape(&server).await;
    for (name, _, _) in listeners {
        let get = |series: &str| sample(&text, series).unwrap_or(-1.0);
        assert_eq!(
            get(&format!(
                "slo_scaler_tls_reloads_total{{listener=\"{name}\",outcome=\"loaded\"}}"
            )),
            1.0,
            "{name}\n{text}"
        );
        assert!(
            get(&format!(
                "slo_scaler_tls_reloads_total{{listener=\"{name}\",outcome=\"failed\"}}"
            )) >= 1.0,
            "{name}\n{text}"
        );
        assert_eq!(
            get(&format!(
                "slo_scaler_tls_reload_failing{{listener=\"{name}\"}}"
            )),
            0.0,
            "{name}\n{text}"
        );
    }
    server.shutdown().await.unwrap();
}

/// A bad file at start-up refuses the configuration, naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_otlp_certificates_refuse_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.crt").display().to_string();
    let err = crate::common::scaler::try_start_server(&[
        "--otlp-tls-cert-file",
        &missing,
        "--otlp-tls-key-file",
        &missing,
    ])
    .await
    .err()
    .expect("refused");
    let config = err
        .downcast_ref::<slo_scaler::config::ConfigError>()
        .unwrap_or_else(|| panic!("{err:#}"));
    assert!(
        config.to_string().starts_with("--otlp-tls-cert-file "),
        "{config}"
    );
    let err = crate::common::scaler::try_start_server(&["--tls-reload-interval", "0s"])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--tls-reload-interval"), "{err:#}");
}
