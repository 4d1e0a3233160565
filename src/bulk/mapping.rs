//! How a file in another layout maps onto leadpipe's columns: `leadpipe import --mapping
//! FILE.toml`, the command-line flags that override it, and the presets built on it.
//!
//! ```toml
//! ignore_unknown_columns = true
//! delimiter = ";"
//! encoding = "windows-1252"
//! decimal_separator = ","
//!
//! [columns]                 # the file's header → a leadpipe column, labels.<key>, or "-" (skip)
//! "Deal ID" = "external_id"
//! "Deal name" = "title"
//! "Region" = "labels.region"
//!
//! [stages]                  # the file's stage values → stage keys
//! "Won" = "closed_won"
//!
//! [defaults]                # values for columns a row leaves empty or the file lacks
//! pipeline_id = "crm"
//! currency = "EUR"
//!
//! [dates]
//! formats = ["%d.%m.%Y %H:%M", "%d.%m.%Y"]
//! timezone = "Europe/Berlin"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::csv::{COLUMNS, EXTRA_COLUMNS, LeadRow, REQUIRED_COLUMNS};
use crate::domain::source::{DecimalSeparator, TimeFormat};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    #[serde(default)]
    pub dates: Dates,
    #[serde(default)]
    pub ignore_unknown_columns: bool,
    pub delimiter: Option<String>,
    pub encoding: Option<String>,
    /// `.` (the default) or `,`.
    pub decimal_separator: Option<String>,
    /// Columns named `Date entered "<stage> (<pipeline>)"`, as HubSpot exports them, give
    /// when the lead entered each stage.
    #[serde(default)]
    pub date_entered_columns: bool,
    /// The rows end at the first blank line: what follows is a report's footer.
    #[serde(default)]
    pub footer_after_blank_line: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dates {
    #[serde(default)]
    pub formats: Vec<String>,
    pub timezone: Option<String>,
}

/// Where one column of the file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Column(&'static str),
    Label(String),
    /// When the lead entered the stage of this name.
    Entered(String),
    Skip,
}

/// A file's header, resolved: the target of each of its columns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub targets: Vec<Target>,
    /// The file's header, for messages.
    pub names: Vec<String>,
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mapping: Mapping = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))?;
        mapping
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(mapping)
    }

    /// Checks what can be checked before the file is read.
    pub fn check(&self) -> Result<(), String> {
        for (source, target) in &self.columns {
            parse_target(target).map_err(|e| format!("columns.{source:?}: {e}"))?;
        }
        for column in self.defaults.keys() {
            match parse_target(column) {
                Ok(Target::Skip) | Err(_) => {
                    return Err(format!("defaults.{column}: is not a leadpipe column"));
                }
                Ok(_) => {}
            }
        }
        self.time_format()?;
        self.decimal()?;
        Ok(())
    }

    pub fn time_format(&self) -> Result<TimeFormat, String> {
        TimeFormat::new(&self.dates.formats, self.dates.timezone.as_deref())
    }

    pub fn decimal(&self) -> Result<DecimalSeparator, String> {
        match self.decimal_separator.as_deref() {
            None | Some(".") => Ok(DecimalSeparator::Point),
            Some(",") => Ok(DecimalSeparator::Comma),
            Some(other) => Err(format!(
                "decimal_separator: {other:?} is neither \".\" nor \",\""
            )),
        }
    }

    /// The stage key a file's stage value maps to, if the mapping names it (ignoring case
    /// and surrounding spaces).
    pub fn stage<'a>(&'a self, value: &str) -> Option<&'a str> {
        let wanted = normalize(value);
        self.stages
            .iter()
            .find(|(name, _)| normalize(name) == wanted)
            .map(|(_, key)| key.as_str())
    }

    /// Resolves a header. Names match ignoring case and surrounding spaces, through `columns`
    /// first. An unknown column refuses the file unless unknown columns are ignored.
    pub fn layout(&self, header: &csv::StringRecord) -> Result<Layout, String> {
        let mut targets = Vec::with_capacity(header.len());
        let mut names = Vec::with_capacity(header.len());
        let mut unknown = Vec::new();
        for name in header {
            let wanted = normalize(name);
            let mapped = self
                .columns
                .iter()
                .find(|(source, _)| normalize(source) == wanted)
                .map(|(_, target)| target.as_str());
            let target = match mapped {
                Some(target) => parse_target(target)?,
                None if self.date_entered_columns && entered_stage(name).is_some() => {
                    Target::Entered(entered_stage(name).unwrap_or_default())
                }
                None => match parse_target(&wanted) {
                    Ok(target) => target,
                    Err(_) if self.ignore_unknown_columns => Target::Skip,
                    Err(_) => {
                        unknown.push(name.trim().to_owned());
                        Target::Skip
                    }
                },
            };
            if target != Target::Skip
                && let Some(i) = targets.iter().position(|t| *t == target)
            {
                return Err(format!(
                    "the columns {:?} and {:?} both give {}",
                    names[i],
                    name.trim(),
                    describe(&target)
                ));
            }
            targets.push(target);
            names.push(name.trim().to_owned());
        }
        if let Some(first) = unknown.first() {
            let more = match unknown.len() {
                1 => String::new(),
                n => format!(" (and {} more: {})", n - 1, unknown[1..].join(", ")),
            };
            return Err(format!(
                "unknown column {first:?}{more}; the columns are {}. Map it with --mapping, or \
                 leave such columns out with --ignore-unknown-columns",
                COLUMNS.join(", ")
            ));
        }
        for required in REQUIRED_COLUMNS {
            let given =
                targets.contains(&Target::Column(required)) || self.defaults.contains_key(required);
            if !given {
                return Err(format!("the column {required:?} is required"));
            }
        }
        Ok(Layout { targets, names })
    }

    /// Fills the columns a row left empty from `defaults`.
    pub fn fill_defaults(&self, row: &mut LeadRow) {
        for (column, value) in &self.defaults {
            if let Ok(target) = parse_target(column) {
                row.set_if_empty(&target, value);
            }
        }
    }
}

