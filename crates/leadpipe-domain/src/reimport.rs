//! Re-importing a lead that was imported before, with updates on: what the source's newer
//! export adds to the stored lead, as revisions appended after the stored ones. Stored history
//! is never rewritten: a row that disagrees with it is refused, naming the first entry that
//! differs.

use chrono::{DateTime, SecondsFormat, Utc};

use super::history::StageChange;
use super::ids::StageKey;
use super::import::ImportedChange;
use super::import::{ImportedRevision, apply_edit};
use super::lead::{Lead, LeadFields, MAX_LABELS};
use super::pipeline::PipelineDefinition;
use super::revision::{LeadRevision, RevisionKind, changed_fields};

/// What a row says of the lead's stages.
#[derive(Debug, Clone, PartialEq)]
pub enum RowStages {
    /// Its whole stage history, oldest first: the stored history must be a prefix of it.
    History(Vec<ImportedChange>),
    /// Only the stage it is in, and since when if the source says.
    Current {
        stage: StageKey,
        since: Option<DateTime<Utc>>,
    },
    /// Nothing: the stored stage is kept.
    Unknown,
}

/// The row, as the source has the lead now.
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    pub stages: RowStages,
    /// The row's field changes, oldest first.
    pub revisions: Vec<ImportedRevision>,
    /// The fields as the row leaves them (after its revisions).
    pub fields: LeadFields,
    /// When the source last changed the lead, if it says.
    pub modified: Option<DateTime<Utc>>,
}

/// The stored lead, as read in the transaction that updates it.
pub struct Stored<'a> {
    pub lead: &'a Lead,
    /// Oldest first.
    pub history: &'a [StageChange],
    /// Oldest first.
    pub revisions: &'a [LeadRevision],
}

/// One write of an update: its revision (numbered in order) and, for a move, the stage change.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStep {
    pub revision: LeadRevision,
    pub previous: Lead,
    pub change: Option<ImportedChange>,
}

/// The stored lead after the row, and the steps that take it there. No steps: nothing to do.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdatePlan {
    pub lead: Lead,
    pub steps: Vec<UpdateStep>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn describe(from: Option<&StageKey>, to: &StageKey, at: DateTime<Utc>) -> String {
    match from {
        Some(from) => format!("{}→{} at {}", from.as_str(), to.as_str(), time(at)),
        None => format!("created in {} at {}", to.as_str(), time(at)),
    }
}

/// The entries of `row` after the stored history, which must be a prefix of it: the same
/// stages at the same times. Otherwise `(field, reason)` names the first entry that differs.
pub fn history_extension<'r>(
    stored: &[StageChange],
    row: &'r [ImportedChange],
) -> Result<&'r [ImportedChange], (String, String)> {
    for (i, kept) in stored.iter().enumerate() {
        let stored_text = describe(kept.from_stage.as_ref(), &kept.to_stage, kept.change_time);
        let Some(given) = row.get(i) else {
            return Err((
                format!("history[{i}]"),
                format!(
                    "stored {stored_text}, the file ends before it: it has {} entries, {} are \
                     stored, and stored history is never removed",
                    row.len(),
                    stored.len()
                ),
            ));
        };
        if given.from_stage != kept.from_stage
            || given.to_stage != kept.to_stage
            || given.change_time != kept.change_time
        {
            return Err((
                format!("history[{i}]"),
                format!(
                    "stored {stored_text}, file has {}; stored history is never rewritten",
                    describe(
                        given.from_stage.as_ref(),
                        &given.to_stage,
                        given.change_time
                    )
                ),
            ));
        }
    }
    Ok(&row[stored.len()..])
}

