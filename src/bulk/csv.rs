//! The CSV layout of `leadpipe import` and `leadpipe export`: one lead per row, with its stage
//! history in one column. Rows become `ImportLeadsRequest` messages, so the server's own import
//! validation applies; this module only checks what is particular to CSV (numbers, times, the
//! history and label syntax) and maps the server's field paths back to column names.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::api::convert::{datetime_to_timestamp, timestamp_to_datetime};
use crate::api::pb;

/// The columns, in the order `export` writes them.
pub const COLUMNS: [&str; 21] = [
    "external_id",
    "title",
    "company",
    "contact_name",
    "contact_email",
    "owner",
    "source",
    "pipeline_id",
    "stage",
    "currency",
    "amount",
    "bant_budget",
    "bant_authority",
    "bant_need",
    "bant_timeline",
    "expected_close",
    "lost_reason",
    "labels",
    "created_at",
    "stage_entered_at",
    "history",
];

/// Columns a file must have; every other column may be left out.
pub const REQUIRED_COLUMNS: [&str; 2] = ["external_id", "title"];

/// One row, as text. Missing columns read as empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadRow {
    pub external_id: String,
    pub title: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub owner: String,
    pub source: String,
    pub pipeline_id: String,
    pub stage: String,
    pub currency: String,
    pub amount: String,
    pub bant_budget: String,
    pub bant_authority: String,
    pub bant_need: String,
    pub bant_timeline: String,
    pub expected_close: String,
    pub lost_reason: String,
    pub labels: String,
    pub created_at: String,
    pub stage_entered_at: String,
    pub history: String,
}

/// A problem with one column of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnError {
    pub column: String,
    pub reason: String,
}

