//! Compiles `proto/` with protox (no system protoc needed) and tonic-prost-build, and writes the
//! file descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/leadpipe/v1/lead.proto",
    "proto/leadpipe/v1/lead_service.proto",
    "proto/leadpipe/v1/pipeline.proto",
    "proto/leadpipe/v1/forecast.proto",
];

/// Described by reflection so that tools such as grpcurl can describe `google.rpc.Status` and
/// decode the error details in `grpc-status-details-bin`; the Rust types come from tonic-types.
const REFLECTION_ONLY: &[&str] = &[
    "proto/google/rpc/status.proto",
    "proto/google/rpc/code.proto",
    "proto/google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS.iter().chain(REFLECTION_ONLY), ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("leadpipe_descriptor.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .skip_protoc_run()
        .codec_path("crate::grpc::codec::LeanCodec")
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