impl Layout {
    /// A record as a row: each cell into its column.
    pub fn row(&self, record: &csv::StringRecord) -> LeadRow {
        let mut row = LeadRow::default();
        for (target, value) in self.targets.iter().zip(record) {
            // A cell over several lines of a CRLF file keeps plain line breaks.
            if value.contains('\r') {
                row.set(target, &value.replace("\r\n", "\n"));
            } else {
                row.set(target, value);
            }
        }
        row
    }
}

/// The stage of a `Date entered "Contract Sent (Sales Pipeline)"` column: `Contract Sent`.
fn entered_stage(header: &str) -> Option<String> {
    let header = header.trim();
    let prefix = "date entered ";
    let head = header.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let name = header[prefix.len()..].trim().trim_matches('"').trim();
    let name = match name.rfind(" (") {
        Some(at) if name.ends_with(')') => &name[..at],
        _ => name,
    };
    (!name.is_empty()).then(|| name.to_owned())
}

fn normalize(name: &str) -> String {
    name.trim().to_lowercase()
}

fn describe(target: &Target) -> String {
    match target {
        Target::Column(column) => (*column).to_owned(),
        Target::Label(key) => format!("labels.{key}"),
        Target::Entered(stage) => format!("the entry into {stage:?}"),
        Target::Skip => "-".into(),
    }
}

/// `title`, `labels.region` or `-`.
pub fn parse_target(target: &str) -> Result<Target, String> {
    let target = target.trim();
    if target == "-" {
        return Ok(Target::Skip);
    }
    if let Some(key) = target.strip_prefix("labels.") {
        crate::domain::lead::validate_label_key(key)?;
        return Ok(Target::Label(key.to_owned()));
    }
    COLUMNS
        .iter()
        .chain(EXTRA_COLUMNS.iter())
        .find(|c| **c == target)
        .map(|c| Target::Column(c))
        .ok_or_else(|| {
            format!(
                "{target:?} is not a leadpipe column; the columns are {}, {}, labels.<key> and \
                 - (skip)",
                COLUMNS.join(", "),
                EXTRA_COLUMNS.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(names.to_vec())
    }

    #[test]
    fn date_entered_columns_name_their_stage() {
        assert_eq!(
            entered_stage("Date entered \"Contract Sent (Sales Pipeline)\"").as_deref(),
            Some("Contract Sent")
        );
        assert_eq!(entered_stage("date entered Won").as_deref(), Some("Won"));
        assert_eq!(entered_stage("Date exited \"Won (x)\""), None);
        assert_eq!(entered_stage("Dätë"), None);
    }

    #[test]
    fn headers_match_ignoring_case_and_spaces() {
        let layout = Mapping::default()
            .layout(&header(&["External_ID", " title", "OWNER "]))
            .unwrap();
        assert_eq!(
            layout.targets,
            [
                Target::Column("external_id"),
                Target::Column("title"),
                Target::Column("owner")
            ]
        );
    }

    #[test]
    fn unknown_columns_refuse_the_file_unless_ignored() {
        let refused = Mapping::default()
            .layout(&header(&[
                "Record ID",
                "external_id",
                "title",
                "Deal Stage",
            ]))
            .unwrap_err();
        assert!(
            refused.starts_with("unknown column \"Record ID\" (and 1 more: Deal Stage)"),
            "{refused}"
        );
        let ignoring = Mapping {
            ignore_unknown_columns: true,
            ..Default::default()
        };
        let layout = ignoring
            .layout(&header(&["Record ID", "external_id", "title"]))
            .unwrap();
        assert_eq!(layout.targets[0], Target::Skip);
    }

    #[test]
    fn a_mapping_file_maps_columns_stages_and_defaults() {
        let mapping: Mapping = toml::from_str(
            r#"
            [columns]
            "Deal ID" = "external_id"
            "Deal name" = "title"
            "Region" = "labels.region"
            "Internal" = "-"
            [stages]
            "Won" = "closed_won"
            [defaults]
            currency = "EUR"
            [dates]
            formats = ["%d.%m.%Y"]
            timezone = "Europe/Berlin"
            "#,
        )
        .unwrap();
        mapping.check().unwrap();
        let layout = mapping
            .layout(&header(&["deal id", "Deal Name", "region", "internal"]))
            .unwrap();
        let mut row = layout.row(&csv::StringRecord::from(vec!["d-1", "Acme", "emea", "x"]));
        mapping.fill_defaults(&mut row);
        assert_eq!(
            (
                row.external_id.as_str(),
                row.title.as_str(),
                row.currency.as_str()
            ),
            ("d-1", "Acme", "EUR")
        );
        assert_eq!(row.labels, "region=emea");
        assert_eq!(mapping.stage(" won "), Some("closed_won"));
        assert!(
            toml::from_str::<Mapping>("[columns]\nx = \"nope\"")
                .unwrap()
                .check()
                .is_err()
        );
        assert!(toml::from_str::<Mapping>("colums = {}").is_err());
        let twice = mapping.layout(&header(&["Deal ID", "external_id", "title"]));
        assert!(twice.unwrap_err().contains("both give external_id"));
    }
}