impl ColumnError {
    fn new(column: &str, reason: impl Into<String>) -> Self {
        Self {
            column: column.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Checks a header: every required column present, no unknown or repeated column.
pub fn check_header(header: &csv::StringRecord) -> Result<(), String> {
    let mut seen = Vec::new();
    for name in header {
        if !COLUMNS.contains(&name) {
            return Err(format!(
                "unknown column {name:?}; the columns are {}",
                COLUMNS.join(", ")
            ));
        }
        if seen.contains(&name) {
            return Err(format!("column {name:?} appears twice"));
        }
        seen.push(name);
    }
    match REQUIRED_COLUMNS.iter().find(|c| !seen.contains(c)) {
        Some(missing) => Err(format!("the column {missing:?} is required")),
        None => Ok(()),
    }
}

/// How the history of a row was given; decides which column a server error is reported on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistorySource {
    /// The `history` column.
    Column,
    /// Made from `stage`, `created_at` and `stage_entered_at` (or nothing: created now).
    Derived,
}

/// A row turned into an import message.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMessage {
    pub message: pb::ImportLeadsRequest,
    pub history: HistorySource,
}

/// Converts a row. `first_stage` names the first stage of a pipeline (empty id: `default`),
/// needed when a row gives a later `stage` without a `history`; None when the pipeline does
/// not exist, which the server then reports.
pub fn row_to_message(
    row: &LeadRow,
    first_stage: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<RowMessage, Vec<ColumnError>> {
    let mut errors = Vec::new();
    let mut time = |column: &str, value: &str| match parse_time(value) {
        Ok(t) => t,
        Err(reason) => {
            errors.push(ColumnError::new(column, reason));
            None
        }
    };
    let bant_timeline = time("bant_timeline", &row.bant_timeline);
    let expected_close = time("expected_close", &row.expected_close);
    let created_at = time("created_at", &row.created_at);
    let stage_entered_at = time("stage_entered_at", &row.stage_entered_at);
    let amount = money(&mut errors, "amount", &row.amount, &row.currency);
    let budget = money(&mut errors, "bant_budget", &row.bant_budget, &row.currency);
    let labels = match parse_labels(&row.labels) {
        Ok(labels) => labels,
        Err(reason) => {
            errors.push(ColumnError::new("labels", reason));
            BTreeMap::new()
        }
    };
    let stage = row.stage.trim();
    let (history, source) = if row.history.trim().is_empty() {
        let created = created_at.or(stage_entered_at);
        let mut history = Vec::new();
        if stage.is_empty() {
            if stage_entered_at.is_some() && created_at.is_some() && stage_entered_at != created_at
            {
                errors.push(ColumnError::new(
                    "stage",
                    "is required when stage_entered_at differs from created_at",
                ));
            }
            // Without a time either, the server creates the lead now in the first stage.
            if let Some(created) = created
                && let Some(first) = first_stage(&row.pipeline_id)
            {
                history.push(entry("", &first, created));
            }
        } else {
            let created = created.unwrap_or_else(|| crate::app::Clock::system().now());
            let entered = stage_entered_at.unwrap_or(created);
            match first_stage(&row.pipeline_id) {
                Some(first) if first != stage => {
                    history.push(entry("", &first, created));
                    history.push(entry(&first, stage, entered));
                }
                Some(_) if entered != created => errors.push(ColumnError::new(
                    "stage_entered_at",
                    "must equal created_at for a lead in its pipeline's first stage",
                )),
                // An unknown pipeline is reported by the import itself.
                _ => history.push(entry("", stage, created)),
            }
        }
        (history, HistorySource::Derived)
    } else {
        match parse_history(&row.history) {
            Ok(history) => {
                check_consistent(&mut errors, &history, stage, created_at, stage_entered_at);
                (history, HistorySource::Column)
            }
            Err(reason) => {
                errors.push(ColumnError::new("history", reason));
                (Vec::new(), HistorySource::Column)
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let lead = pb::Lead {
        title: row.title.clone(),
        company: row.company.clone(),
        contact_name: row.contact_name.clone(),
        contact_email: row.contact_email.trim().to_owned(),
        owner: row.owner.clone(),
        source: row.source.clone(),
        pipeline_id: row.pipeline_id.trim().to_owned(),
        amount,
        bant: Some(pb::Bant {
            budget,
            authority: row.bant_authority.clone(),
            need: row.bant_need.clone(),
            timeline: bant_timeline.map(datetime_to_timestamp),
        }),
        expected_close_time: expected_close.map(datetime_to_timestamp),
        labels: labels.into_iter().collect(),
        lost_reason: row.lost_reason.clone(),
        ..Default::default()
    };
    Ok(RowMessage {
        message: pb::ImportLeadsRequest {
            external_id: row.external_id.clone(),
            lead: Some(lead),
            history,
            revisions: Vec::new(),
        },
        history: source,
    })
}

fn entry(from: &str, to: &str, at: DateTime<Utc>) -> pb::ImportedStageChange {
    pb::ImportedStageChange {
        from_stage: from.to_owned(),
        to_stage: to.to_owned(),
        change_time: Some(datetime_to_timestamp(at)),
        ..Default::default()
    }
}

/// `stage`, `created_at` and `stage_entered_at` may repeat what the history says (export
/// writes them for people reading the file), but must not contradict it.
fn check_consistent(
    errors: &mut Vec<ColumnError>,
    history: &[pb::ImportedStageChange],
    stage: &str,
    created_at: Option<DateTime<Utc>>,
    stage_entered_at: Option<DateTime<Utc>>,
) {
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        return;
    };
    let at = |change: &pb::ImportedStageChange| {
        change
            .change_time
            .as_ref()
            .and_then(|t| timestamp_to_datetime(t).ok())
    };
    if !stage.is_empty() && stage != last.to_stage {
        errors.push(ColumnError::new(
            "stage",
            format!(
                "{stage:?} differs from the history's last stage {:?}",
                last.to_stage
            ),
        ));
    }
    if created_at.is_some() && created_at != at(first) {
        errors.push(ColumnError::new(
            "created_at",
            "differs from the time of the history's first entry",
        ));
    }
    if stage_entered_at.is_some() && stage_entered_at != at(last) {
        errors.push(ColumnError::new(
            "stage_entered_at",
            "differs from the time of the history's last entry",
        ));
    }
}

/// An RFC 3339 time (`2026-06-02T09:00:00Z`) or a date (`2026-06-02`, midnight UTC); empty is
/// unset.
pub fn parse_time(value: &str) -> Result<Option<DateTime<Utc>>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        let time = time.with_timezone(&Utc);
        // Stored times have microsecond precision; round here so that a re-import compares equal.
        return Ok(Some(crate::store::from_micros(time.timestamp_micros())));
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(Some(date.and_hms_opt(0, 0, 0).expect("midnight").and_utc()));
    }
    Err(format!(
        "{value:?} is not a time: use RFC 3339 (2026-06-02T09:00:00Z) or a date (2026-06-02)"
    ))
}

pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `12000`, `12000.50` or `12000.50 USD`; the currency defaults to the `currency` column.
fn money(
    errors: &mut Vec<ColumnError>,
    column: &str,
    value: &str,
    currency: &str,
) -> Option<pb::Money> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let (number, code) = match value.split_once(char::is_whitespace) {
        Some((number, code)) => (number, code.trim()),
        None => (value, currency.trim()),
    };
    if code.is_empty() {
        errors.push(ColumnError::new(
            "currency",
            format!("is required for the {column} {value:?}"),
        ));
        return None;
    }
    match crate::domain::money::parse_decimal_amount(number) {
        Ok((units, nanos)) => Some(pb::Money {
            currency_code: code.to_owned(),
            units,
            nanos,
        }),
        Err(reason) => {
            errors.push(ColumnError::new(column, reason));
            None
        }
    }
}

fn format_money(money: Option<&pb::Money>, currency: &str) -> String {
    let Some(money) = money.filter(|m| !m.currency_code.is_empty()) else {
        return String::new();
    };
    let mut number = money.units.to_string();
    if money.nanos != 0 {
        let fraction = format!("{:09}", money.nanos);
        number = format!("{number}.{}", fraction.trim_end_matches('0'));
    }
    if money.currency_code == currency {
        number
    } else {
        format!("{number} {}", money.currency_code)
    }
}

/// `key=value` pairs separated by `;`. In values, `\;` is a semicolon and `\\` a backslash.
pub fn parse_labels(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut pairs = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (';' | '\\')) => current.push(escaped),
                _ => return Err(r"a backslash must be followed by ; or \".into()),
            },
            ';' => pairs.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    pairs.push(current);
    for pair in pairs {
        if pair.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        if labels
            .insert(key.trim().to_owned(), value.to_owned())
            .is_some()
        {
            return Err(format!("the label {:?} is given twice", key.trim()));
        }
    }
    Ok(labels)
}

