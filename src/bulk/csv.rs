//! The CSV layout of `leadpipe import` and `leadpipe export`: one lead per row, with its stage
//! history in one column. Rows become `ImportLeadsRequest` messages, so the server's own import
//! validation applies; this module only checks what is particular to CSV (numbers, times, the
//! history and label syntax) and maps the server's field paths back to column names.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::mapping::{Mapping, Target};
use super::presets::Edit;
use crate::api::convert::{datetime_to_timestamp, timestamp_to_datetime};
use crate::api::pb;
use crate::domain::pipeline::{PipelineDefinition, StageKind};
use crate::domain::source::{DecimalSeparator, TimeFormat, parse_amount};

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

/// Columns `import` reads besides those `export` writes.
/// - `close_date`: a CRM's "close date". For a lead in a won or lost stage it is when the lead
///   closed (its `stage_entered_at`, when that is empty); for an open lead, its expected close
///   (its `expected_close`, when that is empty).
/// - `status`: `open`, `won` or `lost`, as CRMs keep it beside the stage. A won or lost lead is
///   in the pipeline's won or lost stage (its first, unless `stage` names another of that kind),
///   closed at `won_at` or `lost_at`, or else at `close_date`.
pub const EXTRA_COLUMNS: [&str; 4] = ["close_date", "status", "won_at", "lost_at"];

/// One row, as text. Missing columns read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    #[serde(skip)]
    pub close_date: String,
    #[serde(skip)]
    pub status: String,
    #[serde(skip)]
    pub won_at: String,
    #[serde(skip)]
    pub lost_at: String,
    /// When the lead entered each stage, by stage name, from columns such as HubSpot's
    /// `Date entered "Contract Sent (Sales Pipeline)"`: a history when `history` is empty.
    #[serde(skip)]
    pub entered: Vec<(String, String)>,
    /// Later changes of the amount and close date, from a history file: revisions.
    #[serde(skip)]
    pub edits: Vec<Edit>,
}

impl LeadRow {
    fn cell(&mut self, column: &str) -> Option<&mut String> {
        Some(match column {
            "external_id" => &mut self.external_id,
            "title" => &mut self.title,
            "company" => &mut self.company,
            "contact_name" => &mut self.contact_name,
            "contact_email" => &mut self.contact_email,
            "owner" => &mut self.owner,
            "source" => &mut self.source,
            "pipeline_id" => &mut self.pipeline_id,
            "stage" => &mut self.stage,
            "currency" => &mut self.currency,
            "amount" => &mut self.amount,
            "bant_budget" => &mut self.bant_budget,
            "bant_authority" => &mut self.bant_authority,
            "bant_need" => &mut self.bant_need,
            "bant_timeline" => &mut self.bant_timeline,
            "expected_close" => &mut self.expected_close,
            "lost_reason" => &mut self.lost_reason,
            "labels" => &mut self.labels,
            "created_at" => &mut self.created_at,
            "stage_entered_at" => &mut self.stage_entered_at,
            "history" => &mut self.history,
            "close_date" => &mut self.close_date,
            "status" => &mut self.status,
            "won_at" => &mut self.won_at,
            "lost_at" => &mut self.lost_at,
            _ => return None,
        })
    }

    /// Puts a cell's value where its column goes; a label is added to `labels`.
    pub fn set(&mut self, target: &Target, value: &str) {
        match target {
            Target::Column(column) => {
                if let Some(cell) = self.cell(column) {
                    *cell = value.to_owned();
                }
            }
            Target::Label(key) if !value.trim().is_empty() => {
                let pair = format_labels([(key, &value.trim().to_owned())]);
                if self.labels.trim().is_empty() {
                    self.labels = pair;
                } else {
                    self.labels = format!("{};{pair}", self.labels);
                }
            }
            Target::Entered(stage) if !value.trim().is_empty() => {
                self.entered.push((stage.clone(), value.trim().to_owned()));
            }
            Target::Label(_) | Target::Entered(_) | Target::Skip => {}
        }
    }

