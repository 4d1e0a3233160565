//! Stage visits as data: what one lead's stage history adds to a pipeline's per-day aggregates,
//! and the same figures computed exactly over a window, so that the two can be combined.
//!
//! A visit begins with a stage change and ends with the lead's next one. The aggregates count,
//! per entry day (UTC), the visits by the stage that followed, by the lead's final stage, and the
//! hours each exited visit lasted in a fixed log-bucket sketch ([`bucket`]); per creation day the
//! leads by final stage; per day of the first win the cycle times (sketch) and the won amounts.
//! Everything here is a function of one lead's history, so a write that changes a lead
//! subtracts what the history added before it and adds what it adds after.
//!
//! The definitions are those of the history replay (`window_summary` in the store): a visit's
//! exit is the lead's next change, its outcome the lead's last stage, a creation a change from no
//! stage, a lead's win its first entry into a won stage, its cycle the whole hours from its first
//! creation to that win.

use std::collections::BTreeMap;

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Hours below this are buckets of one whole hour each, exactly as the replay groups them.
pub const EXACT_HOURS: i64 = 32;
/// Buckets per doubling above [`EXACT_HOURS`].
pub const BUCKETS_PER_DOUBLING: i64 = 16;

/// The sketch's bucket of a duration in whole hours. Below [`EXACT_HOURS`] a bucket is one hour;
/// above, the buckets grow geometrically, 16 per doubling, so that a bucket's upper bound is at
/// most 2^(1/16) (4.4 %) above its lower bound.
pub fn bucket(hours: i64) -> i64 {
    let hours = hours.max(0);
    if hours < EXACT_HOURS {
        return hours;
    }
    // The largest i with EXACT_HOURS · 2^(i/16) ≤ hours, in integers so that it is the same on
    // every platform: double and compare instead of taking a logarithm.
    let mut i = 0;
    while bucket_lower(EXACT_HOURS + i + 1) <= hours {
        i += 1;
    }
    EXACT_HOURS + i
}

/// The smallest whole hour in bucket `b`.
pub fn bucket_lower(b: i64) -> i64 {
    if b <= EXACT_HOURS {
        return b.max(0);
    }
    let step = b - EXACT_HOURS;
    let (doublings, rest) = (step / BUCKETS_PER_DOUBLING, step % BUCKETS_PER_DOUBLING);
    let base = (EXACT_HOURS as f64) * 2f64.powi(doublings as i32);
    (base * 2f64.powf(rest as f64 / BUCKETS_PER_DOUBLING as f64)).ceil() as i64
}

/// The duration a bucket stands for, in hours: for a one-hour bucket the middle of the hour
/// (what the replay uses), otherwise the middle of the bucket's range of hours.
pub fn bucket_value(b: i64) -> f64 {
    let (lo, hi) = (bucket_lower(b), bucket_lower(b + 1));
    (lo + hi) as f64 / 2.0
}

/// The most a bucket's value can be off, relative to a duration in it (whole hours + 0.5):
/// half a bucket's width over its lower bound, 2^(1/16) − 1 halved, rounded up.
pub const RELATIVE_ERROR: f64 = 0.025;

/// The day (UTC) of a time in microseconds.
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

/// One change of a lead's history, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Empty for the change that created the lead.
    pub from_stage: String,
    pub to_stage: String,
    pub time: i64,
}

/// A lead's history and the amount its won figures are booked at (its amount now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadVisits {
    pub changes: Vec<Change>,
    /// Empty without an amount.
    pub currency: String,
    pub units: i64,
    pub nanos: i32,
}

/// What an aggregate row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Visits by stage and the stage that followed (`other`, empty while open).
    Flow = 1,
    /// Visits by stage and the lead's final stage (`other`); `k` is the entry day of the lead's
    /// previous visit to the stage, [`NO_VISIT`] for its first, so that a window counts each
    /// lead once per stage.
    Outcome = 2,
    /// Exited visits by stage and the sketch bucket `k` of their whole hours.
    Dwell = 3,
    /// Creations by the lead's final stage (`stage`), on the creation day.
    Creation = 4,
    /// First wins by the sketch bucket `k` of the whole hours since creation, on the win's day.
    Cycle = 5,
    /// First wins by currency (`other`), with the summed amount, on the win's day.
    WonAmount = 6,
}

