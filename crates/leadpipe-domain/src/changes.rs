//! What changed in a pipeline between two times: each lead's state at the start and at the end
//! of the window sorted into buckets whose amounts reconcile exactly.
//!
//! A lead is *selected* at an instant when it exists (it was created by then and is not
//! deleted) and its amount is in the selected currency or it has no amount (which counts as
//! zero), and, with an owner filter, its owner is that owner. It is *open* when it is selected
//! and its stage is an open stage of the pipeline. The open pipeline at a time is the count and
//! summed amount of the leads open then.
//!
//! Each lead is classified from its state at `start` (S), its state at `end` (E), and whether
//! it was open at any recorded change inside the window (start, end]:
//!
//! | S open | E open | buckets (amount)                                                       |
//! |--------|--------|------------------------------------------------------------------------|
//! | yes    | yes    | INCREASED or DECREASED (E − S); PUSHED / PULLED_IN, MOVED_FORWARD / MOVED_BACKWARD (E) |
//! | yes    | won or lost and selected | INCREASED or DECREASED (E − S), then WON or LOST (E)  |
//! | yes    | otherwise (deleted, another currency or owner) | REMOVED (S)                    |
//! | no     | yes    | NEW (E) if it did not exist at S, REOPENED (E) if it was selected and closed at S, ADDED (E) otherwise |
//! | no     | won or lost and selected, open inside the window | NEW, REOPENED or ADDED (E), and WON or LOST (E) |
//! | no     | otherwise | nothing                                                             |
//!
//! So a lead created, increased and won inside the window is in NEW and in WON, both with the
//! amount it has at the end, and in neither INCREASED nor DECREASED: it adds nothing to the end,
//! and the rise before it was won is part of the amount it was created and won with. Every lead
//! therefore adds exactly (its open amount at E) − (its open amount at S) to the buckets, and
//!
//! ```text
//! start + NEW + REOPENED + ADDED + INCREASED − DECREASED − WON − LOST − REMOVED = end
//! ```
//!
//! holds exactly, in nanos, for the amounts and for the counts alike (INCREASED and DECREASED
//! count no leads in the count identity, as they move no lead in or out).
//! PUSHED, PULLED_IN, MOVED_FORWARD and MOVED_BACKWARD describe leads open at both ends and are
//! outside the identity; their amount is the leads' amount at the end.

use serde::{Deserialize, Serialize};

use crate::pipeline::StageKind;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Where a lead's change falls. The order is the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bucket {
    New,
    Reopened,
    Added,
    Won,
    Lost,
    Removed,
    Increased,
    Decreased,
    Pushed,
    PulledIn,
    MovedForward,
    MovedBackward,
}

impl Bucket {
    pub const ALL: [Bucket; 12] = [
        Bucket::New,
        Bucket::Reopened,
        Bucket::Added,
        Bucket::Won,
        Bucket::Lost,
        Bucket::Removed,
        Bucket::Increased,
        Bucket::Decreased,
        Bucket::Pushed,
        Bucket::PulledIn,
        Bucket::MovedForward,
        Bucket::MovedBackward,
    ];

    /// +1 if the bucket adds to the open pipeline, −1 if it takes from it, 0 if it is outside
    /// the identity.
    pub fn sign(self) -> i128 {
        match self {
            Bucket::New | Bucket::Reopened | Bucket::Added | Bucket::Increased => 1,
            Bucket::Won | Bucket::Lost | Bucket::Removed | Bucket::Decreased => -1,
            Bucket::Pushed | Bucket::PulledIn | Bucket::MovedForward | Bucket::MovedBackward => 0,
        }
    }

    /// Whether the bucket's count moves leads into or out of the open pipeline.
    pub fn moves_leads(self) -> bool {
        self.sign() != 0 && !matches!(self, Bucket::Increased | Bucket::Decreased)
    }

    fn index(self) -> usize {
        Bucket::ALL
            .iter()
            .position(|b| *b == self)
            .unwrap_or_default()
    }
}

/// An amount in nanos of the selected currency; never rounded.
pub type Nanos = i128;

