//! LeadService: create, get, list, update, delete, through the real gRPC API.

use crate::common;

use std::collections::HashSet;

use common::*;
use leadpipe::grpc::pb;
use tonic::Code;

on_both_backends!(
    create_then_get_round_trips,
    create_rejects_every_bad_field_at_once,
    each_violation_is_reported_once,
    get_reports_not_found_and_bad_ids,
    create_retries_with_one_request_id_create_one_lead,
    request_id_reuse_with_another_request_is_refused,
    update_applies_the_mask_and_checks_etags,
    update_refuses_stage_and_output_only_fields,
    delete_checks_etag_and_removes_the_lead,
    list_pages_stay_consistent_under_concurrent_inserts,
    list_filters_by_every_supported_field,
    list_orders_by_every_supported_key,
    list_rejects_malformed_filters_and_tokens,
    implausible_business_dates_are_refused_on_create_update_and_import,
);

fn full_lead(title: &str) -> pb::Lead {
    pb::Lead {
        title: title.into(),
        company: "Acme GmbH".into(),
        contact_name: "Dana Smith".into(),
        contact_email: "dana@acme.example".into(),
        owner: "sam".into(),
        source: "web".into(),
        amount: Some(pb::Money {
            currency_code: "EUR".into(),
            units: 12_000,
            nanos: 500_000_000,
        }),
        bant: Some(pb::Bant {
            budget: Some(money("EUR", 20_000)),
            authority: "CFO".into(),
            need: "Faster invoicing".into(),
            timeline: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
        }),
        expected_close_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 123_456_000,
        }),
        labels: [("region".to_string(), "emea".to_string())].into(),
        ..Default::default()
    }
}

async fn create_then_get_round_trips(app: TestApp) {
    let created = create(&app, full_lead("Acme renewal")).await;
    assert!(uuid::Uuid::parse_str(&created.id).is_ok(), "id is a UUID");
    assert_eq!(created.pipeline_id, "default");
    assert_eq!(created.stage, "lead_generation");
    assert!((created.win_probability - 0.10).abs() < 1e-9);
    assert!(!created.etag.is_empty());
    assert!(created.create_time.is_some() && created.stage_enter_time.is_some());
    assert_eq!(created.close_time, None);
    assert_eq!(created.amount.as_ref().unwrap().nanos, 500_000_000);
    assert_eq!(
        created.labels.get("region").map(String::as_str),
        Some("emea")
    );

    let fetched = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);
}

async fn create_rejects_every_bad_field_at_once(app: TestApp) {
    let lead = pb::Lead {
        title: "x".repeat(201),
        contact_email: "not-an-email".into(),
        amount: Some(pb::Money {
            currency_code: "EURO".into(),
            units: 5,
            nanos: 0,
        }),
        bant: Some(pb::Bant {
            budget: Some(pb::Money {
                currency_code: "EUR".into(),
                units: 1,
                nanos: 2_000_000_000,
            }),
            ..Default::default()
        }),
        labels: [("Bad Key".to_string(), "v".to_string())].into(),
        pipeline_id: "No Such".into(),
        ..Default::default()
    };
    let status = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(lead),
            request_id: "r".repeat(129),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: HashSet<String> = bad_request_fields(&status).into_iter().collect();
    for expected in [
        "lead.title",
        "lead.contact_email",
        "lead.amount.currency_code",
        "lead.bant.budget.nanos",
        "lead.labels[\"Bad Key\"]",
        "lead.pipeline_id",
        "request_id",
    ] {
        assert!(
            fields.contains(expected),
            "missing violation for {expected}: {fields:?}"
        );
    }

    let missing = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&missing), vec!["lead".to_string()]);

    let blank_title = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("   ")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_request_fields(&blank_title),
        vec!["lead.title".to_string()]
    );

    let negative = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(pb::Lead {
                amount: Some(money("EUR", -1)),
                ..new_lead("t")
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_request_fields(&negative),
        vec!["lead.amount.units".to_string()]
    );

    let unknown_pipeline = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(pb::Lead {
                pipeline_id: "enterprise".into(),
                ..new_lead("t")
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_pipeline.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&unknown_pipeline),
        vec!["lead.pipeline_id".to_string()]
    );
}

