//! Leads and the validation of their writable fields.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{LeadId, PipelineId, StageKey};
use super::money::Money;

pub const MAX_TEXT_LEN: usize = 200;
pub const MAX_LOST_REASON_LEN: usize = 2000;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_VALUE_LEN: usize = 255;
pub const MAX_EMAIL_LEN: usize = 254;

/// BANT qualification: budget, authority, need, timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bant {
    pub budget: Option<Money>,
    pub authority: String,
    pub need: String,
    pub timeline: Option<DateTime<Utc>>,
}

impl Bant {
    pub fn is_complete(&self) -> bool {
        self.budget.as_ref().is_some_and(Money::is_positive)
            && !self.authority.trim().is_empty()
            && !self.need.trim().is_empty()
            && self.timeline.is_some()
    }
}

/// The fields a client may write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadFields {
    pub title: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub owner: String,
    pub source: String,
    pub amount: Option<Money>,
    pub bant: Bant,
    pub expected_close_time: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    pub lost_reason: String,
}

/// A stored lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub id: LeadId,
    pub fields: LeadFields,
    pub pipeline_id: PipelineId,
    pub stage: StageKey,
    pub win_probability: f64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub stage_enter_time: DateTime<Utc>,
    pub close_time: Option<DateTime<Utc>>,
    /// Incremented on every write; the etag is derived from it.
    pub version: i64,
    /// The lead's id in the system it was imported from, if it was imported.
    #[serde(default)]
    pub external_id: Option<String>,
    /// How many times the expected close moved to a later date (slippage).
    #[serde(default)]
    pub close_date_push_count: i64,
    /// The first expected close the lead was given.
    #[serde(default)]
    pub first_expected_close_time: Option<DateTime<Utc>>,
}

impl Lead {
    /// win_probability × amount in major units: what the lead is worth, weighted by its chance.
    pub fn expected_value(&self) -> f64 {
        self.fields.amount.as_ref().map_or(0.0, |m| m.value()) * self.win_probability
    }
}

impl Lead {
    /// Keeps the slippage fields up to date after `fields.expected_close_time` was set, with the
    /// expected close before the write (None on creation). A move to a later date is a push; an
    /// earlier date, or clearing it, is not.
    pub fn track_expected_close(&mut self, previous: Option<DateTime<Utc>>) {
        let current = self.fields.expected_close_time;
        if self.first_expected_close_time.is_none() {
            self.first_expected_close_time = current;
        }
        if let (Some(before), Some(after)) = (previous, current)
            && after > before
        {
            self.close_date_push_count += 1;
        }
    }

    pub fn etag(&self) -> String {
        Etag::from_version(self.version).0
    }
}

/// An opaque, quoted version tag as used by HTTP and AIP-154.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag(String);

impl Etag {
    pub fn from_version(version: i64) -> Self {
        Self(format!("\"{version}\""))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Empty means "unconditional".
    pub fn parse_optional(value: &str) -> Result<Option<i64>, String> {
        if value.is_empty() {
            return Ok(None);
        }
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| "is not an etag this service issued".into())
    }
}

/// A title is required, and otherwise held to the rules of every text field.
pub fn validate_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        Err("is required".into())
    } else {
        validate_text(title, MAX_TEXT_LEN)
    }
}

pub fn validate_text(value: &str, max: usize) -> Result<(), String> {
    let len = value.chars().count();
    if len > max {
        Err(format!("must be at most {max} characters, got {len}"))
    } else if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

pub fn validate_email(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_text(value, MAX_EMAIL_LEN)?;
    value
        .parse::<email_address::EmailAddress>()
        .map(|_| ())
        .map_err(|e| format!("{value:?} is not a valid e-mail address: {e}"))
}

/// The earliest business date a lead may carry (an expected close time or a BANT timeline):
/// 1990-01-01T00:00:00Z. Older dates are almost always a client's mistake, not a plan: an unset
/// date sent as zero (the epoch), or milliseconds read as seconds.
pub const EARLIEST_BUSINESS_DATE_SECONDS: i64 = 631_152_000;
/// The first instant past the latest business date a lead may carry: 2200-01-01T00:00:00Z.
pub const END_OF_BUSINESS_DATES_SECONDS: i64 = 7_258_118_400;

/// A lead's business dates lie from 1990-01-01 (inclusive) to 2200-01-01 (exclusive), in UTC.
/// Client libraries turn a missing or mistyped date into the epoch or into a far-off year without
/// a word, and a lead whose expected close is 1970 would skew every forecast and stuck-lead
/// list; refusing it makes the client see the mistake.
pub fn validate_business_date(time: DateTime<Utc>) -> Result<(), String> {
    let seconds = time.timestamp();
    if (EARLIEST_BUSINESS_DATE_SECONDS..END_OF_BUSINESS_DATES_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(format!(
            "must be from 1990-01-01T00:00:00Z up to 2200-01-01T00:00:00Z, got {}",
            time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ))
    }
}

pub fn validate_label_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && key.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label key {key:?} must be 1 to 63 characters of [a-z0-9_-], starting with a letter"
        ))
    }
}

