//! Limits and hostile bytes over the wire: garbage and truncated gRPC frames, oversized
//! messages, the per-tenant rate limit and the per-tenant stream limit. Each answer is a clean
//! status (never INTERNAL or UNKNOWN), and the server keeps serving afterwards.
//!
//! These exercise the transport layer, which does not depend on the database, so they run on
//! SQLite only; the live-server property tests in `tests/fuzz.rs` cover both backends.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::server::Settings;
use prost::Message;
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use tower::ServiceExt;

const MIB: usize = 1024 * 1024;

async fn app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let mut settings = settings_for(&url);
    configure(&mut settings);
    spawn_app_with(Backend::Sqlite, settings, dir).await
}

/// One gRPC length-prefixed message: compression flag, declared length, then `payload`.
fn frame(flag: u8, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![flag];
    bytes.extend_from_slice(&declared_len.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn message(payload: &[u8]) -> Vec<u8> {
    frame(0, payload.len() as u32, payload)
}

/// Posts `body` as-is to `path` and returns the call's status code (OK included), from the
/// response headers or, failing that, its trailers.
async fn raw_call(channel: &Channel, addr: SocketAddr, path: &str, body: Vec<u8>) -> Code {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .unwrap();
    let response = channel
        .clone()
        .oneshot(request)
        .await
        .expect("the server answers at the HTTP level");
    assert_eq!(response.status(), http::StatusCode::OK);
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status.code();
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the response body arrives");
    let trailers = collected
        .trailers()
        .expect("a response without status in headers has trailers");
    tonic::Status::from_header_map(trailers)
        .expect("grpc-status in the trailers")
        .code()
}

async fn still_serving(app: &TestApp) {
    let mut client = LeadServiceClient::new(app.channel().await);
    let lead = client
        .create_lead(pb::CreateLeadRequest {
            lead: Some(new_lead("after the abuse")),
            request_id: String::new(),
        })
        .await
        .expect("the server still serves")
        .into_inner();
    client
        .get_lead(pb::GetLeadRequest {
            as_of: None,
            id: lead.id,
        })
        .await
        .expect("and reads");
}

const CREATE: &str = "/leadpipe.v1.LeadService/CreateLead";
const GET: &str = "/leadpipe.v1.LeadService/GetLead";
const WATCH: &str = "/leadpipe.v1.LeadService/WatchStageChanges";
const CREATE_PIPELINE: &str = "/leadpipe.v1.PipelineService/CreatePipeline";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_requests_are_invalid_argument() {
    let app = app_with(|_| {}).await;
    let channel = app.channel().await;
    let addr = app.addr;
    // A bad wire type (7), an overlong varint, a length running past the end, invalid UTF-8 in
    // a string field.
    let undecodable: [&[u8]; 4] = [
        &[0xff, 0xff, 0xff, 0xff],
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        &[0x0a, 0x7f, 0x01, 0x02],
        &[0x0a, 0x02, 0xc3, 0x28],
    ];
    for path in [CREATE, GET, WATCH, CREATE_PIPELINE] {
        for payload in undecodable {
            assert_eq!(
                raw_call(&channel, addr, path, message(payload)).await,
                Code::InvalidArgument,
                "{path} with {payload:x?}"
            );
        }
        let cases: [(&str, Vec<u8>); 5] = [
            ("a truncated frame", frame(0, 100, &[0x0a, 0x01])),
            ("a partial frame header", vec![0, 0, 0]),
            ("no message at all", Vec::new()),
            (
                "a compressed flag without grpc-encoding",
                frame(1, 2, &[0x0a, 0x00]),
            ),
            ("an invalid compression flag", frame(7, 2, &[0x0a, 0x00])),
        ];
        for (what, body) in cases {
            assert_eq!(
                raw_call(&channel, addr, path, body).await,
                Code::InvalidArgument,
                "{path} with {what}"
            );
        }
    }
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_garbage_gets_clean_statuses() {
    let app = app_with(|_| {}).await;
    let channel = app.channel().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1ead_919e);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..200 {
        let path = [CREATE, GET, WATCH, CREATE_PIPELINE][round % 4];
        let len = rng.random_range(0..2048);
        let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Mostly well-framed garbage, sometimes raw garbage without a frame.
        let body = if round % 5 == 0 {
            payload
        } else {
            message(&payload)
        };
        let code = raw_call(&channel, app.addr, path, body).await;
        assert!(
            !matches!(code, Code::Internal | Code::Unknown | Code::DataLoss),
            "{path} answered {code:?} to garbage"
        );
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    eprintln!("statuses for 200 garbage requests: {codes:?}");
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_are_resource_exhausted() {
    let app = app_with(|_| {}).await;
    let channel = app.channel().await;
    let big = pb::CreateLeadRequest {
        lead: Some(pb::Lead {
            title: "x".repeat(5 * MIB),
            ..Default::default()
        }),
        request_id: String::new(),
    }
    .encode_to_vec();
    assert_eq!(
        raw_call(&channel, app.addr, CREATE, message(&big)).await,
        Code::ResourceExhausted,
        "a 5 MiB message"
    );
    // Declaring a huge length is refused before anything is buffered.
    assert_eq!(
        raw_call(&channel, app.addr, CREATE, frame(0, u32::MAX, b"tiny")).await,
        Code::ResourceExhausted,
        "a 4 GiB length prefix"
    );
    // Just under the limit is decoded (and then refused for its content, not its size).
    let under = pb::CreateLeadRequest {
        lead: Some(pb::Lead {
            title: "x".repeat(4 * MIB - 64),
            ..Default::default()
        }),
        request_id: String::new(),
    }
    .encode_to_vec();
    assert_eq!(
        raw_call(&channel, app.addr, CREATE, message(&under)).await,
        Code::InvalidArgument
    );
    // Through the generated client as well.
    let status = LeadServiceClient::new(channel.clone())
        .create_lead(pb::CreateLeadRequest::decode(big.as_slice()).unwrap())
        .await
        .expect_err("too big");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_message_size_limit_is_configurable() {
    let app = app_with(|s| s.limits.max_message_size = 1024).await;
    let status = app
        .leads
        .clone()
        .create_lead(pb::CreateLeadRequest {
            lead: Some(pb::Lead {
                title: "t".into(),
                labels: (0..20)
                    .map(|i| (format!("k{i}"), "v".repeat(100)))
                    .collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect_err("over 1 KiB");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_is_resource_exhausted_with_retry_info() {
    let app = app_with(|s| {
        s.limits.rate_limit_per_second = 5;
        s.limits.rate_limit_burst = 5;
    })
    .await;
    let mut pipelines = app.pipelines.clone();
    let mut refused = None;
    let mut allowed = 0;
    for _ in 0..20 {
        match pipelines
            .get_pipeline(pb::GetPipelineRequest {
                id: "default".into(),
            })
            .await
        {
            Ok(_) => allowed += 1,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("20 calls at once exceed 5 per second");
    assert!(allowed >= 4, "the burst is allowed ({allowed})");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(200),
        "one call's worth of wait at 5/s: {wait:?}"
    );
    // Health checks are never limited.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    for _ in 0..20 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health is not rate limited");
    }
    tokio::time::sleep(wait).await;
    pipelines
        .get_pipeline(pb::GetPipelineRequest {
            id: "default".into(),
        })
        .await
        .expect("allowed again after the advised wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_per_tenant_are_limited() {
    let app = app_with(|s| s.limits.max_streams_per_tenant = 2).await;
    let watch = || {
        let mut client = app.leads.clone();
        async move {
            client
                .watch_stage_changes(pb::WatchStageChangesRequest::default())
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = watch().await.expect("first stream");
    let _second = watch().await.expect("second stream");
    let status = watch().await.expect_err("a third stream is over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Closing a stream frees its slot once the server notices.
    drop(first);
    let started = Instant::now();
    loop {
        match watch().await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the closed stream's slot was not freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    still_serving(&app).await;
}

/// The server's default deadline. (A shorter `grpc-timeout` from the client wins; tonic
/// clients also enforce their own deadline, so that is checked in `src/grpc/guard.rs`.)
///
/// The call must not be able to finish before its deadline, whatever the machine's speed, so
/// the test holds it: the request's body starts a message and never finishes it, and the
/// service cannot decode a request it has not received. Only the deadline can end the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_deadline_is_deadline_exceeded() {
    use futures::StreamExt;

    let deadline = Duration::from_millis(300);
    let app = app_with(|s| s.limits.request_timeout = Some(deadline)).await;
    let channel = app.channel().await;
    for path in [CREATE, GET] {
        // A message header that announces 100 bytes, then 1 of them.
        let held = futures::stream::iter([Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(Bytes::from(frame(0, 100, &[0x0a]))),
        )])
        .chain(futures::stream::pending());
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", app.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(http_body_util::StreamBody::new(
                held,
            )))
            .unwrap();
        let started = Instant::now();
        let response =
            tokio::time::timeout(Duration::from_secs(30), channel.clone().oneshot(request))
                .await
                .expect("the deadline ends the call")
                .expect("the server answers at the HTTP level");
        let status = tonic::Status::from_header_map(response.headers())
            .expect("a trailers-only answer: the call ended before any message");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{path}: {status:?}");
        assert!(
            started.elapsed() >= deadline,
            "{path}: ended by the deadline, not before it: {:?}",
            started.elapsed()
        );
    }

    // Health is exempt.
    tonic_health::pb::health_client::HealthClient::new(app.channel().await)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health has no deadline");
}
