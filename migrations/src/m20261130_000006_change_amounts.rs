//! The lead's amount on each stage change, as the change left it.
//!
//! GetForecast counts the wins of a period at the amount each lead was won at. Without the
//! amount on the change, every win was joined to the revision in effect at its time, one index
//! probe per win. Every write now records the amount with the change.
//!
//! The columns are nullable and nothing is backfilled: NULL marks a change recorded without
//! them, before this migration or by a replica of the previous version still running during a
//! rolling update, and readers look its amount up in the revisions as before. So the migration
//! changes only the catalog, and holds no lock on `stage_changes` for longer than that.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StageChanges {
    Table,
    AmountCurrency,
    AmountUnits,
    AmountNanos,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        let columns = [
            ColumnDef::new(StageChanges::AmountCurrency)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(StageChanges::AmountUnits)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(StageChanges::AmountNanos)
                .integer()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(StageChanges::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            StageChanges::AmountCurrency,
            StageChanges::AmountUnits,
            StageChanges::AmountNanos,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(StageChanges::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
