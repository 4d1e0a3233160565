//! Connection admission: connections that never complete a request are closed once the
//! first-request timeout passes, connections past the limit are closed as they arrive, and
//! clients that do complete requests are unaffected. On both backends, though only the transport
//! is involved, so that the settings are known to reach the server whatever its database.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use leadpipe::grpc::pb;
use leadpipe::grpc::pb::lead_service_client::LeadServiceClient;
use leadpipe::server::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Generous: how long anything the test waits for may take on a loaded machine.
const BOUND: Duration = Duration::from_secs(20);

async fn app_on(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    let (url, dir) = fresh_database(backend).await?;
    let mut settings = settings_for(&url);
    configure(&mut settings);
    Some(spawn_app_with(backend, settings, dir).await)
}

/// Reads (and discards what the server sends) until the server closes the connection; panics
/// if it is still open after `BOUND`.
async fn until_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {BOUND:?}");
}

/// Whether the server has closed the connection, judged within `wait`.
async fn is_closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn connections_that_never_complete_a_request_are_closed(backend: Backend) {
    let timeout = Duration::from_millis(500);
    let Some(app) = app_on(backend, |s| s.limits.first_request_timeout = Some(timeout)).await
    else {
        return;
    };
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    let settings_frame: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let cases: [(&str, Vec<u8>); 5] = [
        ("idle TCP", Vec::new()),
        ("half an HTTP/2 preface", PREFACE[..10].to_vec()),
        (
            "a preface and no request",
            [PREFACE, settings_frame].concat(),
        ),
        (
            "unfinished HTTP/1.1 headers",
            b"POST /leadpipe.v1.LeadService/GetLead HTTP/1.1\r\nhost: x\r\n".to_vec(),
        ),
        ("TLS on a plaintext port", vec![0x16, 0x03, 0x01, 0x00]),
    ];
    let started = Instant::now();
    let mut open = Vec::new();
    for (what, bytes) in cases {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        stream.write_all(&bytes).await.expect("send");
        open.push((what, stream));
    }
    for (what, stream) in &mut open {
        until_closed(stream, what).await;
    }
    assert!(
        started.elapsed() >= timeout,
        "closed by the timeout, not before it: {:?}",
        started.elapsed()
    );

    // A request whose body never ends, on a client's fresh connection.
    let channel = connect(app.addr).await;
    let never_ends = futures::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 100, 0x0a])),
    )])
    .chain(futures::stream::pending());
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/leadpipe.v1.LeadService/GetLead",
            app.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            never_ends,
        )))
        .unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(BOUND, channel.clone().oneshot(request))
        .await
        .expect("the server ends the call");
    assert!(
        started.elapsed() >= timeout,
        "ended by the first-request timeout, not before it: {:?}",
        started.elapsed()
    );
    // The connection is gone; the default deadline (30 s) would have answered much later.
    assert!(answer.is_err(), "{answer:?}");

    still_serves_clients_that_complete_requests(&app, timeout).await;
}

/// Connections whose first request completed stay open past the timeout, and a client-streaming
/// first call may take longer than it.
async fn still_serves_clients_that_complete_requests(app: &TestApp, timeout: Duration) {
    let mut watcher = LeadServiceClient::new(connect(app.addr).await);
    let mut stream = watcher
        .watch_stage_changes(pb::WatchStageChangesRequest::default())
        .await
        .expect("watch")
        .into_inner();

    let mut importer = LeadServiceClient::new(connect(app.addr).await);
    let (rows, receiver) = tokio::sync::mpsc::channel(4);
    let import = tokio::spawn(async move {
        importer
            .import_leads(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    let row = |n: usize| pb::ImportLeadsRequest {
        lead: Some(new_lead(&format!("imported {n}"))),
        external_id: format!("row-{n}"),
        ..Default::default()
    };
    rows.send(row(1)).await.expect("first row");
    // Connected, but silent until after the timeout: its connection is closed, and the client
    // connects again for its first call.
    let mut idle = LeadServiceClient::new(connect(app.addr).await);
    // Past the first-request timeout, on purpose: the stream and the import must outlive it.
    tokio::time::sleep(timeout * 3).await;
    idle.list_leads(pb::ListLeadsRequest::default())
        .await
        .expect("a client whose idle connection was closed connects again");
    rows.send(row(2)).await.expect("second row");
    drop(rows);
    let imported = tokio::time::timeout(BOUND, import)
        .await
        .expect("the import ends")
        .expect("join")
        .expect("a slow import on a fresh connection is not cut off")
        .into_inner();
    assert_eq!(imported.imported, 2, "{imported:?}");

    let lead = create(app, new_lead("seen by the watcher")).await;
    let event = next_event(&mut stream).await;
    assert_eq!(event.lead_id, lead.id, "the stream outlived the timeout");
}

async fn connections_past_the_limit_are_closed_until_slots_free(backend: Backend) {
    // The test app's own client holds one connection (it has completed no request, but the
    // first-request timeout is far away): two more fill the server.
    let Some(app) = app_on(backend, |s| {
        s.limits.max_connections = Some(3);
        s.limits.first_request_timeout = Some(Duration::from_secs(600));
    })
    .await
    else {
        return;
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    let mut refused = TcpStream::connect(app.addr).await.expect("TCP connects");
    until_closed(&mut refused, "a connection past the limit").await;
    for stream in &mut held {
        assert!(
            !is_closed_within(stream, Duration::from_millis(100)).await,
            "connections within the limit stay open"
        );
    }

    // A client that arrives now is refused as well.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let attempt = async {
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        LeadServiceClient::new(channel)
            .list_leads(pb::ListLeadsRequest::default())
            .await
            .map_err(|status| format!("{:?}", status.code()))
    };
    let refused = tokio::time::timeout(BOUND, attempt)
        .await
        .expect("refused promptly");
    assert!(refused.is_err(), "{refused:?}");

    // Once a connection ends, its slot serves the next client.
    drop(held.pop());
    let started = Instant::now();
    let _served = loop {
        let attempt = async {
            let channel = endpoint.connect().await.ok()?;
            let mut client = LeadServiceClient::new(channel);
            client
                .list_leads(pb::ListLeadsRequest::default())
                .await
                .ok()?;
            Some(client)
        };
        if let Some(client) = tokio::time::timeout(BOUND, attempt).await.ok().flatten() {
            // Kept, so that its connection keeps the slot.
            break client;
        }
        assert!(
            started.elapsed() < BOUND,
            "the freed slot was never given to a new client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The freed slot is taken again: the next connection is closed.
    let mut refused = TcpStream::connect(app.addr).await.expect("TCP connects");
    until_closed(&mut refused, "past the limit again").await;
    drop(held);
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connections_that_never_complete_a_request_are_closed() {
        super::connections_that_never_complete_a_request_are_closed(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connections_past_the_limit_are_closed_until_slots_free() {
        super::connections_past_the_limit_are_closed_until_slots_free(Backend::Sqlite).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connections_that_never_complete_a_request_are_closed() {
        super::connections_that_never_complete_a_request_are_closed(Backend::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn connections_past_the_limit_are_closed_until_slots_free() {
        super::connections_past_the_limit_are_closed_until_slots_free(Backend::Postgres).await;
    }
}