impl Kind {
    pub fn from_i64(n: i64) -> Option<Kind> {
        Some(match n {
            1 => Kind::Flow,
            2 => Kind::Outcome,
            3 => Kind::Dwell,
            4 => Kind::Creation,
            5 => Kind::Cycle,
            6 => Kind::WonAmount,
            _ => return None,
        })
    }
}

/// `k` of an outcome row for a lead's first visit to a stage.
pub const NO_VISIT: i64 = i64::MIN;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub day: i64,
    pub kind: Kind,
    pub stage: String,
    pub other: String,
    pub k: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub n: i64,
    pub units: i64,
    pub nanos: i64,
}

impl Count {
    fn add(&mut self, other: Count, sign: i64) {
        self.n += sign * other.n;
        self.units += sign * other.units;
        self.nanos += sign * other.nanos;
    }

    fn is_zero(&self) -> bool {
        *self == Count::default()
    }
}

pub type Aggregates = BTreeMap<Key, Count>;

fn one() -> Count {
    Count {
        n: 1,
        ..Count::default()
    }
}

/// The row of a visit to `stage` that began on `day` and ended after `micros`.
fn dwell(day: i64, stage: &str, micros: i64) -> Key {
    Key {
        day,
        kind: Kind::Dwell,
        stage: stage.to_owned(),
        other: String::new(),
        k: bucket(micros / MICROS_PER_HOUR),
    }
}

/// What the lead's history adds to the aggregates. `won` tells the won stages.
pub fn contributions(lead: &LeadVisits, won: &dyn Fn(&str) -> bool) -> Aggregates {
    let mut out = Aggregates::new();
    let mut add = |key: Key, count: Count| out.entry(key).or_default().add(count, 1);
    let changes = &lead.changes;
    let Some(last) = changes.last() else {
        return out;
    };
    let final_stage = &last.to_stage;
    let mut previous_visit: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, change) in changes.iter().enumerate() {
        let day = day_of(change.time);
        let stage = &change.to_stage;
        let next = changes.get(i + 1);
        add(
            Key {
                day,
                kind: Kind::Flow,
                stage: stage.clone(),
                other: next.map(|n| n.to_stage.clone()).unwrap_or_default(),
                k: 0,
            },
            one(),
        );
        add(
            Key {
                day,
                kind: Kind::Outcome,
                stage: stage.clone(),
                other: final_stage.clone(),
                k: previous_visit
                    .get(stage.as_str())
                    .copied()
                    .unwrap_or(NO_VISIT),
            },
            one(),
        );
        previous_visit.insert(stage, day);
        if let Some(next) = next {
            add(dwell(day, stage, next.time - change.time), one());
        }
        if change.from_stage.is_empty() {
            add(
                Key {
                    day,
                    kind: Kind::Creation,
                    stage: final_stage.clone(),
                    other: String::new(),
                    k: 0,
                },
                one(),
            );
        }
    }
    if let Some(win) = first_win(changes, won) {
        add_win(&mut out, win, created(changes), lead, 1);
    }
    out
}

/// Adds (`sign` 1) or takes away (−1) the rows of a lead's first win at `win`: its cycle time from
/// `created`, and its amount as booked on `lead`.
fn add_win(out: &mut Aggregates, win: i64, created: Option<i64>, lead: &LeadVisits, sign: i64) {
    let day = day_of(win);
    let mut add = |key: Key, count: Count| out.entry(key).or_default().add(count, sign);
    if let Some(created) = created {
        add(
            Key {
                day,
                kind: Kind::Cycle,
                stage: String::new(),
                other: String::new(),
                k: bucket((win - created) / MICROS_PER_HOUR),
            },
            one(),
        );
    }
    if !lead.currency.is_empty() {
        // The units in two rows, the high and the low 32 bits, so that the stored sums of
        // many large amounts never overflow; a window's total is summed in 128 bits.
        let key = |k| Key {
            day,
            kind: Kind::WonAmount,
            stage: String::new(),
            other: lead.currency.clone(),
            k,
        };
        add(
            key(0),
            Count {
                n: 1,
                units: lead.units >> 32,
                nanos: lead.nanos as i64,
            },
        );
        add(
            key(1),
            Count {
                n: 0,
                units: lead.units & 0xFFFF_FFFF,
                nanos: 0,
            },
        );
    }
}