pub fn to_nanos(units: i64, nanos: i32) -> Nanos {
    i128::from(units) * NANOS_PER_UNIT + i128::from(nanos)
}

/// `(units, nanos)` of a non-negative amount as google.type.Money has them, or None when the
/// units do not fit an i64.
pub fn money_parts(amount: Nanos) -> Option<(i64, i32)> {
    let units = i64::try_from(amount.div_euclid(NANOS_PER_UNIT)).ok()?;
    Some((units, amount.rem_euclid(NANOS_PER_UNIT) as i32))
}

/// A lead at one instant, as the report reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stage's position in the pipeline's order, and its kind; None for a stage the
    /// pipeline no longer has, which is neither open nor closed.
    pub stage: Option<(usize, StageKind)>,
    /// The currency code, empty without an amount.
    pub currency: String,
    pub amount: Nanos,
    pub owner: String,
    /// µs since the epoch.
    pub expected_close_time: Option<i64>,
    pub deleted: bool,
}

/// What the report is about: one currency, optionally one owner.
#[derive(Debug, Clone)]
pub struct Selection {
    pub currency: String,
    pub owner: Option<String>,
}

impl Selection {
    pub fn selects(&self, s: &Snapshot) -> bool {
        !s.deleted
            && (s.currency.is_empty() || s.currency == self.currency)
            && self.owner.as_ref().is_none_or(|o| *o == s.owner)
    }

    pub fn is_open(&self, s: &Snapshot) -> bool {
        self.selects(s) && matches!(s.stage, Some((_, StageKind::Open)))
    }

    fn closed_kind(&self, s: &Snapshot) -> Option<StageKind> {
        match s.stage {
            Some((_, kind)) if kind.is_closed() && self.selects(s) => Some(kind),
            _ => None,
        }
    }
}

/// One lead's states around the window.
#[derive(Debug, Clone)]
pub struct LeadWindow {
    /// At `start`; None if the lead did not exist yet.
    pub start: Option<Snapshot>,
    /// At `end`.
    pub end: Snapshot,
    /// Whether any change recorded inside (start, end] left the lead open.
    pub open_inside: bool,
}

/// The buckets of one lead, each with the lead's (non-negative) amount in it.
pub fn classify(selection: &Selection, lead: &LeadWindow) -> Vec<(Bucket, Nanos)> {
    let start = lead.start.as_ref().filter(|s| selection.is_open(s));
    let end = &lead.end;
    let end_open = selection.is_open(end);
    let mut out = Vec::new();
    let change = |out: &mut Vec<(Bucket, Nanos)>, from: Nanos, to: Nanos| {
        if to > from {
            out.push((Bucket::Increased, to - from));
        } else if to < from {
            out.push((Bucket::Decreased, from - to));
        }
    };
    match (start, end_open) {
        (Some(s), true) => {
            change(&mut out, s.amount, end.amount);
            if let (Some(a), Some(b)) = (s.expected_close_time, end.expected_close_time) {
                if b > a {
                    out.push((Bucket::Pushed, end.amount));
                } else if b < a {
                    out.push((Bucket::PulledIn, end.amount));
                }
            }
            if let (Some((a, _)), Some((b, _))) = (s.stage, end.stage) {
                if b > a {
                    out.push((Bucket::MovedForward, end.amount));
                } else if b < a {
                    out.push((Bucket::MovedBackward, end.amount));
                }
            }
        }
        (Some(s), false) => match selection.closed_kind(end) {
            Some(kind) => {
                change(&mut out, s.amount, end.amount);
                out.push((closing(kind), end.amount));
            }
            None => out.push((Bucket::Removed, s.amount)),
        },
        (None, true) => out.push((entry(selection, lead.start.as_ref()), end.amount)),
        (None, false) => {
            if let Some(kind) = selection.closed_kind(end).filter(|_| lead.open_inside) {
                out.push((entry(selection, lead.start.as_ref()), end.amount));
                out.push((closing(kind), end.amount));
            }
        }
    }
    out
}

