//! `LeadService` requests into app commands. Each conversion checks every field and reports all
//! that are wrong at once.

use super::convert::{
    finish, lead_fields_from_proto, optional_time, page_size, pipeline_or_default, update_mask,
};
use super::pb;
use crate::app::AppError;
use crate::app::events::EventFilter;
use crate::app::leads::{
    CheckMove, CreateLead, DeleteLead, GetLead, Idempotency, LeadListQuery, LeadPageQuery,
    MoveCommand, NewLead, UpdateLead,
};
use crate::domain::Violations;
use crate::domain::filter::parse_filter;
use crate::domain::history::MAX_NOTE_LEN;
use crate::domain::ids::{LeadId, PipelineId, RequestId, StageKey};
use crate::domain::lead::{Etag, LeadField, validate_text};
use crate::domain::listing::parse_order_by;
use crate::domain::revision::REVISION_PATHS;

fn required(lead: Option<pb::Lead>) -> Result<pb::Lead, AppError> {
    lead.ok_or_else(|| AppError::invalid("lead", "is required"))
}

impl TryFrom<pb::CreateLeadRequest> for CreateLead {
    type Error = AppError;

    fn try_from(request: pb::CreateLeadRequest) -> Result<Self, AppError> {
        let lead = required(request.lead)?;
        let mut violations = Violations::default();
        let fields = lead_fields_from_proto(&lead, "lead", &mut violations);
        let pipeline_id =
            pipeline_or_default(&mut violations, "lead.pipeline_id", &lead.pipeline_id);
        let request_id =
            violations.check("request_id", RequestId::parse_optional(&request.request_id));
        let command = (|| {
            let pipeline_id = pipeline_id?;
            Some(CreateLead {
                idempotency: Idempotency::new(request_id?, (&fields, pipeline_id.as_str())),
                lead: NewLead {
                    fields,
                    pipeline_id,
                },
            })
        })();
        finish(violations, command)
    }
}

impl TryFrom<pb::ListLeadsRequest> for LeadListQuery {
    type Error = AppError;

    fn try_from(request: pb::ListLeadsRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let page_size = page_size(&mut violations, request.page_size);
        let filter = violations.check(
            "filter",
            parse_filter(&request.filter).map_err(|e| e.to_string()),
        );
        let order = violations.check("order_by", parse_order_by(&request.order_by));
        let as_of = optional_time(&mut violations, "as_of", request.as_of.as_ref());
        let command = (|| {
            Some(LeadListQuery {
                filter: filter?,
                filter_text: request.filter,
                order: order?,
                page_size,
                page_token: request.page_token,
                as_of,
            })
        })();
        finish(violations, command)
    }
}

impl TryFrom<pb::UpdateLeadRequest> for UpdateLead {
    type Error = AppError;

    fn try_from(request: pb::UpdateLeadRequest) -> Result<Self, AppError> {
        let lead = required(request.lead)?;
        let mut violations = Violations::default();
        let id = violations.check("lead.id", LeadId::parse(&lead.id));
        let expected_version = violations.check("lead.etag", Etag::parse_optional(&lead.etag));
        let mask = update_mask(
            &mut violations,
            request.update_mask,
            LeadField::all(),
            LeadField::parse,
        );
        // Fields the mask leaves alone are not written, so their values do not matter.
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
        let command = (|| {
            Some(UpdateLead {
                id: id?,
                fields,
                mask,
                expected_version: expected_version?,
            })
        })();
        finish(violations, command)
    }
}

impl TryFrom<pb::DeleteLeadRequest> for DeleteLead {
    type Error = AppError;

    fn try_from(request: pb::DeleteLeadRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let expected_version = violations.check("etag", Etag::parse_optional(&request.etag));
        let command = (|| {
            Some(DeleteLead {
                id: id?,
                expected_version: expected_version?,
            })
        })();
        finish(violations, command)
    }
}

impl TryFrom<pb::MoveLeadRequest> for MoveCommand {
    type Error = AppError;

    fn try_from(request: pb::MoveLeadRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let to = violations.check("stage", StageKey::parse(&request.stage));
        let expected_version = violations.check("etag", Etag::parse_optional(&request.etag));
        violations.check("note", validate_text(&request.note, MAX_NOTE_LEN));
        let request_id =
            violations.check("request_id", RequestId::parse_optional(&request.request_id));
        let command = (|| {
            Some(MoveCommand {
                // The request as sent, so that the digest of a retry matches the first call's.
                idempotency: Idempotency::new(
                    request_id?,
                    (&request.id, &request.stage, &request.etag, &request.note),
                ),
                id: id?,
                to: to?,
                expected_version: expected_version?,
                note: request.note.trim().to_owned(),
            })
        })();
        finish(violations, command)
    }
}

