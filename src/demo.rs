//! `slo-scaler demo`: the one-command tour. The server with the embedded trace store, fed
//! over real OTLP/gRPC by synthetic traffic for the seed services, and asked over real
//! gRPC the way KEDA asks — printing a live table of every signal and the replicas the
//! HPA would choose.
//!
//! The story (one loop is 100 s): steady load; an order-service load spike; a
//! payment-service error burst; recovery, while payment-service v2 rolls out as a canary
//! that gets 10 % of its traffic and fails 12 % of it (`--start-at 80s` jumps there).
//!
//! The canary act shows what the scaling signals cannot: diluted in the service-wide error
//! rate, v2's errors stay under the 3 % trigger, while the canary analysis, asked over
//! HTTP exactly as Argo Rollouts asks (`GET /api/v1/analysis` on the admin port, the
//! parameters of `deploy/examples/canary/analysis-template.yaml`) and judged by that
//! template's rule ([`crate::analysis::Rule::EXAMPLE`]), turns from inconclusive (fewer
//! than `minCount` v2 spans) to fail.
//!
//! The loop is closed for order-service: its spans' latencies come from the simulator's
//! service model ([`crate::simulate::service`]) with as many pods as the HPA would run
//! for the recommended `sloCapacity` trigger (the Kubernetes behaviour of [`Autoscaler`],
//! with a start-up delay and a scale-down stabilisation shortened to fit the story). So the
//! table shows the spike, the scale-out and p95 back under the objective; the fleet then
//! keeps the spike's capacity, the busiest minute of the policy's ten-minute history, for
//! the rest of the story.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

use crate::analysis::{Answer, Rule, Verdict};
use crate::config::ServeArgs;
use crate::proto::external_scaler_client::ExternalScalerClient;
use crate::proto::{GetMetricsRequest, ScaledObjectRef};
use crate::signal::hpa::{desired_replicas, desired_replicas_ready, Autoscaler, Behavior};
use crate::signal::MetricType;
use crate::simulate::service::{Service, ServiceModel};

/// The demo's scale-down stabilisation (the Kubernetes default is 300 s, longer than the
/// whole 100 s story).
const DEMO_STABILIZATION_S: u32 = 20;
/// Pod start-up delay in the demo.
const DEMO_STARTUP_S: f64 = 4.0;
/// Pods order-service starts with.
const ORDER_START_PODS: u32 = 3;
/// The `service.version` of every seed service's stable version.
const BASELINE_VERSION: &str = "v1";
/// The `service.version` of payment-service's canary.
const CANARY_VERSION: &str = "v2";
/// The canary act: v2 gets 10 % of payment-service's traffic, slower and failing more.
const CANARY: CanaryLoad = CanaryLoad {
    share: 0.10,
    median_s: 0.150,
    error_ratio: 0.12,
};
/// The query of the example AnalysisTemplate (deploy/examples/canary/), for the canary.
const ANALYSIS_PARAMS: [(&str, &str); 6] = [
    ("service", "payment-service"),
    ("canary", CANARY_VERSION),
    ("baseline", BASELINE_VERSION),
    ("window", "2m"),
    ("quantile", "0.95"),
    ("minCount", "50"),
];

/// order-service, closed loop: the service model and the HPA deciding its pods.
struct OrderLoop {
    service: Service,
    hpa: Autoscaler,
}

