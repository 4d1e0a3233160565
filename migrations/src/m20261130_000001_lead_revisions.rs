//! Lead revisions: the lead as it was after every write, so that a change's previous values,
//! the lead as of a time and field history (amount, close-date slippage) can be read back.
//! Also the slippage columns on `leads`, and the watermark of pruned revisions per tenant.
//!
//! Existing leads are backfilled from what the database still knows: one revision per stage
//! change of the lead (the first is its creation), each holding the lead's current field values
//! with that change's stage. Earlier values of the other fields were overwritten before
//! revisions existed and cannot be recovered; the slippage counters start at zero, with the
//! current expected close as the first one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, QueryResult};
use serde_json::{Value, json};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum LeadRevisions {
    Table,
    TenantId,
    LeadId,
    Revision,
    ChangeTime,
    Kind,
    Actor,
    Sequence,
    ChangedFields,
    FromStage,
    ToStage,
    PipelineId,
    Stage,
    Owner,
    Source,
    AmountCurrency,
    AmountUnits,
    AmountNanos,
    ExpectedCloseTime,
    CloseTime,
    CreateTime,
    Labels,
    CloseDatePushCount,
    FirstExpectedCloseTime,
    Deleted,
    Lead,
}

#[derive(DeriveIden)]
enum Leads {
    Table,
    TenantId,
    Id,
    CloseDatePushCount,
    FirstExpectedCloseTime,
    ExpectedCloseTime,
}

#[derive(DeriveIden)]
enum TenantSequences {
    Table,
    RevisionsPrunedBefore,
}

const BY_LEAD_TIME: &str = "lead_revisions_by_lead_time";
const BY_PIPELINE_TIME: &str = "lead_revisions_by_pipeline_time";

/// Leads read per backfill statement.
const BACKFILL_BATCH: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use LeadRevisions as R;
        let text = |c: R| ColumnDef::new(c).text().not_null().to_owned();
        let bigint = |c: R| ColumnDef::new(c).big_integer().not_null().to_owned();
        let nullable = |c: R| ColumnDef::new(c).big_integer().null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .col(text(R::TenantId))
                    .col(text(R::LeadId))
                    .col(bigint(R::Revision))
                    .col(bigint(R::ChangeTime))
                    .col(text(R::Kind))
                    .col(text(R::Actor))
                    .col(nullable(R::Sequence))
                    .col(text(R::ChangedFields))
                    .col(ColumnDef::new(R::FromStage).text().null())
                    .col(ColumnDef::new(R::ToStage).text().null())
                    .col(text(R::PipelineId))
                    .col(text(R::Stage))
                    .col(text(R::Owner))
                    .col(text(R::Source))
                    .col(text(R::AmountCurrency))
                    .col(bigint(R::AmountUnits))
                    .col(ColumnDef::new(R::AmountNanos).integer().not_null())
                    .col(nullable(R::ExpectedCloseTime))
                    .col(nullable(R::CloseTime))
                    .col(bigint(R::CreateTime))
                    .col(text(R::Labels))
                    .col(bigint(R::CloseDatePushCount).default(0))
                    .col(nullable(R::FirstExpectedCloseTime))
                    .col(ColumnDef::new(R::Deleted).boolean().not_null())
                    .col(text(R::Lead))
                    .primary_key(
                        Index::create()
                            .col(R::TenantId)
                            .col(R::LeadId)
                            .col(R::Revision),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, middle) in [(BY_LEAD_TIME, R::LeadId), (BY_PIPELINE_TIME, R::PipelineId)] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(R::Table)
                        .col(R::TenantId)
                        .col(middle)
                        .col(R::ChangeTime)
                        .to_owned(),
                )
                .await?;
        }
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Leads::Table)
                    .add_column(
                        ColumnDef::new(Leads::CloseDatePushCount)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Leads::Table)
                    .add_column(
                        ColumnDef::new(Leads::FirstExpectedCloseTime)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TenantSequences::Table)
                    .add_column(
                        ColumnDef::new(TenantSequences::RevisionsPrunedBefore)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute(
            &Query::update()
                .table(Leads::Table)
                .value(
                    Leads::FirstExpectedCloseTime,
                    Expr::col(Leads::ExpectedCloseTime),
                )
                .to_owned(),
        )
        .await?;
        backfill(db).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LeadRevisions::Table).to_owned())
            .await?;
        for column in [Leads::CloseDatePushCount, Leads::FirstExpectedCloseTime] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Leads::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(TenantSequences::Table)
                    .drop_column(TenantSequences::RevisionsPrunedBefore)
                    .to_owned(),
            )
            .await
    }
}

/// A stage change as the backfill reads it.
struct Change {
    sequence: i64,
    from_stage: String,
    to_stage: String,
    change_time: i64,
    actor: String,
    imported: bool,
}

