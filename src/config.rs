//! Configuration: flags, then `LEADPIPE_*` environment variables, then an optional TOML file
//! (`--config`), then the defaults.
//!
//! The file is applied by making its values the defaults of the matching arguments, so clap's
//! own precedence (flag, then environment, then default) gives the order above, and `--help`
//! shows the values in effect.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::api_keys::Role;
use crate::domain::ids::TenantId;
use crate::grpc::auth::AuthMode;
use crate::server::{Limits, Settings, TlsSettings};

use crate::defaults;
use crate::store::{SqliteSync, StoreConfig};

#[derive(Debug, Parser)]
#[command(
    name = "leadpipe",
    version,
    about = "A gRPC sales-pipeline service: leads, stage gates, history and forecasts."
)]
pub struct Cli {
    /// A TOML file of settings. Its keys are the flags' names with `_` for `-`, e.g.
    /// `listen = "0.0.0.0:50051"`; flags and LEADPIPE_* variables override it.
    #[arg(long, env = "LEADPIPE_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

// One value, made once at start-up: boxing the serve settings to even out the variants would
// buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default). Migrations run first.
    Serve(ServeArgs),
    /// Run the database migrations and exit.
    Migrate,
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Import leads from a CSV file, through the same validation as ImportLeads.
    Import(ImportArgs),
    /// Export leads with their history as CSV, in the layout `import` reads.
    Export(ExportArgs),
    /// Export a tenant's pipelines to a file, or create and update them from one.
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
    /// Seed an empty tenant with a realistic sample pipeline.
    Demo(DemoArgs),
    /// Exit 0 if the server answers SERVING to a gRPC health check (plaintext servers only).
    Health(HealthArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server's listen address; a wildcard address (0.0.0.0, ::) is checked on loopback.
    #[arg(long, env = "LEADPIPE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// The service to ask about; empty for the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The CSV file (`-`: standard input). See docs/importing.md for its columns. With
    /// --preset salesforce or pipedrive, the files after the first hold the history
    /// (OpportunityHistory; the deal flow as JSON lines).
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Read a CRM's own export: its columns, dates, amounts, stages and history, into a
    /// pipeline mirroring the CRM's, created if missing (docs/migrating.md).
    #[arg(long, value_enum)]
    pub preset: Option<crate::bulk::presets::Preset>,
    /// The tenant to import into.
    #[arg(long, value_parser = parse_tenant, default_value = "default")]
    pub tenant: TenantId,
    /// A TOML file mapping the file's columns, stage names, date formats and time zone onto
    /// leadpipe's (docs/importing.md).
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Leave out columns that are neither leadpipe's nor mapped, instead of refusing the file.
    #[arg(long)]
    pub ignore_unknown_columns: bool,
    /// The time zone of times written without an offset, e.g. Europe/Berlin (default UTC).
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// A strftime format of the file's times or dates, e.g. %m/%d/%Y; repeat for several.
    #[arg(long = "date-format", value_name = "FORMAT")]
    pub date_formats: Vec<String>,
    /// The field delimiter: one character, or `tab` (default: sniffed from the header).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// The file's encoding, e.g. windows-1252 or latin1 (default UTF-8, or what a byte-order
    /// mark says).
    #[arg(long)]
    pub encoding: Option<String>,
    /// Check every row and report, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Bring leads imported before up to date with their rows, as revisions: stage changes
    /// the row's history adds after the stored one, then its changed fields (at the time of
    /// the import). A row whose history disagrees with the stored one is refused; stored
    /// history is never rewritten. Without it such rows are only counted (docs/importing.md).
    #[arg(long)]
    pub update: bool,
    /// Create or update the pipelines of this file (from `pipelines export` or `export
    /// --pipelines`) before importing.
    #[arg(long, value_name = "FILE")]
    pub pipelines: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// Write every pipeline of the tenant as TOML or JSON.
    Export {
        /// Write to this file instead of standard output; `.json` writes JSON.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// toml or json (default: by the output's extension, else toml).
        #[arg(long, value_enum)]
        format: Option<crate::bulk::pipelines::Format>,
        /// The tenant to export.
        #[arg(long, value_parser = parse_tenant, default_value = "default")]
        tenant: TenantId,
    },
    /// Create the file's pipelines the tenant lacks and update those that differ.
    Apply {
        /// A file from `pipelines export`: TOML, or JSON when it ends in `.json`.
        file: PathBuf,
        /// The tenant to apply to.
        #[arg(long, value_parser = parse_tenant, default_value = "default")]
        tenant: TenantId,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The tenant to export.
    #[arg(long, value_parser = parse_tenant, default_value = "default")]
    pub tenant: TenantId,
    /// Only leads matching this ListLeads filter, e.g. `stage = "proposal"`.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// Also write the tenant's pipelines to this file (TOML, or JSON when it ends in `.json`),
    /// for `import --pipelines` or `pipelines apply`.
    #[arg(long, value_name = "FILE")]
    pub pipelines: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The tenant to seed; it must have no leads. `default` is the one a server without API
    /// keys serves on loopback.
    #[arg(long, value_parser = parse_tenant, default_value = "default")]
    pub tenant: TenantId,
    /// How many leads to create.
    #[arg(long, default_value_t = 3000)]
    pub leads: usize,
    /// How many days of history, ending at `--until`.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// The same seed and `--until` give the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// When the history ends, RFC 3339 (default: the start of today, UTC).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
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
        role: RoleArg,
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

/// A retention: a duration, or none (`forever`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

fn parse_retention(value: &str) -> Result<Retention, String> {
    if value.trim() == defaults::FOREVER {
        return Ok(Retention(None));
    }
    match humantime::parse_duration(value) {
        Ok(duration) if duration.is_zero() => Err("must be above zero, or `forever`".into()),
        Ok(duration) => Ok(Retention(Some(duration))),
        Err(e) => Err(format!("{e}; or `forever`")),
    }
}

/// `*`, or an origin as browsers send it: `http[s]://host[:port]`, without a path.
fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim();
    let host = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let valid = value == "*"
        || host.is_some_and(|host| {
            !host.is_empty() && !host.contains('/') && http::HeaderValue::from_str(value).is_ok()
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not an origin: expected `*` or scheme://host[:port], e.g. https://crm.example.com"
        ))
    }
}

/// `--auth`: when calls need an API key, as the command line and the file spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    /// Keys are required if any unrevoked key exists at start-up. With none, a server on a
    /// loopback address serves the `default` tenant without keys (and warns); a server on any
    /// other address refuses to start.
    Auto,
    /// Keys are always required.
    Required,
    /// Calls without a key act for the `default` tenant. For trusted networks only.
    Disabled,
}

