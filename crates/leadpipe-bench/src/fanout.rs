//! Fan-out: idle subscribers under paced moves, memory per subscriber, and a slow subscriber.

use super::*;

/// When a paced mover moves, and which moves count.
pub(crate) struct Pace {
    pub(crate) first_tick: Instant,
    pub(crate) period: Duration,
    pub(crate) measure_start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) request_timeout: Duration,
}

/// Moves this client's leads once per `period` (a missed tick is skipped, not made up, so the
/// achieved rate shows when the server cannot keep up).
pub(crate) async fn paced_mover(
    channel: Channel,
    fixture: Arc<Fixture>,
    client: usize,
    pace: Pace,
) -> ClientOutcome {
    let mut leads = lead_client(&channel);
    let mut interval = tokio::time::interval_at(pace.first_tick.into(), pace.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut outcome = ClientOutcome::new();
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
        let measured = started >= pace.measure_start;
        if outcome.record(result, started, Instant::now(), measured) {
            reread_stage(&mut leads, lead, pace.request_timeout).await;
        }
    }
    outcome
}

pub(crate) struct SlowState {
    /// The highest sequence received; -1 before the first event.
    pub(crate) last_sequence: AtomicI64,
    /// change_time of that event, unix µs.
    pub(crate) last_change_us: AtomicI64,
    pub(crate) received: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// Set once the moves stop: read without pausing.
    pub(crate) drain: AtomicBool,
    pub(crate) error: Mutex<Option<String>>,
}

/// A subscriber that pauses after every event, on a connection of its own: HTTP/2 flow control
/// also applies per connection, so a reader that falls behind would hold back the streams that
/// share its connection. If its stream ends it resumes with after_sequence, as clients should.
pub(crate) struct SlowSubscriber {
    pub(crate) state: Arc<SlowState>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// How often the slow subscriber may resume its stream.
pub(crate) const SLOW_MAX_RECONNECTS: u64 = 5;

impl SlowSubscriber {
    pub(crate) async fn open(addr: SocketAddr, delay: Duration) -> Result<Self, BoxError> {
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

    pub(crate) async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub(crate) async fn slow_loop(
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

pub(crate) async fn fanout_cell(
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
        probe_until(&channels[0], || {
            Ok(state.received.load(Ordering::Relaxed) > 0)
        })
        .await?;
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
    let ClientOutcome {
        histogram,
        ok: moves,
        errors,
        ..
    } = ClientOutcome::gather(tasks).await;
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_settled = server_pid.and_then(rss_kib);
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
            per_subscriber_kib: per_subscriber(rss_before, rss_after, subscribers),
            during_moves: server_rss,
            settled_kib: rss_settled,
            per_subscriber_settled_kib: per_subscriber(rss_before, rss_settled, subscribers),
        }),
        slow_subscriber: slow_result,
    })
}

fn per_subscriber(before: Option<u64>, after: Option<u64>, subscribers: usize) -> Option<f64> {
    Some((after? as f64 - before? as f64) / subscribers as f64)
}

pub(crate) const DELIVERY_CLOCK: &str = "driver receive wall clock − event.change_time (stamped by the \
server in the move's transaction; same host, same clock)";