    /// Like [`Self::set`], for a column the row left empty.
    pub fn set_if_empty(&mut self, target: &Target, value: &str) {
        match target {
            Target::Column(column) => {
                if let Some(cell) = self.cell(column)
                    && cell.trim().is_empty()
                {
                    *cell = value.to_owned();
                }
            }
            Target::Label(key) => {
                let has = parse_labels(&self.labels).is_ok_and(|labels| labels.contains_key(key));
                if !has {
                    self.set(target, value);
                }
            }
            Target::Entered(_) | Target::Skip => {}
        }
    }
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

/// How the cells of a file are read: its time formats and zone, its decimal separator, and
/// the names its stages go by.
pub struct ReadRules<'a> {
    pub times: &'a TimeFormat,
    pub decimal: DecimalSeparator,
    pub mapping: &'a Mapping,
    /// When rows without a time are created: now.
    pub now: DateTime<Utc>,
}

/// The pipeline a row names (empty: `default`), when it exists; an unknown pipeline is
/// reported by the import itself.
pub type PipelineLookup<'a> = dyn FnMut(&str) -> Option<Arc<PipelineDefinition>> + 'a;

/// Converts a row.
pub fn row_to_message(
    row: &LeadRow,
    rules: &ReadRules<'_>,
    pipeline_of: &mut PipelineLookup<'_>,
) -> Result<RowMessage, Vec<ColumnError>> {
    let mut errors = Vec::new();
    let mut time = |column: &str, value: &str| match rules.times.parse(value) {
        Ok(t) => t,
        Err(reason) => {
            errors.push(ColumnError::new(column, reason));
            None
        }
    };
    let bant_timeline = time("bant_timeline", &row.bant_timeline);
    let mut expected_close = time("expected_close", &row.expected_close);
    let created_at = time("created_at", &row.created_at);
    let stage_entered_at = time("stage_entered_at", &row.stage_entered_at);
    let mut close_date = time("close_date", &row.close_date);
    let won_at = time("won_at", &row.won_at);
    let lost_at = time("lost_at", &row.lost_at);
    let amount = money(&mut errors, rules, "amount", &row.amount, &row.currency);
    let budget = money(
        &mut errors,
        rules,
        "bant_budget",
        &row.bant_budget,
        &row.currency,
    );
    let labels = match parse_labels(&row.labels) {
        Ok(labels) => labels,
        Err(reason) => {
            errors.push(ColumnError::new("labels", reason));
            BTreeMap::new()
        }
    };
    let pipeline = pipeline_of(&row.pipeline_id);
    let resolve = |value: &str| -> Result<String, String> {
        let value = rules.mapping.stage(value).unwrap_or(value);
        match &pipeline {
            Some(definition) => definition
                .resolve_stage(value)
                .map(|key| key.as_str().to_owned()),
            None => Ok(value.trim().to_owned()),
        }
    };
    let is_closed = |key: &str| {
        pipeline.as_ref().is_some_and(|p| {
            p.stages
                .iter()
                .any(|s| s.key.as_str() == key && s.kind.is_closed())
        })
    };
    let mut stage_refused = false;
    let mut stage = if row.stage.trim().is_empty() {
        String::new()
    } else {
        match resolve(&row.stage) {
            Ok(stage) => stage,
            Err(reason) => {
                errors.push(ColumnError::new("stage", reason));
                stage_refused = true;
                String::new()
            }
        }
    };
    let status = row.status.trim().to_lowercase();
    let closing = match status.as_str() {
        "" | "open" => None,
        "won" => Some((StageKind::Won, won_at)),
        "lost" => Some((StageKind::Lost, lost_at)),
        _ => {
            errors.push(ColumnError::new(
                "status",
                format!("{:?} is not open, won or lost", row.status.trim()),
            ));
            None
        }
    };
    if let (Some((kind, at)), Some(pipeline)) = (closing, &pipeline) {
        let of_kind = |key: &str| {
            pipeline
                .stages
                .iter()
                .any(|s| s.key.as_str() == key && s.kind == kind)
        };
        if !of_kind(&stage) {
            match pipeline.stages.iter().find(|s| s.kind == kind) {
                Some(closed) => stage = closed.key.as_str().to_owned(),
                None => errors.push(ColumnError::new(
                    "status",
                    format!(
                        "the pipeline has no {kind:?} stage; its stages are {}",
                        pipeline.stage_list()
                    ),
                )),
            }
        }
        close_date = at.or(close_date);
    }
    let mut history_text = row.history.clone();
    if history_text.trim().is_empty() && !row.entered.is_empty() {
        history_text = history_of_entries(&mut errors, rules.times, &row.entered);
    }
    let (history, source) = if stage_refused {
        // Nothing more can be said of a history whose stage is unknown.
        (Vec::new(), HistorySource::Derived)
    } else if history_text.trim().is_empty() {
        let mut history = Vec::new();
        let closed = !stage.is_empty() && is_closed(&stage);
        let stage_entered_at = stage_entered_at.or(close_date.filter(|_| closed));
        if !closed && expected_close.is_none() {
            expected_close = close_date;
        }
        let created = created_at.or(stage_entered_at);
        let first = pipeline
            .as_ref()
            .map(|p| p.first_stage().key.as_str().to_owned());
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
                && let Some(first) = first
            {
                history.push(entry("", &first, created));
            }
        } else if closed && stage_entered_at.is_none() {
            // Closing it on its creation date would invent a sales cycle of no days.
            errors.push(ColumnError::new(
                "stage_entered_at",
                format!(
                    "is required for a lead in the closed stage {stage:?}: it is when the lead \
                     was won or lost (give stage_entered_at or close_date)"
                ),
            ));
        } else {
            let created = created.unwrap_or(rules.now);
            let entered = stage_entered_at.unwrap_or(created);
            match first {
                Some(first) if first != stage => {
                    history.push(entry("", &first, created));
                    history.push(entry(&first, &stage, entered));
                }
                Some(_) if entered != created => errors.push(ColumnError::new(
                    "stage_entered_at",
                    "must equal created_at for a lead in its pipeline's first stage",
                )),
                // An unknown pipeline is reported by the import itself.
                _ => history.push(entry("", &stage, created)),
            }
        }
        (history, HistorySource::Derived)
    } else {
        match parse_history_with(&history_text, rules.times, &mut |s| resolve(s)) {
            Ok(history) => {
                let last_open = history.last().is_some_and(|c| !is_closed(&c.to_stage));
                if last_open && expected_close.is_none() {
                    expected_close = close_date;
                }
                check_consistent(&mut errors, &history, &stage, created_at, stage_entered_at);
                (history, HistorySource::Column)
            }
            Err(reason) => {
                errors.push(ColumnError::new("history", reason));
                (Vec::new(), HistorySource::Column)
            }
        }
    };
    let revisions = revisions_of(&mut errors, rules, &row.edits, &row.currency);
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
            revisions,
            update_existing: false,
        },
        history: source,
    })
}

