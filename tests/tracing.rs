//! OpenTelemetry export: each call's span reaches an OTLP/gRPC collector (a fake one, in this
//! test) with the caller's W3C trace context as its parent, and shutdown flushes it.
//!
//! One test only: the export is set up in the process-wide `tracing` subscriber.

#[path = "it/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};

use common::*;
use leadpipe::grpc::pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::IntValue(value) => Some(*value),
            _ => None,
        })
}

fn string_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(value) => Some(value.as_str()),
            _ => None,
        })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_spans_continue_the_callers_trace_and_reach_the_collector() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let telemetry =
        leadpipe::telemetry::init(Some(&format!("http://{collector_addr}"))).expect("exporter");
    assert!(telemetry.exporting());

    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let lead = create(&app, new_lead("Traced")).await;
    let mut request = tonic::Request::new(pb::GetLeadRequest {
        as_of: None,
        id: lead.id.clone(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    app.leads.clone().get_lead(request).await.expect("get lead");
    let mut missing = tonic::Request::new(pb::GetLeadRequest {
        as_of: None,
        id: "018f0000-0000-7000-8000-000000000000".into(),
    });
    missing.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let status = app.leads.clone().get_lead(missing).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    app.stop().await;

    // Nothing is exported yet (the batch waits up to 5 s); shutdown must flush it.
    telemetry.shutdown().await;

    let spans = collector.0.lock().unwrap().clone();
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };

    let gets = named("leadpipe.v1.LeadService/GetLead");
    assert_eq!(gets.len(), 2, "{spans:#?}");
    for span in &gets {
        assert_eq!(hex(&span.trace_id), TRACE_ID, "the caller's trace");
        assert_eq!(
            hex(&span.parent_span_id),
            PARENT_SPAN_ID,
            "the caller's span"
        );
        assert_ne!(hex(&span.span_id), PARENT_SPAN_ID);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(string_attribute(span, "rpc.system"), Some("grpc"));
        assert_eq!(
            string_attribute(span, "rpc.service"),
            Some("leadpipe.v1.LeadService")
        );
        assert_eq!(string_attribute(span, "rpc.method"), Some("GetLead"));
    }
    let mut codes: Vec<i64> = gets
        .iter()
        .map(|s| int_attribute(s, "rpc.grpc.status_code").expect("status code"))
        .collect();
    codes.sort();
    assert_eq!(codes, vec![0, 5], "OK and NOT_FOUND");

    // Without a traceparent, the call starts a trace of its own.
    let creates = named("leadpipe.v1.LeadService/CreateLead");
    assert_eq!(creates.len(), 1, "{spans:#?}");
    assert_ne!(hex(&creates[0].trace_id), TRACE_ID);
    assert!(creates[0].parent_span_id.is_empty());
    assert_eq!(int_attribute(creates[0], "rpc.grpc.status_code"), Some(0));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
