//! `leadpipe import`, `export` and `demo`: the real binary against the database of a running
//! server, checked through the gRPC API.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::{Role, TestApp, all_leads, create, create_key, money, move_to, new_lead, update_lead};
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;

on_both_backends!(
    import_reports_bad_rows_by_line_and_imports_the_rest,
    import_reads_files_as_spreadsheets_and_crms_write_them,
    import_refuses_unreadable_files_once_with_the_reason,
    import_collapses_repeated_errors_and_dry_runs,
    a_mapping_file_reads_an_unknown_layout,
    list_leads_filters_on_external_id_and_title,
    pipelines_travel_with_an_export,
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

fn first_line(bytes: &[u8]) -> String {
    text(bytes).lines().next().unwrap_or_default().to_owned()
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
        first_line(&output.stdout),
        "9 rows read: 3 imported, 0 unchanged, 0 changed since imported, 6 refused"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{path}:3: contact_email: \"not-an-email\" is not a valid e-mail address"),
        format!("{path}:4: amount: \"12,5\" is not a non-negative decimal number"),
        format!(
            "{path}:5: history: entry 2: \"nowhere\" is not a stage of the pipeline; its stages are lead_generation (\"Lead generation\"), "
        ),
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
    // The summary counts the refused rows by reason.
    let said = text(&output.stdout);
    assert!(
        said.contains("refused by reason:\n")
            && said.contains("     1  contact_email: \"…\" is not a valid e-mail address"),
        "{said}"
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
        first_line(&again.stdout),
        "9 rows read: 0 imported, 3 unchanged, 0 changed since imported, 6 refused"
    );
    assert_eq!(all_leads(&app, "").await.len(), 3);

    // A file the importer cannot read at all is an error, not a report.
    let bad_header = dir.path().join("bad.csv");
    std::fs::write(&bad_header, "external_id,title,ammount\nx,y,1\n").unwrap();
    let output = leadpipe(&app, &["import", bad_header.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("line 1: unknown column \"ammount\""));
    assert!(text(&output.stderr).contains("--ignore-unknown-columns"));
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
        "external_id,title,lost_reason,history\ncrm-1,Globex,No budget,lead_generation@2026-06-02T09:00:00.123456Z|by=ann|note=Budget \\> 10k > closed_lost@2026-06-05T09:00:00Z|by=bob\n",
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
        "3 rows read: 3 imported, 0 unchanged, 0 changed since imported, 0 refused"
    );
    let output = leadpipe(&app, &["export", "--tenant", "copy"]);
    assert!(output.status.success());
    let exported = std::fs::read_to_string(&first).unwrap();
    assert_eq!(text(&output.stdout), exported);
    // The source's actors and notes are kept, and exported.
    assert!(
        exported.contains("|by=ann|note=Budget \\> 10k > closed_lost@2026-06-05T09:00:00Z|by=bob"),
        "{exported}"
    );
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

fn import_file(
    app: &TestApp,
    dir: &tempfile::TempDir,
    name: &str,
    bytes: &[u8],
    flags: &[&str],
) -> (Output, String) {
    let file = dir.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    let path = file.to_str().unwrap().to_owned();
    let mut args = vec!["import"];
    args.extend_from_slice(flags);
    args.push(&path);
    (leadpipe(app, &args), path)
}

fn ts_of(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

async fn import_reads_files_as_spreadsheets_and_crms_write_them(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    // As Excel saves it: a byte-order mark, CRLF line ends, semicolons, headers in any case
    // with stray spaces, US dates in the exporter's time zone, amounts with separators.
    let rows = [
        "\u{feff}External_ID; Title ;Owner;Stage;Amount;Currency;Created_At;Close_Date;Lost_Reason;BANT_Need",
        // line 2
        "crm-1;Globex;ann;Closed Won;$12,000;;10/14/2026 09:30;10/20/2026 17:00;;",
        // line 3, over two lines
        "crm-2;Initech pilot;bob;proposal;4,900.00;eur;09/01/2026;12/15/2026;;\"Faster invoicing,\r\nfewer errors\"",
        // line 5: lost, with no time it was lost
        "crm-3;Hooli;carol;Closed Lost;;;09/02/2026;;No budget;",
        // line 6: a stage the pipeline does not have
        "crm-4;Pied Piper;dave;Appointment scheduled;;;09/03/2026;;;",
        // line 7: not a date
        "crm-5;Aviato;erlich;qualification;1,000;USD;13/45/2026;;;",
        // line 8: line 2 again, as exports repeat rows
        "crm-1;Globex;ann;Closed Won;$12,000;;10/14/2026 09:30;10/20/2026 17:00;;",
        // line 9: line 3's id with other content
        "crm-2;Initech changed;bob;proposal;;;09/01/2026;;;",
    ];
    let (output, path) = import_file(
        &app,
        &dir,
        "excel.csv",
        format!("{}\r\n", rows.join("\r\n")).as_bytes(),
        &[
            "--date-format",
            "%m/%d/%Y %H:%M",
            "--date-format",
            "%m/%d/%Y",
            "--timezone",
            "Europe/Berlin",
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        first_line(&output.stdout),
        "7 rows read: 2 imported, 1 unchanged, 0 changed since imported, 4 refused"
    );
    let expected = [
        format!(
            "{path}:5: stage_entered_at: is required for a lead in the closed stage \"closed_lost\""
        ),
        format!(
            "{path}:6: stage: \"Appointment scheduled\" is not a stage of the pipeline; its stages are lead_generation"
        ),
        format!("{path}:7: created_at: \"13/45/2026\" is not a time in a known format"),
        format!("{path}:9: external_id: \"crm-2\" is also on line 3, with different content"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(expected.as_str()),
            "{line:?} should start with {expected:?}"
        );
    }

    let leads = by_external_id(all_leads(&app, "").await);
    assert_eq!(leads.keys().collect::<Vec<_>>(), ["crm-1", "crm-2"]);
    let globex = &leads["crm-1"];
    assert_eq!(globex.stage, "closed_won");
    assert_eq!(globex.amount, Some(money("USD", 12000)));
    // Berlin is two hours ahead of UTC in October until the 25th.
    assert_eq!(globex.create_time, ts_of("2026-10-14T07:30:00Z"));
    assert_eq!(globex.close_time, ts_of("2026-10-20T15:00:00Z"));
    assert_eq!(globex.expected_close_time, None);
    let initech = &leads["crm-2"];
    assert_eq!(initech.stage, "proposal");
    assert_eq!(initech.amount, Some(money("EUR", 4900)));
    // An open lead's close date is when it is expected to close; winter time by then.
    assert_eq!(initech.expected_close_time, ts_of("2026-12-14T23:00:00Z"));
    assert_eq!(
        initech.bant.clone().unwrap().need,
        "Faster invoicing,\nfewer errors"
    );
}

async fn import_refuses_unreadable_files_once_with_the_reason(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    // Windows-1252, as Excel on Windows saves CSV.
    let cp1252 = b"external_id,title\r\ncrm-1,Caf\xe9 M\xfcller\r\n";
    let (output, _) = import_file(&app, &dir, "cp1252.csv", cp1252, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: the file is not UTF-8")
            && stderr.contains("--encoding windows-1252"),
        "{stderr}"
    );
    let (output, _) = import_file(
        &app,
        &dir,
        "cp1252.csv",
        cp1252,
        &["--encoding", "windows-1252"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(all_leads(&app, "").await[0].title, "Café Müller");

    // A quote that never closes would swallow the rest of the file into one field.
    let (output, _) = import_file(
        &app,
        &dir,
        "quote.csv",
        b"external_id,title\r\ncrm-2,Acme\r\ncrm-3,\"Globex\r\ncrm-4,Initech\r\n",
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 3: a quote opens a field here and is never closed"),
        "{stderr}"
    );
    assert_eq!(
        all_leads(&app, "").await.len(),
        1,
        "nothing of the file is imported"
    );

    // A pipeline the tenant lacks stops the file once, not once per row.
    let (output, _) = import_file(
        &app,
        &dir,
        "pipeline.csv",
        b"external_id,title,pipeline_id\nx-1,A,hubspot\nx-2,B,hubspot\nx-3,C,\n",
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("pipeline \"hubspot\", named by 2 rows, does not exist"),
        "{stderr}"
    );
    assert_eq!(all_leads(&app, "").await.len(), 1);

    // Extra columns a CRM adds: refused by name, or left out when asked.
    let extra = b"Record ID,external_id,title,Last Activity\n1,y-1,Hooli,\n";
    let (output, _) = import_file(&app, &dir, "extra.csv", extra, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown column \"Record ID\" (and 1 more: Last Activity)"),
        "{stderr}"
    );
    let (output, _) = import_file(
        &app,
        &dir,
        "extra.csv",
        extra,
        &["--ignore-unknown-columns"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(all_leads(&app, "").await.len(), 2);
}

async fn import_collapses_repeated_errors_and_dry_runs(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("external_id,title,contact_email\n");
    for i in 0..20 {
        csv.push_str(&format!("bad-{i},Lead {i},not-an-address-{i}\n"));
    }
    csv.push_str("good-1,Good one,ann@example.com\ngood-2,Good two,\n");

    let (output, path) = import_file(&app, &dir, "many.csv", csv.as_bytes(), &["--dry-run"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let stdout = text(&output.stdout);
    assert_eq!(
        first_line(&output.stdout),
        "22 rows read: 2 would be imported, 0 unchanged, 0 changed since imported, 20 refused"
    );
    assert!(stdout.contains("dry run: nothing was written"), "{stdout}");
    assert!(
        stdout.contains("    20  contact_email: \"…\" is not a valid e-mail address"),
        "{stdout}"
    );
    // Three examples of the reason, then a count of the rest.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(lines[0].starts_with(&format!("{path}:2: contact_email: \"not-an-address-0\"")));
    assert!(
        lines[3].starts_with(&format!(
            "{path}: 17 more rows with: contact_email: \"…\" is not a valid e-mail address"
        )),
        "{}",
        lines[3]
    );
    assert!(
        all_leads(&app, "").await.is_empty(),
        "a dry run writes nothing"
    );

    let (output, _) = import_file(&app, &dir, "many.csv", csv.as_bytes(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        first_line(&output.stdout),
        "22 rows read: 2 imported, 0 unchanged, 0 changed since imported, 20 refused"
    );
    assert_eq!(all_leads(&app, "").await.len(), 2);

    // A week later the source has changed one lead: counted, not silently skipped.
    let changed = "external_id,title,contact_email\ngood-1,Good one renamed,ann@example.com\ngood-2,Good two,\n";
    let (output, _) = import_file(&app, &dir, "week2.csv", changed.as_bytes(), &[]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert_eq!(
        first_line(&output.stdout),
        "2 rows read: 0 imported, 1 unchanged, 1 changed since imported, 0 refused"
    );
    assert!(
        stdout.contains("1 rows differ from the lead imported before"),
        "{stdout}"
    );
}

async fn a_mapping_file_reads_an_unknown_layout(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        r#"
decimal_separator = ","

[columns]
"Deal ID" = "external_id"
"Deal name" = "title"
"Deal owner" = "owner"
"Deal stage" = "stage"
"Value" = "amount"
"Region" = "labels.region"
"Created" = "created_at"
"Closed" = "close_date"
"Internal note" = "-"

[stages]
"Gewonnen" = "closed_won"
"Angebot" = "proposal"

[defaults]
currency = "EUR"
source = "crm"

[dates]
formats = ["%d.%m.%Y"]
timezone = "Europe/Berlin"
"#,
    )
    .unwrap();
    let csv = "Deal ID;Deal name;Deal owner;Deal stage;Value;Region;Created;Closed;Internal note\r\n\
               d-1;Acme;ann;Gewonnen;1.234,50;emea;01.06.2026;15.06.2026;x\r\n\
               d-2;Globex;bob;Angebot;90.000;na;02.06.2026;;\r\n";
    let (output, _) = import_file(
        &app,
        &dir,
        "unknown.csv",
        csv.as_bytes(),
        &["--mapping", mapping.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let leads = by_external_id(all_leads(&app, "").await);
    let acme = &leads["d-1"];
    assert_eq!(
        (
            acme.title.as_str(),
            acme.owner.as_str(),
            acme.stage.as_str(),
            acme.source.as_str()
        ),
        ("Acme", "ann", "closed_won", "crm")
    );
    assert_eq!(
        acme.amount,
        Some(pb::Money {
            currency_code: "EUR".into(),
            units: 1234,
            nanos: 500_000_000
        })
    );
    assert_eq!(acme.labels["region"], "emea");
    assert_eq!(acme.create_time, ts_of("2026-05-31T22:00:00Z"));
    assert_eq!(acme.close_time, ts_of("2026-06-14T22:00:00Z"));
    assert_eq!(leads["d-2"].amount, Some(money("EUR", 90000)));
    assert_eq!(leads["d-2"].stage, "proposal");

    // A mapping that names a column leadpipe does not have is refused before reading.
    std::fs::write(&mapping, "[columns]\n\"Deal ID\" = \"externalid\"\n").unwrap();
    let (output, _) = import_file(
        &app,
        &dir,
        "unknown.csv",
        csv.as_bytes(),
        &["--mapping", mapping.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("\"externalid\" is not a leadpipe column"),
        "{}",
        text(&output.stderr)
    );
}

async fn list_leads_filters_on_external_id_and_title(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let csv = "external_id,title\ncrm-1,Globex expansion\ncrm-2,Globex renewal\ncrm-10,50%_off deal\nsf-1,Initech\n";
    let (output, _) = import_file(&app, &dir, "leads.csv", csv.as_bytes(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    create(&app, new_lead("Made here")).await;

    let ids = |leads: Vec<pb::Lead>| {
        let mut ids: Vec<String> = leads
            .into_iter()
            .map(|l| {
                if l.external_id.is_empty() {
                    l.title
                } else {
                    l.external_id
                }
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(all_leads(&app, r#"external_id = "crm-1""#).await),
        ["crm-1"]
    );
    assert_eq!(
        ids(all_leads(&app, r#"external_id = "crm-1*""#).await),
        ["crm-1", "crm-10"]
    );
    assert_eq!(
        ids(all_leads(&app, r#"external_id != "crm-*""#).await),
        ["Made here", "sf-1"]
    );
    assert_eq!(
        ids(all_leads(&app, r#"external_id = """#).await),
        ["Made here"]
    );
    assert_eq!(
        ids(all_leads(
            &app,
            r#"title = "Globex*" AND NOT title = "Globex renewal""#
        )
        .await),
        ["crm-1"]
    );
    // Prefixes are exact: case matters, and % and _ are plain characters.
    assert!(all_leads(&app, r#"title = "globex*""#).await.is_empty());
    assert_eq!(ids(all_leads(&app, r#"title = "50%_*""#).await), ["crm-10"]);
    assert!(all_leads(&app, r#"title = "5_%*""#).await.is_empty());
}

async fn pipelines_travel_with_an_export(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("crm.toml");
    std::fs::write(
        &spec,
        r#"
[[pipelines]]
id = "crm"
display_name = "Sales (CRM)"
allow_skip = true

[[pipelines.stages]]
key = "appointment_scheduled"
display_name = "Appointment Scheduled"
kind = "open"
probability = 0.2

[[pipelines.stages]]
key = "contract_sent"
display_name = "Contract Sent"
kind = "open"
probability = 0.8
rotting_days = 10

[[pipelines.stages.entry_criteria]]
id = "has_amount"
message = "An amount is known"
expression = "lead.amount.value > 0.0"

[[pipelines.stages]]
key = "closed_won"
display_name = "Closed Won"
kind = "won"
probability = 1.0

[[pipelines.stages]]
key = "closed_lost"
display_name = "Closed Lost"
kind = "lost"
probability = 0.0
"#,
    )
    .unwrap();
    let spec_path = spec.to_str().unwrap();
    let output = leadpipe(&app, &["pipelines", "apply", spec_path]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "created pipeline crm");
    let output = leadpipe(&app, &["pipelines", "apply", spec_path]);
    assert_eq!(text(&output.stdout).trim(), "pipeline crm is unchanged");

    // Stages by display name, into the new pipeline.
    let csv = "external_id,title,pipeline_id,stage,amount,currency,created_at,stage_entered_at\n\
               h-1,Acme,crm,Contract Sent,5000,EUR,2026-06-01,2026-06-10\n\
               h-2,Globex,crm,closed won,9000,EUR,2026-06-02,2026-06-20\n";
    let (output, _) = import_file(&app, &dir, "crm.csv", csv.as_bytes(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    let leads_csv = dir.path().join("leads.csv");
    let pipelines_json = dir.path().join("pipelines.json");
    let output = leadpipe(
        &app,
        &[
            "export",
            "--output",
            leads_csv.to_str().unwrap(),
            "--pipelines",
            pipelines_json.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));

    // Another tenant lacks the pipeline: the import stops once, before writing anything.
    let output = leadpipe(
        &app,
        &["import", "--tenant", "copy", leads_csv.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("pipeline \"crm\", named by 2 rows, does not exist in tenant copy"),
        "{stderr}"
    );

    let output = leadpipe(
        &app,
        &[
            "import",
            "--tenant",
            "copy",
            "--pipelines",
            pipelines_json.to_str().unwrap(),
            leads_csv.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("created pipeline crm"));
    // The default pipeline was already there, as in every tenant.
    assert!(text(&output.stderr).contains("pipeline default is unchanged"));

    let original = leadpipe(&app, &["pipelines", "export"]);
    let copy = leadpipe(&app, &["pipelines", "export", "--tenant", "copy"]);
    assert!(original.status.success());
    assert_eq!(text(&copy.stdout), text(&original.stdout));
    assert!(text(&original.stdout).contains("expression = \"lead.amount.value > 0.0\""));
    let exported_leads = leadpipe(&app, &["export", "--tenant", "copy"]);
    assert_eq!(
        text(&exported_leads.stdout),
        std::fs::read_to_string(&leads_csv).unwrap()
    );

    // A pipeline file the API would refuse is refused with the API's reasons.
    std::fs::write(
        &spec,
        "[[pipelines]]\nid = \"bad\"\ndisplay_name = \"Bad\"\n[[pipelines.stages]]\nkey = \"only\"\nkind = \"open\"\nprobability = 2.0\n",
    )
    .unwrap();
    let output = leadpipe(&app, &["pipelines", "apply", spec_path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("pipeline.stages[0].probability: must be between 0 and 1"),
        "{}",
        text(&output.stderr)
    );
}