/// A title that is too long once was reported twice, in the details and in the message.
async fn each_violation_is_reported_once(app: TestApp) {
    let too_long = |title: String| pb::Lead {
        title,
        owner: "o".repeat(201),
        ..Default::default()
    };
    let status = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(too_long("x".repeat(201))),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec!["lead.title".to_string(), "lead.owner".to_string()]
    );
    assert_eq!(
        status.message(),
        "invalid request: lead.title: must be at most 200 characters, got 201; \
         lead.owner: must be at most 200 characters, got 201"
    );

    let lead = create(&app, new_lead("short")).await;
    let status = app
        .leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: lead.id,
                ..too_long("y".repeat(300))
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into(), "owner".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec!["lead.title".to_string(), "lead.owner".to_string()]
    );
    // A title with a control character is refused as other text fields are, once.
    let status = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("bell\u{7}")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.message(),
        "invalid request: lead.title: must not contain control characters"
    );
}

async fn get_reports_not_found_and_bad_ids(app: TestApp) {
    let mut client = app.leads.clone();
    let missing = client
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = client
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&malformed), vec!["id".to_string()]);
}

async fn create_retries_with_one_request_id_create_one_lead(app: TestApp) {
    let request = pb::CreateLeadRequest {
        lead: Some(full_lead("Idempotent")),
        request_id: "3f1c7d3e-retry".into(),
    };
    let retries = (0..16).map(|_| {
        let mut client = app.leads.clone();
        let request = request.clone();
        tokio::spawn(async move { client.create_lead(request).await.map(|r| r.into_inner()) })
    });
    let results = futures::future::join_all(retries).await;
    let ids: HashSet<String> = results
        .into_iter()
        .map(|r| r.unwrap().expect("every retry succeeds").id)
        .collect();
    assert_eq!(ids.len(), 1, "all retries return the same lead");

    let again = app
        .leads
        .clone()
        .create_lead(request)
        .await
        .unwrap()
        .into_inner();
    assert!(ids.contains(&again.id));

    let listed = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 1, "exactly one lead exists");
}

async fn request_id_reuse_with_another_request_is_refused(app: TestApp) {
    let mut client = app.leads.clone();
    client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("first")),
            request_id: "key-1".into(),
        })
        .await
        .unwrap();
    let status = client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("second")),
            request_id: "key-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
}

async fn update_applies_the_mask_and_checks_etags(app: TestApp) {
    let created = create(&app, full_lead("Before")).await;
    let mut client = app.leads.clone();
    let updated = client
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: created.id.clone(),
                etag: created.etag.clone(),
                title: "After".into(),
                company: "ignored, not in mask".into(),
                labels: [("tier".to_string(), "gold".to_string())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into(), "labels.tier".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "After");
    assert_eq!(updated.company, "Acme GmbH");
    assert_eq!(updated.labels.len(), 2, "labels.tier added, region kept");
    assert_ne!(updated.etag, created.etag);
    assert_eq!(updated.stage, created.stage);

    let stale = client
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: created.id.clone(),
                etag: created.etag.clone(),
                title: "Lost update".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    let fetched = client
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, updated, "the stale update wrote nothing");

    let bad_value = client
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: created.id.clone(),
                contact_email: "nope".into(),
                title: String::new(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["contact_email".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad_request_fields(&bad_value),
        vec!["lead.contact_email".to_string()]
    );
}

