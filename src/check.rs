//! `slo-scaler check`: explain one trigger — the query it sends, the value it gets,
//! the threshold, active or not, and the replicas the HPA would choose.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::config::BackendArgs;
use crate::signal::hpa::desired_replicas;
use crate::signal::MetricType;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Trigger metadata as key=value (repeatable), e.g. -m signal=latency -m service=checkout.
    #[arg(short = 'm', long = "metadata")]
    pub metadata: Vec<String>,
    /// A ScaledObject YAML file; its `external` / `external-push` trigger is checked.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Which trigger of the file (index in spec.triggers) when it has several.
    #[arg(long)]
    pub trigger: Option<usize>,
    /// The ScaledObject's namespace (tenant policies depend on it).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Current replica count, for the desired-replicas arithmetic.
    #[arg(long, default_value_t = 1)]
    pub current_replicas: u32,
    /// The trigger's metricType [default: the file's, else the signal's recommended one].
    #[arg(long, value_parser = parse_metric_type)]
    pub metric_type: Option<MetricType>,
    /// A running slo-scaler's gRPC address (HOST:PORT, plaintext), asked for the value of a
    /// `source: otlp` trigger as KEDA asks (GetMetrics, IsActive): that value lives in the
    /// server's embedded store. Other sources are read from their backends directly.
    #[arg(long, value_name = "HOST:PORT")]
    pub scaler_address: Option<String>,
    #[command(flatten)]
    pub backends: BackendArgs,
}

fn parse_metric_type(s: &str) -> Result<MetricType, String> {
    MetricType::parse(s).ok_or_else(|| format!("{s:?} is not Value or AverageValue"))
}

/// A trigger taken from the command line or a file.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerInput {
    pub metadata: HashMap<String, String>,
    pub metric_type: Option<MetricType>,
}

