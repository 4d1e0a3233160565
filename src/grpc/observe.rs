//! A tower layer in front of authentication and the guard, so that it sees every call, refused
//! ones included: one tracing span per call, continuing the caller's trace, and the call
//! metrics. grpc-web is translated before it, so it always reads plain gRPC responses.
//!
//! A call's status is in the response headers when it failed before sending a message
//! (trailers-only), and otherwise in the trailers at the end of the body. So the call is
//! recorded when the body ends: for a stream, that is when the stream ends, and a stream the
//! client abandons counts as CANCELLED.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{Metrics, RpcLabels};

#[derive(Clone, Default)]
pub struct ObserveLayer {
    metrics: Option<Arc<Metrics>>,
}

impl ObserveLayer {
    /// Spans always; metrics when `metrics` is given.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let span = call_span(&request);
        let metrics = self
            .metrics
            .as_ref()
            .map(|m| (m.clone(), m.rpc_labels(request.uri().path())));
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let end = CallEnd {
            metrics,
            start,
            span: span.clone(),
        };
        Box::pin(
            async move {
                let response = call.await?;
                let (parts, body) = response.into_parts();
                let end = match status_code(&parts.headers) {
                    Some(code) => {
                        end.finish(code);
                        None
                    }
                    None => Some(end),
                };
                Ok(Response::from_parts(
                    parts,
                    ObservedBody { inner: body, end },
                ))
            }
            .instrument(span),
        )
    }
}

/// The span of one call, named and attributed as OpenTelemetry's RPC conventions say, with the
/// W3C `traceparent` of the request (if any) as its parent. It is at DEBUG level: the
/// OpenTelemetry export enables it, plain logging does not (unless `RUST_LOG` asks for it).
fn call_span<B>(request: &Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    let span = tracing::debug_span!(
        target: "leadpipe::rpc",
        "rpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        // Fails only when no OpenTelemetry layer is installed, and then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span
}

/// Reads propagation headers (`traceparent`, `tracestate`) from gRPC metadata.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(code))
}

/// What is recorded when the call ends.
struct CallEnd {
    metrics: Option<(Arc<Metrics>, RpcLabels)>,
    start: Instant,
    span: tracing::Span,
}

impl CallEnd {
    fn finish(self, code: Code) {
        if let Some((metrics, labels)) = &self.metrics {
            metrics.record_rpc(labels, code, self.start.elapsed());
        }
        self.span.record("rpc.grpc.status_code", code as i32);
        // The codes that OpenTelemetry's conventions count as a server's own failure; the
        // others are the client's doing and leave the span's status unset.
        if matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ) {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

pin_project! {
    /// The response body, watched for the trailers that carry the call's status.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        end: Option<CallEnd>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the trailers: the client reset the stream or went away.
            if let Some(end) = this.project().end.take() {
                end.finish(Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| status_code(trailers).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Unknown),
            // A gRPC response always ends with a status; a body that ends without one is broken.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(end) = this.end.take()
        {
            end.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn extracts_the_callers_trace_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let remote = context.span().span_context().clone();
        assert!(remote.is_remote());
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(remote.span_id().to_string(), "00f067aa0ba902b7");
        assert!(remote.is_sampled());

        let none = TraceContextPropagator::new().extract(&HeaderExtractor(&HeaderMap::new()));
        assert!(!none.span().span_context().is_valid());
    }

    #[test]
    fn reads_status_codes() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_code(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_code(&headers), Some(Code::NotFound));
    }
}