pub fn validate_labels(labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if labels.len() > MAX_LABELS {
        errors.push((
            String::new(),
            format!("at most {MAX_LABELS} labels are allowed"),
        ));
    }
    for (key, value) in labels {
        if let Err(e) = validate_label_key(key) {
            errors.push((key.clone(), e));
        } else if let Err(e) = validate_text(value, MAX_LABEL_VALUE_LEN) {
            errors.push((key.clone(), e));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_dates_lie_between_1990_and_2200() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(validate_business_date(at("1990-01-01T00:00:00Z")).is_ok());
        assert!(validate_business_date(at("2027-03-31T00:00:00Z")).is_ok());
        assert!(validate_business_date(at("2199-12-31T23:59:59.999999Z")).is_ok());
        assert!(validate_business_date(at("1989-12-31T23:59:59.999999Z")).is_err());
        assert!(validate_business_date(at("2200-01-01T00:00:00Z")).is_err());
        assert_eq!(
            validate_business_date(DateTime::UNIX_EPOCH),
            Err("must be from 1990-01-01T00:00:00Z up to 2200-01-01T00:00:00Z, got 1970-01-01T00:00:00Z".into())
        );
    }

    #[test]
    fn titles_are_required_and_bounded() {
        assert!(validate_title("Acme renewal").is_ok());
        assert!(validate_title("  ").is_err());
        assert!(validate_title(&"x".repeat(200)).is_ok());
        assert!(validate_title(&"x".repeat(201)).is_err());
        assert!(validate_title("bell\u{7}").is_err());
    }

    #[test]
    fn emails_are_validated_when_set() {
        assert!(validate_email("").is_ok());
        assert!(validate_email("dana@example.com").is_ok());
        assert!(validate_email("not-an-email").is_err());
    }

    #[test]
    fn etags_round_trip() {
        assert_eq!(Etag::parse_optional(&Etag::from_version(7).0), Ok(Some(7)));
        assert_eq!(Etag::parse_optional(""), Ok(None));
        assert!(Etag::parse_optional("7").is_err());
        assert!(Etag::parse_optional("\"-1\"").is_err());
    }

    #[test]
    fn bant_completeness() {
        let mut bant = Bant::default();
        assert!(!bant.is_complete());
        bant.budget = Some(Money::parse("EUR", 5000, 0).unwrap());
        bant.authority = "CFO".into();
        bant.need = "Faster invoicing".into();
        assert!(!bant.is_complete());
        bant.timeline = Some(Utc::now());
        assert!(bant.is_complete());
    }

    #[test]
    fn labels_are_validated() {
        let mut labels = BTreeMap::new();
        labels.insert("region".to_string(), "emea".to_string());
        assert!(validate_labels(&labels).is_empty());
        labels.insert("Bad Key".to_string(), "x".to_string());
        assert_eq!(validate_labels(&labels).len(), 1);
    }
}

/// A writable field of a lead, as named in an update mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadField {
    Title,
    Company,
    ContactName,
    ContactEmail,
    Owner,
    Source,
    Amount,
    Bant,
    BantBudget,
    BantAuthority,
    BantNeed,
    BantTimeline,
    ExpectedCloseTime,
    Labels,
    Label(String),
    LostReason,
}

/// Fields a client may name in an update mask, besides `labels.<key>`.
pub const MASKABLE_FIELDS: &[&str] = &[
    "title",
    "company",
    "contact_name",
    "contact_email",
    "owner",
    "source",
    "amount",
    "bant",
    "bant.budget",
    "bant.authority",
    "bant.need",
    "bant.timeline",
    "expected_close_time",
    "labels",
    "lost_reason",
];

const OUTPUT_ONLY_FIELDS: &[&str] = &[
    "id",
    "win_probability",
    "create_time",
    "update_time",
    "stage_enter_time",
    "close_time",
    "etag",
    "close_date_push_count",
    "first_expected_close_time",
];

impl LeadField {
    pub fn parse(path: &str) -> Result<Self, String> {
        Ok(match path {
            "title" => Self::Title,
            "company" => Self::Company,
            "contact_name" => Self::ContactName,
            "contact_email" => Self::ContactEmail,
            "owner" => Self::Owner,
            "source" => Self::Source,
            "amount" => Self::Amount,
            "bant" => Self::Bant,
            "bant.budget" => Self::BantBudget,
            "bant.authority" => Self::BantAuthority,
            "bant.need" => Self::BantNeed,
            "bant.timeline" => Self::BantTimeline,
            "expected_close_time" => Self::ExpectedCloseTime,
            "labels" => Self::Labels,
            "lost_reason" => Self::LostReason,
            "stage" => return Err("the stage cannot be changed by UpdateLead; use MoveLead".into()),
            "pipeline_id" => return Err("a lead's pipeline cannot be changed".into()),
            other if OUTPUT_ONLY_FIELDS.contains(&other) => {
                return Err(format!("{other:?} is output only"));
            }
            other => match other.strip_prefix("labels.") {
                Some(key) => {
                    validate_label_key(key)?;
                    Self::Label(key.to_owned())
                }
                None => {
                    return Err(format!(
                        "unknown field {other:?}; updatable fields are {} and labels.<key>",
                        MASKABLE_FIELDS.join(", ")
                    ));
                }
            },
        })
    }

