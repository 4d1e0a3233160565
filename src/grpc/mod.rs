//! The gRPC edge: generated code, protobuf ⇄ domain conversions, error mapping and the
//! service implementations.

pub mod auth;
pub mod codec;
pub mod connections;
pub mod convert;
pub mod error;
pub mod forecast_requests;
pub mod forecast_service;
pub mod guard;
pub mod import;
pub mod lead_requests;
pub mod lead_service;
pub mod observe;
pub mod pipeline_requests;
pub mod pipeline_service;

pub mod pb {
    tonic::include_proto!("leadpipe.v1");

    /// The file descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/leadpipe_descriptor.bin"));
}

use crate::app::RequestContext;

/// The caller's context, put into the request's extensions by the authentication layer
/// (`auth::AuthLayer`): the API key's tenant and identity, or the `default` tenant when the
/// server runs without authentication. The layer runs in front of every leadpipe service, so
/// the fallback is only reached when a service is called without the server around it.
pub fn context<T>(request: &tonic::Request<T>) -> RequestContext {
    request
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .unwrap_or_else(RequestContext::anonymous)
}
