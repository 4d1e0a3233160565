//! The integration tests: one binary, so that the suite links once. Each module starts real
//! servers (`common::spawn_app`) on SQLite, and on PostgreSQL when `LEADPIPE_TEST_DATABASE_URL`
//! is set. `tests/tracing.rs` is a binary of its own: it installs the process-wide tracing
//! subscriber.

#[macro_use]
mod common;

mod bulk;
mod connections;
mod deploy;
mod faults;
mod forecast;
mod fuzz;
mod grpc_web;
mod import_interleaving;
mod import_revisions;
mod lead_stream;
mod leads;
mod limits;
mod list_as_of;
mod metrics;
mod moves;
mod pipeline_changes;
mod pipelines;
mod point_in_time;
mod presets;
mod reads;
mod reimport;
mod replicas;
mod restart;
mod revisions;
mod schema;
mod stream;
mod stuck;
mod tenants;
mod tls;
mod visits;
