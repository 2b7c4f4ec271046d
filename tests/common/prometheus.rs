//! A real Prometheus server (Debian's `prometheus` package), started on a free loopback
//! port with a temporary config and storage, scraping test exporters every second.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct PrometheusServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    /// `--web.route-prefix` (e.g. `/monitoring/prometheus`), empty for none.
    prefix: String,
    /// When the current process became ready.
    pub ready_at: Instant,
    /// Flags beyond the config, storage and listen address (a 2.x's feature flags).
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        path.exists(),
        "no Prometheus server at {} — these tests need a real one: run `scripts/test.sh` \
         (it installs Debian's `prometheus` package) or set PROMETHEUS_BIN",
        path.display()
    );
    path
}

/// The major version of the Prometheus at [`binary`], from its `--version`: Debian's
/// prints `prometheus, version 2.42.0+ds (…)`, a 3.x release `version 3.…`, and the 3.x
/// that `scripts/real/build.sh` builds with `go install` an empty version (the release
/// sets it with linker flags), `prometheus, version  (branch: , …)`.
pub fn major_version() -> u32 {
    let out = Command::new(binary())
        .arg("--version")
        .output()
        .expect("prometheus --version");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let first = text.lines().next().unwrap_or_default();
    let version = first
        .strip_prefix("prometheus, version ")
        .unwrap_or_else(|| panic!("prometheus --version: {text}"));
    match version.split('.').next() {
        Some("2") => 2,
        Some("3") => 3,
        _ if version.starts_with(' ') => 3,
        _ => panic!("prometheus --version: unknown version in {first:?}"),
    }
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (as job `exporter`, honouring their labels).
    pub async fn start(targets: &[SocketAddr]) -> PrometheusServer {
        Self::start_with(targets, None).await
    }

    /// A test exporter with one gauge, `name` = `value`, and Prometheus scraping it, started
    /// and waited for until Prometheus has the gauge.
    pub async fn scraping_gauge(
        name: &str,
        value: f64,
    ) -> (super::exporter::Exporter, PrometheusServer) {
        let exporter = super::exporter::Exporter::start().await;
        exporter.set_gauge(name, value);
        let prometheus = PrometheusServer::start(&[exporter.addr]).await;
        prometheus.wait_for_data(&format!("max({name})")).await;
        (exporter, prometheus)
    }

    /// Starts Prometheus scraping `targets` with native-histogram ingestion on: the 3.x
    /// pinned in `scripts/real/versions.env` reads `scrape_native_histograms: true` in the
    /// scrape config (prometheus/prometheus v0.316.0 `config/config.go`,
    /// `ScrapeConfig.ScrapeNativeHistograms`, default false; its
    /// `--enable-feature=native-histograms` is a no-op there, `cmd/prometheus/main.go`),
    /// 2.x the flag (from 2.40; `CHANGELOG.md`: 3.8.0 added the setting, 3.9.0 made the
    /// flag a no-op). Either way Prometheus then asks for the protobuf exposition first,
    /// the only one that carries native histograms (`config.go`,
    /// `DefaultProtoFirstScrapeProtocols`).
    pub async fn start_native_histograms(targets: &[SocketAddr]) -> PrometheusServer {
        let mut p = Self::prepare(targets, None);
        if major_version() == 2 {
            p.extra_args
                .push("--enable-feature=native-histograms".to_string());
        } else {
            let path = p.dir.path().join("prometheus.yml");
            let config = std::fs::read_to_string(&path).expect("read config");
            std::fs::write(path, config + "    scrape_native_histograms: true\n")
                .expect("write config");
        }
        p.launch(true).await;
        p
    }

    /// Starts Prometheus serving HTTPS with `cert_file` / `key_file`, trusted by the
    /// harness through `ca_pem`.
    pub async fn start_tls(
        targets: &[SocketAddr],
        cert_file: &str,
        key_file: &str,
        ca_pem: &str,
    ) -> PrometheusServer {
        Self::start_with(targets, Some((cert_file, key_file, ca_pem))).await
    }

    /// Starts Prometheus serving under `prefix` (`--web.route-prefix` and
    /// `--web.external-url`, as behind a path-routing proxy); [`PrometheusServer::url`]
    /// includes it.
    pub async fn start_under_prefix(targets: &[SocketAddr], prefix: &str) -> PrometheusServer {
        let mut p = Self::prepare(targets, None);
        p.prefix = prefix.trim_end_matches('/').to_string();
        p.launch(true).await;
        p
    }

    async fn start_with(
        targets: &[SocketAddr],
        tls: Option<(&str, &str, &str)>,
    ) -> PrometheusServer {
        let mut p = Self::prepare(targets, tls);
        p.launch(true).await;
        p
    }

    fn prepare(targets: &[SocketAddr], tls: Option<(&str, &str, &str)>) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: exporter\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut http = reqwest::Client::builder();
        let mut scheme = "http";
        if let Some((cert, key, ca)) = tls {
            std::fs::write(
                dir.path().join("web.yml"),
                format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"),
            )
            .expect("write web config");
            http =
                http.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
            scheme = "https";
        }
        PrometheusServer {
            addr,
            ready_at: Instant::now(),
            extra_args: Vec::new(),
            dir,
            child: None,
            http: http.build().expect("http client"),
            scheme,
            prefix: String::new(),
        }
    }

    /// Starts the server and waits until it is ready. A free port is only free until someone
    /// else binds it: tests running beside each other start servers on ports they picked,
    /// and one can take ours before Prometheus binds it (it then exits: "address already in
    /// use"). On a first start (`may_move`) it is started again on a new port; a restart
    /// keeps its port, so there the exit fails the test.
    async fn launch(&mut self, may_move: bool) {
        const TRIES: usize = 5;
        for attempt in 1..=TRIES {
            match self.launch_once().await {
                Ok(()) => return,
                Err(e) if may_move && e.contains("address already in use") && attempt < TRIES => {
                    self.addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// One start: `Ok` once ready, `Err` if the process exited first.
    async fn launch_once(&mut self) -> Result<(), String> {
        let child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .args(&self.extra_args)
            .args(
                (!self.prefix.is_empty())
                    .then(|| {
                        [
                            format!("--web.route-prefix={}", self.prefix),
                            format!("--web.external-url={}", self.url()),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .args(self.dir.path().join("web.yml").exists().then(|| {
                format!(
                    "--web.config.file={}",
                    self.dir.path().join("web.yml").display()
                )
            }))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join("prometheus.log")).expect("log file"),
            )
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                return Err(format!("prometheus exited ({status}): {log}"));
            }
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                self.ready_at = Instant::now();
                return Ok(());
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The base URL, with the route prefix if any.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.addr, self.prefix)
    }

    /// Kills the server (its data directory stays for a restart).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch(false).await;
    }

    /// The API's JSON answer to an instant query (asserting success).
    async fn api_query(&self, promql: &str) -> serde_json::Value {
        let body: serde_json::Value = self
            .http
            .post(format!("{}/api/v1/query", self.url()))
            .form(&[("query", promql)])
            .send()
            .await
            .expect("query prometheus")
            .json()
            .await
            .expect("prometheus json");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body
    }

    /// Runs an instant query directly; `None` for an empty result or NaN.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let body = self.api_query(promql).await;
        let result = &body["data"]["result"];
        let sample = match body["data"]["resultType"].as_str() {
            Some("scalar") => result.clone(),
            _ => {
                let items = result.as_array().expect("vector");
                assert!(items.len() <= 1, "{promql}: {body}");
                items.first()?.get("value")?.clone()
            }
        };
        let v: f64 = sample[1].as_str()?.parse().ok()?;
        (!v.is_nan()).then_some(v)
    }

    /// The buckets of the one native histogram `promql` answers, each `(lower, upper,
    /// count)` (the API's `histogram` item: `buckets` of `[boundary rule, lower, upper,
    /// count]`, numbers as strings; prometheus/prometheus `web/api/v1/api.go`); `None`
    /// for an empty result.
    pub async fn query_histogram_buckets(&self, promql: &str) -> Option<Vec<(f64, f64, f64)>> {
        let body = self.api_query(promql).await;
        let items = body["data"]["result"].as_array().expect("vector");
        assert!(items.len() <= 1, "{promql}: {body}");
        let h = items
            .first()?
            .get("histogram")
            .unwrap_or_else(|| panic!("{promql}: not a native histogram: {body}"));
        let num = |v: &serde_json::Value| -> f64 {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{promql}: {body}"))
        };
        let buckets = h[1]["buckets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(
            buckets
                .iter()
                .map(|b| (num(&b[1]), num(&b[2]), num(&b[3])))
                .collect(),
        )
    }

    /// The values of the one series an instant query of a range (or a subquery) answers,
    /// oldest first (the API's `matrix`: `values` of `[time, "value"]`); empty for an empty
    /// result.
    pub async fn query_matrix(&self, promql: &str) -> Vec<f64> {
        let body = self.api_query(promql).await;
        assert_eq!(body["data"]["resultType"], "matrix", "{promql}: {body}");
        let items = body["data"]["result"].as_array().expect("matrix");
        assert!(items.len() <= 1, "{promql}: {body}");
        items.first().map_or_else(Vec::new, |series| {
            series["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| {
                    v[1].as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("{promql}: {body}"))
                })
                .collect()
        })
    }

    /// Runs an instant vector query; each series' labels and value.
    pub async fn query_vector(
        &self,
        promql: &str,
    ) -> Vec<(std::collections::HashMap<String, String>, f64)> {
        let body = self.api_query(promql).await;
        body["data"]["result"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|item| {
                let labels = serde_json::from_value(item["metric"].clone()).expect("labels");
                let v = item["value"][1].as_str().and_then(|v| v.parse().ok());
                (labels, v.expect("a number"))
            })
            .collect()
    }

    /// Waits until `promql` returns a value.
    pub async fn wait_for_data(&self, promql: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.query(promql).await {
                return v;
            }
            assert!(Instant::now() < deadline, "no data for {promql}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a `window`-long range holds only samples scraped since start-up, so
    /// `rate()` over it extrapolates fully and no longer drifts with the query time.
    pub async fn wait_window_full(&self, window: Duration) {
        let until = self.ready_at + window + Duration::from_millis(2500);
        tokio::time::sleep_until(until.into()).await;
    }

    /// Instant queries Prometheus has answered, from its own /metrics (reading this
    /// does not count as a query).
    pub async fn query_requests(&self) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .expect("prometheus /metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| {
                l.starts_with("prometheus_http_requests_total{")
                    && l.contains("handler=\"/api/v1/query\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}
