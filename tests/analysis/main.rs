//! Integration tests of the canary analysis endpoint and `signal: slo`: spans for two
//! versions made by the official OpenTelemetry SDK, exported with `opentelemetry-otlp` to
//! the real receivers, read through the engine and the admin HTTP server.

#[path = "../common/mod.rs"]
mod common;
mod demo;
#[path = "../tempo/fake.rs"]
#[allow(dead_code)]
mod fake;
#[path = "../otlp/harness.rs"]
#[allow(dead_code)]
mod harness;
mod keda;
mod otlp;
mod prometheus;
mod setup;
mod tempo;
mod verdict;
