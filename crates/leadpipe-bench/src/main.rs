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
//!   default 100), since HTTP/2 multiplexes long-lived streams well. The server sets no limit
//!   of streams per connection; its per-tenant stream limit is raised for the servers the
//!   driver starts.
//! * Seeding goes through ImportLeads (one client stream), then ListLeads by a per-run label
//!   gives back the ids, since ImportLeads answers with counts only.
//! * Server memory is measured only when the server is a child process (`--spawn-server`): an
//!   in-process server shares the driver's heap.
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
use hdrhistogram::Histogram;
use leadpipe::config::DatabaseArgs;
use leadpipe::config::Synchronous;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::server::{App, Settings};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// mimalloc rather than glibc malloc: decoding rows and encoding replies allocate many small,
/// short-lived buffers across threads, which glibc serves slowly (BENCHMARKS.md, "The allocator change").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod analytics;
mod fanout;
mod import_stall;
mod report;
mod scenarios;
mod servers;
mod subscribers;

use analytics::*;
use fanout::*;
use import_stall::*;
use report::*;
use scenarios::*;
use servers::*;
use subscribers::*;

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
fresh SQLite database in a temporary directory, seeds leads (one ImportLeads stream), and then runs every selected \
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
update  UpdateLead without etag of the same leads, setting a new amount each time\n  \
mixed   60% get, 20% list, 10% create, 10% move\n\n\
With --subscribers K, K WatchStageChanges streams (new events only) are opened before the \
move scenario and read throughout it; commit-to-delivery latency (receive wall time minus \
event.change_time) is reported per cell. --compare-streaming runs move twice, with 0 and with K \
subscribers (default 100), and prints both throughputs and their ratio.\n\n\
Two further modes replace the scenario table. --fanout K,.. opens K idle subscribers on a fresh \
server per K and drives moves at --move-rate, reporting delivery latency over all deliveries, \
and with --slow-subscriber how far a subscriber that pauses after each event falls behind and \
whether it catches up without loss. --analytics N,.. imports N synthetic leads with history \
into a fresh database per N and times the analytics RPCs beside bare SQL aggregates. \
--import-stall N,.. measures MoveLead of a tenant without and then during an ImportLeads of N \
leads with history into it, on a fresh database per N and client count. \
--spawn-server runs the server as a child process so that its RSS is reported.\n\n\
Results go to stdout as Markdown tables; progress goes to stderr; --json writes them as JSON.",
    after_help = "Examples:\n  \
leadpipe-bench --clients 1,4 --duration 1s --warmup 200ms --seed-leads 50 --subscribers 10 --compare-streaming\n  \
leadpipe-bench --database-url postgres://postgres@127.0.0.1:5432/postgres --fresh-postgres-db\n  \
leadpipe-bench --target 127.0.0.1:50051 --scenario get,list --clients 8\n  \
leadpipe-bench --pin-server-cpu 0 --pin-client-cpu 1 --json bench.json\n  \
leadpipe-bench --spawn-server --fanout 1000,10000 --move-rate 500 --slow-subscriber --duration 10s\n  \
leadpipe-bench --analytics 10000,100000,1000000"
)]
struct Cli {
    /// Drive an already running server at this loopback address (for example 127.0.0.1:50051)
    /// instead of starting one in-process. Non-loopback addresses are refused. Seeding writes
    /// leads into that server's database.
    #[arg(long, value_name = "ADDR", conflicts_with_all = [
        "database_url", "fresh_postgres_db", "keep_fresh_db", "pin_server_cpu",
        "server_threads", "db_pool_size", "server_rate_limit", "spawn_server", "analytics",
        "import_stall",
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

    /// Keep the fresh database instead of removing it on exit: the one --fresh-postgres-db made,
    /// or without --database-url the fresh SQLite file's directory. Its name or path is printed,
    /// for --analytics-existing.
    #[arg(long)]
    keep_fresh_db: bool,

    /// SQLite durability of the in-process server (as LEADPIPE_SQLITE_SYNCHRONOUS): `full`
    /// survives power loss, `normal` only process crashes but commits faster.
    #[arg(long, value_enum, default_value = "full")]
    sqlite_synchronous: Synchronous,

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

