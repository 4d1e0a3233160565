//! Admission of connections: a cap on how many are open at once, and a deadline for a new
//! connection's first request.
//!
//! HTTP/2 keepalive only starts once a connection has finished its preface, and hyper gives an
//! HTTP/2 connection no deadline of its own, so a peer that opens TCP and sends nothing, half a
//! preface, or a request whose body never ends kept its connection (and a file descriptor) for
//! good. [`LimitedIncoming`] wraps the listener: past `max_connections` a new connection is
//! closed at once, and each admitted one fails its reads, which makes the server drop it, unless
//! its first request has completed by `first_request_timeout` after the accept. That covers
//! the TLS handshake, the HTTP/2 or HTTP/1.1 preamble and the first request.
//!
//! The server learns that a request completed through [`FirstRequestLayer`], which finds the
//! connection's state in the request's extensions (tonic puts [`ConnectionInfo`] there) and marks
//! the connection once the request's body has ended or the call has answered. A client-streaming
//! call is exempt from the wait for its body, which lasts as long as the client has rows to send:
//! its headers are enough.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use prost::bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming, TlsConnectInfo};
use tower::{Layer, Service};

/// How often a full server logs that it closes new connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connections a listener admits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The most connections open at once; None for no limit.
    pub max_connections: Option<usize>,
    /// How long a new connection has to complete its first request; None for no deadline.
    pub first_request_timeout: Option<Duration>,
}

/// The listener's connections, each admitted within [`ConnectionLimits`].
pub struct LimitedIncoming {
    inner: TcpIncoming,
    slots: Option<Arc<Semaphore>>,
    max_connections: usize,
    first_request_timeout: Option<Duration>,
    last_warning: Option<Instant>,
}

impl LimitedIncoming {
    pub fn new(inner: TcpIncoming, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            slots: limits
                .max_connections
                .map(|max| Arc::new(Semaphore::new(max))),
            max_connections: limits.max_connections.unwrap_or(0),
            first_request_timeout: limits.first_request_timeout,
            last_warning: None,
        }
    }

    fn warn_full(&mut self) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            self.last_warning = Some(now);
            tracing::warn!(
                max_connections = self.max_connections,
                "the server holds as many connections as it may; closing new ones until some end"
            );
        }
    }
}

impl Stream for LimitedIncoming {
    type Item = io::Result<Admitted>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let stream = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(stream)) => stream,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            };
            let slot = match &this.slots {
                None => None,
                Some(slots) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        // Closed at once, so that the client fails fast and retries, rather than
                        // waiting in the accept queue behind connections that may never leave.
                        drop(stream);
                        this.warn_full();
                        continue;
                    }
                },
            };
            return Poll::Ready(Some(Ok(Admitted::new(
                stream,
                slot,
                this.first_request_timeout,
            ))));
        }
    }
}

/// Whether a connection has completed a request, shared by the connection and its requests.
#[derive(Debug, Default)]
struct ConnectionState {
    answered: AtomicBool,
}

impl ConnectionState {
    fn mark_answered(&self) {
        self.answered.store(true, Ordering::Release);
    }

    fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }
}

/// An admitted connection: holds its slot until it closes, and fails its reads once the first
/// request is overdue.
pub struct Admitted {
    stream: TcpStream,
    state: Arc<ConnectionState>,
    deadline: Option<Pin<Box<Sleep>>>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    fn new(
        stream: TcpStream,
        slot: Option<OwnedSemaphorePermit>,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            stream,
            state: Arc::default(),
            deadline: timeout.map(|timeout| Box::pin(tokio::time::sleep(timeout))),
            _slot: slot,
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.deadline {
            if this.state.is_answered() {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                // The server reads whenever it waits for a peer, so polling the timer here
                // wakes it when the deadline passes; the error makes it drop the connection.
                tracing::debug!(
                    "closing a connection whose first request did not complete in time"
                );
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request completed within the first-request timeout",
                )));
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What tonic puts into each request's extensions for an [`Admitted`] connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    state: Arc<ConnectionState>,
}

impl Connected for Admitted {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.stream.connect_info(),
            state: self.state.clone(),
        }
    }
}

/// Marks a request's connection once the request has completed; see the module's comment.
#[derive(Debug, Clone, Default)]
pub struct FirstRequestLayer;

impl<S> Layer<S> for FirstRequestLayer {
    type Service = FirstRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FirstRequest { inner }
    }
}

#[derive(Debug, Clone)]
pub struct FirstRequest<S> {
    inner: S,
}

impl<S, ResBody> Service<Request<Body>> for FirstRequest<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MarkWhenAnswered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let extensions = request.extensions();
        let info = extensions.get::<ConnectionInfo>().cloned().or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnectionInfo>>()
                .map(|tls| tls.get_ref().clone())
        });
        let mut pending = None;
        if let Some(info) = info {
            // What tonic would have put there for a plain TCP connection, for `remote_addr`.
            request.extensions_mut().insert(info.tcp.clone());
            let state = info.state;
            if !state.is_answered() {
                if super::guard::CLIENT_STREAMING.contains(&request.uri().path()) {
                    state.mark_answered();
                } else {
                    let body = std::mem::replace(request.body_mut(), Body::empty());
                    *request.body_mut() = Body::new(MarkAtEnd {
                        inner: body,
                        state: Some(state.clone()),
                    });
                    pending = Some(state);
                }
            }
        }
        MarkWhenAnswered {
            inner: self.inner.call(request),
            state: pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// The call's future; marks the connection when it yields a response.
    pub struct MarkWhenAnswered<F> {
        #[pin]
        inner: F,
        state: Option<Arc<ConnectionState>>,
    }
}

impl<F, T, E> Future for MarkWhenAnswered<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let (Ok(_), Some(state)) = (&output, this.state.take()) {
            state.mark_answered();
        }
        Poll::Ready(output)
    }
}

/// A request body that marks its connection once it has been received in full.
struct MarkAtEnd {
    inner: Body,
    state: Option<Arc<ConnectionState>>,
}

impl http_body::Body for MarkAtEnd {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if (frame.is_none() || this.inner.is_end_stream())
            && let Some(state) = this.state.take()
        {
            state.mark_answered();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
