//! leadpipe-bench: a loopback load driver for the leadpipe gRPC API.
//!
//! It either starts its own leadpipe server in-process (the default) or drives one that is
//! already running on a loopback address (`--target`). For every scenario × client-count cell it
//! warms up, then measures for a bounded time (and optionally a bounded number of requests), and
//! reports throughput and HdrHistogram latencies. See `--help` for the details.
//!
//! Design notes:
//!
//! * Connections. Every client task owns one tonic `Channel`, that is one HTTP/2 connection.
//!   The channels are opened once, before seeding, and client `i` uses channel `i` in every cell,
//!   so connection setup is never measured. A single shared channel would funnel every request
//!   through one `tower::Buffer` and one TCP connection and measure the client more than the
//!   server; one connection per client is also what independent callers look like.
//!   WatchStageChanges subscribers share a few channels instead (`--streams-per-channel`,
//!   default 100; the server allows 200 concurrent streams per connection), since HTTP/2
//!   multiplexes long-lived streams well.
//! * Runtimes. The in-process server runs in a tokio runtime of its own, on a dedicated OS thread
//!   (`--server-threads` workers); the driver runs in a separate runtime (`--client-threads`
//!   workers). They share nothing but the loopback socket. With `--pin-server-cpu` and
//!   `--pin-client-cpu` each runtime's threads (and the thread that starts it) are pinned to one
//!   CPU with `core_affinity`; threads spawned later from pinned threads (for example sqlx's
//!   SQLite connection workers) inherit the mask on Linux. To pin a `--target` server, start that
//!   server under `taskset -c N`.
//! * Latency is measured around each awaited call (request encode → response decode) on the
//!   driver's monotonic clock, at microsecond resolution. Only successful calls are recorded and
//!   counted towards throughput; failures are counted by gRPC code.
//! * Commit-to-delivery latency of WatchStageChanges is `receive wall time − event.change_time`
//!   (same host, same clock), recorded for events whose change_time falls in the measured window.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use leadpipe::config::DatabaseArgs;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::server::{App, Settings};
use leadpipe::store::SqliteSync;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds `authorization: Bearer <key>` to every call when --api-key is given.
#[derive(Clone)]
struct Auth(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

static AUTH: std::sync::OnceLock<Auth> = std::sync::OnceLock::new();

type AuthChannel = tonic::service::interceptor::InterceptedService<Channel, Auth>;

fn auth() -> Auth {
    AUTH.get().cloned().unwrap_or(Auth(None))
}

fn lead_client(channel: &Channel) -> LeadServiceClient<AuthChannel> {
    LeadServiceClient::with_interceptor(channel.clone(), auth())
}

fn health_client(channel: &Channel) -> HealthClient<AuthChannel> {
    HealthClient::with_interceptor(channel.clone(), auth())
}

/// Highest latency the histograms track, in microseconds (larger values saturate).
const HIST_MAX_US: u64 = 120_000_000;
/// The filter of the `list` scenario. Seeded leads are created in the default pipeline's first
/// stage, so it always matches (and `move` leads pass through it too).
const LIST_FILTER: &str = "stage = \"lead_generation\"";
const STAGE_A: &str = "lead_generation";
const STAGE_B: &str = "qualification";

#[derive(Debug, Parser)]
#[command(
    name = "leadpipe-bench",
    version,
    about = "Loopback load driver for leadpipe: throughput, latency percentiles and stream delivery lag.",
    long_about = "Loopback load driver for leadpipe.\n\n\
By default it starts a leadpipe server in-process (own tokio runtime on its own OS thread) on a \
fresh SQLite database in a temporary directory, seeds leads, and then runs every selected \
scenario at every client count: a warmup, then a measured period bounded by --duration and, \
optionally, --max-requests. Each client task owns one gRPC channel (one HTTP/2 connection), \
opened before seeding and reused across cells.\n\n\
Scenarios:\n  \
health  grpc.health.v1.Health/Check (the baseline of the ratio column; always measured)\n  \
get     GetLead of a random seeded lead\n  \
create  CreateLead of a small lead\n  \
list    ListLeads, page_size 50, filter `stage = \"lead_generation\"`\n  \
move    MoveLead without etag: every client owns --move-leads-per-client leads (contact set) \
and moves them back and forth between lead_generation and qualification\n  \
mixed   60% get, 20% list, 10% create, 10% move\n\n\
With --subscribers K, K WatchStageChanges streams (new events only) are opened before the \
move scenario and read throughout it; commit-to-delivery latency (receive wall time minus \
event.change_time) is reported per cell. --compare-streaming runs move twice, with 0 and with K \
subscribers (default 100), and prints both throughputs and their ratio.\n\n\
Results go to stdout as Markdown tables; progress goes to stderr; --json writes them as JSON.",
    after_help = "Examples:\n  \
leadpipe-bench --clients 1,4 --duration 1s --warmup 200ms --seed-leads 50 --subscribers 10 --compare-streaming\n  \
leadpipe-bench --database-url postgres://postgres@127.0.0.1:5432/postgres --fresh-postgres-db\n  \
leadpipe-bench --target 127.0.0.1:50051 --scenario get,list --clients 8\n  \
leadpipe-bench --pin-server-cpu 0 --pin-client-cpu 1 --json bench.json"
)]
struct Cli {
    /// Drive an already running server at this loopback address (for example 127.0.0.1:50051)
    /// instead of starting one in-process. Non-loopback addresses are refused. Seeding writes
    /// leads into that server's database.
    #[arg(long, value_name = "ADDR", conflicts_with_all = [
        "database_url", "fresh_postgres_db", "keep_fresh_db", "pin_server_cpu",
        "server_threads", "db_pool_size", "server_rate_limit",
    ])]
    target: Option<String>,

    /// Database of the in-process server: `sqlite://FILE` or `postgres://USER@HOST:PORT/DB`.
    /// Default: a fresh SQLite file in a temporary directory, removed on exit.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// Create a new database `leadpipe_bench_<uuid>` on the PostgreSQL server of --database-url
    /// (which is used only to connect for CREATE DATABASE) and run the server on it. The
    /// database is dropped on exit unless --keep-fresh-db is given.
    #[arg(long, requires = "database_url")]
    fresh_postgres_db: bool,

    /// Keep the database made by --fresh-postgres-db instead of dropping it on exit.
    #[arg(long, requires = "fresh_postgres_db")]
    keep_fresh_db: bool,

    /// SQLite durability of the in-process server (as LEADPIPE_SQLITE_SYNCHRONOUS): `full`
    /// survives power loss, `normal` only process crashes but commits faster.
    #[arg(long, value_enum, default_value = "full")]
    sqlite_synchronous: SqliteSync,

    /// Database connection pool size of the in-process server.
    #[arg(long, value_name = "N")]
    db_pool_size: Option<u32>,

    /// Per-tenant rate limit of the in-process server, in requests per second. 0 (the
    /// default here) turns it off so that it does not cap the measurement; `leadpipe serve`
    /// defaults to 2000. A --target server applies its own limit: throttled calls show up as
    /// RESOURCE_EXHAUSTED errors.
    #[arg(long, default_value_t = 0, value_name = "N")]
    server_rate_limit: u32,

    /// API key sent as `authorization: Bearer <KEY>` on every call, for a --target server that
    /// requires authentication. The in-process server runs without keys (loopback, none exist).
    #[arg(
        long,
        env = "LEADPIPE_BENCH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,

    /// Scenarios to run, repeatable or comma-separated. `health` is always measured as the
    /// baseline of the ratio column.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    scenario: Vec<ScenarioArg>,

    /// Client counts (concurrent request loops, one channel each), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,64",
        value_name = "N,.."
    )]
    clients: Vec<usize>,

    /// Measured time per scenario × clients cell, e.g. 5s or 500ms.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Unmeasured warmup before each cell's measured period.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Stop a cell after this many measured requests (over all its clients), even if
    /// --duration has not elapsed.
    #[arg(long, value_name = "N")]
    max_requests: Option<u64>,

    /// Per-request deadline; a request that exceeds it counts as an error (`Timeout`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,

    /// Leads created (with CreateLead) before measuring; `get` reads them.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    seed_leads: usize,

    /// Concurrent CreateLead calls while seeding.
    #[arg(long, default_value_t = 32, value_name = "N")]
    seed_concurrency: usize,

    /// Leads each client owns in the `move` and `mixed` scenarios.
    #[arg(long, default_value_t = 4, value_name = "N")]
    move_leads_per_client: usize,

    /// Open this many WatchStageChanges streams while the `move` scenario runs and report
    /// commit-to-delivery latency.
    #[arg(long, value_name = "K")]
    subscribers: Option<usize>,

    /// Run `move` twice, with 0 subscribers and with --subscribers (default 100), and report
    /// both throughputs and their ratio.
    #[arg(long)]
    compare_streaming: bool,

    /// WatchStageChanges streams per shared subscriber channel.
    #[arg(long, default_value_t = 100, value_name = "N")]
    streams_per_channel: usize,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Pin the in-process server's runtime threads to this CPU.
    #[arg(long, value_name = "CPU")]
    pin_server_cpu: Option<usize>,

    /// Pin the driver's runtime threads (clients and subscribers) to this CPU.
    #[arg(long, value_name = "CPU")]
    pin_client_cpu: Option<usize>,

    /// Worker threads of the in-process server's runtime. Default: 1 when pinned, else the
    /// number of CPUs.
    #[arg(long, value_name = "N")]
    server_threads: Option<usize>,

    /// Worker threads of the driver's runtime. Default: 1 when pinned, else the number of CPUs.
    #[arg(long, value_name = "N")]
    client_threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum ScenarioArg {
    Health,
    Get,
    Create,
    List,
    Move,
    Mixed,
    All,
}

