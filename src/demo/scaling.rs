//! The KEDA/HPA loop: the scaler asked over gRPC the way KEDA asks, order-service's pods
//! decided by the HPA from its trigger, and the canary analysis asked over HTTP the way
//! Argo Rollouts asks.

use std::collections::HashMap;
use std::time::Duration;

use crate::analysis::Answer;
use crate::proto::external_scaler_client::ExternalScalerClient;
use crate::proto::{GetMetricsRequest, ScaledObjectRef};
use crate::signal::hpa::{desired_replicas, desired_replicas_ready, Autoscaler, Behavior};
use crate::signal::MetricType;
use crate::simulate::service::{Service, ServiceModel};

use super::queue::{Counts, QueueLoop};
use super::story::{
    phase, Closes, DemoTrigger, ANALYSIS_PARAMS, DEMO_STABILIZATION_S, DEMO_STARTUP_S,
    ORDER_START_PODS, SERVICES,
};

/// order-service, closed loop: the service model and the HPA deciding its pods.
pub(super) struct OrderLoop {
    pub(super) service: Service,
    hpa: Autoscaler,
}

impl OrderLoop {
    pub(super) fn new() -> Self {
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

/// What one poll saw: every seed service's figures and every demo trigger's answer.
pub(super) struct Polled {
    pub(super) t: f64,
    pub(super) phase: &'static str,
    /// Per service in `SERVICES` order: rps, p95 and error rate.
    pub(super) services: Vec<(&'static str, [Result<f64, String>; 3])>,
    pub(super) triggers: Vec<TriggerRow>,
    /// order-service's pods after the poll, and how many of them are ready.
    pub(super) pods: u32,
    pub(super) ready: u32,
    /// notification-service's queue and consumers (pods, ready) after the poll, when the
    /// queue trigger drives them.
    pub(super) queue: Option<(Counts, u32, u32)>,
}

/// One demo trigger's answer: its value and the replicas the HPA goes from and to, or
/// the first error (GetMetrics', else IsActive's).
pub(super) struct TriggerRow {
    pub(super) title: &'static str,
    pub(super) threshold: &'static str,
    pub(super) metric_type: MetricType,
    pub(super) answer: Result<(f64, u32, u32), String>,
    pub(super) active: Result<bool, String>,
}

/// Asks the scaler like KEDA (GetMetricSpec, GetMetrics, IsActive) for every service
/// signal and demo trigger; the triggers that close a loop scale order-service and
/// notification-service's consumers.
pub(super) async fn poll(
    keda: &mut ExternalScalerClient<tonic::transport::Channel>,
    triggers: &mut [DemoTrigger],
    order: &mut OrderLoop,
    queue: &mut QueueLoop,
    t: f64,
) -> Polled {
    let (phase_name, _) = phase(t);
    let mut services = Vec::new();
    for svc in SERVICES {
        let kind = if svc.kind == 5 { "consumer" } else { "server" };
        let mut row: [Result<f64, String>; 3] = [Ok(0.0), Ok(0.0), Ok(0.0)];
        let signals = [("rps", "1"), ("latency", "1s"), ("errorRate", "0.5")];
        for (cell, (signal, threshold)) in row.iter_mut().zip(signals) {
            let r = so(&[
                ("signal", signal),
                ("source", "otlp"),
                ("service", svc.name),
                ("spanKind", kind),
                ("window", "10s"),
                ("threshold", threshold),
            ]);
            *cell = value(keda, &r).await;
        }
        services.push((svc.name, row));
    }
    let mut rows = Vec::new();
    for trig in triggers.iter_mut() {
        let r = so(&trig.metadata);
        let threshold = trig
            .metadata
            .iter()
            // SQS triggers name theirs as KEDA's aws-sqs-queue does.
            .find(|(k, _)| *k == "threshold" || *k == "queueLength")
            .map(|(_, v)| *v)
            .unwrap_or("");
        let v = value(keda, &r).await;
        let active = keda
            .is_active(r)
            .await
            .map(|a| a.into_inner().result)
            .map_err(|s| s.message().to_string());
        let answer = match (&v, &active) {
            (Ok(v), Ok(_)) => {
                let target = target_of(&trig.metadata);
                let pods = match trig.closes {
                    Some(Closes::Order) => Some((&mut order.service, &mut order.hpa)),
                    Some(Closes::Queue) => Some((&mut queue.consumers, &mut queue.hpa)),
                    None => None,
                };
                let (current, desired) = if let Some((service, hpa)) = pods {
                    // The HPA with its behaviour decides the pods; a `Value` ratio
                    // multiplies only the pods that are ready, as the HPA's does.
                    let current = service.replicas();
                    let ready = service.ready(t);
                    let proposal =
                        desired_replicas_ready(trig.metric_type, current, ready, *v, target);
                    let next = hpa.reconcile(t, current, proposal);
                    service.scale_to(next, t);
                    (current, next)
                } else {
                    let proposal = desired_replicas(trig.metric_type, trig.replicas, *v, target);
                    (trig.replicas, proposal.clamp(1, 20))
                };
                trig.replicas = desired;
                Ok((*v, current, desired))
            }
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        rows.push(TriggerRow {
            title: trig.title,
            threshold,
            metric_type: trig.metric_type,
            answer,
            active,
        });
    }
    Polled {
        t,
        phase: phase_name,
        services,
        triggers: rows,
        pods: order.service.replicas(),
        ready: order.service.ready(t),
        queue: triggers
            .iter()
            .any(|t| t.closes == Some(Closes::Queue))
            .then(|| {
                (
                    queue.counts(),
                    queue.consumers.replicas(),
                    queue.consumers.ready(t),
                )
            }),
    }
}

/// The canary analysis, asked over HTTP as Argo Rollouts' `web` provider asks it.
pub(super) struct AnalysisClient {
    http: reqwest::Client,
    url: reqwest::Url,
}

impl AnalysisClient {
    pub(super) fn new(admin: std::net::SocketAddr) -> Result<Self, String> {
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

    pub(super) async fn ask(&self) -> Result<Answer, String> {
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
