//! The scenario table: seeding, client loops and one cell per scenario and client count.

use super::*;

/// A lead a `move` client owns, and whether it is in `qualification` now.
pub(crate) struct MoveLead {
    pub(crate) id: String,
    pub(crate) in_b: AtomicBool,
}

/// Data every client of a cell shares.
pub(crate) struct Fixture {
    pub(crate) seeded: Vec<String>,
    pub(crate) move_leads: Vec<MoveLead>,
    pub(crate) per_client: usize,
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Channel, BoxError> {
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

pub(crate) async fn run(
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
        .any(|s| matches!(s, Scenario::Move | Scenario::Update | Scenario::Mixed));
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

pub(crate) async fn check_serving(channel: &Channel) -> Result<(), BoxError> {
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
pub(crate) const SEED_LABEL: &str = "bench_run";

/// Imports `seeds` plain leads and `movers` leads with a contact (so that they may enter
/// qualification) in one ImportLeads stream, and lists their ids back: ImportLeads reports
/// counts, not ids. Leads start in the pipeline's first stage, as CreateLead would put them.
pub(crate) async fn seed_by_import(
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
            ..Default::default()
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
pub(crate) async fn list_tagged(
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
                as_of: None,
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

pub(crate) fn list_request() -> pb::ListLeadsRequest {
    pb::ListLeadsRequest {
        page_size: 50,
        page_token: String::new(),
        filter: LIST_FILTER.into(),
        order_by: String::new(),
        as_of: None,
    }
}

pub(crate) fn lead_to_create(label: &str, n: usize, with_contact: bool) -> pb::Lead {
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

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// SplitMix64: a small, fast, good-enough PRNG for picking ids and operations.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub(crate) struct ClientOutcome {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) last_end: Option<Instant>,
}

impl ClientOutcome {
    /// Waits for every client task and adds up what they measured; a task that panicked counts
    /// as one error.
    pub(crate) async fn gather(tasks: Vec<tokio::task::JoinHandle<ClientOutcome>>) -> Self {
        let mut total = Self::new();
        for task in tasks {
            match task.await {
                Ok(outcome) => {
                    total
                        .histogram
                        .add(&outcome.histogram)
                        .expect("histograms share bounds");
                    total.ok += outcome.ok;
                    for (code, n) in outcome.errors {
                        *total.errors.entry(code).or_default() += n;
                    }
                    total.last_end = total.last_end.max(outcome.last_end);
                }
                Err(error) => *total.errors.entry(format!("panic: {error}")).or_default() += 1,
            }
        }
        total
    }

    pub(crate) fn new() -> Self {
        Self {
            histogram: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            last_end: None,
        }
    }

    /// Records one timed call (when `measured`); returns whether it failed, so that a mover
    /// can re-read its lead's stage.
    pub(crate) fn record(
        &mut self,
        result: Result<Result<(), tonic::Status>, tokio::time::error::Elapsed>,
        started: Instant,
        ended: Instant,
        measured: bool,
    ) -> bool {
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(status)) => Some(format!("{:?}", status.code())),
            Err(_) => Some("Timeout".to_string()),
        };
        if measured {
            self.last_end = Some(ended);
            match &failure {
                None => {
                    self.ok += 1;
                    self.histogram
                        .saturating_record(micros(ended - started).max(1));
                }
                Some(code) => *self.errors.entry(code.clone()).or_default() += 1,
            }
        }
        failure.is_some()
    }
}

pub(crate) struct CellPlan {
    pub(crate) scenario: Scenario,
    pub(crate) measure_start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) max_requests: Option<u64>,
    pub(crate) budget: Arc<AtomicU64>,
    pub(crate) request_timeout: Duration,
}

pub(crate) async fn client_loop(
    channel: Channel,
    fixture: Arc<Fixture>,
    plan: Arc<CellPlan>,
    client: usize,
) -> ClientOutcome {
    let mut leads = lead_client(&channel);
    let mut health = health_client(&channel);
    let mut rng =
        Rng::new(((client as u64 + 1) * 0x1000_0001) ^ unix_micros(SystemTime::now()) as u64);
    let mut outcome = ClientOutcome::new();
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
            Scenario::Update => Op::Update,
            Scenario::Mixed | Scenario::All => match rng.below(100) {
                0..60 => Op::Get,
                60..80 => Op::List,
                80..90 => Op::Create,
                _ => Op::Move,
            },
        };
        // For moves: the lead, and the stage it goes to.
        let mover = match op {
            Op::Move | Op::Update => {
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
                    leads
                        .get_lead(pb::GetLeadRequest { as_of: None, id })
                        .await
                        .map(drop)
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
                Op::Update => {
                    let lead = mover.expect("an update has a lead");
                    // A new amount every time: an update that changes nothing writes nothing.
                    let units = 1_000 + move_turn as i64;
                    leads
                        .update_lead(pb::UpdateLeadRequest {
                            lead: Some(pb::Lead {
                                id: lead.id.clone(),
                                amount: Some(pb::Money {
                                    currency_code: "EUR".into(),
                                    units,
                                    nanos: 0,
                                }),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["amount".into()],
                            }),
                        })
                        .await
                        .map(drop)
                }
            }
        };
        let result = tokio::time::timeout(plan.request_timeout, call).await;
        let failed = outcome.record(result, started, Instant::now(), measured);
        if failed && let Some(lead) = mover {
            reread_stage(&mut leads, lead, plan.request_timeout).await;
        }
    }
    outcome
}

/// Moves `lead` to the other of its two stages.
pub(crate) async fn move_once(
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
pub(crate) async fn reread_stage(
    client: &mut LeadServiceClient<AuthChannel>,
    lead: &MoveLead,
    timeout: Duration,
) {
    if let Ok(Ok(current)) = tokio::time::timeout(
        timeout,
        client.get_lead(pb::GetLeadRequest {
            as_of: None,
            id: lead.id.clone(),
        }),
    )
    .await
    {
        lead.in_b
            .store(current.into_inner().stage == STAGE_B, Ordering::Relaxed);
    }
}

pub(crate) async fn run_cell(
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
    let ClientOutcome {
        histogram,
        ok,
        errors,
        last_end,
    } = ClientOutcome::gather(tasks).await;
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
