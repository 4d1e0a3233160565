//! Imported leads: their history must form one valid chain through the pipeline. Entry criteria
//! and movement rules are not re-checked, because the history records what did happen.

use chrono::{DateTime, Duration, Utc};

use super::ids::StageKey;
use super::lead::{Lead, LeadField, LeadFields, MAX_LABELS};
use super::pipeline::PipelineDefinition;
use super::revision::{LeadRevision, RevisionKind};

pub const MAX_EXTERNAL_ID_LEN: usize = 200;
/// Earlier field changes one imported lead may carry.
pub const MAX_IMPORTED_REVISIONS: usize = 1000;
/// Clock skew tolerated between the importing system and this server.
const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedChange {
    pub from_stage: Option<StageKey>,
    pub to_stage: StageKey,
    pub change_time: DateTime<Utc>,
    pub actor: String,
    pub note: String,
}

/// An earlier change of an imported lead's fields: at `change_time`, the fields `mask` names
/// took their values in `fields` (the others are ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedRevision {
    pub change_time: DateTime<Utc>,
    pub fields: LeadFields,
    pub mask: Vec<LeadField>,
    /// Who made the change in the source system; empty when unknown.
    pub actor: String,
}

/// Where the history leaves the lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub stage: StageKey,
    pub create_time: DateTime<Utc>,
    pub stage_enter_time: DateTime<Utc>,
    pub close_time: Option<DateTime<Utc>>,
    pub probability: f64,
}

pub fn validate_external_id(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("is required".into())
    } else if value.chars().count() > MAX_EXTERNAL_ID_LEN {
        Err(format!("must be at most {MAX_EXTERNAL_ID_LEN} characters"))
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

/// Checks the chain and derives the lead's state; on failure returns `(field, reason)` with the
/// field relative to the request (e.g. `history[2].from_stage`).
pub fn check_history(
    pipeline: &PipelineDefinition,
    history: &[ImportedChange],
    now: DateTime<Utc>,
) -> Result<Timeline, (String, String)> {
    let Some(first) = history.first() else {
        return Err(("history".into(), "must not be empty".into()));
    };
    let mut previous: Option<&ImportedChange> = None;
    for (i, change) in history.iter().enumerate() {
        let at = |field: &str| format!("history[{i}].{field}");
        if pipeline.stage(&change.to_stage).is_none() {
            return Err((
                at("to_stage"),
                format!(
                    "stage {:?} is not in the pipeline",
                    change.to_stage.as_str()
                ),
            ));
        }
        if change.change_time > now + FUTURE_TOLERANCE {
            return Err((at("change_time"), "is in the future".into()));
        }
        match previous {
            None if change.from_stage.is_some() => {
                return Err((
                    at("from_stage"),
                    "must be empty: the first entry is the lead's creation".into(),
                ));
            }
            Some(prev) => {
                if change.from_stage.as_ref() != Some(&prev.to_stage) {
                    return Err((
                        at("from_stage"),
                        format!(
                            "must be {:?}, where the previous entry ended",
                            prev.to_stage.as_str()
                        ),
                    ));
                }
                if change.to_stage == prev.to_stage {
                    return Err((at("to_stage"), "must differ from from_stage".into()));
                }
                if change.change_time < prev.change_time {
                    return Err((
                        at("change_time"),
                        "is earlier than the previous entry".into(),
                    ));
                }
            }
            None => {}
        }
        previous = Some(change);
    }
    let last = history.last().expect("history is not empty");
    let stage = pipeline.stage(&last.to_stage).expect("checked above");
    Ok(Timeline {
        stage: last.to_stage.clone(),
        create_time: first.change_time,
        stage_enter_time: last.change_time,
        close_time: stage.kind.is_closed().then_some(last.change_time),
        probability: stage.probability,
    })
}

/// Checks the times of an imported lead's field changes against its life: each no earlier than
/// its creation or the previous change, and not in the future. On failure returns
/// `(field, reason)` as [`check_history`] does.
pub fn check_revisions(
    revisions: &[ImportedRevision],
    create_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), (String, String)> {
    if revisions.len() > MAX_IMPORTED_REVISIONS {
        return Err((
            "revisions".into(),
            format!("at most {MAX_IMPORTED_REVISIONS} revisions are allowed per lead"),
        ));
    }
    let mut previous = create_time;
    for (i, revision) in revisions.iter().enumerate() {
        let at = format!("revisions[{i}].change_time");
        if revision.change_time > now + FUTURE_TOLERANCE {
            return Err((at, "is in the future".into()));
        }
        if revision.change_time < create_time {
            return Err((
                at,
                "is earlier than the lead's creation (history[0].change_time)".into(),
            ));
        }
        if revision.change_time < previous {
            return Err((at, "is earlier than the previous revision".into()));
        }
        previous = revision.change_time;
    }
    Ok(())
}

/// Applies the row's `index`th field edit to `lead`, whose fields were `before`: the fields its
/// mask names, within the label limit. Returns who made it (the importer when the source names
/// no one), or `None` when it changes nothing and so makes no revision.
pub fn apply_edit<'a>(
    lead: &mut Lead,
    before: &LeadFields,
    index: usize,
    edit: &'a ImportedRevision,
    importer: &'a str,
) -> Result<Option<&'a str>, (String, String)> {
    for field in &edit.mask {
        field.apply(&edit.fields, &mut lead.fields);
    }
    if lead.fields.labels.len() > MAX_LABELS {
        return Err((
            format!("revisions[{index}].lead.labels"),
            format!("at most {MAX_LABELS} labels are allowed"),
        ));
    }
    if lead.fields == *before {
        return Ok(None);
    }
    lead.track_expected_close(before.expected_close_time);
    Ok(Some(if edit.actor.is_empty() {
        importer
    } else {
        &edit.actor
    }))
}

