//! ImportLeads with earlier field changes: each becomes a lead revision at its time, between the
//! imported stage changes, so the lead as of any past time, and every report as of it, reads
//! the values known then.

use crate::common;

use chrono::{DateTime, Duration, Utc};
use common::history::{change, forecasts, import, ts};
use common::*;
use leadpipe::grpc::pb;
use prost_types::FieldMask;

use crate::revisions::revisions;

on_both_backends!(
    imported_field_changes_become_revisions,
    bad_revisions_are_refused_naming_the_entry,
    a_backtest_reads_the_imported_amount_known_at_as_of,
);

fn edit(at: DateTime<Utc>, lead: pb::Lead, paths: &[&str], actor: &str) -> pb::ImportedRevision {
    pb::ImportedRevision {
        change_time: Some(ts(at)),
        lead: Some(lead),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        actor: actor.into(),
    }
}

fn amount(units: i64) -> pb::Lead {
    pb::Lead {
        amount: Some(money("EUR", units)),
        ..Default::default()
    }
}

fn request(
    external_id: &str,
    history: Vec<pb::ImportedStageChange>,
    revisions: Vec<pb::ImportedRevision>,
) -> pb::ImportLeadsRequest {
    let mut request = common::history::import_request(external_id, 100_000, history);
    request.revisions = revisions;
    request
}

async fn get_as_of(app: &TestApp, id: &str, as_of: DateTime<Utc>) -> pb::Lead {
    app.leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            id: id.into(),
            as_of: Some(ts(as_of)),
        })
        .await
        .expect("get as of")
        .into_inner()
}

fn paths(revision: &pb::LeadRevision) -> Vec<String> {
    revision
        .changed_fields
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default()
}

async fn imported_field_changes_become_revisions(app: TestApp) {
    let now = Utc::now();
    let days_ago = |n: i64| now - Duration::days(n);
    let planned = days_ago(2);
    let pushed = days_ago(2) + Duration::days(30);
    let mut created = request(
        "crm-7",
        vec![
            change("", "lead_generation", days_ago(30)),
            change("lead_generation", "qualification", days_ago(20)),
        ],
        vec![
            edit(days_ago(25), amount(80_000), &["amount"], "sam"),
            // At the time of the move: applied after it.
            edit(
                days_ago(20),
                pb::Lead {
                    expected_close_time: Some(ts(pushed)),
                    ..Default::default()
                },
                &["expected_close_time"],
                "",
            ),
            // The amount it already had: no revision.
            edit(days_ago(15), amount(80_000), &["amount"], "sam"),
            edit(
                days_ago(10),
                pb::Lead {
                    owner: "kim".into(),
                    labels: [("region".to_string(), "emea".to_string())].into(),
                    // Not in the mask: ignored.
                    title: "renamed".into(),
                    ..Default::default()
                },
                &["owner", "labels.region"],
                "",
            ),
        ],
    );
    created.lead.as_mut().unwrap().expected_close_time = Some(ts(planned));
    let response = import(&app, vec![created]).await;
    assert_eq!(response.imported, 1, "{:?}", response.errors);

    let lead = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .leads
        .remove(0);
    assert_eq!(lead.amount, Some(money("EUR", 80_000)));
    assert_eq!(lead.owner, "kim");
    assert_eq!(lead.labels.get("region").map(String::as_str), Some("emea"));
    assert_eq!(lead.title, "imported crm-7");
    assert_eq!(lead.stage, "qualification");
    assert_eq!(lead.expected_close_time, Some(ts(pushed)));
    assert_eq!(lead.first_expected_close_time, Some(ts(planned)));
    assert_eq!(lead.close_date_push_count, 1);
    assert_eq!(lead.update_time, Some(ts(days_ago(10))));
    assert_eq!(lead.etag, "\"5\"", "five revisions: the lead's version");

    let all = revisions(&app, &lead.id).await;
    use pb::LeadRevisionKind as K;
    let summary: Vec<(i64, i32, i64, String)> = all
        .iter()
        .map(|r| {
            (
                r.revision,
                r.kind,
                r.change_time.unwrap().seconds,
                r.actor.clone(),
            )
        })
        .collect();
    let importer = all[0].actor.clone();
    assert_eq!(
        summary,
        [
            (
                1,
                K::Created as i32,
                ts(days_ago(30)).seconds,
                importer.clone()
            ),
            (2, K::Updated as i32, ts(days_ago(25)).seconds, "sam".into()),
            (
                3,
                K::Moved as i32,
                ts(days_ago(20)).seconds,
                importer.clone()
            ),
            (
                4,
                K::Updated as i32,
                ts(days_ago(20)).seconds,
                importer.clone()
            ),
            (5, K::Updated as i32, ts(days_ago(10)).seconds, importer),
        ]
    );
    assert_eq!(paths(&all[1]), ["amount"]);
    assert_eq!(paths(&all[3]), ["expected_close_time"]);
    assert_eq!(paths(&all[4]), ["owner", "labels"]);
    assert_eq!(
        all[4].lead.as_ref().map(|l| l.stage.as_str()),
        Some("qualification")
    );
    assert_eq!(
        all[0].lead.as_ref().and_then(|l| l.amount.clone()),
        Some(money("EUR", 100_000))
    );

    // The lead as it stood between the changes.
    let then = get_as_of(&app, &lead.id, days_ago(27)).await;
    assert_eq!(
        (then.amount, then.stage.as_str(), then.owner.as_str()),
        (Some(money("EUR", 100_000)), "lead_generation", "")
    );
    let then = get_as_of(&app, &lead.id, days_ago(22)).await;
    assert_eq!(
        (
            then.amount,
            then.expected_close_time,
            then.close_date_push_count
        ),
        (Some(money("EUR", 80_000)), Some(ts(planned)), 0)
    );
    let then = get_as_of(&app, &lead.id, days_ago(12)).await;
    assert_eq!(
        (
            then.expected_close_time,
            then.close_date_push_count,
            then.owner.as_str()
        ),
        (Some(ts(pushed)), 1, "")
    );

    // The stage history is the imported one, unchanged by the field changes.
    let stages = stage_changes(&app, &lead.id).await;
    assert_eq!(stage_path(&stages).len(), 2);
}

