//! The gRPC transport: the tonic services, every status (`error.rs`), and the tower layers in
//! front of them. The messages and their conversion into app commands are in `crate::api`.

pub mod auth;
pub mod codec;
pub mod connections;
pub mod error;
pub mod forecast_service;
pub mod guard;
pub mod lead_service;
pub mod observe;
pub mod pipeline_service;
pub mod watch;

/// LeadService's generated server without its watch methods, which `watch` serves (build.rs).
pub mod unary {
    include!(concat!(env!("OUT_DIR"), "/unary/leadpipe.v1.rs"));
}

pub use crate::api::pb;

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