/// Replays an imported lead's life, oldest first: its creation (`created`, in the first stage
/// of `history`), then its stage changes and field changes in time order, a stage change first
/// when both happened at once. Returns the lead it ends as, and the revision each step made,
/// numbered from 1. A field change that changes nothing makes no revision. `importer` is the
/// actor of stage changes, and of field changes whose source gave none. A change that would
/// give the lead more than [`MAX_LABELS`] labels is refused as `(field, reason)`.
pub fn replay(
    pipeline: &PipelineDefinition,
    created: Lead,
    history: &[ImportedChange],
    revisions: &[ImportedRevision],
    importer: &str,
) -> Result<(Lead, Vec<LeadRevision>), (String, String)> {
    let mut lead = created;
    lead.version = 1;
    lead.track_expected_close(None);
    let mut creation = LeadRevision::of(
        RevisionKind::Created,
        None,
        &lead,
        importer,
        lead.create_time,
    );
    creation.revision = 1;
    let mut made = vec![creation];
    let mut moves = history.iter().skip(1).peekable();
    let mut edits = revisions.iter().enumerate().peekable();
    loop {
        let move_first = match (moves.peek(), edits.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(change), Some((_, edit))) => change.change_time <= edit.change_time,
        };
        let before = lead.clone();
        let (kind, actor, change_time) = if move_first {
            let change = moves.next().expect("peeked");
            let stage = pipeline.stage(&change.to_stage);
            lead.stage = change.to_stage.clone();
            lead.stage_enter_time = change.change_time;
            lead.close_time = stage
                .is_some_and(|s| s.kind.is_closed())
                .then_some(change.change_time);
            lead.win_probability = stage.map_or(lead.win_probability, |s| s.probability);
            (RevisionKind::Moved, importer, change.change_time)
        } else {
            let (i, edit) = edits.next().expect("peeked");
            let Some(actor) = apply_edit(&mut lead, &before.fields, i, edit, importer)? else {
                continue;
            };
            (RevisionKind::Updated, actor, edit.change_time)
        };
        lead.version += 1;
        lead.update_time = change_time;
        let mut revision = LeadRevision::of(kind, Some(&before), &lead, actor, change_time);
        revision.revision = lead.version;
        made.push(revision);
    }
    Ok((lead, made))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::default_pipeline;

    fn change(from: Option<&str>, to: &str, day: i64) -> ImportedChange {
        ImportedChange {
            from_stage: from.map(|s| StageKey::parse(s).unwrap()),
            to_stage: StageKey::parse(to).unwrap(),
            change_time: DateTime::from_timestamp(1_700_000_000 + day * 86_400, 0).unwrap(),
            actor: String::new(),
            note: String::new(),
        }
    }

    #[test]
    fn a_valid_chain_gives_the_final_state() {
        let history = [
            change(None, "lead_generation", 0),
            change(Some("lead_generation"), "qualification", 3),
            change(Some("qualification"), "closed_lost", 9),
        ];
        let timeline = check_history(&default_pipeline(), &history, Utc::now()).unwrap();
        assert_eq!(timeline.stage.as_str(), "closed_lost");
        assert_eq!(timeline.create_time, history[0].change_time);
        assert_eq!(timeline.close_time, Some(history[2].change_time));
    }

    #[test]
    fn broken_chains_name_the_offending_entry() {
        let def = default_pipeline();
        let now = Utc::now();
        let err = |h: &[ImportedChange]| check_history(&def, h, now).unwrap_err().0;
        assert_eq!(err(&[]), "history");
        assert_eq!(
            err(&[change(Some("proposal"), "qualification", 0)]),
            "history[0].from_stage"
        );
        assert_eq!(
            err(&[
                change(None, "lead_generation", 0),
                change(Some("proposal"), "negotiation", 1)
            ]),
            "history[1].from_stage"
        );
        assert_eq!(
            err(&[
                change(None, "lead_generation", 5),
                change(Some("lead_generation"), "qualification", 1)
            ]),
            "history[1].change_time"
        );
        assert_eq!(err(&[change(None, "nowhere", 0)]), "history[0].to_stage");
        let mut future = change(None, "lead_generation", 0);
        future.change_time = now + Duration::days(1);
        assert_eq!(err(&[future]), "history[0].change_time");
    }

    fn created_lead(history: &[ImportedChange]) -> Lead {
        use crate::ids::{LeadId, PipelineId};
        let first = &history[0];
        Lead {
            id: LeadId::generate(),
            fields: LeadFields {
                title: "Acme".into(),
                company: String::new(),
                contact_name: String::new(),
                contact_email: String::new(),
                owner: "ana".into(),
                source: String::new(),
                amount: Some(crate::money::Money::parse("USD", 100_000, 0).unwrap()),
                bant: Default::default(),
                expected_close_time: Some(first.change_time + Duration::days(30)),
                labels: Default::default(),
                lost_reason: String::new(),
            },
            pipeline_id: PipelineId::parse("default").unwrap(),
            stage: first.to_stage.clone(),
            win_probability: 0.1,
            create_time: first.change_time,
            update_time: first.change_time,
            stage_enter_time: first.change_time,
            close_time: None,
            version: 1,
            external_id: Some("x-1".into()),
            close_date_push_count: 0,
            first_expected_close_time: None,
        }
    }

    fn edit(
        lead: &Lead,
        day: i64,
        change: impl FnOnce(&mut LeadFields),
        mask: &[&str],
    ) -> ImportedRevision {
        let mut fields = lead.fields.clone();
        change(&mut fields);
        ImportedRevision {
            change_time: DateTime::from_timestamp(1_700_000_000 + day * 86_400, 0).unwrap(),
            fields,
            mask: mask.iter().map(|p| LeadField::parse(p).unwrap()).collect(),
            actor: String::new(),
        }
    }

    #[test]
    fn replay_interleaves_stage_and_field_changes_in_time_order() {
        let def = default_pipeline();
        let history = [
            change(None, "lead_generation", 0),
            change(Some("lead_generation"), "qualification", 3),
            change(Some("qualification"), "closed_won", 9),
        ];
        let created = created_lead(&history);
        let cut = edit(
            &created,
            3,
            |f| f.amount = Some(crate::money::Money::parse("USD", 10_000, 0).unwrap()),
            &["amount"],
        );
        let push = edit(
            &created,
            5,
            |f| f.expected_close_time = f.expected_close_time.map(|t| t + Duration::days(14)),
            &["expected_close_time"],
        );
        let mut same = edit(&created, 6, |_| {}, &["owner"]);
        same.actor = "bo".into();
        let (lead, revisions) = replay(
            &def,
            created.clone(),
            &history,
            &[cut, push, same],
            "importer",
        )
        .unwrap();
        let kinds: Vec<_> = revisions
            .iter()
            .map(|r| (r.revision, r.kind, r.changed_fields.clone()))
            .collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert_eq!(
            kinds[1].1,
            RevisionKind::Moved,
            "a move precedes a field change at the same time"
        );
        assert_eq!(kinds[2].1, RevisionKind::Updated);
        assert_eq!(kinds[2].2, vec!["amount".to_string()]);
        assert_eq!(kinds[3].2, vec!["expected_close_time".to_string()]);
        assert_eq!(kinds[4].1, RevisionKind::Moved);
        assert_eq!(
            revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            revisions[1].lead.fields.amount, created.fields.amount,
            "the cut came after"
        );
        assert_eq!(lead.fields.amount.unwrap().value(), 10000.0);
        assert_eq!(lead.close_date_push_count, 1);
        assert_eq!(
            lead.first_expected_close_time,
            created.fields.expected_close_time
        );
        assert_eq!(lead.version, 5);
        assert_eq!(lead.stage.as_str(), "closed_won");
        assert_eq!(lead.close_time, Some(history[2].change_time));
        assert_eq!(lead.update_time, history[2].change_time);
    }

    #[test]
    fn revisions_before_creation_or_out_of_order_name_the_entry() {
        let history = [change(None, "lead_generation", 2)];
        let created = created_lead(&history);
        let now = Utc::now();
        let early = edit(&created, 1, |f| f.owner = "bo".into(), &["owner"]);
        let (field, _) = check_revisions(&[early], created.create_time, now).unwrap_err();
        assert_eq!(field, "revisions[0].change_time");
        let later = edit(&created, 5, |f| f.owner = "bo".into(), &["owner"]);
        let sooner = edit(&created, 4, |f| f.owner = "cy".into(), &["owner"]);
        let (field, reason) =
            check_revisions(&[later, sooner], created.create_time, now).unwrap_err();
        assert_eq!(field, "revisions[1].change_time");
        assert!(reason.contains("previous"), "{reason}");
    }
}