pub fn format_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let sorted: BTreeMap<_, _> = labels.into_iter().collect();
    sorted
        .into_iter()
        .map(|(key, value)| format!("{key}={}", value.replace('\\', r"\\").replace(';', r"\;")))
        .collect::<Vec<_>>()
        .join(";")
}

/// `stage@time` entries, oldest first, separated by `>`:
/// `lead_generation@2026-06-02T09:00:00Z > qualification@2026-06-09T09:00:00Z`.
pub fn parse_history(value: &str) -> Result<Vec<pb::ImportedStageChange>, String> {
    let mut history: Vec<pb::ImportedStageChange> = Vec::new();
    for (i, part) in value.split('>').enumerate() {
        let part = part.trim();
        let Some((stage, time)) = part.split_once('@') else {
            return Err(format!(
                "entry {} {part:?} is not stage@time, e.g. qualification@2026-06-09T09:00:00Z",
                i + 1
            ));
        };
        let time = parse_time(time)
            .map_err(|e| format!("entry {}: {e}", i + 1))?
            .ok_or_else(|| format!("entry {} has no time", i + 1))?;
        let from = history
            .last()
            .map_or("", |p| p.to_stage.as_str())
            .to_owned();
        history.push(entry(&from, stage.trim(), time));
    }
    Ok(history)
}

