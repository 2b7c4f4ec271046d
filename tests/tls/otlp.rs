//! TLS on the OTLP receivers, with the official OpenTelemetry Python exporters
//! (opentelemetry-exporter-otlp-proto-grpc and -http, in the venv scripts/check-deploy.sh
//! fills) configured the way a Deployment configures them: `https://` endpoints and the
//! certificate variables of the OTLP exporter specification
//! (opentelemetry-specification `protocol/exporter.md`: `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`,
//! `_CLIENT_KEY`, `_CLIENT_CERTIFICATE`), read by the exporters' own code
//! (`exporter/otlp/proto/grpc/exporter.py` `_get_credentials`,
//! `exporter/otlp/proto/http/_common` `_build_transport`).

use std::path::Path;
use std::process::Command;

use rcgen::ExtendedKeyUsagePurpose;
use slo_scaler::server::Server;

use crate::common::scaler::start_server;
use crate::{ca, leaf, pki, write, Pki};

/// Runs the Python exporter: `Ok(stdout)` when it reports SUCCESS, else `Err(output)`.
fn python_export(
    protocol: &str,
    endpoint: &str,
    ca_file: &str,
    client: Option<(&str, &str)>,
    spans: usize,
) -> Result<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-test/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/check-deploy.sh --install-only to create it",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca_file)
        // A refused handshake is retried until this timeout (seconds): keep it short.
        .env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        // requests lets these override a session's `verify` (the exporter's CA file):
        // psf/requests#3829, `Session.merge_environment_settings`.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE")
        .arg(root.join("tests/tls/otlp_export.py"))
        .arg(protocol)
        .arg("order-service")
        .arg(spans.to_string());
    if let Some((cert, key)) = client {
        cmd.env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", cert)
            .env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", key);
    }
    let out = cmd.output().expect("run the Python exporter");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() && stdout.trim() == "SUCCESS" {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `slo_scaler_otlp_spans_total{outcome="accepted"}` from the admin port.
pub async fn accepted_spans(server: &Server) -> u64 {
    let text = crate::scrape(server).await;
    crate::sample(&text, "slo_scaler_otlp_spans_total{outcome=\"accepted\"}").unwrap_or(0.0) as u64
}

fn endpoints(server: &Server) -> (String, String) {
    let grpc = server.otlp_grpc_addr.expect("receiver runs").port();
    let http = server.otlp_http_addr.expect("receiver runs").port();
    (
        format!("https://localhost:{grpc}"),
        format!("https://localhost:{http}/v1/traces"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_exporters_send_over_tls_and_mtls() {
    let Pki {
        _dir,
        server_ca,
        cert_file,
        key_file,
        client_ca_file,
        client_ca,
        keda: _,
    } = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "server-ca.crt", &server_ca.pem);

    // TLS only: the exporters trusting the server's CA deliver; the KEDA port is plaintext.
    let server = start_server(&[
        "--otlp-tls-cert-file",
        &cert_file,
        "--otlp-tls-key-file",
        &key_file,
    ])
    .await;
    let (grpc, http) = endpoints(&server);
    let ca_path = ca_file.clone();
    let (g, h) = (grpc.clone(), http.clone());
    let results = tokio::task::spawn_blocking(move || {
        (
            python_export("grpc", &g, &ca_path, None, 5),
            python_export("http", &h, &ca_path, None, 7),
        )
    })
    .await
    .unwrap();
    assert!(results.0.is_ok(), "OTLP/gRPC over TLS: {:?}", results.0);
    assert!(results.1.is_ok(), "OTLP/HTTP over TLS: {:?}", results.1);
    assert_eq!(accepted_spans(&server).await, 12);
    // An exporter that does not trust the server's CA refuses it: nothing is delivered.
    let rogue = write(dir.path(), "rogue-ca.crt", &ca("someone else").pem);
    let (g, h) = (grpc.clone(), http.clone());
    let results = tokio::task::spawn_blocking(move || {
        (
            python_export("grpc", &g, &rogue, None, 1),
            python_export("http", &h, &rogue, None, 1),
        )
    })
    .await
    .unwrap();
    assert!(results.0.is_err() && results.1.is_err(), "{results:?}");
    assert_eq!(accepted_spans(&server).await, 12);
    server.shutdown().await.unwrap();

    // mTLS: a sender's certificate signed by the client CA is required.
    let server = start_server(&[
        "--otlp-tls-cert-file",
        &cert_file,
        "--otlp-tls-key-file",
        &key_file,
        "--otlp-tls-client-ca-file",
        &client_ca_file,
    ])
    .await;
    let (grpc, http) = endpoints(&server);
    let sender = leaf(
        &client_ca,
        &["order-service"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let sender_cert = write(dir.path(), "sender.crt", &sender.0);
    let sender_key = write(dir.path(), "sender.key", &sender.1);
    let outsider = leaf(
        &ca("someone else"),
        &["order-service"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let outsider_cert = write(dir.path(), "outsider.crt", &outsider.0);
    let outsider_key = write(dir.path(), "outsider.key", &outsider.1);
    let results = tokio::task::spawn_blocking(move || {
        let with = Some((sender_cert.as_str(), sender_key.as_str()));
        let wrong = Some((outsider_cert.as_str(), outsider_key.as_str()));
        [
            python_export("grpc", &grpc, &ca_file, with, 3),
            python_export("http", &http, &ca_file, with, 4),
            python_export("grpc", &grpc, &ca_file, None, 1),
            python_export("http", &http, &ca_file, None, 1),
            python_export("grpc", &grpc, &ca_file, wrong, 1),
            python_export("http", &http, &ca_file, wrong, 1),
        ]
    })
    .await
    .unwrap();
    assert!(
        results[0].is_ok(),
        "gRPC with a client certificate: {:?}",
        results[0]
    );
    assert!(
        results[1].is_ok(),
        "HTTP with a client certificate: {:?}",
        results[1]
    );
    for (i, refused) in results[2..].iter().enumerate() {
        assert!(refused.is_err(), "case {i} must be refused: {refused:?}");
    }
    assert_eq!(accepted_spans(&server).await, 7);
    let text = crate::scrape(&server).await;
    for listener in ["otlp-grpc", "otlp-http"] {
        let failures = crate::sample(
            &text,
            &format!("slo_scaler_tls_handshake_failures_total{{listener=\"{listener}\"}}"),
        )
        .unwrap_or(0.0);
        assert!(failures >= 2.0, "{listener}: {failures}\n{text}");
    }
    server.shutdown().await.unwrap();
}
