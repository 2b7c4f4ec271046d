//! The ScaledObjects of the KEDA-shaped workload (`keda_load`, `state_memory`): a mix of
//! signals over the embedded store and Prometheus, no two with the same metadata.

use slo_scaler::proto::ScaledObjectRef;

/// Services whose spans arrive (and that the otlp ScaledObjects name).
pub const SERVICES: usize = 50;

/// A ScaledObject reference with this metadata.
pub fn so(namespace: &str, name: &str, md: &[(&str, String)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.to_string(),
        namespace: namespace.to_string(),
        scaler_metadata: md.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    }
}

/// Which source a ScaledObject reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Otlp,
    Prometheus,
}

/// The i-th ScaledObject: a third each of otlp latency, otlp rps / errorRate, and
/// prometheus (latency, rps, errorRate in turn), over `SERVICES` services, with
/// thresholds that differ so no two share metadata.
pub fn scaled_object(i: usize) -> (Kind, ScaledObjectRef) {
    let service = format!("svc-{}", i % SERVICES);
    let namespace = format!("team-{}", i % 20);
    let name = format!("so-{i}");
    let (kind, md): (Kind, Vec<(&str, String)>) = match i % 6 {
        0 | 1 => (
            Kind::Otlp,
            vec![
                ("signal", "latency".into()),
                ("source", "otlp".into()),
                ("service", service),
                (
                    "quantile",
                    if i.is_multiple_of(2) { "p95" } else { "p99" }.into(),
                ),
                ("window", "60s".into()),
                ("threshold", format!("{}ms", 200 + i % 300)),
            ],
        ),
        2 => (
            Kind::Otlp,
            vec![
                ("signal", "rps".into()),
                ("source", "otlp".into()),
                ("service", service),
                ("threshold", format!("{}", 50 + i % 100)),
            ],
        ),
        3 => (
            Kind::Otlp,
            vec![
                ("signal", "errorRate".into()),
                ("source", "otlp".into()),
                ("service", service),
                ("threshold", format!("{}%", 1 + i % 9)),
            ],
        ),
        4 => (
            Kind::Prometheus,
            vec![
                ("signal", "latency".into()),
                ("source", "prometheus".into()),
                ("service", service),
                ("quantile", "p95".into()),
                ("threshold", format!("{}ms", 200 + i % 300)),
            ],
        ),
        _ => (
            Kind::Prometheus,
            vec![
                (
                    "signal",
                    if i % 12 == 5 { "rps" } else { "errorRate" }.into(),
                ),
                ("source", "prometheus".into()),
                ("service", service),
                (
                    "threshold",
                    if i % 12 == 5 {
                        "100".into()
                    } else {
                        format!("{}%", 1 + i % 9)
                    },
                ),
            ],
        ),
    };
    (kind, so(&namespace, &name, &md))
}
