//! Databases and servers for the load: fresh SQLite or PostgreSQL databases, the server in-process or as a child process (for its RSS).

use super::*;

/// A database a server runs on, and what to clean up afterwards.
pub(crate) struct Database {
    pub(crate) url: String,
    /// The temporary directory of a fresh SQLite file, removed on drop.
    pub(crate) sqlite_dir: Option<tempfile::TempDir>,
    /// (admin URL, name) of a database made by --fresh-postgres-db.
    pub(crate) fresh_postgres: Option<(String, String)>,
}

impl Database {
    /// The database of --database-url, a fresh PostgreSQL database (--fresh-postgres-db) or a
    /// fresh SQLite file. With `fresh_only`, a given database that is not fresh is refused.
    pub(crate) fn open(
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
                    sqlite_dir: Some(dir),
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
                    sqlite_dir: None,
                    fresh_postgres: Some((url.clone(), name)),
                })
            }
            Some(_) if fresh_only => Err("this mode needs a fresh database".into()),
            Some(url) => Ok(Self {
                url: url.clone(),
                sqlite_dir: None,
                fresh_postgres: None,
            }),
        }
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// Drops a fresh PostgreSQL database and removes a fresh SQLite file's directory, unless
    /// `keep`.
    pub(crate) fn close(mut self, runtime: &tokio::runtime::Runtime, keep: bool) {
        if let Some(dir) = self.sqlite_dir.take()
            && keep
        {
            eprintln!("kept {}", dir.keep().join("leadpipe.db").display());
        }
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
pub(crate) struct ServerSpec {
    /// A `leadpipe serve` child process instead of an in-process server.
    pub(crate) spawn: bool,
    /// The binary to spawn; None for the `leadpipe` next to this one.
    pub(crate) server_bin: Option<std::path::PathBuf>,
    pub(crate) pool_size: u32,
    pub(crate) sqlite_synchronous: Synchronous,
    pub(crate) rate_limit: u32,
    pub(crate) max_streams: usize,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) threads: usize,
    /// --server-threads as given (the child's default is tokio's: one per CPU).
    pub(crate) threads_flag: Option<usize>,
    pub(crate) core: Option<core_affinity::CoreId>,
    pub(crate) pin_cpu: Option<usize>,
}

pub(crate) enum RunningServer {
    InProcess(ServerHandle),
    Child(ChildServer),
}

impl RunningServer {
    /// The process whose memory is the server's alone: only a child's is.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            RunningServer::InProcess(_) => None,
            RunningServer::Child(child) => Some(child.child.id()),
        }
    }

    pub(crate) fn stop(self) {
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
    pub(crate) fn start(
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
            db_timeout: leadpipe::defaults::DB_TIMEOUT,
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
pub(crate) struct ChildServer {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl ChildServer {
    pub(crate) fn spawn(spec: &ServerSpec, database_url: &str) -> Result<Self, BoxError> {
        let exe = match &spec.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("leadpipe"),
        };
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
    pub(crate) async fn wait_serving(&mut self) -> Result<(), BoxError> {
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
    pub(crate) fn stop(mut self) -> Result<(), String> {
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
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RssStats {
    pub(crate) max_kib: u64,
    pub(crate) mean_kib: u64,
    pub(crate) samples: usize,
}

/// Samples a process's RSS every 100 ms from `from` until `until`.
pub(crate) fn sample_rss(
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

pub(crate) struct ServerHandle {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) thread: std::thread::JoinHandle<Result<(), String>>,
}

impl ServerHandle {
    pub(crate) fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| "server thread panicked".to_string())?
    }
}

/// Starts the server in a tokio runtime of its own on a dedicated OS thread, listening on
/// 127.0.0.1 with an ephemeral port.
pub(crate) fn start_server(
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