impl From<AuthArg> for AuthMode {
    fn from(value: AuthArg) -> Self {
        match value {
            AuthArg::Auto => AuthMode::Auto,
            AuthArg::Required => AuthMode::Required,
            AuthArg::Disabled => AuthMode::Disabled,
        }
    }
}

/// `leadpipe keys create --role`: what the key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Reads leads, history, streams, pipelines and forecasts.
    Reader,
    /// A reader that also creates, updates, deletes, moves and imports leads.
    Writer,
    /// A writer that also creates and updates pipelines.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(value: RoleArg) -> Self {
        match value {
            RoleArg::Reader => Role::Reader,
            RoleArg::Writer => Role::Writer,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// `--sqlite-synchronous`: SQLite's durability, as the command line and the file spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// Survives power loss.
    Full,
    /// Survives a crashed or killed process; may lose the last commits on power loss.
    Normal,
}

impl From<Synchronous> for SqliteSync {
    fn from(value: Synchronous) -> Self {
        match value {
            Synchronous::Full => SqliteSync::Full,
            Synchronous::Normal => SqliteSync::Normal,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "LEADPIPE_DATABASE_URL",
        default_value = defaults::DATABASE_URL,
        global = true
    )]
    pub database_url: String,
    /// Maximum database connections in the pool.
    #[arg(
        long,
        env = "LEADPIPE_DB_POOL_SIZE",
        default_value_t = defaults::DB_POOL_SIZE,
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
    pub sqlite_synchronous: Synchronous,
    /// How long a call waits for a database connection, and on SQLite for the write lock that
    /// another process holds, before failing with UNAVAILABLE; also the connect timeout. Keeps
    /// calls fast when the database is gone.
    #[arg(long, env = "LEADPIPE_DB_TIMEOUT", default_value = defaults::text(defaults::DB_TIMEOUT), value_parser = humantime::parse_duration, global = true)]
    pub db_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LEADPIPE_LISTEN", default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// How long stage-change events stay replayable by WatchStageChanges, e.g. `7d` or `36h`.
    #[arg(long, env = "LEADPIPE_OUTBOX_RETENTION", default_value = defaults::text(defaults::OUTBOX_RETENTION), value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,
    /// How long lead revisions are kept, e.g. `400d`; `forever` never removes them. Reads as of
    /// a time older than this fail with OUT_OF_RANGE.
    #[arg(long, env = "LEADPIPE_REVISION_RETENTION", default_value = defaults::retention_text(defaults::REVISION_RETENTION), value_parser = parse_retention)]
    pub revision_retention: Retention,
    /// When calls need an API key. auto: if any unrevoked key exists at start-up; with none,
    /// serve the `default` tenant without keys on a loopback address and refuse to start on any
    /// other. required: always. disabled: never (calls without a key act for `default`).
    #[arg(long, env = "LEADPIPE_AUTH", value_enum, default_value = "auto")]
    pub auth: AuthArg,
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
    #[arg(long, env = "LEADPIPE_MAX_MESSAGE_SIZE", default_value_t = defaults::MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,
    /// The most WatchStageChanges streams one tenant may hold open at once.
    #[arg(long, env = "LEADPIPE_MAX_STREAMS_PER_TENANT", default_value_t = defaults::MAX_STREAMS_PER_TENANT)]
    pub max_streams_per_tenant: usize,
    /// Deadline of a call whose client sets none or a longer one (`0s`: none). Streams are
    /// bounded only until they open.
    #[arg(long, env = "LEADPIPE_REQUEST_TIMEOUT", default_value = defaults::text(defaults::REQUEST_TIMEOUT), value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Sustained calls per second per tenant (0: no rate limit).
    #[arg(long, env = "LEADPIPE_RATE_LIMIT_PER_SECOND", default_value_t = defaults::RATE_LIMIT_PER_SECOND)]
    pub rate_limit_per_second: u32,
    /// Calls a tenant may make in a burst before the per-second rate applies.
    #[arg(long, env = "LEADPIPE_RATE_LIMIT_BURST", default_value_t = defaults::RATE_LIMIT_BURST)]
    pub rate_limit_burst: u32,
    /// The most connections open at once; further ones are closed as they arrive (0: no limit).
    #[arg(long, env = "LEADPIPE_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long a new connection has to complete its first request, TLS handshake and HTTP/2
    /// preface included, before it is closed (`0s`: no deadline).
    #[arg(long, env = "LEADPIPE_FIRST_REQUEST_TIMEOUT", default_value = defaults::text(defaults::FIRST_REQUEST_TIMEOUT), value_parser = humantime::parse_duration)]
    pub first_request_timeout: Duration,
    /// Serve Prometheus metrics at `http://ADDRESS/metrics` (none unless set), e.g.
    /// `127.0.0.1:9464`.
    #[arg(long, env = "LEADPIPE_METRICS_LISTEN", value_name = "ADDRESS")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export each call's trace span over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317`. Without it, OTEL_EXPORTER_OTLP_ENDPOINT turns the export on.
    #[arg(long, env = "LEADPIPE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Web origins whose pages may call the API with grpc-web, comma-separated, e.g.
    /// `https://crm.example.com`; `*` for any. None by default: only same-origin pages may.
    #[arg(long, env = "LEADPIPE_CORS_ALLOWED_ORIGINS", value_name = "ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,
}

