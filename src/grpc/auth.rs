//! Authentication and authorisation: a tower layer in front of every gRPC service.
//!
//! A call carries one `authorization: Bearer <key>` (several are refused). The layer checks the key against the database
//! on every call (one primary-key read, so a revocation applies to the next call on every
//! replica), checks the key's role against the method, and puts the caller's
//! [`RequestContext`] (the key's tenant, and `key:<tenant>_<id>` as the actor) into the request's
//! extensions, where [`super::context`] and the guard layer read it. Health and reflection stay
//! open.
//!
//! Without a key, the call is refused with UNAUTHENTICATED, unless the server runs without
//! authentication (see [`AuthMode`]): then it acts for the `default` tenant. A key that is sent
//! is always checked, whatever the mode.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::sync::OnceCell;
use tonic::Status;
use tower::{Layer, Service};

use super::error;
use super::guard::Readiness;
use crate::app::api_keys::{KeyName, KeyRejected, KeyService, Role};
use crate::app::{AppError, RequestContext};
use crate::store::StoreError;

/// When the server asks for API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Keys are required if any unrevoked key exists at start-up. With none, a server on a
    /// loopback address serves the `default` tenant without keys (and warns); a server on any
    /// other address refuses to start.
    #[default]
    Auto,
    /// Keys are always required.
    Required,
    /// Calls without a key act for the `default` tenant. For trusted networks only.
    Disabled,
}

/// Why the server refuses to start.
#[derive(thiserror::Error)]
#[error(
    "refusing to serve on {addr} without authentication: no API key exists, and {addr} is not a \
     loopback address. Create a key with `leadpipe keys create --tenant <tenant> --role admin`, \
     or pass `--auth disabled` (LEADPIPE_AUTH=disabled) to serve without authentication"
)]
pub struct AuthRefused {
    pub addr: SocketAddr,
}

impl std::fmt::Debug for AuthRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Whether calls need a key, given the mode, whether an unrevoked key exists and the address
/// served. `Err` when the server must not start.
pub fn decide(mode: AuthMode, any_key: bool, addr: SocketAddr) -> Result<bool, AuthRefused> {
    match mode {
        AuthMode::Required => Ok(true),
        AuthMode::Disabled => Ok(false),
        AuthMode::Auto if any_key => Ok(true),
        AuthMode::Auto if addr.ip().is_loopback() => Ok(false),
        AuthMode::Auto => Err(AuthRefused { addr }),
    }
}

fn warn_unauthenticated(mode: AuthMode, addr: SocketAddr) {
    if mode == AuthMode::Disabled && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "AUTHENTICATION IS DISABLED on a non-loopback address: anyone who can reach {addr} \
             can read and change the default tenant's pipeline"
        );
    } else {
        tracing::warn!(
            %addr,
            ?mode,
            "AUTHENTICATION IS OFF: calls without an API key act for the `default` tenant. \
             Create a key with `leadpipe keys create` and restart to require keys"
        );
    }
}

/// The role a method needs, or None if it is open to everyone. Methods the table does not know
/// need admin, so a new RPC is closed until it is classified here.
pub fn required_role(path: &str) -> Option<Role> {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return None;
    }
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    Some(match (service, method) {
        (
            "leadpipe.v1.LeadService",
            "GetLead" | "ListLeads" | "CheckMove" | "ListStageChanges" | "WatchStageChanges"
            | "ListLeadRevisions" | "WatchLeadChanges",
        ) => Role::Reader,
        (
            "leadpipe.v1.LeadService",
            "CreateLead" | "UpdateLead" | "DeleteLead" | "MoveLead" | "ImportLeads",
        ) => Role::Writer,
        ("leadpipe.v1.PipelineService", "GetPipeline" | "ListPipelines") => Role::Reader,
        ("leadpipe.v1.PipelineService", "CreatePipeline" | "UpdatePipeline") => Role::Admin,
        // Forecasts and metrics only read.
        ("leadpipe.v1.ForecastService", _) => Role::Reader,
        _ => Role::Admin,
    })
}