/// What a new change's part in the aggregates depends on in the lead's history, so that a move
/// does not compute what the whole history adds twice: it holds a row per stage and per day the
/// lead was in it, however many changes the history has, and is built as the rows are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistorySummary {
    /// Per stage entered.
    pub stages: BTreeMap<String, StageEntries>,
    /// Day → changes from no stage (creations) on it.
    pub creations: BTreeMap<i64, i64>,
    /// The earliest creation (µs).
    pub created: Option<i64>,
    /// The stage and time (µs) of the last change in sequence order.
    pub last: Option<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEntries {
    /// (entry day, entry day of the lead's previous visit to the stage or [`NO_VISIT`]) →
    /// visits.
    pub visits: BTreeMap<(i64, i64), i64>,
    /// The earliest entry (µs): the lead's first win is the earliest of its won stages'.
    pub first: i64,
    /// The entry day of the last visit in sequence order.
    pub last_day: i64,
}

impl HistorySummary {
    pub fn of(changes: &[Change]) -> Self {
        let mut summary = Self::default();
        for change in changes {
            summary.push(&change.from_stage, &change.to_stage, change.time);
        }
        summary
    }

    /// The summary of the history with the change (`from` empty for a creation) appended.
    pub fn push(&mut self, from: &str, to: &str, time: i64) {
        let day = day_of(time);
        match self.stages.get_mut(to) {
            Some(entries) => {
                *entries.visits.entry((day, entries.last_day)).or_default() += 1;
                entries.first = entries.first.min(time);
                entries.last_day = day;
            }
            None => {
                self.stages.insert(
                    to.to_owned(),
                    StageEntries {
                        visits: BTreeMap::from([((day, NO_VISIT), 1)]),
                        first: time,
                        last_day: day,
                    },
                );
            }
        }
        if from.is_empty() {
            *self.creations.entry(day).or_default() += 1;
            self.created = Some(self.created.map_or(time, |c| c.min(time)));
        }
        match &mut self.last {
            Some((stage, at)) if stage == to => *at = time,
            _ => self.last = Some((to.to_owned(), time)),
        }
    }

    fn first_win(&self, won: &dyn Fn(&str) -> bool) -> Option<i64> {
        self.stages
            .iter()
            .filter(|(stage, _)| won(stage))
            .map(|(_, e)| e.first)
            .min()
    }

    /// The rows of [`contributions`] that depend on the lead's final stage or its first win.
    fn final_rows(&self, lead: &LeadVisits, won: &dyn Fn(&str) -> bool) -> Aggregates {
        let mut out = Aggregates::new();
        let Some((final_stage, _)) = &self.last else {
            return out;
        };
        for (stage, entries) in &self.stages {
            for (&(day, k), &n) in &entries.visits {
                let key = Key {
                    day,
                    kind: Kind::Outcome,
                    stage: stage.clone(),
                    other: final_stage.clone(),
                    k,
                };
                out.entry(key).or_default().n += n;
            }
        }
        for (&day, &n) in &self.creations {
            let key = Key {
                day,
                kind: Kind::Creation,
                stage: final_stage.clone(),
                other: String::new(),
                k: 0,
            };
            out.entry(key).or_default().n += n;
        }
        if let Some(win) = self.first_win(won) {
            add_win(&mut out, win, self.created, lead, 1);
        }
        out
    }
}

