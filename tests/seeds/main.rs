//! The seed services' own instrumentation, for real: a tiny HTTP service per language,
//! instrumented the way the seeds are (scripts/real/seeds/: the Go SDK with otelhttp;
//! Python under `opentelemetry-instrument`; Node.js with auto-instrumentations-node
//! exporting OTLP/HTTP JSON; a plain JDK HTTP server under the OpenTelemetry Java agent),
//! installed by `scripts/real/build.sh` at the versions in `scripts/real/versions.env`,
//! exporting to the embedded store's receivers.
//!
//! Each service answers a known schedule of latencies and statuses, and keeps every span
//! it made (a file exporter or span processor of its own) as the truth: the store's
//! p50/p95/p99 must lie within the sketch's 1 % of the exact quantiles of the truth's
//! server spans, and the error ratio, the span count and the rate must be exact.

#[path = "../common/mod.rs"]
mod common;
#[path = "../otlp/harness.rs"]
#[allow(dead_code)] // The suite uses part of the OTLP suite's harness.
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::collector::part;
use futures::StreamExt as _;
use harness::{assert_close, exact_quantile, latency, Harness, Planned};
use slo_scaler::signal::TraceMeasure;
use slo_scaler::source::otlp::DEFAULT_MAX_MESSAGE_BYTES;

/// The window every read covers: the whole run.
const WINDOW_S: u64 = 300;
/// How far ahead of the wall clock the store clock starts: the run must end before it.
const AHEAD: Duration = Duration::from_secs(240);

/// One request of the load: how long the handler sleeps, and the status it answers.
fn schedule(n: usize) -> Vec<(u64, u16)> {
    const MS: [u64; 8] = [3, 8, 15, 25, 40, 60, 90, 150];
    (0..n)
        .map(|i| {
            let ms = MS[i % 8] + (i as u64 * 13) % 7;
            let status = match i {
                _ if i % 10 == 3 => 500,
                _ if i % 29 == 7 => 503,
                // A client error is not a server span's error (HTTP semantic conventions).
                _ if i % 17 == 5 => 404,
                _ => 200,
            };
            (ms, status)
        })
        .collect()
}

/// One span of a service's truth.
#[derive(Debug, Clone)]
struct TruthSpan {
    service: String,
    server: bool,
    duration_ns: u64,
    error: bool,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of an RFC 3339 time as Go's `time.RFC3339Nano` writes it
/// (`2026-12-04T11:50:01.123456789Z`, or with a `+hh:mm` offset).
fn rfc3339_ns(s: &str) -> u64 {
    let bad = || panic!("not an RFC 3339 time: {s}");
    let num = |r: std::ops::Range<usize>| -> i64 {
        s.get(r).and_then(|x| x.parse().ok()).unwrap_or_else(bad)
    };
    let days = days_from_civil(num(0..4), num(5..7), num(8..10));
    let mut secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let rest = &s[19..];
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().unwrap_or_else(|_| bad());
    if zone != "Z" {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let h: i64 = zone
            .get(1..3)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(bad);
        let m: i64 = zone
            .get(4..6)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(bad);
        secs -= sign * (h * 3600 + m * 60);
    }
    (secs * 1_000_000_000 + nanos) as u64
}

/// A JSON number or a string holding one (OTLP JSON writes 64-bit integers as strings).
fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// The Go stdout exporter's spans, one JSON object a line (go.opentelemetry.io/otel
/// `exporters/stdout/stdouttrace`, `SpanStub`): `SpanKind` 2 is server
/// (`trace.SpanKindServer`), `Status.Code` "Error".
fn truth_go(text: &str) -> Vec<TruthSpan> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a stdouttrace line");
            let service = v["Resource"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["Key"] == "service.name")
                .and_then(|a| a["Value"]["Value"].as_str())
                .unwrap_or_default()
                .to_string();
            let start = rfc3339_ns(v["StartTime"].as_str().expect("StartTime"));
            let end = rfc3339_ns(v["EndTime"].as_str().expect("EndTime"));
            TruthSpan {
                service,
                server: v["SpanKind"] == 2,
                duration_ns: end - start,
                error: v["Status"]["Code"] == "Error",
            }
        })
        .collect()
}

/// The lines the Python and Node.js services' own span processors write.
fn truth_lines(text: &str) -> Vec<TruthSpan> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a truth line");
            TruthSpan {
                service: v["service"].as_str().unwrap_or_default().to_string(),
                server: v["kind"] == "SERVER",
                duration_ns: u64_of(&v["end_ns"]) - u64_of(&v["start_ns"]),
                error: v["error"] == true,
            }
        })
        .collect()
}

