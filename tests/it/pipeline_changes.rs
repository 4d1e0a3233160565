//! GetPipelineChanges through the real gRPC API: random histories of creates, updates, moves
//! and deletes, with the report of every window between marked times checked against the
//! states the API returned, and the identity start + inflows − outflows = end checked exactly.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::history::{forecasts, micro_ts, ts};
use common::*;
use leadpipe::domain::changes::{
    Bucket, Changes, LeadWindow, Selection, Snapshot, Tally, classify, to_nanos,
};
use leadpipe::domain::pipeline::StageKind;
use leadpipe::grpc::pb;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;

on_both_backends!(
    random_histories_reconcile_and_match_the_recorded_states,
    a_created_increased_and_won_lead_is_new_and_won,
    requests_are_checked,
);

const STAGES: [(&str, StageKind); 6] = [
    ("lead_generation", StageKind::Open),
    ("qualification", StageKind::Open),
    ("proposal", StageKind::Open),
    ("negotiation", StageKind::Open),
    ("closed_won", StageKind::Won),
    ("closed_lost", StageKind::Lost),
];
const LEADS: usize = 4;
const OWNERS: [&str; 2] = ["ana", "bo"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        lead: usize,
        units: Option<i64>,
        dollars: bool,
    },
    Amount {
        lead: usize,
        units: i64,
        nanos: i32,
        dollars: bool,
    },
    Close {
        lead: usize,
        days: i64,
    },
    Owner {
        lead: usize,
        owner: usize,
    },
    Move {
        lead: usize,
        step: Step,
    },
    Delete {
        lead: usize,
    },
    Mark,
}

fn op() -> impl Strategy<Value = Op> {
    let lead = 0..LEADS;
    prop_oneof![
        2 => (lead.clone(), proptest::option::of(1i64..500), proptest::bool::weighted(0.2))
            .prop_map(|(lead, units, dollars)| Op::Create { lead, units, dollars }),
        2 => (lead.clone(), 1i64..500, 0i32..3, proptest::bool::weighted(0.15))
            .prop_map(|(lead, units, nanos, dollars)| Op::Amount { lead, units, nanos, dollars }),
        1 => (lead.clone(), 1i64..60).prop_map(|(lead, days)| Op::Close { lead, days }),
        1 => (lead.clone(), 0..OWNERS.len()).prop_map(|(lead, owner)| Op::Owner { lead, owner }),
        6 => (lead.clone(), prop_oneof![
                6 => Just(Step::Next),
                1 => Just(Step::Back),
                2 => Just(Step::Won),
                1 => Just(Step::Lost),
                1 => Just(Step::Reopen),
            ])
            .prop_map(|(lead, step)| Op::Move { lead, step }),
        1 => lead.prop_map(|lead| Op::Delete { lead }),
        2 => Just(Op::Mark),
    ]
}

/// Where a move goes, from the lead's stage: most moves the pipeline allows are one stage
/// forward, and a won stage is reachable from the last open stage only.
#[derive(Debug, Clone, Copy)]
enum Step {
    Next,
    Back,
    Won,
    Lost,
    Reopen,
}

fn target(stage: &str, step: Step) -> &'static str {
    let i = STAGES
        .iter()
        .position(|(key, _)| *key == stage)
        .unwrap_or(0);
    match step {
        Step::Next => STAGES[(i + 1).min(3)].0,
        Step::Back => STAGES[i.saturating_sub(1).min(3)].0,
        Step::Won => STAGES[4].0,
        Step::Lost => STAGES[5].0,
        Step::Reopen => STAGES[0].0,
    }
}

/// A lead as the API last returned it.
#[derive(Debug, Clone)]
struct Known {
    lead: pb::Lead,
    deleted: bool,
}

fn snapshot(known: &Known) -> Snapshot {
    let lead = &known.lead;
    let stage = STAGES
        .iter()
        .position(|(key, _)| *key == lead.stage)
        .map(|i| (i, STAGES[i].1));
    let (currency, amount) = match &lead.amount {
        Some(m) => (m.currency_code.clone(), to_nanos(m.units, m.nanos)),
        None => (String::new(), 0),
    };
    Snapshot {
        stage,
        currency,
        amount,
        owner: lead.owner.clone(),
        expected_close_time: lead
            .expected_close_time
            .as_ref()
            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000),
        deleted: known.deleted,
    }
}

