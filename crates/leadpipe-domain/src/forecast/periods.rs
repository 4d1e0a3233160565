//! Calendar periods (weeks, months, quarters) in UTC.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    Week,
    Month,
    Quarter,
}

/// A half-open interval `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl PeriodRange {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

impl PeriodKind {
    fn first_day(self, day: NaiveDate) -> NaiveDate {
        match self {
            PeriodKind::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            PeriodKind::Month => day.with_day(1).expect("day 1 exists in every month"),
            PeriodKind::Quarter => {
                let month = (day.month0() / 3) * 3 + 1;
                NaiveDate::from_ymd_opt(day.year(), month, 1).expect("a quarter's first day")
            }
        }
    }

    fn next(self, first_day: NaiveDate) -> NaiveDate {
        // Month arithmetic from the 1st never clamps, so no day is ever skipped.
        match self {
            PeriodKind::Week => first_day + Days::new(7),
            PeriodKind::Month => first_day + Months::new(1),
            PeriodKind::Quarter => first_day + Months::new(3),
        }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// `count` consecutive calendar periods; the first is the one containing `containing`.
pub fn periods(kind: PeriodKind, containing: DateTime<Utc>, count: usize) -> Vec<PeriodRange> {
    let mut day = kind.first_day(containing.date_naive());
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let next = kind.next(day);
        out.push(PeriodRange {
            start: midnight(day),
            end: midnight(next),
        });
        day = next;
    }
    out
}

/// The index of the period containing `t`, for contiguous periods sorted by start.
pub fn period_index(periods: &[PeriodRange], t: DateTime<Utc>) -> Option<usize> {
    let after = periods.partition_point(|p| p.start <= t);
    let i = after.checked_sub(1)?;
    periods[i].contains(t).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2024-01-07 is a Sunday: its week began on Monday 2024-01-01.
        let p = periods(PeriodKind::Week, at(2024, 1, 7, 23), 2);
        assert_eq!(p[0].start, at(2024, 1, 1, 0));
        assert_eq!(p[0].end, at(2024, 1, 8, 0));
        assert_eq!(p[1].start, at(2024, 1, 8, 0));
        // A Monday at midnight starts its own week.
        let p = periods(PeriodKind::Week, at(2024, 1, 8, 0), 1);
        assert_eq!(p[0].start, at(2024, 1, 8, 0));
        // Weeks cross year boundaries.
        let p = periods(PeriodKind::Week, at(2024, 12, 31, 12), 1);
        assert_eq!(p[0].start, at(2024, 12, 30, 0));
        assert_eq!(p[0].end, at(2025, 1, 6, 0));
    }

    #[test]
    fn months_handle_leap_years_and_year_ends() {
        let p = periods(PeriodKind::Month, at(2024, 1, 31, 10), 3);
        assert_eq!(p[0].start, at(2024, 1, 1, 0));
        assert_eq!(p[1].start, at(2024, 2, 1, 0));
        assert_eq!(p[1].end, at(2024, 3, 1, 0));
        assert_eq!(p[1].end - p[1].start, chrono::Duration::days(29));
        let p = periods(PeriodKind::Month, at(2023, 2, 28, 10), 1);
        assert_eq!(p[0].end - p[0].start, chrono::Duration::days(28));
        let p = periods(PeriodKind::Month, at(2024, 12, 15, 0), 2);
        assert_eq!(p[1].start, at(2025, 1, 1, 0));
        assert_eq!(p[1].end, at(2025, 2, 1, 0));
    }

    #[test]
    fn quarters_are_calendar_quarters() {
        let p = periods(PeriodKind::Quarter, at(2024, 2, 29, 12), 5);
        let starts: Vec<_> = p.iter().map(|r| r.start).collect();
        assert_eq!(
            starts,
            vec![
                at(2024, 1, 1, 0),
                at(2024, 4, 1, 0),
                at(2024, 7, 1, 0),
                at(2024, 10, 1, 0),
                at(2025, 1, 1, 0)
            ]
        );
        assert_eq!(p[0].end - p[0].start, chrono::Duration::days(91));
        assert_eq!(p[4].end, at(2025, 4, 1, 0));
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn index_respects_half_open_bounds() {
        let p = periods(PeriodKind::Month, at(2024, 1, 15, 0), 3);
        assert_eq!(period_index(&p, at(2024, 1, 1, 0)), Some(0));
        assert_eq!(period_index(&p, at(2024, 2, 1, 0)), Some(1));
        assert_eq!(period_index(&p, at(2024, 3, 31, 23)), Some(2));
        assert_eq!(period_index(&p, at(2024, 4, 1, 0)), None);
        assert_eq!(period_index(&p, at(2023, 12, 31, 23)), None);
        assert_eq!(period_index(&[], at(2024, 1, 1, 0)), None);
        assert!(periods(PeriodKind::Week, at(2024, 1, 1, 0), 0).is_empty());
    }
}
