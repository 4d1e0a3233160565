//! `leadpipe import`, `export` and `demo`: the real binary against the database of a running
//! server, checked through the gRPC API.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::{Role, TestApp, create, create_key, money, move_to, new_lead, update_lead};
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;

on_both_backends!(
    import_reports_bad_rows_by_line_and_imports_the_rest,
    export_then_import_round_trips,
    demo_seeds_a_pipeline_that_metrics_and_forecasts_use,
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

async fn all_leads(app: &TestApp, filter: &str) -> Vec<pb::Lead> {
    let page = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: filter.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list leads")
        .into_inner();
    assert!(page.next_page_token.is_empty());
    page.leads
}

fn by_external_id(leads: Vec<pb::Lead>) -> BTreeMap<String, pb::Lead> {
    leads
        .into_iter()
        .map(|l| (l.external_id.clone(), l))
        .collect()
}

const HEADER: &str = "external_id,title,contact_email,owner,source,stage,currency,amount,bant_budget,labels,created_at,stage_entered_at,history,bant_need\n";

async fn import_reports_bad_rows_by_line_and_imports_the_rest(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leads.csv");
    let rows = [
        // line 2: a full history
        "crm-1,Globex expansion,hank@globex.example,alice,referral,,EUR,30000,,region=emea,,,lead_generation@2026-06-02T09:00:00Z > qualification@2026-06-09T09:00:00Z > proposal@2026-07-01T09:00:00Z,",
        // line 3: the server refuses the e-mail address
        "crm-2,Bad mail,not-an-email,bob,web,,,,,,,,,",
        // line 4: not a number
        "crm-3,Bad amount,,bob,web,,EUR,\"12,5\",,,,,,",
        // line 5: a stage the pipeline does not have
        "crm-4,Nowhere,,bob,web,,,,,,,,lead_generation@2026-06-02 > nowhere@2026-06-03,",
        // line 6: too few fields
        "crm-5,Short row,,bob",
        // line 7: a stage with its entry times, and a need over two lines
        "crm-6,Initech pilot,,carol,event,negotiation,EUR,8000.50,9000 USD,region=na;tier=gold,2026-05-11,2026-06-03T10:00:00Z,,\"Faster invoicing,\nand fewer errors\"",
        // line 9: no title
        "crm-7,,,dave,web,,,,,,,,,",
        // line 10: created in the future
        "crm-8,Time traveller,,dave,web,,,,,,2999-01-01,,,",
        // line 11: only the required columns' values
        "crm-9,Minimal,,,,,,,,,,,,",
    ];
    std::fs::write(&file, format!("{HEADER}{}\n", rows.join("\n"))).unwrap();
    let path = file.to_str().unwrap();

    let output = leadpipe(&app, &["import", path]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        text(&output.stdout).trim(),
        "9 rows: 3 imported, 0 already imported, 6 refused"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{path}:3: contact_email: \"not-an-email\" is not a valid e-mail address"),
        format!("{path}:4: amount: \"12,5\" is not a non-negative decimal number"),
        format!("{path}:5: history: stage \"nowhere\" is not in the pipeline"),
        format!("{path}:6: has 4 fields, but the header has 14"),
        format!("{path}:9: title: is required"),
        format!("{path}:10: created_at: is in the future"),
    ];
    assert_eq!(lines.len(), expected.len(), "stderr: {stderr}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(expected.as_str()),
            "{line:?} should start with {expected:?}"
        );
    }

    let leads = by_external_id(all_leads(&app, "").await);
    assert_eq!(
        leads.keys().collect::<Vec<_>>(),
        ["crm-1", "crm-6", "crm-9"]
    );
    let globex = &leads["crm-1"];
    assert_eq!(globex.stage, "proposal");
    assert_eq!(globex.labels["region"], "emea");
    let history = common::stage_changes(&app, &globex.id).await;
    assert_eq!(
        common::stage_path(&history),
        [
            ("".into(), "lead_generation".into()),
            ("lead_generation".into(), "qualification".into()),
            ("qualification".into(), "proposal".into()),
        ]
    );
    assert!(
        history
            .iter()
            .all(|c| c.imported && c.actor == "cli:import")
    );

    let initech = &leads["crm-6"];
    assert_eq!(initech.stage, "negotiation");
    assert_eq!(
        initech.amount,
        Some(pb::Money {
            currency_code: "EUR".into(),
            units: 8000,
            nanos: 500_000_000
        })
    );
    let bant = initech.bant.clone().unwrap();
    assert_eq!(bant.budget, Some(money("USD", 9000)));
    assert_eq!(bant.need, "Faster invoicing,\nand fewer errors");
    assert_eq!(initech.labels.len(), 2);
    assert_eq!(initech.create_time.unwrap().seconds, 1_778_457_600); // 2026-05-11T00:00:00Z
    assert_eq!(initech.stage_enter_time.unwrap().seconds, 1_780_480_800); // 2026-06-03T10:00:00Z
    let path_of_initech = common::stage_path(&common::stage_changes(&app, &initech.id).await);
    assert_eq!(
        path_of_initech,
        [
            ("".into(), "lead_generation".into()),
            ("lead_generation".into(), "negotiation".into()),
        ]
    );
    // No stage and no times: created now, in the first stage.
    assert_eq!(leads["crm-9"].stage, "lead_generation");

    // Running it again adds nothing: the good rows are already imported.
    let again = leadpipe(&app, &["import", path]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        text(&again.stdout).trim(),
        "9 rows: 0 imported, 3 already imported, 6 refused"
    );
    assert_eq!(all_leads(&app, "").await.len(), 3);

    // A file the importer cannot read at all is an error, not a report.
    let bad_header = dir.path().join("bad.csv");
    std::fs::write(&bad_header, "external_id,title,ammount\nx,y,1\n").unwrap();
    let output = leadpipe(&app, &["import", bad_header.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("line 1: unknown column \"ammount\""));
}