async fn backfill(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let mut after: Option<(String, String)> = None;
    loop {
        let mut select = Query::select();
        select
            .expr(Expr::cust("*"))
            .from(Alias::new("leads"))
            .order_by(Leads::TenantId, Order::Asc)
            .order_by(Leads::Id, Order::Asc)
            .limit(BACKFILL_BATCH);
        if let Some((tenant, id)) = &after {
            select.cond_where(
                Cond::any()
                    .add(Expr::col(Leads::TenantId).gt(tenant.as_str()))
                    .add(
                        Cond::all()
                            .add(Expr::col(Leads::TenantId).eq(tenant.as_str()))
                            .add(Expr::col(Leads::Id).gt(id.as_str())),
                    ),
            );
        }
        let rows = db.query_all(&select).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some((
            last.try_get::<String>("", "tenant_id")?,
            last.try_get::<String>("", "id")?,
        ));
        let mut changes: HashMap<(String, String), Vec<Change>> = HashMap::new();
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for row in &rows {
            by_tenant
                .entry(row.try_get("", "tenant_id")?)
                .or_default()
                .push(row.try_get("", "id")?);
        }
        for (tenant, ids) in &by_tenant {
            let history = db
                .query_all(
                    &Query::select()
                        .columns(
                            [
                                "lead_id",
                                "sequence",
                                "from_stage",
                                "to_stage",
                                "change_time",
                                "actor",
                                "imported",
                            ]
                            .map(Alias::new),
                        )
                        .from(Alias::new("stage_changes"))
                        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant.as_str()))
                        .and_where(Expr::col(Alias::new("lead_id")).is_in(ids.iter().cloned()))
                        .order_by(Alias::new("sequence"), Order::Asc)
                        .to_owned(),
                )
                .await?;
            for row in history {
                changes
                    .entry((tenant.clone(), row.try_get("", "lead_id")?))
                    .or_default()
                    .push(Change {
                        sequence: row.try_get("", "sequence")?,
                        from_stage: row.try_get("", "from_stage")?,
                        to_stage: row.try_get("", "to_stage")?,
                        change_time: row.try_get("", "change_time")?,
                        actor: row.try_get("", "actor")?,
                        imported: row.try_get("", "imported")?,
                    });
            }
        }
        let mut inserts = Vec::new();
        for row in &rows {
            let key: (String, String) = (row.try_get("", "tenant_id")?, row.try_get("", "id")?);
            let history = changes.remove(&key).unwrap_or_default();
            inserts.extend(revisions_of(row, &history)?);
        }
        // Well under both backends' bind-parameter limits per statement.
        for chunk in inserts.chunks(100) {
            let mut insert = Query::insert();
            insert.into_table(LeadRevisions::Table).columns([
                LeadRevisions::TenantId,
                LeadRevisions::LeadId,
                LeadRevisions::Revision,
                LeadRevisions::ChangeTime,
                LeadRevisions::Kind,
                LeadRevisions::Actor,
                LeadRevisions::Sequence,
                LeadRevisions::ChangedFields,
                LeadRevisions::FromStage,
                LeadRevisions::ToStage,
                LeadRevisions::PipelineId,
                LeadRevisions::Stage,
                LeadRevisions::Owner,
                LeadRevisions::Source,
                LeadRevisions::AmountCurrency,
                LeadRevisions::AmountUnits,
                LeadRevisions::AmountNanos,
                LeadRevisions::ExpectedCloseTime,
                LeadRevisions::CloseTime,
                LeadRevisions::CreateTime,
                LeadRevisions::Labels,
                LeadRevisions::CloseDatePushCount,
                LeadRevisions::FirstExpectedCloseTime,
                LeadRevisions::Deleted,
                LeadRevisions::Lead,
            ]);
            for values in chunk {
                insert.values_panic(values.iter().cloned());
            }
            db.execute(&insert).await?;
        }
    }
}

fn time(micros: i64) -> Value {
    DateTime::<Utc>::from_timestamp_micros(micros).map_or(Value::Null, |t| json!(t))
}

fn money(currency: &str, units: i64, nanos: i32) -> Value {
    if currency.is_empty() {
        Value::Null
    } else {
        json!({ "currency": currency, "units": units, "nanos": nanos })
    }
}

