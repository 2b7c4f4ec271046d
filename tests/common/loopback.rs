//! The `serve` flags that put every listener on a free loopback port: one list for the
//! tests and the benches (which include this file by path), so a new listener is added once.

/// Every listener of `serve` on a free loopback port.
pub const LOOPBACK_ADDRS: [&str; 8] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
    "--otlp-grpc-addr",
    "127.0.0.1:0",
    "--otlp-http-addr",
    "127.0.0.1:0",
];