/// Reads metadata from `-m` pairs or a ScaledObject file.
pub fn trigger_input(args: &CheckArgs) -> Result<TriggerInput, String> {
    if let Some(path) = &args.file {
        if !args.metadata.is_empty() {
            return Err("give either --file or --metadata, not both".into());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return trigger_from_yaml(&text, args.trigger);
    }
    if args.metadata.is_empty() {
        return Err(
            "give the trigger as --metadata key=value … or --file scaledobject.yaml".into(),
        );
    }
    let mut metadata = HashMap::new();
    for pair in &args.metadata {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--metadata {pair:?}: expected key=value"))?;
        metadata.insert(k.trim().to_string(), v.to_string());
    }
    Ok(TriggerInput {
        metadata,
        metric_type: None,
    })
}

/// Picks the external trigger of a ScaledObject manifest.
pub fn trigger_from_yaml(text: &str, index: Option<usize>) -> Result<TriggerInput, String> {
    let doc: yaml_serde::Value =
        yaml_serde::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let triggers = doc
        .get("spec")
        .and_then(|s| s.get("triggers"))
        .and_then(|t| t.as_sequence())
        .ok_or("no spec.triggers in the file (is it a ScaledObject?)")?;
    let is_ours = |t: &yaml_serde::Value| {
        matches!(
            t.get("type").and_then(|v| v.as_str()),
            Some("external" | "external-push")
        )
    };
    let trigger = match index {
        Some(i) => triggers
            .get(i)
            .filter(|t| is_ours(t))
            .ok_or_else(|| format!("spec.triggers[{i}] is not an external trigger"))?,
        None => {
            let ours: Vec<_> = triggers.iter().filter(|t| is_ours(t)).collect();
            match ours.as_slice() {
                [one] => *one,
                [] => return Err("no external / external-push trigger in the file".into()),
                _ => return Err("several external triggers; pick one with --trigger INDEX".into()),
            }
        }
    };
    let mut metadata = HashMap::new();
    if let Some(map) = trigger.get("metadata").and_then(|m| m.as_mapping()) {
        for (k, v) in map {
            let k = k.as_str().ok_or("a metadata key is not a string")?;
            let v = match v {
                yaml_serde::Value::String(s) => s.clone(),
                yaml_serde::Value::Number(n) => n.to_string(),
                yaml_serde::Value::Bool(b) => b.to_string(),
                _ => return Err(format!("metadata {k}: values must be strings")),
            };
            metadata.insert(k.to_string(), v);
        }
    }
    let metric_type = match trigger.get("metricType").and_then(|v| v.as_str()) {
        Some(s) => Some(parse_metric_type(s)?),
        None => None,
    };
    Ok(TriggerInput {
        metadata,
        metric_type,
    })
}

/// Runs the check and returns the report; an error message when anything fails.
pub async fn run(args: CheckArgs) -> Result<String, String> {
    let input = trigger_input(&args)?;
    let settings = args
        .backends
        .resolve(true)
        .map_err(|e| format!("configuration: {e}"))?;
    let (_, metrics) = Metrics::standalone();
    let metrics = Arc::new(metrics);
    // An empty store, so otlp triggers plan as on a server with the receiver; their value
    // lives in the running server's store and is not read here.
    let store = crate::source::otlp::Store::new(Default::default(), metrics.clone())
        .map_err(|e| format!("embedded store: {e}"))?;
    let engine = crate::server::build_engine(&settings, metrics, Some(Arc::new(store)))
        .map_err(|e| format!("configuration: {e}"))?;
    let plan = engine
        .plan(&args.namespace, &input.metadata)
        .map_err(|e| e.to_string())?;
    let t = &plan.trigger;
    let metric_type = args
        .metric_type
        .or(input.metric_type)
        .unwrap_or_else(|| t.kind.metric_type());
    let mut out = String::new();
    let _ = writeln!(out, "signal       {} (source {})", t.kind, t.source());
    let _ = writeln!(out, "metric       {}", t.metric_name);
    let _ = writeln!(out, "query        {}", plan.describe());
    let _ = writeln!(
        out,
        "threshold    {} (activation above {})",
        t.target, t.activation
    );
    let _ = writeln!(out, "metricType   {metric_type}");
    let _ = writeln!(out, "keda         {}", keda_requirement(metric_type));
    if t.source() == crate::trigger::SourceKind::Otlp {
        let Some(address) = &args.scaler_address else {
            let _ = writeln!(
                out,
                "value        (source otlp reads the embedded store of a running server: \
                 name it with --scaler-address HOST:PORT)"
            );
            return Ok(out);
        };
        let asked = tokio::time::timeout(
            ASK_TIMEOUT,
            ask_server(address, &args.namespace, &input.metadata, &t.metric_name),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ASK_TIMEOUT:?}")));
        return match asked {
            Ok((value, active)) => {
                let shown = format!("{value} (from the server at {address})");
                let desired = wanted(metric_type, args.current_replicas, value, t.target, active);
                write_answer(&mut out, &shown, active, args.current_replicas, desired);
                Ok(out)
            }
            Err(e) => Err(format!("{out}error        the server at {address}: {e}")),
        };
    }
    let result = engine.evaluate(&plan).await;
    let state = crate::scaler::SignalState::of(&result);
    let _ = writeln!(out, "state        {}", describe_state(state));
    match result {
        Ok(ev) => {
            let desired = wanted(
                metric_type,
                args.current_replicas,
                ev.value,
                t.target,
                ev.active,
            );
            write_answer(
                &mut out,
                &ev.value.to_string(),
                ev.active,
                args.current_replicas,
                desired,
            );
            Ok(out)
        }
        Err(e) => Err(format!("{out}error        {e}")),
    }
}

/// The replicas wanted from `current`: at 0, KEDA's activation decides (1 when active), not
/// the value; else the HPA's arithmetic.
fn wanted(metric_type: MetricType, current: u32, value: f64, target: f64, active: bool) -> u32 {
    if current == 0 {
        return u32::from(active);
    }
    desired_replicas(metric_type, current, value, target)
}

/// The value, the active state and the replicas the HPA would choose from them.
fn write_answer(out: &mut String, value: &str, active: bool, current: u32, desired: u32) {
    let _ = writeln!(out, "value        {value}");
    let _ = writeln!(out, "active       {active}");
    let _ = writeln!(
        out,
        "replicas     {current} now → {desired} wanted by the HPA (before min/max and behaviour)"
    );
}

/// The most `check` waits for a running server's answer.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The value and active state a running server gives KEDA for this trigger.
async fn ask_server(
    address: &str,
    namespace: &str,
    metadata: &HashMap<String, String>,
    metric_name: &str,
) -> Result<(f64, bool), String> {
    use crate::proto::external_scaler_client::ExternalScalerClient;
    use crate::proto::{GetMetricsRequest, ScaledObjectRef};
    let mut client = ExternalScalerClient::connect(format!("http://{address}"))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let object = ScaledObjectRef {
        name: "slo-scaler-check".into(),
        namespace: namespace.into(),
        scaler_metadata: metadata.clone(),
    };
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let metrics = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object.clone()),
            metric_name: metric_name.into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let value = match metrics.metric_values.as_slice() {
        [one] if one.metric_name == metric_name => one.metric_value_float,
        other => {
            return Err(format!(
                "expected one value for {metric_name}, got {other:?}"
            ))
        }
    };
    let active = client
        .is_active(object)
        .await
        .map_err(status)?
        .into_inner()
        .result;
    Ok((value, active))
}

