//! The embedded OTLP trace source: a receiver for spans and the store that answers reads.
//!
//! - [`sketch`]: the mergeable latency sketch (DDSketch, 1 % relative error).
//! - [`store`]: per-series rings of time buckets; [`Store::read`] answers [`OtlpQuery`]s.
//! - [`receiver`]: OTLP/gRPC `TraceService/Export` and OTLP/HTTP `POST /v1/traces`.
//! - [`wire`]: the lean messages the receivers decode, and the price of decoding them.
//!
//! [`OtlpQuery`]: crate::source::OtlpQuery

pub mod receiver;
pub mod sketch;
pub mod store;
pub mod wire;

pub use receiver::{
    grpc_server, grpc_service, http_router, http_router_with_budget, Budget, OtlpGrpc,
    DEFAULT_INFLIGHT_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use store::{Clock, IngestSummary, ManualClock, Store, StoreConfig, StoreConfigError};
