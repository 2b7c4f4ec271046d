//! A KEDA-shaped load on the real scaler: the release binary (`slo-scaler serve`, spawned
//! on loopback ports so its RSS and its threads are its own), N ScaledObjects polled the
//! way KEDA and the HPA poll them, OTLP spans arriving at a set rate, a Prometheus fake
//! that counts what it is asked; then saturation throughput next to two baselines.
//!
//! Run: `cargo bench --bench keda_load -- [--duration 60s] [--scaled-objects 1500]
//! [--spans-per-second 200000] [--polling-interval 30s] [--connections 1] [--json]`.
//! The h2load comparison's helpers (request bodies, the probe, the bare service on its own)
//! are the `h2load` bench (`benches/h2load.rs`); the bare service is `common/bare.rs`.
//!
//! KEDA's shape, from KEDA's own code (kedacore/keda, `pkg/scalers/external_scaler.go`):
//! `getClientForConnectionPool` keeps one `grpc.ClientConn` per scaler address (and TLS
//! settings) in `connectionPool`, shared by every ScaledObject, so one HTTP/2 connection
//! carries every call (`--connections` defaults to 1); `GetMetricsAndActivity` sends
//! `GetMetrics` then `IsActive` on it. The scale loop (`pkg/scaling/scale_handler.go`,
//! `checkScalers` → `getScalerState`) asks the metric spec, then `GetMetricsAndActivity`,
//! every `pollingInterval`; the HPA's sync (every 15 s) reaches the same
//! `GetMetricsAndActivity` through `GetScaledObjectMetrics`. Each ScaledObject therefore
//! runs GetMetricSpec → GetMetrics → IsActive every `pollingInterval` and again every 15 s,
//! at a random phase, as KEDA's goroutine per ScaledObject and the HPA's sync would.
//!
//! KEDA's calls come from a thread of this process with a single-threaded runtime and
//! connections of its own, as from a process of its own; the planning calls and (a)'s
//! saturation client run on the main runtime.
//!
//! The span sender stands in for applications' exporters on other nodes; it runs 10 nice
//! values below the rest of this process so its CPU does not stretch the latencies (b)
//! measures, and what it delivers is still counted in (d). (b)'s same-run baseline is tonic's
//! own Health/Check on the same server and connection, at the same rate, in the same phases.
//!
//! KEDA's built-in prometheus scaler (`pkg/scalers/prometheus_scaler.go`) runs one query
//! (`ExecutePromQuery`) per `GetMetricsAndActivity`, with no cache: the comparison in (c)
//! counts that for the same ScaledObjects and the same calls.

#![forbid(unsafe_code)]

#[path = "common/bare.rs"]
mod bare;
#[path = "common/raw_export.rs"]
mod raw_export;
#[path = "common/spans.rs"]
mod spans;
#[path = "common/workload.rs"]
mod workload;

use workload::{scaled_object, Kind, SERVICES};

use spans::{service_spans, splitmix, unix_ns};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Spans per OTLP request, as the SDK batch processor sends them by default.
const SPANS_PER_REQUEST: usize = 512;
/// OTLP connections of the span sender, and its requests in flight at most.
const OTLP_CONNECTIONS: usize = 4;
const OTLP_IN_FLIGHT: usize = 16;
/// The HPA controller's sync period (`--horizontal-pod-autoscaler-sync-period`).
const HPA_SYNC: Duration = Duration::from_secs(15);
/// Saturation: connections × concurrent calls per connection (as h2load's `-c 8 -m 16`).
const SAT_CONNECTIONS: usize = 8;
const SAT_STREAMS: usize = 16;
/// Bucket bounds of the scaler's latency histogram that (b) reports (`+Inf`: every call).
const HANDLER_BOUNDS: [&str; 4] = ["0.00005", "0.0001", "0.0004", "+Inf"];

