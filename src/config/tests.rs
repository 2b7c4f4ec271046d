//! The flags as the command line gives them, and what they resolve to.

use super::*;
use crate::source::tempo::TempoApi;
use clap::Parser;

/// `serve`'s arguments alone, as the command tree parses them.
#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

fn args(extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["slo-scaler-serve"];
    argv.extend_from_slice(extra);
    Serve::try_parse_from(argv).unwrap().args
}

#[test]
fn defaults_follow_the_product_spec() {
    let a = args(&[]);
    assert_eq!(a.grpc_addr.port(), 6000);
    assert_eq!(a.admin_addr.port(), 8080);
    assert_eq!(a.otlp.otlp_grpc_addr.port(), 4317);
    assert_eq!(a.otlp.otlp_http_addr.port(), 4318);
    assert_eq!(a.otlp.otlp_max_request_bytes, 4 << 20);
    a.otlp.validate().expect("the default OTLP flags are valid");
    let s = a.backends.resolve(true).unwrap();
    assert_eq!(s.parse.default_source, SourceKind::Otlp);
    let s = args(&[
        "--prometheus",
        "default=http://p:9090",
        "--cache-ttl",
        "500ms",
        "--min-cache-ttl",
        "100ms",
    ])
    .backends
    .resolve(true)
    .unwrap();
    assert_eq!(s.parse.default_source, SourceKind::Prometheus);
    assert_eq!(s.cache_ttl, Duration::from_millis(500));
}

#[test]
fn backend_options_attach_by_name() {
    let s = args(&[
        "--prometheus",
        "default=http://p:9090",
        "--prometheus",
        "thanos=https://t/",
        "--prometheus-bearer-token-file",
        "thanos=/var/run/token",
        "--prometheus-header",
        "thanos=X-Scope-OrgID: team-a",
    ])
    .backends
    .resolve(true)
    .unwrap();
    let thanos = s
        .prometheus
        .iter()
        .find(|b| b.http.name == "thanos")
        .unwrap();
    assert_eq!(thanos.http.bearer_token_file, Some("/var/run/token".into()));
    assert_eq!(
        thanos.http.headers,
        vec![("X-Scope-OrgID".into(), "team-a".into())]
    );
}

#[test]
fn header_files_attach_by_name() {
    let s = args(&[
        "--prometheus",
        "default=http://p:9090",
        "--prometheus-header-file",
        "default=X-Api-Key:/var/run/secrets/key",
        "--tempo",
        "t=http://t:3200",
        "--tempo-header-file",
        "t=Authorization: /var/run/secrets/tempo",
    ])
    .backends
    .resolve(true)
    .unwrap();
    assert_eq!(
        s.prometheus[0].http.header_files,
        vec![("X-Api-Key".into(), "/var/run/secrets/key".into())]
    );
    assert!(s.prometheus[0].http.headers.is_empty());
    assert_eq!(
        s.tempo[0].http.header_files,
        vec![("Authorization".into(), "/var/run/secrets/tempo".into())]
    );
    let err = args(&[
        "--tempo",
        "t=http://t:3200",
        "--tempo-header-file",
        "t=nopath",
    ])
    .backends
    .resolve(true)
    .unwrap_err();
    assert!(err.to_string().contains("--tempo-header-file"), "{err}");
}

#[test]
fn urls_with_passwords_are_not_echoed() {
    for flag in ["--prometheus", "--tempo"] {
        let err = args(&[flag, "http://user:s3cret@p:9090"])
            .backends
            .resolve(true)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("http://***@p:9090"), "{err}");
    }
}

#[test]
fn tempo_backends_collect_their_options() {
    let s = args(&[
        "--tempo",
        "default=http://tempo:3200",
        "--tempo-tenant",
        "default=team-a",
        "--tempo-api",
        "default=range",
        "--tempo-tenant-allow",
        "shop=team-a,team-b",
    ])
    .backends
    .resolve(true)
    .unwrap();
    assert_eq!(s.tempo[0].default_tenant.as_deref(), Some("team-a"));
    assert_eq!(s.tempo[0].api, TempoApi::Range);
    assert!(s
        .tenant_policy
        .tempo
        .check("tempo", "shop", Some("team-b"))
        .is_ok());
    assert!(s
        .tenant_policy
        .tempo
        .check("tempo", "other", Some("team-b"))
        .is_err());
}

