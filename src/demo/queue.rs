//! The queue act: order-service publishes a notification per order into an SQS queue that
//! notification-service consumes. When the order spike triples the orders, the consumers
//! fall behind and the backlog grows, which their own spans cannot show (they consume as
//! fast as they can, spike or not). The `queueDepth` trigger reads the backlog through the
//! scaler's real SQS source (the AWS SDK) from a local endpoint that answers for this one
//! queue, and the HPA scales the consumers on it; the loop is closed like order-service's.
//!
//! The endpoint speaks the subset of the SQS API the scaler calls: `GetQueueAttributes` in
//! the AWS JSON 1.0 protocol (`POST /`, `X-Amz-Target: AmazonSQS.GetQueueAttributes`, a
//! JSON body with `QueueUrl` and `AttributeNames`; the answer's `Attributes` map holds
//! each count as a decimal string), as the SQS API reference describes it and the AWS SDK
//! for Rust sends it. Anything else is answered with SQS' JSON error shape.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::signal::hpa::{Autoscaler, Behavior};
use crate::simulate::service::{Service, ServiceModel};

use super::story::{DEMO_STABILIZATION_S, DEMO_STARTUP_S};

/// The demo's queue. An AWS-shaped URL (its region is read from it); requests go to the
/// local endpoint the demo's server is pointed at.
pub(super) const QUEUE_URL: &str =
    "https://sqs.us-east-1.amazonaws.com/123456789012/order-notifications";
/// Messages one notification-service pod consumes per second.
pub(super) const CONSUMER_RATE: f64 = 10.0;
/// Pods notification-service starts with, and its HPA's minimum (the ScaledObject's
/// `minReplicaCount`): the consumers that keep up with the steady 30 messages a second.
pub(super) const CONSUMER_MIN_PODS: u32 = 3;

/// The queue's counts as `GetQueueAttributes` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub(super) visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, being processed.
    pub(super) in_flight: u64,
}

/// notification-service's consumers, closed loop: the backlog, the pods and the HPA.
pub(super) struct QueueLoop {
    /// Messages waiting (fractional: the arrivals and consumption are fluid).
    backlog: f64,
    pub(super) consumers: Service,
    pub(super) hpa: Autoscaler,
    counts: Arc<Mutex<Counts>>,
}

impl QueueLoop {
    pub(super) fn new() -> Self {
        let mut behavior = Behavior::default();
        behavior.scale_down.stabilization_s = DEMO_STABILIZATION_S;
        let model = ServiceModel {
            startup_s: DEMO_STARTUP_S,
            ..ServiceModel::default()
        };
        QueueLoop {
            backlog: 0.0,
            consumers: Service::new(model, CONSUMER_MIN_PODS, 0x5e_c0de),
            hpa: Autoscaler::new(behavior, CONSUMER_MIN_PODS, 20),
            counts: Arc::default(),
        }
    }

    /// `dt` seconds at time `t` with `published` messages per second arriving: returns
    /// how many messages the consumers processed.
    pub(super) fn advance(&mut self, t: f64, dt: f64, published: f64) -> f64 {
        let capacity = f64::from(self.consumers.ready(t)) * CONSUMER_RATE * dt;
        let available = self.backlog + published * dt;
        let consumed = available.min(capacity);
        self.backlog = available - consumed;
        // A consumer holds one message at a time, for 1 ÷ CONSUMER_RATE seconds: by
        // Little's law the messages in flight are the busy consumers.
        let in_flight = if dt > 0.0 {
            (consumed / dt / CONSUMER_RATE).round() as u64
        } else {
            0
        };
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = Counts {
            visible: self.backlog.floor() as u64,
            in_flight,
        };
        consumed
    }

    /// What the endpoint reports now.
    pub(super) fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the queue's endpoint on `127.0.0.1`; returns its address.
    pub(super) async fn serve(&self) -> Result<SocketAddr, String> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot listen for the demo's queue: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the demo's queue has no address: {e}"))?;
        let app = axum::Router::new()
            .route("/", axum::routing::post(answer))
            .with_state(self.counts.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }
}