impl OrderLoop {
    fn new() -> Self {
        let model = ServiceModel {
            workers_per_pod: 4,
            mean_service_s: 0.060,
            startup_s: DEMO_STARTUP_S,
            ..ServiceModel::default()
        };
        let mut behavior = Behavior::default();
        behavior.scale_down.stabilization_s = DEMO_STABILIZATION_S;
        OrderLoop {
            service: Service::new(model, ORDER_START_PODS, 0x0de7),
            hpa: Autoscaler::new(behavior, 1, 20),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Stop after this long (0 runs until Ctrl-C). One loop of the story is 100 s.
    #[arg(long, value_parser = crate::config::duration_arg, default_value = "100s")]
    pub duration: Duration,
    /// How often the table refreshes.
    #[arg(long, value_parser = crate::config::duration_arg, default_value = "2s")]
    pub refresh: Duration,
    /// Start the story this far in (80s starts with the canary act).
    #[arg(long, value_parser = crate::config::duration_arg, default_value = "0s")]
    pub start_at: Duration,
    /// Drive an already running scaler (at --grpc-addr and --otlp-grpc-addr) instead of
    /// starting one: traffic and KEDA-like polling only (and the canary analysis from
    /// its admin port at --admin-addr, when it answers there).
    #[arg(long)]
    pub attach: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// One seed service's traffic in one phase of the story.
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    /// Median latency, seconds; latencies are log-normal around it.
    median_s: f64,
    error_ratio: f64,
    /// A canary version taking a share of this traffic, if one is rolling out.
    canary: Option<CanaryLoad>,
}

/// A canary's share of its service's traffic, and how it behaves.
#[derive(Debug, Clone, Copy)]
struct CanaryLoad {
    share: f64,
    median_s: f64,
    error_ratio: f64,
}

struct SeedService {
    name: &'static str,
    /// The OTLP span kind: 2 server, 5 consumer.
    kind: i32,
}

const SERVICES: [SeedService; 4] = [
    SeedService {
        name: "api-gateway",
        kind: 2,
    },
    SeedService {
        name: "order-service",
        kind: 2,
    },
    SeedService {
        name: "payment-service",
        kind: 2,
    },
    SeedService {
        name: "notification-service",
        kind: 5,
    },
];

/// The story: (phase name, from second, load per service in `SERVICES` order).
fn phase(t: f64) -> (&'static str, [Load; 4]) {
    let steady = [
        Load {
            rps: 200.0,
            median_s: 0.045,
            error_ratio: 0.002,
            canary: None,
        },
        Load {
            rps: 120.0,
            median_s: 0.080,
            error_ratio: 0.004,
            canary: None,
        },
        Load {
            rps: 60.0,
            median_s: 0.120,
            error_ratio: 0.005,
            canary: None,
        },
        Load {
            rps: 30.0,
            median_s: 0.020,
            error_ratio: 0.0,
            canary: None,
        },
    ];
    let t = t % 100.0;
    let mut load = steady;
    let name = if t < 20.0 {
        "steady load"
    } else if t < 60.0 {
        // Three times the load: order-service's latency follows from its pods.
        load[1].rps = 360.0;
        load[0].median_s = 0.120;
        "order-service load spike"
    } else if t < 80.0 {
        load[2] = Load {
            rps: 60.0,
            median_s: 0.150,
            error_ratio: 0.12,
            canary: None,
        };
        "payment-service error burst"
    } else {
        load[2].canary = Some(CANARY);
        "recovery; payment-service canary v2 at 10 %"
    };
    (name, load)
}

/// The trigger whose replicas drive order-service's pods: the recommended policy, with the
/// service model's 4 workers per pod as its `podConcurrency`.
const LOOP_TRIGGER: &str = "order-service SLO p95 300ms, 4/pod";

/// A KEDA-style trigger the demo evaluates.
struct DemoTrigger {
    title: &'static str,
    metric_type: MetricType,
    metadata: Vec<(&'static str, &'static str)>,
    replicas: u32,
    /// Whether this trigger's replicas drive order-service's pods.
    closes_loop: bool,
}

fn demo_triggers() -> Vec<DemoTrigger> {
    let t = |title, metric_type, metadata: &[(&'static str, &'static str)]| DemoTrigger {
        title,
        metric_type,
        metadata: metadata.to_vec(),
        replicas: ORDER_START_PODS,
        closes_loop: title == LOOP_TRIGGER,
    };
    vec![
        t(
            LOOP_TRIGGER,
            MetricType::AverageValue,
            &[
                ("signal", "sloCapacity"),
                ("source", "otlp"),
                ("service", "order-service"),
                ("latencyObjective", "300ms"),
                ("podConcurrency", "4"),
                ("threshold", "1"),
            ],
        ),
        t(
            "order-service p95 < 300ms",
            MetricType::Value,
            &[
                ("signal", "latency"),
                ("source", "otlp"),
                ("service", "order-service"),
                ("window", "10s"),
                ("threshold", "300ms"),
            ],
        ),
        t(
            "order-service 50 rps/pod",
            MetricType::AverageValue,
            &[
                ("signal", "rps"),
                ("source", "otlp"),
                ("service", "order-service"),
                ("window", "10s"),
                ("threshold", "50"),
            ],
        ),
        t(
            "payment-service errors < 3%",
            MetricType::Value,
            &[
                ("signal", "errorRate"),
                ("source", "otlp"),
                ("service", "payment-service"),
                ("window", "10s"),
                ("threshold", "3%"),
                ("activationThreshold", "1%"),
            ],
        ),
        t(
            "api-gateway p99 < 250ms",
            MetricType::Value,
            &[
                ("signal", "latency"),
                ("source", "otlp"),
                ("service", "api-gateway"),
                ("quantile", "p99"),
                ("window", "10s"),
                ("threshold", "250ms"),
            ],
        ),
        t(
            "notification-service 10 msg/s/pod",
            MetricType::AverageValue,
            &[
                ("signal", "rps"),
                ("source", "otlp"),
                ("service", "notification-service"),
                ("spanKind", "consumer"),
                ("window", "10s"),
                ("threshold", "10"),
            ],
        ),
    ]
}

/// A small deterministic generator (xorshift64*), so every run tells the same story.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// What a batch leaves over for the next: fractions of a span per service, and of a
/// canary error.
#[derive(Debug, Default)]
struct Carry {
    spans: [f64; 4],
    canary_errors: f64,
}

/// Spans for `dt` seconds of the story at time `t`, ending now.
fn batch(
    rng: &mut Rng,
    t: f64,
    dt: f64,
    carry: &mut Carry,
    order: &mut OrderLoop,
) -> ExportTraceServiceRequest {
    let (_, loads) = phase(t);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut resource_spans = Vec::new();
    for (i, (svc, load)) in SERVICES.iter().zip(loads).enumerate() {
        carry.spans[i] += load.rps * dt;
        let n = carry.spans[i].floor() as usize;
        carry.spans[i] -= n as f64;
        // Arrivals spread over the last `dt` seconds, in order (the queue is FCFS).
        let mut ago: Vec<f64> = (0..n).map(|_| rng.next_f64() * dt).collect();
        ago.sort_by(|a, b| b.total_cmp(a));
        let (mut stable, mut canary) = (Vec::new(), Vec::new());
        for (k, ago) in ago.into_iter().enumerate() {
            let to_canary = load.canary.filter(|c| rng.next_f64() < c.share);
            let (latency, error) = match to_canary {
                // The canary's errors are evenly spaced, so its error rate is the act's
                // at every count (a random draw could look healthy by chance).
                Some(c) => {
                    carry.canary_errors += c.error_ratio;
                    let error = carry.canary_errors >= 1.0;
                    if error {
                        carry.canary_errors -= 1.0;
                    }
                    (c.median_s * (0.45 * rng.normal()).exp(), error)
                }
                None if svc.name == "order-service" => {
                    let o = order.service.serve(t - ago, 1.0);
                    (o.latency_s, o.error || rng.next_f64() < load.error_ratio)
                }
                None => (
                    load.median_s * (0.45 * rng.normal()).exp(),
                    rng.next_f64() < load.error_ratio,
                ),
            };
            let end = now_ns.saturating_sub((ago * 1e9) as u64);
            let span = Span {
                trace_id: (rng.0 as u128 ^ k as u128).to_be_bytes().to_vec(),
                span_id: rng.0.to_be_bytes().to_vec(),
                name: format!("{} handle", svc.name),
                kind: svc.kind,
                start_time_unix_nano: end.saturating_sub((latency * 1e9) as u64),
                end_time_unix_nano: end,
                status: Some(Status {
                    code: if error {
                        status::StatusCode::Error as i32
                    } else {
                        status::StatusCode::Unset as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            };
            match to_canary {
                Some(_) => canary.push(span),
                None => stable.push(span),
            }
        }
        for (version, spans) in [(BASELINE_VERSION, stable), (CANARY_VERSION, canary)] {
            if spans.is_empty() && version == CANARY_VERSION {
                continue;
            }
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        attr("service.name", svc.name),
                        attr("service.version", version),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest { resource_spans }
}

fn so(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "demo".into(),
        namespace: "demo".into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

/// Runs the demo; returns an error message when it cannot.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let mut server = None;
    let (grpc_addr, otlp_addr, admin_addr) = if args.attach {
        (
            args.serve.grpc_addr,
            args.serve.otlp.otlp_grpc_addr,
            args.serve.admin_addr,
        )
    } else {
        let mut serve = args.serve.clone();
        serve.otlp.no_otlp = false;
        let s = crate::server::Server::start(serve)
            .await
            .map_err(|e| format!("cannot start the scaler: {e:#}"))?;
        let addrs = (
            s.grpc_addr,
            s.otlp_grpc_addr.ok_or("the OTLP receiver is not running")?,
            s.admin_addr,
        );
        server = Some(s);
        addrs
    };
    let local = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], a.port()))
        } else {
            a
        }
    };
    let (grpc_addr, otlp_addr) = (local(grpc_addr), local(otlp_addr));
    let analysis = AnalysisClient::new(local(admin_addr))?;
    let mut otlp = TraceServiceClient::connect(format!("http://{otlp_addr}"))
        .await
        .map_err(|e| format!("cannot reach the OTLP receiver at {otlp_addr}: {e}"))?;
    let mut keda = ExternalScalerClient::connect(format!("http://{grpc_addr}"))
        .await
        .map_err(|e| format!("cannot reach the scaler at {grpc_addr}: {e}"))?;

    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut carry = Carry::default();
    let mut order = OrderLoop::new();
    let mut triggers = demo_triggers();
    let tick = Duration::from_millis(200);
    let mut last_send = Instant::now();
    let mut next_table = Instant::now() + args.refresh;
    let mut result = Ok(());
    let mut stop = Box::pin(tokio::signal::ctrl_c());
    loop {
        let elapsed = started.elapsed();
        if !args.duration.is_zero() && elapsed >= args.duration {
            break;
        }
        let dt = last_send.elapsed().as_secs_f64();
        last_send = Instant::now();
        let t = (args.start_at + elapsed).as_secs_f64();
        let req = batch(&mut rng, t, dt, &mut carry, &mut order);
        if let Err(e) = otlp.export(req).await {
            result = Err(format!("OTLP export failed: {e}"));
            break;
        }
        if Instant::now() >= next_table {
            next_table += args.refresh;
            let mut table = poll(&mut keda, &mut triggers, &mut order, t).await;
            render_analysis(&mut table, analysis.ask().await);
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            print!("{table}");
            let _ = std::io::stdout().flush();
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut stop => break,
        }
    }
    if let Some(s) = server {
        s.shutdown().await.map_err(|e| format!("{e:#}"))?;
    }
    result
}

/// Asks the scaler like KEDA (GetMetricSpec, GetMetrics, IsActive) for every service
/// signal and demo trigger, and renders the table.
async fn poll(
    keda: &mut ExternalScalerClient<tonic::transport::Channel>,
    triggers: &mut [DemoTrigger],
    order: &mut OrderLoop,
    t: f64,
) -> String {
    let (phase_name, _) = phase(t);
    let mut out = String::new();
    let _ = writeln!(out, "slo-scaler demo — t={t:>5.1}s — {phase_name}\n");
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>8}",
        "service", "rps", "p95", "errors"
    );
    for svc in SERVICES {
        let kind = if svc.kind == 5 { "consumer" } else { "server" };
        let mut row = Vec::new();
        for (signal, threshold) in [("rps", "1"), ("latency", "1s"), ("errorRate", "0.5")] {
            let r = so(&[
                ("signal", signal),
                ("source", "otlp"),
                ("service", svc.name),
                ("spanKind", kind),
                ("window", "10s"),
                ("threshold", threshold),
            ]);
            row.push(value(keda, &r).await);
        }
        let fmt = |v: &Result<f64, String>, f: &dyn Fn(f64) -> String| match v {
            Ok(v) => f(*v),
            Err(_) => "—".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>10} {:>8}",
            svc.name,
            fmt(&row[0], &|v| format!("{v:.1}")),
            fmt(&row[1], &|v| format!("{:.0}ms", v * 1000.0)),
            fmt(&row[2], &|v| format!("{:.1}%", v * 100.0)),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<36} {:>12} {:>10} {:>7} {:>14}  metricType",
        "trigger", "value", "threshold", "active", "replicas"
    );
    // Errors are named under the table, whole: a cell would cut them mid-word.
    let mut errors: Vec<(&str, String)> = Vec::new();
    for trig in triggers.iter_mut() {
        let r = so(&trig.metadata);
        let threshold = trig
            .metadata
            .iter()
            .find(|(k, _)| *k == "threshold")
            .map(|(_, v)| *v)
            .unwrap_or("");
        let v = value(keda, &r).await;
        let active = keda
            .is_active(r)
            .await
            .map(|a| a.into_inner().result)
            .map_err(|s| s.message().to_string());
        let (value_text, replicas) = match (&v, &active) {
            (Ok(v), Ok(_)) => {
                let target = target_of(&trig.metadata);
                let (current, desired) = if trig.closes_loop {
                    // The HPA with its behaviour decides order-service's pods; a `Value`
                    // ratio multiplies only the pods that are ready, as the HPA's does.
                    let current = order.service.replicas();
                    let ready = order.service.ready(t);
                    let proposal =
                        desired_replicas_ready(trig.metric_type, current, ready, *v, target);
                    let next = order.hpa.reconcile(t, current, proposal);
                    order.service.scale_to(next, t);
                    (current, next)
                } else {
                    let proposal = desired_replicas(trig.metric_type, trig.replicas, *v, target);
                    (trig.replicas, proposal.clamp(1, 20))
                };
                let text = format!("{current} → {desired}");
                trig.replicas = desired;
                (format!("{v:.3}"), text)
            }
            (Err(e), _) | (_, Err(e)) => {
                errors.push((trig.title, e.clone()));
                ("error ¹".to_string(), "—".into())
            }
        };
        let _ = writeln!(
            out,
            "{:<36} {:>12} {:>10} {:>7} {:>14}  {}",
            trig.title,
            value_text,
            threshold,
            match &active {
                Ok(a) => a.to_string(),
                Err(_) => "—".into(),
            },
            replicas,
            trig.metric_type
        );
    }
    for (title, e) in &errors {
        let _ = writeln!(out, "  ¹ {title}: {e}");
    }
    let _ = writeln!(
        out,
        "\norder-service pods: {} ({} ready), set by the sloCapacity trigger through the HPA (scale-down stabilisation {}s, start-up {}s)",
        order.service.replicas(),
        order.service.ready(t),
        DEMO_STABILIZATION_S,
        DEMO_STARTUP_S
    );
    let _ = writeln!(
        out,
        "values: latency in seconds, error rate as a ratio; replicas: what the HPA would pick now (min 1, max 20)\n"
    );
    out
}

