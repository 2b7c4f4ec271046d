//! The OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//!
//! Both hand decoded requests to the [`Store`] and answer with OTLP partial success
//! when spans were refused (`rejected_spans` + `error_message`). OTLP/HTTP takes
//! protobuf (`application/x-protobuf`) and JSON (`application/json`); its error bodies
//! are a `google.rpc.Status` in the request's encoding: 413 over the body limit, 415 for
//! another content type or a compressed body, 400 when the body does not decode.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::store::{IngestSummary, Store};
use crate::telemetry::{Metrics, OutcomeLabels};

/// The largest request either receiver decodes by default (gRPC message / HTTP body).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/gRPC trace service, writing into a [`Store`].
#[derive(Clone)]
pub struct OtlpGrpc {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let summary = self.store.ingest(request.into_inner());
        Ok(tonic::Response::new(answer(&self.metrics, &summary)))
    }
}

/// The OTLP/gRPC `TraceService`, decoding messages up to [`DEFAULT_MAX_MESSAGE_BYTES`]
/// (chain `.max_decoding_message_size(n)` to change it). Add it to a tonic server.
pub fn grpc_service(store: Arc<Store>, metrics: Arc<Metrics>) -> TraceServiceServer<OtlpGrpc> {
    TraceServiceServer::new(OtlpGrpc { store, metrics })
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
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
}

/// OTLP/HTTP: `POST /v1/traces` with bodies up to `max_body_bytes`.
pub fn http_router(store: Arc<Store>, metrics: Arc<Metrics>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(export_http))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(HttpState {
            store,
            metrics,
            max_body_bytes,
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

async fn export_http(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
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
    if let Some(enc) = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().eq_ignore_ascii_case("identity"))
    {
        return failure(
            encoding,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {enc:?}: send uncompressed bodies"),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return failure(
                encoding,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body exceeds the limit of {} bytes",
                    state.max_body_bytes
                ),
            )
        }
        Err(e) => {
            return failure(
                encoding,
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {}", e.body_text()),
            )
        }
    };
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| format!("cannot decode protobuf ExportTraceServiceRequest: {e}")),
        Encoding::Json => serde_json::from_slice::<ExportTraceServiceRequest>(&body)
            .map_err(|e| format!("cannot decode JSON ExportTraceServiceRequest: {e}")),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => return failure(encoding, StatusCode::BAD_REQUEST, message),
    };
    let summary = state.store.ingest(request);
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
