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

/// A free loopback port for a server a test starts, or leaves unbound to stand for a
/// backend that is down.
///
/// It is bound, checked and released, and the server binds it later. A port the kernel
/// hands out for `:0` could be taken in between by another test's `:0` listener or by
/// an outgoing connection's local port. The server would then fail to bind, and the
/// test's readiness probe would reach the wrong listener. So the port comes from below
/// Linux's default ephemeral range (32768–60999), where the kernel assigns nothing. It
/// is picked from the process id and a counter, so parallel tests and test binaries
/// pick different ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// [`free_port`] as a loopback address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
