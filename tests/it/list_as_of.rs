//! ListLeads as of a past time: the filter, the order and the fields of each lead's latest
//! revision by then; leads created later or deleted by then left out.

use crate::common;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use leadpipe::grpc::pb;
use tonic::Code;

on_both_backends!(
    leads_are_listed_as_they_stood_then,
    pages_as_of_a_time_hold_together_and_refuse_other_times,
    as_of_now_filters_like_the_current_listing,
);

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: (t.timestamp_subsec_micros() * 1000) as i32,
    }
}

async fn list(
    app: &TestApp,
    filter: &str,
    order_by: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<pb::ListLeadsResponse, tonic::Status> {
    app.leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            filter: filter.into(),
            order_by: order_by.into(),
            as_of: as_of.map(ts),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn titles(page: &pb::ListLeadsResponse) -> Vec<&str> {
    page.leads.iter().map(|l| l.title.as_str()).collect()
}

fn lead(title: &str, owner: &str, amount: Option<i64>, region: Option<&str>) -> pb::Lead {
    pb::Lead {
        title: title.into(),
        owner: owner.into(),
        contact_name: "Dana".into(),
        amount: amount.map(|a| money("EUR", a)),
        labels: region
            .map(|r| [("region".to_string(), r.to_string())].into())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Leads A, B, C at `then`; afterwards A is repriced and handed to kim, B advances, C is
/// deleted and D is created.
async fn history(app: &TestApp) -> DateTime<Utc> {
    let minute = TimeDelta::minutes(1);
    let a = create(app, lead("A", "sam", Some(1000), Some("emea"))).await;
    app.clock.advance(minute);
    let b = create(app, lead("B", "kim", Some(5000), Some("na"))).await;
    app.clock.advance(minute);
    let c = create(app, lead("C", "sam", None, None)).await;
    app.clock.advance(minute);
    let then = app.clock.now();
    app.clock.advance(minute);

    let mut changed = a.clone();
    changed.etag.clear();
    changed.amount = Some(money("EUR", 9000));
    changed.owner = "kim".into();
    changed.labels = [("region".to_string(), "apac".to_string())].into();
    update_lead(app, changed, &["amount", "owner", "labels"]).await;
    move_to(app, &b.id, "qualification").await.expect("move");
    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: c.id.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    create(app, lead("D", "kim", Some(7000), Some("emea"))).await;
    app.clock.advance(minute);
    then
}

async fn leads_are_listed_as_they_stood_then(app: TestApp) {
    let then = history(&app).await;

    let all = list(&app, "", "", Some(then)).await.expect("list as of");
    assert_eq!(
        titles(&all),
        ["A", "B", "C"],
        "D came later; C was not deleted yet"
    );
    assert_eq!(all.total_size, 3);
    let a = &all.leads[0];
    assert_eq!(
        (a.owner.as_str(), a.amount.clone(), a.etag.as_str()),
        ("sam", Some(money("EUR", 1000)), "\"1\""),
        "A's fields as they were"
    );
    assert_eq!(all.leads[1].stage, "lead_generation");

    let kim = list(&app, "owner = \"kim\"", "", Some(then)).await.unwrap();
    assert_eq!(titles(&kim), ["B"]);
    let kim_now = list(&app, "owner = \"kim\"", "", None).await.unwrap();
    assert_eq!(titles(&kim_now), ["A", "B", "D"]);

    let big = list(&app, "amount >= 2000", "amount desc", Some(then))
        .await
        .unwrap();
    assert_eq!(titles(&big), ["B"]);
    let emea = list(&app, "labels.region = \"emea\"", "", Some(then))
        .await
        .unwrap();
    assert_eq!(titles(&emea), ["A"]);
    let by_amount = list(&app, "", "amount desc", Some(then)).await.unwrap();
    assert_eq!(titles(&by_amount), ["B", "A", "C"]);

    // After the writes: the deletion counts from its time on.
    let later = list(&app, "", "", Some(app.clock.now())).await.unwrap();
    assert_eq!(titles(&later), ["A", "B", "D"]);
    assert_eq!(later.leads[0].amount, Some(money("EUR", 9000)));

    let before_anything = list(&app, "", "", Some(then - TimeDelta::hours(1)))
        .await
        .unwrap();
    assert!(before_anything.leads.is_empty());
    assert_eq!(before_anything.total_size, 0);

    let future = list(&app, "", "", Some(app.clock.now() + TimeDelta::hours(1)))
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&future), ["as_of"]);
}

async fn pages_as_of_a_time_hold_together_and_refuse_other_times(app: TestApp) {
    let then = history(&app).await;
    let page = |token: String, as_of: DateTime<Utc>| {
        let mut leads = app.leads.clone();
        async move {
            leads
                .list_leads(pb::ListLeadsRequest {
                    page_size: 1,
                    page_token: token,
                    order_by: "amount desc".into(),
                    as_of: Some(ts(as_of)),
                    ..Default::default()
                })
                .await
        }
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let response = page(token, then).await.expect("page").into_inner();
        assert_eq!(response.total_size, 3);
        seen.extend(response.leads.into_iter().map(|l| l.title));
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["B", "A", "C"]);

    let first = page(String::new(), then).await.unwrap().into_inner();
    let elsewhere = page(first.next_page_token.clone(), then - TimeDelta::seconds(30))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&elsewhere), ["page_token"]);
    let now = app
        .leads
        .clone()
        .list_leads(pb::ListLeadsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            order_by: "amount desc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(now.code(), Code::InvalidArgument);
}

/// Listing as of now reads revisions and filters in memory; the current listing filters in
/// SQL. Both must agree on every filter and order.
async fn as_of_now_filters_like_the_current_listing(app: TestApp) {
    history(&app).await;
    let now = app.clock.now();
    let filters = [
        "",
        "owner = \"kim\"",
        "owner != \"kim\"",
        "amount > 1000",
        "amount <= 5000",
        "amount = 0",
        "amount != 9000",
        "stage = \"qualification\" OR labels.region = \"emea\"",
        "NOT labels.region = \"emea\"",
        "labels.region != \"emea\"",
        "labels.region:*",
        "-labels.region:* AND pipeline_id = \"default\"",
        "source = \"\"",
        "create_time > \"2000-01-01T00:00:00Z\" AND (owner = \"sam\" OR amount >= 7000)",
    ];
    for filter in filters {
        for order in [
            "",
            "amount desc",
            "update_time",
            "win_probability desc",
            "expected_value",
        ] {
            let current = list(&app, filter, order, None).await.expect(filter);
            let as_of = list(&app, filter, order, Some(now)).await.expect(filter);
            assert_eq!(
                (titles(&as_of), as_of.total_size),
                (titles(&current), current.total_size),
                "filter {filter:?}, order {order:?}"
            );
        }
    }
}