/// The revisions of one lead: one per stage change, the last with the lead's current state.
fn revisions_of(row: &QueryResult, history: &[Change]) -> Result<Vec<Vec<Expr>>, DbErr> {
    let get_s = |c: &str| row.try_get::<String>("", c);
    let get_i = |c: &str| row.try_get::<i64>("", c);
    let get_o = |c: &str| row.try_get::<Option<i64>>("", c);
    let tenant = get_s("tenant_id")?;
    let id = get_s("id")?;
    let create_time = get_i("create_time")?;
    let labels: Value = serde_json::from_str(&get_s("labels")?).unwrap_or_else(|_| json!({}));
    let expected_close = get_o("expected_close_time")?;
    let amount_nanos = row.try_get::<i32>("", "amount_nanos")?;
    let amount = money(
        &get_s("amount_currency")?,
        get_i("amount_units")?,
        amount_nanos,
    );
    let budget = money(
        &get_s("budget_currency")?,
        get_i("budget_units")?,
        row.try_get::<i32>("", "budget_nanos")?,
    );
    let fields = json!({
        "title": get_s("title")?,
        "company": get_s("company")?,
        "contact_name": get_s("contact_name")?,
        "contact_email": get_s("contact_email")?,
        "owner": get_s("owner")?,
        "source": get_s("source")?,
        "amount": amount,
        "bant": {
            "budget": budget,
            "authority": get_s("bant_authority")?,
            "need": get_s("bant_need")?,
            "timeline": get_o("bant_timeline")?.map_or(Value::Null, time),
        },
        "expected_close_time": expected_close.map_or(Value::Null, time),
        "labels": labels,
        "lost_reason": get_s("lost_reason")?,
    });
    let set_fields = {
        let mut set = Vec::new();
        for (path, is_set) in [
            ("title", true),
            ("company", !get_s("company")?.is_empty()),
            ("contact_name", !get_s("contact_name")?.is_empty()),
            ("contact_email", !get_s("contact_email")?.is_empty()),
            ("owner", !get_s("owner")?.is_empty()),
            ("source", !get_s("source")?.is_empty()),
            ("pipeline_id", true),
            ("stage", true),
            ("amount", !Value::is_null(&fields["amount"])),
            (
                "bant",
                !Value::is_null(&fields["bant"]["budget"])
                    || !get_s("bant_authority")?.is_empty()
                    || !get_s("bant_need")?.is_empty()
                    || get_o("bant_timeline")?.is_some(),
            ),
            ("expected_close_time", expected_close.is_some()),
            ("labels", labels.as_object().is_some_and(|l| !l.is_empty())),
            ("lost_reason", !get_s("lost_reason")?.is_empty()),
        ] {
            if is_set {
                set.push(path);
            }
        }
        set
    };
    let current_stage = get_s("stage")?;
    let current_close = get_o("close_time")?;
    let synthetic = [Change {
        sequence: 0,
        from_stage: String::new(),
        to_stage: current_stage.clone(),
        change_time: create_time,
        actor: String::new(),
        imported: true,
    }];
    let history = if history.is_empty() {
        &synthetic[..]
    } else {
        history
    };
    let mut revisions = Vec::with_capacity(history.len());
    for (i, change) in history.iter().enumerate() {
        let last = i + 1 == history.len();
        let close_time = if last { current_close } else { None };
        let update_time = if last {
            get_i("update_time")?
        } else {
            change.change_time
        };
        let created = change.from_stage.is_empty() && i == 0;
        let (kind, changed) = if created {
            let mut set = set_fields.clone();
            if close_time.is_some() {
                set.push("close_time");
            }
            ("created", set.join(","))
        } else {
            let previous_close: Option<i64> = None;
            let mut changed = vec!["stage"];
            if close_time != previous_close {
                changed.push("close_time");
            }
            ("moved", changed.join(","))
        };
        let lead = json!({
            "id": id,
            "fields": fields,
            "pipeline_id": get_s("pipeline_id")?,
            "stage": change.to_stage,
            "win_probability": row.try_get::<f64>("", "win_probability")?,
            "create_time": time(create_time),
            "update_time": time(update_time),
            "stage_enter_time": time(change.change_time),
            "close_time": close_time.map_or(Value::Null, time),
            "version": if last { get_i("version")? } else { i as i64 + 1 },
            "external_id": row.try_get::<Option<String>>("", "external_id")?,
            "close_date_push_count": 0,
            "first_expected_close_time": expected_close.map_or(Value::Null, time),
        });
        let from_stage = (!created).then(|| change.from_stage.clone());
        let sequence = (!change.imported).then_some(change.sequence);
        revisions.push(vec![
            Expr::val(tenant.clone()),
            Expr::val(id.clone()),
            Expr::val(i as i64 + 1),
            Expr::val(change.change_time),
            Expr::val(kind),
            Expr::val(change.actor.clone()),
            Expr::val(sequence),
            Expr::val(changed),
            Expr::val(from_stage),
            Expr::val(Some(change.to_stage.clone())),
            Expr::val(get_s("pipeline_id")?),
            Expr::val(change.to_stage.clone()),
            Expr::val(get_s("owner")?),
            Expr::val(get_s("source")?),
            Expr::val(get_s("amount_currency")?),
            Expr::val(get_i("amount_units")?),
            Expr::val(amount_nanos),
            Expr::val(expected_close),
            Expr::val(close_time),
            Expr::val(create_time),
            Expr::val(get_s("labels")?),
            Expr::val(0i64),
            Expr::val(expected_close),
            Expr::val(false),
            Expr::val(lead.to_string()),
        ]);
    }
    Ok(revisions)
}
