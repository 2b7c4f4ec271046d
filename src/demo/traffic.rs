//! The traffic generator: the story's spans, sent over real OTLP/gRPC to the scaler's
//! receiver.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

use super::queue::QueueLoop;
use super::scaling::OrderLoop;
use super::story::{phase, BASELINE_VERSION, CANARY_VERSION, SERVICES};

/// The OTLP client and the generator's state: each [`Traffic::send`] exports the spans of
/// the time since the previous one.
pub(super) struct Traffic {
    client: TraceServiceClient<tonic::transport::Channel>,
    rng: Rng,
    carry: Carry,
    /// When the previous batch was sent (none yet: the first covers no time).
    last_send: Option<Instant>,
}

impl Traffic {
    pub(super) async fn connect(otlp_addr: std::net::SocketAddr) -> Result<Self, String> {
        let client = TraceServiceClient::connect(format!("http://{otlp_addr}"))
            .await
            .map_err(|e| format!("cannot reach the OTLP receiver at {otlp_addr}: {e}"))?;
        Ok(Traffic {
            client,
            rng: Rng(0x5eed_cafe_f00d_d00d),
            carry: Carry::default(),
            last_send: None,
        })
    }

    /// Sends the spans of the story at time `t` since the last call; notification-service's
    /// are the messages its consumers processed meanwhile.
    pub(super) async fn send(
        &mut self,
        t: f64,
        order: &mut OrderLoop,
        queue: &mut QueueLoop,
    ) -> Result<(), String> {
        let dt = self.last_send.map_or(0.0, |l| l.elapsed().as_secs_f64());
        self.last_send = Some(Instant::now());
        let consumed = queue.advance(t, dt, phase(t).1[CONSUMER].rps);
        let req = batch(&mut self.rng, t, dt, consumed, &mut self.carry, order);
        self.client
            .export(req)
            .await
            .map(drop)
            .map_err(|e| format!("OTLP export failed: {e}"))
    }
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

/// notification-service's place in `SERVICES`: its spans are the queue's consumed messages.
const CONSUMER: usize = 3;
const _: () = assert!(SERVICES[CONSUMER].kind == 5);

/// Spans for `dt` seconds of the story at time `t`, ending now, with `consumed` messages
/// processed by notification-service.
fn batch(
    rng: &mut Rng,
    t: f64,
    dt: f64,
    consumed: f64,
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
        carry.spans[i] += if i == CONSUMER {
            consumed
        } else {
            load.rps * dt
        };
        let n = carry.spans[i].floor() as usize;
        carry.spans[i] -= n as f64;
        // Arrivals spread over the last `dt` seconds, in order (the queue is FCFS).
        let mut ago: Vec<f64> = (0..n).map(|_| rng.next_f64() * dt).collect();
        ago.sort_by(|a, b| b.total_cmp(a));
        // The stable version's spans by the pod that served them (order-service's, from
        // its service model), the canary's apart.
        let mut stable: BTreeMap<Option<u32>, Vec<Span>> = BTreeMap::new();
        let mut canary = Vec::new();
        for (k, ago) in ago.into_iter().enumerate() {
            let to_canary = load.canary.filter(|c| rng.next_f64() < c.share);
            let (latency, error, pod) = match to_canary {
                // The canary's errors are evenly spaced, so its error rate is the act's
                // at every count (a random draw could look healthy by chance).
                Some(c) => {
                    carry.canary_errors += c.error_ratio;
                    let error = carry.canary_errors >= 1.0;
                    if error {
                        carry.canary_errors -= 1.0;
                    }
                    (c.median_s * (0.45 * rng.normal()).exp(), error, None)
                }
                None if svc.name == "order-service" => {
                    let o = order.service.serve(t - ago, 1.0);
                    let error = o.error || rng.next_f64() < load.error_ratio;
                    (o.latency_s, error, o.pod)
                }
                None => (
                    load.median_s * (0.45 * rng.normal()).exp(),
                    rng.next_f64() < load.error_ratio,
                    None,
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
                None => stable.entry(pod).or_default().push(span),
            }
        }
        let stable = stable
            .into_iter()
            .map(|(pod, spans)| (BASELINE_VERSION, pod, spans));
        let canary = (!canary.is_empty()).then_some((CANARY_VERSION, None, canary));
        for (version, pod, spans) in stable.chain(canary) {
            let mut attributes = vec![
                attr("service.name", svc.name),
                attr("service.version", version),
            ];
            // As the Collector's `k8sattributes` processor names a span's pod: the
            // store counts the pods that served a minute (docs/otlp.md).
            if let Some(pod) = pod {
                attributes.push(attr("k8s.pod.name", &format!("{}-{pod}", svc.name)));
            }
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes,
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
