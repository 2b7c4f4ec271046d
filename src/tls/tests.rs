//! The reloading TLS configuration's tests: rotations, half-written files, bad files and
//! client CAs.

use super::*;
use crate::telemetry::new_registry;

/// A self-signed certificate for localhost: (certificate PEM, key PEM, DER).
fn self_signed() -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

struct Fixture {
    dir: tempfile::TempDir,
    files: TlsFiles,
    metrics: Metrics,
}

fn fixture(cert: &str, key: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: None,
        flag_prefix: "otlp-tls",
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    let metrics = Metrics::register(&mut new_registry());
    Fixture {
        dir,
        files,
        metrics,
    }
}

fn outcome(f: &Fixture, listener: &'static str, outcome: &'static str) -> u64 {
    f.metrics
        .tls_reloads
        .get_or_create(&TlsReloadLabels { listener, outcome })
        .get()
}

fn failing(f: &Fixture, listener: &'static str) -> i64 {
    f.metrics
        .tls_reload_failing
        .get_or_create(&ListenerLabels { listener })
        .get()
}

#[test]
fn unchanged_files_keep_the_configuration_and_changed_ones_replace_it() {
    let (cert, key, _) = self_signed();
    let f = fixture(&cert, &key);
    let tls = ReloadingConfig::load("otlp-grpc", f.files.clone(), ALPN_GRPC, &f.metrics).unwrap();
    let first = tls.config();
    assert_eq!(first.alpn_protocols, vec![b"h2".to_vec()]);
    assert_eq!(tls.reload().unwrap(), Reload::Unchanged);
    assert!(Arc::ptr_eq(&first, &tls.config()));

    let (cert2, key2, _) = self_signed();
    std::fs::write(&f.files.cert, &cert2).unwrap();
    std::fs::write(&f.files.key, &key2).unwrap();
    tls.reload_and_record();
    assert!(!Arc::ptr_eq(&first, &tls.config()));
    assert_eq!(tls.loaded().source.cert, cert2.as_bytes());
    assert_eq!(outcome(&f, "otlp-grpc", "loaded"), 1);
    assert_eq!(outcome(&f, "otlp-grpc", "failed"), 0);
    assert_eq!(failing(&f, "otlp-grpc"), 0);
}

#[test]
fn a_half_written_rotation_keeps_the_old_certificate_until_the_key_matches() {
    let (cert, key, _) = self_signed();
    let f = fixture(&cert, &key);
    let tls = ReloadingConfig::load("grpc", f.files.clone(), ALPN_GRPC, &f.metrics).unwrap();
    let first = tls.config();
    // The new certificate is written, its key not yet.
    let (cert2, key2, _) = self_signed();
    std::fs::write(&f.files.cert, &cert2).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("--otlp-tls-key-file")
            && err.to_string().contains("--otlp-tls-cert-file"),
        "{err}"
    );
    tls.reload_and_record();
    assert!(Arc::ptr_eq(&first, &tls.config()), "the old one stays");
    assert_eq!(outcome(&f, "grpc", "failed"), 1);
    assert_eq!(failing(&f, "grpc"), 1);
    // The key arrives: the next reload takes both.
    std::fs::write(&f.files.key, &key2).unwrap();
    tls.reload_and_record();
    assert_eq!(tls.loaded().source.cert, cert2.as_bytes());
    assert_eq!(outcome(&f, "grpc", "loaded"), 1);
    assert_eq!(failing(&f, "grpc"), 0);
}

#[test]
fn missing_or_malformed_files_are_named_and_keep_the_old_certificate() {
    let (cert, key, _) = self_signed();
    let f = fixture(&cert, &key);
    let tls = ReloadingConfig::load("otlp-http", f.files.clone(), ALPN_HTTP1, &f.metrics).unwrap();
    assert_eq!(tls.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    let first = tls.config();

    std::fs::remove_file(&f.files.cert).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.starts_with("--otlp-tls-cert-file "), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    // A key file that is not PEM: named, and its content never quoted.
    std::fs::write(&f.files.cert, &cert).unwrap();
    let secret =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==%%\n-----END PRIVATE KEY-----\n";
    std::fs::write(&f.files.key, secret).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.starts_with("--otlp-tls-key-file "), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
    std::fs::write(&f.files.key, "").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("holds no PEM private key"), "{err}");
    assert!(Arc::ptr_eq(&first, &tls.config()));

    // A certificate file holding no certificate.
    std::fs::write(&f.files.key, &key).unwrap();
    std::fs::write(&f.files.cert, "not a certificate\n").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
    assert!(Arc::ptr_eq(&first, &tls.config()));
}

#[test]
fn client_ca_files_are_loaded_and_checked() {
    let (cert, key, _) = self_signed();
    let mut f = fixture(&cert, &key);
    let ca_path = f.dir.path().join("ca.crt");
    f.files.client_ca = Some(ca_path.clone());
    // Missing at start: refused, naming the flag.
    let err = ReloadingConfig::load("grpc", f.files.clone(), ALPN_GRPC, &f.metrics)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("--otlp-tls-client-ca-file "), "{err}");
    std::fs::write(&ca_path, "nothing here").unwrap();
    let err = ReloadingConfig::load("grpc", f.files.clone(), ALPN_GRPC, &f.metrics)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
    // A CA (any certificate will do as a trust anchor) loads; a new one is reloaded.
    let (ca, _, _) = self_signed();
    std::fs::write(&ca_path, &ca).unwrap();
    let tls = ReloadingConfig::load("grpc", f.files.clone(), ALPN_GRPC, &f.metrics).unwrap();
    let (ca2, _, _) = self_signed();
    std::fs::write(&ca_path, &ca2).unwrap();
    assert_eq!(tls.reload().unwrap(), Reload::Loaded);
    assert_eq!(
        tls.loaded().source.client_ca.as_deref(),
        Some(ca2.as_bytes())
    );
}
