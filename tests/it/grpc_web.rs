//! grpc-web on the gRPC port: requests framed as a browser's grpc-web client frames them, sent
//! over HTTP/1.1 to the real server, and the responses' frames and trailers decoded by hand.

use crate::common;

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{Backend, TestApp, fresh_database, money, new_lead, settings_for, spawn_app_with};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use leadpipe::grpc::pb;
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

const GRPC_WEB: &str = "application/grpc-web+proto";
const DATA_FRAME: u8 = 0x00;
const TRAILER_FRAME: u8 = 0x80;

fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A length-prefixed grpc-web message frame.
fn frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + payload.len());
    body.put_u8(DATA_FRAME);
    body.put_u32(payload.len() as u32);
    body.put_slice(&payload);
    body.freeze()
}

fn grpc_web_request(app: &TestApp, method: &str, message: &impl Message) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/{method}", app.addr))
        .version(http::Version::HTTP_11)
        .header("content-type", GRPC_WEB)
        .header("accept", GRPC_WEB)
        .header("x-grpc-web", "1")
        .body(Full::new(frame(message)))
        .expect("request")
}

/// A unary grpc-web response, split into its frames.
struct Unary {
    headers: HeaderMap,
    messages: Vec<Bytes>,
    trailers: HashMap<String, String>,
}

impl Unary {
    /// grpc-status from the trailer frame, or from the headers of a trailers-only response.
    fn code(&self) -> Code {
        let status = self
            .trailers
            .get("grpc-status")
            .cloned()
            .or_else(|| header(&self.headers, "grpc-status"))
            .expect("grpc-status in the trailers or the headers");
        Code::from_i32(status.parse().expect("numeric grpc-status"))
    }

    /// The call's status, with its google.rpc details, from wherever the server put it.
    fn status(&self) -> tonic::Status {
        let mut map = self.headers.clone();
        for (name, value) in &self.trailers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("trailer name"),
                value.parse().expect("trailer value"),
            );
        }
        tonic::Status::from_header_map(&map).expect("a grpc status")
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| value.to_str().expect("ASCII header").to_owned())
}

/// Splits a grpc-web body into its message frames and the trailer frame's fields.
fn split_frames(mut body: Bytes) -> (Vec<Bytes>, HashMap<String, String>) {
    let mut messages = Vec::new();
    let mut trailers = HashMap::new();
    while body.has_remaining() {
        assert!(
            body.len() >= 5,
            "a frame header is 5 bytes, {} left",
            body.len()
        );
        let flags = body.get_u8();
        let length = body.get_u32() as usize;
        assert!(
            body.len() >= length,
            "frame of {length} bytes, {} left",
            body.len()
        );
        let payload = body.split_to(length);
        match flags {
            DATA_FRAME => messages.push(payload),
            TRAILER_FRAME => {
                let text = std::str::from_utf8(&payload).expect("trailers are text");
                for line in text.split("\r\n").filter(|line| !line.is_empty()) {
                    let (name, value) = line.split_once(':').expect("name: value");
                    trailers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                }
            }
            other => panic!("unexpected frame flags {other:#x}"),
        }
    }
    (messages, trailers)
}

async fn unary(app: &TestApp, method: &str, message: &impl Message) -> Unary {
    let response = http1_client()
        .request(grpc_web_request(app, method, message))
        .await
        .expect("HTTP/1.1 exchange");
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "content-type").as_deref(),
        Some(GRPC_WEB)
    );
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    let (messages, trailers) = split_frames(body);
    Unary {
        headers: parts.headers,
        messages,
        trailers,
    }
}

async fn creates_and_reads_a_lead(app: TestApp) {
    let lead = pb::Lead {
        owner: "web".into(),
        amount: Some(money("EUR", 9000)),
        ..new_lead("Browser-made lead")
    };
    let created = unary(
        &app,
        "leadpipe.v1.LeadService/CreateLead",
        &pb::CreateLeadRequest {
            lead: Some(lead),
            request_id: String::new(),
        },
    )
    .await;
    assert_eq!(created.code(), Code::Ok, "{:?}", created.trailers);
    assert_eq!(created.messages.len(), 1);
    let lead = pb::Lead::decode(created.messages[0].clone()).expect("a Lead");
    assert_eq!(lead.title, "Browser-made lead");
    assert_eq!(lead.stage, "lead_generation");
    assert_eq!(lead.amount, Some(money("EUR", 9000)));

    // The same lead, through plain gRPC over HTTP/2.
    let fetched = app
        .leads
        .clone()
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: lead.id.clone(),
        })
        .await
        .expect("get over gRPC")
        .into_inner();
    assert_eq!(fetched, lead);

    let read = unary(
        &app,
        "leadpipe.v1.LeadService/GetLead",
        &pb::GetLeadRequest {
            as_of: None,
            id: lead.id.clone(),
        },
    )
    .await;
    assert_eq!(read.code(), Code::Ok);
    assert_eq!(pb::Lead::decode(read.messages[0].clone()).unwrap(), lead);
}

