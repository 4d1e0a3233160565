//! Leads with a given stage history, imported through ImportLeads, and the ForecastService
//! client that reads them.

use chrono::{DateTime, Utc};
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::forecast_service_client::ForecastServiceClient;

use super::{TestApp, money};

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// A timestamp to the microsecond, as the server stores times.
pub fn micro_ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: (t.timestamp_subsec_micros() * 1000) as i32,
    }
}

pub fn change(from: &str, to: &str, at: DateTime<Utc>) -> pb::ImportedStageChange {
    pb::ImportedStageChange {
        from_stage: from.into(),
        to_stage: to.into(),
        change_time: Some(ts(at)),
        actor: "crm".into(),
        note: String::new(),
    }
}

pub fn import_request(
    external_id: &str,
    amount: i64,
    history: Vec<pb::ImportedStageChange>,
) -> pb::ImportLeadsRequest {
    pb::ImportLeadsRequest {
        external_id: external_id.into(),
        lead: Some(pb::Lead {
            title: format!("imported {external_id}"),
            contact_name: "Dana".into(),
            amount: Some(money("EUR", amount)),
            ..Default::default()
        }),
        history,
        revisions: Vec::new(),
        update_existing: false,
    }
}

pub async fn import(
    app: &TestApp,
    requests: Vec<pb::ImportLeadsRequest>,
) -> pb::ImportLeadsResponse {
    app.leads
        .clone()
        .import_leads(tokio_stream::iter(requests))
        .await
        .expect("import")
        .into_inner()
}

pub async fn forecasts(app: &TestApp) -> ForecastServiceClient<tonic::transport::Channel> {
    ForecastServiceClient::new(app.channel().await)
}
