//! The real `slo-scaler serve` binary on loopback ports, killed on drop.
//!
//! AWS credentials reach it the way they reach a pod: through its environment (the
//! child's only; the test process's environment is never changed).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use tonic::transport::Channel;

/// A running scaler.
pub struct Scaler {
    child: Child,
    pub grpc: String,
    pub admin: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Scaler {
    /// Starts `slo-scaler serve` with SQS at `sqs_endpoint`, the given AWS secret in its
    /// environment, and `extra` flags.
    pub fn start(sqs_endpoint: &str, access_key: &str, secret: &str, extra: &[&str]) -> Scaler {
        let mut child = Command::new(env!("CARGO_BIN_EXE_slo-scaler"))
            .arg("serve")
            .args(crate::loopback::LOOPBACK_ADDRS)
            .args(["--log-format", "json", "--aws-endpoint", sqs_endpoint])
            .args(extra)
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start slo-scaler");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("slo-scaler ready") {
                    if let (Some(tx), Ok(v)) =
                        (tx.take(), serde_json::from_str::<serde_json::Value>(&line))
                    {
                        let addr = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                        let _ = tx.send((addr("grpc"), addr("admin")));
                    }
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let Ok((grpc, admin)) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!(
                "slo-scaler did not get ready within 60s; its log:\n{}",
                logs.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
            );
        };
        Scaler {
            child,
            grpc: format!("http://{grpc}"),
            admin: format!("http://{admin}"),
            logs,
        }
    }

    pub async fn client(&self) -> ExternalScalerClient<Channel> {
        ExternalScalerClient::connect(self.grpc.clone())
            .await
            .expect("connect to the scaler")
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Everything the scaler logged so far.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name{labels}` in Prometheus text, 0 when absent.
pub fn sample(text: &str, name_and_labels: &str) -> f64 {
    let prefix = format!("{name_and_labels} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().expect("sample value"))
}
