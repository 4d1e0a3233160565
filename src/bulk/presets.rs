//! `leadpipe import --preset hubspot|salesforce|pipedrive FILE…`: each CRM's own exports, read
//! as they are exported. A preset is a mapping (columns, stage names, date formats), the
//! pipeline that mirrors the CRM's default one (created when the tenant lacks it), and a reader
//! for the CRM's history:
//!
//! - **HubSpot**: the deals view export, whose `Date entered "<stage> (<pipeline>)"` columns
//!   give when each deal entered each stage.
//! - **Salesforce**: an Opportunity report export, and an export of `OpportunityHistory`
//!   (one row per change of stage, amount, probability or close date).
//! - **Pipedrive**: the deals list export, and each deal's flow from the API
//!   (`GET /v1/deals/{id}/flow`) saved as JSON lines: its `dealChange` items of `stage_id`
//!   and `status`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::csv::{escape, format_time};
use super::mapping::{Dates, Mapping};
use super::pipelines::{PipelineSpec, StageSpec};
use super::source::SourceText;
use crate::domain::source::TimeFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    Hubspot,
    Salesforce,
    Pipedrive,
}

/// A lead's history from a file of its own, by external id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceHistory {
    /// Whether the entries start with the lead's creation (Salesforce's do). Otherwise they
    /// are its changes, and it was created at the row's `created_at` in `initial`, or in the
    /// row's stage when it never changed stage.
    pub from_creation: bool,
    pub initial: Option<String>,
    /// Stage names entered, with when and by whom, oldest first.
    pub entries: Vec<(String, DateTime<Utc>, String)>,
    /// The amount and close date the lead was created with, when the file has them.
    pub created_with: Option<(String, String)>,
    /// Later changes of the amount or the close date: when, by whom, and the new values
    /// (None: unchanged). They become the lead's revisions.
    pub edits: Vec<Edit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Edit {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub amount: Option<String>,
    pub close_date: Option<String>,
}

impl SourceHistory {
    /// The `history` column for a row created at `created_at` in `stage` (the row's text).
    pub fn to_column(&self, created_at: &str, stage: &str) -> String {
        let mut parts = Vec::new();
        if !self.from_creation {
            let initial = self.initial.as_deref().unwrap_or(stage);
            parts.push(format!("{}@{}", escape(initial), created_at.trim()));
        }
        for (stage, at, actor) in &self.entries {
            let mut part = format!("{}@{}", escape(stage), format_time(*at));
            if !actor.is_empty() {
                part.push_str(&format!("|by={}", escape(actor)));
            }
            parts.push(part);
        }
        parts.join(" > ")
    }
}

fn columns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .collect()
}

