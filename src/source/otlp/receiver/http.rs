//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, identity, gzip or zstd; errors as a
//! `google.rpc.Status` in the request's encoding (413, 415, 400, 429).

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;

use super::super::store::Store;
use super::{
    answer, decode_json, decode_protobuf, Budget, Refusal, JSON, PROTOBUF, ZSTD_WINDOW_LOG_MAX,
};
use crate::telemetry::Metrics;

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
