//! Re-importing leads imported before, with updates: `leadpipe import --update` on a CRM's
//! week-2 export and `ImportLeads` with `update_existing`. What the source adds becomes
//! revisions, stage changes and streamed events; a history that disagrees with the stored one
//! is refused; running it again changes nothing; a write failing half-way leaves nothing of it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::history::{change, import, import_request, ts};
use common::*;
use leadpipe::grpc::pb;
use prost_types::FieldMask;

use crate::revisions::revisions;

on_both_backends!(
    a_week_two_export_updates_leads_as_revisions,
    update_existing_over_grpc,
    a_failing_write_mid_update_leaves_no_half_applied_lead,
);

fn leadpipe(app: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args(args)
        .env("LEADPIPE_DATABASE_URL", &app.database_url)
        .output()
        .expect("run leadpipe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + Duration::days(n)
}

const STAGES: [(&str, &str); 4] = [
    ("appointment_scheduled", "Appointment Scheduled"),
    ("qualified_to_buy", "Qualified To Buy"),
    ("presentation_scheduled", "Presentation Scheduled"),
    ("contract_sent", "Contract Sent"),
];

/// A HubSpot deal: id, amount, close date, and the days it entered each stage (by index).
struct Deal {
    id: &'static str,
    amount: i64,
    close: i64,
    entered: Vec<(usize, i64)>,
}

/// A HubSpot deals export of `deals`, as the CRM writes it.
fn hubspot(dir: &Path, name: &str, deals: &[Deal]) -> PathBuf {
    let minute = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    let mut header = vec![
        "Record ID".to_string(),
        "Deal Name".into(),
        "Deal Stage".into(),
        "Pipeline".into(),
        "Amount".into(),
        "Close Date".into(),
        "Deal owner".into(),
    ];
    for (_, name) in STAGES {
        header.push(format!("Date entered \"{name} (Sales Pipeline)\""));
    }
    let mut lines = vec![header.join(",")];
    for deal in deals {
        let (last, _) = *deal.entered.last().unwrap();
        let mut row = vec![
            deal.id.to_string(),
            format!("Deal {}", deal.id),
            STAGES[last].1.to_string(),
            "Sales Pipeline".into(),
            format!("{}.00", deal.amount),
            minute(day(deal.close)),
            "Ann Lee".into(),
        ];
        for stage in 0..STAGES.len() {
            row.push(
                deal.entered
                    .iter()
                    .find(|(s, _)| *s == stage)
                    .map(|(_, d)| minute(day(*d)))
                    .unwrap_or_default(),
            );
        }
        lines.push(row.join(","));
    }
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\r\n", lines.join("\r\n"))).unwrap();
    path
}

async fn lead_by_external_id(app: &TestApp, external_id: &str) -> pb::Lead {
    let page = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: format!("external_id = {external_id:?}"),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.leads.len(), 1, "{external_id}");
    page.leads.into_iter().next().unwrap()
}

fn kinds(
    revisions: &[pb::LeadRevision],
) -> Vec<(i64, pb::LeadRevisionKind, Option<prost_types::Timestamp>)> {
    revisions
        .iter()
        .map(|r| {
            (
                r.revision,
                pb::LeadRevisionKind::try_from(r.kind).unwrap(),
                r.change_time,
            )
        })
        .collect()
}

fn paths(mask: &Option<FieldMask>) -> Vec<String> {
    mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default()
}