type Scenario = ScenarioArg;

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Get => "get",
            Scenario::Create => "create",
            Scenario::List => "list",
            Scenario::Move => "move",
            Scenario::Mixed => "mixed",
            Scenario::All => "all",
        }
    }
}

/// One request kind.
#[derive(Debug, Clone, Copy)]
enum Op {
    Health,
    Get,
    Create,
    List,
    Move,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("leadpipe-bench: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The validated plan.
struct Plan {
    scenarios: Vec<Scenario>,
    clients: Vec<usize>,
    /// Subscriber counts the `move` scenario runs with, in order.
    move_variants: Vec<usize>,
}

fn plan(cli: &Cli) -> Result<Plan, BoxError> {
    if cli.clients.is_empty() || cli.clients.contains(&0) {
        return Err("--clients needs one or more counts above zero".into());
    }
    if cli.duration.is_zero() {
        return Err("--duration must be above zero".into());
    }
    if cli.max_requests == Some(0) {
        return Err("--max-requests must be above zero".into());
    }
    if cli.streams_per_channel == 0 || cli.seed_concurrency == 0 {
        return Err("--streams-per-channel and --seed-concurrency must be above zero".into());
    }
    if cli.move_leads_per_client == 0 {
        return Err("--move-leads-per-client must be above zero".into());
    }
    let mut scenarios: Vec<Scenario> = if cli.scenario.contains(&Scenario::All) {
        vec![
            Scenario::Health,
            Scenario::Get,
            Scenario::Create,
            Scenario::List,
            Scenario::Move,
            Scenario::Mixed,
        ]
    } else {
        cli.scenario.clone()
    };
    scenarios.push(Scenario::Health);
    if cli.compare_streaming || cli.subscribers.is_some() {
        scenarios.push(Scenario::Move);
    }
    scenarios.sort();
    scenarios.dedup();
    let mut clients = cli.clients.clone();
    clients.dedup();
    let move_variants = match (cli.compare_streaming, cli.subscribers) {
        (true, k) => vec![0, k.unwrap_or(100)],
        (false, Some(k)) => vec![k],
        (false, None) => vec![0],
    };
    Ok(Plan {
        scenarios,
        clients,
        move_variants,
    })
}

fn real_main(cli: Cli) -> Result<(), BoxError> {
    let plan = plan(&cli)?;
    let key = match &cli.api_key {
        Some(key) => Some(
            format!("Bearer {key}")
                .parse()
                .map_err(|_| "--api-key: not a valid metadata value")?,
        ),
        None => None,
    };
    let _ = AUTH.set(Auth(key));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Read the usable CPUs before anything is pinned (the list follows the calling thread's mask).
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let find_core = |cpu: usize, flag: &str| {
        cores
            .iter()
            .copied()
            .find(|c| c.id == cpu)
            .ok_or_else(|| -> BoxError {
                let ids: Vec<_> = cores.iter().map(|c| c.id).collect();
                format!("{flag} {cpu}: not a usable CPU (usable: {ids:?})").into()
            })
    };
    let server_core = cli
        .pin_server_cpu
        .map(|cpu| find_core(cpu, "--pin-server-cpu"))
        .transpose()?;
    let client_core = cli
        .pin_client_cpu
        .map(|cpu| find_core(cpu, "--pin-client-cpu"))
        .transpose()?;
    let client_threads = cli
        .client_threads
        .unwrap_or(if client_core.is_some() { 1 } else { cpus })
        .max(1);
    let server_threads = cli
        .server_threads
        .unwrap_or(if server_core.is_some() { 1 } else { cpus })
        .max(1);

    if let Some(core) = client_core {
        core_affinity::set_for_current(core);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(client_threads)
        .thread_name("bench-client")
        .enable_all();
    if let Some(core) = client_core {
        builder.on_thread_start(move || {
            core_affinity::set_for_current(core);
        });
    }
    let runtime = builder.build()?;

    // Where to send requests, and what to clean up afterwards.
    let mut server = None;
    let mut fresh_db: Option<(String, String)> = None; // (admin URL, database name)
    let mut _sqlite_dir = None;
    let (addr, environment) = if let Some(target) = &cli.target {
        let addr = resolve_loopback(target)?;
        (
            addr,
            Environment {
                mode: "target".into(),
                target: addr.to_string(),
                backend: "unknown (external server)".into(),
                database: None,
                sqlite_synchronous: None,
                server_threads: None,
                client_threads,
                pin_server_cpu: None,
                pin_client_cpu: cli.pin_client_cpu,
                cpus,
                server_rate_limit: None,
            },
        )
    } else {
        let database_url = match &cli.database_url {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("leadpipe-bench")
                    .tempdir()?;
                let url = format!("sqlite://{}/leadpipe.db", dir.path().display());
                _sqlite_dir = Some(dir);
                url
            }
            Some(url) if cli.fresh_postgres_db => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err("--fresh-postgres-db needs a postgres:// --database-url".into());
                }
                let (db_url, name) = runtime.block_on(create_fresh_postgres_db(url))?;
                eprintln!("created database {name}");
                fresh_db = Some((url.clone(), name));
                db_url
            }
            Some(url) => url.clone(),
        };
        let args = DatabaseArgs {
            database_url: database_url.clone(),
            db_pool_size: cli.db_pool_size.unwrap_or(8),
            sqlite_synchronous: cli.sqlite_synchronous,
        };
        let is_sqlite = database_url.starts_with("sqlite:");
        let mut settings = Settings::new(args.store_config());
        settings.limits.rate_limit_per_second = cli.server_rate_limit;
        if cli.server_rate_limit > 0 {
            settings.limits.rate_limit_burst = cli.server_rate_limit.saturating_mul(2);
        }
        let most_streams = plan.move_variants.iter().copied().max().unwrap_or(0);
        settings.limits.max_streams_per_tenant = settings
            .limits
            .max_streams_per_tenant
            .max(most_streams + 16);
        let handle = start_server(settings, server_threads, server_core)?;
        let addr = handle.addr;
        server = Some(handle);
        (
            addr,
            Environment {
                mode: "in-process".into(),
                target: addr.to_string(),
                backend: if is_sqlite { "sqlite" } else { "postgres" }.into(),
                database: Some(redact(&database_url)),
                sqlite_synchronous: is_sqlite.then(|| {
                    match cli.sqlite_synchronous {
                        SqliteSync::Full => "full",
                        SqliteSync::Normal => "normal",
                    }
                    .to_string()
                }),
                server_threads: Some(server_threads),
                client_threads,
                pin_server_cpu: cli.pin_server_cpu,
                pin_client_cpu: cli.pin_client_cpu,
                cpus,
                server_rate_limit: Some(cli.server_rate_limit),
            },
        )
    };

    let result = runtime.block_on(run(&cli, &plan, addr));

    if let Some(handle) = server {
        eprintln!("stopping the in-process server");
        if let Err(error) = handle.stop() {
            eprintln!("warning: server: {error}");
        }
    }
    if let Some((admin_url, name)) = &fresh_db {
        if cli.keep_fresh_db {
            eprintln!("kept database {name}");
        } else if let Err(error) = runtime.block_on(drop_postgres_db(admin_url, name)) {
            eprintln!("warning: could not drop database {name}: {error}");
        } else {
            eprintln!("dropped database {name}");
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(5));

    let cells = result?;
    let report = Report::new(&cli, environment, cells);
    print!("{}", report.markdown());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Resolves `--target` and refuses anything but loopback.
fn resolve_loopback(target: &str) -> Result<SocketAddr, BoxError> {
    let bare = target.strip_prefix("http://").unwrap_or(target);
    let bare = bare.trim_end_matches('/');
    let addrs: Vec<SocketAddr> = bare
        .to_socket_addrs()
        .map_err(|e| format!("--target {target}: {e} (expected HOST:PORT)"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--target {target}: resolves to no address").into());
    }
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "--target {target}: {bad} is not a loopback address; leadpipe-bench only drives \
             loopback servers"
        )
        .into());
    }
    Ok(addrs[0])
}

/// Hides a password in a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Splits `postgres://…/DB?QUERY` into (`postgres://…`, `?QUERY` or "").
fn postgres_base(url: &str) -> Result<(String, String), BoxError> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = path.find("://").map_or(0, |i| i + 3);
    match path[scheme_end..].rfind('/') {
        Some(slash) => Ok((path[..scheme_end + slash].to_owned(), query)),
        None => Ok((path.to_owned(), query)),
    }
}

