//! `LeadService`'s two watch methods, `WatchStageChanges` and `WatchLeadChanges`, and the
//! service that routes them beside the generated server of every other `LeadService` method.
//!
//! A write is delivered to every subscriber of its tenant. Converted into protobuf and encoded
//! per stream, the same event was serialised once per subscriber, and at thousands of
//! subscribers that work starved the writes themselves (BENCHMARKS.md, "Streaming fan-out").
//! Here each event is encoded once per kind of stream, by the first stream that sends it
//! (`StreamEvent::encoded`), and every other stream writes the same bytes through
//! [`PassThroughCodec`]. The wire is unchanged: the bytes are the message's own encoding, and
//! tonic frames, compresses and limits them as it would the message.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::codegen::{BoxFuture, StdError};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};

use super::codec::PassThroughCodec;
use super::lead_service::LeadApi;
use super::{context, pb, unary};
use crate::api::convert::stage_change_event;
use crate::app::api_keys::KeyName;
use crate::app::events::{EventFilter, StreamEvent, StreamKind};
use crate::app::leads::LeadService;

const WATCH_STAGE_CHANGES: &str = "/leadpipe.v1.LeadService/WatchStageChanges";
const WATCH_LEAD_CHANGES: &str = "/leadpipe.v1.LeadService/WatchLeadChanges";

type EncodedStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// `leadpipe.v1.LeadService`: the watch methods here, every other method in the generated
/// server.
#[derive(Clone)]
pub struct LeadServiceRoutes {
    unary: unary::lead_service_server::LeadServiceServer<LeadApi>,
    leads: Arc<LeadService>,
    max_message_size: usize,
}

impl LeadServiceRoutes {
    /// `max_message_size` bounds requests and responses alike, as on every other service.
    pub fn new(api: LeadApi, max_message_size: usize) -> Self {
        let leads = Arc::new(api.leads.clone());
        Self {
            unary: unary::lead_service_server::LeadServiceServer::new(api)
                .max_decoding_message_size(max_message_size)
                .max_encoding_message_size(max_message_size),
            leads,
            max_message_size,
        }
    }

    fn grpc<U>(&self) -> Grpc<PassThroughCodec<U>>
    where
        U: Message + Default + Send + 'static,
    {
        Grpc::new(PassThroughCodec::default())
            .apply_max_message_size_config(Some(self.max_message_size), Some(self.max_message_size))
    }
}

impl NamedService for LeadServiceRoutes {
    const NAME: &'static str = unary::lead_service_server::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for LeadServiceRoutes
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match request.uri().path() {
            WATCH_STAGE_CHANGES => {
                let mut grpc = self.grpc::<pb::WatchStageChangesRequest>();
                let leads = self.leads.clone();
                Box::pin(async move {
                    let watch = tower::service_fn(move |request| {
                        watch_stage_changes(leads.clone(), request)
                    });
                    Ok(grpc.server_streaming(watch, request).await)
                })
            }
            WATCH_LEAD_CHANGES => {
                let mut grpc = self.grpc::<pb::WatchLeadChangesRequest>();
                let leads = self.leads.clone();
                Box::pin(async move {
                    let watch = tower::service_fn(move |request| {
                        watch_lead_changes(leads.clone(), request)
                    });
                    Ok(grpc.server_streaming(watch, request).await)
                })
            }
            _ => self.unary.call(request),
        }
    }
}

async fn watch_stage_changes(
    leads: Arc<LeadService>,
    request: Request<pb::WatchStageChangesRequest>,
) -> Result<Response<EncodedStream>, Status> {
    let filter = EventFilter::try_from(request.get_ref())?;
    let after_sequence = request.get_ref().after_sequence;
    subscribe(
        &leads,
        &request,
        after_sequence,
        filter,
        StreamKind::StageChanges,
    )
    .await
}

async fn watch_lead_changes(
    leads: Arc<LeadService>,
    request: Request<pb::WatchLeadChangesRequest>,
) -> Result<Response<EncodedStream>, Status> {
    let filter = EventFilter::try_from(request.get_ref())?;
    let after_sequence = request.get_ref().after_sequence;
    subscribe(
        &leads,
        &request,
        after_sequence,
        filter,
        StreamKind::LeadChanges,
    )
    .await
}

async fn subscribe<T>(
    leads: &LeadService,
    request: &Request<T>,
    after_sequence: Option<i64>,
    filter: EventFilter,
    kind: StreamKind,
) -> Result<Response<EncodedStream>, Status> {
    let ctx = context(request);
    let key = request.extensions().get::<KeyName>().cloned();
    let events = leads
        .events()
        .subscribe(&ctx, key, after_sequence, filter)
        .await?;
    // A stage stream's filter passes only events that carry a stage change, so every event it
    // sees has an encoding.
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(events).filter_map(move |item| async move {
            match item {
                Ok(shared) => encoded(&shared, kind).map(Ok),
                Err(error) => Some(Err(Status::from(*error))),
            }
        });
    Ok(Response::new(Box::pin(stream)))
}

/// The event's protobuf encoding for `kind`, made once for every stream of that kind.
fn encoded(shared: &StreamEvent, kind: StreamKind) -> Option<Bytes> {
    shared.encoded(kind, |event| match kind {
        StreamKind::StageChanges => {
            stage_change_event(event).map(|message| Bytes::from(message.encode_to_vec()))
        }
        StreamKind::LeadChanges => Some(Bytes::from(
            pb::LeadChangeEvent::from(event).encode_to_vec(),
        )),
    })
}