/// Amount and close-date edits as revisions; a close date is the expected close.
fn revisions_of(
    errors: &mut Vec<ColumnError>,
    rules: &ReadRules<'_>,
    edits: &[Edit],
    currency: &str,
) -> Vec<pb::ImportedRevision> {
    let mut revisions = Vec::with_capacity(edits.len());
    for edit in edits {
        let mut lead = pb::Lead::default();
        let mut paths = Vec::new();
        if let Some(amount) = &edit.amount {
            lead.amount = money(errors, rules, "amount", amount, currency);
            paths.push("amount".to_owned());
        }
        if let Some(close_date) = &edit.close_date {
            match rules.times.parse(close_date) {
                Ok(at) => lead.expected_close_time = at.map(datetime_to_timestamp),
                Err(reason) => errors.push(ColumnError::new("close_date", reason)),
            }
            paths.push("expected_close_time".to_owned());
        }
        revisions.push(pb::ImportedRevision {
            change_time: Some(datetime_to_timestamp(edit.at)),
            lead: Some(lead),
            update_mask: Some(prost_types::FieldMask { paths }),
            actor: edit.actor.clone(),
        });
    }
    revisions
}

/// A history from the times a lead entered each stage, oldest first. A stage entered twice
/// appears once, at its latest entry, as the sources that keep such columns do.
fn history_of_entries(
    errors: &mut Vec<ColumnError>,
    times: &TimeFormat,
    entered: &[(String, String)],
) -> String {
    let mut entries = Vec::with_capacity(entered.len());
    for (stage, value) in entered {
        match times.parse(value) {
            Ok(Some(at)) => entries.push((at, stage)),
            Ok(None) => {}
            Err(reason) => {
                errors.push(ColumnError::new(&format!("date entered {stage:?}"), reason))
            }
        }
    }
    entries.sort();
    entries
        .iter()
        .map(|(at, stage)| format!("{}@{}", escape(stage), format_time(*at)))
        .collect::<Vec<_>>()
        .join(" > ")
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

/// A time in leadpipe's own layout: RFC 3339, or an ISO date or date and time in UTC.
pub fn parse_time(value: &str) -> Result<Option<DateTime<Utc>>, String> {
    TimeFormat::default().parse(value)
}

pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `12000`, `12,000.50`, `12000.50 USD` or `$12,000`; the currency defaults to the
/// `currency` column.
fn money(
    errors: &mut Vec<ColumnError>,
    rules: &ReadRules<'_>,
    column: &str,
    value: &str,
    currency: &str,
) -> Option<pb::Money> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match parse_amount(value, rules.decimal) {
        Ok((code, units, nanos)) => {
            let code = code.unwrap_or_else(|| currency.trim().to_ascii_uppercase());
            if code.is_empty() {
                errors.push(ColumnError::new(
                    "currency",
                    format!("is required for the {column} {value:?}"),
                ));
                return None;
            }
            Some(pb::Money {
                currency_code: code,
                units,
                nanos,
            })
        }
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
/// `lead_generation@2026-06-02T09:00:00Z > qualification@2026-06-09T09:00:00Z|by=ann|note=Called`.
/// After the time, `|by=` gives who made the change in the source system and `|note=` a note;
/// in those, `\>`, `\|` and `\\` stand for `>`, `|` and `\`.
pub fn parse_history(value: &str) -> Result<Vec<pb::ImportedStageChange>, String> {
    parse_history_with(value, &TimeFormat::default(), &mut |s| {
        Ok(s.trim().to_owned())
    })
}

fn parse_history_with(
    value: &str,
    times: &TimeFormat,
    resolve: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Vec<pb::ImportedStageChange>, String> {
    let mut history: Vec<pb::ImportedStageChange> = Vec::new();
    for (i, part) in split_escaped(value, '>').into_iter().enumerate() {
        let n = i + 1;
        let mut pieces = split_escaped(part.trim(), '|').into_iter();
        let head = pieces.next().unwrap_or_default();
        let head = head.trim();
        let Some((stage, time)) = head.rsplit_once('@') else {
            return Err(format!(
                "entry {n} {head:?} is not stage@time, e.g. qualification@2026-06-09T09:00:00Z"
            ));
        };
        let time = times
            .parse(time)
            .map_err(|e| format!("entry {n}: {e}"))?
            .ok_or_else(|| format!("entry {n} has no time"))?;
        let stage = resolve(stage).map_err(|e| format!("entry {n}: {e}"))?;
        let from = history
            .last()
            .map_or("", |p| p.to_stage.as_str())
            .to_owned();
        let mut change = entry(&from, &stage, time);
        for piece in pieces {
            match piece.split_once('=') {
                Some(("by", actor)) => change.actor = unescape(actor),
                Some(("note", note)) => change.note = unescape(note),
                _ => {
                    return Err(format!(
                        "entry {n}: {piece:?} is neither by=<actor> nor note=<text>"
                    ));
                }
            }
        }
        history.push(change);
    }
    Ok(history)
}

/// Splits on `separator` where it is not escaped with a backslash; escapes stay in the parts.
fn split_escaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        let current = parts.last_mut().expect("one part at least");
        if c == '\\' {
            current.push(c);
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else if c == separator {
            parts.push(String::new());
        } else {
            current.push(c);
        }
    }
    parts
}

fn unescape(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.extend(chars.next()),
            c => text.push(c),
        }
    }
    text
}

