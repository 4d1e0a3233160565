//! WatchStageChanges subscribers opened beside the scenarios, and their delivery latency.

use super::*;

pub(crate) struct SubscriberState {
    /// Events whose change_time (unix µs) is at least this are recorded; i64::MAX: none.
    pub(crate) record_from_us: AtomicI64,
    /// One histogram per shared channel: one per stream would multiply their memory by the streams.
    pub(crate) histograms: Vec<Mutex<Histogram<u64>>>,
    /// The highest sequence any stream has received.
    pub(crate) max_sequence: AtomicI64,
    /// Times a stream received a sequence other than the one after its previous event.
    pub(crate) gaps: AtomicU64,
    /// Events received in total, recorded or not.
    pub(crate) received: AtomicU64,
    /// Subscribers that have received at least one event.
    pub(crate) live: AtomicUsize,
    /// Recorded deliveries whose receive time preceded change_time (clamped to 0).
    pub(crate) negative: AtomicU64,
    /// Streams that failed or ended.
    pub(crate) broken: AtomicU64,
}

pub(crate) struct Subscribers {
    pub(crate) state: Arc<SubscriberState>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) channels: usize,
}

impl Subscribers {
    /// Opens `count` streams (new events only) over ceil(count / per_channel) shared channels
    /// and waits until every one of them delivers an event.
    pub(crate) async fn open(
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
        // A stream may be registered on the server a moment after its headers arrive.
        let state = &subscribers.state;
        let live = probe_until(probe_channel, || {
            if state.broken.load(Ordering::Relaxed) > 0 {
                return Err("a subscriber stream broke".into());
            }
            Ok(state.live.load(Ordering::Relaxed) >= count)
        })
        .await;
        if let Err(error) = live {
            let live = subscribers.state.live.load(Ordering::Relaxed);
            subscribers.close().await;
            return Err(
                format!("only {live} of {count} subscriber streams became live: {error}").into(),
            );
        }
        Ok(subscribers)
    }

    pub(crate) fn record_from(&self, unix_us: i64) {
        for histogram in &self.state.histograms {
            histogram.lock().expect("histogram lock").reset();
        }
        self.state.record_from_us.store(unix_us, Ordering::Relaxed);
    }

    /// Waits until deliveries have settled (no event for 200 ms, at most 10 s), stops
    /// recording and returns the cell's delivery statistics.
    pub(crate) async fn harvest(&mut self) -> Delivery {
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

    pub(crate) async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Creates probe leads (one per 100 ms, at most 30 s) until `done` says so, or fails: streams
/// deliver new events only, so a delivered probe is how a stream is known to be registered.
pub(crate) async fn probe_until(
    channel: &Channel,
    done: impl Fn() -> Result<bool, String>,
) -> Result<(), BoxError> {
    let mut client = lead_client(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    while !done()? {
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
