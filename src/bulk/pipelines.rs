//! `leadpipe pipelines export` and `leadpipe pipelines apply FILE`: a tenant's pipelines as a
//! TOML or JSON file, so that a copy of the leads finds the stages they were in. Each pipeline
//! goes through the `CreatePipeline` or `UpdatePipeline` conversion and use case, so a file is
//! refused exactly when the RPC would refuse its pipelines.
//!
//! ```toml
//! [[pipelines]]
//! id = "default"
//! display_name = "Default sales pipeline"
//! allow_skip = false
//! allow_backward = true
//! allow_reopen = true
//!
//! [[pipelines.stages]]
//! key = "lead_generation"
//! display_name = "Lead generation"
//! kind = "open"
//! probability = 0.1
//! rotting_days = 14
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::api::pb;
use crate::app::pipelines::{CreatePipeline, PipelineListQuery, UpdatePipeline};
use crate::app::{AppError, RequestContext, Services};
use crate::domain::ids::{PipelineId, TenantId};
use crate::store::StoreConfig;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(default)]
    pub pipelines: Vec<PipelineSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub id: String,
    pub display_name: String,
    #[serde(default)]
    pub allow_skip: bool,
    #[serde(default = "yes")]
    pub allow_backward: bool,
    #[serde(default = "yes")]
    pub allow_reopen: bool,
    pub stages: Vec<StageSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub key: String,
    #[serde(default)]
    pub display_name: String,
    /// `open`, `won` or `lost`.
    pub kind: String,
    pub probability: f64,
    #[serde(default)]
    pub rotting_days: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_criteria: Vec<CriterionSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionSpec {
    pub id: String,
    pub message: String,
    pub expression: String,
}

fn yes() -> bool {
    true
}

/// TOML or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// By the file's extension: `.json` is JSON, anything else TOML.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Toml,
        }
    }
}

