//! The Prometheus endpoint: call counts by method and status, stream and lead gauges, outbox
//! lag and pool use, scraped over HTTP from a running server.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use leadpipe::grpc::pb;
use tokio_stream::StreamExt;

/// One scrape: each sample's value by metric name and label set.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    /// The value of the sample with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, value)| *value)
    }

    fn rpc(&self, method: &str, code: &str) -> Option<f64> {
        self.value(
            "leadpipe_rpc_requests_total",
            &[
                ("service", "leadpipe.v1.LeadService"),
                ("method", method),
                ("code", code),
            ],
        )
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client
        .get(format!("http://{addr}/metrics").parse().unwrap())
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    Scrape(text.lines().filter_map(parse_sample).collect())
}

/// `name{k="v",…} value`, or `name value`. Label values here never contain `,` or `"`.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let labels = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (name, labels)
        }
    };
    Some((name.to_owned(), labels, value))
}

/// Scrapes until `done` holds, for values that settle after the call that changes them returns
/// (a stream's end, the fan-out catching up). Gives up after 10 s.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..200 {
        let scraped = scrape(addr).await;
        if done(&scraped) {
            return scraped;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the metrics did not reach the expected values");
}

/// The same database, served again with metrics on.
async fn with_metrics(app: TestApp) -> TestApp {
    let backend = app.backend;
    let mut settings = settings_for(&app.database_url);
    settings.metrics = true;
    let dir = app.stop().await;
    spawn_app_with(backend, settings, dir).await
}

async fn counts_calls_and_reports_gauges(app: TestApp) {
    let app = with_metrics(app).await;
    let addr = app.metrics_addr.expect("metrics are served");

    // Before any call: pools are reported, no leads, no streams.
    let first = scrape(addr).await;
    let pool = match app.backend {
        Backend::Sqlite => "read",
        Backend::Postgres => "shared",
    };
    assert_eq!(
        first.value("leadpipe_db_pool_max_connections", &[("pool", pool)]),
        Some(8.0)
    );
    if app.backend == Backend::Sqlite {
        assert_eq!(
            first.value("leadpipe_db_pool_max_connections", &[("pool", "write")]),
            Some(1.0)
        );
    }
    assert!(
        first
            .value(
                "leadpipe_db_pool_connections",
                &[("pool", pool), ("state", "idle")]
            )
            .is_some()
    );
    assert_eq!(first.rpc("CreateLead", "OK"), None);

    let mut stream = app
        .leads
        .clone()
        .watch_stage_changes(pb::WatchStageChangesRequest::default())
        .await
        .expect("watch")
        .into_inner();

    let a = create(&app, new_lead("Acme")).await;
    let b = create(&app, new_lead("Globex")).await;
    let missing = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: "018f0000-0000-7000-8000-000000000000".into(),
        })
        .await
        .expect_err("no such lead");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let refused = move_to(&app, &a.id, "qualification")
        .await
        .expect_err("no contact yet");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let mut with_contact = a.clone();
    with_contact.contact_name = "Dana".into();
    update_lead(&app, with_contact, &["contact_name"]).await;
    move_to(&app, &a.id, "qualification")
        .await
        .expect("moves once a contact is known");
    get_lead(&app, &b.id).await;

    // A method nobody serves is counted under `unknown`, whatever its name.
    let mut raw = tonic::client::Grpc::new(app.channel().await);
    raw.ready().await.unwrap();
    let unimplemented = raw
        .unary::<pb::GetLeadRequest, pb::Lead, _>(
            tonic::Request::new(pb::GetLeadRequest::default()),
            "/leadpipe.v1.LeadService/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

    // The stream sees the creations and the move.
    for _ in 0..3 {
        stream.next().await.expect("event").expect("event");
    }

    let scraped = scrape_until(addr, |s| {
        s.value("leadpipe_outbox_lag_events", &[("tenant_id", "default")]) == Some(0.0)
    })
    .await;
    assert_eq!(scraped.rpc("CreateLead", "OK"), Some(2.0));
    assert_eq!(scraped.rpc("GetLead", "NOT_FOUND"), Some(1.0));
    assert_eq!(scraped.rpc("GetLead", "OK"), Some(1.0));
    assert_eq!(scraped.rpc("MoveLead", "FAILED_PRECONDITION"), Some(1.0));
    assert_eq!(scraped.rpc("MoveLead", "OK"), Some(1.0));
    assert_eq!(scraped.rpc("UpdateLead", "OK"), Some(1.0));
    assert_eq!(scraped.rpc("WatchStageChanges", "OK"), None, "still open");
    assert_eq!(
        scraped.value(
            "leadpipe_rpc_requests_total",
            &[
                ("service", "unknown"),
                ("method", "unknown"),
                ("code", "UNIMPLEMENTED")
            ]
        ),
        Some(1.0)
    );
    let duration = |suffix: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![
            ("service", "leadpipe.v1.LeadService"),
            ("method", "CreateLead"),
            ("code", "OK"),
        ];
        labels.extend_from_slice(extra);
        scraped.value(&format!("leadpipe_rpc_duration_seconds{suffix}"), &labels)
    };
    assert_eq!(duration("_count", &[]), Some(2.0));
    assert_eq!(duration("_bucket", &[("le", "+Inf")]), Some(2.0));
    assert!(duration("_sum", &[]).is_some_and(|sum| sum > 0.0));

    assert_eq!(
        scraped.value("leadpipe_streams_open", &[("tenant_id", "default")]),
        Some(1.0)
    );
    assert_eq!(
        scraped.value("leadpipe_outbox_lag_seconds", &[("tenant_id", "default")]),
        Some(0.0)
    );
    let leads = |stage: &str| {
        scraped.value(
            "leadpipe_leads",
            &[
                ("tenant_id", "default"),
                ("pipeline_id", "default"),
                ("stage", stage),
            ],
        )
    };
    assert_eq!(leads("lead_generation"), Some(1.0));
    assert_eq!(leads("qualification"), Some(1.0));
    assert_eq!(leads("proposal"), None, "no lead ever was there");

    // The client goes away: the stream is counted as cancelled and no longer open. Deleting the
    // last lead of a stage leaves that stage at 0 rather than at its old count.
    drop(stream);
    app.leads
        .clone()
        .delete_lead(pb::DeleteLeadRequest {
            id: b.id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let scraped = scrape_until(addr, |s| {
        s.rpc("WatchStageChanges", "CANCELLED") == Some(1.0)
            && s.value("leadpipe_streams_open", &[("tenant_id", "default")]) == Some(0.0)
    })
    .await;
    assert_eq!(
        scraped.value(
            "leadpipe_leads",
            &[
                ("tenant_id", "default"),
                ("pipeline_id", "default"),
                ("stage", "lead_generation"),
            ],
        ),
        Some(0.0)
    );
}

on_both_backends!(counts_calls_and_reports_gauges);
