//! slo-scaler: a KEDA external scaler for trace-derived SLO signals and SQS queue depth.
//!
//! See ARCHITECTURE.md for the code map and its invariants.
#![forbid(unsafe_code)]

pub mod signal;
pub mod source;
pub mod telemetry;

/// The generated KEDA external scaler protocol (`proto/externalscaler.proto`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("externalscaler");
}
