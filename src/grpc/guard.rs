//! A tower layer in front of every gRPC service: the start-up gate, the per-tenant rate limit,
//! the request deadline, and the mapping of tonic's transport-level decode errors to statuses
//! that blame the client.
//!
//! It must run after the layer that authenticates the caller: it reads the tenant from the
//! `RequestContext` in the request's extensions, and falls back to the default tenant when
//! there is none.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, Request, Response};
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::error;
use crate::app::RequestContext;
use crate::domain::ids::TenantId;

/// Paths that are never gated, limited or rewritten: load balancers must be able to ask for
/// health at any rate, also while the database is down.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Only these services need the database.
const DATABASE_PREFIX: &str = "/leadpipe.";

/// The messages tonic gives (with INTERNAL) when the bytes of a request cannot be decoded. They
/// are the client's fault and are reported as INVALID_ARGUMENT.
const UNDECODABLE_REQUEST: &[&str] = &[
    "failed to decode Protobuf message",
    "protocol error:",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "Error decompressing",
];
/// tonic's message (with OUT_OF_RANGE) for a request above the maximum decoding size, which
/// gRPC reports as RESOURCE_EXHAUSTED.
const OVERSIZED_REQUEST: &str = "Error, decoded message length too large";

/// Whether the database is connected and migrated. Until it is, calls that need the database get
/// UNAVAILABLE at once instead of waiting for a connection.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Limits applied by the guard.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Sustained requests per second per tenant; 0 turns the rate limit off.
    pub rate_limit_per_second: u32,
    /// Requests a tenant may send at once above the sustained rate (at least 1).
    pub rate_limit_burst: u32,
    /// The deadline of a call whose client sets none, or a longer one. Bounds the time to the
    /// response headers: a stream's messages are not limited.
    pub request_timeout: Option<Duration>,
}

#[derive(Clone)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

struct Shared {
    limiter: Option<DefaultKeyedRateLimiter<TenantId>>,
    clock: DefaultClock,
    request_timeout: Option<Duration>,
    readiness: Readiness,
}

impl GuardLayer {
    pub fn new(config: &GuardConfig, readiness: Readiness) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            shared: Arc::new(Shared {
                limiter,
                clock: DefaultClock::default(),
                request_timeout: config.request_timeout,
                readiness,
            }),
        }
    }
}

impl GuardLayer {
    /// Drops the rate-limit state of every tenant whose bucket has refilled, which is the same
    /// as never having seen it. Run periodically, so that the limiter's memory follows the
    /// tenants active lately rather than every tenant that ever called.
    pub fn forget_idle_tenants(&self) {
        if let Some(limiter) = &self.shared.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Tenants the rate limiter holds state for.
    pub fn tracked_tenants(&self) -> usize {
        self.shared.limiter.as_ref().map_or(0, |l| l.len())
    }

    pub async fn run_upkeep(
        self,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = interval.tick() => self.forget_idle_tenants(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Guard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with(HEALTH_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        if path.starts_with(DATABASE_PREFIX) && !self.shared.readiness.is_ready() {
            return Box::pin(std::future::ready(Ok(error::not_ready().into_http())));
        }
        if let Some(status) = self.shared.rate_limit(&request) {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let deadline = deadline(&request, self.shared.request_timeout);
        // The service that was polled ready handles this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let call = inner.call(request);
            let response = match deadline {
                None => call.await?,
                Some(deadline) => match tokio::time::timeout(deadline, call).await {
                    Ok(response) => response?,
                    Err(_) => return Ok(error::deadline_exceeded(deadline).into_http()),
                },
            };
            Ok(blame_client_for_undecodable_requests(response))
        })
    }
}

impl Shared {
    /// RESOURCE_EXHAUSTED, with a RetryInfo giving the wait, when the caller's tenant is over its
    /// rate.
    fn rate_limit<B>(&self, request: &Request<B>) -> Option<Status> {
        let limiter = self.limiter.as_ref()?;
        let tenant = request
            .extensions()
            .get::<RequestContext>()
            .map(|ctx| ctx.tenant.clone())
            .unwrap_or_else(TenantId::default_tenant);
        let not_until = limiter.check_key(&tenant).err()?;
        let wait = not_until.wait_time_from(self.clock.now());
        // Whole milliseconds, rounded up, so that a client waiting exactly this long succeeds.
        let wait = Duration::from_millis(wait.as_micros().div_ceil(1000) as u64);
        Some(error::rate_limited(&tenant, wait))
    }
}

/// Client-streaming calls last as long as the client keeps sending (an import of a million leads
/// takes minutes), so the server's default deadline does not apply to them.
pub(crate) const CLIENT_STREAMING: &[&str] = &["/leadpipe.v1.LeadService/ImportLeads"];

/// The sooner of the server's default deadline and the client's `grpc-timeout`.
fn deadline<B>(request: &Request<B>, default: Option<Duration>) -> Option<Duration> {
    let client = request
        .headers()
        .get("grpc-timeout")
        .and_then(|value| parse_grpc_timeout(value.to_str().ok()?));
    let default = default.filter(|_| !CLIENT_STREAMING.contains(&request.uri().path()));
    match (client, default) {
        (Some(client), Some(default)) => Some(client.min(default)),
        (client, default) => client.or(default),
    }
}

/// `grpc-timeout` is at most 8 digits and a unit: H, M, S, m (milli), u (micro) or n (nano).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 60 * 60),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// tonic answers a request it cannot decode with INTERNAL, and one above the size limit with
/// OUT_OF_RANGE. Both are the client's doing: report them as INVALID_ARGUMENT and
/// RESOURCE_EXHAUSTED, so that no client input produces INTERNAL. The message is kept.
fn blame_client_for_undecodable_requests<B>(mut response: Response<B>) -> Response<B> {
    // Only a call that failed before its handler ran has its status in the response headers
    // (trailers-only); the handler's own statuses never use these codes with these messages.
    let Some(status) = response
        .headers()
        .get("grpc-status")
        .filter(|code| matches!(code.as_bytes(), b"11" | b"13"))
        .and_then(|_| Status::from_header_map(response.headers()))
    else {
        return response;
    };
    let message = status.message();
    let rewritten = match status.code() {
        Code::Internal
            if UNDECODABLE_REQUEST
                .iter()
                .any(|prefix| message.starts_with(prefix)) =>
        {
            Code::InvalidArgument
        }
        Code::OutOfRange if message.starts_with(OVERSIZED_REQUEST) => Code::ResourceExhausted,
        _ => return response,
    };
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from(rewritten as i32));
    response
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    fn request_for(tenant: &str) -> Request<()> {
        let mut request = Request::new(());
        let mut ctx = RequestContext::anonymous();
        ctx.tenant = TenantId::parse(tenant).expect("tenant id");
        request.extensions_mut().insert(ctx);
        request
    }

    fn guard(rate_limit_per_second: u32) -> GuardLayer {
        GuardLayer::new(
            &GuardConfig {
                rate_limit_per_second,
                rate_limit_burst: 2,
                request_timeout: None,
            },
            Readiness::ready(),
        )
    }

    #[test]
    fn idle_tenants_are_forgotten() {
        let guard = guard(1000);
        for tenant in ["acme", "globex", "initech"] {
            assert!(guard.shared.rate_limit(&request_for(tenant)).is_none());
        }
        assert_eq!(guard.tracked_tenants(), 3);
        // At 1000 per second a burst of 2 refills within 2 ms.
        std::thread::sleep(Duration::from_millis(20));
        guard.forget_idle_tenants();
        assert_eq!(guard.tracked_tenants(), 0);
    }

    #[test]
    fn forgetting_keeps_a_tenant_that_is_over_its_rate() {
        let guard = guard(1);
        for _ in 0..2 {
            assert!(guard.shared.rate_limit(&request_for("acme")).is_none());
        }
        guard.forget_idle_tenants();
        assert_eq!(guard.tracked_tenants(), 1);
        assert!(guard.shared.rate_limit(&request_for("acme")).is_some());
    }

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5s"), None);
        assert_eq!(parse_grpc_timeout("-5S"), None);
    }

