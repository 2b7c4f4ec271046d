//! Generates the KEDA external scaler gRPC code from `proto/externalscaler.proto`.
//!
//! Twice: the messages and the client as prost generates them (`proto`), and the server
//! alone, reading `ScaledObjectRef` and `GetMetricsRequest` as the hand-written types of
//! `src/proto/wire.rs`, which keep the trigger metadata in one buffer instead of a
//! `HashMap` of owned strings, and writing `GetMetricsResponse` from the plan's shared metric
//! name instead of a `Vec` and a copied `String` (the answer path, BENCHMARKS.md "h2load"),
//! with the per-call buffers of `src/proto/codec.rs`.
//!
//! A vendored `protoc` is used so a machine with only cargo can build the crate.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; this only tells the generator which protoc to run.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    let server = PathBuf::from(std::env::var("OUT_DIR")?).join("server");
    std::fs::create_dir_all(&server)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .out_dir(server)
        .codec_path("crate::proto::codec::KedaCodec")
        .extern_path(".externalscaler", "crate::proto")
        .extern_path(
            ".externalscaler.ScaledObjectRef",
            "crate::proto::wire::ScaledObjectRef",
        )
        .extern_path(
            ".externalscaler.GetMetricsRequest",
            "crate::proto::wire::GetMetricsRequest",
        )
        .extern_path(
            ".externalscaler.GetMetricsResponse",
            "crate::proto::wire::GetMetricsResponse",
        )
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    Ok(())
}
