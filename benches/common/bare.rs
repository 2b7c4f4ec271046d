//! The bare ExternalScaler: the h2load and `keda_load` (a) baseline. It decodes KEDA's
//! request and writes the answer as the scaler does (`proto::wire`, the same generated
//! server and codec) and answers a fixed value under a fixed name, doing nothing else.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use slo_scaler::proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use slo_scaler::proto::wire;
use slo_scaler::proto::{GetMetricSpecResponse, IsActiveResponse, MetricSpec};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

struct Bare {
    metric_name: Arc<str>,
}

#[tonic::async_trait]
impl ExternalScaler for Bare {
    async fn is_active(
        &self,
        _: tonic::Request<wire::ScaledObjectRef>,
    ) -> Result<tonic::Response<IsActiveResponse>, tonic::Status> {
        Ok(tonic::Response::new(IsActiveResponse { result: true }))
    }
    type StreamIsActiveStream = BoxStream<IsActiveResponse>;
    async fn stream_is_active(
        &self,
        _: tonic::Request<wire::ScaledObjectRef>,
    ) -> Result<tonic::Response<Self::StreamIsActiveStream>, tonic::Status> {
        Ok(tonic::Response::new(Box::pin(futures::stream::empty())))
    }
    async fn get_metric_spec(
        &self,
        _: tonic::Request<wire::ScaledObjectRef>,
    ) -> Result<tonic::Response<GetMetricSpecResponse>, tonic::Status> {
        Ok(tonic::Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: "bare".into(),
                target_size_float: 1.0,
                ..MetricSpec::default()
            }],
        }))
    }
    async fn get_metrics(
        &self,
        _: tonic::Request<wire::GetMetricsRequest>,
    ) -> Result<tonic::Response<wire::GetMetricsResponse>, tonic::Status> {
        Ok(tonic::Response::new(wire::GetMetricsResponse::one(
            self.metric_name.clone(),
            0.25,
        )))
    }
    type StreamMetricSpecStream = BoxStream<GetMetricSpecResponse>;
    async fn stream_metric_spec(
        &self,
        _: tonic::Request<wire::ScaledObjectRef>,
    ) -> Result<tonic::Response<Self::StreamMetricSpecStream>, tonic::Status> {
        Ok(tonic::Response::new(Box::pin(futures::stream::empty())))
    }
}

/// The bare ExternalScaler and tonic's Health, as the scaler's server has them (TCP_NODELAY,
/// tonic's defaults), until the process ends.
pub async fn serve_bare(incoming: tonic::transport::server::TcpIncoming) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ExternalScalerServer<Bare>>().await;
    let _ = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ExternalScalerServer::new(Bare {
            metric_name: "bare".into(),
        }))
        .serve_with_incoming(incoming)
        .await;
}
