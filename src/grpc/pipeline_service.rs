//! `leadpipe.v1.PipelineService`.

use tonic::{Request, Response, Status};

use super::convert::{finish, page_size, pipeline_definition_from_proto, update_mask};
use super::error::{invalid_argument, invalid_field};
use super::{context, pb};
use crate::app::pipelines::{PipelineField, PipelineService};
use crate::domain::ids::PipelineId;
use crate::domain::lead::Etag;
use crate::domain::pipeline::PipelineDefinition;
use crate::domain::{FieldViolation, Violations, policy};

pub struct PipelineApi {
    pub pipelines: PipelineService,
}

/// Reports the conversion's violations together with everything the policy compiler finds in
/// the rest of the definition, so one response names every bad field.
fn invalid_definition(mut found: Vec<FieldViolation>, definition: &PipelineDefinition) -> Status {
    if let Err(more) = policy::compile(definition.clone()) {
        // Placeholders stand in for malformed kinds, so whole-pipeline findings may be artefacts.
        let kinds_reported = found.iter().any(|v| v.field.ends_with(".kind"));
        for violation in more {
            let duplicate = found.iter().any(|v| v.field == violation.field);
            let artefact = kinds_reported && violation.field == "pipeline.stages";
            if !duplicate && !artefact {
                found.push(violation);
            }
        }
    }
    invalid_argument(found)
}

fn pipeline_id(field: &str, value: &str) -> Result<PipelineId, Status> {
    PipelineId::parse(value).map_err(|e| invalid_field(field, e))
}

#[tonic::async_trait]
impl pb::pipeline_service_server::PipelineService for PipelineApi {
    async fn create_pipeline(
        &self,
        request: Request<pb::CreatePipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let ctx = context(&request);
        let Some(pipeline) = request.into_inner().pipeline else {
            return Err(invalid_field("pipeline", "is required"));
        };
        let mut violations = Violations::default();
        let id = violations.check("pipeline.id", PipelineId::parse(&pipeline.id));
        let definition = pipeline_definition_from_proto(&pipeline, &mut violations);
        violations
            .into_result()
            .map_err(|found| invalid_definition(found, &definition))?;
        let id = finish(Violations::default(), id)?;
        let created = self.pipelines.create(&ctx, id, definition).await?;
        Ok(Response::new((&created).into()))
    }

    async fn get_pipeline(
        &self,
        request: Request<pb::GetPipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let ctx = context(&request);
        let id = pipeline_id("id", &request.get_ref().id)?;
        let pipeline = self.pipelines.get(&ctx, &id).await?;
        Ok(Response::new((&pipeline).into()))
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let ctx = context(&request);
        let request = request.get_ref();
        let mut violations = Violations::default();
        let size = page_size(&mut violations, request.page_size);
        finish(violations, Some(()))?;
        let (pipelines, next_page_token) =
            self.pipelines.list(&ctx, size, &request.page_token).await?;
        Ok(Response::new(pb::ListPipelinesResponse {
            pipelines: pipelines.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_pipeline(
        &self,
        request: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let ctx = context(&request);
        let request = request.into_inner();
        let Some(pipeline) = request.pipeline else {
            return Err(invalid_field("pipeline", "is required"));
        };
        let mut violations = Violations::default();
        let id = violations.check("pipeline.id", PipelineId::parse(&pipeline.id));
        let expected_version =
            violations.check("pipeline.etag", Etag::parse_optional(&pipeline.etag));
        let mask = update_mask(
            &mut violations,
            request.update_mask,
            PipelineField::ALL.to_vec(),
            PipelineField::parse,
        );
        let mut field_violations = Violations::default();
        let definition = pipeline_definition_from_proto(&pipeline, &mut field_violations);
        let touches_stages = mask.contains(&PipelineField::Stages);
        let touches_name = mask.contains(&PipelineField::DisplayName);
        if let Err(all) = field_violations.into_result() {
            violations.extend(
                all.into_iter()
                    .filter(|v| {
                        (touches_stages && v.field.starts_with("pipeline.stages"))
                            || (touches_name && v.field == "pipeline.display_name")
                    })
                    .collect(),
            );
        }
        violations.into_result().map_err(|found| {
            if touches_stages {
                invalid_definition(found, &definition)
            } else {
                invalid_argument(found)
            }
        })?;
        let id = finish(Violations::default(), id)?;
        let updated = self
            .pipelines
            .update(&ctx, &id, &definition, &mask, expected_version.flatten())
            .await?;
        Ok(Response::new((&updated).into()))
    }
}
