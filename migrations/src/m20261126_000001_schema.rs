use sea_orm_migration::prelude::*;

use crate::{DEFAULT_PIPELINE_JSON, DEFAULT_TENANT};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TenantSequences {
    Table,
    TenantId,
    LastSequence,
    PrunedThrough,
}

#[derive(DeriveIden)]
enum Pipelines {
    Table,
    TenantId,
    Id,
    DisplayName,
    Definition,
    Version,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum Leads {
    Table,
    TenantId,
    Id,
    Title,
    Company,
    ContactName,
    ContactEmail,
    Owner,
    Source,
    PipelineId,
    Stage,
    AmountCurrency,
    AmountUnits,
    AmountNanos,
    BudgetCurrency,
    BudgetUnits,
    BudgetNanos,
    BantAuthority,
    BantNeed,
    BantTimeline,
    ExpectedCloseTime,
    Labels,
    LostReason,
    WinProbability,
    ExpectedValue,
    CreateTime,
    UpdateTime,
    StageEnterTime,
    CloseTime,
    Version,
    ExternalId,
}

#[derive(DeriveIden)]
enum LeadLabels {
    Table,
    TenantId,
    LeadId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum StageChanges {
    Table,
    TenantId,
    Sequence,
    LeadId,
    PipelineId,
    FromStage,
    ToStage,
    ChangeTime,
    Actor,
    Note,
    Imported,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    TenantId,
    Sequence,
    LeadId,
    PipelineId,
    ToStage,
    Owner,
    ChangeTime,
    Payload,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    TenantId,
    RequestId,
    Method,
    RequestHash,
    Response,
    CreateTime,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn text_default(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().default("").to_owned()
}

fn bigint(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn index(name: &str, table: impl IntoIden, cols: Vec<DynIden>) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(col);
    }
    stmt.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TenantSequences::Table)
                    .col(text(TenantSequences::TenantId).primary_key())
                    .col(bigint(TenantSequences::LastSequence))
                    .col(bigint(TenantSequences::PrunedThrough).default(0))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Pipelines::Table)
                    .col(text(Pipelines::TenantId))
                    .col(text(Pipelines::Id))
                    .col(text(Pipelines::DisplayName))
                    .col(text(Pipelines::Definition))
                    .col(bigint(Pipelines::Version))
                    .col(bigint(Pipelines::CreateTime))
                    .col(bigint(Pipelines::UpdateTime))
                    .primary_key(Index::create().col(Pipelines::TenantId).col(Pipelines::Id))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Leads::Table)
                    .col(text(Leads::TenantId))
                    .col(text(Leads::Id))
                    .col(text(Leads::Title))
                    .col(text_default(Leads::Company))
                    .col(text_default(Leads::ContactName))
                    .col(text_default(Leads::ContactEmail))
                    .col(text_default(Leads::Owner))
                    .col(text_default(Leads::Source))
                    .col(text(Leads::PipelineId))
                    .col(text(Leads::Stage))
                    .col(text_default(Leads::AmountCurrency))
                    .col(bigint(Leads::AmountUnits).default(0))
                    .col(
                        ColumnDef::new(Leads::AmountNanos)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(text_default(Leads::BudgetCurrency))
                    .col(bigint(Leads::BudgetUnits).default(0))
                    .col(
                        ColumnDef::new(Leads::BudgetNanos)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(text_default(Leads::BantAuthority))
                    .col(text_default(Leads::BantNeed))
                    .col(ColumnDef::new(Leads::BantTimeline).big_integer().null())
                    .col(
                        ColumnDef::new(Leads::ExpectedCloseTime)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Leads::Labels)
                            .text()
                            .not_null()
                            .default("{}"),
                    )
                    .col(text_default(Leads::LostReason))
                    .col(ColumnDef::new(Leads::WinProbability).double().not_null())
                    .col(
                        ColumnDef::new(Leads::ExpectedValue)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(bigint(Leads::CreateTime))
                    .col(bigint(Leads::UpdateTime))
                    .col(bigint(Leads::StageEnterTime))
                    .col(ColumnDef::new(Leads::CloseTime).big_integer().null())
                    .col(bigint(Leads::Version))
                    .col(ColumnDef::new(Leads::ExternalId).text().null())
                    .primary_key(Index::create().col(Leads::TenantId).col(Leads::Id))
                    .to_owned(),
            )
            .await?;
        let lead_indexes: [(&str, Vec<DynIden>); 6] = [
            (
                "leads_by_create_time",
                vec![
                    Leads::TenantId.into_iden(),
                    Leads::CreateTime.into_iden(),
                    Leads::Id.into_iden(),
                ],
            ),
            (
                "leads_by_update_time",
                vec![
                    Leads::TenantId.into_iden(),
                    Leads::UpdateTime.into_iden(),
                    Leads::Id.into_iden(),
                ],
            ),
            (
                "leads_by_amount",
                vec![
                    Leads::TenantId.into_iden(),
                    Leads::AmountUnits.into_iden(),
                    Leads::AmountNanos.into_iden(),
                    Leads::Id.into_iden(),
                ],
            ),
            (
                "leads_by_win_probability",
                vec![
                    Leads::TenantId.into_iden(),
                    Leads::WinProbability.into_iden(),
                    Leads::Id.into_iden(),
                ],
            ),
            (
                "leads_by_expected_value",
                vec![
                    Leads::TenantId.into_iden(),
                    Leads::ExpectedValue.into_iden(),
                    Leads::Id.into_iden(),
                ],
            ),
            (
                "leads_by_stage",
                vec![
                    Leads::TenantId.into_iden(),
                    Leads::PipelineId.into_iden(),
                    Leads::Stage.into_iden(),
                ],
            ),
        ];
        for (name, cols) in lead_indexes {
            manager
                .create_index(index(name, Leads::Table, cols))
                .await?;
        }

        manager
            .create_index(
                Index::create()
                    .name("leads_by_external_id")
                    .table(Leads::Table)
                    .col(Leads::TenantId)
                    .col(Leads::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LeadLabels::Table)
                    .col(text(LeadLabels::TenantId))
                    .col(text(LeadLabels::LeadId))
                    .col(text(LeadLabels::Key))
                    .col(text(LeadLabels::Value))
                    .primary_key(
                        Index::create()
                            .col(LeadLabels::TenantId)
                            .col(LeadLabels::LeadId)
                            .col(LeadLabels::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "lead_labels_by_key_value",
                LeadLabels::Table,
                vec![
                    LeadLabels::TenantId.into_iden(),
                    LeadLabels::Key.into_iden(),
                    LeadLabels::Value.into_iden(),
                ],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(StageChanges::Table)
                    .col(text(StageChanges::TenantId))
                    .col(bigint(StageChanges::Sequence))
                    .col(text(StageChanges::LeadId))
                    .col(text(StageChanges::PipelineId))
                    .col(text_default(StageChanges::FromStage))
                    .col(text(StageChanges::ToStage))
                    .col(bigint(StageChanges::ChangeTime))
                    .col(text_default(StageChanges::Actor))
                    .col(text_default(StageChanges::Note))
                    .col(
                        ColumnDef::new(StageChanges::Imported)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .primary_key(
                        Index::create()
                            .col(StageChanges::TenantId)
                            .col(StageChanges::Sequence),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "stage_changes_by_lead",
                StageChanges::Table,
                vec![
                    StageChanges::TenantId.into_iden(),
                    StageChanges::LeadId.into_iden(),
                    StageChanges::Sequence.into_iden(),
                ],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(text(Outbox::TenantId))
                    .col(bigint(Outbox::Sequence))
                    .col(text(Outbox::LeadId))
                    .col(text(Outbox::PipelineId))
                    .col(text(Outbox::ToStage))
                    .col(text_default(Outbox::Owner))
                    .col(bigint(Outbox::ChangeTime))
                    .col(text(Outbox::Payload))
                    .primary_key(Index::create().col(Outbox::TenantId).col(Outbox::Sequence))
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(index(
                "outbox_by_change_time",
                Outbox::Table,
                vec![Outbox::TenantId.into_iden(), Outbox::ChangeTime.into_iden()],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(text(IdempotencyKeys::TenantId))
                    .col(text(IdempotencyKeys::RequestId))
                    .col(text(IdempotencyKeys::Method))
                    .col(text(IdempotencyKeys::RequestHash))
                    .col(text(IdempotencyKeys::Response))
                    .col(bigint(IdempotencyKeys::CreateTime))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::TenantId)
                            .col(IdempotencyKeys::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idempotency_keys_by_create_time",
                IdempotencyKeys::Table,
                vec![
                    IdempotencyKeys::TenantId.into_iden(),
                    IdempotencyKeys::CreateTime.into_iden(),
                ],
            ))
            .await?;

        seed_default_tenant(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            Outbox::Table.into_iden(),
            StageChanges::Table.into_iden(),
            LeadLabels::Table.into_iden(),
            Leads::Table.into_iden(),
            Pipelines::Table.into_iden(),
            TenantSequences::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn seed_default_tenant(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    manager
        .exec_stmt(
            Query::insert()
                .into_table(TenantSequences::Table)
                .columns([TenantSequences::TenantId, TenantSequences::LastSequence])
                .values_panic([DEFAULT_TENANT.into(), 0i64.into()])
                .to_owned(),
        )
        .await?;
    manager
        .exec_stmt(
            Query::insert()
                .into_table(Pipelines::Table)
                .columns([
                    Pipelines::TenantId,
                    Pipelines::Id,
                    Pipelines::DisplayName,
                    Pipelines::Definition,
                    Pipelines::Version,
                    Pipelines::CreateTime,
                    Pipelines::UpdateTime,
                ])
                .values_panic([
                    DEFAULT_TENANT.into(),
                    "default".into(),
                    "Default sales pipeline".into(),
                    DEFAULT_PIPELINE_JSON.into(),
                    1i64.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned(),
        )
        .await
}