/// Builds the [`Auth`] service around the server's routes.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    keys: KeyService,
    mode: AuthMode,
    addr: SocketAddr,
    readiness: Readiness,
    /// Whether calls without a key are refused; decided once, when the database is first
    /// reachable.
    required: OnceCell<bool>,
}

impl AuthLayer {
    pub fn new(keys: KeyService, mode: AuthMode, addr: SocketAddr, readiness: Readiness) -> Self {
        Self {
            shared: Arc::new(Shared {
                keys,
                mode,
                addr,
                readiness,
                required: OnceCell::new(),
            }),
        }
    }

    /// Decides now whether keys are required, if that needs no database or the database is
    /// ready, and logs the warning when they are not; otherwise the first call decides. Fails
    /// if the server must not start (see [`check`]).
    pub async fn resolve(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let shared = &self.shared;
        if shared.mode == AuthMode::Auto && !shared.readiness.is_ready() {
            tracing::info!(
                "the database is not reachable yet; whether calls need an API key is decided \
                 once it is"
            );
            let shared = shared.clone();
            tokio::spawn(async move {
                while !shared.readiness.is_ready() {
                    if Arc::strong_count(&shared) == 1 {
                        return; // The server is gone.
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                if let Err(error) = shared.required().await {
                    tracing::warn!(%error, "cannot look for API keys yet; the first call will");
                }
            });
            return Ok(());
        }
        let any_key = match shared.mode {
            AuthMode::Auto => match shared.keys.any_active().await {
                Ok(any_key) => any_key,
                // A lost connection must not stop the server: the first call decides, and
                // fails closed if it still cannot.
                Err(error) => {
                    tracing::warn!(%error, "cannot look for API keys yet; the first call will");
                    return Ok(());
                }
            },
            _ => false,
        };
        let required = decide(shared.mode, any_key, shared.addr)?;
        if shared.required.set(required).is_ok() && !required {
            warn_unauthenticated(shared.mode, shared.addr);
        }
        Ok(())
    }
}

/// The start-up check, before binding: fails if the server must not serve on `addr` (auto
/// mode, no unrevoked key, not a loopback address). Needs the database (migrated, so that the
/// keys table exists) only in auto mode on a non-loopback address; if it cannot be reached, the
/// check is left to the first call, which then fails closed.
pub async fn check(keys: &KeyService, mode: AuthMode, addr: SocketAddr) -> Result<(), AuthRefused> {
    if mode != AuthMode::Auto || addr.ip().is_loopback() {
        return Ok(());
    }
    match keys.any_active_after_migrating().await {
        Ok(any_key) => decide(mode, any_key, addr).map(|_| ()),
        Err(error) => {
            tracing::warn!(%error, "cannot look for API keys yet; calls without one are refused");
            Ok(())
        }
    }
}

impl Shared {
    async fn required(&self) -> Result<bool, StoreError> {
        self.required
            .get_or_try_init(|| async {
                let any_key = match self.mode {
                    AuthMode::Auto => self.keys.any_active().await?,
                    _ => false,
                };
                let required = match decide(self.mode, any_key, self.addr) {
                    Ok(required) => required,
                    Err(refused) => {
                        // Only reachable when the start-up check could not see the database:
                        // fail closed.
                        tracing::error!("{refused}; every call without a key is refused");
                        true
                    }
                };
                if !required {
                    warn_unauthenticated(self.mode, self.addr);
                }
                Ok(required)
            })
            .await
            .copied()
    }

    /// The caller's context, or the status that refuses the call.
    async fn authorize(
        &self,
        headers: &http::HeaderMap,
        path: &str,
        needed: Role,
    ) -> Result<(RequestContext, Option<KeyName>), Status> {
        if !self.readiness.is_ready() {
            return Err(error::not_ready());
        }
        // Proxies and clients disagree on which of several values counts, so a call that
        // carries more than one is refused rather than run as whichever comes first.
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let header = values.next();
        let more = values.count();
        if more > 0 {
            return Err(AppError::Unauthenticated(format!(
                "the call has {} authorization metadata entries; send exactly one, \
                 `authorization: Bearer <key>`",
                more + 1
            ))
            .into());
        }
        let Some(header) = header else {
            return if self.required().await.map_err(key_check_failed)? {
                Err(AppError::Unauthenticated(
                    "this call needs an API key: send the metadata `authorization: Bearer <key>`"
                        .into(),
                )
                .into())
            } else {
                Ok((RequestContext::anonymous(), None))
            };
        };
        let key = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, key) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .ok_or_else(|| {
                Status::from(AppError::Unauthenticated(
                    "the authorization metadata must read `Bearer <key>`".into(),
                ))
            })?;
        let principal = self.keys.authenticate(key).await.map_err(|e| match e {
            KeyRejected::Store(error) => key_check_failed(error),
            rejected => AppError::Unauthenticated(rejected.to_string()).into(),
        })?;
        if principal.role < needed {
            let method = path.strip_prefix('/').unwrap_or(path);
            return Err(AppError::PermissionDenied(format!(
                "API key {} has the role {}; {method} needs {needed}",
                principal.key, principal.role
            ))
            .into());
        }
        Ok((principal.context(), Some(principal.key)))
    }
}

/// The database's own words stay in the server's log: they can name hosts, users and tables.
fn key_check_failed(error: StoreError) -> Status {
    tracing::warn!(%error, "cannot check the API key");
    AppError::from(error).into()
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Some(needed) = required_role(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let shared = self.shared.clone();
        // The service that was polled ready handles this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let authorized = shared
                .authorize(request.headers(), request.uri().path(), needed)
                .await;
            match authorized {
                Ok((ctx, key)) => {
                    request.extensions_mut().insert(ctx);
                    // Streams re-check it while they are open (see `EventHub::subscribe`).
                    if let Some(key) = key {
                        request.extensions_mut().insert(key);
                    }
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_method() {
        let role = |path: &str| required_role(path);
        assert_eq!(role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(role("/grpc.health.v1.Health/Watch"), None);
        assert_eq!(
            role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(
            role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            None
        );
        for method in [
            "GetLead",
            "ListLeads",
            "CheckMove",
            "ListStageChanges",
            "WatchStageChanges",
            "ListLeadRevisions",
            "WatchLeadChanges",
        ] {
            assert_eq!(
                role(&format!("/leadpipe.v1.LeadService/{method}")),
                Some(Role::Reader)
            );
        }
        for method in [
            "CreateLead",
            "UpdateLead",
            "DeleteLead",
            "MoveLead",
            "ImportLeads",
        ] {
            assert_eq!(
                role(&format!("/leadpipe.v1.LeadService/{method}")),
                Some(Role::Writer)
            );
        }
        assert_eq!(
            role("/leadpipe.v1.PipelineService/ListPipelines"),
            Some(Role::Reader)
        );
        assert_eq!(
            role("/leadpipe.v1.PipelineService/UpdatePipeline"),
            Some(Role::Admin)
        );
        assert_eq!(
            role("/leadpipe.v1.ForecastService/GetForecast"),
            Some(Role::Reader)
        );
        // Unknown methods and services are closed.
        assert_eq!(role("/leadpipe.v1.LeadService/Purge"), Some(Role::Admin));
        assert_eq!(role("/other.Service/Call"), Some(Role::Admin));
        assert_eq!(role("/"), Some(Role::Admin));
    }

    #[test]
    fn auto_mode_refuses_a_public_address_without_keys() {
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let loopback6: SocketAddr = "[::1]:50051".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let required = |mode, any_key, addr| decide(mode, any_key, addr).ok();
        assert_eq!(required(AuthMode::Auto, false, loopback), Some(false));
        assert_eq!(required(AuthMode::Auto, false, loopback6), Some(false));
        assert_eq!(required(AuthMode::Auto, false, public), None);
        assert_eq!(required(AuthMode::Auto, true, public), Some(true));
        assert_eq!(required(AuthMode::Auto, true, loopback), Some(true));
        assert_eq!(required(AuthMode::Required, false, loopback), Some(true));
        assert_eq!(required(AuthMode::Disabled, true, public), Some(false));
    }
}