/// One SQS API call, in the AWS JSON 1.0 protocol.
async fn answer(
    State(counts): State<Arc<Mutex<Counts>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if target != "AmazonSQS.GetQueueAttributes" {
        return error(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            &format!("the demo's queue answers GetQueueAttributes only, not {target:?}"),
        );
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["QueueUrl"].as_str() != Some(QUEUE_URL) {
        return error(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            "The specified queue does not exist.",
        );
    }
    let c = *counts.lock().unwrap_or_else(|e| e.into_inner());
    let all = [
        ("ApproximateNumberOfMessages", c.visible),
        ("ApproximateNumberOfMessagesNotVisible", c.in_flight),
        ("ApproximateNumberOfMessagesDelayed", 0),
    ];
    let asked: Vec<&str> = request["AttributeNames"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    let attributes: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .filter(|(name, _)| asked.contains(name) || asked.contains(&"All"))
        .map(|(name, n)| (name.to_string(), n.to_string().into()))
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "Attributes": attributes }),
        None,
    )
}

/// SQS' JSON error: `__type` names the error; `x-amzn-query-error` carries the code of
/// SQS' older query protocol, which the SDK prefers when present.
fn error(kind: &str, query_code: &str, message: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "__type": format!("com.amazonaws.sqs#{kind}"), "message": message }),
        Some(format!("{query_code};Sender")),
    )
}

fn json(status: StatusCode, body: serde_json::Value, query_error: Option<String>) -> Response {
    let mut resp = (
        status,
        [("content-type", "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response();
    if let Some(code) = query_error.and_then(|c| c.parse().ok()) {
        resp.headers_mut().insert("x-amzn-query-error", code);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sqs::{SqsConfig, SqsSource};
    use crate::source::{Reading, SqsQuery};

    fn source(addr: SocketAddr) -> SqsSource {
        SqsSource::with_loader(
            crate::demo::aws_loader,
            SqsConfig {
                endpoint: Some(format!("http://{addr}")),
                region: None,
            },
        )
    }

    #[tokio::test]
    async fn the_backlog_reaches_the_scaler_through_the_aws_sdk() {
        let mut q = QueueLoop::new();
        let addr = q.serve().await.unwrap();
        // 3 ready consumers take 30 messages a second; 90 a second for 10 s leave 600.
        q.advance(100.0, 10.0, 90.0);
        assert_eq!(
            q.counts(),
            Counts {
                visible: 600,
                in_flight: 3
            }
        );
        let src = source(addr);
        let Reading::Queue(depth) = src.fetch(&SqsQuery::of(QUEUE_URL)).await.unwrap() else {
            panic!("not a queue reading");
        };
        assert_eq!(
            (depth.visible, depth.in_flight, depth.delayed),
            (600, Some(3), None)
        );
        // Another queue is not there, as SQS says of a queue it does not have.
        let other = QUEUE_URL.replace("order-notifications", "other");
        let err = src.fetch(&SqsQuery::of(other)).await.unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn consumers_drain_what_they_can_and_no_more() {
        let mut q = QueueLoop::new();
        let counts = |visible, in_flight| Counts { visible, in_flight };
        // At capacity: everything published is consumed, nothing waits, the 3 consumers
        // are busy.
        assert_eq!(q.advance(100.0, 1.0, 30.0), 30.0);
        assert_eq!(q.counts(), counts(0, 3));
        // Above it: 30 consumed, 60 left waiting.
        assert_eq!(q.advance(101.0, 1.0, 90.0), 30.0);
        assert_eq!(q.counts(), counts(60, 3));
        // Quiet again: the backlog drains at the consumers' rate.
        assert_eq!(q.advance(102.0, 1.0, 0.0), 30.0);
        assert_eq!(q.counts(), counts(30, 3));
        assert_eq!(q.advance(103.0, 1.0, 10.0), 30.0);
        assert_eq!(q.counts(), counts(10, 3));
        assert_eq!(q.advance(104.0, 1.0, 0.0), 10.0);
        assert_eq!(q.counts(), counts(0, 1));
        assert_eq!(q.advance(105.0, 1.0, 0.0), 0.0);
        assert_eq!(q.counts(), counts(0, 0));
    }
}
