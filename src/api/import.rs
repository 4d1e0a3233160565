//! `ImportLeadsRequest` messages into import rows, and the summary back into the response. The
//! command-line import builds the same messages from CSV rows, so both refuse a lead alike.

use super::convert::{lead_fields_from_proto, pipeline_or_default, timestamp_to_datetime};
use super::pb;
use crate::app::import::{ImportError, ImportRow, ImportSummary, ParsedLead};
use crate::domain::history::MAX_NOTE_LEN;
use crate::domain::ids::StageKey;
use crate::domain::import::ImportedChange;
use crate::domain::lead::validate_text;
use crate::domain::{FieldViolation, Violations};

impl From<pb::ImportLeadsRequest> for ImportRow {
    fn from(message: pb::ImportLeadsRequest) -> Self {
        let lead = message.lead.unwrap_or_default();
        let mut violations = Violations::default();
        let fields = lead_fields_from_proto(&lead, "lead", &mut violations);
        let pipeline_id =
            pipeline_or_default(&mut violations, "lead.pipeline_id", &lead.pipeline_id);
        let history = history_from_proto(&message.history, &mut violations);
        // A lead is refused with its first bad field, as an import reports one reason a lead.
        let parsed = match (violations.into_result(), pipeline_id) {
            (Ok(()), Some(pipeline_id)) => Ok(ParsedLead {
                fields,
                pipeline_id,
                history,
            }),
            (Err(found), _) => Err(found
                .into_iter()
                .next()
                .unwrap_or_else(|| FieldViolation::new("lead", "could not be read"))),
            (Ok(()), None) => Err(FieldViolation::new("lead.pipeline_id", "could not be read")),
        };
        ImportRow {
            external_id: message.external_id,
            parsed,
        }
    }
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

impl From<ImportError> for pb::ImportError {
    fn from(error: ImportError) -> Self {
        pb::ImportError {
            index: error.index,
            external_id: error.external_id,
            field: error.field,
            reason: error.reason,
        }
    }
}

impl From<ImportSummary> for pb::ImportLeadsResponse {
    fn from(summary: ImportSummary) -> Self {
        pb::ImportLeadsResponse {
            received: summary.received,
            imported: summary.imported,
            already_imported: summary.already_imported,
            failed: summary.failed,
            errors: summary.errors.into_iter().map(Into::into).collect(),
        }
    }
}