async fn create_fresh_postgres_db(admin_url: &str) -> Result<(String, String), BoxError> {
    use sea_orm::ConnectionTrait;
    let name = format!("leadpipe_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = sea_orm::Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let _ = admin.close().await;
    let (base, query) = postgres_base(admin_url)?;
    Ok((format!("{base}/{name}{query}"), name))
}

async fn drop_postgres_db(admin_url: &str, name: &str) -> Result<(), BoxError> {
    use sea_orm::ConnectionTrait;
    let admin = sea_orm::Database::connect(admin_url).await?;
    let result = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    let _ = admin.close().await;
    result?;
    Ok(())
}

// ---- in-process server -------------------------------------------------------------------

struct ServerHandle {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl ServerHandle {
    fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| "server thread panicked".to_string())?
    }
}

/// Starts the server in a tokio runtime of its own on a dedicated OS thread, listening on
/// 127.0.0.1 with an ephemeral port.
fn start_server(
    settings: Settings,
    threads: usize,
    core: Option<core_affinity::CoreId>,
) -> Result<ServerHandle, BoxError> {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("leadpipe-server".into())
        .spawn(move || -> Result<(), String> {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder
                .worker_threads(threads)
                .thread_name("leadpipe-server")
                .enable_all();
            if let Some(core) = core {
                builder.on_thread_start(move || {
                    core_affinity::set_for_current(core);
                });
            }
            let runtime = match builder.build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = addr_tx.send(Err(error.to_string()));
                    return Err(error.to_string());
                }
            };
            let result = runtime.block_on(async move {
                let app = match App::build(&settings).await {
                    Ok(app) => app,
                    Err(error) => {
                        let message = format!("could not start the server: {error}");
                        let _ = addr_tx.send(Err(message.clone()));
                        return Err(message);
                    }
                };
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = addr_tx.send(Err(error.to_string()));
                        return Err(error.to_string());
                    }
                };
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let _ = addr_tx.send(Ok(addr));
                app.serve(listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
            result
        })?;
    match addr_rx.recv() {
        Ok(Ok(addr)) => Ok(ServerHandle {
            addr,
            stop: stop_tx,
            thread,
        }),
        Ok(Err(message)) => {
            let _ = thread.join();
            Err(message.into())
        }
        Err(_) => {
            let _ = thread.join();
            Err("the server thread ended before listening".into())
        }
    }
}

