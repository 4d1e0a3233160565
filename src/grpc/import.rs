//! `LeadService.ImportLeads`: validates each streamed lead and imports them in batches.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::Status;

use super::convert::{lead_fields_from_proto, timestamp_to_datetime};
use super::pb;
use crate::app::RequestContext;
use crate::app::forecast::ForecastService;
use crate::app::import::{BATCH_SIZE, ImportItem, ImportOutcome, ImportService};
use crate::domain::Violations;
use crate::domain::history::{MAX_NOTE_LEN, StageChange};
use crate::domain::ids::{LeadId, PipelineId, StageKey};
use crate::domain::import::{ImportedChange, check_history, validate_external_id};
use crate::domain::lead::{Lead, validate_text};
use crate::domain::policy::CompiledPipeline;

const MAX_REPORTED_ERRORS: usize = 1000;

/// The whole of `ImportLeads`: imports the messages, then retrains the model of each pipeline
/// that received leads and rescores its open leads. `leadpipe import` and `leadpipe demo` run
/// this too, so a CSV row is validated exactly as the RPC validates a message.
pub async fn import_and_rescore(
    service: &ImportService,
    forecasts: &ForecastService,
    ctx: &RequestContext,
    stream: impl Stream<Item = Result<pb::ImportLeadsRequest, Status>> + Unpin,
) -> Result<pb::ImportLeadsResponse, Status> {
    let (response, pipelines) = import_leads(service, ctx, stream).await?;
    service.finished(response.imported as u64).await?;
    if response.imported > 0 {
        for pipeline in pipelines {
            forecasts.rescore(ctx, &pipeline).await?;
        }
    }
    Ok(response)
}

async fn import_leads(
    service: &ImportService,
    ctx: &RequestContext,
    mut stream: impl Stream<Item = Result<pb::ImportLeadsRequest, Status>> + Unpin,
) -> Result<(pb::ImportLeadsResponse, Vec<PipelineId>), Status> {
    let mut response = pb::ImportLeadsResponse::default();
    let mut pipelines: HashMap<PipelineId, Option<Arc<CompiledPipeline>>> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    let mut index = 0i64;
    // A message that cannot be decoded is the client's fault, not an internal error.
    while let Some(message) =
        stream
            .next()
            .await
            .transpose()
            .map_err(|status| match status.code() {
                tonic::Code::Internal => Status::invalid_argument(format!(
                    "message {index} of the import stream could not be decoded: {}",
                    status.message()
                )),
                _ => status,
            })?
    {
        response.received += 1;
        match validate(service, ctx, &mut pipelines, index, message).await? {
            Ok(item) => batch.push(item),
            Err(error) => record(&mut response, error),
        }
        if batch.len() == BATCH_SIZE {
            flush(service, ctx, &mut batch, &mut response).await?;
        }
        index += 1;
    }
    flush(service, ctx, &mut batch, &mut response).await?;
    let touched = pipelines
        .into_iter()
        .filter_map(|(id, compiled)| compiled.map(|_| id))
        .collect();
    Ok((response, touched))
}

fn record(response: &mut pb::ImportLeadsResponse, error: pb::ImportError) {
    response.failed += 1;
    if response.errors.len() < MAX_REPORTED_ERRORS {
        response.errors.push(error);
    }
}

async fn flush(
    service: &ImportService,
    ctx: &RequestContext,
    batch: &mut Vec<ImportItem>,
    response: &mut pb::ImportLeadsResponse,
) -> Result<(), Status> {
    if batch.is_empty() {
        return Ok(());
    }
    let externals: HashMap<i64, String> = batch
        .iter()
        .map(|i| (i.index, i.lead.external_id.clone().unwrap_or_default()))
        .collect();
    let imported_before = response.imported as u64;
    for (index, outcome) in service.import(ctx, std::mem::take(batch)).await? {
        match outcome {
            ImportOutcome::Imported => response.imported += 1,
            ImportOutcome::AlreadyImported => response.already_imported += 1,
            ImportOutcome::Failed(reason) => record(
                response,
                pb::ImportError {
                    index,
                    external_id: externals.get(&index).cloned().unwrap_or_default(),
                    field: String::new(),
                    reason,
                },
            ),
        }
    }
    service
        .grew(imported_before, response.imported as u64)
        .await?;
    Ok(())
}

