//! Protobuf ⇄ domain conversions. Incoming messages are validated field by field so that one
//! INVALID_ARGUMENT reports every bad field at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::app::AppError;
use crate::app::leads::LeadAsOf;
use crate::domain::Violations;
use crate::domain::history::{LeadChangeEvent, StageChange};
use crate::domain::ids::{CriterionId, PipelineId, StageKey};
use crate::domain::lead::{
    Bant, Lead, LeadFields, MAX_LOST_REASON_LEN, MAX_TEXT_LEN, validate_business_date,
    validate_email, validate_labels, validate_text, validate_title,
};
use crate::domain::money::Money;
use crate::domain::pipeline::{
    Criterion, MovementRules, Pipeline, PipelineDefinition, Stage, StageKind,
};
use crate::domain::revision::{LeadRevision, RevisionKind};

// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, as in google.protobuf.Timestamp.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

pub fn timestamp_to_datetime(ts: &Timestamp) -> Result<DateTime<Utc>, String> {
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err("is not a valid timestamp (years 1 to 9999, nanos 0 to 999,999,999)".into());
    }
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32)
        .map(|t| crate::store::from_micros(t.timestamp_micros()))
        .ok_or_else(|| "is not a valid timestamp".into())
}

pub fn datetime_to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// The command built from a request's checked parts, or INVALID_ARGUMENT with every violation
/// found. `command` is None only when a part was refused, and so a violation recorded.
pub fn finish<T>(violations: Violations, command: Option<T>) -> Result<T, AppError> {
    match (violations.into_result(), command) {
        (Ok(()), Some(command)) => Ok(command),
        (Err(found), _) => Err(AppError::InvalidArgument(found)),
        (Ok(()), None) => Err(AppError::Internal(
            "a request part was refused without a violation".into(),
        )),
    }
}

/// The one `page_size` rule of every list RPC: negative is refused; 0 and values above the
/// maximum are left to the use case (see `app::page_size`).
pub fn page_size(violations: &mut Violations, value: i32) -> u64 {
    u64::try_from(value).unwrap_or_else(|_| {
        violations.push("page_size", "must not be negative");
        0
    })
}

/// A pipeline id, or the default pipeline when the field is empty.
pub fn pipeline_or_default(
    violations: &mut Violations,
    field: &str,
    value: &str,
) -> Option<PipelineId> {
    if value.is_empty() {
        Some(PipelineId::default_pipeline())
    } else {
        violations.check(field, PipelineId::parse(value))
    }
}

/// The fields an `update_mask` names, or `all` when it names none.
pub fn update_mask<F>(
    violations: &mut Violations,
    mask: Option<prost_types::FieldMask>,
    all: Vec<F>,
    parse: impl Fn(&str) -> Result<F, String>,
) -> Vec<F> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return all;
    }
    paths
        .iter()
        .enumerate()
        .filter_map(|(i, path)| violations.check(&format!("update_mask.paths[{i}]"), parse(path)))
        .collect()
}

pub fn optional_time(
    violations: &mut Violations,
    field: &str,
    ts: Option<&Timestamp>,
) -> Option<DateTime<Utc>> {
    ts.and_then(|ts| violations.check(field, timestamp_to_datetime(ts)))
}

/// A lead's expected close time or BANT timeline: a valid timestamp within the business dates
/// the domain accepts.
fn business_time(
    violations: &mut Violations,
    field: &str,
    ts: Option<&Timestamp>,
) -> Option<DateTime<Utc>> {
    let time = optional_time(violations, field, ts)?;
    violations.check(field, validate_business_date(time))?;
    Some(time)
}

/// An all-zero Money with no currency means "unset".
fn optional_money(
    violations: &mut Violations,
    field: &str,
    money: Option<&pb::Money>,
) -> Option<Money> {
    let money = money?;
    if money.currency_code.is_empty() && money.units == 0 && money.nanos == 0 {
        return None;
    }
    match Money::parse(&money.currency_code, money.units, money.nanos) {
        Ok(m) => Some(m),
        Err((part, description)) => {
            violations.push(format!("{field}.{part}"), description);
            None
        }
    }
}