/// Plans the update of `stored` to what `row` says, as revisions after the stored ones:
/// - stage changes the row's history adds after the stored history (or a move to the row's
///   current stage, when it gives only that), each a `moved` revision at its time;
/// - the row's field changes dated after the lead's last revision, each an `updated` revision
///   at its time; those dated earlier must already be in the stored revisions of their time;
/// - then, if the fields still differ from the row's, one `updated` revision with the row's
///   values, at `row.modified` or else `now`, by `importer`.
///
/// Stage changes and field changes interleave in time order, a stage change first when both
/// happened at once. Nothing may be dated before the lead's last revision, so that every
/// revision stays in time order and the lead as of any past time stays what it was. Movement
/// rules and entry criteria are not checked, as for imported history: the row records what did
/// happen in the source. On refusal returns `(field, reason)`.
pub fn plan_update(
    pipeline: &PipelineDefinition,
    stored: &Stored<'_>,
    row: &RowState,
    importer: &str,
    now: DateTime<Utc>,
) -> Result<UpdatePlan, (String, String)> {
    let last = stored
        .revisions
        .last()
        .map_or(stored.lead.update_time, |r| r.change_time)
        .max(stored.lead.update_time);
    let before_last = |field: String, what: &str, at: DateTime<Utc>| {
        (
            field,
            format!(
                "{what} at {} is before the stored lead's last change at {}: changes are added \
                 after the stored ones, never inserted before them",
                time(at),
                time(last)
            ),
        )
    };

    let moves: Vec<(usize, ImportedChange)> = match &row.stages {
        RowStages::History(history) => {
            let extra = history_extension(stored.history, history)?;
            let offset = history.len() - extra.len();
            extra
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, change)| (offset + i, change))
                .collect()
        }
        RowStages::Current { stage, .. } if *stage == stored.lead.stage => Vec::new(),
        RowStages::Current { stage, since } => {
            let at = since.unwrap_or(now);
            vec![(
                usize::MAX,
                ImportedChange {
                    from_stage: Some(stored.lead.stage.clone()),
                    to_stage: stage.clone(),
                    change_time: at,
                    actor: String::new(),
                    note: String::new(),
                },
            )]
        }
        RowStages::Unknown => Vec::new(),
    };
    for (i, change) in &moves {
        if pipeline.stage(&change.to_stage).is_none() {
            return Err((
                format!("history[{i}].to_stage"),
                format!(
                    "stage {:?} is not in the pipeline",
                    change.to_stage.as_str()
                ),
            ));
        }
        if change.change_time < last {
            let field = if *i == usize::MAX {
                "history".to_owned()
            } else {
                format!("history[{i}].change_time")
            };
            return Err(before_last(field, "the stage change", change.change_time));
        }
    }

    let mut edits = Vec::new();
    for (i, edit) in row.revisions.iter().enumerate() {
        if edit.change_time > last {
            edits.push((i, edit));
            continue;
        }
        let Some(then) = stored
            .revisions
            .iter()
            .rev()
            .find(|r| r.change_time <= edit.change_time)
        else {
            return Err(before_last(
                format!("revisions[{i}].change_time"),
                "the change",
                edit.change_time,
            ));
        };
        let mut changed = then.lead.clone();
        for field in &edit.mask {
            field.apply(&edit.fields, &mut changed.fields);
        }
        if let Some(path) = changed_fields(&then.lead, &changed).first() {
            return Err((
                format!("revisions[{i}]"),
                format!(
                    "the file changes {path} at {}, and the stored lead differs from it then; \
                     the change is not after the stored lead's last change at {}, and stored \
                     revisions are never rewritten",
                    time(edit.change_time),
                    time(last)
                ),
            ));
        }
    }

    let mut lead = stored.lead.clone();
    let mut steps = Vec::new();
    let mut push = |lead: &mut Lead, before: Lead, kind, actor: &str, at, change| {
        lead.version += 1;
        lead.update_time = at;
        let mut revision = LeadRevision::of(kind, Some(&before), lead, actor, at);
        revision.revision = lead.version;
        steps.push(UpdateStep {
            revision,
            previous: before,
            change,
        });
    };
    let mut moves = moves.into_iter().map(|(_, c)| c).peekable();
    let mut edits = edits.into_iter().peekable();
    loop {
        let move_first = match (moves.peek(), edits.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(change), Some((_, edit))) => change.change_time <= edit.change_time,
        };
        let before = lead.clone();
        if move_first {
            let change = moves.next().expect("peeked");
            let stage = pipeline.stage(&change.to_stage).expect("checked above");
            lead.stage = change.to_stage.clone();
            lead.stage_enter_time = change.change_time;
            lead.close_time = stage.kind.is_closed().then_some(change.change_time);
            lead.win_probability = stage.probability;
            let at = change.change_time;
            push(
                &mut lead,
                before,
                RevisionKind::Moved,
                importer,
                at,
                Some(change),
            );
        } else {
            let (i, edit) = edits.next().expect("peeked");
            let Some(actor) = apply_edit(&mut lead, &before.fields, i, edit, importer)? else {
                continue;
            };
            push(
                &mut lead,
                before,
                RevisionKind::Updated,
                actor,
                edit.change_time,
                None,
            );
        }
    }

    if lead.fields != row.fields {
        let latest = lead.update_time.max(last);
        let at = match row.modified {
            Some(at) if at < latest => {
                return Err(before_last(
                    "lead.update_time".into(),
                    "the file's last change of the lead",
                    at,
                ));
            }
            Some(at) => at,
            // The clock may trail a stored time that came from the source's, within the
            // tolerated skew; the change still comes after it.
            None => now.max(latest),
        };
        let before = lead.clone();
        lead.fields = row.fields.clone();
        if lead.fields.labels.len() > MAX_LABELS {
            return Err((
                "lead.labels".into(),
                format!("at most {MAX_LABELS} labels are allowed"),
            ));
        }
        lead.track_expected_close(before.fields.expected_close_time);
        push(&mut lead, before, RevisionKind::Updated, importer, at, None);
    }
    Ok(UpdatePlan { lead, steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LeadId, PipelineId};
    use crate::lead::LeadField;
    use crate::money::Money;
    use crate::policy::default_pipeline;

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + day * 86_400, 0).unwrap()
    }

    fn key(s: &str) -> StageKey {
        StageKey::parse(s).unwrap()
    }

    fn change(from: Option<&str>, to: &str, day: i64) -> ImportedChange {
        ImportedChange {
            from_stage: from.map(key),
            to_stage: key(to),
            change_time: at(day),
            actor: String::new(),
            note: String::new(),
        }
    }

    fn stored_change(lead: &Lead, c: &ImportedChange) -> StageChange {
        StageChange {
            sequence: 0,
            lead_id: lead.id,
            pipeline_id: lead.pipeline_id.clone(),
            from_stage: c.from_stage.clone(),
            to_stage: c.to_stage.clone(),
            change_time: c.change_time,
            actor: String::new(),
            note: String::new(),
            imported: true,
        }
    }

    /// A lead created on day 0 in lead_generation, moved to qualification on day 3.
    fn stored() -> (Lead, Vec<StageChange>, Vec<LeadRevision>) {
        let mut lead = Lead {
            id: LeadId::parse("01a22bb2-afcf-75b5-92d2-3de3d2f17916").unwrap(),
            fields: LeadFields {
                title: "Acme".into(),
                company: String::new(),
                contact_name: String::new(),
                contact_email: String::new(),
                owner: "ana".into(),
                source: String::new(),
                amount: Some(Money::parse("USD", 1000, 0).unwrap()),
                bant: Default::default(),
                expected_close_time: Some(at(30)),
                labels: Default::default(),
                lost_reason: String::new(),
            },
            pipeline_id: PipelineId::parse("default").unwrap(),
            stage: key("lead_generation"),
            win_probability: 0.1,
            create_time: at(0),
            update_time: at(0),
            stage_enter_time: at(0),
            close_time: None,
            version: 1,
            external_id: Some("x-1".into()),
            close_date_push_count: 0,
            first_expected_close_time: Some(at(30)),
        };
        let mut created = LeadRevision::of(RevisionKind::Created, None, &lead, "import", at(0));
        created.revision = 1;
        let before = lead.clone();
        lead.stage = key("qualification");
        lead.stage_enter_time = at(3);
        lead.update_time = at(3);
        lead.version = 2;
        let mut moved =
            LeadRevision::of(RevisionKind::Moved, Some(&before), &lead, "import", at(3));
        moved.revision = 2;
        let history = [
            change(None, "lead_generation", 0),
            change(Some("lead_generation"), "qualification", 3),
        ]
        .iter()
        .map(|c| stored_change(&lead, c))
        .collect();
        (lead, history, vec![created, moved])
    }

    fn row(lead: &Lead, history: Vec<ImportedChange>) -> RowState {
        RowState {
            stages: RowStages::History(history),
            revisions: Vec::new(),
            fields: lead.fields.clone(),
            modified: None,
        }
    }

    fn plan(row: &RowState) -> Result<UpdatePlan, (String, String)> {
        let (lead, history, revisions) = stored();
        let stored = Stored {
            lead: &lead,
            history: &history,
            revisions: &revisions,
        };
        plan_update(&default_pipeline(), &stored, row, "import", at(20))
    }

    fn week_one() -> Vec<ImportedChange> {
        vec![
            change(None, "lead_generation", 0),
            change(Some("lead_generation"), "qualification", 3),
        ]
    }

    #[test]
    fn the_same_row_plans_nothing() {
        let (lead, _, _) = stored();
        let plan = plan(&row(&lead, week_one())).unwrap();
        assert!(plan.steps.is_empty());
        assert_eq!(plan.lead, lead);
    }

    #[test]
    fn an_extended_history_and_new_fields_become_moves_then_one_update() {
        let (lead, _, _) = stored();
        let mut history = week_one();
        history.push(change(Some("qualification"), "proposal", 8));
        history.push(change(Some("proposal"), "closed_won", 12));
        let mut row = row(&lead, history);
        row.fields.amount = Some(Money::parse("USD", 2500, 0).unwrap());
        row.fields.expected_close_time = Some(at(40));
        let plan = plan(&row).unwrap();
        let kinds: Vec<_> = plan
            .steps
            .iter()
            .map(|s| (s.revision.revision, s.revision.kind, s.revision.change_time))
            .collect();
        assert_eq!(
            kinds,
            [
                (3, RevisionKind::Moved, at(8)),
                (4, RevisionKind::Moved, at(12)),
                (5, RevisionKind::Updated, at(20)),
            ]
        );
        assert_eq!(
            plan.steps[2].revision.changed_fields,
            ["amount", "expected_close_time"]
        );
        assert_eq!(plan.lead.stage.as_str(), "closed_won");
        assert_eq!(plan.lead.close_time, Some(at(12)));
        assert_eq!(plan.lead.version, 5);
        assert_eq!(
            plan.lead.close_date_push_count, 1,
            "a later close date is a push"
        );
        assert_eq!(plan.lead.update_time, at(20));
        assert_eq!(plan.steps[0].previous, lead);
    }

    #[test]
    fn the_row_modification_time_dates_the_field_change() {
        let (lead, _, _) = stored();
        let mut row = row(&lead, week_one());
        row.fields.owner = "bo".into();
        row.modified = Some(at(9));
        let plan = plan(&row).unwrap();
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.steps[0].revision.change_time, at(9));
        row.modified = Some(at(2));
        let (field, reason) = self::plan(&row).unwrap_err();
        assert_eq!(field, "lead.update_time");
        assert!(
            reason.contains("before the stored lead's last change"),
            "{reason}"
        );
    }

    #[test]
    fn a_diverging_or_shorter_history_names_the_first_differing_entry() {
        let (lead, _, _) = stored();
        let mut diverging = week_one();
        diverging[1] = change(Some("lead_generation"), "proposal", 3);
        let (field, reason) = plan(&row(&lead, diverging)).unwrap_err();
        assert_eq!(field, "history[1]");
        assert_eq!(
            reason,
            format!(
                "stored lead_generation→qualification at {}, file has lead_generation→proposal \
                 at {}; stored history is never rewritten",
                time(at(3)),
                time(at(3))
            )
        );
        let mut moved_time = week_one();
        moved_time[1].change_time = at(4);
        assert_eq!(plan(&row(&lead, moved_time)).unwrap_err().0, "history[1]");
        let shorter = vec![change(None, "lead_generation", 0)];
        let (field, reason) = plan(&row(&lead, shorter)).unwrap_err();
        assert_eq!(field, "history[1]");
        assert!(reason.contains("the file ends before it"), "{reason}");
    }

    #[test]
    fn a_stage_change_before_the_last_stored_change_is_refused() {
        let (lead, history, mut revisions) = stored();
        // An edit made here on day 10, after the import.
        let mut edited = lead.clone();
        edited.fields.owner = "cy".into();
        edited.update_time = at(10);
        edited.version = 3;
        let mut revision =
            LeadRevision::of(RevisionKind::Updated, Some(&lead), &edited, "cy", at(10));
        revision.revision = 3;
        revisions.push(revision);
        let mut rows = week_one();
        rows.push(change(Some("qualification"), "proposal", 8));
        let mut row = row(&edited, rows);
        row.fields = edited.fields.clone();
        let stored = Stored {
            lead: &edited,
            history: &history,
            revisions: &revisions,
        };
        let (field, reason) =
            plan_update(&default_pipeline(), &stored, &row, "import", at(20)).unwrap_err();
        assert_eq!(field, "history[2].change_time");
        assert!(reason.contains("never inserted"), "{reason}");
    }

    #[test]
    fn newer_field_changes_are_appended_and_older_ones_must_match() {
        let (lead, _, _) = stored();
        let edit = |day: i64, amount: i64| {
            let mut fields = lead.fields.clone();
            fields.amount = Some(Money::parse("USD", amount, 0).unwrap());
            ImportedRevision {
                change_time: at(day),
                fields,
                mask: vec![LeadField::Amount],
                actor: "sf:005".into(),
            }
        };
        let mut row = row(&lead, week_one());
        // Day 1's amount matches the stored lead then (1000): already there.
        row.revisions = vec![edit(1, 1000), edit(6, 1500)];
        row.fields.amount = Some(Money::parse("USD", 1500, 0).unwrap());
        let plan = plan(&row).unwrap();
        assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps);
        let step = &plan.steps[0].revision;
        assert_eq!(
            (step.kind, step.change_time, step.actor.as_str()),
            (RevisionKind::Updated, at(6), "sf:005")
        );
        row.revisions = vec![edit(2, 900), edit(6, 1500)];
        let (field, reason) = self::plan(&row).unwrap_err();
        assert_eq!(field, "revisions[0]");
        assert!(reason.contains("changes amount"), "{reason}");
    }

    #[test]
    fn a_current_stage_alone_moves_once_and_unknown_keeps_the_stage() {
        let (lead, _, _) = stored();
        let mut row = row(&lead, Vec::new());
        row.stages = RowStages::Current {
            stage: key("negotiation"),
            since: Some(at(11)),
        };
        let plan = plan(&row).unwrap();
        assert_eq!(plan.steps.len(), 1);
        let change = plan.steps[0].change.as_ref().unwrap();
        assert_eq!(
            (change.from_stage.clone(), change.change_time),
            (Some(key("qualification")), at(11))
        );
        row.stages = RowStages::Current {
            stage: key("qualification"),
            since: None,
        };
        assert!(self::plan(&row).unwrap().steps.is_empty());
        row.stages = RowStages::Unknown;
        assert!(self::plan(&row).unwrap().steps.is_empty());
        row.stages = RowStages::Current {
            stage: key("negotiation"),
            since: None,
        };
        let plan = self::plan(&row).unwrap();
        assert_eq!(plan.steps[0].revision.change_time, at(20), "now");
    }
}
