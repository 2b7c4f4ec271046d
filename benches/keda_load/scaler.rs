//! The scaler under load: `slo-scaler serve` (the release binary) spawned on loopback ports,
//! so its RSS and its threads are its own, and what the bench reads of it (`/proc`, its
//! `/metrics`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;

use crate::CACHE_TTL;

/// Bucket bounds of the scaler's latency histogram that (b) reports (`+Inf`: every call).
pub const HANDLER_BOUNDS: [&str; 4] = ["0.00005", "0.0001", "0.0004", "+Inf"];

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

/// `slo-scaler serve` (the release binary) on loopback ports, killed on drop.
pub struct Scaler {
    pub child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub otlp_grpc: SocketAddr,
}

impl Drop for Scaler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scaler {
    pub async fn start(prometheus: SocketAddr, max_signals: usize) -> Scaler {
        let (grpc, admin, otlp_grpc, otlp_http) =
            (free_port(), free_port(), free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
            .args([
                "serve",
                "--grpc-addr",
                &grpc.to_string(),
                "--admin-addr",
                &admin.to_string(),
                "--otlp-grpc-addr",
                &otlp_grpc.to_string(),
                "--otlp-http-addr",
                &otlp_http.to_string(),
                "--prometheus",
                &format!("default=http://{prometheus}"),
                "--cache-ttl",
                &format!("{}s", CACHE_TTL.as_secs()),
                "--max-signals",
                &(max_signals + 100).max(5_000).to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn slo-scaler (the release binary)");
        let scaler = Scaler {
            child,
            grpc,
            admin,
            otlp_grpc,
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            let url = format!("http://{}/readyz", scaler.admin);
            if matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return scaler;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("slo-scaler did not become ready");
    }

    /// Resident memory now (`VmRSS` of `/proc/PID/status`), in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the scaler is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status")
            * 1024
    }

    /// The scaler's own GetMetrics latency histogram (handler entry to answer), cumulative
    /// counts at [`HANDLER_BOUNDS`].
    pub async fn handler_buckets(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for le in HANDLER_BOUNDS {
            let label = format!("le=\"{le}\"");
            out.push(
                self.metric(
                    "slo_scaler_grpc_request_duration_seconds_bucket",
                    &["method=\"GetMetrics\"", &label],
                )
                .await,
            );
        }
        out
    }

    /// The sum of every sample of `family` whose labels contain all of `labels`.
    pub async fn metric(&self, family: &str, labels: &[&str]) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics body");
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect")
}