/// The events of every lead write after `after`, up to and including `count` of them.
async fn lead_events(app: &TestApp, after: i64, count: usize) -> Vec<pb::LeadChangeEvent> {
    let mut stream = app
        .leads
        .clone()
        .watch_lead_changes(pb::WatchLeadChangesRequest {
            after_sequence: Some(after),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await
            .expect("an event arrives")
            .expect("stream healthy")
            .expect("stream open");
        events.push(event);
    }
    events
}

/// Creates a lead titled `title` and returns its creation's sequence: every event after it
/// came later.
async fn marker(app: &TestApp, title: &str) -> i64 {
    let lead = create(app, new_lead(title)).await;
    let mut stream = app
        .leads
        .clone()
        .watch_lead_changes(pb::WatchLeadChangesRequest {
            after_sequence: Some(0),
            lead_id: lead.id.clone(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
        .await
        .expect("an event arrives")
        .expect("stream healthy")
        .expect("stream open")
        .sequence
}

/// The lead without its win probability, which the rescoring after an import may change.
fn shape(lead: &pb::Lead) -> pb::Lead {
    pb::Lead {
        win_probability: 0.0,
        ..lead.clone()
    }
}

async fn a_week_two_export_updates_leads_as_revisions(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let week1 = vec![
        // Progresses in week 2.
        Deal {
            id: "101",
            amount: 5000,
            close: 30,
            entered: vec![(0, 0)],
        },
        // Its amount and close date change in week 2.
        Deal {
            id: "102",
            amount: 8000,
            close: 40,
            entered: vec![(0, 0), (1, 2)],
        },
        // Its history diverges in week 2: the qualification's date moved.
        Deal {
            id: "103",
            amount: 1000,
            close: 20,
            entered: vec![(0, 1), (1, 3)],
        },
        // Unchanged.
        Deal {
            id: "104",
            amount: 2000,
            close: 25,
            entered: vec![(0, 1)],
        },
    ];
    let file = hubspot(dir.path(), "week1.csv", &week1);
    let output = leadpipe(
        &app,
        &["import", "--preset", "hubspot", file.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let before: Vec<pb::Lead> = {
        let mut leads = Vec::new();
        for id in ["101", "102", "103", "104"] {
            leads.push(lead_by_external_id(&app, id).await);
        }
        leads
    };
    let start = marker(&app, "before week 2").await;

    let week2 = vec![
        Deal {
            id: "101",
            amount: 5000,
            close: 30,
            entered: vec![(0, 0), (1, 9), (2, 11)],
        },
        Deal {
            id: "102",
            amount: 7500,
            close: 45,
            entered: vec![(0, 0), (1, 2)],
        },
        Deal {
            id: "103",
            amount: 1000,
            close: 20,
            entered: vec![(0, 1), (1, 4)],
        },
        Deal {
            id: "104",
            amount: 2000,
            close: 25,
            entered: vec![(0, 1)],
        },
    ];
    let file = hubspot(dir.path(), "week2.csv", &week2);
    let file = file.to_str().unwrap();

    // Without --update: counted, hinted at, and nothing changes.
    let output = leadpipe(&app, &["import", "--preset", "hubspot", file]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(
        stdout.lines().next().unwrap(),
        "4 rows read: 0 imported, 1 unchanged, 3 changed since imported, 0 refused"
    );
    assert!(stdout.contains("--update"), "{stdout}");
    // A dry run counts what would be updated and writes nothing.
    let output = leadpipe(
        &app,
        &[
            "import",
            "--preset",
            "hubspot",
            "--update",
            "--dry-run",
            file,
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).lines().next().unwrap(),
        "4 rows read: 0 would be imported, 2 would be updated, 1 unchanged, 1 refused"
    );
    for (lead, id) in before.iter().zip(["101", "102", "103", "104"]) {
        assert_eq!(
            shape(&lead_by_external_id(&app, id).await),
            shape(lead),
            "{id}"
        );
    }

    // With --update: 101 moves twice, 102 gets its new amount and close date, 103 is refused.
    let output = leadpipe(&app, &["import", "--preset", "hubspot", "--update", file]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        text(&output.stdout).lines().next().unwrap(),
        "4 rows read: 0 imported, 2 updated, 1 unchanged, 1 refused"
    );
    assert!(
        stderr.contains(&format!(
            "week2.csv:4: history: entry 2: stored appointment_scheduled→qualified_to_buy at \
             {}, file has appointment_scheduled→qualified_to_buy at {}; stored history is never \
             rewritten",
            day(3).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            day(4).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )),
        "{stderr}"
    );

    let progressed = lead_by_external_id(&app, "101").await;
    assert_eq!(progressed.stage, "presentation_scheduled");
    assert_eq!(progressed.stage_enter_time, Some(ts(day(11))));
    assert_ne!(progressed.etag, before[0].etag);
    let history = stage_changes(&app, &progressed.id).await;
    assert_eq!(
        history
            .iter()
            .map(|c| (c.to_stage.as_str(), c.change_time, c.imported))
            .collect::<Vec<_>>(),
        [
            ("appointment_scheduled", Some(ts(day(0))), true),
            ("qualified_to_buy", Some(ts(day(9))), true),
            ("presentation_scheduled", Some(ts(day(11))), true),
        ]
    );
    let kept = revisions(&app, &progressed.id).await;
    assert_eq!(
        kinds(&kept),
        [
            (1, pb::LeadRevisionKind::Created, Some(ts(day(0)))),
            (2, pb::LeadRevisionKind::Moved, Some(ts(day(9)))),
            (3, pb::LeadRevisionKind::Moved, Some(ts(day(11)))),
        ]
    );

    let repriced = lead_by_external_id(&app, "102").await;
    assert_eq!(repriced.amount, Some(money("USD", 7500)));
    assert_eq!(repriced.expected_close_time, Some(ts(day(45))));
    assert_eq!(
        repriced.close_date_push_count, 1,
        "a later close date is a push"
    );
    assert_eq!(repriced.stage, "qualified_to_buy");
    let kept = revisions(&app, &repriced.id).await;
    let last = kept.last().unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(
        (paths(&last.changed_fields), last.actor.as_str()),
        (
            vec!["amount".to_string(), "expected_close_time".into()],
            "cli:import"
        )
    );
    assert_eq!(last.lead.as_ref().unwrap().amount, Some(money("USD", 7500)));
    // As of before the import's change, the lead had its old amount.
    let old = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            id: repriced.id.clone(),
            as_of: Some(ts(day(20))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.amount, Some(money("USD", 8000)));

    assert_eq!(
        shape(&lead_by_external_id(&app, "103").await),
        shape(&before[2])
    );
    assert_eq!(
        shape(&lead_by_external_id(&app, "104").await),
        shape(&before[3])
    );

    // Every change was streamed: the moves on both streams.
    let events = lead_events(&app, start, 3).await;
    let seen: Vec<(String, String, Vec<String>)> = events
        .iter()
        .map(|e| {
            let stage = |l: &Option<pb::Lead>| l.as_ref().map(|l| l.stage.clone()).unwrap();
            (
                e.lead.as_ref().unwrap().external_id.clone(),
                format!("{}→{}", stage(&e.previous_lead), stage(&e.lead)),
                paths(&e.changed_fields),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "101".to_string(),
                "appointment_scheduled→qualified_to_buy".to_string(),
                vec!["stage".to_string()]
            ),
            (
                "101".into(),
                "qualified_to_buy→presentation_scheduled".into(),
                vec!["stage".into()]
            ),
            (
                "102".into(),
                "qualified_to_buy→qualified_to_buy".into(),
                vec!["amount".into(), "expected_close_time".into()]
            ),
        ]
    );
    let mut stages = app
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest {
            after_sequence: Some(start),
            ..Default::default()
        })
        .await
        .expect("watch stages")
        .into_inner();
    for to in ["qualified_to_buy", "presentation_scheduled"] {
        let event = next_event(&mut stages).await;
        assert_eq!(
            (event.lead_id.as_str(), event.to_stage.as_str()),
            (progressed.id.as_str(), to)
        );
    }

    // The same export again: nothing left to do.
    let output = leadpipe(&app, &["import", "--preset", "hubspot", "--update", file]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).lines().next().unwrap(),
        "4 rows read: 0 imported, 0 updated, 3 unchanged, 1 refused"
    );
    assert_eq!(revisions(&app, &progressed.id).await.len(), 3);
    assert_eq!(revisions(&app, &repriced.id).await.len(), 3);
}

fn edit(at: DateTime<Utc>, units: i64, actor: &str) -> pb::ImportedRevision {
    pb::ImportedRevision {
        change_time: Some(ts(at)),
        lead: Some(pb::Lead {
            amount: Some(money("EUR", units)),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["amount".into()],
        }),
        actor: actor.into(),
    }
}

async fn update_existing_over_grpc(app: TestApp) {
    let now = app.clock.now();
    let t = |days: i64| now - Duration::days(60) + Duration::days(days);
    let first = vec![
        change("", "lead_generation", t(0)),
        change("lead_generation", "qualification", t(5)),
    ];
    let mut week1 = import_request("crm-1", 100_000, first.clone());
    week1.revisions = vec![edit(t(3), 90_000, "crm:ann")];
    let response = import(&app, vec![week1.clone()]).await;
    assert_eq!((response.imported, response.failed), (1, 0), "{response:?}");
    let stored = lead_by_external_id(&app, "crm-1").await;
    let created = revisions(&app, &stored.id).await;
    assert_eq!(created.len(), 3);
    let importer = created[0].actor.clone();

    let mut later = first.clone();
    later.push(change("qualification", "proposal", t(20)));
    let mut week2 = import_request("crm-1", 100_000, later);
    week2.revisions = vec![
        edit(t(3), 90_000, "crm:ann"),
        edit(t(25), 120_000, "crm:bo"),
    ];
    week2.lead.as_mut().unwrap().title = "renamed in the CRM".into();
    week2.lead.as_mut().unwrap().update_time = Some(ts(t(30)));

    // Without update_existing: counted as differing, left alone.
    let response = import(&app, vec![week2.clone()]).await;
    assert_eq!(
        (
            response.already_imported,
            response.differing,
            response.updated
        ),
        (1, 1, 0)
    );
    assert_eq!(
        shape(&lead_by_external_id(&app, "crm-1").await),
        shape(&stored)
    );

    week2.update_existing = true;
    // A field change older than the stored lead's last change that disagrees with it, and a
    // modification time before the stored changes: refused, naming the entry.
    let mut rewrites = week2.clone();
    rewrites.revisions[0] = edit(t(3), 95_000, "crm:ann");
    let mut too_early = week2.clone();
    too_early.lead.as_mut().unwrap().update_time = Some(ts(t(4)));
    too_early.revisions.pop();
    too_early.history.pop();
    let response = import(&app, vec![rewrites, too_early]).await;
    assert_eq!((response.failed, response.updated), (2, 0), "{response:?}");
    assert_eq!(response.errors[0].field, "revisions[0]");
    assert!(
        response.errors[0].reason.contains("never rewritten"),
        "{:?}",
        response.errors[0]
    );
    assert_eq!(response.errors[1].field, "lead.update_time");
    assert_eq!(
        shape(&lead_by_external_id(&app, "crm-1").await),
        shape(&stored)
    );

    let start = marker(&app, "before the update").await;
    let response = import(&app, vec![week2.clone()]).await;
    assert_eq!((response.updated, response.failed), (1, 0), "{response:?}");
    let updated = lead_by_external_id(&app, "crm-1").await;
    assert_eq!(updated.title, "renamed in the CRM");
    assert_eq!(updated.amount, Some(money("EUR", 120_000)));
    assert_eq!(updated.stage, "proposal");
    assert_eq!(updated.update_time, Some(ts(t(30))));
    let kept = revisions(&app, &updated.id).await;
    let tail: Vec<_> = kept[3..]
        .iter()
        .map(|r| {
            (
                pb::LeadRevisionKind::try_from(r.kind).unwrap(),
                r.change_time,
                r.actor.clone(),
                paths(&r.changed_fields),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            (
                pb::LeadRevisionKind::Moved,
                Some(ts(t(20))),
                importer.clone(),
                vec!["stage".to_string()]
            ),
            (
                pb::LeadRevisionKind::Updated,
                Some(ts(t(25))),
                "crm:bo".into(),
                vec!["amount".into()]
            ),
            (
                pb::LeadRevisionKind::Updated,
                Some(ts(t(30))),
                importer.clone(),
                vec!["title".into()]
            ),
        ]
    );
    let history = stage_changes(&app, &updated.id).await;
    let last = history.last().unwrap();
    assert_eq!(
        (last.to_stage.as_str(), last.actor.as_str(), last.imported),
        ("proposal", "crm", true)
    );
    assert_eq!(lead_events(&app, start, 3).await.len(), 3);

    // Again: unchanged.
    let response = import(&app, vec![week2]).await;
    assert_eq!(
        (
            response.already_imported,
            response.updated,
            response.differing
        ),
        (1, 0, 0)
    );
    assert_eq!(revisions(&app, &updated.id).await.len(), kept.len());
}

async fn a_failing_write_mid_update_leaves_no_half_applied_lead(app: TestApp) {
    use sea_orm::ConnectionTrait;

    let now = app.clock.now();
    let t = |days: i64| now - Duration::days(60) + Duration::days(days);
    let first = vec![change("", "lead_generation", t(0))];
    let response = import(&app, vec![import_request("crm-9", 100_000, first.clone())]).await;
    assert_eq!(response.imported, 1);
    let stored = lead_by_external_id(&app, "crm-9").await;
    let history = stage_changes(&app, &stored.id).await;
    let kept = revisions(&app, &stored.id).await;

    // The move is written first; the field change after it fails.
    let database = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let inject = match app.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER leadpipe_test_fail_update BEFORE INSERT ON lead_revisions
             WHEN NEW.kind = 'updated' AND NEW.lead_id = '{}'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            stored.id
        ),
        Backend::Postgres => format!(
            "CREATE FUNCTION leadpipe_test_fail_update() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.kind = 'updated' AND NEW.lead_id = '{}' THEN
                 RAISE EXCEPTION 'injected I/O error' USING ERRCODE = '58030';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER leadpipe_test_fail_update BEFORE INSERT ON lead_revisions
               FOR EACH ROW EXECUTE FUNCTION leadpipe_test_fail_update();",
            stored.id
        ),
    };
    database.execute_unprepared(&inject).await.unwrap();

    let mut later = first.clone();
    later.push(change("lead_generation", "qualification", t(10)));
    let mut row = import_request("crm-9", 150_000, later);
    row.update_existing = true;
    let failed = app
        .leads
        .clone()
        .import_leads(tokio_stream::iter(vec![row.clone()]))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    marker(&app, "after the failure").await;

    let drop = match app.backend {
        Backend::Sqlite => "DROP TRIGGER leadpipe_test_fail_update",
        Backend::Postgres => "DROP TRIGGER leadpipe_test_fail_update ON lead_revisions",
    };
    database.execute_unprepared(drop).await.unwrap();
    // Nothing of the update is there: not the lead's new stage, not the move written before
    // the failure, not its revision, not its event.
    assert_eq!(
        shape(&lead_by_external_id(&app, "crm-9").await),
        shape(&stored)
    );
    assert_eq!(stage_changes(&app, &stored.id).await, history);
    assert_eq!(revisions(&app, &stored.id).await, kept);
    let events = lead_events(&app, 0, 1).await;
    assert_eq!(
        events[0].lead.as_ref().unwrap().title,
        "after the failure",
        "the marker's creation is the first event: the failed update left none"
    );

    // Once writes succeed again, the same row applies whole.
    let response = wait_for_import(&app, row).await;
    assert_eq!(response.updated, 1, "{response:?}");
    let updated = lead_by_external_id(&app, "crm-9").await;
    assert_eq!(
        (updated.stage.as_str(), updated.amount.clone()),
        ("qualification", Some(money("EUR", 150_000)))
    );
    assert_eq!(revisions(&app, &stored.id).await.len(), kept.len() + 2);
    assert_eq!(
        stage_changes(&app, &stored.id).await.len(),
        history.len() + 1
    );
}

/// Imports `row`, retrying while the server reports writes unavailable after the injected
/// failure (PostgreSQL's I/O error turns health NOT_SERVING until writes commit again).
async fn wait_for_import(app: &TestApp, row: pb::ImportLeadsRequest) -> pb::ImportLeadsResponse {
    let mut last = None;
    for _ in 0..50 {
        match app
            .leads
            .clone()
            .import_leads(tokio_stream::iter(vec![row.clone()]))
            .await
        {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                last = Some(status);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    panic!("writes did not recover: {last:?}");
}
