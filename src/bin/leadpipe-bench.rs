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

/// glibc malloc was about a third of the server's CPU when decoding rows and encoding replies.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    /// Timed repetitions per analytics call (after one warmup); the median is reported.
    #[arg(long, default_value_t = 5, value_name = "N")]
    analytics_reps: usize,

    /// Deadline of each analytics call; the in-process or child server's default deadline is
    /// turned off in analytics mode so that slow answers are measured, not cut.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    analytics_timeout: Duration,
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
    /// Whether the scenario table runs (it does unless --fanout or --analytics is given).
    scenarios_on: bool,
    scenarios: Vec<Scenario>,
    clients: Vec<usize>,
    /// Subscriber counts the `move` scenario runs with, in order.
    move_variants: Vec<usize>,
    fanout: Vec<usize>,
    analytics: Vec<usize>,
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
    if cli.analytics.contains(&0) || cli.analytics_reps == 0 {
        return Err("--analytics sizes and --analytics-reps must be above zero".into());
    }
    if !cli.analytics.is_empty() && cli.database_url.is_some() && !cli.fresh_postgres_db {
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
        scenarios_on: cli.fanout.is_empty() && cli.analytics.is_empty(),
        scenarios,
        clients,
        move_variants,
        fanout: cli.fanout.clone(),
        analytics: cli.analytics.clone(),
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
        pool_size: cli.db_pool_size.unwrap_or(8),
        sqlite_synchronous: cli.sqlite_synchronous,
        rate_limit: cli.server_rate_limit,
        // Room for the subscribers, the slow one and a few more.
        max_streams: leadpipe::app::events::DEFAULT_MAX_STREAMS_PER_TENANT.max(most_streams + 16),
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
    if !plan.analytics.is_empty() {
        let spec = ServerSpec {
            request_timeout: None,
            ..spec.clone()
        };
        for &leads in &plan.analytics {
            let db = Database::open(cli, runtime, true)?;
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

fn sync_name(sync: SqliteSync) -> &'static str {
    match sync {
        SqliteSync::Full => "full",
        SqliteSync::Normal => "normal",
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

// ---- databases and servers ---------------------------------------------------------------

/// A database a server runs on, and what to clean up afterwards.
struct Database {
    url: String,
    /// The temporary directory of a fresh SQLite file, removed on drop.
    _sqlite_dir: Option<tempfile::TempDir>,
    /// (admin URL, name) of a database made by --fresh-postgres-db.
    fresh_postgres: Option<(String, String)>,
}

impl Database {
    /// The database of --database-url, a fresh PostgreSQL database (--fresh-postgres-db) or a
    /// fresh SQLite file. With `fresh_only`, a given database that is not fresh is refused.
    fn open(
        cli: &Cli,
        runtime: &tokio::runtime::Runtime,
        fresh_only: bool,
    ) -> Result<Self, BoxError> {
        match &cli.database_url {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("leadpipe-bench")
                    .tempdir()?;
                Ok(Self {
                    url: format!("sqlite://{}/leadpipe.db", dir.path().display()),
                    _sqlite_dir: Some(dir),
                    fresh_postgres: None,
                })
            }
            Some(url) if cli.fresh_postgres_db => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err("--fresh-postgres-db needs a postgres:// --database-url".into());
                }
                let (db_url, name) = runtime.block_on(create_fresh_postgres_db(url))?;
                eprintln!("created database {name}");
                Ok(Self {
                    url: db_url,
                    _sqlite_dir: None,
                    fresh_postgres: Some((url.clone(), name)),
                })
            }
            Some(_) if fresh_only => Err("this mode needs a fresh database".into()),
            Some(url) => Ok(Self {
                url: url.clone(),
                _sqlite_dir: None,
                fresh_postgres: None,
            }),
        }
    }

    fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// Drops a fresh PostgreSQL database (unless `keep`); a SQLite directory goes on drop.
    fn close(self, runtime: &tokio::runtime::Runtime, keep: bool) {
        if let Some((admin_url, name)) = &self.fresh_postgres {
            if keep {
                eprintln!("kept database {name}");
            } else if let Err(error) = runtime.block_on(drop_postgres_db(admin_url, name)) {
                eprintln!("warning: could not drop database {name}: {error}");
            } else {
                eprintln!("dropped database {name}");
            }
        }
    }
}

/// How to start a server of our own.
#[derive(Clone)]
struct ServerSpec {
    /// A `leadpipe serve` child process instead of an in-process server.
    spawn: bool,
    pool_size: u32,
    sqlite_synchronous: SqliteSync,
    rate_limit: u32,
    max_streams: usize,
    request_timeout: Option<Duration>,
    threads: usize,
    /// --server-threads as given (the child's default is tokio's: one per CPU).
    threads_flag: Option<usize>,
    core: Option<core_affinity::CoreId>,
    pin_cpu: Option<usize>,
}

enum RunningServer {
    InProcess(ServerHandle),
    Child(ChildServer),
}

impl RunningServer {
    /// The process whose memory is the server's alone: only a child's is.
    fn pid(&self) -> Option<u32> {
        match self {
            RunningServer::InProcess(_) => None,
            RunningServer::Child(child) => Some(child.child.id()),
        }
    }

    fn stop(self) {
        eprintln!("stopping the server");
        let result = match self {
            RunningServer::InProcess(handle) => handle.stop(),
            RunningServer::Child(child) => child.stop(),
        };
        if let Err(error) = result {
            eprintln!("warning: server: {error}");
        }
    }
}

impl ServerSpec {
    fn start(
        &self,
        database_url: &str,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(SocketAddr, RunningServer), BoxError> {
        if self.spawn {
            let child = ChildServer::spawn(self, database_url)?;
            let addr = child.addr;
            let mut child = RunningServer::Child(child);
            if let RunningServer::Child(c) = &mut child
                && let Err(error) = runtime.block_on(c.wait_serving())
            {
                child.stop();
                return Err(error);
            }
            return Ok((addr, child));
        }
        let args = DatabaseArgs {
            database_url: database_url.to_owned(),
            db_pool_size: self.pool_size,
            sqlite_synchronous: self.sqlite_synchronous,
        };
        let mut settings = Settings::new(args.store_config());
        settings.limits.rate_limit_per_second = self.rate_limit;
        if self.rate_limit > 0 {
            settings.limits.rate_limit_burst = self.rate_limit.saturating_mul(2);
        }
        settings.limits.max_streams_per_tenant = self.max_streams;
        settings.limits.request_timeout = self.request_timeout;
        let handle = start_server(settings, self.threads, self.core)?;
        Ok((handle.addr, RunningServer::InProcess(handle)))
    }
}

// ---- child-process server ----------------------------------------------------------------

/// `leadpipe serve` as a child process; killed on drop if still running.
struct ChildServer {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn spawn(spec: &ServerSpec, database_url: &str) -> Result<Self, BoxError> {
        let exe = std::env::current_exe()?.with_file_name("leadpipe");
        if !exe.is_file() {
            return Err(format!(
                "--spawn-server runs {}, which does not exist: build both binaries \
                 (`cargo build --release --bins`)",
                exe.display()
            )
            .into());
        }
        // A free port: bind an ephemeral one and let it go for the child to take.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = match spec.pin_cpu {
            Some(cpu) => {
                let mut command = std::process::Command::new("taskset");
                command.arg("-c").arg(cpu.to_string()).arg(&exe);
                command
            }
            None => std::process::Command::new(&exe),
        };
        let timeout = spec
            .request_timeout
            .map_or_else(|| "0s".to_string(), |t| format!("{}ms", t.as_millis()));
        command
            .arg("--database-url")
            .arg(database_url)
            .arg("--db-pool-size")
            .arg(spec.pool_size.to_string())
            .arg("--sqlite-synchronous")
            .arg(sync_name(spec.sqlite_synchronous))
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--rate-limit-per-second")
            .arg(spec.rate_limit.to_string())
            .arg("--rate-limit-burst")
            .arg(spec.rate_limit.saturating_mul(2).max(1).to_string())
            .arg("--max-streams-per-tenant")
            .arg(spec.max_streams.to_string())
            .arg("--request-timeout")
            .arg(timeout)
            // Settings come from the flags above only.
            .env_remove("LEADPIPE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        if let Some(threads) = spec.threads_flag {
            command.env("TOKIO_WORKER_THREADS", threads.to_string());
        }
        let child = command
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", exe.display()))?;
        eprintln!("started leadpipe serve (pid {}) on {addr}", child.id());
        Ok(Self { child, addr })
    }

    /// Waits (at most 60 s) until the server answers SERVING.
    async fn wait_serving(&mut self) -> Result<(), BoxError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_secs(1));
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("leadpipe serve exited at start-up: {status}").into());
            }
            if let Ok(channel) = endpoint.connect().await
                && let Ok(response) = health_client(&channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                && response.into_inner().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("leadpipe serve did not become SERVING within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (a graceful shutdown), then SIGKILL after 10 s.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("leadpipe serve (pid {pid}) did not stop; killed"));
                }
            }
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The resident set size of a process, in KiB (VmRSS in /proc/PID/status).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Debug, Clone, Copy, Serialize)]
struct RssStats {
    max_kib: u64,
    mean_kib: u64,
    samples: usize,
}