/// Polling before the measured phase (longer than the store's 6 s rate settle).
const WARM_UP: Duration = Duration::from_secs(8);
/// The scaler's `--cache-ttl` in this run.
const CACHE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Args {
    duration: Duration,
    scaled_objects: usize,
    spans_per_second: u64,
    polling_interval: Duration,
    connections: usize,
    flood: Duration,
    saturation_round: Duration,
    rounds: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(60),
        scaled_objects: 1_500,
        spans_per_second: 200_000,
        polling_interval: Duration::from_secs(30),
        connections: 1,
        flood: Duration::from_secs(10),
        saturation_round: Duration::from_secs(3),
        rounds: 3,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let duration = |v: String| {
            humantime::parse_duration(&v).map_err(|e| format!("bad duration {v:?}: {e}"))
        };
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|e| format!("bad number {v:?}: {e}"))
        };
        match flag.as_str() {
            // Cargo passes `--bench` to every bench binary.
            "--bench" => {}
            "--duration" => args.duration = duration(value("--duration")?)?,
            "--scaled-objects" => {
                args.scaled_objects = number(value("--scaled-objects")?)? as usize
            }
            "--spans-per-second" => args.spans_per_second = number(value("--spans-per-second")?)?,
            "--polling-interval" => args.polling_interval = duration(value("--polling-interval")?)?,
            "--connections" => args.connections = number(value("--connections")?)?.max(1) as usize,
            "--flood" => args.flood = duration(value("--flood")?)?,
            "--saturation-round" => args.saturation_round = duration(value("--saturation-round")?)?,
            "--rounds" => args.rounds = number(value("--rounds")?)?.max(1) as usize,
            "--json" => args.json = true,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if args.scaled_objects == 0 {
        return Err("--scaled-objects must be at least 1".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// Workload: ScaledObjects and spans.

/// One pre-encoded request per service, ending now.
fn span_bodies() -> Vec<Bytes> {
    let now = unix_ns(SystemTime::now());
    let mut seed = now;
    (0..SERVICES)
        .map(|s| {
            Bytes::from(
                service_spans(&format!("svc-{s}"), SPANS_PER_REQUEST, now, &mut seed)
                    .encode_to_vec(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The Prometheus fake.

/// Answers every instant query with one sample, instantly, and counts the queries.
async fn fake_prometheus(counter: Arc<AtomicU64>) -> SocketAddr {
    use axum::routing::any;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new().route(
        "/api/v1/query",
        any(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                (
                    [("content-type", "application/json")],
                    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1724240000.123,"0.25"]}]}}"#,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

// ---------------------------------------------------------------------------------------
// The scaler process.

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

/// `slo-scaler serve` (the release binary) on loopback ports, killed on drop.
struct Scaler {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
    otlp_grpc: SocketAddr,
}

impl Drop for Scaler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scaler {
    async fn start(prometheus: SocketAddr, max_signals: usize) -> Scaler {
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
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the scaler is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status")
            * 1024
    }

    /// The sum of every sample of `family` whose labels contain all of `labels`.
    /// The scaler's own GetMetrics latency histogram (handler entry to answer), cumulative
    /// counts at [`HANDLER_BOUNDS`].
    async fn handler_buckets(&self) -> Vec<f64> {
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

    async fn metric(&self, family: &str, labels: &[&str]) -> f64 {
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

async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect")
}

// ---------------------------------------------------------------------------------------
// Measurements.

/// Latencies (ns) per phase, and RPC failures by method.
#[derive(Default)]
struct Record {
    latencies: Mutex<Vec<Vec<u64>>>,
    /// "phase method: code" → (count, the first message).
    failures: Mutex<HashMap<String, (u64, String)>>,
    calls: AtomicU64,
}

impl Record {
    fn latency(&self, phase: usize, d: Duration) {
        let mut l = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() <= phase {
            l.resize(phase + 1, Vec::new());
        }
        l[phase].push(d.as_nanos() as u64);
    }

    fn failure(&self, phase: usize, what: &str, status: &tonic::Status) {
        let key = format!("{} {what}: {:?}", PHASES[phase.min(4)], status.code());
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| (0, status.message().to_string()))
            .0 += 1;
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Percentiles {
    count: usize,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

fn percentiles(mut ns: Vec<u64>) -> Percentiles {
    if ns.is_empty() {
        return Percentiles::default();
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    Percentiles {
        count: ns.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: at(1.0),
    }
}

/// The phases of a run, as failures name them.
const PHASES: [&str; 5] = ["planning", "warm-up", "keda-shaped", "flood", "after"];

/// One KEDA cycle for a ScaledObject: GetMetricSpec → GetMetrics → IsActive.
async fn keda_cycle(
    client: &mut ExternalScalerClient<Channel>,
    so: &ScaledObjectRef,
    record: &Record,
    phase: usize,
) {
    let spec = match client.get_metric_spec(so.clone()).await {
        Ok(r) => r.into_inner(),
        Err(e) => return record.failure(phase, "GetMetricSpec", &e),
    };
    let Some(metric_name) = spec.metric_specs.first().map(|m| m.metric_name.clone()) else {
        return;
    };
    let started = Instant::now();
    let answer = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name,
        })
        .await;
    record.latency(phase, started.elapsed());
    record.calls.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = answer {
        record.failure(phase, "GetMetrics", &e);
    }
    if let Err(e) = client.is_active(so.clone()).await {
        record.failure(phase, "IsActive", &e);
    }
}

/// Calls `call` from `SAT_CONNECTIONS × SAT_STREAMS` loops for `how_long`; calls per
/// second answered OK, and the failures.
/// The saturation round's connections to one server.
async fn connections(addr: SocketAddr) -> Vec<Channel> {
    let mut v = Vec::new();
    for _ in 0..SAT_CONNECTIONS {
        v.push(connect(addr).await);
    }
    v
}

/// [`saturate`] with the cache-hit GetMetrics `request`.
async fn saturate_get_metrics(
    channels: &[Channel],
    how_long: Duration,
    request: &GetMetricsRequest,
) -> (f64, u64) {
    let request = request.clone();
    saturate(channels, how_long, move |c| {
        let request = request.clone();
        async move {
            ExternalScalerClient::new(c)
                .get_metrics(request)
                .await
                .is_ok()
        }
    })
    .await
}

async fn saturate<F, Fut>(channels: &[Channel], how_long: Duration, call: F) -> (f64, u64)
where
    F: Fn(Channel) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + how_long;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for channel in channels {
        for _ in 0..SAT_STREAMS {
            let (channel, call) = (channel.clone(), call.clone());
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    if call(channel.clone()).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// KEDA and the HPA.

/// KEDA's and the HPA's calls, and (b)'s Health/Check baseline: on a thread of their own
/// with a single-threaded runtime and their own connections, as KEDA is a process of its
/// own. The latency (b) measures is then the scaler's and the transport's, not this
/// process's other work (the fake Prometheus, the planning client) or a hop between its
/// threads.
struct Keda {
    grpc: SocketAddr,
    connections: usize,
    scaled_objects: Vec<ScaledObjectRef>,
    polling_interval: Duration,
    record: Arc<Record>,
    health_record: Arc<Record>,
    phase: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// When the first calls are due.
    start: Instant,
}

impl Keda {
    /// Polls until `stop`.
    fn run(self) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("keda".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("keda runtime");
                rt.block_on(self.poll());
            })
            .expect("keda thread")
    }

    async fn poll(self) {
        let mut channels = Vec::new();
        for _ in 0..self.connections {
            channels.push(connect(self.grpc).await);
        }
        let start = tokio::time::Instant::from_std(self.start);
        let mut seed = 0x5eed_u64;
        for (i, so) in self.scaled_objects.iter().enumerate() {
            for interval in [self.polling_interval, HPA_SYNC] {
                let offset =
                    Duration::from_nanos(splitmix(&mut seed) % interval.as_nanos().max(1) as u64);
                let mut client = ExternalScalerClient::new(channels[i % channels.len()].clone());
                let (so, record) = (so.clone(), Arc::clone(&self.record));
                let (phase, stop) = (Arc::clone(&self.phase), Arc::clone(&self.stop));
                tokio::spawn(async move {
                    let mut next = start + offset;
                    loop {
                        tokio::time::sleep_until(next).await;
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let p = phase.load(Ordering::Relaxed) as usize;
                        keda_cycle(&mut client, &so, &record, p).await;
                        next += interval;
                    }
                });
            }
        }
        // The same-run baseline of (b): tonic's own Health/Check on the same server and
        // connection, at the rate KEDA's calls come, in the same phases.
        let calls_per_second = self.scaled_objects.len() as f64
            * (1.0 / self.polling_interval.as_secs_f64() + 1.0 / HPA_SYNC.as_secs_f64());
        let mut client = HealthClient::new(channels[0].clone());
        let (record, phase, stop) = (
            Arc::clone(&self.health_record),
            Arc::clone(&self.phase),
            Arc::clone(&self.stop),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                start,
                Duration::from_secs_f64(1.0 / calls_per_second.max(1.0)),
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Instant::now();
                let ok = client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok();
                if ok {
                    record.latency(phase.load(Ordering::Relaxed) as usize, started.elapsed());
                }
            }
        });
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The span sender.

/// Sends spans at `rate` spans/s (0: as fast as the receiver takes them, `OTLP_IN_FLIGHT`
/// at a time) over `OTLP_CONNECTIONS` connections; counts accepted and refused spans.
struct Sender {
    rate: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    behind: AtomicU64,
    stop: AtomicBool,
    bodies: RwLock<Arc<Vec<Bytes>>>,
}

impl Sender {
    fn run(self: Arc<Self>, channels: Vec<Channel>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("span-sender".into())
            .spawn(move || {
                // The sender stands in for exporters on other nodes: at a lower priority
                // (as the scaler's own receiver threads are), its CPU does not delay the
                // KEDA calls (b) measures, on the client's side or the server's. What it
                // delivers is still counted: (d) and "sender behind".
                // This thread, and the threads it starts: the receiver threads' niceness.
                slo_scaler::server::lower_thread_priority()
                    .expect("lower the span sender's priority");
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("sender runtime");
                rt.block_on(self.send(channels));
            })
            .expect("sender thread")
    }

    async fn send(self: Arc<Self>, channels: Vec<Channel>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(OTLP_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut sent, mut n) = (0u64, 0usize);
        let mut rate_since = (0u64, Instant::now(), 0u64);
        let mut refreshed = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let rate = self.rate.load(Ordering::Relaxed);
            if rate != rate_since.0 {
                rate_since = (rate, Instant::now(), sent);
            }
            // Fresh timestamps every few seconds: the signals read recent windows.
            if refreshed.elapsed() > Duration::from_secs(5) {
                let fresh = tokio::task::spawn_blocking(span_bodies)
                    .await
                    .expect("bodies");
                *self.bodies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                refreshed = Instant::now();
            }
            let due = if rate == 0 {
                u64::MAX
            } else {
                let since = rate_since.1.elapsed().as_secs_f64();
                rate_since.2 + (since * rate as f64 / SPANS_PER_REQUEST as f64) as u64
            };
            let bodies = Arc::clone(&self.bodies.read().unwrap_or_else(|e| e.into_inner()));
            while sent < due {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    if rate != 0 {
                        // Behind schedule: counted, and the schedule moves on.
                        self.behind.fetch_add(due - sent, Ordering::Relaxed);
                        sent = due;
                    }
                    break;
                };
                let channel = channels[n % channels.len()].clone();
                let body = bodies[n % bodies.len()].clone();
                n += 1;
                sent += 1;
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    if raw_export::try_export(channel, body).await {
                        me.accepted
                            .fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                    } else {
                        me.refused
                            .fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                    }
                    drop(permit);
                });
            }
            if rate == 0 {
                let _ = Arc::clone(&permits).acquire_owned().await.map(drop);
            } else {
                tick.tick().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run.

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    nproc: usize,
    cpu_model: String,
    load_before: String,
    load_after: String,
    scaled_objects: usize,
    otlp_scaled_objects: usize,
    prometheus_scaled_objects: usize,
    polling_interval_s: f64,
    duration_s: f64,
    connections: usize,
    // (a)
    sat_get_metrics_rps: Vec<f64>,
    sat_health_rps: Vec<f64>,
    sat_bare_rps: Vec<f64>,
    sat_failures: u64,
    ratio_vs_health: f64,
    ratio_vs_bare: f64,
    // (b)
    get_metrics_keda_rate: Percentiles,
    keda_calls_per_second: f64,
    get_metrics_flood: Percentiles,
    /// The scaler's own GetMetrics histogram over (b)'s phase: calls within each bound.
    handler_within: Vec<(String, f64)>,
    /// Health/Check on the same server and connection, at the same rate, same phases.
    health_keda_rate: Percentiles,
    health_flood: Percentiles,
    failures: HashMap<String, (u64, String)>,
    // (c)
    fake_queries: u64,
    backend_requests_metric: f64,
    calls_per_ttl: f64,
    keda_builtin_per_ttl: f64,
    // (d)
    spans_offered_per_second: u64,
    spans_accepted_per_second: f64,
    spans_refused: u64,
    spans_sender_behind: u64,
    spans_flood_accepted_per_second: f64,
    /// The same two figures from the scaler's `slo_scaler_otlp_spans_total{outcome="accepted"}`.
    spans_counted_per_second: f64,
    spans_flood_counted_per_second: f64,
    // (e)
    rss_before: u64,
    /// After planning the first half.
    rss_half: u64,
    rss_after_planning: u64,
    bytes_per_scaled_object: f64,
    /// The second half's growth per ScaledObject: what one more costs.
    bytes_per_more_scaled_object: f64,
    rss_end: u64,
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

/// The whole run, step by step: (e) while planning, (b), (c), (d) while KEDA polls and
/// spans arrive, then (a) at saturation.
async fn run(args: Args) -> Report {
    let mut report = Report::new(&args);
    let queries = Arc::new(AtomicU64::new(0));
    let prometheus = fake_prometheus(Arc::clone(&queries)).await;
    let scaler = Scaler::start(prometheus, args.scaled_objects).await;
    eprintln!("scaler pid {} on {}", scaler.child.id(), scaler.grpc);
    let (otlp_channels, bodies) = feed_every_service(&scaler, &mut report).await;
    let planned = plan_every_scaled_object(&args, &scaler, &mut report).await;
    keda_shaped_phase(
        &args,
        &scaler,
        &queries,
        &planned,
        (otlp_channels, bodies),
        &mut report,
    )
    .await;
    saturation(&args, &scaler, &planned, &mut report).await;
    report.load_after = uptime();
    drop(scaler);
    report
}

impl Report {
    /// The machine and the run's settings; the figures come later.
    fn new(args: &Args) -> Report {
        Report {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(),
            load_before: uptime(),
            scaled_objects: args.scaled_objects,
            polling_interval_s: args.polling_interval.as_secs_f64(),
            duration_s: args.duration.as_secs_f64(),
            connections: args.connections,
            spans_offered_per_second: args.spans_per_second,
            ..Report::default()
        }
    }
}

/// Every service has spans before the baseline RSS, so the store's series exist. Returns
/// the OTLP connections and the span bodies, for the sender.
async fn feed_every_service(scaler: &Scaler, report: &mut Report) -> (Vec<Channel>, Vec<Bytes>) {
    let otlp_channels = {
        let mut v = Vec::new();
        for _ in 0..OTLP_CONNECTIONS {
            v.push(connect(scaler.otlp_grpc).await);
        }
        v
    };
    let bodies = span_bodies();
    for (i, body) in bodies.iter().enumerate() {
        assert!(
            raw_export::try_export(otlp_channels[i % OTLP_CONNECTIONS].clone(), body.clone()).await,
            "warm-up spans accepted"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_before = scaler.rss();
    (otlp_channels, bodies)
}

/// The ScaledObjects planned in (e), the connections that planned them, and the record
/// KEDA's calls add to.
struct Planned {
    channels: Vec<Channel>,
    sos: Vec<(Kind, ScaledObjectRef)>,
    record: Arc<Record>,
}

/// (e) Plans every ScaledObject: one KEDA cycle each, 32 at a time, and the RSS it costs.
async fn plan_every_scaled_object(args: &Args, scaler: &Scaler, report: &mut Report) -> Planned {
    let channels = {
        let mut v = Vec::new();
        for _ in 0..args.connections {
            v.push(connect(scaler.grpc).await);
        }
        v
    };
    let sos: Vec<(Kind, ScaledObjectRef)> = (0..args.scaled_objects).map(scaled_object).collect();
    report.otlp_scaled_objects = sos.iter().filter(|(k, _)| *k == Kind::Otlp).count();
    report.prometheus_scaled_objects = sos.len() - report.otlp_scaled_objects;
    let record = Arc::new(Record::default());
    // In two halves: the first calls also make what the process makes once (the
    // connection's buffers, each thread's allocator arena, tables sized up from empty), so
    // what one more ScaledObject costs is read from the second half's growth alone.
    let half = sos.len() / 2;
    for (offset, part) in [(0, &sos[..half]), (half, &sos[half..])] {
        futures::stream::iter(part.iter().enumerate())
            .for_each_concurrent(32, |(i, (_, so))| {
                let mut client =
                    ExternalScalerClient::new(channels[(offset + i) % channels.len()].clone());
                let record = Arc::clone(&record);
                async move { keda_cycle(&mut client, so, &record, 0).await }
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if offset == 0 {
            report.rss_half = scaler.rss();
        }
    }
    report.rss_after_planning = scaler.rss();
    report.bytes_per_scaled_object =
        report.rss_after_planning.saturating_sub(report.rss_before) as f64 / sos.len() as f64;
    report.bytes_per_more_scaled_object = report.rss_after_planning.saturating_sub(report.rss_half)
        as f64
        / (sos.len() - half).max(1) as f64;
    eprintln!(
        "planned {} ScaledObjects: RSS {} → {} KiB",
        sos.len(),
        report.rss_before / 1024,
        report.rss_after_planning / 1024
    );
    Planned {
        channels,
        sos,
        record,
    }
}

/// (b), (c), (d): the KEDA-shaped phase while spans arrive at the set rate, then spans as
/// fast as the receiver takes them, still polled.
async fn keda_shaped_phase(
    args: &Args,
    scaler: &Scaler,
    queries: &AtomicU64,
    planned: &Planned,
    (otlp_channels, bodies): (Vec<Channel>, Vec<Bytes>),
    report: &mut Report,
) {
    let record = &planned.record;
    let sender = Arc::new(Sender {
        rate: AtomicU64::new(args.spans_per_second),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        behind: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        bodies: RwLock::new(Arc::new(bodies)),
    });
    let sender_thread = if args.spans_per_second > 0 {
        Some(Arc::clone(&sender).run(otlp_channels))
    } else {
        None
    };
    let phase = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let health_record = Arc::new(Record::default());
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let keda = Keda {
        grpc: scaler.grpc,
        connections: args.connections,
        scaled_objects: planned.sos.iter().map(|(_, so)| so.clone()).collect(),
        polling_interval: args.polling_interval,
        record: Arc::clone(record),
        health_record: Arc::clone(&health_record),
        phase: Arc::clone(&phase),
        stop: Arc::clone(&stop),
        start: start.into_std(),
    }
    .run();
    // Warm-up: the store's rates need whole buckets older than `--otlp-rate-settle` (6 s);
    // before that otlp rps triggers answer "not known yet", which is right, but not the
    // steady state this phase measures.
    tokio::time::sleep_until(start + WARM_UP).await;
    phase.store(2, Ordering::Relaxed);
    measure_keda_rate(args, scaler, queries, &sender, record, report).await;
    phase.store(3, Ordering::Relaxed);
    if args.spans_per_second > 0 && !args.flood.is_zero() {
        measure_flood(args, scaler, &sender, report).await;
    }
    phase.store(4, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    sender.stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || keda.join()).await;
    if let Some(t) = sender_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    report.spans_refused = sender.refused.load(Ordering::Relaxed);
    report.spans_sender_behind = sender.behind.load(Ordering::Relaxed) * SPANS_PER_REQUEST as u64;
    report.rss_end = scaler.rss();
    {
        let mut l = record.latencies.lock().unwrap_or_else(|e| e.into_inner());
        l.resize(5, Vec::new());
        report.get_metrics_keda_rate = percentiles(std::mem::take(&mut l[2]));
        report.get_metrics_flood = percentiles(std::mem::take(&mut l[3]));
        let mut l = health_record
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        l.resize(5, Vec::new());
        report.health_keda_rate = percentiles(std::mem::take(&mut l[2]));
        report.health_flood = percentiles(std::mem::take(&mut l[3]));
    }
    report.failures = record
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
}

/// (b), (c), (d) over `--duration` of the KEDA-shaped phase: the scaler's handler
/// histogram, the backend queries against KEDA's built-in scaler's, the spans taken.
async fn measure_keda_rate(
    args: &Args,
    scaler: &Scaler,
    queries: &AtomicU64,
    sender: &Sender,
    record: &Record,
    report: &mut Report,
) {
    let s0 = scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await;
    let q0 = queries.load(Ordering::Relaxed);
    let m0 = scaler
        .metric("slo_scaler_backend_requests_total", &["prometheus"])
        .await;
    let handler0 = scaler.handler_buckets().await;
    let (a0, c0, t0) = (
        sender.accepted.load(Ordering::Relaxed),
        record.calls.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(args.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let handler1 = scaler.handler_buckets().await;
    report.handler_within = HANDLER_BOUNDS
        .iter()
        .zip(handler0.iter().zip(&handler1))
        .map(|(le, (b0, b1))| (le.to_string(), b1 - b0))
        .collect();
    report.fake_queries = queries.load(Ordering::Relaxed) - q0;
    report.backend_requests_metric = scaler
        .metric("slo_scaler_backend_requests_total", &["prometheus"])
        .await
        - m0;
    report.spans_accepted_per_second =
        (sender.accepted.load(Ordering::Relaxed) - a0) as f64 / elapsed;
    report.spans_counted_per_second = (scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await
        - s0)
        / elapsed;
    report.keda_calls_per_second = (record.calls.load(Ordering::Relaxed) - c0) as f64 / elapsed;
    report.calls_per_ttl = report.fake_queries as f64 * CACHE_TTL.as_secs_f64() / elapsed;
    // KEDA's prometheus scaler: one query per GetMetricsAndActivity, from the scale loop
    // every pollingInterval and from the HPA's sync every 15 s.
    report.keda_builtin_per_ttl = report.prometheus_scaled_objects as f64
        * (CACHE_TTL.as_secs_f64() / args.polling_interval.as_secs_f64()
            + CACHE_TTL.as_secs_f64() / HPA_SYNC.as_secs_f64());
}

/// (d) at saturation: spans as fast as the receiver takes them for `--flood`.
async fn measure_flood(args: &Args, scaler: &Scaler, sender: &Sender, report: &mut Report) {
    sender.rate.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s1 = scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await;
    let (a1, t1) = (sender.accepted.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(args.flood).await;
    let flood = t1.elapsed().as_secs_f64();
    report.spans_flood_accepted_per_second =
        (sender.accepted.load(Ordering::Relaxed) - a1) as f64 / flood;
    report.spans_flood_counted_per_second = (scaler
        .metric("slo_scaler_otlp_spans_total", &["accepted"])
        .await
        - s1)
        / flood;
}

/// The bare service on its own runtime and threads, as the scaler's process has them;
/// its address.
fn start_bare(nproc: usize) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(nproc)
            .enable_all()
            .build()
            .expect("bare runtime");
        rt.block_on(async {
            let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())
                .expect("bind")
                .with_nodelay(Some(true));
            let _ = addr_tx.send(incoming.local_addr().expect("address"));
            bare::serve_bare(incoming).await;
        });
    });
    addr_rx.recv().expect("the bare service's address")
}

/// A GetMetrics the scaler answers from its cache: a planned Prometheus ScaledObject's
/// (the first ScaledObject's if there is none), asked once.
async fn cache_hit_request(planned: &Planned) -> GetMetricsRequest {
    let sos = &planned.sos;
    let hit = sos
        .iter()
        .find(|(k, _)| *k == Kind::Prometheus)
        .map_or_else(|| sos[0].1.clone(), |(_, so)| so.clone());
    let mut client = ExternalScalerClient::new(planned.channels[0].clone());
    let spec = client
        .get_metric_spec(hit.clone())
        .await
        .expect("GetMetricSpec")
        .into_inner();
    let request = GetMetricsRequest {
        scaled_object_ref: Some(hit.clone()),
        metric_name: spec.metric_specs[0].metric_name.clone(),
    };
    client
        .get_metrics(request.clone())
        .await
        .expect("a cache-hit GetMetrics answers");
    request
}

/// (a) Saturation, alternating: the scaler's cache-hit GetMetrics, its Health/Check, and
/// the bare service, from the same client with the same concurrency.
async fn saturation(args: &Args, scaler: &Scaler, planned: &Planned, report: &mut Report) {
    let bare_addr = start_bare(report.nproc);
    let hit_request = cache_hit_request(planned).await;
    let mut sat = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let scaler_channels = connections(scaler.grpc).await;
        let bare_channels = connections(bare_addr).await;
        let (gm, f1) =
            saturate_get_metrics(&scaler_channels, args.saturation_round, &hit_request).await;
        let (hc, f2) = saturate(&scaler_channels, args.saturation_round, |c| async move {
            HealthClient::new(c)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        })
        .await;
        let (bare, f3) =
            saturate_get_metrics(&bare_channels, args.saturation_round, &hit_request).await;
        eprintln!(
            "saturation round {}: GetMetrics {gm:.0}/s, Health/Check {hc:.0}/s, bare {bare:.0}/s",
            round + 1
        );
        report.sat_failures += f1 + f2 + f3;
        sat.0.push(gm);
        sat.1.push(hc);
        sat.2.push(bare);
    }
    report.ratio_vs_health = median(&sat.0) / median(&sat.1).max(1.0);
    report.ratio_vs_bare = median(&sat.0) / median(&sat.2).max(1.0);
    (
        report.sat_get_metrics_rps,
        report.sat_health_rps,
        report.sat_bare_rps,
    ) = sat;
}

fn print_report(r: &Report, args: &Args) {
    let kib = |b: u64| b / 1024;
    println!();
    println!(
        "machine: {} × {}; load before {} / after {}",
        r.nproc, r.cpu_model, r.load_before, r.load_after
    );
    println!(
        "workload: {} ScaledObjects ({} otlp over {SERVICES} services, {} prometheus against a \
         fake that answers instantly and counts queries; no SQS: moto is left out), \
         pollingInterval {:?}, HPA sync {:?}, {} connection(s), {:?} measured, spans offered \
         {}/s over OTLP/gRPC",
        r.scaled_objects,
        r.otlp_scaled_objects,
        r.prometheus_scaled_objects,
        args.polling_interval,
        HPA_SYNC,
        r.connections,
        args.duration,
        r.spans_offered_per_second
    );
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!();
    println!("| figure | value | same-run baseline / target |");
    println!("|---|---|---|");
    println!(
        "| (a) cache-hit GetMetrics at saturation ({SAT_CONNECTIONS} conns × {SAT_STREAMS} streams) | {} req/s (median {:.0}) | Health/Check on the scaler: {} (median {:.0}) → **{:.2}×**; bare tonic ExternalScaler: {} (median {:.0}) → **{:.2}×**; failures {} |",
        fmt(&r.sat_get_metrics_rps),
        median(&r.sat_get_metrics_rps),
        fmt(&r.sat_health_rps),
        median(&r.sat_health_rps),
        r.ratio_vs_health,
        fmt(&r.sat_bare_rps),
        median(&r.sat_bare_rps),
        r.ratio_vs_bare,
        r.sat_failures
    );
    let p = |x: &Percentiles| {
        format!(
            "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs ({} calls)",
            x.p50_us, x.p99_us, x.p999_us, x.max_us, x.count
        )
    };
    println!(
        "| (b) GetMetrics round trip, KEDA-shaped ({:.0} GetMetrics/s), {} spans/s offered | {} | Health/Check, same server, connection and rate: {}; target p99 < 1 ms |",
        r.keda_calls_per_second,
        r.spans_offered_per_second,
        p(&r.get_metrics_keda_rate),
        p(&r.health_keda_rate)
    );
    if let Some((_, all)) = r.handler_within.last().filter(|(_, n)| *n > 0.0) {
        let within: Vec<String> = r.handler_within[..r.handler_within.len() - 1]
            .iter()
            .map(|(le, n)| {
                format!(
                    "{:.2} % ≤ {:.0} µs",
                    100.0 * n / all,
                    le.parse::<f64>().unwrap_or(0.0) * 1e6
                )
            })
            .collect();
        println!(
            "| (b'') the same calls inside the scaler (its own histogram, handler entry to answer) | {} of {all:.0} | — |",
            within.join(", ")
        );
    }
    println!(
        "| (b') the same while spans flood the receiver | {} | Health/Check: {} |",
        p(&r.get_metrics_flood),
        p(&r.health_flood)
    );
    println!(
        "| (c) prometheus backend calls per {:?} TTL | {:.1} (fake counted {} in {:.0} s; slo_scaler_backend_requests_total +{:.0}) | KEDA's built-in prometheus scaler: {:.0} per TTL |",
        CACHE_TTL,
        r.calls_per_ttl,
        r.fake_queries,
        r.duration_s,
        r.backend_requests_metric,
        r.keda_builtin_per_ttl
    );
    println!(
        "| (d) spans/s accepted while polled, at the offered rate | {:.0} (the scaler counted {:.0}/s; refused {}, sender behind by {}) | offered {} |",
        r.spans_accepted_per_second,
        r.spans_counted_per_second,
        r.spans_refused,
        r.spans_sender_behind,
        r.spans_offered_per_second
    );
    println!(
        "| (d') spans/s accepted while polled, offered as fast as taken | {:.0} (the scaler counted {:.0}/s) | target ≥ 500k |",
        r.spans_flood_accepted_per_second,
        r.spans_flood_counted_per_second
    );
    println!(
        "| (e) RSS per ScaledObject: the second half's growth / its count | {:.0} B ({} → {} KiB) | target ≤ 2048 B |",
        r.bytes_per_more_scaled_object,
        kib(r.rss_half),
        kib(r.rss_after_planning),
    );
    println!(
        "| (e₀) RSS growth of planning all N / N, with what the first calls make once | {:.0} B ({} → {} → {} KiB; {} KiB at the end) | — |",
        r.bytes_per_scaled_object,
        kib(r.rss_before),
        kib(r.rss_half),
        kib(r.rss_after_planning),
        kib(r.rss_end)
    );
    if !r.failures.is_empty() {
        let mut failures: Vec<_> = r.failures.iter().collect();
        failures.sort();
        println!("RPC errors answered (count, first message):");
        for (what, (n, message)) in failures {
            println!("  {what}: {n} ({message})");
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keda_load: {e}");
            std::process::exit(64);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(run(args.clone()));
    print_report(&report, &args);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
}