impl From<&pb::Pipeline> for PipelineSpec {
    fn from(p: &pb::Pipeline) -> Self {
        PipelineSpec {
            id: p.id.clone(),
            display_name: p.display_name.clone(),
            allow_skip: p.allow_skip,
            allow_backward: p.allow_backward.unwrap_or(true),
            allow_reopen: p.allow_reopen.unwrap_or(true),
            stages: p
                .stages
                .iter()
                .map(|s| StageSpec {
                    key: s.key.clone(),
                    display_name: s.display_name.clone(),
                    kind: match pb::StageKind::try_from(s.kind) {
                        Ok(pb::StageKind::Won) => "won",
                        Ok(pb::StageKind::Lost) => "lost",
                        _ => "open",
                    }
                    .to_owned(),
                    probability: s.probability,
                    rotting_days: s.rotting_days,
                    entry_criteria: s
                        .entry_criteria
                        .iter()
                        .map(|c| CriterionSpec {
                            id: c.id.clone(),
                            message: c.message.clone(),
                            expression: c.expression.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl PipelineSpec {
    fn to_proto(&self) -> pb::Pipeline {
        pb::Pipeline {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            allow_skip: self.allow_skip,
            allow_backward: Some(self.allow_backward),
            allow_reopen: Some(self.allow_reopen),
            stages: self
                .stages
                .iter()
                .map(|s| pb::Stage {
                    key: s.key.clone(),
                    display_name: s.display_name.clone(),
                    kind: match s.kind.trim().to_ascii_lowercase().as_str() {
                        "open" => pb::StageKind::Open,
                        "won" => pb::StageKind::Won,
                        "lost" => pb::StageKind::Lost,
                        _ => pb::StageKind::Unspecified,
                    } as i32,
                    probability: s.probability,
                    rotting_days: s.rotting_days,
                    entry_criteria: s
                        .entry_criteria
                        .iter()
                        .map(|c| pb::Criterion {
                            id: c.id.clone(),
                            message: c.message.clone(),
                            expression: c.expression.clone(),
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

impl PipelineFile {
    pub fn parse(text: &str, format: Format) -> Result<Self, String> {
        match format {
            Format::Toml => toml::from_str(text).map_err(|e| e.to_string().trim().to_owned()),
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
        }
    }

    pub fn render(&self, format: Format) -> Result<String, String> {
        match format {
            Format::Toml => toml::to_string(self).map_err(|e| e.to_string()),
            Format::Json => serde_json::to_string_pretty(self)
                .map(|mut text| {
                    text.push('\n');
                    text
                })
                .map_err(|e| e.to_string()),
        }
    }
}

/// Every pipeline of the tenant, in id order.
pub async fn read_all(app: &Services, ctx: &RequestContext) -> Result<PipelineFile, String> {
    let mut file = PipelineFile::default();
    let mut page_token = String::new();
    loop {
        let (page, next) = app
            .pipelines
            .list(
                ctx,
                PipelineListQuery {
                    page_size: 1000,
                    page_token: std::mem::take(&mut page_token),
                },
            )
            .await
            .map_err(describe)?;
        file.pipelines.extend(
            page.iter()
                .map(|p| PipelineSpec::from(&pb::Pipeline::from(p))),
        );
        if next.is_empty() {
            return Ok(file);
        }
        page_token = next;
    }
}

/// `leadpipe pipelines export`: the file's text.
pub async fn export(
    config: &StoreConfig,
    tenant: &TenantId,
    format: Format,
) -> Result<String, String> {
    let app = super::open(config).await?;
    let ctx = super::context(tenant, "pipelines");
    let result = read_all(&app, &ctx).await;
    app.store.close().await;
    result?.render(format)
}

/// What `apply` did to one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created(String),
    Updated(String),
    Unchanged(String),
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created(id) => write!(f, "created pipeline {id}"),
            Self::Updated(id) => write!(f, "updated pipeline {id}"),
            Self::Unchanged(id) => write!(f, "pipeline {id} is unchanged"),
        }
    }
}

/// Creates each pipeline of the file that the tenant lacks and updates each that differs.
pub async fn apply_file(
    app: &Services,
    ctx: &RequestContext,
    file: &PipelineFile,
) -> Result<Vec<Applied>, String> {
    let mut done = Vec::new();
    for spec in &file.pipelines {
        let id =
            PipelineId::parse(&spec.id).map_err(|e| format!("pipeline id {:?}: {e}", spec.id))?;
        let named = |e: AppError| format!("pipeline {}: {}", spec.id, describe(e));
        let existing = match app.pipelines.get(ctx, &id).await {
            Ok(pipeline) => Some(PipelineSpec::from(&pb::Pipeline::from(&pipeline))),
            Err(AppError::NotFound { .. }) => None,
            Err(e) => return Err(named(e)),
        };
        match existing {
            None => {
                let command = CreatePipeline::try_from(pb::CreatePipelineRequest {
                    pipeline: Some(spec.to_proto()),
                })
                .map_err(named)?;
                app.pipelines.create(ctx, command).await.map_err(named)?;
                done.push(Applied::Created(spec.id.clone()));
            }
            Some(current) if same(&current, spec) => {
                done.push(Applied::Unchanged(spec.id.clone()));
            }
            Some(_) => {
                let command = UpdatePipeline::try_from(pb::UpdatePipelineRequest {
                    pipeline: Some(spec.to_proto()),
                    update_mask: None,
                })
                .map_err(named)?;
                app.pipelines.update(ctx, command).await.map_err(named)?;
                done.push(Applied::Updated(spec.id.clone()));
            }
        }
    }
    Ok(done)
}

/// Equal as stored: a stage without a display name is shown by its key.
fn same(current: &PipelineSpec, wanted: &PipelineSpec) -> bool {
    let mut wanted = wanted.clone();
    for stage in &mut wanted.stages {
        if stage.display_name.trim().is_empty() {
            stage.display_name.clone_from(&stage.key);
        }
        stage.kind = stage.kind.trim().to_ascii_lowercase();
    }
    *current == wanted
}

/// Creates the pipeline when the tenant lacks it; one it has is left as it is.
pub async fn ensure(
    app: &Services,
    ctx: &RequestContext,
    spec: &PipelineSpec,
) -> Result<bool, String> {
    let id = PipelineId::parse(&spec.id).map_err(|e| format!("pipeline id {:?}: {e}", spec.id))?;
    let named = |e: AppError| format!("pipeline {}: {}", spec.id, describe(e));
    match app.pipelines.get(ctx, &id).await {
        Ok(_) => Ok(false),
        Err(AppError::NotFound { .. }) => {
            let command = CreatePipeline::try_from(pb::CreatePipelineRequest {
                pipeline: Some(spec.to_proto()),
            })
            .map_err(named)?;
            app.pipelines.create(ctx, command).await.map_err(named)?;
            Ok(true)
        }
        Err(e) => Err(named(e)),
    }
}

/// The definition a spec gives, checked as `CreatePipeline` checks it.
pub fn definition_of(
    spec: &PipelineSpec,
) -> Result<crate::domain::pipeline::PipelineDefinition, String> {
    CreatePipeline::try_from(pb::CreatePipelineRequest {
        pipeline: Some(spec.to_proto()),
    })
    .map(|command| command.definition)
    .map_err(|e| format!("pipeline {}: {}", spec.id, describe(e)))
}

/// Reads a pipeline file, by its extension.
pub fn load(path: &Path) -> Result<PipelineFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PipelineFile::parse(&text, Format::of(path)).map_err(|e| format!("{}: {e}", path.display()))
}

/// `leadpipe pipelines apply FILE`.
pub async fn apply(
    config: &StoreConfig,
    tenant: &TenantId,
    path: &Path,
) -> Result<Vec<Applied>, String> {
    let file = load(path)?;
    let app = super::open(config).await?;
    let ctx = super::context(tenant, "pipelines");
    let result = apply_file(&app, &ctx, &file).await;
    app.store.close().await;
    result
}

pub(crate) fn describe(error: AppError) -> String {
    match error {
        AppError::InvalidArgument(violations) => violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        AppError::FailedPrecondition {
            message,
            violations,
        } => {
            let details: Vec<String> = violations.iter().map(|v| v.description.clone()).collect();
            format!("{message}: {}", details.join("; "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::PipelineId;
    use crate::domain::pipeline::Pipeline;
    use crate::domain::policy::default_pipeline;

    #[test]
    fn the_default_pipeline_round_trips_through_toml_and_json() {
        let now = chrono::Utc::now();
        let pipeline = Pipeline {
            id: PipelineId::default_pipeline(),
            definition: default_pipeline(),
            create_time: now,
            update_time: now,
            version: 1,
        };
        let file = PipelineFile {
            pipelines: vec![PipelineSpec::from(&pb::Pipeline::from(&pipeline))],
        };
        for format in [Format::Toml, Format::Json] {
            let text = file.render(format).unwrap();
            assert_eq!(PipelineFile::parse(&text, format).unwrap(), file, "{text}");
        }
        let toml = file.render(Format::Toml).unwrap();
        assert!(
            toml.contains("[[pipelines.stages]]\nkey = \"lead_generation\""),
            "{toml}"
        );
        assert!(PipelineFile::parse("[[pipelines]]\nid = 1", Format::Toml).is_err());
    }
}
