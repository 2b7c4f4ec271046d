//! Test harness shared by the integration tests: a real Prometheus server, a real
//! OpenTelemetry Collector, a test
//! exporter for it to scrape, and the scaler itself started in-process on loopback.
#![allow(dead_code)]

pub mod canary;
pub mod collector;
pub mod exporter;
pub mod loopback;
pub mod prometheus;
pub mod scaler;

use std::net::{SocketAddr, TcpListener};

/// A free loopback port (bound and released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a: SocketAddr| a.port())
        .expect("a free loopback port")
}