async fn errors_carry_their_status_and_details(app: TestApp) {
    let missing = unary(
        &app,
        "leadpipe.v1.LeadService/GetLead",
        &pb::GetLeadRequest {
            as_of: None,
            id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
        },
    )
    .await;
    assert!(missing.messages.is_empty());
    assert_eq!(missing.code(), Code::NotFound);

    let lead = common::create(&app, new_lead("No contact yet")).await;
    let refused = unary(
        &app,
        "leadpipe.v1.LeadService/MoveLead",
        &pb::MoveLeadRequest {
            id: lead.id,
            stage: "qualification".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(refused.messages.is_empty());
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let status = refused.status();
    let failure = status
        .get_details_precondition_failure()
        .expect("a PreconditionFailure in grpc-status-details-bin");
    let subjects: Vec<_> = failure
        .violations
        .iter()
        .map(|v| v.subject.as_str())
        .collect();
    assert_eq!(subjects, ["contact_known"]);

    let invalid = unary(
        &app,
        "leadpipe.v1.LeadService/CreateLead",
        &pb::CreateLeadRequest {
            lead: Some(new_lead("")),
            request_id: String::new(),
        },
    )
    .await;
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(
        common::bad_request_fields(&invalid.status()),
        ["lead.title"]
    );
}

/// Browsers' grpc-web clients support server streaming: events arrive as data frames.
async fn streams_stage_changes(app: TestApp) {
    let lead = common::create(&app, new_lead("Watched from a browser")).await;
    let request = grpc_web_request(
        &app,
        "leadpipe.v1.LeadService/WatchStageChanges",
        &pb::WatchStageChangesRequest {
            after_sequence: Some(0),
            lead_id: lead.id.clone(),
            ..Default::default()
        },
    );
    let response = http1_client().request(request).await.expect("exchange");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = BytesMut::new();
    let event = loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays open")
            .expect("a body frame");
        if let Some(data) = frame.data_ref() {
            received.extend_from_slice(data);
        }
        if received.len() >= 5 {
            let length = u32::from_be_bytes(received[1..5].try_into().unwrap()) as usize;
            if received.len() >= 5 + length {
                assert_eq!(received[0], DATA_FRAME);
                break pb::StageChangeEvent::decode(&received[5..5 + length]).expect("an event");
            }
        }
    };
    assert_eq!(event.lead_id, lead.id);
    assert_eq!(
        (event.from_stage.as_str(), event.to_stage.as_str()),
        ("", "lead_generation")
    );
}

on_both_backends!(
    creates_and_reads_a_lead,
    errors_carry_their_status_and_details,
    streams_stage_changes
);

/// An HTTP/1.1 request that is not grpc-web is refused; gRPC itself still needs HTTP/2.
#[tokio::test]
async fn plain_http1_requests_are_refused() {
    let app = common::spawn_app(Backend::Sqlite).await.expect("sqlite");
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/leadpipe.v1.LeadService/GetLead",
            app.addr
        ))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = http1_client().request(request).await.expect("exchange");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

async fn app_with_cors(origins: &[&str]) -> TestApp {
    let (url, dir) = fresh_database(Backend::Sqlite).await.expect("sqlite");
    let mut settings = settings_for(&url);
    settings.cors_allowed_origins = origins.iter().map(|o| o.to_string()).collect();
    spawn_app_with(Backend::Sqlite, settings, dir).await
}

/// The status and headers of a CORS preflight request from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> (StatusCode, HeaderMap) {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!(
            "http://{}/leadpipe.v1.LeadService/ListLeads",
            app.addr
        ))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http1_client().request(request).await.expect("preflight");
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn cors_admits_only_the_configured_origins() {
    let app = app_with_cors(&["https://crm.example.com"]).await;

    let (status, headers) = preflight(&app, "https://crm.example.com").await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin").as_deref(),
        Some("https://crm.example.com")
    );
    let allowed_headers = header(&headers, "access-control-allow-headers").unwrap_or_default();
    for needed in ["content-type", "x-grpc-web", "authorization"] {
        assert!(
            allowed_headers.contains(needed),
            "{needed} in {allowed_headers}"
        );
    }

    let (_, headers) = preflight(&app, "https://evil.example.net").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // The call itself: the page may read its outcome from the exposed headers.
    let mut request = grpc_web_request(
        &app,
        "leadpipe.v1.LeadService/ListLeads",
        &pb::ListLeadsRequest::default(),
    );
    request
        .headers_mut()
        .insert("origin", "https://crm.example.com".parse().unwrap());
    let response = http1_client().request(request).await.expect("exchange");
    assert_eq!(
        header(response.headers(), "access-control-allow-origin").as_deref(),
        Some("https://crm.example.com")
    );
    let exposed = header(response.headers(), "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("grpc-status"), "{exposed}");
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let app = app_with_cors(&[]).await;
    let (_, headers) = preflight(&app, "https://crm.example.com").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
}
