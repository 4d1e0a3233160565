//! Command line and environment configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::server::Settings;

use crate::store::{SqliteSync, StoreConfig};

#[derive(Debug, Parser)]
#[command(
    name = "leadpipe",
    version,
    about = "A gRPC sales-pipeline service: leads, stage gates, history and forecasts."
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default). Migrations run first.
    Serve(ServeArgs),
    /// Run the database migrations and exit.
    Migrate,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "LEADPIPE_DATABASE_URL",
        default_value = "sqlite://leadpipe.db",
        global = true
    )]
    pub database_url: String,
    /// Maximum database connections in the pool.
    #[arg(
        long,
        env = "LEADPIPE_DB_POOL_SIZE",
        default_value_t = 8,
        global = true
    )]
    pub db_pool_size: u32,
    /// SQLite durability: `full` survives power loss; `normal` survives process crashes only but
    /// commits faster. Ignored on PostgreSQL.
    #[arg(
        long,
        env = "LEADPIPE_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full",
        global = true
    )]
    pub sqlite_synchronous: SqliteSync,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LEADPIPE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// How long stage-change events stay replayable by WatchStageChanges, e.g. `7d` or `36h`.
    #[arg(long, env = "LEADPIPE_OUTBOX_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            outbox_retention: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

impl ServeArgs {
    pub fn settings(&self, database: &DatabaseArgs) -> Settings {
        Settings {
            outbox_retention: self.outbox_retention,
            ..Settings::new(database.store_config())
        }
    }
}

impl DatabaseArgs {
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url.clone(),
            pool_size: self.db_pool_size.max(1),
            sqlite_synchronous: self.sqlite_synchronous,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}
