//! Command line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::api_keys::Role;
use crate::domain::ids::TenantId;
use crate::grpc::auth::AuthMode;
use crate::server::{Limits, Settings, TlsSettings};

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
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it. It is shown only this once: only its hash is stored.
    Create {
        /// The tenant the key acts for: [a-z][a-z0-9_-]{0,62}.
        #[arg(long, value_parser = parse_tenant)]
        tenant: TenantId,
        /// reader: reads and streams; writer: also changes leads; admin: also pipelines.
        #[arg(long, value_enum)]
        role: Role,
        /// A note for people, e.g. who or what uses the key.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long, value_parser = parse_tenant)]
        tenant: Option<TenantId>,
    },
    /// Revoke a key at once, on every replica.
    Revoke {
        /// The key's `<tenant>_<id>` as `keys list` shows it, or just its `<id>`.
        id: String,
    },
}

fn parse_tenant(value: &str) -> Result<TenantId, String> {
    TenantId::parse(value)
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
    /// When calls need an API key. auto: if any unrevoked key exists at start-up; with none,
    /// serve the `default` tenant without keys on a loopback address and refuse to start on any
    /// other. required: always. disabled: never (calls without a key act for `default`).
    #[arg(long, env = "LEADPIPE_AUTH", value_enum, default_value = "auto")]
    pub auth: AuthMode,
    /// PEM certificate chain for TLS. With `--tls-key`, the port speaks only TLS.
    #[arg(long, env = "LEADPIPE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "LEADPIPE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by one (mTLS).
    #[arg(long, env = "LEADPIPE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The largest request or response message, in bytes, on every service.
    #[arg(long, env = "LEADPIPE_MAX_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub max_message_size: usize,
    /// The most WatchStageChanges streams one tenant may hold open at once.
    #[arg(long, env = "LEADPIPE_MAX_STREAMS_PER_TENANT", default_value_t = 1000)]
    pub max_streams_per_tenant: usize,
    /// Deadline of a call whose client sets none or a longer one (`0s`: none). Streams are
    /// bounded only until they open.
    #[arg(long, env = "LEADPIPE_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Sustained calls per second per tenant (0: no rate limit).
    #[arg(long, env = "LEADPIPE_RATE_LIMIT_PER_SECOND", default_value_t = 2000)]
    pub rate_limit_per_second: u32,
    /// Calls a tenant may make in a burst before the per-second rate applies.
    #[arg(long, env = "LEADPIPE_RATE_LIMIT_BURST", default_value_t = 4000)]
    pub rate_limit_burst: u32,
    /// How long a call waits for a database connection before failing with UNAVAILABLE; also
    /// the connect timeout. Keeps calls fast when the database is gone.
    #[arg(long, env = "LEADPIPE_DB_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_timeout: Duration,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            outbox_retention: Duration::from_secs(7 * 24 * 60 * 60),
            auth: AuthMode::Auto,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_message_size: 4 * 1024 * 1024,
            max_streams_per_tenant: 1000,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_second: 2000,
            rate_limit_burst: 4000,
            db_timeout: Duration::from_secs(2),
        }
    }
}

impl ServeArgs {
    /// The serve options from the environment (`LEADPIPE_*`) and their defaults, for a
    /// `leadpipe` run without a subcommand. Exits with clap's message on a bad value.
    pub fn from_env() -> Self {
        #[derive(Parser)]
        struct EnvOnly {
            #[command(flatten)]
            serve: ServeArgs,
        }
        EnvOnly::parse_from(["leadpipe"]).serve
    }
}

impl ServeArgs {
    pub fn settings(&self, database: &DatabaseArgs) -> Settings {
        let mut store = database.store_config();
        store.acquire_timeout = self.db_timeout.max(Duration::from_millis(100));
        Settings {
            outbox_retention: self.outbox_retention,
            auth: self.auth,
            limits: Limits {
                max_message_size: self.max_message_size,
                max_streams_per_tenant: self.max_streams_per_tenant,
                request_timeout: (!self.request_timeout.is_zero()).then_some(self.request_timeout),
                rate_limit_per_second: self.rate_limit_per_second,
                rate_limit_burst: self.rate_limit_burst,
            },
            ..Settings::new(store)
        }
    }

    /// The TLS files, read; None when TLS is not configured.
    pub fn tls(&self) -> std::io::Result<Option<TlsSettings>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                TlsSettings::from_files(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            _ => Ok(None),
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
