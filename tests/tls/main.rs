//! TLS and mTLS on the gRPC listener, as KEDA uses them (`enableTLS`, or a
//! TriggerAuthentication with `caCert`, `tlsClientCert`, `tlsClientKey`): certificates made
//! by rcgen, a real tonic client with rustls.

#[path = "../common/mod.rs"]
mod common;
mod otlp;
mod reload;

use std::path::Path;

use common::scaler::{so, start_server, try_start_server as try_start};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM).
pub fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![usage];
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// A server CA and certificate, a client CA and KEDA's client certificate, as files.
pub struct Pki {
    pub _dir: tempfile::TempDir,
    pub server_ca: Ca,
    pub keda: (String, String),
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: String,
    pub client_ca: Ca,
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("slo-scaler test server CA");
    let client_ca = ca("keda test client CA");
    let (server_cert, server_key) = leaf(
        &server_ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let keda = leaf(
        &client_ca,
        &["keda-operator"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        cert_file: write(dir.path(), "tls.crt", &server_cert),
        key_file: write(dir.path(), "tls.key", &server_key),
        client_ca_file: write(dir.path(), "client-ca.crt", &client_ca.pem),
        _dir: dir,
        server_ca,
        keda,
        client_ca,
    }
}

/// Connects over TLS, trusting `ca_pem`, presenting `identity` if given, and asks for a spec.
async fn ask(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<String, String> {
    let trigger = so(
        "tls",
        &[
            ("signal", "rps"),
            ("service", "api-gateway"),
            ("threshold", "10"),
        ],
    );
    ask_for(addr, ca_pem, identity, trigger).await
}

/// As [`ask`], for `trigger`.
async fn ask_for(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
    trigger: slo_scaler::proto::ScaledObjectRef,
) -> Result<String, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    ExternalScalerClient::new(channel)
        .get_metric_spec(trigger)
        .await
        .map(|r| r.into_inner().metric_specs[0].metric_name.clone())
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_client_certificates() {
    let Pki {
        _dir,
        server_ca,
        keda,
        cert_file,
        key_file,
        client_ca_file,
        ..
    } = pki();
    let rogue_ca = ca("someone else");
    let rogue = leaf(
        &rogue_ca,
        &["keda-operator"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    // TLS only: any client that trusts the server's CA gets in; plaintext does not.
    let server = start_server(&["--tls-cert-file", &cert_file, "--tls-key-file", &key_file]).await;
    let addr = server.grpc_addr;
    assert_eq!(
        ask(addr, &server_ca.pem, None).await.as_deref(),
        Ok("rps-api-gateway")
    );
    let plaintext = ExternalScalerClient::connect(format!("http://{addr}")).await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(mut c) => c
            .get_metric_spec(so(
                "x",
                &[("signal", "rps"), ("service", "a"), ("threshold", "1")],
            ))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a plaintext client must not be served by a TLS listener"
    );
    // A client that does not trust the server's CA refuses it.
    assert!(ask(addr, &rogue_ca.pem, None).await.is_err());
    server.shutdown().await.unwrap();

    // mTLS: only a certificate signed by the client CA gets in.
    let server = start_server(&[
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-client-ca-file",
        &client_ca_file,
    ])
    .await;
    let addr = server.grpc_addr;
    assert_eq!(
        ask(addr, &server_ca.pem, Some(&keda)).await.as_deref(),
        Ok("rps-api-gateway")
    );
    let no_cert = ask(addr, &server_ca.pem, None).await;
    assert!(no_cert.is_err(), "{no_cert:?}");
    let wrong_cert = ask(addr, &server_ca.pem, Some(&rogue)).await;
    assert!(wrong_cert.is_err(), "{wrong_cert:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_prometheus_is_trusted_through_the_configured_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let prom_ca = ca("monitoring CA");
    let (cert, key) = leaf(
        &prom_ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let cert_file = write(dir.path(), "prom.crt", &cert);
    let key_file = write(dir.path(), "prom.key", &key);
    let ca_file = write(dir.path(), "ca.crt", &prom_ca.pem);
    let prom =
        common::prometheus::PrometheusServer::start_tls(&[], &cert_file, &key_file, &prom_ca.pem)
            .await;
    assert!(prom.url().starts_with("https://"));
    let trigger = so(
        "raw",
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("query", "scalar(vector(7))"),
            ("threshold", "1"),
        ],
    );
    // With the CA bundle the value comes back.
    let backend = format!("default={}", prom.url());
    let ca_flag = format!("default={ca_file}");
    let mut scaler = common::scaler::Scaler::start(&[
        "--prometheus",
        &backend,
        "--prometheus-ca-file",
        &ca_flag,
    ])
    .await;
    assert_eq!(
        common::scaler::metric(&mut scaler.client, &trigger)
            .await
            .unwrap(),
        7.0
    );
    // Without it, the certificate is refused: an error, never a value.
    let mut untrusting = common::scaler::Scaler::start(&["--prometheus", &backend]).await;
    let err = common::scaler::metric(&mut untrusting.client, &trigger)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("prometheus/default"), "{err:?}");
}

/// A policy keyed by namespace trusts a field the caller writes: the server refuses to
/// start one unless callers are authenticated (mTLS) or the operator accepts the risk; with
/// mTLS, a caller without KEDA's certificate cannot reach it to forge a namespace.
#[tokio::test(flavor = "multi_thread")]
async fn namespace_policies_need_authenticated_callers() {
    let policies: [&[&str]; 4] = [
        &[
            "--tempo",
            "default=http://127.0.0.1:9",
            "--tempo-tenant-allow",
            "shop=team-a",
        ],
        &[
            "--prometheus",
            "default=http://127.0.0.1:9",
            "--backend-allow",
            "shop=default",
        ],
        &[
            "--prometheus",
            "default=http://127.0.0.1:9",
            "--raw-query-allow",
            "ops=default",
        ],
        &[
            "--aws-role-allow",
            "shop=arn:aws:iam::123456789012:role/reader",
        ],
    ];
    for policy in policies {
        let err = try_start(policy).await.err().expect("refused at start-up");
        let config = err
            .downcast_ref::<slo_scaler::config::ConfigError>()
            .unwrap_or_else(|| panic!("{policy:?}: {err:#}"));
        assert!(
            config.to_string().contains("--tls-client-ca-file")
                && config
                    .to_string()
                    .contains("--allow-unauthenticated-namespace-policy"),
            "{config}"
        );
        let mut acknowledged = policy.to_vec();
        acknowledged.push("--allow-unauthenticated-namespace-policy");
        try_start(&acknowledged)
            .await
            .unwrap()
            .shutdown()
            .await
            .unwrap();
    }

    let Pki {
        _dir,
        server_ca,
        keda,
        cert_file,
        key_file,
        client_ca_file,
        ..
    } = pki();
    let server = try_start(&[
        "--tempo",
        "default=http://127.0.0.1:9",
        "--tempo-tenant-allow",
        "shop=team-a",
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-client-ca-file",
        &client_ca_file,
    ])
    .await
    .unwrap();
    let tenant_a = |namespace: &str| {
        let mut r = so(
            "payments",
            &[
                ("signal", "errorRate"),
                ("source", "tempo"),
                ("service", "payment-service"),
                ("tenant", "team-a"),
                ("threshold", "3%"),
            ],
        );
        r.namespace = namespace.to_string();
        r
    };
    let addr = server.grpc_addr;
    // KEDA (with its client certificate) asking for shop's ScaledObject: allowed.
    assert_eq!(
        ask_for(addr, &server_ca.pem, Some(&keda), tenant_a("shop"))
            .await
            .as_deref(),
        Ok("errorrate-payment-service")
    );
    // Another namespace naming team-a's tenant: denied by the policy.
    let denied = ask_for(addr, &server_ca.pem, Some(&keda), tenant_a("billing")).await;
    assert!(
        denied
            .as_ref()
            .is_err_and(|e| e.contains("PermissionDenied")),
        "{denied:?}"
    );
    // A pod without KEDA's certificate writing namespace "shop": never reaches the policy.
    let forged = ask_for(addr, &server_ca.pem, None, tenant_a("shop")).await;
    assert!(forged.is_err(), "{forged:?}");
    server.shutdown().await.unwrap();
}

/// The admin port's `/metrics`.
pub async fn scrape(server: &slo_scaler::server::Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.admin_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body")
}

/// The value of the sample written `series` (name and labels, as exposed) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}