// ---- the run -----------------------------------------------------------------------------

/// A lead a `move` client owns, and whether it is in `qualification` now.
struct MoveLead {
    id: String,
    in_b: AtomicBool,
}

/// Data every client of a cell shares.
struct Fixture {
    seeded: Vec<String>,
    move_leads: Vec<MoveLead>,
    per_client: usize,
}

async fn connect(addr: SocketAddr) -> Result<Channel, BoxError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let mut last = None;
    for _ in 0..50 {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "could not connect to {addr}: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )
    .into())
}

async fn run(cli: &Cli, plan: &Plan, addr: SocketAddr) -> Result<Vec<CellResult>, BoxError> {
    let max_clients = *plan.clients.iter().max().expect("clients is not empty");
    eprintln!("connecting {max_clients} client channel(s) to {addr}");
    let channels: Vec<Channel> =
        futures::future::try_join_all((0..max_clients).map(|_| connect(addr))).await?;

    let health = health_client(&channels[0])
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    if health.status != ServingStatus::Serving as i32 {
        return Err(format!("the server is not SERVING (status {})", health.status).into());
    }

    let started = Instant::now();
    let seeded = create_leads(
        &channels,
        cli.seed_leads,
        cli.seed_concurrency,
        false,
        "seed",
    )
    .await?;
    eprintln!("seeded {} leads in {:.2?}", seeded.len(), started.elapsed());
    let needs_move = plan
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::Move | Scenario::Mixed));
    let move_ids = if needs_move {
        create_leads(
            &channels,
            max_clients * cli.move_leads_per_client,
            cli.seed_concurrency,
            true,
            "mover",
        )
        .await?
    } else {
        Vec::new()
    };
    let needs_seeded = plan
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::Get | Scenario::Mixed));
    if needs_seeded && seeded.is_empty() {
        return Err("the get and mixed scenarios need --seed-leads above zero".into());
    }
    if plan
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::List | Scenario::Mixed))
    {
        let page = lead_client(&channels[0])
            .list_leads(list_request())
            .await?
            .into_inner();
        eprintln!(
            "list filter {LIST_FILTER} matches {} leads ({} per page, {} bytes)",
            page.total_size,
            page.leads.len(),
            prost::Message::encoded_len(&page)
        );
    }
    let fixture = Arc::new(Fixture {
        seeded,
        move_leads: move_ids
            .into_iter()
            .map(|id| MoveLead {
                id,
                in_b: AtomicBool::new(false),
            })
            .collect(),
        per_client: cli.move_leads_per_client,
    });

    let mut cells = Vec::new();
    for &scenario in &plan.scenarios {
        let variants = if scenario == Scenario::Move {
            plan.move_variants.clone()
        } else {
            vec![0]
        };
        for subscribers in variants {
            let mut subs = if subscribers > 0 {
                eprintln!("opening {subscribers} WatchStageChanges stream(s)");
                Some(
                    Subscribers::open(addr, subscribers, cli.streams_per_channel, &channels[0])
                        .await?,
                )
            } else {
                None
            };
            for &clients in &plan.clients {
                let cell = run_cell(
                    cli,
                    scenario,
                    clients,
                    &channels[..clients],
                    &fixture,
                    subs.as_mut(),
                )
                .await;
                eprintln!(
                    "{:<7} clients={clients:<4} subscribers={subscribers:<4} {:>10.1} req/s  p50 {} µs  p99 {} µs  errors {}",
                    scenario.name(),
                    cell.throughput_rps,
                    cell.latency_us.p50,
                    cell.latency_us.p99,
                    cell.errors
                );
                cells.push(cell);
            }
            if let Some(subs) = subs {
                subs.close().await;
            }
        }
    }
    Ok(cells)
}