pub fn format_history(history: &[pb::StageChange]) -> String {
    history
        .iter()
        .map(|change| {
            let at = change
                .change_time
                .as_ref()
                .and_then(|t| timestamp_to_datetime(t).ok())
                .map(format_time)
                .unwrap_or_default();
            format!("{}@{at}", change.to_stage)
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

/// The row `export` writes for a lead and its history (oldest first). A lead created here has
/// no external id; its leadpipe id stands in, so that a re-import into the same tenant skips it.
pub fn lead_to_row(lead: &pb::Lead, history: &[pb::StageChange]) -> LeadRow {
    let time = |t: Option<&prost_types::Timestamp>| {
        t.and_then(|t| timestamp_to_datetime(t).ok())
            .map(format_time)
            .unwrap_or_default()
    };
    let currency = lead
        .amount
        .as_ref()
        .or(lead.bant.as_ref().and_then(|b| b.budget.as_ref()))
        .map(|m| m.currency_code.clone())
        .unwrap_or_default();
    let bant = lead.bant.clone().unwrap_or_default();
    LeadRow {
        external_id: if lead.external_id.is_empty() {
            lead.id.clone()
        } else {
            lead.external_id.clone()
        },
        title: lead.title.clone(),
        company: lead.company.clone(),
        contact_name: lead.contact_name.clone(),
        contact_email: lead.contact_email.clone(),
        owner: lead.owner.clone(),
        source: lead.source.clone(),
        pipeline_id: lead.pipeline_id.clone(),
        stage: lead.stage.clone(),
        amount: format_money(lead.amount.as_ref(), &currency),
        bant_budget: format_money(bant.budget.as_ref(), &currency),
        currency,
        bant_authority: bant.authority,
        bant_need: bant.need,
        bant_timeline: time(bant.timeline.as_ref()),
        expected_close: time(lead.expected_close_time.as_ref()),
        lost_reason: lead.lost_reason.clone(),
        labels: format_labels(&lead.labels),
        created_at: time(lead.create_time.as_ref()),
        stage_entered_at: time(lead.stage_enter_time.as_ref()),
        history: format_history(history),
    }
}

/// The column that a server-reported field path (`lead.bant.budget.units`, `history[1].to_stage`)
/// refers to.
pub fn column_of(field: &str, history: HistorySource) -> String {
    let field = field.strip_prefix("lead.").unwrap_or(field);
    if let Some(rest) = field.strip_prefix("history") {
        return match history {
            HistorySource::Column => "history".into(),
            HistorySource::Derived if rest.ends_with("to_stage") => "stage".into(),
            HistorySource::Derived if rest.starts_with("[0]") => "created_at".into(),
            HistorySource::Derived => "stage_entered_at".into(),
        };
    }
    let column = match field {
        f if f.ends_with("currency_code") => "currency",
        f if f.starts_with("amount") => "amount",
        f if f.starts_with("bant.budget") => "bant_budget",
        "bant.authority" => "bant_authority",
        "bant.need" => "bant_need",
        "bant.timeline" => "bant_timeline",
        "expected_close_time" => "expected_close",
        f if f.starts_with("labels") => "labels",
        other => other,
    };
    column.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_first(_: &str) -> Option<String> {
        Some("lead_generation".into())
    }

    fn row() -> LeadRow {
        LeadRow {
            external_id: "crm-1".into(),
            title: "Acme".into(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_round_trip_with_separators_in_values() {
        let labels = BTreeMap::from([
            ("region".to_string(), "emea".to_string()),
            ("note".to_string(), r"a;b=c\d".to_string()),
        ]);
        let text = format_labels(&labels);
        assert_eq!(text, r"note=a\;b=c\\d;region=emea");
        assert_eq!(parse_labels(&text).unwrap(), labels);
        assert!(parse_labels("region").is_err());
        assert!(parse_labels("a=1;a=2").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn history_parses_into_a_chain() {
        let history = parse_history(
            "lead_generation@2026-06-02T09:00:00Z > qualification@2026-06-09 > proposal@2026-07-01T09:00:00.123456Z",
        )
        .unwrap();
        let path: Vec<_> = history
            .iter()
            .map(|c| (c.from_stage.as_str(), c.to_stage.as_str()))
            .collect();
        assert_eq!(
            path,
            [
                ("", "lead_generation"),
                ("lead_generation", "qualification"),
                ("qualification", "proposal")
            ]
        );
        assert_eq!(history[2].change_time.as_ref().unwrap().nanos, 123_456_000);
        assert!(parse_history("lead_generation").is_err());
        assert!(parse_history("lead_generation@yesterday").is_err());
    }

    #[test]
    fn a_stage_without_history_becomes_a_move_from_the_first_stage() {
        let mut r = row();
        r.stage = "proposal".into();
        r.created_at = "2026-05-01".into();
        r.stage_entered_at = "2026-05-20".into();
        let message = row_to_message(&r, &mut default_first).unwrap().message;
        let path: Vec<_> = message
            .history
            .iter()
            .map(|c| (c.from_stage.as_str(), c.to_stage.as_str()))
            .collect();
        assert_eq!(
            path,
            [("", "lead_generation"), ("lead_generation", "proposal")]
        );
    }

    #[test]
    fn a_row_without_stage_or_times_has_no_history() {
        let message = row_to_message(&row(), &mut default_first).unwrap().message;
        assert!(message.history.is_empty());
    }

    #[test]
    fn bad_cells_name_their_column() {
        let mut r = row();
        r.amount = "12,5".into();
        r.currency = "EUR".into();
        r.created_at = "yesterday".into();
        r.labels = "region".into();
        let columns: Vec<_> = row_to_message(&r, &mut default_first)
            .unwrap_err()
            .into_iter()
            .map(|e| e.column)
            .collect();
        assert_eq!(columns, ["created_at", "amount", "labels"]);
    }

    #[test]
    fn money_takes_a_currency_suffix_or_the_currency_column() {
        let mut r = row();
        r.currency = "EUR".into();
        r.amount = "12000.5".into();
        r.bant_budget = "15000 USD".into();
        let lead = row_to_message(&r, &mut default_first)
            .unwrap()
            .message
            .lead
            .unwrap();
        let amount = lead.amount.clone().unwrap();
        assert_eq!(
            (amount.currency_code.as_str(), amount.units, amount.nanos),
            ("EUR", 12000, 500_000_000)
        );
        let budget = lead.bant.clone().unwrap().budget.unwrap();
        assert_eq!(
            (budget.currency_code.as_str(), budget.units),
            ("USD", 15000)
        );
        let exported = lead_to_row(&lead, &[]);
        assert_eq!(
            (exported.amount.as_str(), exported.bant_budget.as_str()),
            ("12000.5", "15000 USD")
        );
    }

    #[test]
    fn contradicting_stage_is_refused() {
        let mut r = row();
        r.history = "lead_generation@2026-06-02 > qualification@2026-06-09".into();
        r.stage = "proposal".into();
        let errors = row_to_message(&r, &mut default_first).unwrap_err();
        assert_eq!(errors[0].column, "stage");
    }

    #[test]
    fn server_fields_map_to_columns() {
        assert_eq!(
            column_of("lead.amount.currency_code", HistorySource::Column),
            "currency"
        );
        assert_eq!(
            column_of("lead.bant.budget.units", HistorySource::Column),
            "bant_budget"
        );
        assert_eq!(
            column_of("lead.contact_email", HistorySource::Column),
            "contact_email"
        );
        assert_eq!(
            column_of("history[1].to_stage", HistorySource::Derived),
            "stage"
        );
        assert_eq!(
            column_of("history[0].change_time", HistorySource::Derived),
            "created_at"
        );
        assert_eq!(
            column_of("history[1].change_time", HistorySource::Column),
            "history"
        );
        assert_eq!(
            column_of("lead.labels[\"Bad\"]", HistorySource::Column),
            "labels"
        );
    }
}