/// Every lead's state after each successful write, and the marked times between writes.
struct Recorded {
    /// Per lead slot: (index of the write, state after it).
    states: Vec<Vec<(usize, Snapshot)>>,
    /// (time, number of writes before it).
    marks: Vec<(DateTime<Utc>, usize)>,
    ids: Vec<Option<String>>,
}

impl Recorded {
    fn at(&self, slot: usize, writes: usize) -> Option<&Snapshot> {
        self.states[slot]
            .iter()
            .rev()
            .find(|(w, _)| *w < writes)
            .map(|(_, s)| s)
    }

    /// The report the recorded states call for, between the writes before two marks.
    fn expected(&self, selection: &Selection, from: usize, to: usize) -> (Changes, Vec<String>) {
        let mut start = Tally::default();
        let mut end = Tally::default();
        let mut windows = Vec::new();
        for slot in 0..LEADS {
            let s = self.at(slot, from).cloned();
            let Some(e) = self.at(slot, to).cloned() else {
                continue;
            };
            if let Some(s) = s.as_ref().filter(|s| selection.is_open(s)) {
                start.add(s.amount);
            }
            if selection.is_open(&e) {
                end.add(e.amount);
            }
            let changed: Vec<&Snapshot> = self.states[slot]
                .iter()
                .filter(|(w, _)| *w >= from && *w < to)
                .map(|(_, s)| s)
                .collect();
            if changed.is_empty() {
                continue;
            }
            let open_inside = changed.iter().any(|s| selection.is_open(s));
            windows.push((
                self.ids[slot].clone().unwrap_or_default(),
                LeadWindow {
                    start: s,
                    end: e,
                    open_inside,
                },
            ));
        }
        let mut changes = Changes::new(start, end);
        let mut ids = Vec::new();
        for (id, window) in &windows {
            let classified = classify(selection, window);
            if classified.iter().any(|(b, _)| *b == Bucket::Won) {
                ids.push(id.clone());
            }
            changes.add(&classified);
        }
        ids.sort();
        (changes, ids)
    }
}

fn new_pb_lead(units: Option<i64>, dollars: bool) -> pb::Lead {
    pb::Lead {
        title: "deal".into(),
        contact_name: "Dana".into(),
        owner: OWNERS[0].into(),
        amount: units.map(|u| money(if dollars { "USD" } else { "EUR" }, u)),
        bant: Some(pb::Bant {
            budget: Some(money("EUR", 1)),
            authority: "CFO".into(),
            need: "yes".into(),
            timeline: Some(ts(Utc::now() + chrono::Duration::days(90))),
        }),
        lost_reason: "price".into(),
        ..Default::default()
    }
}