impl ServeArgs {
    pub fn settings(&self, database: &DatabaseArgs) -> Settings {
        let store = database.store_config();
        Settings {
            outbox_retention: self.outbox_retention,
            revision_retention: self.revision_retention.0,
            auth: self.auth.into(),
            limits: Limits {
                max_message_size: self.max_message_size,
                max_streams_per_tenant: self.max_streams_per_tenant,
                request_timeout: (!self.request_timeout.is_zero()).then_some(self.request_timeout),
                rate_limit_per_second: self.rate_limit_per_second,
                rate_limit_burst: self.rate_limit_burst,
                max_connections: (self.max_connections > 0).then_some(self.max_connections),
                first_request_timeout: (!self.first_request_timeout.is_zero())
                    .then_some(self.first_request_timeout),
            },
            metrics: self.metrics_listen.is_some(),
            cors_allowed_origins: self.cors_allowed_origins.clone(),
            ..Settings::new(store)
        }
    }

    /// The TLS files, read; None when TLS is not configured.
    pub fn tls(&self) -> std::io::Result<Option<TlsSettings>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                TlsSettings::from_files(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            // Reachable when the configuration file sets only some of them (clap checks flags
            // and variables, not defaults).
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "TLS needs both tls_cert and tls_key (and tls_client_ca needs both)",
            )),
        }
    }
}

