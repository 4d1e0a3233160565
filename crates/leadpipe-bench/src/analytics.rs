//! Analytics at scale: import N leads, then time the analytics RPCs beside bare SQL aggregates.

use super::*;

/// Leads generated per chunk while importing (generation overlaps the import).
pub(crate) const ANALYTICS_CHUNK: usize = 5000;

pub(crate) const SQL_LEADS: &str = "SELECT stage, SUM(amount_units), COUNT(*) FROM leads \
                         WHERE tenant_id = $1 GROUP BY stage";
pub(crate) const SQL_CHANGES: &str = "SELECT to_stage, COUNT(*) FROM stage_changes \
                           WHERE tenant_id = $1 GROUP BY to_stage";

pub(crate) async fn analytics_cell(
    cli: &Cli,
    addr: SocketAddr,
    db: &Database,
    leads: usize,
) -> Result<AnalyticsResult, BoxError> {
    use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;
    use sea_orm::{ConnectionTrait, Statement};

    let channel = connect(addr).await?;
    check_serving(&channel).await?;

    let (stage_changes, import_seconds) = if cli.analytics_existing {
        existing_size(db, leads).await?
    } else {
        import_synthetic(&channel, leads).await?
    };
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
    let mut stuck_first = 0.0;
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
        if round == 0 {
            stuck_first = took[2];
        } else {
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
        import_leads_per_second: if import_seconds > 0.0 {
            leads as f64 / import_seconds
        } else {
            0.0
        },
        reps: cli.analytics_reps,
        metrics_ms: metrics,
        forecast_ms: forecast,
        stuck_ms: stuck,
        stuck_first_ms: stuck_first,
        sql_leads_ms: sql_leads,
        sql_changes_ms: sql_changes,
        metrics_vs_sql: metrics / sql,
        forecast_vs_sql: forecast / sql,
        stuck_vs_sql: stuck / sql,
        stuck_first_vs_sql: stuck_first / sql,
        metrics_vs_changes: metrics / sql_changes,
        forecast_vs_changes: forecast / sql_changes,
        stuck_first_vs_changes: stuck_first / sql_changes,
    };
    eprintln!(
        "{leads} leads: metrics {metrics:.1} ms, forecast {forecast:.1} ms, stuck {stuck:.1} ms, \
         bare SQL {sql:.1} ms"
    );
    Ok(result)
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
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

/// Imports `leads` synthetic leads with a year of history: (their stage changes, seconds).
async fn import_synthetic(
    channel: &tonic::transport::Channel,
    leads: usize,
) -> Result<(u64, f64), BoxError> {
    let SyntheticImport {
        messages,
        stage_changes: changes,
        producer,
    } = synthetic_import(leads, "syn");
    eprintln!("importing {leads} synthetic leads with ImportLeads");
    let started = Instant::now();
    let response = lead_client(channel)
        .import_leads(messages)
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
    Ok((stage_changes, import_seconds))
}

/// The stage changes of a database that already holds `leads` leads, which it must.
async fn existing_size(db: &Database, leads: usize) -> Result<(u64, f64), BoxError> {
    use sea_orm::ConnectionTrait;
    let conn = sea_orm::Database::connect(&db.url).await?;
    let count = |table: &str| {
        let sql =
            format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table} WHERE tenant_id = 'default'");
        let statement = sea_orm::Statement::from_string(conn.get_database_backend(), sql);
        let conn = &conn;
        async move {
            let row = conn.query_one_raw(statement).await?.ok_or("no count")?;
            Ok::<i64, BoxError>(row.try_get_by_index(0)?)
        }
    };
    let (found, changes) = (count("leads").await?, count("stage_changes").await?);
    conn.close().await?;
    if found != leads as i64 {
        return Err(format!("--analytics {leads}, but the database holds {found} leads").into());
    }
    eprintln!("timing the {found} existing leads ({changes} stage changes)");
    Ok((changes as u64, 0.0))
}

/// `leads` synthetic ImportLeads messages with a year of history, generated on a blocking
/// thread while they are sent.
pub(crate) struct SyntheticImport {
    pub(crate) messages: tokio_stream::wrappers::ReceiverStream<pb::ImportLeadsRequest>,
    /// The stage changes of the messages generated so far.
    pub(crate) stage_changes: Arc<AtomicU64>,
    /// Ends when every message is generated or the stream is dropped.
    pub(crate) producer: tokio::task::JoinHandle<()>,
}

/// [`SyntheticImport`] of leads with external ids `{prefix}-0`, `{prefix}-1`, …, whose history
/// ends a minute ago (imported history may not be in the future).
pub(crate) fn synthetic_import(leads: usize, prefix: &'static str) -> SyntheticImport {
    use leadpipe::bulk::synthetic;

    let end = chrono::Utc::now() - chrono::Duration::minutes(1);
    let start = end - chrono::Duration::days(365);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportLeadsRequest>(2 * ANALYTICS_CHUNK);
    let stage_changes = Arc::new(AtomicU64::new(0));
    let counted = stage_changes.clone();
    let producer = tokio::task::spawn_blocking(move || {
        for chunk in 0..leads.div_ceil(ANALYTICS_CHUNK) {
            let first = chunk * ANALYTICS_CHUNK;
            let size = ANALYTICS_CHUNK.min(leads - first);
            let generated = synthetic::generate(size, start, end, 1 + chunk as u64).leads;
            for (i, mut message) in generated.into_iter().enumerate() {
                message.external_id = format!("{prefix}-{}", first + i);
                counted.fetch_add(message.history.len() as u64, Ordering::Relaxed);
                if tx.blocking_send(message).is_err() {
                    return;
                }
            }
        }
    });
    SyntheticImport {
        messages: tokio_stream::wrappers::ReceiverStream::new(rx),
        stage_changes,
        producer,
    }
}