async fn run(app: &TestApp, ops: &[Op]) -> Recorded {
    let mut leads = app.leads.clone();
    let mut known: Vec<Option<Known>> = vec![None; LEADS];
    let mut recorded = Recorded {
        states: vec![Vec::new(); LEADS],
        marks: Vec::new(),
        ids: vec![None; LEADS],
    };
    let mut writes = 0;
    for op in ops {
        let slot = match op {
            Op::Mark => {
                // Each write's time is taken by the server after the request arrives; a pause
                // on both sides of a mark keeps the microsecond clocks apart.
                tokio::time::sleep(Duration::from_millis(3)).await;
                recorded.marks.push((Utc::now(), writes));
                tokio::time::sleep(Duration::from_millis(3)).await;
                continue;
            }
            Op::Create { lead, .. }
            | Op::Amount { lead, .. }
            | Op::Close { lead, .. }
            | Op::Owner { lead, .. }
            | Op::Move { lead, .. }
            | Op::Delete { lead } => *lead,
        };
        // A slot holds one lead for the whole history: a deleted lead is not created again.
        let current = known[slot].clone().filter(|k| !k.deleted);
        let fresh = known[slot].is_none();
        let update = |current: &Known, change: &dyn Fn(&mut pb::Lead), path: &str| {
            let mut lead = current.lead.clone();
            change(&mut lead);
            pb::UpdateLeadRequest {
                lead: Some(lead),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![path.into()],
                }),
            }
        };
        let result: Option<Known> = match (op, &current) {
            (Op::Create { units, dollars, .. }, None) if fresh => {
                let mut lead = new_pb_lead(*units, *dollars);
                lead.expected_close_time = Some(ts(Utc::now() + chrono::Duration::days(30)));
                let lead = create(app, lead).await;
                recorded.ids[slot] = Some(lead.id.clone());
                Some(Known {
                    lead,
                    deleted: false,
                })
            }
            (Op::Create { .. }, _) | (_, None) => None,
            (
                Op::Amount {
                    units,
                    nanos,
                    dollars,
                    ..
                },
                Some(c),
            ) => {
                let request = update(
                    c,
                    &|l| {
                        l.amount = Some(pb::Money {
                            currency_code: if *dollars { "USD" } else { "EUR" }.into(),
                            units: *units,
                            nanos: *nanos,
                        })
                    },
                    "amount",
                );
                leads.update_lead(request).await.ok().map(|r| Known {
                    lead: r.into_inner(),
                    deleted: false,
                })
            }
            (Op::Close { days, .. }, Some(c)) => {
                let at = ts(Utc::now() + chrono::Duration::days(*days));
                let request = update(
                    c,
                    &|l| l.expected_close_time = Some(at),
                    "expected_close_time",
                );
                leads.update_lead(request).await.ok().map(|r| Known {
                    lead: r.into_inner(),
                    deleted: false,
                })
            }
            (Op::Owner { owner, .. }, Some(c)) => {
                let request = update(c, &|l| l.owner = OWNERS[*owner].into(), "owner");
                leads.update_lead(request).await.ok().map(|r| Known {
                    lead: r.into_inner(),
                    deleted: false,
                })
            }
            (
                Op::Move {
                    step: Step::Won, ..
                },
                Some(c),
            ) => {
                // Forward stage by stage to the won stage: a lead is won from the last open
                // stage only. Every move but the last is a write of its own.
                let mut lead = c.lead.clone();
                while let Some(next) = STAGES[..4]
                    .iter()
                    .position(|(key, _)| *key == lead.stage)
                    .filter(|&i| i < 3)
                {
                    match move_to(app, &lead.id, STAGES[next + 1].0).await {
                        Ok(moved) => lead = moved,
                        Err(_) => break,
                    }
                    let k = Known {
                        lead: lead.clone(),
                        deleted: false,
                    };
                    recorded.states[slot].push((writes, snapshot(&k)));
                    known[slot] = Some(k);
                    writes += 1;
                }
                move_to(app, &lead.id, STAGES[4].0)
                    .await
                    .ok()
                    .map(|lead| Known {
                        lead,
                        deleted: false,
                    })
            }
            (Op::Move { step, .. }, Some(c)) => {
                move_to(app, &c.lead.id, target(&c.lead.stage, *step))
                    .await
                    .ok()
                    .map(|lead| Known {
                        lead,
                        deleted: false,
                    })
            }
            (Op::Delete { .. }, Some(c)) => leads
                .delete_lead(pb::DeleteLeadRequest {
                    id: c.lead.id.clone(),
                    etag: String::new(),
                })
                .await
                .ok()
                .map(|_| Known {
                    lead: c.lead.clone(),
                    deleted: true,
                }),
            (Op::Mark, _) => unreachable!("handled above"),
        };
        if let Some(k) = result {
            recorded.states[slot].push((writes, snapshot(&k)));
            known[slot] = Some(k);
            writes += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(3)).await;
    recorded.marks.push((Utc::now(), writes));
    recorded
}

fn nanos_of(money: &Option<pb::Money>) -> i128 {
    money.as_ref().map_or(0, |m| to_nanos(m.units, m.nanos))
}

fn tally_of(t: &Option<pb::PipelineChangeTally>) -> Tally {
    let t = t.as_ref().expect("a tally");
    Tally {
        count: t.count,
        amount: nanos_of(&t.amount),
    }
}

fn request(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    owner: Option<&str>,
    bucket: pb::PipelineChangeBucket,
    page_size: i32,
    page_token: String,
) -> pb::GetPipelineChangesRequest {
    pb::GetPipelineChangesRequest {
        pipeline_id: String::new(),
        start_time: Some(micro_ts(start)),
        end_time: Some(micro_ts(end)),
        currency_code: "EUR".into(),
        owner: owner.unwrap_or_default().into(),
        bucket: bucket.into(),
        page_size,
        page_token,
    }
}