impl DatabaseArgs {
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            database_url: self.database_url.clone(),
            pool_size: self.db_pool_size.max(1),
            sqlite_synchronous: self.sqlite_synchronous.into(),
            acquire_timeout: self.db_timeout.max(Duration::from_millis(100)),
        }
    }
}

impl Cli {
    /// The command line, over the environment, over the configuration file, over the defaults.
    /// Without a subcommand, `serve` with its settings from those sources. Exits with clap's
    /// message on a bad flag, variable or file.
    pub fn load() -> Self {
        Self::load_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    pub fn load_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Self::command();
        let matches = command.try_get_matches_from_mut(&args)?;
        if let Some(path) = matches.get_one::<PathBuf>("config") {
            command = with_file_defaults(Self::command(), path)?;
        }
        let matches = command.try_get_matches_from_mut(&args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        if cli.command.is_none() {
            let serve = command
                .find_subcommand_mut("serve")
                .expect("serve is a subcommand");
            let matches = serve.try_get_matches_from_mut(["serve"])?;
            cli.command = Some(Command::Serve(ServeArgs::from_arg_matches(&matches)?));
        }
        Ok(cli)
    }
}

/// Makes each setting in the TOML file at `path` the default of the argument of that name, at
/// the top level (global settings) and in every subcommand that has it. Only arguments with a
/// `LEADPIPE_*` variable are settings; an unknown key is an error, so that a typo is not
/// silently ignored.
fn with_file_defaults(
    mut command: clap::Command,
    path: &Path,
) -> Result<clap::Command, clap::Error> {
    let fail = |message: String| clap::Error::raw(ErrorKind::InvalidValue, message + "\n");
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    for (key, value) in table {
        let global = is_setting(&command, &key);
        let subcommands: Vec<String> = command
            .get_subcommands()
            .filter(|sub| is_setting(sub, &key))
            .map(|sub| sub.get_name().to_owned())
            .collect();
        if !global && subcommands.is_empty() {
            let mut keys: Vec<String> = settings(&command).collect();
            keys.sort();
            keys.dedup();
            return Err(fail(format!(
                "{}: unknown setting `{key}`; the settings are: {}",
                path.display(),
                keys.join(", ")
            )));
        }
        let scalar = |value: toml::Value| match value {
            toml::Value::String(value) => Some(value),
            toml::Value::Integer(value) => Some(value.to_string()),
            toml::Value::Float(value) => Some(value.to_string()),
            toml::Value::Boolean(value) => Some(value.to_string()),
            _ => None,
        };
        // A list setting (one with a value delimiter) takes an array, or one delimited string.
        let delimiter = std::iter::once(&command)
            .chain(command.get_subcommands())
            .flat_map(|command| command.get_arguments())
            .find(|arg| arg.get_id() == key.as_str())
            .and_then(|arg| arg.get_value_delimiter());
        let values: Option<Vec<String>> = match (value, delimiter) {
            (toml::Value::Array(items), Some(_)) => items.into_iter().map(scalar).collect(),
            (value, Some(delimiter)) => scalar(value).map(|joined| {
                joined
                    .split(delimiter)
                    .map(|item| item.trim().to_owned())
                    .collect()
            }),
            (value, None) => scalar(value).map(|value| vec![value]),
        };
        let Some(values) = values else {
            let what = match delimiter {
                Some(_) => "a string or an array of strings",
                None => "a string, a number or a boolean",
            };
            return Err(fail(format!("{}: `{key}` must be {what}", path.display())));
        };
        let set = |arg: clap::Arg| arg.default_values(values.clone());
        if global {
            command = command.mut_arg(&key, set);
        }
        for name in subcommands {
            command = command.mut_subcommand(name, |sub| sub.mut_arg(&key, set));
        }
    }
    Ok(command)
}

/// Whether `command` has a setting called `key`.
fn is_setting(command: &clap::Command, key: &str) -> bool {
    key != "config"
        && command
            .get_arguments()
            .any(|arg| arg.get_id() == key && arg.get_env().is_some())
}

/// The names of every setting, for the error on an unknown one.
fn settings(command: &clap::Command) -> impl Iterator<Item = String> + '_ {
    std::iter::once(command)
        .chain(command.get_subcommands())
        .flat_map(|command| command.get_arguments())
        .filter(|arg| arg.get_env().is_some() && arg.get_id() != "config")
        .map(|arg| arg.get_id().to_string())
}

