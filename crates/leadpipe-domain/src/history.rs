//! Stage history: every change of a lead's stage, and the event published for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{LeadId, PipelineId, StageKey};
use super::lead::Lead;
use super::revision::{LeadRevision, RevisionKind};

pub const MAX_NOTE_LEN: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageChange {
    /// Position in the tenant's history; assigned when the change is stored.
    pub sequence: i64,
    pub lead_id: LeadId,
    pub pipeline_id: PipelineId,
    /// None for the entry written when the lead was created.
    pub from_stage: Option<StageKey>,
    pub to_stage: StageKey,
    pub change_time: DateTime<Utc>,
    pub actor: String,
    pub note: String,
    /// Loaded by an import rather than made through MoveLead.
    pub imported: bool,
}

/// What subscribers receive: the change and the lead as it was right after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageChangeEvent {
    pub change: StageChange,
    pub lead: Lead,
}

/// What the outbox holds for every write of a lead, and what `WatchLeadChanges` streams. Stage
/// subscribers see only the events that carry a `change`.
///
/// Events written before every write produced one hold only `change` and `lead`: they are all
/// stage changes, and the other fields take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadChangeEvent {
    #[serde(default)]
    pub sequence: i64,
    #[serde(default)]
    pub kind: Option<RevisionKind>,
    /// Set when the write changed the stage (a creation or a move).
    #[serde(default)]
    pub change: Option<StageChange>,
    /// The lead after the change; for a deletion, its last state.
    pub lead: Lead,
    /// The lead before the change; None on creation.
    #[serde(default)]
    pub previous: Option<Lead>,
    #[serde(default)]
    pub changed_fields: Vec<String>,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub change_time: Option<DateTime<Utc>>,
}

impl LeadChangeEvent {
    /// The event of a write, as its revision records it.
    pub fn of(
        revision: &LeadRevision,
        previous: Option<&Lead>,
        change: Option<StageChange>,
    ) -> Self {
        Self {
            sequence: revision.sequence.unwrap_or_default(),
            kind: Some(revision.kind),
            change,
            lead: revision.lead.clone(),
            previous: previous.cloned(),
            changed_fields: revision.changed_fields.clone(),
            actor: revision.actor.clone(),
            change_time: Some(revision.change_time),
        }
    }

    pub fn kind(&self) -> RevisionKind {
        self.kind.unwrap_or(match &self.change {
            Some(change) if change.from_stage.is_none() => RevisionKind::Created,
            _ => RevisionKind::Moved,
        })
    }

    pub fn change_time(&self) -> DateTime<Utc> {
        self.change_time
            .or(self.change.as_ref().map(|c| c.change_time))
            .unwrap_or(self.lead.update_time)
    }

    pub fn actor(&self) -> &str {
        match &self.change {
            Some(change) if self.actor.is_empty() => &change.actor,
            _ => &self.actor,
        }
    }

    /// The fields the write changed; events from before they were recorded changed the stage.
    pub fn changed_fields(&self) -> Vec<String> {
        if self.kind.is_none() && self.changed_fields.is_empty() {
            vec!["stage".to_owned()]
        } else {
            self.changed_fields.clone()
        }
    }

    /// The stage change this event carries, as `WatchStageChanges` streams it.
    pub fn stage_event(&self) -> Option<StageChangeEvent> {
        self.change.as_ref().map(|change| StageChangeEvent {
            change: change.clone(),
            lead: self.lead.clone(),
        })
    }
}
