//! ListLeads as SQL: the AIP-160 filter becomes a WHERE clause and pagination is keyset on
//! (sort key, id) with row-value comparisons, which both SQLite and PostgreSQL answer from the
//! `(tenant_id, sort key, id)` indexes without OFFSET scans.

use sea_orm::sea_query::{Condition, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
};

use super::entities::{lead, lead_label};
use super::{StoreError, leads::from_model, to_micros};
use crate::domain::filter::{CompareOp, Filter, FilterField, FilterValue};
use crate::domain::ids::TenantId;
use crate::domain::lead::Lead;
use crate::domain::listing::{OrderBy, SortField, SortKey};

pub struct LeadPage<'a> {
    pub filter: Option<&'a Filter>,
    pub order: OrderBy,
    /// The sort key and id of the last lead of the previous page.
    pub after: Option<(SortKey, String)>,
    pub limit: u64,
}

pub async fn list(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    page: &LeadPage<'_>,
) -> Result<Vec<Lead>, StoreError> {
    let mut select = scoped(tenant, page.filter);
    let columns = sort_columns(page.order.field);
    if let Some((key, id)) = &page.after {
        let mut values = key_values(key);
        values.push(Expr::val(id.clone()));
        let current = Expr::tuple(
            columns
                .iter()
                .map(|c| Expr::col((lead::Entity, *c)))
                .chain([Expr::col((lead::Entity, lead::Column::Id))]),
        );
        let after = Expr::tuple(values);
        select = select.filter(if page.order.descending {
            current.lt(after)
        } else {
            current.gt(after)
        });
    }
    let direction = if page.order.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    for column in columns {
        select = select.order_by(*column, direction.clone());
    }
    select
        .order_by(lead::Column::Id, direction)
        .limit(page.limit)
        .all(db)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

pub async fn count(
    db: &impl ConnectionTrait,
    tenant: &TenantId,
    filter: Option<&Filter>,
) -> Result<u64, StoreError> {
    Ok(scoped(tenant, filter).count(db).await?)
}

fn scoped(tenant: &TenantId, filter: Option<&Filter>) -> Select<lead::Entity> {
    let select = lead::Entity::find().filter(lead::Column::TenantId.eq(tenant.as_str()));
    match filter {
        Some(filter) => select.filter(condition(filter)),
        None => select,
    }
}

fn sort_columns(field: SortField) -> &'static [lead::Column] {
    match field {
        SortField::CreateTime => &[lead::Column::CreateTime],
        SortField::UpdateTime => &[lead::Column::UpdateTime],
        SortField::Amount => &[lead::Column::AmountUnits, lead::Column::AmountNanos],
        SortField::WinProbability => &[lead::Column::WinProbability],
        SortField::ExpectedValue => &[lead::Column::ExpectedValue],
    }
}

fn key_values(key: &SortKey) -> Vec<Expr> {
    match key {
        SortKey::Micros(micros) => vec![Expr::val(*micros)],
        SortKey::Amount { units, nanos } => vec![Expr::val(*units), Expr::val(*nanos)],
        SortKey::Probability(p) => vec![Expr::val(*p)],
    }
}

fn condition(filter: &Filter) -> Condition {
    match filter {
        Filter::And(terms) => terms
            .iter()
            .fold(Condition::all(), |c, t| c.add(condition(t))),
        Filter::Or(terms) => terms
            .iter()
            .fold(Condition::any(), |c, t| c.add(condition(t))),
        Filter::Not(inner) => condition(inner).not(),
        Filter::LabelPresent(key) => Condition::all().add(Expr::exists(label_query(key, None))),
        Filter::Compare { field, op, value } => compare(field, *op, value),
    }
}

fn label_query(key: &str, value: Option<&str>) -> sea_orm::sea_query::SelectStatement {
    let mut query = Query::select();
    query
        .expr(Expr::val(1))
        .from(lead_label::Entity)
        .and_where(
            Expr::col((lead_label::Entity, lead_label::Column::TenantId))
                .equals((lead::Entity, lead::Column::TenantId)),
        )
        .and_where(
            Expr::col((lead_label::Entity, lead_label::Column::LeadId))
                .equals((lead::Entity, lead::Column::Id)),
        )
        .and_where(Expr::col((lead_label::Entity, lead_label::Column::Key)).eq(key));
    if let Some(value) = value {
        query.and_where(Expr::col((lead_label::Entity, lead_label::Column::Value)).eq(value));
    }
    query
}

fn compare(field: &FilterField, op: CompareOp, value: &FilterValue) -> Condition {
    let text_column = match field {
        FilterField::Stage => Some(lead::Column::Stage),
        FilterField::Owner => Some(lead::Column::Owner),
        FilterField::PipelineId => Some(lead::Column::PipelineId),
        FilterField::Source => Some(lead::Column::Source),
        _ => None,
    };
    match (field, value) {
        (FilterField::Label(key), FilterValue::Text(text)) => {
            let exists = Expr::exists(label_query(key, Some(text)));
            Condition::all().add(if op == CompareOp::Ne {
                exists.not()
            } else {
                exists
            })
        }
        (FilterField::Amount, FilterValue::Amount { units, nanos }) => Condition::all().add(apply(
            op,
            Expr::tuple([
                Expr::col((lead::Entity, lead::Column::AmountUnits)),
                Expr::col((lead::Entity, lead::Column::AmountNanos)),
            ]),
            Expr::tuple([Expr::val(*units), Expr::val(*nanos)]),
        )),
        (FilterField::CreateTime, FilterValue::Time(time)) => Condition::all().add(apply(
            op,
            Expr::col((lead::Entity, lead::Column::CreateTime)),
            Expr::val(to_micros(*time)),
        )),
        (_, FilterValue::Text(text)) if text_column.is_some() => Condition::all().add(apply(
            op,
            Expr::col((lead::Entity, text_column.unwrap_or(lead::Column::Stage))),
            Expr::val(text.clone()),
        )),
        // The parser only pairs fields with values of their type; anything else matches nothing.
        _ => Condition::all().add(Expr::val(1).eq(0)),
    }
}

fn apply(op: CompareOp, left: Expr, right: Expr) -> Expr {
    match op {
        CompareOp::Eq => left.eq(right),
        CompareOp::Ne => left.ne(right),
        CompareOp::Lt => left.lt(right),
        CompareOp::Le => left.lte(right),
        CompareOp::Gt => left.gt(right),
        CompareOp::Ge => left.gte(right),
    }
}
