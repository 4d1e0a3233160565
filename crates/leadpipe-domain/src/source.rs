//! Values as other systems write them: times in their formats and time zone, amounts with
//! thousands separators and currency symbols, and stages by key or display name. Importers
//! read a source's cells through these rules, so that a value is read alike from every format.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::ids::StageKey;
use super::money::parse_decimal_amount;
use super::pipeline::PipelineDefinition;

/// Formats tried after RFC 3339 when no others are given: ISO dates with a space or a `T` and
/// no offset, which every CRM and spreadsheet writes, read in the source's time zone.
pub const DEFAULT_TIME_FORMATS: [&str; 5] = [
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
];

/// How a source writes its times: RFC 3339 with an offset is always understood; otherwise
/// each format in turn (chrono's `strftime` syntax), as a time or a date (midnight), in `zone`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeFormat {
    formats: Vec<String>,
    zone: Tz,
}

impl Default for TimeFormat {
    fn default() -> Self {
        Self {
            formats: DEFAULT_TIME_FORMATS.iter().map(|f| f.to_string()).collect(),
            zone: Tz::UTC,
        }
    }
}

impl TimeFormat {
    /// `formats` replace the defaults when given; `zone` is an IANA name (`Europe/Berlin`).
    pub fn new(formats: &[String], zone: Option<&str>) -> Result<Self, String> {
        let mut format = Self::default();
        if !formats.is_empty() {
            for f in formats {
                check_format(f)?;
            }
            format.formats = formats.to_vec();
            // The layouts leadpipe itself writes stay readable after the source's own.
            format
                .formats
                .extend(DEFAULT_TIME_FORMATS.iter().map(|f| f.to_string()));
        }
        if let Some(zone) = zone.map(str::trim).filter(|z| !z.is_empty()) {
            format.zone = parse_zone(zone)?;
        }
        Ok(format)
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Empty is unset. Times are kept to the microsecond, as stored.
    pub fn parse(&self, value: &str) -> Result<Option<DateTime<Utc>>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(value) {
            return Ok(Some(to_micros(time.with_timezone(&Utc))));
        }
        for format in &self.formats {
            if let Ok(time) = DateTime::parse_from_str(value, format) {
                return Ok(Some(to_micros(time.with_timezone(&Utc))));
            }
            let local = NaiveDateTime::parse_from_str(value, format)
                .ok()
                .or_else(|| {
                    NaiveDate::parse_from_str(value, format)
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                });
            if let Some(local) = local {
                return self.localize(value, local).map(Some);
            }
        }
        Err(format!(
            "{value:?} is not a time in a known format: use RFC 3339 (2026-06-02T09:00:00Z), \
             2026-06-02 or 2026-06-02 09:00, or give the source's format with --date-format \
             (e.g. %m/%d/%Y)"
        ))
    }

    fn localize(&self, value: &str, local: NaiveDateTime) -> Result<DateTime<Utc>, String> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) => Ok(to_micros(t.with_timezone(&Utc))),
            // The hour repeated when clocks go back: the first of the two, as most systems do.
            LocalResult::Ambiguous(first, _) => Ok(to_micros(first.with_timezone(&Utc))),
            LocalResult::None => Err(format!(
                "{value:?} does not exist in {}: the clocks skipped it",
                self.zone.name()
            )),
        }
    }
}

fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// An IANA time-zone name, or `UTC`.
pub fn parse_zone(zone: &str) -> Result<Tz, String> {
    zone.parse::<Tz>().map_err(|_| {
        format!("{zone:?} is not a time zone: use an IANA name such as Europe/Berlin or UTC")
    })
}

fn check_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if format.trim().is_empty() {
        return Err("a date format must not be empty".into());
    }
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!(
            "{format:?} is not a date format: use strftime fields such as %m/%d/%Y %H:%M"
        ));
    }
    Ok(())
}

/// How a source writes amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalSeparator {
    /// `12,000.50`: a point, with commas between thousands.
    Point,
    /// `12.000,50`: a comma, with points or spaces between thousands.
    Comma,
}

