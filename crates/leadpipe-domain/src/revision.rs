//! Lead revisions: the lead as it was after each write, with what the write changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::StageKey;
use super::lead::Lead;
use super::money::Money;

/// What kind of write made a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionKind {
    Created,
    Updated,
    Moved,
    Deleted,
}

impl RevisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Moved => "moved",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "created" => Self::Created,
            "updated" => Self::Updated,
            "moved" => Self::Moved,
            "deleted" => Self::Deleted,
            other => return Err(format!("unknown revision kind {other:?}")),
        })
    }
}

/// One revision of a lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadRevision {
    /// 1, 2, 3… per lead.
    pub revision: i64,
    pub kind: RevisionKind,
    /// The lead after the change; for a deletion, its last state.
    pub lead: Lead,
    /// The `Lead` field paths (proto names) the write changed.
    pub changed_fields: Vec<String>,
    pub actor: String,
    pub change_time: DateTime<Utc>,
    /// The sequence of the event the write produced; None for history that was not streamed.
    pub sequence: Option<i64>,
    /// Set when the stage changed; `from_stage` is None on creation.
    pub from_stage: Option<StageKey>,
    pub to_stage: Option<StageKey>,
}

impl LeadRevision {
    /// A revision of `after`, with the fields changed since `before` (None: a creation, whose
    /// changed fields are those it sets).
    pub fn of(
        kind: RevisionKind,
        before: Option<&Lead>,
        after: &Lead,
        actor: &str,
        change_time: DateTime<Utc>,
    ) -> Self {
        let changed_fields = match before {
            Some(before) if kind != RevisionKind::Deleted => changed_fields(before, after),
            Some(_) => Vec::new(),
            None => set_fields(after),
        };
        let stage_changed = match before {
            None => true,
            Some(before) => before.stage != after.stage,
        };
        Self {
            revision: 0,
            kind,
            lead: after.clone(),
            changed_fields: changed_fields.into_iter().map(str::to_owned).collect(),
            actor: actor.to_owned(),
            change_time,
            sequence: None,
            from_stage: before.filter(|_| stage_changed).map(|b| b.stage.clone()),
            to_stage: stage_changed.then(|| after.stage.clone()),
        }
    }
}

/// The lead's amount at `time` by its revisions: that of the latest revision at or before it,
/// later numbers winning ties of time; None before the first. The store reads the same rule
/// back from its revisions.
pub fn amount_at(revisions: &[LeadRevision], time: DateTime<Utc>) -> Option<&Money> {
    revisions
        .iter()
        .filter(|r| r.change_time <= time)
        .max_by_key(|r| (r.change_time, r.revision))
        .and_then(|r| r.lead.fields.amount.as_ref())
}

/// The paths a revision can name, in the order of the `Lead` message. Derived and bookkeeping
/// fields (`win_probability`, `update_time`, `stage_enter_time`, `etag`, the slippage counters)
/// are left out: they change with the fields listed here, or on every write.
pub const REVISION_PATHS: &[&str] = &[
    "title",
    "company",
    "contact_name",
    "contact_email",
    "owner",
    "source",
    "pipeline_id",
    "stage",
    "amount",
    "bant",
    "expected_close_time",
    "labels",
    "lost_reason",
    "close_time",
];

/// The paths whose values differ between `before` and `after`, in `REVISION_PATHS` order.
pub fn changed_fields(before: &Lead, after: &Lead) -> Vec<&'static str> {
    let (b, a) = (&before.fields, &after.fields);
    let differs = [
        b.title != a.title,
        b.company != a.company,
        b.contact_name != a.contact_name,
        b.contact_email != a.contact_email,
        b.owner != a.owner,
        b.source != a.source,
        before.pipeline_id != after.pipeline_id,
        before.stage != after.stage,
        b.amount != a.amount,
        b.bant != a.bant,
        b.expected_close_time != a.expected_close_time,
        b.labels != a.labels,
        b.lost_reason != a.lost_reason,
        before.close_time != after.close_time,
    ];
    REVISION_PATHS
        .iter()
        .zip(differs)
        .filter_map(|(path, differs)| differs.then_some(*path))
        .collect()
}