fn list_request() -> pb::ListLeadsRequest {
    pb::ListLeadsRequest {
        page_size: 50,
        page_token: String::new(),
        filter: LIST_FILTER.into(),
        order_by: String::new(),
    }
}

fn lead_to_create(label: &str, n: usize, with_contact: bool) -> pb::Lead {
    const OWNERS: [&str; 4] = ["ana", "ben", "chen", "dara"];
    const SOURCES: [&str; 3] = ["web", "referral", "event"];
    pb::Lead {
        title: format!("bench {label} {n}"),
        company: format!("Company {}", n % 97),
        contact_name: if with_contact || n.is_multiple_of(2) {
            format!("Contact {n}")
        } else {
            String::new()
        },
        owner: OWNERS[n % OWNERS.len()].into(),
        source: SOURCES[n % SOURCES.len()].into(),
        amount: Some(pb::Money {
            currency_code: "EUR".into(),
            units: 1000 + (n as i64 % 50) * 250,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Creates `count` leads with bounded concurrency, spread over the channels; returns their ids
/// in creation order.
async fn create_leads(
    channels: &[Channel],
    count: usize,
    concurrency: usize,
    with_contact: bool,
    label: &str,
) -> Result<Vec<String>, BoxError> {
    let results: Vec<Result<String, tonic::Status>> = futures::stream::iter(0..count)
        .map(|n| {
            let mut client = lead_client(&channels[n % channels.len()]);
            let lead = lead_to_create(label, n, with_contact);
            async move {
                client
                    .create_lead(pb::CreateLeadRequest {
                        lead: Some(lead),
                        request_id: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().id)
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|status| format!("creating {label} leads: {status}").into())
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// SplitMix64: a small, fast, good-enough PRNG for picking ids and operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct ClientOutcome {
    histogram: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    last_end: Option<Instant>,
}

struct CellPlan {
    scenario: Scenario,
    measure_start: Instant,
    deadline: Instant,
    max_requests: Option<u64>,
    budget: Arc<AtomicU64>,
    request_timeout: Duration,
}

async fn client_loop(
    channel: Channel,
    fixture: Arc<Fixture>,
    plan: Arc<CellPlan>,
    client: usize,
) -> ClientOutcome {
    let mut leads = lead_client(&channel);
    let mut health = health_client(&channel);
    let mut rng =
        Rng::new(((client as u64 + 1) * 0x1000_0001) ^ unix_micros(SystemTime::now()) as u64);
    let mut outcome = ClientOutcome {
        histogram: new_histogram(),
        ok: 0,
        errors: BTreeMap::new(),
        last_end: None,
    };
    let mut created = 0usize;
    let mut move_turn = 0usize;
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            break;
        }
        let measured = now >= plan.measure_start;
        if measured
            && let Some(max) = plan.max_requests
            && plan.budget.fetch_add(1, Ordering::Relaxed) >= max
        {
            break;
        }
        let op = match plan.scenario {
            Scenario::Health => Op::Health,
            Scenario::Get => Op::Get,
            Scenario::Create => Op::Create,
            Scenario::List => Op::List,
            Scenario::Move => Op::Move,
            Scenario::Mixed | Scenario::All => match rng.below(100) {
                0..60 => Op::Get,
                60..80 => Op::List,
                80..90 => Op::Create,
                _ => Op::Move,
            },
        };
        // For moves: the lead, and the stage it goes to.
        let mover = match op {
            Op::Move => {
                let index = client * fixture.per_client + move_turn % fixture.per_client;
                move_turn += 1;
                Some(&fixture.move_leads[index])
            }
            _ => None,
        };
        let started = Instant::now();
        let call = async {
            match op {
                Op::Health => {
                    let response = health
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await?
                        .into_inner();
                    if response.status == ServingStatus::Serving as i32 {
                        Ok(())
                    } else {
                        Err(tonic::Status::unavailable("NOT_SERVING"))
                    }
                }
                Op::Get => {
                    let id = fixture.seeded[rng.below(fixture.seeded.len())].clone();
                    leads.get_lead(pb::GetLeadRequest { id }).await.map(drop)
                }
                Op::Create => {
                    created += 1;
                    let lead = lead_to_create(&format!("c{client}"), created, false);
                    leads
                        .create_lead(pb::CreateLeadRequest {
                            lead: Some(lead),
                            request_id: String::new(),
                        })
                        .await
                        .map(drop)
                }
                Op::List => leads.list_leads(list_request()).await.map(drop),
                Op::Move => {
                    let lead = mover.expect("a move has a lead");
                    let to = if lead.in_b.load(Ordering::Relaxed) {
                        STAGE_A
                    } else {
                        STAGE_B
                    };
                    let moved = leads
                        .move_lead(pb::MoveLeadRequest {
                            id: lead.id.clone(),
                            stage: to.into(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    lead.in_b.store(moved.stage == STAGE_B, Ordering::Relaxed);
                    Ok(())
                }
            }
        };
        let result = tokio::time::timeout(plan.request_timeout, call).await;
        let ended = Instant::now();
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(status)) => Some(format!("{:?}", status.code())),
            Err(_) => Some("Timeout".to_string()),
        };
        if measured {
            outcome.last_end = Some(ended);
            match &failure {
                None => {
                    outcome.ok += 1;
                    outcome
                        .histogram
                        .saturating_record(micros(ended - started).max(1));
                }
                Some(code) => *outcome.errors.entry(code.clone()).or_default() += 1,
            }
        }
        // After a failed move the lead's stage is unknown: read it back (not measured).
        if failure.is_some()
            && let Some(lead) = mover
            && let Ok(Ok(current)) = tokio::time::timeout(
                plan.request_timeout,
                leads.get_lead(pb::GetLeadRequest {
                    id: lead.id.clone(),
                }),
            )
            .await
        {
            lead.in_b
                .store(current.into_inner().stage == STAGE_B, Ordering::Relaxed);
        }
    }
    outcome
}

async fn run_cell(
    cli: &Cli,
    scenario: Scenario,
    clients: usize,
    channels: &[Channel],
    fixture: &Arc<Fixture>,
    subscribers: Option<&mut Subscribers>,
) -> CellResult {
    let begin = Instant::now();
    let begin_wall = SystemTime::now();
    let measure_start = begin + cli.warmup;
    let plan = Arc::new(CellPlan {
        scenario,
        measure_start,
        deadline: measure_start + cli.duration,
        max_requests: cli.max_requests,
        budget: Arc::new(AtomicU64::new(0)),
        request_timeout: cli.request_timeout,
    });
    if let Some(subs) = &subscribers {
        subs.record_from(unix_micros(begin_wall + cli.warmup));
    }
    let tasks: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(client, channel)| {
            tokio::spawn(client_loop(
                channel.clone(),
                fixture.clone(),
                plan.clone(),
                client,
            ))
        })
        .collect();
    let mut histogram = new_histogram();
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut last_end: Option<Instant> = None;
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                histogram
                    .add(&outcome.histogram)
                    .expect("histograms share bounds");
                ok += outcome.ok;
                for (code, n) in outcome.errors {
                    *errors.entry(code).or_default() += n;
                }
                last_end = last_end.max(outcome.last_end);
            }
            Err(error) => *errors.entry(format!("panic: {error}")).or_default() += 1,
        }
    }
    let seconds = last_end.map_or(0.0, |end| (end - measure_start).as_secs_f64());
    let delivery = match subscribers {
        Some(subs) => Some(subs.harvest().await),
        None => None,
    };
    CellResult {
        scenario: scenario.name().into(),
        clients,
        subscribers: delivery.as_ref().map_or(0, |d| d.streams),
        requests: ok,
        errors: errors.values().sum(),
        errors_by_code: errors,
        measured_seconds: seconds,
        throughput_rps: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
        latency_us: Latency::of(&histogram),
        ratio_vs_health: None,
        delivery,
    }
}

// ---- WatchStageChanges subscribers -------------------------------------------------------

struct SubscriberState {
    /// Events whose change_time (unix µs) is at least this are recorded; i64::MAX: none.
    record_from_us: AtomicI64,
    histograms: Vec<Mutex<Histogram<u64>>>,
    /// Events received in total, recorded or not.
    received: AtomicU64,
    /// Subscribers that have received at least one event.
    live: AtomicUsize,
    /// Recorded deliveries whose receive time preceded change_time (clamped to 0).
    negative: AtomicU64,
    /// Streams that failed or ended.
    broken: AtomicU64,
}

struct Subscribers {
    state: Arc<SubscriberState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    channels: usize,
}

impl Subscribers {
    /// Opens `count` streams (new events only) over ceil(count / per_channel) shared channels
    /// and waits until every one of them delivers an event.
    async fn open(
        addr: SocketAddr,
        count: usize,
        per_channel: usize,
        probe_channel: &Channel,
    ) -> Result<Self, BoxError> {
        let state = Arc::new(SubscriberState {
            record_from_us: AtomicI64::new(i64::MAX),
            histograms: (0..count).map(|_| Mutex::new(new_histogram())).collect(),
            received: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            negative: AtomicU64::new(0),
            broken: AtomicU64::new(0),
        });
        let channel_count = count.div_ceil(per_channel);
        let channels =
            futures::future::try_join_all((0..channel_count).map(|_| connect(addr))).await?;
        let opened: Vec<_> = futures::future::join_all((0..count).map(|i| {
            let mut client = lead_client(&channels[i / per_channel]);
            async move {
                client
                    .watch_stage_changes(pb::WatchStageChangesRequest::default())
                    .await
                    .map(|r| r.into_inner())
            }
        }))
        .await;
        let mut tasks = Vec::with_capacity(count);
        for (i, stream) in opened.into_iter().enumerate() {
            let mut stream =
                stream.map_err(|status| format!("opening WatchStageChanges: {status}"))?;
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                let mut first = true;
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            let now = unix_micros(SystemTime::now());
                            state.received.fetch_add(1, Ordering::Relaxed);
                            if first {
                                first = false;
                                state.live.fetch_add(1, Ordering::Relaxed);
                            }
                            let Some(time) = event.change_time else {
                                continue;
                            };
                            let committed = time.seconds * 1_000_000 + i64::from(time.nanos) / 1000;
                            if committed < state.record_from_us.load(Ordering::Relaxed) {
                                continue;
                            }
                            let mut lag = now - committed;
                            if lag < 0 {
                                state.negative.fetch_add(1, Ordering::Relaxed);
                                lag = 0;
                            }
                            state.histograms[i]
                                .lock()
                                .expect("histogram lock")
                                .saturating_record(lag.max(1) as u64);
                        }
                        Ok(None) | Err(_) => {
                            state.broken.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }));
        }
        let subscribers = Self {
            state,
            tasks,
            channels: channel_count,
        };
        // Streams deliver new events only, and a stream may be registered on the server a
        // moment after its headers arrive: create probe leads until every stream has seen one.
        let mut client = lead_client(probe_channel);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut probes = 0;
        while subscribers.state.live.load(Ordering::Relaxed) < count {
            if Instant::now() >= deadline || subscribers.state.broken.load(Ordering::Relaxed) > 0 {
                let live = subscribers.state.live.load(Ordering::Relaxed);
                subscribers.close().await;
                return Err(
                    format!("only {live} of {count} subscriber streams became live").into(),
                );
            }
            probes += 1;
            client
                .create_lead(pb::CreateLeadRequest {
                    lead: Some(lead_to_create("probe", probes, false)),
                    request_id: String::new(),
                })
                .await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(subscribers)
    }

    fn record_from(&self, unix_us: i64) {
        for histogram in &self.state.histograms {
            histogram.lock().expect("histogram lock").reset();
        }
        self.state.record_from_us.store(unix_us, Ordering::Relaxed);
    }

    /// Waits until deliveries have settled (no event for 200 ms, at most 10 s), stops
    /// recording and returns the cell's delivery statistics.
    async fn harvest(&mut self) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = self.state.received.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.state.received.load(Ordering::Relaxed);
            if now == seen || Instant::now() >= deadline {
                break;
            }
            seen = now;
        }
        self.state.record_from_us.store(i64::MAX, Ordering::Relaxed);
        let mut total = new_histogram();
        for histogram in &self.state.histograms {
            let mut histogram = histogram.lock().expect("histogram lock");
            total.add(&*histogram).expect("histograms share bounds");
            histogram.reset();
        }
        Delivery {
            streams: self.tasks.len(),
            channels: self.channels,
            events: total.len(),
            latency_us: Latency::of(&total),
            clamped_negative: self.state.negative.swap(0, Ordering::Relaxed),
            broken_streams: self.state.broken.load(Ordering::Relaxed),
        }
    }

    async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

