//! leadpipe: a gRPC sales-pipeline service.

pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod keys_cli;
pub mod relay;
pub mod server;
pub mod store;
pub mod telemetry;
