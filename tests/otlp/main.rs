//! Integration tests of the embedded OTLP source: the official OpenTelemetry SDK exports
//! spans to the real gRPC and HTTP receivers on loopback, and the store's readings are
//! checked against exact figures.

#[path = "../common/mod.rs"]
mod common;
mod compression;
mod harness;
mod malformed;
mod rates;
mod sampled;
mod sdk;
mod server;
