//! The scaler started in-process on loopback ports, and a real tonic client for it.

use std::collections::HashMap;

use slo_scaler::cli::{Cli, Command};
use slo_scaler::proto::external_scaler_client::ExternalScalerClient;
use slo_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use slo_scaler::server::Server;
use tonic::transport::Channel;

pub struct Scaler {
    pub server: Option<Server>,
    pub client: ExternalScalerClient<Channel>,
    pub admin: String,
}

pub use super::loopback::LOOPBACK_ADDRS;

/// Starts `slo-scaler serve` with `flags`, every address on a free loopback port.
pub async fn start_server(flags: &[&str]) -> Server {
    try_start_server(flags).await.expect("scaler starts")
}

/// As [`start_server`], returning the error when the server refuses to start.
#[allow(dead_code)] // Not every suite that includes this module uses it.
pub async fn try_start_server(flags: &[&str]) -> anyhow::Result<Server> {
    let mut argv = vec!["slo-scaler", "serve"];
    argv.extend(LOOPBACK_ADDRS);
    argv.extend_from_slice(flags);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("not serve");
    };
    Server::start(args).await
}

impl Scaler {
    /// Starts `slo-scaler serve` with `flags` and connects a plaintext client.
    pub async fn start(flags: &[&str]) -> Scaler {
        let server = start_server(flags).await;
        let client = ExternalScalerClient::connect(format!("http://{}", server.grpc_addr))
            .await
            .expect("connect to the scaler");
        let admin = format!("http://{}", server.admin_addr);
        Scaler {
            server: Some(server),
            client,
            admin,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("{}{path}", self.admin))
            .await
            .expect("admin request");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }
}

use clap::Parser as _;

/// A ScaledObjectRef in namespace `shop` with `metadata`.
pub fn so(name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.into(),
        namespace: "shop".into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

/// GetMetricSpec then GetMetrics, as KEDA does; the value, or the status.
pub async fn metric(
    client: &mut ExternalScalerClient<Channel>,
    r: &ScaledObjectRef,
) -> Result<f64, tonic::Status> {
    let spec = client.get_metric_spec(r.clone()).await?.into_inner();
    let name = spec.metric_specs[0].metric_name.clone();
    let resp = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(r.clone()),
            metric_name: name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(resp.metric_values.len(), 1);
    let v = &resp.metric_values[0];
    assert_eq!(v.metric_name, name);
    #[allow(deprecated)]
    let int = v.metric_value;
    assert_eq!(
        int,
        v.metric_value_float.round() as i64,
        "both value fields filled"
    );
    Ok(v.metric_value_float)
}

/// Waits until Prometheus has a stable answer, then checks the scaler's value equals it.
/// A direct query before and after the scaler's must agree (no scrape in between). That
/// alone does not prove the three saw the same samples: a window of whole scrape intervals
/// loses its oldest sample as the next scrape starts, and gains that scrape's only once it
/// is committed, so a query landing in that gap sees one sample fewer while the answers
/// either side agree (`rate()` then reads `N/(N-1)` of them; CI saw 89/88). A try that
/// differs is asked again; a scaler that reads another query never agrees. Every
/// comparison with a real Prometheus follows this rule (the scrape-commit gap).
pub async fn assert_agrees(
    prom: &super::prometheus::PrometheusServer,
    scaler: &mut Scaler,
    r: &ScaledObjectRef,
    q: &str,
) -> f64 {
    prom.wait_for_data(q).await;
    prom.wait_window_full(std::time::Duration::from_secs(10))
        .await;
    let mut differed = None;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(120)).await; // past the cache TTL
        let before = prom.query(q).await;
        let got = metric(&mut scaler.client, r).await;
        let after = prom.query(q).await;
        let (Some(want), true) = (before, before == after) else {
            continue;
        };
        let got = got.unwrap_or_else(|s| panic!("{q}: {s:?}"));
        if (got - want).abs() <= want.abs() * 1e-12 {
            return got;
        }
        eprintln!("scaler {got}, prometheus {want} either side, for {q}: asking again");
        differed = Some((got, want));
    }
    match differed {
        Some((got, want)) => panic!(
            "{:?}: scaler {got} != prometheus {want} for {q}",
            r.scaler_metadata
        ),
        None => panic!("prometheus never gave a stable answer for {q}"),
    }
}
