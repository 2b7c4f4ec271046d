//! OTLP/gRPC: a hand-written `TraceService/Export` that decodes only what the store
//! reads, accepts gzip and zstd, and charges the in-flight budget before the message is
//! read (`UNAVAILABLE` when it is spent).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use super::super::store::Store;
use super::super::wire::TraceRequest;
use super::{
    answer, decode_protobuf, Budget, Refusal, DEFAULT_MAX_MESSAGE_BYTES, EXPORT_PATH,
    GRPC_INFLIGHT_FACTOR,
};
use crate::telemetry::Metrics;

/// The OTLP/gRPC trace service, writing into a [`Store`]: a hand-written
/// `TraceService/Export` that decodes only what the store reads, accepts gzip and zstd,
/// and charges the in-flight [`Budget`] before the message is read.
#[derive(Clone)]
pub struct OtlpGrpc {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    budget: Budget,
    max_decoding: usize,
}

impl OtlpGrpc {
    /// The largest message decoded, after decompression. Messages over it are refused
    /// with `RESOURCE_EXHAUSTED` (uncompressed ones by tonic's `OUT_OF_RANGE`, rewritten:
    /// see [`never_retried`]; compressed ones once decompression passes it).
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding = limit;
        self
    }

    /// Shares `budget` (with the HTTP receiver).
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }
}

impl NamedService for OtlpGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Service<http::Request<tonic::body::Body>> for OtlpGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                let status = tonic::Status::unimplemented(format!(
                    "unknown method {}: this receiver serves {EXPORT_PATH}",
                    req.uri().path()
                ));
                return Ok(status.into_http());
            }
            let charge = this.max_decoding.saturating_mul(GRPC_INFLIGHT_FACTOR);
            let Some(permit) = this.budget.try_charge(charge) else {
                let status = tonic::Status::unavailable(format!(
                    "the receiver is busy: {} bytes of requests in flight; retry later",
                    this.budget.bytes()
                ));
                return Ok(status.into_http());
            };
            let mut grpc = tonic::server::Grpc::new(LeanCodec {
                limit: this.max_decoding,
            })
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(this.max_decoding);
            let export = Export {
                store: this.store,
                metrics: this.metrics,
            };
            let mut response = grpc.unary(export, req).await;
            drop(permit);
            never_retried(&mut response);
            Ok(response)
        })
    }
}

/// Turns tonic's refusal of an oversized message, `OUT_OF_RANGE` (a code the OTLP
/// specification tells exporters to retry), into `RESOURCE_EXHAUSTED` without a
/// `RetryInfo`, which they do not retry: the same message never fits. tonic answers it
/// before the call, as a trailers-only response (the status in the headers).
fn never_retried(response: &mut http::Response<tonic::body::Body>) {
    // gRPC's codes: OUT_OF_RANGE is 11, RESOURCE_EXHAUSTED 8.
    const _: () = assert!(tonic::Code::OutOfRange as i32 == 11);
    const _: () = assert!(tonic::Code::ResourceExhausted as i32 == 8);
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|code| code == "11") {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

/// The unary `Export` call on a decoded request.
struct Export {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl tonic::server::UnaryService<TraceRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<TraceRequest>) -> Self::Future {
        let summary = self.store.ingest_lean(request.into_inner());
        let response = answer(&self.metrics, &summary);
        Box::pin(async move { Ok(tonic::Response::new(response)) })
    }
}

/// Protobuf responses, lean requests priced before they are decoded.
struct LeanCodec {
    limit: usize,
}

impl Codec for LeanCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = TraceRequest;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = LeanDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        LeanDecoder { limit: self.limit }
    }
}

struct LeanDecoder {
    limit: usize,
}

impl Decoder for LeanDecoder {
    type Item = TraceRequest;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<TraceRequest>, tonic::Status> {
        use bytes::Buf as _;
        let body = buf.copy_to_bytes(buf.remaining());
        decode_protobuf(body, self.limit)
            .map(Some)
            .map_err(|refusal| match refusal {
                Refusal::TooLarge(m) => tonic::Status::resource_exhausted(m),
                Refusal::Bad(m) => tonic::Status::invalid_argument(m),
            })
    }
}

/// The OTLP/gRPC `TraceService`, decoding messages up to [`DEFAULT_MAX_MESSAGE_BYTES`]
/// (chain `.max_decoding_message_size(n)` to change it) within the default [`Budget`]
/// (chain `.with_budget(b)` to share one). Add it to a tonic server.
pub fn grpc_service(store: Arc<Store>, metrics: Arc<Metrics>) -> OtlpGrpc {
    OtlpGrpc {
        store,
        metrics,
        budget: Budget::default(),
        max_decoding: DEFAULT_MAX_MESSAGE_BYTES,
    }
}

/// HTTP/2 flow-control windows of the OTLP/gRPC listener: exporters send requests of
/// hundreds of KiB, which the 64 KiB default window splits into round trips.
pub const GRPC_STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub const GRPC_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// A tonic server builder tuned for OTLP ingest: `TCP_NODELAY` (applied by `serve` /
/// `serve_with_shutdown`; with `serve_with_incoming`, bind a
/// `TcpIncoming::bind(addr)?.with_nodelay(Some(true))`) and wide flow-control windows.
/// Without `TCP_NODELAY`, loopback ingest drops about sixfold (see the bench).
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(GRPC_STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(GRPC_CONNECTION_WINDOW_BYTES))
}