fn text(violations: &mut Violations, field: &str, value: &str, max: usize) -> String {
    violations.check(field, validate_text(value, max));
    value.trim().to_owned()
}

/// Validates the writable fields of `lead`; violation paths start with `prefix` (e.g. "lead").
pub fn lead_fields_from_proto(
    lead: &pb::Lead,
    prefix: &str,
    violations: &mut Violations,
) -> LeadFields {
    let path = |field: &str| format!("{prefix}.{field}");
    violations.check(&path("title"), validate_title(&lead.title));
    violations.check(
        &path("contact_email"),
        validate_email(lead.contact_email.trim()),
    );
    let labels: BTreeMap<String, String> = lead
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, description) in validate_labels(&labels) {
        let field = if key.is_empty() {
            path("labels")
        } else {
            format!("{}[{key:?}]", path("labels"))
        };
        violations.push(field, description);
    }
    let bant = lead.bant.clone().unwrap_or_default();
    LeadFields {
        // Checked above with the rest of what a title needs; checking it here as well would
        // report a title that is too long twice.
        title: lead.title.trim().to_owned(),
        company: text(violations, &path("company"), &lead.company, MAX_TEXT_LEN),
        contact_name: text(
            violations,
            &path("contact_name"),
            &lead.contact_name,
            MAX_TEXT_LEN,
        ),
        contact_email: lead.contact_email.trim().to_owned(),
        owner: text(violations, &path("owner"), &lead.owner, MAX_TEXT_LEN),
        source: text(violations, &path("source"), &lead.source, MAX_TEXT_LEN),
        amount: optional_money(violations, &path("amount"), lead.amount.as_ref()),
        bant: Bant {
            budget: optional_money(violations, &path("bant.budget"), bant.budget.as_ref()),
            authority: text(
                violations,
                &path("bant.authority"),
                &bant.authority,
                MAX_TEXT_LEN,
            ),
            need: text(
                violations,
                &path("bant.need"),
                &bant.need,
                MAX_LOST_REASON_LEN,
            ),
            timeline: business_time(violations, &path("bant.timeline"), bant.timeline.as_ref()),
        },
        expected_close_time: business_time(
            violations,
            &path("expected_close_time"),
            lead.expected_close_time.as_ref(),
        ),
        labels,
        lost_reason: text(
            violations,
            &path("lost_reason"),
            &lead.lost_reason,
            MAX_LOST_REASON_LEN,
        ),
    }
}

fn money_to_proto(money: &Money) -> pb::Money {
    pb::Money {
        currency_code: money.currency.as_str().to_owned(),
        units: money.units,
        nanos: money.nanos,
    }
}

impl From<&Lead> for pb::Lead {
    fn from(lead: &Lead) -> Self {
        let f = &lead.fields;
        pb::Lead {
            id: lead.id.to_string(),
            title: f.title.clone(),
            company: f.company.clone(),
            contact_name: f.contact_name.clone(),
            contact_email: f.contact_email.clone(),
            owner: f.owner.clone(),
            source: f.source.clone(),
            pipeline_id: lead.pipeline_id.to_string(),
            stage: lead.stage.to_string(),
            amount: f.amount.as_ref().map(money_to_proto),
            bant: Some(pb::Bant {
                budget: f.bant.budget.as_ref().map(money_to_proto),
                authority: f.bant.authority.clone(),
                need: f.bant.need.clone(),
                timeline: f.bant.timeline.map(datetime_to_timestamp),
            }),
            expected_close_time: f.expected_close_time.map(datetime_to_timestamp),
            labels: f
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lost_reason: f.lost_reason.clone(),
            win_probability: lead.win_probability,
            create_time: Some(datetime_to_timestamp(lead.create_time)),
            update_time: Some(datetime_to_timestamp(lead.update_time)),
            stage_enter_time: Some(datetime_to_timestamp(lead.stage_enter_time)),
            close_time: lead.close_time.map(datetime_to_timestamp),
            etag: lead.etag(),
            external_id: lead.external_id.clone().unwrap_or_default(),
            close_date_push_count: lead.close_date_push_count,
            first_expected_close_time: lead.first_expected_close_time.map(datetime_to_timestamp),
            delete_time: None,
        }
    }
}