fn closing(kind: StageKind) -> Bucket {
    if kind == StageKind::Won {
        Bucket::Won
    } else {
        Bucket::Lost
    }
}

/// How a lead not open at the start came to be open.
fn entry(selection: &Selection, start: Option<&Snapshot>) -> Bucket {
    match start {
        None => Bucket::New,
        Some(s) if selection.closed_kind(s).is_some() => Bucket::Reopened,
        Some(_) => Bucket::Added,
    }
}

/// A count of leads and their summed amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: i64,
    pub amount: Nanos,
}

impl Tally {
    pub fn add(&mut self, amount: Nanos) {
        self.count += 1;
        self.amount += amount;
    }
}

/// The whole report: the open pipeline at both ends and every bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub start: Tally,
    pub end: Tally,
    buckets: [Tally; 12],
}

impl Changes {
    pub fn new(start: Tally, end: Tally) -> Self {
        Self {
            start,
            end,
            buckets: [Tally::default(); 12],
        }
    }

    pub fn add(&mut self, classified: &[(Bucket, Nanos)]) {
        for (bucket, amount) in classified {
            self.buckets[bucket.index()].add(*amount);
        }
    }

    pub fn bucket(&self, bucket: Bucket) -> Tally {
        self.buckets[bucket.index()]
    }