/// The signed sum of the identity's buckets, from the response alone.
fn reconciled(response: &pb::PipelineChanges) -> Tally {
    let mut out = tally_of(&response.start);
    for b in &response.buckets {
        let tally = tally_of(&b.tally);
        let bucket = pb::PipelineChangeBucket::try_from(b.bucket).expect("a known bucket");
        use pb::PipelineChangeBucket as P;
        let (sign, counts) = match bucket {
            P::New | P::Reopened | P::Added => (1, true),
            P::Won | P::Lost | P::Removed => (-1, true),
            P::Increased => (1, false),
            P::Decreased => (-1, false),
            _ => (0, false),
        };
        out.amount += sign * tally.amount;
        if counts {
            out.count += sign as i64 * tally.count;
        }
    }
    out
}

async fn random_histories_reconcile_and_match_the_recorded_states(app: TestApp) {
    let backend = app.backend;
    let mut first = Some(app);
    let mut runner = TestRunner::new(Config {
        cases: 4,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op(), 30..70);
    let mut seen = [0i64; 12];
    let reached = |seen: &[i64; 12]| seen.iter().filter(|n| **n > 0).count();
    let mut histories = 0;
    // About one run in a few hundred draws four histories that reach fewer than four buckets
    // between them; more histories are drawn until they do, so that every run checks as much.
    while histories < MIN_HISTORIES
        || (reached(&seen) < MIN_BUCKETS_REACHED && histories < MAX_HISTORIES)
    {
        // A database of its own per history, so that the windows see only its leads.
        let app = match first.take() {
            Some(app) => app,
            None => spawn_app(backend).await.expect("a server"),
        };
        let ops = strategy.new_tree(&mut runner).expect("a history").current();
        let counts = check_history(&app, &ops).await;
        app.stop().await;
        for (total, n) in seen.iter_mut().zip(counts) {
            *total += n;
        }
        histories += 1;
    }
    eprintln!("leads per bucket over every window, {histories} histories: {seen:?}");
    assert!(
        reached(&seen) >= MIN_BUCKETS_REACHED,
        "{histories} histories reach at least {MIN_BUCKETS_REACHED} buckets: {seen:?}"
    );
}

const MIN_HISTORIES: usize = 4;
const MAX_HISTORIES: usize = 16;
const MIN_BUCKETS_REACHED: usize = 4;

/// Checks every window of one history; returns how many leads each bucket held, over all.
async fn check_history(app: &TestApp, ops: &[Op]) -> [i64; 12] {
    let mut seen = [0i64; 12];
    let recorded = run(app, ops).await;
    let mut client = forecasts(app).await;
    let marks = &recorded.marks;
    for (i, &(from, before)) in marks.iter().enumerate() {
        for &(to, after) in &marks[i + 1..] {
            if to <= from {
                continue;
            }
            for owner in [None, Some("ana")] {
                let selection = Selection {
                    currency: "EUR".into(),
                    owner: owner.map(str::to_owned),
                };
                let (expected, won_ids) = recorded.expected(&selection, before, after);
                let response = client
                    .get_pipeline_changes(request(
                        from,
                        to,
                        owner,
                        pb::PipelineChangeBucket::Won,
                        1,
                        String::new(),
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("changes {from}..{to}: {e:?}\n{ops:?}"))
                    .into_inner();
                let context = format!("window {before}..{after} owner {owner:?}\n{ops:?}");
                assert_eq!(
                    tally_of(&response.start),
                    expected.start,
                    "start, {context}"
                );
                assert_eq!(tally_of(&response.end), expected.end, "end, {context}");
                assert_eq!(reconciled(&response), tally_of(&response.end), "{context}");
                for (i, (bucket, tally)) in Bucket::ALL.iter().zip(&response.buckets).enumerate() {
                    seen[i] += tally_of(&tally.tally).count;
                    assert_eq!(
                        tally_of(&tally.tally),
                        expected.bucket(*bucket),
                        "{bucket:?}, {context}"
                    );
                }
                // The WON leads, one per page.
                let mut listed = Vec::new();
                let mut page = response;
                loop {
                    listed.extend(page.leads.iter().map(|l| l.lead_id.clone()));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    page = client
                        .get_pipeline_changes(request(
                            from,
                            to,
                            owner,
                            pb::PipelineChangeBucket::Won,
                            1,
                            page.next_page_token.clone(),
                        ))
                        .await
                        .expect("next page")
                        .into_inner();
                }
                assert_eq!(listed, won_ids, "won leads, {context}");
            }
        }
    }
    seen
}

async fn a_created_increased_and_won_lead_is_new_and_won(app: TestApp) {
    let mut lead = create(&app, new_pb_lead(Some(100), false)).await;
    let untouched = create(&app, new_pb_lead(Some(40), false)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let start = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Open at the start: cut from 100 to 10, then won.
    lead.amount = Some(money("EUR", 10));
    let lead = update_lead(&app, lead, &["amount"]).await;
    for stage in ["qualification", "proposal", "negotiation", "closed_won"] {
        move_to(&app, &lead.id, stage).await.expect("move");
    }
    // Created, raised from 5 to 70, and won inside the window.
    let mut fresh = create(&app, new_pb_lead(Some(5), false)).await;
    fresh.amount = Some(money("EUR", 70));
    let fresh = update_lead(&app, fresh, &["amount"]).await;
    for stage in ["qualification", "proposal", "negotiation", "closed_won"] {
        move_to(&app, &fresh.id, stage).await.expect("move");
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let end = Utc::now();

    let mut client = forecasts(&app).await;
    let response = client
        .get_pipeline_changes(request(
            start,
            end,
            None,
            pb::PipelineChangeBucket::Won,
            10,
            String::new(),
        ))
        .await
        .expect("changes")
        .into_inner();
    let units = |bucket: pb::PipelineChangeBucket| {
        let b = response
            .buckets
            .iter()
            .find(|b| b.bucket == bucket as i32)
            .expect("every bucket is reported");
        let t = b.tally.as_ref().unwrap();
        (t.count, t.amount.as_ref().unwrap().units)
    };
    assert_eq!(
        tally_of(&response.start),
        Tally {
            count: 2,
            amount: to_nanos(140, 0)
        }
    );
    assert_eq!(units(pb::PipelineChangeBucket::New), (1, 70));
    assert_eq!(units(pb::PipelineChangeBucket::Won), (2, 80));
    assert_eq!(units(pb::PipelineChangeBucket::Decreased), (1, 90));
    assert_eq!(units(pb::PipelineChangeBucket::Increased), (0, 0));
    assert_eq!(
        tally_of(&response.end),
        Tally {
            count: 1,
            amount: to_nanos(40, 0)
        }
    );
    let mut won: Vec<(String, i64, Option<i64>, i64)> = response
        .leads
        .iter()
        .map(|l| {
            (
                l.lead_id.clone(),
                l.amount.as_ref().unwrap().units,
                l.before.as_ref().map(|b| b.amount.as_ref().unwrap().units),
                l.after.as_ref().unwrap().amount.as_ref().unwrap().units,
            )
        })
        .collect();
    won.sort();
    let mut want = vec![
        (lead.id.clone(), 10, Some(100), 10),
        (fresh.id.clone(), 70, None, 70),
    ];
    want.sort();
    assert_eq!(won, want);
    assert!(response.leads.iter().all(|l| l.lead_id != untouched.id));
}

async fn requests_are_checked(app: TestApp) {
    let mut client = forecasts(&app).await;
    let now = Utc::now();
    let status = client
        .get_pipeline_changes(pb::GetPipelineChangesRequest {
            currency_code: "EURO".into(),
            page_size: -1,
            bucket: 99,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = bad_request_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        vec!["bucket", "currency_code", "page_size", "start_time"]
    );

    let later = request(
        now,
        now - chrono::Duration::hours(1),
        None,
        pb::PipelineChangeBucket::Unspecified,
        0,
        String::new(),
    );
    let status = client
        .get_pipeline_changes(later)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["start_time"]);

    let future = request(
        now,
        now + chrono::Duration::days(1),
        None,
        pb::PipelineChangeBucket::Unspecified,
        0,
        String::new(),
    );
    let status = client
        .get_pipeline_changes(future)
        .await
        .expect_err("refused");
    assert_eq!(bad_request_fields(&status), vec!["end_time"]);

    let mut token = request(
        now - chrono::Duration::days(1),
        now,
        None,
        pb::PipelineChangeBucket::Won,
        0,
        "garbage".into(),
    );
    let status = client
        .get_pipeline_changes(token.clone())
        .await
        .expect_err("refused");
    assert_eq!(bad_request_fields(&status), vec!["page_token"]);

    token.pipeline_id = "nope".into();
    token.page_token = String::new();
    let status = client
        .get_pipeline_changes(token)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::NotFound);
}
