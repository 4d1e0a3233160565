//! Imported leads: their history must form one valid chain through the pipeline. Entry criteria
//! and movement rules are not re-checked, because the history records what did happen.

use chrono::{DateTime, Duration, Utc};

use super::ids::StageKey;
use super::pipeline::PipelineDefinition;

pub const MAX_EXTERNAL_ID_LEN: usize = 200;
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
}