/// What appending `next` to the history `before` summarises changes in the aggregates:
/// `difference(contributions(before), contributions(before + next))`, computed from the summary
/// alone. `lead` gives the amount a win is booked at.
pub fn appended(
    before: &HistorySummary,
    lead: &LeadVisits,
    next: &Change,
    won: &dyn Fn(&str) -> bool,
) -> Aggregates {
    let mut out = Aggregates::new();
    let mut add = |key: Key, sign: i64| out.entry(key).or_default().add(one(), sign);
    let flow = |day, stage: &str, other: &str| Key {
        day,
        kind: Kind::Flow,
        stage: stage.to_owned(),
        other: other.to_owned(),
        k: 0,
    };
    if let Some((stage, time)) = &before.last {
        let day = day_of(*time);
        add(flow(day, stage, ""), -1);
        add(flow(day, stage, &next.to_stage), 1);
        add(dwell(day, stage, next.time - time), 1);
    }
    add(flow(day_of(next.time), &next.to_stage, ""), 1);
    let mut after = before.clone();
    after.push(&next.from_stage, &next.to_stage, next.time);
    for (key, count) in before.final_rows(lead, won) {
        out.entry(key).or_default().add(count, -1);
    }
    for (key, count) in after.final_rows(lead, won) {
        out.entry(key).or_default().add(count, 1);
    }
    out.retain(|_, c| !c.is_zero());
    out
}

/// What booking a lead's win at another amount changes in the aggregates:
/// `difference(contributions(before), contributions(after))` for `before` and `after` with the
/// history `summary` summarises and their own amounts, from the summary alone.
pub fn rebooked(
    summary: &HistorySummary,
    before: &LeadVisits,
    after: &LeadVisits,
    won: &dyn Fn(&str) -> bool,
) -> Aggregates {
    difference(
        &summary.final_rows(before, won),
        &summary.final_rows(after, won),
    )
}

fn created(changes: &[Change]) -> Option<i64> {
    changes
        .iter()
        .filter(|c| c.from_stage.is_empty())
        .map(|c| c.time)
        .min()
}

fn first_win(changes: &[Change], won: &dyn Fn(&str) -> bool) -> Option<i64> {
    changes
        .iter()
        .filter(|c| won(&c.to_stage))
        .map(|c| c.time)
        .min()
}

/// after − before, without the rows that do not change.
pub fn difference(before: &Aggregates, after: &Aggregates) -> Aggregates {
    let mut out = after.clone();
    for (key, count) in before {
        out.entry(key.clone()).or_default().add(*count, -1);
    }
    out.retain(|_, c| !c.is_zero());
    out
}

/// The window figures GetPipelineMetrics needs, over visits that began in [start, end), with
/// times in sketch buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// (stage, next stage or empty) → visits.
    pub flows: BTreeMap<(String, String), i64>,
    /// (stage, final stage) → leads.
    pub outcomes: BTreeMap<(String, String), i64>,
    /// (stage, bucket) → exited visits.
    pub exits: BTreeMap<(String, i64), i64>,
    /// final stage → leads created.
    pub creations: BTreeMap<String, i64>,
    /// bucket → leads first won.
    pub cycles: BTreeMap<i64, i64>,
    /// currency → (units, nanos, leads first won).
    pub won_amounts: BTreeMap<String, (i128, i64, i64)>,
}

impl WindowCounts {
    /// Adds the aggregate rows of whole days [first_day, end_day) the way a window starting on
    /// `first_day` reads them: an outcome row counts only when the lead's previous visit to the
    /// stage was before that day.
    pub fn add_row(&mut self, key: &Key, count: Count, first_day: i64, sign: i64) {
        let n = sign * count.n;
        match key.kind {
            Kind::Flow => {
                *self
                    .flows
                    .entry((key.stage.clone(), key.other.clone()))
                    .or_default() += n
            }
            Kind::Outcome => {
                if key.k < first_day {
                    *self
                        .outcomes
                        .entry((key.stage.clone(), key.other.clone()))
                        .or_default() += n
                }
            }
            Kind::Dwell => *self.exits.entry((key.stage.clone(), key.k)).or_default() += n,
            Kind::Creation => *self.creations.entry(key.stage.clone()).or_default() += n,
            Kind::Cycle => *self.cycles.entry(key.k).or_default() += n,
            Kind::WonAmount => {
                let e = self.won_amounts.entry(key.other.clone()).or_default();
                let units = if key.k == 0 {
                    (count.units as i128) << 32
                } else {
                    count.units as i128
                };
                e.0 += sign as i128 * units;
                e.1 += sign * count.nanos;
                e.2 += n;
            }
        }
    }