/// An amount as its source wrote it: `12000`, `12,000.50`, `$12,000`, `4900 usd`, `EUR 90000`,
/// `€ 1.234,50` (with [`DecimalSeparator::Comma`]). Returns the ISO currency code, if the value
/// names one, and the units and nanos. Thousands separators must group by three, so that a
/// decimal comma is never read as a thousands separator (`12,5` is refused with a point).
pub fn parse_amount(
    value: &str,
    separator: DecimalSeparator,
) -> Result<(Option<String>, i64, i32), String> {
    let original = value.trim();
    let (number, currency) = split_currency(original);
    let number = number.trim();
    let (thousands, decimal): (&[char], char) = match separator {
        DecimalSeparator::Point => (&[','], '.'),
        DecimalSeparator::Comma => (&['.', ' ', '\u{a0}', '\u{202f}'], ','),
    };
    let (whole, fraction) = match number.split_once(decimal) {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let refuse = || {
        let plain = number.replace(thousands, "").replace(decimal, ".");
        match parse_decimal_amount(&plain) {
            Err(reason) if plain == number => reason,
            _ => format!("{original:?} is not a non-negative decimal number"),
        }
    };
    let groups: Vec<&str> = whole.split(thousands).collect();
    let grouped = groups.len() == 1
        || (groups.first().is_some_and(|g| (1..=3).contains(&g.len()))
            && groups[1..].iter().all(|g| g.len() == 3));
    if !grouped {
        return Err(refuse());
    }
    let plain = match fraction {
        Some(fraction) => format!("{}.{fraction}", groups.concat()),
        None => groups.concat(),
    };
    let (units, nanos) = parse_decimal_amount(&plain).map_err(|_| refuse())?;
    Ok((currency, units, nanos))
}

/// Splits a currency symbol or ISO code off either end of an amount.
fn split_currency(value: &str) -> (&str, Option<String>) {
    const SYMBOLS: [(&str, &str); 4] = [("€", "EUR"), ("£", "GBP"), ("¥", "JPY"), ("$", "USD")];
    for (symbol, code) in SYMBOLS {
        if let Some(rest) = value
            .strip_prefix(symbol)
            .or_else(|| value.strip_suffix(symbol))
        {
            return (rest, Some(code.to_owned()));
        }
    }
    let code = |s: &str| s.len() == 3 && s.chars().all(|c| c.is_ascii_alphabetic());
    if let Some((head, tail)) = value.rsplit_once(char::is_whitespace)
        && code(tail.trim())
    {
        return (head, Some(tail.trim().to_ascii_uppercase()));
    }
    if let Some((head, tail)) = value.split_once(char::is_whitespace)
        && code(head.trim())
    {
        return (tail, Some(head.trim().to_ascii_uppercase()));
    }
    (value, None)
}

impl PipelineDefinition {
    /// The stage a source names: by key, or by display name, ignoring case and surrounding
    /// spaces. The refusal quotes the value and lists the stages.
    pub fn resolve_stage(&self, value: &str) -> Result<StageKey, String> {
        let wanted = value.trim();
        let found = self
            .stages
            .iter()
            .find(|s| s.key.as_str() == wanted)
            .or_else(|| {
                self.stages.iter().find(|s| {
                    s.key.as_str().eq_ignore_ascii_case(wanted)
                        || s.display_name.trim().to_lowercase() == wanted.to_lowercase()
                })
            });
        match found {
            Some(stage) => Ok(stage.key.clone()),
            None => Err(format!(
                "{wanted:?} is not a stage of the pipeline; its stages are {}",
                self.stage_list()
            )),
        }
    }

    /// `lead_generation ("Lead generation"), …`, for messages.
    pub fn stage_list(&self) -> String {
        self.stages
            .iter()
            .map(|s| format!("{} ({:?})", s.key.as_str(), s.display_name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::default_pipeline;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn default_formats_read_iso_times_without_offset_as_utc() {
        let f = TimeFormat::default();
        assert_eq!(f.parse("").unwrap(), None);
        assert_eq!(
            f.parse("2026-05-26 09:50").unwrap(),
            Some(at("2026-05-26T09:50:00Z"))
        );
        assert_eq!(
            f.parse("2026-09-18 09:13:53").unwrap(),
            Some(at("2026-09-18T09:13:53Z"))
        );
        assert_eq!(
            f.parse("2026-06-02").unwrap(),
            Some(at("2026-06-02T00:00:00Z"))
        );
        assert_eq!(
            f.parse("2026-06-02T09:00:00+02:00").unwrap(),
            Some(at("2026-06-02T07:00:00Z"))
        );
        let refused = f.parse("10/14/2026").unwrap_err();
        assert!(refused.contains("--date-format"), "{refused}");
    }

    #[test]
    fn formats_and_zones_apply_to_times_without_offset() {
        let f = TimeFormat::new(
            &["%m/%d/%Y %H:%M".into(), "%m/%d/%Y".into()],
            Some("Europe/Berlin"),
        )
        .unwrap();
        // Summer time: two hours ahead of UTC; winter: one.
        assert_eq!(
            f.parse("06/14/2026 09:00").unwrap(),
            Some(at("2026-06-14T07:00:00Z"))
        );
        assert_eq!(
            f.parse("10/14/2026").unwrap(),
            Some(at("2026-10-13T22:00:00Z"))
        );
        assert_eq!(
            f.parse("12/01/2026").unwrap(),
            Some(at("2026-11-30T23:00:00Z"))
        );
        // An explicit offset wins over the zone.
        assert_eq!(
            f.parse("2026-06-02T09:00:00Z").unwrap(),
            Some(at("2026-06-02T09:00:00Z"))
        );
        // 02:30 on the last Sunday of March does not exist in Berlin.
        assert!(f.parse("03/29/2026 02:30").unwrap_err().contains("skipped"));
        assert!(TimeFormat::new(&[], Some("Mars/Olympus")).is_err());
        assert!(TimeFormat::new(&["%Q".into()], None).is_err());
    }

    #[test]
    fn amounts_take_separators_symbols_and_codes() {
        let point = DecimalSeparator::Point;
        assert_eq!(parse_amount("12000", point).unwrap(), (None, 12000, 0));
        assert_eq!(parse_amount("4,900.00", point).unwrap(), (None, 4900, 0));
        assert_eq!(
            parse_amount("$12,000", point).unwrap(),
            (Some("USD".into()), 12000, 0)
        );
        assert_eq!(
            parse_amount("4900 usd", point).unwrap(),
            (Some("USD".into()), 4900, 0)
        );
        assert_eq!(
            parse_amount("EUR 1,234,567.5", point).unwrap(),
            (Some("EUR".into()), 1_234_567, 500_000_000)
        );
        assert_eq!(
            parse_amount("1.234,50 €", DecimalSeparator::Comma).unwrap(),
            (Some("EUR".into()), 1234, 500_000_000)
        );
        assert_eq!(
            parse_amount("12,5", point).unwrap_err(),
            "\"12,5\" is not a non-negative decimal number"
        );
        assert!(parse_amount("12,0000", point).is_err());
        assert!(parse_amount("-5", point).is_err());
        assert!(parse_amount("abc", point).is_err());
    }

    #[test]
    fn stages_resolve_by_key_or_display_name() {
        let pipeline = default_pipeline();
        let won = pipeline.resolve_stage("Closed Won").unwrap();
        assert_eq!(won.as_str(), "closed_won");
        assert_eq!(
            pipeline.resolve_stage(" closed_won ").unwrap().as_str(),
            "closed_won"
        );
        assert_eq!(
            pipeline.resolve_stage("QUALIFICATION").unwrap().as_str(),
            "qualification"
        );
        let refused = pipeline.resolve_stage("Appointment scheduled").unwrap_err();
        assert!(
            refused.starts_with("\"Appointment scheduled\" is not a stage of the pipeline; its stages are lead_generation ("),
            "{refused}"
        );
    }
}