/// Samples a process's RSS every 100 ms from `from` until `until`.
fn sample_rss(
    pid: u32,
    from: Instant,
    until: Instant,
) -> tokio::task::JoinHandle<Option<RssStats>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let (mut max, mut sum, mut samples) = (0u64, 0u64, 0usize);
        while Instant::now() < until {
            if let Some(kib) = rss_kib(pid) {
                max = max.max(kib);
                sum += kib;
                samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (samples > 0).then(|| RssStats {
            max_kib: max,
            mean_kib: sum / samples as u64,
            samples,
        })
    })
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

async fn run(
    cli: &Cli,
    plan: &Plan,
    addr: SocketAddr,
    server_pid: Option<u32>,
) -> Result<(Vec<CellResult>, Option<u64>), BoxError> {
    let max_clients = *plan.clients.iter().max().expect("clients is not empty");
    eprintln!("connecting {max_clients} client channel(s) to {addr}");
    let channels: Vec<Channel> =
        futures::future::try_join_all((0..max_clients).map(|_| connect(addr))).await?;
    check_serving(&channels[0]).await?;

    let needs_move = plan
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::Move | Scenario::Mixed));
    let movers = if needs_move {
        max_clients * cli.move_leads_per_client
    } else {
        0
    };
    let (seeded, move_ids) = seed_by_import(&channels[0], cli.seed_leads, movers).await?;
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
    let rss_after_seed = server_pid.and_then(rss_kib);

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
                    &channels[..clients],
                    &fixture,
                    subs.as_mut(),
                    server_pid,
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
    Ok((cells, rss_after_seed))
}

