//! slo-scaler: a KEDA external scaler for trace-derived SLO signals and SQS queue depth.
//!
//! See ARCHITECTURE.md for the code map and its invariants.
#![forbid(unsafe_code)]
// The API docs are the developers' map, read with private items (`scripts/test.sh` builds
// them so, warnings denied): a link to a private module or function is meant.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod analysis;
pub mod cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod policy;
pub mod proto;
pub mod scaler;
pub mod server;
pub mod signal;
pub mod simulate;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod trigger;
