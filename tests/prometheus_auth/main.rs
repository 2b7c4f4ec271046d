//! Prometheus backends behind authentication, tenants and paths: AWS SigV4 (Amazon
//! Managed Service for Prometheus), `tenant` → `X-Scope-OrgID` for Mimir / Cortex /
//! Thanos receive (`mimir.rs`), and base URLs with a path (a `--web.route-prefix`,
//! VictoriaMetrics' `/select/0/prometheus`), end to end over KEDA's gRPC calls to the
//! scaler.
//!
//! The SigV4 backend is `aps_verifier.py`: it recomputes every request's signature with
//! botocore's own SigV4 signer (an implementation independent of ours) and answers like
//! Prometheus' `/api/v1/query`. It needs botocore in `.venv-test`
//! (`scripts/check-deploy.sh --install-only`).

#[path = "../common/mod.rs"]
mod common;
mod mimir;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Once;

use common::scaler::{metric, so, Scaler};

/// The static test credentials the scaler finds in its environment (the first link of
/// the AWS default chain), and the verifier accepts.
const ACCESS_KEY: &str = "AKIDPROMAUTHTEST";
const SECRET_KEY: &str = "promauth/test+secret";
const SESSION_TOKEN: &str = "promauth-session-token";

/// Puts the test credentials in the process' environment once, before any scaler
/// starts; every test of this suite uses the same ones (other credentials are tested by
/// giving the verifier other expectations). No profile files, no instance metadata.
fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_SESSION_TOKEN", SESSION_TOKEN);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/aws-config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        );
    });
}

fn python() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python");
    assert!(
        path.exists(),
        "{} missing: the SigV4 tests check signatures with botocore; run \
         `scripts/check-deploy.sh --install-only` once",
        path.display()
    );
    path
}

/// `aps_verifier.py` on a free loopback port, killed on drop.
struct Verifier {
    child: Child,
    lines: BufReader<ChildStdout>,
    url: String,
}

impl Verifier {
    /// Accepts requests signed for `region` with the given credentials, and answers `value`.
    fn start(region: &str, value: &str, access_key: &str, secret_key: &str) -> Verifier {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus_auth/aps_verifier.py");
        let mut child = Command::new(python())
            .arg(script)
            .args([region, value])
            .env("VERIFY_AWS_ACCESS_KEY_ID", access_key)
            .env("VERIFY_AWS_SECRET_ACCESS_KEY", secret_key)
            .env("VERIFY_AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aps_verifier.py");
        let mut lines = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        lines.read_line(&mut first).expect("verifier output");
        let port = first
            .trim()
            .strip_prefix("port ")
            .unwrap_or_else(|| panic!("verifier said {first:?}"))
            .to_string();
        Verifier {
            child,
            lines,
            url: format!("http://127.0.0.1:{port}/workspaces/ws-promauth"),
        }
    }

    /// The verifier's verdict on the next request (`ok` or `denied: …`).
    fn verdict(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("verifier output");
        line.trim().to_string()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn scaler(url: &str, region: &str) -> Scaler {
    aws_env();
    let backend = format!("amp={url}");
    let sigv4 = format!("amp={region}");
    Scaler::start(&["--prometheus", &backend, "--prometheus-sigv4", &sigv4]).await
}

/// A raw-query trigger on backend `amp`; the query is named after the trigger, so no two
/// triggers share a cache entry.
fn trigger(name: &str) -> slo_scaler::proto::ScaledObjectRef {
    let query = format!("sum(rate(http_requests_total{{job=\"{name}\"}}[1m]))");
    so(
        name,
        &[
            ("signal", "query"),
            ("source", "prometheus"),
            ("backend", "amp"),
            ("query", &query),
            ("threshold", "10"),
        ],
    )
}

#[tokio::test]
async fn signed_queries_pass_botocore_and_their_value_comes_through() {
    let mut amp = Verifier::start("us-west-2", "42.5", ACCESS_KEY, SECRET_KEY);
    let mut s = scaler(&amp.url, "us-west-2").await;
    let value = metric(&mut s.client, &trigger("signed"))
        .await
        .expect("a value");
    assert_eq!(value, 42.5);
    assert_eq!(amp.verdict(), "ok");
}

/// Asks once and returns the gRPC status and the verifier's verdict.
async fn refused(amp: &mut Verifier, region: &str) -> (tonic::Status, String) {
    let mut s = scaler(&amp.url, region).await;
    let status = metric(&mut s.client, &trigger("refused"))
        .await
        .expect_err("never a value");
    (status, amp.verdict())
}

#[tokio::test]
async fn a_wrong_region_is_refused_never_a_value() {
    let mut amp = Verifier::start("us-west-2", "42.5", ACCESS_KEY, SECRET_KEY);
    let (status, verdict) = refused(&mut amp, "eu-west-1").await;
    assert!(verdict.contains("scoped to a valid region"), "{verdict}");
    // A backend's 401 or 403 is the backend refusing the scaler's credentials, not KEDA
    // lacking a permission: `Unavailable`, like any backend failure (product spec, "Values,
    // caching, failure"), with the backend's own words in the message.
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("access denied"), "{status:?}");
    let msg = status.message();
    assert!(
        msg.contains("prometheus/amp") && msg.contains("scoped to a valid region"),
        "{msg}"
    );
}

#[tokio::test]
async fn credentials_the_backend_does_not_accept_are_refused() {
    // The verifier knows the key with another secret: as after a rotation, or a wrong key.
    let mut amp = Verifier::start("us-west-2", "42.5", ACCESS_KEY, "another-secret");
    let (status, verdict) = refused(&mut amp, "us-west-2").await;
    assert!(
        verdict.contains("signature we calculated does not match"),
        "{verdict}"
    );
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("prometheus/amp"), "{status:?}");
    assert!(!status.message().contains(SECRET_KEY), "{status:?}");
}

