//! The gRPC edge: generated code, protobuf ⇄ domain conversions, error mapping and the
//! service implementations.

pub mod convert;
pub mod error;
pub mod lead_service;
pub mod pipeline_service;

pub mod pb {
    tonic::include_proto!("leadpipe.v1");

    /// The file descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/leadpipe_descriptor.bin"));
}

use crate::app::RequestContext;

/// The caller's context. Until authentication exists every call acts for the default tenant.
pub fn context<T>(_request: &tonic::Request<T>) -> RequestContext {
    RequestContext::anonymous()
}
