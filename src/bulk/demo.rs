//! `leadpipe demo`: seeds an empty tenant with a realistic sales pipeline, so that metrics,
//! stuck leads, win probabilities and forecasts have something to show.
//!
//! Leads of the default pipeline move by an absorbing Markov chain (as in
//! [`super::synthetic`]) whose rows depend on the lead's source, owner and segment, with
//! exponential dwell times per stage. A share of leads stall once for several times the usual
//! dwell, as deals do when a champion goes quiet; those still open at the end are the stuck
//! leads. Everything is drawn from one seeded generator, so a seed and an end time give the
//! same tenant every time.

use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use super::synthetic::{LOST, STAGES, WON, pick, timestamp};
use crate::api::pb;
use crate::app::AppError;
use crate::app::import::{ImportRow, ImportSummary};
use crate::app::leads::LeadListQuery;
use crate::domain::ids::TenantId;
use crate::store::StoreConfig;

pub const CURRENCY: &str = "EUR";

/// For each open stage: the chances to advance, to move back and to be lost.
type ChainRows = [(f64, f64, f64); 4];

/// Per source: share of new leads, and its chain.
const SOURCES: [(&str, f64, ChainRows); 5] = [
    (
        "web",
        0.38,
        [
            (0.66, 0.0, 0.34),
            (0.55, 0.05, 0.40),
            (0.60, 0.05, 0.35),
            (0.65, 0.05, 0.30),
        ],
    ),
    (
        "referral",
        0.15,
        [
            (0.80, 0.0, 0.20),
            (0.70, 0.05, 0.25),
            (0.72, 0.05, 0.23),
            (0.80, 0.05, 0.15),
        ],
    ),
    (
        "event",
        0.20,
        [
            (0.56, 0.0, 0.44),
            (0.45, 0.05, 0.50),
            (0.55, 0.05, 0.40),
            (0.60, 0.05, 0.35),
        ],
    ),
    (
        "partner",
        0.12,
        [
            (0.74, 0.0, 0.26),
            (0.62, 0.05, 0.33),
            (0.65, 0.05, 0.30),
            (0.72, 0.05, 0.23),
        ],
    ),
    (
        "outbound",
        0.15,
        [
            (0.46, 0.0, 0.54),
            (0.45, 0.05, 0.50),
            (0.55, 0.05, 0.40),
            (0.60, 0.05, 0.35),
        ],
    ),
];

/// Sales reps and how much more (or less) often their deals advance.
const OWNERS: [(&str, f64); 6] = [
    ("alice", 1.10),
    ("bob", 1.00),
    ("carol", 1.05),
    ("dave", 0.90),
    ("erin", 1.00),
    ("frank", 0.85),
];

/// Segment label: share, median amount, dwell-time factor, advance factor.
const SEGMENTS: [(&str, f64, f64, f64, f64); 3] = [
    ("smb", 0.50, 8_000.0, 0.8, 1.0),
    ("mid_market", 0.35, 25_000.0, 1.0, 1.0),
    ("enterprise", 0.15, 90_000.0, 1.6, 0.95),
];
const REGIONS: [(&str, f64); 3] = [("emea", 0.5), ("na", 0.35), ("apac", 0.15)];
const INDUSTRIES: [&str; 6] = [
    "software",
    "manufacturing",
    "retail",
    "healthcare",
    "finance",
    "logistics",
];
/// Mean days per visit of each open stage, before the segment's factor.
const MEAN_DWELL_DAYS: [f64; 4] = [6.0, 12.0, 18.0, 21.0];
/// Share of leads that stall once, and how many times the usual dwell a stall lasts.
const STALL_PROBABILITY: f64 = 0.10;
const STALL_FACTOR: std::ops::Range<f64> = 4.0..12.0;

