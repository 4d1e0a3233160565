//! Pages and refusals into their response messages, for LeadService and PipelineService.

use super::pb;
use crate::app::leads::LeadPage;
use crate::domain::history::StageChange;
use crate::domain::pipeline::Pipeline;
use crate::domain::policy::MoveViolation;
use crate::domain::revision::LeadRevision;

impl From<LeadPage> for pb::ListLeadsResponse {
    fn from(page: LeadPage) -> Self {
        pb::ListLeadsResponse {
            leads: page.leads.iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        }
    }
}

/// A page of stage changes and the token of the next.
impl From<(Vec<StageChange>, String)> for pb::ListStageChangesResponse {
    fn from((changes, next_page_token): (Vec<StageChange>, String)) -> Self {
        pb::ListStageChangesResponse {
            stage_changes: changes.iter().map(Into::into).collect(),
            next_page_token,
        }
    }
}

/// A page of a lead's revisions and the token of the next.
impl From<(Vec<LeadRevision>, String)> for pb::ListLeadRevisionsResponse {
    fn from((revisions, next_page_token): (Vec<LeadRevision>, String)) -> Self {
        pb::ListLeadRevisionsResponse {
            revisions: revisions.iter().map(Into::into).collect(),
            next_page_token,
        }
    }
}

/// A page of pipelines and the token of the next.
impl From<(Vec<Pipeline>, String)> for pb::ListPipelinesResponse {
    fn from((pipelines, next_page_token): (Vec<Pipeline>, String)) -> Self {
        pb::ListPipelinesResponse {
            pipelines: pipelines.iter().map(Into::into).collect(),
            next_page_token,
        }
    }
}

/// Every reason the move would be refused; none means it is allowed.
impl From<Vec<MoveViolation>> for pb::CheckMoveResponse {
    fn from(refusals: Vec<MoveViolation>) -> Self {
        pb::CheckMoveResponse {
            allowed: refusals.is_empty(),
            violations: refusals
                .into_iter()
                .map(|v| pb::MoveViolation {
                    r#type: v.kind.as_str().to_owned(),
                    subject: v.subject,
                    description: v.description,
                })
                .collect(),
        }
    }
}