fn kind_to_proto(kind: RevisionKind) -> pb::LeadRevisionKind {
    match kind {
        RevisionKind::Created => pb::LeadRevisionKind::Created,
        RevisionKind::Updated => pb::LeadRevisionKind::Updated,
        RevisionKind::Moved => pb::LeadRevisionKind::Moved,
        RevisionKind::Deleted => pb::LeadRevisionKind::Deleted,
    }
}

impl From<&LeadChangeEvent> for pb::LeadChangeEvent {
    fn from(event: &LeadChangeEvent) -> Self {
        pb::LeadChangeEvent {
            sequence: event.sequence,
            kind: kind_to_proto(event.kind()) as i32,
            lead: Some((&event.lead).into()),
            previous_lead: event.previous.as_ref().map(Into::into),
            changed_fields: Some(prost_types::FieldMask {
                paths: event.changed_fields(),
            }),
            actor: event.actor().to_owned(),
            change_time: Some(datetime_to_timestamp(event.change_time())),
        }
    }
}

/// The stage change an event carries, as WatchStageChanges streams it; None for other writes.
pub fn stage_change_event(event: &LeadChangeEvent) -> Option<pb::StageChangeEvent> {
    let change = event.change.as_ref()?;
    Some(pb::StageChangeEvent {
        sequence: event.sequence,
        lead_id: change.lead_id.to_string(),
        pipeline_id: change.pipeline_id.to_string(),
        from_stage: change
            .from_stage
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        to_stage: change.to_stage.to_string(),
        change_time: Some(datetime_to_timestamp(change.change_time)),
        actor: change.actor.clone(),
        note: change.note.clone(),
        lead: Some((&event.lead).into()),
    })
}

impl From<&LeadAsOf> for pb::Lead {
    fn from(read: &LeadAsOf) -> Self {
        pb::Lead {
            delete_time: read.delete_time.map(datetime_to_timestamp),
            ..(&read.lead).into()
        }
    }
}

impl From<&LeadRevision> for pb::LeadRevision {
    fn from(revision: &LeadRevision) -> Self {
        let stage = |s: &Option<StageKey>| s.as_ref().map(ToString::to_string).unwrap_or_default();
        pb::LeadRevision {
            revision: revision.revision,
            lead: Some((&revision.lead).into()),
            changed_fields: Some(prost_types::FieldMask {
                paths: revision.changed_fields.clone(),
            }),
            actor: revision.actor.clone(),
            change_time: Some(datetime_to_timestamp(revision.change_time)),
            from_stage: stage(&revision.from_stage),
            to_stage: stage(&revision.to_stage),
            kind: kind_to_proto(revision.kind) as i32,
        }
    }
}

impl From<&StageChange> for pb::StageChange {
    fn from(change: &StageChange) -> Self {
        pb::StageChange {
            sequence: change.sequence,
            lead_id: change.lead_id.to_string(),
            pipeline_id: change.pipeline_id.to_string(),
            from_stage: change
                .from_stage
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            to_stage: change.to_stage.to_string(),
            change_time: Some(datetime_to_timestamp(change.change_time)),
            actor: change.actor.clone(),
            note: change.note.clone(),
            imported: change.imported,
        }
    }
}