/// The paths a new lead sets: every one with a value other than the empty one.
pub fn set_fields(lead: &Lead) -> Vec<&'static str> {
    let f = &lead.fields;
    let set = [
        !f.title.is_empty(),
        !f.company.is_empty(),
        !f.contact_name.is_empty(),
        !f.contact_email.is_empty(),
        !f.owner.is_empty(),
        !f.source.is_empty(),
        true,
        true,
        f.amount.is_some(),
        f.bant != Default::default(),
        f.expected_close_time.is_some(),
        !f.labels.is_empty(),
        !f.lost_reason.is_empty(),
        lead.close_time.is_some(),
    ];
    REVISION_PATHS
        .iter()
        .zip(set)
        .filter_map(|(path, set)| set.then_some(*path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LeadId, PipelineId};
    use crate::lead::LeadFields;
    use crate::money::CurrencyCode;
    use chrono::TimeZone;

    fn lead() -> Lead {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Lead {
            id: LeadId::generate(),
            fields: LeadFields {
                title: "Acme".into(),
                company: String::new(),
                contact_name: String::new(),
                contact_email: String::new(),
                owner: "sam".into(),
                source: String::new(),
                amount: None,
                bant: Default::default(),
                expected_close_time: None,
                labels: Default::default(),
                lost_reason: String::new(),
            },
            pipeline_id: PipelineId::parse("default").unwrap(),
            stage: StageKey::parse("lead_generation").unwrap(),
            win_probability: 0.1,
            create_time: t,
            update_time: t,
            stage_enter_time: t,
            close_time: None,
            version: 1,
            external_id: None,
            close_date_push_count: 0,
            first_expected_close_time: None,
        }
    }

    #[test]
    fn a_creation_names_the_fields_it_sets() {
        assert_eq!(
            set_fields(&lead()),
            ["title", "owner", "pipeline_id", "stage"]
        );
    }

    #[test]
    fn an_update_names_only_what_changed() {
        let before = lead();
        let mut after = before.clone();
        after.fields.amount = Some(Money {
            currency: CurrencyCode::parse("EUR").unwrap(),
            units: 10,
            nanos: 0,
        });
        after.fields.labels.insert("region".into(), "emea".into());
        after.version += 1;
        after.win_probability = 0.5;
        assert_eq!(changed_fields(&before, &after), ["amount", "labels"]);
        let revision = LeadRevision::of(
            RevisionKind::Updated,
            Some(&before),
            &after,
            "a",
            after.update_time,
        );
        assert_eq!(revision.from_stage, None);
        assert_eq!(revision.to_stage, None);
    }

    #[test]
    fn a_move_records_both_stages() {
        let before = lead();
        let mut after = before.clone();
        after.stage = StageKey::parse("qualified").unwrap();
        let revision = LeadRevision::of(
            RevisionKind::Moved,
            Some(&before),
            &after,
            "a",
            after.update_time,
        );
        assert_eq!(revision.changed_fields, ["stage"]);
        assert_eq!(revision.from_stage, Some(before.stage));
        assert_eq!(revision.to_stage, Some(after.stage));
    }

    #[test]
    fn only_a_later_expected_close_is_a_push() {
        let day = |d| Utc.with_ymd_and_hms(2026, 3, d, 0, 0, 0).unwrap();
        let mut l = lead();
        l.fields.expected_close_time = Some(day(10));
        l.track_expected_close(None);
        assert_eq!(
            (l.close_date_push_count, l.first_expected_close_time),
            (0, Some(day(10)))
        );
        l.fields.expected_close_time = Some(day(20));
        l.track_expected_close(Some(day(10)));
        l.fields.expected_close_time = Some(day(5));
        l.track_expected_close(Some(day(20)));
        l.fields.expected_close_time = None;
        l.track_expected_close(Some(day(5)));
        l.fields.expected_close_time = Some(day(6));
        l.track_expected_close(None);
        assert_eq!(
            (l.close_date_push_count, l.first_expected_close_time),
            (1, Some(day(10)))
        );
    }

    #[test]
    fn the_amount_at_a_time_is_the_latest_revisions_at_or_before_it() {
        let eur = |units| Money {
            currency: CurrencyCode::parse("EUR").unwrap(),
            units,
            nanos: 0,
        };
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let hour = chrono::Duration::hours(1);
        let at = |n: i64, units: Option<i64>, when| {
            let mut after = lead();
            after.fields.amount = units.map(eur);
            let mut r = LeadRevision::of(RevisionKind::Updated, None, &after, "sam", when);
            r.revision = n;
            r
        };
        let revisions = [
            at(1, Some(100), t),
            at(3, Some(300), t + hour),
            at(2, Some(200), t + hour),
            at(4, None, t + hour * 2),
        ];
        assert_eq!(amount_at(&revisions, t - hour), None, "before the first");
        assert_eq!(amount_at(&revisions, t), Some(&eur(100)));
        assert_eq!(
            amount_at(&revisions, t + hour),
            Some(&eur(300)),
            "the later number of two at one time"
        );
        assert_eq!(amount_at(&revisions, t + hour * 3), None, "amount cleared");
    }
}
