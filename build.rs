//! Generates the KEDA external scaler gRPC code from `proto/externalscaler.proto`.
//!
//! A vendored `protoc` is used so a machine with only cargo can build the crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; this only tells the generator which protoc to run.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    Ok(())
}
