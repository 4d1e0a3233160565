//! leadpipe: a gRPC sales-pipeline service.

pub mod api;
pub mod app;
pub mod bulk;
pub mod config;
pub mod defaults;
pub use leadpipe_domain as domain;
pub mod grpc;
pub mod health_cli;
pub mod keys_cli;
pub mod metrics;
pub mod relay;
pub mod server;
pub mod store;
pub mod telemetry;