// ---- results -----------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
            };
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Delivery {
    /// Open WatchStageChanges streams.
    streams: usize,
    /// Channels (HTTP/2 connections) they share.
    channels: usize,
    /// Deliveries recorded (events × streams) in the measured window.
    events: u64,
    /// Commit-to-delivery latency, µs.
    latency_us: Latency,
    clamped_negative: u64,
    broken_streams: u64,
}

#[derive(Debug, Clone, Serialize)]
struct CellResult {
    scenario: String,
    clients: usize,
    subscribers: usize,
    /// Successful requests in the measured window.
    requests: u64,
    errors: u64,
    errors_by_code: BTreeMap<String, u64>,
    measured_seconds: f64,
    /// Successful requests per second.
    throughput_rps: f64,
    latency_us: Latency,
    /// throughput / health throughput at the same client count.
    ratio_vs_health: Option<f64>,
    delivery: Option<Delivery>,
}

#[derive(Debug, Serialize)]
struct Environment {
    mode: String,
    target: String,
    backend: String,
    database: Option<String>,
    sqlite_synchronous: Option<String>,
    server_threads: Option<usize>,
    client_threads: usize,
    pin_server_cpu: Option<usize>,
    pin_client_cpu: Option<usize>,
    cpus: usize,
    /// The in-process server's per-tenant rate limit (0: off).
    server_rate_limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct RunSettings {
    clients: Vec<usize>,
    duration_ms: u128,
    warmup_ms: u128,
    max_requests: Option<u64>,
    request_timeout_ms: u128,
    seed_leads: usize,
    move_leads_per_client: usize,
    subscribers: Option<usize>,
    compare_streaming: bool,
    streams_per_channel: usize,
    list_filter: &'static str,
    mixed: &'static str,
}

#[derive(Debug, Serialize)]
struct Comparison {
    clients: usize,
    subscribers: usize,
    throughput_without_rps: f64,
    throughput_with_rps: f64,
    /// with / without.
    ratio: f64,
    delivery_p50_us: u64,
    delivery_p99_us: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    version: &'static str,
    environment: Environment,
    settings: RunSettings,
    cells: Vec<CellResult>,
    streaming_comparison: Vec<Comparison>,
}

impl Report {
    fn new(cli: &Cli, environment: Environment, mut cells: Vec<CellResult>) -> Self {
        let health: BTreeMap<usize, f64> = cells
            .iter()
            .filter(|c| c.scenario == "health")
            .map(|c| (c.clients, c.throughput_rps))
            .collect();
        for cell in &mut cells {
            cell.ratio_vs_health = health
                .get(&cell.clients)
                .filter(|h| **h > 0.0)
                .map(|h| cell.throughput_rps / h);
        }
        let mut streaming_comparison = Vec::new();
        if cli.compare_streaming {
            for without in cells
                .iter()
                .filter(|c| c.scenario == "move" && c.subscribers == 0)
            {
                if let Some(with) = cells.iter().find(|c| {
                    c.scenario == "move" && c.subscribers > 0 && c.clients == without.clients
                }) {
                    let delivery = with.delivery.as_ref();
                    streaming_comparison.push(Comparison {
                        clients: without.clients,
                        subscribers: with.subscribers,
                        throughput_without_rps: without.throughput_rps,
                        throughput_with_rps: with.throughput_rps,
                        ratio: if without.throughput_rps > 0.0 {
                            with.throughput_rps / without.throughput_rps
                        } else {
                            0.0
                        },
                        delivery_p50_us: delivery.map_or(0, |d| d.latency_us.p50),
                        delivery_p99_us: delivery.map_or(0, |d| d.latency_us.p99),
                    });
                }
            }
        }
        Self {
            tool: "leadpipe-bench",
            version: env!("CARGO_PKG_VERSION"),
            environment,
            settings: RunSettings {
                clients: cli.clients.clone(),
                duration_ms: cli.duration.as_millis(),
                warmup_ms: cli.warmup.as_millis(),
                max_requests: cli.max_requests,
                request_timeout_ms: cli.request_timeout.as_millis(),
                seed_leads: cli.seed_leads,
                move_leads_per_client: cli.move_leads_per_client,
                subscribers: cli.subscribers,
                compare_streaming: cli.compare_streaming,
                streams_per_channel: cli.streams_per_channel,
                list_filter: LIST_FILTER,
                mixed: "60% get, 20% list, 10% create, 10% move",
            },
            cells,
            streaming_comparison,
        }
    }