/// The canary analysis, asked over HTTP as Argo Rollouts' `web` provider asks it.
struct AnalysisClient {
    http: reqwest::Client,
    url: reqwest::Url,
}

impl AnalysisClient {
    fn new(admin: std::net::SocketAddr) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // The table waits for the answer: a slow admin port must not stall the traffic.
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let url = reqwest::Url::parse_with_params(
            &format!("http://{admin}/api/v1/analysis"),
            ANALYSIS_PARAMS,
        )
        .map_err(|e| format!("bad admin address {admin}: {e}"))?;
        Ok(AnalysisClient { http, url })
    }

    async fn ask(&self) -> Result<Answer, String> {
        let resp = self
            .http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| format!("no answer from the admin port: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("{status}, not a JSON answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("no error message")
            ));
        }
        serde_json::from_value(body).map_err(|e| format!("unexpected answer: {e}"))
    }
}

/// One of the analysis query's parameters.
fn analysis_param(name: &str) -> &'static str {
    ANALYSIS_PARAMS
        .iter()
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| *v)
}

/// The canary analysis under the table: both sides' figures, and the verdict of the
/// example AnalysisTemplate's rule on them.
fn render_analysis(out: &mut String, answer: Result<Answer, String>) {
    let rule = Rule::EXAMPLE;
    let _ = writeln!(
        out,
        "canary analysis: payment-service {CANARY_VERSION} vs {BASELINE_VERSION} over {}, p95, \
         minCount {} (GET /api/v1/analysis)\nrule of the example AnalysisTemplate: fail above \
         {:.0}% canary errors or p95 more than {:.0}ms above the baseline",
        analysis_param("window"),
        analysis_param("minCount"),
        rule.max_error_rate * 100.0,
        rule.max_latency_increase_s * 1000.0,
    );
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(out, "canary verdict: unavailable ({e})\n");
            return;
        }
    };
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}%", v * 100.0));
    let ms = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.0}ms", v * 1000.0));
    let _ = writeln!(
        out,
        "  {:<10} {:<8} {:>7} {:>8} {:>8} {:>8}",
        "side", "version", "count", "rps", "errors", "p95"
    );
    for (name, side) in [("canary", &a.canary), ("baseline", &a.baseline)] {
        let _ = writeln!(
            out,
            "  {:<10} {:<8} {:>7} {:>8} {:>8} {:>8}",
            name,
            side.version,
            side.count,
            side.rps.map_or("—".into(), |r| format!("{r:.1}")),
            pct(side.error_rate),
            ms(side.latency)
        );
    }
    let verdict = rule.judge(&a);
    let reason = match verdict {
        Verdict::Inconclusive if a.inconclusive => format!(
            "fewer than {} spans on a side (canary {}, baseline {})",
            analysis_param("minCount"),
            a.canary.count,
            a.baseline.count
        ),
        Verdict::Inconclusive => "a figure is missing".to_string(),
        Verdict::Fail | Verdict::Pass => format!(
            "canary errors {} (at most {:.0}%), p95 {} vs baseline (at most +{:.0}ms)",
            pct(a.canary.error_rate),
            rule.max_error_rate * 100.0,
            a.delta
                .latency
                .map_or("—".into(), |d| format!("{:+.0}ms", d * 1000.0)),
            rule.max_latency_increase_s * 1000.0,
        ),
    };
    let _ = writeln!(out, "canary verdict: {} — {reason}\n", verdict.label());
}

/// The trigger's target, as the scaler parses it (latency in seconds, ratios as ratios).
fn target_of(metadata: &[(&str, &str)]) -> f64 {
    let md = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::trigger::parse(&md, &crate::trigger::ParseOptions::default())
        .map(|t| t.target)
        .unwrap_or(f64::NAN)
}

async fn value(
    keda: &mut ExternalScalerClient<tonic::transport::Channel>,
    r: &ScaledObjectRef,
) -> Result<f64, String> {
    let spec = keda
        .get_metric_spec(r.clone())
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let name = spec
        .metric_specs
        .first()
        .map(|s| s.metric_name.clone())
        .ok_or("no metric spec")?;
    let resp = keda
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(r.clone()),
            metric_name: name,
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    resp.metric_values
        .first()
        .map(|v| v.metric_value_float)
        .ok_or_else(|| "no value".to_string())
}
