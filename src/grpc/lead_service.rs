//! `leadpipe.v1.LeadService`.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::convert::lead_fields_from_proto;
use super::error::{invalid_argument, invalid_field};
use super::{context, pb};
use crate::app::api_keys::KeyName;
use crate::app::events::EventFilter;
use crate::app::forecast::ForecastService;
use crate::app::import::ImportService;
use crate::app::leads::{Idempotency, LeadListQuery, LeadService, MoveCommand, NewLead};
use crate::domain::Violations;
use crate::domain::filter::parse_filter;
use crate::domain::history::MAX_NOTE_LEN;
use crate::domain::ids::{LeadId, PipelineId, RequestId, StageKey};
use crate::domain::lead::{Etag, LeadField, validate_text};
use crate::domain::listing::parse_order_by;

pub struct LeadApi {
    pub leads: LeadService,
    pub import: ImportService,
    /// Imports retrain the learned model and rescore open leads before they return.
    pub forecasts: ForecastService,
}

fn lead_id(field: &str, value: &str) -> Result<LeadId, Status> {
    LeadId::parse(value).map_err(|e| invalid_field(field, e))
}

fn idempotency(
    request_id: &str,
    request: impl serde::Serialize,
) -> Result<Option<Idempotency>, Status> {
    let Some(request_id) =
        RequestId::parse_optional(request_id).map_err(|e| invalid_field("request_id", e))?
    else {
        return Ok(None);
    };
    let digest = Sha256::digest(serde_json::to_vec(&request).unwrap_or_default());
    Ok(Some(Idempotency {
        request_id,
        request_hash: digest.iter().map(|b| format!("{b:02x}")).collect(),
    }))
}

fn page_size(value: i32) -> Result<u64, Status> {
    u64::try_from(value).map_err(|_| invalid_field("page_size", "must not be negative"))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StageChangeEvent, Status>> + Send>>;

fn event_filter(request: &pb::WatchStageChangesRequest) -> Result<EventFilter, Status> {
    let mut violations = Violations::default();
    let pipeline_id = if request.pipeline_id.is_empty() {
        None
    } else {
        violations.check("pipeline_id", PipelineId::parse(&request.pipeline_id))
    };
    let stages = request
        .stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| violations.check(&format!("stages[{i}]"), StageKey::parse(s)))
        .collect();
    let lead_id = if request.lead_id.is_empty() {
        None
    } else {
        violations.check("lead_id", LeadId::parse(&request.lead_id))
    };
    violations.into_result().map_err(invalid_argument)?;
    Ok(EventFilter {
        pipeline_id,
        stages,
        owner: (!request.owner.is_empty()).then(|| request.owner.clone()),
        lead_id,
    })
}

#[tonic::async_trait]
impl pb::lead_service_server::LeadService for LeadApi {
    type WatchStageChangesStream = EventStream;