    fn markdown(&self) -> String {
        use std::fmt::Write;
        let e = &self.environment;
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out, "## leadpipe-bench results\n");
        let server = match (&e.database, &e.sqlite_synchronous) {
            (Some(db), Some(sync)) => {
                format!("{}, {} (synchronous={sync}), {db}", e.mode, e.backend)
            }
            (Some(db), None) => format!("{}, {}, {db}", e.mode, e.backend),
            _ => format!("{} {}", e.mode, e.target),
        };
        let limit = match e.server_rate_limit {
            Some(0) => "; rate limit off".to_string(),
            Some(n) => format!("; rate limit {n}/s"),
            None => String::new(),
        };
        let _ = writeln!(out, "- server: {server}{limit}");
        let pin =
            |p: Option<usize>| p.map_or_else(|| "unpinned".to_string(), |c| format!("CPU {c}"));
        let _ = writeln!(
            out,
            "- threads: server {} ({}), client {} ({}); {} CPUs",
            e.server_threads
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            pin(e.pin_server_cpu),
            e.client_threads,
            pin(e.pin_client_cpu),
            e.cpus
        );
        let _ = writeln!(
            out,
            "- per cell: warmup {} ms, measured {} ms{}; seeded leads {}; one channel per client\n",
            s.warmup_ms,
            s.duration_ms,
            s.max_requests
                .map_or_else(String::new, |n| format!(" or {n} requests")),
            s.seed_leads
        );
        let _ = writeln!(
            out,
            "| scenario | clients | subs | requests | errors | req/s | p50 µs | p99 µs | p99.9 µs | ratio vs health | delivery p50 µs | delivery p99 µs |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for c in &self.cells {
            let (d50, d99) = c.delivery.as_ref().map_or_else(
                || ("-".to_string(), "-".to_string()),
                |d| (d.latency_us.p50.to_string(), d.latency_us.p99.to_string()),
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {d50} | {d99} |",
                c.scenario,
                c.clients,
                c.subscribers,
                c.requests,
                c.errors,
                c.throughput_rps,
                c.latency_us.p50,
                c.latency_us.p99,
                c.latency_us.p999,
                c.ratio_vs_health
                    .map_or_else(|| "-".to_string(), |r| format!("{r:.3}")),
            );
        }
        let errors: Vec<String> = self
            .cells
            .iter()
            .filter(|c| c.errors > 0)
            .map(|c| {
                format!(
                    "{}@{}{}: {:?}",
                    c.scenario,
                    c.clients,
                    if c.subscribers > 0 {
                        format!("+{}subs", c.subscribers)
                    } else {
                        String::new()
                    },
                    c.errors_by_code
                )
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "\nErrors by code: {}", errors.join("; "));
        }
        if !self.streaming_comparison.is_empty() {
            let _ = writeln!(
                out,
                "\n### move with and without WatchStageChanges subscribers\n"
            );
            let _ = writeln!(
                out,
                "| clients | subs | req/s without | req/s with | ratio with/without | delivery p50 µs | delivery p99 µs |"
            );
            let _ = writeln!(out, "|--:|--:|--:|--:|--:|--:|--:|");
            for c in &self.streaming_comparison {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.1} | {:.3} | {} | {} |",
                    c.clients,
                    c.subscribers,
                    c.throughput_without_rps,
                    c.throughput_with_rps,
                    c.ratio,
                    c.delivery_p50_us,
                    c.delivery_p99_us
                );
            }
        }
        let broken: u64 = self
            .cells
            .iter()
            .filter_map(|c| c.delivery.as_ref())
            .map(|d| d.broken_streams)
            .max()
            .unwrap_or(0);
        if broken > 0 {
            let _ = writeln!(
                out,
                "\nwarning: {broken} subscriber stream(s) broke during the run"
            );
        }
        out
    }
}
