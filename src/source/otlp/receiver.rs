//! The OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//!
//! Both hand decoded requests to the [`Store`](super::store::Store) and answer with OTLP partial success
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

//!
//! [`grpc`] is the gRPC receiver, [`http`] the HTTP one; this file holds what both share:
//! the limits, the [`Budget`], pricing and decoding a body, and the answer.

mod grpc;
mod http;

use std::sync::Arc;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::store::IngestSummary;
use super::wire::{self, TraceRequest};
use crate::telemetry::{Metrics, OutcomeLabels};

pub use grpc::{
    grpc_server, grpc_service, OtlpGrpc, GRPC_CONNECTION_WINDOW_BYTES, GRPC_STREAM_WINDOW_BYTES,
};
pub use http::{http_router, http_router_with_budget, RpcStatus};

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