const COMPANY_STEMS: [&str; 20] = [
    "North", "Blue", "Silver", "Bright", "Iron", "Green", "Red", "Summit", "Harbor", "Pioneer",
    "Crystal", "Eagle", "Maple", "Orbit", "Quantum", "Stone", "Cedar", "Nova", "Polar", "Vertex",
];
const COMPANY_ENDINGS: [&str; 12] = [
    "field", "wave", "point", "bridge", "line", "gate", "works", "leaf", "peak", "stream", "forge",
    "haven",
];
const LEGAL_FORMS: [&str; 8] = ["GmbH", "Ltd", "Inc", "AB", "SAS", "BV", "Oy", "S.p.A."];
const DEALS: [&str; 8] = [
    "CRM rollout",
    "renewal",
    "50-seat upsell",
    "analytics add-on",
    "pilot",
    "platform migration",
    "support plan",
    "EMEA expansion",
];
const FIRST_NAMES: [&str; 16] = [
    "Dana", "Hank", "Priya", "Lena", "Marco", "Yuki", "Omar", "Sofia", "Jonas", "Aisha", "Pedro",
    "Mei", "Lars", "Chloe", "Ravi", "Nora",
];
const LAST_NAMES: [&str; 16] = [
    "Smith", "Novak", "Patel", "Schmidt", "Rossi", "Tanaka", "Haddad", "Garcia", "Berg", "Okafor",
    "Silva", "Chen", "Nilsen", "Martin", "Iyer", "Kowalski",
];
const AUTHORITIES: [&str; 5] = ["CFO", "VP Sales", "Head of IT", "COO", "Procurement lead"];
const NEEDS: [&str; 5] = [
    "Month-end close takes 9 days",
    "Sales forecast misses by 30%",
    "Leads fall through the cracks",
    "Replacing a legacy CRM",
    "Growing from 20 to 80 reps",
];
const LOST_REASONS: [&str; 6] = [
    "Went with a competitor",
    "No budget this year",
    "No decision",
    "Timing: revisit next year",
    "Price too high",
    "Champion left the company",
];

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub leads: usize,
    /// How far back the first lead was created.
    pub days: i64,
    pub seed: u64,
    /// When the history ends (nothing happens after it); at most now.
    pub until: DateTime<Utc>,
}

impl DemoOptions {
    /// The default end: the start of the current day (UTC), so that a seed gives the same data
    /// all day.
    pub fn today() -> DateTime<Utc> {
        let now = Utc::now();
        Utc.from_utc_datetime(&now.date_naive().and_time(NaiveTime::MIN))
    }
}

/// Counts of what was generated, by where the leads ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    pub leads: usize,
    pub open: usize,
    pub won: usize,
    pub lost: usize,
    pub stage_changes: usize,
    /// Amount and expected-close changes.
    pub field_changes: usize,
}

impl DemoSummary {
    pub fn of(messages: &[pb::ImportLeadsRequest]) -> Self {
        let mut summary = Self {
            leads: messages.len(),
            ..Self::default()
        };
        for message in messages {
            summary.stage_changes += message.history.len();
            summary.field_changes += message.revisions.len();
            match message.history.last().map(|c| c.to_stage.as_str()) {
                Some(stage) if stage == STAGES[WON] => summary.won += 1,
                Some(stage) if stage == STAGES[LOST] => summary.lost += 1,
                _ => summary.open += 1,
            }
        }
        summary
    }
}

fn pick_weighted<'a, T, R: Rng>(rng: &mut R, items: &'a [T], weight: impl Fn(&T) -> f64) -> &'a T {
    let weights: Vec<f64> = items.iter().map(weight).collect();
    &items[pick(rng, &weights)]
}

fn one_of<'a, R: Rng>(rng: &mut R, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn eur(value: f64) -> pb::Money {
    pb::Money {
        currency_code: CURRENCY.into(),
        // Round to hundreds, as people quote deals.
        units: ((value / 100.0).round() as i64).max(1) * 100,
        nanos: 0,
    }
}

/// A creation time in [start, end): more leads recently (the business grows by half over the
/// period), mostly on weekdays, in office hours.
fn creation_time<R: Rng>(rng: &mut R, start: DateTime<Utc>, end: DateTime<Utc>) -> DateTime<Utc> {
    let span = (end - start).num_seconds().max(1) as f64;
    loop {
        // Inverse of the CDF of the density 1 + 0.5x on [0, 1].
        let u: f64 = rng.random();
        let x = (-1.0 + (1.0 + 1.25 * u).sqrt()) / 0.5;
        let day = start + Duration::seconds((x * span) as i64);
        let weekend = matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
        if weekend && rng.random::<f64>() < 0.8 {
            continue;
        }
        let office = Duration::seconds(rng.random_range(8 * 3600..18 * 3600));
        let time = day - Duration::seconds(i64::from(day.num_seconds_from_midnight())) + office;
        if time >= start && time < end {
            return time;
        }
    }
}