/// The Java agent's `logging-otlp` exporter: one OTLP JSON `ResourceSpans` a log line
/// (opentelemetry-java `exporters/logging-otlp`, `OtlpJsonLoggingSpanExporter`), enums
/// as numbers (`SPAN_KIND_SERVER` = 2, `STATUS_CODE_ERROR` = 2).
fn truth_otlp_json(text: &str) -> Vec<TruthSpan> {
    let mut spans = Vec::new();
    for line in text.lines() {
        let Some(at) = line.find("{\"resource\"") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line[at..]).expect("OTLP JSON");
        let service = v["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        let enum_is =
            |x: &serde_json::Value, n: u64, name: &str| x.as_u64() == Some(n) || x == name;
        for scope in v["scopeSpans"].as_array().into_iter().flatten() {
            for s in scope["spans"].as_array().into_iter().flatten() {
                spans.push(TruthSpan {
                    service: service.clone(),
                    server: enum_is(&s["kind"], 2, "SPAN_KIND_SERVER"),
                    duration_ns: u64_of(&s["endTimeUnixNano"]) - u64_of(&s["startTimeUnixNano"]),
                    error: enum_is(&s["status"]["code"], 2, "STATUS_CODE_ERROR"),
                });
            }
        }
    }
    spans
}

/// How a seed is started and how its truth is read.
struct Seed {
    service: &'static str,
    command: Command,
    /// Where its truth is written: `SEED_TRUTH`, or its own output.
    truth: PathBuf,
    parse: fn(&str) -> Vec<TruthSpan>,
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/real/seeds")
}

/// Every seed exports to `h` with the standard OTEL_* variables; only what differs is
/// set per language.
fn base_command(program: impl AsRef<std::ffi::OsStr>, service: &str, endpoint: String) -> Command {
    let mut c = Command::new(program);
    c.env("OTEL_SERVICE_NAME", service)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL");
    c
}

fn go_seed(h: &Harness, dir: &Path) -> Seed {
    let truth = dir.join("truth.jsonl");
    let mut command = base_command(
        part("SEED_GO_BIN"),
        "api-gateway",
        format!("http://{}", h.grpc),
    );
    command.env("SEED_TRUTH", &truth);
    Seed {
        service: "api-gateway",
        command,
        truth,
        parse: truth_go,
    }
}

fn python_seed(h: &Harness, dir: &Path) -> Seed {
    let venv = part("SEED_PYTHON_VENV");
    let truth = dir.join("truth.jsonl");
    // The distro's default protocol is OTLP/gRPC (opentelemetry-distro, `OpenTelemetryDistro._configure`).
    let mut command = base_command(
        venv.join("bin/opentelemetry-instrument"),
        "order-service",
        format!("http://{}", h.grpc),
    );
    command
        .arg(venv.join("bin/python"))
        .arg(seeds_dir().join("python/app.py"))
        .env("SEED_TRUTH", &truth);
    Seed {
        service: "order-service",
        command,
        truth,
        parse: truth_lines,
    }
}

fn node_seed(h: &Harness, dir: &Path) -> Seed {
    let truth = dir.join("truth.jsonl");
    let mut command = base_command("node", "notification-service", format!("http://{}", h.http));
    command
        .arg("--require")
        .arg(seeds_dir().join("node/instrument.js"))
        .arg(seeds_dir().join("node/app.js"))
        .env("NODE_PATH", part("SEED_NODE_MODULES"))
        .env("SEED_TRUTH", &truth);
    Seed {
        service: "notification-service",
        command,
        truth,
        parse: truth_lines,
    }
}

fn java_seed(h: &Harness, dir: &Path) -> Seed {
    let truth = dir.join("output.log");
    // The agent's default protocol is http/protobuf to port 4318's paths.
    let mut command = base_command("java", "payment-service", format!("http://{}", h.http));
    command
        .arg(format!("-javaagent:{}", part("SEED_JAVA_AGENT").display()))
        .arg("-cp")
        .arg(part("SEED_JAVA_CLASSES"))
        .arg("Server")
        .env("OTEL_TRACES_EXPORTER", "otlp,logging-otlp");
    Seed {
        service: "payment-service",
        command,
        truth,
        parse: truth_otlp_json,
    }
}

