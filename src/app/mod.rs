//! Application services: each use case composes the domain rules and the store into one
//! transaction. Transport-agnostic: the gRPC layer converts requests into these calls.

pub mod api_keys;
pub mod catalog;
pub mod clock;
pub mod evaluation;
pub mod events;
pub mod forecast;
pub mod import;
pub mod leads;
pub mod pipelines;
pub mod visits;

use std::sync::Arc;

use self::api_keys::KeyService;
use self::catalog::PipelineCatalog;
pub use self::clock::Clock;
use self::events::EventHub;
use self::forecast::model::{MODEL_TTL, ModelCache};
use self::forecast::{ForecastService, LeadScorer};
use self::import::ImportService;
use self::leads::LeadService;
use self::pipelines::PipelineService;
use crate::domain::FieldViolation;
use crate::domain::ids::TenantId;
use crate::domain::policy::MoveViolation;
use crate::store::{Store, StoreConfig, StoreError};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// The application's use cases over one store, wired once for the server and the command-line
/// tools alike.
pub struct Services {
    pub store: Store,
    /// Where every use case reads the time.
    pub clock: Clock,
    pub keys: KeyService,
    pub leads: LeadService,
    pub pipelines: PipelineService,
    pub import: ImportService,
    pub forecasts: ForecastService,
}

impl Services {
    /// Connects and migrates, for a command-line tool. Fails if the database cannot be reached.
    /// The event hub's tasks stop when `shutdown` turns true.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let store = Store::connect(config).await?;
        store.migrate().await?;
        let (_, shutdown) = tokio::sync::watch::channel(false);
        Ok(Self::wire(
            store,
            Clock::system(),
            shutdown,
            TaskTracker::new(),
        ))
    }

    /// Wires the use cases over `store`, reading the time from `clock`. Streams and their
    /// tailers run on `tasks` and stop when `shutdown` turns true.
    pub fn wire(
        store: Store,
        clock: Clock,
        shutdown: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) -> Self {
        let catalog = Arc::new(PipelineCatalog::new(clock.clone()));
        let models = Arc::new(ModelCache::new(MODEL_TTL));
        let keys = KeyService::new(store.clone(), clock.clone());
        let events = EventHub::new(store.clone(), keys.clone(), shutdown, tasks);
        Self {
            leads: LeadService::new(
                store.clone(),
                catalog.clone(),
                events.clone(),
                LeadScorer::new(models.clone()),
                clock.clone(),
            ),
            import: ImportService::new(store.clone(), catalog.clone(), events, clock.clone()),
            forecasts: ForecastService::new(store.clone(), catalog.clone(), models, clock.clone()),
            pipelines: PipelineService::new(store.clone(), catalog, clock.clone()),
            keys,
            clock,
            store,
        }
    }
}

/// Who is calling, on whose behalf.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: TenantId,
    /// Recorded as the actor of stage changes.
    pub actor: String,
}

impl RequestContext {
    pub fn anonymous() -> Self {
        Self {
            tenant: TenantId::default_tenant(),
            actor: "anonymous".into(),
        }
    }
}

/// One unmet precondition, reported as a google.rpc.PreconditionFailure violation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreconditionViolation {
    pub kind: String,
    pub subject: String,
    pub description: String,
}

impl From<MoveViolation> for PreconditionViolation {
    fn from(v: MoveViolation) -> Self {
        Self {
            kind: v.kind.as_str().to_owned(),
            subject: v.subject,
            description: v.description,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{resource} {name:?} not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        violations: Vec<PreconditionViolation>,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{message}")]
    OutOfRange {
        message: String,
        oldest_available: Option<i64>,
    },
    #[error("{0}")]
    ShuttingDown(String),
    /// The caller's credentials are missing or no longer valid (for example a stream's key was
    /// revoked).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's credentials are valid but do not allow the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-tenant limit (for example open streams) is reached.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn lead_not_found(id: impl ToString) -> Self {
        Self::NotFound {
            resource: "lead",
            name: id.to_string(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(e) | StoreError::StorageFailure(e) => AppError::Unavailable(e),
            StoreError::StorageFull(e) => {
                tracing::error!(error = %e, "the database's storage is full");
                AppError::ResourceExhausted(
                    "the database's storage is full; the write was not applied".into(),
                )
            }
            StoreError::UniqueViolation(e) => AppError::AlreadyExists(e),
            StoreError::OutOfRange(e) => {
                tracing::warn!(error = %e, "a total does not fit 64 bits");
                AppError::OutOfRange {
                    message: "a total of amounts is too large for int64 units; narrow the \
                              request (a pipeline, an owner, a time window)"
                        .into(),
                    oldest_available: None,
                }
            }
            StoreError::Corrupt(e) | StoreError::Database(e) => AppError::Internal(e),
            StoreError::Superseded => {
                AppError::Aborted("another write changed the lead first; retry".into())
            }
        }
    }
}

/// The rows a list use case returns per page: 50 when the caller asks for none, and at most
/// 1000, so that one call cannot hold a connection and megabytes of memory for long. Larger
/// requests are served 1000 rather than refused, as the API documents.
pub fn page_size(requested: u64) -> u64 {
    match requested {
        0 => leads::DEFAULT_PAGE_SIZE,
        n => n.min(leads::MAX_PAGE_SIZE),
    }
}

/// `as_of` in microseconds, once it is known to be no earlier than the oldest lead revision
/// that retention keeps. Before it a lead's attributes then may be gone, and an answer from
/// what is left would be wrong without saying so: OUT_OF_RANGE, naming `field`.
pub(crate) async fn revisions_kept_at(
    db: &impl crate::store::Connection,
    tenant: &TenantId,
    field: &str,
    as_of: chrono::DateTime<chrono::Utc>,
) -> Result<i64, AppError> {
    let at = crate::store::to_micros(as_of);
    let pruned = crate::store::revisions::pruned_before(db, tenant).await?;
    if at < pruned {
        return Err(AppError::OutOfRange {
            message: format!(
                "{field} is before {}, the oldest lead revision kept; ask about a later time",
                crate::store::from_micros(pruned).to_rfc3339()
            ),
            oldest_available: None,
        });
    }
    Ok(at)
}