#[cfg(test)]
mod precedence_tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// Tests that set or clear the variable below hold this lock.
    static ENV: Mutex<()> = Mutex::new(());
    const BURST_VAR: &str = "LEADPIPE_RATE_LIMIT_BURST";

    fn set_burst_var(value: Option<&str>) {
        // SAFETY: std's own lock serialises this with every `std::env` read in the process, and
        // the tests that read this variable hold `ENV`.
        unsafe {
            match value {
                Some(value) => std::env::set_var(BURST_VAR, value),
                None => std::env::remove_var(BURST_VAR),
            }
        }
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn load(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::load_from(std::iter::once("leadpipe").chain(args.iter().copied()))
    }

    fn serve_args(cli: &Cli) -> &ServeArgs {
        match &cli.command {
            Some(Command::Serve(args)) => args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn the_file_overrides_defaults_also_without_a_subcommand() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        set_burst_var(None);
        let file = config_file(
            "database_url = \"sqlite://from-file.db\"\n\
             listen = \"127.0.0.1:6000\"\n\
             rate_limit_burst = 7\n\
             request_timeout = \"5s\"\n\
             max_connections = 0\n\
             first_request_timeout = \"250ms\"\n\
             metrics_listen = \"127.0.0.1:9464\"\n",
        );
        let path = file.path().to_str().unwrap();
        for args in [vec!["--config", path], vec!["--config", path, "serve"]] {
            let cli = load(&args).unwrap();
            assert_eq!(cli.database.database_url, "sqlite://from-file.db");
            let serve = serve_args(&cli);
            assert_eq!(serve.listen, "127.0.0.1:6000".parse().unwrap());
            assert_eq!(serve.rate_limit_burst, 7);
            assert_eq!(serve.request_timeout, Duration::from_secs(5));
            let limits = serve.settings(&cli.database).limits;
            assert_eq!(limits.max_connections, None, "0 turns the limit off");
            assert_eq!(
                limits.first_request_timeout,
                Some(Duration::from_millis(250))
            );
            assert_eq!(
                serve.metrics_listen,
                Some("127.0.0.1:9464".parse().unwrap())
            );
            // Untouched settings keep their defaults.
            assert_eq!(serve.rate_limit_per_second, 2000);
            assert_eq!(
                serve.max_streams_per_tenant,
                defaults::MAX_STREAMS_PER_TENANT
            );
            assert_eq!(serve.outbox_retention, defaults::OUTBOX_RETENTION);
            assert_eq!(
                serve.revision_retention,
                Retention(defaults::REVISION_RETENTION)
            );
            assert_eq!(cli.database.db_pool_size, defaults::DB_POOL_SIZE);
            assert_eq!(cli.database.db_timeout, defaults::DB_TIMEOUT);
        }
        // Global settings reach the other subcommands too.
        let cli = load(&["--config", path, "migrate"]).unwrap();
        assert_eq!(cli.database.database_url, "sqlite://from-file.db");
    }

    #[test]
    fn serve_without_settings_is_a_server_built_with_the_defaults() {
        let cli = load(&["serve"]).unwrap();
        let from_flags = serve_args(&cli).settings(&cli.database);
        let in_code = Settings::new(cli.database.store_config());
        assert_eq!(format!("{from_flags:?}"), format!("{in_code:?}"));
        assert_eq!(serve_args(&cli).listen, defaults::LISTEN);
        assert_eq!(cli.database.db_timeout, defaults::DB_TIMEOUT);
    }

    #[test]
    fn env_overrides_the_file_and_flags_override_env() {
        let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let file = config_file("rate_limit_burst = 7\n");
        let path = file.path().to_str().unwrap();

        set_burst_var(Some("9"));
        let from_env = load(&["--config", path, "serve"]);
        let from_flag = load(&["--config", path, "serve", "--rate-limit-burst", "11"]);
        set_burst_var(None);
        let from_file = load(&["--config", path, "serve"]);
        let from_default = load(&["serve"]);

        assert_eq!(serve_args(&from_env.unwrap()).rate_limit_burst, 9);
        assert_eq!(serve_args(&from_flag.unwrap()).rate_limit_burst, 11);
        assert_eq!(serve_args(&from_file.unwrap()).rate_limit_burst, 7);
        assert_eq!(serve_args(&from_default.unwrap()).rate_limit_burst, 4000);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let message = |text: &str| {
            let file = config_file(text);
            load(&["--config", file.path().to_str().unwrap(), "serve"])
                .expect_err("refused")
                .to_string()
        };
        let unknown = message("lisen = \"127.0.0.1:1\"\n");
        assert!(unknown.contains("unknown setting `lisen`"), "{unknown}");
        assert!(unknown.contains("listen"), "lists the settings: {unknown}");
        let table = message("[serve]\nlisten = \"127.0.0.1:1\"\n");
        assert!(table.contains("unknown setting `serve`"), "{table}");
        let array = message("listen = [\"127.0.0.1:1\"]\n");
        assert!(array.contains("must be a string"), "{array}");
        let syntax = message("listen = \n");
        assert!(
            syntax.contains("TOML") || syntax.contains("expected"),
            "{syntax}"
        );
        let invalid = message("listen = \"nowhere\"\n");
        assert!(invalid.contains("nowhere"), "{invalid}");
        assert!(invalid.contains("--listen"), "{invalid}");
        let config = message("config = \"other.toml\"\n");
        assert!(config.contains("unknown setting `config`"), "{config}");

        let missing = load(&["--config", "/nonexistent/leadpipe.toml"]).expect_err("refused");
        assert!(
            missing
                .to_string()
                .contains("cannot read /nonexistent/leadpipe.toml")
        );
    }

    #[test]
    fn list_settings_take_arrays_or_delimited_strings() {
        let origins = |text: &str| {
            let file = config_file(text);
            let cli = load(&["--config", file.path().to_str().unwrap(), "serve"]).unwrap();
            serve_args(&cli).cors_allowed_origins.clone()
        };
        let both = vec![
            "https://a.example".to_owned(),
            "https://b.example".to_owned(),
        ];
        assert_eq!(
            origins("cors_allowed_origins = [\"https://a.example\", \"https://b.example\"]\n"),
            both
        );
        assert_eq!(
            origins("cors_allowed_origins = \"https://a.example,https://b.example\"\n"),
            both
        );
        let file = config_file("cors_allowed_origins = [[\"https://a.example\"]]\n");
        let error = load(&["--config", file.path().to_str().unwrap(), "serve"])
            .expect_err("nested arrays are refused")
            .to_string();
        assert!(error.contains("array of strings"), "{error}");
    }

    #[test]
    fn tls_settings_must_come_in_pairs() {
        let file = config_file("tls_cert = \"cert.pem\"\n");
        let cli = load(&["--config", file.path().to_str().unwrap(), "serve"]).unwrap();
        let error = serve_args(&cli).tls().expect_err("a key is missing");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}
