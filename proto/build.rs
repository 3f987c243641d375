//! Compiles the contract with `protox` (pure Rust: no system `protoc`) and generates prost messages
//! and tonic stubs into `OUT_DIR`, together with the encoded descriptor set that the server
//! registers for reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

/// The contract's entry points; their imports (the vendored `google/rpc` protos and the well-known
/// types) are pulled in by protox.
const PROTOS: &[&str] = &["etter/pipeline/v1/resources.proto", "etter/pipeline/v1/pipeline_service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("etter").display());
    println!("cargo:rerun-if-changed={}", root.join("google").display());

    let fds = protox::compile(PROTOS, [&root])?;
    fs::write(out.join("etter_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // google.rpc messages come from tonic-types, so server and clients share one type.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(fds)?;
    Ok(())
}
