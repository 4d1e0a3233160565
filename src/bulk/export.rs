//! `leadpipe export`: every lead of a tenant (or those matching a filter) with its history, in
//! the layout `leadpipe import` reads, oldest lead first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::csv::{COLUMNS, lead_to_row};
use crate::api::pb;
use crate::app::AppError;
use crate::app::leads::LeadListQuery;
use crate::domain::filter::parse_filter;
use crate::domain::ids::{LeadId, TenantId};
use crate::domain::listing::parse_order_by;
use crate::store::StoreConfig;

/// Leads per page: the API's largest page, and one history query per page.
const PAGE_SIZE: u64 = 1000;

/// Writes the CSV to `output` (None: standard output); returns the number of leads written.
pub async fn run(
    config: &StoreConfig,
    tenant: &TenantId,
    filter: &str,
    output: Option<&Path>,
) -> Result<u64, String> {
    let parsed = parse_filter(filter).map_err(|e| format!("--filter: {}", e.to_string().trim()))?;
    let order = parse_order_by("create_time").expect("create_time is a sort field");
    let sink: Box<dyn Write> = match output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut writer = ::csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(sink);
    let write_error = |e: ::csv::Error| format!("cannot write the CSV: {e}");
    writer.write_record(COLUMNS).map_err(write_error)?;

    let app = super::open(config).await?;
    let ctx = super::context(tenant, "export");
    let result = async {
        let mut page_token = String::new();
        let mut written = 0u64;
        let mut progress = None;
        loop {
            let page = app
                .leads
                .list(
                    &ctx,
                    LeadListQuery {
                        filter: parsed.clone(),
                        filter_text: filter.to_owned(),
                        order,
                        page_size: PAGE_SIZE,
                        page_token: std::mem::take(&mut page_token),
                        as_of: None,
                    },
                )
                .await
                .map_err(describe)?;
            let bar = progress
                .get_or_insert_with(|| super::progress_bar(page.total_size, "exporting", "leads"));
            let ids: Vec<LeadId> = page.leads.iter().map(|l| l.id).collect();
            let mut histories: HashMap<LeadId, Vec<pb::StageChange>> = HashMap::new();
            for change in app
                .leads
                .stage_changes_of(&ctx, &ids)
                .await
                .map_err(|e| format!("cannot read the history: {}", describe(e)))?
            {
                histories
                    .entry(change.lead_id)
                    .or_default()
                    .push(pb::StageChange::from(&change));
            }
            for lead in &page.leads {
                let history = histories.remove(&lead.id).unwrap_or_default();
                match writer.serialize(lead_to_row(&pb::Lead::from(lead), &history)) {
                    Ok(()) => written += 1,
                    // The reader went away (`leadpipe export | head`): stop quietly, as
                    // other command-line tools do.
                    Err(e) if is_broken_pipe(&e) => return Ok(written),
                    Err(e) => return Err(write_error(e)),
                }
            }
            bar.set_position(written);
            if page.next_page_token.is_empty() {
                bar.finish_and_clear();
                break;
            }
            page_token = page.next_page_token;
        }
        match writer.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(format!("cannot write the CSV: {e}"))
            }
            _ => Ok(written),
        }
    }
    .await;
    app.store.close().await;
    result
}

fn is_broken_pipe(error: &::csv::Error) -> bool {
    matches!(error.kind(), ::csv::ErrorKind::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn describe(error: AppError) -> String {
    match error {
        AppError::InvalidArgument(violations) => violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
