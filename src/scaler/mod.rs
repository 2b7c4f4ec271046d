//! KEDA's `ExternalScaler` over gRPC: a thin adapter from protobuf to the [`Engine`].
//!
//! All error → status mapping lives in [`plan_status`] and [`eval_status`]. `GetMetricSpec` never touches a
//! backend; the other RPCs read through the engine's cache.

mod board;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::engine::{Engine, EvalError, Evaluation, Plan, PlanError};
pub use board::{Board, BoardConfig, Entry, Row, SignalState};

use crate::proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use crate::proto::wire::{GetMetricsRequest, GetMetricsResponse, ScaledObjectRef};
use crate::proto::{GetMetricSpecResponse, IsActiveResponse, MetricSpec};
use crate::source::SourceError;
use crate::telemetry::traces;

/// The gRPC service.
#[derive(Clone)]
pub struct ScalerService {
    engine: Arc<Engine>,
    board: Arc<Board>,
    /// Open StreamIsActive / StreamMetricSpec streams, bounded like the board.
    streams: Arc<Semaphore>,
    stream_interval: Duration,
    shutdown: watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl ScalerService {
    /// `shutdown` turning true ends every open stream; at most `max_streams` are open.
    pub fn new(
        engine: Arc<Engine>,
        board: Arc<Board>,
        max_streams: usize,
        stream_interval: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        ScalerService {
            engine,
            board,
            streams: Arc::new(Semaphore::new(max_streams.min(Semaphore::MAX_PERMITS))),
            stream_interval,
            shutdown,
        }
    }

    pub fn into_server(self) -> ExternalScalerServer<Self> {
        ExternalScalerServer::new(self)
    }

    /// The caller's entry on the board: the memoised plan, or a new one (no I/O).
    fn entry(&self, r: &ScaledObjectRef) -> Result<Arc<Entry>, Status> {
        self.board
            .entry(r.namespace(), r.name(), r.scaler_metadata(), |md| {
                self.engine.plan(r.namespace(), md)
            })
            .map_err(|e| plan_status(&e))
    }

    fn stream_permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "too many open streams (the server's --max-signals bounds them)",
            )
        })
    }

    /// Evaluates and records the outcome on the entry. While the cache still holds the
    /// state the entry's last answer was served from and that answer is younger than its
    /// TTL, the cache would serve it again: it is served from the entry, counted as a hit.
    async fn evaluate(&self, entry: &Entry) -> Result<Evaluation, Status> {
        let read = traces::read_span(
            entry.plan.trigger.source().as_str(),
            || entry.plan.query.backend_label(),
            &entry.plan.trigger.metric_name,
        );
        if let Some(ev) = entry.reuse(self.engine.answer_ttl(&entry.plan)) {
            read.in_scope(|| self.engine.metrics().record_cache("hit"));
            traces::end_read(&read, Ok(()));
            return Ok(ev);
        }
        // Boxed apart, in its own statement: a backend read's future is tens of KB (77 KB
        // with sloCapacity's six joined reads), and held inline it made every call's future
        // that large, copied three times per call even on the reuse path above (`core`'s
        // `cache_hit_handler`: 5.69 µs held inline, 0.46 µs boxed here; the h2load target
        // in BENCHMARKS.md).
        let slow = Box::pin(self.engine.evaluate_watched(&entry.plan));
        let (result, watch) = slow.instrument(read.clone()).await;
        traces::end_read(&read, result.as_ref().map(|_| ()).map_err(EvalError::kind));
        entry.record(&result, watch);
        result.map_err(|e| {
            tracing::debug!(
                namespace = %entry.namespace(),
                scaled_object = %entry.name(),
                metric = %entry.plan.trigger.metric_name,
                error = %e,
                "cannot evaluate trigger"
            );
            eval_status(&e)
        })
    }

    fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.engine
            .metrics()
            .record_grpc(method, code, started.elapsed());
    }
}