/// The outer error is a failure of the whole import; the inner one refuses just this lead.
async fn validate(
    service: &ImportService,
    ctx: &RequestContext,
    pipelines: &mut HashMap<PipelineId, Option<Arc<CompiledPipeline>>>,
    index: i64,
    message: pb::ImportLeadsRequest,
) -> Result<Result<ImportItem, pb::ImportError>, Status> {
    let refuse = |field: &str, reason: String| pb::ImportError {
        index,
        external_id: message.external_id.clone(),
        field: field.to_owned(),
        reason,
    };
    if let Err(reason) = validate_external_id(&message.external_id) {
        return Ok(Err(refuse("external_id", reason)));
    }
    let proto_lead = message.lead.clone().unwrap_or_default();
    let mut violations = Violations::default();
    let fields = lead_fields_from_proto(&proto_lead, "lead", &mut violations);
    let pipeline_id = if proto_lead.pipeline_id.is_empty() {
        Some(PipelineId::default_pipeline())
    } else {
        violations.check(
            "lead.pipeline_id",
            PipelineId::parse(&proto_lead.pipeline_id),
        )
    };
    let history = history_from_proto(&message.history, &mut violations);
    if let Err(found) = violations.into_result() {
        let first = &found[0];
        return Ok(Err(refuse(&first.field, first.description.clone())));
    }
    let pipeline_id = pipeline_id.expect("validated");
    if !pipelines.contains_key(&pipeline_id) {
        let compiled = service.pipeline(ctx, &pipeline_id).await?;
        pipelines.insert(pipeline_id.clone(), compiled);
    }
    let Some(Some(pipeline)) = pipelines.get(&pipeline_id) else {
        return Ok(Err(refuse(
            "lead.pipeline_id",
            format!("pipeline {:?} does not exist", pipeline_id.as_str()),
        )));
    };
    let definition = pipeline.definition();
    let now = crate::app::now();
    let history = if history.is_empty() {
        vec![ImportedChange {
            from_stage: None,
            to_stage: definition.first_stage().key.clone(),
            change_time: now,
            actor: String::new(),
            note: String::new(),
        }]
    } else {
        history
    };
    let timeline = match check_history(definition, &history, now) {
        Ok(timeline) => timeline,
        Err((field, reason)) => return Ok(Err(refuse(&field, reason))),
    };
    let id = LeadId::generate();
    let lead = Lead {
        id,
        fields,
        pipeline_id: pipeline_id.clone(),
        stage: timeline.stage,
        win_probability: timeline.probability,
        create_time: timeline.create_time,
        update_time: timeline.stage_enter_time,
        stage_enter_time: timeline.stage_enter_time,
        close_time: timeline.close_time,
        version: 1,
        external_id: Some(message.external_id.trim().to_owned()),
    };
    let history = history
        .into_iter()
        .map(|change| StageChange {
            sequence: 0,
            lead_id: id,
            pipeline_id: pipeline_id.clone(),
            from_stage: change.from_stage,
            to_stage: change.to_stage,
            change_time: change.change_time,
            // The recorded actor is the caller's identity; the source system's actor is kept
            // in the note.
            actor: ctx.actor.clone(),
            note: if change.actor.is_empty() {
                change.note
            } else if change.note.is_empty() {
                format!("imported; by {} in the source system", change.actor)
            } else {
                format!(
                    "{} (imported; by {} in the source system)",
                    change.note, change.actor
                )
            },
            imported: true,
        })
        .collect();
    Ok(Ok(ImportItem {
        index,
        lead,
        history,
    }))
}

fn history_from_proto(
    history: &[pb::ImportedStageChange],
    violations: &mut Violations,
) -> Vec<ImportedChange> {
    history
        .iter()
        .enumerate()
        .filter_map(|(i, change)| {
            let at = |field: &str| format!("history[{i}].{field}");
            let from_stage = if change.from_stage.is_empty() {
                Some(None)
            } else {
                violations
                    .check(&at("from_stage"), StageKey::parse(&change.from_stage))
                    .map(Some)
            };
            let to_stage = violations.check(&at("to_stage"), StageKey::parse(&change.to_stage));
            let change_time = match &change.change_time {
                Some(ts) => violations.check(&at("change_time"), timestamp_to_datetime(ts)),
                None => {
                    violations.push(at("change_time"), "is required");
                    None
                }
            };
            violations.check(&at("note"), validate_text(&change.note, MAX_NOTE_LEN));
            violations.check(&at("actor"), validate_text(&change.actor, 200));
            Some(ImportedChange {
                from_stage: from_stage?,
                to_stage: to_stage?,
                change_time: change_time?,
                actor: change.actor.trim().to_owned(),
                note: change.note.trim().to_owned(),
            })
        })
        .collect()
}
