//! The `etter.pipeline.v1` contract for Rust: prost messages, the tonic client and server of
//! `PipelineService`, and the encoded descriptor set for gRPC reflection.
//!
//! Generated into `OUT_DIR` by `build.rs`; never edited by hand. The `.proto` files beside this crate
//! are the source of truth.

/// `etter.pipeline.v1`: the onboarding pipeline's control-plane contract.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("etter.pipeline.v1");
}

/// The encoded `FileDescriptorSet` of the contract and everything it imports (`google.rpc`,
/// well-known types), for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/etter_descriptor.bin"));

/// The fully qualified name of the pipeline service, as health and reflection report it.
pub const PIPELINE_SERVICE_NAME: &str = "etter.pipeline.v1.PipelineService";