/// The demo's leads, oldest first, as ImportLeads messages.
pub fn generate(options: &DemoOptions) -> Vec<pb::ImportLeadsRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    // Field changes draw from a generator of their own, so they leave the rest of a seed's
    // tenant as it was.
    let mut edits = ChaCha8Rng::seed_from_u64(options.seed ^ FIELD_CHANGE_STREAM);
    let end = options.until;
    let start = end - Duration::days(options.days.max(1));
    let mut created: Vec<DateTime<Utc>> = (0..options.leads)
        .map(|_| creation_time(&mut rng, start, end))
        .collect();
    created.sort();
    created
        .into_iter()
        .enumerate()
        .map(|(n, created)| lead(&mut rng, &mut edits, n, created, end))
        .collect()
}

fn lead<R: Rng>(
    rng: &mut R,
    edits: &mut R,
    n: usize,
    created: DateTime<Utc>,
    end: DateTime<Utc>,
) -> pb::ImportLeadsRequest {
    let &(source, _, rows) = pick_weighted(rng, &SOURCES, |s| s.1);
    let &(owner, skill) = &OWNERS[rng.random_range(0..OWNERS.len())];
    let &(segment, _, median_amount, slowness, segment_skill) =
        pick_weighted(rng, &SEGMENTS, |s| s.1);
    let region = pick_weighted(rng, &REGIONS, |r| r.1).0;
    let industry = one_of(rng, &INDUSTRIES);

    // The chain of this lead: advancing more or less often by owner and segment; what is not
    // advance or back is lost.
    let matrix: Vec<Vec<f64>> = rows
        .iter()
        .enumerate()
        .map(|(i, &(advance, back, _))| {
            let advance = (advance * skill * segment_skill).min(1.0 - back);
            let mut row = vec![0.0; 6];
            row[i + 1] = advance;
            if i > 0 {
                row[i - 1] = back;
            }
            row[LOST] += 1.0 - advance - back;
            row
        })
        .collect();
    let dwell: Vec<Exp<f64>> = MEAN_DWELL_DAYS
        .iter()
        .map(|mean| Exp::new(1.0 / (mean * slowness)).expect("a positive rate"))
        .collect();
    let stall_at = (rng.random::<f64>() < STALL_PROBABILITY).then(|| rng.random_range(0..4usize));
    let stall_factor = rng.random_range(STALL_FACTOR);

    let mut history = vec![pb::ImportedStageChange {
        from_stage: String::new(),
        to_stage: STAGES[0].into(),
        change_time: Some(timestamp(created)),
        actor: owner.into(),
        note: format!("{source} lead"),
    }];
    let (mut stage, mut at, mut furthest) = (0usize, created, 0usize);
    let mut stalled = false;
    while stage < WON {
        let mut days = dwell[stage].sample(rng);
        if stall_at == Some(stage) && !stalled {
            stalled = true;
            days *= stall_factor;
        }
        at += Duration::seconds((days * 86_400.0).round() as i64);
        if at > end {
            break;
        }
        let next = pick(rng, &matrix[stage]);
        history.push(pb::ImportedStageChange {
            from_stage: STAGES[stage].into(),
            to_stage: STAGES[next].into(),
            change_time: Some(timestamp(at)),
            actor: owner.into(),
            note: String::new(),
        });
        stage = next;
        if stage < WON {
            furthest = furthest.max(stage);
        }
    }
    if stage == WON {
        furthest = 4;
    }

    let company = format!(
        "{}{} {}",
        one_of(rng, &COMPANY_STEMS),
        one_of(rng, &COMPANY_ENDINGS),
        one_of(rng, &LEGAL_FORMS)
    );
    let domain: String = company
        .split_whitespace()
        .next()
        .unwrap_or("example")
        .to_lowercase();
    let (first, last) = (one_of(rng, &FIRST_NAMES), one_of(rng, &LAST_NAMES));
    // Qualification needs a contact; most leads have one from the start.
    let has_contact = furthest >= 1 || rng.random::<f64>() < 0.7;
    let amount = LogNormal::new(median_amount.ln(), 0.6)
        .expect("valid log-normal")
        .sample(rng);
    // Proposal needs complete BANT; in qualification it is being gathered.
    let bant = match furthest {
        0 => pb::Bant::default(),
        1 => pb::Bant {
            budget: (rng.random::<f64>() < 0.5).then(|| eur(amount * 1.2)),
            authority: if rng.random::<f64>() < 0.5 {
                format!("{first} {last}, {}", one_of(rng, &AUTHORITIES))
            } else {
                String::new()
            },
            need: if rng.random::<f64>() < 0.6 {
                one_of(rng, &NEEDS).into()
            } else {
                String::new()
            },
            timeline: None,
        },
        _ => pb::Bant {
            budget: Some(eur(amount * rng.random_range(0.9..1.5))),
            authority: format!("{first} {last}, {}", one_of(rng, &AUTHORITIES)),
            need: one_of(rng, &NEEDS).into(),
            timeline: Some(timestamp(
                created + Duration::days(rng.random_range(45..180)),
            )),
        },
    };
    // A won deal's plan is drawn from the field changes' generator, which keeps the main
    // generator's draws, and so the rest of the tenant, as they were before deals had plans.
    let planned_close = (furthest >= 1).then(|| {
        let days = if stage == WON {
            edits.random_range(30.0..90.0)
        } else {
            rng.random_range(30.0..90.0)
        };
        created + Duration::days((days * slowness) as i64)
    });
    let title = format!(
        "{} {}",
        company.split_whitespace().next().unwrap_or("Deal"),
        one_of(rng, &DEALS)
    );
    let has_amount = furthest >= 2 || rng.random::<f64>() < 0.8;
    let closed_at = (stage == WON || stage == LOST).then_some(at);
    let changes = field_changes(
        edits,
        &history,
        FieldPlan {
            amount,
            quoted: has_amount,
            planned_close,
            closed_at,
            won: stage == WON,
            end,
            owner,
        },
    );
    let lead = pb::Lead {
        title,
        company: company.clone(),
        contact_name: if has_contact {
            format!("{first} {last}")
        } else {
            String::new()
        },
        contact_email: if has_contact {
            format!(
                "{}.{}@{domain}.example",
                first.to_lowercase(),
                last.to_lowercase()
            )
        } else {
            String::new()
        },
        owner: owner.into(),
        source: source.into(),
        // Negotiation and closed won need an amount; early leads often have none yet.
        amount: changes.first_quote.map(eur),
        bant: Some(bant),
        expected_close_time: planned_close.map(timestamp),
        labels: [
            ("region".to_string(), region.to_string()),
            ("segment".to_string(), segment.to_string()),
            ("industry".to_string(), industry.to_string()),
        ]
        .into_iter()
        .collect(),
        lost_reason: if stage == LOST {
            one_of(rng, &LOST_REASONS).into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    pb::ImportLeadsRequest {
        external_id: format!("demo-{n:05}"),
        lead: Some(lead),
        history,
        revisions: changes.revisions,
        update_existing: false,
    }
}

/// Seeds the generator of field changes, apart from the main one.
const FIELD_CHANGE_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;
/// How often a close date that passed with the deal open is pushed, at most.
const MAX_PUSHES: usize = 8;

/// What a lead's field changes are drawn from.
struct FieldPlan<'a> {
    /// The amount the deal is scoped at in proposal.
    amount: f64,
    /// Whether the lead has an amount from the start.
    quoted: bool,
    planned_close: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    won: bool,
    end: DateTime<Utc>,
    owner: &'a str,
}

struct FieldChanges {
    first_quote: Option<f64>,
    revisions: Vec<pb::ImportedRevision>,
}

/// A deal's amount and close date as sales teams revise them: a rough first quote, repriced
/// once scoped (on entering proposal), often discounted in negotiation; the close date pushed
/// each time it passes with the deal still open, so deals that stall slip most; a won deal's
/// close date set to the day it was won.
fn field_changes<R: Rng>(
    rng: &mut R,
    history: &[pb::ImportedStageChange],
    plan: FieldPlan<'_>,
) -> FieldChanges {
    let seconds = |change: &pb::ImportedStageChange| {
        change
            .change_time
            .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
            .expect("generated times are valid")
    };
    let entered = |stage: usize| {
        history
            .iter()
            .find(|c| c.to_stage == STAGES[stage])
            .map(seconds)
    };
    let last_day = plan.closed_at.unwrap_or(plan.end).min(plan.end);
    let mut changes: Vec<(DateTime<Utc>, pb::Lead, &str)> = Vec::new();
    let amount_change = |value: f64| pb::Lead {
        amount: Some(eur(value)),
        ..Default::default()
    };
    let first_quote = plan.quoted.then(|| {
        let rough = LogNormal::new(0.0, 0.35)
            .expect("valid log-normal")
            .sample(rng);
        plan.amount * rough
    });
    // Scoping takes a day or two after the proposal stage is entered.
    if let Some(at) = entered(2) {
        let at = at + Duration::hours(rng.random_range(1..48));
        if at <= last_day {
            changes.push((at, amount_change(plan.amount), "amount"));
        }
    }
    if let Some(at) = entered(3)
        && rng.random::<f64>() < 0.5
    {
        let at = at + Duration::hours(rng.random_range(1..72));
        if at <= last_day {
            let discounted = plan.amount * rng.random_range(0.8..0.97);
            changes.push((at, amount_change(discounted), "amount"));
        }
    }
    if let Some(planned) = plan.planned_close {
        let mut expected = planned;
        let mut pushes = 0;
        while expected < last_day && pushes < MAX_PUSHES {
            let at = expected + Duration::hours(rng.random_range(2..96));
            if at >= last_day {
                break;
            }
            let slip = rng.random_range(14.0..45.0) * (1.0 + 0.25 * pushes as f64);
            expected = at + Duration::days(slip as i64);
            changes.push((
                at,
                pb::Lead {
                    expected_close_time: Some(timestamp(expected)),
                    ..Default::default()
                },
                "expected_close_time",
            ));
            pushes += 1;
        }
        if plan.won
            && let Some(won_at) = plan.closed_at
            && expected != won_at
        {
            changes.push((
                won_at,
                pb::Lead {
                    expected_close_time: Some(timestamp(won_at)),
                    ..Default::default()
                },
                "expected_close_time",
            ));
        }
    }
    changes.sort_by_key(|(at, _, _)| *at);
    FieldChanges {
        first_quote,
        revisions: changes
            .into_iter()
            .map(|(at, lead, path)| pb::ImportedRevision {
                change_time: Some(timestamp(at)),
                lead: Some(lead),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![path.to_owned()],
                }),
                actor: plan.owner.to_owned(),
            })
            .collect(),
    }
}

