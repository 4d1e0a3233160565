//! API keys. A key is `lp_<tenant>_<id>_<secret>`; the row is found by its primary key
//! `(tenant_id, id)`, and only a SHA-256 hash of the key is stored.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    TenantId,
    Id,
    Role,
    SecretHash,
    Label,
    CreateTime,
    RevokeTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::TenantId).text().not_null())
                    .col(ColumnDef::new(ApiKeys::Id).text().not_null())
                    .col(ColumnDef::new(ApiKeys::Role).text().not_null())
                    .col(ColumnDef::new(ApiKeys::SecretHash).text().not_null())
                    .col(ColumnDef::new(ApiKeys::Label).text().not_null().default(""))
                    .col(ColumnDef::new(ApiKeys::CreateTime).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::RevokeTime).big_integer().null())
                    .primary_key(Index::create().col(ApiKeys::TenantId).col(ApiKeys::Id))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