    async fn import_leads(
        &self,
        request: Request<tonic::Streaming<pb::ImportLeadsRequest>>,
    ) -> Result<Response<pb::ImportLeadsResponse>, Status> {
        let ctx = context(&request);
        let response = super::import::import_and_rescore(
            &self.import,
            &self.forecasts,
            &ctx,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn watch_stage_changes(
        &self,
        request: Request<pb::WatchStageChangesRequest>,
    ) -> Result<Response<Self::WatchStageChangesStream>, Status> {
        let ctx = context(&request);
        let key = request.extensions().get::<KeyName>().cloned();
        let request = request.into_inner();
        let filter = event_filter(&request)?;
        let events = self
            .leads
            .events()
            .subscribe(&ctx, key, request.after_sequence, filter)
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events).map(|item| {
            item.map(|event| pb::StageChangeEvent::from(event.as_ref()))
                .map_err(|error| Status::from(*error))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_lead(
        &self,
        request: Request<pb::CreateLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let Some(lead) = request.lead else {
            return Err(invalid_field("lead", "is required"));
        };
        let mut violations = Violations::default();
        let fields = lead_fields_from_proto(&lead, "lead", &mut violations);
        let pipeline_id = if lead.pipeline_id.is_empty() {
            Some(PipelineId::default_pipeline())
        } else {
            violations.check("lead.pipeline_id", PipelineId::parse(&lead.pipeline_id))
        };
        violations.check("request_id", RequestId::parse_optional(&request.request_id));
        violations.into_result().map_err(invalid_argument)?;
        let pipeline_id = pipeline_id.expect("validated");
        let idempotency = idempotency(&request.request_id, (&fields, pipeline_id.as_str()))?;
        let created = self
            .leads
            .create(
                &ctx,
                NewLead {
                    fields,
                    pipeline_id,
                },
                idempotency,
            )
            .await?;
        Ok(Response::new((&created).into()))
    }

    async fn get_lead(
        &self,
        request: Request<pb::GetLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let id = lead_id("id", &request.get_ref().id)?;
        let lead = self.leads.get(&ctx, &id).await?;
        Ok(Response::new((&lead).into()))
    }

    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let page_size = violations.check(
            "page_size",
            u64::try_from(request.page_size).map_err(|_| "must not be negative".to_string()),
        );
        let filter = violations.check(
            "filter",
            parse_filter(&request.filter).map_err(|e| e.to_string()),
        );
        let order = violations.check("order_by", parse_order_by(&request.order_by));
        violations.into_result().map_err(invalid_argument)?;
        let page = self
            .leads
            .list(
                &ctx,
                LeadListQuery {
                    filter: filter.flatten(),
                    filter_text: request.filter,
                    order: order.expect("validated"),
                    page_size: page_size.expect("validated"),
                    page_token: request.page_token,
                },
            )
            .await?;
        Ok(Response::new(pb::ListLeadsResponse {
            leads: page.leads.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        }))
    }

    async fn update_lead(
        &self,
        request: Request<pb::UpdateLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let Some(lead) = request.lead else {
            return Err(invalid_field("lead", "is required"));
        };
        let mut violations = Violations::default();
        let id = violations.check("lead.id", LeadId::parse(&lead.id));
        let expected_version = violations.check("lead.etag", Etag::parse_optional(&lead.etag));
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let mask: Vec<LeadField> = if paths.is_empty() {
            LeadField::all()
        } else {
            paths
                .iter()
                .enumerate()
                .filter_map(|(i, path)| {
                    violations.check(&format!("update_mask.paths[{i}]"), LeadField::parse(path))
                })
                .collect()
        };
        let mut field_violations = Violations::default();
        let fields = lead_fields_from_proto(&lead, "lead", &mut field_violations);
        if let Err(all) = field_violations.into_result() {
            violations.extend(
                all.into_iter()
                    .filter(|v| {
                        let path = v.field.strip_prefix("lead.").unwrap_or(&v.field);
                        mask.iter().any(|f| f.covers(path))
                    })
                    .collect(),
            );
        }
        violations.into_result().map_err(invalid_argument)?;
        let updated = self
            .leads
            .update(
                &ctx,
                &id.expect("validated"),
                &fields,
                &mask,
                expected_version.flatten(),
            )
            .await?;
        Ok(Response::new((&updated).into()))
    }

    async fn delete_lead(
        &self,
        request: Request<pb::DeleteLeadRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = context(&request);
        let request = request.get_ref();
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let expected_version = violations.check("etag", Etag::parse_optional(&request.etag));
        violations.into_result().map_err(invalid_argument)?;
        self.leads
            .delete(&ctx, &id.expect("validated"), expected_version.flatten())
            .await?;
        Ok(Response::new(()))
    }

    async fn move_lead(
        &self,
        request: Request<pb::MoveLeadRequest>,
    ) -> Result<Response<pb::Lead>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let to = violations.check("stage", StageKey::parse(&request.stage));
        let expected_version = violations.check("etag", Etag::parse_optional(&request.etag));
        violations.check("note", validate_text(&request.note, MAX_NOTE_LEN));
        violations.check("request_id", RequestId::parse_optional(&request.request_id));
        violations.into_result().map_err(invalid_argument)?;
        let idempotency = idempotency(
            &request.request_id,
            (&request.id, &request.stage, &request.etag, &request.note),
        )?;
        let moved = self
            .leads
            .move_lead(
                &ctx,
                MoveCommand {
                    id: id.expect("validated"),
                    to: to.expect("validated"),
                    expected_version: expected_version.flatten(),
                    idempotency,
                    note: request.note.trim().to_owned(),
                },
            )
            .await?;
        Ok(Response::new((&moved).into()))
    }

    async fn check_move(
        &self,
        request: Request<pb::CheckMoveRequest>,
    ) -> Result<Response<pb::CheckMoveResponse>, Status> {
        let ctx = context(&request);
        let request = request.get_ref();
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let to = violations.check("stage", StageKey::parse(&request.stage));
        violations.into_result().map_err(invalid_argument)?;
        let refusals = self
            .leads
            .check_move(&ctx, &id.expect("validated"), &to.expect("validated"))
            .await?;
        Ok(Response::new(pb::CheckMoveResponse {
            allowed: refusals.is_empty(),
            violations: refusals
                .into_iter()
                .map(|v| pb::MoveViolation {
                    r#type: v.kind.as_str().to_owned(),
                    subject: v.subject,
                    description: v.description,
                })
                .collect(),
        }))
    }

    async fn list_stage_changes(
        &self,
        request: Request<pb::ListStageChangesRequest>,
    ) -> Result<Response<pb::ListStageChangesResponse>, Status> {
        let ctx = context(&request);
        let request = request.get_ref();
        let id = lead_id("lead_id", &request.lead_id)?;
        let size = page_size(request.page_size)?;
        let (changes, next_page_token) = self
            .leads
            .list_stage_changes(&ctx, &id, size, &request.page_token)
            .await?;
        Ok(Response::new(pb::ListStageChangesResponse {
            stage_changes: changes.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