fn stage(key: &str, name: &str, kind: &str, probability: f64, rotting_days: i32) -> StageSpec {
    StageSpec {
        key: key.into(),
        display_name: name.into(),
        kind: kind.into(),
        probability,
        rotting_days,
        entry_criteria: Vec::new(),
    }
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hubspot => "hubspot",
            Self::Salesforce => "salesforce",
            Self::Pipedrive => "pipedrive",
        }
    }

    /// How the CRM's deals export maps onto leadpipe's columns.
    pub fn mapping(self) -> Mapping {
        let mut mapping = Mapping {
            ignore_unknown_columns: true,
            defaults: columns(&[("pipeline_id", self.name())]),
            ..Default::default()
        };
        match self {
            Self::Hubspot => {
                mapping.columns = columns(&[
                    ("Record ID", "external_id"),
                    ("Deal Name", "title"),
                    ("Deal Stage", "stage"),
                    ("Amount", "amount"),
                    ("Currency", "currency"),
                    ("Close Date", "close_date"),
                    ("Deal owner", "owner"),
                    ("Associated Company", "company"),
                    ("Closed Lost Reason", "lost_reason"),
                    ("Deal Type", "labels.deal_type"),
                    // The deal's history starts at its first "Date entered"; HubSpot keeps
                    // only the latest entry into each stage.
                    ("Create Date", "-"),
                    ("Pipeline", "-"),
                ]);
                mapping.defaults.insert("currency".into(), "USD".into());
                mapping.date_entered_columns = true;
            }
            Self::Salesforce => {
                mapping.columns = columns(&[
                    ("Opportunity ID", "external_id"),
                    ("Opportunity Name", "title"),
                    ("Account Name", "company"),
                    ("Opportunity Owner", "owner"),
                    ("Stage", "stage"),
                    ("Amount", "amount"),
                    ("Amount Currency", "currency"),
                    ("Close Date", "close_date"),
                    ("Created Date", "created_at"),
                    ("Lead Source", "source"),
                    ("Type", "labels.type"),
                    ("Loss Reason", "lost_reason"),
                ]);
                mapping.defaults.insert("currency".into(), "USD".into());
                mapping.dates = Dates {
                    formats: vec!["%m/%d/%Y %I:%M %p".into(), "%m/%d/%Y".into()],
                    timezone: None,
                };
                mapping.footer_after_blank_line = true;
            }
            Self::Pipedrive => {
                mapping.columns = columns(&[
                    ("Deal - ID", "external_id"),
                    ("Deal - Title", "title"),
                    ("Deal - Value", "amount"),
                    ("Deal - Currency", "currency"),
                    ("Deal - Owner", "owner"),
                    ("Deal - Organization", "company"),
                    ("Deal - Contact person", "contact_name"),
                    ("Deal - Stage", "stage"),
                    ("Deal - Status", "status"),
                    ("Deal - Deal created", "created_at"),
                    ("Deal - Won time", "won_at"),
                    ("Deal - Lost time", "lost_at"),
                    ("Deal - Lost reason", "lost_reason"),
                    ("Deal - Expected close date", "expected_close"),
                    ("Deal - Pipeline", "-"),
                ]);
            }
        }
        mapping
    }

    /// The leadpipe pipeline mirroring the CRM's default pipeline, by the CRM's stage names.
    pub fn pipeline(self) -> PipelineSpec {
        let stages = match self {
            Self::Hubspot => vec![
                stage(
                    "appointment_scheduled",
                    "Appointment Scheduled",
                    "open",
                    0.2,
                    14,
                ),
                stage("qualified_to_buy", "Qualified To Buy", "open", 0.4, 21),
                stage(
                    "presentation_scheduled",
                    "Presentation Scheduled",
                    "open",
                    0.6,
                    21,
                ),
                stage(
                    "decision_maker_bought_in",
                    "Decision Maker Bought-In",
                    "open",
                    0.8,
                    21,
                ),
                stage("contract_sent", "Contract Sent", "open", 0.9, 14),
                stage("closed_won", "Closed Won", "won", 1.0, 0),
                stage("closed_lost", "Closed Lost", "lost", 0.0, 0),
            ],
            Self::Salesforce => vec![
                stage("prospecting", "Prospecting", "open", 0.1, 14),
                stage("qualification", "Qualification", "open", 0.1, 21),
                stage("needs_analysis", "Needs Analysis", "open", 0.2, 21),
                stage("value_proposition", "Value Proposition", "open", 0.5, 21),
                stage("id_decision_makers", "Id. Decision Makers", "open", 0.6, 21),
                stage(
                    "perception_analysis",
                    "Perception Analysis",
                    "open",
                    0.7,
                    21,
                ),
                stage(
                    "proposal_price_quote",
                    "Proposal/Price Quote",
                    "open",
                    0.75,
                    21,
                ),
                stage("negotiation_review", "Negotiation/Review", "open", 0.9, 14),
                stage("closed_won", "Closed Won", "won", 1.0, 0),
                stage("closed_lost", "Closed Lost", "lost", 0.0, 0),
            ],
            Self::Pipedrive => vec![
                stage("qualified", "Qualified", "open", 0.1, 14),
                stage("contact_made", "Contact Made", "open", 0.2, 21),
                stage("demo_scheduled", "Demo Scheduled", "open", 0.4, 21),
                stage("proposal_made", "Proposal Made", "open", 0.6, 21),
                stage(
                    "negotiations_started",
                    "Negotiations Started",
                    "open",
                    0.8,
                    14,
                ),
                stage("won", "Won", "won", 1.0, 0),
                stage("lost", "Lost", "lost", 0.0, 0),
            ],
        };
        PipelineSpec {
            id: self.name().into(),
            display_name: match self {
                Self::Hubspot => "Sales Pipeline (HubSpot)",
                Self::Salesforce => "Opportunities (Salesforce)",
                Self::Pipedrive => "Pipeline (Pipedrive)",
            }
            .into(),
            // CRMs let deals skip stages and move back.
            allow_skip: true,
            allow_backward: true,
            allow_reopen: true,
            stages,
        }
    }

    /// Reads the CRM's history files (every file after the deals export).
    pub fn history(self, paths: &[&Path]) -> Result<HashMap<String, SourceHistory>, String> {
        let mut all = HashMap::new();
        for path in paths {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let named = |e: String| format!("{}: {e}", path.display());
            let found = match self {
                Self::Hubspot => {
                    return Err(named(
                        "HubSpot's history is in the deals export's \"Date entered\" columns; \
                         give only that file"
                            .into(),
                    ));
                }
                Self::Salesforce => opportunity_history(&bytes).map_err(named)?,
                Self::Pipedrive => deal_flow(&bytes).map_err(named)?,
            };
            all.extend(found);
        }
        Ok(all)
    }
}