async fn bad_revisions_are_refused_naming_the_entry(app: TestApp) {
    let now = Utc::now();
    let days_ago = |n: i64| now - Duration::days(n);
    let history = || vec![change("", "lead_generation", days_ago(30))];
    let bad_currency = pb::Lead {
        amount: Some(money("EURO", 5)),
        ..Default::default()
    };
    let cases: Vec<(pb::ImportLeadsRequest, &str)> = vec![
        (
            request(
                "no-history",
                vec![],
                vec![edit(days_ago(1), amount(5), &["amount"], "")],
            ),
            "revisions",
        ),
        (
            request(
                "before-creation",
                history(),
                vec![edit(days_ago(31), amount(5), &["amount"], "")],
            ),
            "revisions[0].change_time",
        ),
        (
            request(
                "out-of-order",
                history(),
                vec![
                    edit(days_ago(5), amount(5), &["amount"], ""),
                    edit(days_ago(6), amount(6), &["amount"], ""),
                ],
            ),
            "revisions[1].change_time",
        ),
        (
            request(
                "future",
                history(),
                vec![edit(now + Duration::days(1), amount(5), &["amount"], "")],
            ),
            "revisions[0].change_time",
        ),
        (
            request(
                "no-mask",
                history(),
                vec![edit(days_ago(5), amount(5), &[], "")],
            ),
            "revisions[0].update_mask",
        ),
        (
            request(
                "stage-in-mask",
                history(),
                vec![edit(days_ago(5), amount(5), &["amount", "stage"], "")],
            ),
            "revisions[0].update_mask.paths[1]",
        ),
        (
            request(
                "bad-amount",
                history(),
                vec![edit(days_ago(5), bad_currency.clone(), &["amount"], "")],
            ),
            "revisions[0].lead.amount.currency_code",
        ),
    ];
    let expected: Vec<(String, String)> = cases
        .iter()
        .map(|(r, field)| (r.external_id.clone(), field.to_string()))
        .collect();
    let mut requests: Vec<pb::ImportLeadsRequest> = cases.into_iter().map(|(r, _)| r).collect();
    // A bad value the mask does not name is not imported, so it is not refused.
    requests.push(request(
        "unmasked-bad-amount",
        history(),
        vec![edit(
            days_ago(5),
            pb::Lead {
                owner: "kim".into(),
                ..bad_currency
            },
            &["owner"],
            "",
        )],
    ));
    let response = import(&app, requests).await;
    let refused: Vec<(String, String)> = response
        .errors
        .iter()
        .map(|e| (e.external_id.clone(), e.field.clone()))
        .collect();
    assert_eq!(refused, expected, "{:?}", response.errors);
    assert_eq!((response.imported, response.failed), (1, 7));
    assert!(
        response
            .errors
            .iter()
            .all(|e| !e.reason.is_empty() && !e.reason.contains("internal")),
        "{:?}",
        response.errors
    );
}

/// The look-ahead check, with the history imported: a lead quoted at 100,000 and cut to 10,000
/// after the backtest's as_of is forecast from 100,000.
async fn a_backtest_reads_the_imported_amount_known_at_as_of(app: TestApp) {
    let now = Utc::now();
    let days_ago = |n: i64| now - Duration::days(n);
    let as_of = days_ago(10);
    let mut cut = request(
        "cut-later",
        vec![change("", "lead_generation", days_ago(60))],
        vec![edit(days_ago(5), amount(10_000), &["amount"], "")],
    );
    // Expected to close inside the first period after as_of.
    cut.lead.as_mut().unwrap().expected_close_time = Some(ts(as_of + Duration::days(3)));
    let response = import(&app, vec![cut]).await;
    assert_eq!(response.imported, 1, "{:?}", response.errors);

    let backtest = forecasts(&app)
        .await
        .backtest_forecast(pb::BacktestForecastRequest {
            as_of: Some(ts(as_of)),
            currency_code: "EUR".into(),
            ..Default::default()
        })
        .await
        .expect("backtest")
        .into_inner();
    // The naive forecast is Σ configured probability (0.1 in lead_generation) × amount.
    let naive: f64 = backtest
        .periods
        .iter()
        .filter_map(|p| p.naive_predicted_amount.as_ref())
        .map(|m| m.units as f64 + m.nanos as f64 / 1e9)
        .sum();
    assert!(
        (naive - 10_000.0).abs() < 0.01,
        "the backtest must use the amount known at as_of (100,000), not today's (10,000): {naive}"
    );
}