/// The KEDA a trigger of this metric type needs for its `fallback` to work. KEDA 2.18 added
/// fallback for `Value` triggers (kedacore/keda #6655; keda-docs 2.18 "scaledobject-spec",
/// `fallback`); from 2.14 to 2.17 its admission webhook refuses a ScaledObject with
/// `fallback` and a `Value` trigger (#5629: "Fallback can only be enabled for triggers with
/// metric of type AverageValue"), and before that the fallback never applies to it.
pub fn keda_requirement(metric_type: MetricType) -> &'static str {
    match metric_type {
        MetricType::Value => {
            "2.18 or later for `fallback` (KEDA 2.14–2.17 refuses `fallback` with a Value trigger; \
             without it an error leaves the replicas where they are)"
        }
        MetricType::AverageValue => "any 2.x (`fallback` works with AverageValue triggers)",
    }
}

/// A state in words, for people reading `check`.
fn describe_state(state: crate::scaler::SignalState) -> &'static str {
    use crate::scaler::SignalState;
    match state {
        SignalState::Ok => "ok (the backend answered with data)",
        SignalState::NoData => {
            "no_data (the backend answered, with no data: check service, convention and labels)"
        }
        SignalState::Stale => "stale (the backend failed; the last good value is served)",
        SignalState::Error => "error (no value; KEDA gets an error and its fallback applies)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SO: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: orders, namespace: shop}
spec:
  scaleTargetRef: {name: order-service}
  triggers:
    - type: cpu
      metadata: {value: "60"}
    - type: external
      metricType: Value
      metadata:
        scalerAddress: slo-scaler.keda:6000
        signal: latency
        service: order-service
        threshold: 300ms
        activationThreshold: 0
"#;

    /// At zero replicas KEDA's activation decides: a value of 3 under an activation
    /// threshold of 5 keeps the workload at 0 (the HPA's arithmetic alone said 1).
    #[test]
    fn at_zero_replicas_activation_decides() {
        assert_eq!(wanted(MetricType::AverageValue, 0, 3.0, 1.0, false), 0);
        assert_eq!(wanted(MetricType::AverageValue, 0, 3.0, 1.0, true), 1);
        assert_eq!(wanted(MetricType::AverageValue, 2, 3.0, 1.0, false), 3);
    }

    #[test]
    fn says_which_keda_a_metric_type_needs() {
        assert!(keda_requirement(MetricType::Value).starts_with("2.18 or later"));
        assert!(keda_requirement(MetricType::AverageValue).starts_with("any 2.x"));
    }

    #[test]
    fn picks_the_external_trigger() {
        let t = trigger_from_yaml(SO, None).unwrap();
        assert_eq!(t.metric_type, Some(MetricType::Value));
        assert_eq!(t.metadata["threshold"], "300ms");
        assert_eq!(t.metadata["activationThreshold"], "0");
        assert!(trigger_from_yaml(SO, Some(0)).is_err());
        assert!(trigger_from_yaml(SO, Some(1)).is_ok());
        assert!(trigger_from_yaml("kind: Deployment", None).is_err());
        assert!(trigger_from_yaml(": not yaml : [", None).is_err());
    }
}