    /// Leads imported (with one ImportLeads stream) before measuring; `get` reads them.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    seed_leads: usize,

    /// Ignored: seeding uses one ImportLeads stream. Accepted so that older command lines work.
    #[arg(long, default_value_t = 32, value_name = "N", hide = true)]
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

    /// Run the server as a child process (`leadpipe serve`, the binary next to this one) instead
    /// of in-process, so that its memory is measured apart from the driver's: the report then
    /// gives its RSS (from /proc/PID/status) per cell, and per idle subscriber in --fanout.
    /// --pin-server-cpu runs it under `taskset`; --server-threads sets TOKIO_WORKER_THREADS.
    #[arg(long)]
    spawn_server: bool,

    /// With --spawn-server: the `leadpipe` binary to run instead of the one next to this one,
    /// for example an older build to compare with, run by the same driver.
    #[arg(long, value_name = "PATH")]
    server_bin: Option<std::path::PathBuf>,

    /// Fan-out mode: for each count K, a fresh server with K idle WatchStageChanges streams
    /// (--streams-per-channel per HTTP/2 connection) while moves run at --move-rate for
    /// --duration; reports commit-to-delivery latency over all deliveries. Replaces the
    /// scenario table.
    #[arg(long, value_delimiter = ',', value_name = "K,..")]
    fanout: Vec<usize>,

    /// Moves per second that --fanout drives (paced, spread over --fanout-clients).
    #[arg(long, default_value_t = 200, value_name = "N")]
    move_rate: u32,

    /// Clients (one channel each) that share --move-rate in --fanout.
    #[arg(long, default_value_t = 4, value_name = "N")]
    fanout_clients: usize,

    /// In --fanout, also open one subscriber that sleeps --slow-delay after every event; report
    /// how far behind it is when the moves stop and whether it then catches up without loss.
    #[arg(long)]
    slow_subscriber: bool,

    /// The slow subscriber's pause after each event.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    slow_delay: Duration,

    /// How long the slow subscriber may take to catch up once the moves stop.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    catch_up_timeout: Duration,

    /// Analytics mode: for each size N, a fresh database (SQLite in a temporary directory, or
    /// PostgreSQL with --fresh-postgres-db), N synthetic leads with a year of history imported
    /// with ImportLeads, then the median time of GetPipelineMetrics, GetForecast and
    /// ListStuckLeads beside bare SQL aggregates over the same tables. Replaces the scenario
    /// table.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    analytics: Vec<usize>,

    /// Analytics mode against the leads already in --database-url (a database kept by an
    /// earlier run with --keep-fresh-db) instead of a fresh database and an import. The one
    /// size given to --analytics must be the number of leads there.
    #[arg(long, requires = "database_url")]
    analytics_existing: bool,

    /// Timed repetitions per analytics call (after one warmup); the median is reported.
    #[arg(long, default_value_t = 5, value_name = "N")]
    analytics_reps: usize,

    /// Deadline of each analytics call; the in-process or child server's default deadline is
    /// turned off in analytics mode so that slow answers are measured, not cut.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    analytics_timeout: Duration,

