//! `ImportLeadsRequest` messages into import rows, and the summary back into the response. The
//! command-line import builds the same messages from CSV rows, so both refuse a lead alike.

use super::convert::{lead_fields_from_proto, pipeline_or_default, timestamp_to_datetime};
use super::pb;
use crate::app::import::{ImportError, ImportRow, ImportSummary, ParsedLead};
use crate::domain::history::MAX_NOTE_LEN;
use crate::domain::ids::StageKey;
use crate::domain::import::{ImportedChange, ImportedRevision, MAX_IMPORTED_REVISIONS};
use crate::domain::lead::{LeadField, validate_text};
use crate::domain::{FieldViolation, Violations};

impl From<pb::ImportLeadsRequest> for ImportRow {
    fn from(message: pb::ImportLeadsRequest) -> Self {
        let lead = message.lead.unwrap_or_default();
        let mut violations = Violations::default();
        let fields = lead_fields_from_proto(&lead, "lead", &mut violations);
        let pipeline_id =
            pipeline_or_default(&mut violations, "lead.pipeline_id", &lead.pipeline_id);
        let history = history_from_proto(&message.history, &mut violations);
        let revisions = revisions_from_proto(message.revisions, &mut violations);
        // Read only by an update: a new lead's times come from its history.
        let modified = match (&lead.update_time, message.update_existing) {
            (Some(ts), true) => violations.check("lead.update_time", timestamp_to_datetime(ts)),
            _ => None,
        };
        if !revisions.is_empty() && message.history.is_empty() {
            violations.push(
                "revisions",
                "need a history: a lead created now has no earlier changes",
            );
        }
        // A lead is refused with its first bad field, as an import reports one reason a lead.
        let parsed = match (violations.into_result(), pipeline_id) {
            (Ok(()), Some(pipeline_id)) => Ok(ParsedLead {
                fields,
                pipeline_id,
                history,
                revisions,
                modified,
                history_derived: false,
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
            update_existing: message.update_existing,
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

fn revisions_from_proto(
    revisions: Vec<pb::ImportedRevision>,
    violations: &mut Violations,
) -> Vec<ImportedRevision> {
    if revisions.len() > MAX_IMPORTED_REVISIONS {
        violations.push(
            "revisions",
            format!("at most {MAX_IMPORTED_REVISIONS} revisions are allowed per lead"),
        );
        return Vec::new();
    }
    revisions
        .into_iter()
        .enumerate()
        .filter_map(|(i, revision)| {
            let at = |field: &str| format!("revisions[{i}].{field}");
            let change_time = match &revision.change_time {
                Some(ts) => violations.check(&at("change_time"), timestamp_to_datetime(ts)),
                None => {
                    violations.push(at("change_time"), "is required");
                    None
                }
            };
            let paths = revision.update_mask.map(|m| m.paths).unwrap_or_default();
            if paths.is_empty() {
                violations.push(
                    at("update_mask"),
                    "is required: name the fields that changed",
                );
            }
            let mask: Vec<LeadField> = paths
                .iter()
                .enumerate()
                .filter_map(|(j, path)| {
                    violations.check(
                        &at(&format!("update_mask.paths[{j}]")),
                        LeadField::parse(path),
                    )
                })
                .collect();
            // Fields the mask leaves alone are not imported, so their values do not matter.
            let lead = revision.lead.unwrap_or_default();
            let mut field_violations = Violations::default();
            let fields = lead_fields_from_proto(&lead, &at("lead"), &mut field_violations);
            if let Err(all) = field_violations.into_result() {
                let prefix = at("lead.");
                violations.extend(
                    all.into_iter()
                        .filter(|v| {
                            let path = v.field.strip_prefix(&prefix).unwrap_or(&v.field);
                            mask.iter().any(|f| f.covers(path))
                        })
                        .collect(),
                );
            }
            violations.check(&at("actor"), validate_text(&revision.actor, 200));
            Some(ImportedRevision {
                change_time: change_time?,
                fields,
                mask,
                actor: revision.actor.trim().to_owned(),
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
            updated: summary.updated,
            differing: summary.differing,
        }
    }
}