/// Seeds `tenant` through the ImportLeads code path. Refuses a tenant that already has leads,
/// so a demo never mixes with real data and running it twice changes nothing.
pub async fn run(
    config: &StoreConfig,
    tenant: &TenantId,
    options: &DemoOptions,
) -> Result<(DemoSummary, ImportSummary), String> {
    if options.until > Utc::now() {
        return Err("--until must not be in the future: history records what did happen".into());
    }
    let app = super::open(config).await?;
    let ctx = super::context(tenant, "demo");
    let result = async {
        let existing = app
            .leads
            .list(
                &ctx,
                LeadListQuery {
                    filter: None,
                    filter_text: String::new(),
                    order: Default::default(),
                    page_size: 1,
                    page_token: String::new(),
                    as_of: None,
                },
            )
            .await
            .map_err(|e| format!("cannot count the tenant's leads: {e}"))?
            .total_size;
        if existing > 0 {
            return Err(format!(
                "tenant {tenant} already has {existing} leads; the demo only seeds an empty tenant \
                 (use another --tenant or --database-url)"
            ));
        }
        let messages = generate(options);
        let summary = DemoSummary::of(&messages);
        let progress = super::progress_bar(messages.len() as u64, "seeding", "leads");
        let total = messages.len() as u64;
        let stream = futures::stream::iter(messages.into_iter().map(|m| {
            progress.inc(1);
            if progress.position() == total {
                progress.set_message("(retraining and rescoring open leads)");
            }
            Ok::<_, AppError>(ImportRow::from(m))
        }));
        let response = app
            .import
            .import_and_rescore(&app.forecasts, &ctx, stream)
            .await
            .map_err(|error| format!("the import failed: {error}"))?;
        progress.finish_and_clear();
        Ok((summary, response))
    }
    .await;
    app.store.close().await;
    result
}