async fn export_then_import_round_trips(app: TestApp) {
    // A lead made through the API, moved to proposal, with awkward label values and money.
    let mut lead = new_lead("Acme renewal; phase 2");
    lead.owner = "sam".into();
    lead.contact_name = "Dana Smith".into();
    lead.amount = Some(pb::Money {
        currency_code: "EUR".into(),
        units: 12000,
        nanos: 250_000_000,
    });
    lead.labels = [
        ("region".to_string(), "emea".to_string()),
        ("note".to_string(), r"a;b=c\d".to_string()),
    ]
    .into();
    let acme = create(&app, lead).await;
    let mut bant = move_to(&app, &acme.id, "qualification").await.unwrap();
    bant.bant = Some(pb::Bant {
        budget: Some(money("USD", 20000)),
        authority: "Dana Smith, CFO".into(),
        need: "Month-end close, \"9 days\"".into(),
        timeline: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
    });
    update_lead(&app, bant, &["bant"]).await;
    move_to(&app, &acme.id, "proposal").await.unwrap();
    create(&app, new_lead("Bare lead")).await;
    // And one imported from another system, lost.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.csv");
    std::fs::write(
        &source,
        "external_id,title,lost_reason,history\ncrm-1,Globex,No budget,lead_generation@2026-06-02T09:00:00.123456Z > closed_lost@2026-06-05T09:00:00Z\n",
    )
    .unwrap();
    assert!(
        leadpipe(&app, &["import", source.to_str().unwrap()])
            .status
            .success()
    );

    let first = dir.path().join("first.csv");
    let output = leadpipe(&app, &["export", "--output", first.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr).trim(), "exported 3 leads");

    // Into another tenant, and out again: the same file.
    let output = leadpipe(
        &app,
        &["import", "--tenant", "copy", first.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).trim(),
        "3 rows: 3 imported, 0 already imported, 0 refused"
    );
    let output = leadpipe(&app, &["export", "--tenant", "copy"]);
    assert!(output.status.success());
    let exported = std::fs::read_to_string(&first).unwrap();
    assert_eq!(text(&output.stdout), exported);
    assert!(exported.starts_with("external_id,title,company,"));

    // Through the API, the copy matches the original lead for lead.
    let key = create_key(&app, "copy", Role::Reader).await;
    let mut copy = app.clients_for(&key).await;
    let copied = copy
        .leads
        .list_leads(pb::ListLeadsRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .leads;
    let original = all_leads(&app, "").await;
    assert_eq!(copied.len(), 3);
    for (copy, original) in copied.iter().zip(&original) {
        let same = |l: &pb::Lead| {
            (
                l.title.clone(),
                l.stage.clone(),
                l.amount.clone(),
                l.bant.clone(),
                l.labels.clone(),
                l.create_time,
                l.stage_enter_time,
                l.close_time,
                l.lost_reason.clone(),
            )
        };
        assert_eq!(same(copy), same(original));
    }
    let acme_copy = copied.iter().find(|l| l.title.starts_with("Acme")).unwrap();
    assert_eq!(acme_copy.external_id, acme.id);
    let copied_path = copy
        .leads
        .list_stage_changes(pb::ListStageChangesRequest {
            lead_id: acme_copy.id.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .stage_changes;
    let original_path = common::stage_changes(&app, &acme.id).await;
    let times = |c: &[pb::StageChange]| {
        c.iter()
            .map(|c| (c.to_stage.clone(), c.change_time))
            .collect::<Vec<_>>()
    };
    assert_eq!(times(&copied_path), times(&original_path));

    // Only what a filter selects.
    let output = leadpipe(&app, &["export", "--filter", "stage = \"closed_lost\""]);
    let lost = text(&output.stdout);
    assert_eq!(lost.lines().count(), 2, "{lost}");
    assert!(lost.lines().nth(1).unwrap().starts_with("crm-1,Globex,"));
    let output = leadpipe(&app, &["export", "--filter", "stage = "]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).starts_with("error: --filter: at position"));
}

async fn demo_seeds_a_pipeline_that_metrics_and_forecasts_use(app: TestApp) {
    let output = leadpipe(&app, &["demo", "--leads", "800", "--seed", "7"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.starts_with("Seeded tenant default with 800 leads ("),
        "{said}"
    );

    let leads = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: "stage = \"negotiation\"".into(),
            order_by: "win_probability desc".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        leads.total_size > 5,
        "{} leads in negotiation",
        leads.total_size
    );
    // Learned, not the configured 0.70 for every lead: attributes move the number.
    let first = leads.leads.first().unwrap().win_probability;
    let last = leads.leads.last().unwrap().win_probability;
    assert!(first > last, "{first} > {last}");

    let mut forecasts = ForecastServiceClient::new(app.channel().await);
    let metrics = forecasts
        .get_pipeline_metrics(pb::GetPipelineMetricsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        (0.1..0.5).contains(&metrics.win_rate),
        "win rate {}",
        metrics.win_rate
    );
    assert!(!metrics.bottleneck_stage.is_empty());
    let stuck = forecasts
        .list_stuck_leads(pb::ListStuckLeadsRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stuck.total_size >= 10, "{} stuck leads", stuck.total_size);
    let forecast = forecasts
        .get_forecast(pb::GetForecastRequest {
            currency_code: "EUR".into(),
            period: pb::Period::Month as i32,
            horizon_periods: 3,
            seed: 42,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p50: i64 = forecast
        .periods
        .iter()
        .map(|p| p.p50_amount.as_ref().map_or(0, |m| m.units))
        .sum();
    assert!(p50 > 0, "{forecast:?}");

    // A second run refuses rather than mixing demo data into a tenant that has leads.
    let again = leadpipe(&app, &["demo"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("tenant default already has 800 leads"),
        "{}",
        text(&again.stderr)
    );
}
