//! The story the demo tells: four seed services, their load in each phase of a 100 s
//! loop, the canary act and the KEDA triggers asked about.

use crate::signal::MetricType;

/// The demo's scale-down stabilisation (the Kubernetes default is 300 s, longer than the
/// whole 100 s story).
pub(super) const DEMO_STABILIZATION_S: u32 = 20;
/// Pod start-up delay in the demo.
pub(super) const DEMO_STARTUP_S: f64 = 4.0;
/// Pods order-service starts with.
pub(super) const ORDER_START_PODS: u32 = 3;
/// The `service.version` of every seed service's stable version.
pub(super) const BASELINE_VERSION: &str = "v1";
/// The `service.version` of payment-service's canary.
pub(super) const CANARY_VERSION: &str = "v2";
/// The canary act: v2 gets 10 % of payment-service's traffic, slower and failing more.
pub(super) const CANARY: CanaryLoad = CanaryLoad {
    share: 0.10,
    median_s: 0.150,
    error_ratio: 0.12,
};
/// The query of the example AnalysisTemplate (deploy/examples/canary/), for the canary.
pub(super) const ANALYSIS_PARAMS: [(&str, &str); 7] = [
    ("service", "payment-service"),
    ("canary", CANARY_VERSION),
    ("baseline", BASELINE_VERSION),
    ("window", "2m"),
    ("quantile", "0.95"),
    ("minCount", "50"),
    ("source", "otlp"),
];

/// One seed service's traffic in one phase of the story.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    pub(super) rps: f64,
    /// Median latency, seconds; latencies are log-normal around it.
    pub(super) median_s: f64,
    pub(super) error_ratio: f64,
    /// A canary version taking a share of this traffic, if one is rolling out.
    pub(super) canary: Option<CanaryLoad>,
}

/// A canary's share of its service's traffic, and how it behaves.
#[derive(Debug, Clone, Copy)]
pub(super) struct CanaryLoad {
    pub(super) share: f64,
    pub(super) median_s: f64,
    pub(super) error_ratio: f64,
}

pub(super) struct SeedService {
    pub(super) name: &'static str,
    /// The OTLP span kind: 2 server, 5 consumer.
    pub(super) kind: i32,
}

pub(super) const SERVICES: [SeedService; 4] = [
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
pub(super) fn phase(t: f64) -> (&'static str, [Load; 4]) {
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
        // notification-service: the messages published to its queue per second (its
        // consumers process at most `queue::CONSUMER_RATE` each).
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
        // Three times the load: order-service's latency follows from its pods, and its
        // notifications (one per order) queue up for notification-service.
        load[1].rps = 360.0;
        load[0].median_s = 0.120;
        load[3].rps = 90.0;
        "order-service load spike; notifications queue up"
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
pub(super) const LOOP_TRIGGER: &str = "order-service SLO p95 300ms, 4/pod";
/// The trigger whose replicas drive notification-service's consumers.
pub(super) const QUEUE_TRIGGER: &str = "notification-service queue 20/pod";

/// Which closed loop a trigger's replicas drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closes {
    Order,
    Queue,
}

/// A KEDA-style trigger the demo evaluates.
pub(super) struct DemoTrigger {
    pub(super) title: &'static str,
    pub(super) metric_type: MetricType,
    pub(super) metadata: Vec<(&'static str, &'static str)>,
    pub(super) replicas: u32,
    /// The pods this trigger's replicas drive, if any.
    pub(super) closes: Option<Closes>,
}

/// The triggers asked about; the queue's only with the demo's own server (`queue`), which
/// reads the demo's queue.
pub(super) fn demo_triggers(queue: bool) -> Vec<DemoTrigger> {
    let t = |title, metric_type, metadata: &[(&'static str, &'static str)]| DemoTrigger {
        title,
        metric_type,
        metadata: metadata.to_vec(),
        replicas: if title.starts_with("notification-service") {
            super::queue::CONSUMER_MIN_PODS
        } else {
            ORDER_START_PODS
        },
        closes: match title {
            LOOP_TRIGGER => Some(Closes::Order),
            QUEUE_TRIGGER => Some(Closes::Queue),
            _ => None,
        },
    };
    let mut triggers = vec![
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
    ];
    if queue {
        let q = t(
            QUEUE_TRIGGER,
            MetricType::AverageValue,
            &[
                ("signal", "queueDepth"),
                ("queueURL", super::queue::QUEUE_URL),
                ("queueLength", "20"),
                // Read every 2 s, as the table refreshes (the server's default is 10 s).
                ("cacheTTL", "2s"),
            ],
        );
        triggers.push(q);
    }
    triggers
}