#[tokio::test]
async fn an_unknown_access_key_is_refused() {
    let mut amp = Verifier::start("us-west-2", "42.5", "AKIDSOMEONEELSE", SECRET_KEY);
    let (status, verdict) = refused(&mut amp, "us-west-2").await;
    assert!(
        verdict.contains("security token included in the request is invalid"),
        "{verdict}"
    );
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

mod tamper {
    //! A proxy between the scaler and the verifier that can change one byte of the body
    //! after signing: the signature covers the body, so the verifier must refuse it.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use axum::body::{to_bytes, Body};
    use axum::extract::{Request, State};
    use axum::response::Response;
    use axum::Router;

    #[derive(Clone)]
    pub struct Proxy {
        pub upstream: String,
        pub tamper: Arc<AtomicBool>,
    }

    pub async fn start(proxy: Proxy) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(forward).with_state(proxy);
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn forward(State(p): State<Proxy>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let mut body = to_bytes(body, 1 << 20).await.unwrap().to_vec();
        if p.tamper.load(Ordering::SeqCst) {
            // `query=sum(…` → `query=min(…`: same length, another query.
            let at = body
                .windows(3)
                .position(|w| w == b"sum")
                .expect("sum in body");
            body[at..at + 3].copy_from_slice(b"min");
        }
        let mut out = reqwest::Client::new().post(format!("{}{}", p.upstream, parts.uri));
        for (k, v) in &parts.headers {
            out = out.header(k, v);
        }
        let resp = out.body(body).send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        Response::builder()
            .status(status.as_u16())
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap()
    }
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut amp = Verifier::start("us-west-2", "7", ACCESS_KEY, SECRET_KEY);
    let origin = amp
        .url
        .trim_end_matches("/workspaces/ws-promauth")
        .to_string();
    let tamper = Arc::new(AtomicBool::new(false));
    let proxy = tamper::start(tamper::Proxy {
        upstream: origin,
        tamper: tamper.clone(),
    })
    .await;
    let mut s = scaler(&format!("{proxy}/workspaces/ws-promauth"), "us-west-2").await;
    // Through the proxy, untouched: signed and accepted.
    assert_eq!(
        metric(&mut s.client, &trigger("through")).await.unwrap(),
        7.0
    );
    assert_eq!(amp.verdict(), "ok");
    tamper.store(true, Ordering::SeqCst);
    let status = metric(&mut s.client, &trigger("tampered"))
        .await
        .expect_err("never a value");
    let verdict = amp.verdict();
    assert!(
        verdict.contains("signature we calculated does not match"),
        "{verdict}"
    );
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

/// `--prometheus NAME=URL` with a path: the query goes to `PATH/api/v1/query` of a real
/// Prometheus started with `--web.route-prefix` (what VictoriaMetrics' `/select/0/prometheus`
/// and Thanos behind a path-routing proxy also need).
#[tokio::test]
async fn a_base_url_with_a_path_reaches_prometheus_under_its_route_prefix() {
    let exporter = common::exporter::Exporter::start().await;
    exporter.set_gauge("queue_backlog", 12.0);
    let prom = common::prometheus::PrometheusServer::start_under_prefix(
        &[exporter.addr],
        "/select/0/prometheus",
    )
    .await;
    prom.wait_for_data("max(queue_backlog)").await;
    let url = prom.url();
    assert!(url.ends_with("/select/0/prometheus"), "{url}");
    let bare = url.trim_end_matches("/select/0/prometheus").to_string();
    let flags = [
        format!("prefixed={url}"),
        format!("slash={url}/"),
        format!("bare={bare}"),
    ];
    let mut s = Scaler::start(&[
        "--prometheus",
        &flags[0],
        "--prometheus",
        &flags[1],
        "--prometheus",
        &flags[2],
    ])
    .await;
    let ask = |backend: &str| {
        so(
            &format!("backlog-{backend}"),
            &[
                ("signal", "query"),
                ("source", "prometheus"),
                ("backend", backend),
                ("query", "max(queue_backlog)"),
                ("threshold", "5"),
            ],
        )
    };
    assert_eq!(metric(&mut s.client, &ask("prefixed")).await.unwrap(), 12.0);
    assert_eq!(metric(&mut s.client, &ask("slash")).await.unwrap(), 12.0);
    // Without the prefix Prometheus has no such route: an error, never a value.
    let status = metric(&mut s.client, &ask("bare"))
        .await
        .expect_err("no route");
    assert!(status.message().contains("prometheus/bare"), "{status:?}");
}

/// The scaler binary in its own process, with an environment of its own: the AWS default
/// chain finds only what `config` (an AWS config file) gives it. Killed on drop.
struct OwnProcess {
    child: Child,
    grpc: String,
    _home: tempfile::TempDir,
}

impl OwnProcess {
    async fn start(config: &str) -> OwnProcess {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("aws-config"), config).unwrap();
        let grpc = format!("127.0.0.1:{}", common::free_port());
        let admin = format!("127.0.0.1:{}", common::free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
            .args(["serve", "--no-otlp", "--log-format", "text"])
            .args(["--grpc-addr", &grpc, "--admin-addr", &admin])
            // Nothing listens on port 9: a request sent unsigned would fail to connect,
            // which the assertions on the message tell apart.
            .args([
                "--prometheus",
                "amp=http://127.0.0.1:9/workspaces/ws-promauth",
            ])
            .args(["--prometheus-sigv4", "amp=us-west-2"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("AWS_CONFIG_FILE", home.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slo-scaler");
        let ready = format!("http://{admin}/readyz");
        for _ in 0..300 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        OwnProcess {
            child,
            grpc,
            _home: home,
        }
    }

    async fn ask(&self) -> tonic::Status {
        let mut client = slo_scaler::proto::external_scaler_client::ExternalScalerClient::connect(
            format!("http://{}", self.grpc),
        )
        .await
        .expect("connect to the scaler");
        metric(&mut client, &trigger("own"))
            .await
            .expect_err("never a value")
    }
}

impl Drop for OwnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials the AWS default chain hands out already expired (aws-config's
/// `credential_process` passes the process' `Expiration` on): refused before signing.
#[tokio::test]
async fn expired_credentials_are_unavailable_never_a_value() {
    let process = r#"{"Version": 1, "AccessKeyId": "AKIDEXPIRED", "SecretAccessKey": "old", "SessionToken": "old", "Expiration": "2020-01-01T00:00:00Z"}"#;
    let scaler = OwnProcess::start(&format!(
        "[default]\ncredential_process = printf '%s' '{process}'\n"
    ))
    .await;
    let status = scaler.ask().await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let msg = status.message();
    assert!(
        msg.contains("prometheus/amp")
            && msg.contains("region us-west-2")
            && msg.contains("the AWS credentials expired at 2020-01-01T00:00:00Z"),
        "{msg}"
    );
}

#[tokio::test]
async fn no_credentials_are_unavailable_never_a_value() {
    let scaler = OwnProcess::start("[default]\n").await;
    let status = scaler.ask().await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let msg = status.message();
    assert!(
        msg.contains("prometheus/amp") && msg.contains("no usable AWS credentials"),
        "{msg}"
    );
}