#[test]
fn zero_durations_and_counts_are_refused_naming_the_flag() {
    for (flags, name) in [
        (&["--stream-interval", "0s"][..], "--stream-interval"),
        (&["--signal-expiry", "0ms"], "--signal-expiry"),
        (&["--shutdown-grace", "0s"], "--shutdown-grace"),
        (&["--max-signals", "0"], "--max-signals"),
    ] {
        let err = args(flags).validate().unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }
    let err = args(&["--max-stale", "30s"])
        .backends
        .resolve(true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--max-cache-ttl") && err.contains("--max-stale"),
        "{err}"
    );
    for (flags, name) in [
        (&["--cache-max-entries", "0"][..], "--cache-max-entries"),
        (&["--cache-max-bytes", "0"], "--cache-max-bytes"),
    ] {
        let err = args(flags).backends.resolve(true).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }
    assert!(args(&[]).validate().is_ok());
}

#[test]
fn bad_settings_are_refused() {
    let check = |extra: &[&str]| {
        assert!(args(extra).backends.resolve(true).is_err(), "{extra:?}");
    };
    check(&["--prometheus", "nourl"]);
    check(&["--prometheus", "a=http://x", "--prometheus", "a=http://y"]);
    check(&["--prometheus-bearer-token-file", "missing=/x"]);
    check(&[
        "--prometheus",
        "a=http://x",
        "--prometheus-header",
        "a=novalue",
    ]);
    check(&["--cache-ttl", "10m"]);
    check(&["--cache-ttl", "0s"]);
    check(&["--backend-timeout", "0s"]);
    check(&["--max-stale", "0s"]);
    check(&["--max-cache-ttl", "2m"]);
    check(&["--max-stale", "30s"]);
    check(&["--default-source", "sqs"]);
    // A default source with no backend to read from: every trigger that names no source
    // would fail, so the configuration is not valid and the server never reports ready.
    check(&["--default-source", "tempo"]);
    check(&["--default-source", "prometheus"]);
    check(&[
        "--default-source",
        "tempo",
        "--prometheus",
        "default=http://p:9090",
    ]);
    check(&["--conventions-file", "/nonexistent/conventions.json"]);
    check(&["--tempo-tenant", "nobackend=team-a"]);
    check(&["--tempo", "t=http://t:3200", "--tempo-api", "t=grpc"]);
    check(&["--tempo", "t=http://t:3200", "--tempo-tenant", "t=.."]);
    check(&["--tempo-tenant-allow", "team-a"]);
    assert!(args(&["--no-otlp"]).backends.resolve(false).is_err());
}

#[test]
fn bad_otlp_flags_are_refused_by_name() {
    let check = |flags: &[&str], flag: &str| {
        let err = args(flags).otlp.validate().expect_err("refused");
        assert!(
            matches!(err, ConfigError::Invalid(ref m) if m.starts_with(&format!("--{flag}: "))),
            "{flags:?}: {err}"
        );
    };
    check(&["--otlp-max-request-bytes", "0"], "otlp-max-request-bytes");
    check(&["--otlp-max-series", "0"], "otlp-max-series");
    check(&["--otlp-max-store-bytes", "0"], "otlp-max-store-bytes");
    check(&["--otlp-bucket-width", "0s"], "otlp-bucket-width");
    check(&["--otlp-retention", "500ms"], "otlp-retention");
    check(&["--otlp-rate-settle", "0s"], "otlp-rate-settle");
    check(&["--otlp-rate-settle", "10m"], "otlp-rate-settle");
    check(
        &["--otlp-max-inflight-bytes", "0"],
        "otlp-max-inflight-bytes",
    );
    check(
        &[
            "--otlp-max-request-bytes",
            "1048576",
            "--otlp-max-inflight-bytes",
            "10485759",
        ],
        "otlp-max-inflight-bytes",
    );
    args(&[
        "--otlp-max-request-bytes",
        "1048576",
        "--otlp-max-inflight-bytes",
        "10485760",
    ])
    .otlp
    .validate()
    .expect("one maximum-size request fits");
}

#[test]
fn sigv4_backends() {
    let s = args(&[
        "--prometheus",
        "amp=https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1",
        "--prometheus",
        "local=http://prometheus:9090",
        "--prometheus-sigv4",
        "amp=eu-west-1",
    ])
    .backends
    .resolve(true)
    .unwrap();
    let region = |name: &str| {
        s.prometheus
            .iter()
            .find(|b| b.http.name == name)
            .unwrap()
            .sigv4_region
            .clone()
    };
    assert_eq!(region("amp").as_deref(), Some("eu-west-1"));
    assert_eq!(region("local"), None);
}