fn metric_spec(plan: &Plan) -> MetricSpec {
    let target = plan.trigger.target;
    #[allow(deprecated)]
    MetricSpec {
        metric_name: plan.trigger.metric_name.to_string(),
        target_size: (target.round() as i64).max(1),
        target_size_float: target,
    }
}

/// KEDA strips its `s<index>-` prefix before asking; accept it anyway.
fn names_match(asked: &str, ours: &str) -> bool {
    if asked == ours {
        return true;
    }
    asked
        .strip_suffix(ours)
        .and_then(|p| p.strip_suffix('-'))
        .and_then(|p| p.strip_prefix('s'))
        .is_some_and(|idx| !idx.is_empty() && idx.chars().all(|c| c.is_ascii_digit()))
}

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let span = traces::rpc_span(
            "IsActive",
            "externalscaler.ExternalScaler/IsActive",
            r.namespace(),
            r.name(),
        );
        let result = async {
            let entry = self.entry(&r)?;
            let ev = self.evaluate(&entry).await?;
            Ok(Response::new(IsActiveResponse { result: ev.active }))
        }
        .instrument(span.clone())
        .await;
        traces::end_rpc(&span, &result);
        self.observe("IsActive", started, &result);
        result
    }

    type StreamIsActiveStream = BoxStream<IsActiveResponse>;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let span = traces::rpc_span(
            "StreamIsActive",
            "externalscaler.ExternalScaler/StreamIsActive",
            r.namespace(),
            r.name(),
        );
        let result = span.in_scope(|| self.entry(&r)).and_then(|entry| {
            let permit = self.stream_permit()?;
            let (tx, rx) = mpsc::channel(4);
            let service = self.clone();
            tokio::spawn(async move { service.push_active(r, entry, tx, permit).await });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::StreamIsActiveStream
            ))
        });
        traces::end_rpc(&span, &result);
        self.observe("StreamIsActive", started, &result);
        result
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let span = traces::rpc_span(
            "GetMetricSpec",
            "externalscaler.ExternalScaler/GetMetricSpec",
            r.namespace(),
            r.name(),
        );
        let result = span.in_scope(|| self.entry(&r)).map(|entry| {
            Response::new(GetMetricSpecResponse {
                metric_specs: vec![metric_spec(&entry.plan)],
            })
        });
        traces::end_rpc(&span, &result);
        self.observe("GetMetricSpec", started, &result);
        result
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let (namespace, name) = req
            .scaled_object_ref()
            .map_or(("", ""), |r| (r.namespace(), r.name()));
        let span = traces::rpc_span(
            "GetMetrics",
            "externalscaler.ExternalScaler/GetMetrics",
            namespace,
            name,
        );
        let result = async {
            let r = req
                .scaled_object_ref()
                .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
            let entry = self.entry(r)?;
            let plan = &entry.plan;
            if !names_match(req.metric_name(), &plan.trigger.metric_name) {
                return Err(Status::not_found(format!(
                    "metric {:?} is not served by this trigger (its metric is {:?})",
                    req.metric_name(),
                    plan.trigger.metric_name
                )));
            }
            let ev = self.evaluate(&entry).await?;
            // The engine only lets finite, non-negative values through.
            Ok(Response::new(GetMetricsResponse::one(
                plan.trigger.metric_name.clone(),
                ev.value,
            )))
        }
        .instrument(span.clone())
        .await;
        traces::end_rpc(&span, &result);
        self.observe("GetMetrics", started, &result);
        result
    }

    type StreamMetricSpecStream = BoxStream<GetMetricSpecResponse>;

    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let span = traces::rpc_span(
            "StreamMetricSpec",
            "externalscaler.ExternalScaler/StreamMetricSpec",
            r.namespace(),
            r.name(),
        );
        let result = span.in_scope(|| self.entry(&r)).and_then(|entry| {
            let permit = self.stream_permit()?;
            let (tx, rx) = mpsc::channel(1);
            let mut shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let spec = GetMetricSpecResponse {
                    metric_specs: vec![metric_spec(&entry.plan)],
                };
                if tx.send(Ok(spec)).await.is_err() {
                    return;
                }
                // Specs derive from metadata only, which cannot change under an open
                // stream (KEDA reopens it when the ScaledObject changes): stay open
                // until the client goes or the server stops.
                tokio::select! {
                    _ = tx.closed() => {}
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            });
            Ok(Response::new(
                Box::pin(ReceiverStream::new(rx)) as Self::StreamMetricSpecStream
            ))
        });
        traces::end_rpc(&span, &result);
        self.observe("StreamMetricSpec", started, &result);
        result
    }
}

