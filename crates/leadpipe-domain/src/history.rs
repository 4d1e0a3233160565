//! Stage history: every change of a lead's stage, and the event published for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{LeadId, PipelineId, StageKey};
use super::lead::Lead;

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