/// Runs `make`'s seed under the schedule's load, stops it (it flushes on SIGTERM), and
/// checks the store against its truth.
async fn run(make: fn(&Harness, &Path) -> Seed, requests: usize) {
    let started = SystemTime::now();
    let secs = started.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let store_now = UNIX_EPOCH + Duration::from_secs(secs) + AHEAD;
    let h = Harness::start_at(DEFAULT_MAX_MESSAGE_BYTES, store_now).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut seed = make(&h, dir.path());
    let port = common::free_port();
    let output = std::fs::File::create(dir.path().join("output.log")).expect("log");
    let mut child: Child = seed
        .command
        .env("PORT", port.to_string())
        .stdout(output.try_clone().expect("log"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", seed.service));
    let log = || std::fs::read_to_string(dir.path().join("output.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{} exited ({status}):\n{}", seed.service, log());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen:\n{}",
            seed.service,
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A seed that failed to bind leaves the probe to whoever holds the port.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "{} exited after the port answered ({status}):\n{}",
            seed.service,
            log()
        );
    }

    let load = schedule(requests);
    let client = reqwest::Client::new();
    let answers: Vec<u16> = futures::stream::iter(load.iter().map(|(ms, status)| {
        let url = format!("http://127.0.0.1:{port}/work?ms={ms}&status={status}");
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .expect("the seed answers")
                .status()
                .as_u16()
        }
    }))
    .buffered(8)
    .collect()
    .await;
    let want: Vec<u16> = load.iter().map(|(_, s)| *s).collect();
    assert_eq!(answers, want, "{} answered the schedule", seed.service);

    // SIGTERM: each SDK flushes its exporters on shutdown.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "{} did not stop:\n{}",
            seed.service,
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        SystemTime::now() < store_now,
        "the run took longer than the store clock is ahead"
    );

    let text = std::fs::read_to_string(&seed.truth).expect("the truth file");
    let all = (seed.parse)(&text);
    let server: Vec<&TruthSpan> = all
        .iter()
        .filter(|s| s.server && s.service == seed.service)
        .collect();
    assert_eq!(
        server.len(),
        requests,
        "{}: one server span a request\n{}",
        seed.service,
        log()
    );
    // Every span the SDK made reaches the store once.
    let line = "slo_scaler_otlp_spans_total{outcome=\"accepted\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.metric(line).unwrap_or(0.0) < all.len() as f64 {
        assert!(
            Instant::now() < deadline,
            "{}: {:?} of {} spans arrived",
            seed.service,
            h.metric(line),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.metric(line), Some(all.len() as f64), "{}", seed.service);

    let planned: Vec<Planned> = server
        .iter()
        .map(|s| Planned {
            end_before_now: Duration::ZERO,
            duration: Duration::from_nanos(s.duration_ns),
            error: s.error,
        })
        .collect();
    // The HTTP semantic conventions: a server span fails on 5xx only.
    let errors = planned.iter().filter(|p| p.error).count();
    assert_eq!(
        errors,
        want.iter().filter(|s| **s >= 500).count(),
        "{}: 5xx spans",
        seed.service
    );
    let what = seed.service;
    for q in [0.5, 0.95, 0.99] {
        assert_close(
            h.read(what, None, latency(q), WINDOW_S),
            exact_quantile(&planned, q),
            &format!("{what} p{}", q * 100.0),
        );
    }
    assert_eq!(
        h.read(what, None, TraceMeasure::ErrorRatio, WINDOW_S),
        Some(errors as f64 / requests as f64),
        "{what} error ratio"
    );
    let rate = h
        .read(what, None, TraceMeasure::Rate, WINDOW_S)
        .expect("rate");
    let want_rate = requests as f64 / WINDOW_S as f64;
    assert!(
        (rate - want_rate).abs() < 1e-9,
        "{what} rate {rate}, want {want_rate}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_sdk_with_otelhttp() {
    run(go_seed, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_opentelemetry_instrument_on_flask() {
    run(python_seed, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_auto_instrumentations_on_express_otlp_http_json() {
    run(node_seed, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_agent_on_the_jdk_http_server() {
    run(java_seed, 400).await;
}

#[test]
fn rfc3339_times_read_as_go_writes_them() {
    assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), 0);
    assert_eq!(
        rfc3339_ns("2024-08-21T10:00:00.5Z"),
        1_724_234_400_500_000_000
    );
    assert_eq!(
        rfc3339_ns("2024-08-21T12:00:00.000000001+02:00"),
        1_724_234_400_000_000_001
    );
}