async fn check_serving(channel: &Channel) -> Result<(), BoxError> {
    let health = health_client(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    if health.status != ServingStatus::Serving as i32 {
        return Err(format!("the server is not SERVING (status {})", health.status).into());
    }
    Ok(())
}

/// The label that marks the leads of one seeding, so that they can be listed back.
const SEED_LABEL: &str = "bench_run";

/// Imports `seeds` plain leads and `movers` leads with a contact (so that they may enter
/// qualification) in one ImportLeads stream, and lists their ids back: ImportLeads reports
/// counts, not ids. Leads start in the pipeline's first stage, as CreateLead would put them.
async fn seed_by_import(
    channel: &Channel,
    seeds: usize,
    movers: usize,
) -> Result<(Vec<String>, Vec<String>), BoxError> {
    if seeds + movers == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let started = Instant::now();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let seed_tag = format!("{run}-seed");
    let mover_tag = format!("{run}-mover");
    let message = |tag: &str, n: usize, with_contact: bool| {
        let mut lead = lead_to_create(tag, n, with_contact);
        lead.labels.insert(SEED_LABEL.into(), tag.into());
        pb::ImportLeadsRequest {
            external_id: format!("bench-{tag}-{n}"),
            lead: Some(lead),
            history: Vec::new(),
        }
    };
    let messages: Vec<pb::ImportLeadsRequest> = (0..seeds)
        .map(|n| message(&seed_tag, n, false))
        .chain((0..movers).map(|n| message(&mover_tag, n, true)))
        .collect();
    let response = lead_client(channel)
        .import_leads(tokio_stream::iter(messages))
        .await
        .map_err(|status| format!("seeding with ImportLeads: {status}"))?
        .into_inner();
    let total = (seeds + movers) as i64;
    if response.imported != total {
        return Err(format!(
            "ImportLeads imported {} of {total} leads; first refusal: {:?}",
            response.imported,
            response.errors.first()
        )
        .into());
    }
    let seeded = list_tagged(channel, &seed_tag, seeds).await?;
    let moving = list_tagged(channel, &mover_tag, movers).await?;
    eprintln!(
        "seeded {} + {} leads with ImportLeads in {:.2?}",
        seeded.len(),
        moving.len(),
        started.elapsed()
    );
    Ok((seeded, moving))
}

/// The ids of the `expected` leads labelled `tag`.
async fn list_tagged(
    channel: &Channel,
    tag: &str,
    expected: usize,
) -> Result<Vec<String>, BoxError> {
    let mut client = lead_client(channel);
    let mut ids = Vec::with_capacity(expected);
    let mut page_token = String::new();
    // Bounded: one page more than the leads need.
    for _ in 0..=expected.div_ceil(1000) {
        let page = client
            .list_leads(pb::ListLeadsRequest {
                page_size: 1000,
                page_token,
                filter: format!("labels.{SEED_LABEL} = \"{tag}\""),
                order_by: String::new(),
            })
            .await?
            .into_inner();
        ids.extend(page.leads.into_iter().map(|lead| lead.id));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    if ids.len() != expected {
        return Err(format!("listed {} of the {expected} imported leads", ids.len()).into());
    }
    Ok(ids)
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
                Op::Move => move_once(&mut leads, mover.expect("a move has a lead")).await,
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
        if failure.is_some()
            && let Some(lead) = mover
        {
            reread_stage(&mut leads, lead, plan.request_timeout).await;
        }
    }
    outcome
}

/// Moves `lead` to the other of its two stages.
async fn move_once(
    client: &mut LeadServiceClient<AuthChannel>,
    lead: &MoveLead,
) -> Result<(), tonic::Status> {
    let to = if lead.in_b.load(Ordering::Relaxed) {
        STAGE_A
    } else {
        STAGE_B
    };
    let moved = client
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

/// After a failed move the lead's stage is unknown: read it back (not measured).
async fn reread_stage(
    client: &mut LeadServiceClient<AuthChannel>,
    lead: &MoveLead,
    timeout: Duration,
) {
    if let Ok(Ok(current)) = tokio::time::timeout(
        timeout,
        client.get_lead(pb::GetLeadRequest {
            id: lead.id.clone(),
        }),
    )
    .await
    {
        lead.in_b
            .store(current.into_inner().stage == STAGE_B, Ordering::Relaxed);
    }
}

async fn run_cell(
    cli: &Cli,
    scenario: Scenario,
    channels: &[Channel],
    fixture: &Arc<Fixture>,
    subscribers: Option<&mut Subscribers>,
    server_pid: Option<u32>,
) -> CellResult {
    let clients = channels.len();
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
    let rss = server_pid.map(|pid| sample_rss(pid, measure_start, plan.deadline));
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
    let server_rss = match rss {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
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
        server_rss,
    }
}

// ---- WatchStageChanges subscribers -------------------------------------------------------

struct SubscriberState {
    /// Events whose change_time (unix µs) is at least this are recorded; i64::MAX: none.
    record_from_us: AtomicI64,
    /// One histogram per shared channel: one per stream would take ~150 KiB × streams.
    histograms: Vec<Mutex<Histogram<u64>>>,
    /// The highest sequence any stream has received.
    max_sequence: AtomicI64,
    /// Times a stream received a sequence other than the one after its previous event.
    gaps: AtomicU64,
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
            histograms: (0..count.div_ceil(per_channel))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            max_sequence: AtomicI64::new(-1),
            gaps: AtomicU64::new(0),
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
            let group = i / per_channel;
            tasks.push(tokio::spawn(async move {
                let mut previous: Option<i64> = None;
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            let now = unix_micros(SystemTime::now());
                            state.received.fetch_add(1, Ordering::Relaxed);
                            match previous {
                                None => {
                                    state.live.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(p) if event.sequence != p + 1 => {
                                    state.gaps.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(_) => {}
                            }
                            previous = Some(event.sequence);
                            state
                                .max_sequence
                                .fetch_max(event.sequence, Ordering::Relaxed);
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
                            state.histograms[group]
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
            sequence_gaps: self.state.gaps.load(Ordering::Relaxed),
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

// ---- fan-out ------------------------------------------------------------------------------

/// When a paced mover moves, and which moves count.
struct Pace {
    first_tick: Instant,
    period: Duration,
    measure_start: Instant,
    deadline: Instant,
    request_timeout: Duration,
}

/// Moves this client's leads once per `period` (a missed tick is skipped, not made up, so the
/// achieved rate shows when the server cannot keep up).
async fn paced_mover(
    channel: Channel,
    fixture: Arc<Fixture>,
    client: usize,
    pace: Pace,
) -> ClientOutcome {
    let mut leads = lead_client(&channel);
    let mut interval = tokio::time::interval_at(pace.first_tick.into(), pace.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut outcome = ClientOutcome {
        histogram: new_histogram(),
        ok: 0,
        errors: BTreeMap::new(),
        last_end: None,
    };
    let mut turn = 0usize;
    loop {
        interval.tick().await;
        let started = Instant::now();
        if started >= pace.deadline {
            break;
        }
        let lead = &fixture.move_leads[client * fixture.per_client + turn % fixture.per_client];
        turn += 1;
        let result = tokio::time::timeout(pace.request_timeout, move_once(&mut leads, lead)).await;
        let ended = Instant::now();
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(status)) => Some(format!("{:?}", status.code())),
            Err(_) => Some("Timeout".to_string()),
        };
        if started >= pace.measure_start {
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
        if failure.is_some() {
            reread_stage(&mut leads, lead, pace.request_timeout).await;
        }
    }
    outcome
}

/// Creates probe leads (one per 100 ms, at most 30 s) until `done` holds: streams deliver new
/// events only, so this is how a stream is known to be registered on the server.
async fn probe_until(channel: &Channel, done: impl Fn() -> bool) -> Result<(), BoxError> {
    let mut client = lead_client(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    while !done() {
        if Instant::now() >= deadline {
            return Err("a subscriber stream did not become live within 30 s".into());
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
    Ok(())
}

struct SlowState {
    /// The highest sequence received; -1 before the first event.
    last_sequence: AtomicI64,
    /// change_time of that event, unix µs.
    last_change_us: AtomicI64,
    received: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    reconnects: AtomicU64,
    /// Set once the moves stop: read without pausing.
    drain: AtomicBool,
    error: Mutex<Option<String>>,
}

/// A subscriber that pauses after every event, on a connection of its own: HTTP/2 flow control
/// also applies per connection, so a reader that falls behind would hold back the streams that
/// share its connection. If its stream ends it resumes with after_sequence, as clients should.
struct SlowSubscriber {
    state: Arc<SlowState>,
    task: tokio::task::JoinHandle<()>,
}

/// How often the slow subscriber may resume its stream.
const SLOW_MAX_RECONNECTS: u64 = 5;

impl SlowSubscriber {
    async fn open(addr: SocketAddr, delay: Duration) -> Result<Self, BoxError> {
        let channel = connect(addr).await?;
        let stream = lead_client(&channel)
            .watch_stage_changes(pb::WatchStageChangesRequest::default())
            .await
            .map_err(|status| format!("opening the slow subscriber: {status}"))?
            .into_inner();
        let state = Arc::new(SlowState {
            last_sequence: AtomicI64::new(-1),
            last_change_us: AtomicI64::new(0),
            received: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            drain: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let task = tokio::spawn(slow_loop(channel, stream, state.clone(), delay));
        Ok(Self { state, task })
    }

    async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn slow_loop(
    channel: Channel,
    mut stream: tonic::Streaming<pb::StageChangeEvent>,
    state: Arc<SlowState>,
    delay: Duration,
) {
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                let last = state.last_sequence.load(Ordering::Relaxed);
                if last >= 0 && event.sequence <= last {
                    state.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if last >= 0 && event.sequence != last + 1 {
                    state.gaps.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(time) = event.change_time {
                    state.last_change_us.store(
                        time.seconds * 1_000_000 + i64::from(time.nanos) / 1000,
                        Ordering::Relaxed,
                    );
                }
                state.last_sequence.store(event.sequence, Ordering::Relaxed);
                state.received.fetch_add(1, Ordering::Relaxed);
                if !state.drain.load(Ordering::Relaxed) {
                    tokio::time::sleep(delay).await;
                }
            }
            ended => {
                let reason = match ended {
                    Err(status) => status.to_string(),
                    _ => "the server ended the stream".to_string(),
                };
                *state.error.lock().expect("error lock") = Some(reason);
                // Resume after the last sequence received.
                loop {
                    if state.reconnects.fetch_add(1, Ordering::Relaxed) >= SLOW_MAX_RECONNECTS {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let last = state.last_sequence.load(Ordering::Relaxed);
                    let request = pb::WatchStageChangesRequest {
                        after_sequence: (last >= 0).then_some(last),
                        ..Default::default()
                    };
                    match lead_client(&channel).watch_stage_changes(request).await {
                        Ok(response) => {
                            stream = response.into_inner();
                            break;
                        }
                        Err(status) => {
                            *state.error.lock().expect("error lock") = Some(status.to_string());
                        }
                    }
                }
            }
        }
    }
}

async fn fanout_cell(
    cli: &Cli,
    addr: SocketAddr,
    subscribers: usize,
    server_pid: Option<u32>,
) -> Result<FanoutResult, BoxError> {
    let clients = cli.fanout_clients;
    let channels: Vec<Channel> =
        futures::future::try_join_all((0..clients).map(|_| connect(addr))).await?;
    check_serving(&channels[0]).await?;
    let (_, movers) = seed_by_import(&channels[0], 0, clients * cli.move_leads_per_client).await?;
    let fixture = Arc::new(Fixture {
        seeded: Vec::new(),
        move_leads: movers
            .into_iter()
            .map(|id| MoveLead {
                id,
                in_b: AtomicBool::new(false),
            })
            .collect(),
        per_client: cli.move_leads_per_client,
    });

    // The slow subscriber opens first, so that the memory measured below is the idle ones'.
    let slow = if cli.slow_subscriber {
        let slow = SlowSubscriber::open(addr, cli.slow_delay).await?;
        let state = slow.state.clone();
        probe_until(&channels[0], || state.received.load(Ordering::Relaxed) > 0).await?;
        Some(slow)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server_pid.and_then(rss_kib);
    eprintln!("opening {subscribers} idle WatchStageChanges stream(s)");
    let opened = Instant::now();
    let mut subs =
        Subscribers::open(addr, subscribers, cli.streams_per_channel, &channels[0]).await?;
    eprintln!("{subscribers} streams live in {:.2?}", opened.elapsed());
    // Every stream has delivered a probe event, so every one is registered; let the server's
    // buffers settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server_pid.and_then(rss_kib);

    let begin = Instant::now();
    let begin_wall = SystemTime::now();
    let measure_start = begin + cli.warmup;
    let deadline = measure_start + cli.duration;
    subs.record_from(unix_micros(begin_wall + cli.warmup));
    let rss_task = server_pid.map(|pid| sample_rss(pid, measure_start, deadline));
    let period = Duration::from_secs_f64(clients as f64 / f64::from(cli.move_rate));
    eprintln!(
        "moving at {} moves/s over {clients} client(s) for {:?} (+{:?} warmup)",
        cli.move_rate, cli.duration, cli.warmup
    );
    let tasks: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(client, channel)| {
            tokio::spawn(paced_mover(
                channel.clone(),
                fixture.clone(),
                client,
                Pace {
                    // Staggered, so that the clients' ticks interleave evenly.
                    first_tick: begin + period.mul_f64(client as f64 / clients as f64),
                    period,
                    measure_start,
                    deadline,
                    request_timeout: cli.request_timeout,
                },
            ))
        })
        .collect();
    let mut histogram = new_histogram();
    let mut moves = 0;
    let mut errors = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                histogram
                    .add(&outcome.histogram)
                    .expect("histograms share bounds");
                moves += outcome.ok;
                for (code, n) in outcome.errors {
                    *errors.entry(code).or_default() += n;
                }
            }
            Err(error) => *errors.entry(format!("panic: {error}")).or_default() += 1,
        }
    }
    let moves_end_wall = unix_micros(SystemTime::now());
    let slow_at_end = slow.as_ref().map(|slow| {
        (
            slow.state.last_sequence.load(Ordering::Relaxed),
            slow.state.last_change_us.load(Ordering::Relaxed),
            slow.state.received.load(Ordering::Relaxed),
        )
    });
    let server_rss = match rss_task {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let delivery = subs.harvest().await;
    let final_sequence = subs.state.max_sequence.load(Ordering::Relaxed);
    subs.close().await;

    let slow_result = match (slow, slow_at_end) {
        (Some(slow), Some((last_at_end, change_us, received))) => {
            eprintln!(
                "slow subscriber: {} events behind; catching up",
                final_sequence - last_at_end
            );
            slow.state.drain.store(true, Ordering::Relaxed);
            let started = Instant::now();
            while slow.state.last_sequence.load(Ordering::Relaxed) < final_sequence
                && started.elapsed() < cli.catch_up_timeout
                && !slow.task.is_finished()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let state = &slow.state;
            let last = state.last_sequence.load(Ordering::Relaxed);
            let gaps = state.gaps.load(Ordering::Relaxed);
            let duplicates = state.duplicates.load(Ordering::Relaxed);
            let result = SlowResult {
                delay_ms: cli.slow_delay.as_secs_f64() * 1000.0,
                received_by_end: received,
                behind_at_end_events: final_sequence - last_at_end,
                last_event_age_at_end_ms: (moves_end_wall - change_us) as f64 / 1000.0,
                final_sequence,
                last_sequence: last,
                caught_up: last >= final_sequence,
                lossless: last >= final_sequence && gaps == 0 && duplicates == 0,
                catch_up_seconds: started.elapsed().as_secs_f64(),
                sequence_gaps: gaps,
                duplicates,
                reconnects: state.reconnects.load(Ordering::Relaxed),
                stream_error: state.error.lock().expect("error lock").clone(),
            };
            slow.close().await;
            Some(result)
        }
        _ => None,
    };
    let seconds = cli.duration.as_secs_f64();
    Ok(FanoutResult {
        subscribers,
        channels: delivery.channels,
        move_clients: clients,
        target_move_rate: cli.move_rate,
        moves,
        move_errors: errors.values().sum(),
        errors_by_code: errors,
        measured_seconds: seconds,
        achieved_move_rate: moves as f64 / seconds,
        move_latency_us: Latency::of(&histogram),
        delivery_clock: DELIVERY_CLOCK,
        delivery,
        rss: server_pid.map(|_| FanoutRss {
            before_kib: rss_before,
            after_kib: rss_after,
            per_subscriber_kib: match (rss_before, rss_after) {
                (Some(before), Some(after)) => {
                    Some((after as f64 - before as f64) / subscribers as f64)
                }
                _ => None,
            },
            during_moves: server_rss,
        }),
        slow_subscriber: slow_result,
    })
}

const DELIVERY_CLOCK: &str = "driver receive wall clock − event.change_time (stamped by the \
server in the move's transaction; same host, same clock)";

// ---- analytics ----------------------------------------------------------------------------

/// Leads generated per chunk while importing (generation overlaps the import).
const ANALYTICS_CHUNK: usize = 5000;

const SQL_LEADS: &str = "SELECT stage, SUM(amount_units), COUNT(*) FROM leads \
                         WHERE tenant_id = $1 GROUP BY stage";
const SQL_CHANGES: &str = "SELECT to_stage, COUNT(*) FROM stage_changes \
                           WHERE tenant_id = $1 GROUP BY to_stage";

async fn analytics_cell(
    cli: &Cli,
    addr: SocketAddr,
    db: &Database,
    leads: usize,
) -> Result<AnalyticsResult, BoxError> {
    use leadpipe::bulk::synthetic;
    use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;
    use sea_orm::{ConnectionTrait, Statement};

    let channel = connect(addr).await?;
    check_serving(&channel).await?;

    // A year of history, ending a minute ago (imported history may not be in the future).
    let end = chrono::Utc::now() - chrono::Duration::minutes(1);
    let start = end - chrono::Duration::days(365);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<pb::ImportLeadsRequest>>(2);
    let changes = Arc::new(AtomicU64::new(0));
    let counted = changes.clone();
    let producer = tokio::task::spawn_blocking(move || {
        for chunk in 0..leads.div_ceil(ANALYTICS_CHUNK) {
            let first = chunk * ANALYTICS_CHUNK;
            let size = ANALYTICS_CHUNK.min(leads - first);
            let mut generated = synthetic::generate(size, start, end, 1 + chunk as u64).leads;
            for (i, message) in generated.iter_mut().enumerate() {
                message.external_id = format!("syn-{}", first + i);
                counted.fetch_add(message.history.len() as u64, Ordering::Relaxed);
            }
            if tx.blocking_send(generated).is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(futures::stream::iter);
    eprintln!("importing {leads} synthetic leads with ImportLeads");
    let started = Instant::now();
    let response = lead_client(&channel)
        .import_leads(stream)
        .await
        .map_err(|status| format!("ImportLeads of {leads} leads: {status}"))?
        .into_inner();
    let import_seconds = started.elapsed().as_secs_f64();
    let _ = producer.await;
    if response.imported != leads as i64 {
        return Err(format!(
            "ImportLeads imported {} of {leads} leads; first refusal: {:?}",
            response.imported,
            response.errors.first()
        )
        .into());
    }
    let stage_changes = changes.load(Ordering::Relaxed);
    eprintln!("imported {leads} leads ({stage_changes} stage changes) in {import_seconds:.2} s");

    let bare = sea_orm::Database::connect(&db.url).await?;
    let backend = bare.get_database_backend();
    let bare_sql = |sql: &str| {
        let sql = if db.is_sqlite() {
            sql.replace("$1", "?")
        } else {
            sql.to_owned()
        };
        Statement::from_sql_and_values(backend, sql, ["default".into()])
    };
    let mut forecasts = ForecastServiceClient::with_interceptor(channel.clone(), auth());
    let limit = cli.analytics_timeout;
    let mut times: [Vec<f64>; 5] = Default::default();
    // One warmup round, then the timed ones.
    for round in 0..=cli.analytics_reps {
        let mut took = [0f64; 5];
        let t = Instant::now();
        tokio::time::timeout(
            limit,
            forecasts.get_pipeline_metrics(pb::GetPipelineMetricsRequest::default()),
        )
        .await
        .map_err(|_| "GetPipelineMetrics timed out")??;
        took[0] = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        tokio::time::timeout(
            limit,
            forecasts.get_forecast(pb::GetForecastRequest {
                currency_code: "EUR".into(),
                period: pb::Period::Month as i32,
                horizon_periods: 6,
                simulations: 1000,
                seed: 1,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| "GetForecast timed out")??;
        took[1] = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        tokio::time::timeout(
            limit,
            forecasts.list_stuck_leads(pb::ListStuckLeadsRequest {
                page_size: 50,
                ..Default::default()
            }),
        )
        .await
        .map_err(|_| "ListStuckLeads timed out")??;
        took[2] = t.elapsed().as_secs_f64() * 1000.0;
        for (slot, sql) in [(3, SQL_LEADS), (4, SQL_CHANGES)] {
            let t = Instant::now();
            let rows = tokio::time::timeout(limit, bare.query_all_raw(bare_sql(sql)))
                .await
                .map_err(|_| "a bare SQL aggregate timed out")??;
            took[slot] = t.elapsed().as_secs_f64() * 1000.0;
            if rows.is_empty() {
                return Err(format!("the bare SQL aggregate returned no rows: {sql}").into());
            }
        }
        if round > 0 {
            for (list, ms) in times.iter_mut().zip(took) {
                list.push(ms);
            }
        }
    }
    let _ = bare.close().await;
    let [metrics, forecast, stuck, sql_leads, sql_changes] = times.map(|mut t| median(&mut t));
    let sql = sql_leads + sql_changes;
    let result = AnalyticsResult {
        leads,
        stage_changes,
        import_seconds,
        import_leads_per_second: leads as f64 / import_seconds,
        reps: cli.analytics_reps,
        metrics_ms: metrics,
        forecast_ms: forecast,
        stuck_ms: stuck,
        sql_leads_ms: sql_leads,
        sql_changes_ms: sql_changes,
        metrics_vs_sql: metrics / sql,
        forecast_vs_sql: forecast / sql,
        stuck_vs_sql: stuck / sql,
    };
    eprintln!(
        "{leads} leads: metrics {metrics:.1} ms, forecast {forecast:.1} ms, stuck {stuck:.1} ms, \
         bare SQL {sql:.1} ms"
    );
    Ok(result)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
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
    /// Times a stream skipped or repeated a sequence (0 unless ImportLeads ran meanwhile).
    sequence_gaps: u64,
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
    /// The child server's RSS during the measured window (--spawn-server only).
    server_rss: Option<RssStats>,
}

#[derive(Debug, Clone, Serialize)]
struct FanoutRss {
    /// With the slow subscriber (if any) open, before the idle ones.
    before_kib: Option<u64>,
    /// With every idle stream registered.
    after_kib: Option<u64>,
    /// (after − before) / subscribers.
    per_subscriber_kib: Option<f64>,
    /// Sampled every 100 ms while the moves were measured.
    during_moves: Option<RssStats>,
}

#[derive(Debug, Clone, Serialize)]
struct SlowResult {
    delay_ms: f64,
    /// Events it had received when the moves stopped.
    received_by_end: u64,
    /// Sequences committed but not yet received when the moves stopped.
    behind_at_end_events: i64,
    /// Age of the newest event it had received when the moves stopped (receive clock −
    /// change_time).
    last_event_age_at_end_ms: f64,
    /// The last sequence committed (the highest any idle stream received).
    final_sequence: i64,
    /// The last sequence it received before catching up or giving up.
    last_sequence: i64,
    caught_up: bool,
    /// Caught up, with every sequence exactly once and in order.
    lossless: bool,
    catch_up_seconds: f64,
    sequence_gaps: u64,
    duplicates: u64,
    reconnects: u64,
    stream_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct FanoutResult {
    subscribers: usize,
    channels: usize,
    move_clients: usize,
    target_move_rate: u32,
    /// Successful moves in the measured window.
    moves: u64,
    move_errors: u64,
    errors_by_code: BTreeMap<String, u64>,
    measured_seconds: f64,
    achieved_move_rate: f64,
    move_latency_us: Latency,
    /// How commit-to-delivery latency is measured.
    delivery_clock: &'static str,
    /// Deliveries to the idle streams of events committed in the measured window.
    delivery: Delivery,
    rss: Option<FanoutRss>,
    slow_subscriber: Option<SlowResult>,
}

#[derive(Debug, Clone, Serialize)]
struct AnalyticsResult {
    leads: usize,
    /// Imported history rows.
    stage_changes: u64,
    import_seconds: f64,
    import_leads_per_second: f64,
    reps: usize,
    /// Medians, ms.
    metrics_ms: f64,
    forecast_ms: f64,
    stuck_ms: f64,
    sql_leads_ms: f64,
    sql_changes_ms: f64,
    /// RPC time ÷ (sql_leads_ms + sql_changes_ms).
    metrics_vs_sql: f64,
    forecast_vs_sql: f64,
    stuck_vs_sql: f64,
}

#[derive(Debug, Serialize)]
struct AnalyticsGrowth {
    from_leads: usize,
    to_leads: usize,
    size_factor: f64,
    metrics: f64,
    forecast: f64,
    stuck: f64,
    sql: f64,
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
    spawn_server: bool,
    fanout: Vec<usize>,
    move_rate: u32,
    fanout_clients: usize,
    slow_subscriber: bool,
    slow_delay_ms: u128,
    analytics: Vec<usize>,
    analytics_reps: usize,
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
    /// The child server's RSS once the scenario leads were seeded (--spawn-server only).
    server_rss_after_seed_kib: Option<u64>,
    fanout: Vec<FanoutResult>,
    analytics: Vec<AnalyticsResult>,
    analytics_growth: Vec<AnalyticsGrowth>,
    analytics_sql: [&'static str; 2],
}

impl Report {
    fn new(cli: &Cli, environment: Environment, outputs: Outputs) -> Self {
        let Outputs {
            mut cells,
            rss_after_seed_kib,
            fanout,
            analytics,
        } = outputs;
        let analytics_growth = analytics
            .windows(2)
            .map(|pair| {
                let (a, b) = (&pair[0], &pair[1]);
                let factor = |x: f64, y: f64| if x > 0.0 { y / x } else { 0.0 };
                AnalyticsGrowth {
                    from_leads: a.leads,
                    to_leads: b.leads,
                    size_factor: b.leads as f64 / a.leads as f64,
                    metrics: factor(a.metrics_ms, b.metrics_ms),
                    forecast: factor(a.forecast_ms, b.forecast_ms),
                    stuck: factor(a.stuck_ms, b.stuck_ms),
                    sql: factor(
                        a.sql_leads_ms + a.sql_changes_ms,
                        b.sql_leads_ms + b.sql_changes_ms,
                    ),
                }
            })
            .collect();
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
                spawn_server: cli.spawn_server,
                fanout: cli.fanout.clone(),
                move_rate: cli.move_rate,
                fanout_clients: cli.fanout_clients,
                slow_subscriber: cli.slow_subscriber,
                slow_delay_ms: cli.slow_delay.as_millis(),
                analytics: cli.analytics.clone(),
                analytics_reps: cli.analytics_reps,
            },
            cells,
            streaming_comparison,
            server_rss_after_seed_kib: rss_after_seed_kib,
            fanout,
            analytics,
            analytics_growth,
            analytics_sql: [SQL_LEADS, SQL_CHANGES],
        }
    }

    fn markdown(&self) -> String {
        use std::fmt::Write;
        let e = &self.environment;
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
        if !self.cells.is_empty() {
            self.scenarios_markdown(&mut out);
        }
        if !self.fanout.is_empty() {
            self.fanout_markdown(&mut out);
        }
        if !self.analytics.is_empty() {
            self.analytics_markdown(&mut out);
        }
        out
    }

    fn scenarios_markdown(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.settings;
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
        let rss: Vec<&CellResult> = self
            .cells
            .iter()
            .filter(|c| c.server_rss.is_some())
            .collect();
        if !rss.is_empty() {
            let _ = writeln!(
                out,
                "\n### Server memory (child process, VmRSS sampled every 100 ms)\n"
            );
            if let Some(kib) = self.server_rss_after_seed_kib {
                let _ = writeln!(out, "After seeding, idle: {:.1} MiB\n", mib(kib));
            }
            let _ = writeln!(
                out,
                "| scenario | clients | subs | RSS mean MiB | RSS max MiB |"
            );
            let _ = writeln!(out, "|---|--:|--:|--:|--:|");
            for c in rss {
                let r = c.server_rss.expect("filtered");
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {:.1} |",
                    c.scenario,
                    c.clients,
                    c.subscribers,
                    mib(r.mean_kib),
                    mib(r.max_kib)
                );
            }
        }
    }

    fn fanout_markdown(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.settings;
        let _ = writeln!(
            out,
            "\n### Fan-out: idle WatchStageChanges subscribers under paced moves\n"
        );
        let _ = writeln!(
            out,
            "- per cell: a fresh server; warmup {} ms, measured {} ms; {} streams per connection; \
             moves spread over {} client(s)",
            s.warmup_ms,
            s.duration_ms,
            s.streams_per_channel,
            self.fanout.first().map_or(0, |f| f.move_clients)
        );
        let _ = writeln!(
            out,
            "- commit-to-delivery: {DELIVERY_CLOCK}, over every delivery to every idle stream\n"
        );
        let _ = writeln!(
            out,
            "| subs | conns | moves/s target | moves/s achieved | move p50 µs | move p99 µs | deliveries | delivery p50 µs | p99 µs | p99.9 µs | max µs | gaps | broken | errors |"
        );
        let _ = writeln!(
            out,
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for f in &self.fanout {
            let d = &f.delivery;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.subscribers,
                f.channels,
                f.target_move_rate,
                f.achieved_move_rate,
                f.move_latency_us.p50,
                f.move_latency_us.p99,
                d.events,
                d.latency_us.p50,
                d.latency_us.p99,
                d.latency_us.p999,
                d.latency_us.max,
                d.sequence_gaps,
                d.broken_streams,
                f.move_errors
            );
        }
        if self.fanout.iter().any(|f| f.rss.is_some()) {
            let _ = writeln!(
                out,
                "\n#### Server memory per idle subscriber (child process VmRSS)\n"
            );
            let _ = writeln!(
                out,
                "| subs | RSS before MiB | RSS with subs MiB | KiB per subscriber | RSS max during moves MiB |"
            );
            let _ = writeln!(out, "|--:|--:|--:|--:|--:|");
            let opt =
                |v: Option<u64>| v.map_or_else(|| "-".to_string(), |k| format!("{:.1}", mib(k)));
            for f in &self.fanout {
                if let Some(r) = &f.rss {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} |",
                        f.subscribers,
                        opt(r.before_kib),
                        opt(r.after_kib),
                        r.per_subscriber_kib
                            .map_or_else(|| "-".to_string(), |k| format!("{k:.1}")),
                        opt(r.during_moves.map(|d| d.max_kib))
                    );
                }
            }
        }
        if self.fanout.iter().any(|f| f.slow_subscriber.is_some()) {
            let _ = writeln!(
                out,
                "\n#### The slow subscriber (own connection; pauses after every event until the moves stop)\n"
            );
            let _ = writeln!(
                out,
                "| subs | pause ms | received by end | behind at end (events) | age of its last event at end ms | caught up | lossless | catch-up s | gaps | duplicates | reconnects |"
            );
            let _ = writeln!(out, "|--:|--:|--:|--:|--:|---|---|--:|--:|--:|--:|");
            for f in &self.fanout {
                if let Some(w) = &f.slow_subscriber {
                    let _ = writeln!(
                        out,
                        "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2} | {} | {} | {} |",
                        f.subscribers,
                        w.delay_ms,
                        w.received_by_end,
                        w.behind_at_end_events,
                        w.last_event_age_at_end_ms,
                        if w.caught_up { "yes" } else { "NO" },
                        if w.lossless { "yes" } else { "NO" },
                        w.catch_up_seconds,
                        w.sequence_gaps,
                        w.duplicates,
                        w.reconnects
                    );
                }
            }
            for f in &self.fanout {
                if let Some(error) = f
                    .slow_subscriber
                    .as_ref()
                    .and_then(|w| w.stream_error.as_ref())
                {
                    let _ = writeln!(
                        out,
                        "\nslow subscriber at {} subs: stream error: {error}",
                        f.subscribers
                    );
                }
            }
        }
        for f in &self.fanout {
            let d = &f.delivery;
            if d.sequence_gaps > 0 || d.broken_streams > 0 {
                let _ = writeln!(
                    out,
                    "\nwarning: at {} subs, idle streams skipped or repeated a sequence {} time(s) \
                     and {} stream(s) broke",
                    f.subscribers, d.sequence_gaps, d.broken_streams
                );
            }
            if f.slow_subscriber.as_ref().is_some_and(|w| !w.lossless) {
                let _ = writeln!(
                    out,
                    "\nwarning: at {} subs, the slow subscriber did not catch up without loss",
                    f.subscribers
                );
            }
        }
        let errors: Vec<String> = self
            .fanout
            .iter()
            .filter(|f| f.move_errors > 0)
            .map(|f| format!("{} subs: {:?}", f.subscribers, f.errors_by_code))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "\nMove errors by code: {}", errors.join("; "));
        }
    }

    fn analytics_markdown(&self, out: &mut String) {
        use std::fmt::Write;
        let reps = self.analytics.first().map_or(0, |a| a.reps);
        let _ = writeln!(out, "\n### Analytics at scale\n");
        let _ = writeln!(
            out,
            "- per size: a fresh database; synthetic leads with a year of history imported in one ImportLeads stream"
        );
        let _ = writeln!(
            out,
            "- times: median of {reps} after one warmup, ms; GetForecast: 1000 simulations, MONTH, 6 periods; ListStuckLeads: page of 50"
        );
        let _ = writeln!(
            out,
            "- bare SQL, run on the same database directly: `{}` and `{}`; ×SQL = RPC time ÷ both together\n",
            SQL_LEADS, SQL_CHANGES
        );
        let _ = writeln!(
            out,
            "| leads | stage changes | import s | import leads/s | GetPipelineMetrics ms | GetForecast ms | ListStuckLeads ms | SQL leads ms | SQL changes ms | metrics ×SQL | forecast ×SQL | stuck ×SQL |"
        );
        let _ = writeln!(out, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for a in &self.analytics {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
                a.leads,
                a.stage_changes,
                a.import_seconds,
                a.import_leads_per_second,
                a.metrics_ms,
                a.forecast_ms,
                a.stuck_ms,
                a.sql_leads_ms,
                a.sql_changes_ms,
                a.metrics_vs_sql,
                a.forecast_vs_sql,
                a.stuck_vs_sql
            );
        }
        if !self.analytics_growth.is_empty() {
            let _ = writeln!(
                out,
                "\nGrowth from size to size (time at the larger size ÷ time at the smaller):\n"
            );
            let _ = writeln!(
                out,
                "| leads | size × | GetPipelineMetrics × | GetForecast × | ListStuckLeads × | bare SQL × |"
            );
            let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
            for g in &self.analytics_growth {
                let _ = writeln!(
                    out,
                    "| {} → {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    g.from_leads, g.to_leads, g.size_factor, g.metrics, g.forecast, g.stuck, g.sql
                );
            }
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
