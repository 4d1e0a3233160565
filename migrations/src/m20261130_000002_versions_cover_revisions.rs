//! A lead's next revision is numbered with its next version, so that a write need not read its
//! revisions to number the one it appends. Revisions backfilled from the stage history (leads
//! imported before revisions existed, with a history longer than their version) can number
//! above the lead's version; such leads take their highest revision as their version. Their
//! etag changes once, as after any write: a client holding the old one reads the lead again.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const RAISE: &str = "UPDATE leads SET version = (
        SELECT max(r.revision) FROM lead_revisions AS r
        WHERE r.tenant_id = leads.tenant_id AND r.lead_id = leads.id)
    WHERE version < (
        SELECT max(r.revision) FROM lead_revisions AS r
        WHERE r.tenant_id = leads.tenant_id AND r.lead_id = leads.id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(RAISE).await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // A raised version is as valid as the one it replaced; nothing to undo.
        Ok(())
    }
}
