//! The OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//!
//! Both hand decoded requests to the [`Store`] and answer with OTLP partial success
//! when spans were refused (`rejected_spans` + `error_message`). OTLP/HTTP takes
//! protobuf (`application/x-protobuf`) and JSON (`application/json`), uncompressed or
//! with `Content-Encoding: gzip` / `zstd`; its error bodies are a `google.rpc.Status` in
//! the request's encoding: 413 over the size limit (after decompression), 415 for
//! another content type or encoding, 400 when the body does not decode, 429 when the
//! in-flight budget is spent. OTLP/gRPC accepts gzip and zstd messages.
//!
//! Memory is bounded per request and in all: an HTTP request is charged
//! [`INFLIGHT_FACTOR`] × its size (at most the limit), a gRPC one
//! [`GRPC_INFLIGHT_FACTOR`] × the limit, against one [`Budget`] shared by both
//! receivers before its body is read, and refused when the budget is spent
//! (HTTP 429, gRPC `UNAVAILABLE`: the OTLP spec's throttling answers, which exporters
//! retry). Decompression stops at the limit, and a body whose decoded tree would exceed
//! [`DECODE_FACTOR`] × its size is refused before it is decoded (see [`super::wire`]).

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use super::store::{IngestSummary, Store};
use super::wire::{self, TraceRequest};
use crate::telemetry::{Metrics, OutcomeLabels};

/// The largest request either receiver decodes by default (gRPC message / HTTP body,
/// after decompression). The Collector's batch processor sends 8192 spans per request
/// by default, about 1–3 MiB uncompressed; SDKs send 512.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The default in-flight budget shared by both receivers: ten maximum-size gRPC
/// requests, or six HTTP ones, at the default limit.
pub const DEFAULT_INFLIGHT_BYTES: usize = 256 * 1024 * 1024;

/// A request may hold this many times its size while it is handled: the body as
/// received and as one buffer (2×), the decompressed body with `Vec` growth slack (2×),
/// the decoded tree ([`DECODE_FACTOR`]×) and a zstd window (at most 8 MiB, 2× the
/// default limit).
pub const INFLIGHT_FACTOR: usize = 10;

/// What an OTLP/gRPC request may hold, in times the limit: tonic's buffer of the
/// message as received and its decompressed copy (2×), and the decoded tree
/// ([`DECODE_FACTOR`]×). The default budget admits ten maximum-size gRPC requests at
/// once (a Collector's `sending_queue` runs ten consumers by default).
pub const GRPC_INFLIGHT_FACTOR: usize = 2 + DECODE_FACTOR;

/// The largest zstd window the HTTP receiver allocates (2^23 = 8 MiB): what encoders
/// use up to level 19; frames that ask for more are refused as corrupt.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A body is refused when its decoded tree would take more than this many times its
/// size (empty spans, millions of tiny resources): ordinary spans take about 1.5×.
pub const DECODE_FACTOR: usize = 4;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Bytes in flight in the receivers, shared by gRPC and HTTP: a semaphore counted in
/// KiB.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    kib: usize,
}

impl Budget {
    /// A budget of `bytes` (rounded down to KiB, at least 1 KiB).
    pub fn new(bytes: usize) -> Budget {
        let kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(kib)),
            kib,
        }
    }

    /// The bytes an OTLP/HTTP request of up to `size` bytes is charged.
    pub fn cost(size: usize) -> usize {
        size.saturating_mul(INFLIGHT_FACTOR)
    }

    /// Charges a request that may hold `bytes`, or `None` when the budget is spent.
    fn try_charge(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(1024).clamp(1, self.kib);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        Arc::clone(&self.permits).try_acquire_many_owned(kib).ok()
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> usize {
        self.kib * 1024
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_INFLIGHT_BYTES)
    }
}

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
    /// The largest message decoded, after decompression. Uncompressed messages over it
    /// are refused by tonic with `OUT_OF_RANGE`, compressed ones with
    /// `RESOURCE_EXHAUSTED` once decompression passes it.
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
            let response = grpc.unary(export, req).await;
            drop(permit);
            Ok(response)
        })
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

/// Why a body was not decoded.
enum Refusal {
    TooLarge(String),
    Bad(String),
}

/// Prices a protobuf body, then decodes the lean request. `charged` is the size the
/// request was charged for (its size or the limit).
fn decode_protobuf(body: Bytes, charged: usize) -> Result<TraceRequest, Refusal> {
    let bad = |e: String| {
        Refusal::Bad(format!(
            "cannot decode protobuf ExportTraceServiceRequest: {e}"
        ))
    };
    let elements = wire::count_protobuf(&body).map_err(|e| bad(e.to_string()))?;
    let decoded = elements.decoded_bytes(body.len());
    if decoded > DECODE_FACTOR.saturating_mul(charged.max(body.len())) {
        return Err(Refusal::TooLarge(format!(
            "request of {} bytes holds {} spans in {} resources and would take {decoded} \
             bytes decoded, more than {DECODE_FACTOR} times its size",
            body.len(),
            elements.spans,
            elements.resource_spans
        )));
    }
    TraceRequest::decode(body).map_err(|e| bad(e.to_string()))
}

