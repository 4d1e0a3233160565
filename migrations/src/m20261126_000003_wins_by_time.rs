//! An index for the history's entries into a stage over a time window, such as the wins of a
//! forecast period. Without it SQLite answered those by walking every lead of the tenant and
//! each lead's history, which was most of a large GetForecast (BENCHMARKS.md, section 5).

use sea_orm_migration::prelude::*;

const NAME: &str = "stage_changes_by_stage_time";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StageChanges {
    Table,
    TenantId,
    PipelineId,
    ToStage,
    ChangeTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(StageChanges::Table)
                    .col(StageChanges::TenantId)
                    .col(StageChanges::PipelineId)
                    .col(StageChanges::ToStage)
                    .col(StageChanges::ChangeTime)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(NAME)
                    .table(StageChanges::Table)
                    .to_owned(),
            )
            .await
    }
}
