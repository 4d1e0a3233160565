//! `PipelineService` requests into app commands. Each conversion checks every field and reports
//! all that are wrong at once.

use super::convert::{finish, page_size, pipeline_definition_from_proto, update_mask};
use super::pb;
use crate::app::AppError;
use crate::app::pipelines::{CreatePipeline, PipelineField, PipelineListQuery, UpdatePipeline};
use crate::domain::ids::PipelineId;
use crate::domain::lead::Etag;
use crate::domain::pipeline::PipelineDefinition;
use crate::domain::{FieldViolation, Violations, policy};

/// The conversion's violations together with everything the policy compiler finds in the rest
/// of the definition, so one response names every bad field.
fn with_definition_findings(
    mut found: Vec<FieldViolation>,
    definition: &PipelineDefinition,
) -> AppError {
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
    AppError::InvalidArgument(found)
}

fn required(pipeline: Option<pb::Pipeline>) -> Result<pb::Pipeline, AppError> {
    pipeline.ok_or_else(|| AppError::invalid("pipeline", "is required"))
}

impl TryFrom<pb::CreatePipelineRequest> for CreatePipeline {
    type Error = AppError;

    fn try_from(request: pb::CreatePipelineRequest) -> Result<Self, AppError> {
        let pipeline = required(request.pipeline)?;
        let mut violations = Violations::default();
        let id = violations.check("pipeline.id", PipelineId::parse(&pipeline.id));
        let definition = pipeline_definition_from_proto(&pipeline, &mut violations);
        violations
            .into_result()
            .map_err(|found| with_definition_findings(found, &definition))?;
        let id = finish(Violations::default(), id)?;
        Ok(CreatePipeline { id, definition })
    }
}

impl TryFrom<pb::ListPipelinesRequest> for PipelineListQuery {
    type Error = AppError;

    fn try_from(request: pb::ListPipelinesRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let page_size = page_size(&mut violations, request.page_size);
        finish(
            violations,
            Some(PipelineListQuery {
                page_size,
                page_token: request.page_token,
            }),
        )
    }
}

impl TryFrom<pb::UpdatePipelineRequest> for UpdatePipeline {
    type Error = AppError;

    fn try_from(request: pb::UpdatePipelineRequest) -> Result<Self, AppError> {
        let pipeline = required(request.pipeline)?;
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
        // Parts the mask leaves alone are not written, so their values do not matter.
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
                with_definition_findings(found, &definition)
            } else {
                AppError::InvalidArgument(found)
            }
        })?;
        let command = (|| {
            Some(UpdatePipeline {
                id: id?,
                definition,
                mask,
                expected_version: expected_version?,
            })
        })();
        finish(Violations::default(), command)
    }
}

/// The id of a Get call.
pub fn pipeline_id(field: &str, value: &str) -> Result<PipelineId, AppError> {
    PipelineId::parse(value).map_err(|e| AppError::invalid(field, e))
}

impl TryFrom<pb::GetPipelineRequest> for PipelineId {
    type Error = AppError;

    fn try_from(request: pb::GetPipelineRequest) -> Result<Self, AppError> {
        pipeline_id("id", &request.id)
    }
}