/// Salesforce `OpportunityHistory` rows (a Data Loader or report export): one per change of
/// stage, amount, probability or close date. Consecutive rows in the same stage are one stay.
fn opportunity_history(bytes: &[u8]) -> Result<HashMap<String, SourceHistory>, String> {
    let source = SourceText::decode(bytes, None)?;
    let delimiter = source.sniff_delimiter();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(source.text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("line 1: the column {name} is required"))
    };
    let (opportunity, stage, created, by) = (
        column("OpportunityId")?,
        column("StageName")?,
        column("CreatedDate")?,
        column("CreatedById").ok(),
    );
    let (amount, close_date) = (column("Amount").ok(), column("CloseDate").ok());
    let times = TimeFormat::default();
    let mut rows: HashMap<String, Vec<HistoryRow>> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let line = record
            .position()
            .map_or(0, |p| source.line_of_row(p.byte() as usize));
        let field = |i: usize| record.get(i).unwrap_or_default().trim().to_owned();
        let at = times
            .parse(&field(created))
            .map_err(|e| format!("line {line}: CreatedDate: {e}"))?
            .ok_or_else(|| format!("line {line}: CreatedDate is empty"))?;
        rows.entry(field(opportunity))
            .or_default()
            .push(HistoryRow {
                at,
                stage: field(stage),
                actor: by.map(field).unwrap_or_default(),
                amount: amount.map(field),
                close_date: close_date.map(field),
            });
    }
    Ok(rows
        .into_iter()
        .map(|(id, mut changes)| {
            changes.sort_by_key(|c| c.at);
            let mut history = SourceHistory {
                from_creation: true,
                ..Default::default()
            };
            let mut previous: Option<&HistoryRow> = None;
            for row in &changes {
                match previous {
                    None => {
                        history.created_with = Some((
                            row.amount.clone().unwrap_or_default(),
                            row.close_date.clone().unwrap_or_default(),
                        ));
                    }
                    Some(before) => {
                        let changed = |now: &Option<String>, then: &Option<String>| {
                            (now != then).then(|| now.clone().unwrap_or_default())
                        };
                        let edit = Edit {
                            at: row.at,
                            actor: row.actor.clone(),
                            amount: changed(&row.amount, &before.amount),
                            close_date: changed(&row.close_date, &before.close_date),
                        };
                        if edit.amount.is_some() || edit.close_date.is_some() {
                            history.edits.push(edit);
                        }
                    }
                }
                if history.entries.last().map(|e| &e.0) != Some(&row.stage) {
                    history
                        .entries
                        .push((row.stage.clone(), row.at, row.actor.clone()));
                }
                previous = Some(row);
            }
            (id, history)
        })
        .collect())
}

struct HistoryRow {
    at: DateTime<Utc>,
    stage: String,
    actor: String,
    amount: Option<String>,
    close_date: Option<String>,
}

struct FlowChange {
    at: DateTime<Utc>,
    key: String,
    old: String,
    new: String,
    actor: String,
}

