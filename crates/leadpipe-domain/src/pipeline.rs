//! Pipelines: ordered stages, their entry criteria and the movement rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{CriterionId, PipelineId, StageKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl StageKind {
    pub fn is_closed(self) -> bool {
        !matches!(self, StageKind::Open)
    }
}

/// A condition a lead must meet to enter a stage, as a CEL expression over `lead`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    pub id: CriterionId,
    pub message: String,
    pub expression: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub key: StageKey,
    pub display_name: String,
    pub kind: StageKind,
    /// Default win probability, 0..=1.
    pub probability: f64,
    /// Idle days after which a lead counts as stuck; 0 disables.
    pub rotting_days: u32,
    pub entry_criteria: Vec<Criterion>,
}

/// Which moves a pipeline allows besides one step forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementRules {
    /// Forward moves may skip open stages.
    pub allow_skip: bool,
    /// Moves back to an earlier open stage.
    pub allow_backward: bool,
    /// Closed leads may be reopened into an open stage.
    pub allow_reopen: bool,
}

impl Default for MovementRules {
    fn default() -> Self {
        Self {
            allow_skip: false,
            allow_backward: true,
            allow_reopen: true,
        }
    }
}

/// The definition a client writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefinition {
    pub display_name: String,
    pub stages: Vec<Stage>,
    pub rules: MovementRules,
}

/// A stored pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub id: PipelineId,
    pub definition: PipelineDefinition,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub version: i64,
}

impl PipelineDefinition {
    pub fn stage(&self, key: &StageKey) -> Option<&Stage> {
        self.stages.iter().find(|s| &s.key == key)
    }

    pub fn stage_index(&self, key: &StageKey) -> Option<usize> {
        self.stages.iter().position(|s| &s.key == key)
    }

    /// New leads enter here; validation guarantees it exists and is open.
    pub fn first_stage(&self) -> &Stage {
        &self.stages[0]
    }
}