impl ScalerService {
    /// The StreamIsActive loop: the current state at open, then `true` only on
    /// inactive → active transitions (a streamed `false` is ignored by KEDA, and
    /// repeated `true`s delay scale to zero).
    async fn push_active(
        self,
        r: ScaledObjectRef,
        entry: Arc<Entry>,
        tx: mpsc::Sender<Result<IsActiveResponse, Status>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let mut shutdown = self.shutdown.clone();
        let mut last: Option<bool> = None;
        // The embedded store sees a spike within one bucket: re-evaluate twice per bucket so
        // the push is not held back by the general stream interval.
        let interval = match (&entry.plan.query, &self.engine.sources().otlp) {
            (crate::source::Query::Otlp(_), Some(store)) => {
                self.stream_interval.min(store.bucket_width() / 2)
            }
            _ => self.stream_interval,
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut entry = entry;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            // Looking the entry up again keeps it (and its series) on the board while the
            // stream is open.
            if let Ok(e) = self.entry(&r) {
                entry = e;
            }
            let active = match self.evaluate(&entry).await {
                Ok(ev) => ev.active,
                Err(_) => continue, // Recorded on the entry; KEDA's polling reports errors.
            };
            let send = match last {
                None => true,
                Some(was) => active && !was,
            };
            last = Some(active);
            if send
                && tx
                    .send(Ok(IsActiveResponse { result: active }))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

/// The one place trigger problems become gRPC statuses.
pub fn plan_status(e: &PlanError) -> Status {
    match e {
        PlanError::Invalid(e) => Status::invalid_argument(e.to_string()),
        PlanError::PermissionDenied(m) => Status::permission_denied(m.clone()),
    }
}

/// The one place evaluation failures become gRPC statuses. Backend failures are
/// `Unavailable` (KEDA falls back on any error; the code tells the operator where to look).
/// A backend refusing the scaler's credentials (401/403: a wrong AMP region, a rotated key,
/// a gateway without the tenant) is such a failure, not the caller lacking a permission:
/// `PermissionDenied` is kept for what the scaler itself refuses a trigger ([`plan_status`]).
pub fn eval_status(e: &EvalError) -> Status {
    let msg = e.to_string();
    match e {
        EvalError::Source(SourceError::BadQuery { .. } | SourceError::UnknownBackend { .. }) => {
            Status::invalid_argument(msg)
        }
        EvalError::Source(SourceError::NotFound { .. }) => Status::not_found(msg),
        EvalError::Unusable { .. } => Status::out_of_range(msg),
        EvalError::Source(_) | EvalError::NoData { .. } | EvalError::WrongShape { .. } => {
            Status::unavailable(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_prefixed_names_match() {
        assert!(names_match("rps-a", "rps-a"));
        assert!(names_match("s0-rps-a", "rps-a"));
        assert!(names_match("s12-rps-a", "rps-a"));
        assert!(!names_match("s-rps-a", "rps-a"));
        assert!(!names_match("x0-rps-a", "rps-a"));
        assert!(!names_match("rps-b", "rps-a"));
        assert!(!names_match("", "rps-a"));
    }
}