    #[test]
    fn the_sooner_deadline_wins() {
        let request = |timeout: Option<&str>| {
            let mut builder = Request::builder();
            if let Some(timeout) = timeout {
                builder = builder.header("grpc-timeout", timeout);
            }
            builder.body(()).unwrap()
        };
        let thirty = Some(Duration::from_secs(30));
        assert_eq!(deadline(&request(None), thirty), thirty);
        assert_eq!(
            deadline(&request(Some("100m")), thirty),
            Some(Duration::from_millis(100))
        );
        assert_eq!(deadline(&request(Some("1H")), thirty), thirty);
        assert_eq!(
            deadline(&request(Some("1H")), None),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(deadline(&request(None), None), None);
    }

    #[test]
    fn decode_failures_blame_the_client() {
        let response = |code: Code, message: &str| {
            let mut response: Response<()> = Status::new(code, message).into_http();
            response = blame_client_for_undecodable_requests(response);
            Status::from_header_map(response.headers()).unwrap().code()
        };
        assert_eq!(
            response(
                Code::Internal,
                "failed to decode Protobuf message: invalid wire type"
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            response(Code::Internal, "Unexpected EOF decoding stream."),
            Code::InvalidArgument
        );
        assert_eq!(
            response(
                Code::OutOfRange,
                "Error, decoded message length too large: found 9 bytes, the limit is: 4 bytes"
            ),
            Code::ResourceExhausted
        );
        assert_eq!(response(Code::Internal, "internal error"), Code::Internal);
        assert_eq!(
            response(Code::OutOfRange, "after_sequence 9 is beyond"),
            Code::OutOfRange
        );
    }

    #[test]
    fn rate_limit_gives_retry_info() {
        let layer = GuardLayer::new(
            &GuardConfig {
                rate_limit_per_second: 1,
                rate_limit_burst: 2,
                request_timeout: None,
            },
            Readiness::ready(),
        );
        let request = Request::builder().body(()).unwrap();
        assert!(layer.shared.rate_limit(&request).is_none());
        assert!(layer.shared.rate_limit(&request).is_none());
        let status = layer.shared.rate_limit(&request).expect("over the burst");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let wait = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .expect("retry delay");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another tenant has a budget of its own.
        let mut other = Request::builder().body(()).unwrap();
        other.extensions_mut().insert(RequestContext {
            tenant: TenantId::parse("acme").unwrap(),
            ..RequestContext::anonymous()
        });
        assert!(layer.shared.rate_limit(&other).is_none());
    }
}