    /// The request field path (under `lead.`) whose validation this field depends on.
    pub fn covers(&self, violation_path: &str) -> bool {
        let prefix = match self {
            Self::Title => "title",
            Self::Company => "company",
            Self::ContactName => "contact_name",
            Self::ContactEmail => "contact_email",
            Self::Owner => "owner",
            Self::Source => "source",
            Self::Amount => "amount",
            Self::Bant => "bant",
            Self::BantBudget => "bant.budget",
            Self::BantAuthority => "bant.authority",
            Self::BantNeed => "bant.need",
            Self::BantTimeline => "bant.timeline",
            Self::ExpectedCloseTime => "expected_close_time",
            // A bad label is reported as `labels["key"]`: replacing every label writes it too.
            Self::Labels => {
                return violation_path == "labels" || violation_path.starts_with("labels[");
            }
            Self::Label(key) => {
                return violation_path == format!("labels[{key:?}]") || violation_path == "labels";
            }
            Self::LostReason => "lost_reason",
        };
        violation_path == prefix || violation_path.starts_with(&format!("{prefix}."))
    }

    /// Copies this field from `source` into `target`.
    pub fn apply(&self, source: &LeadFields, target: &mut LeadFields) {
        match self {
            Self::Title => target.title.clone_from(&source.title),
            Self::Company => target.company.clone_from(&source.company),
            Self::ContactName => target.contact_name.clone_from(&source.contact_name),
            Self::ContactEmail => target.contact_email.clone_from(&source.contact_email),
            Self::Owner => target.owner.clone_from(&source.owner),
            Self::Source => target.source.clone_from(&source.source),
            Self::Amount => target.amount.clone_from(&source.amount),
            Self::Bant => target.bant.clone_from(&source.bant),
            Self::BantBudget => target.bant.budget.clone_from(&source.bant.budget),
            Self::BantAuthority => target.bant.authority.clone_from(&source.bant.authority),
            Self::BantNeed => target.bant.need.clone_from(&source.bant.need),
            Self::BantTimeline => target.bant.timeline = source.bant.timeline,
            Self::ExpectedCloseTime => target.expected_close_time = source.expected_close_time,
            Self::Labels => target.labels.clone_from(&source.labels),
            Self::Label(key) => match source.labels.get(key) {
                Some(value) => {
                    target.labels.insert(key.clone(), value.clone());
                }
                None => {
                    target.labels.remove(key);
                }
            },
            Self::LostReason => target.lost_reason.clone_from(&source.lost_reason),
        }
    }

    pub fn all() -> Vec<Self> {
        MASKABLE_FIELDS
            .iter()
            .filter(|f| !f.contains('.'))
            .map(|f| Self::parse(f).expect("maskable fields parse"))
            .collect()
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn mask_paths_parse_and_refuse_stage() {
        assert_eq!(LeadField::parse("bant.need"), Ok(LeadField::BantNeed));
        assert_eq!(
            LeadField::parse("labels.region"),
            Ok(LeadField::Label("region".into()))
        );
        assert!(LeadField::parse("stage").unwrap_err().contains("MoveLead"));
        assert!(
            LeadField::parse("etag")
                .unwrap_err()
                .contains("output only")
        );
        assert!(LeadField::parse("nope").is_err());
        assert!(LeadField::all().contains(&LeadField::Bant));
    }

    #[test]
    fn label_patch_sets_and_removes_one_key() {
        let mut target = LeadFields {
            title: "t".into(),
            company: String::new(),
            contact_name: String::new(),
            contact_email: String::new(),
            owner: String::new(),
            source: String::new(),
            amount: None,
            bant: Bant::default(),
            expected_close_time: None,
            labels: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            lost_reason: String::new(),
        };
        let mut source = target.clone();
        source.labels = BTreeMap::from([("a".into(), "9".into())]);
        LeadField::Label("a".into()).apply(&source, &mut target);
        LeadField::Label("b".into()).apply(&source, &mut target);
        assert_eq!(target.labels, BTreeMap::from([("a".into(), "9".into())]));
        assert!(LeadField::Amount.covers("amount.currency_code"));
        assert!(!LeadField::Amount.covers("amount_x"));
        assert!(LeadField::Labels.covers("labels[\"\\0\"]"));
        assert!(!LeadField::Labels.covers("labels_x"));
    }
}