/// The structure of a pipeline; `policy::compile` checks the rest (order, criteria). A malformed
/// part is recorded in `violations` and replaced by a placeholder, so that stage and criterion
/// indices stay aligned and the compiler can still report everything else.
pub fn pipeline_definition_from_proto(
    pipeline: &pb::Pipeline,
    violations: &mut Violations,
) -> PipelineDefinition {
    let stages = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(i, stage)| stage_from_proto(stage, i, violations))
        .collect();
    PipelineDefinition {
        display_name: text(
            violations,
            "pipeline.display_name",
            &pipeline.display_name,
            MAX_TEXT_LEN,
        ),
        stages,
        rules: MovementRules {
            allow_skip: pipeline.allow_skip,
            allow_backward: pipeline.allow_backward.unwrap_or(true),
            allow_reopen: pipeline.allow_reopen.unwrap_or(true),
        },
    }
}

fn stage_from_proto(stage: &pb::Stage, index: usize, violations: &mut Violations) -> Stage {
    let path = format!("pipeline.stages[{index}]");
    let key = violations
        .check(&format!("{path}.key"), StageKey::parse(&stage.key))
        .unwrap_or_else(|| placeholder_key(&format!("malformed_stage_{index}")));
    let kind = match pb::StageKind::try_from(stage.kind) {
        Ok(pb::StageKind::Open) => StageKind::Open,
        Ok(pb::StageKind::Won) => StageKind::Won,
        Ok(pb::StageKind::Lost) => StageKind::Lost,
        _ => {
            violations.push(
                format!("{path}.kind"),
                "must be STAGE_KIND_OPEN, STAGE_KIND_WON or STAGE_KIND_LOST",
            );
            StageKind::Open
        }
    };
    let rotting_days = u32::try_from(stage.rotting_days).unwrap_or_else(|_| {
        violations.push(format!("{path}.rotting_days"), "must not be negative");
        0
    });
    let entry_criteria = stage
        .entry_criteria
        .iter()
        .enumerate()
        .map(|(j, c)| Criterion {
            id: violations
                .check(
                    &format!("{path}.entry_criteria[{j}].id"),
                    CriterionId::parse(&c.id),
                )
                .unwrap_or_else(|| {
                    CriterionId::parse(&format!("malformed_criterion_{j}"))
                        .expect("placeholder ids are valid")
                }),
            message: c.message.trim().to_owned(),
            expression: c.expression.clone(),
        })
        .collect();
    let display_name = if stage.display_name.trim().is_empty() {
        stage.key.clone()
    } else {
        stage.display_name.trim().to_owned()
    };
    Stage {
        key,
        display_name,
        kind,
        probability: stage.probability,
        rotting_days,
        entry_criteria,
    }
}

fn placeholder_key(key: &str) -> StageKey {
    StageKey::parse(key).expect("placeholder keys are valid")
}

impl From<&Pipeline> for pb::Pipeline {
    fn from(pipeline: &Pipeline) -> Self {
        let d = &pipeline.definition;
        pb::Pipeline {
            id: pipeline.id.to_string(),
            display_name: d.display_name.clone(),
            stages: d
                .stages
                .iter()
                .map(|s| pb::Stage {
                    key: s.key.to_string(),
                    display_name: s.display_name.clone(),
                    kind: match s.kind {
                        StageKind::Open => pb::StageKind::Open,
                        StageKind::Won => pb::StageKind::Won,
                        StageKind::Lost => pb::StageKind::Lost,
                    } as i32,
                    probability: s.probability,
                    rotting_days: s.rotting_days as i32,
                    entry_criteria: s
                        .entry_criteria
                        .iter()
                        .map(|c| pb::Criterion {
                            id: c.id.to_string(),
                            message: c.message.clone(),
                            expression: c.expression.clone(),
                        })
                        .collect(),
                })
                .collect(),
            allow_skip: d.rules.allow_skip,
            allow_backward: Some(d.rules.allow_backward),
            allow_reopen: Some(d.rules.allow_reopen),
            create_time: Some(datetime_to_timestamp(pipeline.create_time)),
            update_time: Some(datetime_to_timestamp(pipeline.update_time)),
            etag: crate::domain::lead::Etag::from_version(pipeline.version)
                .as_str()
                .to_owned(),
        }
    }
}