impl TryFrom<pb::CheckMoveRequest> for CheckMove {
    type Error = AppError;

    fn try_from(request: pb::CheckMoveRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let to = violations.check("stage", StageKey::parse(&request.stage));
        let command = (|| Some(CheckMove { id: id?, to: to? }))();
        finish(violations, command)
    }
}

impl TryFrom<pb::ListStageChangesRequest> for LeadPageQuery {
    type Error = AppError;

    fn try_from(request: pb::ListStageChangesRequest) -> Result<Self, AppError> {
        lead_page(&request.lead_id, request.page_size, request.page_token)
    }
}

impl TryFrom<pb::ListLeadRevisionsRequest> for LeadPageQuery {
    type Error = AppError;

    fn try_from(request: pb::ListLeadRevisionsRequest) -> Result<Self, AppError> {
        lead_page(&request.lead_id, request.page_size, request.page_token)
    }
}

fn lead_page(lead_id: &str, page_size: i32, page_token: String) -> Result<LeadPageQuery, AppError> {
    let mut violations = Violations::default();
    let lead_id = violations.check("lead_id", LeadId::parse(lead_id));
    let page_size = super::convert::page_size(&mut violations, page_size);
    let command = lead_id.map(|lead_id| LeadPageQuery {
        lead_id,
        page_size,
        page_token,
    });
    finish(violations, command)
}

impl TryFrom<&pb::WatchStageChangesRequest> for EventFilter {
    type Error = AppError;

    fn try_from(request: &pb::WatchStageChangesRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let pipeline_id = if request.pipeline_id.is_empty() {
            Some(None)
        } else {
            violations
                .check("pipeline_id", PipelineId::parse(&request.pipeline_id))
                .map(Some)
        };
        let stages = request
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| violations.check(&format!("stages[{i}]"), StageKey::parse(s)))
            .collect();
        let lead_id = if request.lead_id.is_empty() {
            Some(None)
        } else {
            violations
                .check("lead_id", LeadId::parse(&request.lead_id))
                .map(Some)
        };
        let command = (|| {
            Some(EventFilter {
                every_write: false,
                pipeline_id: pipeline_id?,
                stages,
                owner: (!request.owner.is_empty()).then(|| request.owner.clone()),
                lead_id: lead_id?,
                changed_fields: Vec::new(),
            })
        })();
        finish(violations, command)
    }
}

impl TryFrom<&pb::WatchLeadChangesRequest> for EventFilter {
    type Error = AppError;

    fn try_from(request: &pb::WatchLeadChangesRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let pipeline_id = if request.pipeline_id.is_empty() {
            Some(None)
        } else {
            violations
                .check("pipeline_id", PipelineId::parse(&request.pipeline_id))
                .map(Some)
        };
        let lead_id = if request.lead_id.is_empty() {
            Some(None)
        } else {
            violations
                .check("lead_id", LeadId::parse(&request.lead_id))
                .map(Some)
        };
        let paths = request
            .changed_fields
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default();
        if paths.len() > REVISION_PATHS.len() {
            violations.push(
                "changed_fields",
                format!("at most {} paths", REVISION_PATHS.len()),
            );
        }
        let changed_fields = paths
            .iter()
            .filter(|path| {
                let known = REVISION_PATHS.contains(&path.as_str());
                if !known {
                    violations.push(
                        "changed_fields",
                        format!(
                            "unknown field {path:?}; the fields are {}",
                            REVISION_PATHS.join(", ")
                        ),
                    );
                }
                known
            })
            .cloned()
            .collect();
        let command = (|| {
            Some(EventFilter {
                every_write: true,
                pipeline_id: pipeline_id?,
                stages: Vec::new(),
                owner: (!request.owner.is_empty()).then(|| request.owner.clone()),
                lead_id: lead_id?,
                changed_fields,
            })
        })();
        finish(violations, command)
    }
}

/// The id of a Get call.
pub fn lead_id(field: &str, value: &str) -> Result<LeadId, AppError> {
    LeadId::parse(value).map_err(|e| AppError::invalid(field, e))
}

impl TryFrom<pb::GetLeadRequest> for GetLead {
    type Error = AppError;

    fn try_from(request: pb::GetLeadRequest) -> Result<Self, AppError> {
        let mut violations = Violations::default();
        let id = violations.check("id", LeadId::parse(&request.id));
        let as_of = optional_time(&mut violations, "as_of", request.as_of.as_ref());
        let command = (|| Some(GetLead { id: id?, as_of }))();
        finish(violations, command)
    }
}