/// Pipedrive deal flow items, one JSON object a line: `dealChange` items of `stage_id` (with
/// the stages' names in `additional_data`) and `status` (`open`, `won`, `lost`), at `log_time`
/// by `user_id`. The flow comes from Pipedrive's API, whose times are all UTC, so `log_time` is
/// read as UTC whatever `--timezone` says of the deals export (written in the account's zone).
fn deal_flow(bytes: &[u8]) -> Result<HashMap<String, SourceHistory>, String> {
    let text = SourceText::decode(bytes, None)?;
    let times = TimeFormat::default();
    let mut changes: HashMap<String, Vec<FlowChange>> = HashMap::new();
    for (i, line) in text.text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let item: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {n}: not JSON: {e}"))?;
        if item["object"] != "dealChange" {
            continue;
        }
        let data = &item["data"];
        let key = data["field_key"].as_str().unwrap_or_default();
        if key != "stage_id" && key != "status" {
            continue;
        }
        let text_of = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let deal = text_of(&data["item_id"]);
        let at = times
            .parse(data["log_time"].as_str().unwrap_or_default())
            .map_err(|e| format!("line {n}: log_time: {e}"))?
            .ok_or_else(|| format!("line {n}: log_time is missing"))?;
        let actor = match &data["user_id"] {
            serde_json::Value::Null => String::new(),
            user => format!("pipedrive:user:{}", text_of(user)),
        };
        let (old, new) = if key == "stage_id" {
            let extra = &data["additional_data"];
            let old = text_of(&extra["old_value_formatted"]);
            let new = text_of(&extra["new_value_formatted"]);
            if new.is_empty() {
                return Err(format!(
                    "line {n}: a stage change without additional_data.new_value_formatted (the \
                     stage's name)"
                ));
            }
            (old, new)
        } else {
            (
                String::new(),
                format!("status:{}", text_of(&data["new_value"])),
            )
        };
        changes.entry(deal).or_default().push(FlowChange {
            at,
            key: key.to_owned(),
            old,
            new,
            actor,
        });
    }
    Ok(changes
        .into_iter()
        .map(|(deal, mut items)| {
            items.sort_by_key(|c| c.at);
            let mut history = SourceHistory::default();
            // The open stage the deal is in, to return to when it is reopened.
            let mut open_stage: Option<String> = None;
            for FlowChange {
                at,
                key,
                old,
                new,
                actor,
            } in items
            {
                match (key.as_str(), new.strip_prefix("status:")) {
                    ("status", Some("won")) => history.entries.push(("Won".into(), at, actor)),
                    ("status", Some("lost")) => history.entries.push(("Lost".into(), at, actor)),
                    ("status", _) => {
                        if let Some(stage) = &open_stage {
                            history.entries.push((stage.clone(), at, actor));
                        }
                    }
                    _ => {
                        if history.initial.is_none()
                            && history.entries.is_empty()
                            && !old.is_empty()
                        {
                            history.initial = Some(old);
                        }
                        open_stage = Some(new.clone());
                        history.entries.push((new, at, actor));
                    }
                }
            }
            (deal, history)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opportunity_history_becomes_stage_stays() {
        let file = "Id,OpportunityId,CreatedById,CreatedDate,StageName,Amount,CloseDate\r\n\
                    h3,006A,005U,2026-09-20T10:00:00.000Z,Negotiation/Review,12000,2026-10-31\r\n\
                    h1,006A,005U,2026-09-01T09:00:00.000Z,Prospecting,10000,2026-10-31\r\n\
                    h2,006A,005V,2026-09-05T09:00:00.000Z,Prospecting,12000,2026-10-31\r\n";
        let history = opportunity_history(file.as_bytes()).unwrap();
        let a = &history["006A"];
        assert!(a.from_creation);
        let stages: Vec<_> = a.entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(stages, ["Prospecting", "Negotiation/Review"]);
        assert_eq!(a.created_with, Some(("10000".into(), "2026-10-31".into())));
        assert_eq!(a.edits.len(), 1);
        assert_eq!(a.edits[0].amount.as_deref(), Some("12000"));
        assert_eq!(a.edits[0].close_date, None);
        assert_eq!(
            a.to_column("", ""),
            "Prospecting@2026-09-01T09:00:00Z|by=005U > Negotiation/Review@2026-09-20T10:00:00Z|by=005U"
        );
    }

    #[test]
    fn a_deal_flow_gives_stages_and_statuses() {
        let flow = [
            r#"{"object":"dealChange","timestamp":"2026-05-02 10:00:00","data":{"item_id":7,"user_id":11,"field_key":"stage_id","old_value":1,"new_value":2,"log_time":"2026-05-02 10:00:00","additional_data":{"old_value_formatted":"Qualified","new_value_formatted":"Contact Made"}}}"#,
            r#"{"object":"note","data":{"item_id":7}}"#,
            r#"{"object":"dealChange","data":{"item_id":7,"user_id":11,"field_key":"status","old_value":"open","new_value":"lost","log_time":"2026-05-09 10:00:00"}}"#,
            r#"{"object":"dealChange","data":{"item_id":7,"user_id":11,"field_key":"status","old_value":"lost","new_value":"open","log_time":"2026-05-10 10:00:00"}}"#,
            r#"{"object":"dealChange","data":{"item_id":7,"user_id":12,"field_key":"status","old_value":"open","new_value":"won","log_time":"2026-05-20 10:00:00"}}"#,
        ]
        .join("\n");
        let history = deal_flow(flow.as_bytes()).unwrap();
        let deal = &history["7"];
        assert_eq!(deal.initial.as_deref(), Some("Qualified"));
        let stages: Vec<_> = deal.entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(stages, ["Contact Made", "Lost", "Contact Made", "Won"]);
        assert!(deal_flow(b"not json").is_err());
    }

    #[test]
    fn presets_check_and_name_their_pipelines() {
        for preset in [Preset::Hubspot, Preset::Salesforce, Preset::Pipedrive] {
            preset.mapping().check().unwrap();
            assert_eq!(preset.pipeline().id, preset.name());
        }
    }
}