    /// Adds what one lead's aggregate rows of days [first_day, end_day) give, with `sign`.
    pub fn add_days(&mut self, rows: &Aggregates, (first_day, end_day): (i64, i64), sign: i64) {
        for (key, count) in rows {
            if key.day >= first_day && key.day < end_day {
                self.add_row(key, *count, first_day, sign);
            }
        }
    }

    /// Adds one lead's figures over [start, end) exactly as the history replay counts them.
    pub fn add_exact(
        &mut self,
        lead: &LeadVisits,
        won: &dyn Fn(&str) -> bool,
        start: i64,
        end: i64,
    ) {
        let changes = &lead.changes;
        let Some(last) = changes.last() else {
            return;
        };
        let inside = |t: i64| t >= start && t < end;
        let mut seen: Vec<&str> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            if !inside(change.time) {
                continue;
            }
            let stage = &change.to_stage;
            let next = changes.get(i + 1);
            *self
                .flows
                .entry((
                    stage.clone(),
                    next.map(|n| n.to_stage.clone()).unwrap_or_default(),
                ))
                .or_default() += 1;
            if !seen.contains(&stage.as_str()) {
                seen.push(stage);
                *self
                    .outcomes
                    .entry((stage.clone(), last.to_stage.clone()))
                    .or_default() += 1;
            }
            if let Some(next) = next {
                let b = bucket((next.time - change.time) / MICROS_PER_HOUR);
                *self.exits.entry((stage.clone(), b)).or_default() += 1;
            }
            if change.from_stage.is_empty() {
                *self.creations.entry(last.to_stage.clone()).or_default() += 1;
            }
        }
        if let Some(win) = first_win(changes, won).filter(|&w| inside(w)) {
            if let Some(created) = created(changes) {
                *self
                    .cycles
                    .entry(bucket((win - created) / MICROS_PER_HOUR))
                    .or_default() += 1;
            }
            if !lead.currency.is_empty() {
                let e = self.won_amounts.entry(lead.currency.clone()).or_default();
                e.0 += lead.units as i128;
                e.1 += lead.nanos as i64;
                e.2 += 1;
            }
        }
    }
}

/// How a window [start, end) splits into whole days read from the aggregates and the leads
/// whose exact figures replace what those days attribute to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSplit {
    /// Whole days [first, end) read from the aggregates; empty when first ≥ end.
    pub days: (i64, i64),
    /// Leads with a change in these time ranges [a, b) are computed exactly from their history.
    pub exact_ranges: [(i64, i64); 2],
}

impl WindowSplit {
    /// A lead with no change in either exact range gets from the days exactly what the replay
    /// counts for it: its visits in the window all began on those days, and its previous visit
    /// to a stage is before the window exactly when it is before the first of them.
    pub fn of(start: i64, end: i64) -> Self {
        let first =
            start.div_euclid(MICROS_PER_DAY) + i64::from(start.rem_euclid(MICROS_PER_DAY) != 0);
        let last = end.div_euclid(MICROS_PER_DAY);
        if first >= last {
            return WindowSplit {
                days: (first, first),
                exact_ranges: [(start, end), (end, end)],
            };
        }
        WindowSplit {
            days: (first, last),
            exact_ranges: [
                (
                    start.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY,
                    first * MICROS_PER_DAY,
                ),
                (last * MICROS_PER_DAY, end),
            ],
        }
    }