pub(crate) fn escape(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '>' | '|') {
            text.push('\\');
        }
        text.push(c);
    }
    text
}

/// The history column of a lead: each change's stage and time, and its actor and note when
/// it has them, so that an export imports again with nothing lost.
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
            let mut text = format!("{}@{at}", change.to_stage);
            if !change.actor.is_empty() {
                text.push_str(&format!("|by={}", escape(&change.actor)));
            }
            if !change.note.is_empty() {
                text.push_str(&format!("|note={}", escape(&change.note)));
            }
            text
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
        ..Default::default()
    }
}

/// The column that a server-reported field path (`lead.bant.budget.units`, `history[1].to_stage`)
/// refers to, and for the history column the entry it names (`entry 2: `), to put before the
/// reason.
pub fn column_of(field: &str, history: HistorySource) -> (String, String) {
    let field = field.strip_prefix("lead.").unwrap_or(field);
    if let Some(rest) = field.strip_prefix("history") {
        let column = match history {
            HistorySource::Column => {
                let entry = rest
                    .strip_prefix('[')
                    .and_then(|r| r.split_once(']'))
                    .and_then(|(i, _)| i.parse::<usize>().ok())
                    .map(|i| format!("entry {}: ", i + 1))
                    .unwrap_or_default();
                return ("history".into(), entry);
            }
            HistorySource::Derived if rest.ends_with("to_stage") => "stage",
            HistorySource::Derived if rest.starts_with("[0]") => "created_at",
            HistorySource::Derived => "stage_entered_at",
        };
        return (column.into(), String::new());
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
    (column.to_owned(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::default_pipeline;

    fn rules_with<'a>(times: &'a TimeFormat, mapping: &'a Mapping) -> ReadRules<'a> {
        ReadRules {
            times,
            decimal: DecimalSeparator::Point,
            mapping,
            now: DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn convert(row: &LeadRow) -> Result<RowMessage, Vec<ColumnError>> {
        let (times, mapping) = (TimeFormat::default(), Mapping::default());
        let pipeline = Arc::new(default_pipeline());
        row_to_message(row, &rules_with(&times, &mapping), &mut |_| {
            Some(pipeline.clone())
        })
    }

    fn row() -> LeadRow {
        LeadRow {
            external_id: "crm-1".into(),
            title: "Acme".into(),
            ..Default::default()
        }
    }

    fn path(message: &pb::ImportLeadsRequest) -> Vec<(&str, &str)> {
        message
            .history
            .iter()
            .map(|c| (c.from_stage.as_str(), c.to_stage.as_str()))
            .collect()
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
    fn history_keeps_actors_and_notes_through_export() {
        let text = r"lead_generation@2026-06-02T09:00:00Z|by=ann > qualification@2026-06-09T09:00:00Z|by=bob\|ops|note=Budget \> 10k\\year";
        let parsed = parse_history(text).unwrap();
        assert_eq!(parsed[0].actor, "ann");
        assert_eq!(parsed[1].actor, "bob|ops");
        assert_eq!(parsed[1].note, r"Budget > 10k\year");
        let exported: Vec<pb::StageChange> = parsed
            .iter()
            .map(|c| pb::StageChange {
                from_stage: c.from_stage.clone(),
                to_stage: c.to_stage.clone(),
                change_time: c.change_time,
                actor: c.actor.clone(),
                note: c.note.clone(),
                ..Default::default()
            })
            .collect();
        assert_eq!(format_history(&exported), text);
        assert!(
            parse_history("lead_generation@2026-06-02|who=ann")
                .unwrap_err()
                .starts_with("entry 1:")
        );
    }

    #[test]
    fn a_stage_without_history_becomes_a_move_from_the_first_stage() {
        let mut r = row();
        r.stage = "proposal".into();
        r.created_at = "2026-05-01".into();
        r.stage_entered_at = "2026-05-20".into();
        let message = convert(&r).unwrap().message;
        assert_eq!(
            path(&message),
            [("", "lead_generation"), ("lead_generation", "proposal")]
        );
    }

    #[test]
    fn stages_are_read_by_display_name_or_mapping() {
        let mut r = row();
        r.stage = "Closed Won".into();
        r.created_at = "2026-05-01".into();
        r.close_date = "2026-05-20".into();
        let message = convert(&r).unwrap().message;
        assert_eq!(
            path(&message),
            [("", "lead_generation"), ("lead_generation", "closed_won")]
        );
        // The close date of a won lead is when it was won, not its expected close.
        assert_eq!(message.lead.unwrap().expected_close_time, None);

        let mapping: Mapping = toml::from_str("[stages]\n\"Deal won\" = \"closed_won\"").unwrap();
        let times = TimeFormat::default();
        let pipeline = Arc::new(default_pipeline());
        r.stage = "deal WON".into();
        let mapped = row_to_message(&r, &rules_with(&times, &mapping), &mut |_| {
            Some(pipeline.clone())
        })
        .unwrap();
        assert_eq!(path(&mapped.message)[1].1, "closed_won");

        r.stage = "Appointment scheduled".into();
        let refused = convert(&r).unwrap_err();
        assert_eq!(refused[0].column, "stage");
        assert!(
            refused[0]
                .reason
                .starts_with("\"Appointment scheduled\" is not a stage of the pipeline; its stages are lead_generation"),
            "{}",
            refused[0].reason
        );
    }

    #[test]
    fn a_closed_row_needs_its_close_date() {
        let mut r = row();
        r.stage = "closed_lost".into();
        r.created_at = "2026-05-01".into();
        let refused = convert(&r).unwrap_err();
        assert_eq!(refused[0].column, "stage_entered_at");
        assert!(refused[0].reason.contains("won or lost"));
        // An open lead's close date is its expected close.
        r.stage = "proposal".into();
        r.close_date = "2026-12-01".into();
        let lead = convert(&r).unwrap().message.lead.unwrap();
        assert_eq!(lead.expected_close_time.unwrap().seconds, 1_796_083_200);
    }

    #[test]
    fn a_row_without_stage_or_times_has_no_history() {
        let message = convert(&row()).unwrap().message;
        assert!(message.history.is_empty());
    }

    #[test]
    fn bad_cells_name_their_column() {
        let mut r = row();
        r.amount = "12,5".into();
        r.currency = "EUR".into();
        r.created_at = "yesterday".into();
        r.labels = "region".into();
        let columns: Vec<_> = convert(&r)
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
        r.amount = "12,000.5".into();
        r.bant_budget = "$15,000".into();
        let lead = convert(&r).unwrap().message.lead.unwrap();
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
        let errors = convert(&r).unwrap_err();
        assert_eq!(errors[0].column, "stage");
    }

    #[test]
    fn server_fields_map_to_columns() {
        let column = |field: &str, source| column_of(field, source);
        let plain = |c: &str| (c.to_owned(), String::new());
        assert_eq!(
            column("lead.amount.currency_code", HistorySource::Column),
            plain("currency")
        );
        assert_eq!(
            column("lead.bant.budget.units", HistorySource::Column),
            plain("bant_budget")
        );
        assert_eq!(
            column("lead.contact_email", HistorySource::Column),
            plain("contact_email")
        );
        assert_eq!(
            column("history[1].to_stage", HistorySource::Derived),
            plain("stage")
        );
        assert_eq!(
            column("history[0].change_time", HistorySource::Derived),
            plain("created_at")
        );
        assert_eq!(
            column("history[1].change_time", HistorySource::Column),
            ("history".to_owned(), "entry 2: ".to_owned())
        );
        assert_eq!(
            column("lead.labels[\"Bad\"]", HistorySource::Column),
            plain("labels")
        );
    }
}