/// `leadpipe demo`: seeds the tenant and says what it made.
pub async fn main(config: &StoreConfig, tenant: &TenantId, options: &DemoOptions) -> i32 {
    let started = Instant::now();
    match run(config, tenant, options).await {
        Ok((summary, response)) if response.failed == 0 => {
            let from = options.until - Duration::days(options.days.max(1));
            println!(
                "Seeded tenant {tenant} with {} leads ({} open, {} won, {} lost), {} stage \
                 changes and {} amount and close-date changes from {} to {}, in {:.1} s.",
                summary.leads,
                summary.open,
                summary.won,
                summary.lost,
                summary.stage_changes,
                summary.field_changes,
                from.format("%Y-%m-%d"),
                options.until.format("%Y-%m-%d"),
                started.elapsed().as_secs_f64()
            );
            0
        }
        Ok((_, response)) => {
            // The generator makes only valid leads; a refusal here is a bug worth seeing.
            for error in &response.errors {
                eprintln!(
                    "error: {} {}: {}",
                    error.external_id, error.field, error.reason
                );
            }
            1
        }
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64) -> DemoOptions {
        DemoOptions {
            leads: 3000,
            days: 365,
            seed,
            until: DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_tenant() {
        assert_eq!(generate(&options(7)), generate(&options(7)));
        assert_ne!(generate(&options(7)), generate(&options(8)));
    }

    #[test]
    fn the_funnel_is_plausible() {
        let messages = generate(&options(42));
        let s = DemoSummary::of(&messages);
        assert_eq!(s.leads, 3000);
        // A B2B funnel from first contact: about one lead in eight won, most lost, a tenth
        // still open.
        let share = |n: usize| n as f64 / s.leads as f64;
        assert!((0.08..0.25).contains(&share(s.won)), "{s:?}");
        assert!((0.55..0.85).contains(&share(s.lost)), "{s:?}");
        assert!((0.05..0.25).contains(&share(s.open)), "{s:?}");
        let until = options(42).until;
        for message in &messages {
            let history = &message.history;
            assert!(history[0].from_stage.is_empty());
            for pair in history.windows(2) {
                assert_eq!(pair[1].from_stage, pair[0].to_stage);
                assert!(
                    pair[1].change_time.unwrap().seconds >= pair[0].change_time.unwrap().seconds
                );
            }
            assert!(history.last().unwrap().change_time.unwrap().seconds <= until.timestamp());
            let lead = message.lead.as_ref().unwrap();
            if history.last().unwrap().to_stage == "closed_lost" {
                assert!(!lead.lost_reason.is_empty());
            }
        }
        // Some open leads have sat in their stage for months: ListStuckLeads has work to do.
        let long_stuck = messages
            .iter()
            .filter(|m| {
                let last = m.history.last().unwrap();
                !last.to_stage.starts_with("closed_")
                    && until.timestamp() - last.change_time.unwrap().seconds > 60 * 86_400
            })
            .count();
        assert!(long_stuck >= 20, "{long_stuck} open leads idle for 60 days");
        // Deals are repriced and their close dates slip, in order and within the history.
        let changed = |path: &str| {
            messages
                .iter()
                .filter(|m| {
                    m.revisions
                        .iter()
                        .any(|r| r.update_mask.as_ref().unwrap().paths == [path])
                })
                .count()
        };
        assert!(
            changed("amount") as f64 / s.leads as f64 > 0.1,
            "{}",
            changed("amount")
        );
        // A won deal's last close-date change sets the day it was won; every other one is a
        // push.
        let pushed = messages
            .iter()
            .filter(|m| !m.history.last().unwrap().to_stage.starts_with("closed_"))
            .filter(|m| m.lead.as_ref().unwrap().expected_close_time.is_some())
            .filter(|m| {
                m.revisions
                    .iter()
                    .any(|r| r.lead.as_ref().unwrap().expected_close_time.is_some())
            })
            .count();
        let planned = messages
            .iter()
            .filter(|m| !m.history.last().unwrap().to_stage.starts_with("closed_"))
            .filter(|m| m.lead.as_ref().unwrap().expected_close_time.is_some())
            .count();
        assert!(
            pushed as f64 / planned as f64 > 0.2,
            "{pushed} of {planned} open leads with a close date pushed"
        );
        for message in &messages {
            let created = message.history[0].change_time.unwrap().seconds;
            let times: Vec<i64> = message
                .revisions
                .iter()
                .map(|r| r.change_time.unwrap().seconds)
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            assert!(
                times
                    .iter()
                    .all(|&t| t >= created && t <= until.timestamp())
            );
        }
    }
}
