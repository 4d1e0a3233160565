//! Compiles `proto/` with protox (no system protoc needed) and tonic-prost-build, and writes the
//! file descriptor set that server reflection serves.
//!
//! Two passes. The first generates every message, every client and every server. The second
//! generates LeadService's server again, without its two watch methods, into `OUT_DIR/unary`:
//! those are served by `src/grpc/watch.rs` over events encoded once for every stream, and the
//! generated server's trait would otherwise demand a per-stream implementation of them.

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

    let unary_dir = out_dir.join("unary");
    std::fs::create_dir_all(&unary_dir)?;
    let mut lead_service_only =
        protox::compile(["proto/leadpipe/v1/lead_service.proto"], ["proto"])?;
    for file in &mut lead_service_only.file {
        for service in &mut file.service {
            service
                .method
                .retain(|method| !WATCH_METHODS.contains(&method.name()));
        }
    }
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::grpc::codec::LeanCodec")
        .extern_path(".leadpipe.v1", "crate::api::pb")
        .out_dir(&unary_dir)
        .compile_fds(lead_service_only)?;
    Ok(())
}

/// LeadService's methods that `src/grpc/watch.rs` serves.
const WATCH_METHODS: &[&str] = &["WatchStageChanges", "WatchLeadChanges"];