/// JSON: priced by its objects, decoded with the full message types, then made lean.
/// `charged` is the limit: JSON objects decode to much more than their text, so a JSON
/// body may use the decoded allowance of a maximum-size request.
fn decode_json(body: &[u8], charged: usize) -> Result<TraceRequest, Refusal> {
    let decoded = wire::json_decoded_bytes(body);
    let allowed = DECODE_FACTOR.saturating_mul(charged.max(body.len()));
    if decoded > allowed {
        return Err(Refusal::TooLarge(format!(
            "JSON request of {} bytes would take up to {decoded} bytes decoded, more than \
             {allowed}: send smaller batches or protobuf",
            body.len()
        )));
    }
    serde_json::from_slice::<ExportTraceServiceRequest>(body)
        .map(TraceRequest::from)
        .map_err(|e| Refusal::Bad(format!("cannot decode JSON ExportTraceServiceRequest: {e}")))
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

#[derive(Clone)]
struct HttpState {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    budget: Budget,
}

/// OTLP/HTTP: `POST /v1/traces` with bodies up to `max_body_bytes` (after
/// decompression), within the default [`Budget`].
pub fn http_router(store: Arc<Store>, metrics: Arc<Metrics>, max_body_bytes: usize) -> Router {
    http_router_with_budget(store, metrics, max_body_bytes, Budget::default())
}

/// [`http_router`] charging `budget` (share it with the gRPC receiver).
pub fn http_router_with_budget(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    budget: Budget,
) -> Router {
    Router::new()
        .route("/v1/traces", post(export_http))
        .with_state(HttpState {
            store,
            metrics,
            max_body_bytes,
            budget,
        })
}

/// The encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// The `Content-Encoding`s the HTTP receiver inflates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Identity,
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

async fn export_http(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match essence.as_str() {
        PROTOBUF => Encoding::Protobuf,
        JSON => Encoding::Json,
        _ => {
            return failure(
                Encoding::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type {content_type:?}: send {PROTOBUF} or {JSON}"),
            )
        }
    };
    let compression = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => Compression::Identity,
        Some("gzip" | "x-gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some(other) => {
            return failure(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content encoding {other:?}: send identity, gzip or zstd bodies"
                ),
            )
        }
    };
    let limit = state.max_body_bytes;
    let too_large = || {
        failure(
            encoding,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    // An uncompressed protobuf body of a declared length is charged for that length; any
    // other (what it may inflate to).
    // for the limit (what it may inflate to). JSON is always charged for the limit: its
    // decoded tree is priced against that.
    let charged = match (encoding, compression, declared) {
        (Encoding::Protobuf, Compression::Identity, Some(n)) => n,
        _ => limit,
    };
    let Some(_permit) = state.budget.try_charge(Budget::cost(charged)) else {
        let mut response = failure(
            encoding,
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the receiver is busy: {} bytes of requests in flight; retry later",
                state.budget.bytes()
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let raw = match axum::body::to_bytes(body, charged).await {
        Ok(b) => b,
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit exceeded");
            if over {
                return too_large();
            }
            return failure(
                encoding,
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            );
        }
    };
    let body = match inflate(compression, raw, limit) {
        Ok(b) => b,
        Err(Inflate::TooLarge) => {
            return failure(
                encoding,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body exceeds the limit of {limit} bytes once {} decompressed",
                    compression.name()
                ),
            )
        }
        Err(Inflate::Corrupt(e)) => {
            return failure(
                encoding,
                StatusCode::BAD_REQUEST,
                format!("cannot decompress the {} body: {e}", compression.name()),
            )
        }
    };
    let request = match encoding {
        Encoding::Protobuf => decode_protobuf(body, charged),
        Encoding::Json => decode_json(&body, charged),
    };
    let request = match request {
        Ok(r) => r,
        Err(Refusal::TooLarge(m)) => return failure(encoding, StatusCode::PAYLOAD_TOO_LARGE, m),
        Err(Refusal::Bad(m)) => return failure(encoding, StatusCode::BAD_REQUEST, m),
    };
    let summary = state.store.ingest_lean(request);
    let response = answer(&state.metrics, &summary);
    let bytes = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => match serde_json::to_vec(&response) {
            Ok(b) => b,
            Err(e) => {
                return failure(
                    encoding,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the response: {e}"),
                )
            }
        },
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        bytes,
    )
        .into_response()
}

/// Why a body was not inflated.
enum Inflate {
    TooLarge,
    Corrupt(std::io::Error),
}

/// Decompresses `raw`, stopping one byte past `limit`.
fn inflate(compression: Compression, raw: Bytes, limit: usize) -> Result<Bytes, Inflate> {
    match compression {
        Compression::Identity if raw.len() > limit => Err(Inflate::TooLarge),
        Compression::Identity => Ok(raw),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(&raw[..]), limit),
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::new(&raw[..]).map_err(Inflate::Corrupt)?;
            // A frame may ask for a window of up to 2 GiB.
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(Inflate::Corrupt)?;
            read_capped(decoder, limit)
        }
    }
}

fn read_capped(reader: impl Read, limit: usize) -> Result<Bytes, Inflate> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(Inflate::Corrupt)?;
    if out.len() > limit {
        return Err(Inflate::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

fn failure(encoding: Encoding, status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            tonic::Code::InvalidArgument
        }
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    let rpc = RpcStatus {
        code: code as i32,
        message,
    };
    let bytes = match encoding {
        Encoding::Protobuf => rpc.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&rpc).unwrap_or_default(),
    };
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        bytes,
    )
        .into_response()
}

/// Counts the spans and builds the OTLP answer, with partial success when spans were
/// refused.
fn answer(metrics: &Metrics, summary: &IngestSummary) -> ExportTraceServiceResponse {
    let rejected = summary.rejected_total();
    metrics
        .otlp_spans
        .get_or_create(&OutcomeLabels {
            outcome: "accepted",
        })
        .inc_by(summary.accepted);
    metrics
        .otlp_spans_without_sampling_record
        .inc_by(summary.without_sampling_record);
    if rejected > 0 {
        metrics
            .otlp_spans
            .get_or_create(&OutcomeLabels {
                outcome: "rejected",
            })
            .inc_by(rejected);
    }
    ExportTraceServiceResponse {
        partial_success: summary
            .error_message()
            .map(|error_message| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message,
            }),
    }
}