    /// The split with the window's last, partial day read whole from the aggregates, and the
    /// rest of that day [end, midnight), which must hold no change for the two to agree. A day's
    /// aggregates attribute to each lead what its history up to now gives it; with no change
    /// after `end` on that day, that is what the replay counts for the window. None when the
    /// window ends at midnight or within its first day.
    pub fn last_day_whole(&self) -> Option<(WindowSplit, (i64, i64))> {
        let (first, last) = self.days;
        let (from, end) = self.exact_ranges[1];
        if first >= last || from >= end {
            return None;
        }
        let midnight = (last + 1) * MICROS_PER_DAY;
        let whole = WindowSplit {
            days: (first, last + 1),
            exact_ranges: [self.exact_ranges[0], (end, end)],
        };
        Some((whole, (end, midnight)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_last_partial_day_is_read_whole_only_with_the_rest_of_it_checked() {
        let day = MICROS_PER_DAY;
        let split = WindowSplit::of(3 * day + 5, 10 * day + 7);
        let (whole, rest) = split.last_day_whole().unwrap();
        assert_eq!(whole.days, (4, 11));
        assert_eq!(
            whole.exact_ranges,
            [(3 * day, 4 * day), (10 * day + 7, 10 * day + 7)]
        );
        assert_eq!(rest, (10 * day + 7, 11 * day));
        assert_eq!(WindowSplit::of(3 * day, 10 * day).last_day_whole(), None);
        assert_eq!(
            WindowSplit::of(3 * day + 5, 3 * day + 9).last_day_whole(),
            None
        );
    }

    #[test]
    fn buckets_are_exact_hours_then_geometric() {
        for h in 0..EXACT_HOURS {
            assert_eq!(bucket(h), h);
            assert_eq!(bucket_value(h), h as f64 + 0.5);
        }
        assert_eq!(bucket(EXACT_HOURS), EXACT_HOURS);
        assert_eq!(
            bucket_lower(EXACT_HOURS + BUCKETS_PER_DOUBLING),
            2 * EXACT_HOURS
        );
        let mut previous = -1;
        for h in 0..200_000 {
            let b = bucket(h);
            assert!(b >= previous, "monotone");
            assert!(
                bucket_lower(b) <= h && h < bucket_lower(b + 1),
                "{h} in {b}"
            );
            previous = b;
        }
    }

    #[test]
    fn a_bucket_value_is_within_the_bound_of_every_duration_in_it() {
        for h in 0..200_000i64 {
            let exact = h as f64 + 0.5;
            let value = bucket_value(bucket(h));
            assert!(
                (value - exact).abs() <= RELATIVE_ERROR * exact,
                "{h}: {value} vs {exact}"
            );
        }
    }

    fn history() -> impl Strategy<Value = LeadVisits> {
        let stages = prop::sample::select(vec!["a", "b", "c", "won", "lost"]);
        (
            prop::collection::vec((stages, 0i64..(5 * MICROS_PER_DAY)), 1..7),
            0i64..(30 * MICROS_PER_DAY),
            prop::bool::ANY,
        )
            .prop_map(|(steps, start, amount)| {
                let mut time = start;
                let mut from = String::new();
                let mut changes = Vec::new();
                for (stage, gap) in steps {
                    time += gap;
                    changes.push(Change {
                        from_stage: from.clone(),
                        to_stage: stage.to_owned(),
                        time,
                    });
                    from = stage.to_owned();
                }
                LeadVisits {
                    changes,
                    currency: if amount { "EUR".into() } else { String::new() },
                    units: 100,
                    nanos: 5,
                }
            })
    }

    proptest! {
        /// A change appended to a history changes the aggregates by what the history's summary
        /// alone gives, with or without a win, a creation or out-of-order times.
        #[test]
        fn a_change_appended_changes_the_aggregates_by_what_the_summary_gives(
            lead in history(),
            prefix in 0usize..8,
            next_stage in prop::sample::select(vec!["a", "b", "c", "won", "lost"]),
            from_nothing in prop::bool::weighted(0.1),
            offset in -(2 * MICROS_PER_DAY)..(40 * MICROS_PER_DAY),
        ) {
            let won = |s: &str| s == "won" || s == "c";
            let mut before = lead.clone();
            before.changes.truncate(prefix.min(lead.changes.len()));
            let last = before.changes.last().map_or(0, |c| c.time);
            let next = Change {
                from_stage: match (from_nothing, before.changes.last()) {
                    (false, Some(c)) => c.to_stage.clone(),
                    _ => String::new(),
                },
                to_stage: next_stage.to_owned(),
                time: last + offset,
            };
            let mut after = before.clone();
            after.changes.push(next.clone());
            let summary = HistorySummary::of(&before.changes);
            prop_assert_eq!(
                appended(&summary, &before, &next, &won),
                difference(&contributions(&before, &won), &contributions(&after, &won))
            );
            let mut pushed = summary.clone();
            pushed.push(&next.from_stage, &next.to_stage, next.time);
            prop_assert_eq!(pushed, HistorySummary::of(&after.changes));
        }
    }

    proptest! {
        /// A new amount changes the aggregates by what the history's summary alone gives.
        #[test]
        fn a_new_amount_changes_the_aggregates_by_what_the_summary_gives(
            lead in history(),
            units in -(1i64 << 40)..(1i64 << 40),
            nanos in 0i32..1_000_000_000,
            currency in prop::sample::select(vec!["", "EUR", "USD"]),
        ) {
            let won = |s: &str| s == "won";
            let after = LeadVisits {
                currency: currency.to_owned(),
                units,
                nanos,
                ..lead.clone()
            };
            prop_assert_eq!(
                rebooked(&HistorySummary::of(&lead.changes), &lead, &after, &won),
                difference(&contributions(&lead, &won), &contributions(&after, &won))
            );
        }
    }

    proptest! {
        /// Whole days from the aggregates plus the exact figures of the leads in the exact
        /// ranges, less what the days attribute to those leads, give the exact figures.
        #[test]
        fn split_windows_add_up_to_the_exact_figures(
            leads in prop::collection::vec(history(), 1..12),
            start in 0i64..(40 * MICROS_PER_DAY),
            length in 1i64..(20 * MICROS_PER_DAY),
        ) {
            let won = |s: &str| s == "won";
            let end = start + length;
            let mut exact = WindowCounts::default();
            for lead in &leads {
                exact.add_exact(lead, &won, start, end);
            }
            let split = WindowSplit::of(start, end);
            let mut combined = WindowCounts::default();
            let mut all = Aggregates::new();
            for lead in &leads {
                for (k, c) in contributions(lead, &won) {
                    all.entry(k).or_default().add(c, 1);
                }
            }
            combined.add_days(&all, split.days, 1);
            for lead in &leads {
                let touched = lead.changes.iter().any(|c| {
                    split.exact_ranges.iter().any(|&(a, b)| c.time >= a && c.time < b)
                });
                if touched {
                    combined.add_days(&contributions(lead, &won), split.days, -1);
                    combined.add_exact(lead, &won, start, end);
                }
            }
            combined.flows.retain(|_, n| *n != 0);
            combined.outcomes.retain(|_, n| *n != 0);
            combined.exits.retain(|_, n| *n != 0);
            combined.creations.retain(|_, n| *n != 0);
            combined.cycles.retain(|_, n| *n != 0);
            combined.won_amounts.retain(|_, v| *v != (0, 0, 0));
            prop_assert_eq!(combined, exact);
        }

        #[test]
        fn difference_then_add_gives_the_new_contribution(
            a in history(), b in history()
        ) {
            let won = |s: &str| s == "won";
            let (ca, cb) = (contributions(&a, &won), contributions(&b, &won));
            let mut sum = ca.clone();
            for (k, c) in difference(&ca, &cb) {
                sum.entry(k).or_default().add(c, 1);
            }
            sum.retain(|_, c| !c.is_zero());
            prop_assert_eq!(sum, cb);
        }
    }
}
