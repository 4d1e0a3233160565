//! Results: what each mode measured, and the Markdown and JSON reports.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
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
pub(crate) struct Delivery {
    /// Open WatchStageChanges streams.
    pub(crate) streams: usize,
    /// Channels (HTTP/2 connections) they share.
    pub(crate) channels: usize,
    /// Deliveries recorded (events × streams) in the measured window.
    pub(crate) events: u64,
    /// Commit-to-delivery latency, µs.
    pub(crate) latency_us: Latency,
    pub(crate) clamped_negative: u64,
    pub(crate) broken_streams: u64,
    /// Times a stream skipped or repeated a sequence (0 unless ImportLeads ran meanwhile).
    pub(crate) sequence_gaps: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CellResult {
    pub(crate) scenario: String,
    pub(crate) clients: usize,
    pub(crate) subscribers: usize,
    /// Successful requests in the measured window.
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) errors_by_code: BTreeMap<String, u64>,
    pub(crate) measured_seconds: f64,
    /// Successful requests per second.
    pub(crate) throughput_rps: f64,
    pub(crate) latency_us: Latency,
    /// throughput / health throughput at the same client count.
    pub(crate) ratio_vs_health: Option<f64>,
    pub(crate) delivery: Option<Delivery>,
    /// The child server's RSS during the measured window (--spawn-server only).
    pub(crate) server_rss: Option<RssStats>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutRss {
    /// With the slow subscriber (if any) open, before the idle ones.
    pub(crate) before_kib: Option<u64>,
    /// With every idle stream registered.
    pub(crate) after_kib: Option<u64>,
    /// (after − before) / subscribers.
    pub(crate) per_subscriber_kib: Option<f64>,
    /// Sampled every 100 ms while the moves were measured.
    pub(crate) during_moves: Option<RssStats>,
    /// With every idle stream still open, a second after the moves stopped. The allocator keeps
    /// the pages that opening thousands of streams at once used and freed until the server's
    /// threads allocate again, so `after_kib` overstates what the streams hold; this does not.
    pub(crate) settled_kib: Option<u64>,
    /// (settled − before) / subscribers.
    pub(crate) per_subscriber_settled_kib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SlowResult {
    pub(crate) delay_ms: f64,
    /// Events it had received when the moves stopped.
    pub(crate) received_by_end: u64,
    /// Sequences committed but not yet received when the moves stopped.
    pub(crate) behind_at_end_events: i64,
    /// Age of the newest event it had received when the moves stopped (receive clock −
    /// change_time).
    pub(crate) last_event_age_at_end_ms: f64,
    /// The last sequence committed (the highest any idle stream received).
    pub(crate) final_sequence: i64,
    /// The last sequence it received before catching up or giving up.
    pub(crate) last_sequence: i64,
    pub(crate) caught_up: bool,
    /// Caught up, with every sequence exactly once and in order.
    pub(crate) lossless: bool,
    pub(crate) catch_up_seconds: f64,
    pub(crate) sequence_gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) reconnects: u64,
    pub(crate) stream_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FanoutResult {
    pub(crate) subscribers: usize,
    pub(crate) channels: usize,
    pub(crate) move_clients: usize,
    pub(crate) target_move_rate: u32,
    /// Successful moves in the measured window.
    pub(crate) moves: u64,
    pub(crate) move_errors: u64,
    pub(crate) errors_by_code: BTreeMap<String, u64>,
    pub(crate) measured_seconds: f64,
    pub(crate) achieved_move_rate: f64,
    pub(crate) move_latency_us: Latency,
    /// How commit-to-delivery latency is measured.
    pub(crate) delivery_clock: &'static str,
    /// Deliveries to the idle streams of events committed in the measured window.
    pub(crate) delivery: Delivery,
    pub(crate) rss: Option<FanoutRss>,
    pub(crate) slow_subscriber: Option<SlowResult>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ImportStallResult {
    /// Leads the ImportLeads stream sent, and imported.
    pub(crate) leads: usize,
    pub(crate) imported: i64,
    /// Move clients.
    pub(crate) clients: usize,
    pub(crate) import_seconds: f64,
    /// Whether the import was still running when the measured window ended.
    pub(crate) import_ran_throughout: bool,
    pub(crate) moves_without: u64,
    pub(crate) moves_during: u64,
    pub(crate) rate_without_rps: f64,
    pub(crate) rate_during_rps: f64,
    /// During ÷ without.
    pub(crate) p99_ratio: f64,
    pub(crate) p50_ratio: f64,
    pub(crate) latency_without_us: Latency,
    pub(crate) latency_during_us: Latency,
    pub(crate) errors_during: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AnalyticsResult {
    pub(crate) leads: usize,
    /// Imported history rows.
    pub(crate) stage_changes: u64,
    pub(crate) import_seconds: f64,
    pub(crate) import_leads_per_second: f64,
    pub(crate) reps: usize,
    /// Medians, ms.
    pub(crate) metrics_ms: f64,
    pub(crate) forecast_ms: f64,
    pub(crate) stuck_ms: f64,
    /// The warm-up ListStuckLeads: it computes the stage thresholds later calls reuse.
    pub(crate) stuck_first_ms: f64,
    pub(crate) sql_leads_ms: f64,
    pub(crate) sql_changes_ms: f64,
    /// RPC time ÷ (sql_leads_ms + sql_changes_ms).
    pub(crate) metrics_vs_sql: f64,
    pub(crate) forecast_vs_sql: f64,
    pub(crate) stuck_vs_sql: f64,
    pub(crate) stuck_first_vs_sql: f64,
    /// RPC time ÷ sql_changes_ms alone (the bare scan of the history).
    pub(crate) metrics_vs_changes: f64,
    pub(crate) forecast_vs_changes: f64,
    pub(crate) stuck_first_vs_changes: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct AnalyticsGrowth {
    pub(crate) from_leads: usize,
    pub(crate) to_leads: usize,
    pub(crate) size_factor: f64,
    pub(crate) metrics: f64,
    pub(crate) forecast: f64,
    pub(crate) stuck: f64,
    pub(crate) stuck_first: f64,
    pub(crate) sql: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Environment {
    pub(crate) mode: String,
    pub(crate) target: String,
    pub(crate) backend: String,
    pub(crate) database: Option<String>,
    pub(crate) sqlite_synchronous: Option<String>,
    pub(crate) server_threads: Option<usize>,
    pub(crate) client_threads: usize,
    pub(crate) pin_server_cpu: Option<usize>,
    pub(crate) pin_client_cpu: Option<usize>,
    pub(crate) cpus: usize,
    /// The in-process server's per-tenant rate limit (0: off).
    pub(crate) server_rate_limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RunSettings {
    pub(crate) clients: Vec<usize>,
    pub(crate) duration_ms: u128,
    pub(crate) warmup_ms: u128,
    pub(crate) max_requests: Option<u64>,
    pub(crate) request_timeout_ms: u128,
    pub(crate) seed_leads: usize,
    pub(crate) move_leads_per_client: usize,
    pub(crate) subscribers: Option<usize>,
    pub(crate) compare_streaming: bool,
    pub(crate) streams_per_channel: usize,
    pub(crate) list_filter: &'static str,
    pub(crate) mixed: &'static str,
    pub(crate) spawn_server: bool,
    pub(crate) fanout: Vec<usize>,
    pub(crate) move_rate: u32,
    pub(crate) fanout_clients: usize,
    pub(crate) slow_subscriber: bool,
    pub(crate) slow_delay_ms: u128,
    pub(crate) analytics: Vec<usize>,
    pub(crate) analytics_reps: usize,
    pub(crate) import_stall: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    pub(crate) clients: usize,
    pub(crate) subscribers: usize,
    pub(crate) throughput_without_rps: f64,
    pub(crate) throughput_with_rps: f64,
    /// with / without.
    pub(crate) ratio: f64,
    pub(crate) delivery_p50_us: u64,
    pub(crate) delivery_p99_us: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) environment: Environment,
    pub(crate) settings: RunSettings,
    pub(crate) cells: Vec<CellResult>,
    pub(crate) streaming_comparison: Vec<Comparison>,
    /// The child server's RSS once the scenario leads were seeded (--spawn-server only).
    pub(crate) server_rss_after_seed_kib: Option<u64>,
    pub(crate) fanout: Vec<FanoutResult>,
    pub(crate) analytics: Vec<AnalyticsResult>,
    pub(crate) analytics_growth: Vec<AnalyticsGrowth>,
    pub(crate) analytics_sql: [&'static str; 2],
    pub(crate) import_stall: Vec<ImportStallResult>,
}

impl Report {
    pub(crate) fn new(cli: &Cli, environment: Environment, outputs: Outputs) -> Self {
        let Outputs {
            mut cells,
            rss_after_seed_kib,
            fanout,
            analytics,
            import_stall,
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
                    stuck_first: factor(a.stuck_first_ms, b.stuck_first_ms),
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
                import_stall: cli.import_stall.clone(),
            },
            cells,
            streaming_comparison,
            server_rss_after_seed_kib: rss_after_seed_kib,
            fanout,
            analytics,
            analytics_growth,
            analytics_sql: [SQL_LEADS, SQL_CHANGES],
            import_stall,
        }
    }

    pub(crate) fn markdown(&self) -> String {
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
        if !self.import_stall.is_empty() {
            self.import_stall_markdown(&mut out);
        }
        out
    }

    pub(crate) fn scenarios_markdown(&self, out: &mut String) {
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

    pub(crate) fn import_stall_markdown(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.settings;
        let _ = writeln!(
            out,
            "\n### MoveLead of a tenant without and during an ImportLeads into it\n"
        );
        let _ = writeln!(
            out,
            "- per cell: a fresh server; moves for warmup {} ms + {} ms without an import, then \
             as long again while one ImportLeads stream sends synthetic leads with a year of history\n",
            s.warmup_ms, s.duration_ms
        );
        let _ = writeln!(
            out,
            "| leads | clients | import s | throughout | moves/s without | during | p50 µs without | during | p99 µs without | during | p99 ratio | errors |"
        );
        let _ = writeln!(out, "|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in &self.import_stall {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {:.2} | {} |",
                r.imported,
                r.clients,
                r.import_seconds,
                if r.import_ran_throughout { "yes" } else { "no" },
                r.rate_without_rps,
                r.rate_during_rps,
                r.latency_without_us.p50,
                r.latency_during_us.p50,
                r.latency_without_us.p99,
                r.latency_during_us.p99,
                r.p99_ratio,
                r.errors_during.values().sum::<u64>()
            );
        }
    }

    pub(crate) fn fanout_markdown(&self, out: &mut String) {
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
                "| subs | RSS before MiB | RSS with subs MiB | KiB per subscriber | RSS max during moves MiB | RSS settled after moves MiB | KiB per subscriber, settled |"
            );
            let _ = writeln!(out, "|--:|--:|--:|--:|--:|--:|--:|");
            let opt =
                |v: Option<u64>| v.map_or_else(|| "-".to_string(), |k| format!("{:.1}", mib(k)));
            for f in &self.fanout {
                if let Some(r) = &f.rss {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        f.subscribers,
                        opt(r.before_kib),
                        opt(r.after_kib),
                        r.per_subscriber_kib
                            .map_or_else(|| "-".to_string(), |k| format!("{k:.1}")),
                        opt(r.during_moves.map(|d| d.max_kib)),
                        opt(r.settled_kib),
                        r.per_subscriber_settled_kib
                            .map_or_else(|| "-".to_string(), |k| format!("{k:.1}")),
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

    pub(crate) fn analytics_markdown(&self, out: &mut String) {
        use std::fmt::Write;
        let reps = self.analytics.first().map_or(0, |a| a.reps);
        let _ = writeln!(out, "\n### Analytics at scale\n");
        let _ = writeln!(
            out,
            "- per size: a fresh database; synthetic leads with a year of history imported in one ImportLeads stream"
        );
        let _ = writeln!(
            out,
            "- times: median of {reps} after one warmup, ms; GetForecast: 1000 simulations, MONTH, 6 periods; ListStuckLeads: page of 50; \"stuck first\" is the warm-up ListStuckLeads, which computes the stage thresholds that later calls reuse for five minutes"
        );
        let _ = writeln!(
            out,
            "- bare SQL, run on the same database directly: `{}` and `{}`; ×SQL = RPC time ÷ both together\n",
            SQL_LEADS, SQL_CHANGES
        );
        let _ = writeln!(
            out,
            "| leads | stage changes | import s | import leads/s | GetPipelineMetrics ms | GetForecast ms | ListStuckLeads ms | stuck first ms | SQL leads ms | SQL changes ms | metrics ×SQL | forecast ×SQL | stuck ×SQL | stuck first ×SQL |"
        );
        let _ = writeln!(
            out,
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for a in &self.analytics {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
                a.leads,
                a.stage_changes,
                a.import_seconds,
                a.import_leads_per_second,
                a.metrics_ms,
                a.forecast_ms,
                a.stuck_ms,
                a.stuck_first_ms,
                a.sql_leads_ms,
                a.sql_changes_ms,
                a.metrics_vs_sql,
                a.forecast_vs_sql,
                a.stuck_vs_sql,
                a.stuck_first_vs_sql
            );
        }
        let _ = writeln!(
            out,
            "\nThe same RPC times ÷ the bare scan of the history alone (`{SQL_CHANGES}`):\n"
        );
        let _ = writeln!(
            out,
            "| leads | metrics ×changes | forecast ×changes | stuck first ×changes |"
        );
        let _ = writeln!(out, "|--:|--:|--:|--:|");
        for a in &self.analytics {
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.2} | {:.2} |",
                a.leads, a.metrics_vs_changes, a.forecast_vs_changes, a.stuck_first_vs_changes
            );
        }
        if !self.analytics_growth.is_empty() {
            let _ = writeln!(
                out,
                "\nGrowth from size to size (time at the larger size ÷ time at the smaller):\n"
            );
            let _ = writeln!(
                out,
                "| leads | size × | GetPipelineMetrics × | GetForecast × | ListStuckLeads × | stuck first × | bare SQL × |"
            );
            let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|");
            for g in &self.analytics_growth {
                let _ = writeln!(
                    out,
                    "| {} → {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    g.from_leads,
                    g.to_leads,
                    g.size_factor,
                    g.metrics,
                    g.forecast,
                    g.stuck,
                    g.stuck_first,
                    g.sql
                );
            }
        }
    }
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