async fn update_refuses_stage_and_output_only_fields(app: TestApp) {
    let created = create(&app, new_lead("Stage via update")).await;
    let status = app
        .leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: created.id.clone(),
                stage: "proposal".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["stage".into(), "create_time".into(), "nonsense".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec![
            "update_mask.paths[0]".to_string(),
            "update_mask.paths[1]".to_string(),
            "update_mask.paths[2]".to_string()
        ]
    );
    let missing = app
        .leads
        .clone()
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: uuid::Uuid::now_v7().to_string(),
                title: "x".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

async fn delete_checks_etag_and_removes_the_lead(app: TestApp) {
    let created = create(&app, new_lead("Doomed")).await;
    let mut client = app.leads.clone();
    let stale = client
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id.clone(),
            etag: "\"999\"".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let malformed = client
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id.clone(),
            etag: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_fields(&malformed), vec!["etag".to_string()]);

    client
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id.clone(),
            etag: created.etag.clone(),
        })
        .await
        .unwrap();
    let gone = client
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: created.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = client
        .delete_lead(pb::DeleteLeadRequest {
            id: created.id,
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

async fn list_pages_stay_consistent_under_concurrent_inserts(app: TestApp) {
    let mut original = HashSet::new();
    for i in 0..30 {
        original.insert(create(&app, new_lead(&format!("lead {i}"))).await.id);
    }
    let inserter = {
        let app_leads = app.leads.clone();
        tokio::spawn(async move {
            let mut client = app_leads;
            for i in 0..40 {
                client
                    .create_lead(pb::CreateLeadRequest {
                        lead: Some(new_lead(&format!("concurrent {i}"))),
                        request_id: String::new(),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut client = app.leads.clone();
    loop {
        let page = client
            .list_leads(pb::ListLeadsRequest {
                page_size: 7,
                page_token: token.clone(),
                filter: String::new(),
                order_by: "create_time".into(),
                as_of: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.leads.len() <= 7);
        seen.extend(page.leads.into_iter().map(|l| l.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    inserter.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no lead appears twice");
    for id in &original {
        assert!(unique.contains(id), "lead {id} was skipped");
    }
}

async fn list_ids(app: &TestApp, filter: &str) -> HashSet<String> {
    let page = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            page_size: 1000,
            filter: filter.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("filter {filter:?}: {e}"))
        .into_inner();
    assert_eq!(
        page.total_size as usize,
        page.leads.len(),
        "total_size for {filter:?}"
    );
    page.leads.into_iter().map(|l| l.id).collect()
}

async fn list_filters_by_every_supported_field(app: TestApp) {
    let small = create(
        &app,
        pb::Lead {
            owner: "sam".into(),
            source: "web".into(),
            amount: Some(money("EUR", 500)),
            labels: [("region".to_string(), "emea".to_string())].into(),
            ..new_lead("small")
        },
    )
    .await;
    let big = create(
        &app,
        pb::Lead {
            owner: "kim".into(),
            source: "referral".into(),
            amount: Some(pb::Money {
                currency_code: "EUR".into(),
                units: 50_000,
                nanos: 500_000_000,
            }),
            labels: [
                ("region".to_string(), "apac".to_string()),
                ("vip".to_string(), "yes".to_string()),
            ]
            .into(),
            ..new_lead("big")
        },
    )
    .await;
    let bare = create(&app, new_lead("bare")).await;
    let set = |ids: &[&pb::Lead]| ids.iter().map(|l| l.id.clone()).collect::<HashSet<_>>();

    assert_eq!(list_ids(&app, r#"owner = "sam""#).await, set(&[&small]));
    assert_eq!(
        list_ids(&app, r#"source != "web""#).await,
        set(&[&big, &bare])
    );
    assert_eq!(list_ids(&app, "amount >= 50000.5").await, set(&[&big]));
    assert_eq!(list_ids(&app, "amount > 50000.5").await, set(&[]));
    assert_eq!(list_ids(&app, "amount < 1000").await, set(&[&small, &bare]));
    assert_eq!(
        list_ids(&app, r#"labels.region = "apac""#).await,
        set(&[&big])
    );
    assert_eq!(list_ids(&app, "labels.vip:*").await, set(&[&big]));
    assert_eq!(
        list_ids(
            &app,
            r#"stage = "lead_generation" AND pipeline_id = "default""#
        )
        .await,
        set(&[&small, &big, &bare])
    );
    assert_eq!(
        list_ids(&app, r#"owner = "sam" OR owner = "kim""#).await,
        set(&[&small, &big])
    );
    assert_eq!(
        list_ids(&app, r#"NOT labels.region = "emea""#).await,
        set(&[&big, &bare])
    );
    assert_eq!(
        list_ids(&app, r#"create_time > "2000-01-01T00:00:00Z""#).await,
        set(&[&small, &big, &bare])
    );
    assert_eq!(
        list_ids(&app, r#"create_time < "2000-01-01T00:00:00Z""#).await,
        set(&[])
    );
}

async fn list_orders_by_every_supported_key(app: TestApp) {
    for (title, units) in [("a", 300), ("b", 100), ("c", 300), ("d", 200)] {
        create(
            &app,
            pb::Lead {
                amount: Some(money("USD", units)),
                ..new_lead(title)
            },
        )
        .await;
    }
    let mut client = app.leads.clone();
    for order_by in [
        "amount",
        "amount desc",
        "create_time desc",
        "update_time",
        "win_probability desc",
        "expected_value desc",
    ] {
        let mut leads = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_leads(pb::ListLeadsRequest {
                    page_size: 1,
                    page_token: token,
                    filter: String::new(),
                    order_by: order_by.into(),
                    as_of: None,
                })
                .await
                .unwrap()
                .into_inner();
            leads.extend(page.leads);
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(leads.len(), 4, "{order_by}: one page per lead, none lost");
        let key = |l: &pb::Lead| -> (i128, String) {
            let primary = match order_by.split_whitespace().next().unwrap() {
                "amount" => l.amount.as_ref().map_or(0, |m| m.units as i128),
                "create_time" => {
                    let t = l.create_time.as_ref().unwrap();
                    t.seconds as i128 * 1_000_000_000 + t.nanos as i128
                }
                "update_time" => {
                    let t = l.update_time.as_ref().unwrap();
                    t.seconds as i128 * 1_000_000_000 + t.nanos as i128
                }
                "expected_value" => {
                    let amount = l.amount.as_ref().map_or(0.0, |m| m.units as f64);
                    (amount * l.win_probability * 1e6) as i128
                }
                _ => (l.win_probability * 1e9) as i128,
            };
            (primary, l.id.clone())
        };
        let keys: Vec<_> = leads.iter().map(key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if order_by.ends_with("desc") {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{order_by}");
    }
}

async fn list_rejects_malformed_filters_and_tokens(app: TestApp) {
    create(&app, new_lead("one")).await;
    create(&app, new_lead("two")).await;
    let mut client = app.leads.clone();
    for (request, field) in [
        (
            pb::ListLeadsRequest {
                filter: "colour = \"red\"".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            pb::ListLeadsRequest {
                filter: "(stage = \"x\"".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            pb::ListLeadsRequest {
                order_by: "title".into(),
                ..Default::default()
            },
            "order_by",
        ),
        (
            pb::ListLeadsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListLeadsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
    ] {
        let status = client.list_leads(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_request_fields(&status), vec![field.to_string()]);
    }
    let first = client
        .list_leads(pb::ListLeadsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reused = client
        .list_leads(pb::ListLeadsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            order_by: "amount desc".into(),
            filter: String::new(),
            as_of: None,
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&reused), vec!["page_token".to_string()]);
}

fn at_seconds(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// 1990-01-01T00:00:00Z and 2200-01-01T00:00:00Z: the first accepted business date and the first
/// refused one after it.
const FIRST_BUSINESS_SECOND: i64 = 631_152_000;
const FIRST_SECOND_AFTER_BUSINESS_DATES: i64 = 7_258_118_400;

/// A JavaScript `Date` or an unset field read as zero arrives as the epoch; such dates are
/// refused field by field, and nothing is written.
async fn implausible_business_dates_are_refused_on_create_update_and_import(app: TestApp) {
    let mut client = app.leads.clone();
    let implausible = pb::Lead {
        expected_close_time: at_seconds(0),
        bant: Some(pb::Bant {
            timeline: at_seconds(FIRST_SECOND_AFTER_BUSINESS_DATES),
            ..Default::default()
        }),
        ..new_lead("epoch close")
    };
    let status = client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(implausible.clone()),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec!["lead.bant.timeline", "lead.expected_close_time"]
    );
    let listed = client
        .list_leads(pb::ListLeadsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 0, "a refused create writes nothing");

    let lead = create(
        &app,
        pb::Lead {
            expected_close_time: at_seconds(FIRST_BUSINESS_SECOND),
            bant: Some(pb::Bant {
                timeline: at_seconds(FIRST_SECOND_AFTER_BUSINESS_DATES - 1),
                ..Default::default()
            }),
            ..new_lead("edge dates")
        },
    )
    .await;
    assert_eq!(lead.expected_close_time, at_seconds(FIRST_BUSINESS_SECOND));

    let status = client
        .update_lead(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: lead.id.clone(),
                expected_close_time: at_seconds(FIRST_BUSINESS_SECOND - 1),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["expected_close_time".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        vec!["lead.expected_close_time"]
    );
    assert_eq!(
        get_lead(&app, &lead.id).await.etag,
        lead.etag,
        "nothing written"
    );

    let response = common::history::import(
        &app,
        vec![pb::ImportLeadsRequest {
            external_id: "crm-epoch".into(),
            lead: Some(implausible),
            history: Vec::new(),
            revisions: Vec::new(),
            update_existing: false,
        }],
    )
    .await;
    assert_eq!((response.imported, response.failed), (0, 1));
    assert_eq!(response.errors[0].field, "lead.bant.timeline");
    assert_eq!(response.errors[0].external_id, "crm-epoch");
}
