//! A real OpenTelemetry Collector (built from its Go modules by `scripts/real/build.sh`
//! at the versions in `scripts/real/versions.env`), started with a test's configuration
//! on free loopback ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The pinned versions, read from the one file that pins them.
fn version(key: &str) -> String {
    include_str!("../../scripts/real/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} in scripts/real/versions.env"))
        .trim()
        .to_string()
}

/// The directory `scripts/real/build.sh` caches a part in.
fn real_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/real")
        .join(name)
}

/// The Collector binary: `OTELCOL_BIN`, else where `scripts/real/build.sh` builds it.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("OTELCOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            real_dir(&format!(
                "otelcol-{}-{}-{}",
                version("COLLECTOR_CORE_VERSION"),
                version("COLLECTOR_CONTRIB_VERSION"),
                version("COLLECTOR_STABLE_VERSION")
            ))
            .join("otelcol-real")
        });
    assert!(
        path.exists(),
        "no OpenTelemetry Collector at {} — run `bash scripts/real/build.sh` (scripts/test.sh \
         does) or set OTELCOL_BIN",
        path.display()
    );
    path
}

/// Prometheus 3.x as `scripts/real/build.sh` builds it.
pub fn prometheus3_binary() -> PathBuf {
    real_dir(&format!(
        "prometheus-{}",
        version("PROMETHEUS_MODULE_VERSION")
    ))
    .join("prometheus")
}

pub struct Collector {
    /// The `otlp` receiver's gRPC and HTTP addresses.
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Collector {
    /// Starts a Collector whose configuration is the `otlp` receiver on free ports plus
    /// `rest` (the processors, exporters, connectors and `service.pipelines`, as YAML at
    /// the top level; `service:` must be its last section). The Collector's own
    /// telemetry is off so that several can run at once.
    pub async fn start(rest: &str) -> Collector {
        Collector::start_with(|| rest.to_string()).await
    }

    /// As [`Collector::start`], with `rest` made again for each try. A free port is only
    /// free until someone else binds it: tests running beside each other (each starting
    /// Collectors and Prometheus servers on ports they picked) can take one between our
    /// pick and the Collector's bind. The Collector then exits with "address already in
    /// use"; it is started again on new ports — the receiver's, and any `rest` picks.
    pub async fn start_with(rest: impl Fn() -> String) -> Collector {
        const TRIES: usize = 5;
        for attempt in 1..=TRIES {
            match Collector::try_start(&rest()).await {
                Ok(c) => return c,
                Err(log) if log.contains("address already in use") && attempt < TRIES => continue,
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!("the last try panics or returns")
    }

    /// One try: the Collector listening, or its configuration and log.
    async fn try_start(rest: &str) -> Result<Collector, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: {grpc}\n      http:\n        endpoint: {http}\n{rest}\n  telemetry:\n    metrics:\n      level: none\n"
        );
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, &config).expect("write collector config");
        let log = std::fs::File::create(dir.path().join("collector.log")).expect("log file");
        let child = Command::new(binary())
            .arg(format!("--config=file:{}", path.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the collector");
        let mut c = Collector {
            grpc,
            http,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                return Err(format!(
                    "the collector exited ({status}):\n{config}\n{}",
                    c.log()
                ));
            }
            let up = tokio::net::TcpStream::connect(grpc).await.is_ok()
                && tokio::net::TcpStream::connect(http).await.is_ok();
            if up {
                return Ok(c);
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not listen:\n{}",
                c.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the Collector logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An SDK span exporter that only collects, so spans made by the SDK tracer can be
/// handed to an OTLP exporter from async code.
#[derive(Debug, Clone, Default)]
pub struct Collect(pub std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Collect {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().expect("collector lock").extend(batch);
        Ok(())
    }
}

/// A part `scripts/real/build.sh` built or installed, by its key in the
/// `target/real/parts.env` it writes (`SEED_GO_BIN`, `SEED_PYTHON_VENV`, …).
pub fn part(key: &str) -> PathBuf {
    let file = real_dir("parts.env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} — run `bash scripts/real/build.sh` (scripts/test.sh does)",
            file.display()
        )
    });
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{key} in {}: run `bash scripts/real/build.sh`",
                file.display()
            )
        });
    assert!(
        path.exists(),
        "{key}: {} is missing — run `bash scripts/real/build.sh`",
        path.display()
    );
    path
}
