//! Import-stall mode: a tenant's MoveLead latency without, then during, a large ImportLeads of
//! synthetic leads with history into the same tenant.

use super::*;

pub(crate) async fn import_stall_cell(
    cli: &Cli,
    addr: SocketAddr,
    leads: usize,
    clients: usize,
) -> Result<ImportStallResult, BoxError> {
    let channels: Vec<Channel> =
        futures::future::try_join_all((0..=clients).map(|_| connect(addr))).await?;
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
    let movers = &channels[1..];

    let quiet = run_cell(cli, Scenario::Move, movers, &fixture, None, None).await;
    eprintln!(
        "move    clients={clients:<4} without import {:>10.1} req/s  p99 {} µs",
        quiet.throughput_rps, quiet.latency_us.p99
    );

    let SyntheticImport {
        messages, producer, ..
    } = synthetic_import(leads, "stall");
    eprintln!("importing {leads} synthetic leads with ImportLeads while moving");
    let started = Instant::now();
    let mut importer = lead_client(&channels[0]);
    let import = tokio::spawn(async move { importer.import_leads(messages).await });
    let during = run_cell(cli, Scenario::Move, movers, &fixture, None, None).await;
    let import_ran_throughout = !import.is_finished();
    let response = import
        .await?
        .map_err(|status| format!("ImportLeads of {leads} leads: {status}"))?
        .into_inner();
    let import_seconds = started.elapsed().as_secs_f64();
    let _ = producer.await;
    eprintln!(
        "move    clients={clients:<4} during import  {:>10.1} req/s  p99 {} µs  (import: {} leads in {import_seconds:.1} s)",
        during.throughput_rps, during.latency_us.p99, response.imported
    );
    let ratio = |a: u64, b: u64| if a > 0 { b as f64 / a as f64 } else { 0.0 };
    Ok(ImportStallResult {
        leads,
        imported: response.imported,
        clients,
        import_seconds,
        import_ran_throughout,
        moves_without: quiet.requests,
        moves_during: during.requests,
        rate_without_rps: quiet.throughput_rps,
        rate_during_rps: during.throughput_rps,
        p99_ratio: ratio(quiet.latency_us.p99, during.latency_us.p99),
        p50_ratio: ratio(quiet.latency_us.p50, during.latency_us.p50),
        latency_without_us: quiet.latency_us,
        latency_during_us: during.latency_us,
        errors_during: during.errors_by_code,
    })
}