    /// The open pipeline at the end as the buckets account for it: start plus the signed
    /// buckets. Equal to `end` when the states were read consistently.
    pub fn reconciled_end(&self) -> Tally {
        let mut out = self.start;
        for bucket in Bucket::ALL {
            let tally = self.bucket(bucket);
            let sign = bucket.sign();
            out.amount += sign * tally.amount;
            if bucket.moves_leads() {
                out.count += sign as i64 * tally.count;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OPEN_STAGES: usize = 3;

    fn open(stage: usize, units: i64) -> Snapshot {
        Snapshot {
            stage: Some((stage, StageKind::Open)),
            currency: "EUR".into(),
            amount: to_nanos(units, 0),
            owner: "ana".into(),
            expected_close_time: None,
            deleted: false,
        }
    }

    fn closed(kind: StageKind, units: i64) -> Snapshot {
        Snapshot {
            stage: Some((OPEN_STAGES, kind)),
            ..open(0, units)
        }
    }

    fn eur() -> Selection {
        Selection {
            currency: "EUR".into(),
            owner: None,
        }
    }

    fn window(start: Option<Snapshot>, end: Snapshot, open_inside: bool) -> LeadWindow {
        LeadWindow {
            start,
            end,
            open_inside,
        }
    }

    fn units(n: i64) -> Nanos {
        to_nanos(n, 0)
    }

    #[test]
    fn created_increased_and_won_inside_the_window_adds_nothing() {
        let lead = window(None, closed(StageKind::Won, 150), true);
        assert_eq!(
            classify(&eur(), &lead),
            vec![(Bucket::New, units(150)), (Bucket::Won, units(150))]
        );
    }

    #[test]
    fn a_lead_won_from_the_start_is_changed_then_won() {
        let lead = window(Some(open(1, 100)), closed(StageKind::Won, 10), true);
        assert_eq!(
            classify(&eur(), &lead),
            vec![(Bucket::Decreased, units(90)), (Bucket::Won, units(10))]
        );
    }

    #[test]
    fn reopened_added_and_removed() {
        let lost_then = Some(closed(StageKind::Lost, 5));
        assert_eq!(
            classify(&eur(), &window(lost_then.clone(), open(0, 7), true)),
            vec![(Bucket::Reopened, units(7))]
        );
        // Reopened and lost again inside the window.
        assert_eq!(
            classify(&eur(), &window(lost_then, closed(StageKind::Lost, 7), true)),
            vec![(Bucket::Reopened, units(7)), (Bucket::Lost, units(7))]
        );
        let mut dollars = open(0, 3);
        dollars.currency = "USD".into();
        assert_eq!(
            classify(&eur(), &window(Some(dollars.clone()), open(0, 4), true)),
            vec![(Bucket::Added, units(4))]
        );
        assert_eq!(
            classify(&eur(), &window(Some(open(0, 4)), dollars, false)),
            vec![(Bucket::Removed, units(4))]
        );
        let mut gone = open(0, 4);
        gone.deleted = true;
        assert_eq!(
            classify(&eur(), &window(Some(open(0, 4)), gone, false)),
            vec![(Bucket::Removed, units(4))]
        );
    }

    #[test]
    fn open_leads_report_pushes_and_moves_at_their_end_amount() {
        let mut before = open(0, 10);
        before.expected_close_time = Some(100);
        let mut after = open(2, 10);
        after.expected_close_time = Some(200);
        assert_eq!(
            classify(&eur(), &window(Some(before.clone()), after.clone(), true)),
            vec![
                (Bucket::Pushed, units(10)),
                (Bucket::MovedForward, units(10))
            ]
        );
        assert_eq!(
            classify(&eur(), &window(Some(after), before, true)),
            vec![
                (Bucket::PulledIn, units(10)),
                (Bucket::MovedBackward, units(10))
            ]
        );
    }

    #[test]
    fn an_owner_filter_moves_leads_in_and_out() {
        let selection = Selection {
            currency: "EUR".into(),
            owner: Some("ana".into()),
        };
        let mut bo = open(0, 9);
        bo.owner = "bo".into();
        assert_eq!(
            classify(&selection, &window(Some(open(0, 9)), bo.clone(), true)),
            vec![(Bucket::Removed, units(9))]
        );
        assert_eq!(
            classify(&selection, &window(Some(bo), open(0, 9), true)),
            vec![(Bucket::Added, units(9))]
        );
    }

    #[test]
    fn amounts_split_into_money_parts_or_refuse() {
        assert_eq!(money_parts(to_nanos(12, 5)), Some((12, 5)));
        assert_eq!(money_parts(to_nanos(i64::MAX, 0) + NANOS_PER_UNIT), None);
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        (
            0..OPEN_STAGES + 3,
            prop_oneof![Just(""), Just("EUR"), Just("USD")],
            0i64..1_000,
            0i32..3,
            prop_oneof![Just("ana"), Just("bo")],
            proptest::option::of(0i64..5),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(stage, currency, units, nanos, owner, close, deleted)| {
                let stage = match stage {
                    s if s < OPEN_STAGES => Some((s, StageKind::Open)),
                    s if s == OPEN_STAGES => Some((s, StageKind::Won)),
                    s if s == OPEN_STAGES + 1 => Some((s, StageKind::Lost)),
                    _ => None,
                };
                Snapshot {
                    stage,
                    amount: if currency.is_empty() {
                        0
                    } else {
                        to_nanos(units, nanos)
                    },
                    currency: currency.into(),
                    owner: owner.into(),
                    expected_close_time: close,
                    deleted,
                }
            })
    }

    proptest! {
        /// Every lead adds exactly its open amount at the end minus its open amount at the
        /// start, whatever happened in between.
        #[test]
        fn buckets_reconcile_start_and_end(
            leads in proptest::collection::vec(
                (proptest::option::of(snapshot()), snapshot(), any::<bool>()), 0..40),
            owner in proptest::option::of(prop_oneof![Just("ana".to_string()), Just("bo".to_string())]),
        ) {
            let selection = Selection { currency: "EUR".into(), owner };
            let mut start = Tally::default();
            let mut end = Tally::default();
            let mut windows = Vec::new();
            for (s, e, inside) in leads {
                if let Some(s) = s.as_ref().filter(|s| selection.is_open(s)) {
                    start.add(s.amount);
                }
                if selection.is_open(&e) {
                    end.add(e.amount);
                }
                // A lead open at the end was open at its last change inside the window.
                let open_inside = inside || selection.is_open(&e);
                windows.push(window(s, e, open_inside));
            }
            let mut changes = Changes::new(start, end);
            for lead in &windows {
                let classified = classify(&selection, lead);
                prop_assert!(classified.iter().all(|(_, amount)| *amount >= 0));
                changes.add(&classified);
            }
            prop_assert_eq!(changes.reconciled_end(), end);
        }
    }
}
