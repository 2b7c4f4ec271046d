//! Named Tempo backends: chosen by name, their connection errors, the shared HTTP client's
//! credentials (sent, rotated, never printed) and the configurations refused at start.

use super::*;

#[tokio::test]
async fn backends_are_chosen_by_name() {
    let a = FakeTempo::start([Reply::Series(vec![fake::ungrouped("rate", &[1.0])])]).await;
    let b = FakeTempo::start([Reply::Series(vec![fake::ungrouped("rate", &[2.0])])]).await;
    let setup = Setup::new(
        vec![
            backend("default", &a.url, None, TempoApi::Instant),
            backend("eu", &b.url, Some("eu-tenant"), TempoApi::Instant),
        ],
        TIMEOUT,
    );
    assert!(setup.sources.tempo.has_backend("eu"));
    assert!(!setup.sources.tempo.has_backend("us"));
    let mut q = query(TraceMeasure::Rate);
    q.backend = "eu".into();
    assert_eq!(setup.fetch(&q).await, Ok(Reading::Value(Some(2.0))));
    assert!(a.requests().is_empty());
    assert_eq!(b.only_request().header("x-scope-orgid"), Some("eu-tenant"));

    q.backend = "us".into();
    assert_eq!(
        setup.fetch(&q).await,
        Err(SourceError::UnknownBackend {
            kind: "tempo",
            name: "us".into()
        })
    );
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    // Bind a port, then free it, so nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let setup = Setup::new(
        vec![backend("default", &url, None, TempoApi::Instant)],
        TIMEOUT,
    );
    let err = setup.fetch(&p95()).await.unwrap_err();
    assert_eq!(kind(&err), "connect", "{err}");
    assert!(!err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn credentials_of_the_shared_http_client_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let fake = FakeTempo::start([Reply::Series(vec![]), Reply::Series(vec![])]).await;
    let mut config = backend("default", &fake.url, None, TempoApi::Instant);
    config.http.bearer_token_file = Some(token);
    config.http.headers = vec![("X-Extra".into(), "yes".into())];
    config.http.header_files = vec![("X-Api-Key".into(), key.clone())];
    let printed_config = format!("{config:?}");
    let setup = Setup::new(vec![config], TIMEOUT);
    setup.fetch(&p95()).await.unwrap();
    let req = fake.only_request();
    assert_eq!(req.header("authorization"), Some("Bearer s3cret-token"));
    assert_eq!(req.header("x-extra"), Some("yes"));
    assert_eq!(req.header("x-api-key"), Some("s3cret-key"));
    // Rotated: the file is read on every request.
    std::fs::write(&key, "s3cret-rotated").unwrap();
    setup.fetch(&p95()).await.unwrap();
    assert_eq!(
        fake.requests()[1].header("x-api-key"),
        Some("s3cret-rotated")
    );
    // A header file that cannot be read fails the call, naming the file, not the secret.
    std::fs::write(&key, "s3cret\nbroken").unwrap();
    let err = setup.fetch(&p95()).await.unwrap_err();
    assert_eq!(kind(&err), "unavailable", "{err}");
    assert!(err.to_string().contains("x-api-key"), "{err}");
    assert_eq!(fake.requests().len(), 2, "nothing sent without the header");
    for text in [
        printed_config,
        format!("{:?}", setup.sources.tempo),
        err.to_string(),
        format!("{err:?}"),
    ] {
        assert!(!text.contains("s3cret"), "{text}");
    }
}

/// The real binary, given a backend URL with a password: it refuses to start (exit 64)
/// and neither its log lines nor its error name the password.
#[test]
fn urls_with_passwords_are_refused_and_never_printed() {
    for flag in ["--tempo", "--prometheus"] {
        for log_format in ["json", "text"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
                .arg("serve")
                .args(common::scaler::LOOPBACK_ADDRS)
                .args([
                    "--log-format",
                    log_format,
                    flag,
                    "default=http://scaler:s3cret-pw@127.0.0.1:9/",
                ])
                .output()
                .unwrap();
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(64), "{flag}: {printed}");
            assert!(!printed.contains("s3cret"), "{flag}: {printed}");
            assert!(printed.contains("***@127.0.0.1:9"), "{flag}: {printed}");
            assert!(printed.contains("basic-auth file"), "{flag}: {printed}");
        }
    }
}

#[tokio::test]
async fn bad_backend_configs_are_refused() {
    let check = |backends: Vec<TempoBackendConfig>| {
        let (_, metrics) = Metrics::standalone();
        assert!(TempoSource::new(backends, TIMEOUT, Arc::new(metrics)).is_err());
    };
    check(vec![backend(
        "default",
        "not a url",
        None,
        TempoApi::Instant,
    )]);
    check(vec![backend(
        "default",
        "http://127.0.0.1:3200",
        Some("a b"),
        TempoApi::Instant,
    )]);
    check(vec![
        backend("default", "http://127.0.0.1:3200", None, TempoApi::Instant),
        backend("default", "http://127.0.0.1:3201", None, TempoApi::Range),
    ]);
}