#[test]
fn bad_sigv4_flags_are_refused_by_name() {
    let check = |extra: &[&str], expect: &str| {
        let err = args(extra).backends.resolve(true).unwrap_err().to_string();
        assert!(
            err.contains("prometheus-sigv4") && err.contains(expect),
            "{extra:?}: {err}"
        );
    };
    check(&["--prometheus-sigv4", "amp=eu-west-1"], "amp");
    check(
        &[
            "--prometheus",
            "amp=http://x",
            "--prometheus-sigv4",
            "amp=EU",
        ],
        "amp=EU",
    );
    check(
        &["--prometheus", "amp=http://x", "--prometheus-sigv4", "amp"],
        "amp",
    );
    check(
        &[
            "--prometheus",
            "amp=http://x",
            "--prometheus-bearer-token-file",
            "amp=/token",
            "--prometheus-sigv4",
            "amp=eu-west-1",
        ],
        "Authorization",
    );
}

#[test]
fn prometheus_tenants() {
    let s = args(&[
        "--prometheus",
        "mimir=http://mimir:8080/prometheus",
        "--prometheus-tenant",
        "mimir=platform",
        "--prometheus-tenant-allow",
        "shop=shop,shared",
    ])
    .backends
    .resolve(true)
    .unwrap();
    assert_eq!(s.prometheus[0].default_tenant.as_deref(), Some("platform"));
    let policy = &s.tenant_policy.prometheus;
    assert!(policy.check("prometheus", "shop", Some("shared")).is_ok());
    assert!(policy.check("prometheus", "other", Some("shared")).is_err());
    // The Tempo policy is its own.
    assert!(!s.tenant_policy.tempo.is_restricted());
    assert!(s.has_namespace_policy());
    let check = |extra: &[&str], flag: &str| {
        let err = args(extra).backends.resolve(true).unwrap_err().to_string();
        assert!(err.contains(flag), "{extra:?}: {err}");
    };
    check(
        &["--prometheus-tenant", "nobackend=team-a"],
        "prometheus-tenant",
    );
    check(
        &["--prometheus", "m=http://m", "--prometheus-tenant", "m=a|b"],
        "prometheus-tenant",
    );
    check(
        &["--prometheus-tenant-allow", "shop"],
        "prometheus-tenant-allow",
    );
}

/// Values past the documented maxima are refused naming the flag, where they panicked (a
/// semaphore of 2^64 places, `Instant + 2^64 s`, `u32::MAX × --cache-max-entries`) or
/// wrapped (`--signal-expiry` of 2^64 ms read as 384 ms): every duration flag at most 7d,
/// `--max-signals` at most 1,000,000, `--cache-max-entries` at most 100,000,000, and
/// `--otlp-retention` at most 100,000 `--otlp-bucket-width`s.
#[test]
fn values_past_the_maxima_are_refused_naming_the_flag() {
    let huge = "18446744073709551615s";
    for flag in [
        "--max-stale",
        "--tls-reload-interval",
        "--signal-expiry",
        "--stream-interval",
        "--grpc-keepalive-interval",
        "--shutdown-grace",
        "--backend-timeout",
        "--cache-ttl",
        "--otlp-retention",
    ] {
        for value in [huge, "18446744073709552s", "8d"] {
            let err = Serve::try_parse_from(["slo-scaler-serve", flag, value])
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} accepted"))
                .to_string();
            assert!(err.contains(flag) && err.contains("7d"), "{flag}: {err}");
        }
    }
    args(&["--signal-expiry", "7d", "--tls-reload-interval", "7d"])
        .validate()
        .expect("7d is a duration flags take");

    let err = args(&["--max-signals", "18446744073709551615"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--max-signals") && err.contains("1000000"),
        "{err}"
    );
    args(&["--max-signals", "1000000"]).validate().unwrap();

    for entries in ["4294967298", "18446744073709551615", "100000001"] {
        let err = args(&["--cache-max-entries", entries])
            .backends
            .resolve(true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--cache-max-entries") && err.contains("100000000"),
            "{err}"
        );
    }
    args(&["--cache-max-entries", "100000000"])
        .backends
        .resolve(true)
        .unwrap();

    let err = args(&["--otlp-retention", "100001s"])
        .otlp
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--otlp-retention: "), "{err}");
    args(&["--otlp-retention", "100000s"])
        .otlp
        .validate()
        .unwrap();
}