    /// Import-stall mode: for each size N, a fresh server; `move` at each --clients count for
    /// --warmup + --duration, then again while one ImportLeads stream sends N synthetic leads with
    /// a year of history into the same tenant; reports both latencies and the p99 ratio. The
    /// import should outlast the window (the report says whether it did). Replaces the scenario
    /// table.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    import_stall: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum ScenarioArg {
    Health,
    Get,
    Create,
    List,
    Move,
    Update,
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
            Scenario::Update => "update",
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
    Update,
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
    /// Whether the scenario table runs (it does unless --fanout or --analytics is given).
    scenarios_on: bool,
    scenarios: Vec<Scenario>,
    clients: Vec<usize>,
    /// Subscriber counts the `move` scenario runs with, in order.
    move_variants: Vec<usize>,
    fanout: Vec<usize>,
    analytics: Vec<usize>,
    import_stall: Vec<usize>,
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
    if cli.fanout.contains(&0) {
        return Err("--fanout needs subscriber counts above zero".into());
    }
    if cli.move_rate == 0 || cli.fanout_clients == 0 {
        return Err("--move-rate and --fanout-clients must be above zero".into());
    }
    if cli.import_stall.contains(&0) {
        return Err("--import-stall needs lead counts above zero".into());
    }
    if !cli.import_stall.is_empty() && cli.database_url.is_some() && !cli.fresh_postgres_db {
        return Err(
            "--import-stall needs a fresh database: leave out --database-url \
                    (SQLite in a temporary directory) or add --fresh-postgres-db"
                .into(),
        );
    }
    if cli.analytics.contains(&0) || cli.analytics_reps == 0 {
        return Err("--analytics sizes and --analytics-reps must be above zero".into());
    }
    if cli.keep_fresh_db && cli.database_url.is_some() && !cli.fresh_postgres_db {
        return Err(
            "--keep-fresh-db keeps a fresh database: add --fresh-postgres-db, or leave out \
             --database-url for a fresh SQLite file"
                .into(),
        );
    }
    if cli.analytics_existing && (cli.analytics.len() != 1 || cli.fresh_postgres_db) {
        return Err(
            "--analytics-existing times one existing database: give --analytics the one size \
                    of its leads, without --fresh-postgres-db"
                .into(),
        );
    }
    if !cli.analytics.is_empty()
        && cli.database_url.is_some()
        && !cli.fresh_postgres_db
        && !cli.analytics_existing
    {
        return Err(
            "--analytics needs a fresh database per size: leave out --database-url \
                    (SQLite in a temporary directory) or add --fresh-postgres-db"
                .into(),
        );
    }
    if cli.spawn_server && !cfg!(target_os = "linux") {
        return Err("--spawn-server reads the server's RSS from /proc: Linux only".into());
    }
    let mut scenarios: Vec<Scenario> = if cli.scenario.contains(&Scenario::All) {
        vec![
            Scenario::Health,
            Scenario::Get,
            Scenario::Create,
            Scenario::List,
            Scenario::Move,
            Scenario::Update,
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
        scenarios_on: cli.fanout.is_empty()
            && cli.analytics.is_empty()
            && cli.import_stall.is_empty(),
        scenarios,
        clients,
        move_variants,
        fanout: cli.fanout.clone(),
        analytics: cli.analytics.clone(),
        import_stall: cli.import_stall.clone(),
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

    let most_streams = plan
        .move_variants
        .iter()
        .chain(&plan.fanout)
        .copied()
        .max()
        .unwrap_or(0);
    let spec = ServerSpec {
        spawn: cli.spawn_server,
        server_bin: cli.server_bin.clone(),
        pool_size: cli.db_pool_size.unwrap_or(8),
        sqlite_synchronous: cli.sqlite_synchronous,
        rate_limit: cli.server_rate_limit,
        // Room for the subscribers, the slow one and a few more.
        max_streams: leadpipe::defaults::MAX_STREAMS_PER_TENANT.max(most_streams + 16),
        request_timeout: Some(Duration::from_secs(30)),
        threads: server_threads,
        threads_flag: cli.server_threads,
        core: server_core,
        pin_cpu: cli.pin_server_cpu,
    };

    let (environment, target) = if let Some(target) = &cli.target {
        let addr = resolve_loopback(target)?;
        (
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
            Some(addr),
        )
    } else {
        let is_sqlite = cli
            .database_url
            .as_deref()
            .is_none_or(|url| url.starts_with("sqlite:"));
        (
            Environment {
                mode: if cli.spawn_server {
                    "child process (leadpipe serve)"
                } else {
                    "in-process"
                }
                .into(),
                target: "127.0.0.1 (ephemeral port)".into(),
                backend: if is_sqlite { "sqlite" } else { "postgres" }.into(),
                database: Some(match &cli.database_url {
                    None => "fresh SQLite file in a temporary directory".into(),
                    Some(url) if cli.fresh_postgres_db => {
                        format!("fresh database on {}", redact(url))
                    }
                    Some(url) => redact(url),
                }),
                sqlite_synchronous: is_sqlite.then(|| sync_name(cli.sqlite_synchronous).into()),
                server_threads: Some(server_threads),
                client_threads,
                pin_server_cpu: cli.pin_server_cpu,
                pin_client_cpu: cli.pin_client_cpu,
                cpus,
                server_rate_limit: Some(cli.server_rate_limit),
            },
            None,
        )
    };

    // One database for the scenarios and the fan-out cells; analytics makes one per size.
    let shared_db = if target.is_none() && (plan.scenarios_on || !plan.fanout.is_empty()) {
        Some(Database::open(&cli, &runtime, false)?)
    } else {
        None
    };
    let result = run_modes(&cli, &plan, &runtime, &spec, target, shared_db.as_ref());
    if let Some(db) = shared_db {
        db.close(&runtime, cli.keep_fresh_db);
    }
    runtime.shutdown_timeout(Duration::from_secs(5));

    let outputs = result?;
    let report = Report::new(&cli, environment, outputs);
    print!("{}", report.markdown());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// What the modes measured.
#[derive(Default)]
struct Outputs {
    cells: Vec<CellResult>,
    rss_after_seed_kib: Option<u64>,
    fanout: Vec<FanoutResult>,
    analytics: Vec<AnalyticsResult>,
    import_stall: Vec<ImportStallResult>,
}

fn run_modes(
    cli: &Cli,
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    spec: &ServerSpec,
    target: Option<SocketAddr>,
    shared_db: Option<&Database>,
) -> Result<Outputs, BoxError> {
    let mut outputs = Outputs::default();
    // Starts a server on the shared database, unless one is targeted.
    let start = |what: &str| -> Result<(SocketAddr, Option<RunningServer>), BoxError> {
        match (target, shared_db) {
            (Some(addr), _) => Ok((addr, None)),
            (None, Some(db)) => {
                eprintln!("starting the server for {what}");
                let (addr, server) = spec.start(&db.url, runtime)?;
                Ok((addr, Some(server)))
            }
            (None, None) => Err("no database for the server".into()),
        }
    };
    if plan.scenarios_on {
        let (addr, server) = start("the scenarios")?;
        let pid = server.as_ref().and_then(RunningServer::pid);
        let result = runtime.block_on(run(cli, plan, addr, pid));
        if let Some(server) = server {
            server.stop();
        }
        let (cells, rss) = result?;
        outputs.cells = cells;
        outputs.rss_after_seed_kib = rss;
    }
    for &subscribers in &plan.fanout {
        // A fresh server per cell, so that memory left over from a larger cell does not count.
        let (addr, server) = start(&format!("fan-out to {subscribers} subscribers"))?;
        let pid = server.as_ref().and_then(RunningServer::pid);
        let result = runtime.block_on(fanout_cell(cli, addr, subscribers, pid));
        if let Some(server) = server {
            server.stop();
        }
        outputs.fanout.push(result?);
    }
    for &leads in &plan.import_stall {
        for &clients in &plan.clients {
            let db = Database::open(cli, runtime, true)?;
            let result = spec.start(&db.url, runtime).and_then(|(addr, server)| {
                let result = runtime.block_on(import_stall_cell(cli, addr, leads, clients));
                server.stop();
                result
            });
            db.close(runtime, cli.keep_fresh_db);
            outputs.import_stall.push(result?);
        }
    }
    if !plan.analytics.is_empty() {
        let spec = ServerSpec {
            request_timeout: None,
            ..spec.clone()
        };
        for &leads in &plan.analytics {
            let db = Database::open(cli, runtime, !cli.analytics_existing)?;
            let result = spec.start(&db.url, runtime).and_then(|(addr, server)| {
                let result = runtime.block_on(analytics_cell(cli, addr, &db, leads));
                server.stop();
                result
            });
            db.close(runtime, cli.keep_fresh_db);
            outputs.analytics.push(result?);
        }
    }
    Ok(outputs)
}

fn sync_name(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "full",
        Synchronous::Normal => "normal",
    }
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
